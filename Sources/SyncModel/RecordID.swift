import Foundation

extension UUID {
    /// A new record's id: a UUID of version 7 (RFC 9562), whose first 48 bits are the wall clock
    /// in milliseconds and whose other 74 free bits are random.
    ///
    /// Why not a random UUID: stores keep records in an index by id (SQLite's `records.id`,
    /// PostgreSQL's primary key), compared byte by byte. Random ids land on a random page of it
    /// each, so every transaction of a pull or an import rewrote most of that index, and the
    /// index was as many pages again in the log as the records were. Ids made in the order
    /// records are made land at its end, which is also the order a pull sends them in. Ids stay
    /// unique for the same reason random ones are (74 random bits per millisecond), and nothing
    /// reads the time back out of an id.
    public static func newRecordID() -> UUID {
        let milliseconds = UInt64(max(0, Date().timeIntervalSince1970 * 1_000))
        var generator = SystemRandomNumberGenerator()
        let high: UInt64 = generator.next(), low: UInt64 = generator.next()
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (40 - 8 * UInt64(index))) }
        for index in 6..<8 { bytes[index] = UInt8(truncatingIfNeeded: high >> (8 * UInt64(index))) }
        for index in 8..<16 { bytes[index] = UInt8(truncatingIfNeeded: low >> (8 * UInt64(index - 8))) }
        bytes[6] = 0x70 | (bytes[6] & 0x0F)  // version 7
        bytes[8] = 0x80 | (bytes[8] & 0x3F)  // variant 10 (RFC 9562)
        return bytes.withUnsafeBytes { UUID(bytes: $0)! }
    }
}

/// Ids as text without Foundation's C formatting: on Linux `uuidString` goes through `snprintf`
/// and `UUID(uuidString:)` through `sscanf`, which an import pays for at every reference it
/// resolves, writes and checks.
extension UUID {
    private static let upperHex = Array("0123456789ABCDEF".utf8), lowerHex = Array("0123456789abcdef".utf8)

    /// The id as `uuidString` writes it, or in lower case as derived ids' keys take it.
    public func text(lowercased: Bool = false) -> String {
        let digits = lowercased ? Self.lowerHex : Self.upperHex
        return withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { out in
                var at = 0
                for (index, byte) in bytes.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 { out[at] = UInt8(ascii: "-"); at += 1 }
                    out[at] = digits[Int(byte >> 4)]
                    out[at + 1] = digits[Int(byte & 0x0F)]
                    at += 2
                }
                return at
            }
        }
    }

    /// The id `text` writes, as `UUID(uuidString:)` reads it: the usual form (36 characters,
    /// hex digits of either case, hyphens after the 8th, 12th, 16th and 20th) read here, any
    /// other left to Foundation, whose `sscanf` takes some looser forms too.
    public init?(text: String) {
        guard let id = Self.usualForm(text) ?? UUID(uuidString: text) else { return nil }
        self = id
    }

    private static func usualForm(_ text: String) -> UUID? {
        var text = text
        var value: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let parsed = text.withUTF8 { utf8 -> Bool in
            guard utf8.count == 36 else { return false }
            return withUnsafeMutableBytes(of: &value) { bytes -> Bool in
                var at = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        guard utf8[at] == UInt8(ascii: "-") else { return false }
                        at += 1
                    }
                    guard let high = Self.hexValue(utf8[at]), let low = Self.hexValue(utf8[at + 1]) else { return false }
                    bytes[index] = high << 4 | low
                    at += 2
                }
                return true
            }
        }
        return parsed ? UUID(uuid: value) : nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
