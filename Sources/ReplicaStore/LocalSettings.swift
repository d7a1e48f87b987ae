import Foundation
import SQLite

extension ReplicaStore {
    /// The value this replica keeps under `key` for itself (never synced), or `nil`.
    ///
    /// For what belongs to the replica rather than to its records, such as the rights a device
    /// last received from its server: kept in the store file, it goes wherever the replica goes
    /// (a backup, a copy, an app's container) and is read before the first write.
    public func localSetting(_ key: String) throws -> Data? {
        try db.query("SELECT value FROM local_settings WHERE key = ?", [key]) { $0.data(0) }.first
    }

    /// Keeps `value` under `key` (`nil` removes it), in a transaction of its own or in the
    /// open one, so it is kept exactly when what goes with it is.
    public func setLocalSetting(_ key: String, _ value: Data?) throws {
        try write {
            if let value {
                try db.run("INSERT OR REPLACE INTO local_settings (key, value) VALUES (?, ?)", [key, value])
            } else {
                try db.run("DELETE FROM local_settings WHERE key = ?", [key])
            }
        }
    }
}
