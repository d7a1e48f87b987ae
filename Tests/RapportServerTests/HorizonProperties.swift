import CRM
import Foundation
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// Purges interleaved with random edits and syncs (SPEC.md 1.8), through a real server on
/// loopback TLS and `RapportClient` devices: devices create, edit, delete and restore contacts,
/// sync at random or stay offline for many steps, while the server's store is purged through a
/// handle of its own (as `rapportctl retention run` does) with a 1 ms tombstone horizon, so
/// every purge takes every tombstone older than the previous one and devices resync often. The
/// devices learn the horizon and purge their own tombstones too. After everyone syncs: every
/// device holds exactly the server's live records, state for state, and no write was lost:
/// each is in the final state, was overwritten or deleted by a replica that had seen it, or is
/// in a conflict log; a live record that was deleted carries a write its deleter had not seen.
///
/// `RAPPORT_SEED=<seed> swift test --filter HorizonProperties` replays one case;
/// `RAPPORT_HORIZON_CASES` sets how many run (10 by default).
@Suite(.serialized, .timeLimit(.minutes(10))) struct HorizonProperties {
    @Test func purgesInterleavedWithEditsAndSyncsConvergeWithNothingLost() async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try await HorizonScenario(seed: seed).run()
            return
        }
        let count = ProcessInfo.processInfo.environment["RAPPORT_HORIZON_CASES"].flatMap(Int.init) ?? 10
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<count { try await HorizonScenario(seed: UInt64.random(in: 0 ... .max, using: &rng)).run() }
    }
}

final class HorizonScenario {
    /// A field write or a delete, with the dot it took and the record's vector before it.
    struct Write {
        var record: UUID
        var field: String?  // nil: a delete
        var dot: Dot
        var before: VersionVector
    }

    let seed: UInt64
    var rng: SeededGenerator
    var writes: [Write] = []
    /// What each step did, printed with a failure under `RAPPORT_HORIZON_TRACE=1`.
    var trace: [String] = []
    let policy = RetentionPolicy(tombstoneHorizon: 1, conflictHorizon: RetentionPolicy.day)

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
    }

    struct Failure: Error, CustomStringConvertible {
        var seed: UInt64
        var error: any Error
        var description: String { "seed \(seed) (RAPPORT_SEED=\(seed) swift test --filter HorizonProperties): \(error)" }
    }

    func run() async throws {
        let fixture = try await ServerFixture(retention: policy)
        do {
            try await run(on: fixture)
        } catch {
            await fixture.stop()
            throw Failure(seed: seed, error: error)
        }
        await fixture.stop()
    }

    func run(on fixture: ServerFixture) async throws {
        let devices = try (0..<3).map { try fixture.device("device-\($0)") }
        let purger = try fixture.tenantStore()
        defer { purger.close() }
        var clock: Int64 = 1_000
        for _ in 0..<70 {
            let device = devices[Int.random(in: 0..<devices.count, using: &rng)]
            let name = device.store.replicaID
            switch Int.random(in: 0..<10, using: &rng) {
            case 0...1:
                try device.local { store in
                    let id = try store.create("contact", ["last_name": .text("L\(Int.random(in: 0..<1000, using: &rng))")]).id
                    trace.append("\(name) creates \(id)")
                }
            case 2...3:
                try edit(device)
            case 4:
                try remove(device)
            case 5:
                try device.local { store in
                    let deleted = try store.changes(after: 0, limit: .max).filter { $0.state.isDeleted }
                    guard let pick = deleted.randomElement(using: &rng) else { return }
                    _ = try store.restore(pick.state.id)
                    trace.append("\(name) restores \(pick.state.id)")
                }
            case 6...7:
                let report = try await device.sync()
                trace.append("\(name) syncs: pushed \(report.pushed) rejected \(report.rejected) pulled \(report.pulled) dropped \(report.dropped) checkpoint \(report.checkpoint)")
            default:
                // Past the previous mark: every tombstone older than it goes.
                clock += 1_000
                let purge = try purger.purgeExpired(policy, now: clock)
                trace.append("server purges \(purge.tombstonesPurged), through \(purge.purgedThrough)")
            }
        }
        // Everyone syncs until nothing moves: twice round, then once more to take the last pushes.
        for _ in 0..<3 { for device in devices { try await finalSync(device) } }
        try purger.purgeExpired(policy, now: clock + 1_000)
        for device in devices { try await finalSync(device) }

        if ProcessInfo.processInfo.environment["RAPPORT_HORIZON_TRACE"] != nil { print(trace.joined(separator: "\n")) }
        let server = try live(purger)
        for device in devices {
            let held = try device.local { try live($0) }
            // A record the server refused keeps the device's value beside a `rejected` conflict
            // until a person acts (ReplicaStore.reject): it is accounted for by checkNothingLost,
            // not expected to equal the server's. After a purge this includes a restore or edit
            // that carries the purged delete's dot, once another device brought the record back
            // to the server first (SPEC 6.6).
            let refused = Set(try device.local { try $0.conflicts(status: .open) }.filter { $0.conflict.kind == .rejected }.map(\.conflict.recordID))
            let differing = Set(held.keys).union(server.keys).filter { held[$0] != server[$0] && !refused.contains($0) }
            let detail = try differing.map { id in
                "\(id): device \(try device.local { try $0.record(id) }.map { "\($0)" } ?? "none"), server \(try purger.record(id).map { "\($0)" } ?? "none")"
            }
            #expect(differing.isEmpty, "seed \(seed): \(device.store.replicaID) holds \(held.count) live records, the server \(server.count); differing: \(detail)")
            #expect(try device.local { try $0.dirtyCount() } == 0, "seed \(seed): nothing left to push")
        }
        try checkNothingLost(server: purger, devices: devices)
    }

    func finalSync(_ device: RapportClient) async throws {
        let report = try await device.sync()
        trace.append("\(device.store.replicaID) syncs at the end: pushed \(report.pushed) rejected \(report.rejected) pulled \(report.pulled) dropped \(report.dropped) checkpoint \(report.checkpoint)")
    }

    func live(_ store: ReplicaStore) throws -> [UUID: RecordState] {
        Dictionary(uniqueKeysWithValues: try store.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }.map { ($0.state.id, $0.state) })
    }

    func edit(_ device: RapportClient) throws {
        try device.local { store in
            let live = try store.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }
            guard let pick = live.randomElement(using: &rng) else { return }
            let field = ["first_name", "department"].randomElement(using: &rng)!
            let after = try store.update(pick.state.id, [field: .text("v\(Int.random(in: 0..<1_000_000, using: &rng))")])
            trace.append("\(store.replicaID) edits \(field) of \(pick.state.id)")
            guard case .register(let register)? = after.fields[field] else { return }
            writes.append(Write(record: pick.state.id, field: field, dot: register.dot, before: pick.state.vector))
        }
    }

    func remove(_ device: RapportClient) throws {
        try device.local { store in
            let live = try store.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }
            guard let pick = live.randomElement(using: &rng) else { return }
            let after = try store.delete(pick.state.id)
            trace.append("\(store.replicaID) deletes \(pick.state.id)")
            writes.append(Write(record: pick.state.id, field: nil, dot: after.liveness.dot, before: pick.state.vector))
        }
    }

    /// Every write is in the server's final state, overwritten or deleted by a write whose
    /// replica had seen it, or in a conflict log; a deleted record that is live again carries a
    /// write its deleter had not seen.
    func checkNothingLost(server: ReplicaStore, devices: [RapportClient]) throws {
        var logged: Set<Dot> = []
        for entry in try server.conflicts(status: nil) { logged.insert(entry.conflict.loser.dot) }
        for device in devices {
            for entry in try device.local({ try $0.conflicts(status: nil) }) { logged.insert(entry.conflict.loser.dot) }
        }
        let byDot = Dictionary(writes.map { ($0.dot, $0) }, uniquingKeysWith: { a, _ in a })
        func seen(_ dot: Dot, by later: Dot?) -> Bool {
            guard let later, let write = byDot[later] else { return false }
            return write.before.contains(dot)
        }
        let deletes = writes.filter { $0.field == nil }
        /// In the state, in a log, deleted by a replica that had seen it, or overwritten by a
        /// write that had seen it and is itself accounted for.
        func accounted(_ write: Write, state: RecordState?) -> Bool {
            if logged.contains(write.dot) { return true }
            if deletes.contains(where: { $0.record == write.record && $0.before.contains(write.dot) }) { return true }
            if let field = write.field, let state, !state.isDeleted, case .register(let register)? = state.fields[field],
               register.dot == write.dot || seen(write.dot, by: register.dot) { return true }
            return writes.contains { later in
                later.record == write.record && later.field == write.field && later.dot != write.dot
                    && later.before.contains(write.dot) && accounted(later, state: state)
            }
        }
        for write in writes {
            let state = try server.record(write.record)
            if write.field != nil {
                let onIt = try server.conflicts(status: nil, record: write.record).map { "\($0.conflict.kind) \($0.conflict.field ?? "") lost \($0.conflict.loser.dot)" }
                #expect(accounted(write, state: state),
                        "seed \(seed): the write \(write.dot) to \(write.field!) of \(write.record) is lost; the server holds \(state.map { "\($0)" } ?? "nothing"); logged on it: \(onIt)")
            } else if let state, !state.isDeleted, !logged.contains(write.dot) {
                // Live again: by a restore or a write the deleter had not seen, or by a restore that saw it.
                #expect(!write.before.covers(state.vector) , "seed \(seed): the delete \(write.dot) of \(write.record) is lost")
            }
        }
    }
}
