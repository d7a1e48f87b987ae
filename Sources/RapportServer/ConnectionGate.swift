import NIOCore
import Synchronization
import SyncProtocol
import TLS

/// Counts the server's connections so that neither all of them nor those that have not logged
/// in yet can grow without bound (SPEC.md 2.5). A connection is admitted, answered
/// `SERVER_BUSY`, or dropped at once, when it is accepted; it leaves the pre-login counts when
/// its Hello is accepted and every count when it closes.
///
/// Busy answers are bounded too, by the pre-login cap: each costs a TLS handshake, and with a
/// total cap sized for many idle sessions (16,384 by default) a flood of connections that never
/// log in could otherwise hold thousands of them. Beyond that they are dropped at once.
final class ConnectionGate: Sendable {
    struct Limits: Sendable {
        /// Every open connection: sessions, pre-login connections and busy answers.
        var total: Int
        /// Connections that have not logged in (TLS, Hello, Enroll), from all addresses.
        var preLogin: Int
        /// Pre-login connections from one IP address.
        var preLoginPerAddress: Int
    }

    enum Admission {
        /// Serve it; call `loggedIn` once its Hello is accepted, `release` when it closes.
        case admitted(Ticket)
        /// Finish TLS, answer `SERVER_BUSY` for `reason`, close; `release` when it closes.
        case busy(Ticket, reason: String)
        /// Over the total, or over the busy answers: close without a word (it holds no count).
        case dropped(reason: String)
    }

    /// One counted connection.
    final class Ticket: Sendable {
        enum Phase { case preLogin, session, busy, released }
        let address: String
        fileprivate let phase: Mutex<Phase>
        fileprivate init(address: String, phase: Phase) {
            self.address = address
            self.phase = Mutex(phase)
        }
    }

    private struct Counts {
        var total = 0
        var preLogin = 0
        var busy = 0
        var preLoginByAddress: [String: Int] = [:]
    }

    let limits: Limits
    private let counts = Mutex(Counts())

    init(limits: Limits) {
        self.limits = limits
    }

    /// Decides the fate of a connection just accepted from `address`.
    func admit(address: String) -> Admission {
        counts.withLock { counts in
            guard counts.total < limits.total else { return .dropped(reason: "\(counts.total) connections are open (--max-connections)") }
            let fromAddress = counts.preLoginByAddress[address, default: 0]
            let busyReason: String? = if fromAddress >= limits.preLoginPerAddress {
                "\(fromAddress) connections from \(address) have not logged in yet"
            } else if counts.preLogin >= limits.preLogin {
                "\(counts.preLogin) connections have not logged in yet"
            } else {
                nil
            }
            if let busyReason {
                guard counts.busy < limits.preLogin else {
                    return .dropped(reason: "\(busyReason), and \(counts.busy) are being answered SERVER_BUSY")
                }
                counts.total += 1
                counts.busy += 1
                return .busy(Ticket(address: address, phase: .busy), reason: busyReason)
            }
            counts.total += 1
            counts.preLogin += 1
            counts.preLoginByAddress[address] = fromAddress + 1
            return .admitted(Ticket(address: address, phase: .preLogin))
        }
    }

    /// The connection's Hello was accepted: it no longer counts as pre-login.
    func loggedIn(_ ticket: Ticket) {
        counts.withLock { counts in
            ticket.phase.withLock { phase in
                guard phase == .preLogin else { return }
                phase = .session
                Self.leavePreLogin(ticket.address, &counts)
            }
        }
    }

    /// The connection closed. Safe to call more than once.
    func release(_ ticket: Ticket) {
        counts.withLock { counts in
            ticket.phase.withLock { phase in
                if phase == .released { return }
                if phase == .preLogin { Self.leavePreLogin(ticket.address, &counts) }
                if phase == .busy { counts.busy -= 1 }
                phase = .released
                counts.total -= 1
            }
        }
    }

    /// Open connections now, and how many of them have not logged in.
    var current: (total: Int, preLogin: Int) {
        counts.withLock { ($0.total, $0.preLogin) }
    }

    /// Open connections by phase: not logged in yet, in a session, being answered busy.
    var phases: (preLogin: Int, session: Int, busy: Int) {
        counts.withLock { ($0.preLogin, $0.total - $0.preLogin - $0.busy, $0.busy) }
    }

    private static func leavePreLogin(_ address: String, _ counts: inout Counts) {
        counts.preLogin -= 1
        let left = counts.preLoginByAddress[address, default: 1] - 1
        // Dropped at zero so the table only holds addresses with connections open.
        counts.preLoginByAddress[address] = left > 0 ? left : nil
    }
}

/// Answers a connection the server is too busy to serve: once TLS is up (a frame cannot go
/// out before), an `Error` `SERVER_BUSY` with a retry delay, then the server closes its side.
/// Whatever the peer sends is read and dropped, so a busy connection holds no more than its TLS
/// state. Closing only the output lets the peer read the answer: a full close with its Hello
/// unread would reset the connection and could discard the answer before the client reads it.
/// The peer's close, or the handshake timeout, ends the connection.
final class BusyAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = any OutboundFrame

    private let error: SyncError

    init(_ error: SyncError) {
        self.error = error
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSEvent {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(error.frame)).whenComplete { _ in bound.value.close(mode: .output, promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Closes a connection as soon as it is up: over the total cap even a TLS handshake costs more
/// than the server can spare, and a client takes the dropped connection as one to retry.
final class CloseAtOnceHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { context.close(promise: nil) }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
