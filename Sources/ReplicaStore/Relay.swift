import Foundation
import SyncModel

extension ReplicaStore {
    /// At a replica that relays for others (a branch office, SPEC.md 6.2): upstream refused a
    /// record this store passed on, and `upstream` is upstream's state of it (`nil` when it has
    /// none). Upstream is authoritative, so the writes it refused are taken back here with a
    /// new local write that puts each refused field to upstream's value (or deletes a record
    /// upstream does not have): that write wins everywhere, reaches the device that made the
    /// refused change at its next pull, and the refusal is logged as a `rejected` conflict
    /// lost by that device's write, so the device hears why with the record.
    ///
    /// The refused writes are those of the record that upstream does not have; a conflict is
    /// logged for each of them made by another replica than this store (a device), so that
    /// every device whose write is taken back hears it, and an effect this store ran on the
    /// change takes no device's place (the newest write is logged when all are this store's).
    ///
    /// - Returns: whether the record changed.
    @discardableResult
    public func revertRefused(_ id: UUID, upstream: RecordState?, upTo vector: VersionVector, reason: String) throws -> Bool {
        try write {
            guard let local = try record(id) else { return false }
            func refused(_ dot: Dot) -> Bool { (upstream?.vector[dot.replica] ?? 0) < dot.counter }
            var writes: [(field: String?, side: ConflictSide)] = []
            if refused(local.liveness.dot) {
                writes.append((nil, ConflictSide(value: nil, dot: local.liveness.dot, timestamp: local.liveness.timestamp,
                                                 isDeletion: local.isDeleted)))
            }
            for (name, field) in local.fields {
                if case .register(let register) = field, refused(register.dot) {
                    writes.append((name, ConflictSide(value: register.value, dot: register.dot, timestamp: register.timestamp)))
                }
            }
            let others = writes.filter { $0.side.dot.replica != replicaID }
            let newest = writes.max(by: { $0.side.timestamp < $1.side.timestamp })
            guard let newest else {
                // Nothing here is newer than upstream's state: only stop pushing it.
                try reject(id, upTo: vector, reason: reason)
                return false
            }
            // Every refused write of a device is logged, each lost by its device, so that each
            // device that wrote to the record hears that its write was taken back (the record
            // is refused whole, whoever's write upstream refused).
            for lost in others.isEmpty ? [newest] : others {
                let kept: ConflictSide
                if let upstream {
                    if let field = lost.field, case .register(let theirs)? = upstream.fields[field] {
                        kept = ConflictSide(value: theirs.value, dot: theirs.dot, timestamp: theirs.timestamp)
                    } else {
                        kept = ConflictSide(value: nil, dot: upstream.liveness.dot, timestamp: upstream.liveness.timestamp,
                                            isDeletion: upstream.isDeleted)
                    }
                } else {
                    kept = ConflictSide(value: nil, dot: lost.side.dot, timestamp: lost.side.timestamp, isDeletion: true)
                }
                try log(Conflict(kind: .rejected, recordID: id, recordType: local.type, field: lost.field, winner: kept, loser: lost.side),
                        reason: reason)
            }
            // Put back what upstream holds.
            guard let upstream, !upstream.isDeleted else {
                if !local.isDeleted { _ = try delete(id) } else { try settle(id, upTo: vector) }
                return !local.isDeleted
            }
            var changed = false
            if local.isDeleted {
                _ = try restore(id)
                changed = true
            }
            // Every refused field is written, even to the value it holds: the refused write must
            // leave the state, or upstream finds it there again and refuses the put-back too.
            var values: [String: FieldValue] = [:]
            for write in writes {
                guard let field = write.field else { continue }
                values[field] = if case .register(let register)? = upstream.fields[field] { register.value } else { .null }
            }
            if !values.isEmpty {
                _ = try update(id, values)
                changed = true
            }
            // Nothing to put back (only counters, say): stop pushing the refused state.
            if !changed { try settle(id, upTo: vector) }
            return changed
        }
    }
}
