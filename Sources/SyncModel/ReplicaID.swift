import Foundation

/// The identity of one replica: a device, a branch server or the central server.
///
/// Every write is stamped with the writing replica's id, so ids must be unique across a tenant for
/// all time. `random()` makes one from 122 random bits; tests may use short readable names.
public struct ReplicaID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The canonical text form, also used on the wire and in the store.
    public let rawValue: String

    /// The longest id accepted, in bytes.
    public static let maxLength = 64

    /// Validates `rawValue`: 1 to 64 characters of `A-Z a-z 0-9 . _ : -`.
    public init(_ rawValue: String) throws(ModelError) {
        guard Self.isValid(utf8: rawValue.utf8) else {
            throw .invalidReplicaID(String(rawValue.prefix(80)))
        }
        self.rawValue = rawValue
    }

    private init(unchecked rawValue: String) { self.rawValue = rawValue }

    /// A new id that no other replica will ever pick.
    public static func random() -> ReplicaID {
        ReplicaID(unchecked: UUID().uuidString.lowercased())
    }

    /// Whether `utf8` spells a valid id: also how encoded vectors are checked without decoding.
    static func isValid<Bytes: Collection<UInt8>>(utf8: Bytes) -> Bool {
        !utf8.isEmpty && utf8.count <= maxLength && utf8.allSatisfy(isAllowed)
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
             UInt8(ascii: ":"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    public static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

/// One write event: the replica that made it and that replica's counter value at the time.
///
/// A dot names a write uniquely and forever; two states carrying the same dot carry the same write.
public struct Dot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let replica: ReplicaID
    public let counter: UInt64

    /// Counters start at 1 and stay within `Int64.max`, so they fit SQLite's signed integers.
    public init(replica: ReplicaID, counter: UInt64) throws(ModelError) {
        guard counter >= 1, counter <= UInt64(Int64.max) else {
            throw .invalidCounter(replica: replica.rawValue, value: String(counter))
        }
        self.replica = replica
        self.counter = counter
    }

    /// Total order used only to break ties deterministically; it says nothing about causality.
    public static func < (lhs: Dot, rhs: Dot) -> Bool {
        (lhs.replica, lhs.counter) < (rhs.replica, rhs.counter)
    }

    public var description: String { "\(replica.rawValue):\(counter)" }
}
