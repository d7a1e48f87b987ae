import Foundation

/// Whether a record exists or is deleted, as a last-writer-wins register of its own, so that a
/// delete and a later restore are ordinary causal writes.
public struct Liveness: Hashable, Sendable {
    public var isDeleted: Bool
    /// The write that created, deleted or restored the record.
    public var dot: Dot
    public var timestamp: HLCTimestamp
    /// For a deletion, the record's version vector as the delete left it (so it contains the
    /// delete's own dot): writes it covers were deliberately deleted, writes it does not cover
    /// were concurrent with the delete. Empty for a live record.
    public var deletionContext: VersionVector

    /// A liveness in its one canonical form (Protocol/SPEC.md 3.3): a deletion's context gets
    /// the delete's own dot, a live record's context is dropped.
    ///
    /// Without this one delete could travel as two states (a context with or without its own
    /// dot, which mean the same), and the merge, which keeps the winning liveness whole, would
    /// keep whichever it saw first: replicas would disagree on bytes that mean the same thing.
    public init(isDeleted: Bool, dot: Dot, timestamp: HLCTimestamp, deletionContext: VersionVector = VersionVector()) {
        self.isDeleted = isDeleted
        self.dot = dot
        self.timestamp = timestamp
        var context = isDeleted ? deletionContext : VersionVector()
        if isDeleted { context.add(dot) }
        self.deletionContext = context
    }

    var register: RegisterState { RegisterState(value: .bool(isDeleted), dot: dot, timestamp: timestamp) }
}

/// The whole replicated state of one record: what replicas exchange and merge.
///
/// Records always travel whole. That keeps `vector` an exact summary of the writes reflected in
/// `fields`, which the merge relies on to tell causal overwrites from concurrent ones.
public struct RecordState: Hashable, Sendable {
    public let id: UUID
    public let type: String
    /// For each replica, the highest counter of its writes reflected in this state.
    public var vector: VersionVector
    public var liveness: Liveness
    /// Field states by name. Fields this replica's schema does not know are kept and passed on.
    public var fields: [String: FieldState]

    public init(id: UUID, type: String, vector: VersionVector, liveness: Liveness, fields: [String: FieldState]) {
        self.id = id
        self.type = type
        self.vector = vector
        self.liveness = liveness
        self.fields = fields
    }

    public var isDeleted: Bool { liveness.isDeleted }

    /// Field values as an app reads them: registers' values and counters' totals.
    public var values: [String: FieldValue] { fields.mapValues(\.value) }

    /// The latest timestamp of the record's existence and of its registers: what a replica's
    /// clock observes when it takes the state in, so that its own later writes sort after it.
    public var latestTimestamp: HLCTimestamp {
        var latest = liveness.timestamp
        for field in fields.values {
            if case .register(let r) = field, r.timestamp > latest { latest = r.timestamp }
        }
        return latest
    }

    /// Checks that every dot the state carries is covered by its vector. A state that breaks this
    /// would make the merge misjudge causality, so it is refused whole.
    public func checkConsistency() throws(ModelError) {
        try checkLivenessConsistency()
        var checked = liveness.dot
        for (name, field) in fields {
            switch field {
            case .register(let r): try checkConsistency(of: name, r, checked: &checked)
            case .counter(let c): try checkConsistency(of: name, c)
            }
        }
    }

    // The parts of `checkConsistency`, which `Schema.validate` runs in its own pass over fields.

    /// The vector's counters, and the existence register and deletion context against it.
    func checkLivenessConsistency() throws(ModelError) {
        for (replica, counter) in vector.sortedEntries where counter > UInt64(Int64.max) {
            throw .invalidCounter(replica: replica.rawValue, value: String(counter))
        }
        guard vector.contains(liveness.dot) else { throw .dotOutsideVector(record: id.uuidString, dot: liveness.dot.description) }
        guard vector.covers(liveness.deletionContext) else {
            throw .malformedEncoding("record \(id.uuidString): deletion context \(liveness.deletionContext) exceeds the record's vector \(vector)")
        }
    }

    /// A register's dot against the vector. The fields of one write share its dot, so a dot
    /// equal to the last one `checked` (start from the liveness dot) is not looked up again.
    func checkConsistency(of name: String, _ register: RegisterState, checked: inout Dot) throws(ModelError) {
        if register.dot == checked { return }
        checked = register.dot
        guard vector.contains(register.dot) else {
            throw .dotOutsideVector(record: "\(id.uuidString) field '\(name)'", dot: register.dot.description)
        }
    }

    /// A counter's contributions against the vector.
    func checkConsistency(of name: String, _ counter: CounterState) throws(ModelError) {
        for (replica, contribution) in counter.contributions where contribution.lastCounter > vector[replica] || contribution.lastCounter == 0 {
            throw .dotOutsideVector(record: "\(id.uuidString) field '\(name)'", dot: "\(replica):\(contribution.lastCounter)")
        }
    }
}
