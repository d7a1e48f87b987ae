/// Reading a few fields of an encoded record without decoding the rest.
///
/// Reports over a whole store (a pipeline of 100,000 opportunities on a device) need two or three
/// fields of each record; decoding every state into a dictionary of field states, with a string
/// per name and a dot per value, cost most of their time. This walks the bytes once, skipping
/// what it was not asked for, and reads values exactly as `decodeState` would.
extension RecordCodec {
    /// A projection of the named fields, prepared once and applied to many records.
    public struct Projection: Sendable {
        /// The names asked for, in the order `values(in:)` returns them.
        public let fields: [String]
        private let names: [[UInt8]]

        public init(_ fields: [String]) {
            self.fields = fields
            names = fields.map { Array($0.utf8) }
        }

        /// The current values of the projected fields in an encoded state (`.null` for a field
        /// the record does not have; a counter's total, as `FieldState.value` gives it).
        ///
        /// - Throws: `ModelError` for malformed bytes, as decoding would.
        public func values(in state: UnsafeRawBufferPointer) throws(ModelError) -> [FieldValue] {
            var values: [FieldValue] = []
            try read(state, into: &values)
            return values
        }

        /// `values(in:)` into a caller's array, so a scan over many records reuses one buffer
        /// instead of allocating an array per record.
        public func read(_ state: UnsafeRawBufferPointer, into values: inout [FieldValue]) throws(ModelError) {
            if values.count == names.count {
                for index in values.indices { values[index] = .null }
            } else {
                values = [FieldValue](repeating: .null, count: names.count)
            }
            var reader = ByteReader(state)
            let version = try reader.byte()
            guard version == formatVersion else { throw .malformedEncoding("record format \(version) is not supported") }
            _ = try reader.byte()  // deletion flag
            _ = try reader.varint(); _ = try reader.varint(); _ = try reader.varint()  // liveness dot and timestamp
            for _ in 0..<(try reader.count(limit: reader.remaining)) { _ = try reader.varint(); _ = try reader.varint() }
            var found = 0
            for _ in 0..<(try reader.count(limit: reader.remaining)) where found < names.count {
                let name = try reader.raw(try reader.count(limit: reader.remaining))
                let wanted = names.firstIndex { $0.withUnsafeBytes { $0.elementsEqual(name) } }
                switch try reader.byte() {
                case 0:
                    if let wanted {
                        values[wanted] = try reader.value()
                        found += 1
                    } else {
                        try reader.skipValue()
                    }
                    _ = try reader.varint(); _ = try reader.varint(); _ = try reader.varint()  // dot and timestamp
                case 1:
                    var contributions: [CounterContribution] = []
                    for _ in 0..<(try reader.count(limit: reader.remaining)) {
                        _ = try reader.varint()  // the contributing replica
                        contributions.append(CounterContribution(
                            added: try reader.varint(), subtracted: try reader.varint(),
                            lastCounter: try reader.varint(), lastTimestamp: HLCTimestamp(rawValue: try reader.varint())))
                    }
                    if let wanted {
                        values[wanted] = .integer(CounterState.total(of: contributions))
                        found += 1
                    }
                case let tag:
                    throw .malformedEncoding("field has unknown kind \(tag)")
                }
            }
        }
    }
}

extension ByteReader {
    /// Moves past one value without building it.
    mutating func skipValue() throws(ModelError) {
        switch try byte() {
        case 0, 1, 2: break
        case 3: _ = try varint()
        case 4: _ = try raw(8)
        case 5, 6: _ = try raw(try count(limit: remaining))
        case let tag: throw .malformedEncoding("unknown value tag \(tag)")
        }
    }
}
