import Logging
import NIOCore
import NIOPosix
import SyncProtocol
import TLS

/// Something the session loop reacts to: a frame from the server, a wish of the app, or the end.
enum SessionInput: Sendable {
    case inbound(InboundFrame)
    /// The app changed local data and wants it pushed.
    case localChange
    case keepAlive
    /// A timer went off: returned to the session's loop (an upstream link's periodic work).
    case tick
    /// The connection ended; `nil` when the server closed it cleanly.
    case ended((any Error)?)
}

/// One open session with the server: TLS connection, Hello answered by Welcome.
///
/// All inputs arrive through one stream, so the session code is a plain sequential loop that
/// sends a request and reads on until its answer, remembering whatever else came meanwhile
/// (change announcements, local changes to push).
struct ClientSession {
    let welcome: Rapport_V1_Welcome
    private let outbound: NIOAsyncChannelOutboundWriter<any OutboundFrame>
    private var inputs: AsyncStream<SessionInput>.AsyncIterator
    let inject: AsyncStream<SessionInput>.Continuation
    /// The highest server sequence announced by `ChangesAvailable` since the last look.
    var announcedSequence: UInt64 = 0
    /// The app asked for a push. Set when `read()` meets the request, also while the session
    /// waited for an answer (a push asked for mid-pull), and cleared by the caller once it
    /// pushed; `next()` hands a pending one on at once, since nothing else will wake the loop.
    var localChangePending = false
    /// A `ChangesAvailable` came while the session waited for an answer: `next()` hands it on
    /// before reading further, so the caller pulls what it announced. (The pull in hand may
    /// have been composed before the change was committed; dropping the announcement left the
    /// change unpulled until another one came.)
    private var announcementWhileBusy = false

    private init(welcome: Rapport_V1_Welcome, outbound: NIOAsyncChannelOutboundWriter<any OutboundFrame>,
                 inputs: AsyncStream<SessionInput>.AsyncIterator, inject: AsyncStream<SessionInput>.Continuation) {
        self.welcome = welcome
        self.outbound = outbound
        self.inputs = inputs
        self.inject = inject
    }

    /// Connects, says Hello, runs `body` with the established session, says Goodbye, closes.
    static func run<T: Sendable>(
        configuration: ClientConfiguration, tls: TLSContext, deviceID: String, subscribe: Bool,
        onOpen: (@Sendable (AsyncStream<SessionInput>.Continuation) -> Void)? = nil,
        _ body: (inout ClientSession) async throws -> T
    ) async throws -> T {
        try await connect(configuration: configuration, tls: tls) { iterator, outbound, continuation in
            var hello = Rapport_V1_Hello()
            hello.protocolVersion = SyncProtocolVersion.current
            hello.schemaVersion = configuration.schemaVersion
            hello.tenant = configuration.tenant
            hello.deviceID = deviceID
            hello.secret = .init(configuration.secret)
            hello.subscribe = subscribe
            hello.client = "RapportClient/1"
            var frame = Rapport_V1_Frame()
            frame.hello = hello
            try await Self.writeFirst(frame, outbound, &iterator)
            let welcome = try await Self.awaitReply(&iterator, timeout: configuration.connectTimeout) { frame -> Rapport_V1_Welcome? in
                if case .welcome(let welcome)? = frame.body { welcome } else { nil }
            }
            var session = ClientSession(welcome: welcome, outbound: outbound, inputs: iterator, inject: continuation)
            onOpen?(continuation)
            let result = try await body(&session)
            var goodbye = Rapport_V1_Frame()
            goodbye.goodbye = Rapport_V1_Goodbye()
            try? await outbound.write(goodbye)
            return result
        }
    }

    /// Connects and trades a one-time enrollment code for the device's id and secret.
    static func enroll(configuration: ClientConfiguration, tls: TLSContext, code: String, deviceName: String) async throws -> Rapport_V1_Enrolled {
        try await connect(configuration: configuration, tls: tls) { iterator, outbound, _ in
            var enroll = Rapport_V1_Enroll()
            enroll.protocolVersion = SyncProtocolVersion.current
            enroll.schemaVersion = configuration.schemaVersion
            enroll.tenant = configuration.tenant
            enroll.code = code
            enroll.deviceName = deviceName
            enroll.client = "RapportClient/1"
            var frame = Rapport_V1_Frame()
            frame.enroll = enroll
            try await Self.writeFirst(frame, outbound, &iterator)
            return try await Self.awaitReply(&iterator, timeout: configuration.connectTimeout) { frame -> Rapport_V1_Enrolled? in
                if case .enrolled(let enrolled)? = frame.body { enrolled } else { nil }
            }
        }
    }

    /// Opens the TLS connection with the frame codec and runs `body` with its inputs and
    /// outbound writer; closes the connection when `body` ends.
    private static func connect<T: Sendable>(
        configuration: ClientConfiguration, tls: TLSContext,
        _ body: (inout AsyncStream<SessionInput>.AsyncIterator, NIOAsyncChannelOutboundWriter<any OutboundFrame>,
                 AsyncStream<SessionInput>.Continuation) async throws -> T
    ) async throws -> T {
        let maxFrame = SessionLimits().maxFrameBytes
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.init(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSHandler(context: tls))
                    try sync.addFrameCodec(maxFrameBytes: maxFrame, readsPullBatches: true)
                    return try NIOAsyncChannel<InboundFrame, any OutboundFrame>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            let (stream, continuation) = AsyncStream<SessionInput>.makeStream()
            let reader = Task {
                do {
                    for try await frame in inbound { continuation.yield(.inbound(frame)) }
                    continuation.yield(.ended(nil))
                } catch {
                    continuation.yield(.ended(error))
                }
            }
            defer {
                reader.cancel()
                continuation.finish()
            }
            var iterator = stream.makeAsyncIterator()
            return try await body(&iterator, outbound, continuation)
        }
    }

    /// Writes the session's first frame. It goes out once the TLS handshake completes; when the
    /// handshake fails instead (a certificate that does not verify), or the server answered and
    /// closed first (SERVER_BUSY), the write only learns that the channel closed, and what the
    /// reader saw is the error worth reporting.
    private static func writeFirst(_ frame: Rapport_V1_Frame, _ outbound: NIOAsyncChannelOutboundWriter<any OutboundFrame>,
                                   _ iterator: inout AsyncStream<SessionInput>.AsyncIterator) async throws {
        do {
            try await outbound.write(frame)
        } catch {
            try await explain(failedWrite: error, &iterator)
        }
    }

    /// Throws what a failed write means: a write learns only that the channel closed, while the
    /// server may have said why before it closed (SERVER_BUSY before login, DEVICE_REVOKED in a
    /// live session) or the connection may have ended for a reason of its own (a TLS failure).
    private static func explain(failedWrite error: any Error,
                                _ iterator: inout AsyncStream<SessionInput>.AsyncIterator) async throws -> Never {
        reading: while let input = await iterator.next() {
            switch input {
            case .inbound(.frame(let frame)):
                if case .error(let refusal)? = frame.body { throw SyncError(refusal) }
            case .ended(let reason):
                if let reason { throw Self.failure(reason) }
                break reading
            default:
                continue
            }
        }
        throw error
    }

    /// Waits for the server's answer to the first frame: the expected message or an Error.
    private static func awaitReply<Reply>(_ iterator: inout AsyncStream<SessionInput>.AsyncIterator, timeout: Duration,
                                          _ expected: (Rapport_V1_Frame) -> Reply?) async throws -> Reply {
        while let input = await iterator.next() {
            switch input {
            case .inbound(.frame(let frame)):
                if let reply = expected(frame) { return reply }
                if case .error(let error)? = frame.body { throw SyncError(error) }
                throw ClientError.protocolViolation("unexpected answer \(frame.body.map { "\($0)".prefix(40) } ?? "nothing")")
            case .inbound(.pullBatch):
                throw ClientError.protocolViolation("unexpected answer PullBatch")
            case .inbound(.invalid(let error)):
                throw ClientError.protocolViolation("\(error)")
            case .ended(let error):
                throw Self.failure(error)
            case .localChange, .keepAlive, .tick:
                continue
            }
        }
        throw ClientError.connectionLost("the connection ended before the server answered")
    }

    /// What the end of the connection means: a TLS failure keeps its own type (a certificate
    /// that does not verify is not worth a retry), anything else is a lost connection.
    static func failure(_ error: (any Error)?) -> any Error {
        switch error {
        case let error as TLSError: error
        case let error?: ClientError.connectionLost("\(error)")
        case nil: ClientError.connectionLost("the server closed the connection")
        }
    }

    /// Sends one frame; when the connection closed under it, throws the server's reason if it
    /// gave one.
    mutating func send(_ frame: Rapport_V1_Frame) async throws {
        do {
            try await outbound.write(frame)
        } catch {
            try await Self.explain(failedWrite: error, &inputs)
        }
    }

    /// The next input the caller must act on. Announcements and pongs are folded into the
    /// session's state; an `Error` frame or the end of the connection is thrown. A push asked
    /// for, or an announcement that came, while the session waited for an answer comes first:
    /// the input that told of it was read inside `response()` and will not come again.
    mutating func next() async throws -> SessionInput {
        // The announcement first: the caller pushes on a pending request whatever the input, but
        // pulls only on an announcement, so a device pushing again and again still pulls.
        if announcementWhileBusy {
            announcementWhileBusy = false
            var notice = Rapport_V1_ChangesAvailable()
            notice.serverSequence = announcedSequence
            var frame = Rapport_V1_Frame()
            frame.changesAvailable = notice
            return .inbound(.frame(frame))
        }
        if localChangePending {
            return .localChange
        }
        return try await read()
    }

    /// The next input from the connection or the app (see `next()`).
    private mutating func read() async throws -> SessionInput {
        while let input = await inputs.next() {
            switch input {
            case .inbound(.frame(let frame)):
                switch frame.body {
                case .changesAvailable(let notice)?:
                    announcedSequence = max(announcedSequence, notice.serverSequence)
                    return input
                case .pong?:
                    continue
                case .error(let error)?:
                    throw SyncError(error)
                default:
                    return input
                }
            case .inbound(.pullBatch):
                return input
            case .inbound(.invalid(let error)):
                throw ClientError.protocolViolation("\(error)")
            case .ended(let error):
                throw Self.failure(error)
            case .localChange:
                localChangePending = true
                return input
            case .tick:
                return input
            case .keepAlive:
                var ping = Rapport_V1_Frame()
                ping.ping = Rapport_V1_Ping()
                try await send(ping)
            }
        }
        throw ClientError.connectionLost("the session's input stream ended")
    }

    /// Feeds `input` to this session every `interval` until the task is cancelled (keep-alive
    /// pings, a link's periodic work).
    func repeating(_ input: SessionInput, every interval: Duration) -> Task<Void, Never> {
        Task { [inject] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                inject.yield(input)
            }
        }
    }

    /// Sends `request` and returns the server's answer, skipping what comes in between.
    mutating func request(_ request: Rapport_V1_Frame) async throws -> Rapport_V1_Frame {
        try await send(request)
        return try await response()
    }

    /// The server's answer to the oldest request not yet answered (answers come in order).
    mutating func response() async throws -> Rapport_V1_Frame {
        while true {
            switch try await read() {
            case .inbound(.frame(let frame)):
                if case .changesAvailable? = frame.body {
                    announcementWhileBusy = true
                    continue
                }
                return frame
            case .inbound(.pullBatch):
                throw ClientError.protocolViolation("unexpected answer PullBatch")
            default:
                continue
            }
        }
    }

    /// The server's answer to a Pull, the oldest request not yet answered.
    mutating func pullResponse() async throws -> PulledBatch {
        while true {
            switch try await read() {
            case .inbound(.pullBatch(let batch)):
                return batch
            case .inbound(.frame(let frame)):
                switch frame.body {
                case .changesAvailable?:
                    announcementWhileBusy = true
                case .pullBatch(let batch)?:
                    // A frame the decoder left to SwiftProtobuf (one with more in it than the batch).
                    do {
                        return try PulledBatch(batch)
                    } catch {
                        throw ClientError.invalidServerData("\(error)")
                    }
                default:
                    throw ClientError.protocolViolation("expected PullBatch")
                }
            default:
                continue
            }
        }
    }
}
