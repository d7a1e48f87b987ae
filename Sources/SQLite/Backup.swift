import CSQLite
import Foundation

extension Database {
    /// Copies this database into `destination` with SQLite's online backup API, a batch of pages
    /// at a time, while other connections keep reading and writing it.
    ///
    /// A writer that commits between two steps makes SQLite restart the copy from the start, so
    /// the result is always one consistent snapshot. Locks held by other connections are waited
    /// out (they are released between their transactions); the copy gives up only after
    /// `busyTimeout` of continuous locking.
    ///
    /// - Parameter destination: an open connection; its `main` database is replaced.
    /// - Parameter progress: called after each step with (pages left, total pages).
    public func backup(into destination: Database, pagesPerStep: Int32 = 4096, busyTimeout: Duration = .seconds(30),
                       progress: ((Int, Int) -> Void)? = nil) throws {
        guard let source = handle.pointer, let target = destination.handle.pointer else {
            throw handle.error(code: SQLITE_MISUSE, sql: "backup")
        }
        guard let backup = sqlite3_backup_init(target, "main", source, "main") else {
            // The error of a failed init is reported on the destination connection.
            throw destination.handle.error(code: sqlite3_errcode(target), sql: "backup from \(path)")
        }
        var finished = false
        defer {
            if !finished { sqlite3_backup_finish(backup) }
        }
        let clock = ContinuousClock()
        var blockedSince: ContinuousClock.Instant?
        while true {
            let rc = sqlite3_backup_step(backup, pagesPerStep)
            progress?(Int(sqlite3_backup_remaining(backup)), Int(sqlite3_backup_pagecount(backup)))
            switch rc {
            case SQLITE_DONE:
                finished = true
                let finish = sqlite3_backup_finish(backup)
                guard finish == SQLITE_OK else { throw destination.handle.error(code: finish, sql: "backup from \(path)") }
                return
            case SQLITE_OK:
                blockedSince = nil
            case SQLITE_BUSY, SQLITE_LOCKED:
                let start = blockedSince ?? clock.now
                blockedSince = start
                guard clock.now - start < busyTimeout else {
                    throw SQLiteError(code: rc, message: "backup gave up: the database stayed locked for \(busyTimeout)",
                                      sql: "backup from \(path)", path: destination.path)
                }
                usleep(5_000)
            default:
                finished = true
                sqlite3_backup_finish(backup)
                throw destination.handle.error(code: rc, sql: "backup from \(path)")
            }
        }
    }

    /// `PRAGMA integrity_check`: the problems SQLite finds in the file, empty when it is sound.
    public func integrityProblems(limit: Int = 20) throws -> [String] {
        let rows = try query("PRAGMA integrity_check(\(limit))") { $0.string(0) }
        return rows == ["ok"] ? [] : rows
    }
}
