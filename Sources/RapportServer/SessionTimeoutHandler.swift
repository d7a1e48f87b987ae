import NIOCore
import SyncProtocol

/// Closes connections that take too long to say Hello, or that go silent once established,
/// with a `TIMEOUT` error frame, so a stuck or malicious peer cannot hold a connection forever.
///
/// Silence is the client's: while the server itself works on a request, the clock waits.
final class SessionTimeoutHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias InboundOut = InboundFrame
    typealias OutboundIn = Rapport_V1_Frame
    typealias OutboundOut = Rapport_V1_Frame

    private let handshakeTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var timer: Scheduled<Void>?
    /// Requests read and not yet answered.
    private var pending = 0

    private let metrics: ServerMetrics?
    /// Set once the first frame (the Hello) arrived: a timeout before it is a handshake timeout.
    private var heard = false

    init(handshakeTimeout: TimeAmount, idleTimeout: TimeAmount, metrics: ServerMetrics? = nil) {
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context: context, after: handshakeTimeout, reason: "no Hello within the handshake timeout") }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context: context, after: handshakeTimeout, reason: "no Hello within the handshake timeout")
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heard = true
        if case .frame(let frame) = unwrapInboundIn(data), Self.expectsAnswer(frame) { pending += 1 }
        arm(context: context, after: idleTimeout, reason: "no message within the idle timeout")
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if Self.isAnswer(unwrapOutboundIn(data)) && pending > 0 {
            pending -= 1
            arm(context: context, after: idleTimeout, reason: "no message within the idle timeout")
        }
        context.write(data, promise: promise)
    }

    private static func expectsAnswer(_ frame: Rapport_V1_Frame) -> Bool {
        switch frame.body {
        case .hello?, .push?, .pull?: true
        default: false
        }
    }

    private static func isAnswer(_ frame: Rapport_V1_Frame) -> Bool {
        switch frame.body {
        case .welcome?, .pushResult?, .pullBatch?, .error?: true
        default: false
        }
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
            if handler.pending > 0 {
                handler.arm(context: context, after: delay, reason: reason)
                return
            }
            if handler.heard { handler.metrics?.idleTimeouts.increment() } else { handler.metrics?.handshakeTimeouts.increment() }
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
