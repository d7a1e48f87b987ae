import CSQLite
import Foundation

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
    /// The `errno` of the system call that failed under an I/O error, 0 when none is known.
    public let systemErrno: Int32

    public init(code: Int32, extendedCode: Int32? = nil, message: String, sql: String? = nil, path: String? = nil,
                systemErrno: Int32 = 0) {
        self.code = code & 0xff
        self.extendedCode = extendedCode ?? code
        self.message = message
        self.sql = sql
        self.path = path
        self.systemErrno = systemErrno
    }

    /// A readable name for the primary code, from SQLite itself.
    public var codeName: String { String(cString: sqlite3_errstr(code)) }

    /// True for failures that mean the file is not a usable database: not SQLite, or damaged.
    public var isCorruption: Bool { code == SQLITE_NOTADB || code == SQLITE_CORRUPT }

    /// True for failures that mean the disk (or the user's quota, or the database's page limit)
    /// is full: `SQLITE_FULL`, and I/O errors whose system call failed with `ENOSPC` or `EDQUOT`
    /// (SQLite reports a full disk met while writing the WAL or syncing as an I/O error).
    public var isStorageFull: Bool {
        code == SQLITE_FULL || (code == SQLITE_IOERR && (systemErrno == ENOSPC || systemErrno == EDQUOT))
    }

    public var description: String {
        var text = "SQLite error \(code) (extended \(extendedCode), \(codeName)): \(message)"
        if let sql { text += " — while running: \(sql)" }
        if let path { text += " — database: \(path)" }
        if systemErrno != 0 { text += " — system error: \(String(cString: strerror(systemErrno)))" }
        return text
    }
}

extension SQLiteError: SQLDatabaseError {}
