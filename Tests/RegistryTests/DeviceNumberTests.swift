import Foundation
@testable import Registry
import SQLite
import Synchronization
import TestSupport
import Testing
import TestScheduling

/// Every device gets a number in its tenant at enrollment (1, 2, 3, ..., never reused): the
/// prefix of the case numbers it makes offline, so those must never repeat within a tenant.
@Suite struct DeviceNumberTests {
    /// Enrolls a device of the tenant's admin (`RegistryFixture.tenant` adds one).
    func enroll(_ registry: Registry, _ tenant: String, _ name: String) throws -> RegisteredDevice {
        let ticket = try registry.issueEnrollmentCode(tenant: tenant, user: "admin@\(tenant).example")
        return try registry.enroll(tenant: tenant, code: ticket.code, deviceName: name).device
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func devicesAreNumberedOneTwoThreeWithinEachTenant(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try f.tenant("globex", in: registry)
        #expect(try enroll(registry, "acme", "a").number == 1)
        #expect(try enroll(registry, "acme", "b").number == 2)
        #expect(try enroll(registry, "globex", "x").number == 1, "another tenant counts on its own")
        #expect(try enroll(registry, "acme", "c").number == 3)
        #expect(try enroll(registry, "globex", "y").number == 2)

        #expect(try registry.devices(tenant: "acme").map(\.number) == [1, 2, 3])
        #expect(try registry.devices(tenant: "globex").map(\.number) == [1, 2])
        let snapshot = try registry.accessSnapshot()
        for device in try registry.devices(tenant: "acme") + registry.devices(tenant: "globex") {
            #expect(snapshot.devices[device.id]?.number == device.number, "the server reads it from the snapshot")
        }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func aNumberIsNeverGivenAgainAfterItsDeviceIsRevokedOrItsUserRemoved(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let registry = try f.registry()
        defer { registry.close() }
        try f.tenant("acme", in: registry)
        try registry.addUser(tenant: "acme", email: "ben@acme.example", name: "Ben", role: .rep)
        _ = try enroll(registry, "acme", "a")
        let last = try enroll(registry, "acme", "b")
        try registry.revokeDevice(last.id)
        #expect(try enroll(registry, "acme", "c").number == 3, "the revoked highest number stays taken")

        let ticket = try registry.issueEnrollmentCode(tenant: "acme", user: "ben@acme.example")
        let bens = try registry.enroll(tenant: "acme", code: ticket.code, deviceName: "ben's").device
        #expect(bens.number == 4)
        try registry.setUserStatus(tenant: "acme", email: "ben@acme.example", .removed)
        #expect(try registry.device(bens.id)?.number == 4, "a revoked device keeps its number")
        #expect(try enroll(registry, "acme", "d").number == 5)
    }

    @Test(.blocking) func theMigrationNumbersExistingDevicesInEnrollmentOrderPerTenant() throws {
        let f = try RegistryFixture()
        let path = f.dir.path("registry.sqlite")
        // A registry as the version before numbers left it.
        let old = try Database(path: path)
        try old.execute("PRAGMA application_id = \(Registry.applicationID)")
        try old.migrate(Array(Registry.migrations.prefix(2)))
        try old.execute("""
            INSERT INTO tenants (slug, name, status, created_at) VALUES ('acme', 'Acme', 'active', 0), ('globex', 'Globex', 'active', 0);
            INSERT INTO users (id, tenant, email, name, role, status, created_at) VALUES
                (1, 'acme', 'admin@acme.example', 'Admin', 'admin', 'active', 0),
                (2, 'globex', 'gus@globex.example', 'Gus', 'rep', 'active', 0);
            INSERT INTO devices (id, tenant, user_id, name, secret_hash, status, enrolled_at, revoked_at, last_seen, last_checkpoint) VALUES
                ('acme-late', 'acme', 1, 'late', x'01', 'active', 3000, NULL, 3500, 12),
                ('acme-first', 'acme', 1, 'first', x'02', 'revoked', 1000, 1500, NULL, NULL),
                ('globex-only', 'globex', 2, 'only', x'03', 'active', 2000, NULL, NULL, NULL),
                ('acme-tie-b', 'acme', 1, 'tie b', x'04', 'active', 2000, NULL, NULL, NULL),
                ('acme-tie-a', 'acme', 1, 'tie a', x'05', 'active', 2000, NULL, NULL, NULL);
            """)
        old.close()

        let registry = try Registry(path: path, now: { f.clock.withLock { $0 } })
        defer { registry.close() }
        let file = try #require(registry.db as? Database)
        #expect(try file.userVersion == Registry.migrations.count)
        let acme = try registry.devices(tenant: "acme")
        // Enrollment time first, the id between devices enrolled in the same millisecond.
        #expect(acme.map(\.id) == ["acme-first", "acme-tie-a", "acme-tie-b", "acme-late"])
        #expect(acme.map(\.number) == [1, 2, 3, 4])
        #expect(try registry.devices(tenant: "globex").map(\.number) == [1])
        // Everything else of the rows came through.
        #expect(acme[0].status == .revoked && acme[0].revokedAt == Date(timeIntervalSince1970: 1.5))
        #expect(acme[3].lastSeen == Date(timeIntervalSince1970: 3.5) && acme[3].lastCheckpoint == 12)
        #expect(try registry.accessSnapshot().devices["acme-late"]?.secretHash == [0x01])
        #expect(try file.scalarInt("SELECT count(*) FROM sqlite_master WHERE name = 'devices_by_tenant'") == 1)

        #expect(try enroll(registry, "acme", "new").number == 5, "an enrollment after the migration")
        #expect(throws: SQLiteError.self, "the schema itself refuses a number twice in a tenant") {
            try registry.db.run("""
                INSERT INTO devices (id, tenant, number, user_id, name, secret_hash, status, enrolled_at)
                VALUES ('dup', 'acme', 2, 1, 'dup', x'00', 'active', 0)
                """)
        }
    }

    /// Two connections, as `rapportd` and another process on the same data directory (or two
    /// server nodes on one PostgreSQL database) would have, enroll at the same time: the number
    /// is read and taken under the write lock that `BEGIN IMMEDIATE` holds for the whole
    /// enrollment, or under the tenant row's lock on PostgreSQL, so none is handed out twice.
    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func enrollmentsRacingOnTwoConnectionsGetDistinctNumbers(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let perConnection = 25
        let codes: [String]
        do {
            let registry = try f.registry()
            defer { registry.close() }
            try f.tenant("acme", in: registry)
            codes = try (0..<2 * perConnection).map { _ in
                try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example").code
            }
        }
        let numbers = Mutex<[Int64]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { connection in
            do {
                let registry = try f.registry()
                defer { registry.close() }
                for code in codes[(connection * perConnection)..<((connection + 1) * perConnection)] {
                    let number = try registry.enroll(tenant: "acme", code: code, deviceName: "racer \(connection)").device.number
                    numbers.withLock { $0.append(number) }
                }
            } catch {
                failures.withLock { $0.append("connection \(connection): \(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(numbers.withLock { $0 }.sorted() == (1...Int64(2 * perConnection)).map { $0 })
    }

    /// One code tried by two connections at once (a device retrying through two server nodes):
    /// exactly one device comes of it, whatever the backend.
    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func aCodeUsedOnTwoConnectionsAtOnceMakesOneDevice(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let codes: [String]
        do {
            let registry = try f.registry()
            defer { registry.close() }
            try f.tenant("acme", in: registry)
            codes = try (0..<20).map { _ in try registry.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example").code }
        }
        let outcomes = Mutex<[String: [String]]>([:])
        DispatchQueue.concurrentPerform(iterations: 2) { connection in
            guard let registry = try? f.registry() else { return }
            defer { registry.close() }
            for code in codes {
                let outcome: String
                do {
                    outcome = "device \(try registry.enroll(tenant: "acme", code: code, deviceName: "racer").device.number)"
                } catch RegistryError.enrollment(.alreadyUsed, _) {
                    outcome = "already used"
                } catch {
                    outcome = "\(error)"
                }
                outcomes.withLock { $0[code, default: []].append(outcome) }
            }
        }
        let all = outcomes.withLock { $0 }
        #expect(all.count == codes.count)
        for (code, results) in all {
            #expect(results.filter { $0 == "already used" }.count == 1 && results.filter { $0.hasPrefix("device ") }.count == 1,
                    "\(code): \(results)")
        }
        let registry = try f.registry()
        defer { registry.close() }
        #expect(try registry.devices(tenant: "acme").count == codes.count)
    }
}
