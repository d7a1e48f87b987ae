import Access
import Foundation
import Registry
import Synchronization
import SyncModel
import SyncProtocol
import TLS

/// Who a session is, once its Hello was accepted.
public struct SessionIdentity: Sendable, Hashable {
    public var tenant: String
    public var device: ReplicaID
    /// The e-mail of the device's user, when the authenticator knows users.
    public var user: String?
    /// The device's number in its tenant (`RegisteredDevice.number`), sent in Welcome; `nil`
    /// when the authenticator does not number devices.
    public var deviceNumber: UInt32?

    public init(tenant: String, device: ReplicaID, user: String? = nil, deviceNumber: UInt32? = nil) {
        self.tenant = tenant
        self.device = device
        self.user = user
        self.deviceNumber = deviceNumber
    }
}

/// Decides who may open sessions, and tells the server when that changes.
///
/// Methods may block (the registry is a SQLite file), so the server calls them off its event
/// loops, on the thread pool.
public protocol Authenticator: Sendable {
    /// Returns the session's identity when the credential is good; otherwise throws a `SyncError`
    /// whose code tells the device what is wrong (unknown tenant, bad credential, suspended,
    /// revoked).
    func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws -> SessionIdentity

    /// Trades a one-time enrollment code for a new device id and secret.
    func enroll(tenant: String, code: String, deviceName: String) throws -> Rapport_V1_Enrolled

    /// Re-reads what may have changed (revocations, suspensions, new tenants) and saves what the
    /// server recorded about sessions. Returns whether access rules changed.
    func refresh() throws -> Bool

    /// Why a live session must end now, or `nil` when it may go on.
    func revocation(of identity: SessionIdentity) -> SyncError?

    /// Notes that a device was seen, with the checkpoint it reported; saved at the next refresh.
    func recordActivity(of identity: SessionIdentity, checkpoint: Int64?)

    /// Whether the tenant's sessions may run; a server closes the stores of tenants that may not.
    func isServing(tenant: String) -> Bool

    /// Whether a tenant's store file is made on first use (tests and embedding) or must exist
    /// (a registry creates it with the tenant).
    var createsTenantStores: Bool { get }

    /// What the session's user may do now, with `defaults` for the roles their tenant left as
    /// they are; `nil` when the authenticator knows no users (no rights are applied) or the
    /// user is no longer active.
    func subject(of identity: SessionIdentity, defaults: [Role]) -> AccessSubject?

    /// The tenants whose sessions may run now, for the work the server does on every tenant
    /// (`ScheduledTenantWork`); empty when the authenticator does not list them.
    var servedTenants: [String] { get }

    /// The active users of `tenant` as rights see them (e-mail, role, team): the directory
    /// scheduled work consults (who manages whom). Empty when the authenticator knows no users.
    func users(of tenant: String) -> [AccessSnapshot.UserAccess]
}

extension Authenticator {
    public func enroll(tenant: String, code: String, deviceName: String) throws -> Rapport_V1_Enrolled {
        throw SyncError(.invalidEnrollmentCode, "this server does not enroll devices")
    }
    public func refresh() throws -> Bool { false }
    public func revocation(of identity: SessionIdentity) -> SyncError? { nil }
    public func recordActivity(of identity: SessionIdentity, checkpoint: Int64?) {}
    public var createsTenantStores: Bool { false }
    public func isServing(tenant: String) -> Bool { true }
    public func subject(of identity: SessionIdentity, defaults: [Role]) -> AccessSubject? { nil }
    public var servedTenants: [String] { [] }
    public func users(of tenant: String) -> [AccessSnapshot.UserAccess] { [] }
}

/// Credentials held in memory: one shared secret per tenant, any device id. For tests and for
/// embedding a server in another program; a real deployment uses `RegistryAuthenticator`.
public struct StaticAuthenticator: Authenticator {
    /// Tenant slug to SHA-256 of its secret.
    let secretHashes: [String: [UInt8]]

    public init(secrets: [String: [UInt8]]) {
        secretHashes = secrets.mapValues { Crypto.sha256($0) }
    }

    public func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws -> SessionIdentity {
        guard let expected = secretHashes[tenant] else {
            throw SyncError(.unknownTenant, "no tenant \(TenantID.quoted(tenant)) on this server")
        }
        guard Crypto.constantTimeEquals(Crypto.sha256(secret), expected) else {
            throw SyncError(.authenticationFailed, "wrong credential for tenant '\(tenant)'")
        }
        return SessionIdentity(tenant: tenant, device: device)
    }

    public var createsTenantStores: Bool { true }
}

/// Authenticates devices against the registry of the data directory.
///
/// Sessions are checked against an in-memory snapshot of tenants and devices, so a Hello costs
/// one SHA-256 and no I/O; the snapshot is re-read when `PRAGMA data_version` says another
/// process (`rapportctl`) committed, which `refresh` checks about once a second. Secrets are
/// random 256-bit values, so a plain SHA-256 is enough to keep a stolen registry from
/// revealing them (there is no low-entropy password to brute-force).
public final class RegistryAuthenticator: Authenticator {
    private struct Connection: ~Copyable {
        var registry: Registry
        var dataVersion: Int64
    }

    private let connection: Mutex<Connection>
    private let snapshot: Mutex<AccessSnapshot>
    private let activity = Mutex<[String: (seen: Date, checkpoint: Int64?)]>([:])
    /// Set by every re-read, cleared by `refresh`: a re-read done for an authentication must
    /// still make the watcher look at live sessions.
    private let reloadedSinceRefresh = Atomic<Bool>(false)
    /// Compared against when the device is unknown, so an unknown id takes as long as a bad secret.
    private let decoyHash = Crypto.sha256(Array("rapport: no such device".utf8))

    /// Opens the registry of `dataDirectory` (creating it when missing) and reads it.
    public init(dataDirectory: DataDirectory) throws {
        let registry = try dataDirectory.openRegistry()
        let version = try registry.dataVersion
        let first = try registry.accessSnapshot()
        connection = Mutex(Connection(registry: registry, dataVersion: version))
        snapshot = Mutex(first)
    }

    public func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws -> SessionIdentity {
        // A change rapportctl committed a moment ago applies to this session already; the
        // check is one cheap PRAGMA, and a re-read only when something changed.
        try reloadIfChanged()
        let current = snapshot.withLock { $0 }
        guard let status = current.tenants[tenant], status != .deleted else {
            throw SyncError(.unknownTenant, "no tenant \(TenantID.quoted(tenant)) on this server")
        }
        let entry = current.devices[device.rawValue]
        let matches = Crypto.constantTimeEquals(Crypto.sha256(secret), entry?.secretHash ?? decoyHash)
        // A device of another tenant is refused exactly like an unknown one.
        guard let entry, matches, entry.tenant == tenant else {
            throw SyncError(.authenticationFailed, "unknown device or wrong secret for tenant '\(tenant)'")
        }
        let identity = SessionIdentity(tenant: tenant, device: device, user: entry.user, deviceNumber: UInt32(exactly: entry.number))
        if let refusal = Self.refusal(identity, in: current) { throw refusal }
        return identity
    }

    public func enroll(tenant: String, code: String, deviceName: String) throws -> Rapport_V1_Enrolled {
        guard TenantID.isValid(tenant) else {
            throw SyncError(.unknownTenant, "\(TenantID.quoted(tenant)) is not a valid tenant id")
        }
        let enrollment: Enrollment
        do {
            enrollment = try connection.withLock { try $0.registry.enroll(tenant: tenant, code: code, deviceName: deviceName) }
        } catch RegistryError.enrollment(let failure, let message) {
            let code: SyncError.Code = switch failure {
            case .unknownCode: .invalidEnrollmentCode
            case .expired: .enrollmentCodeExpired
            case .alreadyUsed: .enrollmentCodeUsed
            case .tenantNotActive: .tenantSuspended
            case .userNotActive: .userSuspended
            }
            throw SyncError(code, message)
        }
        try reloadIfChanged(force: true)
        var reply = Rapport_V1_Enrolled()
        reply.deviceID = enrollment.device.id
        reply.secret = Data(enrollment.secret)
        reply.tenant = tenant
        reply.user = enrollment.device.user
        reply.deviceNumber = UInt32(exactly: enrollment.device.number) ?? 0
        return reply
    }

    public func refresh() throws -> Bool {
        let pending = activity.withLock { pending in defer { pending.removeAll() }; return pending }
        if !pending.isEmpty { try connection.withLock { try $0.registry.recordActivity(pending) } }
        try reloadIfChanged()
        return reloadedSinceRefresh.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// Re-reads the snapshot when another connection committed since the last read, or always
    /// when `force`d (after this connection's own write, which `data_version` does not count).
    @discardableResult
    private func reloadIfChanged(force: Bool = false) throws -> Bool {
        try connection.withLock { connection in
            let version = try connection.registry.dataVersion
            guard force || version != connection.dataVersion else { return false }
            connection.dataVersion = version
            let fresh = try connection.registry.accessSnapshot()
            snapshot.withLock { $0 = fresh }
            reloadedSinceRefresh.store(true, ordering: .releasing)
            return true
        }
    }

    public func isServing(tenant: String) -> Bool {
        snapshot.withLock { $0.tenants[tenant] == .active }
    }

    public func subject(of identity: SessionIdentity, defaults: [Role]) -> AccessSubject? {
        guard let user = identity.user else { return nil }
        return snapshot.withLock { $0.subject(tenant: identity.tenant, user: user, defaults: defaults) }
    }

    public var servedTenants: [String] {
        snapshot.withLock { $0.tenants.filter { $0.value == .active }.keys.sorted() }
    }

    public func users(of tenant: String) -> [AccessSnapshot.UserAccess] {
        snapshot.withLock { $0.users[tenant].map { $0.values.sorted { $0.email < $1.email } } ?? [] }
    }

    public func revocation(of identity: SessionIdentity) -> SyncError? {
        let current = snapshot.withLock { $0 }
        return Self.refusal(identity, in: current)
    }

    public func recordActivity(of identity: SessionIdentity, checkpoint: Int64?) {
        activity.withLock { pending in
            let previous = pending[identity.device.rawValue]?.checkpoint
            pending[identity.device.rawValue] = (Date(), checkpoint ?? previous)
        }
    }

    /// Why `identity` may not have a session as of `snapshot`, each with its own code.
    static func refusal(_ identity: SessionIdentity, in snapshot: AccessSnapshot) -> SyncError? {
        switch snapshot.tenants[identity.tenant] {
        case nil, .deleted?:
            return SyncError(.unknownTenant, "tenant '\(identity.tenant)' no longer exists")
        case .suspended?:
            return SyncError(.tenantSuspended, "tenant '\(identity.tenant)' is suspended; ask its administrator")
        case .active?:
            break
        }
        guard let device = snapshot.devices[identity.device.rawValue], device.tenant == identity.tenant else {
            return SyncError(.deviceRevoked, "device \(identity.device) is no longer registered")
        }
        guard device.userStatus == .active else {
            return SyncError(.userSuspended, "user \(device.user) is \(device.userStatus.rawValue)")
        }
        guard device.status == .active else {
            return SyncError(.deviceRevoked, "device \(identity.device) was revoked; enroll it again")
        }
        return nil
    }
}
