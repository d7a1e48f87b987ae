import Access
import CRM
import Foundation
import PropertyBased
import RapportClient
import RapportServer
import Registry
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// The scope invariants through a real server on its registry: random users in random teams
/// with random roles, random reassignments, team moves and role changes, interleaved with
/// random edits on devices that go offline and sync at random. After every sync, the device
/// holds exactly the live records its user may read now, with what they hang off, and no field
/// its role hides; at the
/// end, no write was lost: each is in the server's state, overwritten by a later accepted write,
/// or in a conflict log (refused with its reason, or lost to a concurrent one).
///
/// `RAPPORT_SEED=<seed> swift test --filter ScopeProperties` replays one case;
/// `RAPPORT_SCOPE_CASES` sets how many run (12 by default: each starts a server).
@Suite(.serialized, .shrinking(false), .timeLimit(.minutes(10))) struct ScopeProperties {
    @Test func devicesHoldExactlyTheirScopeAndNoWriteIsLost() async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try await ScopeScenario(seed: seed).run()
            return
        }
        let count = ProcessInfo.processInfo.environment["RAPPORT_SCOPE_CASES"].flatMap(Int.init) ?? 12
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<count { try await ScopeScenario(seed: UInt64.random(in: 0 ... .max, using: &rng)).run() }
    }
}

final class ScopeScenario {
    struct Write {
        var writer: Int
        var record: UUID
        var field: String
        var value: String
    }

    let seed: UInt64
    var rng: SeededGenerator
    let users = ["ana", "ben", "cai", "dee"].map { "\($0)@acme.example" }
    let teams: [String?] = ["north", "south", nil]
    var writes: [Write] = []
    var records: [UUID] = []

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
    }

    func run() async throws {
        let server = try await RegistryServer(tenants: ["acme"], access: .init(ownership: CRMAccess.ownership, defaultRoles: CRMAccess.defaultRoles))
        do {
            try await run(on: server)
        } catch {
            await server.stop()
            throw ScenarioFailure(seed: seed, error: error)
        }
        await server.stop()
    }

    struct ScenarioFailure: Error, CustomStringConvertible {
        var seed: UInt64
        var error: any Error
        var description: String { "seed \(seed): \(error)" }
    }

    func run(on server: RegistryServer) async throws {
        try server.admin { registry in
            for user in users {
                _ = try registry.addUser(tenant: "acme", email: user, name: user, role: Bool.random(using: &rng) ? .rep : .manager,
                                         team: teams.randomElement(using: &rng)!)
            }
        }
        // Device 0 is the admin's (the owner of the tenant); one device per user after it.
        var devices = [try await server.enrolledDevice("admin")]
        for (index, user) in users.enumerated() { devices.append(try await server.enrolledDevice("d\(index)", user: user)) }
        let admin = devices[0]
        let serverStore = try ReplicaStore(path: server.data.path + "/tenants/acme.sqlite", options: .crm())
        defer { serverStore.close() }

        try admin.local { store in
            try store.transaction {
                for i in 0..<6 {
                    let id = try store.create("account", ["name": .text("account \(i)"), "owner": .text(randomOwner()),
                                                          "annual_revenue": .real(Double(i) * 1000)]).id
                    records.append(id)
                }
                for i in 0..<8 {
                    var values: [String: FieldValue] = ["last_name": .text("contact \(i)"), "account": .text(records[i % 6].uuidString)]
                    if Bool.random(using: &rng) { values["owner"] = .text(randomOwner()) }
                    records.append(try store.create("contact", values).id)
                }
            }
        }
        try await admin.sync()

        for _ in 0..<Int.random(in: 20...40, using: &rng) {
            let roll = Int.random(in: 0..<100, using: &rng)
            switch roll {
            case 0..<12:  // the admin reassigns a record
                let id = records.randomElement(using: &rng)!
                try edit(admin, 0, id, "owner", randomOwner())
                try await admin.sync()
            case 12..<18:  // a user moves to another team
                let (user, team) = (users.randomElement(using: &rng)!, teams.randomElement(using: &rng)!)
                try server.admin { try $0.setTeam(tenant: "acme", email: user, team) }
            case 18..<24:  // a user's role changes
                let user = users.randomElement(using: &rng)!
                try server.admin { try $0.setRole(tenant: "acme", email: user, Bool.random(using: &rng) ? .rep : .manager) }
            case 24..<60:  // a device edits what it holds, offline; its own check may refuse it at once
                let index = Int.random(in: 1..<devices.count, using: &rng)
                let held = try devices[index].local { store in try records.filter { try store.record($0).map { !$0.isDeleted } ?? false } }
                guard let id = held.randomElement(using: &rng) else { continue }
                let field = ["phone", "title", "industry"].randomElement(using: &rng)!
                try edit(devices[index], index, id, field, "v\(Int.random(in: 0..<1_000_000, using: &rng))")
            default:  // a device syncs, and must then hold exactly its scope
                let index = Int.random(in: 0..<devices.count, using: &rng)
                try await devices[index].sync()
                try checkScope(of: devices[index], user: index == 0 ? "owner@acme.example" : users[index - 1], server: server, serverStore: serverStore)
            }
        }
        // Everyone syncs twice (the second brings what the first pushed), then the checks.
        for _ in 0..<2 { for device in devices { try await device.sync() } }
        for (index, device) in devices.enumerated() {
            try checkScope(of: device, user: index == 0 ? "owner@acme.example" : users[index - 1], server: server, serverStore: serverStore)
        }
        try checkNothingLost(devices, serverStore: serverStore)
    }

    func randomOwner() -> String { users.randomElement(using: &rng)! }

    /// A local write whose field fits the record's type; refused locally by rights or not.
    func edit(_ device: RapportClient, _ index: Int, _ id: UUID, _ field: String, _ value: String) throws {
        do {
            try device.local { store in
                guard let record = try store.record(id), !record.isDeleted else { return }
                let name = record.type == "contact" && field == "industry" ? "department" : record.type == "account" && field == "title" ? "region" : field
                let text = name == "phone" ? "+44 20 7946 \(String(format: "%04d", Int(value.dropFirst())! % 10_000))" : value
                _ = try store.update(id, [name: .text(text)])
                writes.append(Write(writer: index, record: id, field: name, value: text))
            }
        } catch ReplicaStoreError.accessDenied {
            // Refused at once on the device: never written, so nothing to lose.
        }
    }

    func checkScope(of device: RapportClient, user: String, server: RegistryServer, serverStore: ReplicaStore) throws {
        let snapshot = try server.admin { try $0.accessSnapshot() }
        guard let subject = snapshot.subject(tenant: "acme", user: user, defaults: CRMAccess.defaultRoles) else {
            Issue.record("seed \(seed): no subject for \(user)")
            return
        }
        let policy = AccessPolicy(model: CRMAccess.ownership, subject: subject)
        // What the user may read, and what that hangs off (for it to be valid on the device).
        var expected: Set<UUID> = []
        for id in records {
            guard let record = try serverStore.record(id), !record.isDeleted, try policy.mayRead(record, lookup: serverStore.record) else { continue }
            expected.insert(id)
            var next = policy.parent(of: record)
            while let parent = next, let state = try serverStore.record(parent), !state.isDeleted {
                expected.insert(parent)
                next = policy.parent(of: state)
            }
        }
        let held = try device.local { store in
            try records.compactMap { try store.record($0) }.filter { !$0.isDeleted }
        }
        let heldIDs = Set(held.map(\.id))
        func describe(_ ids: Set<UUID>) throws -> String {
            try ids.map { id in
                let record = try serverStore.record(id)
                return "\(record?.type ?? "?") owner \(record?.values["owner"].map { "\($0)" } ?? "none") parent \(record.flatMap { policy.parent(of: $0) }?.uuidString.prefix(8) ?? "none") id \(id.uuidString.prefix(8))"
            }.joined(separator: "; ")
        }
        let (missing, extra) = (try describe(expected.subtracting(heldIDs)), try describe(heldIDs.subtracting(expected)))
        #expect(heldIDs == expected, """
            seed \(seed): \(user) (\(subject.role.name), \(subject.team ?? "no team")) holds \(held.count) records, may read \(expected.count); \
            missing: \(missing); extra: \(extra)
            """)
        for record in held {
            let hidden = subject.role.rights(for: record.type).hiddenFields
            #expect(hidden.allSatisfy { record.fields[$0] == nil }, "seed \(seed): \(user) holds a hidden field of \(record.type) \(record.id)")
        }
    }

    func checkNothingLost(_ devices: [RapportClient], serverStore: ReplicaStore) throws {
        var logged: [Int: [ConflictEntry]] = [:]
        for (index, device) in devices.enumerated() { logged[index] = try device.local { try $0.conflicts(status: nil) } }
        let serverConflicts = try serverStore.conflicts(status: nil)
        for (position, write) in writes.enumerated() {
            let current = try serverStore.record(write.record)?.values[write.field]
            if current == .text(write.value) { continue }
            let refused = logged[write.writer]?.contains { $0.conflict.recordID == write.record && $0.conflict.kind == .rejected } ?? false
            let lostToConcurrent = (logged.values.joined().map { $0 } + serverConflicts).contains {
                $0.conflict.recordID == write.record && $0.conflict.field == write.field && $0.conflict.loser.value == .text(write.value)
            }
            let overwritten = writes[(position + 1)...].contains { $0.record == write.record && $0.field == write.field }
            #expect(refused || lostToConcurrent || overwritten,
                    "seed \(seed): device \(write.writer)'s write of \(write.field) = \(write.value) on \(write.record) is neither in the state nor in a conflict log")
        }
    }
}
