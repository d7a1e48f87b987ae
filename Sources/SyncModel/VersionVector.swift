/// How two version vectors relate causally.
public enum CausalOrder: Sendable, Equatable {
    case equal
    /// The left side has seen a strict subset of what the right side has seen.
    case before
    /// The left side has seen a strict superset.
    case after
    /// Each side has seen something the other has not.
    case concurrent
}

/// For each replica that wrote to a record, the highest counter of its writes integrated here.
///
/// Because records travel as whole states, an entry `r: n` means every write of `r` to this record
/// with a counter up to `n` is reflected, which is what makes `contains(_:)` a causality test.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    public private(set) var entries: [ReplicaID: UInt64]

    /// The empty vector: nothing seen.
    public init() { entries = [:] }

    /// A vector from checked entries. Zero entries are dropped; they mean "nothing seen".
    public init(_ entries: [ReplicaID: UInt64]) throws(ModelError) {
        for (replica, counter) in entries where counter > UInt64(Int64.max) {
            throw .invalidCounter(replica: replica.rawValue, value: String(counter))
        }
        self.entries = entries.filter { $0.value > 0 }
    }

    /// A vector from signed values as SQLite or a wire format stores them; negatives are refused.
    public init(signed pairs: [(String, Int64)]) throws(ModelError) {
        var entries: [ReplicaID: UInt64] = [:]
        for (name, value) in pairs {
            let replica = try ReplicaID(name)
            guard value >= 0 else { throw .invalidCounter(replica: name, value: String(value)) }
            if value > 0 { entries[replica] = max(entries[replica] ?? 0, UInt64(value)) }
        }
        self.entries = entries
    }

    public subscript(replica: ReplicaID) -> UInt64 { entries[replica] ?? 0 }

    public var isEmpty: Bool { entries.isEmpty }

    /// True when the write `dot` is reflected in the state this vector describes.
    public func contains(_ dot: Dot) -> Bool { self[dot.replica] >= dot.counter }

    /// True when this vector has seen everything `other` has seen.
    public func covers(_ other: VersionVector) -> Bool {
        other.entries.allSatisfy { self[$0.key] >= $0.value }
    }

    public func compare(_ other: VersionVector) -> CausalOrder {
        let selfCovers = covers(other), otherCovers = other.covers(self)
        switch (selfCovers, otherCovers) {
        case (true, true): return .equal
        case (true, false): return .after
        case (false, true): return .before
        case (false, false): return .concurrent
        }
    }

    /// Adds everything `other` has seen (pointwise maximum).
    public mutating func merge(_ other: VersionVector) {
        for (replica, counter) in other.entries where counter > self[replica] {
            entries[replica] = counter
        }
    }

    public func merged(_ other: VersionVector) -> VersionVector {
        var copy = self
        copy.merge(other)
        return copy
    }

    /// Records the write `dot` as seen.
    public mutating func add(_ dot: Dot) {
        if dot.counter > self[dot.replica] { entries[dot.replica] = dot.counter }
    }

    /// Entries sorted by replica, the canonical order for encoding and display.
    public var sortedEntries: [(replica: ReplicaID, counter: UInt64)] {
        entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    public var description: String {
        "{" + sortedEntries.map { "\($0.replica):\($0.counter)" }.joined(separator: ", ") + "}"
    }
}
