import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// `rapportctl` as an operator runs it: a real process on the data directory of a real
/// `rapportd` process.
struct Ctl {
    let data: String
    let binary = ServerProcess.defaultBinary(named: "rapportctl")

    typealias Result = ToolResult

    /// Runs `rapportctl` with `arguments`, then `--data` unless `passingData` is false (the
    /// arguments then say where the data is themselves).
    @discardableResult
    func run(_ arguments: [String], environment: [String: String] = [:], passingData: Bool = true) throws -> Result {
        try ToolProcess.run(binary, arguments + (passingData ? ["--data", data] : []), environment: environment)
    }
}

extension Ctl {
    /// `run`, waited for off Swift's shared pool (`offThePool`), so that waiting for the process
    /// does not hold one of the few threads async tests share while devices sync beside it.
    @discardableResult
    func run(_ arguments: [String], environment: [String: String] = [:], passingData: Bool = true) async throws -> Result {
        try await offThePool { try run(arguments, environment: environment, passingData: passingData) as Result }
    }
}

/// A `rapportd` process on a data directory that `rapportctl` administers, and devices
/// enrolled through both, as an operator and a rep would.
struct OperatedServer {
    let dir: TemporaryDirectory
    let data: String
    let ctl: Ctl
    let server: ServerProcess

    /// Creates tenant `acme` with user anna@acme.example, an admin (so rights refuse nothing),
    /// and starts the server with `arguments`, its log going to `logFile` when given.
    init(_ dir: TemporaryDirectory, arguments: [String] = [], logFile: String? = nil) async throws {
        self.dir = dir
        data = dir.path("data")
        ctl = Ctl(data: data)
        guard try await ctl.run(["tenant", "create", "acme", "--name", "Acme Corp"]).status == 0,
              try await ctl.run(["user", "add", "--tenant", "acme", "--email", "anna@acme.example", "--name", "Anna", "--role", "admin"]).status == 0
        else { throw BenchError("cannot set up tenant acme") }
        // A connection has 60 s, not 10, for its handshake and Hello: beside the other suites a
        // loaded machine can stall a client that long, and no test here is about that timeout.
        server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                         arguments: ["--handshake-timeout", "60"] + arguments, logFile: logFile)
    }

    func configuration(secret: [UInt8] = [], tenant: String = "acme", attempts: Int = 2) -> ClientConfiguration {
        var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: tenant, secret: secret,
                                         trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
        config.retry = RetryPolicy(maxAttempts: attempts, initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        return config
    }

    /// Enrolls a device of `user` (by default anna's) with a code from `rapportctl device enroll`.
    func enroll(_ name: String, user: String = "anna@acme.example", attempts: Int = 2) async throws -> RapportClient {
        let ticket = try await ctl.run(["device", "enroll", "--tenant", "acme", "--user", user, "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String)
        let enrollment = try await RapportClient.enroll(configuration: configuration(), code: code, deviceName: name)
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"),
                                     options: .init(schema: CRMSchema.current, replicaID: try ReplicaID(enrollment.deviceID)))
        return try RapportClient(store: SharedReplicaStore(store, label: name),
                                 configuration: configuration(secret: enrollment.secret, attempts: attempts),
                                 logger: ServerFixture.logger("test.\(name)"))
    }
}

@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct AdminCLITests {
    @Test func aCrashInTheMiddleOfTenantCreateLeavesNoTenant() async throws {
        let dir = try TemporaryDirectory()
        let ctl = Ctl(data: dir.path("data"))
        for step in ["store-written", "store-in-place"] {
            let crashed = try await ctl.run(["tenant", "create", "acme"], environment: ["RAPPORTCTL_CRASH_AT": step])
            #expect(crashed.status != 0)
            let list = try await ctl.run(["tenant", "list", "--all", "--json"])
            #expect(list.status == 0)
            #expect((list.json as? [Any])?.isEmpty == true, "\(step): \(list.output)")
        }
        await #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
        await #expect(try ctl.run(["tenant", "show", "acme", "--json"]).output.contains("\"active\""))
    }

    @Test func badInputGetsAClearMessageAndAMeaningfulExitCode() async throws {
        let dir = try TemporaryDirectory()
        let ctl = Ctl(data: dir.path("data"))
        await #expect(try ctl.run(["tenant", "list"]).status == 2, "no registry yet: not found")
        for slug in ["../x", "a/b", "", String(repeating: "x", count: 10_000), "Acme"] {
            let result = try await ctl.run(["tenant", "create", slug])
            #expect(result.status == 1)
            #expect(result.error.contains("invalid tenant id"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path("data") + "/tenants").isEmpty)
        try await ctl.run(["tenant", "create", "acme"])
        await #expect(try ctl.run(["tenant", "create", "acme"]).status == 3)
        await #expect(try ctl.run(["user", "add", "--tenant", "acme", "--email", "nope", "--name", "N"]).status == 1)
        await #expect(try ctl.run(["user", "add", "--tenant", "globex", "--email", "a@b.example", "--name", "N"]).status == 2)
        await #expect(try ctl.run(["device", "revoke", "no-such-device"]).status == 2)
        let unconfirmed = try await ctl.run(["tenant", "delete", "acme"])
        #expect(unconfirmed.status == 3)
        #expect(unconfirmed.error.contains("--confirm acme"))
        await #expect(try ctl.run(["tenant", "delete", "acme", "--confirm", "globex"]).status == 3)
        await #expect(try ctl.run(["tenant", "purge", "acme", "--confirm", "acme"]).status == 3, "only a deleted tenant is purged")
        await #expect(try ctl.run(["device", "enroll", "--tenant", "acme", "--user", "x@acme.example", "--valid-for", "soon"]).status == 1)
        let audit = try await ctl.run(["audit", "--json"])
        let actions = (audit.json as? [[String: Any]])?.map { "\($0["action"]!) \(($0["result"] as? String)?.prefix(6) ?? "")" }
        #expect(actions?.contains("tenant create ok") == true)
        #expect(actions?.contains("tenant create failed") == true)
    }

    @Test func anOperatorEnrollsRevokesBacksUpAndRestoresWhileTheServerRuns() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        let (data, ctl) = (operated.data, operated.ctl)
        defer { operated.server.stop() }

        let laptop = try await operated.enroll("laptop")
        let phone = try await operated.enroll("phone")
        try laptop.local { store in try store.transaction { for i in 0..<500 { _ = try store.create("account", ["name": .text("a\(i)")]) } } }
        try await laptop.sync()

        // Backup while the phone keeps syncing new records.
        let syncing = Task {
            for round in 0..<10 {
                try phone.local { store in try store.transaction { for i in 0..<20 { _ = try store.create("account", ["name": .text("p\(round)-\(i)")]) } } }
                try await phone.sync()
            }
        }
        let backup = try await ctl.run(["backup", "acme", "--to", dir.path("acme.backup"), "--json"])
        try await syncing.value
        #expect(backup.status == 0, "\(backup.error)")
        let backedUp = try #require((backup.json as? [String: Any])?["records"] as? Int)
        #expect(backedUp >= 500 && backedUp <= 700)
        let restore = try await ctl.run(["restore", "acme-copy", "--from", dir.path("acme.backup")])
        #expect(restore.status == 0, "\(restore.error)")
        let original = try ReplicaStore(path: data + "/tenants/acme.sqlite", options: .init(schema: CRMSchema.current))
        let copy = try ReplicaStore(path: data + "/tenants/acme-copy.sqlite", options: .init(schema: CRMSchema.current))
        let source = Dictionary(uniqueKeysWithValues: try original.records(ofType: "account").map { ($0.id, $0) })
        let restored = try copy.records(ofType: "account")
        #expect(restored.count == backedUp)
        #expect(restored.allSatisfy { source[$0.id] == $0 })
        original.close()
        copy.close()

        // Revoked while connected: the live session ends within seconds.
        let live = phone.live()
        var events = live.events.makeAsyncIterator()
        _ = await events.next()
        await #expect(try ctl.run(["device", "revoke", phone.store.replicaID, "--tenant", "acme"]).status == 0)
        #expect(await endOfLiveSession(live) == .deviceRevoked)
        await live.stop()

        // Suspended and resumed from the CLI.
        await #expect(try ctl.run(["tenant", "suspend", "acme"]).status == 0)
        #expect(await syncErrorCode { try await laptop.sync() } == .tenantSuspended)
        await #expect(try ctl.run(["tenant", "resume", "acme"]).status == 0)
        #expect(try await laptop.sync().pulled == 200)

        let export = try await ctl.run(["export", "acme", "--to", dir.path("export"), "--json"])
        #expect(export.status == 0)
        let lines = try String(contentsOfFile: dir.path("export") + "/account.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 700)
        let stats = try await ctl.run(["stats", "acme", "--json"])
        let records = (stats.json as? [String: Any])?["records"] as? [String: Int]
        #expect(records?["account"] == 700)
        let devices = try await ctl.run(["device", "list", "--tenant", "acme", "--json"]).json as? [[String: Any]]
        #expect(devices?.compactMap { $0["status"] as? String }.sorted() == ["active", "revoked"])
    }

    /// rapportd's startup hint puts --data before the subcommand; the common options work on
    /// either side of it.
    @Test func commonOptionsGoBeforeOrAfterTheSubcommand() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data")
        let ctl = Ctl(data: data)
        await #expect(try ctl.run(["--data", data, "tenant", "create", "acme"], passingData: false).status == 0)
        await #expect(try ctl.run(["--data=\(data)", "user", "add", "--tenant", "acme", "--email", "ana@acme.example", "--name", "Ana"],
                            passingData: false).status == 0)
        let enrolled = try await ctl.run(["--data", data, "--json", "--actor", "ops", "device", "enroll", "--tenant", "acme",
                                    "--user", "ana@acme.example"], passingData: false)
        #expect(enrolled.status == 0, "\(enrolled.error)")
        #expect((enrolled.json as? [String: Any])?["code"] is String, "\(enrolled.output)")
        let after = try await ctl.run(["audit", "--tenant", "acme", "--json"])
        let actors = (after.json as? [[String: Any]])?.compactMap { $0["actor"] as? String }
        #expect(actors?.contains("ops") == true, "\(after.output)")
        // Before and after at once: the later --json is as good as the first.
        await #expect(try ctl.run(["--data", data, "tenant", "list", "--json"], passingData: false).json is [Any])
        let unknown = try await ctl.run(["--data", data, "no-such-command"], passingData: false)
        #expect(unknown.status == 1)
        #expect(unknown.error.contains("no-such-command"), "\(unknown.error)")
    }

    /// The registry keeps the checkpoint a device reached, not the one it asked from: after a
    /// pull of several batches, the end of the last one.
    @Test func theDeviceListShowsTheCheckpointOfTheLastBatchPulled() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data")
        let credentials = try ServerProcess.prepare(data: data, tenants: ["acme"], devicesPerTenant: 2, schema: CRMSchema.current)
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data)
        defer { server.stop() }
        func device(_ credential: DeviceCredential, batch: Int) throws -> RapportClient {
            var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: "acme", secret: credential.secret,
                                             trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
            config.pullBatchSize = batch
            let store = try ReplicaStore(path: dir.path("\(credential.deviceID).sqlite"),
                                         options: .init(schema: CRMSchema.current, replicaID: try credential.replicaID))
            return try RapportClient(store: SharedReplicaStore(store, label: credential.deviceID), configuration: config,
                                     logger: ServerFixture.logger("test.device"))
        }
        let writer = try device(credentials["acme"]![0], batch: 2_000)
        let reader = try device(credentials["acme"]![1], batch: 10)
        try writer.local { store in try store.transaction { for i in 0..<25 { _ = try store.create("account", ["name": .text("a\(i)")]) } } }
        try await writer.sync()
        let report = try await reader.sync()
        #expect(report.pulled == 25)
        #expect(report.checkpoint >= 25)
        // A graceful stop saves what the server noted about its devices.
        await server.stop()
        let devices = try await #require(try Ctl(data: data).run(["device", "list", "--tenant", "acme", "--json"]).json as? [[String: Any]])
        let listed = devices.first { $0["id"] as? String == reader.store.replicaID }
        #expect((listed?["last_checkpoint"] as? Int).map(Int64.init) == report.checkpoint, "\(devices)")
    }
}

@Suite(.ownThread) struct CRMCommandTests {
    @Test func anOperatorImportsASalesforceExportAndRunsReports() async throws {
        let dir = try TemporaryDirectory()
        let ctl = Ctl(data: dir.path("data"))
        await #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
        let csv = """
            Contact ID,First Name,Last Name,Email,Phone,Account Name,Title
            003A,Ada,Lovelace,ada@example.com,+44 20 7946 0000,Analytical Engines,Countess
            003B,Alan,Turing,ALAN@example.com ,,Bletchley Park,
            003C,Grace,,grace@example.com,,Navy,Rear Admiral
            003D,Ada,Lovelace,ada@example.com,,Analytical Engines,
            003E,Bad,Email,not-an-email,,,

            """
        try csv.write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        let arguments = ["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv"), "--mapping", "salesforce", "--json"]
        let dry = try await ctl.run(arguments + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.error)")
        let first = try await ctl.run(arguments)
        let report = try #require(first.json as? [String: Any])
        #expect(report["imported"] as? Int == 2)
        #expect((report["merges"] as? [Any])?.count == 1)
        let rejections = try #require(report["rejections"] as? [[String: Any]])
        #expect(rejections.compactMap { $0["field"] as? String }.sorted() == ["email", "last_name"])
        #expect(try #require(dry.json as? [String: Any])["imported"] as? Int == 2, "a dry run reports what the import does")
        let again = try await #require(try ctl.run(arguments).json as? [String: Any])
        #expect(again["imported"] as? Int == 0, "re-running the import creates nothing")

        let exported = try await ctl.run(["export-csv", "acme", "--type", "contact"])
        #expect(exported.output.split(whereSeparator: \.isNewline).count == 3)
        #expect(exported.output.contains("ada@example.com"))
        let pipeline = try await ctl.run(["report", "pipeline", "acme", "--csv"])
        #expect(pipeline.status == 0)
        #expect(pipeline.output.hasPrefix("stage,"))
        await #expect(try ctl.run(["report", "no-such-report", "acme"]).status == 1)
        let audit = try await ctl.run(["audit", "--tenant", "acme", "--json"]).json as? [[String: Any]]
        #expect(audit?.compactMap { $0["action"] as? String }.contains("import") == true)
    }
}
