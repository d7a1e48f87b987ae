import CRM
import Foundation
import Registry
import ReplicaStore
import SQLite
import Synchronization
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// A data directory in a temporary folder, with a clock the test moves, and the registry on
/// the backend the test asked for (tenant stores stay files of the data directory).
final class RegistryFixture: Sendable {
    let dir: TemporaryDirectory
    let data: DataDirectory
    let clock = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    let postgres: PostgresDatabase?

    init(_ backend: DatabaseBackend = .sqlite) throws {
        dir = try TemporaryDirectory()
        data = DataDirectory(dir.path("data"))
        postgres = backend == .postgres ? try PostgresServer.database() : nil
    }

    /// A new connection to the registry.
    func registry() throws -> Registry {
        let now: @Sendable () -> Date = { [self] in self.clock.withLock { $0 } }
        if let postgres { return try Registry(postgres: postgres.url, now: now) }
        return try data.openRegistry(now: now)
    }

    func advance(_ seconds: TimeInterval) { clock.withLock { $0 += seconds } }

    /// A tenant with an admin user.
    @discardableResult
    func tenant(_ slug: String, in registry: Registry) throws -> Tenant {
        let tenant = try data.createTenant(slug, name: "Tenant \(slug)", schema: CRMSchema.current, in: registry)
        try registry.addUser(tenant: slug, email: "admin@\(slug).example", name: "Admin", role: .admin)
        return tenant
    }
}

@Suite struct TenantTests {
    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func aTenantGoesThroughItsWholeLife(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        let path = try f.data.storePath(of: "acme")
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(try ReplicaStore.inspect(path: path).records == 0)
        #expect(try registry.tenants().map(\.slug) == ["acme"])
        #expect(throws: RegistryError.tenantExists("acme", status: .active)) { try f.tenant("acme", in: registry) }

        try registry.renameTenant("acme", to: "Acme Corporation")
        try registry.setTenantStatus("acme", .suspended)
        #expect(try registry.requireTenant("acme").status == .suspended)
        #expect(throws: RegistryError.tenantNotDeleted("acme")) { try f.data.purgeTenant("acme", in: registry) }

        try registry.setTenantStatus("acme", .deleted)
        #expect(try registry.tenants().isEmpty)
        #expect(try registry.tenants(includeDeleted: true).map(\.name) == ["Acme Corporation"])
        #expect(FileManager.default.fileExists(atPath: path), "a deleted tenant's data is kept until purged")

        try f.data.purgeTenant("acme", in: registry)
        #expect(try registry.tenant("acme") == nil)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try registry.auditEntries().isEmpty, "the registry API does not audit by itself; audited() does")
    }

    @Test(.blocking, arguments: ["../x", "a/b", "", String(repeating: "a", count: 10_000), "a\u{0}b", "-a", "a-", "Acme", "a b", "é"])
    func anInvalidTenantIdIsRefusedAndNoFileAppears(_ slug: String) throws {
        let f = try RegistryFixture()
        let registry = try f.registry()
        defer { registry.close() }
        let before = try FileManager.default.subpathsOfDirectory(atPath: f.dir.url.path)
        do {
            _ = try f.data.createTenant(slug, name: "x", schema: CRMSchema.current, in: registry)
            Issue.record("\(slug.prefix(20)) was accepted")
        } catch let RegistryError.invalidTenantID(_, reason) {
            #expect(reason.contains("tenant id"))
        }
        #expect(try FileManager.default.subpathsOfDirectory(atPath: f.dir.url.path) == before)
        #expect(try registry.tenants(includeDeleted: true).isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func aCrashBeforeTheRegistryRowLeavesNoTenantAndTheSlugCanBeCreatedAgain(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        struct Crash: Error {}
        for step in [DataDirectory.CreationStep.storeWritten, .storeInPlace] {
            // Stands in for the process dying: nothing after the step runs. (The test with a real
            // killed rapportctl process is in RapportServerTests.)
            #expect(throws: Crash.self) {
                try registry.audited(actor: "test", action: "tenant create", tenant: "acme") {
                    _ = try f.data.createTenant("acme", name: "Acme", schema: CRMSchema.current, in: registry,
                                                crashAt: { if $0 == step { throw Crash() } })
                }
            }
            #expect(try registry.tenant("acme") == nil)
        }
        try f.tenant("acme", in: registry)
        #expect(try registry.tenants().map(\.slug) == ["acme"])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: f.data.tenantsPath).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty)
    }
}

@Suite struct UserAndDeviceTests {
    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func usersAreCheckedAndRemovingOneRevokesItsDevices(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        let anna = try registry.addUser(tenant: "acme", email: " Anna@Acme.Example ", name: "Anna", role: .rep, team: "north")
        #expect(anna.email == "anna@acme.example")
        #expect(throws: RegistryError.userExists(tenant: "acme", email: "anna@acme.example")) {
            try registry.addUser(tenant: "acme", email: "anna@acme.example", name: "Anna 2", role: .rep)
        }
        for bad in ["anna", "anna@", "@acme.example", "an na@acme.example", "anna@acme"] {
            #expect(throws: RegistryError.invalidEmail(bad)) { try registry.addUser(tenant: "acme", email: bad, name: "x", role: .rep) }
        }
        #expect(throws: RegistryError.noSuchTenant("globex")) { try registry.addUser(tenant: "globex", email: "a@b.example", name: "x", role: .rep) }
        try registry.setRole(tenant: "acme", email: "anna@acme.example", .manager)
        #expect(try registry.requireUser(tenant: "acme", email: "anna@acme.example").role == .manager)

        let code = try registry.issueEnrollmentCode(tenant: "acme", user: "anna@acme.example")
        let device = try registry.enroll(tenant: "acme", code: code.code, deviceName: "laptop").device
        let unused = try registry.issueEnrollmentCode(tenant: "acme", user: "anna@acme.example")
        try registry.setUserStatus(tenant: "acme", email: "anna@acme.example", .removed)
        #expect(try registry.device(device.id)?.status == .revoked)
        #expect(throws: RegistryError.self) { try registry.enroll(tenant: "acme", code: unused.code, deviceName: "phone") }
        // A removed user comes back through `add`, with the old devices still revoked.
        try registry.addUser(tenant: "acme", email: "anna@acme.example", name: "Anna", role: .rep)
        #expect(try registry.requireUser(tenant: "acme", email: "anna@acme.example").status == .active)
        #expect(try registry.device(device.id)?.status == .revoked)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func anEnrollmentCodeWorksOnceBeforeItExpiresAndOnlyForItsTenant(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try f.tenant("globex", in: registry)
        let ticket = try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example", validFor: .seconds(3600))
        func failure(_ tenant: String, _ code: String) -> EnrollmentFailure? {
            do {
                _ = try registry.enroll(tenant: tenant, code: code, deviceName: "x")
                return nil
            } catch RegistryError.enrollment(let failure, _) {
                return failure
            } catch {
                Issue.record("unexpected \(error)")
                return nil
            }
        }
        #expect(failure("globex", ticket.code) == .unknownCode, "another tenant's code is as good as none")
        #expect(failure("acme", "00000-00000-00000-00000") == .unknownCode)
        // Typed sloppily: lowercase, no dashes, O for 0.
        let sloppy = ticket.code.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "0", with: "o")
        let enrollment = try registry.enroll(tenant: "acme", code: sloppy, deviceName: "laptop")
        #expect(enrollment.secret.count == 32)
        #expect(failure("acme", ticket.code) == .alreadyUsed)

        let late = try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example", validFor: .seconds(60))
        f.advance(61)
        #expect(failure("acme", late.code) == .expired)

        let suspended = try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example")
        try registry.setUserStatus(tenant: "acme", email: "admin@acme.example", .suspended)
        #expect(failure("acme", suspended.code) == .userNotActive)
        try registry.setUserStatus(tenant: "acme", email: "admin@acme.example", .active)
        try registry.setTenantStatus("acme", .suspended)
        #expect(failure("acme", suspended.code) == .tenantNotActive)
        #expect(throws: RegistryError.tenantNotActive("acme", status: .suspended)) {
            try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example")
        }
    }

    @Test(.blocking) func theRegistryKeepsOnlyHashesOfSecretsAndCodes() throws {
        let f = try RegistryFixture()
        let registry = try f.registry()
        let ticket: EnrollmentTicket
        let enrollment: Enrollment
        do {
            defer { registry.close() }
            try f.tenant("acme", in: registry)
            ticket = try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example")
            enrollment = try registry.enroll(tenant: "acme", code: ticket.code, deviceName: "laptop")
        }
        let bytes = try #require(FileManager.default.contents(atPath: f.data.registryPath))
        #expect(bytes.range(of: Data(enrollment.secret)) == nil)
        #expect(bytes.range(of: Data(ticket.code.utf8)) == nil)
        #expect(bytes.range(of: Data(ticket.code.replacingOccurrences(of: "-", with: "").utf8)) == nil)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func auditedRecordsSuccessWithTheChangeAndFailureWithItsReason(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try registry.audited(actor: "ops", action: "tenant create", tenant: "acme") { try f.tenant("acme", in: registry) }
        #expect(throws: RegistryError.self) {
            try registry.audited(actor: "ops", action: "user add", tenant: "acme", detail: "bad") {
                try registry.addUser(tenant: "acme", email: "not an email", name: "x", role: .rep)
            }
        }
        let entries = try registry.auditEntries(tenant: "acme")
        #expect(entries.map(\.action) == ["tenant create", "user add"])
        #expect(entries.map(\.actor) == ["ops", "ops"])
        #expect(entries[0].result == "ok")
        #expect(entries[1].result.hasPrefix("failed: 'not an email' is not an e-mail address"))
    }
}

@Suite struct BackupTests {
    /// Fills the tenant's store with accounts, as the server would.
    func fill(_ f: RegistryFixture, _ tenant: String, count: Int, from start: Int = 0) throws {
        let store = try f.data.openStore(of: tenant, options: .crm(role: .authority))
        defer { store.close() }
        try store.transaction {
            for i in start..<(start + count) { try store.create("account", ["name": .text("account \(i)"), "region": .text("r\(i % 7)")]) }
        }
    }

    func records(_ path: String) throws -> [UUID: RecordState] {
        let store = try ReplicaStore(path: path, options: .init(schema: CRMSchema.current))
        defer { store.close() }
        return Dictionary(uniqueKeysWithValues: try store.records(ofType: "account", includeDeleted: true).map { ($0.id, $0) })
    }

    @Test(.blocking) func aBackupTakenWhileTheStoreIsWrittenRestoresIntoANewTenantRecordForRecord() async throws {
        let f = try RegistryFixture()
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try fill(f, "acme", count: 2_000)
        // A writer keeps committing on its own connection while the backup runs.
        // On a thread of its own: its commits block, and a pool thread is every test's.
        let writer = Task { [f] in
            try await offThePool { for round in 0..<20 { try fill(f, "acme", count: 50, from: 10_000 + round * 50) } }
        }
        let file = f.dir.path("acme.backup")
        let info = try f.data.backup(tenant: "acme", to: file, in: registry)
        try await writer.value
        #expect(info.records >= 2_000 && info.records <= 3_000)
        #expect(info.records % 50 == 0, "a backup is one consistent snapshot, never half a transaction")

        let restored = try f.data.restore(tenant: "acme-copy", from: file, schema: CRMSchema.current, in: registry)
        #expect(restored.records == info.records)
        #expect(try registry.requireTenant("acme-copy").status == .active)
        let original = try ReplicaStore.inspect(path: try f.data.storePath(of: "acme"))
        #expect(restored.replicaID != original.replicaID, "a restored store takes a new identity")
        let copy = try records(try f.data.storePath(of: "acme-copy"))
        let source = try records(try f.data.storePath(of: "acme"))
        #expect(copy.count == info.records)
        for (id, state) in copy { #expect(source[id] == state) }
    }

    @Test(.blocking) func aDamagedOrForeignBackupIsRefusedAndNothingIsReplaced() throws {
        let f = try RegistryFixture()
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try fill(f, "acme", count: 100)
        let good = f.dir.path("good.backup")
        try f.data.backup(tenant: "acme", to: good, in: registry)
        try registry.setTenantStatus("acme", .suspended)
        let before = try records(try f.data.storePath(of: "acme"))

        let garbage = f.dir.path("garbage.backup")
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: garbage))
        let foreign = f.dir.path("foreign.backup")
        let db = try Database(path: foreign)
        try db.execute("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        db.close()
        var damaged = try Data(contentsOf: URL(fileURLWithPath: good))
        damaged.replaceSubrange(8192..<12288, with: Data(repeating: 0xFF, count: 4096))
        let corrupt = f.dir.path("corrupt.backup")
        try damaged.write(to: URL(fileURLWithPath: corrupt))
        for file in [garbage, foreign, corrupt, f.dir.path("missing.backup")] {
            #expect(throws: ReplicaStoreError.self) {
                try f.data.restore(tenant: "acme", from: file, schema: CRMSchema.current, in: registry)
            }
            #expect(throws: ReplicaStoreError.self) {
                try f.data.restore(tenant: "fresh", from: file, schema: CRMSchema.current, in: registry)
            }
        }
        #expect(try records(try f.data.storePath(of: "acme")) == before)
        #expect(try registry.tenant("fresh") == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.data.tenantsPath).sorted() == ["acme.sqlite"])
    }

    @Test(.blocking) func restoringOverATenantNeedsItSuspendedAndBringsBackTheBackupsContent() throws {
        let f = try RegistryFixture()
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try fill(f, "acme", count: 100)
        let file = f.dir.path("acme.backup")
        try f.data.backup(tenant: "acme", to: file, in: registry)
        try fill(f, "acme", count: 25, from: 500)
        #expect(throws: RegistryError.self) { try f.data.restore(tenant: "acme", from: file, schema: CRMSchema.current, in: registry) }
        try registry.setTenantStatus("acme", .suspended)
        let identity = try ReplicaStore.inspect(path: try f.data.storePath(of: "acme")).replicaID
        let info = try f.data.restore(tenant: "acme", from: file, schema: CRMSchema.current, in: registry)
        #expect(info.records == 100)
        #expect(info.replicaID != identity)
        #expect(try records(try f.data.storePath(of: "acme")).count == 100)
    }
}
