import CSQLite
import Foundation

/// How much room a database file takes and how much of it is free.
public struct StorageFigures: Sendable, Equatable, Codable {
    /// The main file's pages times the page size.
    public var fileBytes: Int64
    /// Pages on the free list: room SQLite reuses, returned to the file system only by a vacuum.
    public var freeBytes: Int64
    /// The write-ahead log's size on disk (0 without one).
    public var walBytes: Int64
    /// Whether free pages can be given back a few at a time (`PRAGMA auto_vacuum = INCREMENTAL`),
    /// which a file gets when it is created, or from a one-time `VACUUM`.
    public var incrementalVacuum: Bool
}

/// What one `Database.compact` did.
public struct CompactionReport: Sendable, Equatable, Codable {
    public var before: StorageFigures
    public var after: StorageFigures
    /// Pages the incremental vacuum gave back to the file system.
    public var pagesFreed: Int64
    /// Whether the write-ahead log could be emptied and truncated (it cannot while a reader
    /// still reads an older snapshot; the next run tries again).
    public var walTruncated: Bool
    /// Whether a full `VACUUM` rewrote the file (`vacuum: true` on a file without incremental vacuum).
    public var vacuumed: Bool
}

extension Database {
    /// The file's size, free pages and write-ahead log, as this connection sees them.
    public func storageFigures() throws -> StorageFigures {
        let pageSize = try scalarInt("PRAGMA page_size") ?? 4096
        let pages = try scalarInt("PRAGMA page_count") ?? 0
        let free = try scalarInt("PRAGMA freelist_count") ?? 0
        let mode = try scalarInt("PRAGMA auto_vacuum") ?? 0
        let wal = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? NSNumber)?.int64Value ?? 0
        return StorageFigures(fileBytes: pages * pageSize, freeBytes: free * pageSize, walBytes: wal, incrementalVacuum: mode == 2)
    }

    /// Gives free pages back and empties the write-ahead log, without holding the write lock
    /// for long, so the file's other writers (a server's sessions) go on meanwhile.
    ///
    /// The incremental vacuum runs `chunkPages` pages per transaction (each takes the write lock
    /// for a moment); the log is checkpointed passively (never waiting for readers or writers),
    /// and truncated only when that needs no wait. Called inside a transaction it does nothing
    /// but measure, since both need to run on their own.
    ///
    /// - Parameter vacuum: on a file created before incremental vacuum was set, switches it on
    ///   with a full `VACUUM`: that rewrites the file and holds the write lock until done, so it
    ///   is for an operator to ask for (`rapportctl compact --vacuum`), never for scheduled work.
    public func compact(chunkPages: Int = 512, vacuum: Bool = false,
                        isCancelled: () -> Bool = { false }) throws -> CompactionReport {
        let before = try storageFigures()
        guard !isInTransaction else {
            return CompactionReport(before: before, after: before, pagesFreed: 0, walTruncated: false, vacuumed: false)
        }
        var vacuumed = false
        if vacuum && !before.incrementalVacuum {
            try execute("PRAGMA auto_vacuum = INCREMENTAL")
            try execute("VACUUM")
            vacuumed = true
        }
        var freed: Int64 = 0
        if try scalarInt("PRAGMA auto_vacuum") == 2 {
            while !isCancelled(), let free = try scalarInt("PRAGMA freelist_count"), free > 0 {
                try execute("PRAGMA incremental_vacuum(\(max(1, chunkPages)))")
                let left = try scalarInt("PRAGMA freelist_count") ?? 0
                guard left < free else { break }  // another writer filled what was freed
                freed += free - left
            }
        }
        let truncated = try checkpointWithoutWaiting()
        return CompactionReport(before: before, after: try storageFigures(), pagesFreed: freed, walTruncated: truncated,
                                vacuumed: vacuumed)
    }

    /// Copies the log into the file as far as readers allow, then truncates it if that needs no
    /// wait: the busy handler is off meanwhile, so a reader or writer in the way makes SQLite
    /// answer "busy" at once instead of holding the write lock while it waits.
    private func checkpointWithoutWaiting() throws -> Bool {
        _ = try query("PRAGMA wal_checkpoint(PASSIVE)") { _ in () }
        guard let db = handle.pointer else { return false }
        let timeout = Int32(clamping: try scalarInt("PRAGMA busy_timeout") ?? 5_000)
        sqlite3_busy_timeout(db, 0)
        defer { sqlite3_busy_timeout(db, timeout) }
        let result = try? query("PRAGMA wal_checkpoint(TRUNCATE)") { ($0.int64(0), $0.int64(1)) }.first
        return result.map { $0.0 == 0 } ?? false
    }
}
