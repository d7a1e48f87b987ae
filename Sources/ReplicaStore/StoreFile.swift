import CSQLite
import Foundation
import SQLite
import SyncModel

/// What a store file holds, as far as an operator needs to know before trusting it.
public struct StoreFileInfo: Sendable, Equatable {
    public var replicaID: String
    /// The store's migration level (`PRAGMA user_version`).
    public var schemaVersion: Int
    public var records: Int
    public var lastSequence: Int64
}

extension ReplicaStore {
    /// The migration level this program writes.
    public static var supportedSchemaVersion: Int { StoreSchema.migrations.count }

    /// Checks a store file without changing it: SQLite's integrity check, that it is a Rapport
    /// store, and that its schema is not newer than this program's. Used on a backup before it
    /// replaces anything.
    ///
    /// - Throws: `ReplicaStoreError.notAStore`, `.corrupt` or `.newerSchema`, naming the file.
    public static func inspect(path: String) throws -> StoreFileInfo {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ReplicaStoreError.notAStore(path: path, reason: "no such file")
        }
        var options = Database.Options()
        options.readOnly = true
        do {
            let db = try Database(path: path, options: options)
            defer { db.close() }
            let applicationID = try db.scalarInt("PRAGMA application_id") ?? 0
            guard applicationID == StoreSchema.applicationID else {
                throw ReplicaStoreError.notAStore(path: path, reason: "the SQLite file belongs to another application (id \(applicationID))")
            }
            let problems = try db.integrityProblems()
            guard problems.isEmpty else {
                throw ReplicaStoreError.corrupt(path: path, reason: "integrity check: " + problems.prefix(3).joined(separator: "; "))
            }
            let version = Int(try db.userVersion)
            guard version <= supportedSchemaVersion else {
                throw ReplicaStoreError.newerSchema(path: path, found: version, supported: supportedSchemaVersion)
            }
            guard let identity = try db.query("SELECT replica_id, sequence FROM replica", row: { ($0.string(0), $0.int64(1)) }).first else {
                throw ReplicaStoreError.corrupt(path: path, reason: "no replica identity")
            }
            let records = Int(try db.scalarInt("SELECT count(*) FROM records") ?? 0)
            return StoreFileInfo(replicaID: identity.0, schemaVersion: version, records: records, lastSequence: identity.1)
        } catch let error as SQLiteError where error.code == SQLITE_NOTADB {
            throw ReplicaStoreError.notAStore(path: path, reason: error.message)
        } catch let error as SQLiteError where error.isCorruption {
            throw ReplicaStoreError.corrupt(path: path, reason: error.description)
        }
    }

    /// Gives a closed store file a new replica id.
    ///
    /// Done to a restored copy of a server's store: devices key their checkpoints by the server's
    /// replica id, so a new id makes every device pull from the start (and re-push what the
    /// restored copy lacks) instead of trusting checkpoints that point into a history the copy
    /// never had. The old id's dots stay valid: the counter continues, so no dot is ever reused.
    public static func assignNewReplicaID(path: String, _ id: ReplicaID = .random()) throws {
        let db = try Database(path: path, options: { var o = Database.Options(); o.create = false; return o }())
        defer { db.close() }
        try db.transaction {
            // The writes made under the old id stay in the records: peers that hold more of
            // them than the backup did push them back, and the receiver must recognise them as
            // its own (`formerReplicaIDs`).
            let former = try db.query("SELECT replica_id FROM replica", row: { $0.string(0) })
            let known = try db.query("SELECT value FROM local_settings WHERE key = ?", [formerIDsSetting]) { $0.data(0) }.first
                .flatMap { try? JSONDecoder().decode([String].self, from: $0) } ?? []
            let ids = Array(Set(known + former)).sorted()
            try db.run("INSERT OR REPLACE INTO local_settings (key, value) VALUES (?, ?)", [formerIDsSetting, try JSONEncoder().encode(ids)])
            try db.run("UPDATE replica SET replica_id = ?", [id.rawValue])
        }
    }
}

/// Local setting: the replica ids this store had before it was restored (JSON array).
let formerIDsSetting = "replica.former_ids"

extension ReplicaStore {
    /// The ids this store's replica had before restores gave it new ones: writes under them are
    /// the store's own, made before the restore, and come back from peers that held them.
    public var formerReplicaIDs: Set<ReplicaID> {
        get throws {
            guard let data = try localSetting(formerIDsSetting),
                  let ids = try? JSONDecoder().decode([String].self, from: data) else { return [] }
            return Set(ids.compactMap { try? ReplicaID($0) })
        }
    }
}

extension ReplicaStore {
    /// Whether this store has pulled from an upstream other than `peer`: a first session with
    /// `peer` is then a restored or replaced upstream, not a first sync.
    public func knowsOtherUpstream(than peer: String) throws -> Bool {
        try db.fetchInt("SELECT EXISTS (SELECT 1 FROM peer_checkpoints WHERE \(tenant.and)peer != ?)", [peer]) == 1
    }

    /// Called with the upstream replica's id at the start of every session. When this store has
    /// synced with an upstream before but never with this one, the upstream was restored from a
    /// backup or replaced (a restored store takes a new id): everything here is marked dirty so
    /// that it is pushed again (merging makes that harmless for what the upstream already has),
    /// and the stale checkpoints are dropped. Returns whether that happened.
    ///
    /// Without this, writes the device had pushed after the backup was taken would be missing
    /// from the restored server forever, since the device considered them acknowledged.
    @discardableResult
    public func adoptUpstream(_ peer: String) throws -> Bool {
        let known = try db.fetch("SELECT peer FROM peer_checkpoints\(tenant.only)", row: { try $0.string(0) })
        guard !known.isEmpty, !known.contains(peer) else { return false }
        try write {
            try db.run("UPDATE records SET dirty = 1 WHERE \(tenant.and)dirty = 0")
            try db.run("DELETE FROM peer_checkpoints\(tenant.only)")
        }
        return true
    }
}

extension ReplicaStore {
    /// The page cache a bulk write runs with (KiB), and the log pages after which it copies
    /// the log into the file.
    static let bulkWriteCacheKiB = 32 * 1024
    static let bulkWriteAutocheckpointPages = 4_000

    /// Sets this connection up for a bulk write: a pull from the start (an initial sync, a
    /// resync) or an import, whose
    /// batches of new records each touch pages all over the records' id index when the ids are
    /// random (imported records' derived ids, and ids made before version 7 UUIDs, see
    /// `UUID.newRecordID()`): with SQLite's default 2 MiB cache, a batch spilled dirty pages to the log
    /// before its commit and read the index back from the file for the next one, and the log
    /// was copied into the file after nearly every batch, copying the same index pages each
    /// time. A larger cache keeps the index in memory; a longer checkpoint interval copies
    /// each of those pages once for several batches. The copies run on a thread of their own
    /// (`Database.checkpointLogInBackground`): in the commit that triggered it, a checkpoint
    /// had kept the pull waiting for the disk with the other core idle. All of this is per
    /// connection and not persistent; `endBulkWrite()` restores it. Calling it twice is harmless.
    ///
    /// A store in a database shared by tenants (PostgreSQL) has no such settings of its own: there
    /// it does nothing.
    public func beginBulkWrite() throws {
        guard settingsBeforeBulkWrite == nil, let db = sqliteFile else { return }
        let before = (cacheSize: try db.scalarInt("PRAGMA cache_size") ?? -2_000,
                      autocheckpoint: try db.scalarInt("PRAGMA wal_autocheckpoint") ?? 1_000)
        try db.execute("PRAGMA cache_size = -\(Self.bulkWriteCacheKiB)")
        let interval = max(Self.bulkWriteAutocheckpointPages, Int(before.autocheckpoint))
        do {
            try db.checkpointLogInBackground(everyPages: interval)
        } catch {
            // No second connection (out of descriptors, say): the pull's own commits copy the
            // log, as SQLite does by itself, which is slower but loses nothing.
            try db.execute("PRAGMA wal_autocheckpoint = \(interval)")
        }
        settingsBeforeBulkWrite = before
    }

    /// Gives the connection back the page cache and checkpoint interval it had before
    /// `beginBulkWrite()` (the cache shrinks at once, freeing its memory). The log's last copy
    /// into the file goes on in the background, so the pull ends without waiting for the disk;
    /// the store's next write does not wait for it either, and `close()` does. Does nothing
    /// when no bulk write was begun.
    public func endBulkWrite() throws {
        guard let before = settingsBeforeBulkWrite, let db = sqliteFile else { return }
        settingsBeforeBulkWrite = nil
        try db.execute("PRAGMA cache_size = \(before.cacheSize)")
        if db.checkpointsLogInBackground {
            try db.checkpointLogInForeground(autocheckpointPages: Int(before.autocheckpoint))
        } else {
            try db.execute("PRAGMA wal_autocheckpoint = \(before.autocheckpoint)")
        }
    }

    /// Whether a bulk write is under way on this connection (`beginBulkWrite()`, not ended yet).
    public var isInBulkWrite: Bool { settingsBeforeBulkWrite != nil }

    /// Runs `body` as a bulk write (`beginBulkWrite()`), unless one is under way already (an
    /// import of a whole export, of which each file's import is one too): the one that began it
    /// ends it. A failure to end it is thrown only when `body` succeeded.
    public func bulkWrite<T>(_ body: () throws -> T) throws -> T {
        guard !isInBulkWrite else { return try body() }
        try beginBulkWrite()
        let result: T
        do {
            result = try body()
        } catch {
            try? endBulkWrite()
            throw error
        }
        try endBulkWrite()
        return result
    }

    /// Waits until the log's copy into the file that a bulk write left running is done (see
    /// `endBulkWrite()`), for a caller that measures it or copies the file; returns at once when none runs.
    public func waitForLogCheckpoint() throws {
        try sqliteFile?.waitForBackgroundCheckpoint()
    }
}
