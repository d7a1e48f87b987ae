import CRM
import Foundation
import RapportClient
import ReplicaStore
import Synchronization
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// An initial sync to a device store that keeps the CRM's field index, through a `rapportd`
/// process: the index is deferred while it runs and built at its end. The app and a `rapport`
/// process read the store between batches and get exact answers; a `rapport sync` killed
/// half-way (SIGKILL) leaves a store that answers exactly and whose next sync builds the index.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct InitialSyncIndexTests {
    static let owners = (0..<5).map { "rep\($0)@acme.example" }
    static let places = ["North", "Harbor", "Summit"]
    static let words = ["harbor", "north", "firm", "summ", "person", "nothing"]

    /// A tenant of `accounts` accounts (owners in turn, some given to the next owner later,
    /// some deleted) and `contacts` contacts of them, written into its store before the server
    /// starts, as the sync benchmark does.
    struct Tenant {
        let dir: TemporaryDirectory
        let data: String
        let credential: DeviceCredential
        /// The live accounts of each owner, as the server holds them.
        let byOwner: [String: Set<UUID>]

        init(accounts: Int, contacts: Int) throws {
            dir = try TemporaryDirectory()
            data = dir.path("server")
            credential = try #require(try ServerProcess.prepare(data: data, tenants: ["acme"], schema: CRMSchema.current)["acme"]?.first)
            var options = ReplicaStore.Options.crm(role: .authority)
            options.rules = nil  // generated rows: no configuration records to check them against
            options.effects = nil
            let tenant = try ReplicaStore(path: data + "/tenants/acme.sqlite", options: options)
            defer { tenant.close() }
            var byOwner: [String: Set<UUID>] = [:]
            try tenant.transaction {
                var ids: [UUID] = []
                for i in 0..<accounts {
                    let owner = InitialSyncIndexTests.owners[i % 5]
                    let id = try tenant.create("account", ["name": .text("Firm \(i) \(InitialSyncIndexTests.places[i % 3])"),
                                                           "owner": .text(owner)]).id
                    ids.append(id)
                    byOwner[owner, default: []].insert(id)
                }
                for i in 0..<contacts {
                    try tenant.create("contact", ["last_name": .text("Person \(i)"), "account": .text(ids[i % accounts].uuidString),
                                                  "owner": .text(InitialSyncIndexTests.owners[i % 5])])
                }
                for (i, id) in ids.enumerated() where i % 50 == 7 {
                    let (from, to) = (InitialSyncIndexTests.owners[i % 5], InitialSyncIndexTests.owners[(i + 1) % 5])
                    try tenant.update(id, ["owner": .text(to)])
                    byOwner[from]?.remove(id)
                    byOwner[to, default: []].insert(id)
                }
                for (i, id) in ids.enumerated() where i % 70 == 3 {
                    try tenant.delete(id)
                    for owner in byOwner.keys { byOwner[owner]?.remove(id) }
                }
            }
            self.byOwner = byOwner
        }

        /// A `rapport` home on the tenant's device credential, not synced yet.
        func home(port: Int, name: String = "device") throws -> (cli: CLI, store: String) {
            let home = dir.path(name)
            let rapport = CLI(binary: ServerProcess.defaultBinary(named: "rapport"))
            let result = try rapport.run(["init", "--home", home, "--server", "127.0.0.1:\(port)", "--tenant", "acme",
                                          "--ca", data + "/tls/ca.pem", "--device-id", credential.deviceID,
                                          "--secret", credential.secret.map { String(format: "%02x", $0) }.joined()])
            guard result.status == 0 else { throw BenchError("rapport init: \(result.error)") }
            return (CLI(binary: rapport.binary, fixed: ["--home", home]), home + "/replica.sqlite")
        }
    }

    /// The answers of the store's queries against those of reading every record of the type.
    static func expectExact(_ store: ReplicaStore, _ when: String) throws {
        let accounts = try store.records(ofType: "account")
        for owner in owners {
            let truth = accounts.filter { $0.fields["owner"]?.value == .text(owner) }.map(\.id)
            #expect(try store.records(ofType: "account", where: "owner", equals: owner).map(\.id) == truth, "\(owner), \(when)")
        }
        for word in words {
            let truth = accounts.filter { state in
                guard case .text(let name)? = state.fields["name"]?.value else { return false }
                return name.lowercased().split(separator: " ").contains { $0.hasPrefix(word) }
            }.map(\.id)
            #expect(try store.search(word, ofType: "account", limit: .max).map(\.id) == truth, "'\(word)', \(when)")
        }
        for account in accounts.prefix(20) {
            let truth = try store.records(ofType: "contact").filter { $0.fields["account"]?.value == .text(account.id.uuidString) }.map(\.id)
            #expect(try store.records(ofType: "contact", where: "account", equals: account.id.uuidString).map(\.id) == truth, "\(when)")
        }
    }

    /// What `rapport list account --where owner=OWNER --json` prints, as ids.
    static func listed(_ cli: CLI, owner: String) throws -> [UUID] {
        try cli.list("account", ["--where", "owner=\(owner)"]).compactMap(UUID.init(uuidString:))
    }

    @Test func theAppAndAnotherProcessReadBetweenBatchesAndTheIndexIsExactAfter() async throws {
        let tenant = try Tenant(accounts: 3_000, contacts: 600)
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: tenant.data)
        defer { server.stop() }
        let (cli, path) = try tenant.home(port: server.port)
        // The app's store, opened as `rapport` opens it, on the file the `rapport` process reads.
        let store = SharedReplicaStore(try ReplicaStore(path: path, options: .crm(replicaID: try tenant.credential.replicaID)),
                                       label: "device")
        var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: "acme", secret: tenant.credential.secret,
                                         trustRoots: .certificates(.file(tenant.data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
        config.pullBatchSize = 400
        let client = try RapportClient(store: store, configuration: config, logger: ServerFixture.logger("device"))
        let other = try ReplicaStore(path: path, options: .crm())

        struct Seen: Sendable {
            var held = 0, total = 0
            var deferred: Set<String> = []
            var app: [UUID] = [], process: [UUID] = [], truth: [UUID] = []
            var failure: String?
        }
        let seen = Mutex<Seen?>(nil)
        let owner = Self.owners[1]
        // Progress comes after a batch commits and before the next is applied: what is read here
        // is read in the middle of the sync, whatever the speed of either side.
        let report = try await client.sync { progress in
            guard progress.phase == .pull, progress.recordsDone >= 800, progress.recordsDone < progress.recordsTotal,
                  seen.withLock({ $0 == nil }) else { return }
            let result = Result { () throws -> Seen in
                let app = try store.performSync { try CRMStore(store: $0).records(ofType: "account", where: [("owner", .text(owner))]).map(\.id) }
                let process = try Self.listed(cli, owner: owner)
                return try store.performSync { device in
                    Seen(held: try device.count(ofType: "account") + device.count(ofType: "contact"), total: progress.recordsTotal,
                         deferred: try device.deferredFieldIndexTypes(), app: app, process: process,
                         truth: try device.records(ofType: "account").filter { $0.fields["owner"]?.value == .text(owner) }.map(\.id))
                }
            }
            let outcome: Seen
            do { outcome = try result.get() } catch { outcome = Seen(failure: "\(error)") }
            seen.withLock { $0 = outcome }
        }
        let mid = try #require(seen.withLock { $0 })
        #expect(mid.failure == nil)
        #expect(mid.held > 0 && mid.held < mid.total, "read in the middle: \(mid.held) of \(mid.total)")
        #expect(mid.deferred == ["account"])
        #expect(!mid.truth.isEmpty)
        #expect(mid.app == mid.truth)
        #expect(mid.process == mid.truth)

        #expect(report.pulled == 3_600)
        try store.performSync { device in
            #expect(try device.deferredFieldIndexTypes().isEmpty)
            try Self.expectExact(device, "after the sync")
        }
        try Self.expectExact(other, "after the sync, another handle")
        for owner in Self.owners {
            #expect(Set(try Self.listed(cli, owner: owner)) == tenant.byOwner[owner] ?? [], "rapport list, \(owner)")
        }
        await store.close()
        other.close()
    }

    @Test func aRapportSyncKilledHalfWayLeavesExactAnswersAndTheNextSyncBuildsTheIndex() async throws {
        let tenant = try Tenant(accounts: 14_000, contacts: 2_000)
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: tenant.data)
        defer {
            kill(server.process.processIdentifier, SIGCONT)
            server.stop()
        }
        // The kill is meant to land between batches; when the device was quicker (the server had
        // written the whole pull into the socket before it was stopped, and the device applied it
        // before the kill), the attempt proves nothing and another device home tries again.
        var landed: (cli: CLI, watcher: ReplicaStore)?
        for attempt in 1...4 where landed == nil {
            let (cli, path) = try tenant.home(port: server.port, name: "device-\(attempt)")
            let watcher = try ReplicaStore(path: path, options: .crm())
            let sync = try ChildProcess(cli.binary, ["sync"] + cli.fixed)
            // Once a batch (2,000 records of 16,000) is in, the server stops answering and the
            // device is killed, most often in the middle of the sync.
            while try watcher.count(ofType: "account") == 0 {
                #expect(sync.isRunning, "rapport sync ended before its first batch")
                guard sync.isRunning else { return }
                try await Task.sleep(for: .milliseconds(5))
            }
            kill(server.process.processIdentifier, SIGSTOP)
            sync.send(SIGKILL)
            try #require(sync.waitForExit(within: .seconds(60)), "the killed sync did not exit")
            kill(server.process.processIdentifier, SIGCONT)
            // A sync that ended on its own before the kill (it had the whole pull) is such an attempt too.
            let killed = sync.endedBySignal
            let held = try watcher.count(ofType: "account")
            let deferred = try watcher.deferredFieldIndexTypes()
            if killed && held > 0 && held < 14_000 && deferred == ["account"] {
                landed = (cli, watcher)
            } else {
                watcher.close()
            }
        }
        let (cli, watcher) = try #require(landed, "four kills in a row landed after the device had the whole pull")
        defer { watcher.close() }
        try Self.expectExact(watcher, "after the kill")
        let truth = try watcher.records(ofType: "account").filter { $0.fields["owner"]?.value == .text(Self.owners[2]) }.map(\.id)
        #expect(try Self.listed(cli, owner: Self.owners[2]) == truth)

        let again = try await cli.run(["sync"])
        #expect(again.status == 0, "\(again.error)")
        #expect(try watcher.deferredFieldIndexTypes().isEmpty)
        #expect(try watcher.count(ofType: "account") == tenant.byOwner.values.reduce(0) { $0 + $1.count })
        try Self.expectExact(watcher, "after the next sync")
        for owner in Self.owners {
            #expect(Set(try Self.listed(cli, owner: owner)) == tenant.byOwner[owner] ?? [], "rapport list, \(owner)")
        }
    }
}
