import ArgumentParser
import CRM
import Foundation
import Logging
import Postgres
import RapportClient
import ReplicaStore
import SQLite
import SyncModel
import TestSupport
import TLS

/// The server tier on PostgreSQL (`rapportd --store`): an initial sync from it against the same
/// rows copied into PostgreSQL with COPY and against a server on SQLite files; pushes a second
/// to one tenant and to many through one node and through two; how fast a live device on one
/// node hears an edit pushed through another.
struct PostgresBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres",
        abstract: "rapportd on PostgreSQL: initial sync against COPY and SQLite, pushes with one and two nodes, live latency across nodes.")

    @Option(help: "Records in the initial sync.")
    var records = 100_000

    @Option(help: "Devices pushing at once in the push figures.")
    var devices = 8

    @Option(help: "Pushes (10 records each) every device makes in the push figures.")
    var pushes = 20

    @Option(help: "Tenants the devices spread over in the many-tenants push figures.")
    var tenants = 100

    @Option(help: "Rounds of the live latency across nodes.")
    var rounds = 100

    @Flag(help: "Only the initial sync figures: a quicker comparison of the read path.")
    var syncOnly = false

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "postgres")
        let binary = rapportd ?? ServerProcess.defaultBinary()
        let database = try PostgresServer.database()
        let rows = BenchRows(.crmAccount, count: records)

        // The same tenant store on both backends: written once to a file as rapportd indexes
        // it, then copied row for row (same replica, sequence numbers) into PostgreSQL.
        let sqliteData = dir.path("sqlite-server"), pgData = dir.path("pg-server")
        var fileCredentials = try ServerProcess.prepare(data: sqliteData, tenants: ["bench"], devicesPerTenant: 1, schema: CRMSchema.current)
        let file = sqliteData + "/tenants/bench.sqlite"
        let source = try ReplicaStore(path: file, options: .benchTenantLoad)
        try rows.create(in: source)
        source.close()
        let many = (0..<tenants).map { "t\($0)" }
        var pgCredentials = try ServerProcess.prepare(data: pgData, tenants: ["bench", "live", "one"] + many,
                                                      devicesPerTenant: 1, schema: CRMSchema.current, database: database.url)
        pgCredentials["one"]! += try ServerProcess.prepare(data: pgData, tenants: ["one"], devicesPerTenant: devices - 1,
                                                           schema: CRMSchema.current, database: database.url)["one"]!
        pgCredentials["live"]! += try ServerProcess.prepare(data: pgData, tenants: ["live"], devicesPerTenant: 3,
                                                            schema: CRMSchema.current, database: database.url)["live"]!
        let connection = try PostgresConnection(url: database.url)
        defer { connection.close() }
        try ReplicaStore.removeStore(tenant: "bench", from: connection)
        let copySeconds = try measure { try ReplicaStore.copyFile(file, into: connection, tenant: "bench") }
        // Each store opened once as rapportd opens it, before the servers start: whatever a
        // first open does (building a field index its handle finds missing, as every server did
        // inside the timed sync while copyFile's migrating open dropped the file's index) is
        // outside the timings, as for a server that has served the tenant before.
        let fileIndexSeconds = try measure { try ReplicaStore(path: file, options: .benchTenantLoad).close() }
        let pgIndexSeconds = try measure {
            try ReplicaStore(database: try PostgresConnection(url: database.url), tenant: "bench", options: .benchTenantLoad).close()
        }
        report.line("load_tenant_copy", ["records": records, "seconds": copySeconds,
                                         "index_rebuild_seconds_sqlite": fileIndexSeconds, "index_rebuild_seconds_postgres": pgIndexSeconds])

        // Floor: the records' rows as the store keeps them, COPYed into a plain table keyed as
        // the store's is, in one transaction.
        try connection.run("CREATE TABLE copy_floor (tenant_id text, seq bigint, id bytea, type text, deleted bigint, dirty bigint, vector bytea, state bytea, PRIMARY KEY (tenant_id, seq), UNIQUE (tenant_id, id))")
        let fileDB = try Database(path: file)
        let encoded = try fileDB.query("SELECT seq, id, type, vector, state FROM records ORDER BY seq") {
            ($0.int64(0), $0.data(1), $0.string(2), $0.data(3), $0.data(4))
        }
        fileDB.close()
        // COPY's text form of bytea (formatting byte by byte with String(format:) was most of the bench's setup).
        func hex(_ data: Data) -> String { "\\\\x" + Crypto.hex(data) }
        let lines = encoded.map { "bench\t\($0.0)\t\(hex($0.1))\t\($0.2)\t0\t0\t\(hex($0.3))\t\(hex($0.4))\n" }
        let floor = try measure {
            try connection.transaction { _ = try connection.copyIn("COPY copy_floor FROM STDIN") { send in for line in lines { try send(line) } } }
        }
        report.line("floor_copy", ["records": records, "seconds": floor])

        // 1. Initial sync to an empty device, from each server.
        let fileServer = try await ServerProcess.start(binary: binary, data: sqliteData)
        let fileDevice = try benchDevice(fileCredentials["bench"]!.removeLast(), store: dir.path("device-sqlite.sqlite"),
                                         port: fileServer.port, data: sqliteData)
        let fileSeconds = try await timedSync(fileDevice, expecting: records)
        await fileServer.stop()
        report.line("initial_sync_sqlite_server", ["records": records, "seconds": fileSeconds])

        let node0 = try await ServerProcess.start(binary: binary, data: pgData, arguments: ["--store", database.url, "--no-dev-tenant"])
        defer { node0.stop() }
        let pgDevice = try benchDevice(pgCredentials["bench"]!.removeLast(), store: dir.path("device-pg.sqlite"), port: node0.port, data: pgData)
        let pgSeconds = try await timedSync(pgDevice, expecting: records)
        report.line("initial_sync_postgres_server", ["records": records, "seconds": pgSeconds, "records_per_second": Double(records) / pgSeconds,
                                                     "ratio_to_copy_floor": pgSeconds / floor, "target_ratio": 3,
                                                     "ratio_to_sqlite_server": pgSeconds / fileSeconds])
        if syncOnly { return }

        // 2. Pushes a second: one tenant, then many, through one node and through two.
        let node1 = try await ServerProcess.start(binary: binary, data: pgData, arguments: ["--store", database.url, "--no-dev-tenant"])
        defer { node1.stop() }
        // `devices` pushers at once. To one tenant, each pushes through its own device of it; to
        // many, pusher w takes tenants w, w + devices, w + 2 devices, ... in turn, each through
        // that tenant's device, so every tenant is pushed to (when devices x pushes reach them).
        let oneTenant = try (0..<devices).map { index in
            [try benchDevice(pgCredentials["one"]!.removeLast(), store: dir.path("one-\(index).sqlite"), port: node0.port, data: pgData)]
        }
        let manyTenants = try (0..<devices).map { pusher in
            try stride(from: pusher, to: many.count, by: devices).map { index in
                try benchDevice(pgCredentials[many[index]]!.removeLast(), store: dir.path("many-\(index).sqlite"), port: node0.port, data: pgData)
            }
        }
        for (name, pushers) in [("one_tenant", oneTenant), ("many_tenants", manyTenants)] {
            let tenantsPushed = Set(pushers.flatMap { $0.prefix(pushes).map(\.configuration.tenant) }).count
            let total = pushers.filter { !$0.isEmpty }.count * pushes
            for nodes in [1, 2] {
                let targets = try pushers.enumerated().map { index, clients in
                    let node = nodes == 1 || index % 2 == 0 ? node0 : node1
                    return try clients.map { try moved($0, to: node, data: pgData) }
                }
                // Every device has synced through its node once: the figure is pushes to tenants
                // a node serves, not a node's first lease of each tenant's store nor a
                // device's first session.
                for clients in targets { for client in clients { try await client.sync() } }
                let seconds = try await pushRounds(targets, pushes: pushes, tag: "\(name)-\(nodes)")
                report.line("pushes_\(name)_\(nodes)_node\(nodes == 1 ? "" : "s")", [
                    "devices": devices, "tenants": tenantsPushed, "pushes": total,
                    "seconds": seconds, "pushes_per_second": Double(total) / seconds,
                ])
            }
        }

        // 3. An edit on a live device of node 0, heard by a live device on node 0, then on node 1.
        var medians: [Double] = []
        for (name, other) in [("one_node", node0), ("across_nodes", node1)] {
            let a = try benchDevice(pgCredentials["live"]!.removeLast(), store: dir.path("live-a-\(name).sqlite"), port: node0.port, data: pgData)
            let b = try benchDevice(pgCredentials["live"]!.removeLast(), store: dir.path("live-b-\(name).sqlite"), port: other.port, data: pgData)
            let latencies = try await liveLatencies(from: a, to: b, rounds: rounds)
            medians.append(latencies[latencies.count / 2])
            report.line("live_latency_\(name)", ["rounds": rounds, "median_ms": latencies[latencies.count / 2],
                                                  "p99_ms": latencies[min(latencies.count - 1, latencies.count * 99 / 100)]]
                        .merging(medians.count == 2 ? ["median_ratio_to_one_node": medians[1] / medians[0]] : [:]) { $1 })
        }
    }

    /// Seconds one sync of `device` takes, which must pull `expecting` records.
    func timedSync(_ device: RapportClient, expecting: Int) async throws -> Double {
        let start = ContinuousClock.now
        let result = try await device.sync()
        guard result.pulled == expecting else { throw ValidationError("pulled \(result.pulled) of \(expecting) records") }
        return seconds(ContinuousClock.now - start)
    }

    /// `client`'s store and credential, syncing with `node`.
    func moved(_ client: RapportClient, to node: ServerProcess, data: String) throws -> RapportClient {
        var configuration = client.configuration
        configuration.port = node.port
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return try RapportClient(store: client.store, configuration: configuration, logger: logger)
    }

    /// Every pusher makes `pushes` pushes of 10 new records at once with the others, through
    /// its clients in turn; the seconds until the last is done.
    func pushRounds(_ pushers: [[RapportClient]], pushes: Int, tag: String) async throws -> Double {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, clients) in pushers.enumerated() where !clients.isEmpty {
                group.addTask {
                    for push in 0..<pushes {
                        let client = clients[push % clients.count]
                        try client.store.performSync { store in
                            try store.transaction { for i in 0..<10 { try store.create("activity", ["kind": .text("note"), "subject": .text("\(tag) \(index)-\(push)-\(i)")]) } }
                        }
                        let result = try await client.sync()
                        guard result.rejected == 0 else { throw ValidationError("a push was refused") }
                    }
                }
            }
            try await group.waitForAll()
        }
        return seconds(ContinuousClock.now - start)
    }
}
