import Foundation
import Postgres
import PrivateFiles
import ReplicaStore
import SQLite
import SyncModel
import TLS

/// The files of a server's data directory and the operations that must keep them consistent
/// with the registry: creating, backing up, restoring and purging tenants.
///
/// ```
/// <data>/registry.sqlite        tenants, users, devices, enrollment codes, audit
/// <data>/tenants/<slug>.sqlite  one tenant's CRM data, nothing of any other tenant
/// <data>/tls/                   the dev CA and server certificate when none is configured
/// ```
///
/// Every folder is created 0700 and every file 0600 (`PrivateFiles`), whatever the umask.
///
/// With a PostgreSQL `database` (`rapportd --store postgres://...`), the registry and every
/// tenant's store live there instead, shared by every server node and `rapportctl` that names
/// the same database; the directory keeps only what belongs to one node (its TLS files).
public struct DataDirectory: Sendable {
    public let path: String
    /// The PostgreSQL database holding the registry and the tenants' stores (a libpq URL), or
    /// `nil` for the directory's own SQLite files.
    public let database: String?

    public init(_ path: String, database: String? = nil) {
        self.path = path
        self.database = database
    }

    /// Where a tenant's store is, for messages: its file, or its rows in the database.
    public func storeLocation(of tenant: String) throws -> String {
        guard database == nil else { return "tenant \(TenantID.quoted(tenant)) in the PostgreSQL store" }
        return try storePath(of: tenant)
    }

    /// A new connection to the shared database, with the store tables in place.
    func connectStores(_ url: String) throws -> PostgresConnection {
        let connection = try PostgresConnection(url: url)
        try connection.migrate("store", ReplicaStore.postgresMigrations)
        return connection
    }

    public var registryPath: String { path + "/registry.sqlite" }
    public var tenantsPath: String { path + "/tenants" }
    public var tlsPath: String { path + "/tls" }

    /// A tenant's store. Only validated slugs name files, so the path stays inside `tenants/`.
    public func storePath(of tenant: String) throws -> String {
        try Registry.checkSlug(tenant)
        return tenantsPath + "/" + tenant + ".sqlite"
    }

    /// Opens the registry, creating the directory and the file on first use.
    public func openRegistry(now: @escaping @Sendable () -> Date = { Date() }) throws -> Registry {
        if let database { return try Registry(postgres: database, now: now) }
        try PrivateFiles.createDirectory(tenantsPath)
        return try Registry(path: registryPath, now: now)
    }

    /// Points in `createTenant` where a test can make the process die, to prove a crash there
    /// leaves no half-created tenant. Never set in normal operation.
    public enum CreationStep: String, Sendable {
        case storeWritten = "store-written"
        case storeInPlace = "store-in-place"
    }

    /// Creates a tenant so that a crash at any point leaves either no tenant or a whole one.
    ///
    /// The store is built and migrated under a temporary name, renamed into place (atomic), and
    /// only then does the registry row appear, in the caller's transaction (with its audit entry).
    /// A crash before the row leaves at most a file no tenant points at, which the next
    /// `tenant create` of that slug replaces; no server ever serves it, because servers only serve
    /// tenants of the registry.
    public func createTenant(_ slug: String, name: String, settings: [String: String] = [:], schema: Schema,
                             in registry: Registry, crashAt: ((CreationStep) throws -> Void)? = nil) throws -> Tenant {
        let final = try storePath(of: slug)
        if let existing = try registry.tenant(slug) { throw RegistryError.tenantExists(slug, status: existing.status) }
        if let database {
            // Rows of the slug without a registry row are what a crashed create left: no server
            // serves them, so they are replaced.
            let connection = try connectStores(database)
            defer { connection.close() }
            try ReplicaStore.removeStore(tenant: slug, from: connection)
            _ = try ReplicaStore(database: connection, tenant: slug, options: .init(schema: schema))
            try crashAt?(.storeWritten)
            try crashAt?(.storeInPlace)
            return try registry.insertTenant(slug: slug, name: name, settings: settings)
        }
        let files = FileManager.default
        try PrivateFiles.createDirectory(tenantsPath)
        // Leftovers of an earlier create of this slug that crashed.
        for leftover in (try? files.contentsOfDirectory(atPath: tenantsPath)) ?? [] where leftover.hasPrefix(".\(slug).creating-") {
            try? files.removeItem(atPath: tenantsPath + "/" + leftover)
        }
        let temporary = tenantsPath + "/.\(slug).creating-\(Crypto.hex(try Crypto.randomBytes(6))).sqlite"
        do {
            let store = try ReplicaStore(path: temporary, options: .init(schema: schema))
            store.close()
            try crashAt?(.storeWritten)
            try Self.syncFile(temporary)
            // An orphan from a crashed create, never in the registry: safe to replace.
            for suffix in ["-wal", "-shm"] { try? files.removeItem(atPath: final + suffix) }
            guard rename(temporary, final) == 0 else {
                throw RegistryError.invalidArgument("cannot move the new store into \(final): \(String(cString: strerror(errno)))")
            }
            try Self.syncFile(tenantsPath)
        } catch {
            try? files.removeItem(atPath: temporary)
            throw error
        }
        try crashAt?(.storeInPlace)
        return try registry.insertTenant(slug: slug, name: name, settings: settings)
    }

    /// Removes a deleted tenant for good: its registry rows and its store files.
    public func purgeTenant(_ slug: String, in registry: Registry) throws {
        try Registry.checkSlug(slug)
        try registry.removeTenant(slug)
        try removeStore(of: slug)
    }

    /// Copies a tenant's store to `file`, a store file of its own, while the server keeps serving
    /// it: with SQLite's online backup API, or from PostgreSQL row for row in one snapshot
    /// (`ReplicaStore.copyStore`), so a backup file is the same whichever store it came from.
    /// The copy is written beside `file` and renamed, so `file` is either the old content or a
    /// whole backup; it is checked before the rename.
    @discardableResult
    public func backup(tenant: String, to file: String, in registry: Registry) throws -> StoreFileInfo {
        _ = try registry.requireTenant(tenant, allowDeleted: true)
        let temporary = file + ".partial-\(Crypto.hex(try Crypto.randomBytes(4)))"
        do {
            if database != nil {
                let source = try openStoreDatabase(of: tenant)
                defer { source.database.close() }
                let copy = try ReplicaStore.openFile(temporary)
                defer { copy.close() }
                try ReplicaStore.copyStore(from: source.database, tenant: source.tenant, into: copy, tenant: nil)
                try copy.execute("PRAGMA journal_mode=DELETE")  // one self-contained file, as the backup API writes
            } else {
                let source = try Database(path: try storePath(of: tenant), options: Self.existingFile)
                defer { source.close() }
                try Self.copy(source, toNewFile: temporary)
            }
            let info = try ReplicaStore.inspect(path: temporary)
            try Self.syncFile(temporary)
            guard rename(temporary, file) == 0 else {
                throw RegistryError.invalidArgument("cannot write \(file): \(String(cString: strerror(errno)))")
            }
            return info
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    /// Restores a backup into a tenant, after checking it (integrity, that it is a store, schema
    /// version) and before anything is replaced.
    ///
    /// A new tenant is created from the backup (crash-safe, as `createTenant`). An existing one
    /// must be suspended first, so no session writes while its content is swapped; the pages are
    /// copied into the live file with the backup API, which keeps SQLite's locking and journal
    /// consistent even if a server still has the file open. Either way the restored store gets a
    /// new replica id, so every device pulls from the start and pushes again what the backup
    /// lacks instead of trusting checkpoints into a history the backup never had.
    @discardableResult
    public func restore(tenant slug: String, from file: String, name: String? = nil, schema: Schema,
                        in registry: Registry) throws -> StoreFileInfo {
        _ = try ReplicaStore.inspect(path: file)
        if database != nil { return try restoreIntoDatabase(tenant: slug, from: file, name: name, in: registry) }
        let target = try storePath(of: slug)
        var readOnly = Self.existingFile
        readOnly.readOnly = true
        let backup = try Database(path: file, options: readOnly)
        defer { backup.close() }
        if let existing = try registry.tenant(slug) {
            guard existing.status == .suspended else {
                throw RegistryError.invalidArgument("tenant '\(slug)' is \(existing.status.rawValue): suspend it before restoring over it (rapportctl tenant suspend \(slug))")
            }
            let live = try Database(path: target, options: Self.existingFile)
            defer { live.close() }
            try backup.backup(into: live)
            try ReplicaStore.assignNewReplicaID(path: target)
            return try ReplicaStore.inspect(path: target)
        }
        let temporary = tenantsPath + "/.\(slug).restoring-\(Crypto.hex(try Crypto.randomBytes(6))).sqlite"
        do {
            try Self.copy(backup, toNewFile: temporary)
            try ReplicaStore.assignNewReplicaID(path: temporary)
            // Brings an older backup up to this program's schema before it is served.
            let migrated = try ReplicaStore(path: temporary, options: .init(schema: schema))
            migrated.close()
            try Self.syncFile(temporary)
            if let existing = try registry.tenant(slug) { throw RegistryError.tenantExists(slug, status: existing.status) }
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: target + suffix) }
            guard rename(temporary, target) == 0 else {
                throw RegistryError.invalidArgument("cannot move the restored store into \(target): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        _ = try registry.insertTenant(slug: slug, name: name ?? slug, settings: [:])
        return try ReplicaStore.inspect(path: target)
    }

    /// `restore` on PostgreSQL: the backup is copied to a file beside it, given its new replica
    /// id and brought to this program's schema there, then copied row for row into the
    /// tenant's rows in one transaction, which replaces what a suspended tenant held (its
    /// writers, on every node, wait for it at the tenant's header row).
    private func restoreIntoDatabase(tenant slug: String, from file: String, name: String?, in registry: Registry) throws -> StoreFileInfo {
        let existing = try registry.tenant(slug)
        if let existing, existing.status != .suspended {
            throw RegistryError.invalidArgument("tenant '\(slug)' is \(existing.status.rawValue): suspend it before restoring over it (rapportctl tenant suspend \(slug))")
        }
        let temporary = file + ".restoring-\(Crypto.hex(try Crypto.randomBytes(4)))"
        defer { for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: temporary + suffix) } }
        var readOnly = Self.existingFile
        readOnly.readOnly = true
        let backup = try Database(path: file, options: readOnly)
        defer { backup.close() }
        try Self.copy(backup, toNewFile: temporary)
        try ReplicaStore.assignNewReplicaID(path: temporary)
        let copy = try ReplicaStore.openFile(temporary)
        defer { copy.close() }
        try placeStore(of: slug) { connection, tenant in
            try ReplicaStore.copyStore(from: copy, tenant: nil, into: connection, tenant: tenant)
        }
        if existing == nil { _ = try registry.insertTenant(slug: slug, name: name ?? slug, settings: [:]) }
        return try ReplicaStore.inspect(path: temporary)
    }

    /// Opens a tenant's store for reading or admin writes beside a running server. Never creates
    /// a file: a tenant without one is reported, not silently re-made empty.
    ///
    /// - Parameter options: how the server opens the store (its rules, effects and indexes), so
    ///   that writes made here are checked, followed and indexed exactly as the server's are.
    public func openStore(of tenant: String, options: ReplicaStore.Options) throws -> ReplicaStore {
        var options = options
        options.replicaID = nil
        return try openStore(of: tenant, options: options, creating: false)
    }

    /// Opens a tenant's store; `creating` makes a missing one (a server embedded in tests or an
    /// app, `TenantPool`'s `createsMissing`), else a tenant without one is refused.
    public func openStore(of tenant: String, options: ReplicaStore.Options, creating: Bool) throws -> ReplicaStore {
        let path = try storePath(of: tenant)
        if let database {
            let connection = try connectStores(database)
            do {
                guard try creating || ReplicaStore.hasStore(tenant: tenant, in: connection) else {
                    throw ReplicaStoreError.notAStore(path: try storeLocation(of: tenant), reason: "the tenant has no store")
                }
                return try ReplicaStore(database: connection, tenant: tenant, options: options)
            } catch {
                connection.close()
                throw error
            }
        }
        guard creating || FileManager.default.fileExists(atPath: path) else {
            throw ReplicaStoreError.notAStore(path: path, reason: "the tenant's store file is missing")
        }
        return try ReplicaStore(path: path, options: options)
    }

    /// Size on disk of a tenant's store: the file and its write-ahead log.
    /// In PostgreSQL, the bytes of its records' rows (without indexes and the database's own
    /// overhead, which tenants share).
    public func storeSize(of tenant: String) throws -> Int64 {
        let path = try storePath(of: tenant)
        if let database {
            let connection = try PostgresConnection(url: database)
            defer { connection.close() }
            return try connection.scalarInt("SELECT coalesce(sum(pg_column_size(r.*)), 0) FROM records r WHERE tenant_id = ?", [tenant]) ?? 0
        }
        return [path, path + "-wal"].reduce(0) { total, file in
            total + ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int64) ?? 0)
        }
    }

    /// Copies `source` with the online backup API into a new file at `path`, as one
    /// self-contained file (rollback journal, no -wal beside it to forget when moving it).
    static func copy(_ source: Database, toNewFile path: String) throws {
        var options = Database.Options()
        options.walMode = false
        let destination = try Database(path: path, options: options)
        defer { destination.close() }
        try source.backup(into: destination)
        try destination.execute("PRAGMA journal_mode=DELETE")
    }

    static let existingFile: Database.Options = {
        var options = Database.Options()
        options.create = false
        return options
    }()

    /// fsync, so a rename that follows is not written before the content it names.
    static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw RegistryError.invalidArgument("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw RegistryError.invalidArgument("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }
}

extension DataDirectory {
    /// Where a development server leaves the enrollment code of its `dev` tenant.
    public var developmentCodePath: String { path + "/dev-enrollment-code" }

    /// On a data directory without any tenant, makes the development tenant `dev` with an admin
    /// `dev@example.com` and an enrollment code (written 0600 to `developmentCodePath`), so that
    /// `swift run rapportd` is usable at once. Does nothing when any tenant exists.
    public func bootstrapDevelopmentTenant(schema: Schema, actor: String = "rapportd") throws -> EnrollmentTicket? {
        let registry = try openRegistry()
        defer { registry.close() }
        guard try registry.tenants(includeDeleted: true).isEmpty else { return nil }
        let ticket = try registry.audited(actor: actor, action: "development tenant", tenant: "dev") {
            _ = try createTenant("dev", name: "Development", schema: schema, in: registry)
            try registry.addUser(tenant: "dev", email: "dev@example.com", name: "Developer", role: .admin)
            return try registry.issueEnrollmentCode(tenant: "dev", user: "dev@example.com")
        }
        try PrivateFiles.write(ticket.code + "\n", to: developmentCodePath)
        return ticket
    }
}
