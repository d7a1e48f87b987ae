import Access
import Foundation
import ReplicaStore
import SyncModel
import SyncProtocol

/// What a device's scope was computed for: when any of it changes (the user's role or its
/// definition, their team, who is in the team), the device pulls again from 0, and records that
/// left its scope are evicted then. `stale` marks a scope that a pull could not bring up to date
/// by itself (more records entered with one they hang off than fit a batch): the next pull is
/// answered `RESYNC_REQUIRED` too.
struct ScopeState: Codable, Equatable {
    var user: String
    var team: String?
    var members: [String]
    var role: Role
    var stale = false
    /// While a pull from 0 is under way: the tenant sequence it brings the device up to. Until
    /// the device's checkpoint reaches it, batches come from the records the user may read
    /// (found through the indexes by owner and by reference), not from every change.
    var catchUpTo: Int64?

    init(_ subject: AccessSubject) {
        user = subject.user
        team = subject.team
        members = subject.teamMembers.sorted()
        role = subject.role
    }

    func sameAccess(as other: ScopeState) -> Bool {
        // catchUpTo and stale are progress, not access.
        user == other.user && team == other.team && members == other.members && role == other.role
    }

    var encoded: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self) }

    static func decoded(_ text: String?) -> ScopeState? {
        text.flatMap { try? JSONDecoder().decode(ScopeState.self, from: Data($0.utf8)) }
    }
}

extension SyncServer {
    /// The next batch of the changes after `after` that the device may read, without the fields
    /// its role may not see, and the evictions of records it holds that left its scope (SPEC 2.9).
    ///
    /// Every change after the checkpoint is looked at once, so an incremental pull costs what
    /// changed since, as an unscoped one does; a record's standing reads the records it hangs off.
    func scopedPull(after: Int64, limit: Int, store: ReplicaStore, device: ReplicaID,
                    policy: AccessPolicy) throws -> Rapport_V1_PullBatch {
        let peer = device.rawValue
        let sequence = try store.lastSequence
        guard after <= sequence else {
            throw SyncError(.resyncRequired, "checkpoint \(after) is ahead of this server's sequence \(sequence): pull from 0")
        }
        let current = ScopeState(policy.subject)
        let previous = ScopeState.decoded(try store.scopeState(of: peer))
        if after > 0, previous.map({ !$0.sameAccess(as: current) || $0.stale }) ?? true {
            throw SyncError(.resyncRequired, "what this device may see changed (role, team or records it depends on): pull again from 0")
        }
        // For each type, the reference fields of other types that hang records off it.
        var children: [String: [(type: String, field: String)]] = [:]
        for (child, fields) in policy.model.parents {
            for field in fields {
                guard let parent = store.schema.types[child]?.rules[field]?.reference else { continue }
                children[parent, default: []].append((child, field))
            }
        }
        var batch = Rapport_V1_PullBatch()
        var evicted: Set<UUID> = []
        var sent: [UUID] = []
        var sentSet: Set<UUID> = []
        func evict(_ state: RecordState, _ reason: String) {
            var eviction = Rapport_V1_Eviction()
            eviction.recordID = Data(state.id.bytes)
            eviction.recordType = state.type
            eviction.reason = reason
            batch.evictions.append(eviction)
            evicted.insert(state.id)
        }
        try store.transaction {
            var state = previous ?? current
            if after == 0 {
                // A pull from 0: whatever the device holds that it may no longer see goes, and
                // so does what it holds of a type whose hidden fields changed (sent again below
                // with the fields its role sees now).
                if let previous {
                    for id in try store.heldRecords(by: peer) {
                        guard let record = try store.record(id) else { continue }
                        let hiddenChanged = previous.role.rights(for: record.type).hiddenFields != policy.subject.role.rights(for: record.type).hiddenFields
                        if try !policy.mayRead(record, lookup: store.record) {
                            evict(record, "no longer visible to \(policy.subject.user) (\(policy.subject.role.name), team \(policy.subject.team ?? "none"))")
                        } else if hiddenChanged {
                            evict(record, "the fields \(policy.subject.role.name)s see changed; it comes again")
                        }
                    }
                }
                state = current
                state.catchUpTo = sequence > 0 ? sequence : nil
                // Held records deleted since: their tombstones, which the catch-up (live
                // records only) would not bring.
                for id in try store.heldRecords(by: peer) where !evicted.contains(id) {
                    if let record = try store.record(id), record.isDeleted, try policy.mayRead(record, lookup: store.record) {
                        batch.records.append(Rapport_V1_Record(stripped(record, policy)))
                        sent.append(id)
                        sentSet.insert(id)
                    }
                }
            }
            /// Sends or evicts one record; when its standing changed for this device, the
            /// records that hang off it changed standing with it although they did not change,
            /// so they are considered too (through the server's index by reference).
            func consider(_ record: RecordState, isChange: Bool, depth: Int = 0) throws {
                guard !sentSet.contains(record.id) else { return }
                let held = try store.isHeld(record.id, by: peer) && !evicted.contains(record.id)
                let visible = try policy.mayRead(record, lookup: store.record)
                if visible && (isChange || !held) && !(record.isDeleted && !held) {
                    batch.records.append(Rapport_V1_Record(stripped(record, policy)))
                    sent.append(record.id)
                    sentSet.insert(record.id)
                } else if !visible && held {
                    evict(record, "now outside what \(policy.subject.user) may see")
                }
                guard visible != held, !record.isDeleted, depth < 3 else { return }
                for (type, field) in children[record.type] ?? [] {
                    for value in Set([record.id.uuidString, record.id.uuidString.lowercased()]) {
                        for child in try store.records(ofType: type, where: field, equals: value) {
                            guard batch.records.count < limit * 2 else { state.stale = true; return }
                            try consider(child, isChange: false, depth: depth + 1)
                        }
                    }
                }
            }
            var last = after
            var scanned = false
            if let target = state.catchUpTo, after < target {
                // Catching up: what the user may read, in sequence order, up to the target.
                let visible = try visibleChanges(in: store, policy: policy, children: children)
                    .filter { $0.sequence > after && $0.sequence <= target && !sentSet.contains($0.state.id) }
                let taken = visible.prefix(max(0, limit - batch.records.count))
                for change in taken {
                    batch.records.append(Rapport_V1_Record(stripped(change.state, policy)))
                    sent.append(change.state.id)
                    sentSet.insert(change.state.id)
                    last = change.sequence
                }
                if taken.count == visible.count {
                    // Caught up: the checkpoint may pass every change up to the target.
                    last = target
                    state.catchUpTo = nil
                }
            }
            scan: while batch.records.count < limit && state.catchUpTo == nil {
                let changes = try store.changes(after: last, limit: max(limit, 256))
                if changes.isEmpty { scanned = true; break }
                for change in changes {
                    last = change.sequence
                    try consider(change.state, isChange: true)
                    if batch.records.count >= limit { break scan }
                }
            }
            try store.noteHeld(Array(evicted), by: peer, held: false)
            try store.noteHeld(sent, by: peer, held: true)
            if state != previous { try store.setScopeState(state.encoded, of: peer) }
            let remaining = scanned ? (records: 0, bytes: 0) : try store.pendingChanges(after: last)
            batch.lastSequence = UInt64(last)
            batch.remainingRecords = UInt64(remaining.records)
            batch.remainingBytes = UInt64(remaining.bytes)
        }
        batch.conflicts = try store.conflicts(lostBy: peer, on: sent).map(Rapport_V1_ConflictReport.init)
        return batch
    }

    /// The live records the user may read now, in sequence order, found from the records they
    /// own or their team owns (the index by owner) and what hangs off those (the index by
    /// reference), plus every record of the types the role reads all of: work in proportion to
    /// the scope, not to the tenant.
    private func visibleChanges(in store: ReplicaStore, policy: AccessPolicy,
                                children: [String: [(type: String, field: String)]]) throws -> [Change] {
        let subject = policy.subject
        let ownerField = policy.model.ownerField
        let allTypes = Set(store.schema.types.keys.filter { subject.role.rights(for: $0).read == .all })
        var candidates: [UUID: Change] = [:]
        for change in try store.liveChanges(ofTypes: allTypes) { candidates[change.state.id] = change }
        var queue: [Change] = []
        let owners = Array(subject.teamMembers)
        for (name, type) in store.schema.types where !allTypes.contains(name) && type.fields[ownerField] != nil {
            for change in try store.indexedChanges(ofType: name, where: ownerField, in: owners) where candidates[change.state.id] == nil {
                candidates[change.state.id] = change
                queue.append(change)
            }
        }
        while let parent = queue.popLast() {
            for (type, field) in children[parent.state.type] ?? [] where !allTypes.contains(type) {
                let id = parent.state.id.uuidString
                for change in try store.indexedChanges(ofType: type, where: field, in: [id, id.lowercased()]) where candidates[change.state.id] == nil {
                    candidates[change.state.id] = change
                    queue.append(change)
                }
            }
        }
        return try candidates.values
            .filter { try policy.mayRead($0.state) { id in try candidates[id]?.state ?? store.record(id) } }
            .sorted { $0.sequence < $1.sequence }
    }

    /// The record as the role may see it: without its hidden fields.
    private func stripped(_ record: RecordState, _ policy: AccessPolicy) -> RecordState {
        let hidden = policy.subject.role.rights(for: record.type).hiddenFields
        guard !hidden.isEmpty, hidden.contains(where: { record.fields[$0] != nil }) else { return record }
        var visible = record
        for field in hidden { visible.fields[field] = nil }
        return visible
    }
}
