import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TLS

/// The exit codes of `rapport`, defined once so that the commands, their help and the tests agree.
///
/// Scripts branch on these, so they only ever gain cases; an existing code never changes meaning.
public enum ExitStatus: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    /// Bad arguments, a value that does not fit its field, or a local file that cannot be used.
    case usage = 1
    /// The record, conflict or device named does not exist.
    case notFound = 2
    /// The sync did not complete: the server is unreachable, went away, broke the protocol, or
    /// its storage is full.
    /// Whatever was applied before the failure is kept; running `sync` again resumes.
    case syncFailed = 3
    /// The server refused this device (credential, tenant, revoked device), TLS refused the
    /// server (certificate chain, name or pin), or the user's rights do not allow a change
    /// (nothing of it was kept). Retrying will not help until settings change.
    case refused = 4

    public var description: String {
        switch self {
        case .ok: "success"
        case .usage: "usage: bad argument or field value, unusable local file"
        case .notFound: "not found: record, conflict, or no device in the directory"
        case .syncFailed: "sync failed: server unreachable, connection lost, server storage full; sync again"
        case .refused: "refused: credential, tenant, revoked device, TLS chain or pin, or a change your rights do not allow"
        }
    }

    /// The table printed in `--help`.
    public static var documentation: String {
        allCases.map { "  \($0.rawValue)  \($0.description)" }.joined(separator: "\n")
    }
}

/// A failure of a device command, already classified for the user: what to print and how to exit.
public struct DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    /// How the process exits.
    public var status: ExitStatus
    /// What to tell the user, one line, naming the field, record or setting at fault.
    public var message: String

    /// An error with `status` and `message`.
    public init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    /// An error that exits 1.
    public static func usage(_ message: String) -> DeviceError { DeviceError(.usage, message) }
    /// An error that exits 2.
    public static func notFound(_ message: String) -> DeviceError { DeviceError(.notFound, message) }

    public var description: String { message }

    /// Classifies any error a device command can meet.
    ///
    /// The mapping is by meaning, not by layer: a record that does not exist is "not found"
    /// whether the store or the command found out, and a TLS or credential refusal is set apart
    /// from a network failure because only the latter is worth retrying as is.
    ///
    /// - Parameter duringSync: whether the error came out of a sync, where an error of no known
    ///   type is the network's (NIO's connection errors); elsewhere it is a local failure.
    public static func classify(_ error: any Error, duringSync: Bool = false) -> DeviceError {
        switch error {
        case let error as DeviceError:
            return error
        case let error as ReplicaStoreError:
            switch error {
            case .recordNotFound, .conflictNotFound:
                return DeviceError(.notFound, error.description)
            case .accessDenied(let denied):
                // Not a usage error: the command was right, the user's role forbids it.
                return DeviceError(.refused, "not allowed: \(denied.reason) (\(denied.type) \(Device.text(denied.record))); nothing was changed")
            case .invalidRecord(let model):
                return DeviceError(.usage, model.description)
            default:
                return DeviceError(.usage, error.description)
            }
        case let error as ModelError:
            return DeviceError(.usage, error.description)
        case let error as SyncError:
            switch error.code {
            case .authenticationFailed, .unknownTenant, .tenantSuspended, .deviceRevoked, .userSuspended,
                 .invalidEnrollmentCode, .enrollmentCodeExpired, .enrollmentCodeUsed, .permissionDenied:
                return DeviceError(.refused, "the server refused this device: \(error.message)")
            case .storageFull:
                return DeviceError(.syncFailed, "the server's storage is full: it kept nothing of this sync and your "
                                   + "changes are still on this device; sync again later (or tell the server's operator)")
            default:
                return DeviceError(.syncFailed, "sync failed: \(error)")
            }
        case let error as TLSError:
            switch error.operation {
            case .read, .write:
                return DeviceError(.syncFailed, "sync failed: \(error)")
            default:
                return DeviceError(.refused, "TLS refused the connection: \(error)")
            }
        case let error as ClientError:
            return DeviceError(.syncFailed, "sync failed: \(error)")
        case let error as CocoaError:
            return DeviceError(.usage, error.localizedDescription)
        default:
            return duringSync ? DeviceError(.syncFailed, "sync failed: \(error)") : DeviceError(.usage, "\(error)")
        }
    }
}
