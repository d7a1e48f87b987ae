import Foundation
import ReplicaStore
import SyncModel

extension ReplicaStore.Options {
    /// How a CRM store opens: the CRM schema, its rules, and indexes on the fields the typed
    /// queries, merges and reports look records up by.
    public static func crm(replicaID: ReplicaID? = nil) -> Self {
        var options = Self(schema: CRMSchema.current, replicaID: replicaID)
        options.rules = CRMStoreRules()
        options.indexedFields = CRMSchema.indexedFields
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

    /// Creates the entity's record. An opportunity's first stage is recorded as a stage change
    /// and, when it has no probability, takes the stage's.
    @discardableResult
    public func create<E: CRMEntity>(_ entity: E) throws -> E {
        try store.transaction {
            var entity = entity
            if var opportunity = entity as? Opportunity {
                if opportunity.probability == nil { opportunity.probability = try probability(of: opportunity.stage) }
                entity = opportunity as! E
            }
            let values = entity.fieldValues.filter { name, value in
                value != .null && !E.fields.contains { $0.name == name && $0.isCounter }
            }
            let record = try store.create(E.recordType, id: entity.id, values)
            if let opportunity = entity as? Opportunity { try recordStageChange(of: opportunity.id, from: nil, to: opportunity.stage) }
            return E(record)
        }
    }

    /// The entity with `id`, `nil` when there is none or it was deleted.
    public func get<E: CRMEntity>(_ type: E.Type, _ id: UUID) throws -> E? {
        guard let record = try store.record(id), !record.isDeleted, record.type == E.recordType else { return nil }
        return E(record)
    }

    /// Writes the fields of `entity` that differ from its record, as one write: untouched
    /// fields keep their versions, so they never conflict with a colleague's edit of them. An
    /// opportunity whose stage changes gets a stage change record, and the new stage's
    /// probability unless the update sets one too.
    @discardableResult
    public func update<E: CRMEntity>(_ entity: E) throws -> E {
        try store.transaction {
            guard let stored = try store.record(entity.id), stored.type == E.recordType, !stored.isDeleted else {
                throw ReplicaStoreError.recordNotFound(entity.id)
            }
            let before = stored.values
            var values = entity.fieldValues
            if let opportunity = entity as? Opportunity, case .text(let old)? = before["stage"], old != opportunity.stage {
                if values["probability"] == before["probability"] {
                    values["probability"] = try probability(of: opportunity.stage).map { .integer(Int64($0)) } ?? .null
                }
                try recordStageChange(of: opportunity.id, from: old, to: opportunity.stage)
            }
            let changed = values.filter { name, value in
                (before[name] ?? .null) != value && !E.fields.contains { $0.name == name && $0.isCounter }
            }
            guard !changed.isEmpty else { return E(stored) }
            return E(try store.update(entity.id, changed))
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

    private func probability(of stage: String) throws -> Int? {
        try pipeline().first { $0.name == stage }?.probability
    }

    private func recordStageChange(of opportunity: UUID, from: String?, to: String) throws {
        var change = StageChange(id: UUID())
        change.opportunity = opportunity
        change.fromStage = from
        change.toStage = to
        change.changedAt = timestamp()
        change.changedBy = user
        try store.create(StageChange.recordType, id: change.id, change.fieldValues.filter { $0.value != .null })
    }

    /// Now as the schema's instants are written: ISO 8601, UTC, whole seconds.
    func timestamp() -> String {
        now().formatted(.iso8601)
    }
}
