import NIOCore
import SyncProtocol

/// Closes connections that take too long to say Hello, or that go silent once established,
/// with a `TIMEOUT` error frame, so a stuck or malicious peer cannot hold a connection forever.
final class SessionTimeoutHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias InboundOut = InboundFrame
    typealias OutboundOut = Rapport_V1_Frame

    private let handshakeTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(handshakeTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context: context, after: handshakeTimeout, reason: "no Hello within the handshake timeout") }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context: context, after: handshakeTimeout, reason: "no Hello within the handshake timeout")
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        arm(context: context, after: idleTimeout, reason: "no message within the idle timeout")
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    private func arm(context: ChannelHandlerContext, after delay: TimeAmount, reason: String) {
        timer?.cancel()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            context.fireUserInboundEventTriggered(SessionTimeout(reason: reason))
            context.writeAndFlush(handler.wrapOutboundOut(SyncError(.timeout, reason, retryable: true).frame), promise: nil)
            context.close(promise: nil)
        }
    }
}

/// Fired up the pipeline when a session times out, for the log.
struct SessionTimeout: Sendable {
    let reason: String
}
