import CSQLite
import Foundation
import PrivateFiles
// Its API speaks the neutral values, rows and transaction kinds of `SQLBackend`: who imports
// SQLite gets them too.
@_exported import SQLBackend

/// A connection to one SQLite file.
///
/// Opened in WAL mode with a busy timeout and foreign keys on, because that is what every store
/// in Rapport needs: one writer and readers in parallel, and no silent dangling references.
///
/// A `Database` is not `Sendable`: it belongs to one thread (or one serial executor) at a time.
/// The owner that shares it across threads is responsible for that confinement.
public final class Database: SQLDatabase {
    public var dialect: SQLDialect { .sqlite }
    public var location: String { path }

    /// How a connection is opened.
    public struct Options: Sendable {
        /// Open without write access.
        public var readOnly = false
        /// Create the file when it does not exist.
        public var create = true
        /// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
        ///
        /// Thirty seconds: `rapportctl import` beside a serving `rapportd` holds the store's write
        /// lock for one batch at a time, and on a loaded machine a batch took longer than the
        /// five seconds this was, so the server refused a device's push it could have stored.
        public var busyTimeoutMilliseconds: Int32 = 30_000
        /// WAL lets readers run beside the one writer. Ignored for read-only connections.
        public var walMode = true
        /// `NORMAL` is durable across application crashes in WAL mode; `FULL` also across power loss.
        public var synchronous: Synchronous = .normal
        /// Enforce `REFERENCES` clauses.
        public var foreignKeys = true

        public init() {}
    }

    /// SQLite's `synchronous` setting.
    public enum Synchronous: String, Sendable {
        case off = "OFF", normal = "NORMAL", full = "FULL"
    }

    let handle: ConnectionHandle
    private var statementCache: [String: Statement] = [:]
    private var savepointDepth = 0
    /// `SAVEPOINT spN` and `RELEASE spN` for each depth N from 1, prepared once: every nested
    /// write opens one (an import opens several per row), and compiling them each time, or
    /// even finding them by their text, cost more than running them.
    private var savepointStatements: [(open: Statement, release: Statement)] = []
    /// While checkpoints run in the background (`checkpointLogInBackground`), and after, until
    /// the last one is done.
    var logCheckpointer: LogCheckpointer?
    /// The closure SQLite calls after each commit while checkpoints run in the background.
    var logCommitHook: LogCommitHook?

    /// The file this connection opened.
    public var path: String { handle.path }

    /// Opens (and by default creates) the database at `path`.
    ///
    /// Opening checks that the file really is a SQLite database, so a corrupt or foreign file fails
    /// here with `SQLITE_NOTADB`, not later in the middle of some unrelated statement.
    ///
    /// A new file is created owner-only (0600) whatever the umask; SQLite gives its -wal, -shm
    /// and journal files the main file's mode, so they are owner-only too.
    public init(path: String, options: Options = Options()) throws {
        Self.configureLibrary
        var flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        if options.readOnly {
            flags |= SQLITE_OPEN_READONLY
        } else {
            flags |= SQLITE_OPEN_READWRITE
            if options.create {
                flags |= SQLITE_OPEN_CREATE
                // An empty file is a valid empty database; in-memory and URI names are no files.
                if !path.isEmpty, path != ":memory:", !path.hasPrefix("file:") {
                    do {
                        try PrivateFiles.createFileIfMissing(path)
                    } catch {
                        throw SQLiteError(code: error.isStorageFull ? SQLITE_FULL : SQLITE_CANTOPEN,
                                          message: error.description, path: path)
                    }
                }
            }
        }
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard let db else {
            throw SQLiteError(code: rc, message: "out of memory while opening", path: path)
        }
        let connection = ConnectionHandle(pointer: db, path: path)
        guard rc == SQLITE_OK else {
            let error = connection.error(code: rc, sql: nil)
            connection.close()
            throw error
        }
        self.handle = connection
        sqlite3_busy_timeout(db, options.busyTimeoutMilliseconds)
        sqlite3_extended_result_codes(db, 1)
        // Reading the schema forces SQLite to read the header: a foreign file fails right here.
        _ = try scalarInt("SELECT count(*) FROM sqlite_master")
        if !options.readOnly {
            if options.walMode { try execute("PRAGMA journal_mode=WAL") }
            try execute("PRAGMA synchronous=\(options.synchronous.rawValue)")
        }
        try execute("PRAGMA foreign_keys=\(options.foreignKeys ? "ON" : "OFF")")
    }

    deinit {
        statementCache.removeAll()
        savepointStatements.removeAll()
    }

    /// What the whole process's SQLite is set to, once, before its first connection opens it
    /// (settings made later are refused by SQLite, and would change nothing here): no memory
    /// statistics, whose process-wide mutex every allocation of every connection took, on the
    /// server's sessions and a device's pull alike.
    private static let configureLibrary: Void = {
        _ = rapport_sqlite3_disable_memory_statistics()
    }()

    /// Closes the connection now. Safe to call more than once; later calls on this connection fail
    /// with `SQLITE_MISUSE`.
    public func close() {
        statementCache.removeAll()
        savepointStatements.removeAll()
        // First, so that this connection is the file's last one and SQLite removes the log.
        logCheckpointer?.finish(wait: true)
        logCheckpointer = nil
        handle.close()
        logCommitHook = nil
    }

    // MARK: Statements

    /// Runs one or more statements that take no parameters and return nothing of interest.
    public func execute(_ sql: String) throws {
        guard let db = handle.pointer else { throw handle.error(code: SQLITE_MISUSE, sql: sql) }
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            var error = handle.error(code: rc, sql: sql)
            if let message {
                error = SQLiteError(code: rc, extendedCode: error.extendedCode, message: String(cString: message), sql: sql, path: path,
                                    systemErrno: error.systemErrno)
                sqlite3_free(message)
            }
            throw error
        }
    }

    /// Prepares a statement that the caller owns.
    public func prepare(_ sql: String) throws -> Statement {
        try Statement(connection: handle, sql: sql)
    }

    /// Returns the prepared statement for `sql`, preparing it the first time. Hot paths use this
    /// so that each SQL text is compiled once per connection.
    public func cached(_ sql: String) throws -> Statement {
        if let statement = statementCache[sql] { return statement }
        let statement = try prepare(sql)
        statementCache[sql] = statement
        return statement
    }

    /// Runs a cached statement with `values` to completion and returns how many rows it changed.
    @discardableResult
    public func run(_ sql: String, _ values: [any SQLBindable] = []) throws -> Int {
        try cached(sql).run(values)
        return changes
    }

    /// Runs a cached query and maps each row.
    public func query<T>(_ sql: String, _ values: [any SQLBindable] = [], row: (Statement) throws -> T) throws -> [T] {
        try cached(sql).query(values, row: row)
    }

    /// The first column of the first row as an integer, or `nil` when there is no row or it is NULL.
    public func scalarInt(_ sql: String, _ values: [any SQLBindable] = []) throws -> Int64? {
        try query(sql, values) { $0.isNull(0) ? nil : $0.int64(0) }.first ?? nil
    }

    /// `cached` for code written against any `SQLDatabase`.
    public func statement(_ sql: String) throws -> any SQLStatement { try cached(sql) }

    /// `query` for code written against any `SQLDatabase`.
    public func fetch<T>(_ sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T] {
        try cached(sql).query(values) { try row($0) }
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    public var changes: Int { Int(sqlite3_changes64(handle.pointer)) }

    /// The rowid of the last successful INSERT.
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle.pointer) }

    /// True while a transaction is open on this connection.
    public var isInTransaction: Bool {
        guard let db = handle.pointer else { return false }
        return sqlite3_get_autocommit(db) == 0
    }

    // MARK: Transactions

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    ///
    /// Called inside another transaction, it becomes a savepoint, so a helper that needs atomicity
    /// can use it without knowing whether its caller already opened a transaction.
    public func transaction<T>(_ kind: SQLTransactionKind = .immediate, _ body: () throws -> T) throws -> T {
        if isInTransaction { return try savepoint(body) }
        logCheckpointer?.waitIfDue()
        try execute("BEGIN \(kind.rawValue)")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            rollbackQuietly("ROLLBACK")
            throw error
        }
    }

    /// Runs `body` in a savepoint: released when it returns, rolled back to when it throws.
    public func savepoint<T>(_ body: () throws -> T) throws -> T {
        savepointDepth += 1
        defer { savepointDepth -= 1 }
        let depth = savepointDepth
        if savepointStatements.count < depth {
            savepointStatements.append((try prepare("SAVEPOINT sp\(depth)"), try prepare("RELEASE sp\(depth)")))
        }
        let statements = savepointStatements[depth - 1]
        try statements.open.run()
        do {
            let result = try body()
            try statements.release.run()
            return result
        } catch {
            rollbackQuietly("ROLLBACK TO sp\(depth); RELEASE sp\(depth)")
            throw error
        }
    }

    /// A rollback that fails means SQLite already rolled back (after `SQLITE_FULL` or an I/O
    /// error, for instance); the error that caused it is the one worth reporting.
    private func rollbackQuietly(_ sql: String) {
        if let db = handle.pointer, sqlite3_get_autocommit(db) == 0 {
            _ = try? execute(sql)
        }
    }
}
