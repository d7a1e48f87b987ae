import ArgumentParser
import CRM
import Foundation
import NIOCore
import NIOPosix
import RapportClient
import RapportServer
import ReplicaStore
import Synchronization
import SyncProtocol
import TestSupport
import TLS

/// Field devices keep a live session open all day: a `rapportd` child process with N idle live
/// (subscribed) sessions over TLS, opened by K worker processes. Figures: the server's memory
/// per idle session and its descriptors, the latency of an edit from one live device to
/// another while they are all connected, next to the same with none (the floor), and a new
/// session's sync next to the same with none.
struct IdleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Many idle live sessions against a rapportd child process: memory per session, descriptors, edit latency.")

    @Option(help: "Idle live sessions, each a device of its own.")
    var sessions = 10_000

    @Option(help: "Worker processes opening them (default: one per 2,500 sessions).")
    var processes: Int?

    @Option(help: "Edits timed from one live device to another, with no idle session and with all of them.")
    var rounds = 200

    @Option(help: "Accounts in the idle sessions' tenant, pulled by each session when it opens, as a device's first sync does (0: none).")
    var records = 100

    @Option(help: "Seconds between an idle session's pings (clients ping every 20 s).")
    var ping: Double = 20

    @Option(help: "Connections each worker opens at once.")
    var concurrency = 32

    @Option(help: "Seconds of quiet with every session connected, for the server's CPU and memory once they have pinged (by default one round of pings from 10,000 sessions on, shorter below: N/500 s, at least 2).")
    var quietSeconds: Double?

    @Flag(help: "Make the idle sessions devices of the timed devices' tenant: every edit is then announced to all of them, and they all pull it.")
    var sameTenant = false

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard sessions > 0, rounds > 0, ping > 0, concurrency > 0, (quietSeconds ?? 0) >= 0, records >= 0 else {
            throw ValidationError("--sessions, --rounds, --ping and --concurrency must be positive")
        }
        if let processes, processes < 1 || processes > sessions {
            throw ValidationError("--processes must be between 1 and --sessions")
        }
    }

    mutating func run() async throws {
        _ = SyncServer.raiseFileDescriptorLimit()
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "idle")
        let data = dir.path("server")
        let workers = processes ?? max(1, (sessions + 2_499) / 2_500)

        // Every device is enrolled through the registry, as the Enroll message does it, with
        // its own id and secret: 10,000 enrollments over TLS would measure handshakes, not this.
        let setupStart = ContinuousClock.now
        var credentials = try ServerProcess.prepare(data: data, tenants: ["live"], devicesPerTenant: 3 + (sameTenant ? sessions : 0),
                                                    schema: CRMSchema.current)
        if !sameTenant {
            credentials.merge(try ServerProcess.prepare(data: data, tenants: ["field"], devicesPerTenant: sessions,
                                                        schema: CRMSchema.current)) { $1 }
        }
        let timed = Array(credentials["live", default: []].prefix(3))
        let idle = sameTenant ? Array(credentials["live", default: []].dropFirst(3)) : credentials["field", default: []]
        let idleTenant = sameTenant ? "live" : "field"
        if records > 0 {
            let store = try ReplicaStore(path: data + "/tenants/\(idleTenant).sqlite", options: .benchTenantLoad)
            try BenchRows(.crmAccount, count: records).create(in: store)
            store.close()
        }
        let credentialFile = dir.path("idle-credentials")
        // Secrets: owner-only, like everything else that holds them.
        let lines = idle.map { "\($0.tenant) \($0.deviceID) \(Data($0.secret).base64EncodedString())\n" }.joined()
        guard FileManager.default.createFile(atPath: credentialFile, contents: Data(lines.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(credentialFile)")
        }
        report.line("setup", ["devices": idle.count + timed.count, "seconds": seconds(ContinuousClock.now - setupStart)])

        // All sessions come from 127.0.0.1: the per-address cap on connections not logged in
        // yet (one peer among many) would turn the workers' openings away. The connection cap
        // is rapportd's own default, which is what is being shown to hold them.
        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data, arguments: [
            "--max-prelogin-per-address", "\(workers * concurrency + 16)", "--max-prelogin", "\(max(1024, workers * concurrency + 16))"])
        defer { server.stop() }
        let announced = server.banner.split(separator: "\n").first { $0.hasPrefix("connections:") }.map(String.init) ?? ""
        let maxConnections = announced.split(separator: ";").first?.split(separator: " ").last.flatMap { Int($0) } ?? 0
        let limits = Self.openFileLimits(of: server.process.processIdentifier)
        report.line("server_limits", ["announced": announced, "max_connections": maxConnections,
                                      "fd_soft_limit": limits.soft, "fd_hard_limit": limits.hard])
        guard maxConnections >= sessions + timed.count else {
            throw ValidationError("rapportd takes at most \(maxConnections) connections, fewer than \(sessions) idle sessions and \(timed.count) timed ones: \(announced)")
        }

        let device = { (index: Int, name: String) throws -> RapportClient in
            try benchDevice(timed[index], store: dir.path("\(name).sqlite"), port: server.port, data: data)
        }
        let a = try device(0, "a"), b = try device(1, "b"), probe = try device(2, "probe")

        // The floor: the same work with no idle session (the first sync opens the tenant's store).
        _ = try await Self.timedSync(probe)
        let probeFloor = try await Self.timedSync(probe)
        let floor = try await BranchBench.latencies(from: a, to: b, rounds: rounds, "no idle sessions")
        try await Task.sleep(for: .seconds(1))
        let residentBefore = server.residentMiB()
        let descriptorsBefore = server.openFileDescriptors()

        // The idle sessions, from K worker processes.
        let cpuBefore = server.cpuSeconds()
        let openStart = ContinuousClock.now
        let binary = ServerProcess.defaultBinary(named: "rapport-bench")
        let pool = try (0..<workers).map { index in
            let first = index * sessions / workers, last = (index + 1) * sessions / workers
            return try IdleWorkerProcess(binary: binary, arguments: [
                "idle-worker", "--port", "\(server.port)", "--ca", data + "/tls/ca.pem", "--credentials", credentialFile,
                "--first", "\(first)", "--count", "\(last - first)", "--ping", "\(ping)", "--concurrency", "\(concurrency)"]
                + (records > 0 ? ["--pull-first"] : []))
        }
        defer { for worker in pool { worker.stop() } }
        var opened = 0, failed = 0, retries = 0
        for worker in pool {
            let ready = try await worker.next("ready", within: .seconds(120 + sessions / 20))
            opened += ready["opened"] ?? 0
            failed += ready["failed"] ?? 0
            retries += ready["retries"] ?? 0
        }
        let openSeconds = seconds(ContinuousClock.now - openStart)
        let openCPU = server.cpuSeconds() - cpuBefore
        // Let the server settle (handshake garbage freed, timers armed) before reading memory.
        try await Task.sleep(for: .seconds(2))
        let resident = server.residentMiB()
        let descriptors = server.openFileDescriptors()
        report.line("idle_sessions", [
            "sessions": sessions, "opened": opened, "failed": failed, "retries": retries, "processes": workers,
            "records_pulled_each": records,
            "same_tenant": sameTenant, "open_seconds": openSeconds, "server_cpu_seconds_opening": openCPU,
            "server_rss_before_mib": residentBefore, "server_rss_mib": resident,
            "kib_per_idle_session": (resident - residentBefore) * 1024 / Double(max(opened, 1)),
            "server_fds_before": descriptorsBefore, "server_fds": descriptors, "fd_soft_limit": limits.soft,
            "target_rss_mib_at_10000": 1024,
        ])

        let quiet = quietSeconds ?? min(ping, max(2, Double(sessions) / 500))
        let quietCPU = server.cpuSeconds()
        try await Task.sleep(for: .seconds(quiet))
        let quietUsed = server.cpuSeconds() - quietCPU
        let residentQuiet = server.residentMiB()
        report.line("idle_sessions_after_quiet", [
            "sessions": opened, "seconds": quiet, "ping_seconds": ping, "server_cpu_seconds": quietUsed,
            "server_cpu_percent": quietUsed / max(quiet, 0.001) * 100, "server_rss_mib": residentQuiet,
            "kib_per_idle_session": (residentQuiet - residentBefore) * 1024 / Double(max(opened, 1)),
        ])

        let loaded = try await BranchBench.latencies(from: a, to: b, rounds: rounds, "with \(opened) idle sessions")
        report.line("edit_latency", [
            "idle_sessions": opened, "rounds": rounds, "median_ms": loaded.median, "p99_ms": loaded.p99,
            "floor_median_ms": floor.median, "floor_p99_ms": floor.p99,
            "ratio_median_to_floor": loaded.median / floor.median, "target_median_ms": 10,
        ])
        let probeLoaded = try await Self.timedSync(probe)
        report.line("new_session_sync", ["idle_sessions": opened, "ms": probeLoaded, "floor_ms": probeFloor,
                                         "ratio_to_floor": probeLoaded / probeFloor])

        var status: [String: Int] = [:]
        for worker in pool {
            worker.send("status")
            for (key, value) in try await worker.next("status", within: .seconds(60)) { status[key, default: 0] += value }
        }
        report.line("idle_sessions_after", [
            "open": status["open"] ?? 0, "lost": status["closed"] ?? 0, "pongs": status["pongs"] ?? 0,
            "announcements": status["announcements"] ?? 0, "pulls": status["pulls"] ?? 0,
            "server_fds": server.openFileDescriptors(), "server_rss_mib": server.residentMiB(),
            "server_peak_rss_mib": server.peakResidentMiB(),
        ])
        guard failed == 0, status["closed", default: 0] == 0, status["open", default: 0] == sessions else {
            throw ValidationError("of \(sessions) idle sessions \(failed) could not open and \(status["closed", default: 0]) were lost")
        }
    }

    /// A whole sync of a device (connect, TLS, Hello, push, pull, Goodbye), in milliseconds.
    static func timedSync(_ client: RapportClient) async throws -> Double {
        let start = ContinuousClock.now
        try await client.sync()
        return seconds(ContinuousClock.now - start) * 1000
    }

    /// A process's soft and hard limits on open files, as the kernel reports them.
    static func openFileLimits(of pid: Int32) -> (soft: Int, hard: Int) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) else { return (0, 0) }
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        return numbers.count >= 2 ? (numbers[0], numbers[1]) : (0, 0)
    }
}

/// A worker process of the idle bench, spoken to in lines: it prints `ready key=value...` once
/// its sessions are open, answers `status` with `status key=value...`, and closes its sessions
/// and exits when its standard input ends (so it never outlives the bench).
final class IdleWorkerProcess: Sendable {
    private let process: ChildProcess
    private let input: FileHandle
    /// Lines the worker printed and nobody took yet, and whether its output ended.
    private let lines = Mutex<(waiting: [String], ended: Bool)>(([], false))

    init(binary: String, arguments: [String]) throws {
        process = try ChildProcess(binary, arguments, pipedInput: true, standardOutput: .pipe, standardError: .inherited)
        input = process.input!
        let output = process.output!
        // A thread of its own: reading a pipe blocks, which no task of the bench may do.
        Thread.detachNewThread { [self] in
            var pending = Data()
            while true {
                let chunk = output.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[pending.startIndex..<end], as: UTF8.self)
                    self.lines.withLock { $0.waiting.append(line) }
                    pending.removeSubrange(pending.startIndex...end)
                }
            }
            self.lines.withLock { $0.ended = true }
        }
    }

    func send(_ line: String) {
        try? input.write(contentsOf: Data((line + "\n").utf8))
    }

    /// The next line starting with `word`, as its `key=value` numbers; fails when the worker
    /// exits or `within` passes first.
    func next(_ word: String, within limit: Duration) async throws -> [String: Int] {
        let deadline = ContinuousClock.now + limit
        while true {
            let (line, ended) = lines.withLock { state in (state.waiting.isEmpty ? nil : state.waiting.removeFirst(), state.ended) }
            guard let line else {
                if ended { break }
                guard ContinuousClock.now < deadline else { throw ValidationError("idle worker: no '\(word)' within \(limit)") }
                try await Task.sleep(for: .milliseconds(10))
                continue
            }
            let words = line.split(separator: " ")
            guard words.first.map(String.init) == word else { continue }
            var values: [String: Int] = [:]
            for pair in words.dropFirst() {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
            }
            return values
        }
        throw ValidationError("idle worker exited (status \(process.isRunning ? -1 : process.terminationStatus)) before '\(word)'")
    }

    /// Ends the worker: its input closes, it closes its sessions and exits.
    func stop() {
        try? input.close()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { process.terminate() }
    }
}

/// The hidden worker of `rapport-bench idle`: opens live sessions with the credentials of lines
/// `first..<first+count` of the credential file, each as a device keeps one all day (Hello with
/// `subscribe`, a Ping every `--ping` seconds, a Pull of what a ChangesAvailable announces, the
/// retries a client makes when turned away), without a local store: what is measured is the
/// server's side.
struct IdleWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-worker", abstract: "Hold idle live sessions for 'rapport-bench idle'.", shouldDisplay: false)

    @Option var port: Int
    @Option var ca: String
    @Option var credentials: String
    @Option var first: Int
    @Option var count: Int
    @Option var ping: Double = 20
    @Option var concurrency = 32
    @Flag var pullFirst = false

    mutating func run() async throws {
        _ = SyncServer.raiseFileDescriptorLimit()
        let all = try String(contentsOfFile: credentials, encoding: .utf8).split(separator: "\n")
        let mine = all.dropFirst(first).prefix(count).map { line -> DeviceCredential in
            let fields = line.split(separator: " ")
            return DeviceCredential(tenant: String(fields[0]), deviceID: String(fields[1]),
                                    secret: Array(Data(base64Encoded: String(fields[2])) ?? Data()))
        }
        let tls = try TLSContext(configuration: .client(trustRoots: .certificates(.file(ca)), expectedHostname: "127.0.0.1",
                                                        applicationProtocols: [SyncProtocolVersion.alpn]))
        let tally = IdleTally()
        let (port, ping, pullFirst) = (self.port, self.ping, self.pullFirst)
        let start = ContinuousClock.now
        var channels: [any Channel] = []
        var failed = 0
        try await withThrowingTaskGroup(of: (any Channel)?.self) { group in
            var next = 0
            func add() {
                let credential = mine[next]
                next += 1
                group.addTask { try? await IdleSession.open(credential, port: port, tls: tls, ping: ping, pullFirst: pullFirst, tally: tally) }
            }
            while next < min(concurrency, mine.count) { add() }
            while let opened = try await group.next() {
                if let opened { channels.append(opened) } else { failed += 1 }
                if next < mine.count { add() }
            }
        }
        let counts = tally.counts
        Self.say("ready opened=\(channels.count) failed=\(failed) retries=\(counts.retries) records=\(counts.records) ms=\(Int(seconds(ContinuousClock.now - start) * 1000))")
        for await command in Self.standardInputLines() where command == "status" {
            let counts = tally.counts
            Self.say("status open=\(counts.open) closed=\(counts.closed) pongs=\(counts.pongs) announcements=\(counts.announcements) pulls=\(counts.pulls)")
        }
        tally.stopping()
        for channel in channels { channel.close(promise: nil) }
        for channel in channels { try? await channel.closeFuture.get() }
    }

    /// One line to the bench, unbuffered.
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Lines of standard input, read on a thread of its own; finishes at end of input.
    static func standardInputLines() -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        Thread.detachNewThread {
            while let line = readLine() { continuation.yield(line) }
            continuation.finish()
        }
        return stream
    }
}

/// What a worker's sessions did.
final class IdleTally: Sendable {
    struct Counts { var open = 0, closed = 0, retries = 0, pongs = 0, announcements = 0, pulls = 0, records = 0, stopping = false }
    private let state = Mutex(Counts())

    var counts: Counts { state.withLock { $0 } }
    func update(_ change: (inout Counts) -> Void) { state.withLock { change(&$0) } }
    /// From now on a session closing is the worker's own doing, not a loss.
    func stopping() { update { $0.stopping = true } }
}

/// One idle live session on a channel: says Hello (subscribed) once TLS is up, pulls the tenant
/// from the start if told to, then pings and pulls what is announced, and counts what happens.
final class IdleSession: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = Rapport_V1_Frame

    private let credential: DeviceCredential
    private let tally: IdleTally
    private let ping: TimeAmount
    private let pullFirst: Bool
    private let welcomed: EventLoopPromise<Void>
    private var established = false
    private var checkpoint: UInt64 = 0
    private var pulling = false
    /// An announcement came while a pull was out: pull again once it is answered.
    private var announcedWhilePulling = false
    private var pinger: RepeatedTask?

    init(credential: DeviceCredential, tally: IdleTally, ping: TimeAmount, pullFirst: Bool, welcomed: EventLoopPromise<Void>) {
        self.credential = credential
        self.pullFirst = pullFirst
        self.tally = tally
        self.ping = ping
        self.welcomed = welcomed
    }

    /// Opens the session and waits for its Welcome; a refusal the server says is retryable
    /// (SERVER_BUSY) or a dropped connection is retried with backoff, as a client does.
    static func open(_ credential: DeviceCredential, port: Int, tls: TLSContext, ping: Double, pullFirst: Bool,
                     tally: IdleTally) async throws -> any Channel {
        var attempt = 0
        while true {
            let group = MultiThreadedEventLoopGroup.singleton
            let welcomed = group.any().makePromise(of: Void.self)
            do {
                let channel = try await ClientBootstrap(group: group)
                    .connectTimeout(.seconds(30))
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let sync = channel.pipeline.syncOperations
                            try sync.addHandler(TLSHandler(context: tls))
                            try sync.addFrameCodec(maxFrameBytes: SessionLimits().maxFrameBytes)
                            try sync.addHandler(IdleSession(credential: credential, tally: tally,
                                                            ping: .milliseconds(Int64(ping * 1000)), pullFirst: pullFirst,
                                                            welcomed: welcomed))
                        }
                    }
                    .connect(host: "127.0.0.1", port: port).get()
                try await welcomed.futureResult.get()
                return channel
            } catch {
                welcomed.fail(error)
                attempt += 1
                guard attempt < 8 else { throw error }
                tally.update { $0.retries += 1 }
                try await Task.sleep(for: .milliseconds(200 << min(attempt, 6)))
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSEvent {
            var hello = Rapport_V1_Hello()
            hello.protocolVersion = SyncProtocolVersion.current
            hello.schemaVersion = CRMSchema.version
            hello.tenant = credential.tenant
            hello.deviceID = credential.deviceID
            hello.secret = Data(credential.secret)
            hello.subscribe = true
            hello.client = "rapport-bench idle"
            var frame = Rapport_V1_Frame()
            frame.hello = hello
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .frame(let frame) = unwrapInboundIn(data) else {
            context.close(promise: nil)
            return
        }
        switch frame.body {
        case .welcome(let welcome)?:
            if pullFirst {
                pull(context: context)
            } else {
                // Up to date as of the Welcome, as a device that synced before going idle.
                checkpoint = welcome.serverSequence
                becomeIdle(context: context)
            }
        case .pong?:
            tally.update { $0.pongs += 1 }
        case .changesAvailable?:
            tally.update { $0.announcements += 1 }
            if pulling { announcedWhilePulling = true } else { pull(context: context) }
        case .pullBatch(let batch)?:
            checkpoint = batch.lastSequence
            pulling = false
            tally.update { $0.records += batch.records.count }
            if !established && batch.remainingRecords == 0 {
                becomeIdle(context: context)
            }
            if batch.remainingRecords > 0 || announcedWhilePulling {
                announcedWhilePulling = false
                pull(context: context)
            }
        case .error(let error)?:
            welcomed.fail(SyncError(error))
            context.close(promise: nil)
        default:
            break
        }
    }

    /// Synced: from now on only pings, and pulls of what is announced.
    private func becomeIdle(context: ChannelHandlerContext) {
        established = true
        tally.update { $0.open += 1 }
        // Spread over the interval, so the sessions do not all ping at once.
        let first = TimeAmount.nanoseconds(Int64.random(in: 0..<max(1, ping.nanoseconds)))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pinger = context.eventLoop.scheduleRepeatedTask(initialDelay: first, delay: ping) { _ in
            let (session, context) = bound.value
            var ping = Rapport_V1_Frame()
            ping.ping = Rapport_V1_Ping()
            context.writeAndFlush(session.wrapOutboundOut(ping), promise: nil)
        }
        welcomed.succeed()
    }

    private func pull(context: ChannelHandlerContext) {
        pulling = true
        tally.update { $0.pulls += 1 }
        var request = Rapport_V1_PullRequest()
        request.after = checkpoint
        var frame = Rapport_V1_Frame()
        frame.pull = request
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        welcomed.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pinger?.cancel()
        welcomed.fail(ClientError.connectionLost("the server closed the connection"))
        if established { tally.update { if !$0.stopping { $0.closed += 1 }; $0.open -= 1 } }
        context.fireChannelInactive()
    }
}
