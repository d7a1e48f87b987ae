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
    /// The device was given every record unscoped (its user saw everything), so which it
    /// holds was not written down: should its access narrow, any record may be one to evict.
    var everything = false
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
        // catchUpTo, stale and everything are progress, not access.
        user == other.user && team == other.team && members == other.members && role == other.role
    }

    var encoded: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self) }

    static func decoded(_ text: String?) -> ScopeState? {
        text.flatMap { try? JSONDecoder().decode(ScopeState.self, from: Data($0.utf8)) }
    }
}

extension SyncServer {
    /// The scope state stored for `peer`, read from its JSON only when it changed since the
    /// peer's last pull: every pull of a device under rights compares its access with it, and
    /// reading the JSON (the role's rights on every type) was a tenth of the scoped pulls' time in
    /// `rapport-bench scopes`.
    func storedScopeState(of peer: String, in store: ReplicaStore) throws -> ScopeState? {
        guard let text = try store.scopeState(of: peer) else { return nil }
        if let cached = scopeStates.withLock({ $0[peer] }), cached.text == text { return cached.state }
        guard let state = ScopeState.decoded(text) else { return nil }
        scopeStates.withLock { cache in
            if cache.count >= 4_096 { cache.removeAll() }
            cache[peer] = (text, state)
        }
        return state
    }

    /// The next batch of the changes after `after` that the device may read, without the fields
    /// its role may not see, and the evictions of records it holds that left its scope (SPEC 2.9).
    ///
    /// Every change after the checkpoint is looked at once, so an incremental pull costs what
    /// changed since, as an unscoped one does; a record's standing reads the records it hangs off.
    ///
    /// Returns `nil` when the user sees every record of every type with every field (an admin):
    /// the caller then sends the changes as they are, at the cost of an unscoped pull.
    func scopedPull(after: Int64, limit: Int, store: ReplicaStore, device: ReplicaID,
                    policy: AccessPolicy, relays: Bool = false) throws -> Rapport_V1_PullBatch? {
        let peer = device.rawValue
        let sequence = try store.lastSequence
        guard after <= sequence else {
            throw SyncError(.resyncRequired, "checkpoint \(after) is ahead of this server's sequence \(sequence): pull from 0")
        }
        let current = ScopeState(policy.subject)
        let previous = try storedScopeState(of: peer, in: store)
        if after > 0, previous.map({ !$0.sameAccess(as: current) || $0.stale }) ?? true {
            throw SyncError(.resyncRequired, "what this device may see changed (role, team or records it depends on): pull again from 0")
        }
        let seesEverything = store.schema.types.keys.allSatisfy { type in
            let rights = policy.subject.role.rights(for: type)
            return rights.read == .all && rights.hiddenFields.isEmpty
        }
        if seesEverything {
            var state = current
            state.everything = true
            if state != previous { try store.setScopeState(state.encoded, of: peer) }
            catchUps.withLock { $0[peer] = nil }
            return nil
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
        func evict(_ state: (id: UUID, type: String), _ reason: String) {
            guard !evicted.contains(state.id) else { return }
            var eviction = Rapport_V1_Eviction()
            eviction.recordID = Data(state.id.bytes)
            eviction.recordType = state.type
            eviction.reason = reason
            batch.evictions.append(eviction)
            evicted.insert(state.id)
        }
        try store.transaction {
            var state = previous ?? current
            func send(_ record: RecordState) {
                batch.records.append(Rapport_V1_Record(stripped(record, policy)))
                sent.append(record.id)
                sentSet.insert(record.id)
            }
            func holds(_ id: UUID) throws -> Bool {
                if sentSet.contains(id) { return true }
                return try store.isHeld(id, by: peer) && !evicted.contains(id)
            }
            /// Whether a record the device holds or is sent hangs off `record`, which must then
            /// stay on the device for it to be valid there (an account of a visible contact).
            func isNeeded(_ record: RecordState) throws -> Bool {
                for child in try hangingOff(record.id, type: record.type, in: store, children: children)
                where policy.parent(of: child.state) == record.id {
                    if try holds(child.state.id) { return true }
                }
                return false
            }
            /// Sends what `record` hangs off, up the chain, that the device does not hold yet.
            func sendDependencies(of record: RecordState) throws {
                var next = policy.parent(of: record)
                for _ in 0..<4 {
                    guard let id = next, !(try holds(id)), let parent = try store.record(id), !parent.isDeleted else { return }
                    send(parent)
                    next = policy.parent(of: parent)
                }
            }
            /// Takes `record` off the device, and then what it hung off if nothing else needs it.
            func evictWithDependencies(_ record: RecordState, _ reason: String) throws {
                evict((record.id, record.type), reason)
                var next = policy.parent(of: record)
                for _ in 0..<4 {
                    guard let id = next, try store.isHeld(id, by: peer), !evicted.contains(id), !sentSet.contains(id),
                          let parent = try store.record(id), try !policy.mayRead(parent, lookup: store.record),
                          try !isNeeded(parent) else { return }
                    evict((parent.id, parent.type), "no longer needed by what \(policy.subject.user) may see")
                    next = policy.parent(of: parent)
                }
            }
            // What the branch's own upstream took away (a branch office's store): it is gone from
            // here, so no change would show this device that it must go.
            for queued in try store.takePeerEvictions(for: peer) {
                evict((queued.id, queued.type), queued.reason)
            }
            var catchUp: [Change] = []
            if after == 0 {
                // A pull from 0: what the device may see now (with what that hangs off), and
                // whatever it holds beyond that goes, as does what it holds of a type whose
                // hidden fields changed (sent again with the fields its role sees now).
                catchUp = try visibleChanges(in: store, policy: policy, children: children)
                let keep = Set(catchUp.map(\.state.id))
                catchUps.withLock { $0[peer] = catchUp.map { ($0.sequence, $0.state.id) } }
                if let previous {
                    // A device that was given everything may hold any record.
                    let mayHold = previous.everything ? try store.recordIDs().map(\.id) : try store.heldRecords(by: peer)
                    for id in mayHold {
                        guard let record = try store.record(id) else { continue }
                        let hiddenChanged = previous.role.rights(for: record.type).hiddenFields != policy.subject.role.rights(for: record.type).hiddenFields
                        if !keep.contains(id) && !record.isDeleted {
                            evict((record.id, record.type), "no longer visible to \(policy.subject.user) (\(policy.subject.role.name), team \(policy.subject.team ?? "none"))")
                        } else if previous.everything && !keep.contains(id) {
                            evict((record.id, record.type), "no longer visible to \(policy.subject.user)")
                        } else if hiddenChanged {
                            evict((record.id, record.type), "the fields \(policy.subject.role.name)s see changed; it comes again")
                        } else if record.isDeleted, try policy.mayRead(record, lookup: store.record) {
                            // Deleted since it was sent: its tombstone, which the catch-up
                            // (live records only) would not bring.
                            send(record)
                        }
                    }
                }
                state = current
                state.catchUpTo = sequence > 0 ? sequence : nil
            }
            /// Sends or evicts one record; when its standing changed for this device, the
            /// records that hang off it changed standing with it although they did not change,
            /// so they are considered too (through the server's index by reference).
            /// The records looked at in this batch, and whether as a change. A record looked at
            /// first as what hangs off a changed record (and not sent then, since the device
            /// holds it) is looked at again when its own change comes later in the batch.
            var considered: [UUID: Bool] = [:]
            func consider(_ record: RecordState, isChange: Bool, depth: Int = 0) throws {
                guard !evicted.contains(record.id) else { return }
                if let asChange = considered[record.id], asChange || !isChange { return }
                considered[record.id] = isChange
                // Held before this batch: a record sent in it already, as what another hangs
                // off, may still have become visible now and bring what hangs off it.
                let held = try store.isHeld(record.id, by: peer)
                let visible = try policy.mayRead(record, lookup: store.record)
                if visible && (isChange || !held) && !(record.isDeleted && !held) && !sentSet.contains(record.id) {
                    send(record)
                    try sendDependencies(of: record)
                }
                // Before deciding about a record the device may no longer see: what hangs off
                // it may go first, and then nothing needs it any more. A record that changed and
                // is visible may have been held only as what another hangs off: what hangs off
                // it may have become visible with it. A deletion alone changes nothing for what
                // hangs off (rights read through deleted records), but a tombstone whose own
                // standing changed (given away and deleted since the last pull) takes it along.
                if visible != held || (visible && isChange && !record.isDeleted), depth < 3 {
                    for child in try hangingOff(record.id, type: record.type, in: store, children: children) {
                        guard batch.records.count < limit * 2 else { state.stale = true; return }
                        try consider(child.state, isChange: false, depth: depth + 1)
                    }
                }
                if !visible && held {
                    if try isNeeded(record) {
                        if isChange && !sentSet.contains(record.id) { send(record) }  // a dependency that changed
                    } else {
                        try evictWithDependencies(record, "now outside what \(policy.subject.user) may see")
                    }
                }
            }
            var last = after
            var scanned = false
            if let target = state.catchUpTo, after < target {
                // Catching up: what the user may read, in sequence order, up to the target.
                // What it was when the pull from 0 began, kept by this server; recomputed after
                // a restart. A record that changed since (its sequence past the target) comes
                // with the changes after the target.
                var list = catchUps.withLock { $0[peer] }
                if list == nil {
                    list = try visibleChanges(in: store, policy: policy, children: children).map { ($0.sequence, $0.state.id) }
                    catchUps.withLock { $0[peer] = list }
                }
                let pending = list!.drop { $0.sequence <= after }.prefix { $0.sequence <= target }
                var taken = 0
                for (sequence, id) in pending {
                    guard batch.records.count < limit else { break }
                    taken += 1
                    last = sequence
                    guard !sentSet.contains(id), let change = try store.change(of: id), change.sequence <= target else { continue }
                    send(change.state)
                }
                if taken == pending.count {
                    // Caught up: the checkpoint may pass every change up to the target.
                    last = target
                    state.catchUpTo = nil
                    catchUps.withLock { $0[peer] = nil }
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
            // Read to the end: the checkpoint may pass a sequence no record holds any more (SPEC 1.8).
            if scanned { last = max(last, sequence) }
            let remaining = scanned ? (records: 0, bytes: 0) : try store.pendingChanges(after: last)
            batch.lastSequence = UInt64(last)
            batch.remainingRecords = UInt64(remaining.records)
            batch.remainingBytes = UInt64(remaining.bytes)
        }
        // And those on records that leave the device: a write of its that upstream refused (a
        // branch relaying it, SPEC 6.2) is news for its log even when the record goes, as it is
        // when the device's own push is refused. The winning value, which its user may no
        // longer read, is left out. A branch gets every conflict on them, whoever's write lost.
        let leaving = Array(evicted.subtracting(sent))
        func conflicts(on ids: [UUID]) throws -> [Conflict] {
            try relays ? store.conflicts(on: ids) : store.conflicts(lostBy: peer, on: ids)
        }
        let lost = try conflicts(on: sent) + conflicts(on: leaving).map { conflict in
            var conflict = conflict
            conflict.winner.value = nil
            return conflict
        }
        batch.conflicts = lost.map(Rapport_V1_ConflictReport.init)
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
        // A live record hanging off a deleted one the user may read (a contact of an account
        // deleted since) is readable through it, as rights and incremental pulls see it; the
        // index by owner holds live records only, so such parents are found among the
        // tombstones of the types records hang off (a pull from 0 is rare: this reads them all).
        let parentTypes = Set(children.keys).subtracting(allTypes)
        for tombstone in try store.deletedChanges(ofTypes: parentTypes)
        where try policy.mayRead(tombstone.state, lookup: store.record) {
            queue.append(tombstone)
        }
        while let parent = queue.popLast() {
            for change in try hangingOff(parent.state.id, type: parent.state.type, in: store, children: children, skipping: allTypes)
            where candidates[change.state.id] == nil {
                candidates[change.state.id] = change
                queue.append(change)
            }
        }
        var visible = try candidates.values.filter { try policy.mayRead($0.state) { id in try candidates[id]?.state ?? store.record(id) } }
        // And what those hang off, for them to be valid on the device.
        var included = Set(visible.map(\.state.id))
        for change in visible {
            var next = policy.parent(of: change.state)
            while let id = next, !included.contains(id), let parent = try candidates[id] ?? store.change(of: id), !parent.state.isDeleted {
                included.insert(id)
                visible.append(parent)
                next = policy.parent(of: parent.state)
            }
        }
        return visible.sorted { $0.sequence < $1.sequence }
    }

    /// The live records that reference `id` (a record of `type`) through a field they hang off
    /// by, found through the index by reference; an id may be written in either case.
    private func hangingOff(_ id: UUID, type: String, in store: ReplicaStore,
                            children: [String: [(type: String, field: String)]], skipping: Set<String> = []) throws -> [Change] {
        let spellings = [id.uuidString, id.uuidString.lowercased()]
        return try (children[type] ?? []).filter { !skipping.contains($0.type) }.flatMap { child in
            try store.indexedChanges(ofType: child.type, where: child.field, in: spellings)
        }
    }

    /// The record as the role may see it: without its hidden fields.
    func stripped(_ record: RecordState, _ policy: AccessPolicy) -> RecordState {
        let hidden = policy.subject.role.rights(for: record.type).hiddenFields
        guard !hidden.isEmpty, hidden.contains(where: { record.fields[$0] != nil }) else { return record }
        var visible = record
        for field in hidden { visible.fields[field] = nil }
        return visible
    }
}
