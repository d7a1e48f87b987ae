import Foundation

/// One value as a statement binds it or a row holds it, whichever database runs the statement.
public enum SQLValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
}

/// A Swift type that can be bound to a statement parameter.
public protocol SQLBindable {
    /// The value to bind.
    var sqlValue: SQLValue { get }
}

extension SQLValue: SQLBindable {
    public var sqlValue: SQLValue { self }
}
extension Int64: SQLBindable {
    public var sqlValue: SQLValue { .integer(self) }
}
extension Int: SQLBindable {
    public var sqlValue: SQLValue { .integer(Int64(self)) }
}
extension Bool: SQLBindable {
    public var sqlValue: SQLValue { .integer(self ? 1 : 0) }
}
extension Double: SQLBindable {
    public var sqlValue: SQLValue { .real(self) }
}
extension String: SQLBindable {
    public var sqlValue: SQLValue { .text(self) }
}
extension Data: SQLBindable {
    public var sqlValue: SQLValue { .blob(self) }
}
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// Which SQL a database speaks, for the few statements that differ (schema, locks, scalar
/// functions); everything else is written once, in the SQL both accept.
public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres

    /// The scalar function that returns the larger of its arguments (`max(a, b)` in SQLite,
    /// where `max` of one argument is the aggregate; `greatest` in PostgreSQL).
    public var greatest: String {
        switch self {
        case .sqlite: "max"
        case .postgres: "greatest"
        }
    }
}

/// How a top-level transaction takes its locks.
public enum SQLTransactionKind: String, Sendable {
    /// Takes SQLite's write lock only at the first write; until then it reads one snapshot. On
    /// PostgreSQL, repeatable read: every statement sees one snapshot, so a reader of several
    /// tables gets them as of one moment.
    case deferred = "DEFERRED"
    /// Takes SQLite's write lock at once, so a writer never fails half-way with `SQLITE_BUSY`, and
    /// transactions of several connections run one after another. PostgreSQL has no such lock
    /// (read committed there): code that relies on it takes a row lock (`SELECT ... FOR UPDATE`)
    /// where the dialect says so.
    case immediate = "IMMEDIATE"
}

/// One row of a result, read column by column (0-based). Valid only inside the `row` closure of
/// `SQLDatabase.fetch`.
public protocol SQLRow {
    func isNull(_ column: Int32) -> Bool
    func int64(_ column: Int32) throws -> Int64
    func double(_ column: Int32) throws -> Double
    func string(_ column: Int32) throws -> String
    func data(_ column: Int32) throws -> Data
    /// The bytes of a blob column without copying them; valid only inside `body`.
    func withBytes<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T
    /// The column as whichever type the database holds it in: what code that copies rows it
    /// does not know the shape of (moving a tenant between databases) reads.
    func value(_ column: Int32) throws -> SQLValue
}

extension SQLRow {
    /// The column's text, or `nil` when it is NULL.
    public func optionalString(_ column: Int32) throws -> String? {
        isNull(column) ? nil : try string(column)
    }

    /// The column's integer, or `nil` when it is NULL.
    public func optionalInt64(_ column: Int32) throws -> Int64? {
        isNull(column) ? nil : try int64(column)
    }
}

/// A statement prepared once and run many times, bound and read column by column without
/// going through `SQLValue`: what hot paths (a batch of records, one statement per record) use.
/// Parameters are numbered from 1; a statement is reset (results and bindings dropped) before it
/// is bound again. Belongs to its connection and is used on its thread.
public protocol SQLStatement: AnyObject, SQLRow {
    /// The SQL text, as given.
    var sql: String { get }
    func bind(_ value: SQLValue, at index: Int32) throws
    func bind(text: String, at index: Int32) throws
    /// Binds text given as its UTF-8 bytes (valid UTF-8), without making a `String` of them:
    /// for many values cut from one buffer, as a sorted index build binds them. The bytes may
    /// not be copied: they must stay as they are until the statement has run and is reset.
    func bind(utf8: UnsafeRawBufferPointer, at index: Int32) throws
    func bind(integer: Int64, at index: Int32) throws
    func bind(bytes: UnsafeRawBufferPointer, at index: Int32) throws
    func bind(bytes: [UInt8], at index: Int32) throws
    /// Binds bytes as a blob without copying them where the database can: like the values of
    /// `bind(utf8:at:)`, they must stay as they are until the statement has run and is reset.
    func bind(uncopiedBytes: UnsafeRawBufferPointer, at index: Int32) throws
    /// Runs the statement the first time it is called after binding, then moves to the next
    /// row: `true` while a row is there to read.
    @discardableResult
    func step() throws -> Bool
    /// Drops the results and the bindings, so the statement can be bound and run again.
    func reset()
    /// How many rows the statement's last run inserted, changed or deleted: whether an
    /// `INSERT ... ON CONFLICT DO NOTHING` stored its row. (Not `RETURNING`, which SQLite
    /// answers through a temporary table, at a cost per run.)
    var changedRows: Int { get }
}

extension SQLStatement {
    /// Binds `values` to parameters 1, 2, ..., runs the statement and maps each row of its
    /// result; leaves the statement reset.
    public func fetch<T>(_ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T] {
        reset()
        defer { reset() }
        for (index, value) in values.enumerated() { try bind(value.sqlValue, at: Int32(index + 1)) }
        var rows: [T] = []
        while try step() { rows.append(try row(self)) }
        return rows
    }

    /// Binds a UUID as its 16 raw bytes: half the size of its text, and compared byte by byte.
    public func bind(uuid: UUID, at index: Int32) throws {
        try withUnsafeBytes(of: uuid.uuid) { try bind(bytes: $0, at: index) }
    }
}

/// A connection to a SQL database that runs statements synchronously: a SQLite file or a
/// PostgreSQL server. Code that stores its data through this interface (the registry) runs on
/// either, with SQL written once, `?` for each parameter.
///
/// A connection belongs to one thread (or serial executor) at a time; never call it on an event
/// loop thread.
public protocol SQLDatabase: AnyObject {
    /// Which SQL the database speaks.
    var dialect: SQLDialect { get }
    /// Where the database is, for errors and logs: a file path, or `host:port/database` (never a
    /// password).
    var location: String { get }
    /// Runs one statement and returns how many rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: [any SQLBindable]) throws -> Int
    /// Runs one query and maps each row of its result.
    func fetch<T>(_ sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T]
    /// The first `limit` rows of `sql`, a query that orders its rows and has no `LIMIT`, read so
    /// that the database stops after them and finds them by an index in that order when one
    /// fits, whatever its statistics of the table say. What a reader that pages through a large
    /// ordered range uses (a pull, batch by batch).
    ///
    /// The default adds `LIMIT ?`, which SQLite plans by its indexes alone. PostgreSQL plans a
    /// `LIMIT` from its statistics: for a table just filled (a tenant copied in, before ANALYZE)
    /// or a tenant that statistics of every tenant's rows misjudge, it expects a few rows, so it
    /// reads and sorts every row of the range for each page; `PostgresConnection` reads through
    /// a cursor instead, planned to return its first rows early.
    func fetchFirst<T>(_ limit: Int, of sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T]
    /// The statement for `sql`, prepared on first use and kept for the connection's life.
    func statement(_ sql: String) throws -> any SQLStatement
    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws. Called
    /// inside another transaction, it runs in a savepoint of it.
    func transaction<T>(_ kind: SQLTransactionKind, _ body: () throws -> T) throws -> T
    /// Closes the connection; later calls fail.
    func close()
}

extension SQLDatabase {
    /// `run` without parameters.
    @discardableResult
    public func run(_ sql: String) throws -> Int { try run(sql, []) }

    public func fetchFirst<T>(_ limit: Int, of sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T] {
        try fetch(sql + " LIMIT ?", values + [limit], row: row)
    }

    /// `fetch` without parameters.
    public func fetch<T>(_ sql: String, row: (any SQLRow) throws -> T) throws -> [T] { try fetch(sql, [], row: row) }

    /// The first column of the first row as an integer, or `nil` when there is no row or it is NULL.
    public func fetchInt(_ sql: String, _ values: [any SQLBindable] = []) throws -> Int64? {
        try fetch(sql, values) { try $0.optionalInt64(0) }.first ?? nil
    }

    /// An immediate transaction (see `SQLTransactionKind`).
    public func transaction<T>(_ body: () throws -> T) throws -> T { try transaction(.immediate, body) }
}

/// A failure of a database, whichever it is, as code above the database must tell failures
/// apart: a session answers "storage full" or "retry later", an admin command's exit code says
/// whether the file or the I/O is at fault. The concrete error (`SQLiteError`, `PostgresError`)
/// keeps its context: the SQL, the file or server, the database's own codes.
public protocol SQLDatabaseError: Error, CustomStringConvertible, Sendable {
    /// The disk, a quota or the database's size limit is full: nothing more can be written until
    /// an operator makes room.
    var isStorageFull: Bool { get }
    /// The database is damaged (or not a database at all): retrying will not help.
    var isCorruption: Bool { get }
}

/// One numbered change of a PostgreSQL schema.
public struct PostgresMigration: Sendable {
    public let version: Int
    public let summary: String
    /// Statements without parameters, run as one script in the migration's transaction.
    public let sql: String

    public init(version: Int, _ summary: String, sql: String) {
        self.version = version
        self.summary = summary
        self.sql = sql
    }
}
