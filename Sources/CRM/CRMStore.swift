import Foundation
import ReplicaStore
import SyncModel

extension ReplicaStore.Options {
    /// How a CRM store opens: the CRM schema, its rules, what follows from changes
    /// (`CRMChangeEffects`), and indexes on the fields the typed queries, merges and reports
    /// look records up by.
    ///
    /// - Parameter role: `.device` for an app's or a device's store (the default), whose every
    ///   write is checked; `.authority` for the tenant's server and the tools that write its
    ///   store. Every handle of one store file must open it alike.
    public static func crm(replicaID: ReplicaID? = nil, role: CRMChangeEffects.Role = .device) -> Self {
        var options = Self(schema: CRMSchema.current, replicaID: replicaID)
        options.rules = CRMStoreRules()
        options.effects = CRMChangeEffects(role: role)
        // With the references access scopes follow, so the server's handle and a tool's
        // handle on one store keep the same indexes (a handle with other indexes rebuilds them).
        options.indexedFields = CRMSchema.indexedFields.union(CRMAccess.ownership.indexedFields)
        options.searchFields = CRMSchema.searchFields
        return options
    }
}

extension CRMSchema {
    /// The fields queried by value: owners, the references merges re-point, stages, statuses
    /// and e-mail addresses.
    public static let indexedFields: Set<String> = [
        "owner", "account", "contact", "lead", "opportunity", "campaign", "case", "parent", "stage", "status", "email",
        "converted_account", "converted_contact", "converted_opportunity", "entity", "key",
    ]
    /// The fields whose words `CRMStore.search` finds.
    public static let searchFields: Set<String> = ["name", "first_name", "last_name", "company", "subject"]
}

/// The CRM's typed operations over a replica store: what a device's screens and the server's
/// tools do, each as one local transaction, so that it syncs as a whole.
///
/// Like the store, it belongs to one thread at a time; with a `SharedReplicaStore`, make one
/// inside `perform`.
public struct CRMStore {
    public let store: ReplicaStore
    /// The acting user's e-mail address, recorded as who changed a stage.
    public var user: String?
    /// The current time; injectable for tests.
    public var now: () -> Date

    public init(store: ReplicaStore, user: String? = nil, now: @escaping () -> Date = Date.init) {
        self.store = store
        self.user = user
        self.now = now
    }

    // MARK: Create, read, update, delete

    /// Creates the entity's record. What follows from it (an opportunity's first stage-change
    /// entry and probability, a case's number and deadlines) the store's effects write in the
    /// same transaction.
    @discardableResult
    public func create<E: CRMEntity>(_ entity: E) throws -> E {
        try store.transaction {
            let values = entity.fieldValues.filter { name, value in
                value != .null && !E.fields.contains { $0.name == name && $0.isCounter }
            }
            let created = try store.create(E.recordType, id: entity.id, values)
            try store.settleEffects()
            if created.type == "opportunity", let user { try recordWhoChanged(stageOf: created, user) }
            // Read back: the effects may have completed it.
            guard let record = try store.record(entity.id) else { throw ReplicaStoreError.recordNotFound(entity.id) }
            return E(record)
        }
    }

    /// The entity with `id`, `nil` when there is none or it was deleted.
    public func get<E: CRMEntity>(_ type: E.Type, _ id: UUID) throws -> E? {
        guard let record = try store.record(id), !record.isDeleted, record.type == E.recordType else { return nil }
        return E(record)
    }

    /// Writes the fields of `entity` that differ from its record, as one write: untouched
    /// fields keep their versions, so they never conflict with a colleague's edit of them.
    /// What follows (an opportunity's stage-change entry and probability, a closed case's
    /// follow-up) the store's effects write in the same transaction.
    @discardableResult
    public func update<E: CRMEntity>(_ entity: E) throws -> E {
        try store.transaction {
            guard let stored = try store.record(entity.id), stored.type == E.recordType, !stored.isDeleted else {
                throw ReplicaStoreError.recordNotFound(entity.id)
            }
            let before = stored.values
            let changed = entity.fieldValues.filter { name, value in
                (before[name] ?? .null) != value && !E.fields.contains { $0.name == name && $0.isCounter }
            }
            guard !changed.isEmpty else { return E(stored) }
            let updated = try store.update(entity.id, changed)
            try store.settleEffects()
            if changed["stage"] != nil, let user { try recordWhoChanged(stageOf: updated, user) }
            guard let record = try store.record(entity.id) else { throw ReplicaStoreError.recordNotFound(entity.id) }
            return E(record)
        }
    }

    /// Deletes the record; it stays as a tombstone, so the deletion syncs and can be undone.
    public func delete<E: CRMEntity>(_ type: E.Type, _ id: UUID) throws {
        guard try store.recordType(of: id) == E.recordType else { throw ReplicaStoreError.recordNotFound(id) }
        try store.delete(id)
    }

    /// Adds loyalty points to an account; concurrent awards on several devices add up.
    public func awardLoyaltyPoints(_ points: Int64, to account: UUID) throws {
        try store.increment(account, field: "loyalty_points", by: points)
    }

    // MARK: Queries

    /// Every live entity of the type, in change order.
    public func all<E: CRMEntity>(_ type: E.Type) throws -> [E] {
        try store.records(ofType: E.recordType).map(E.init)
    }

    /// The live entities whose `field` holds `value` (an indexed lookup for the fields in
    /// `CRMSchema.indexedFields`).
    public func query<E: CRMEntity>(_ type: E.Type, where field: String, equals value: String) throws -> [E] {
        try store.records(ofType: E.recordType, where: field, equals: value).map(E.init)
    }

    /// The entities a user owns.
    public func owned<E: CRMEntity>(_ type: E.Type, by owner: String) throws -> [E] {
        try query(type, where: "owner", equals: owner)
    }

    /// The entities that belong to an account: its contacts, opportunities, activities, cases.
    public func ofAccount<E: CRMEntity>(_ type: E.Type, _ account: UUID) throws -> [E] {
        try query(type, where: "account", equals: account.uuidString)
    }

    /// The opportunities in a pipeline stage.
    public func opportunities(inStage stage: String) throws -> [Opportunity] {
        try query(Opportunity.self, where: "stage", equals: stage)
    }

    /// Entities whose names hold words starting with each word of `text`, case-insensitive.
    public func search<E: CRMEntity>(_ type: E.Type, _ text: String, limit: Int = 100) throws -> [E] {
        try store.search(text, ofType: E.recordType, limit: limit).map(E.init)
    }

    /// An opportunity's stage history, oldest first; changes within the same second in the
    /// order this replica took them in.
    public func stageHistory(of opportunity: UUID) throws -> [StageChange] {
        try query(StageChange.self, where: "opportunity", equals: opportunity.uuidString)
            .enumerated().sorted { ($0.element.changedAt, $0.offset) < ($1.element.changedAt, $1.offset) }.map(\.element)
    }

    /// The tenant's pipeline (its own, or the default one).
    public func pipeline() throws -> [PipelineStage] {
        try PipelineStage.pipeline(in: RecordLookup(store))
    }

    /// The tenant's custom fields of an entity, by name.
    public func customFields<E: CRMEntity>(of type: E.Type) throws -> [String: CustomField] {
        try CustomField.all(in: RecordLookup(store))[E.recordType] ?? [:]
    }

    /// Adds a custom field to the tenant's schema: a record, so it reaches every device.
    @discardableResult
    public func addCustomField(_ field: CustomField) throws -> UUID {
        try store.create("custom_field", field.recordValues).id
    }

    /// Adds a stage to the tenant's pipeline. The first one replaces the default pipeline.
    @discardableResult
    public func addPipelineStage(_ stage: PipelineStage) throws -> UUID {
        try store.create("pipeline_stage", [
            "name": .text(stage.name), "position": .integer(Int64(stage.position)),
            "probability": .integer(Int64(stage.probability)), "closed": .bool(stage.isClosed), "won": .bool(stage.isWon),
        ]).id
    }

    /// The records each committed transaction changes, local writes and syncs alike.
    public func changes() -> AsyncStream<StoreChanges> {
        store.observeChanges()
    }

    // MARK: Helpers

    /// Names `user` on the stage-change entry the store's effects made for the write that set
    /// `opportunity`'s stage: the store knows the write, this typed API knows who made it.
    private func recordWhoChanged(stageOf opportunity: RecordState, _ user: String) throws {
        guard case .register(let stage)? = opportunity.fields["stage"] else { return }
        let entry = CRMChangeEffects.stageChangeID(opportunity: opportunity.id, write: stage.dot)
        guard let record = try store.record(entry), !record.isDeleted, record.text("changed_by") != user else { return }
        try store.update(entry, ["changed_by": .text(user)])
    }

    /// Now as the schema's instants are written: ISO 8601, UTC, whole seconds.
    func timestamp() -> String {
        now().formatted(.iso8601)
    }
}
