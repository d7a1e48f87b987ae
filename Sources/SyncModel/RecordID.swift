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
