import Foundation
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
public struct DataDirectory: Sendable {
    public let path: String

    public init(_ path: String) { self.path = path }

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
        let path = try storePath(of: slug)
        try registry.removeTenant(slug)
        for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
            try FileManager.default.removeItem(atPath: file)
        }
    }

    /// Copies a tenant's store to `file` with SQLite's online backup API, while the server keeps
    /// serving it. The copy is written beside `file` and renamed, so `file` is either the old
    /// content or a whole backup; it is checked before the rename.
    @discardableResult
    public func backup(tenant: String, to file: String, in registry: Registry) throws -> StoreFileInfo {
        _ = try registry.requireTenant(tenant, allowDeleted: true)
        let source = try Database(path: try storePath(of: tenant), options: Self.existingFile)
        defer { source.close() }
        let temporary = file + ".partial-\(Crypto.hex(try Crypto.randomBytes(4)))"
        do {
            try Self.copy(source, toNewFile: temporary)
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

    /// Opens a tenant's store for reading or admin writes beside a running server. Never creates
    /// a file: a tenant without one is reported, not silently re-made empty.
    public func openStore(of tenant: String, schema: Schema) throws -> ReplicaStore {
        try openStore(of: tenant, options: .init(schema: schema))
    }

    /// `openStore(of:schema:)` with the store opened as `options` say (rules, field index).
    public func openStore(of tenant: String, options: ReplicaStore.Options) throws -> ReplicaStore {
        let path = try storePath(of: tenant)
        guard FileManager.default.fileExists(atPath: path) else {
            throw ReplicaStoreError.notAStore(path: path, reason: "the tenant's store file is missing")
        }
        return try ReplicaStore(path: path, options: options)
    }

    /// Size on disk of a tenant's store: the file and its write-ahead log.
    public func storeSize(of tenant: String) throws -> Int64 {
        let path = try storePath(of: tenant)
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
