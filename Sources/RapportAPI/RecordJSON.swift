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

/// The change feed's pages written straight into bytes: a page of 1000 records went through a
/// `JSONValue` tree (a dictionary of values per record, sorted, then a `String` built scalar by
/// scalar), which cost more than reading the records. The bytes are exactly what rendering
/// `RecordJSON.render(_:)` of each decoded record gives (APITests compares them).
extension RecordJSON {
    /// `{"changes": [...], "evicted": [...], "next": N, "more": B}` of `page`.
    static func feedPage(_ page: APIFeedPage) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(64 + page.records.reduce(0) { $0 + 64 + 2 * $1.state.count })
        buffer.writeStaticString(#"{"changes":["#)
        var fields: [(name: UnsafeRawBufferPointer, value: FieldValue)] = []
        for (index, record) in page.records.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            try write(record, into: &buffer, fields: &fields)
        }
        buffer.writeStaticString("],\"evicted\":")
        buffer.writeString(JSONValue.array(page.evicted.map {
            .object(["id": .string($0.id.uuidString.lowercased()), "type": .string($0.type), "reason": .string($0.reason)])
        }).rendered(pretty: false))
        buffer.writeStaticString(",\"next\":")
        buffer.writeString(String(page.next))
        buffer.writeStaticString(page.more ? ",\"more\":true}" : ",\"more\":false}")
        return buffer
    }

    /// One record as `render(_:)` shows it, read from its encoded state in place.
    ///
    /// - Parameter fields: scratch space, reused from record to record.
    static func write(_ record: EncodedRecord, into buffer: inout ByteBuffer,
                      fields: inout [(name: UnsafeRawBufferPointer, value: FieldValue)]) throws {
        try record.state.withUnsafeBytes { state in
            fields.removeAll(keepingCapacity: true)
            let deleted = try RecordCodec.forEachValue(in: state) { fields.append(($0, $1)) }
            // `render` sorts the names; a stored state keeps them sorted (and field names are
            // ASCII, where bytes and `String` order agree). Any other state takes the long way.
            for index in fields.indices.dropFirst() where !fields[index - 1].name.lexicographicallyPrecedes(fields[index].name) {
                buffer.writeString(render(try record.decoded()).rendered(pretty: false))
                return
            }
            buffer.writeStaticString(#"{"id":""#)
            writeLowercased(record.id, into: &buffer)
            buffer.writeStaticString(#"","type":"#)
            writeString(record.type, into: &buffer)
            buffer.writeStaticString(deleted ? #","deleted":true,"fields":{"# : #","deleted":false,"fields":{"#)
            for (index, field) in fields.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                writeString(field.name, into: &buffer)
                buffer.writeInteger(UInt8(ascii: ":"))
                write(field.value, into: &buffer)
            }
            buffer.writeStaticString("}}")
        }
    }

    /// A value as `render(_: FieldValue)` and `JSONValue.rendered` write it.
    private static func write(_ value: FieldValue, into buffer: inout ByteBuffer) {
        switch value {
        case .null: buffer.writeStaticString("null")
        case .bool(let flag): buffer.writeStaticString(flag ? "true" : "false")
        case .integer(let number): buffer.writeString(String(number))
        case .real(let number): buffer.writeString(number.isFinite ? "\(number)" : "null")
        case .text(let text): writeString(text, into: &buffer)
        case .blob(let bytes): writeString(bytes.base64EncodedString(), into: &buffer)
        }
    }

    private static func writeString(_ text: String, into buffer: inout ByteBuffer) {
        var text = text
        text.withUTF8 { writeString(UnsafeRawBufferPointer($0), into: &buffer) }
    }

    /// UTF-8 text as a JSON string, escaped as `JSONValue` escapes it: quote, backslash, `\n`,
    /// `\r`, `\t`, other controls and DEL as `\u00xx`; every other byte as it is.
    private static func writeString(_ utf8: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var start = 0
        for index in utf8.indices {
            let byte = utf8[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte == 0x7F else { continue }
            if start < index { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: utf8[start..<index])) }
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            default:
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0xF)])
            }
            start = index + 1
        }
        if start < utf8.count { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: utf8[start...])) }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// `uuidString.lowercased()`, without the two strings.
    private static func writeLowercased(_ id: UUID, into buffer: inout ByteBuffer) {
        withUnsafeBytes(of: id.uuid) { bytes in
            for (index, byte) in bytes.enumerated() {
                if index == 4 || index == 6 || index == 8 || index == 10 { buffer.writeInteger(UInt8(ascii: "-")) }
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0xF)])
            }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
