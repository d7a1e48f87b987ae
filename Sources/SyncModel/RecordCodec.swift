import Foundation

/// The binary encoding of version vectors, record states and values: the same bytes in a replica
/// store's rows and in the wire protocol's `Record` messages (Protocol/SPEC.md, section 3).
///
/// Compact because it is read and written once per record on every sync: varints, and dots that
/// name their replica by its position in the record's own vector (every dot of a consistent
/// record is covered by that vector), so a field costs a few bytes beyond its value.
/// Decoding treats its input as untrusted: any inconsistency is a `ModelError`, never a trap.
public enum RecordCodec {
    /// The first byte of every encoded state.
    public static let formatVersion: UInt8 = 1

    // MARK: Vector

    public static func encode(_ vector: VersionVector) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(vector: vector.sortedEntries)
        return writer.bytes
    }

    public static func decodeVector(_ bytes: UnsafeRawBufferPointer) throws(ModelError) -> VersionVector {
        var reader = ByteReader(bytes)
        let entries = try reader.readVector()
        return try VersionVector(Dictionary(entries.map { ($0.0, $0.1) }, uniquingKeysWith: max))
    }

    // MARK: Record state (liveness and fields; id, type and vector live in their own columns)

    public static func encodeState(_ state: RecordState) -> [UInt8] {
        let index = ReplicaIndex(state.vector)
        var writer = ByteWriter()
        writer.bytes.reserveCapacity(64 + state.fields.count * 48)
        writer.byte(formatVersion)
        let liveness = state.liveness
        writer.byte(liveness.isDeleted ? 1 : 0)
        writer.dot(liveness.dot, index)
        writer.varint(liveness.timestamp.rawValue)
        let context = liveness.deletionContext.sortedEntries
        writer.varint(UInt64(context.count))
        for (replica, counter) in context {
            writer.varint(UInt64(index[replica]))
            writer.varint(counter)
        }
        writer.varint(UInt64(state.fields.count))
        // Sorted, so one state always encodes to the same bytes (golden vectors, comparisons).
        // Sorting the names alone and looking each field up costs less than sorting the
        // (name, field) pairs, whose copies retain every value.
        for name in state.fields.keys.sorted() {
            writer.string(name)
            switch state.fields[name]! {
            case .register(let r):
                writer.byte(0)
                writer.value(r.value)
                writer.dot(r.dot, index)
                writer.varint(r.timestamp.rawValue)
            case .counter(let c):
                writer.byte(1)
                writer.varint(UInt64(c.contributions.count))
                for (replica, contribution) in c.contributions.sorted(by: { $0.key < $1.key }) {
                    writer.varint(UInt64(index[replica]))
                    writer.varint(contribution.added)
                    writer.varint(contribution.subtracted)
                    writer.varint(contribution.lastCounter)
                    writer.varint(contribution.lastTimestamp.rawValue)
                }
            }
        }
        return writer.bytes
    }

    /// A whole record from its encoded vector and state, as a store's row or a peer's message
    /// holds them.
    public static func decode(
        id: UUID, type: String, vector: UnsafeRawBufferPointer, state: UnsafeRawBufferPointer
    ) throws(ModelError) -> RecordState {
        try decodeState(id: id, type: type, vector: try decodeVector(vector), state)
    }

    /// The write that created, deleted or restored the record, read from its encoded state
    /// without its fields: for code that asks, of many records, only which write made them.
    public static func decodeLivenessWrite(
        vector: VersionVector, _ bytes: UnsafeRawBufferPointer
    ) throws(ModelError) -> (isDeleted: Bool, dot: Dot, timestamp: HLCTimestamp) {
        var reader = ByteReader(bytes)
        return try readLivenessWrite(&reader, replicas: vector.replicas)
    }

    /// The head of an encoded state: format version, deletion flag, and the dot and time of
    /// the write that created, deleted or restored the record.
    private static func readLivenessWrite(
        _ reader: inout ByteReader, replicas: [ReplicaID]
    ) throws(ModelError) -> (isDeleted: Bool, dot: Dot, timestamp: HLCTimestamp) {
        let version = try reader.byte()
        guard version == formatVersion else { throw .malformedEncoding("record format \(version) is not supported") }
        let deleted = try reader.byte()
        guard deleted <= 1 else { throw .malformedEncoding("deletion flag \(deleted)") }
        let dot = try reader.dot(replicas)
        return (deleted == 1, dot, try reader.timestamp())
    }

    public static func decodeState(
        id: UUID, type: String, vector: VersionVector, _ bytes: UnsafeRawBufferPointer
    ) throws(ModelError) -> RecordState {
        let replicas = vector.replicas
        var reader = ByteReader(bytes)
        let (isDeleted, livenessDot, livenessTime) = try readLivenessWrite(&reader, replicas: replicas)
        var context: [ReplicaID: UInt64] = [:]
        for _ in 0..<(try reader.count(limit: replicas.count)) {
            let replica = try reader.replica(replicas)
            context[replica] = try reader.varint()
        }
        let liveness = Liveness(
            isDeleted: isDeleted, dot: livenessDot, timestamp: livenessTime,
            deletionContext: try VersionVector(context))
        let fieldCount = try reader.count(limit: bytes.count)
        var fields: [String: FieldState] = Dictionary(minimumCapacity: fieldCount)
        for _ in 0..<fieldCount {
            let name = try reader.string()
            switch try reader.byte() {
            case 0:
                let value = try reader.value()
                let dot = try reader.dot(replicas)
                fields[name] = .register(RegisterState(value: value, dot: dot, timestamp: try reader.timestamp()))
            case 1:
                var contributions: [ReplicaID: CounterContribution] = [:]
                for _ in 0..<(try reader.count(limit: replicas.count)) {
                    let replica = try reader.replica(replicas)
                    contributions[replica] = CounterContribution(
                        added: try reader.varint(), subtracted: try reader.varint(),
                        lastCounter: try reader.varint(), lastTimestamp: try reader.timestamp())
                }
                fields[name] = .counter(CounterState(contributions: contributions))
            case let tag:
                throw .malformedEncoding("field '\(name)' has unknown kind \(tag)")
            }
        }
        guard reader.isAtEnd else { throw .malformedEncoding("\(reader.remaining) trailing bytes") }
        return RecordState(id: id, type: type, vector: vector, liveness: liveness, fields: fields)
    }

    // MARK: Single values (the conflict log stores them on their own)

    public static func encode(_ value: FieldValue) -> [UInt8] {
        var writer = ByteWriter()
        writer.value(value)
        return writer.bytes
    }

    public static func decodeValue(_ bytes: UnsafeRawBufferPointer) throws(ModelError) -> FieldValue {
        var reader = ByteReader(bytes)
        let value = try reader.value()
        guard reader.isAtEnd else { throw .malformedEncoding("\(reader.remaining) trailing bytes after a value") }
        return value
    }
}

/// Positions of a record's replicas in its sorted vector. Records are written by a handful of
/// replicas, so a linear scan beats hashing the id strings.
struct ReplicaIndex {
    let replicas: [ReplicaID]

    init(_ vector: VersionVector) { replicas = vector.replicas }

    /// Callers encode only validated states, whose dots are all covered by the vector.
    subscript(replica: ReplicaID) -> Int {
        replicas.firstIndex(of: replica) ?? 0
    }
}

/// Appends varints and length-prefixed data.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            varint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    mutating func dot(_ dot: Dot, _ index: ReplicaIndex) {
        varint(UInt64(index[dot.replica]))
        varint(dot.counter)
    }

    mutating func write(vector entries: [(replica: ReplicaID, counter: UInt64)]) {
        varint(UInt64(entries.count))
        for (replica, counter) in entries {
            string(replica.rawValue)
            varint(counter)
        }
    }

    mutating func value(_ value: FieldValue) {
        switch value {
        case .null: byte(0)
        case .bool(let v): byte(v ? 2 : 1)
        case .integer(let v):
            byte(3)
            varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)))  // zigzag: small negatives stay short
        case .real(let v):
            byte(4)
            withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        case .text(let v):
            byte(5)
            string(v)
        case .blob(let v):
            byte(6)
            varint(UInt64(v.count))
            bytes.append(contentsOf: v)
        }
    }
}

/// Reads what `ByteWriter` wrote, checking every length against what is left.
public struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var isAtEnd: Bool { offset == bytes.count }
    public var remaining: Int { bytes.count - offset }

    mutating func byte() throws(ModelError) -> UInt8 {
        guard offset < bytes.count else { throw .malformedEncoding("unexpected end of data") }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// The next byte, left to be read.
    func peekByte() throws(ModelError) -> UInt8 {
        guard offset < bytes.count else { throw .malformedEncoding("unexpected end of data") }
        return bytes[offset]
    }

    /// A varint of the record encoding, or of protobuf, which writes them alike.
    public mutating func varint() throws(ModelError) -> UInt64 {
        // One bounds check per byte and no call per byte: varints are most of what is read.
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var index = offset
        while index < bytes.count {
            let b = bytes[index]
            index += 1
            guard shift < 64, !(shift == 63 && b > 1) else { throw .malformedEncoding("varint overflows 64 bits") }
            result |= UInt64(b & 0x7f) << shift
            if b < 0x80 {
                offset = index
                return result
            }
            shift += 7
        }
        throw .malformedEncoding("unexpected end of data")
    }

    /// A varint in the shortest form, the only one `ByteWriter` writes: a longer one (a last
    /// byte of zero after continuation bytes) decodes to the same value but is not canonical.
    mutating func canonicalVarint() throws(ModelError) -> UInt64 {
        let start = offset
        let value = try varint()
        guard offset - start == 1 || bytes[offset - 1] != 0 else { throw .malformedEncoding("varint not in its shortest form") }
        return value
    }

    /// A count that cannot exceed `limit`, so a corrupt length never makes us allocate wildly.
    public mutating func count(limit: Int) throws(ModelError) -> Int {
        let n = try varint()
        guard n <= UInt64(limit) else { throw .malformedEncoding("count \(n) exceeds \(limit)") }
        return Int(n)
    }

    /// The next `n` bytes, lent as long as the buffer read is.
    public mutating func raw(_ n: Int) throws(ModelError) -> UnsafeRawBufferPointer {
        guard n <= remaining else { throw .malformedEncoding("length \(n) exceeds the \(remaining) bytes left") }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    /// A length-prefixed text, refused unless it is valid UTF-8.
    public mutating func string() throws(ModelError) -> String {
        let raw = try raw(try count(limit: remaining))
        // Checked first, then decoded: `String(validating:as:)` is generic and not specialized,
        // which made it the most expensive step of decoding a field.
        guard isValidUTF8(raw) else { throw .malformedEncoding("text is not valid UTF-8") }
        return String(decoding: raw.assumingMemoryBound(to: UInt8.self), as: UTF8.self)
    }

    mutating func replica(_ replicas: [ReplicaID]) throws(ModelError) -> ReplicaID {
        let i = try varint()
        guard i < UInt64(replicas.count) else { throw .malformedEncoding("replica index \(i) outside the record's vector") }
        return replicas[Int(i)]
    }

    mutating func dot(_ replicas: [ReplicaID]) throws(ModelError) -> Dot {
        let replica = try replica(replicas)
        return try Dot(replica: replica, counter: try varint())
    }

    mutating func timestamp() throws(ModelError) -> HLCTimestamp {
        let raw = try varint()
        guard raw <= UInt64(Int64.max) else { throw .malformedEncoding("timestamp out of range") }
        return HLCTimestamp(rawValue: raw)
    }

    mutating func readVector() throws(ModelError) -> [(ReplicaID, UInt64)] {
        let n = try count(limit: remaining)
        var entries: [(ReplicaID, UInt64)] = []
        entries.reserveCapacity(n)
        for _ in 0..<n {
            let replica = try ReplicaID(try string())
            let counter = try varint()
            guard counter >= 1, counter <= UInt64(Int64.max) else {
                throw .invalidCounter(replica: replica.rawValue, value: String(counter))
            }
            entries.append((replica, counter))
        }
        guard isAtEnd else { throw .malformedEncoding("\(remaining) trailing bytes after a vector") }
        return entries
    }

    mutating func value() throws(ModelError) -> FieldValue {
        switch try byte() {
        case 0: return .null
        case 1: return .bool(false)
        case 2: return .bool(true)
        case 3:
            let z = try varint()
            return .integer(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1))))
        case 4:
            let raw = try raw(8)
            var bits: UInt64 = 0
            withUnsafeMutableBytes(of: &bits) { $0.copyMemory(from: raw) }
            return .real(Double(bitPattern: UInt64(littleEndian: bits)))
        case 5: return .text(try string())
        case 6: return .blob(Data(try raw(try count(limit: remaining))))
        case let tag: throw .malformedEncoding("unknown value tag \(tag)")
        }
    }
}

extension UUID {
    /// The 16 raw bytes, as records are identified on disk and on the wire.
    public var bytes: [UInt8] { withUnsafeBytes(of: uuid) { Array($0) } }

    /// A UUID from 16 raw bytes, or `nil` for any other length.
    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 16 else { return nil }
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { $0.copyMemory(from: bytes) }
        self.init(uuid: raw)
    }
}
