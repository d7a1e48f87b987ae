import Foundation
import Postgres
import PrivateFiles
import ReplicaStore
import SQLBackend
import SQLite
import SyncModel
import TLS

/// What `DataDirectory.moveTenant` did.
public struct TenantMove: Sendable {
    public var tenant: String
    /// The store as both sides held it once the copy was checked: replica id, sequence, records.
    public var store: ReplicaStore.StoreDigest
    /// Registry rows copied, by table (users, devices, keys, webhooks, the tenant's audit log...).
    public var registryRows: [String: Int]
    /// Where it went, as `DataDirectory.storeDescription` says it.
    public var destination: String
    /// The move finished one that an earlier run left half-done (the store and the registry
    /// rows were already there; only the source was left to remove).
    public var finishedEarlierMove: Bool
}

extension DataDirectory {
    /// Where this directory keeps its tenants, for messages and the mark on a moved store: the
    /// PostgreSQL database (without its password), or the data directory.
    public var storeDescription: String {
        if let database { return "PostgreSQL \(PostgresConnection.redactedURL(database))" }
        return "data directory \(path)"
    }

    /// Moves tenant `slug` from this directory's stores and registry to `target`'s (from a data
    /// directory to PostgreSQL, back, or between two of either), keeping its replica: the same
    /// replica id, sequence numbers and records, so devices and branches keep their checkpoints
    /// and credentials and need no resync; they only have to reach a server of the target.
    ///
    /// The order keeps the tenant whole in one place whatever stops the move:
    /// 1. the store is copied under its write lock and checked (`ReplicaStore.copyStore`); in
    ///    the same lock the source store is marked moved, so a server still serving it is
    ///    refused every later write and nothing is written there that the copy lacks;
    /// 2. the registry rows (the tenant, its users, devices, branches, keys, webhooks, roles and
    ///    audit log) are copied in one transaction of the target's registry: from then on the
    ///    target serves the tenant;
    /// 3. the source's registry rows and store are removed (its audit log keeps the move).
    ///
    /// Run again after a stop, it starts over before step 2 (the copy replaces what the stopped
    /// one left, which no server serves) and finishes step 3 after it.
    /// Points in `moveTenant` where a test can make the process die, to prove a re-run
    /// finishes the move from there. Never set in normal operation.
    public enum MoveStep: String, Sendable, CaseIterable {
        case storeCopied = "move-store-copied"
        case registryCopied = "move-registry-copied"
    }

    public func moveTenant(_ slug: String, to target: DataDirectory, actor: String,
                           crashAt: ((MoveStep) throws -> Void)? = nil) throws -> TenantMove {
        try Registry.checkSlug(slug)
        let destination = target.storeDescription
        guard try !keepsStores(like: target) else {
            throw RegistryError.invalidArgument("tenant '\(slug)' is already kept in \(destination)")
        }
        let registry = try openRegistry()
        defer { registry.close() }
        let targetRegistry = try target.openRegistry()
        defer { targetRegistry.close() }
        let tenant = try registry.requireTenant(slug, allowDeleted: true)
        guard tenant.status != .deleted else {
            throw RegistryError.invalidArgument("tenant '\(slug)' is deleted: restore it (rapportctl tenant restore) or purge it, not move it")
        }
        let source = try openStoreDatabase(of: slug)
        defer { source.database.close() }

        let move: TenantMove
        if let existing = try targetRegistry.tenant(slug) {
            // Step 2 of an earlier run is done when the source carries the mark and the target
            // holds the same store; anything else is another tenant of that name.
            let target = try target.openStoreDatabase(of: slug)
            defer { target.database.close() }
            let store = try ReplicaStore.digest(tenant: source.tenant, in: source.database)
            guard try ReplicaStore.movedTo(tenant: source.tenant, in: source.database) != nil,
                  try ReplicaStore.digest(tenant: target.tenant, in: target.database) == store else {
                throw RegistryError.invalidArgument("\(destination) has a tenant '\(slug)' already (\(existing.status.rawValue)); it is not this one's copy")
            }
            move = TenantMove(tenant: slug, store: store, registryRows: try Registry.tenantRowCounts(slug, in: targetRegistry),
                              destination: destination, finishedEarlierMove: true)
        } else {
            // The copy checks itself against the source (its digest), under the source's lock.
            let store = try target.placeStore(of: slug) { database, tenant in
                try ReplicaStore.copyStore(from: source.database, tenant: source.tenant, into: database, tenant: tenant,
                                           markingSourceMovedTo: destination)
            }
            try crashAt?(.storeCopied)
            let rows = try targetRegistry.audited(actor: actor, action: "tenant move in", tenant: slug, detail: "from \(storeDescription)") {
                try Registry.copyTenant(slug, from: registry, into: targetRegistry)
            }
            try crashAt?(.registryCopied)
            move = TenantMove(tenant: slug, store: store, registryRows: rows, destination: destination, finishedEarlierMove: false)
        }
        try registry.audited(actor: actor, action: "tenant move out", tenant: slug, detail: "to \(destination)") {
            try registry.removeMovedTenant(slug)
        }
        try removeStore(of: slug)
        return move
    }

    /// Whether `other` keeps its tenants where this directory does: the same folder, or the
    /// same database of the same PostgreSQL server however its URL names it (a move there would
    /// replace the store it copies from).
    func keepsStores(like other: DataDirectory) throws -> Bool {
        switch (database, other.database) {
        case (nil, nil):
            return URL(fileURLWithPath: path).resolvingSymlinksInPath() == URL(fileURLWithPath: other.path).resolvingSymlinksInPath()
        case let (mine?, theirs?):
            let identity = "SELECT current_database()::text || ' ' || pg_postmaster_start_time()::text || ' ' || coalesce(inet_server_port(), 0)::text"
            let (a, b) = (try PostgresConnection(url: mine), try PostgresConnection(url: theirs))
            defer { a.close(); b.close() }
            return try a.query(identity) { try $0.string(0) } == b.query(identity) { try $0.string(0) }
        default:
            return false
        }
    }

    /// A tenant's store as a database: its file (brought to this program's schema first), or
    /// a connection to the shared database and the tenant's id there.
    func openStoreDatabase(of slug: String) throws -> (database: any SQLDatabase, tenant: String?) {
        if let database {
            let connection = try connectStores(database)
            guard try ReplicaStore.hasStore(tenant: slug, in: connection) else {
                connection.close()
                throw ReplicaStoreError.notAStore(path: try storeLocation(of: slug), reason: "the tenant has no store")
            }
            return (connection, slug)
        }
        let path = try storePath(of: slug)
        guard FileManager.default.fileExists(atPath: path) else {
            throw ReplicaStoreError.notAStore(path: path, reason: "the tenant's store file is missing")
        }
        // Not opened as a store: that would build its field index for no fields, under the
        // server that serves it.
        return (try ReplicaStore.openFile(path), nil)
    }

    /// Makes tenant `slug`'s store with `fill`, which is given the database and the tenant id
    /// there (`nil` for a file of its own) and writes it in its own transaction. No registry
    /// row is touched. What the slug had is replaced whole: a store no registry row names
    /// (left by a stopped create or move), or a suspended tenant's being restored. In
    /// PostgreSQL the old rows go in the transaction that writes the new ones; a file is
    /// written under a temporary name and renamed into place once synced, as `createTenant`'s.
    @discardableResult
    func placeStore<T>(of slug: String, _ fill: (any SQLDatabase, String?) throws -> T) throws -> T {
        let final = try storePath(of: slug)
        if let database {
            let connection = try connectStores(database)
            defer { connection.close() }
            return try connection.transaction {
                try ReplicaStore.removeStore(tenant: slug, from: connection)
                return try fill(connection, slug)
            }
        }
        let files = FileManager.default
        try PrivateFiles.createDirectory(tenantsPath)
        let temporary = tenantsPath + "/.\(slug).moving-\(Crypto.hex(try Crypto.randomBytes(6))).sqlite"
        do {
            let file = try ReplicaStore.openFile(temporary)
            let result: T
            do {
                result = try fill(file, nil)
                file.close()
            } catch {
                file.close()
                throw error
            }
            try Self.syncFile(temporary)
            for suffix in ["-wal", "-shm"] { try? files.removeItem(atPath: final + suffix) }
            guard rename(temporary, final) == 0 else {
                throw RegistryError.invalidArgument("cannot move the new store into \(final): \(String(cString: strerror(errno)))")
            }
            try Self.syncFile(tenantsPath)
            return result
        } catch {
            for suffix in ["", "-wal", "-shm"] { try? files.removeItem(atPath: temporary + suffix) }
            throw error
        }
    }

    /// Removes a tenant's store: its rows in the shared database, or its files.
    func removeStore(of slug: String) throws {
        let path = try storePath(of: slug)
        if let database {
            let connection = try connectStores(database)
            defer { connection.close() }
            try ReplicaStore.removeStore(tenant: slug, from: connection)
            return
        }
        for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
            try FileManager.default.removeItem(atPath: file)
        }
    }
}

extension Registry {
    /// A registry table holding rows of tenants, for copying one tenant's rows to another
    /// registry. Every column is read and written as the value the database holds, except
    /// `id` columns the database numbers (given new numbers in the target) and `user_id`
    /// (renumbered as the users are).
    private struct TenantTable {
        let name: String
        let columns: [String]
        /// Selects the tenant's rows; `?` is the slug.
        let filter: String
        /// The order rows are copied in, so that renumbered ones keep theirs.
        var order = ""
    }

    /// In the order their foreign keys need.
    private static let tenantTables: [TenantTable] = [
        TenantTable(name: "tenants", columns: ["slug", "name", "status", "created_at", "deleted_at", "settings"], filter: "slug = ?"),
        TenantTable(name: "users", columns: ["tenant", "email", "name", "role", "team", "status", "created_at"],
                    filter: "tenant = ?", order: " ORDER BY id"),
        TenantTable(name: "roles", columns: ["tenant", "name", "definition", "updated_at"], filter: "tenant = ?"),
        TenantTable(name: "devices", columns: ["id", "tenant", "number", "user_id", "name", "secret_hash", "status", "enrolled_at",
                                               "revoked_at", "last_seen", "last_checkpoint"], filter: "tenant = ?"),
        TenantTable(name: "enrollment_codes", columns: ["code_hash", "tenant", "user_id", "created_at", "expires_at", "used_at", "device_id"],
                    filter: "tenant = ?"),
        TenantTable(name: "branches", columns: ["id", "tenant", "number", "name", "users", "secret_hash", "status", "enrolled_at",
                                                "revoked_at", "last_seen", "last_checkpoint"], filter: "tenant = ?"),
        TenantTable(name: "branch_replicas", columns: ["replica_id", "branch", "first_seen"],
                    filter: "branch IN (SELECT id FROM branches WHERE tenant = ?)"),
        TenantTable(name: "upstream_directory", columns: ["tenant", "digest", "adopted_at"], filter: "tenant = ?"),
        TenantTable(name: "api_keys", columns: ["id", "tenant", "name", "role", "secret_hash", "status", "created_at", "revoked_at"],
                    filter: "tenant = ?"),
        TenantTable(name: "webhooks", columns: ["id", "tenant", "url", "events", "role", "ca_file", "secret", "enabled", "disabled_reason",
                                                "cursor", "failures", "failing_since", "created_at"], filter: "tenant = ?"),
        TenantTable(name: "webhook_deliveries", columns: ["webhook", "event_id", "sequence", "record", "attempt", "at", "status", "error"],
                    filter: "webhook IN (SELECT id FROM webhooks WHERE tenant = ?)", order: " ORDER BY id"),
        TenantTable(name: "webhook_seen", columns: ["webhook", "record", "fields"],
                    filter: "webhook IN (SELECT id FROM webhooks WHERE tenant = ?)"),
        TenantTable(name: "audit", columns: ["at", "actor", "action", "tenant", "detail", "result"], filter: "tenant = ?", order: " ORDER BY id"),
    ]

    /// Copies every registry row of tenant `slug` from `source` into `target`, which has no
    /// tenant of that name, in the caller's transaction of `target`, and checks that each table
    /// got them all. Users get the target's numbers (theirs may be taken there), and the rows
    /// naming them follow. The audit log is append-only and keeps a moved tenant's entries, so
    /// a tenant moving back finds its old entries there: those are not written twice.
    /// Returns the rows of the tenant in each table of `source`.
    static func copyTenant(_ slug: String, from source: Registry, into target: Registry) throws -> [String: Int] {
        // Not tied to the tenant by a foreign key, so a stale row of an earlier life may be there.
        try target.db.run("DELETE FROM upstream_directory WHERE tenant = ?", [slug])
        let before = try tenantRowCounts(slug, in: target)
        var users: [Int64: Int64] = [:]
        var kept = 0
        for table in tenantTables {
            let rows = try source.db.fetch("SELECT \(table.columns.joined(separator: ", ")) FROM \(table.name) WHERE \(table.filter)\(table.order)",
                                           [slug]) { row in try (0..<Int32(table.columns.count)).map { try row.value($0) } }
            let userColumn = table.columns.firstIndex(of: "user_id")
            let insert = "INSERT INTO \(table.name) (\(table.columns.joined(separator: ", "))) VALUES ("
                + Array(repeating: "?", count: table.columns.count).joined(separator: ", ") + ")"
            let sameEntry = "SELECT count(*) FROM audit WHERE " + table.columns.map { "\($0) = ?" }.joined(separator: " AND ")
            for var row in rows {
                if let userColumn {
                    guard case let .integer(old) = row[userColumn], let new = users[old] else {
                        throw RegistryError.invalidArgument("\(table.name) of tenant '\(slug)' names user \(row[userColumn]), who is not among its users")
                    }
                    row[userColumn] = .integer(new)
                }
                if table.name == "audit", try target.db.fetchInt(sameEntry, row) ?? 0 > 0 {
                    kept += 1
                    continue
                }
                try target.db.run(insert, row)
            }
            if table.name == "users" {
                let old = try source.db.fetch("SELECT email, id FROM users WHERE tenant = ?", [slug]) { (try $0.string(0), try $0.int64(1)) }
                let new = Dictionary(uniqueKeysWithValues: try target.db.fetch("SELECT email, id FROM users WHERE tenant = ?", [slug]) {
                    (try $0.string(0), try $0.int64(1))
                })
                for (email, id) in old { users[id] = new[email] }
            }
        }
        let original = try tenantRowCounts(slug, in: source)
        var copied = try tenantRowCounts(slug, in: target)
        copied["audit"] = (copied["audit"] ?? 0) - (before["audit"] ?? 0) + kept
        guard copied == original else {
            let tables = original.keys.sorted().filter { original[$0] != copied[$0] }
            throw RegistryError.invalidArgument("the registry rows of tenant '\(slug)' did not all copy: \(tables.joined(separator: ", "))")
        }
        return original
    }

    /// Rows of tenant `slug` in each table of `tenantTables`.
    static func tenantRowCounts(_ slug: String, in registry: Registry) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for table in tenantTables {
            counts[table.name] = Int(try registry.db.fetchInt("SELECT count(*) FROM \(table.name) WHERE \(table.filter)", [slug]) ?? 0)
        }
        return counts
    }

    /// Removes a moved tenant's rows (all but its audit log, which is append-only and keeps
    /// the move); its foreign keys take the rows that hang off the tenant's.
    func removeMovedTenant(_ slug: String) throws {
        try db.run("DELETE FROM upstream_directory WHERE tenant = ?", [slug])
        try db.run("DELETE FROM tenants WHERE slug = ?", [slug])
    }
}
