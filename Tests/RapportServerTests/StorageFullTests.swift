import CRM
import Foundation
@testable import RapportServer
@testable import ReplicaStore
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// A tenant store that cannot grow: SQLite's page limit on the server's own connection stands in
/// for a full disk (SQLite reports `SQLITE_FULL` for either).
@Suite(.timeLimit(.minutes(10)), .ownThread) struct StorageFullTests {
    /// Sets `max_page_count` on the connection the server uses for `tenant`: its current size,
    /// so nothing can be added, or `nil` for SQLite's maximum.
    func limitPages(of tenant: String, in fixture: ServerFixture, toCurrentSize: Bool) async throws {
        let lease = try fixture.server.tenants.lease(tenant)
        defer { fixture.server.tenants.release(tenant) }
        try await lease.store.perform { store in
            let pages = try store.sqliteFile!.scalarInt("PRAGMA page_count") ?? 0
            try store.sqliteFile!.execute("PRAGMA max_page_count = \(toCurrentSize ? pages : 1_073_741_823)")
        }
    }

    @Test func aFullDiskReachesTheDeviceAsStorageFullAndLosesNothing() async throws {
        let fixture = try await ServerFixture()
        defer { Task { await fixture.stop() } }
        // Told to come back in 30 s (`retry_after`), a retrying device would spend a minute
        // here: this one reports the refusal at its first attempt.
        let ana = try fixture.device("ana") { $0.retry.maxAttempts = 1 }
        let other = try fixture.device("ben", tenant: "globex")
        try await ana.sync()
        try await limitPages(of: "acme", in: fixture, toCurrentSize: true)

        let note = String(repeating: "met at the trade fair; wants a demo in spring. ", count: 20)
        try ana.local { store in
            try store.transaction {
                for i in 0..<300 { _ = try store.create("contact", ["first_name": .text("C\(i)"), "last_name": .text("Full"), "department": .text(note)]) }
            }
        }
        let failure = try #require(await syncError { try await ana.sync() })
        #expect(failure.code == .storageFull)
        #expect(failure.retryable)
        #expect(failure.message == "the server's storage is full, retry later")
        #expect(try ana.local { try $0.dirtyCount() } == 300, "nothing pushed is forgotten on the device")
        #expect(try fixture.tenantStore().records(ofType: "contact").isEmpty, "nothing of the batch was kept")

        // Other tenants are served meanwhile.
        try other.local { store in _ = try store.create("account", ["name": .text("Globex")]) }
        #expect(try await other.sync().pushed == 1)

        try await limitPages(of: "acme", in: fixture, toCurrentSize: false)
        let report = try await ana.sync()
        #expect(report.pushed == 300)
        #expect(try ana.local { try $0.dirtyCount() } == 0)
        let stored = try fixture.tenantStore().records(ofType: "contact")
        #expect(stored.count == 300)
        #expect(Set(try ana.local { try $0.records(ofType: "contact") }) == Set(stored))
    }

    func syncError(_ body: () async throws -> Void) async -> SyncError? {
        do {
            try await body()
            return nil
        } catch {
            return error as? SyncError
        }
    }
}
