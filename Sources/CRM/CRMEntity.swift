import Foundation
import SyncModel

/// A CRM record as a typed value, for apps that would rather not handle field dictionaries.
///
/// Each entity declares how its properties map to the record's fields (`fields`); everything
/// else the record holds (the tenant's custom fields, fields a newer version added) is kept in
/// `custom`, so reading a record and writing it back never loses a field.
public protocol CRMEntity: Sendable, Hashable {
    /// The record type in `CRMSchema`.
    static var recordType: String { get }
    /// The mapping between properties and fields.
    static var fields: [CRMField<Self>] { get }
    /// An entity with every property empty: where decoding starts.
    init(id: UUID)
    var id: UUID { get }
    /// The record's other fields: custom fields, and fields this version does not know.
    var custom: [String: FieldValue] { get set }
}

extension CRMEntity {
    /// The entity a record holds.
    public init(_ record: RecordState) {
        self.init(id: record.id)
        var rest = record.values
        for field in Self.fields {
            field.set(&self, rest.removeValue(forKey: field.name) ?? .null)
        }
        custom = rest
    }

    /// Every field the entity sets, null for an empty property, custom ones included.
    public var fieldValues: [String: FieldValue] {
        var values = custom
        for field in Self.fields { values[field.name] = field.get(self) }
        return values
    }
}

/// One property of an entity and the field that stores it.
public struct CRMField<Entity>: Sendable {
    public let name: String
    let get: @Sendable (Entity) -> FieldValue
    let set: @Sendable (inout Entity, FieldValue) -> Void

    /// A counter: read into the entity, never written from it (counters change by increments).
    let isCounter: Bool

    init(_ name: String, isCounter: Bool = false, get: @escaping @Sendable (Entity) -> FieldValue,
         set: @escaping @Sendable (inout Entity, FieldValue) -> Void) {
        self.name = name
        self.isCounter = isCounter
        self.get = get
        self.set = set
    }

    static func text(_ name: String, _ path: WritableKeyPath<Entity, String?> & Sendable) -> Self {
        Self(name, get: { $0[keyPath: path].map(FieldValue.text) ?? .null },
             set: { if case .text(let v) = $1 { $0[keyPath: path] = v } else { $0[keyPath: path] = nil } })
    }

    /// A required text field, as a non-optional property ("" when the record lacks it).
    static func text(_ name: String, _ path: WritableKeyPath<Entity, String> & Sendable) -> Self {
        Self(name, get: { .text($0[keyPath: path]) },
             set: { if case .text(let v) = $1 { $0[keyPath: path] = v } else { $0[keyPath: path] = "" } })
    }

    /// A reference, stored as the referenced record's UUID string.
    static func id(_ name: String, _ path: WritableKeyPath<Entity, UUID?> & Sendable) -> Self {
        Self(name, get: { $0[keyPath: path].map { .text($0.uuidString) } ?? .null },
             set: { if case .text(let v) = $1 { $0[keyPath: path] = UUID(uuidString: v) } else { $0[keyPath: path] = nil } })
    }

    static func integer(_ name: String, _ path: WritableKeyPath<Entity, Int?> & Sendable) -> Self {
        Self(name, get: { $0[keyPath: path].map { .integer(Int64($0)) } ?? .null },
             set: { if case .integer(let v) = $1 { $0[keyPath: path] = Int(clamping: v) } else { $0[keyPath: path] = nil } })
    }

    static func real(_ name: String, _ path: WritableKeyPath<Entity, Double?> & Sendable) -> Self {
        Self(name, get: { $0[keyPath: path].map(FieldValue.real) ?? .null },
             set: {
                 switch $1 {
                 case .real(let v): $0[keyPath: path] = v
                 case .integer(let v): $0[keyPath: path] = Double(v)
                 default: $0[keyPath: path] = nil
                 }
             })
    }

    static func bool(_ name: String, _ path: WritableKeyPath<Entity, Bool?> & Sendable) -> Self {
        Self(name, get: { $0[keyPath: path].map(FieldValue.bool) ?? .null },
             set: { if case .bool(let v) = $1 { $0[keyPath: path] = v } else { $0[keyPath: path] = nil } })
    }

    static func counter(_ name: String, _ path: WritableKeyPath<Entity, Int64> & Sendable) -> Self {
        Self(name, isCounter: true, get: { .integer($0[keyPath: path]) },
             set: { if case .integer(let v) = $1 { $0[keyPath: path] = v } else { $0[keyPath: path] = 0 } })
    }
}
