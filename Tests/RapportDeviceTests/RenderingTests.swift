import CRM
import Foundation
import RapportClient
import RapportDevice
import ReplicaStore
import SyncModel
import SyncProtocol
import Testing
import TestSupport
import TLS

@Suite struct TextTableTests {
    @Test func alignsColumnsUnderTheirTitles() {
        let table = TextTable(columns: [.init("id"), .init("name"), .init("n", alignRight: true)],
                              rows: [["1", "Ada", "7"], ["22", "Grace Hopper", "123"]])
        #expect(table.render(width: 100) == """
            id  name            n
            1   Ada             7
            22  Grace Hopper  123

            """)
    }

    @Test func truncatesShrinkableColumnsToTheWidth() {
        let id = "3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41"
        let table = TextTable(columns: [.init("id", shrinkable: false), .init("name"), .init("notes")],
                              rows: [[id, "Ada Lovelace", String(repeating: "long text ", count: 20)]])
        for width in [40, 60, 80, 100] {
            let lines = table.render(width: width).split(separator: "\n")
            #expect(lines.allSatisfy { $0.count <= max(width, id.count + 2 * TextTable.gap + 2 * TextTable.minimumWidth) })
            #expect(lines[1].hasPrefix(id))   // never cut
        }
        let line = table.render(width: 80).split(separator: "\n")[1]
        #expect(line.count == 80)             // uses the whole width
        #expect(line.hasSuffix("…"))
        #expect(line.contains("Ada Lovelace"))  // the narrow column gives nothing
    }

    @Test func keepsEachRowOnOneLine() {
        let table = TextTable(columns: [.init("a"), .init("b")], rows: [["x\ny", "tab\there"]], showsHeader: false)
        #expect(table.render(width: 100) == "x y  tab here\n")
    }

    @Test func truncateMarksTheCut() {
        #expect(TextTable.truncate("abcdef", to: 4) == "abc…")
        #expect(TextTable.truncate("abc", to: 3) == "abc")
        #expect(TextTable.truncate("abc", to: 1) == "a")
    }

    @Test func terminalWidthComesFromColumns() {
        #expect(Terminal.width(environment: ["COLUMNS": "132"]) == 132)
        #expect(Terminal.width(environment: ["COLUMNS": "wide"]) == 100)
        #expect(Terminal.width(environment: [:]) == 100)
    }
}

@Suite struct JSONValueTests {
    @Test func rendersInOrderWithEscapes() throws {
        let value = JSONValue.object([
            "id": .string("a\"b\\c\nd\u{1}"), "n": .integer(-3), "x": .number(1.5), "ok": .bool(true),
            "none": .null, "list": .array([.integer(1), .array([])]), "empty": .members([]),
        ])
        #expect(value.rendered(pretty: false)
                == #"{"id":"a\"b\\c\nd\u0001","n":-3,"x":1.5,"ok":true,"none":null,"list":[1,[]],"empty":{}}"#)
        // And it is JSON that a standard parser reads back.
        let parsed = try JSONSerialization.jsonObject(with: Data(value.rendered().utf8)) as? [String: Any]
        #expect(parsed?["id"] as? String == "a\"b\\c\nd\u{1}")
        #expect(parsed?["x"] as? Double == 1.5)
    }

    @Test func prettyFormIndentsByTwo() {
        #expect(JSONValue.object(["a": .array([.integer(1)])]).rendered() == """
            {
              "a": [
                1
              ]
            }
            """)
    }
}

@Suite struct PresentationTests {
    static func record(deleted: Bool = false) throws -> RecordState {
        let dot = try Dot(replica: ReplicaID("dev"), counter: 1)
        let timestamp = HLCTimestamp(wallMilliseconds: 1_700_000_000_000, logical: 0)
        var contribution = CounterState()
        contribution.apply(12, dot: dot, timestamp: timestamp)
        return RecordState(
            id: UUID(uuidString: "3F2A6C1E-0B7D-4C36-9A51-2D7E8F9B0C41")!, type: "account",
            vector: try VersionVector([ReplicaID("dev"): 1]),
            liveness: Liveness(isDeleted: deleted, dot: dot, timestamp: timestamp),
            fields: [
                "name": .register(RegisterState(value: .text("Acme"), dot: dot, timestamp: timestamp)),
                "annual_revenue": .register(RegisterState(value: .real(2.5), dot: dot, timestamp: timestamp)),
                "tier": .register(RegisterState(value: .null, dot: dot, timestamp: timestamp)),
                "loyalty_points": .counter(contribution),
            ])
    }

    @Test func recordJSON() throws {
        let json = Presentation.json(try Self.record(), openConflicts: 1).rendered(pretty: false)
        #expect(json == #"{"id":"3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41","type":"account","deleted":false,"#
                + #""fields":{"annual_revenue":2.5,"loyalty_points":12,"name":"Acme","tier":null},"open_conflicts":1}"#)
    }

    @Test func recordText() throws {
        #expect(Presentation.text(try Self.record(deleted: true), width: 100) == """
            account 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41  (deleted; 'rapport restore' brings it back)
            annual_revenue  2.5
            loyalty_points  12
            name            Acme
            tier            null

            """)
    }

    @Test func recordTableShowsFieldsThatHoldValues() throws {
        let record = try Self.record()
        #expect(Presentation.defaultColumns(for: [record]) == ["name", "annual_revenue", "loyalty_points"])
        #expect(Presentation.table([record], width: 100) == """
            id                                    name  annual_revenue  loyalty_points
            3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41  Acme  2.5             12

            """)
    }

    /// A real conflict log entry: two stores with a fixed clock write one field concurrently.
    /// With equal timestamps the higher dot wins, so replica "b" wins, deterministically.
    static func conflict() throws -> ConflictEntry {
        let dir = try TemporaryDirectory()
        func store(_ name: String) throws -> ReplicaStore {
            var options = ReplicaStore.Options(schema: CRMSchema.current, replicaID: try ReplicaID(name))
            options.wallClock = { 1_700_000_000_000 }
            return try ReplicaStore(path: dir.path(name), options: options)
        }
        let a = try store("a"), b = try store("b")
        defer { a.close(); b.close() }
        let id = UUID(uuidString: "3F2A6C1E-0B7D-4C36-9A51-2D7E8F9B0C41")!
        try b.apply([try a.create("account", id: id, ["name": .text("Acme")])])
        try a.update(id, ["name": .text("A")])
        try b.update(id, ["name": .text("B")])
        try b.apply([try #require(try a.record(id))])
        return try #require(try b.conflicts().first)
    }

    @Test func conflictTableAndJSON() throws {
        let entry = try Self.conflict()
        #expect(Presentation.table([entry], width: 100) == """
            id  kind               record                                field  winner  loser  status
             1  concurrent_update  3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41  name   B       A      open

            """)
        let json = Presentation.json(entry)
        #expect(json["kind"] == JSONValue.string("concurrent_update"))
        #expect(json["winner"]?["value"] == JSONValue.string("B"))
        #expect(json["loser"]?["replica"] == JSONValue.string("a"))
        #expect(json["detected_at"] == JSONValue.string("2023-11-14T22:13:20Z"))
        #expect(json["reason"] == JSONValue.null)
    }
}

@Suite struct ProgressBarTests {
    @Test func drawsBarPercentRecordsAndBytes() {
        let line = ProgressBar.render(phase: "pull", recordsDone: 940, recordsTotal: 2000,
                                      bytesDone: 1_258_291, bytesTotal: 2_621_440, width: 80)
        #expect(line.count == 80)
        #expect(line.hasPrefix("pull [=========="))
        #expect(line.hasSuffix("]  47%  940/2000 records  1.2 MiB/2.5 MiB"))
    }

    @Test func exactLayout() {
        let expected = "push [====>     ]  50%  1/2 records  100 B"
        let line = ProgressBar.render(phase: "push", recordsDone: 1, recordsTotal: 2, bytesDone: 100, bytesTotal: 100,
                                      width: expected.count)
        #expect(line == expected)
    }

    @Test func neverWiderThanAskedAndDropsPartsWhenNarrow() {
        for width in 0...120 {
            let line = ProgressBar.render(phase: "push", recordsDone: 3, recordsTotal: 7, bytesDone: 5000, bytesTotal: 9000, width: width)
            #expect(line.count <= width, "width \(width): \(line)")
        }
        #expect(!ProgressBar.render(phase: "push", recordsDone: 3, recordsTotal: 7, bytesDone: 0, bytesTotal: 0, width: 25).contains("records"))
        #expect(ProgressBar.render(phase: "push", recordsDone: 3, recordsTotal: 7, bytesDone: 0, bytesTotal: 0, width: 12) == "push 42%")
    }

    @Test func nothingToDoIsComplete() {
        let line = ProgressBar.render(phase: "pull", recordsDone: 0, recordsTotal: 0, bytesDone: 0, bytesTotal: 0, width: 60)
        #expect(line.contains("100%"))
        #expect(line.contains("[" + String(repeating: "=", count: 60 - 4 - 4 - "100%  0/0 records  0 B".count) + "]"))
    }

    @Test func bytes() {
        #expect(ProgressBar.formatBytes(0) == "0 B")
        #expect(ProgressBar.formatBytes(1023) == "1023 B")
        #expect(ProgressBar.formatBytes(1536) == "1.5 KiB")
        #expect(ProgressBar.formatBytes(12 << 20) == "12.0 MiB")
    }
}

@Suite struct ExitStatusTests {
    @Test func classifiesByMeaning() {
        let id = UUID()
        #expect(DeviceError.classify(ReplicaStoreError.recordNotFound(id)).status == .notFound)
        #expect(DeviceError.classify(ReplicaStoreError.conflictNotFound(3)).status == .notFound)
        #expect(DeviceError.classify(ReplicaStoreError.recordDeleted(id)).status == .usage)
        #expect(DeviceError.classify(ModelError.unknownRecordType("x")).status == .usage)
        #expect(DeviceError.classify(SyncError(.authenticationFailed, "no")).status == .refused)
        #expect(DeviceError.classify(SyncError(.unknownTenant, "no")).status == .refused)
        #expect(DeviceError.classify(SyncError(.serverBusy, "later")).status == .syncFailed)
        // As it arrives: through a frame, retryable, with its hint.
        let received = SyncError(SyncError.storageFull().frame.error)
        #expect(received == SyncError.storageFull() && received.retryable && received.retryAfter == .seconds(30))
        let full = DeviceError.classify(received)
        #expect(full.status == .syncFailed)
        #expect(full.message.contains("storage is full") && full.message.contains("still on this device"), "\(full)")
        #expect(DeviceError.classify(TLSError(operation: .handshake, message: "bad chain")).status == .refused)
        #expect(DeviceError.classify(TLSError(operation: .pinVerification, message: "pin")).status == .refused)
        #expect(DeviceError.classify(TLSError(operation: .read, message: "reset")).status == .syncFailed)
        #expect(DeviceError.classify(ClientError.connectionLost("gone")).status == .syncFailed)
        struct Unknown: Error {}
        #expect(DeviceError.classify(Unknown(), duringSync: true).status == .syncFailed)
        #expect(DeviceError.classify(Unknown()).status == .usage)
    }

    @Test func codesAreStableAndDocumented() {
        #expect(ExitStatus.allCases.map(\.rawValue) == [0, 1, 2, 3, 4])
        for status in ExitStatus.allCases {
            #expect(ExitStatus.documentation.contains("  \(status.rawValue)  "))
        }
    }
}

@Suite struct TypeHelpTests {
    @Test func eachFieldSaysWhatItTakes() throws {
        let types = CRMSchema.current.types
        let account = try #require(types["account"]), opportunity = try #require(types["opportunity"])
        let contact = try #require(types["contact"])
        #expect(Presentation.allowedValues(of: "tier", in: account) == "text; one of vip, gold, silver, bronze, standard; computed by the CRM's rules")
        #expect(Presentation.allowedValues(of: "loyalty_points", in: account) == "counter (change with +=N, -=N)")
        #expect(Presentation.allowedValues(of: "annual_revenue", in: account) == "real; at least 0")
        #expect(Presentation.allowedValues(of: "account", in: opportunity) == "text; required; id of an account")
        #expect(Presentation.allowedValues(of: "probability", in: opportunity) == "integer; 0 to 100")
        #expect(Presentation.allowedValues(of: "stage", in: opportunity).hasSuffix(
            "a stage of the tenant's pipeline (by default prospecting, qualification, proposal, negotiation, closed_won, closed_lost)"))
        #expect(Presentation.allowedValues(of: "birthday", in: contact) == "text; date (YYYY-MM-DD)")
    }
}
