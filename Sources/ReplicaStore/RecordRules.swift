import Foundation
import SQLite
import SyncModel

/// Checks of a record that need the data of the store it goes into: that a referenced record
/// exists, that a value is one the tenant configured (its pipeline stages), that a field the
/// tenant added holds what it declared. The schema cannot say these, so a domain module (the
/// CRM) implements them and passes them in `ReplicaStore.Options`, and the store runs them
/// wherever a change enters it from a replica that may not have run them: on local writes and
/// on batches pushed from downstream, in both cases when the transaction ends, so records may
/// reference any record of the same transaction or batch, in any order (a converted lead and its
/// opportunity reference each other). Batches from upstream are not checked: upstream checked
/// them, and a pull may bring a referencing record before the record it references, whose
/// sequence moved when it changed.
public protocol RecordRules: Sendable {
    /// The record types whose records configure the rules (pipeline stages, custom fields).
    /// A change to one of them empties `RecordLookup.cached`, so rules may derive settings from
    /// the store once and keep them until they change.
    var configurationTypes: Set<String> { get }

    /// The fields, beyond the schema's, that the store's data declares for records of `type`
    /// (a tenant's custom fields), by name. A local write may set these; `check` validates them.
    func extraFields(ofType type: String, in store: RecordLookup) throws -> Set<String>

    /// Throws (a `ModelError` naming the record and the field) when the live record `state`
    /// breaks a rule. Tombstones are never passed in.
    func check(_ state: RecordState, in store: RecordLookup) throws
}

/// What `RecordRules` may read of the store they check for: enough to look records up,
/// nothing to write with.
public struct RecordLookup {
    let store: ReplicaStore

    /// A lookup into `store`, for code that reads what the rules derive (a tenant's pipeline).
    public init(_ store: ReplicaStore) {
        self.store = store
    }

    /// The schema the store checks records against.
    public var schema: Schema { store.schema }

    /// The type of the record with `id`, deleted or not; `nil` when the store has no such record.
    /// A record of another tenant is in another store, so it is simply not found.
    public func type(of id: UUID) throws -> String? {
        try store.recordType(of: id)
    }

    /// The record with `id`, deleted or not, as the open transaction left it.
    public func record(_ id: UUID) throws -> RecordState? {
        try store.record(id)
    }

    /// The live records of `type`.
    public func records(ofType type: String) throws -> [RecordState] {
        try store.records(ofType: type)
    }

    /// A value derived from the store's configuration records, made once and kept until a
    /// record of one of `RecordRules.configurationTypes` changes or a transaction rolls back.
    public func cached<T>(_ key: String, _ make: () throws -> T) throws -> T {
        // Only a store with rules knows which record types invalidate the cache.
        guard store.options.rules != nil else { return try make() }
        if let value = store.rulesCache[key] as? T { return value }
        let value = try make()
        store.rulesCache[key] = value
        return value
    }
}
