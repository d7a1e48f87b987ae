import Foundation
import ReplicaStore
import SQLite
import SyncModel
import TestSupport
import Testing
import TestScheduling

@Suite struct BadFileTests {
    let dir: TemporaryDirectory
    init() throws { dir = try TemporaryDirectory() }

    func fileBytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test(.blocking) func aFileThatIsNotSQLiteIsRefusedAndLeftAlone() throws {
        let path = dir.path("A.sqlite")
        let original = Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try original.write(to: URL(fileURLWithPath: path))
        let error = try #require(throws: ReplicaStoreError.self) { try openStore(dir, "A") }
        guard case .notAStore = error else { Issue.record("expected notAStore, got \(error)"); return }
        #expect(try fileBytes(path) == original)
    }

    @Test(.blocking) func anotherProgramsDatabaseIsRefusedAndLeftAlone() throws {
        let path = dir.path("A.sqlite")
        do {
            var options = Database.Options()
            options.walMode = false
            let other = try Database(path: path, options: options)
            try other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5)")
            other.close()
        }
        let original = try fileBytes(path)
        let error = try #require(throws: ReplicaStoreError.self) { try openStore(dir, "A") }
        guard case .notAStore = error else { Issue.record("expected notAStore, got \(error)"); return }
        #expect(try fileBytes(path) == original)
    }

    @Test(.blocking) func aStoreFromANewerVersionIsRefused() throws {
        do {
            let store = try openStore(dir, "A")
            try store.create("contact", ["name": .text("Ada")])
            store.close()
            let raw = try Database(path: dir.path("A.sqlite"))
            try raw.execute("PRAGMA user_version = 99")
            raw.close()
        }
        #expect(throws: ReplicaStoreError.newerSchema(path: dir.path("A.sqlite"), found: 99, supported: ReplicaStore.supportedSchemaVersion)) {
            try openStore(dir, "A")
        }
    }

    @Test(.blocking) func aDamagedStoreGivesATypedError() throws {
        let path = dir.path("A.sqlite")
        do {
            let store = try openStore(dir, "A")
            for i in 0..<300 { try store.create("contact", ["name": .text(String(repeating: "n\(i)", count: 20))]) }
            store.close()
        }
        // Scribble over the pages after the header and schema page: the records' b-tree.
        var bytes = try fileBytes(path)
        for offset in stride(from: 8192, to: bytes.count, by: 7) { bytes[offset] = 0xA5 }
        try bytes.write(to: URL(fileURLWithPath: path))
        try? FileManager.default.removeItem(atPath: path + "-wal")
        do {
            let store = try openStore(dir, "A")
            _ = try store.records(ofType: "contact")
            Issue.record("reading a damaged store succeeded")
        } catch let error as ReplicaStoreError {
            guard case .corrupt = error else { Issue.record("expected corrupt, got \(error)"); return }
        } catch let error as SQLiteError {
            #expect(error.isCorruption, "\(error)")
        }
    }

    @Test(.blocking) func aDamagedRecordRowIsReportedNotTrusted() throws {
        let store = try openStore(dir, "A")
        let id = try store.create("contact", ["name": .text("Ada")]).id
        let raw = try Database(path: dir.path("A.sqlite"))
        try raw.execute("UPDATE records SET state = x'01ff'")
        #expect(throws: ReplicaStoreError.self) { try store.record(id) }
        try raw.execute("UPDATE records SET vector = x'01014104'")  // replica "A", counter 4, ok
        try raw.execute("UPDATE records SET vector = x'0101410a00'")  // trailing garbage
        #expect(throws: ReplicaStoreError.self) { try store.record(id) }
    }
}
