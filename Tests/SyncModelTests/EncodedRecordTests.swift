import Foundation
@testable import SyncModel
import TestSupport
import Testing
import TestScheduling

/// `Schema.validate(_: EncodedRecord)` against its reference, decoding and then
/// `Schema.validate(_: RecordState)`: the two must refuse exactly the same records, and whatever
/// the fast path takes as canonical must be what `RecordCodec` writes.
///
/// Hand-made records with a single fault must be refused with the reference's own error.
@Suite struct EncodedRecordTests {
    static let schema = Schema([
        RecordType(name: "contact", fields: [
            "name": .text, "age": .integer, "score": .real, "vip": .boolean, "photo": .blob,
            "points": .counter, "visits": .counter,
        ]),
        RecordType(name: "account", fields: ["name": .text]),
    ])
    static let id = UUID(uuidString: "6A1B0E5C-2F1D-4C55-9E3B-0C5D3E8F7A11")!

    // MARK: Reference

    enum Verdict: Equatable {
        case refused(ModelError)
        case accepted(RecordState)
    }

    static func reference(_ record: EncodedRecord) -> Verdict {
        do {
            let state = try record.decoded()
            try schema.validate(state)
            return .accepted(state)
        } catch {
            return .refused(error)
        }
    }

    /// Runs both and checks they agree; returns the validation when both accept.
    @discardableResult
    static func compare(_ record: EncodedRecord, _ note: @autoclosure () -> String) -> EncodedRecord.Validation? {
        let expected = reference(record)
        let validation: EncodedRecord.Validation
        do {
            validation = try schema.validate(record)
        } catch {
            // Which fault is named when there are several follows the reference's dictionary
            // order, which differs from one decoded dictionary to the next: compare verdicts.
            if case .accepted = expected { Issue.record("\(note()): refused with \(error), but the reference accepts") }
            return nil
        }
        guard case .accepted(let state) = expected else {
            Issue.record("\(note()): accepted, but the reference refuses: \(expected)")
            return nil
        }
        #expect(validation.isDeleted == state.isDeleted, "\(note())")
        #expect(validation.latestTimestamp == state.latestTimestamp, "\(note())")
        if let decoded = validation.decodedState {
            #expect(decoded == state, "\(note())")
        } else {
            // Taken as canonical: it must be byte for byte what the encoder writes.
            #expect(RecordCodec.encode(state.vector) == record.vector, "\(note()): vector taken as canonical but is not")
            #expect(RecordCodec.encodeState(state) == record.state, "\(note()): state taken as canonical but is not")
        }
        return validation
    }

    // MARK: Random valid states

    static let replicaNames = ["a", "B", "r-1", "x.y:z", "_", "device-7f3e", "Z9", "aa"]
    static let unknownNames = ["extra", "Zed", "_x", "notes2", "a"]

    static func randomState(_ rng: inout SeededGenerator) -> RecordState {
        func counter() -> UInt64 {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: UInt64(Int64.max) - UInt64.random(in: 0...3, using: &rng)
            case 1: UInt64.random(in: 1...127, using: &rng)
            default: UInt64.random(in: 1...1_000_000, using: &rng)
            }
        }
        func timestamp() -> HLCTimestamp {
            Bool.random(using: &rng) ? HLCTimestamp(rawValue: UInt64.random(in: 0...UInt64(Int64.max), using: &rng))
                : HLCTimestamp(wallMilliseconds: 1_700_000_000_000 + UInt64.random(in: 0...1_000, using: &rng), logical: 0)
        }
        var entries: [ReplicaID: UInt64] = [:]
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            entries[try! ReplicaID(replicaNames.randomElement(using: &rng)!)] = counter()
        }
        let vector = try! VersionVector(entries)
        let replicas = Array(entries.keys)
        func dot() -> Dot {
            let replica = replicas.randomElement(using: &rng)!
            return try! Dot(replica: replica, counter: UInt64.random(in: 1...vector[replica], using: &rng))
        }
        func value(_ kind: FieldKind?) -> FieldValue {
            if Int.random(in: 0..<8, using: &rng) == 0 { return .null }
            switch kind ?? [.text, .integer, .real, .boolean, .blob].randomElement(using: &rng)! {
            case .text:
                return .text(["", "Ada", "héllo ✓ 𝄞", String(repeating: "x", count: Int.random(in: 0...300, using: &rng)), "naïve café"]
                    .randomElement(using: &rng)!)
            case .integer: return .integer([0, -1, 1, 63, -64, 64, Int64.min, Int64.max, Int64.random(in: .min ... .max, using: &rng)].randomElement(using: &rng)!)
            case .real: return .real([0, -0.0, 1.5, -1e300, .leastNonzeroMagnitude, .greatestFiniteMagnitude, Double.random(in: -1e9...1e9, using: &rng)].randomElement(using: &rng)!)
            case .boolean: return .bool(Bool.random(using: &rng))
            case .blob: return .blob(Data((0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0 ... .max, using: &rng) }))
            case .counter: return .null
            }
        }
        var fields: [String: FieldState] = [:]
        let declared = schema.types["contact"]!.fields
        for (name, kind) in declared where Bool.random(using: &rng) {
            if kind == .counter {
                var contributions: [ReplicaID: CounterContribution] = [:]
                for replica in replicas where Bool.random(using: &rng) {
                    contributions[replica] = CounterContribution(
                        added: UInt64.random(in: 0 ... .max, using: &rng) >> UInt64.random(in: 0...63, using: &rng),
                        subtracted: UInt64.random(in: 0...1_000, using: &rng),
                        lastCounter: UInt64.random(in: 1...vector[replica], using: &rng), lastTimestamp: timestamp())
                }
                fields[name] = .counter(CounterState(contributions: contributions))
            } else {
                fields[name] = .register(RegisterState(value: value(kind), dot: dot(), timestamp: timestamp()))
            }
        }
        for name in unknownNames where Int.random(in: 0..<4, using: &rng) == 0 {
            fields[name] = Int.random(in: 0..<5, using: &rng) == 0
                ? .counter(CounterState(contributions: [replicas[0]: CounterContribution(added: 1, subtracted: 0, lastCounter: 1, lastTimestamp: timestamp())]))
                : .register(RegisterState(value: value(nil), dot: dot(), timestamp: timestamp()))
        }
        let deleted = Int.random(in: 0..<3, using: &rng) == 0
        var context: [ReplicaID: UInt64] = [:]
        if deleted || Int.random(in: 0..<10, using: &rng) == 0 {
            for replica in replicas where Bool.random(using: &rng) { context[replica] = UInt64.random(in: 1...vector[replica], using: &rng) }
        }
        return RecordState(
            id: id, type: "contact", vector: vector,
            liveness: Liveness(isDeleted: deleted, dot: dot(), timestamp: timestamp(), deletionContext: try! VersionVector(context)),
            fields: fields)
    }

    @Test(.blocking) func validStatesAreAcceptedOnTheFastPath() throws {
        var rng = SeededGenerator(seed: 0x5EED_0001)
        for round in 0..<500 {
            let state = Self.randomState(&rng)
            let record = EncodedRecord(state)
            let validation = Self.compare(record, "round \(round)")
            #expect(validation != nil && validation?.decodedState == nil, "round \(round): a valid state from the encoder missed the fast path")
            #expect(try record.decoded() == state)
        }
    }

    @Test(.blocking) func mutatedRecordsAreRefusedExactlyWhenTheReferenceRefusesThem() {
        var rng = SeededGenerator(seed: 0x5EED_0002)
        var accepted = 0, refused = 0
        for round in 0..<400 {
            let original = EncodedRecord(Self.randomState(&rng))
            for mutation in 0..<25 {
                var record = original
                let inVector = Int.random(in: 0..<6, using: &rng) == 0
                var bytes = inVector ? record.vector : record.state
                let special: [UInt8] = [0, 1, 2, 5, 6, 0x7f, 0x80, 0xbf, 0xc0, 0xe0, 0xed, 0xf4, 0xff]
                for _ in 0..<Int.random(in: 1...2, using: &rng) {
                    let position = Int.random(in: 0..<max(bytes.count, 1), using: &rng)
                    switch Int.random(in: 0..<6, using: &rng) {
                    case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                    case 1 where !bytes.isEmpty: bytes[position] = special.randomElement(using: &rng)!
                    case 2: bytes.removeLast(Int.random(in: 0...min(3, bytes.count), using: &rng))
                    case 3: bytes.insert(special.randomElement(using: &rng)!, at: min(position, bytes.count))
                    case 4 where !bytes.isEmpty: bytes.remove(at: position)
                    default: bytes.append(special.randomElement(using: &rng)!)
                    }
                }
                if inVector { record.vector = bytes } else { record.state = bytes }
                if Self.compare(record, "round \(round), mutation \(mutation)") != nil { accepted += 1 } else { refused += 1 }
            }
        }
        // Both kinds must be well represented, or the comparison proves little.
        #expect(accepted > 500 && refused > 2_000, "accepted \(accepted), refused \(refused)")
    }

    // MARK: Hand-made records

    /// Writes encodings by hand, including ones `RecordCodec` never writes.
    struct Bytes {
        var bytes: [UInt8] = []
        mutating func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 { bytes.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
            bytes.append(UInt8(v))
        }
        mutating func raw(_ b: [UInt8]) { bytes += b }
        mutating func string(_ s: String) { data(Array(s.utf8)) }
        mutating func data(_ b: [UInt8]) { varint(UInt64(b.count)); bytes += b }
    }

    static func vector(_ entries: [(String, UInt64)]) -> [UInt8] {
        var w = Bytes()
        w.varint(UInt64(entries.count))
        for (name, counter) in entries { w.string(name); w.varint(counter) }
        return w.bytes
    }

    /// A state over a vector whose first entry has counter 5: liveness dot (0, 1), then `fields`
    /// (already encoded, count included by the caller through `fieldCount`).
    static func state(deleted: UInt8 = 0, context: [(UInt64, UInt64)] = [], fieldCount: Int, _ fields: (inout Bytes) -> Void) -> [UInt8] {
        var w = Bytes()
        w.raw([1, deleted])
        w.varint(0); w.varint(1); w.varint(1_000)
        w.varint(UInt64(context.count))
        for (index, counter) in context { w.varint(index); w.varint(counter) }
        w.varint(UInt64(fieldCount))
        fields(&w)
        return w.bytes
    }

    static func register(_ w: inout Bytes, _ name: String, value: [UInt8], dot: (UInt64, UInt64) = (0, 1), time: UInt64 = 2_000) {
        w.string(name); w.raw([0]); w.raw(value); w.varint(dot.0); w.varint(dot.1); w.varint(time)
    }

    static func text(_ s: [UInt8]) -> [UInt8] { var w = Bytes(); w.raw([5]); w.data(s); return w.bytes }
    static func real(_ d: Double) -> [UInt8] { [4] + withUnsafeBytes(of: d.bitPattern.littleEndian) { Array($0) } }

    static let twoReplicas = vector([("a", 5), ("b", 3)])

    func record(type: String = "contact", vector: [UInt8] = EncodedRecordTests.twoReplicas, _ state: [UInt8]) -> EncodedRecord {
        EncodedRecord(id: Self.id, type: type, vector: vector, state: state)
    }

    @Test(.blocking) func invalidRecordsAreRefusedByBoth() {
        let s = Self.self
        let cases: [(String, EncodedRecord)] = [
            ("unknown type", record(type: "spaceship", s.state(fieldCount: 0) { _ in })),
            ("text in an integer field", record(s.state(fieldCount: 1) { s.register(&$0, "age", value: s.text(Array("forty".utf8))) })),
            ("NaN", record(s.state(fieldCount: 1) { s.register(&$0, "score", value: s.real(.nan)) })),
            ("infinity", record(s.state(fieldCount: 1) { s.register(&$0, "score", value: s.real(-.infinity)) })),
            ("register in a counter field", record(s.state(fieldCount: 1) { s.register(&$0, "points", value: [3, 2]) })),
            ("null in a counter field", record(s.state(fieldCount: 1) { s.register(&$0, "points", value: [0]) })),
            ("counter in a text field", record(s.state(fieldCount: 1) { $0.string("name"); $0.raw([1, 0]) })),
            ("unknown field with a space", record(s.state(fieldCount: 1) { s.register(&$0, "bad name", value: [0]) })),
            ("unknown field starting with a digit", record(s.state(fieldCount: 1) { s.register(&$0, "9lives", value: [0]) })),
            ("empty field name", record(s.state(fieldCount: 1) { s.register(&$0, "", value: [0]) })),
            ("non-ASCII field name", record(s.state(fieldCount: 1) { s.register(&$0, "名前", value: [0]) })),
            ("NaN in an unknown field", record(s.state(fieldCount: 1) { s.register(&$0, "extra", value: s.real(.nan)) })),
            ("dot beyond the vector", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: [0], dot: (1, 4)) })),
            ("dot counter zero", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: [0], dot: (0, 0)) })),
            ("dot of a replica outside the vector", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: [0], dot: (2, 1)) })),
            ("deletion context beyond the vector", record(s.state(deleted: 1, context: [(0, 6)], fieldCount: 0) { _ in })),
            ("deletion context of a replica outside", record(s.state(deleted: 1, context: [(2, 1)], fieldCount: 0) { _ in })),
            ("counter contribution with last counter zero", record(s.state(fieldCount: 1) {
                $0.string("points"); $0.raw([1, 1, 0, 5, 0, 0, 7]) })),
            ("counter contribution beyond the vector", record(s.state(fieldCount: 1) {
                $0.string("points"); $0.raw([1, 1, 1, 5, 0, 4, 7]) })),
            ("trailing byte in the state", record(s.state(fieldCount: 0) { $0.raw([0]) })),
            ("truncated state", record(Array(s.state(fieldCount: 1) { s.register(&$0, "name", value: [0]) }.dropLast()))),
            ("trailing byte in the vector", record(vector: s.twoReplicas + [0], s.state(fieldCount: 0) { _ in })),
            ("invalid UTF-8", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: s.text([0x41, 0xC3, 0x28])) })),
            ("overlong UTF-8", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: s.text([0xC0, 0xAF])) })),
            ("UTF-8 surrogate", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: s.text([0xED, 0xA0, 0x80])) })),
            ("UTF-8 beyond U+10FFFF", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: s.text([0xF4, 0x90, 0x80, 0x80])) })),
            ("text too long", record(s.state(fieldCount: 1) {
                s.register(&$0, "name", value: s.text([UInt8](repeating: 0x61, count: Schema.maxTextBytes + 1))) })),
            ("blob too long", record(s.state(fieldCount: 1) {
                var w = Bytes(); w.raw([6]); w.data([UInt8](repeating: 0, count: Schema.maxBlobBytes + 1))
                s.register(&$0, "photo", value: w.bytes) })),
            ("unknown value tag", record(s.state(fieldCount: 1) { s.register(&$0, "name", value: [7]) })),
            ("unknown field kind", record(s.state(fieldCount: 1) { $0.string("name"); $0.raw([2]) })),
            ("format version 2", record([2] + s.state(fieldCount: 0) { _ in }.dropFirst())),
            ("deletion flag 2", record(s.state(deleted: 2, fieldCount: 0) { _ in })),
            ("timestamp beyond Int64.max", record(s.state(fieldCount: 1) {
                s.register(&$0, "name", value: [0], time: UInt64(Int64.max) + 1) })),
            ("invalid replica id", record(vector: s.vector([("a b", 5)]), s.state(fieldCount: 0) { _ in })),
            ("replica id too long", record(vector: s.vector([(String(repeating: "r", count: 65), 5)]), s.state(fieldCount: 0) { _ in })),
            ("vector counter zero", record(vector: s.vector([("a", 0), ("b", 3)]), s.state(fieldCount: 0) { _ in })),
            ("vector counter beyond Int64.max", record(vector: s.vector([("a", UInt64(Int64.max) + 1)]), s.state(fieldCount: 0) { _ in })),
            ("empty vector", record(vector: s.vector([]), s.state(fieldCount: 0) { _ in })),
            ("liveness beyond the vector", record(vector: s.vector([("a", 5)]), {
                var w = Bytes(); w.raw([1, 0]); w.varint(0); w.varint(6); w.varint(1); w.varint(0); w.varint(0); return w.bytes }())),
            ("a varint of 11 bytes", record(s.state(fieldCount: 1) {
                s.register(&$0, "name", value: [0]); $0.bytes.removeLast(); $0.raw([UInt8](repeating: 0xff, count: 10) + [1]) })),
            ("a later duplicate of an invalid field", record(s.state(fieldCount: 2) {
                s.register(&$0, "name", value: s.text(Array("x".utf8)))
                s.register(&$0, "name", value: s.real(1)) })),
        ]
        for (name, record) in cases {
            guard case .refused(let expected) = Self.reference(record) else {
                Issue.record("\(name): the reference accepts it")
                continue
            }
            #expect(throws: expected, "\(name)") { try Self.schema.validate(record) }
        }
    }

    @Test(.blocking) func validRecordsInFormsTheEncoderNeverWritesAreAcceptedAndDecoded() {
        let s = Self.self
        var overlong = Bytes()
        overlong.raw([1, 0]); overlong.varint(0); overlong.raw([0x81, 0x00]); overlong.varint(1_000); overlong.varint(0); overlong.varint(0)
        let cases: [(String, EncodedRecord)] = [
            ("vector out of order", record(vector: s.vector([("b", 3), ("a", 5)]), s.state(fieldCount: 1) {
                s.register(&$0, "name", value: [0], dot: (1, 3)) })),
            ("vector with a repeated replica", record(vector: s.vector([("a", 2), ("a", 5), ("b", 3)]), s.state(fieldCount: 0) { _ in })),
            ("overlong varint", record(overlong.bytes)),
            ("fields out of order", record(s.state(fieldCount: 2) {
                s.register(&$0, "name", value: [0]); s.register(&$0, "age", value: [3, 4]) })),
            ("an invalid field overwritten by a later duplicate", record(s.state(fieldCount: 2) {
                s.register(&$0, "name", value: s.real(1)); s.register(&$0, "name", value: s.text(Array("x".utf8))) })),
            ("zero entry in the deletion context", record(s.state(deleted: 1, context: [(0, 0), (1, 3)], fieldCount: 0) { _ in })),
            ("deletion context out of order", record(s.state(deleted: 1, context: [(1, 3), (0, 5)], fieldCount: 0) { _ in })),
            ("counter contributions out of order", record(s.state(fieldCount: 1) {
                $0.string("points"); $0.raw([1, 2, 1, 5, 0, 3, 7, 0, 1, 0, 1, 7]) })),
        ]
        for (name, record) in cases {
            let validation = Self.compare(record, name)
            #expect(validation != nil && validation?.decodedState != nil, "\(name): expected accepted and decoded")
        }
        // The canonical forms of the same states take the fast path.
        let canonical = record(s.state(fieldCount: 2) { s.register(&$0, "age", value: [3, 4]); s.register(&$0, "name", value: [0]) })
        #expect(Self.compare(canonical, "canonical")?.decodedState == nil)
    }

    @Test(.blocking) func recordsOfADeclaredNonASCIIFieldTakeTheReferencePath() throws {
        let schema = Schema([RecordType(name: "contact", fields: ["café": .text])])
        var w = Bytes()
        w.raw([1, 0]); w.varint(0); w.varint(1); w.varint(1_000); w.varint(0); w.varint(1)
        Self.register(&w, "café", value: Self.text(Array("x".utf8)))
        let record = EncodedRecord(id: Self.id, type: "contact", vector: Self.vector([("a", 5)]), state: w.bytes)
        let validation = try schema.validate(record)
        #expect(validation.decodedState == (try record.decoded()))
    }

    /// The texts a check notes (`CheckedRecords(_:against:texts:)`, for a pull that indexes
    /// them) are exactly the text values the decoded state holds in the fields asked for, for a
    /// record the fast path accepts; a record it refused or decoded has none.
    @Test(.blocking) func theTextsACheckNotesAreThoseOfTheDecodedState() throws {
        var rng = SeededGenerator(seed: 0x5EED_0003)
        var records: [EncodedRecord] = []
        for _ in 0..<300 {
            var record = EncodedRecord(Self.randomState(&rng))
            if Int.random(in: 0..<3, using: &rng) == 0, !record.state.isEmpty {
                record.state[Int.random(in: 0..<record.state.count, using: &rng)] ^= 1 << UInt8.random(in: 0...7, using: &rng)
            }
            records.append(record)
        }
        records.append(record(type: "account", Self.state(fieldCount: 1) { Self.register(&$0, "name", value: Self.text(Array("Zoë Ång".utf8))) }))
        let wanted = ["contact": ["photo", "name", "age", "extra"], "account": ["name"]]
        let checked = CheckedRecords(records, against: Self.schema, texts: wanted)
        var noted = Array(repeating: [String: String](), count: records.count)
        for span in checked.texts {
            let record = checked.records[Int(span.record)]
            let text = record.state[Int(span.start)..<Int(span.start + span.count)]
            let field = wanted[record.type]![Int(span.field)]
            #expect(noted[Int(span.record)][field] == nil, "record \(span.record): \(field) noted twice")
            noted[Int(span.record)][field] = String(decoding: text, as: UTF8.self)
        }
        #expect(zip(checked.texts, checked.texts.dropFirst()).allSatisfy { $0.record <= $1.record }, "spans out of record order")
        var fast = 0, withTexts = 0
        for (index, (record, outcome)) in zip(records, checked.outcomes).enumerated() {
            guard case .success(let validation) = outcome, validation.decodedState == nil else {
                #expect(noted[index].isEmpty, "record \(index): texts noted for a record the fast path did not take")
                continue
            }
            fast += 1
            let state = try record.decoded()
            var expected: [String: String] = [:]
            for field in wanted[record.type]! {
                // Only declared fields are noted: "extra" is one the random states may hold undeclared.
                guard Self.schema.types[record.type]!.fields[field] != nil, case .text(let text)? = state.fields[field]?.value else { continue }
                expected[field] = text
            }
            #expect(noted[index] == expected, "record \(index)")
            if !expected.isEmpty { withTexts += 1 }
        }
        #expect(fast > 150 && withTexts > 50 && fast < records.count, "fast \(fast), with texts \(withTexts) of \(records.count)")
        #expect(noted.last == ["name": "Zoë Ång"])
        // Asking for no texts notes none.
        #expect(CheckedRecords(records, against: Self.schema).texts.isEmpty)
    }

    @Test(.blocking) func peerRecordsNeedAnIdOf16BytesAndATypeName() throws {
        let sixteen = [UInt8](repeating: 7, count: 16)
        let record = try sixteen.withUnsafeBytes { try EncodedRecord(idBytes: $0, type: "contact", vector: [], state: []) }
        #expect(record.id.bytes == sixteen)
        #expect(throws: ModelError.self) { try [UInt8](repeating: 7, count: 15).withUnsafeBytes { try EncodedRecord(idBytes: $0, type: "contact", vector: [], state: []) } }
        #expect(throws: ModelError.self) { try sixteen.withUnsafeBytes { try EncodedRecord(idBytes: $0, type: "", vector: [], state: []) } }
        #expect(throws: ModelError.self) {
            try sixteen.withUnsafeBytes { try EncodedRecord(idBytes: $0, type: String(repeating: "t", count: 65), vector: [], state: []) }
        }
    }

    // MARK: UTF-8

    /// Texts are checked without making `String`s: the check must agree with `String(validating:)`.
    @Test(.blocking) func utf8CheckAgreesWithTheStandardLibrary() {
        func agrees(_ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { isValidUTF8($0) } == (String(validating: bytes, as: UTF8.self) != nil)
        }
        var disagreements: [[UInt8]] = []
        for a in 0...255 {
            for b in 0...255 where !agrees([UInt8(a), UInt8(b)]) { disagreements.append([UInt8(a), UInt8(b)]) }
        }
        let tails: [UInt8] = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff]
        for a in 0xc0...0xff {
            for b in 0...255 {
                for c in tails {
                    if !agrees([UInt8(a), UInt8(b), c]) { disagreements.append([UInt8(a), UInt8(b), c]) }
                    if a >= 0xf0, !agrees([UInt8(a), UInt8(b), c, 0x80]) { disagreements.append([UInt8(a), UInt8(b), c, 0x80]) }
                }
            }
        }
        // After an ASCII run of each length around the 8-byte steps, and mixed texts.
        for prefix in 0...17 {
            let ascii = [UInt8](repeating: 0x61, count: prefix)
            for tail: [UInt8] in [[0xc3, 0xa9], [0xc3], [0xe2, 0x9c, 0x93], [0xed, 0xa0, 0x80], [0xf0, 0x9d, 0x84, 0x9e], [0x80], []] {
                if !agrees(ascii + tail) { disagreements.append(ascii + tail) }
                if !agrees(ascii + tail + ascii) { disagreements.append(ascii + tail + ascii) }
            }
        }
        #expect(disagreements.isEmpty, "first disagreements: \(disagreements.prefix(5))")
        // And through the validator, where texts meet it.
        for bytes: [UInt8] in [Array("naïve ✓ 𝄞 text".utf8), [0x61, 0xc3], [0xed, 0xa0, 0x80], Array("plain ascii, long enough".utf8)] {
            let record = EncodedRecord(id: Self.id, type: "contact", vector: Self.twoReplicas,
                                       state: Self.state(fieldCount: 1) { Self.register(&$0, "name", value: Self.text(bytes)) })
            let accepted = (try? Self.schema.validate(record)) != nil
            #expect(accepted == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
        }
    }
}
