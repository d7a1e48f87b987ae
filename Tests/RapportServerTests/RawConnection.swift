import CRM
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import SyncProtocol
import TLS

/// A test client that speaks as little of the protocol as a test wants: it connects to a
/// `ServerFixture` over raw TCP or over TLS (trusting the fixture's dev CA, ALPN `rapport/1`),
/// sends whatever bytes or frames the test gives it, and collects what the server sends back,
/// decoded into frames, plus the moment the connection closes.
///
/// Every wait is bounded (30 s by default), so a server that misbehaves fails the test instead
/// of hanging it. Nothing here asserts on timing.
final class RawConnection: Sendable {
    /// What the server did, in order.
    enum Event: Sendable {
        case frame(Rapport_V1_Frame)
        /// The server's bytes did not decode as frames (never expected from a correct server).
        case invalid(SyncError)
        case closed
    }

    struct TimedOut: Error, CustomStringConvertible {
        let what: String
        var description: String { "gave up waiting for \(what)" }
    }

    /// Long enough for a loaded 2-core machine running the other suites beside this one (a
    /// full run stalled a pre-login test past 30 s); every wait is for something a correct
    /// server sends, so only a failing test waits it out.
    static let defaultWait: Duration = .seconds(90)

    let channel: any Channel
    private let inbox: Inbox

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    /// Connects to the fixture. With `tls`, the TLS handshake is started at once (and
    /// `waitForHandshake` waits for it); bytes sent before it completes are held until it does.
    /// - Parameter alpn: the ALPN names the client offers (none: no ALPN extension).
    static func connect(to fixture: ServerFixture, tls: Bool, alpn: [String] = [SyncProtocolVersion.alpn]) async throws -> RawConnection {
        try await connect(port: fixture.port, caPath: fixture.caPath, tls: tls, alpn: alpn)
    }

    /// Connects to any server on 127.0.0.1 (a `rapportd` process) that `caPath` vouches for.
    static func connect(port: Int, caPath: String, tls: Bool = true,
                        alpn: [String] = [SyncProtocolVersion.alpn]) async throws -> RawConnection {
        let inbox = Inbox()
        let context: TLSContext? = tls ? try TLSContext(configuration: .client(
            trustRoots: .certificates(.file(caPath)), expectedHostname: "127.0.0.1",
            applicationProtocols: alpn)) : nil
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context { try sync.addHandler(TLSHandler(context: context)) }
                    try sync.addHandler(Collector(inbox: inbox))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, inbox: inbox)
    }

    /// A TLS connection whose handshake has completed.
    static func tls(to fixture: ServerFixture) async throws -> RawConnection {
        let connection = try await connect(to: fixture, tls: true)
        try await connection.waitForHandshake()
        return connection
    }

    /// A TLS connection that said Hello with the fixture's credentials and got its Welcome.
    static func established(to fixture: ServerFixture, device: String = "raw-device",
                            subscribe: Bool = false) async throws -> (RawConnection, Rapport_V1_Welcome) {
        let connection = try await tls(to: fixture)
        try await connection.send(.helloFrame(device: device, subscribe: subscribe))
        let reply = try await connection.nextFrame()
        guard case .welcome(let welcome)? = reply?.body else {
            throw TimedOut(what: "Welcome (got \(reply.map { "\($0)" } ?? "a closed connection"))")
        }
        return (connection, welcome)
    }

    // MARK: Sending

    func send(bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer)
    }

    func send(_ frame: Rapport_V1_Frame) async throws {
        try await send(bytes: Self.encode(frame))
    }

    /// A frame as it goes on the wire: length prefix and body.
    static func encode(_ frame: Rapport_V1_Frame) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try FrameEncoder.write(frame, to: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// Closes our side (with close_notify under TLS) and waits for the channel to be gone.
    func close() async {
        try? await channel.close()
    }

    // MARK: Receiving

    func waitForHandshake(within limit: Duration = defaultWait) async throws {
        _ = try await poll("the TLS handshake", within: limit) { inbox in
            if inbox.handshakeCompleted { return true }
            if inbox.closed { throw TimedOut(what: "the TLS handshake (the connection closed first: \(inbox.errors))") }
            return nil
        }
    }

    /// The next event, or `TimedOut`.
    func nextEvent(within limit: Duration = defaultWait) async throws -> Event {
        try await poll("the server", within: limit) { inbox in
            if !inbox.events.isEmpty { return inbox.events.removeFirst() }
            return nil
        }
    }

    /// The next frame, or `nil` when the connection closed first.
    func nextFrame(within limit: Duration = defaultWait) async throws -> Rapport_V1_Frame? {
        switch try await nextEvent(within: limit) {
        case .frame(let frame): return frame
        case .invalid(let error): throw error
        case .closed: return nil
        }
    }

    /// The next frame, which must be an `Error`; `nil` if something else came or it closed.
    func nextError(within limit: Duration = defaultWait) async throws -> Rapport_V1_Error? {
        guard case .error(let error)? = try await nextFrame(within: limit)?.body else { return nil }
        return error
    }

    /// Waits for the server to close the connection, returning the frames it sent meanwhile.
    @discardableResult
    func waitForClose(within limit: Duration = defaultWait) async throws -> [Rapport_V1_Frame] {
        var frames: [Rapport_V1_Frame] = []
        while true {
            switch try await nextEvent(within: limit) {
            case .frame(let frame): frames.append(frame)
            case .invalid(let error): throw error
            case .closed: return frames
            }
        }
    }

    /// Whether the connection has closed (without waiting).
    var isClosed: Bool { inbox.state.withLock { $0.closed } }

    /// The errors the pipeline reported (a refused handshake, a close without close_notify).
    var errors: [String] { inbox.state.withLock { $0.errors } }

    /// Every raw byte received above TLS (or on the socket without TLS).
    var receivedBytes: [UInt8] { inbox.state.withLock { $0.received } }

    private func poll<T: Sendable>(_ what: String, within limit: Duration,
                                   _ check: @Sendable (inout Inbox.State) throws -> T?) async throws -> T {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: limit)
        while true {
            if let value = try inbox.state.withLock({ try check(&$0) }) { return value }
            guard clock.now < deadline else { throw TimedOut(what: what) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: Plumbing

    final class Inbox: Sendable {
        struct State {
            var buffer = ByteBuffer()
            var decoder = FrameDecoder(maxFrameBytes: Int(UInt32.max))
            var received: [UInt8] = []
            var events: [Event] = []
            var closed = false
            var handshakeCompleted = false
            var errors: [String] = []
        }

        let state = Mutex(State())
    }

    /// Sits at the top of the pipeline and hands everything to the inbox.
    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        let inbox: Inbox

        init(inbox: Inbox) { self.inbox = inbox }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            inbox.state.withLock { state in
                state.received += bytes.readableBytesView
                state.buffer.writeBuffer(&bytes)
                while let inbound = state.decoder.next(&state.buffer) {
                    switch inbound {
                    case .frame(let frame): state.events.append(.frame(frame))
                    // Its decoder reads every frame with SwiftProtobuf, as the server's does.
                    case .pullBatch: state.events.append(.invalid(SyncError(.internal, "a pull batch read by hand")))
                    case .invalid(let error): state.events.append(.invalid(error))
                    }
                }
                state.buffer.discardReadBytes()
            }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted? = event as? TLSEvent {
                inbox.state.withLock { $0.handshakeCompleted = true }
            }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // An unclean close or a refused handshake: remember why, and let the close happen.
            inbox.state.withLock { $0.errors.append("\(error)") }
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            inbox.state.withLock { state in
                if !state.closed {
                    state.closed = true
                    state.events.append(.closed)
                }
            }
            context.fireChannelInactive()
        }
    }
}

extension Rapport_V1_Frame {
    /// A Hello with the fixture's credentials; tests change what they need.
    static func helloFrame(device: String = "raw-device", tenant: String = "acme",
                      secret: [UInt8] = ServerFixture.secret, subscribe: Bool = false,
                      edit: (inout Rapport_V1_Hello) -> Void = { _ in }) -> Rapport_V1_Frame {
        var hello = Rapport_V1_Hello()
        hello.protocolVersion = SyncProtocolVersion.current
        hello.schemaVersion = CRMSchema.version
        hello.tenant = tenant
        hello.deviceID = device
        hello.secret = Data(secret)
        hello.subscribe = subscribe
        hello.client = "RawConnection"
        edit(&hello)
        var frame = Rapport_V1_Frame()
        frame.hello = hello
        return frame
    }

    static func pushFrame(_ records: [Rapport_V1_Record], batch: UInt64 = 1) -> Rapport_V1_Frame {
        var push = Rapport_V1_PushRequest()
        push.batchID = batch
        push.records = records
        var frame = Rapport_V1_Frame()
        frame.push = push
        return frame
    }

    static func pullFrame(after: UInt64, limit: UInt32 = 100) -> Rapport_V1_Frame {
        var pull = Rapport_V1_PullRequest()
        pull.after = after
        pull.limit = limit
        var frame = Rapport_V1_Frame()
        frame.pull = pull
        return frame
    }

    static func pingFrame(_ nonce: UInt64) -> Rapport_V1_Frame {
        var ping = Rapport_V1_Ping()
        ping.nonce = nonce
        var frame = Rapport_V1_Frame()
        frame.ping = ping
        return frame
    }
}
