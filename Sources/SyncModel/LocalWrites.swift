import Foundation

/// Local writes: each takes a fresh dot from the writing replica and a timestamp from its clock,
/// so it is causally after everything the record held before.
extension RecordState {
    /// A new record whose fields are all written by the creating write.
    public static func created(
        id: UUID, type: String, fields: [String: FieldValue], dot: Dot, timestamp: HLCTimestamp
    ) -> RecordState {
        var vector = VersionVector()
        vector.add(dot)
        return RecordState(
            id: id, type: type, vector: vector,
            liveness: Liveness(isDeleted: false, dot: dot, timestamp: timestamp),
            fields: fields.mapValues { .register(RegisterState(value: $0, dot: dot, timestamp: timestamp)) })
    }

    /// Sets fields. All of them share the one dot: it is one write.
    ///
    /// Each field is stamped later than the value it replaces even when the clock says
    /// otherwise (a peer's clock ran ahead and ours refused to follow): last-writer-wins must
    /// never let an overwritten value beat the write that overwrote it.
    public mutating func write(_ values: [String: FieldValue], dot: Dot, timestamp: HLCTimestamp) {
        for (name, value) in values {
            var stamp = timestamp
            if case .register(let previous)? = fields[name] { stamp = stamp.later(than: previous.timestamp) }
            fields[name] = .register(RegisterState(value: value, dot: dot, timestamp: stamp))
        }
        vector.add(dot)
    }

    /// Adds `amount` (negative to subtract) to a counter field.
    public mutating func increment(_ field: String, by amount: Int64, dot: Dot, timestamp: HLCTimestamp) {
        var counter: CounterState
        if case .counter(let existing)? = fields[field] { counter = existing } else { counter = CounterState() }
        counter.apply(amount, dot: dot, timestamp: timestamp)
        fields[field] = .counter(counter)
        vector.add(dot)
    }

    /// Marks the record deleted. Its fields stay in the state: a concurrent update can still be
    /// merged into them, and a restore brings them back.
    public mutating func delete(dot: Dot, timestamp: HLCTimestamp) {
        vector.add(dot)
        liveness = Liveness(isDeleted: true, dot: dot, timestamp: timestamp.later(than: liveness.timestamp), deletionContext: vector)
    }

    /// Brings a deleted record back with the field values it holds.
    public mutating func restore(dot: Dot, timestamp: HLCTimestamp) {
        vector.add(dot)
        liveness = Liveness(isDeleted: false, dot: dot, timestamp: timestamp.later(than: liveness.timestamp))
    }
}
