import CSQLite

/// A failure reported by SQLite, with enough context to find its cause without a debugger.
///
/// Every error carries the primary result code, the extended result code, SQLite's own message,
/// and the SQL text that was running, so a log line alone says what went wrong and where.
public struct SQLiteError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The primary result code (`SQLITE_BUSY`, `SQLITE_CONSTRAINT`, ...).
    public let code: Int32
    /// The extended result code (`SQLITE_CONSTRAINT_UNIQUE`, `SQLITE_IOERR_WRITE`, ...).
    public let extendedCode: Int32
    /// SQLite's message for this failure.
    public let message: String
    /// The statement that failed, when the failure came from one.
    public let sql: String?
    /// The file of the connection, when known.
    public let path: String?

    public init(code: Int32, extendedCode: Int32? = nil, message: String, sql: String? = nil, path: String? = nil) {
        self.code = code & 0xff
        self.extendedCode = extendedCode ?? code
        self.message = message
        self.sql = sql
        self.path = path
    }

    /// A readable name for the primary code, from SQLite itself.
    public var codeName: String { String(cString: sqlite3_errstr(code)) }

    /// True for failures that mean the file is not a usable database: not SQLite, or damaged.
    public var isCorruption: Bool { code == SQLITE_NOTADB || code == SQLITE_CORRUPT }

    /// True for failures that mean the disk or the file system refused the write.
    public var isStorageFull: Bool { code == SQLITE_FULL }

    public var description: String {
        var text = "SQLite error \(code) (extended \(extendedCode), \(codeName)): \(message)"
        if let sql { text += " — while running: \(sql)" }
        if let path { text += " — database: \(path)" }
        return text
    }
}
