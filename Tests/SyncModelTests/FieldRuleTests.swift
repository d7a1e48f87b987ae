import Foundation
@testable import SyncModel
import TestSupport
import Testing

/// `FieldRule`s as the schema enforces them: on decoded states, on local values, and on the
/// encoded fast path, which must refuse exactly what the reference refuses, with its errors.
@Suite struct FieldRuleTests {
    static let schema = Schema([
        RecordType(name: "deal", fields: [
            "name": .text, "stage": .text, "email": .text, "site": .text, "phone": .text, "close": .text,
            "at": .text, "currency": .text, "account": .text, "amount": .real, "probability": .integer, "note": .text,
        ], rules: [
            "name": .required, "stage": .oneOf(["open", "won", "lost"], required: true), "email": .formatted(.email),
            "site": .formatted(.url), "phone": .formatted(.phone), "close": .formatted(.date), "at": .formatted(.dateTime),
            "currency": .formatted(.currency), "account": .references("account"), "amount": .range(0),
            "probability": .range(0, 100),
        ]),
    ])
    static let id = UUID(uuidString: "0C8F6E2A-5B41-4D7E-9A3C-1E2F3A4B5C6D")!
    static let writer = try! ReplicaID("device-1")

    static func state(_ values: [String: FieldValue], deleted: Bool = false) -> RecordState {
        var state = RecordState.created(id: id, type: "deal", fields: values, dot: try! Dot(replica: writer, counter: 1),
                                        timestamp: HLCTimestamp(wallMilliseconds: 1_700_000_000_000, logical: 0))
        if deleted { state.delete(dot: try! Dot(replica: writer, counter: 2), timestamp: HLCTimestamp(wallMilliseconds: 1_700_000_000_001, logical: 0)) }
        return state
    }

    static let valid: [String: FieldValue] = ["name": .text("Renewal"), "stage": .text("open")]

    /// Both paths refuse `values` with the same error, which names the record and `field`.
    func expectRefused(_ values: [String: FieldValue], field: String, reason: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let state = Self.state(values)
        let expected = ModelError.invalidFieldValue(record: Self.id.uuidString, field: field, reason: reason)
        #expect(throws: expected, sourceLocation: sourceLocation) { try Self.schema.validate(state) }
        #expect(throws: expected, sourceLocation: sourceLocation) { _ = try Self.schema.validate(EncodedRecord(state)) }
        #expect(expected.description.contains(Self.id.uuidString) && expected.description.contains("'\(field)'"))
    }

    @Test func aValidRecordTakesTheFastPath() throws {
        var values = Self.valid
        values["email"] = .text("ada@example.com")
        values["site"] = .text("https://example.com/x")
        values["phone"] = .text("+44 (20) 7946-0958")
        values["close"] = .text("2024-02-29")
        values["at"] = .text("2026-11-23T08:15:00Z")
        values["currency"] = .text("EUR")
        values["account"] = .text(UUID().uuidString)
        values["amount"] = .real(0)
        values["probability"] = .integer(100)
        values["custom_unknown"] = .text("kept")  // unknown fields pass through
        let validation = try Self.schema.validate(EncodedRecord(Self.state(values)))
        #expect(validation.decodedState == nil)
        try Self.schema.validate(Self.state(values))
    }

    @Test func requiredFieldsMustBeThereAndNotEmpty() {
        expectRefused(["stage": .text("open")], field: "name", reason: "required, but missing")
        expectRefused(["stage": .text("open"), "name": .null], field: "name", reason: "required, but missing")
        expectRefused(["stage": .text("open"), "name": .text("")], field: "name", reason: "required, but empty")
    }

    /// States from upstream skip the rules (a newer schema may allow more), never the kinds.
    @Test func rulesCanBeLeftToUpstream() throws {
        let newer = Self.state(["stage": .text("paused")])  // no name, a stage this schema lacks
        try Self.schema.validate(newer, rules: false)
        let validation = try Self.schema.validate(EncodedRecord(newer), rules: false)
        #expect(validation.decodedState == nil)
        #expect(throws: ModelError.self) { try Self.schema.validate(newer) }
        let wrongKind = Self.state(["name": .integer(1), "stage": .text("open")])
        #expect(throws: ModelError.self) { try Self.schema.validate(wrongKind, rules: false) }
        #expect(throws: ModelError.self) { _ = try Self.schema.validate(EncodedRecord(wrongKind), rules: false) }
    }

    @Test func tombstonesNeedNoRequiredFields() throws {
        let tombstone = Self.state([:], deleted: true)
        try Self.schema.validate(tombstone)
        _ = try Self.schema.validate(EncodedRecord(tombstone))
    }

    @Test func everyRuleNamesTheRecordAndTheField() {
        func with(_ field: String, _ value: FieldValue) -> [String: FieldValue] {
            var values = Self.valid
            values[field] = value
            return values
        }
        expectRefused(with("stage", .text("maybe")), field: "stage", reason: "'maybe' is not one of open, won, lost")
        expectRefused(with("email", .text("ada@")), field: "email", reason: "'ada@' is not a valid e-mail address")
        expectRefused(with("site", .text("example.com")), field: "site", reason: "'example.com' is not a valid http or https URL")
        expectRefused(with("phone", .text("12-34")), field: "phone",
                      reason: "'12-34' is not a valid phone number (digits, spaces and + - ( ) ., at least 5 digits)")
        expectRefused(with("close", .text("2023-02-29")), field: "close", reason: "'2023-02-29' is not a valid date (YYYY-MM-DD)")
        expectRefused(with("at", .text("2026-11-23 08:15")), field: "at",
                      reason: "'2026-11-23 08:15' is not a valid instant (YYYY-MM-DDTHH:MM:SSZ, UTC)")
        expectRefused(with("currency", .text("eur")), field: "currency",
                      reason: "'eur' is not a valid currency code (three capital letters, ISO 4217)")
        expectRefused(with("account", .text("acme")), field: "account", reason: "'acme' is not a record id (a UUID) of a record of type account")
        expectRefused(with("amount", .real(-0.5)), field: "amount", reason: "-0.5 is below the minimum 0")
        expectRefused(with("probability", .integer(101)), field: "probability", reason: "101 is above the maximum 100")
    }

    @Test func localWritesCheckValuesButLeaveRequiredToTheEndOfTheTransaction() throws {
        #expect(throws: ModelError.invalidFieldValue(record: "r", field: "stage", reason: "'maybe' is not one of open, won, lost")) {
            try Self.schema.checkWrite(type: "deal", record: "r", field: "stage", value: .text("maybe"))
        }
        try Self.schema.checkWrite(type: "deal", record: "r", field: "name", value: .null)
    }

    @Test func formats() {
        func check(_ format: FieldRule.Format, _ text: String) -> Bool { FieldRule.formatted(format).violation(of: .text(text)) == nil }
        #expect(check(.email, "a.b+c@mail.example.org") && !check(.email, "a@b") && !check(.email, "a b@c.d")
                && !check(.email, "@c.d") && !check(.email, "a@@c.d") && !check(.email, "a@c..d"))
        #expect(check(.url, "http://x") && check(.url, "HTTPS://Example.com/a?b") && !check(.url, "ftp://x")
                && !check(.url, "https://") && !check(.url, "https://a b"))
        #expect(check(.phone, "555-0100") && !check(.phone, "call me") && !check(.phone, "1234"))
        #expect(check(.date, "2000-02-29") && !check(.date, "1900-02-29") && !check(.date, "2024-13-01") && !check(.date, "2024-1-01"))
        #expect(check(.dateTime, "1999-12-31T23:59:59Z") && !check(.dateTime, "1999-12-31T24:00:00Z")
                && !check(.dateTime, "1999-12-31T23:59:59+01:00"))
        #expect(check(.currency, "USD") && !check(.currency, "US") && !check(.currency, "USDX"))
        #expect(FieldRule.references("x").violation(of: .text(UUID().uuidString.lowercased())) == nil)
    }

    /// Random values, valid and not, for every ruled field: both paths agree on every record.
    @Test func theFastPathAgreesWithTheReferenceOnRandomValues() throws {
        var rng = SeededGenerator(seed: 0x5EED_0F1E)
        let texts = ["", "open", "won", "nope", "ada@example.com", "ada@", "https://x.example", "x.example",
                     "+1 555 0100", "55", "2024-02-29", "2023-02-29", "2026-11-23T08:15:00Z", "2026-11-23T08:15:00",
                     "EUR", "eu", UUID().uuidString, "not-a-uuid", "Renewal"]
        let fields = Self.schema.types["deal"]!.fields
        for round in 0..<2_000 {
            var values: [String: FieldValue] = [:]
            for (name, kind) in fields where Int.random(in: 0..<3, using: &rng) > 0 {
                switch kind {
                case .text: values[name] = Int.random(in: 0..<10, using: &rng) == 0 ? .null : .text(texts.randomElement(using: &rng)!)
                case .integer: values[name] = .integer(Int64.random(in: -5...105, using: &rng))
                case .real: values[name] = .real(Double.random(in: -5...5, using: &rng))
                default: break
                }
            }
            let state = Self.state(values, deleted: Int.random(in: 0..<6, using: &rng) == 0)
            var reference: ModelError?
            do { try Self.schema.validate(state) } catch { reference = error }
            do {
                let validation = try Self.schema.validate(EncodedRecord(state))
                #expect(reference == nil, "round \(round): the fast path accepts what the reference refuses: \(reference.map { "\($0)" } ?? "")")
                #expect(validation.decodedState == nil, "round \(round): a valid canonical record missed the fast path")
            } catch {
                #expect(reference != nil, "round \(round): refused \(error), but the reference accepts")
            }
        }
    }
}
