import CSQLite
import Foundation

/// SQLite copies bound text and blobs when given this destructor, so the Swift buffers may go
/// away as soon as the bind call returns. The C macro is a cast Swift cannot import.
let transientDestructor = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// Owns one `sqlite3*`. Shared by a `Database` and the statements it prepared, so the connection
/// is closed exactly once, after the last of them is gone.
final class ConnectionHandle {
    private(set) var pointer: OpaquePointer?
    let path: String

    init(pointer: OpaquePointer, path: String) {
        self.pointer = pointer
        self.path = path
    }

    /// Closes the connection. `sqlite3_close_v2` defers the real close until every statement
    /// prepared on it is finalized, so statements that outlive an explicit close stay safe.
    func close() {
        guard let pointer else { return }
        sqlite3_close_v2(pointer)
        self.pointer = nil
    }

    deinit { close() }

    func error(code: Int32, sql: String?) -> SQLiteError {
        guard let pointer else {
            return SQLiteError(code: SQLITE_MISUSE, message: "the connection is closed", sql: sql, path: path)
        }
        return SQLiteError(
            code: code,
            extendedCode: sqlite3_extended_errcode(pointer),
            message: String(cString: sqlite3_errmsg(pointer)),
            sql: sql,
            path: path,
            systemErrno: code & 0xff == SQLITE_IOERR ? sqlite3_system_errno(pointer) : 0
        )
    }
}

/// A prepared statement. It is finalized exactly once, when the last reference goes away.
///
/// Not thread-safe: a statement belongs to the connection that prepared it, and a connection is
/// used by one thread at a time.
public final class Statement {
    private var pointer: OpaquePointer?
    let connection: ConnectionHandle
    /// The SQL text, kept so every error can say which statement failed.
    public let sql: String

    init(connection: ConnectionHandle, sql: String) throws {
        guard let db = connection.pointer else {
            throw SQLiteError(code: SQLITE_MISUSE, message: "the connection is closed", sql: sql, path: connection.path)
        }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw connection.error(code: rc, sql: sql)
        }
        self.pointer = statement
        self.connection = connection
        self.sql = sql
    }

    deinit {
        if let pointer { sqlite3_finalize(pointer) }
    }

    private func checked(_ rc: Int32) throws {
        if rc != SQLITE_OK { throw connection.error(code: rc, sql: sql) }
    }

    // MARK: Binding

    /// Binds `value` to the parameter at `index` (1-based, as in SQLite).
    public func bind(_ value: SQLValue, at index: Int32) throws {
        switch value {
        case .null: try checked(sqlite3_bind_null(pointer, index))
        case .integer(let v): try checked(sqlite3_bind_int64(pointer, index, v))
        case .real(let v): try checked(sqlite3_bind_double(pointer, index, v))
        case .text(let v): try bind(text: v, at: index)
        case .blob(let v): try v.withUnsafeBytes { try bind(bytes: $0, at: index) }
        }
    }

    /// Binds text without going through `SQLValue`, for hot paths.
    public func bind(text: String, at index: Int32) throws {
        var text = text
        try text.withUTF8 { try bind(utf8: UnsafeRawBufferPointer($0), at: index, destructor: transientDestructor) }
    }

    /// Binds text from its UTF-8 bytes without copying them: they must stay as they are until
    /// the statement has run and is reset (`SQLStatement.bind(utf8:at:)`).
    public func bind(utf8: UnsafeRawBufferPointer, at index: Int32) throws {
        try bind(utf8: utf8, at: index, destructor: nil)  // SQLITE_STATIC
    }

    private func bind(utf8: UnsafeRawBufferPointer, at index: Int32, destructor: sqlite3_destructor_type?) throws {
        // An empty string must bind as '' rather than NULL, so never pass a nil pointer.
        let base = utf8.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        try checked(sqlite3_bind_text(pointer, index, base.assumingMemoryBound(to: CChar.self), Int32(utf8.count), destructor))
    }

    /// Binds an integer without going through `SQLValue`, for hot paths.
    public func bind(integer: Int64, at index: Int32) throws {
        try checked(sqlite3_bind_int64(pointer, index, integer))
    }

    /// Binds a blob from raw bytes; SQLite copies them.
    public func bind(bytes: UnsafeRawBufferPointer, at index: Int32) throws {
        // A zero-length blob must still be a blob, not NULL, so never pass a nil base address.
        let base = bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        try checked(sqlite3_bind_blob64(pointer, index, base, sqlite3_uint64(bytes.count), transientDestructor))
    }

    /// Binds a blob from raw bytes without copying them: they must stay as they are until the
    /// statement has run and is reset (`SQLStatement.bind(uncopiedBytes:at:)`).
    public func bind(uncopiedBytes bytes: UnsafeRawBufferPointer, at index: Int32) throws {
        let base = bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        try checked(sqlite3_bind_blob64(pointer, index, base, sqlite3_uint64(bytes.count), nil))  // SQLITE_STATIC
    }

    /// Binds a byte array as a blob.
    public func bind(bytes: [UInt8], at index: Int32) throws {
        try bytes.withUnsafeBytes { try bind(bytes: $0, at: index) }
    }

    /// Resets the statement and binds `values` to parameters 1...n.
    public func bind(_ values: [any SQLBindable]) throws {
        reset()
        let expected = Int(sqlite3_bind_parameter_count(pointer))
        guard values.count == expected else {
            throw SQLiteError(
                code: SQLITE_RANGE,
                message: "statement takes \(expected) parameters, \(values.count) were given",
                sql: sql, path: connection.path)
        }
        for (offset, value) in values.enumerated() {
            try bind(value.sqlValue, at: Int32(offset + 1))
        }
    }

    /// Makes the statement ready to run again and drops the previous bindings.
    public func reset() {
        sqlite3_reset(pointer)
        sqlite3_clear_bindings(pointer)
    }

    // MARK: Stepping

    /// Advances to the next row. Returns `true` when a row is available, `false` when done.
    @discardableResult
    public func step() throws -> Bool {
        guard connection.pointer != nil else {
            throw SQLiteError(code: SQLITE_MISUSE, message: "the connection is closed", sql: sql, path: connection.path)
        }
        let rc = sqlite3_step(pointer)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = connection.error(code: rc, sql: sql)
            sqlite3_reset(pointer)
            throw error
        }
    }

    /// Binds `values`, runs the statement to completion and resets it.
    public func run(_ values: [any SQLBindable] = []) throws {
        try bind(values)
        defer { sqlite3_reset(pointer) }
        while try step() {}
    }

    /// Binds `values` and calls `row` for every result row; the statement is reset afterwards.
    public func query<T>(_ values: [any SQLBindable] = [], row: (Statement) throws -> T) throws -> [T] {
        try bind(values)
        defer { sqlite3_reset(pointer) }
        var rows: [T] = []
        while try step() { rows.append(try row(self)) }
        return rows
    }

    // MARK: Reading columns of the current row

    /// Number of result columns.
    public var columnCount: Int32 { sqlite3_column_count(pointer) }

    /// True when the column of the current row is NULL.
    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(pointer, column) == SQLITE_NULL }

    public func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(pointer, column) }

    public func double(_ column: Int32) -> Double { sqlite3_column_double(pointer, column) }

    public func string(_ column: Int32) -> String {
        guard let text = sqlite3_column_text(pointer, column) else { return "" }
        let count = Int(sqlite3_column_bytes(pointer, column))
        return String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self)
    }

    public func data(_ column: Int32) -> Data {
        withBytes(column) { Data($0) }
    }

    /// Gives the blob of the current row without copying it; valid only inside `body`.
    public func withBytes<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        let base = sqlite3_column_blob(pointer, column)
        let count = Int(sqlite3_column_bytes(pointer, column))
        return try body(UnsafeRawBufferPointer(start: count == 0 ? nil : base, count: count))
    }

    /// Rows the connection's last INSERT, UPDATE or DELETE changed (`sqlite3_changes64`):
    /// this statement's, when read right after it ran.
    public var changedRows: Int {
        guard let pointer else { return 0 }
        return Int(sqlite3_changes64(sqlite3_db_handle(pointer)))
    }

    /// The column as whichever storage class SQLite holds it in.
    public func value(_ column: Int32) -> SQLValue {
        switch sqlite3_column_type(pointer, column) {
        case SQLITE_INTEGER: return .integer(int64(column))
        case SQLITE_FLOAT: return .real(double(column))
        case SQLITE_TEXT: return .text(string(column))
        case SQLITE_BLOB: return .blob(data(column))
        default: return .null
        }
    }
}

/// A row of a statement being stepped is a row any `SQLDatabase` code can read, and the
/// statement one it can bind and step.
extension Statement: SQLStatement {}
