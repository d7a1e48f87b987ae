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
///
/// Stored as a sorted array: a record is written by a handful of replicas, and for so few
/// entries a scan beats hashing 36-character ids, which matters on every record of every batch.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    struct Entry: Hashable, Sendable {
        var replica: ReplicaID
        var counter: UInt64
    }

    /// Sorted by replica, no zero counters: one canonical form, so `==` and hashing just work.
    private var storage: [Entry]

    /// The empty vector: nothing seen.
    public init() { storage = [] }

    /// A vector from checked entries. Zero entries are dropped; they mean "nothing seen".
    public init(_ entries: [ReplicaID: UInt64]) throws(ModelError) {
        for (replica, counter) in entries where counter > UInt64(Int64.max) {
            throw .invalidCounter(replica: replica.rawValue, value: String(counter))
        }
        storage = entries.filter { $0.value > 0 }.map { Entry(replica: $0.key, counter: $0.value) }
            .sorted { $0.replica < $1.replica }
    }

    /// A vector from signed values as SQLite or a wire format stores them; negatives are refused.
    public init(signed pairs: [(String, Int64)]) throws(ModelError) {
        var entries: [ReplicaID: UInt64] = [:]
        for (name, value) in pairs {
            let replica = try ReplicaID(name)
            guard value >= 0 else { throw .invalidCounter(replica: name, value: String(value)) }
            if value > 0 { entries[replica] = max(entries[replica] ?? 0, UInt64(value)) }
        }
        try self.init(entries)
    }

    /// The entries as a dictionary.
    public var entries: [ReplicaID: UInt64] {
        Dictionary(uniqueKeysWithValues: storage.map { ($0.replica, $0.counter) })
    }

    /// Entries sorted by replica, the canonical order for encoding and display.
    public var sortedEntries: [(replica: ReplicaID, counter: UInt64)] {
        storage.map { ($0.replica, $0.counter) }
    }

    /// The replicas, sorted: the positions by which encoded dots name them.
    var replicas: [ReplicaID] { storage.map(\.replica) }

    /// The number of replicas with a non-zero entry.
    public var count: Int { storage.count }

    private func position(of replica: ReplicaID) -> (index: Int, found: Bool) {
        var low = 0, high = storage.count
        while low < high {
            let mid = (low + high) / 2
            let candidate = storage[mid].replica
            if candidate == replica { return (mid, true) }
            if candidate < replica { low = mid + 1 } else { high = mid }
        }
        return (low, false)
    }

    public subscript(replica: ReplicaID) -> UInt64 {
        let (index, found) = position(of: replica)
        return found ? storage[index].counter : 0
    }

    public var isEmpty: Bool { storage.isEmpty }

    /// True when the write `dot` is reflected in the state this vector describes.
    public func contains(_ dot: Dot) -> Bool { self[dot.replica] >= dot.counter }

    /// True when this vector has seen everything `other` has seen.
    public func covers(_ other: VersionVector) -> Bool {
        var i = 0
        for theirs in other.storage {
            while i < storage.count && storage[i].replica < theirs.replica { i += 1 }
            guard i < storage.count, storage[i].replica == theirs.replica, storage[i].counter >= theirs.counter else { return false }
        }
        return true
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
        if covers(other) { return }
        var result: [Entry] = []
        result.reserveCapacity(storage.count + other.storage.count)
        var i = 0, j = 0
        while i < storage.count || j < other.storage.count {
            if j == other.storage.count || (i < storage.count && storage[i].replica < other.storage[j].replica) {
                result.append(storage[i]); i += 1
            } else if i == storage.count || other.storage[j].replica < storage[i].replica {
                result.append(other.storage[j]); j += 1
            } else {
                result.append(Entry(replica: storage[i].replica, counter: max(storage[i].counter, other.storage[j].counter)))
                i += 1; j += 1
            }
        }
        storage = result
    }

    public func merged(_ other: VersionVector) -> VersionVector {
        var copy = self
        copy.merge(other)
        return copy
    }

    /// Records the write `dot` as seen.
    public mutating func add(_ dot: Dot) {
        let (index, found) = position(of: dot.replica)
        if found {
            storage[index].counter = max(storage[index].counter, dot.counter)
        } else {
            storage.insert(Entry(replica: dot.replica, counter: dot.counter), at: index)
        }
    }

    public var description: String {
        "{" + storage.map { "\($0.replica):\($0.counter)" }.joined(separator: ", ") + "}"
    }
}
