import Access
import Foundation
import SQLite
import SyncModel

/// Why the replica store refused an operation. Errors from SQLite itself are thrown as
/// `SQLiteError`, which carries the SQL and the file.
public enum ReplicaStoreError: Error, Equatable, CustomStringConvertible {
    /// The file is not a SQLite database, or is a SQLite database of some other program.
    case notAStore(path: String, reason: String)
    /// SQLite found the file damaged.
    case corrupt(path: String, reason: String)
    /// Written by a newer Rapport whose schema this one does not know.
    case newerSchema(path: String, found: Int, supported: Int)
    /// The tenant was moved to another database (`rapportctl tenant move`); this store keeps
    /// what it held at the move and takes no more writes. `to` says where it went.
    case moved(path: String, to: String)
    /// A restore gave the store a new replica id (`by`) while this handle was open; the handle
    /// takes no more writes, and a new one must be opened.
    case replaced(path: String, by: String)
    /// A record state or a local write broke the model's rules; nothing was written.
    case invalidRecord(ModelError)
    case recordNotFound(UUID)
    /// Creating a record whose id is already taken.
    case recordExists(UUID)
    /// The record is deleted; restore it before changing it.
    case recordDeleted(UUID)
    /// Restoring a record that is not deleted.
    case recordNotDeleted(UUID)
    case conflictNotFound(Int64)
    case conflictClosed(id: Int64, status: String)
    /// The resolution does not fit the conflict (restoring after a concurrent update, say).
    case invalidResolution(id: Int64, reason: String)
    /// The store's `LocalWriteCheck` refused a local write: the user's rights do not allow it.
    /// The whole transaction was rolled back. The reason is the server's own words for it.
    case accessDenied(AccessDenied)

    /// Whether the refusal is about what was asked of a record (invalid, missing, existing,
    /// deleted) rather than about the store itself (its file damaged, foreign or too new).
    /// Callers that skip refused records must stop on the others.
    public var isAboutTheRecord: Bool {
        switch self {
        case .notAStore, .corrupt, .newerSchema, .moved, .replaced: false
        case .invalidRecord, .recordNotFound, .recordExists, .recordDeleted, .recordNotDeleted,
             .conflictNotFound, .conflictClosed, .invalidResolution, .accessDenied: true
        }
    }

    public var description: String {
        switch self {
        case let .notAStore(path, reason): return "\(path) is not a Rapport replica store: \(reason)"
        case let .corrupt(path, reason): return "\(path) is damaged: \(reason)"
        case let .newerSchema(path, found, supported):
            return "\(path) has store schema version \(found), newer than the \(supported) this program supports"
        case let .replaced(path, by):
            return "\(path) was restored under this handle (replica \(by) now); open it again"
        case let .moved(path, to):
            return "\(path) takes no more writes: its tenant moved to \(to); its servers serve it from there"
        case let .invalidRecord(error): return "invalid record: \(error)"
        case let .recordNotFound(id): return "no record \(id)"
        case let .recordExists(id): return "record \(id) already exists"
        case let .recordDeleted(id): return "record \(id) is deleted; restore it first"
        case let .recordNotDeleted(id): return "record \(id) is not deleted"
        case let .conflictNotFound(id): return "no conflict \(id)"
        case let .conflictClosed(id, status): return "conflict \(id) is already \(status)"
        case let .invalidResolution(id, reason): return "conflict \(id): \(reason)"
        case let .accessDenied(denied): return "not allowed: \(denied)"
        }
    }
}
