import Access
import CSQLite
import Foundation
import Postgres
import ReplicaStore
import SQLite
import SyncModel
import TLS

/// The registry database of a data directory: tenants, users, devices with their credential
/// hashes, enrollment codes and the audit log. `rapportctl` writes it, `rapportd` reads it (and
/// records enrollments and when devices were last seen); SQLite's locking lets both run at once,
/// and the server notices changes through `dataVersion`. The same code runs on a PostgreSQL
/// database (`init(postgres:)`), which several server nodes and `rapportctl` share: its SQL is
/// written once for both (`SQLDatabase`), with the schema and the odd statement per dialect.
///
/// A `Registry` is one connection and belongs to one thread at a time, like `Database`.
public final class Registry {
    /// 'RPRG': marks the file as a Rapport registry.
    static let applicationID: Int64 = 0x5250_5247
    /// How long an enrollment code stays valid unless told otherwise.
    public static let defaultEnrollmentValidity: Duration = .seconds(24 * 3600)

    /// Where the registry is: its file, or `host:port/database` of its PostgreSQL server.
    public var location: String { db.location }
    let db: any SQLDatabase
    /// The current time; injectable so tests can expire codes.
    let now: @Sendable () -> Date

    /// Opens (creating when missing) the registry file at `path`.
    public convenience init(path: String, now: @escaping @Sendable () -> Date = { Date() }) throws {
        var options = Database.Options()
        options.walMode = false  // only once the file is known to be ours
        let db = try Database(path: path, options: options)
        do {
            let applicationID = try db.scalarInt("PRAGMA application_id") ?? 0
            let objects = try db.scalarInt("SELECT count(*) FROM sqlite_master") ?? 0
            if applicationID != Self.applicationID && !(applicationID == 0 && objects == 0) {
                throw RegistryError.badRegistryFile(path: path, reason: "not a Rapport registry (application id \(applicationID))")
            }
            if try db.userVersion > Self.migrations.count {
                throw RegistryError.badRegistryFile(path: path, reason: "written by a newer Rapport (schema \(try db.userVersion), this one knows \(Self.migrations.count))")
            }
            // Before the first table, so the audit log's room can be given back (`compact`).
            if objects == 0 { try db.execute("PRAGMA auto_vacuum = INCREMENTAL") }
            try db.execute("PRAGMA journal_mode=WAL")
            if objects == 0 { try db.execute("PRAGMA application_id = \(Self.applicationID)") }
            try db.migrate(Self.migrations)
        } catch {
            db.close()
            throw error
        }
        self.init(database: db, now: now)
    }

    /// Opens the registry in the PostgreSQL database at `url`, creating its tables when missing:
    /// the registry of a server tier whose nodes share one database (`Registry+Postgres.swift`).
    public convenience init(postgres url: String, now: @escaping @Sendable () -> Date = { Date() }) throws {
        let connection = try PostgresConnection(url: url)
        do {
            try connection.migrate("registry", Self.postgresMigrations)
        } catch let error as PostgresError where error.message.contains("newer Rapport") {
            throw RegistryError.badRegistryFile(path: connection.location, reason: error.message)
        }
        self.init(database: connection, now: now)
    }

    private init(database: any SQLDatabase, now: @escaping @Sendable () -> Date) {
        self.db = database
        self.now = now
    }

    public func close() { db.close() }

    /// Changes whenever another connection commits a change to what `accessSnapshot` reads: a
    /// cheap way for the server to know when to re-read what it caches. On SQLite, any commit of
    /// another connection counts; on PostgreSQL, a commit by any connection, this one included,
    /// that changed tenants, users, roles, devices (not their activity) or branches, kept by
    /// triggers in one row (`Registry+Postgres.swift`).
    public var dataVersion: Int64 {
        get throws {
            switch db.dialect {
            case .sqlite: try db.fetchInt("PRAGMA data_version") ?? 0
            case .postgres: try db.fetchInt("SELECT version FROM registry_version") ?? 0
            }
        }
    }

    static let migrations: [Migration] = [
        Migration(version: 1, "tenants, users, devices, enrollment codes, audit log", sql: """
            CREATE TABLE tenants (
                slug TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
                created_at INTEGER NOT NULL,      -- milliseconds since 1970
                deleted_at INTEGER,
                settings TEXT NOT NULL DEFAULT '{}'
            ) WITHOUT ROWID;
            CREATE TABLE users (
                id INTEGER PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                email TEXT NOT NULL,
                name TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'rep')),
                team TEXT,
                status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'removed')),
                created_at INTEGER NOT NULL,
                UNIQUE (tenant, email)
            );
            -- A device is a replica: id is its replica id. Only the SHA-256 of its secret is kept.
            CREATE TABLE devices (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                secret_hash BLOB NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
                enrolled_at INTEGER NOT NULL,
                revoked_at INTEGER,
                last_seen INTEGER,
                last_checkpoint INTEGER
            ) WITHOUT ROWID;
            CREATE INDEX devices_by_tenant ON devices (tenant, user_id);
            CREATE TABLE enrollment_codes (
                code_hash BLOB PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER,
                device_id TEXT
            ) WITHOUT ROWID;
            -- Append-only: nothing updates or deletes a row, purging a tenant included.
            CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                at INTEGER NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                tenant TEXT,
                detail TEXT NOT NULL,
                result TEXT NOT NULL
            );
            CREATE INDEX audit_by_tenant ON audit (tenant, id);
            """),
        Migration(version: 2, "roles a tenant changed from the defaults", sql: """
            -- A tenant's own definition of a role (JSON of Access.Role); a role without a row
            -- has the server's defaults.
            CREATE TABLE roles (
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                name TEXT NOT NULL CHECK (name IN ('admin', 'manager', 'rep')),
                definition TEXT NOT NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (tenant, name)
            ) WITHOUT ROWID;
            """),
        // SQLite cannot add a NOT NULL column without a default nor a table constraint, so the
        // table is rebuilt; nothing references it by foreign key.
        Migration(version: 3, "a number per device within its tenant", sql: """
            -- number: 1, 2, 3, ... per tenant in enrollment order, never reused (revoked devices
            -- keep theirs). A device puts it in the case numbers it makes offline (C7-0042), so
            -- two devices never make the same one.
            CREATE TABLE devices_numbered (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                number INTEGER NOT NULL CHECK (number > 0),
                user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                secret_hash BLOB NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
                enrolled_at INTEGER NOT NULL,
                revoked_at INTEGER,
                last_seen INTEGER,
                last_checkpoint INTEGER,
                UNIQUE (tenant, number)
            ) WITHOUT ROWID;
            -- Enrollment order, the order `devices(tenant:)` listed them in until now.
            INSERT INTO devices_numbered (id, tenant, number, user_id, name, secret_hash, status, enrolled_at,
                                          revoked_at, last_seen, last_checkpoint)
                SELECT id, tenant, row_number() OVER (PARTITION BY tenant ORDER BY enrolled_at, id), user_id, name,
                       secret_hash, status, enrolled_at, revoked_at, last_seen, last_checkpoint
                FROM devices;
            DROP TABLE devices;
            ALTER TABLE devices_numbered RENAME TO devices;
            CREATE INDEX devices_by_tenant ON devices (tenant, user_id);
            """),
        Migration(version: 4, "branch offices: replicas that relay for the devices they serve", sql: """
            -- A branch is a replica (id is its replica id) that serves devices of its tenant and
            -- relays their writes to this server. users: JSON array of the e-mails it serves, or
            -- NULL for every user of the tenant. number: from the same sequence as the devices'
            -- (never reused), so the case numbers a branch makes are unique in the tenant too.
            CREATE TABLE branches (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                number INTEGER NOT NULL CHECK (number > 0),
                name TEXT NOT NULL,
                users TEXT,
                secret_hash BLOB NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
                enrolled_at INTEGER NOT NULL,
                revoked_at INTEGER,
                last_seen INTEGER,
                last_checkpoint INTEGER,
                UNIQUE (tenant, number)
            ) WITHOUT ROWID;
            -- The replica ids a branch's store had (SPEC.md 6.4): a restored or rebuilt branch
            -- takes a new one, so it never issues a write id twice; its writes under any of them
            -- are its own.
            CREATE TABLE branch_replicas (
                replica_id TEXT PRIMARY KEY,
                branch TEXT NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
                first_seen INTEGER NOT NULL
            ) WITHOUT ROWID;
            -- At a branch: the centre's directory it last adopted (SPEC.md 6.3), one row.
            CREATE TABLE upstream_directory (
                tenant TEXT PRIMARY KEY,
                digest TEXT NOT NULL,
                adopted_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            """),
        Migration(version: 5, "API keys: integration clients that act with a role's rights", sql: """
            -- A key is shown once ('rk_<id>_<secret>'); only the SHA-256 of its secret is kept.
            -- A revoked key keeps its row, so the audit log and 'apikey list' still name it.
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                secret_hash BLOB NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
                created_at INTEGER NOT NULL,
                revoked_at INTEGER
            ) WITHOUT ROWID;
            CREATE UNIQUE INDEX api_keys_active_name ON api_keys (tenant, name) WHERE status = 'active';
            """),
        Migration(version: 6, "webhook subscriptions, their delivery log and the field versions they last saw", sql: """
            -- events: JSON array of `type` or `type.field`. cursor: the tenant sequence delivered
            -- up to. secret: hex, kept to sign deliveries (the registry is owner-only).
            -- failing_since: when the current run of consecutive failures began.
            CREATE TABLE webhooks (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL REFERENCES tenants (slug) ON DELETE CASCADE,
                url TEXT NOT NULL,
                events TEXT NOT NULL,
                role TEXT NOT NULL,
                ca_file TEXT,
                secret TEXT NOT NULL,
                enabled INTEGER NOT NULL,
                disabled_reason TEXT,
                cursor INTEGER NOT NULL,
                failures INTEGER NOT NULL DEFAULT 0,
                failing_since INTEGER,
                created_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX webhooks_by_tenant ON webhooks (tenant);
            -- The last deliveries of each subscription (bounded: older rows are deleted).
            CREATE TABLE webhook_deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                webhook TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
                event_id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                record TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                at INTEGER NOT NULL,
                status INTEGER,
                error TEXT
            );
            CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, id);
            -- Per record, the write (dot) of each field as last delivered: which fields a later
            -- change touched, for `type.field` events.
            CREATE TABLE webhook_seen (
                webhook TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
                record TEXT NOT NULL,
                fields TEXT NOT NULL,
                PRIMARY KEY (webhook, record)
            ) WITHOUT ROWID;
            """),
    ]

    // MARK: Time

    var nowMilliseconds: Int64 { Self.milliseconds(now()) }
    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
    static func optionalDate(_ row: any SQLRow, _ column: Int32) throws -> Date? {
        try row.optionalInt64(column).map(date)
    }

    // MARK: Audit

    /// Runs an admin action and appends its audit entry: in the same transaction as the action's
    /// registry changes when it succeeds, on its own (with the reason) when it fails.
    public func audited<T>(actor: String, action: String, tenant: String?, detail: String = "",
                           _ body: () throws -> T) throws -> T {
        do {
            return try db.transaction {
                let result = try body()
                try appendAudit(actor: actor, action: action, tenant: tenant, detail: detail, result: "ok")
                return result
            }
        } catch {
            try? appendAudit(actor: actor, action: action, tenant: tenant, detail: detail, result: "failed: \(error)")
            throw error
        }
    }

    func appendAudit(actor: String, action: String, tenant: String?, detail: String, result: String) throws {
        try db.run("INSERT INTO audit (at, actor, action, tenant, detail, result) VALUES (?, ?, ?, ?, ?, ?)", [nowMilliseconds, actor, action, tenant, detail, String(result.prefix(2000))])
    }

    /// The audit log, newest last.
    public func auditEntries(tenant: String? = nil, limit: Int = 100) throws -> [AuditEntry] {
        let filter = tenant == nil ? "" : "WHERE tenant = ?"
        let rows = try db.fetch("""
            SELECT id, at, actor, action, tenant, detail, result FROM audit \(filter) ORDER BY id DESC LIMIT ?
            """, (tenant.map { [$0] } ?? []) + [Int64(limit)]) {
            AuditEntry(id: try $0.int64(0), at: Self.date(try $0.int64(1)), actor: try $0.string(2), action: try $0.string(3),
                       tenant: try $0.optionalString(4), detail: try $0.string(5), result: try $0.string(6))
        }
        return rows.reversed()
    }

    // MARK: Tenants

    static func checkSlug(_ slug: String) throws(RegistryError) {
        if let problem = TenantID.problem(with: slug) { throw .invalidTenantID(TenantID.quoted(slug), reason: problem) }
    }

    private static let tenantColumns = "slug, name, status, created_at, deleted_at, settings"
    private static func tenant(_ row: any SQLRow) throws -> Tenant {
        let settings = (try? JSONDecoder().decode([String: String].self, from: Data(try row.string(5).utf8))) ?? [:]
        return Tenant(slug: try row.string(0), name: try row.string(1), status: TenantStatus(rawValue: try row.string(2)) ?? .suspended,
                      createdAt: date(try row.int64(3)), deletedAt: try optionalDate(row, 4), settings: settings)
    }

    /// Every tenant, by slug; deleted ones only when asked.
    public func tenants(includeDeleted: Bool = false) throws -> [Tenant] {
        try db.fetch("SELECT \(Self.tenantColumns) FROM tenants \(includeDeleted ? "" : "WHERE status != 'deleted'") ORDER BY slug",
                     row: Self.tenant)
    }

    public func tenant(_ slug: String) throws -> Tenant? {
        try db.fetch("SELECT \(Self.tenantColumns) FROM tenants WHERE slug = ?", [slug], row: Self.tenant).first
    }

    /// The tenant, or `noSuchTenant` (deleted tenants count as missing unless asked for).
    public func requireTenant(_ slug: String, allowDeleted: Bool = false) throws -> Tenant {
        try Self.checkSlug(slug)
        guard let tenant = try tenant(slug), allowDeleted || tenant.status != .deleted else { throw RegistryError.noSuchTenant(slug) }
        return tenant
    }

    /// Adds the tenant's row. The tenant's store file must already be in place: `DataDirectory`
    /// creates it first, so a tenant is never visible without its file.
    func insertTenant(slug: String, name: String, settings: [String: String]) throws -> Tenant {
        try Self.checkSlug(slug)
        if let existing = try tenant(slug) { throw RegistryError.tenantExists(slug, status: existing.status) }
        let name = name.isEmpty ? slug : name
        let json = String(decoding: try JSONEncoder.sorted.encode(settings), as: UTF8.self)
        try db.run("INSERT INTO tenants (slug, name, status, created_at, settings) VALUES (?, ?, 'active', ?, ?)",
                   [slug, name, nowMilliseconds, json])
        return try requireTenant(slug)
    }

    public func renameTenant(_ slug: String, to name: String) throws {
        _ = try requireTenant(slug)
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty, name.count <= 200 else {
            throw RegistryError.invalidArgument("a tenant name has 1 to 200 characters")
        }
        try db.run("UPDATE tenants SET name = ? WHERE slug = ?", [name, slug])
    }

    /// Sets a tenant's retention horizons (durations as `RetentionPolicy.duration` reads them,
    /// `90d`, `2s`); `nil` leaves one as it is. Kept in the tenant's settings, which the server
    /// re-reads within a second.
    ///
    /// - Throws: `RegistryError.invalidArgument` for a duration that does not parse; nothing is stored then.
    public func setRetention(_ slug: String, tombstones: String?, conflicts: String?) throws -> RetentionPolicy {
        var tenant = try requireTenant(slug)
        for (key, value) in [(RetentionPolicy.tombstoneSetting, tombstones), (RetentionPolicy.conflictSetting, conflicts)] {
            guard let value else { continue }
            do {
                tenant.settings[key] = RetentionPolicy.text(try RetentionPolicy.duration(value))
            } catch {
                throw RegistryError.invalidArgument("\(key): \(error)")
            }
        }
        let json = String(decoding: try JSONEncoder.sorted.encode(tenant.settings), as: UTF8.self)
        try db.run("UPDATE tenants SET settings = ? WHERE slug = ?", [json, slug])
        return RetentionPolicy(settings: tenant.settings)
    }

    /// Empties the registry's write-ahead log and gives free pages back (`Database.compact`),
    /// a little at a time beside the server's reads and `rapportctl`'s writes; `nil` on
    /// PostgreSQL, whose autovacuum does this.
    public func compact(vacuum: Bool = false) throws -> CompactionReport? {
        guard let file = db as? Database else { return nil }
        return try file.compact(vacuum: vacuum)
    }

    /// Suspends, resumes (to active) or deletes a tenant. Nothing of its data changes.
    public func setTenantStatus(_ slug: String, _ status: TenantStatus) throws {
        _ = try requireTenant(slug, allowDeleted: true)
        try db.run("UPDATE tenants SET status = ?, deleted_at = ? WHERE slug = ?",
                   [status.rawValue, status == .deleted ? nowMilliseconds : nil, slug])
    }

    /// Removes a deleted tenant's rows (users, devices, codes); the audit log keeps its history.
    func removeTenant(_ slug: String) throws {
        let tenant = try requireTenant(slug, allowDeleted: true)
        guard tenant.status == .deleted else { throw RegistryError.tenantNotDeleted(slug) }
        try db.run("DELETE FROM tenants WHERE slug = ?", [slug])
    }

    // MARK: Users

    /// Lowercased and checked: `local@domain` with a dot in the domain, no spaces.
    public static func normalizedEmail(_ email: String) throws -> String {
        let trimmed = email.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
              trimmed.count <= 254, !trimmed.contains(where: { $0.isWhitespace || $0.isNewline || $0.asciiValue.map { $0 < 0x20 } ?? false })
        else { throw RegistryError.invalidEmail(email) }
        return trimmed
    }

    private static let userColumns = "id, tenant, email, name, role, team, status, created_at"
    private static func user(_ row: any SQLRow) throws -> User {
        User(id: try row.int64(0), tenant: try row.string(1), email: try row.string(2), name: try row.string(3),
             role: UserRole(rawValue: try row.string(4)) ?? .rep, team: try row.optionalString(5),
             status: UserStatus(rawValue: try row.string(6)) ?? .suspended, createdAt: date(try row.int64(7)))
    }

    /// Adds a user, or brings back a removed one with the same e-mail.
    @discardableResult
    public func addUser(tenant slug: String, email: String, name: String, role: UserRole, team: String? = nil) throws -> User {
        let tenant = try requireTenant(slug)
        let email = try Self.normalizedEmail(email)
        let name = name.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.count <= 200 else { throw RegistryError.invalidArgument("a user name has 1 to 200 characters") }
        if let existing = try user(tenant: slug, email: email) {
            guard existing.status == .removed else { throw RegistryError.userExists(tenant: slug, email: email) }
            try db.run("UPDATE users SET name = ?, role = ?, team = ?, status = 'active' WHERE id = ?",
                       [name, role.rawValue, team, existing.id])
        } else {
            try db.run("INSERT INTO users (tenant, email, name, role, team, status, created_at) VALUES (?, ?, ?, ?, ?, 'active', ?)",
                       [tenant.slug, email, name, role.rawValue, team, nowMilliseconds])
        }
        return try requireUser(tenant: slug, email: email)
    }

    public func user(tenant: String, email: String) throws -> User? {
        let email = (try? Self.normalizedEmail(email)) ?? email
        return try db.fetch("SELECT \(Self.userColumns) FROM users WHERE tenant = ? AND email = ?", [tenant, email], row: Self.user).first
    }

    public func requireUser(tenant: String, email: String) throws -> User {
        _ = try requireTenant(tenant)
        guard let user = try user(tenant: tenant, email: email) else { throw RegistryError.noSuchUser(tenant: tenant, email: email) }
        return user
    }

    /// The tenant's users; removed ones only when asked.
    public func users(tenant: String, includeRemoved: Bool = false) throws -> [User] {
        _ = try requireTenant(tenant)
        return try db.fetch("SELECT \(Self.userColumns) FROM users WHERE tenant = ? \(includeRemoved ? "" : "AND status != 'removed'") ORDER BY email",
                            [tenant], row: Self.user)
    }

    public func setRole(tenant: String, email: String, _ role: UserRole) throws {
        let user = try requireUser(tenant: tenant, email: email)
        try db.run("UPDATE users SET role = ? WHERE id = ?", [role.rawValue, user.id])
    }

    /// Moves a user to `team` (`nil`: no team). What the user may see and change follows at the
    /// next sync of each of their devices.
    public func setTeam(tenant: String, email: String, _ team: String?) throws {
        let user = try requireUser(tenant: tenant, email: email)
        let team = team?.trimmingCharacters(in: .whitespaces)
        try db.run("UPDATE users SET team = ? WHERE id = ?", [team?.isEmpty == false ? team : nil, user.id])
    }

    // MARK: Roles

    /// The roles the tenant defined itself, by name; a role not listed has the defaults.
    public func roleOverrides(tenant: String) throws -> [String: Role] {
        _ = try requireTenant(tenant)
        return Dictionary(uniqueKeysWithValues: try db.fetch("SELECT name, definition FROM roles WHERE tenant = ?", [tenant]) {
            (try $0.string(0), try Self.role(named: try $0.string(0), try $0.string(1)))
        })
    }

    /// Stores the tenant's definition of `role` (its name must be admin, manager or rep).
    public func setRole(tenant: String, _ role: Role) throws {
        _ = try requireTenant(tenant)
        guard UserRole(rawValue: role.name) != nil else {
            throw RegistryError.invalidArgument("a role is admin, manager or rep, not '\(role.name)'")
        }
        let definition = String(decoding: try JSONEncoder.sorted.encode(role), as: UTF8.self)
        try db.run("""
            INSERT INTO roles (tenant, name, definition, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (tenant, name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at
            """,
                   [tenant, role.name, definition, nowMilliseconds])
    }

    /// Gives a role back its defaults.
    public func resetRole(tenant: String, name: String) throws {
        _ = try requireTenant(tenant)
        try db.run("DELETE FROM roles WHERE tenant = ? AND name = ?", [tenant, name])
    }

    /// A stored definition; one that does not decode means the file was edited behind the
    /// registry's back.
    static func role(named name: String, _ json: String) throws -> Role {
        do {
            return try JSONDecoder().decode(Role.self, from: Data(json.utf8))
        } catch {
            throw RegistryError.badRegistryFile(path: "registry", reason: "role '\(name)' does not decode: \(error)")
        }
    }

    /// Suspends or resumes a user; removing also revokes the user's devices and unused codes.
    public func setUserStatus(tenant: String, email: String, _ status: UserStatus) throws {
        let user = try requireUser(tenant: tenant, email: email)
        guard user.status != .removed || status == .removed else {
            throw RegistryError.userNotActive(tenant: tenant, email: user.email, status: .removed)
        }
        try db.transaction {
            try db.run("UPDATE users SET status = ? WHERE id = ?", [status.rawValue, user.id])
            if status == .removed {
                try db.run("UPDATE devices SET status = 'revoked', revoked_at = ? WHERE user_id = ? AND status = 'active'",
                           [nowMilliseconds, user.id])
                try db.run("DELETE FROM enrollment_codes WHERE user_id = ? AND used_at IS NULL", [user.id])
            }
        }
    }

    // MARK: Devices

    private static let deviceColumns = """
        d.id, d.tenant, u.email, d.name, d.status, d.enrolled_at, d.revoked_at, d.last_seen, d.last_checkpoint, d.number
        """
    private static func device(_ row: any SQLRow) throws -> RegisteredDevice {
        RegisteredDevice(id: try row.string(0), tenant: try row.string(1), number: try row.int64(9), user: try row.string(2), name: try row.string(3),
               status: DeviceStatus(rawValue: try row.string(4)) ?? .revoked, enrolledAt: date(try row.int64(5)),
               revokedAt: try optionalDate(row, 6), lastSeen: try optionalDate(row, 7),
               lastCheckpoint: try row.optionalInt64(8))
    }

    /// The tenant's devices, optionally of one user, in enrollment order (by number).
    public func devices(tenant: String, user email: String? = nil) throws -> [RegisteredDevice] {
        _ = try requireTenant(tenant)
        var sql = "SELECT \(Self.deviceColumns) FROM devices d JOIN users u ON u.id = d.user_id WHERE d.tenant = ?"
        var values: [any SQLBindable] = [tenant]
        if let email {
            sql += " AND u.email = ?"
            values.append(try requireUser(tenant: tenant, email: email).email)
        }
        return try db.fetch(sql + " ORDER BY d.number", values, row: Self.device)
    }

    public func device(_ id: String) throws -> RegisteredDevice? {
        try db.fetch("SELECT \(Self.deviceColumns) FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?",
                     [id], row: Self.device).first
    }

    /// Revokes a device: its sessions end and it can never authenticate again (enroll anew).
    public func revokeDevice(_ id: String, tenant: String? = nil) throws {
        guard let device = try device(id), tenant == nil || device.tenant == tenant else { throw RegistryError.noSuchDevice(id) }
        try db.run("UPDATE devices SET status = 'revoked', revoked_at = coalesce(revoked_at, ?) WHERE id = ?", [nowMilliseconds, id])
    }

    /// Records when devices were last seen and the checkpoints they reported, in one transaction
    /// (the server batches these so a busy tenant does not write the registry per session).
    public func recordActivity(_ activity: [String: (seen: Date, checkpoint: Int64?)]) throws {
        guard !activity.isEmpty else { return }
        try db.transaction {
            let set = "last_seen = \(db.dialect.greatest)(coalesce(last_seen, 0), ?), last_checkpoint = coalesce(?, last_checkpoint)"
            for (id, entry) in activity {
                let values: [any SQLBindable] = [Self.milliseconds(entry.seen), entry.checkpoint, id]
                if try db.run("UPDATE devices SET \(set) WHERE id = ?", values) == 0 {
                    try db.run("UPDATE branches SET \(set) WHERE id = ?", values)
                }
            }
        }
    }

    // MARK: Enrollment

    /// Crockford's base32 without the ambiguous I, L, O, U: codes are read aloud and typed.
    static let codeAlphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

    /// A code for a new device of the user, valid once and for `validity`. 20 symbols of 5 bits:
    /// 100 random bits, far beyond guessing within a day through a server that answers over TLS.
    public func issueEnrollmentCode(tenant: String, user email: String,
                                    validFor validity: Duration = Registry.defaultEnrollmentValidity) throws -> EnrollmentTicket {
        guard validity > .zero, validity <= .seconds(30 * 24 * 3600) else {
            throw RegistryError.invalidArgument("an enrollment code is valid for between 1 second and 30 days")
        }
        let tenantRow = try requireTenant(tenant)
        guard tenantRow.status == .active else { throw RegistryError.tenantNotActive(tenant, status: tenantRow.status) }
        let user = try requireUser(tenant: tenant, email: email)
        guard user.status == .active else { throw RegistryError.userNotActive(tenant: tenant, email: user.email, status: user.status) }
        let symbols = try Crypto.randomBytes(20).map { Self.codeAlphabet[Int($0 & 31)] }
        let code = stride(from: 0, to: 20, by: 5).map { String(symbols[$0..<$0 + 5]) }.joined(separator: "-")
        let created = nowMilliseconds
        let expires = created + validity.components.seconds * 1000 + validity.components.attoseconds / 1_000_000_000_000_000
        try db.run("INSERT INTO enrollment_codes (code_hash, tenant, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                   [Data(Crypto.sha256(Array(Self.normalizedCode(code).utf8))), tenant, user.id, created, expires])
        return EnrollmentTicket(code: code, tenant: tenant, user: user.email, expiresAt: Self.date(expires))
    }

    /// Uppercase without separators, with the letters people confuse read as the digits meant.
    static func normalizedCode(_ code: String) -> String {
        String(code.uppercased().compactMap { c -> Character? in
            switch c {
            case "-", " ", "\t": nil
            case "O": "0"
            case "I", "L": "1"
            default: c
            }
        })
    }

    /// Trades a code for a new device and its secret, once: the code is marked used in the same
    /// transaction that creates the device, so two devices racing with one code get one device.
    /// The device's number is the tenant's highest so far plus one, taken in that transaction:
    /// it holds the write lock from its start (`BEGIN IMMEDIATE`), so two enrollments at once,
    /// from any connections or processes, never take the same number.
    public func enroll(tenant: String, code: String, deviceName: String) throws -> Enrollment {
        let hash = Data(Crypto.sha256(Array(Self.normalizedCode(code).utf8)))
        let name = String(deviceName.trimmingCharacters(in: .whitespacesAndNewlines).prefix(200))
        return try db.transaction {
            let rows = try db.fetch("""
                SELECT c.tenant, c.expires_at, c.used_at, c.user_id, u.email, u.status, t.status
                FROM enrollment_codes c JOIN users u ON u.id = c.user_id JOIN tenants t ON t.slug = c.tenant
                WHERE c.code_hash = ?
                """, [hash]) {
                (tenant: try $0.string(0), expires: try $0.int64(1), used: !$0.isNull(2), userID: try $0.int64(3), email: try $0.string(4),
                 userStatus: try $0.string(5), tenantStatus: try $0.string(6))
            }
            // A code of another tenant is as unknown as a made-up one: nothing tells the caller it exists.
            guard let row = rows.first, row.tenant == tenant else {
                throw RegistryError.enrollment(.unknownCode, "this enrollment code is not valid for tenant \(TenantID.quoted(tenant)); check it, or ask an admin for a new one")
            }
            guard !row.used else {
                throw RegistryError.enrollment(.alreadyUsed, "this enrollment code was already used; ask an admin for a new one")
            }
            guard row.expires > nowMilliseconds else {
                throw RegistryError.enrollment(.expired, "this enrollment code expired at \(Self.date(row.expires).formatted(.iso8601)); ask an admin for a new one")
            }
            guard row.tenantStatus == TenantStatus.active.rawValue else {
                throw RegistryError.enrollment(.tenantNotActive, "tenant '\(tenant)' is \(row.tenantStatus)")
            }
            guard row.userStatus == UserStatus.active.rawValue else {
                throw RegistryError.enrollment(.userNotActive, "user \(row.email) is \(row.userStatus)")
            }
            let id = ReplicaID.random()
            let secret = try Crypto.randomBytes(32)
            let at = nowMilliseconds
            // Revoked devices keep their rows, so max() never hands out a number again.
            try db.run("""
                INSERT INTO devices (id, tenant, number, user_id, name, secret_hash, status, enrolled_at)
                VALUES (?, ?, ?, ?, ?, ?, 'active', ?)
                """, [id.rawValue, tenant, try nextReplicaNumber(tenant: tenant), row.userID, name.isEmpty ? "device" : name,
                      Data(Crypto.sha256(secret)), at])
            // Checked again as it is marked: on PostgreSQL another node may have used the code since
            // it was read above (SQLite's write lock rules that out, the check costs it nothing).
            guard try db.run("UPDATE enrollment_codes SET used_at = ?, device_id = ? WHERE code_hash = ? AND used_at IS NULL",
                             [at, id.rawValue, hash]) == 1 else {
                throw RegistryError.enrollment(.alreadyUsed, "this enrollment code was already used; ask an admin for a new one")
            }
            try appendAudit(actor: "device:\(id.rawValue)", action: "device enrolled", tenant: tenant,
                            detail: "user \(row.email), name \(name)", result: "ok")
            guard let device = try device(id.rawValue) else { throw RegistryError.noSuchDevice(id.rawValue) }
            return Enrollment(device: device, secret: secret)
        }
    }

    // MARK: What the server caches

    /// Everything authentication needs, read in one go so that checking a session costs no I/O.
    public func accessSnapshot() throws -> AccessSnapshot {
        try db.transaction(.deferred) {
            let tenants = try db.fetch("SELECT slug, status FROM tenants") { (try $0.string(0), TenantStatus(rawValue: try $0.string(1)) ?? .suspended) }
            let devices = try db.fetch("""
                SELECT d.id, d.tenant, u.email, u.status, d.status, d.secret_hash, d.number FROM devices d JOIN users u ON u.id = d.user_id
                """) {
                AccessSnapshot.DeviceAccess(id: try $0.string(0), tenant: try $0.string(1), number: try $0.int64(6), user: try $0.string(2),
                                            userStatus: UserStatus(rawValue: try $0.string(3)) ?? .suspended,
                                            status: DeviceStatus(rawValue: try $0.string(4)) ?? .revoked,
                                            secretHash: Array(try $0.data(5)))
            }
            var users: [String: [String: AccessSnapshot.UserAccess]] = [:]
            for user in try db.fetch("SELECT tenant, email, role, team FROM users WHERE status = 'active'", row: {
                (try $0.string(0), AccessSnapshot.UserAccess(email: try $0.string(1), role: try $0.string(2), team: try $0.optionalString(3)))
            }) { users[user.0, default: [:]][user.1.email] = user.1 }
            var roles: [String: [String: Role]] = [:]
            for (tenant, name, definition) in try db.fetch("SELECT tenant, name, definition FROM roles", row: { (try $0.string(0), try $0.string(1), try $0.string(2)) }) {
                roles[tenant, default: [:]][name] = try Self.role(named: name, definition)
            }
            var snapshot = AccessSnapshot(tenants: Dictionary(tenants, uniquingKeysWith: { a, _ in a }),
                                          devices: Dictionary(devices.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                                          users: users, roles: roles)
            snapshot.branches = try branchAccess()
            for (slug, settings) in try db.fetch("SELECT slug, settings FROM tenants", row: { (try $0.string(0), try $0.string(1)) }) {
                let values = (try? JSONDecoder().decode([String: String].self, from: Data(settings.utf8))) ?? [:]
                snapshot.retention[slug] = RetentionPolicy(settings: values)
            }
            return snapshot
        }
    }
}

/// The registry's tenants and devices as of one read, held in memory by the server.
public struct AccessSnapshot: Sendable {
    public struct DeviceAccess: Sendable, Equatable {
        public var id: String
        public var tenant: String
        /// The device's number within its tenant (`RegisteredDevice.number`).
        public var number: Int64
        public var user: String
        public var userStatus: UserStatus
        public var status: DeviceStatus
        /// SHA-256 of the device's secret.
        public var secretHash: [UInt8]
    }

    /// An active user as rights see them.
    public struct UserAccess: Sendable, Equatable {
        public var email: String
        public var role: String
        public var team: String?
    }

    public var tenants: [String: TenantStatus]
    public var devices: [String: DeviceAccess]
    /// Active users by tenant, then e-mail.
    public var users: [String: [String: UserAccess]]
    /// Roles each tenant defined itself (`Registry.setRole`), by tenant, then name.
    public var roles: [String: [String: Role]]
    /// Branch offices, by replica id (`Registry.enrollBranch`).
    public var branches: [String: BranchAccess] = [:]
    /// Each tenant's retention horizons, from its settings (`Registry.setRetention`).
    public var retention: [String: RetentionPolicy] = [:]

    public init(tenants: [String: TenantStatus] = [:], devices: [String: DeviceAccess] = [:],
                users: [String: [String: UserAccess]] = [:], roles: [String: [String: Role]] = [:]) {
        self.tenants = tenants
        self.devices = devices
        self.users = users
        self.roles = roles
    }

    /// What `user` of `tenant` may do now, with `defaults` for the roles the tenant left as
    /// they are; `nil` for a user who is not active.
    public func subject(tenant: String, user: String, defaults: [Role]) -> AccessSubject? {
        guard let access = users[tenant]?[user.lowercased()] else { return nil }
        let role = roles[tenant]?[access.role] ?? defaults.first { $0.name == access.role } ?? Role(name: access.role, types: [:])
        let members = access.team.map { team in Set(users[tenant]?.values.filter { $0.team == team }.map(\.email) ?? []) } ?? []
        return AccessSubject(user: access.email, team: access.team, role: role, teamMembers: members)
    }
}

extension JSONEncoder {
    /// Sorted keys, so what is stored or printed is the same for the same content.
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
