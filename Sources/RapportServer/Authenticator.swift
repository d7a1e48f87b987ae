import Access
import Foundation
import Registry
import ReplicaStore
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
    /// Set when the peer is a branch office (a relaying replica, SPEC.md 6), `nil` for a device.
    public var branch: BranchRelay?

    public init(tenant: String, device: ReplicaID, user: String? = nil, deviceNumber: UInt32? = nil, branch: BranchRelay? = nil) {
        self.tenant = tenant
        self.device = device
        self.user = user
        self.deviceNumber = deviceNumber
        self.branch = branch
    }
}

/// What a branch session relays for.
public struct BranchRelay: Sendable, Hashable {
    public var name: String
    /// The e-mails of the users whose devices it serves; `nil` for every user of the tenant.
    public var users: Set<String>?

    public init(name: String, users: Set<String>?) {
        self.name = name
        self.users = users
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

    /// Whether a branch session may bring new writes made under `replica`'s id: its own store's
    /// (any generation), those of the devices it serves and, for a branch of the whole tenant,
    /// those of every replica of the tenant (it passes on what the centre sent it). Always
    /// `false` for a device session.
    func mayRelay(_ replica: ReplicaID, for identity: SessionIdentity) -> Bool

    /// The user of the device `replica` of `tenant`, whose rights apply to the writes a branch
    /// relays for it; `nil` for a replica that is not one of the tenant's devices.
    func user(ofDevice replica: ReplicaID, tenant: String) -> String?

    /// The part of the registry a branch needs (`BranchDirectory`), encoded as sent.
    func directory(for identity: SessionIdentity) throws -> Data

    /// Records the replica id a branch's store has now; returns `true` when the branch had a
    /// different one before (it was restored or rebuilt).
    func registerReplica(_ replica: ReplicaID, of identity: SessionIdentity) throws -> Bool
    /// How long the tenant keeps tombstones and closed conflicts (its registry settings, the
    /// standard horizons when unset); `nil` when this server does not purge (no registry).
    func retention(of tenant: String) -> RetentionPolicy?

    /// The active API key `presented` is, with what it may do (its role as its tenant defines
    /// it, `defaults` otherwise); `nil` for an unknown, revoked or malformed key. Read from the
    /// registry at every call, so a key revoked a moment ago is refused at once.
    func authenticateAPIKey(_ presented: String, defaults: [Role]) throws -> (APIKey, AccessSubject)?
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
    public func mayRelay(_ replica: ReplicaID, for identity: SessionIdentity) -> Bool { false }
    public func user(ofDevice replica: ReplicaID, tenant: String) -> String? { nil }
    public func directory(for identity: SessionIdentity) throws -> Data {
        throw SyncError(.unexpectedMessage, "this server has no branches")
    }
    public func registerReplica(_ replica: ReplicaID, of identity: SessionIdentity) throws -> Bool { false }
    public func retention(of tenant: String) -> RetentionPolicy? { nil }
    public func authenticateAPIKey(_ presented: String, defaults: [Role]) throws -> (APIKey, AccessSubject)? { nil }
}

/// Credentials held in memory: one shared secret per tenant, any device id. For tests and for
/// embedding a server in another program; a real deployment uses `RegistryAuthenticator`.
public struct StaticAuthenticator: Authenticator {
    /// Tenant slug to SHA-256 of its secret.
    let secretHashes: [String: [UInt8]]
    /// The horizons every tenant keeps (`retention(of:)`); `nil`: this server purges nothing.
    let retention: RetentionPolicy?

    public init(secrets: [String: [UInt8]], retention: RetentionPolicy? = nil) {
        secretHashes = secrets.mapValues { Crypto.sha256($0) }
        self.retention = retention
    }

    public func retention(of tenant: String) -> RetentionPolicy? { secretHashes[tenant] == nil ? nil : retention }

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
    /// Counts the re-reads of the registry: what was derived from it before is stale after.
    private let snapshotGeneration = Atomic<Int>(0)
    /// The directory last sent to each branch, by branch id, with the generation it was read at.
    private let directories = Mutex<[String: (generation: Int, data: Data)]>([:])
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
        let branch = entry == nil ? current.branches[device.rawValue] : nil
        let matches = Crypto.constantTimeEquals(Crypto.sha256(secret), entry?.secretHash ?? branch?.secretHash ?? decoyHash)
        let identity: SessionIdentity
        // A device of another tenant is refused exactly like an unknown one.
        if let entry, matches, entry.tenant == tenant {
            identity = SessionIdentity(tenant: tenant, device: device, user: entry.user, deviceNumber: UInt32(exactly: entry.number))
        } else if let branch, matches, branch.tenant == tenant {
            identity = SessionIdentity(tenant: tenant, device: device, deviceNumber: UInt32(exactly: branch.number),
                                       branch: BranchRelay(name: branch.name, users: branch.users))
        } else {
            throw SyncError(.authenticationFailed, "unknown device or wrong secret for tenant '\(tenant)'")
        }
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
            snapshotGeneration.add(1, ordering: .releasing)
            reloadedSinceRefresh.store(true, ordering: .releasing)
            return true
        }
    }

    public func isServing(tenant: String) -> Bool {
        snapshot.withLock { $0.tenants[tenant] == .active }
    }

    public func authenticateAPIKey(_ presented: String, defaults: [Role]) throws -> (APIKey, AccessSubject)? {
        guard let key = try connection.withLock({ try $0.registry.authenticateAPIKey(presented) }) else { return nil }
        let role = snapshot.withLock { $0.roles[key.tenant]?[key.role.rawValue] } ?? defaults.first { $0.name == key.role.rawValue }
            ?? Role(name: key.role.rawValue, types: [:])
        return (key, AccessSubject(user: key.subjectName, team: nil, role: role, teamMembers: []))
    }

    public func subject(of identity: SessionIdentity, defaults: [Role]) -> AccessSubject? {
        guard let user = identity.user else { return nil }
        return snapshot.withLock { $0.subject(tenant: identity.tenant, user: user, defaults: defaults) }
    }

    public var servedTenants: [String] {
        snapshot.withLock { $0.tenants.filter { $0.value == .active }.keys.sorted() }
    }

    public func retention(of tenant: String) -> RetentionPolicy? {
        snapshot.withLock { $0.retention[tenant] ?? .standard }
    }

    public func users(of tenant: String) -> [AccessSnapshot.UserAccess] {
        snapshot.withLock { $0.users[tenant].map { $0.values.sorted { $0.email < $1.email } } ?? [] }
    }

    public func mayRelay(_ replica: ReplicaID, for identity: SessionIdentity) -> Bool {
        guard let relay = identity.branch else { return false }
        if replica == identity.device { return true }
        return snapshot.withLock { snapshot in
            if snapshot.branches[identity.device.rawValue]?.replicas.contains(replica.rawValue) == true { return true }
            if let device = snapshot.devices[replica.rawValue], device.tenant == identity.tenant {
                return relay.users?.contains(device.user) ?? true
            }
            // A branch of the whole tenant holds what every other replica wrote, and passes it
            // on again when the centre lost it (restored from a backup).
            guard relay.users == nil else { return false }
            return snapshot.branches.values.contains { $0.tenant == identity.tenant && ($0.id == replica.rawValue || $0.replicas.contains(replica.rawValue)) }
        }
    }

    public func user(ofDevice replica: ReplicaID, tenant: String) -> String? {
        snapshot.withLock { snapshot in
            snapshot.devices[replica.rawValue].flatMap { $0.tenant == tenant ? $0.user : nil }
        }
    }

    public func directory(for identity: SessionIdentity) throws -> Data {
        guard identity.branch != nil else { throw SyncError(.unexpectedMessage, "only a branch asks for the directory") }
        // Branches ask every few seconds; the registry is read again only after it changed.
        try reloadIfChanged()
        let generation = snapshotGeneration.load(ordering: .acquiring)
        let branch = identity.device.rawValue
        if let cached = directories.withLock({ $0[branch] }), cached.generation == generation { return cached.data }
        let data = try connection.withLock { try $0.registry.directory(forBranch: branch).encoded() }
        directories.withLock { $0[branch] = (generation, data) }
        return data
    }

    public func registerReplica(_ replica: ReplicaID, of identity: SessionIdentity) throws -> Bool {
        guard identity.branch != nil else { return false }
        // Asked with every directory request: known replicas cost no registry write.
        if snapshot.withLock({ $0.branches[identity.device.rawValue]?.replicas.contains(replica.rawValue) == true }) { return false }
        let renewed = try connection.withLock { try $0.registry.recordBranchReplica(branch: identity.device.rawValue, replica: replica.rawValue) }
        try reloadIfChanged(force: true)
        return renewed
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
        if identity.branch != nil {
            guard let branch = snapshot.branches[identity.device.rawValue], branch.tenant == identity.tenant else {
                return SyncError(.deviceRevoked, "branch \(identity.device) is no longer registered")
            }
            guard branch.status == .active else {
                return SyncError(.deviceRevoked, "branch '\(branch.name)' (\(identity.device)) was revoked; enroll it again")
            }
            return nil
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
