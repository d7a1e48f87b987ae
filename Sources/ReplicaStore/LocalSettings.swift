import Foundation
import SQLite

extension ReplicaStore {
    /// The value this replica keeps under `key` for itself (never synced), or `nil`.
    ///
    /// For what belongs to the replica rather than to its records, such as the rights a device
    /// last received from its server: kept in the store file, it goes wherever the replica goes
    /// (a backup, a copy, an app's container) and is read before the first write.
    public func localSetting(_ key: String) throws -> Data? {
        try db.fetch("SELECT value FROM local_settings WHERE \(tenant.and)key = ?", [key]) { try $0.data(0) }.first
    }

    /// Keeps `value` under `key` (`nil` removes it), in a transaction of its own or in the
    /// open one, so it is kept exactly when what goes with it is.
    public func setLocalSetting(_ key: String, _ value: Data?) throws {
        _ = try write {
            if let value {
                try db.run("""
                    INSERT INTO local_settings (\(tenant.column)key, value, kept_at) VALUES (\(tenant.value)?, ?, ?)
                    ON CONFLICT (\(tenant.column)key) DO UPDATE SET value = excluded.value, kept_at = excluded.kept_at
                    """,
                           [key, value, Int64(clamping: options.wallClock())])
            } else {
                try db.run("DELETE FROM local_settings WHERE \(tenant.and)key = ?", [key])
            }
        }
    }

    /// Removes the local settings whose key starts with `prefix` written `horizon` milliseconds
    /// or longer before `now` (by default the store's wall clock), in transactions of `chunk`
    /// rows so other writers interleave: what a replica keeps for a while only (the responses
    /// kept for `Idempotency-Key` retries of the integration API). A setting written before
    /// the store noted when is taken as written at this purge. Returns how many went.
    @discardableResult
    public func purgeLocalSettings(prefix: String, olderThan horizon: Int64, now: Int64? = nil, chunk: Int = 500) throws -> Int {
        let now = now ?? Int64(clamping: options.wallClock())
        // Keys from `prefix` up to the next key that does not start with it.
        let range: [SQLValue] = [.text(prefix), .text(prefix + "\u{10FFFF}")]
        _ = try write { try db.run("UPDATE local_settings SET kept_at = ? WHERE \(tenant.and)key >= ? AND key < ? AND kept_at IS NULL", [SQLValue.integer(now)] + range) }
        var purged = 0
        while true {
            let done = try write { () -> Int in
                try db.run("""
                    DELETE FROM local_settings WHERE \(tenant.and)key IN (SELECT key FROM local_settings
                        WHERE \(tenant.and)key >= ? AND key < ? AND kept_at <= ? LIMIT ?)
                    """, range + [SQLValue.integer(now - horizon), .integer(Int64(chunk))])
            }
            purged += done
            if done < chunk { return purged }
        }
    }
}
