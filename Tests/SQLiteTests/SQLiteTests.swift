import CSQLite
import Foundation
import PrivateFiles
@testable import SQLite
import TestSupport
import Testing
import TestScheduling

@Suite struct SQLiteTests {
    let dir: TemporaryDirectory
    let db: Database

    init() throws {
        dir = try TemporaryDirectory()
        db = try Database(path: dir.path("test.sqlite"))
        try db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, score REAL, data BLOB)")
    }

    @Test(.blocking) func opensInWALModeWithForeignKeys() throws {
        #expect(try db.query("PRAGMA journal_mode") { $0.string(0) } == ["wal"])
        #expect(try db.scalarInt("PRAGMA foreign_keys") == 1)
    }

    /// SQLite counts no memory (`Database.configureLibrary`): with its statistics on, the
    /// count of memory in use is never zero while a connection holds its cache and statements.
    @Test(.blocking) func sqliteKeepsNoMemoryStatistics() throws {
        try db.run("INSERT INTO t (name, data) VALUES (?, ?)", ["big", SQLValue.blob(Data(count: 100_000))])
        #expect(try db.scalarInt("SELECT count(*) FROM t") == 1)
        #expect(sqlite3_memory_used() == 0)
    }

    @Test(.blocking) func errorsCarryCodesMessageAndSQL() throws {
        let sql = "SELECT * FROM missing_table"
        let error = try #require(throws: SQLiteError.self) { try db.prepare(sql) }
        #expect(error.code == SQLITE_ERROR)
        #expect(error.message.contains("no such table"))
        #expect(error.sql == sql)
        #expect(error.path == db.path)
        #expect(error.description.contains(sql))

        try db.run("INSERT INTO t (name) VALUES (?)", ["alice"])
        let unique = try #require(throws: SQLiteError.self) { try db.run("INSERT INTO t (name) VALUES (?)", ["alice"]) }
        #expect(unique.code == SQLITE_CONSTRAINT)
        #expect(unique.extendedCode == SQLITE_CONSTRAINT | (8 << 8))  // SQLITE_CONSTRAINT_UNIQUE
        #expect(unique.sql == "INSERT INTO t (name) VALUES (?)")
    }

    @Test(.blocking) func wrongParameterCountIsAnError() throws {
        let error = try #require(throws: SQLiteError.self) { try db.run("INSERT INTO t (name, score) VALUES (?, ?)", ["x"]) }
        #expect(error.code == SQLITE_RANGE)
        #expect(error.message.contains("2 parameters"))
    }

    @Test(.blocking) func bindsAndReadsEveryStorageClass() throws {
        let blob = Data([0, 1, 2, 255])
        try db.run("INSERT INTO t (id, name, score, data) VALUES (?, ?, ?, ?)", [Int64.max, "Zoë 🚀", 2.5, blob])
        try db.run("INSERT INTO t (id, name, score, data) VALUES (?, ?, ?, ?)", [Int64.min, "", Double?.none, Data()])
        let rows = try db.query("SELECT id, name, score, data FROM t ORDER BY id") {
            [$0.value(0), $0.value(1), $0.value(2), $0.value(3)]
        }
        #expect(rows == [
            [.integer(Int64.min), .text(""), .null, .blob(Data())],
            [.integer(Int64.max), .text("Zoë 🚀"), .real(2.5), .blob(blob)],
        ])
    }

    @Test(.blocking) func cachedStatementsAreReused() throws {
        let a = try db.cached("SELECT count(*) FROM t")
        let b = try db.cached("SELECT count(*) FROM t")
        #expect(a === b)
    }

    @Test(.blocking) func transactionRollsBackWhenBodyThrows() throws {
        struct Boom: Error {}
        try db.run("INSERT INTO t (name) VALUES ('kept')")
        #expect(throws: Boom.self) {
            try db.transaction {
                try db.run("INSERT INTO t (name) VALUES ('lost')")
                throw Boom()
            }
        }
        #expect(try db.query("SELECT name FROM t") { $0.string(0) } == ["kept"])
        #expect(!db.isInTransaction)
    }

    @Test(.blocking) func nestedTransactionIsASavepoint() throws {
        struct Boom: Error {}
        try db.transaction {
            try db.run("INSERT INTO t (name) VALUES ('outer')")
            _ = try? db.transaction {
                try db.run("INSERT INTO t (name) VALUES ('inner')")
                throw Boom()
            }
            try db.savepoint { try db.run("INSERT INTO t (name) VALUES ('second')") }
        }
        #expect(try db.query("SELECT name FROM t ORDER BY id") { $0.string(0) } == ["outer", "second"])
    }

    @Test(.blocking) func migrationsRunOnceAndInOrder() throws {
        let migrations = [
            Migration(version: 1, "a", sql: "CREATE TABLE m1 (x)"),
            Migration(version: 2, "b", sql: "CREATE TABLE m2 (x)"),
        ]
        #expect(try db.migrate(migrations) == [1, 2])
        #expect(try db.migrate(migrations) == [])
        #expect(try db.userVersion == 2)
        let more = migrations + [Migration(version: 3, "c", sql: "CREATE TABLE m3 (x)")]
        #expect(try db.migrate(more) == [3])
    }

    @Test(.blocking) func failedMigrationLeavesThePreviousVersion() throws {
        let migrations = [
            Migration(version: 1, "a", sql: "CREATE TABLE m1 (x)"),
            Migration(version: 2, "broken", sql: "CREATE TABLE m2 (x); INSERT INTO nowhere VALUES (1)"),
        ]
        #expect(throws: SQLiteError.self) { try db.migrate(migrations) }
        #expect(try db.userVersion == 1)
        #expect(try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name = 'm2'") == 0)
    }

    @Test(.blocking) func newerDatabaseIsRefused() throws {
        try db.execute("PRAGMA user_version = 7")
        let error = try #require(throws: MigrationError.self) {
            try db.migrate([Migration(version: 1, "a", sql: "CREATE TABLE m1 (x)")])
        }
        #expect(error == .databaseIsNewer(path: db.path, found: 7, supported: 1))
    }

    @Test(.blocking) func badlyNumberedMigrationsAreRefused() throws {
        #expect(throws: MigrationError.self) {
            try db.migrate([Migration(version: 2, "skips one", sql: "SELECT 1")])
        }
    }

    @Test(.blocking) func aFileThatIsNotSQLiteIsRefusedAtOpen() throws {
        let path = dir.path("notes.txt")
        let original = Data(String(repeating: "this is not a database\n", count: 200).utf8)
        try original.write(to: URL(fileURLWithPath: path))
        let error = try #require(throws: SQLiteError.self) { try Database(path: path) }
        #expect(error.code == SQLITE_NOTADB)
        #expect(error.isCorruption)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == original)
    }

    @Test(.blocking) func fullDiskFailsTheTransactionAndKeepsEarlierData() throws {
        try db.run("INSERT INTO t (name) VALUES ('before')")
        // A page limit stands in for a full disk: SQLite reports SQLITE_FULL either way.
        let pages = try #require(try db.scalarInt("PRAGMA page_count"))
        try db.execute("PRAGMA max_page_count = \(pages + 2)")
        let error = try #require(throws: SQLiteError.self) {
            try db.transaction {
                for i in 0..<1000 {
                    try db.run("INSERT INTO t (name, data) VALUES (?, ?)", ["row \(i)", Data(count: 4096)])
                }
            }
        }
        #expect(error.isStorageFull)
        #expect(try db.query("SELECT name FROM t") { $0.string(0) } == ["before"])
    }

    @Test(.blocking) func closeIsIdempotentAndLaterUseFails() throws {
        let statement = try db.prepare("SELECT 1")
        db.close()
        db.close()
        let error = try #require(throws: SQLiteError.self) { try statement.step() }
        #expect(error.code == SQLITE_MISUSE)
        #expect(throws: SQLiteError.self) { try db.execute("SELECT 1") }
    }

    @Test(.blocking) func readerSeesCommittedDataWhileWriterHoldsTransaction() throws {
        try db.run("INSERT INTO t (name) VALUES ('committed')")
        let reader = try Database(path: db.path)
        try db.transaction {
            try db.run("INSERT INTO t (name) VALUES ('pending')")
            #expect(try reader.query("SELECT name FROM t") { $0.string(0) } == ["committed"])
        }
        #expect(try reader.scalarInt("SELECT count(*) FROM t") == 2)
    }
}

/// A writer whose log is copied into the file on a thread of its own (a device's initial sync).
@Suite struct BackgroundCheckpointTests {
    let dir: TemporaryDirectory
    let db: Database
    static let rowBytes = 3_000

    init() throws {
        dir = try TemporaryDirectory()
        db = try Database(path: dir.path("bulk.sqlite"))
        try db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
    }

    func size(_ suffix: String = "") -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: db.path + suffix)[.size]) as? NSNumber)?.int64Value ?? -1
    }

    /// `transactions` transactions of 20 rows of a page or so each; returns the log's largest
    /// size on disk after a commit (the log is written over from its start, never shrunk).
    @discardableResult
    func write(transactions: Int) throws -> Int64 {
        var largest: Int64 = 0
        for _ in 0..<transactions {
            try db.transaction {
                for _ in 0..<20 { try db.run("INSERT INTO t (data) VALUES (?)", [Data(count: Self.rowBytes)]) }
            }
            largest = max(largest, size("-wal"))
        }
        return largest
    }

    @Test(.blocking) func theLogIsCopiedBesideTheWriterAndStaysBounded() throws {
        try db.checkpointLogInBackground(everyPages: 100)
        #expect(db.checkpointsLogInBackground)
        #expect(try db.scalarInt("PRAGMA wal_autocheckpoint") == 0, "SQLite's own checkpoint is replaced")
        // About 3,000 pages committed: a log never copied would hold them all (12 MB); one
        // copied only beside the writer would never start over either. At twice the interval
        // the writer waits for a copy of everything, so the log stays near 200 pages.
        let largest = try write(transactions: 150)
        #expect(largest < 300 * 4_120, "log grew to \(largest) bytes")
        try db.waitForBackgroundCheckpoint()
        // Copied: the file itself holds every row.
        #expect(size() >= Int64(150 * 20 * Self.rowBytes))
        let reader = try Database(path: db.path)
        #expect(try reader.scalarInt("SELECT count(*) FROM t") == 3_000)
        reader.close()
    }

    @Test(.blocking) func aCommitThatMakesTheLogTooLongLeavesTheWaitToTheNextTransaction() throws {
        try db.checkpointLogInBackground(everyPages: 10)
        // One transaction of about 20 pages: past twice the interval. Its commit does not wait
        // for the copy (the last commit of a run, an initial sync's field index, ends at once)...
        try write(transactions: 1)
        let checkpointer = try #require(db.logCheckpointer)
        #expect(checkpointer.isDue)
        // ...the next transaction (a small one) does, so it writes the log from its beginning:
        // the log's file does not grow to hold both.
        let before = size("-wal")
        try db.transaction { try db.run("INSERT INTO t (data) VALUES (?)", [Data(count: 10)]) }
        #expect(!checkpointer.isDue)
        #expect(size("-wal") < before + before / 2, "log of \(size("-wal")) bytes after a transaction of \(before)")
        // Ending the run drops a wait still due: the writes after it are SQLite's to copy.
        try write(transactions: 1)
        #expect(checkpointer.isDue)
        try db.checkpointLogInForeground(autocheckpointPages: 1_000)
        #expect(!checkpointer.isDue)
    }

    @Test(.blocking) func theForegroundTakesOverWithoutWaitingAndCloseWaitsForTheLastCopy() throws {
        try db.checkpointLogInBackground(everyPages: 1_000_000)  // nothing copied during the run
        try db.checkpointLogInBackground(everyPages: 10)  // a second call changes nothing
        try write(transactions: 40)
        #expect(size() < Int64(40 * 20 * Self.rowBytes), "copied during the run")
        try db.checkpointLogInForeground(autocheckpointPages: 1_500)
        #expect(!db.checkpointsLogInBackground)
        #expect(try db.scalarInt("PRAGMA wal_autocheckpoint") == 1_500)
        try db.waitForBackgroundCheckpoint()
        #expect(size() >= Int64(40 * 20 * Self.rowBytes), "the last copy is done")
        try write(transactions: 2)
        db.close()
        // The writer's close was the file's last: SQLite removed the log.
        #expect(!FileManager.default.fileExists(atPath: db.path + "-wal"))
    }

    @Test(.blocking) func closeWaitsForACopyStillRunning() throws {
        try db.checkpointLogInBackground(everyPages: 1_000_000)
        try write(transactions: 40)
        try db.checkpointLogInForeground(autocheckpointPages: 1_000)
        db.close()
        #expect(!FileManager.default.fileExists(atPath: db.path + "-wal"))
        #expect(size() >= Int64(40 * 20 * Self.rowBytes))
    }
}

/// Databases hold tenants' data: owner-only from their creation, with their -wal and -shm.
@Suite(.serialized) struct OwnerOnlyFileTests {
    @Test(arguments: [mode_t(0o022), mode_t(0o000)])
    func newDatabasesTheirWALAndFoldersAreOwnerOnlyWhateverTheUmask(mask: mode_t) async throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("data")
        try await FileModes.withUmask(mask) {
            try PrivateFiles.createDirectory(root + "/tenants/deeper")
            let db = try Database(path: root + "/tenants/deeper/store.sqlite")
            defer { db.close() }
            try db.execute("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            try PrivateFiles.write("hello\n", to: root + "/note")
            let names = PrivateFiles.entries(under: root).map { String($0.path.dropFirst(root.count)) }
            #expect(names == ["", "/note", "/tenants", "/tenants/deeper", "/tenants/deeper/store.sqlite",
                              "/tenants/deeper/store.sqlite-shm", "/tenants/deeper/store.sqlite-wal"])
            #expect(FileModes.notOwnerOnly(under: root).isEmpty, "\(FileModes.notOwnerOnly(under: root))")
        }
    }

    @Test(.blocking) func aFolderThatCannotBeMadeIsReportedWithItsPath() throws {
        let dir = try TemporaryDirectory()
        try PrivateFiles.write("x", to: dir.path("file"))
        let error = try #require(throws: PrivateFileError.self) { try PrivateFiles.createDirectory(dir.path("file/sub")) }
        #expect(error.description.contains(dir.path("file")))
    }
}
