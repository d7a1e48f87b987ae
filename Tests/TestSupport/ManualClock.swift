import Synchronization

/// A wall clock in milliseconds that a test sets by hand, backwards too.
public final class ManualClock: Sendable {
    private let now: Mutex<UInt64>

    public init(_ start: UInt64) { now = Mutex(start) }

    public func set(_ value: UInt64) { now.withLock { $0 = value } }

    public func read() -> UInt64 { now.withLock { $0 } }
}
