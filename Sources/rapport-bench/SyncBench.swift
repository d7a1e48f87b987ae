import ArgumentParser
import CRM
import Foundation
import Logging
import RapportClient
import ReplicaStore
import SyncModel
import TestSupport
import TLS

/// Sync over TLS against a real `rapportd` process: initial sync, live latency, many sessions,
/// and handshake cost, each next to its floor measured in the same run.
struct SyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Benchmark sync sessions against a rapportd child process.")

    @Option(help: "Records in the initial sync.")
    var records = 100_000

    @Option(help: "Rounds of the live incremental sync.")
    var rounds = 1_000

    @Option(help: "Concurrent sessions.")
    var sessions = 1_000

    @Option(help: "Sequential connections for the handshake cost.")
    var handshakes = 300

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let rows = BenchRows(.crmAccount, count: records)
        let report = Reporter(bench: "sync")
        // The median of three: one run of the floor moved by a third from run to run on the
        // development machine, and with it every ratio below.
        let floors = try (1...3).map { run in try measure { try rows.insertPlain(into: dir.path("floor-\(run).sqlite")) } }
        let floor = floors.sorted()[1]
        report.line("floor_plain_insert", ["records": records, "seconds": floor,
                                           "runs_min_seconds": floors.min()!, "runs_max_seconds": floors.max()!])

        let data = dir.path("server")
        let manyTenants = max(1, sessions / 10)
        let tenants = ["bench", "live"] + (0..<manyTenants).map { "many-\($0)" }
        // Enough devices in every tenant for the sessions below (10 per "many" tenant).
        let devicesPerTenant = max(2, (sessions + manyTenants - 1) / manyTenants)
        var credentials = try ServerProcess.prepare(data: data, tenants: tenants, devicesPerTenant: devicesPerTenant,
                                                    schema: CRMSchema.current)
        // Indexed as rapportd indexes a tenant store, so that the measured sync does not include
        // building the index once, as a store that was never served would need.
        let source = try ReplicaStore(path: data + "/tenants/bench.sqlite", options: .benchTenantLoad)
        try rows.create(in: source)
        source.close()

        // Every bench device connects from 127.0.0.1: the per-address cap on connections not
        // logged in yet (meant for one peer among many) would turn most of them away.
        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data,
                                             arguments: ["--max-prelogin-per-address", "\(max(64, sessions))"])
        defer { server.stop() }
        func client(_ tenant: String, _ name: String,
                    options: ReplicaStore.Options = .init(schema: CRMSchema.current)) throws -> RapportClient {
            guard let credential = credentials[tenant]?.popLast() else { throw ValidationError("no device left in tenant \(tenant)") }
            return try benchDevice(credential, store: dir.path("\(name).sqlite"), port: server.port, data: data, options: options)
        }

        // 1. Initial sync of every record to an empty device.
        let device = try client("bench", "device")
        // Processor time beside the wall clock: on two shared cores the wall time of one sync
        // moves by a fifth from run to run, the work done much less.
        func processorSeconds() -> (device: Double, server: Double) {
            (ServerProcess.cpuSeconds(of: getpid()), server.cpuSeconds())
        }
        let initialCPU = processorSeconds()
        let start = ContinuousClock.now
        let initial = try await device.sync()
        let initialSeconds = seconds(ContinuousClock.now - start)
        let initialUsed = processorSeconds()
        guard initial.pulled == records else { throw ValidationError("pulled \(initial.pulled) of \(records) records") }
        // The sync returns once its records are committed; the log's last copy into the file
        // goes on beside the app (`endBulkWrite`). Shown, and over before the next sync starts.
        try device.store.performSync { try $0.waitForLogCheckpoint() }
        let initialCopied = seconds(ContinuousClock.now - start)
        report.line("initial_sync", ["records": records, "seconds": initialSeconds,
                                     "records_per_second": Double(records) / initialSeconds,
                                     "ratio_to_floor": initialSeconds / floor, "target_ratio": 3,
                                     "log_copied_seconds": initialCopied,
                                     "device_cpu_seconds": initialUsed.device - initialCPU.device,
                                     "server_cpu_seconds": initialUsed.server - initialCPU.server])

        // 1b. The same to a device store opened as `rapport` opens its own (`.crm()`), which
        // keeps the field index the CRM's queries read (owners, references, name words).
        let indexed = try client("bench", "device-crm", options: .crm())
        let indexedCPU = processorSeconds()
        let indexedStart = ContinuousClock.now
        let indexedSync = try await indexed.sync()
        let indexedSeconds = seconds(ContinuousClock.now - indexedStart)
        let indexedUsed = processorSeconds()
        guard indexedSync.pulled == records else { throw ValidationError("pulled \(indexedSync.pulled) of \(records) records") }
        try indexed.store.performSync { try $0.waitForLogCheckpoint() }
        let indexedCopied = seconds(ContinuousClock.now - indexedStart)
        // Measured only if the index is there and answers: an owner's accounts through it.
        let (deferred, owned) = try indexed.store.performSync { store in
            (try store.deferredFieldIndexTypes(),
             try store.records(ofType: "account", where: "owner", equals: rows.rows[0].texts[rows.shape.texts.firstIndex(of: "owner")!]).count)
        }
        guard deferred.isEmpty, owned > 0 else { throw ValidationError("the indexed device's index is not complete (deferred: \(deferred))") }
        report.line("initial_sync_indexed", ["records": records, "seconds": indexedSeconds,
                                             "records_per_second": Double(records) / indexedSeconds,
                                             "ratio_to_floor": indexedSeconds / floor,
                                             "ratio_to_unindexed": indexedSeconds / initialSeconds, "target_ratio": 2.5,
                                             "log_copied_seconds": indexedCopied,
                                             "device_cpu_seconds": indexedUsed.device - indexedCPU.device,
                                             "server_cpu_seconds": indexedUsed.server - indexedCPU.server])

        // 2. One change on a live device A, seen by a live device B.
        let a = try client("live", "live-a"), b = try client("live", "live-b")
        let latencies = try await liveLatencies(from: a, to: b, rounds: rounds)
        report.line("incremental_live_latency", [
            "rounds": rounds, "median_ms": latencies[latencies.count / 2],
            "p99_ms": latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
            "target_median_ms": 5,
        ])

        // 3. Many sessions at once, each pushing 10 records and pulling its tenant's.
        let clients = try (0..<sessions).map { try client("many-\($0 % max(1, sessions / 10))", "many-\($0)") }
        for (index, client) in clients.enumerated() {
            try client.store.performSync { store in
                try store.transaction { for i in 0..<10 { try store.create("activity", ["kind": .text("note"), "subject": .text("s\(index)-\(i)")]) } }
            }
        }
        let before = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: SyncReport.self) { group in
            for client in clients { group.addTask { try await client.sync() } }
            return try await group.reduce(into: [SyncReport]()) { $0.append($1) }
        }
        let manySeconds = seconds(ContinuousClock.now - before)
        report.line("concurrent_sessions", [
            "sessions": sessions, "tenants": max(1, sessions / 10), "seconds": manySeconds,
            "pushed": results.reduce(0) { $0 + $1.pushed }, "pulled": results.reduce(0) { $0 + $1.pulled },
            "retries": results.reduce(0) { $0 + $1.attempts - 1 },
            "server_peak_rss_mib": server.peakResidentMiB(),
        ])

        // 4. Handshake plus Hello per server CPU-second, next to openssl's own server.
        let probe = try client("live", "probe")
        let cpuBefore = server.cpuSeconds()
        for _ in 0..<handshakes { try await probe.sync() }
        let rapportCPU = server.cpuSeconds() - cpuBefore
        let floorRate = try OpenSSLFloor.handshakesPerServerCPUSecond(
            certificate: data + "/tls/server-chain.pem", key: data + "/tls/server-key.pem",
            ca: data + "/tls/ca.pem", connections: handshakes)
        let rate = Double(handshakes) / max(rapportCPU, 0.001)
        report.line("handshake_and_hello", [
            "connections": handshakes, "per_server_cpu_second": rate,
            "openssl_s_server_per_cpu_second": floorRate, "ratio_to_floor": floorRate / rate,
        ])
    }
}

/// A device of an enrolled credential with its own store, syncing to a benchmarked server
/// (`data` is the server's data directory, for its dev CA): patient retries, quiet logs. The
/// store opens with `options` (by default the CRM's schema alone) under the device's replica id.
func benchDevice(_ credential: DeviceCredential, store path: String, port: Int, data: String,
                 options: ReplicaStore.Options = .init(schema: CRMSchema.current)) throws -> RapportClient {
    var options = options
    options.replicaID = try credential.replicaID
    let store = try ReplicaStore(path: path, options: options)
    var config = ClientConfiguration(host: "127.0.0.1", port: port, tenant: credential.tenant, secret: credential.secret,
                                     trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
    config.retry = RetryPolicy(maxAttempts: 10, initialDelay: .milliseconds(50), maxDelay: .seconds(2))
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    return try RapportClient(store: SharedReplicaStore(store, label: path), configuration: config, logger: logger)
}

/// Milliseconds from an edit on live device `a` to live device `b` having pulled it, for each of
/// `rounds` edits of one account, sorted.
func liveLatencies(from a: RapportClient, to b: RapportClient, rounds: Int) async throws -> [Double] {
    let id = try a.store.performSync { try $0.create("account", ["name": .text("round 0")]).id }
    try await a.sync()
    try await b.sync()
    let liveA = a.live(), liveB = b.live()
    var eventsA = liveA.events.makeAsyncIterator(), eventsB = liveB.events.makeAsyncIterator()
    for _ in 0..<2 { _ = await eventsA.next(); _ = await eventsB.next() }
    var latencies: [Double] = []
    for round in 1...rounds {
        let sent = ContinuousClock.now
        try a.store.performSync { _ = try $0.update(id, ["name": .text("round \(round)")]) }
        liveA.pushNow()
        while let event = await eventsB.next() {
            if case .synced(let result) = event, result.pulled > 0 { break }
        }
        latencies.append(seconds(ContinuousClock.now - sent) * 1000)
        while case .synced(let pushed)? = await eventsA.next(), pushed.pushed == 0 {}
    }
    await liveA.stop()
    await liveB.stop()
    return latencies.sorted()
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func measure(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    return seconds(ContinuousClock.now - start)
}

/// Prints one JSON object per line, numbers rounded for reading.
struct Reporter {
    let bench: String

    func line(_ figure: String, _ values: [String: Any]) {
        var object: [String: Any] = ["bench": bench, "figure": figure]
        for (key, value) in values {
            if let number = value as? Double { object[key] = (number * 1000).rounded() / 1000 } else { object[key] = value }
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        // Written straight to the file descriptor, unbuffered, so each figure shows as it is made.
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// A timed figure with its rate and, when there is one, its ratio to the floor.
    func figure(_ name: String, _ seconds: Double, records: Int, floor: Double?, target: Double?) {
        var values: [String: Any] = ["records": records, "seconds": seconds, "records_per_second": Double(records) / seconds]
        if let floor { values["ratio_to_floor"] = seconds / floor }
        if let target { values["target_ratio"] = target }
        line(name, values)
    }
}
