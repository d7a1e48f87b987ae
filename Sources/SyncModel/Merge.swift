import Foundation

/// What kind of disagreement a conflict records.
public enum ConflictKind: String, Sendable, CaseIterable, Codable {
    /// Two replicas wrote the same field without seeing each other's write.
    case concurrentUpdate = "concurrent_update"
    /// A field was written concurrently with the deletion of its record; the record stays deleted
    /// and the write is kept here so the record can be restored with it.
    case updateOfDeleted = "update_of_deleted"
    /// One replica deleted the record while another restored it.
    case deleteVersusRestore = "delete_versus_restore"
    /// Upstream refused a pushed change (it failed the server's validation or the user's rights);
    /// the change stays here, and in the local state, until someone decides.
    case rejected = "rejected"
}

/// One side of a conflict: the value a write carried and the write itself.
public struct ConflictSide: Hashable, Sendable {
    /// The value written; `nil` for a deletion.
    public var value: FieldValue?
    public var dot: Dot
    public var timestamp: HLCTimestamp
    /// True when this side is the record's deletion.
    public var isDeletion: Bool

    public init(value: FieldValue?, dot: Dot, timestamp: HLCTimestamp, isDeletion: Bool = false) {
        self.value = value
        self.dot = dot
        self.timestamp = timestamp
        self.isDeletion = isDeletion
    }
}

/// A write that lost a merge. Conflicts are how the sync model keeps its promise that nothing is
/// silently dropped: the state holds the winner, the conflict log holds the loser.
public struct Conflict: Hashable, Sendable {
    public var kind: ConflictKind
    public var recordID: UUID
    public var recordType: String
    /// The field; `nil` when the conflict is about the record's existence.
    public var field: String?
    /// What the merged state holds.
    public var winner: ConflictSide
    /// What it does not hold any more.
    public var loser: ConflictSide
    /// Why an upstream refused the write, for a `rejected` conflict passed on to the device
    /// that made it (SPEC.md 6.2); `nil` for conflicts a merge found.
    public var reason: String?

    public init(kind: ConflictKind, recordID: UUID, recordType: String, field: String?, winner: ConflictSide, loser: ConflictSide,
                reason: String? = nil) {
        self.kind = kind
        self.recordID = recordID
        self.recordType = recordType
        self.field = field
        self.winner = winner
        self.loser = loser
        self.reason = reason
    }
}

/// How a merge changed the local state.
public enum MergeOutcome: String, Sendable {
    /// The incoming state brought nothing new.
    case unchanged
    /// The incoming state replaced the local one as it was (or the record was new here).
    case applied
    /// The result combines writes of both sides.
    case merged
}

/// The result of merging an incoming record state into a local one.
public struct MergeResult: Sendable {
    public var state: RecordState
    public var outcome: MergeOutcome
    public var conflicts: [Conflict]
}

/// The merge rules of ARCHITECTURE.md, field by field. Pure: the same code runs on devices,
/// branches and the server, which is what makes them converge.
public enum Merge {
    /// Merges `remote` into `local` (either may be absent locally: pass `nil` for a new record).
    ///
    /// The result is the join of the two states: commutative, associative and idempotent, so
    /// replicas that have seen the same writes hold the same state whatever the delivery order.
    public static func merge(local: RecordState?, remote: RecordState) throws(ModelError) -> MergeResult {
        guard let local else { return MergeResult(state: remote, outcome: .applied, conflicts: []) }
        guard local.id == remote.id else {
            throw .malformedEncoding("merging record \(remote.id) into record \(local.id)")
        }
        guard local.type == remote.type else {
            throw .recordTypeMismatch(record: local.id.uuidString, local: local.type, remote: remote.type)
        }
        // Nothing new: the remote state is one this replica has already integrated.
        if local.vector.covers(remote.vector) {
            return MergeResult(state: local, outcome: .unchanged, conflicts: [])
        }
        var conflicts: [Conflict] = []
        let lv = local.vector, rv = remote.vector
        var result = local
        result.vector = lv.merged(rv)

        let liveness = try mergeRegister(local.liveness.register, remote.liveness.register, lv, rv, record: local.id, field: "(existence)")
        let localWon = liveness.winner.dot == local.liveness.dot
        result.liveness = localWon ? local.liveness : remote.liveness
        if liveness.loser != nil, local.liveness.isDeleted != remote.liveness.isDeleted {
            conflicts.append(Conflict(
                kind: .deleteVersusRestore, recordID: local.id, recordType: local.type, field: nil,
                winner: side(of: result.liveness), loser: side(of: localWon ? remote.liveness : local.liveness)))
        }

        for name in Set(local.fields.keys).union(remote.fields.keys) {
            switch (local.fields[name], remote.fields[name]) {
            case (nil, let r?):
                result.fields[name] = r
            case (_?, nil), (nil, nil):
                break
            case (.register(let l)?, .register(let r)?):
                let merged = try mergeRegister(l, r, lv, rv, record: local.id, field: name)
                result.fields[name] = .register(merged.winner)
                if let loser = merged.loser {
                    conflicts.append(Conflict(
                        kind: .concurrentUpdate, recordID: local.id, recordType: local.type, field: name,
                        winner: ConflictSide(value: merged.winner.value, dot: merged.winner.dot, timestamp: merged.winner.timestamp),
                        loser: ConflictSide(value: loser.value, dot: loser.dot, timestamp: loser.timestamp)))
                }
            case (.counter(let l)?, .counter(let r)?):
                result.fields[name] = .counter(l.merged(r))
            case (let l?, let r?):
                throw .wrongFieldType(
                    record: local.id.uuidString, field: name,
                    expected: l.isCounter ? "counter" : "register", found: r.isCounter ? "counter" : "register")
            }
        }

        if result.liveness.isDeleted {
            conflicts += updatesOfDeleted(result: result, local: local)
        }

        let outcome: MergeOutcome = result == remote ? .applied : (result == local ? .unchanged : .merged)
        return MergeResult(state: result, outcome: outcome, conflicts: conflicts)
    }

    /// Field writes the deletion did not see, reported when either the write or the deletion is
    /// news to this replica (older news was reported when it arrived).
    private static func updatesOfDeleted(result: RecordState, local: RecordState) -> [Conflict] {
        let deletion = result.liveness
        let deletionIsNew = !local.liveness.isDeleted || local.liveness.dot != deletion.dot
        var conflicts: [Conflict] = []
        for (name, field) in result.fields.sorted(by: { $0.key < $1.key }) {
            switch field {
            case .register(let r):
                guard !deletion.deletionContext.contains(r.dot), deletionIsNew || !local.vector.contains(r.dot) else { continue }
                conflicts.append(Conflict(
                    kind: .updateOfDeleted, recordID: result.id, recordType: result.type, field: name,
                    winner: side(of: deletion),
                    loser: ConflictSide(value: r.value, dot: r.dot, timestamp: r.timestamp)))
            case .counter(let c):
                for (replica, contribution) in c.contributions.sorted(by: { $0.key < $1.key }) {
                    guard let dot = try? Dot(replica: replica, counter: contribution.lastCounter),
                          !deletion.deletionContext.contains(dot),
                          deletionIsNew || !local.vector.contains(dot) else { continue }
                    conflicts.append(Conflict(
                        kind: .updateOfDeleted, recordID: result.id, recordType: result.type, field: name,
                        winner: side(of: deletion),
                        loser: ConflictSide(value: .integer(c.value), dot: dot, timestamp: contribution.lastTimestamp)))
                }
            }
        }
        return conflicts
    }

    private static func side(of liveness: Liveness) -> ConflictSide {
        ConflictSide(value: liveness.isDeleted ? nil : .bool(true), dot: liveness.dot, timestamp: liveness.timestamp, isDeletion: liveness.isDeleted)
    }

    /// Last-writer-wins: the write with the later timestamp (then the higher dot) is kept.
    ///
    /// That alone makes the merge a join. Causality is still honoured because a local write is
    /// always stamped later than the value it overwrites (see `RecordState.write`), so a write
    /// that saw another also sorts after it. The version vectors only decide whether the loser
    /// was concurrent, that is, lost without anyone having seen it: then it is returned as the
    /// loser, for the conflict log.
    static func mergeRegister(
        _ l: RegisterState, _ r: RegisterState, _ lv: VersionVector, _ rv: VersionVector,
        record: UUID, field: String
    ) throws(ModelError) -> (winner: RegisterState, loser: RegisterState?) {
        if l.dot == r.dot {
            guard l == r else { throw .dotReused(record: record.uuidString, field: field, dot: l.dot.description) }
            return (l, nil)
        }
        let (winner, loser) = l.beats(r) ? (l, r) : (r, l)
        let concurrent = !lv.contains(r.dot) && !rv.contains(l.dot)
        return (winner, concurrent ? loser : nil)
    }
}

extension FieldState {
    var isCounter: Bool {
        if case .counter = self { return true }
        return false
    }
}
