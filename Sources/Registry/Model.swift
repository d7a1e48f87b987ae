import Foundation

/// Whether a tenant's devices may sync.
public enum TenantStatus: String, Codable, Sendable, CaseIterable {
    case active
    /// Sessions are refused and live ones ended; data untouched. `tenant resume` undoes it.
    case suspended
    /// Like suspended, and hidden from `tenant list`; the store file stays until `tenant purge`.
    case deleted
}

/// What a user may do; carried for the CRM's permissions and shown to admins.
public enum UserRole: String, Codable, Sendable, CaseIterable {
    case admin, manager, rep
}

public enum UserStatus: String, Codable, Sendable, CaseIterable {
    case active
    /// The user's devices are refused until `user resume`.
    case suspended
    /// Gone for good: devices revoked, the row kept so history still names the user.
    case removed
}

public enum DeviceStatus: String, Codable, Sendable, CaseIterable {
    case active, revoked
}

/// A tenant as the registry knows it.
public struct Tenant: Codable, Sendable, Equatable {
    public var slug: String
    public var name: String
    public var status: TenantStatus
    public var createdAt: Date
    /// When it was deleted; `nil` unless `status` is `deleted`.
    public var deletedAt: Date?
    /// Free-form operator settings (`rapportctl tenant create --setting key=value`).
    public var settings: [String: String]
}

public struct User: Codable, Sendable, Equatable {
    public var id: Int64
    public var tenant: String
    /// Unique within the tenant, lowercase; also what CRM records name as owner.
    public var email: String
    public var name: String
    public var role: UserRole
    public var team: String?
    public var status: UserStatus
    public var createdAt: Date
}

public struct RegisteredDevice: Codable, Sendable, Equatable {
    /// The device's replica id: every write it makes carries it.
    public var id: String
    public var tenant: String
    /// 1, 2, 3, ... within the tenant in enrollment order, never reused, not even after the
    /// device is revoked: case numbers the device makes offline carry it (`C7-0042`), so they
    /// are unique in the tenant without asking the server.
    public var number: Int64
    public var user: String
    public var name: String
    public var status: DeviceStatus
    public var enrolledAt: Date
    public var revokedAt: Date?
    /// The start of its latest session.
    public var lastSeen: Date?
    /// The latest tenant sequence the device said it had applied.
    public var lastCheckpoint: Int64?
}

/// A one-time code that lets a new device enroll, shown once to the admin who made it.
public struct EnrollmentTicket: Codable, Sendable, Equatable {
    /// As the device must present it, e.g. `K7QX2-M9PD4-...`.
    public var code: String
    public var tenant: String
    public var user: String
    public var expiresAt: Date
}

/// What an enrolled device receives, once.
public struct Enrollment: Sendable, Equatable {
    public var device: RegisteredDevice
    /// 32 random bytes; the registry keeps only their SHA-256.
    public var secret: [UInt8]
}

/// One line of the audit log.
public struct AuditEntry: Codable, Sendable, Equatable {
    public var id: Int64
    public var at: Date
    /// Who: the operating-system user running `rapportctl`, or `device:<id>` for an enrollment.
    public var actor: String
    /// What, as the command: `tenant create`, `device revoke`, ...
    public var action: String
    /// The tenant concerned, if any.
    public var tenant: String?
    /// The arguments that matter, e.g. the user's e-mail or the device id.
    public var detail: String
    /// `ok`, or `failed: <reason>`.
    public var result: String
}

/// Why the registry refused an operation. Each case names what it was about.
public enum RegistryError: Error, Equatable, CustomStringConvertible {
    case invalidTenantID(String, reason: String)
    case tenantExists(String, status: TenantStatus)
    case noSuchTenant(String)
    case tenantNotActive(String, status: TenantStatus)
    case tenantNotDeleted(String)
    case confirmationMismatch(expected: String, got: String?)
    case invalidEmail(String)
    case invalidArgument(String)
    case userExists(tenant: String, email: String)
    case noSuchUser(tenant: String, email: String)
    case userNotActive(tenant: String, email: String, status: UserStatus)
    case noSuchDevice(String)
    case noSuchWebhook(String)
    case enrollment(EnrollmentFailure, String)
    /// The registry file is not ours, or is newer than this program.
    case badRegistryFile(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidTenantID(slug, reason): "invalid tenant id \(slug): \(reason)"
        case let .tenantExists(slug, status):
            status == .deleted ? "tenant '\(slug)' exists (deleted, kept until 'rapportctl tenant purge \(slug)')"
                               : "tenant '\(slug)' already exists (\(status.rawValue))"
        case let .noSuchTenant(slug): "no tenant '\(slug)'"
        case let .tenantNotActive(slug, status): "tenant '\(slug)' is \(status.rawValue)"
        case let .tenantNotDeleted(slug): "tenant '\(slug)' is not deleted; delete it before purging"
        case let .confirmationMismatch(expected, got):
            got == nil ? "this cannot be undone lightly: repeat the tenant id with --confirm \(expected)"
                       : "--confirm \(got!) does not match the tenant '\(expected)'"
        case let .invalidEmail(email): "'\(email.prefix(80))' is not an e-mail address"
        case let .invalidArgument(reason): reason
        case let .noSuchWebhook(id): "no webhook '\(id.prefix(80))' (see 'rapportctl webhook list --tenant T')"
        case let .userExists(tenant, email): "user \(email) already exists in tenant '\(tenant)'"
        case let .noSuchUser(tenant, email): "no user \(email) in tenant '\(tenant)'"
        case let .userNotActive(tenant, email, status): "user \(email) of tenant '\(tenant)' is \(status.rawValue)"
        case let .noSuchDevice(id): "no device \(id)"
        case let .enrollment(_, message): message
        case let .badRegistryFile(path, reason): "\(path): \(reason)"
        }
    }
}

/// Why an enrollment code was refused; each maps to its own protocol error code.
public enum EnrollmentFailure: String, Sendable, Equatable {
    case unknownCode, expired, alreadyUsed, tenantNotActive, userNotActive
}
