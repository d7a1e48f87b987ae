import Foundation
import SQLBackend
import SQLite
import SyncModel

/// How a store's rows are told apart from other tenants' rows in the tables they share.
///
/// A SQLite store file holds one replica, so there every fragment is empty and the store's SQL
/// reads as written. On PostgreSQL every tenant's store lives in the same tables, keyed by
/// `tenant_id` first so that Citus can distribute them by tenant and keep one tenant's batch on
/// one shard; every statement then names its tenant. It names it as a constant, not a
/// parameter, so that a Citus coordinator routes the statement to one shard from its text.
/// Tenant ids are `a-z 0-9 -` (`TenantID`), so the constant needs no escaping; anything else is
/// refused before it reaches SQL.
///
/// The store's SQL is written once with these fragments in place, for both databases.
struct TenantRows {
    /// The tenant on a shared database; `nil` in a store file of its own.
    let slug: String?
    /// `tenant_id = 'acme' AND `: opens a `WHERE` condition.
    let and: String
    /// ` WHERE tenant_id = 'acme'`: the whole condition of a statement on all of the store's rows.
    let only: String
    /// `tenant_id, `: opens a column list (an `INSERT`'s, an `ON CONFLICT` target).
    let column: String
    /// `'acme', `: opens the `VALUES` or `SELECT` list under `column`.
    let value: String

    /// A store file: no tenant column.
    static let ownFile = TenantRows(slug: nil)

    /// The rows of tenant `slug` in tables shared by tenants.
    static func shared(_ slug: String) -> TenantRows? {
        TenantID.isValid(slug) ? TenantRows(slug: slug) : nil
    }

    private init(slug: String?) {
        self.slug = slug
        if let slug {
            and = "tenant_id = '\(slug)' AND "
            only = " WHERE tenant_id = '\(slug)'"
            column = "tenant_id, "
            value = "'\(slug)', "
        } else {
            (and, only, column, value) = ("", "", "", "")
        }
    }

    /// The store, for messages: `tenant 'acme'`, or `the store` of a file.
    var name: String { slug.map { "tenant \(TenantID.quoted($0))" } ?? "the store" }

    /// `and` for the table named `alias` in a join.
    func and(_ alias: String) -> String {
        slug.map { "\(alias).tenant_id = '\($0)' AND " } ?? ""
    }
}

extension ReplicaStore {
    /// The tables of `postgresMigrations`, each holding rows of every tenant.
    static let postgresTables = [
        "records", "conflicts", "peer_checkpoints", "field_index", "field_index_config", "local_settings", "peer_records",
        "peer_scopes", "pending_evictions", "peer_evictions", "field_index_deferred", "sequence_marks", "resync_unseen",
        "replica",
    ]

    /// Whether tenant `slug` has a store in `database`, a PostgreSQL database holding the store
    /// tables (`postgresMigrations`).
    public static func hasStore(tenant slug: String, in database: any SQLDatabase) throws -> Bool {
        guard let tenant = TenantRows.shared(slug) else { return false }
        return try database.fetchInt("SELECT count(*) FROM replica\(tenant.only)") ?? 0 > 0
    }

    /// Removes every row of tenant `slug`'s store from `database`, in one transaction: a tenant
    /// purged for good, or what a creation that crashed half-way left. The tenant's writers
    /// queue on its header row, which goes last.
    public static func removeStore(tenant slug: String, from database: any SQLDatabase) throws {
        guard let tenant = TenantRows.shared(slug) else {
            throw ReplicaStoreError.notAStore(path: database.location, reason: TenantID.problem(with: slug) ?? "not a tenant id")
        }
        try database.transaction {
            for table in postgresTables { try database.run("DELETE FROM \(table)\(tenant.only)") }
        }
    }
}

extension ReplicaStore {
    /// Copies the store file at `path` (closed, or open only to readers) into tenant `slug` of
    /// `database`, a PostgreSQL database holding the store tables, as it is (`copyStore`). The
    /// tenant must have no store there yet. Returns the number of records copied.
    ///
    /// The file is brought to this program's schema first; its field index is copied as it is.
    @discardableResult
    public static func copyFile(_ path: String, into database: any SQLDatabase, tenant slug: String) throws -> Int {
        guard FileManager.default.fileExists(atPath: path) else { throw ReplicaStoreError.notAStore(path: path, reason: "no such file") }
        let file = try openFile(path)
        defer { file.close() }
        return try copyStore(from: file, tenant: nil, into: database, tenant: slug).records
    }

    /// Copies a store, row for row, from `source` to `target`: the same replica id, counter,
    /// sequence numbers, records, conflicts, checkpoints and settings, so that peers'
    /// checkpoints stay valid against the copy. Each side is a store file of its own (`tenant`
    /// `nil`, a SQLite database) or tenant `tenant` of a PostgreSQL database holding the store
    /// tables; both must be at this program's schema.
    ///
    /// The copy is one transaction on each side, checked before it commits: every table holds
    /// as many rows on both sides, with the same content (`StoreDigest`). A tenant of a shared
    /// database must have no store there yet; a file's rows are replaced (it is one the caller
    /// just created).
    ///
    /// - Parameter movedTo: when set, the copy takes the source's write lock for its whole
    ///   length (writers of the source wait, on every node), and before that lock is let go
    ///   marks the source moved to `movedTo`: every later write to it is refused
    ///   (`ReplicaStoreError.moved`), so nothing is written to it that the copy lacks. The copy
    ///   itself never carries the mark.
    @discardableResult
    public static func copyStore(from source: any SQLDatabase, tenant sourceSlug: String?, into target: any SQLDatabase,
                                 tenant targetSlug: String?, markingSourceMovedTo movedTo: String? = nil) throws -> StoreDigest {
        let from = try rows(of: sourceSlug, in: source)
        let to = try rows(of: targetSlug, in: target)
        return try source.transaction(movedTo == nil ? .deferred : .immediate) {
            if movedTo != nil {
                // On SQLite `.immediate` took the file's write lock; on PostgreSQL writers queue
                // on the header row (`committedHeader(lock:)`).
                let forUpdate = source.dialect == .postgres ? " FOR UPDATE" : ""
                guard try !source.fetch("SELECT singleton FROM replica\(from.only)\(forUpdate)", row: { _ in true }).isEmpty else {
                    throw ReplicaStoreError.notAStore(path: source.location, reason: "\(from.name) has no replica row")
                }
            }
            let checked = try target.transaction {
                if to.slug == nil {
                    for table in postgresTables { try target.run("DELETE FROM \(table)") }
                } else if try target.fetchInt("SELECT count(*) FROM replica\(to.only)") ?? 0 > 0 {
                    throw ReplicaStoreError.notAStore(path: target.location, reason: "\(to.name) has a store there already")
                }
                for table in postgresTables {
                    let columns = try storeColumns(of: table, in: source)
                    guard Set(columns) == Set(try storeColumns(of: table, in: target)) else {
                        throw ReplicaStoreError.notAStore(path: target.location, reason: "table \(table) has other columns than in \(source.location); run both at this program's schema")
                    }
                    try copyRows(of: table, columns: columns, from: source, from, to: target, to)
                }
                try target.run("UPDATE replica SET moved_to = NULL\(to.only)")
                let copied = try digest(of: to, in: target)
                let original = try digest(of: from, in: source)
                guard copied == original else {
                    throw ReplicaStoreError.corrupt(path: target.location, reason: "the copy of \(from.name) differs from it: \(original.difference(from: copied))")
                }
                return copied
            }
            if let movedTo { try source.run("UPDATE replica SET moved_to = ?\(from.only)", [movedTo]) }
            return checked
        }
    }

    /// Where the store in `database` moved to (`copyStore(markingSourceMovedTo:)`), or `nil`
    /// while it is the tenant's store. `tenant` as in `copyStore`.
    public static func movedTo(tenant slug: String?, in database: any SQLDatabase) throws -> String? {
        let tenant = try rows(of: slug, in: database)
        return try database.fetch("SELECT moved_to FROM replica\(tenant.only)") { try $0.optionalString(0) }.first ?? nil
    }

    /// What a copy is checked by, and what `digest(of:tenant:)` tells: per table, its rows and
    /// a sum of their hashes (insensitive to order, which differs between the databases for
    /// text), plus the header. Only comparable within one process: the row hashes are Swift's
    /// `Hasher`, seeded per process.
    public struct StoreDigest: Equatable, Sendable {
        public var replicaID: String
        public var sequence: Int64
        /// Records, tombstones included.
        public var records: Int
        /// Per table: rows and the sum of their hashes.
        public var tables: [String: TableDigest]

        public struct TableDigest: Equatable, Sendable {
            public var rows: Int
            public var hashes: UInt64
        }

        /// The tables whose rows differ, for an error.
        func difference(from other: StoreDigest) -> String {
            let tables = tables.keys.sorted().filter { self.tables[$0] != other.tables[$0] }.map {
                "\($0) (\(self.tables[$0]?.rows ?? 0) rows, \(other.tables[$0]?.rows ?? 0) in the copy)"
            }
            return tables.isEmpty ? "the header" : tables.joined(separator: ", ")
        }
    }

    /// The digest of a store as `copyStore` checks it; `tenant` as there.
    public static func digest(tenant slug: String?, in database: any SQLDatabase) throws -> StoreDigest {
        try database.transaction(.deferred) { try digest(of: try rows(of: slug, in: database), in: database) }
    }

    private static func digest(of tenant: TenantRows, in database: any SQLDatabase) throws -> StoreDigest {
        guard let header = try database.fetch("SELECT replica_id, sequence FROM replica\(tenant.only)", row: {
            (try $0.string(0), try $0.int64(1))
        }).first else { throw ReplicaStoreError.notAStore(path: database.location, reason: "\(tenant.name) has no replica row") }
        var tables: [String: StoreDigest.TableDigest] = [:]
        for table in postgresTables {
            // The mark of a move is the one column a copy may not carry.
            let columns = try storeColumns(of: table, in: database).filter { $0 != "moved_to" }.sorted()
            var digest = StoreDigest.TableDigest(rows: 0, hashes: 0)
            try forEachRow("SELECT \(columns.joined(separator: ", ")) FROM \(table)\(tenant.only)", in: database) { row in
                var hasher = Hasher()
                for column in 0..<Int32(columns.count) { hasher.combine(try row.value(column)) }
                digest.rows += 1
                digest.hashes &+= UInt64(bitPattern: Int64(hasher.finalize()))
            }
            tables[table] = digest
        }
        return StoreDigest(replicaID: header.0, sequence: header.1, records: tables["records"]?.rows ?? 0, tables: tables)
    }

    /// The rows of a store: a file's own, or tenant `slug`'s of a shared PostgreSQL database.
    private static func rows(of slug: String?, in database: any SQLDatabase) throws -> TenantRows {
        guard database.dialect == .postgres else { return .ownFile }
        guard let slug, let tenant = TenantRows.shared(slug) else {
            throw ReplicaStoreError.notAStore(path: database.location, reason: slug.flatMap(TenantID.problem(with:)) ?? "a PostgreSQL store needs a tenant id")
        }
        return tenant
    }

    /// A store table's columns in `database`, without the tenant's.
    private static func storeColumns(of table: String, in database: any SQLDatabase) throws -> [String] {
        let columns = switch database.dialect {
        case .sqlite: try database.fetch("SELECT name FROM pragma_table_info(?)", [table]) { try $0.string(0) }
        case .postgres:
            try database.fetch("""
                SELECT column_name::text FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = ? AND column_name <> 'tenant_id' ORDER BY ordinal_position
                """, [table]) { try $0.string(0) }
        }
        guard !columns.isEmpty else { throw ReplicaStoreError.notAStore(path: database.location, reason: "no store table \(table)") }
        return columns
    }

    /// Rows of one table, a few hundred per statement, each with the target's tenant in front.
    private static func copyRows(of table: String, columns: [String], from source: any SQLDatabase, _ from: TenantRows,
                                 to target: any SQLDatabase, _ to: TenantRows) throws {
        let perStatement = max(1, 2_000 / columns.count)  // well under PostgreSQL's 65,535 parameters and SQLite's 32,766
        let row = "(\(to.value)" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        let names = columns.joined(separator: ", ")
        var pending: [SQLValue] = []
        func flush() throws {
            guard !pending.isEmpty else { return }
            let rows = pending.count / columns.count
            try target.run("INSERT INTO \(table) (\(to.column)\(names)) VALUES "
                           + Array(repeating: row, count: rows).joined(separator: ", "), pending)
            pending.removeAll(keepingCapacity: true)
        }
        try forEachRow("SELECT \(names) FROM \(table)\(from.only)", in: source) { select in
            for column in 0..<Int32(columns.count) { pending.append(try select.value(column)) }
            if pending.count >= perStatement * columns.count { try flush() }
        }
        try flush()
    }

    /// Runs `body` on each row of `sql` without holding the whole result in memory: SQLite
    /// steps its statement; PostgreSQL, which sends a query's whole result at once, reads it
    /// through a cursor, a thousand rows at a time. Must run inside a transaction.
    private static func forEachRow(_ sql: String, in database: any SQLDatabase, _ body: (any SQLRow) throws -> Void) throws {
        switch database.dialect {
        case .sqlite:
            let statement = try database.statement(sql)
            statement.reset()
            defer { statement.reset() }
            while try statement.step() { try body(statement) }
        case .postgres:
            try database.run("DECLARE store_rows NO SCROLL CURSOR FOR \(sql)")
            while try database.fetch("FETCH 1000 FROM store_rows", row: { try body($0); return true }).count == 1000 {}
            try database.run("CLOSE store_rows")
        }
    }
}
