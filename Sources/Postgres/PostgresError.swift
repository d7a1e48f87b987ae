import Foundation
import SQLBackend

/// A failure reported by PostgreSQL or by libpq, with enough context to find its cause from a
/// log line: the SQLSTATE, the server's message and detail, the statement, and which server.
public struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The five-character SQLSTATE (`40001` serialization failure, `23505` unique violation,
    /// `57P01` admin shutdown...); `nil` when the failure was the connection's, not a statement's.
    public let sqlState: String?
    /// The server's (or libpq's) message.
    public let message: String
    /// The server's detail line, when it sent one.
    public let detail: String?
    /// The statement that failed, when the failure came from one.
    public let sql: String?
    /// The server as `host:port/database`, never with a password.
    public let server: String

    public init(sqlState: String? = nil, message: String, detail: String? = nil, sql: String? = nil, server: String) {
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.sql = sql
        self.server = server
    }

    /// The connection is gone (the server shut down or restarted, the network dropped it):
    /// the work may be retried on a new connection.
    public var isConnectionLost: Bool {
        guard let sqlState else { return true }
        return sqlState.hasPrefix("08") || sqlState.hasPrefix("57P")
    }

    /// The transaction lost a race with another one (serialization failure, deadlock) and may
    /// be run again from its start.
    public var isRetryableConflict: Bool { sqlState == "40001" || sqlState == "40P01" }

    /// A unique constraint refused a row.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// The server's disk is full (53100). The rest of class 53 (out of memory or connections)
    /// passes with time and is not counted.
    public var isStorageFull: Bool { sqlState == "53100" }

    /// The server found damaged data or a damaged index (XX001, XX002).
    public var isCorruption: Bool { sqlState == "XX001" || sqlState == "XX002" }

    public var description: String {
        var text = "PostgreSQL error"
        if let sqlState { text += " \(sqlState)" }
        text += ": \(message)"
        if let detail { text += " (\(detail))" }
        if let sql { text += " — while running: \(sql)" }
        text += " — server: \(server)"
        return text
    }
}

extension PostgresError: SQLDatabaseError {}
