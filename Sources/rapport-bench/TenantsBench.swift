import ArgumentParser
import CRM
import Foundation
import RapportClient
import RapportServer
import Registry
import ReplicaStore
import SyncModel
import TestSupport
import TLS

/// Many tenants behind a bounded pool of open stores, against a real `rapportd` process: the
/// first sync of a cold tenant next to a warm one, sessions per second across all tenants, and
/// what authentication costs next to the TLS handshake.
struct TenantsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants",
        abstract: "Benchmark many tenants behind a bounded store pool against a rapportd child process.")

    @Option(help: "Registered tenants, each with one user and two devices.")
    var tenants = 10_000

    @Option(help: "Tenant stores the server keeps open (--max-open-tenants).")
    var pool = 256

    @Option(help: "Sessions spread over all tenants, for the rate.")
    var sessions = 3_000

    @Option(help: "Sessions running at once.")
    var concurrency = 64

    @Option(help: "Tenants whose first sync is timed cold and warm.")
    var probes = 50

    @Option(help: "Records in each probed tenant.")
    var records = 200

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard tenants >= probes, probes > 0, pool > 0, sessions > 0, concurrency > 0 else {
            throw ValidationError("need tenants >= probes > 0 and positive pool, sessions, concurrency")
        }
    }

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "tenants")
        let data = dir.path("server")
        let slugs = (0..<tenants).map { String(format: "tenant-%05d", $0) }
        let setupStart = ContinuousClock.now
        let credentials = try ServerProcess.prepare(data: data, tenants: slugs, devicesPerTenant: 2, schema: CRMSchema.current)
        for slug in slugs.prefix(probes) {
            let store = try ReplicaStore(path: data + "/tenants/\(slug).sqlite", options: .init(schema: CRMSchema.current))
            try store.transaction {
                for i in 0..<records { try store.create("account", ["name": .text("account \(i) of \(slug)"), "region": .text("r\(i % 9)")]) }
            }
            store.close()
        }
        report.line("setup", ["tenants": tenants, "devices": tenants * 2, "seconds": seconds(ContinuousClock.now - setupStart)])

        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data,
                                             arguments: ["--max-open-tenants", String(pool)])
        defer { server.stop() }
        let idleDescriptors = server.openFileDescriptors()
        let client = { (credential: DeviceCredential, name: String) throws -> RapportClient in
            try benchDevice(credential, store: dir.path("devices/\(name).sqlite"), port: server.port, data: data)
        }
        try FileManager.default.createDirectory(atPath: dir.path("devices"), withIntermediateDirectories: true)

        // 1. First sync of a cold tenant (store closed), then of a second device of the same,
        //    now warm, tenant. Each probe tenant is cold: the pool only ever saw it once before.
        var cold: [Double] = [], warm: [Double] = []
        for slug in slugs.prefix(probes) {
            let pair = credentials[slug] ?? []
            let first = try client(pair[0], "\(slug)-a"), second = try client(pair[1], "\(slug)-b")
            var start = ContinuousClock.now
            guard try await first.sync().pulled == records else { throw ValidationError("cold sync of \(slug) incomplete") }
            cold.append(seconds(ContinuousClock.now - start) * 1000)
            start = ContinuousClock.now
            guard try await second.sync().pulled == records else { throw ValidationError("warm sync of \(slug) incomplete") }
            warm.append(seconds(ContinuousClock.now - start) * 1000)
        }
        cold.sort()
        warm.sort()
        report.line("first_sync_cold_vs_warm", [
            "tenants": probes, "records": records, "cold_median_ms": cold[cold.count / 2], "warm_median_ms": warm[warm.count / 2],
            "ratio_cold_to_warm": cold[cold.count / 2] / warm[warm.count / 2],
        ])

        // 2. Sessions across every tenant, most of them cold, `concurrency` at a time; each
        //    pushes one record and pulls the tenant's changes.
        var generator = SystemRandomNumberGenerator()
        let picks = (0..<sessions).map { _ in slugs[Int.random(in: 0..<slugs.count, using: &generator)] }
        let clients = try picks.enumerated().map { index, slug in try client(credentials[slug]![index % 2], "s\(index)") }
        for (index, device) in clients.enumerated() {
            try device.store.performSync { _ = try $0.create("activity", ["kind": .text("note"), "subject": .text("session \(index)")]) }
        }
        let cpuBefore = server.cpuSeconds()
        let start = ContinuousClock.now
        var retries = 0, peakDescriptors = 0
        try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0
            func add() {
                let device = clients[next]
                next += 1
                group.addTask { try await device.sync().attempts - 1 }
            }
            while next < min(concurrency, clients.count) { add() }
            while let attempts = try await group.next() {
                retries += attempts
                if next % 100 == 0 { peakDescriptors = max(peakDescriptors, server.openFileDescriptors()) }
                if next < clients.count { add() }
            }
        }
        let elapsed = seconds(ContinuousClock.now - start)
        let cpu = server.cpuSeconds() - cpuBefore
        report.line("sessions_across_tenants", [
            "tenants": tenants, "pool": pool, "sessions": sessions, "concurrency": concurrency, "seconds": elapsed,
            "sessions_per_second": Double(sessions) / elapsed, "server_cpu_ms_per_session": cpu * 1000 / Double(sessions),
            "retries": retries, "server_fds_idle": idleDescriptors, "server_fds_peak_sampled": peakDescriptors,
            "server_peak_rss_mib": server.peakResidentMiB(),
        ])

        // 3. Authentication against the registry snapshot, next to a TLS handshake on the same
        //    machine (openssl s_server driven by s_time, the server's CPU per connection).
        let authenticator = try RegistryAuthenticator(dataDirectory: DataDirectory(data))
        let sample = slugs.prefix(1_000).map { credentials[$0]![0] }
        let rounds = 20
        let authStart = ContinuousClock.now
        for _ in 0..<rounds {
            for credential in sample {
                _ = try authenticator.authenticate(tenant: credential.tenant, device: try credential.replicaID, secret: credential.secret)
            }
        }
        let authMicroseconds = seconds(ContinuousClock.now - authStart) * 1e6 / Double(rounds * sample.count)
        let handshakes = try OpenSSLFloor.handshakesPerServerCPUSecond(
            certificate: data + "/tls/server-chain.pem", key: data + "/tls/server-key.pem", ca: data + "/tls/ca.pem", connections: 200)
        let handshakeMicroseconds = 1e6 / handshakes
        report.line("authentication_vs_handshake", [
            "devices_registered": tenants * 2, "authentication_us": authMicroseconds, "tls_handshake_server_us": handshakeMicroseconds,
            "ratio_to_handshake": authMicroseconds / handshakeMicroseconds,
        ])
    }
}
