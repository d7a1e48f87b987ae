import Foundation
import SQLite
import TLS

/// An integration client's credential (`rapportctl apikey`): it acts on one tenant with the
/// rights of one role, as a user of that role would.
public struct APIKey: Codable, Sendable, Equatable {
    /// The public part of the key, which `apikey revoke` and the audit log name.
    public var id: String
    public var tenant: String
    /// What the operator calls it ("erp"); unique among the tenant's active keys.
    public var name: String
    /// admin, manager or rep: the tenant's definition of that role applies.
    public var role: UserRole
    public var status: Status
    public var createdAt: Date
    public var revokedAt: Date?

    public enum Status: String, Codable, Sendable {
        case active, revoked
    }

    /// The identity a key's rights are measured by, as a user's e-mail is: it is in no team and
    /// owns the records whose owner is this address, so a key of a role that reads and writes
    /// only its own records (a rep's) works on the records it gave itself as owner. An address
    /// under `.invalid`, which no user can have.
    public var subjectName: String { "\(name.lowercased())@apikey.invalid" }
}

/// A key as made: the secret text is in `secret` and nowhere else, ever again.
public struct IssuedAPIKey: Sendable {
    public var key: APIKey
    /// `rk_<id>_<secret>`, what a client sends as `Authorization: Bearer ...`.
    public var secret: String
}

extension Registry {
    /// The prefix every key starts with, so a leaked one is recognised by scanners and people.
    static let apiKeyPrefix = "rk_"

    private static let apiKeyColumns = "id, tenant, name, role, status, created_at, revoked_at"

    private static func apiKey(_ row: any SQLRow) throws -> APIKey {
        APIKey(id: try row.string(0), tenant: try row.string(1), name: try row.string(2), role: UserRole(rawValue: try row.string(3)) ?? .rep,
               status: APIKey.Status(rawValue: try row.string(4)) ?? .revoked, createdAt: date(try row.int64(5)),
               revokedAt: try optionalDate(row, 6))
    }

    /// Makes a key for `tenant` with `role`'s rights. 256 random bits of secret, kept hashed.
    public func createAPIKey(tenant: String, name: String, role: UserRole) throws -> IssuedAPIKey {
        let tenantRow = try requireTenant(tenant)
        guard tenantRow.status == .active else { throw RegistryError.tenantNotActive(tenant, status: tenantRow.status) }
        let name = name.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw RegistryError.invalidArgument("an API key's name is 1 to 64 letters, digits, '-', '_' or '.', not '\(name.prefix(80))'")
        }
        if try !db.fetch("SELECT 1 FROM api_keys WHERE tenant = ? AND name = ? AND status = 'active'", [tenant, name], row: { _ in 1 }).isEmpty {
            throw RegistryError.invalidArgument("tenant '\(tenant)' already has an active API key named '\(name)'; revoke it first")
        }
        let id = Crypto.hex(try Crypto.randomBytes(8))
        let secret = Crypto.hex(try Crypto.randomBytes(32))
        let created = nowMilliseconds
        try db.run("INSERT INTO api_keys (id, tenant, name, role, secret_hash, status, created_at) VALUES (?, ?, ?, ?, ?, 'active', ?)",
                   [id, tenant, name, role.rawValue, Data(Crypto.sha256(Array(secret.utf8))), created])
        let key = APIKey(id: id, tenant: tenant, name: name, role: role, status: .active, createdAt: Self.date(created), revokedAt: nil)
        return IssuedAPIKey(key: key, secret: Self.apiKeyPrefix + id + "_" + secret)
    }

    /// The tenant's keys, active and revoked, oldest first.
    public func apiKeys(tenant: String) throws -> [APIKey] {
        _ = try requireTenant(tenant)
        return try db.fetch("SELECT \(Self.apiKeyColumns) FROM api_keys WHERE tenant = ? ORDER BY created_at, id", [tenant], row: Self.apiKey)
    }

    /// Revokes the tenant's active key named `nameOrID` (or with that id): refused from the
    /// next request on.
    @discardableResult
    public func revokeAPIKey(tenant: String, _ nameOrID: String) throws -> APIKey {
        _ = try requireTenant(tenant)
        let rows = try db.fetch("""
            SELECT \(Self.apiKeyColumns) FROM api_keys WHERE tenant = ? AND status = 'active' AND (name = ? OR id = ?)
            """, [tenant, nameOrID, nameOrID], row: Self.apiKey)
        guard var key = rows.first else {
            throw RegistryError.invalidArgument("tenant '\(tenant)' has no active API key named or with id '\(nameOrID.prefix(80))'")
        }
        let now = nowMilliseconds
        try db.run("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ?", [now, key.id])
        key.status = .revoked
        key.revokedAt = Self.date(now)
        return key
    }

    /// The active key `presented` is, when its secret matches; `nil` for anything else (unknown,
    /// revoked, malformed, of a tenant that is not active). The hash is compared in constant
    /// time, against a decoy when the id is unknown, so timing tells nothing about which ids exist.
    public func authenticateAPIKey(_ presented: String) throws -> APIKey? {
        let parts = presented.split(separator: "_", omittingEmptySubsequences: false)
        let id = parts.count == 3 && parts[0] == "rk" ? String(parts[1]) : ""
        let secret = parts.count == 3 ? Array(parts[2].utf8) : []
        let rows = try db.fetch("""
            SELECT k.id, k.tenant, k.name, k.role, k.status, k.created_at, k.revoked_at, k.secret_hash, t.status
            FROM api_keys k JOIN tenants t ON t.slug = k.tenant WHERE k.id = ?
            """, [id]) { (try Self.apiKey($0), Array(try $0.data(7)), try $0.string(8)) }
        let decoy = [UInt8](repeating: 0, count: 32)
        let matches = Crypto.constantTimeEquals(Crypto.sha256(secret), rows.first?.1 ?? decoy)
        guard matches, let (key, _, tenantStatus) = rows.first, key.status == .active, tenantStatus == TenantStatus.active.rawValue else {
            return nil
        }
        return key
    }
}
