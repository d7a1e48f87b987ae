import Foundation
import SyncModel

/// One record a write transaction changed, as `ChangeEffects` see it.
public struct RecordChange: Sendable {
    /// The record before the transaction (or, for a later round, before the previous round's
    /// effects) changed it; `nil` when it is new to this store.
    public let before: RecordState?
    /// The record as the transaction leaves it, deleted or not.
    public let after: RecordState
    /// Whether this replica wrote it (`.local`) or took it from a replica below
    /// (`.downstream`). Changes from upstream never reach effects: upstream ran them.
    public let origin: StoreChanges.Origin
    /// Whether effects made this change (in an earlier round), rather than the transaction's
    /// caller or a batch from downstream: a domain checks what users write, not what its own
    /// effects do.
    public let isEffect: Bool

    public init(before: RecordState?, after: RecordState, origin: StoreChanges.Origin, isEffect: Bool = false) {
        self.before = before
        self.after = after
        self.origin = origin
        self.isEffect = isEffect
    }

    /// Whether the value of `field` was written by this change: its register carries another
    /// write than before (so rewriting the same value counts, and a merge that kept the old
    /// value does not).
    public func wrote(_ field: String) -> Bool {
        guard case .register(let now)? = after.fields[field] else { return false }
        guard case .register(let then)? = before?.fields[field] else { return true }
        return now.dot != then.dot
    }
}

/// What follows from a change, as a domain decides it (the CRM's deadlines, follow-ups, stage
/// history, and its refusal of a hand-typed computed value): the business policy of a store,
/// next to the invariants `RecordRules` keep and the field constraints of the schema.
///
/// A store runs its effects when a write transaction that wrote locally or took changes from
/// downstream ends, before it checks what the transaction wrote, so a change and what follows
/// from it commit, and sync, together. The effects write through the store's ordinary local
/// writes; what they change is handed to them again in a next round (at most
/// `ReplicaStore.maxEffectRounds`), so an effect of an effect runs too. Every replica that takes
/// a change from below or makes it runs them, so a device offline sees what follows at once
/// and the server, receiving the same change, computes the same thing: effects must write only
/// values that differ, and derive the ids of records they create from their cause, so that two
/// replicas computing an effect make one record, not two.
///
/// Throwing (a `ModelError`) refuses the whole transaction, as `RecordRules` do: how a domain
/// refuses a change it does not allow, with the reason.
public protocol ChangeEffects: Sendable {
    /// Writes what follows from `changes` into `store`, inside the transaction that made them.
    func apply(_ changes: [RecordChange], in store: ReplicaStore) throws
}

extension ReplicaStore {
    /// How many rounds of effects one transaction runs at most: effects that keep changing
    /// what they changed would otherwise never end.
    public static let maxEffectRounds = 4

    /// Whether this replica may make a write, by its `localWriteCheck`: effects on a device
    /// skip what its user may not write (the server, which may, computes it instead) rather
    /// than have the user's whole transaction refused.
    ///
    /// - Parameters:
    ///   - values: the fields the write sets.
    ///   - record: the record written; `nil` for a new record of `type` with id `id`.
    public func mayWrite(_ values: [String: FieldValue], to record: RecordState?, type: String, id: UUID) -> Bool {
        guard let check = localWriteCheck else { return true }
        guard let dot = try? Dot(replica: replicaID, counter: 1) else { return false }
        var after = record ?? RecordState.created(id: id, type: type, fields: [:], dot: dot, timestamp: .zero)
        after.write(values, dot: dot, timestamp: .zero)
        return (try? check.check(before: record, after: after, in: RecordLookup(self))) != nil
    }
}
