import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// The undo of an import against random writes made since it: what someone changed, and what a
/// record that stays references, stays (up the chain); everything else the import made goes;
/// and no record left points at one the undo deleted. A failure names its seed, and
/// `RAPPORT_SEED=N` runs that case alone.
@Suite struct ImportUndoProperties {
    @Test(.blocking) func anUndoKeepsWhatStaysReferencedAndLeavesNoReferenceToWhatItDeleted() throws {
        let seeds = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init).map { [$0] } ?? Array(1...40)
        // With the sequence a journal notes at its last batch, and as a journal of an earlier
        // version, without it.
        for seed in seeds { try Self.run(seed: seed, notedSequence: true); try Self.run(seed: seed, notedSequence: false) }
    }

    static func run(seed: UInt64, notedSequence: Bool) throws {
        var rng = SeededGenerator(seed: seed)
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        let store = f.store
        let own = try (0..<3).map { try f.account("Own \($0)") }

        // The import: accounts, some under an earlier one or one of the tenant's own, and
        // contacts and opportunities on them.
        var made: [UUID] = [], accounts: [UUID] = [], others: [UUID] = []
        for i in 0..<Int.random(in: 3...10, using: &rng) {
            var values: [String: FieldValue] = ["name": .text("Imported \(i)")]
            if Bool.random(using: &rng), let parent = (accounts + own).randomElement(using: &rng) { values["parent"] = .text(parent.uuidString) }
            accounts.append(try store.create("account", values).id)
        }
        for i in 0..<Int.random(in: 0...8, using: &rng) {
            let account = accounts.randomElement(using: &rng)!.uuidString
            others.append(Bool.random(using: &rng)
                ? try store.create("contact", ["last_name": .text("C\(i)"), "account": .text(account)]).id
                : try store.create("opportunity", ["name": .text("D\(i)"), "account": .text(account), "stage": .text("prospecting")]).id)
        }
        made = accounts + others
        // What the store's effects made from them (stage history) is the import's too.
        let madeSet = Set(made)
        made += try store.records(ofType: "stage_change").map(\.id).filter { !madeSet.contains($0) }
        var journal = ImportJournal(id: "imp-\(seed)", tenant: "acme", detail: "seed \(seed)", created: made)
        journal.lastStamp = try store.lastTimestamp.rawValue
        if notedSequence { journal.lastSequence = try store.lastSequence }

        // Since: someone's writes.
        var changed = Set<UUID>()
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            let account = accounts.randomElement(using: &rng)!
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                _ = try store.create("contact", ["last_name": .text("Later"), "account": .text(account.uuidString)])
            case 1:
                let record = (accounts + others).randomElement(using: &rng)!
                if let state = try store.record(record), !state.isDeleted {
                    let field = ["account": "industry", "contact": "title", "opportunity": "next_step"][state.type]!
                    try store.update(record, [field: .text("edited")])
                    changed.insert(record)
                }
            case 2:
                try store.update(own.randomElement(using: &rng)!, ["parent": .text(account.uuidString)])
            default:
                if let record = others.randomElement(using: &rng), try store.record(record)?.isDeleted == false {
                    try store.delete(record)
                    changed.remove(record)
                }
            }
        }
        let liveBefore = Set(try made.filter { try store.record($0)?.isDeleted == false })
        let report = try journal.undo(store, batchSize: Int.random(in: 1...4, using: &rng))

        // Every live record's references, and who references what.
        var referrers: [UUID: [UUID]] = [:]
        for type in store.schema.types.keys {
            let fields = store.schema.types[type]!.rules.filter { $0.value.reference != nil }.keys
            for record in try store.records(ofType: type) {
                for field in fields {
                    guard case .text(let text)? = record.fields[field]?.value, let target = UUID(uuidString: text) else { continue }
                    referrers[target, default: []].append(record.id)
                    if liveBefore.contains(target) {
                        #expect(try store.record(target)?.isDeleted == false,
                                "seed \(seed): \(type) \(record.id).\(field) points at \(target), which the undo deleted")
                    }
                }
            }
        }
        let kept = Dictionary(report.kept.filter { $0.field == nil }.map { ($0.record, $0.reason) }, uniquingKeysWith: { a, _ in a })
        for record in liveBefore {
            let live = try store.record(record)?.isDeleted == false
            #expect(live == (kept[record] != nil), "seed \(seed): \(record) live \(live), kept: \(kept[record] ?? "no")")
            guard live else { continue }
            // Kept only for a reason: changed since, or referenced by a record that stays.
            #expect(changed.contains(record) || !(referrers[record] ?? []).isEmpty,
                    "seed \(seed): \(record) kept without a reason to: \(kept[record] ?? "")")
        }
        #expect(report.deleted == liveBefore.count - kept.count, "seed \(seed)")
    }
}
