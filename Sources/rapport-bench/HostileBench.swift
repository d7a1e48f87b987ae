import ArgumentParser
import CRM
import Foundation
import NIOCore
import NIOPosix
import RapportServer
import Synchronization
import SyncProtocol
import TestSupport
import TLS

/// The memory a `rapportd` child process holds for connections that never log in, next to the
/// floor of as many idle TLS connections: ones that announce a huge frame and send part of it
/// (refused on the length prefix), and ones that send all but the last byte of the largest frame
/// allowed before login (the most such a connection can make the server hold).
struct HostileBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile",
        abstract: "Server memory under connections that never log in, next to idle connections.")

    @Option(help: "Connections held open at once in each phase.")
    var connections = 2_000

    @Option(help: "Frame size the hostile connections announce, in MiB.")
    var declaredMiB = 15

    @Option(help: "Body bytes they send after the announcement, in KiB.")
    var sentKiB = 64

    @Option(help: "Connections being opened at once.")
    var concurrency = 64

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard connections > 0, concurrency > 0, declaredMiB > 0, sentKiB >= 0 else {
            throw ValidationError("--connections, --concurrency and --declared-mib must be positive")
        }
    }

    mutating func run() async throws {
        let descriptors = SyncServer.raiseFileDescriptorLimit()
        guard descriptors > connections + 64 else {
            throw ValidationError("\(connections) connections need more file descriptors than the limit of \(descriptors)")
        }
        let dir = try BenchDirectory(directory)
        let data = dir.path("server")
        _ = try ServerProcess.prepare(data: data, tenants: ["bench"], schema: CRMSchema.current)
        // Caps above the bench's own connections, so the figure measures what each connection
        // holds; all of them come from 127.0.0.1, which the per-address cap exists to stop.
        // The handshake timeout must outlast opening them all on a slow machine.
        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data, arguments: [
            "--max-connections", "\(connections + 64)", "--max-prelogin", "\(connections + 16)",
            "--max-prelogin-per-address", "\(connections + 16)", "--handshake-timeout", "300", "--no-dev-tenant"])
        defer { server.stop() }
        let report = Reporter(bench: "hostile")
        let tls = try TLSContext(configuration: .client(
            trustRoots: .certificates(.file(data + "/tls/ca.pem")), expectedHostname: "127.0.0.1",
            applicationProtocols: [SyncProtocolVersion.alpn]))
        let baseline = server.residentMiB()
        let preLoginLimit = SessionLimits().maxPreLoginFrameBytes

        let phases: [(name: String, payload: [UInt8])] = [
            ("idle_connections_floor", []),
            ("announced_\(declaredMiB)_mib_frame", Self.prefix(declaredMiB << 20) + [UInt8](repeating: 0x61, count: sentKiB << 10)),
            ("largest_pre_login_frame_but_one_byte", Self.prefix(preLoginLimit) + [UInt8](repeating: 0x61, count: preLoginLimit - 1)),
        ]
        var floor = 0.0
        for phase in phases {
            let idleDescriptors = server.openFileDescriptors()
            let attack = Attack(payload: phase.payload)
            let start = ContinuousClock.now
            var channels: [any Channel] = []
            try await withThrowingTaskGroup(of: (any Channel).self) { group in
                var started = 0
                func add() {
                    group.addTask { try await attack.connect(port: server.port, tls: tls) }
                    started += 1
                }
                while started < min(concurrency, connections) { add() }
                while let channel = try await group.next() {
                    channels.append(channel)
                    if started < connections { add() }
                }
            }
            // Every connection has finished its handshake and written its bytes; give the
            // server a moment to read them, then take the highest of a few samples.
            var resident = 0.0
            for _ in 0..<10 {
                try await Task.sleep(for: .milliseconds(100))
                resident = max(resident, server.residentMiB())
            }
            let seconds = seconds(ContinuousClock.now - start)
            let counts = attack.counts
            if phase.payload.isEmpty { floor = resident }
            report.line(phase.name, [
                "connections": connections, "seconds": seconds, "sent_bytes_each": phase.payload.count,
                "server_rss_mib": resident, "server_rss_before_mib": baseline, "floor_rss_mib": floor,
                "extra_kib_per_connection_over_floor": (resident - floor) * 1024 / Double(connections),
                "handshakes": counts.handshakes, "answered_frame_too_large": counts.frameTooLarge,
                "closed_by_server": counts.closed,
            ])
            for channel in channels { channel.close(promise: nil) }
            // Wait (bounded) until the server has let go of them before the next phase.
            let deadline = ContinuousClock.now.advanced(by: .seconds(60))
            while server.openFileDescriptors() > idleDescriptors + 8, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        report.line("server_peak", ["connections": connections, "server_peak_rss_mib": server.peakResidentMiB(),
                                    "floor_rss_mib": floor, "server_rss_before_mib": baseline])
    }

    /// A length prefix announcing `length` body bytes.
    static func prefix(_ length: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt32(length).bigEndian) { Array($0) }
    }
}

/// Opens TLS connections to 127.0.0.1 that write `payload` once the handshake is done and then
/// stay silent, counting how the server answered.
final class Attack: Sendable {
    struct Counts { var handshakes = 0, frameTooLarge = 0, closed = 0 }
    let payload: [UInt8]
    private let state = Mutex(Counts())

    init(payload: [UInt8]) { self.payload = payload }

    var counts: Counts { state.withLock { $0 } }

    /// A connection whose handshake completed and whose payload was written, or that the
    /// server closed first (both count as done: the server decided what to hold).
    func connect(port: Int, tls: TLSContext) async throws -> any Channel {
        let group = MultiThreadedEventLoopGroup.singleton
        let ready = group.any().makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(30))
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls))
                        try channel.pipeline.syncOperations.addHandler(Watcher(attack: self, ready: ready))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
        } catch {
            ready.fail(error)
            throw error
        }
        try await ready.futureResult.get()
        return channel
    }

    fileprivate func record(handshake: Bool = false, error: Rapport_V1_Error.Code? = nil, closed: Bool = false) {
        state.withLock { counts in
            if handshake { counts.handshakes += 1 }
            if error == .frameTooLarge { counts.frameTooLarge += 1 }
            if closed { counts.closed += 1 }
        }
    }

    /// Writes the payload after the handshake and reads what the server says.
    private final class Watcher: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let attack: Attack
        let ready: EventLoopPromise<Void>
        private var received = ByteBuffer()
        private var decoder = FrameDecoder(maxFrameBytes: 1 << 20)

        init(attack: Attack, ready: EventLoopPromise<Void>) {
            self.attack = attack
            self.ready = ready
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted? = event as? TLSEvent {
                attack.record(handshake: true)
                if attack.payload.isEmpty {
                    ready.succeed()
                } else {
                    // A write cut short by the server closing is fine: it refused the frame.
                    let ready = self.ready
                    context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: attack.payload))).whenComplete { _ in ready.succeed() }
                }
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            received.writeBuffer(&bytes)
            while case .frame(let frame)? = decoder.next(&received) {
                if case .error(let error)? = frame.body { attack.record(error: error.code) }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A reset after the server refused the frame, or a failed handshake (then
            // `handshakes` falls short of the connections and the report shows it).
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            attack.record(closed: true)
            ready.succeed()   // a second completion is ignored
            context.fireChannelInactive()
        }
    }
}
