import Foundation

/// A record state in the form replicas store and send it: id and type in the clear, vector and
/// state as the bytes of `RecordCodec` (Protocol/SPEC.md, section 3).
///
/// Most records a replica receives are new to it (an initial sync, another device's bulk
/// import). Decoding those into `RecordState`s, validating the dictionaries and encoding them
/// again, only to store the very bytes that came in, cost more than the SQL that stores them. So
/// records go from one store's rows to another's in this form: the sender reads the bytes without
/// decoding them (`ReplicaStore.encodedChanges`), the receiver checks them where they lie
/// (`Schema.validate(_: EncodedRecord)`) and keeps them as they came when the record is new to it
/// (`ReplicaStore.apply(encoded:)`). Only a record that has to be merged is decoded.
public struct EncodedRecord: Hashable, Sendable {
    public var id: UUID
    public var type: String
    /// The record's version vector, as `RecordCodec.encode(_: VersionVector)` writes it.
    public var vector: [UInt8]
    /// Liveness and fields, as `RecordCodec.encodeState(_:)` writes them.
    public var state: [UInt8]

    /// The longest record type name a peer may send; longer ones are refused before any lookup.
    public static let maxTypeBytes = 64

    public init(id: UUID, type: String, vector: [UInt8], state: [UInt8]) {
        self.id = id
        self.type = type
        self.vector = vector
        self.state = state
    }

    /// Encodes `state`.
    public init(_ state: RecordState) {
        self.init(id: state.id, type: state.type, vector: RecordCodec.encode(state.vector), state: RecordCodec.encodeState(state))
    }

    /// A record as a peer sent it, its id as 16 raw bytes. Nothing of vector and state is read.
    ///
    /// - Throws: `ModelError.malformedEncoding` for an id of another length,
    ///   `.unknownRecordType` for an empty type name or one longer than `maxTypeBytes`.
    public init(idBytes: UnsafeRawBufferPointer, type: String, vector: [UInt8], state: [UInt8]) throws(ModelError) {
        guard let id = UUID(bytes: idBytes) else {
            throw .malformedEncoding("record id of \(idBytes.count) bytes, expected 16")
        }
        guard !type.isEmpty, type.utf8.count <= Self.maxTypeBytes else {
            throw .unknownRecordType(String(type.prefix(Self.maxTypeBytes)))
        }
        self.init(id: id, type: type, vector: vector, state: state)
    }

    /// The state the bytes hold.
    ///
    /// - Throws: `ModelError` when any part is malformed; a peer's bad record never traps.
    public func decoded() throws(ModelError) -> RecordState {
        // `withUnsafeBytes` rethrows untyped errors: carry the typed one out in a `Result`.
        let decoded = vector.withUnsafeBytes { vector in
            state.withUnsafeBytes { state in
                Result { () throws(ModelError) in try RecordCodec.decode(id: id, type: type, vector: vector, state: state) }
            }
        }
        return try decoded.get()
    }

    /// What `Schema.validate(_: EncodedRecord)` found out about a valid record.
    public struct Validation: Sendable {
        /// The `RecordState.latestTimestamp` of the state the bytes hold.
        public var latestTimestamp: HLCTimestamp
        public var isDeleted: Bool
        /// `nil` when the bytes are canonical: exactly what `RecordCodec` writes for the state
        /// they hold, so a store may keep them as they are. Otherwise the state they hold: valid,
        /// but in a form `RecordCodec` never writes (fields out of order, a varint longer than it
        /// needs, a repeated entry), to be encoded again so that every stored record is canonical.
        public var decodedState: RecordState?
    }
}

extension Schema {
    /// Checks an encoded record as decoding it and then `validate(_: RecordState)` would: it
    /// refuses exactly what those refuse, with the same errors, mostly without decoding.
    ///
    /// Two paths. The fast one reads the bytes once, in place: no `RecordState`, no dictionary,
    /// no string per field (declared fields are found by walking the type's sorted field list
    /// alongside the record's sorted fields). It accepts a record only when the bytes are
    /// canonical and every check passes; it checks the same things as the reference (field
    /// types, counters versus registers, bounds, finite reals, UTF-8, field names, every dot and
    /// deletion-context entry inside the vector, replica ids, trailing bytes). Anything else, an
    /// invalid record or a valid one in a form `RecordCodec` never writes, takes the reference
    /// path: decode, then `validate(_: RecordState)`. So errors are the reference's own, and the
    /// fast path has only to be never more lenient than the reference, which the tests check by
    /// running both on random, mutated and hand-made records.
    ///
    /// - Parameter rules: whether to check the fields' rules, as in `validate(_:rules:)`.
    public func validate(_ record: EncodedRecord, rules: Bool = true) throws(ModelError) -> EncodedRecord.Validation {
        var texts = CanonicalRecordCheck.TextCollector()
        return try validate(record, rules: rules, collecting: &texts)
    }

    /// `validate(_:rules:)`, noting in `texts` where the wanted texts of a record the fast path
    /// accepts lie; nothing for one it sends to the reference path.
    func validate(_ record: EncodedRecord, rules: Bool, collecting texts: inout CanonicalRecordCheck.TextCollector)
        throws(ModelError) -> EncodedRecord.Validation {
        if let recordType = types[record.type], let fields = recordType.sortedFields {
            let required = recordType.requiredFields.count
            let checked = record.vector.withUnsafeBytes { vector in
                record.state.withUnsafeBytes { state in
                    CanonicalRecordCheck.validate(vector: vector, state: state, fields: fields, required: rules ? required : nil,
                                                  texts: &texts)
                }
            }
            if let checked { return checked }
        }
        let state = try record.decoded()
        try validate(state, rules: rules)
        return EncodedRecord.Validation(latestTimestamp: state.latestTimestamp, isDeleted: state.isDeleted, decodedState: state)
    }
}

/// The fast path of `Schema.validate(_: EncodedRecord)`. Its errors are never shown: any of
/// them sends the record to the reference path, which finds the real one.
enum CanonicalRecordCheck {
    static let refused = ModelError.malformedEncoding("refused by the fast path")

    /// The validation of a canonical, valid record; `nil` for any other.
    ///
    /// - Parameter required: how many of `fields` are required: a live record must hold each of
    ///   them non-null, which the walk counts instead of looking names up. `nil` checks no rules.
    static func validate(
        vector: UnsafeRawBufferPointer, state: UnsafeRawBufferPointer, fields: [RecordType.DeclaredField], required: Int?,
        texts: inout TextCollector
    ) -> EncodedRecord.Validation? {
        let collected = texts.spans.count
        var reader = ByteReader(vector)
        // An empty vector cannot cover the record's existence: the reference will say so.
        guard let count = try? reader.canonicalCount(limit: reader.remaining), count > 0 else { return nil }
        // The vector's counters, by position, on the stack for the usual handful of replicas.
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count) { counters in
            do {
                try readVector(&reader, into: counters)
                return try readState(state, counters: UnsafeBufferPointer(counters), fields: fields, required: required, texts: &texts)
            } catch {
                texts.spans.removeSubrange(collected...)  // the reference path decodes the record
                return nil
            }
        }
    }

    /// Replica ids valid and strictly ascending (no repeats), counters within 1...Int64.max.
    private static func readVector(_ reader: inout ByteReader, into counters: UnsafeMutableBufferPointer<UInt64>) throws(ModelError) {
        var previous = UnsafeRawBufferPointer(start: nil, count: 0)
        for position in counters.indices {
            let replica = try reader.raw(try reader.canonicalCount(limit: reader.remaining))
            guard ReplicaID.isValid(utf8: replica), position == 0 || compareBytes(previous, replica) < 0 else { throw refused }
            previous = replica
            let counter = try reader.canonicalVarint()
            guard counter >= 1, counter <= UInt64(Int64.max) else { throw refused }
            counters[position] = counter
        }
        guard reader.isAtEnd else { throw refused }
    }

    private static func readState(
        _ bytes: UnsafeRawBufferPointer, counters: UnsafeBufferPointer<UInt64>, fields declared: [RecordType.DeclaredField],
        required: Int?, texts: inout TextCollector
    ) throws(ModelError) -> EncodedRecord.Validation {
        var reader = ByteReader(bytes)
        guard try reader.byte() == RecordCodec.formatVersion else { throw refused }
        let deleted = try reader.byte()
        guard deleted <= 1 else { throw refused }
        let livenessPosition = try reader.position(below: counters.count)
        let livenessCounter = try reader.canonicalVarint()
        guard livenessCounter >= 1, livenessCounter <= counters[livenessPosition] else { throw refused }
        var latest = try reader.canonicalTimestamp()
        // Deletion context: ascending positions, no zero counters (the vector drops those), each
        // covered by the vector; none for a live record, and a deletion's holds its own dot
        // (`Liveness.init`): the other forms decode to that one, and are encoded again.
        let contextCount = try reader.canonicalCount(limit: counters.count)
        guard deleted == 1 || contextCount == 0 else { throw refused }
        var holdsOwnDot = deleted == 0
        var previous = -1
        for _ in 0..<contextCount {
            let position = try reader.position(below: counters.count)
            let counter = try reader.canonicalVarint()
            guard position > previous, counter >= 1, counter <= counters[position] else { throw refused }
            previous = position
            if position == livenessPosition && counter >= livenessCounter { holdsOwnDot = true }
        }
        guard holdsOwnDot else { throw refused }
        var previousName = UnsafeRawBufferPointer(start: nil, count: 0)
        var next = 0  // the first declared field not before the current name
        var requiredHeld = 0
        let fieldCount = try reader.canonicalCount(limit: bytes.count)
        for index in 0..<fieldCount {
            let name = try reader.raw(try reader.canonicalCount(limit: reader.remaining))
            guard index == 0 || compareBytes(previousName, name) < 0 else { throw refused }
            previousName = name
            while next < declared.count && declared[next].name.withUnsafeBytes({ compareBytes($0, name) }) < 0 { next += 1 }
            let kind: FieldKind?
            var matched = -1  // the declared field's index, when the name is declared
            if next < declared.count && declared[next].name.withUnsafeBytes({ compareBytes($0, name) }) == 0 {
                kind = declared[next].kind
                matched = next
            } else {
                // Declared names are ASCII, and so is any valid one: no name passes that a
                // `String` comparison would see differently.
                guard Schema.isValidFieldName(utf8: name) else { throw refused }
                kind = nil
            }
            switch try reader.byte() {
            case 0:
                guard kind != .counter else { throw refused }
                // Only a field with a rule pays for reading it.
                let rule = required != nil && matched >= 0 && declared[matched].hasRule ? declared[matched].rule : nil
                let wanted = matched >= 0 && matched < texts.wanted.count ? texts.wanted[matched] : -1
                let value = reader.offset
                if try reader.checkValue(kind, rule: rule), matched >= 0 && declared[matched].isRequired { requiredHeld += 1 }
                if wanted >= 0 { try texts.note(field: wanted, value: UnsafeRawBufferPointer(rebasing: bytes[value..<reader.offset]), in: bytes) }
                try reader.dot(within: counters)
                latest = max(latest, try reader.canonicalTimestamp())
            case 1:
                guard kind == nil || kind == .counter else { throw refused }
                var previous = -1
                for _ in 0..<(try reader.canonicalCount(limit: counters.count)) {
                    let position = try reader.position(below: counters.count)
                    _ = try reader.canonicalVarint()  // added
                    _ = try reader.canonicalVarint()  // subtracted
                    let last = try reader.canonicalVarint()
                    _ = try reader.canonicalTimestamp()
                    guard position > previous, last >= 1, last <= counters[position] else { throw refused }
                    previous = position
                }
            default:
                throw refused
            }
        }
        guard reader.isAtEnd, deleted == 1 || required == nil || requiredHeld == required else { throw refused }
        return EncodedRecord.Validation(latestTimestamp: latest, isDeleted: deleted == 1, decodedState: nil)
    }
}

extension ByteReader {
    mutating func canonicalCount(limit: Int) throws(ModelError) -> Int {
        let n = try canonicalVarint()
        guard n <= UInt64(limit) else { throw CanonicalRecordCheck.refused }
        return Int(n)
    }

    /// A replica's position in a vector of `count` entries.
    mutating func position(below count: Int) throws(ModelError) -> Int {
        let position = try canonicalVarint()
        guard position < UInt64(count) else { throw CanonicalRecordCheck.refused }
        return Int(position)
    }

    /// A dot that is valid and covered by the vector whose counters are `counters`.
    mutating func dot(within counters: UnsafeBufferPointer<UInt64>) throws(ModelError) {
        let position = try position(below: counters.count)
        let counter = try canonicalVarint()
        guard counter >= 1, counter <= counters[position] else { throw CanonicalRecordCheck.refused }
    }

    mutating func canonicalTimestamp() throws(ModelError) -> HLCTimestamp {
        let raw = try canonicalVarint()
        guard raw <= UInt64(Int64.max) else { throw CanonicalRecordCheck.refused }
        return HLCTimestamp(rawValue: raw)
    }

    /// A register's value: of a type `kind` accepts (any for an unknown field), within the
    /// schema's bounds, and keeping the field's `rule`. Returns whether the value holds a
    /// required field: non-null and not an empty text.
    mutating func checkValue(_ kind: FieldKind?, rule: FieldRule?) throws(ModelError) -> Bool {
        let expected: FieldKind
        var holds = true
        switch try byte() {
        case 0: return false  // null: any register may hold it
        case 1, 2: expected = .boolean
        case 3:
            let zigzag = try canonicalVarint()
            expected = .integer
            if let rule {
                let value = Int64(bitPattern: (zigzag >> 1) ^ (0 &- (zigzag & 1)))
                guard rule.violation(number: Double(value)) == nil else { throw CanonicalRecordCheck.refused }
            }
        case 4:
            let raw = try raw(8)
            var bits: UInt64 = 0
            withUnsafeMutableBytes(of: &bits) { $0.copyMemory(from: raw) }
            let value = Double(bitPattern: UInt64(littleEndian: bits))
            guard value.isFinite else { throw CanonicalRecordCheck.refused }
            expected = .real
            if let rule, rule.violation(number: value) != nil { throw CanonicalRecordCheck.refused }
        case 5:
            let text = try raw(try canonicalCount(limit: Swift.min(remaining, Schema.maxTextBytes)))
            guard isValidUTF8(text) else { throw CanonicalRecordCheck.refused }
            expected = .text
            // The rule applies to declared fields only, whose kind is checked below.
            if let rule, rule.violation(text: text) != nil { throw CanonicalRecordCheck.refused }
            holds = !text.isEmpty  // an empty text does not hold a required field
        case 6:
            _ = try raw(try canonicalCount(limit: Swift.min(remaining, Schema.maxBlobBytes)))
            expected = .blob
        default:
            throw CanonicalRecordCheck.refused
        }
        guard kind == nil || kind == expected else { throw CanonicalRecordCheck.refused }
        return holds
    }
}

/// memcmp order, shorter first on a common prefix: for ASCII, the order of `String`s.
func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let common = Swift.min(a.count, b.count)
    if common > 0, let x = a.baseAddress, let y = b.baseAddress {
        let order = memcmp(x, y, common)
        if order != 0 { return Int(order) }
    }
    return a.count - b.count
}

/// Whether `bytes` is well-formed UTF-8, as `String(validating:as:)` decides, without making a
/// `String`: ASCII eight bytes at a time, the rest through the standard library's parser.
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    while offset + 8 <= bytes.count {
        guard bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 else { break }
        offset += 8
    }
    while offset < bytes.count && bytes[offset] < 0x80 { offset += 1 }
    guard offset < bytes.count else { return true }
    // Everything before `offset` is ASCII, so a scalar starts there.
    var iterator = UnsafeRawBufferPointer(rebasing: bytes[offset...]).makeIterator()
    var parser = Unicode.UTF8.ForwardParser()
    while true {
        switch parser.parseScalar(from: &iterator) {
        case .valid: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}

extension CanonicalRecordCheck {
    /// Where the texts of some fields lie in the states the fast path accepts: a pull that
    /// indexes those fields (a device's field index) then reads them from there instead of
    /// walking every state again.
    struct TextCollector {
        /// For each declared field of the type being checked (in `sortedFields` order), its
        /// position among the fields asked for, or -1; empty when none is asked for.
        var wanted: [Int32] = []
        /// The record being checked, as the spans name it.
        var record: Int32 = 0
        var spans: [CheckedRecords.TextSpan] = []

        /// Notes `value` (a value's bytes, tag first, as the check read them) when it is text.
        mutating func note(field: Int32, value: UnsafeRawBufferPointer, in state: UnsafeRawBufferPointer) throws(ModelError) {
            var reader = ByteReader(value)
            guard try reader.byte() == 5 else { return }
            let count = try reader.count(limit: reader.remaining)
            let start = value.baseAddress! - state.baseAddress! + reader.offset
            spans.append(CheckedRecords.TextSpan(record: record, field: field, start: Int32(start), count: Int32(count)))
        }
    }
}

/// Records from upstream with their bytes already checked against a schema
/// (`Schema.validate(_:rules: false)`, the check a store makes of a new record from upstream):
/// a device's pull checks each batch on its own task, beside the store's thread applying the
/// batch before, and the store (`ReplicaStore.apply(checked:)`) keeps the outcomes instead of
/// checking again. A record's check failing is kept too, and reported by the store exactly
/// where it would have checked the record itself: only for a record new to it.
public struct CheckedRecords: Sendable {
    public let records: [EncodedRecord]
    /// The schema the records were checked against; a store with another checks them itself.
    public let schema: Schema
    /// One outcome per record, in order.
    public let outcomes: [Result<EncodedRecord.Validation, ModelError>]

    /// The fields whose texts were asked for (`init(_:against:texts:)`), by record type.
    public let textFields: [String: [String]]
    /// Where those texts lie in the `state` of each record the check accepted as canonical
    /// (`Validation.decodedState` is `nil`), in record order, and in each record in the
    /// state's order. A field that is null, not text or missing has none.
    public let texts: [TextSpan]

    /// A text value within a record's `state`.
    public struct TextSpan: Sendable {
        /// The record's position in `records`.
        public var record: Int32
        /// The field's position in `textFields[type]`.
        public var field: Int32
        /// The text's UTF-8 bytes: where they start in `state`, and how many.
        public var start: Int32
        public var count: Int32
    }

    /// Checks `records`, and notes where the texts of `textFields` lie in those it accepts:
    /// a pull that indexes them then need not walk every state once more.
    public init(_ records: [EncodedRecord], against schema: Schema, texts textFields: [String: [String]] = [:]) {
        self.records = records
        self.schema = schema
        self.textFields = textFields
        var collector = CanonicalRecordCheck.TextCollector()
        // Positions in sortedFields order, worked out once per type of the batch.
        var wantedByType: [String: [Int32]] = [:]
        outcomes = records.enumerated().map { index, record in
            if textFields.isEmpty {
                collector.wanted = []
            } else if let wanted = wantedByType[record.type] {
                collector.wanted = wanted
            } else {
                let names = textFields[record.type] ?? []
                let declared = schema.types[record.type]?.sortedFields ?? []
                let wanted = declared.map { field in Int32(names.firstIndex { $0.utf8.elementsEqual(field.name) } ?? -1) }
                wantedByType[record.type] = wanted
                collector.wanted = wanted
            }
            collector.record = Int32(index)
            return Result { () throws(ModelError) in try schema.validate(record, rules: false, collecting: &collector) }
        }
        texts = collector.spans
    }
}
