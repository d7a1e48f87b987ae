/// A hybrid logical clock timestamp: wall-clock milliseconds in the high 48 bits and a logical
/// counter in the low 16, so timestamps compare as plain integers and fit SQLite's INTEGER.
///
/// Timestamps only break ties between concurrent writes; causality comes from version vectors.
/// That is why a wrong wall clock can at worst pick a different (still deterministic) winner
/// among concurrent writes, whose loser is logged as a conflict either way.
public struct HLCTimestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public static let logicalBits: UInt64 = 16
    public static let maxLogical: UInt64 = (1 << logicalBits) - 1
    /// The largest wall time that fits in 48 bits (year 10889).
    public static let maxWallMilliseconds: UInt64 = (1 << 47) - 1
    public static let zero = HLCTimestamp(rawValue: 0)

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Validates a stored or received timestamp. Values with the top bit set are refused so that
    /// every timestamp stays a non-negative `Int64`.
    public init(signed value: Int64) throws(ModelError) {
        guard value >= 0 else { throw .malformedEncoding("negative HLC timestamp \(value)") }
        rawValue = UInt64(value)
    }

    public init(wallMilliseconds: UInt64, logical: UInt64) {
        rawValue = (min(wallMilliseconds, Self.maxWallMilliseconds) << Self.logicalBits) | (logical & Self.maxLogical)
    }

    /// This timestamp, or the one just after `other` if this is not already later.
    public func later(than other: HLCTimestamp) -> HLCTimestamp {
        self > other ? self : HLCTimestamp(rawValue: other.rawValue + 1)
    }

    public var wallMilliseconds: UInt64 { rawValue >> Self.logicalBits }
    public var logical: UInt64 { rawValue & Self.maxLogical }
    public var signedValue: Int64 { Int64(bitPattern: rawValue) }

    public static func < (lhs: HLCTimestamp, rhs: HLCTimestamp) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(wallMilliseconds).\(logical)" }
}

/// A hybrid logical clock (Kulkarni et al.): timestamps that never go backwards, stay close to
/// the wall clock, and exceed every timestamp this replica has seen from its peers.
///
/// It tolerates a skewed wall clock in two ways. A local clock that jumps backwards does not
/// make timestamps go backwards: the logical part grows instead. A peer whose clock runs far
/// ahead cannot drag this clock into the future: remote timestamps more than `maxForwardDrift`
/// ahead of the local wall clock are not adopted (`observe` reports it), which is safe because
/// timestamps are only tie-breakers, never the causal order.
public struct HybridLogicalClock: Sendable {
    public private(set) var last: HLCTimestamp
    /// How far ahead of the local wall clock a remote timestamp may be and still be adopted.
    public var maxForwardDriftMilliseconds: UInt64
    private let wallClock: @Sendable () -> UInt64

    /// - Parameters:
    ///   - last: the last timestamp issued before a restart, so restarts never go backwards.
    ///   - wallClock: milliseconds since 1970; injectable so tests can skew it.
    public init(
        last: HLCTimestamp = .zero,
        maxForwardDriftMilliseconds: UInt64 = 24 * 3_600_000,
        wallClock: @escaping @Sendable () -> UInt64 = HybridLogicalClock.systemMilliseconds
    ) {
        self.last = last
        self.maxForwardDriftMilliseconds = maxForwardDriftMilliseconds
        self.wallClock = wallClock
    }

    /// Milliseconds since 1970 from the system clock.
    @Sendable public static func systemMilliseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(max(0, spec.tv_sec)) * 1000 + UInt64(max(0, spec.tv_nsec)) / 1_000_000
    }

    /// A new timestamp for a local write, greater than every one issued or observed before.
    public mutating func now() -> HLCTimestamp {
        advance(past: last, wall: wallClock())
    }

    /// Takes a remote timestamp into account so later local writes sort after it.
    ///
    /// - Returns: `false` when the remote timestamp was too far in the future to adopt.
    @discardableResult
    public mutating func observe(_ remote: HLCTimestamp) -> Bool {
        let wall = wallClock()
        guard remote.wallMilliseconds <= wall &+ maxForwardDriftMilliseconds else { return false }
        if remote > last { last = remote }
        return true
    }

    /// Takes a timestamp this same replica issued elsewhere (another process writing the same
    /// store) so later writes sort after it. Unlike `observe`, no drift check: it is our own.
    public mutating func adopt(issued: HLCTimestamp) {
        if issued > last { last = issued }
    }

    private mutating func advance(past previous: HLCTimestamp, wall: UInt64) -> HLCTimestamp {
        let next: HLCTimestamp
        if wall > previous.wallMilliseconds {
            next = HLCTimestamp(wallMilliseconds: wall, logical: 0)
        } else if previous.logical < HLCTimestamp.maxLogical {
            next = HLCTimestamp(rawValue: previous.rawValue + 1)
        } else {
            // The logical part is exhausted within one millisecond: borrow the next millisecond.
            next = HLCTimestamp(wallMilliseconds: previous.wallMilliseconds + 1, logical: 0)
        }
        last = next
        return next
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
