import Access
import Foundation
import SQLite
import SyncModel
import TLS

/// A branch office's replica as the centre's registry knows it.
public struct RegisteredBranch: Codable, Sendable, Equatable {
    /// The branch's id, its credential's: what it authenticates as. The writes it makes itself
    /// (its rules' effects) carry its store's replica id, which it announces to the centre
    /// (`recordBranchReplica`) and which changes when the branch is restored.
    public var id: String
    public var tenant: String
    /// From the same sequence as the tenant's device numbers, never reused.
    public var number: Int64
    public var name: String
    /// The e-mails of the users whose devices it serves; `nil` for every user of the tenant.
    public var users: [String]?
    public var status: DeviceStatus
    public var enrolledAt: Date
    public var revokedAt: Date?
    /// The start of its latest upstream session.
    public var lastSeen: Date?
    /// The latest tenant sequence it said it had applied.
    public var lastCheckpoint: Int64?
}

/// What a branch keeps to reach the centre: written once by `rapportctl branch enroll` for the
/// operator to carry to the branch (it is a credential: owner-only, never logged).
public struct BranchCredential: Codable, Sendable, Equatable {
    public var tenant: String
    /// The branch's replica id.
    public var branchID: String
    public var name: String
    /// Base64 of the 32-byte secret; the centre keeps only its SHA-256.
    public var secret: String

    public init(tenant: String, branchID: String, name: String, secret: [UInt8]) {
        self.tenant = tenant
        self.branchID = branchID
        self.name = name
        self.secret = Data(secret).base64EncodedString()
    }

    enum CodingKeys: String, CodingKey {
        case tenant, name, secret
        case branchID = "branch_id"
    }

    public var secretBytes: [UInt8]? { Data(base64Encoded: secret).map { Array($0) } }
}

/// A branch as a session check sees it, held in memory by the server (`AccessSnapshot`).
public struct BranchAccess: Sendable, Equatable {
    public var id: String
    public var tenant: String
    public var number: Int64
    public var name: String
    /// `nil`: every user of the tenant.
    public var users: Set<String>?
    public var status: DeviceStatus
    public var secretHash: [UInt8]
    /// The replica ids its store has had (`Registry.recordBranchReplica`).
    public var replicas: Set<String>
}

/// The part of the centre's registry a branch needs to serve its devices with the centre's
/// rules (SPEC.md 6.3): the tenant, its users and roles, the devices the branch may serve with
/// their credential hashes, and the branch itself. The centre sends it over the upstream
/// link; the branch adopts it into its own registry, whole.
public struct BranchDirectory: Codable, Sendable, Equatable {
    public struct TenantEntry: Codable, Sendable, Equatable {
        public var slug: String
        public var name: String
        public var status: TenantStatus
    }
    public struct UserEntry: Codable, Sendable, Equatable {
        public var email: String
        public var name: String
        public var role: UserRole
        public var team: String?
        public var status: UserStatus
    }
    public struct RoleEntry: Codable, Sendable, Equatable {
        public var name: String
        /// The role's definition as the centre stores it (JSON of `Access.Role`).
        public var definition: String
    }
    public struct DeviceEntry: Codable, Sendable, Equatable {
        public var id: String
        public var user: String
        public var name: String
        public var number: Int64
        public var status: DeviceStatus
        /// Hex of the SHA-256 of the device's secret.
        public var secretHash: String

        enum CodingKeys: String, CodingKey {
            case id, user, name, number, status
            case secretHash = "secret_hash"
        }
    }
    public struct BranchEntry: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var number: Int64
        public var users: [String]?
    }

    public var tenant: TenantEntry
    public var users: [UserEntry]
    public var roles: [RoleEntry]
    public var devices: [DeviceEntry]
    public var branch: BranchEntry

    /// The bytes sent, sorted keys, so equal directories have equal digests.
    public func encoded() throws -> Data { try JSONEncoder.sorted.encode(self) }

    public static func decoded(_ data: Data) throws -> BranchDirectory {
        do {
            return try JSONDecoder().decode(BranchDirectory.self, from: data)
        } catch {
            throw RegistryError.invalidArgument("the centre's directory does not decode: \(error)")
        }
    }

    /// Hex SHA-256 of `encoded()`.
    public static func digest(of data: Data) -> String { Crypto.hex(Crypto.sha256(Array(data))) }
}

extension Registry {
    // MARK: Branches (at the centre)

    /// The next number of a replica (device or branch) of the tenant: one above every number
    /// ever handed out, revoked ones included.
    /// Runs inside the transaction that stores the number. SQLite's immediate transactions
    /// already queue writers; PostgreSQL's do not, so there the tenant's row stays locked until
    /// that transaction ends, and two enrollments at once never read the same maximum.
    func nextReplicaNumber(tenant: String) throws -> Int64 {
        if db.dialect == .postgres { try db.run("SELECT 1 FROM tenants WHERE slug = ? FOR UPDATE", [tenant]) }
        return try db.fetchInt("""
            SELECT \(db.dialect.greatest)(coalesce((SELECT max(number) FROM devices WHERE tenant = ?), 0),
                       coalesce((SELECT max(number) FROM branches WHERE tenant = ?), 0)) + 1
            """, [tenant, tenant]) ?? 1
    }

    private static let branchColumns = "id, tenant, number, name, users, status, enrolled_at, revoked_at, last_seen, last_checkpoint"
    private static func branch(_ row: any SQLRow) throws -> RegisteredBranch {
        let users = row.isNull(4) ? nil : (try? JSONDecoder().decode([String].self, from: Data(try row.string(4).utf8)))
        return RegisteredBranch(id: try row.string(0), tenant: try row.string(1), number: try row.int64(2), name: try row.string(3), users: users,
                                status: DeviceStatus(rawValue: try row.string(5)) ?? .revoked, enrolledAt: date(try row.int64(6)),
                                revokedAt: try optionalDate(row, 7), lastSeen: try optionalDate(row, 8),
                                lastCheckpoint: try row.optionalInt64(9))
    }

    /// Registers a branch office of the tenant and returns its credential (shown once).
    ///
    /// - Parameter users: the e-mails of the users whose devices it serves; `nil` for all.
    public func enrollBranch(tenant slug: String, name: String, users: [String]?) throws -> (RegisteredBranch, BranchCredential) {
        let tenant = try requireTenant(slug)
        guard tenant.status == .active else { throw RegistryError.tenantNotActive(slug, status: tenant.status) }
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 200 else { throw RegistryError.invalidArgument("a branch name has 1 to 200 characters") }
        var emails: [String]?
        if let users {
            guard !users.isEmpty else { throw RegistryError.invalidArgument("name at least one user, or serve them all") }
            emails = try users.map { try requireUser(tenant: slug, email: $0).email }.sorted()
        }
        let id = ReplicaID.random()
        let secret = try Crypto.randomBytes(32)
        try db.transaction {
            let json = try emails.map { String(decoding: try JSONEncoder.sorted.encode($0), as: UTF8.self) }
            try db.run("""
                INSERT INTO branches (id, tenant, number, name, users, secret_hash, status, enrolled_at)
                VALUES (?, ?, ?, ?, ?, ?, 'active', ?)
                """, [id.rawValue, slug, try nextReplicaNumber(tenant: slug), name, json, Data(Crypto.sha256(secret)), nowMilliseconds])
        }
        guard let branch = try branch(id.rawValue) else { throw RegistryError.noSuchDevice(id.rawValue) }
        return (branch, BranchCredential(tenant: slug, branchID: id.rawValue, name: name, secret: secret))
    }

    public func branches(tenant: String) throws -> [RegisteredBranch] {
        _ = try requireTenant(tenant)
        return try db.fetch("SELECT \(Self.branchColumns) FROM branches WHERE tenant = ? ORDER BY number", [tenant], row: Self.branch)
    }

    public func branch(_ id: String) throws -> RegisteredBranch? {
        try db.fetch("SELECT \(Self.branchColumns) FROM branches WHERE id = ?", [id], row: Self.branch).first
    }

    /// Revokes a branch: its upstream sessions end and its credential never works again. The
    /// devices it served keep their own credentials (they can sync at the centre or another
    /// branch).
    public func revokeBranch(_ id: String, tenant: String? = nil) throws {
        guard let branch = try branch(id), tenant == nil || branch.tenant == tenant else { throw RegistryError.noSuchDevice(id) }
        try db.run("UPDATE branches SET status = 'revoked', revoked_at = coalesce(revoked_at, ?) WHERE id = ?", [nowMilliseconds, id])
    }

    func branchAccess() throws -> [String: BranchAccess] {
        var replicas: [String: Set<String>] = [:]
        for (replica, branch) in try db.fetch("SELECT replica_id, branch FROM branch_replicas", row: { (try $0.string(0), try $0.string(1)) }) {
            replicas[branch, default: []].insert(replica)
        }
        let rows = try db.fetch("SELECT id, tenant, number, name, users, status, secret_hash FROM branches") { row in
            BranchAccess(id: try row.string(0), tenant: try row.string(1), number: try row.int64(2), name: try row.string(3),
                         users: row.isNull(4) ? nil : Set((try? JSONDecoder().decode([String].self, from: Data(try row.string(4).utf8))) ?? []),
                         status: DeviceStatus(rawValue: try row.string(5)) ?? .revoked, secretHash: Array(try row.data(6)),
                         replicas: replicas[try row.string(0)] ?? [])
        }
        return Dictionary(rows.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// Records the replica id a branch's store has now. Returns `true` when the branch had
    /// others before: it was restored from a backup or rebuilt (SPEC.md 6.4).
    @discardableResult
    public func recordBranchReplica(branch id: String, replica: String) throws -> Bool {
        try db.transaction {
            let known = try db.fetch("SELECT replica_id FROM branch_replicas WHERE branch = ?", [id], row: { try $0.string(0) })
            guard !known.contains(replica) else { return false }
            if let owner = try db.fetch("SELECT branch FROM branch_replicas WHERE replica_id = ?", [replica], row: { try $0.string(0) }).first {
                // A branch enrolled anew on the data directory of a revoked one takes its store over.
                let current = try branch(id)
                guard let previous = try branch(owner), previous.status == .revoked, previous.tenant == current?.tenant else {
                    throw RegistryError.invalidArgument("replica \(replica) already belongs to branch \(owner)")
                }
                try db.run("UPDATE branch_replicas SET branch = ? WHERE replica_id = ?", [id, replica])
                return false
            }
            try db.run("INSERT INTO branch_replicas (replica_id, branch, first_seen) VALUES (?, ?, ?)", [replica, id, nowMilliseconds])
            if !known.isEmpty {
                let tenant = try branch(id)?.tenant
                try appendAudit(actor: "branch:\(id)", action: "branch replica renewed", tenant: tenant,
                                detail: "new replica \(replica) after \(known.sorted().joined(separator: ", ")) (restored or rebuilt)", result: "ok")
            }
            return !known.isEmpty
        }
    }

    /// The replica ids a branch's store has had, oldest first.
    public func branchReplicas(branch id: String) throws -> [String] {
        try db.fetch("SELECT replica_id FROM branch_replicas WHERE branch = ? ORDER BY first_seen, replica_id", [id], row: { try $0.string(0) })
    }

    /// What the centre sends a branch (SPEC.md 6.3): the devices of the users it serves (all,
    /// revoked ones included, so the branch ends their sessions too) and every user of the
    /// tenant (rights need teams and managers, and records name owners it does not serve).
    public func directory(forBranch id: String) throws -> BranchDirectory {
        try db.transaction(.deferred) {
            guard let branch = try branch(id) else { throw RegistryError.noSuchDevice(id) }
            let tenant = try requireTenant(branch.tenant, allowDeleted: true)
            let users = try self.users(tenant: tenant.slug, includeRemoved: true).map {
                BranchDirectory.UserEntry(email: $0.email, name: $0.name, role: $0.role, team: $0.team, status: $0.status)
            }
            let roles = try db.fetch("SELECT name, definition FROM roles WHERE tenant = ? ORDER BY name", [tenant.slug]) {
                BranchDirectory.RoleEntry(name: try $0.string(0), definition: try $0.string(1))
            }
            let served = branch.users.map(Set.init)
            let devices = try db.fetch("""
                SELECT d.id, u.email, d.name, d.number, d.status, d.secret_hash FROM devices d JOIN users u ON u.id = d.user_id
                WHERE d.tenant = ? ORDER BY d.number
                """, [tenant.slug]) {
                BranchDirectory.DeviceEntry(id: try $0.string(0), user: try $0.string(1), name: try $0.string(2), number: try $0.int64(3),
                                            status: DeviceStatus(rawValue: try $0.string(4)) ?? .revoked,
                                            secretHash: Crypto.hex(Array(try $0.data(5))))
            }.filter { served?.contains($0.user) ?? true }
            return BranchDirectory(tenant: .init(slug: tenant.slug, name: tenant.name, status: tenant.status),
                                   users: users, roles: roles, devices: devices,
                                   branch: .init(id: branch.id, name: branch.name, number: branch.number, users: branch.users))
        }
    }

    // MARK: The centre's directory (at a branch)

    /// The digest of the directory this branch last adopted, `nil` before the first.
    public func adoptedDirectoryDigest(tenant: String) throws -> String? {
        try db.fetch("SELECT digest FROM upstream_directory WHERE tenant = ?", [tenant], row: { try $0.string(0) }).first
    }

    /// Suspends the tenant here because the centre refuses its sessions, and forgets the
    /// directory adopted last, so that the next one (the tenant active again) is adopted even if
    /// nothing else in it changed.
    public func suspendForCentre(tenant slug: String) throws {
        try audited(actor: "centre", action: "tenant suspend", tenant: slug, detail: "the centre refuses the tenant's sessions") {
            try setTenantStatus(slug, .suspended)
            try db.run("DELETE FROM upstream_directory WHERE tenant = ?", [slug])
        }
    }

    /// Makes this registry's tenant, users, roles and devices what the centre's directory says,
    /// in one transaction: the branch's server then authenticates and applies rights exactly
    /// as the centre would (its `RegistryAuthenticator` notices the commit and ends the sessions
    /// of devices revoked there). Users and devices the directory no longer lists are removed
    /// and revoked here, never deleted, so history still names them. The tenant's row must
    /// exist (the branch creates it with its store).
    ///
    /// - Returns: what changed, for the log and the audit line; empty when nothing did.
    @discardableResult
    public func adopt(_ directory: BranchDirectory, digest: String) throws -> [String] {
        let slug = directory.tenant.slug
        return try db.transaction {
            guard let tenant = try tenant(slug) else { throw RegistryError.noSuchTenant(slug) }
            var changes: [String] = []
            if tenant.status != directory.tenant.status || tenant.name != directory.tenant.name {
                try db.run("UPDATE tenants SET name = ?, status = ? WHERE slug = ?", [directory.tenant.name, directory.tenant.status.rawValue, slug])
                changes.append("tenant \(directory.tenant.status.rawValue)")
            }
            var listed = Set<String>()
            for user in directory.users {
                listed.insert(user.email)
                if let existing = try self.user(tenant: slug, email: user.email) {
                    if existing.name != user.name || existing.role != user.role || existing.team != user.team || existing.status != user.status {
                        try db.run("UPDATE users SET name = ?, role = ?, team = ?, status = ? WHERE id = ?",
                                   [user.name, user.role.rawValue, user.team, user.status.rawValue, existing.id])
                        changes.append("user \(user.email)")
                    }
                } else {
                    try db.run("INSERT INTO users (tenant, email, name, role, team, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [slug, user.email, user.name, user.role.rawValue, user.team, user.status.rawValue, nowMilliseconds])
                    changes.append("user \(user.email)")
                }
            }
            for user in try users(tenant: slug) where !listed.contains(user.email) {
                try db.run("UPDATE users SET status = 'removed' WHERE id = ?", [user.id])
                changes.append("user \(user.email) removed")
            }
            let roles = try db.fetch("SELECT name, definition FROM roles WHERE tenant = ? ORDER BY name", [slug]) {
                BranchDirectory.RoleEntry(name: try $0.string(0), definition: try $0.string(1))
            }
            if roles != directory.roles.sorted(by: { $0.name < $1.name }) {
                try db.run("DELETE FROM roles WHERE tenant = ?", [slug])
                for role in directory.roles {
                    _ = try Self.role(named: role.name, role.definition)
                    try db.run("INSERT INTO roles (tenant, name, definition, updated_at) VALUES (?, ?, ?, ?)",
                               [slug, role.name, role.definition, nowMilliseconds])
                }
                changes.append("roles")
            }
            var devices = Set<String>()
            for device in directory.devices {
                devices.insert(device.id)
                guard let userID = try self.user(tenant: slug, email: device.user)?.id,
                      let hash = Crypto.bytes(fromHex: device.secretHash), hash.count == 32 else {
                    throw RegistryError.invalidArgument("the centre's directory lists device \(device.id) with an unknown user or a bad credential hash")
                }
                if let existing = try self.device(device.id) {
                    let storedHash = try db.fetch("SELECT secret_hash FROM devices WHERE id = ?", [device.id]) { Array(try $0.data(0)) }.first
                    if existing.status != device.status || existing.user != device.user || existing.name != device.name || storedHash != hash {
                        try db.run("UPDATE devices SET user_id = ?, name = ?, secret_hash = ?, status = ?, revoked_at = ? WHERE id = ?",
                                   [userID, device.name, Data(hash), device.status.rawValue,
                                    device.status == .revoked ? nowMilliseconds : nil, device.id])
                        changes.append("device \(device.id) \(device.status.rawValue)")
                    }
                } else {
                    try db.run("""
                        INSERT INTO devices (id, tenant, number, user_id, name, secret_hash, status, enrolled_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """, [device.id, slug, device.number, userID, device.name, Data(hash), device.status.rawValue, nowMilliseconds])
                    changes.append("device \(device.id)")
                }
            }
            for device in try self.devices(tenant: slug) where !devices.contains(device.id) && device.status == .active {
                try db.run("UPDATE devices SET status = 'revoked', revoked_at = ? WHERE id = ?", [nowMilliseconds, device.id])
                changes.append("device \(device.id) no longer served here")
            }
            try db.run("""
                INSERT INTO upstream_directory (tenant, digest, adopted_at) VALUES (?, ?, ?)
                ON CONFLICT (tenant) DO UPDATE SET digest = excluded.digest, adopted_at = excluded.adopted_at
                """, [slug, digest, nowMilliseconds])
            if !changes.isEmpty {
                try appendAudit(actor: "centre", action: "directory adopted", tenant: slug,
                                detail: changes.prefix(20).joined(separator: ", ") + (changes.count > 20 ? ", ..." : ""), result: "ok")
            }
            return changes
        }
    }
}
