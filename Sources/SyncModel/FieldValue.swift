import Foundation

/// The value of one field of a record.
public enum FieldValue: Hashable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)

    /// The name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .integer: "integer"
        case .real: "real"
        case .text: "text"
        case .blob: "blob"
        }
    }

    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let v): String(v)
        case .integer(let v): String(v)
        case .real(let v): String(v)
        case .text(let v): v
        case .blob(let v): "<\(v.count) bytes>"
        }
    }
}

/// The state of a last-writer-wins field: its value and the write that set it.
public struct RegisterState: Hashable, Sendable {
    public var value: FieldValue
    /// The write that set this value.
    public var dot: Dot
    /// When it was written, by the writer's hybrid logical clock: the tie-breaker.
    public var timestamp: HLCTimestamp

    public init(value: FieldValue, dot: Dot, timestamp: HLCTimestamp) {
        self.value = value
        self.dot = dot
        self.timestamp = timestamp
    }

    /// The deterministic order between two concurrent writes: later timestamp wins, then the dot.
    func beats(_ other: RegisterState) -> Bool {
        (timestamp, dot) > (other.timestamp, other.dot)
    }
}

/// One replica's share of a counter: everything it added and subtracted, and its last write.
public struct CounterContribution: Hashable, Sendable {
    public var added: UInt64
    public var subtracted: UInt64
    /// The counter of this replica's latest write to the counter, which orders contributions.
    public var lastCounter: UInt64
    /// When that latest write happened, for conflict reports.
    public var lastTimestamp: HLCTimestamp

    public init(added: UInt64, subtracted: UInt64, lastCounter: UInt64, lastTimestamp: HLCTimestamp) {
        self.added = added
        self.subtracted = subtracted
        self.lastCounter = lastCounter
        self.lastTimestamp = lastTimestamp
    }
}

/// A counter whose concurrent increments add up (a PN-counter): each replica only ever grows
/// its own contribution, so merging takes each replica's latest contribution.
public struct CounterState: Hashable, Sendable {
    public var contributions: [ReplicaID: CounterContribution]

    public init(contributions: [ReplicaID: CounterContribution] = [:]) {
        self.contributions = contributions
    }

    /// The current value. Saturates rather than traps: a counter fed absurd values stays readable.
    public var value: Int64 { Self.total(of: contributions.values) }

    /// The value of a counter made of `contributions`, for readers that have them without a
    /// `CounterState` (a projection over encoded records).
    ///
    /// Summed wide and clamped once at the end, so the result does not depend on the order of
    /// the contributions: clamping after each one, in a dictionary's order (which differs from
    /// process to process), let two replicas holding the same counter read different values once
    /// it passed the bounds of `Int64`.
    public static func total(of contributions: some Sequence<CounterContribution>) -> Int64 {
        // Each term is below 2^64, so an Int128 holds the sum of 2^63 of them.
        var total: Int128 = 0
        for contribution in contributions {
            total += Int128(contribution.added) - Int128(contribution.subtracted)
        }
        return Int64(clamping: total)
    }

    /// The dots of the latest write of each contributing replica.
    public var dots: [Dot] {
        contributions.compactMap { try? Dot(replica: $0.key, counter: $0.value.lastCounter) }
    }

    /// Applies a local change of `amount` by `dot`.
    public mutating func apply(_ amount: Int64, dot: Dot, timestamp: HLCTimestamp) {
        var contribution = contributions[dot.replica]
            ?? CounterContribution(added: 0, subtracted: 0, lastCounter: 0, lastTimestamp: timestamp)
        if amount >= 0 {
            contribution.added &+= UInt64(amount)
        } else {
            contribution.subtracted &+= amount.magnitude
        }
        contribution.lastCounter = dot.counter
        contribution.lastTimestamp = timestamp
        contributions[dot.replica] = contribution
    }

    /// Joins two counters: for each replica, the contribution of its latest write.
    public func merged(_ other: CounterState) -> CounterState {
        var result = self
        for (replica, theirs) in other.contributions {
            if let mine = result.contributions[replica], mine.lastCounter >= theirs.lastCounter { continue }
            result.contributions[replica] = theirs
        }
        return result
    }
}

/// The state of one field: a last-writer-wins register or a counter.
public enum FieldState: Hashable, Sendable {
    case register(RegisterState)
    case counter(CounterState)

    /// Every write this state carries, to check them against a version vector.
    public var dots: [Dot] {
        switch self {
        case .register(let r): [r.dot]
        case .counter(let c): c.dots
        }
    }

    /// The current value as an app reads it.
    public var value: FieldValue {
        switch self {
        case .register(let r): r.value
        case .counter(let c): .integer(c.value)
        }
    }
}
