import CRM
import Foundation
import RapportDevice
import SyncModel
import Testing

@Suite struct ValueParserTests {
    let schema = CRMSchema.current

    @Test func parsesEachKind() throws {
        #expect(try ValueParser.parse("Ada Lovelace", kind: .text, field: "name") == .text("Ada Lovelace"))
        #expect(try ValueParser.parse("  spaced ", kind: .text, field: "name") == .text("  spaced "))
        #expect(try ValueParser.parse("-42", kind: .integer, field: "n") == .integer(-42))
        #expect(try ValueParser.parse("9223372036854775807", kind: .integer, field: "n") == .integer(.max))
        #expect(try ValueParser.parse("12.5", kind: .real, field: "x") == .real(12.5))
        #expect(try ValueParser.parse("1e6", kind: .real, field: "x") == .real(1_000_000))
        #expect(try ValueParser.parse("3", kind: .real, field: "x") == .real(3))
        #expect(try ValueParser.parse("aGk=", kind: .blob, field: "b") == .blob(Data("hi".utf8)))
    }

    @Test(arguments: [("true", true), ("TRUE", true), ("yes", true), ("1", true),
                      ("false", false), ("No", false), ("0", false)])
    func parsesBooleanWords(word: String, value: Bool) throws {
        #expect(try ValueParser.parse(word, kind: .boolean, field: "do_not_call") == .bool(value))
    }

    @Test(arguments: [FieldKind.text, .integer, .real, .boolean, .blob])
    func emptyAndNullAreNull(kind: FieldKind) throws {
        #expect(try ValueParser.parse("", kind: kind, field: "f") == .null)
        #expect(try ValueParser.parse("null", kind: kind, field: "f") == .null)
    }

    @Test(arguments: [
        ("abc", FieldKind.integer), ("1.5", .integer), ("99999999999999999999", .integer), (" 1", .integer),
        ("abc", .real), ("inf", .real), ("nan", .real), ("1e400", .real),
        ("maybe", .boolean), ("2", .boolean), ("not base64!", .blob),
    ])
    func refusesBadValuesNamingTheField(text: String, kind: FieldKind) {
        let error = #expect(throws: DeviceError.self) { try ValueParser.parse(text, kind: kind, field: "the_field") }
        #expect(error?.status == .usage)
        #expect(error?.message.contains("'the_field'") == true)
        #expect(error?.message.contains(kind.rawValue) == true)
    }

    @Test func assignmentsAndCounters() throws {
        let edit = try ValueParser.parseEdit(
            ["name=Acme", "annual_revenue=1.5e6", "tier=", "loyalty_points+=10"], type: "account", schema: schema)
        #expect(edit.values == ["name": .text("Acme"), "annual_revenue": .real(1.5e6), "tier": .null])
        #expect(edit.increments == ["loyalty_points": 10])
        let minus = try ValueParser.parseEdit(["loyalty_points-=3"], type: "account", schema: schema)
        #expect(minus.increments == ["loyalty_points": -3])
        // Everything after the first '=' is the value, '=' included.
        let text = try ValueParser.parseEdit(["website=https://x.example/?a=b"], type: "account", schema: schema)
        #expect(text.values["website"] == .text("https://x.example/?a=b"))
    }

    @Test(arguments: [
        (["nickname=Al"], "nickname"),                 // unknown field
        (["loyalty_points=5"], "loyalty_points"),      // a counter is not set
        (["name+=5"], "name"),                         // only counters take +=
        (["loyalty_points+=many"], "loyalty_points"),
        (["name=A", "name=B"], "name"),                // given twice
        (["annual_revenue=lots"], "annual_revenue"),
    ])
    func refusesBadAssignmentsNamingTheField(arguments: [String], field: String) {
        let error = #expect(throws: DeviceError.self) { try ValueParser.parseEdit(arguments, type: "account", schema: schema) }
        #expect(error?.status == .usage)
        #expect(error?.message.contains("'\(field)'") == true)
    }

    @Test func refusesUnknownTypeListingTheTypes() {
        let error = #expect(throws: DeviceError.self) { try ValueParser.parseEdit(["a=b"], type: "gizmo", schema: schema) }
        #expect(error?.message.contains("'gizmo'") == true)
        #expect(error?.message.contains("account, activity, campaign, campaign_member, case, contact") == true)
    }

    @Test func refusesArgumentsThatAreNotAssignments() {
        #expect(throws: DeviceError.self) { try ValueParser.parseEdit(["Acme"], type: "account", schema: schema) }
        #expect(throws: DeviceError.self) { try ValueParser.parseEdit(["=Acme"], type: "account", schema: schema) }
    }
}
