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
            try walk(state, register: { wanted, reader throws(ModelError) in values[wanted] = try reader.value() },
                     counter: { wanted, total in values[wanted] = .integer(total) })
        }

        /// Calls `body` with the position (in `fields`) and the UTF-8 bytes of each projected
        /// field whose current value is text, in the order the state holds them; skips others.
        /// Makes no `String`: for a sorted index build over many records, which copies the
        /// bytes into one buffer. The bytes are checked to be UTF-8, as decoding checks them.
        ///
        /// - Throws: `ModelError` for malformed bytes, as decoding would.
        public func forEachText(in state: UnsafeRawBufferPointer,
                                _ body: (Int, UnsafeRawBufferPointer) -> Void) throws(ModelError) {
            try walk(state, register: { wanted, reader throws(ModelError) in
                guard try reader.peekByte() == 5 else { return try reader.skipValue() }
                _ = try reader.byte()
                let text = try reader.raw(try reader.count(limit: reader.remaining))
                guard isValidUTF8(text) else { throw .malformedEncoding("text is not valid UTF-8") }
                body(wanted, text)
            }, counter: { _, _ in })
        }

        /// Walks the state's fields until every projected one is found: `register` reads the
        /// value of a projected register field (and must consume it), `counter` is given a
        /// projected counter's total; everything else is skipped.
        private func walk(_ state: UnsafeRawBufferPointer, register: (Int, inout ByteReader) throws(ModelError) -> Void,
                          counter: (Int, Int64) -> Void) throws(ModelError) {
            var reader = ByteReader(state)
            _ = try reader.skipToFields()
            var found = 0
            for _ in 0..<(try reader.count(limit: reader.remaining)) where found < names.count {
                let name = try reader.raw(try reader.count(limit: reader.remaining))
                let wanted = names.firstIndex { $0.withUnsafeBytes { $0.elementsEqual(name) } }
                switch try reader.byte() {
                case 0:
                    if let wanted {
                        try register(wanted, &reader)
                        found += 1
                    } else {
                        try reader.skipValue()
                    }
                    _ = try reader.varint(); _ = try reader.varint(); _ = try reader.varint()  // dot and timestamp
                case 1:
                    let total = try reader.counterTotal()
                    if let wanted {
                        counter(wanted, total)
                        found += 1
                    }
                case let tag:
                    throw .malformedEncoding("field has unknown kind \(tag)")
                }
            }
        }
    }
}

extension RecordCodec {
    /// Every field of an encoded state with its current value, in the order the state keeps
    /// them (`encodeState` writes them by name), without building a `RecordState`: for writers
    /// of a record's values in another form (the integration API's JSON of a change feed page),
    /// which need neither the dots nor a dictionary. Values are read exactly as `decodeState`
    /// reads them (a counter as its total, as `FieldState.value` gives it).
    ///
    /// - Parameter body: called with each field's name (valid UTF-8, checked) and value.
    /// - Returns: whether the state is a tombstone.
    /// - Throws: `ModelError` for malformed bytes.
    public static func forEachValue(
        in state: UnsafeRawBufferPointer, _ body: (_ name: UnsafeRawBufferPointer, _ value: FieldValue) -> Void
    ) throws(ModelError) -> Bool {
        var reader = ByteReader(state)
        let deleted = try reader.skipToFields()
        for _ in 0..<(try reader.count(limit: reader.remaining)) {
            let name = try reader.raw(try reader.count(limit: reader.remaining))
            guard isValidUTF8(name) else { throw .malformedEncoding("field name is not valid UTF-8") }
            switch try reader.byte() {
            case 0:
                body(name, try reader.value())
                _ = try reader.varint(); _ = try reader.varint(); _ = try reader.varint()  // dot and timestamp
            case 1:
                body(name, .integer(try reader.counterTotal()))
            case let tag:
                throw .malformedEncoding("field has unknown kind \(tag)")
            }
        }
        guard reader.isAtEnd else { throw .malformedEncoding("\(reader.remaining) trailing bytes") }
        return deleted
    }
}

extension ByteReader {
    /// Reads an encoded state's head (format, deletion flag, liveness write, deletion context)
    /// up to its field count, keeping only the deletion flag: for readers of the values alone.
    mutating func skipToFields() throws(ModelError) -> Bool {
        let version = try byte()
        guard version == RecordCodec.formatVersion else { throw .malformedEncoding("record format \(version) is not supported") }
        let deleted = try byte()
        guard deleted <= 1 else { throw .malformedEncoding("deletion flag \(deleted)") }
        _ = try varint(); _ = try varint(); _ = try varint()  // liveness dot and timestamp
        for _ in 0..<(try count(limit: remaining)) { _ = try varint(); _ = try varint() }
        return deleted == 1
    }

    /// A counter field's contributions, read past, as their total.
    mutating func counterTotal() throws(ModelError) -> Int64 {
        var contributions: [CounterContribution] = []
        for _ in 0..<(try count(limit: remaining)) {
            _ = try varint()  // the contributing replica
            contributions.append(CounterContribution(
                added: try varint(), subtracted: try varint(),
                lastCounter: try varint(), lastTimestamp: HLCTimestamp(rawValue: try varint())))
        }
        return CounterState.total(of: contributions)
    }

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
