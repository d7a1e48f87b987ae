import NIOCore
import SyncProtocol

/// Closes connections that take too long to say Hello, or that go silent once established,
/// with a `TIMEOUT` error frame, so a stuck or malicious peer cannot hold a connection forever.
///
/// Silence is the client's: while the server itself works on a request, the clock waits.
///
/// Every frame moves the deadline on, and a live session pings every 20 s, so with thousands of
/// idle sessions a timer cancelled and scheduled again per frame would cost more than the frame
/// (cancelling searches the event loop's timers, one per connection). So a frame only notes the
/// new deadline; the one timer, when it fires early, waits again until it. Only a deadline
/// earlier than the timer's takes a new timer.
final class SessionTimeoutHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias InboundOut = InboundFrame
    typealias OutboundIn = any OutboundFrame
    typealias OutboundOut = any OutboundFrame

    private let handshakeTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var timer: Scheduled<Void>?
    /// When the timer is set to fire.
    private var timerDeadline: NIODeadline?
    /// When silence ends the connection, unless something moves it on first.
    private var deadline = NIODeadline.distantFuture
    /// The delay and reason of the last arming.
    private var delay = TimeAmount.zero
    private var reason = ""
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
        if unwrapOutboundIn(data).answersRequest && pending > 0 {
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

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        deadline = .distantFuture
    }

    private func arm(context: ChannelHandlerContext, after delay: TimeAmount, reason: String) {
        self.delay = delay
        self.reason = reason
        deadline = .now() + delay
        if let timerDeadline, timerDeadline <= deadline { return }
        timer?.cancel()
        schedule(context: context, at: deadline)
    }

    private func schedule(context: ChannelHandlerContext, at when: NIODeadline) {
        timerDeadline = when
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: when) {
            let (handler, context) = bound.value
            handler.timerDeadline = nil
            handler.timer = nil
            handler.expire(context: context)
        }
    }

    private func expire(context: ChannelHandlerContext) {
        if pending > 0 {
            // The server is working on a request: the clock waits.
            arm(context: context, after: delay, reason: reason)
            return
        }
        guard NIODeadline.now() >= deadline else {
            schedule(context: context, at: deadline)
            return
        }
        if heard { metrics?.idleTimeouts.increment() } else { metrics?.handshakeTimeouts.increment() }
        context.fireUserInboundEventTriggered(SessionTimeout(reason: reason))
        context.writeAndFlush(wrapOutboundOut(SyncError(.timeout, reason, retryable: true).frame), promise: nil)
        context.close(promise: nil)
    }
}

/// Fired up the pipeline when a session times out, for the log.
struct SessionTimeout: Sendable {
    let reason: String
}
