import Access
import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import Testing

/// The device's half of rights: the rights a Welcome carries are kept in the device's store and
/// checked on every local write, so a refusal shows at once, connected or not. Fed to the
/// client the way a session's Welcome feeds them; no server is needed for that.
@Suite struct DeviceAccessTests {
    let dir: TemporaryDirectory
    init() throws { dir = try TemporaryDirectory() }

    /// A client over the device store `name`, opened again each time it is asked for, as an
    /// app does when it starts; it never connects (nothing listens on its port).
    func openClient(_ name: String = "nina-phone") throws -> RapportClient {
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"), options: .crm(replicaID: try ReplicaID(name)))
        let config = ClientConfiguration(host: "127.0.0.1", port: 9, tenant: "acme", secret: ServerFixture.secret,
                                         trustRoots: .system, schemaVersion: CRMSchema.version)
        return try RapportClient(store: SharedReplicaStore(store, label: name), configuration: config)
    }

    /// Nina, a rep of team north, as a server describes her in `Welcome.access`.
    static var nina: AccessSubject {
        get throws {
            AccessSubject(user: "nina@acme.example", team: "north", role: try #require(CRMAccess.defaultRoles.first { $0.name == "rep" }),
                          teamMembers: ["nina@acme.example", "nick@acme.example"])
        }
    }

    /// The reason the store gives for refusing `body`, with the rule's words.
    func refusal(_ client: RapportClient, _ body: @escaping @Sendable (ReplicaStore) throws -> Void) async -> AccessDenied? {
        do {
            try await client.store.perform(body)
            return nil
        } catch ReplicaStoreError.accessDenied(let denied) {
            return denied
        } catch {
            Issue.record("refused for another reason: \(error)")
            return nil
        }
    }

    @Test func aRepsWriteOfAHiddenFieldOrOfTheConfigurationIsRefusedLocallyWithThePolicysWords() async throws {
        let client = try openClient()
        try await client.adoptAccess(try Self.nina.wire)
        #expect(try await client.access() == (try Self.nina))
        let account = try await client.store.perform {
            try $0.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")])
        }
        let before = try await client.store.perform { try StoreFingerprint($0) }

        let revenue = try #require(await refusal(client) { try $0.update(account.id, ["annual_revenue": .real(1e6)]) })
        #expect(revenue == AccessDenied(record: account.id, type: "account", reason: "reps may not write the field annual_revenue"))
        // The same words as the policy itself, which is what the server answers with.
        let proposed = try account.updated(["annual_revenue": .real(1e6)])
        #expect(throws: revenue) {
            try AccessPolicy(model: CRMAccess.ownership, subject: try Self.nina).checkWrite(before: account, after: proposed) { _ in nil }
        }

        let stage = await refusal(client) {
            try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)])
        }
        #expect(stage?.reason == "reps may not create pipeline_stages")
        let typed = await refusal(client) { store in
            try CRMStore(store: store, user: "nina@acme.example").create(Contact(firstName: "Ada", lastName: "Lovelace", owner: "sam@acme.example"))
        }
        #expect(typed?.reason.hasPrefix("reps may create only contacts they own") == true, "the typed CRM writes through the same check")
        #expect(try await client.store.perform { try StoreFingerprint($0) } == before, "nothing of the refused writes was kept")

        // What her rights allow still works, in one transaction with what it hangs off.
        try await client.store.perform { store in
            try store.transaction {
                let mine = try store.create("account", ["name": .text("Nina's"), "owner": .text("nina@acme.example")])
                try store.create("contact", ["last_name": .text("Hopper"), "account": .text(mine.id.uuidString)])
            }
        }
    }

    @Test func theRightsAreKeptSoADeviceThatStartsOfflineStillChecks() async throws {
        do {
            let client = try openClient()
            try await client.adoptAccess(try Self.nina.wire)
            await client.store.close()
        }
        let reopened = try openClient()
        #expect(try await reopened.access() == (try Self.nina), "installed when the client is made, before any connection")
        let stage = await refusal(reopened) {
            try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)])
        }
        #expect(stage?.reason == "reps may not create pipeline_stages")
    }

    @Test func aWelcomeWithoutRightsForgetsTheKeptOnes() async throws {
        do {
            let client = try openClient()
            try await client.adoptAccess(try Self.nina.wire)
            try await client.adoptAccess(nil)
            #expect(try await client.access() == nil)
            await client.store.close()
        }
        let reopened = try openClient()
        #expect(try await reopened.access() == nil)
        try await reopened.store.perform {
            _ = try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)])
        }
    }

    @Test func newRightsReplaceTheKeptOnesAtOnce() async throws {
        let client = try openClient()
        try await client.adoptAccess(try Self.nina.wire)
        let admin = AccessSubject(user: "nina@acme.example", team: nil, role: try #require(CRMAccess.defaultRoles.first { $0.name == "admin" }),
                                  teamMembers: [])
        try await client.adoptAccess(admin.wire)
        #expect(try await client.access() == admin)
        try await client.store.perform {
            _ = try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)])
        }
    }
}

/// What a refused write must leave as it was: the records, the dirty set and the sequence.
private struct StoreFingerprint: Equatable, Sendable {
    var records: [RecordState]
    var dirty: Int
    var sequence: Int64

    init(_ store: ReplicaStore) throws {
        records = try store.changes(after: 0, limit: .max).map(\.state)
        dirty = try store.dirtyCount()
        sequence = try store.lastSequence
    }
}

extension RecordState {
    /// The state with `values` written by some other replica: enough for a policy, which reads
    /// values and owners, not dots.
    func updated(_ values: [String: FieldValue]) throws -> RecordState {
        var state = self
        state.write(values, dot: try Dot(replica: ReplicaID("elsewhere"), counter: 1), timestamp: latestTimestamp)
        return state
    }
}
