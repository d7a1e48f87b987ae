import SQLBackend
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
