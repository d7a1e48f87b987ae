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

/// `rapportctl tenant move` as an operator runs it, between a `rapportd` on a data directory and
/// `rapportd --store` on PostgreSQL, with devices that sync before, during and after.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct TenantMoveTests {
    /// A data directory with tenant `acme` (admin anna, an API key) and its server.
    struct Setup {
        let dir: TemporaryDirectory
        let data: String
        let ctl: Ctl
        let database: PostgresDatabase

        init() throws {
            dir = try TemporaryDirectory()
            data = dir.path("data")
            ctl = Ctl(data: data)
            database = try PostgresServer.database()
            guard try ctl.run(["tenant", "create", "acme", "--name", "Acme Corp"]).status == 0,
                  try ctl.run(["user", "add", "--tenant", "acme", "--email", "anna@acme.example", "--name", "Anna", "--role", "admin"]).status == 0,
                  try ctl.run(["user", "add", "--tenant", "acme", "--email", "ben@acme.example", "--name", "Ben", "--role", "admin"]).status == 0,
                  try ctl.run(["apikey", "create", "--tenant", "acme", "--name", "erp", "--role", "admin"]).status == 0
            else { throw BenchError("cannot set up tenant acme") }
        }

        /// `rapportd` on the data directory's files, or with `onPostgres` on the database; the
        /// same TLS files (the data directory's) either way, as an operator moving a tenant
        /// keeps the server's identity.
        func server(onPostgres: Bool) throws -> ServerProcess {
            try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                    arguments: ["--handshake-timeout", "60", "--no-dev-tenant"] + (onPostgres ? ["--store", database.url] : []))
        }

        /// A device of `user` enrolled with `rapportctl` on the data directory, or with
        /// `inPostgres` on the database.
        func enroll(_ name: String, user: String, on server: ServerProcess, inPostgres: Bool = false) async throws -> RapportClient {
            let arguments = ["device", "enroll", "--tenant", "acme", "--user", user, "--json"]
            let ticket = try await inPostgres ? onPostgres(arguments) : ctl.run(arguments)
            let code = try #require((ticket.json as? [String: Any])?["code"] as? String, "\(ticket.error)")
            let enrollment = try await RapportClient.enroll(configuration: configuration(server), code: code, deviceName: name)
            let store = try ReplicaStore(path: dir.path("\(name).sqlite"),
                                         options: .init(schema: CRMSchema.current, replicaID: try ReplicaID(enrollment.deviceID)))
            var configuration = configuration(server)
            configuration.secret = enrollment.secret
            return try RapportClient(store: SharedReplicaStore(store, label: name), configuration: configuration,
                                     logger: ServerFixture.logger("test.\(name)"))
        }

        func configuration(_ server: ServerProcess) -> ClientConfiguration {
            var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: "acme", secret: [],
                                             trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
            config.retry = RetryPolicy(maxAttempts: 1, initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
            return config
        }

        /// The same device, its store and credentials, sent to `server` (the address the tenant
        /// is now served at).
        func pointed(_ device: RapportClient, at server: ServerProcess) throws -> RapportClient {
            var configuration = device.configuration
            configuration.port = server.port
            return try RapportClient(store: device.store, configuration: configuration, logger: ServerFixture.logger("test.pointed"))
        }

        /// `rapportctl --store` on the database.
        @discardableResult
        func onPostgres(_ arguments: [String], environment: [String: String] = [:]) throws -> Ctl.Result {
            try ctl.run(arguments + ["--store", database.url], environment: environment)
        }

        func storeRowsInPostgres() -> Bool {
            (try? DataDirectory(data, database: database.url).openStore(of: "acme", options: .crm(role: .authority)).close()) != nil
        }
    }

    func holdings(_ device: RapportClient) throws -> [UUID: [String: FieldValue]] {
        try device.local { store in
            Dictionary(uniqueKeysWithValues: try store.changes(after: 0, limit: .max).map { ($0.state.id, $0.state.values) })
        }
    }

    static func createAccounts(_ device: RapportClient, _ count: Int, _ prefix: String) throws {
        try device.local { store in
            try store.transaction { for index in 0..<count { _ = try store.create("account", ["name": .text("\(prefix) \(index)")]) } }
        }
    }

    @Test func aTenantMovesToPostgresAndBackAndItsDevicesKeepTheirCheckpoints() async throws {
        let setup = try Setup()
        var server = try setup.server(onPostgres: false)
        var laptop = try await setup.enroll("laptop", user: "anna@acme.example", on: server)
        var phone = try await setup.enroll("phone", user: "ben@acme.example", on: server)
        try Self.createAccounts(laptop, 300, "Before")
        try await laptop.sync()
        #expect(try await phone.sync().pulled == 300)
        // Written offline, while the move runs.
        try Self.createAccounts(laptop, 20, "Offline")

        // The server keeps running during the move, as an operator would leave it.
        let move = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url, "--json"])
        #expect(move.status == 0, "\(move.error)")
        let moved = try #require(move.json as? [String: Any])
        #expect(moved["records"] as? Int == 300)
        #expect((moved["registry_rows"] as? [String: Any])?["devices"] as? Int == 2)
        #expect(!FileManager.default.fileExists(atPath: setup.data + "/tenants/acme.sqlite"))
        await #expect(try setup.ctl.run(["tenant", "list", "--json"]).output.contains("acme") == false)
        // The old server no longer serves the tenant, and the laptop keeps what it could not push.
        await #expect(throws: (any Error).self) { try await laptop.sync() }
        #expect(try laptop.local { try $0.dirtyCount() } == 20)
        await server.stop()

        server = try setup.server(onPostgres: true)
        laptop = try setup.pointed(laptop, at: server)
        phone = try setup.pointed(phone, at: server)
        let push = try await laptop.sync()
        #expect(push.pushed == 20)
        #expect(push.pulled <= push.pushed, "the laptop's checkpoint stayed valid: at most its own writes come back")
        #expect(try await phone.sync().pulled == 20, "the phone pulls only what is new, no resync")
        #expect(try holdings(laptop) == holdings(phone))
        #expect(try holdings(phone).count == 320)
        let keys = try setup.onPostgres(["apikey", "list", "--tenant", "acme", "--json"])
        #expect(keys.output.contains("erp"), "\(keys.output)")
        #expect(try setup.onPostgres(["tenant", "show", "acme", "--json"]).output.contains("\"active\""))

        // And back, to the same data directory.
        await server.stop()
        let back = try setup.onPostgres(["tenant", "move", "acme", "--to", setup.data, "--json"])
        #expect(back.status == 0, "\(back.error)")
        #expect((back.json as? [String: Any])?["records"] as? Int == 320)
        #expect(!setup.storeRowsInPostgres())
        #expect(!(try setup.onPostgres(["tenant", "list", "--json"]).output.contains("acme")))
        server = try setup.server(onPostgres: false)
        defer { server.stop() }
        laptop = try setup.pointed(laptop, at: server)
        phone = try setup.pointed(phone, at: server)
        try Self.createAccounts(phone, 5, "After")
        #expect(try await phone.sync().pushed == 5)
        #expect(try await laptop.sync().pulled == 5)
        #expect(try holdings(laptop) == holdings(phone))
        #expect(try holdings(laptop).count == 325)
        let audit = try await setup.ctl.run(["audit", "--tenant", "acme"])
        #expect(audit.output.contains("tenant move in") && audit.output.contains("tenant move out"), "\(audit.output)")
    }

    @Test func aDevicePushingThroughoutTheMoveLosesNothing() async throws {
        let setup = try Setup()
        var server = try setup.server(onPostgres: false)
        var laptop = try await setup.enroll("laptop", user: "anna@acme.example", on: server)
        try Self.createAccounts(laptop, 2_000, "Before")
        try await laptop.sync()
        // Pushes of 5 records, one after another, before, during and after the move: each is
        // taken by the old server before the copy, refused while the store is locked or marked
        // moved, or refused for an unknown tenant after; the laptop keeps whatever was refused.
        let writer = Task { [laptop] in
            var rounds = 0
            while !Task.isCancelled {
                try Self.createAccounts(laptop, 5, "Round \(rounds)")
                _ = try? await laptop.sync()
                rounds += 1
            }
            return rounds
        }
        try await Task.sleep(for: .milliseconds(300))
        let move = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url, "--json"])
        #expect(move.status == 0, "\(move.error)")
        try await Task.sleep(for: .milliseconds(300))
        writer.cancel()
        let rounds = try await writer.value
        await server.stop()

        server = try setup.server(onPostgres: true)
        defer { server.stop() }
        laptop = try setup.pointed(laptop, at: server)
        try await laptop.sync()
        #expect(try laptop.local { try $0.dirtyCount() } == 0)
        let held = try holdings(laptop)
        #expect(held.count == 2_000 + 5 * rounds)
        let store = try DataDirectory(setup.data, database: setup.database.url).openStore(of: "acme", options: .crm(role: .authority))
        defer { store.close() }
        let served = try Set(store.changes(after: 0, limit: .max).map(\.state.id))
        let lost = Set(held.keys).subtracting(served)
        #expect(lost.isEmpty && served.count == held.count,
                "every record the laptop wrote is in the moved tenant, whichever server took it: \(lost.count) missing of \(held.count)")
    }

    @Test func aMoveStoppedAtAnyStepFinishesWhenRunAgain() async throws {
        for step in DataDirectory.MoveStep.allCases {
            let setup = try Setup()
            let server = try setup.server(onPostgres: false)
            let laptop = try await setup.enroll("laptop", user: "anna@acme.example", on: server)
            try Self.createAccounts(laptop, 50, "Before")
            try await laptop.sync()
            await server.stop()
            let stopped = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url],
                                            environment: ["RAPPORTCTL_CRASH_AT": step.rawValue])
            #expect(stopped.status != 0, "\(step.rawValue)")
            // Until the re-run, the tenant is in one place (the data directory before the
            // registry copy; both registries after it, the source's store taking no writes).
            await #expect(try setup.ctl.run(["tenant", "show", "acme"]).status == 0, "\(step.rawValue)")
            let rerun = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url, "--json"])
            #expect(rerun.status == 0, "\(step.rawValue): \(rerun.error)")
            #expect((rerun.json as? [String: Any])?["records"] as? Int == 50, "\(step.rawValue)")
            #expect((rerun.json as? [String: Any])?["finished_earlier_move"] as? Bool == (step == .registryCopied))
            await #expect(try setup.ctl.run(["tenant", "show", "acme"]).status != 0)
            #expect(try setup.onPostgres(["tenant", "show", "acme"]).status == 0)
            let onPostgres = try setup.server(onPostgres: true)
            defer { onPostgres.stop() }
            let pointed = try setup.pointed(laptop, at: onPostgres)
            #expect(try await pointed.sync().pulled == 0, "\(step.rawValue): no resync")
        }
    }

    @Test func aMoveIsRefusedWhereItWouldLoseOrMixTenants() async throws {
        let setup = try Setup()
        // A tenant of that name at the target that is not this one's copy.
        #expect(try setup.onPostgres(["tenant", "create", "acme"]).status == 0)
        let clash = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url])
        #expect(clash.status != 0)
        #expect(clash.error.contains("not this one's copy"), "\(clash.error)")
        await #expect(try setup.ctl.run(["tenant", "show", "acme"]).status == 0, "the source is untouched")
        // Onto itself.
        let itself = try await setup.ctl.run(["tenant", "move", "acme", "--to", setup.data])
        #expect(itself.status != 0)
        #expect(itself.error.contains("already kept"), "\(itself.error)")
        // An unknown tenant.
        await #expect(try setup.ctl.run(["tenant", "move", "globex", "--to", setup.database.url]).status != 0)
    }
}
