import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import TestScheduling
import TestSupport
import Testing

/// What works on a tenant's store file works on a tenant in PostgreSQL too: `rapportctl backup`
/// (a store file of the tenant, as from a data directory), `restore` into a new tenant or over a
/// suspended one, and the whole-org import's dry run, which runs on such a copy.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct PostgresTenantFilesTests {
    @Test func aTenantInPostgresIsBackedUpRestoredAndDryRunLikeAFileOne() async throws {
        let setup = try TenantMoveTests.Setup()
        // The tenant lives in PostgreSQL from the start here.
        await #expect(try setup.ctl.run(["tenant", "move", "acme", "--to", setup.database.url]).status == 0)
        let server = try setup.server(onPostgres: true)
        defer { server.stop() }
        let laptop = try await setup.enroll("laptop", user: "anna@acme.example", on: server, inPostgres: true)
        try TenantMoveTests.createAccounts(laptop, 120, "Backed up")
        try await laptop.sync()

        let file = setup.dir.path("acme.backup")
        let backup = try setup.onPostgres(["backup", "acme", "--to", file, "--json"])
        #expect(backup.status == 0, "\(backup.error)")
        #expect((backup.json as? [String: Any])?["records"] as? Int == 120, "\(backup.output)")
        #expect(try ReplicaStore.inspect(path: file).records == 120, "the backup is a store file like a data directory's")

        // Into a new tenant: the same records under a new replica id.
        let copy = try setup.onPostgres(["restore", "acme-copy", "--from", file, "--json"])
        #expect(copy.status == 0, "\(copy.error)")
        #expect(try setup.onPostgres(["stats", "acme-copy"]).output.contains("120 records"))

        // Over the tenant itself, after more writes: refused while it is active, then the
        // device, told to resync by the new replica id, pushes again what the backup lacks.
        try TenantMoveTests.createAccounts(laptop, 7, "After the backup")
        try await laptop.sync()
        #expect(try setup.onPostgres(["restore", "acme", "--from", file]).status != 0, "an active tenant is not restored over")
        #expect(try setup.onPostgres(["tenant", "suspend", "acme"]).status == 0)
        // Restored at once, while the server may still hold the tenant's store open: it opens
        // it again at the next session rather than serve the old replica id (TenantPool).
        let over = try setup.onPostgres(["restore", "acme", "--from", file, "--json"])
        #expect(over.status == 0, "\(over.error)")
        #expect(try setup.onPostgres(["tenant", "resume", "acme"]).status == 0)
        #expect(try setup.onPostgres(["stats", "acme"]).output.contains("120 records"))
        let first = try await laptop.sync()
        let second = try await laptop.sync()
        let stats = try setup.onPostgres(["stats", "acme"]).output
        #expect(stats.contains("127 records"), "nothing the device held is lost: \(stats.prefix(80)) after \(first), \(second)")

        // The whole-org import's dry run: a report, nothing written; the real run matches it.
        let fixture = SalesforceExportFixture()
        try fixture.write(to: setup.dir.path("export"))
        let arguments = ["import", "acme", "--from", setup.dir.path("export"), "--source", "salesforce", "--json"]
        let dry = try setup.onPostgres(arguments + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.error)")
        #expect(try setup.onPostgres(["stats", "acme"]).output.contains("127 records"), "a dry run writes nothing")
        let real = try setup.onPostgres(arguments)
        #expect(real.status == 0, "\(real.error)")
        #expect(try OrgImportTests.comparable(dry.json) == OrgImportTests.comparable(real.json))
    }
}
