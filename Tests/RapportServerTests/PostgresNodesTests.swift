import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// Several `rapportd` processes on one PostgreSQL database (`--store`), as the server tier runs
/// when a customer base outgrows one machine: any node serves any tenant, a tenant's writes are
/// serialised by the database, and each node hears the others' commits.
struct PostgresNodes {
    let dir: TemporaryDirectory
    let database: PostgresDatabase
    /// The nodes' data directory: only their TLS files (one dev CA for all of them).
    let data: String
    let ctl: Ctl
    var nodes: [ServerProcess] = []

    /// Tenant `acme` with admin anna@acme.example, made with `rapportctl --store`, then `count`
    /// nodes started one after another with `arguments`.
    init(count: Int, arguments: [String] = []) throws {
        dir = try TemporaryDirectory()
        database = try PostgresServer.database()
        data = dir.path("data")
        ctl = Ctl(data: data)
        guard try store(["tenant", "create", "acme", "--name", "Acme Corp"]).status == 0,
              try store(["user", "add", "--tenant", "acme", "--email", "anna@acme.example", "--name", "Anna", "--role", "admin"]).status == 0
        else { throw BenchError("cannot set up tenant acme in PostgreSQL") }
        for _ in 0..<count { nodes.append(try startNode(arguments)) }
    }

    func startNode(_ arguments: [String] = []) throws -> ServerProcess {
        try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                arguments: ["--store", database.url, "--handshake-timeout", "60", "--no-dev-tenant"] + arguments)
    }

    /// `rapportctl` on the shared database.
    @discardableResult
    func store(_ arguments: [String]) throws -> Ctl.Result {
        try ctl.run(arguments + ["--store", database.url])
    }

    func configuration(node: ServerProcess, secret: [UInt8] = [], attempts: Int = 2) -> ClientConfiguration {
        var config = ClientConfiguration(host: "127.0.0.1", port: node.port, tenant: "acme", secret: secret,
                                         trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
        config.retry = RetryPolicy(maxAttempts: attempts, initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        return config
    }

    /// Enrolls a device through `node`; it keeps syncing with that node.
    func enroll(_ name: String, on node: ServerProcess, attempts: Int = 2) async throws -> RapportClient {
        let ticket = try store(["device", "enroll", "--tenant", "acme", "--user", "anna@acme.example", "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String, "\(ticket.error)")
        let enrollment = try await RapportClient.enroll(configuration: configuration(node: node), code: code, deviceName: name)
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"),
                                     options: .init(schema: CRMSchema.current, replicaID: try ReplicaID(enrollment.deviceID)))
        return try RapportClient(store: SharedReplicaStore(store, label: name),
                                 configuration: configuration(node: node, secret: enrollment.secret, attempts: attempts),
                                 logger: ServerFixture.logger("test.\(name)"))
    }

    /// The same device talking to another node (a load balancer sending it elsewhere).
    func moved(_ device: RapportClient, to node: ServerProcess, secret: [UInt8]) throws -> RapportClient {
        try RapportClient(store: device.store, configuration: configuration(node: node, secret: secret),
                          logger: ServerFixture.logger("test.moved"))
    }

    func stop() { for node in nodes { node.stop() } }

    /// The tenant's store as the database holds it, opened as `rapportctl --store` opens it.
    func tenantStore() throws -> ReplicaStore {
        try DataDirectory(data, database: database.url).openStore(of: "acme", options: .crm(role: .authority))
    }
}

@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct PostgresNodesTests {
    /// Records of every type a device holds, by id, with their values: what convergence compares.
    func holdings(_ device: RapportClient) throws -> [UUID: [String: FieldValue]] {
        try device.local { store in
            Dictionary(uniqueKeysWithValues: try store.changes(after: 0, limit: .max).map { ($0.state.id, $0.state.values) })
        }
    }

    /// A dry run of a whole-export import is the real import into a snapshot: for a tenant in
    /// PostgreSQL, whose data directory holds no tenants folder, the snapshot has a folder of
    /// its own. It stopped with "cannot create .../tenants/.dry-run-acme-....sqlite".
    @Test func aDryRunImportOfATenantInPostgresReportsWhatTheRealOneDoes() async throws {
        let nodes = try PostgresNodes(count: 0)
        let export = nodes.dir.path("export")
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        try (CSV.line(["Id", "Name"]) + CSV.line(["001A", "Acme"])).write(toFile: export + "/Account.csv", atomically: true, encoding: .utf8)
        try (CSV.line(["Id", "AccountId", "Name", "StageName"]) + CSV.line(["006A", "001A", "Deal", "Contract Signed"]))
            .write(toFile: export + "/Opportunity.csv", atomically: true, encoding: .utf8)
        let arguments = ["import", "acme", "--from", export, "--source", "salesforce", "--add-stages", "--json"]
        let dry = try nodes.store(arguments + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.error)")
        let real = try nodes.store(arguments)
        #expect(real.status == 0, "\(real.error)")
        #expect(try OrgImportTests.comparable(dry.json) == OrgImportTests.comparable(real.json))
        #expect(try OrgImportTests.file(real.json, "Opportunity.csv")["imported"] as? Int == 1)
        #expect(!FileManager.default.fileExists(atPath: nodes.data + "/tenants"), "the dry run left nothing in the data directory")
    }

    @Test func aLiveDeviceOnOneNodeHearsAnEditPushedThroughAnotherAndDevicesConverge() async throws {
        // Other processes' commits are otherwise announced by a poll every second: with the poll
        // an hour apart, only the nodes' notifications can tell the live device in time.
        let cluster = try PostgresNodes(count: 2, arguments: ["--access-check-interval", "3600"])
        defer { cluster.stop() }
        let laptop = try await cluster.enroll("laptop", on: cluster.nodes[0])
        let phone = try await cluster.enroll("phone", on: cluster.nodes[1])
        let live = phone.live()
        var events = live.events.makeAsyncIterator()
        guard case .connected? = await events.next(), case .synced? = await events.next() else {
            Issue.record("the phone's live session did not start")
            return
        }
        for round in 1...3 {
            let id = try laptop.local { try $0.create("account", ["name": .text("Initech \(round)")]).id }
            try await laptop.sync()
            // A bound on waiting, not a speed: the edit comes within milliseconds or never.
            var received = false
            for _ in 0..<600 where !received {
                received = try phone.local { try $0.record(id) } != nil
                if !received { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(received, "round \(round): the edit pushed through node 0 reached the live device on node 1")
        }
        await live.stop()
        // An edit through node 1 reaches the laptop on node 0 at its next sync.
        let contact = try phone.local { try $0.create("contact", ["last_name": .text("Lovelace")]).id }
        try await phone.sync()
        try await laptop.sync()
        #expect(try laptop.local { try $0.record(contact) } != nil)
        #expect(try holdings(laptop) == holdings(phone))
    }

    @Test func pushesThroughThreeNodesAtOnceNeverIssueADotOrASequenceNumberTwice() async throws {
        let cluster = try PostgresNodes(count: 3)
        defer { cluster.stop() }
        var devices: [RapportClient] = []
        for (index, node) in cluster.nodes.enumerated() { devices.append(try await cluster.enroll("device\(index)", on: node)) }
        let rounds = 5, perRound = 20
        let pushing = devices.enumerated().map { index, device in
            Task { () throws -> [UUID] in
                var created: [UUID] = []
                for round in 0..<rounds {
                    created += try device.local { store in
                        try store.transaction {
                            try (0..<perRound).map { i in try store.create("account", ["name": .text("n\(index)-r\(round)-\(i)")]).id }
                        }
                    }
                    #expect(try await device.sync().rejected == 0)
                }
                return created
            }
        }
        var created: [UUID] = []
        for task in pushing { created += try await task.value }
        for device in devices { try await device.sync() }

        let server = try cluster.tenantStore()
        defer { server.close() }
        let changes = try server.changes(after: 0, limit: .max)
        #expect(Set(changes.map(\.state.id)).isSuperset(of: created), "every account pushed through any node is stored")
        #expect(changes.map(\.sequence) == changes.map(\.sequence).sorted())
        #expect(Set(changes.map(\.sequence)).count == changes.count)
        let everyone = try holdings(devices[0])
        for device in devices.dropFirst() { #expect(try holdings(device) == everyone) }
        #expect(Set(everyone.keys).isSuperset(of: created))
    }

    @Test func aDeviceRevokedThroughOneNodeLosesItsSessionOnAnotherAndAKilledNodeLosesNothing() async throws {
        var cluster = try PostgresNodes(count: 2)
        defer { cluster.stop() }
        let ticket = try cluster.store(["device", "enroll", "--tenant", "acme", "--user", "anna@acme.example", "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String)
        let enrollment = try await RapportClient.enroll(configuration: cluster.configuration(node: cluster.nodes[0]), code: code, deviceName: "tablet")
        let store = try ReplicaStore(path: cluster.dir.path("tablet.sqlite"),
                                     options: .init(schema: CRMSchema.current, replicaID: try ReplicaID(enrollment.deviceID)))
        let tablet = try RapportClient(store: SharedReplicaStore(store, label: "tablet"),
                                       configuration: cluster.configuration(node: cluster.nodes[0], secret: enrollment.secret),
                                       logger: ServerFixture.logger("test.tablet"))

        // A large push to node 0, which is killed while it runs: whatever node 0 committed is
        // in the database, the rest is still dirty on the device, and node 1 takes it all.
        let ids = try tablet.local { store in
            try store.transaction { try (0..<4_000).map { i in try store.create("account", ["name": .text("bulk \(i)")]).id } }
        }
        let push = Task { try? await tablet.sync() }
        try await Task.sleep(for: .milliseconds(150))
        await cluster.nodes[0].kill()
        _ = await push.value
        let other = try cluster.moved(tablet, to: cluster.nodes[1], secret: enrollment.secret)
        try await other.sync()
        #expect(try other.local { try $0.dirtyCount() } == 0)
        let server = try cluster.tenantStore()
        #expect(try ids.allSatisfy { try server.record($0) != nil }, "nothing the device pushed is lost")
        server.close()
        cluster.nodes[0] = try cluster.startNode()

        // Revoked through rapportctl on the database: the live session on node 1 ends.
        let live = other.live()
        var events = live.events.makeAsyncIterator()
        _ = await events.next()
        #expect(try cluster.store(["device", "revoke", enrollment.deviceID, "--tenant", "acme"]).status == 0)
        #expect(await endOfLiveSession(live) == .deviceRevoked)
        await live.stop()
    }
}
