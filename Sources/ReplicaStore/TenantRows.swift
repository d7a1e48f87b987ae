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
    /// `database`, a PostgreSQL database holding the store tables, as it is: the same replica id,
    /// counter, sequence numbers, records, conflicts, checkpoints and settings, so that peers'
    /// checkpoints stay valid. Rows go in statements of many rows, in one transaction; the
    /// tenant must have no store there yet. Returns the number of records copied, after checking
    /// that the copy holds as many and ends at the same sequence.
    ///
    /// The file is brought to this program's schema first (opening it migrates it).
    @discardableResult
    public static func copyFile(_ path: String, into database: any SQLDatabase, tenant slug: String) throws -> Int {
        guard let tenant = TenantRows.shared(slug) else {
            throw ReplicaStoreError.notAStore(path: database.location, reason: TenantID.problem(with: slug) ?? "not a tenant id")
        }
        try ReplicaStore(path: path, options: .init(schema: Schema([]))).close()
        let file = try Database(path: path, options: { var o = Database.Options(); o.create = false; return o }())
        defer { file.close() }
        return try file.transaction(.deferred) {
            try database.transaction {
                guard try !hasStore(tenant: slug, in: database) else {
                    throw ReplicaStoreError.notAStore(path: database.location, reason: "tenant \(TenantID.quoted(slug)) has a store there already")
                }
                for table in postgresTables {
                    let columns = try file.query("SELECT name FROM pragma_table_info(?)", [table]) { $0.string(0) }
                    try copyRows(of: table, columns: columns, from: file, to: database, tenant: tenant)
                }
                let records = Int(try file.scalarInt("SELECT count(*) FROM records") ?? 0)
                let copied = Int(try database.fetchInt("SELECT count(*) FROM records\(tenant.only)") ?? 0)
                let sequences = (try file.scalarInt("SELECT sequence FROM replica"), try database.fetchInt("SELECT sequence FROM replica\(tenant.only)"))
                guard copied == records, sequences.0 == sequences.1 else {
                    throw ReplicaStoreError.corrupt(path: database.location, reason: "copied \(copied) of \(records) records, sequence \(sequences.1 ?? -1) of \(sequences.0 ?? -1)")
                }
                return records
            }
        }
    }

    /// Rows of one table, a few hundred per statement, each with the tenant in front.
    private static func copyRows(of table: String, columns: [String], from file: Database, to database: any SQLDatabase,
                                 tenant: TenantRows) throws {
        let perStatement = max(1, 2_000 / columns.count)  // well under PostgreSQL's 65,535 parameters
        let row = "(\(tenant.value)" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        let names = columns.joined(separator: ", ")
        var pending: [SQLValue] = []
        func flush() throws {
            guard !pending.isEmpty else { return }
            let rows = pending.count / columns.count
            try database.run("INSERT INTO \(table) (\(tenant.column)\(names)) VALUES "
                             + Array(repeating: row, count: rows).joined(separator: ", "), pending)
            pending.removeAll(keepingCapacity: true)
        }
        let select = try file.prepare("SELECT \(names) FROM \(table)")
        while try select.step() {
            for column in 0..<Int32(columns.count) { pending.append(select.value(column)) }
            if pending.count >= perStatement * columns.count { try flush() }
        }
        try flush()
    }
}
