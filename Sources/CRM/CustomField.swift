import Foundation
import ReplicaStore
import SyncModel

/// A field a tenant's admin added to an entity. Declared by a `custom_field` record, so it
/// reaches every device of the tenant with the next sync, and both the server and the devices
/// validate values of it like built-in fields. A replica that does not know the field yet (an
/// older client, or one that has not pulled the definition) keeps its values and passes them on
/// as unknown fields.
public struct CustomField: Sendable, Hashable {
    /// What a custom field holds.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Any text.
        case text
        /// An integer or a real number.
        case number
        /// A calendar day, `YYYY-MM-DD`.
        case date
        /// One of `choices`.
        case choice
        case boolean
    }

    public var entity: String
    public var name: String
    public var kind: Kind
    /// The allowed values of a `choice` field.
    public var choices: [String]
    public var label: String?

    public init(entity: String, name: String, kind: Kind, choices: [String] = [], label: String? = nil) {
        self.entity = entity
        self.name = name
        self.kind = kind
        self.choices = choices
        self.label = label
    }

    /// The definition a `custom_field` record holds, `nil` when it is incomplete.
    init?(_ record: RecordState) {
        let values = record.values
        guard case .text(let entity)? = values["entity"], case .text(let name)? = values["name"],
              case .text(let kindName)? = values["kind"], let kind = Kind(rawValue: kindName) else { return nil }
        var choices: [String] = []
        if case .text(let list)? = values["choices"] {
            choices = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        var label: String?
        if case .text(let text)? = values["label"] { label = text }
        self.init(entity: entity, name: name, kind: kind, choices: choices, label: label)
    }

    /// The values a `custom_field` record of this definition holds.
    public var recordValues: [String: FieldValue] {
        var values: [String: FieldValue] = ["entity": .text(entity), "name": .text(name), "kind": .text(kind.rawValue)]
        if !choices.isEmpty { values["choices"] = .text(choices.joined(separator: ",")) }
        if let label { values["label"] = .text(label) }
        return values
    }

    /// Why `value` does not fit the field, or `nil`. Null always fits: custom fields are optional.
    public func violation(of value: FieldValue) -> String? {
        switch (kind, value) {
        case (_, .null), (.text, .text), (.boolean, .bool), (.number, .integer): return nil
        case (.number, .real(let v)): return v.isFinite ? nil : "\(v) is not a finite number"
        case (.date, .text): return FieldRule.formatted(.date).violation(of: value)
        case (.choice, .text): return FieldRule.oneOf(choices).violation(of: value)
        default: return "expected \(kind.rawValue), found \(value.typeName)"
        }
    }

    /// The tenant's custom fields by entity and name, from its `custom_field` records; kept by
    /// the store until one of them changes. When two definitions name the same field (two
    /// admins offline), the one with the smallest record id counts, the same on every replica.
    public static func all(in store: RecordLookup) throws -> [String: [String: CustomField]] {
        try store.cached("crm.customFields") {
            var fields: [String: [String: CustomField]] = [:]
            let records = try store.records(ofType: "custom_field").sorted { $0.id.uuidString < $1.id.uuidString }
            for record in records {
                guard let field = CustomField(record), store.schema.types[field.entity]?.fields[field.name] == nil,
                      fields[field.entity]?[field.name] == nil else { continue }
                fields[field.entity, default: [:]][field.name] = field
            }
            return fields
        }
    }
}
