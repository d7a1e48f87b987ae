import Foundation
import SyncModel
import Testing

@Suite struct RecordIDTests {
    @Test func aNewRecordIDIsAVersion7UUIDOfTheTimeItWasMade() {
        let before = UInt64(Date().timeIntervalSince1970 * 1_000)
        let id = UUID.newRecordID()
        let after = UInt64(Date().timeIntervalSince1970 * 1_000)
        let bytes = id.bytes
        #expect(bytes[6] >> 4 == 7, "version nibble of \(id)")
        #expect(bytes[8] >> 6 == 0b10, "variant bits of \(id)")
        let milliseconds = bytes[0..<6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(milliseconds >= before && milliseconds <= after)
        // Foundation reads it back as the same UUID.
        #expect(UUID(uuidString: id.uuidString) == id)
    }

    /// What the stores rely on: ids made later compare greater byte by byte (as SQLite and
    /// PostgreSQL order blobs and bytea), so they land at the end of an index by id.
    @Test func idsMadeInLaterMillisecondsSortAfterEarlierOnes() async throws {
        var earlier: [UUID] = (0..<100).map { _ in .newRecordID() }
        try await Task.sleep(for: .milliseconds(3))
        let later: [UUID] = (0..<100).map { _ in .newRecordID() }
        let lastEarly = earlier.map(\.bytes).max { $0.lexicographicallyPrecedes($1) }!
        for id in later { #expect(lastEarly.lexicographicallyPrecedes(id.bytes)) }
        earlier += later
        #expect(Set(earlier).count == 200, "ids made in one millisecond are still unique")
    }

    /// Ids as text without Foundation's C formatting read and write exactly as Foundation does.
    @Test func idsReadAndWriteAsFoundationDoes() {
        for _ in 0..<1_000 {
            let id = UUID()
            #expect(id.text() == id.uuidString)
            #expect(id.text(lowercased: true) == id.uuidString.lowercased())
            #expect(UUID(text: id.uuidString) == id)
            #expect(UUID(text: id.uuidString.lowercased()) == id)
        }
        let id = UUID().uuidString
        for bad in ["", "not an id", String(id.dropLast()), id + "0", "G" + id.dropFirst(), " " + id.dropFirst(),
                    id.replacingOccurrences(of: "-", with: "_"), "-" + id.dropLast(), "0000000-00000-0000-0000-000000000000",
                    String(id.prefix(35)) + "é"] {
            #expect(UUID(text: bad) == UUID(uuidString: bad), "\(bad)")
        }
    }
}
