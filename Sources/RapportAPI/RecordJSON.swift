import Foundation
import NIOCore
import RapportDevice
import RapportServer
import SyncModel

/// Records as the API's JSON shows them, and the JSON a client sends as field values, by the
/// tenant's schema: so every type the schema has (and every type added later) works unchanged.
enum RecordJSON {
    /// `{"id", "type", "deleted", "fields": {...}}`; a tombstone keeps the fields it had.
    static func render(_ record: RecordState) -> JSONValue {
        .object([
            "id": .string(record.id.uuidString.lowercased()),
            "type": .string(record.type),
            "deleted": .bool(record.isDeleted),
            "fields": .object(sorted: record.values.mapValues(render)),
        ])
    }

    static func render(_ value: FieldValue) -> JSONValue {
        switch value {
        case .null: .null
        case .bool(let value): .bool(value)
        case .integer(let value): .integer(value)
        case .real(let value): .number(value)
        case .text(let value): .string(value)
        case .blob(let value): .string(value.base64EncodedString())
        }
    }

    /// The request body as a JSON object holding only the `allowing` keys.
    static func document(_ body: ByteBuffer, allowing keys: Set<String>) throws -> [String: JSONValue] {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView))
        } catch {
            throw APIProblem.badRequest("the body is not JSON: \(Self.reason(error))", kind: "malformed-json")
        }
        guard case .members(let members) = value else {
            throw APIProblem.badRequest("the body is a JSON object such as {\"fields\": {...}}", kind: "malformed-json")
        }
        var document: [String: JSONValue] = [:]
        for member in members {
            guard keys.contains(member.key) else {
                throw APIProblem(422, "validation", "Invalid request", "unknown member '\(member.key.prefix(64))'; expected \(keys.sorted().joined(separator: ", "))",
                                 field: String(member.key.prefix(64)), rule: "unknown-field")
            }
            document[member.key] = member.value
        }
        return document
    }

    /// The field values of `fields` for a record of `type`: each JSON value as the kind its
    /// field is declared with (a number for a real field, base64 text for a blob). A field the
    /// schema does not declare is passed by its JSON type, for the store to take (a tenant's
    /// custom field) or refuse (an unknown field, 422).
    static func values(_ fields: JSONValue, type: String, schema: Schema) throws -> [String: FieldValue] {
        guard case .members(let members) = fields else {
            throw APIProblem(422, "validation", "Invalid request", "'fields' is an object of field names and values", field: "fields", rule: "type")
        }
        guard let recordType = schema.types[type] else {
            throw APIProblem.notFound("no record type '\(type)'; this tenant has \(schema.types.keys.sorted().joined(separator: ", "))", kind: "unknown-type")
        }
        var values: [String: FieldValue] = [:]
        for member in members {
            let field = member.key
            func wrong(_ expected: String) -> APIProblem {
                APIProblem(422, "validation", "Invalid record", "\(type).\(field) takes \(expected), not \(Self.kind(of: member.value))",
                           field: field, rule: "type")
            }
            let value: FieldValue
            switch (recordType.fields[field], member.value) {
            case (_, .null): value = .null
            case (.counter?, _):
                throw APIProblem(422, "validation", "Invalid record", "\(type).\(field) is a counter: devices change it by increments, the API does not write it",
                                 field: field, rule: "read-only")
            case (.text?, .string(let text)), (nil, .string(let text)): value = .text(text)
            case (.integer?, .integer(let number)), (nil, .integer(let number)): value = .integer(number)
            case (.real?, .integer(let number)): value = .real(Double(number))
            case (.real?, .number(let number)), (nil, .number(let number)): value = .real(number)
            case (.boolean?, .bool(let flag)), (nil, .bool(let flag)): value = .bool(flag)
            case (.blob?, .string(let text)):
                guard let data = Data(base64Encoded: text) else { throw wrong("base64 text") }
                value = .blob(data)
            case (.text?, _): throw wrong("text")
            case (.integer?, _): throw wrong("an integer")
            case (.real?, _): throw wrong("a number")
            case (.boolean?, _): throw wrong("true or false")
            case (.blob?, _): throw wrong("base64 text")
            case (nil, _): throw wrong("text, a number or true/false")
            }
            values[field] = value
        }
        return values
    }

    static func kind(of value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .number: "a number"
        case .string: "text"
        case .array: "an array"
        case .members: "an object"
        }
    }

    private static func reason(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return (context.underlyingError.map { "\($0)" } ?? context.debugDescription).prefix(200).description
        }
        return "\(error)".prefix(200).description
    }
}
