import Foundation
import SQLite
import SyncModel

/// The order a device pushes its dirty records in.
///
/// The server applies a push batch in one transaction, record by record, and refuses a record
/// that references one it does not have (`RecordRules`). Pushing in change order is not enough:
/// an account created, then referenced by a new contact, then edited, changed last. So a batch
/// puts every dirty record a record references before it, and keeps the records one local
/// transaction wrote (a lead conversion, a merge) in one batch, so they are applied together.
extension ReplicaStore {
    /// Dirty records to push next: at most `limit`, referenced records before the records that
    /// reference them, and the records of one local transaction together unless they alone
    /// exceed `limit`. A batch holds at least the oldest dirty record or one it references, so
    /// repeated batches make progress.
    public func pushBatch(limit: Int) throws -> [RecordState] {
        guard limit > 0 else { return [] }
        var batch: [RecordState] = []
        var taken = Set<UUID>()
        var oversized = Set<Int64>()  // transactions found to exceed a batch, not looked up again
        var after: Int64 = 0
        while batch.count < limit {
            let rows = try db.fetch("SELECT seq, txn, id, type, vector, state FROM records WHERE \(tenant.and)dirty = 1 AND seq > ? ORDER BY seq LIMIT ?",
                                    [after, Int64(limit)]) { (try $0.int64(0), $0.isNull(1) ? nil : try $0.int64(1), try decodeRow($0, from: 2)) }
            guard let last = rows.last else { break }
            after = last.0
            for (_, txn, state) in rows where !taken.contains(state.id) {
                // A transaction larger than a batch is split anyway: then record by record.
                var group = [state]
                if let txn, !oversized.contains(txn) {
                    let members = try dirtyRecords(ofTransaction: txn, limit: limit + 1)
                    if members.count > limit { oversized.insert(txn) } else { group = members }
                }
                var ordered: [RecordState] = []
                for member in group { try appendWithReferences(member, to: &ordered, visited: &taken) }
                if !batch.isEmpty && batch.count + ordered.count > limit { return batch }
                batch += ordered.prefix(limit - batch.count)
                if batch.count >= limit { return batch }
            }
        }
        return batch
    }

    private func dirtyRecords(ofTransaction txn: Int64, limit: Int) throws -> [RecordState] {
        try db.fetch("SELECT id, type, vector, state FROM records WHERE \(tenant.and)dirty = 1 AND txn = ? ORDER BY seq LIMIT ?", [txn, Int64(limit)]) {
            try decodeRow($0)
        }
    }

    /// Appends `state` after the dirty records it references (depth first; a cycle is cut where
    /// it closes, and the server then refuses the record whose target it has not seen yet).
    private func appendWithReferences(_ state: RecordState, to ordered: inout [RecordState], visited: inout Set<UUID>) throws {
        guard visited.insert(state.id).inserted else { return }
        let rules = schema.types[state.type]?.rules ?? [:]
        for (field, rule) in rules where rule.reference != nil {
            guard case .text(let text)? = state.fields[field]?.value, let target = UUID(text: text),
                  !visited.contains(target), let (stored, loaded) = try load(target, decodeState: true), stored.isDirty,
                  let referenced = loaded else { continue }
            try appendWithReferences(referenced, to: &ordered, visited: &visited)
        }
        ordered.append(state)
    }
}
