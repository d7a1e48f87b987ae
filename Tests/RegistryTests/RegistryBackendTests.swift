import Foundation
import Postgres
@testable import Registry
import SQLite
import TestSupport
import Testing
import TestScheduling

/// What differs between the registry's backends and must not show: how a server learns that
/// another connection (another process, or another node) changed what it caches, and how a
/// registry written by a newer Rapport is refused.
@Suite struct RegistryBackendTests {
    @Test(.blocking, arguments: DatabaseBackend.allCases)
    func aRevocationThroughOneConnectionChangesTheVersionAnotherReads(_ backend: DatabaseBackend) throws {
        let f = try RegistryFixture(backend)
        let admin = try f.registry()
        defer { admin.close() }
        let server = try f.registry()
        defer { server.close() }
        try f.tenant("acme", in: admin)
        let ticket = try admin.issueEnrollmentCode(tenant: "acme", user: "admin@acme.example")
        let device = try admin.enroll(tenant: "acme", code: ticket.code, deviceName: "laptop").device

        let before = try server.dataVersion
        #expect(try server.dataVersion == before, "reading changes nothing")
        #expect(try server.accessSnapshot().devices[device.id]?.status == .active)
        try admin.revokeDevice(device.id)
        #expect(try server.dataVersion != before, "the server sees that it must re-read")
        #expect(try server.accessSnapshot().devices[device.id]?.status == .revoked)

        if backend == .postgres {
            // Activity is written by every node all the time and no snapshot reads it: it must
            // not make every node re-read the registry.
            let quiet = try server.dataVersion
            try admin.recordActivity([device.id: (seen: Date(), checkpoint: 7)])
            #expect(try server.dataVersion == quiet)
            #expect(try server.device(device.id)?.lastCheckpoint == 7)
            try admin.setTeam(tenant: "acme", email: "admin@acme.example", "north")
            #expect(try server.dataVersion != quiet)
        }
    }

    @Test(.blocking) func aRegistryDatabaseOfANewerRapportIsRefusedAndLeftAsItIs() throws {
        let database = try PostgresServer.database()
        do {
            let registry = try Registry(postgres: database.url)
            registry.close()
        }
        let raw = try PostgresConnection(url: database.url)
        try raw.run("UPDATE rapport_schema SET version = 99 WHERE component = 'registry'")
        let refused = #expect(throws: RegistryError.self) { _ = try Registry(postgres: database.url) }
        #expect(refused.map { "\($0)" }?.contains("newer") == true)
        #expect(try raw.scalarInt("SELECT version FROM rapport_schema WHERE component = 'registry'") == 99)
    }

    @Test(.blocking) func theRegistryWritesTheSameThingsOnBothBackends() throws {
        // One script of registry calls on each backend; what the API reads back must agree.
        func script(_ backend: DatabaseBackend) throws -> [String] {
            let f = try RegistryFixture(backend)
            let registry = try f.registry()
            defer { registry.close() }
            try f.tenant("acme", in: registry)
            try registry.addUser(tenant: "acme", email: "bo@acme.example", name: "Bo", role: .rep, team: "north")
            try registry.setRole(tenant: "acme", email: "bo@acme.example", .manager)
            try registry.setTeam(tenant: "acme", email: "bo@acme.example", nil)
            let ticket = try registry.issueEnrollmentCode(tenant: "acme", user: "bo@acme.example")
            let device = try registry.enroll(tenant: "acme", code: ticket.code, deviceName: "phone").device
            try registry.recordActivity([device.id: (seen: Date(timeIntervalSince1970: 1_800_000_100), checkpoint: 3)])
            try registry.recordActivity([device.id: (seen: Date(timeIntervalSince1970: 1_800_000_050), checkpoint: nil)])
            _ = try registry.setRetention("acme", tombstones: "30d", conflicts: nil)
            try registry.renameTenant("acme", to: "Acme Inc")
            let users = try registry.users(tenant: "acme").map { "\($0.email) \($0.role) \($0.team ?? "-") \($0.status)" }
            let devices = try registry.devices(tenant: "acme").map {
                "\($0.number) \($0.user) \($0.name) \($0.status) \($0.lastSeen?.timeIntervalSince1970 ?? 0) \($0.lastCheckpoint ?? -1)"
            }
            let tenants = try registry.tenants().map { "\($0.slug) \($0.name) \($0.status) \($0.settings.sorted { $0.key < $1.key })" }
            let snapshot = try registry.accessSnapshot()
            return users + devices + tenants + ["\(snapshot.users["acme"]?.keys.sorted() ?? [])", "\(snapshot.retention["acme"].map { "\($0)" } ?? "")"]
        }
        let sqlite = try script(.sqlite)
        #expect(sqlite.count == 6)
        #expect(try script(.postgres) == sqlite)
    }

    @Test(.blocking) func keysWebhooksAndBranchesWorkAlikeOnBothBackends() throws {
        func script(_ backend: DatabaseBackend) throws -> [String] {
            let f = try RegistryFixture(backend)
            let registry = try f.registry()
            defer { registry.close() }
            try f.tenant("acme", in: registry)
            var lines: [String] = []
            // API keys: created, found by their secret, one active name at a time, revoked.
            let issued = try registry.createAPIKey(tenant: "acme", name: "erp", role: .manager)
            lines.append("key \(try registry.authenticateAPIKey(issued.secret)?.name ?? "-")")
            lines.append("wrong \(try registry.authenticateAPIKey(issued.secret + "0")?.name ?? "-")")
            #expect(throws: RegistryError.self) { try registry.createAPIKey(tenant: "acme", name: "erp", role: .rep) }
            _ = try registry.revokeAPIKey(tenant: "acme", "erp")
            lines.append("revoked \(try registry.authenticateAPIKey(issued.secret).map { "\($0.status)" } ?? "-")")
            _ = try registry.createAPIKey(tenant: "acme", name: "erp", role: .rep)
            // Sorted: both keys were made in the fixture's one millisecond, so their order is their random ids'.
            lines += try registry.apiKeys(tenant: "acme").map { "\($0.name) \($0.role) \($0.status) \($0.revokedAt != nil)" }.sorted()

            // Webhooks: the cursor only moves forward, the delivery log is bounded, fields kept per record.
            let (hook, secret) = try registry.createWebhook(tenant: "acme", url: "https://erp.example/hook", events: ["account", "opportunity.stage"],
                                                           role: "admin", caFile: nil, cursor: 5)
            lines.append("secret \(secret.count) \(try registry.webhookSecret(hook.id) == secret)")
            for attempt in 1...(Registry.webhookDeliveriesKept + 3) {
                let failed = attempt % 2 == 1
                try registry.recordWebhookAttempt(hook.id, WebhookDelivery(
                    eventID: "e\(attempt)", sequence: Int64(5 + attempt), record: "r", attempt: attempt,
                    at: Date(timeIntervalSince1970: 1_800_000_000 + Double(attempt)), status: failed ? 500 : 200,
                    error: failed ? "HTTP 500" : nil), advanceFrom: failed ? nil : Int64(5 + attempt - 1))
            }
            try registry.advanceWebhook(hook.id, to: 3)
            try registry.setWebhookSeenFields(hook.id, record: "r", ["stage": "a"])
            try registry.setWebhookSeenFields(hook.id, record: "r", ["stage": "b"])
            try registry.setWebhookEnabled(hook.id, false, reason: "too many failures")
            let stood = try registry.requireWebhook(hook.id)
            lines.append("hook \(stood.events) \(stood.cursor) \(stood.failures) \(stood.enabled) \(stood.disabledReason ?? "-")")
            let log = try registry.webhookDeliveries(hook.id, limit: 1000)
            lines.append("log \(log.count) \(log.first?.eventID ?? "-") \(log.last?.eventID ?? "-") \(log.last?.status ?? 0)")
            lines.append("seen \(try registry.webhookSeenFields(hook.id, record: "r") ?? [:])")

            // Branches: numbered with the devices, replicas remembered, directory digestable.
            let (branch, credential) = try registry.enrollBranch(tenant: "acme", name: "Lyon", users: ["admin@acme.example"])
            lines.append("branch \(branch.number) \(branch.name) \(credential.tenant) \(branch.users.map { $0.sorted() } ?? [])")
            lines.append("replica \(try registry.recordBranchReplica(branch: branch.id, replica: "r-1")) \(try registry.recordBranchReplica(branch: branch.id, replica: "r-1"))")
            lines.append("replicas \(try registry.branchReplicas(branch: branch.id).count)")
            let directory = try registry.directory(forBranch: branch.id)
            lines.append("directory \(directory.users.map(\.email)) \(directory.tenant.slug)")
            try registry.revokeBranch(branch.id)
            lines.append("branch revoked \(try registry.branch(branch.id)?.status.rawValue ?? "-")")
            return lines
        }
        let sqlite = try script(.sqlite)
        #expect(sqlite.count == 14)
        #expect(try script(.postgres) == sqlite)
    }
}
