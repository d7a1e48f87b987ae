/// The storage type of a field. Richer CRM types (email, choice, date) are built on these.
public enum FieldKind: String, Sendable, CaseIterable, Codable {
    case text, integer, real, boolean, blob
    /// A counter whose concurrent increments add up; changed only by increments.
    case counter

    func accepts(_ value: FieldValue) -> Bool {
        switch (self, value) {
        case (.counter, _): false
        case (_, .null): true
        case (.text, .text), (.integer, .integer), (.real, .real), (.boolean, .bool), (.blob, .blob): true
        default: false
        }
    }
}

/// The fields of one record type.
public struct RecordType: Sendable, Equatable {
    public let name: String
    public let fields: [String: FieldKind]
    /// Business constraints on some of the fields (see `FieldRule`); storage kinds stay in `fields`.
    public let rules: [String: FieldRule]
    /// The declared fields sorted by the bytes of their names, for checking encoded states
    /// (whose fields come sorted the same way) in one merge-like walk instead of hashing every
    /// name. `nil` when a declared name is not ASCII: then byte order and `String` equality
    /// (canonical equivalence) could disagree, and encoded states take the decoding path.
    let sortedFields: [DeclaredField]?
    /// The fields with a `required` rule, which a live record must hold non-null.
    let requiredFields: [String]

    struct DeclaredField: Sendable, Equatable {
        var name: [UInt8]
        var kind: FieldKind
        /// The field's rule, when it constrains values (`required` alone is counted, not kept).
        var rule: FieldRule?
        var isRequired: Bool
        /// `rule != nil`, kept apart so the walk tests a flag, not an optional of a struct.
        var hasRule: Bool
    }

    public init(name: String, fields: [String: FieldKind], rules: [String: FieldRule] = [:]) {
        precondition(rules.keys.allSatisfy { fields[$0] != nil }, "a rule for an undeclared field of \(name)")
        self.name = name
        self.fields = fields
        self.rules = rules
        requiredFields = rules.filter { $0.value.required }.map(\.key).sorted()
        let declared = fields.map { name, kind in
            let rule = rules[name]
            var constraint = rule
            constraint?.required = false
            let kept = constraint == FieldRule() ? nil : constraint
            return DeclaredField(name: Array(name.utf8), kind: kind, rule: kept, isRequired: rule?.required == true, hasRule: kept != nil)
        }
        sortedFields = declared.allSatisfy { $0.name.allSatisfy { $0 < 0x80 } }
            ? declared.sorted { $0.name.lexicographicallyPrecedes($1.name) }
            : nil
    }
}

/// The record types a store accepts. Shared by every replica of a tenant so that the same checks
/// run on a device before a change leaves it and on the server before it is accepted.
public struct Schema: Sendable, Equatable {
    public let types: [String: RecordType]

    /// Longest text value accepted, in UTF-8 bytes.
    public static let maxTextBytes = 1 << 20
    /// Longest blob value accepted.
    public static let maxBlobBytes = 8 << 20

    public init(_ types: [RecordType]) {
        self.types = Dictionary(types.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
    }

    /// Field names are identifiers, so they are safe in CSV headers, JSON keys and SQL comments.
    public static func isValidFieldName(_ name: String) -> Bool {
        isValidFieldName(utf8: name.utf8)
    }

    static func isValidFieldName<Bytes: Collection<UInt8>>(utf8 name: Bytes) -> Bool {
        guard let first = name.first, name.count <= 64 else { return false }
        let isLetter = { (b: UInt8) in (b | 0x20) >= UInt8(ascii: "a") && (b | 0x20) <= UInt8(ascii: "z") }
        return (isLetter(first) || first == UInt8(ascii: "_")) && name.allSatisfy {
            isLetter($0) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_")
        }
    }

    /// Checks a local change before it is written: the field must exist and take this value.
    /// `record` names the record in an error, and is made only then: formatting an id for
    /// every field written was a twentieth of a large import.
    public func checkWrite(type: String, record: @autoclosure () -> String, field: String, value: FieldValue) throws(ModelError) {
        guard let recordType = types[type] else { throw .unknownRecordType(type) }
        guard let kind = recordType.fields[field] else { throw .invalidFieldName(record: record(), field: field) }
        try Self.checkWrite(value, of: recordType, field: field, kind: kind, record: record())
    }

    /// `checkWrite` for a field the caller found already declared as `kind` in `recordType`:
    /// a write of many fields finds its type once rather than once per field.
    public static func checkWrite(_ value: FieldValue, of recordType: RecordType, field: String, kind: FieldKind,
                                  record: @autoclosure () -> String) throws(ModelError) {
        try check(value, kind: kind, record: record(), field: field)
        if let rule = recordType.rules[field], let reason = rule.violation(of: value) {
            throw .invalidFieldValue(record: record(), field: field, reason: reason)
        }
    }

    /// Checks that a live record holds every field its type requires, non-null and, for text,
    /// not empty; tombstones pass. Local
    /// writes run this on the state a transaction ends with, so a record may be created first
    /// and completed later in the same transaction.
    public func checkRequired(_ state: RecordState) throws(ModelError) {
        guard !state.isDeleted, let recordType = types[state.type] else { return }
        for name in recordType.requiredFields {
            switch state.fields[name]?.value ?? .null {
            case .null: throw .invalidFieldValue(record: state.id.uuidString, field: name, reason: "required, but missing")
            case .text(""): throw .invalidFieldValue(record: state.id.uuidString, field: name, reason: "required, but empty")
            default: continue
            }
        }
    }

    /// Checks a record state from anywhere: known type, valid names, values of the declared
    /// types that keep their fields' rules (required on live records), consistent dots. Unknown fields are allowed (a newer replica may have added them).
    ///
    /// One pass over the fields for the schema and `RecordState.checkConsistency` together:
    /// this runs on every record a replica takes in that is not new to it.
    ///
    /// - Parameter rules: whether to check the fields' rules. A replica skips them for states
    ///   from its upstream, which accepted them under the same or a newer schema: a newer one
    ///   may allow what this one does not (a new choice), and refusing would stall every pull.
    ///   Storage kinds, bounds and consistency are always checked.
    public func validate(_ state: RecordState, rules: Bool = true) throws(ModelError) {
        guard let recordType = types[state.type] else { throw .unknownRecordType(state.type) }
        // Formatting the id costs more than the checks themselves: only on the way to an error.
        var record: String { state.id.uuidString }
        try state.checkLivenessConsistency()
        var checked = state.liveness.dot
        for (name, field) in state.fields {
            // Declared names are valid by construction; only a name from elsewhere needs a look.
            let kind = recordType.fields[name]
            if kind == nil, !Self.isValidFieldName(name) { throw .invalidFieldName(record: record, field: name) }
            switch field {
            case .register(let r):
                if let kind, !kind.accepts(r.value) {  // a counter field accepts no register
                    throw .wrongFieldType(record: record, field: name, expected: kind.rawValue, found: r.value.typeName)
                }
                try Self.checkBounds(r.value, record: record, field: name)
                if rules, kind != nil, let rule = recordType.rules[name], let reason = rule.violation(of: r.value) {
                    throw .invalidFieldValue(record: record, field: name, reason: reason)
                }
                try state.checkConsistency(of: name, r, checked: &checked)
            case .counter(let c):
                if let kind, kind != .counter {
                    throw .wrongFieldType(record: record, field: name, expected: kind.rawValue, found: "counter")
                }
                try state.checkConsistency(of: name, c)
            }
        }
        if rules { try checkRequired(state) }
    }

    private static func check(_ value: FieldValue, kind: FieldKind, record: @autoclosure () -> String, field: String) throws(ModelError) {
        guard kind.accepts(value) else {
            throw .wrongFieldType(record: record(), field: field, expected: kind.rawValue, found: value.typeName)
        }
        try checkBounds(value, record: record(), field: field)
    }

    private static func checkBounds(_ value: FieldValue, record: @autoclosure () -> String, field: String) throws(ModelError) {
        switch value {
        case .real(let v) where !v.isFinite:
            throw .invalidFieldValue(record: record(), field: field, reason: "\(v) is not a finite number")
        case .text(let v) where v.utf8.count > maxTextBytes:
            throw .invalidFieldValue(record: record(), field: field, reason: "text longer than \(maxTextBytes) bytes")
        case .blob(let v) where v.count > maxBlobBytes:
            throw .invalidFieldValue(record: record(), field: field, reason: "blob longer than \(maxBlobBytes) bytes")
        default:
            break
        }
    }
}
