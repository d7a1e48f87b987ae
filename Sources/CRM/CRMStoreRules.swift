import Foundation
import ReplicaStore
import SyncModel

/// The CRM's checks that need a tenant's data, run by a replica store on local writes and on
/// batches pushed from devices (see `RecordRules`):
///
/// - a reference names a record of the referenced type in this tenant's store (a deleted one
///   counts: a colleague may have merged the account away while this change was offline, and
///   the merge's tombstone points at the survivor); another tenant's id is simply not found;
/// - an opportunity's stage is one of the tenant's pipeline stages (`PipelineStage`);
/// - values of the tenant's custom fields fit their definitions (`CustomField`), and a
///   definition names a new, valid field of an entity that takes custom fields;
/// - a `setting` of a key this version knows holds a value that key can take (`CRMSettings`);
///   a key it does not know is kept as it is, for the newer version that wrote it.
public struct CRMStoreRules: RecordRules {
    public init() {}

    public var configurationTypes: Set<String> { ["pipeline_stage", "custom_field", "setting"] }

    public func extraFields(ofType type: String, in store: RecordLookup) throws -> Set<String> {
        Set((try CustomField.all(in: store)[type] ?? [:]).keys)
    }

    public func check(_ state: RecordState, in store: RecordLookup) throws {
        guard let recordType = store.schema.types[state.type] else { return }
        var record: String { state.id.uuidString }
        for (field, rule) in recordType.rules {
            guard let target = rule.reference, case .text(let text)? = state.fields[field]?.value else { continue }
            // The schema has checked the id's form; a malformed one is reported here too.
            guard let id = UUID(text: text), let found = try store.type(of: id) else {
                throw ModelError.invalidFieldValue(record: record, field: field, reason: "no record of type \(target) with id \(text)")
            }
            guard found == target else {
                throw ModelError.invalidFieldValue(record: record, field: field, reason: "\(text) is a record of type \(found), not \(target)")
            }
        }
        switch state.type {
        case "opportunity":
            if case .text(let stage)? = state.fields["stage"]?.value,
               let refusal = CRMPipeline(stages: try PipelineStage.pipeline(in: store)).refusal(ofStage: stage) {
                throw ModelError.invalidFieldValue(record: record, field: "stage", reason: refusal)
            }
        case "custom_field":
            try checkDefinition(state, in: store)
        case "setting":
            if case .text(let key)? = state.fields["key"]?.value {
                var value = ""
                if case .text(let text)? = state.fields["value"]?.value { value = text }
                if let expected = CRMSettings.expectedForm(ofKey: key, value: value) {
                    throw ModelError.invalidFieldValue(record: record, field: "value", reason:
                        "'\(value)' is not a value for setting '\(key)': expected \(expected)")
                }
            }
        default:
            break
        }
        if let custom = try CustomField.all(in: store)[state.type] {
            for (name, field) in custom {
                guard let value = state.fields[name]?.value, let reason = field.violation(of: value) else { continue }
                throw ModelError.invalidFieldValue(record: record, field: name, reason: reason)
            }
        }
    }

    /// A custom field definition must add a new field with a valid name, and a choice field
    /// needs its choices.
    private func checkDefinition(_ state: RecordState, in store: RecordLookup) throws {
        let record = state.id.uuidString
        guard let field = CustomField(state) else { return }  // the schema reports what is missing
        guard Schema.isValidFieldName(field.name) else {
            throw ModelError.invalidFieldValue(record: record, field: "name", reason:
                "'\(field.name)' is not a field name: a letter or _, then letters, digits or _, at most 64")
        }
        if store.schema.types[field.entity]?.fields[field.name] != nil {
            throw ModelError.invalidFieldValue(record: record, field: "name", reason: "\(field.entity) already has a built-in field '\(field.name)'")
        }
        if field.kind == .choice && field.choices.isEmpty {
            throw ModelError.invalidFieldValue(record: record, field: "choices", reason: "a choice field needs its choices, comma-separated")
        }
    }
}
