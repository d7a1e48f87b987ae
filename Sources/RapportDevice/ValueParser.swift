import Foundation
import SyncModel

/// One `field=value` (or `field+=N`, `field-=N`) argument of `rapport put`, checked against the
/// schema.
public enum FieldAssignment: Sendable, Equatable {
    /// Set a register field; `.null` clears it.
    case set(field: String, value: FieldValue)
    /// Change a counter field by `amount` (negative to subtract).
    case add(field: String, amount: Int64)

    /// The field assigned.
    public var field: String {
        switch self {
        case .set(let field, _), .add(let field, _): field
        }
    }
}

/// The whole change one `put` makes: checked completely before anything is written, so a bad
/// argument anywhere on the command line leaves the store untouched.
public struct RecordEdit: Sendable, Equatable {
    /// Register fields to set (`.null` clears).
    public var values: [String: FieldValue] = [:]
    /// Counter fields to change, by signed amount.
    public var increments: [String: Int64] = [:]

    /// An edit of these values and increments.
    public init(values: [String: FieldValue] = [:], increments: [String: Int64] = [:]) {
        self.values = values
        self.increments = increments
    }

    /// Whether the edit changes nothing (refused for an update, allowed for a create).
    public var isEmpty: Bool { values.isEmpty && increments.isEmpty }
}

/// Turns command-line text into field values, by the kind the schema gives the field.
///
/// Command lines are typed by people, so the parser is strict (a value is never guessed into
/// another kind) and every error names the field and says what would have been accepted.
public enum ValueParser {
    /// The words accepted for booleans, lowercased.
    public static let trueWords: Set<String> = ["true", "yes", "1"]
    public static let falseWords: Set<String> = ["false", "no", "0"]

    /// Parses `text` as a value of a field of `kind`. An empty text or `null` is the null value,
    /// for every kind: a text field cannot be set to the word "null" from the command line.
    public static func parse(_ text: String, kind: FieldKind, field: String) throws(DeviceError) -> FieldValue {
        if text.isEmpty || text == "null" { return .null }
        func invalid(_ what: String) -> DeviceError {
            .usage("field '\(field)' (\(kind.rawValue)): '\(text.prefix(60))' is not \(what)")
        }
        switch kind {
        case .text:
            guard text.utf8.count <= Schema.maxTextBytes else {
                throw .usage("field '\(field)' (text): longer than \(Schema.maxTextBytes) bytes")
            }
            return .text(text)
        case .integer:
            guard let value = Int64(text) else { throw invalid("an integer between \(Int64.min) and \(Int64.max)") }
            return .integer(value)
        case .real:
            guard let value = Double(text), value.isFinite else { throw invalid("a finite number (e.g. 12.5 or 1e6)") }
            return .real(value)
        case .boolean:
            let word = text.lowercased()
            if trueWords.contains(word) { return .bool(true) }
            if falseWords.contains(word) { return .bool(false) }
            throw invalid("a boolean (true/false, yes/no, 1/0)")
        case .blob:
            guard let data = Data(base64Encoded: text) else { throw invalid("base64") }
            guard data.count <= Schema.maxBlobBytes else {
                throw .usage("field '\(field)' (blob): longer than \(Schema.maxBlobBytes) bytes")
            }
            return .blob(data)
        case .counter:
            throw .usage("field '\(field)' is a counter: change it with \(field)+=N or \(field)-=N")
        }
    }

    /// The record type, or an error listing the ones that exist.
    public static func recordType(_ type: String, in schema: Schema) throws(DeviceError) -> RecordType {
        guard let recordType = schema.types[type] else {
            throw .usage("unknown record type '\(type)'; the types are: \(schema.types.keys.sorted().joined(separator: ", "))")
        }
        return recordType
    }

    /// The kind of `field` of `type`, or an error listing the fields that exist.
    public static func kind(of field: String, in recordType: RecordType) throws(DeviceError) -> FieldKind {
        guard let kind = recordType.fields[field] else {
            throw .usage("\(recordType.name) has no field '\(field)'; its fields are: \(recordType.fields.keys.sorted().joined(separator: ", "))")
        }
        return kind
    }

    /// Parses one `field=value`, `field+=N` or `field-=N` argument.
    public static func parseAssignment(_ argument: String, recordType: RecordType) throws(DeviceError) -> FieldAssignment {
        guard let equals = argument.firstIndex(of: "=") else {
            throw .usage("'\(argument.prefix(60))' is not field=value (or field+=N for a counter)")
        }
        var name = argument[..<equals]
        let text = String(argument[argument.index(after: equals)...])
        var sign: Int64?
        if name.hasSuffix("+") { sign = 1 } else if name.hasSuffix("-") { sign = -1 }
        if sign != nil { name = name.dropLast() }
        let field = String(name)
        guard !field.isEmpty else { throw .usage("'\(argument.prefix(60))' has no field name before '='") }
        let kind = try kind(of: field, in: recordType)
        guard let sign else { return .set(field: field, value: try parse(text, kind: kind, field: field)) }
        guard kind == .counter else {
            throw .usage("field '\(field)' is \(kind.rawValue), not a counter: set it with \(field)=VALUE")
        }
        guard let amount = Int64(text), amount != Int64.min else {
            throw .usage("field '\(field)' (counter): '\(text.prefix(60))' is not a whole number to add")
        }
        return .add(field: field, amount: sign * amount)
    }

    /// Parses one `field=value` condition of `list --where`: the value is read by the field's
    /// kind (a counter's total as an integer), and `field=` matches records where it is unset.
    public static func parseCondition(_ argument: String, recordType: RecordType) throws(DeviceError) -> (field: String, value: FieldValue) {
        guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
            throw .usage("'\(argument.prefix(60))' is not field=value")
        }
        let field = String(argument[..<equals])
        let kind = try kind(of: field, in: recordType)
        return (field, try parse(String(argument[argument.index(after: equals)...]), kind: kind == .counter ? .integer : kind, field: field))
    }

    /// Parses every assignment of one `put`; a field named twice is refused rather than letting
    /// the last one silently win.
    public static func parseEdit(_ arguments: [String], type: String, schema: Schema) throws(DeviceError) -> RecordEdit {
        let recordType = try recordType(type, in: schema)
        var edit = RecordEdit()
        var seen: Set<String> = []
        for argument in arguments {
            let assignment = try parseAssignment(argument, recordType: recordType)
            guard seen.insert(assignment.field).inserted else {
                throw .usage("field '\(assignment.field)' is given more than once")
            }
            switch assignment {
            case .set(let field, let value): edit.values[field] = value
            case .add(let field, let amount): edit.increments[field] = amount
            }
        }
        return edit
    }
}
