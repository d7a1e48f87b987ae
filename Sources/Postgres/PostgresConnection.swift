import CPostgres
import Foundation
import SQLBackend

/// One connection to a PostgreSQL server, through libpq.
///
/// Synchronous on purpose: the stores Rapport runs on it are synchronous and each belongs to
/// one thread (or serial executor) at a time, as a SQLite `Database` does, so a statement is a
/// plain call and a transaction a plain closure. Never call it on an event loop thread.
///
/// Parameters are bound in binary with their type, so no value is ever spliced into SQL text.
/// Statements may mark parameters `$1`, `$2`, ... or, as SQL written for any `SQLDatabase` does,
/// `?` (each taken as the next number; PostgreSQL's own `?` operators are then unavailable).
///
/// A `PostgresConnection` is not `Sendable`; its owner confines it.
public final class PostgresConnection: SQLDatabase {
    public var dialect: SQLDialect { .postgres }
    public var location: String { server }
    private var handle: OpaquePointer?
    /// `host:port/database` of the server, for errors and logs (never the password).
    public let server: String
    private var transactionDepth = 0
    /// Prepared statements by their SQL text (`cached`), and the number of the last one named.
    private var statements: [String: PostgresStatement] = [:]
    var preparedCount = 0
    /// How many times the connection was made again after the server closed it (`open`): a
    /// statement prepared in an earlier session is prepared again.
    private(set) var session = 0

    /// Connects to `url` (`postgres://user[:password]@host[:port]/database?options`, or
    /// libpq's `key=value` form).
    ///
    /// Fails with the server's or libpq's message when the server is unreachable, refuses the
    /// credentials, or the database does not exist.
    public init(url: String) throws {
        guard let connection = PQconnectdb(url) else {
            throw PostgresError(message: "libpq could not allocate a connection", server: Self.redactedURL(url))
        }
        handle = connection
        server = "\(String(cString: PQhost(connection))):\(String(cString: PQport(connection)))/\(String(cString: PQdb(connection)))"
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.trimmed(PQerrorMessage(connection))
            PQfinish(connection)
            handle = nil
            throw PostgresError(message: message, server: server)
        }
        try configureSession()
    }

    private func configureSession() throws {
        // UTC and ISO dates whatever the server's defaults: nothing Rapport reads depends on them,
        // but a log line should not change meaning with the server's configuration.
        try run("SET TIME ZONE 'UTC'")
        // Notices (a CREATE ... IF NOT EXISTS that found the table) would go to stderr; warnings
        // and errors still come, errors as `PostgresError`.
        try run("SET client_min_messages TO warning")
    }

    deinit { close() }

    /// Closes the connection; later calls fail.
    public func close() {
        statements = [:]
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// Runs a statement and returns how many rows it changed (0 for statements that change none).
    @discardableResult
    public func run(_ sql: String, _ values: [any SQLBindable] = []) throws -> Int {
        try execute(sql, values) { result in
            let affected = String(cString: PQcmdTuples(result))
            return Int(affected) ?? 0
        }
    }

    /// Runs a query and maps each row of its result.
    public func query<T>(_ sql: String, _ values: [any SQLBindable] = [], row: (PostgresRow) throws -> T) throws -> [T] {
        try execute(sql, values) { result in
            let count = PQntuples(result)
            var rows: [T] = []
            rows.reserveCapacity(Int(count))
            for index in 0..<count {
                rows.append(try row(PostgresRow(result: result, index: index, sql: sql, server: server)))
            }
            return rows
        }
    }

    /// The prepared statement for `sql`, made on first use and kept for the connection's life:
    /// the server parses and plans it once (see `PostgresStatement`).
    public func cached(_ sql: String) throws -> PostgresStatement {
        if let statement = statements[sql] { return statement }
        let statement = PostgresStatement(connection: self, sql: sql)
        statements[sql] = statement
        return statement
    }

    /// `cached` for code written against any `SQLDatabase`.
    public func statement(_ sql: String) throws -> any SQLStatement { try cached(sql) }

    /// `query` for code written against any `SQLDatabase`.
    public func fetch<T>(_ sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T] {
        try query(sql, values) { try row($0) }
    }

    /// The first `limit` rows of `sql` (ordered, without `LIMIT`; see `SQLDatabase.fetchFirst`),
    /// read through a cursor: the planner then weighs how soon the first rows come
    /// (`cursor_tuple_fraction`), so it takes an index scan in the query's order over reading
    /// and sorting the whole range, even when its statistics expect few rows. The cursor lives
    /// in a transaction of its own (a savepoint inside one), closed before it returns.
    public func fetchFirst<T>(_ limit: Int, of sql: String, _ values: [any SQLBindable], row: (any SQLRow) throws -> T) throws -> [T] {
        guard limit > 0 else { return [] }
        let cursor = "rapport_first_\(transactionDepth)"
        return try transaction {
            try run("DECLARE \(cursor) NO SCROLL CURSOR FOR " + sql, values)
            // FETCH counts in 32 bits; a caller that means "every row" passes Int.max.
            let count = limit < Int(Int32.max) ? "FORWARD \(limit)" : "ALL"
            let rows = try query("FETCH \(count) FROM \(cursor)") { try row($0) }
            try run("CLOSE \(cursor)")
            return rows
        }
    }

    /// The first column of the first row as an integer, or `nil` when there is no row or it is NULL.
    public func scalarInt(_ sql: String, _ values: [any SQLBindable] = []) throws -> Int64? {
        try query(sql, values) { row in try row.isNull(0) ? nil : row.int64(0) }.first ?? nil
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    /// Nested calls run in a savepoint of the outer transaction, so an inner failure undoes only
    /// the inner work. `.immediate` is read committed: each statement sees what is committed when
    /// it starts, and code that needs writers to queue takes a row lock (`SELECT ... FOR UPDATE`).
    /// `.deferred` is repeatable read: every statement sees one snapshot, as a SQLite reader does.
    public func transaction<T>(_ kind: SQLTransactionKind = .immediate, _ body: () throws -> T) throws -> T {
        let depth = transactionDepth
        let begin = kind == .deferred ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN"
        try run(depth == 0 ? begin : "SAVEPOINT rapport_\(depth)")
        transactionDepth += 1
        defer { transactionDepth = depth }
        do {
            let value = try body()
            try run(depth == 0 ? "COMMIT" : "RELEASE SAVEPOINT rapport_\(depth)")
            return value
        } catch {
            // The connection may be gone; the original error is the one worth reporting.
            _ = try? run(depth == 0 ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT rapport_\(depth)")
            throw error
        }
    }

    /// Starts receiving notifications sent on `channel` (`NOTIFY`, `pg_notify`).
    public func listen(_ channel: String) throws {
        try run("LISTEN \(Self.quotedIdentifier(channel))")
    }

    /// Waits up to `timeout` for notifications on the channels this connection listens to, and
    /// returns those that came (none when the time ran out).
    public func notifications(waitingUpTo timeout: Duration) throws -> [PostgresNotification] {
        let connection = try open()
        var received = try drainNotifications(connection)
        guard received.isEmpty else { return received }
        var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
        let (seconds, attoseconds) = timeout.components
        let milliseconds = Int32(clamping: seconds * 1_000 + attoseconds / 1_000_000_000_000_000)
        let ready = poll(&descriptor, 1, milliseconds)
        if ready < 0, errno != EINTR {
            throw PostgresError(message: "waiting for notifications: \(String(cString: strerror(errno)))", server: server)
        }
        received = try drainNotifications(connection)
        return received
    }

    private func drainNotifications(_ connection: OpaquePointer) throws -> [PostgresNotification] {
        guard PQconsumeInput(connection) == 1 else {
            throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), server: server)
        }
        var received: [PostgresNotification] = []
        while let notice = PQnotifies(connection) {
            received.append(PostgresNotification(channel: String(cString: notice.pointee.relname),
                                                 payload: String(cString: notice.pointee.extra),
                                                 senderProcessID: notice.pointee.be_pid))
            PQfreemem(notice)
        }
        return received
    }

    /// The connection, made again first when the server closed it (a restart, a failover, an
    /// administrator ending the backend) and no transaction was open on it: the statement that
    /// met the closed connection failed, the next one runs on a new session. Within a
    /// transaction it stays closed, so the transaction fails whole and its caller retries it.
    func open() throws -> OpaquePointer {
        guard let handle else { throw PostgresError(message: "the connection is closed", server: server) }
        if PQstatus(handle) != CONNECTION_OK && transactionDepth == 0 {
            PQreset(handle)
            guard PQstatus(handle) == CONNECTION_OK else {
                throw PostgresError(message: "reconnecting: " + Self.trimmed(PQerrorMessage(handle)), server: server)
            }
            session += 1
            try configureSession()
        }
        return handle
    }

    /// Sends one statement with its parameters in binary and asks for a binary result; hands the
    /// result to `read` when it succeeded, and turns any failure into a `PostgresError`.
    /// Runs a script of several statements without parameters (a schema), in one round trip.
    public func execute(script sql: String) throws {
        let connection = try open()
        guard let result = PQexec(connection, sql) else {
            throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), sql: sql, server: server)
        }
        defer { PQclear(result) }
        try check(result, sql: sql)
    }

    /// Runs `COPY ... FROM STDIN` (`sql`) with the rows `write` hands over in COPY's text form
    /// (tab between columns, a newline after each row; `bytea` as `\\x` and hex), sent in chunks
    /// as they come; returns the number of rows copied. The fastest way into a table, and what
    /// bulk loads are measured against.
    @discardableResult
    public func copyIn(_ sql: String, _ write: (_ send: (String) throws -> Void) throws -> Void) throws -> Int {
        let connection = try open()
        guard let started = PQexec(connection, sql) else {
            throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), sql: sql, server: server)
        }
        let status = PQresultStatus(started)
        if status != PGRES_COPY_IN {
            defer { PQclear(started) }
            try check(started, sql: sql)
            throw PostgresError(message: "not a COPY FROM STDIN", sql: sql, server: server)
        }
        PQclear(started)
        var buffer: [UInt8] = []
        func flush() throws {
            guard !buffer.isEmpty else { return }
            let sent = buffer.withUnsafeBufferPointer { bytes in
                bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { PQputCopyData(connection, $0, Int32(bytes.count)) }
            }
            guard sent == 1 else { throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), sql: sql, server: server) }
            buffer.removeAll(keepingCapacity: true)
        }
        var failure: (any Error)?
        do {
            try write { text in
                buffer += text.utf8
                if buffer.count >= 1 << 16 { try flush() }
            }
            try flush()
        } catch {
            failure = error
        }
        // Ends the copy: with an error message it is abandoned and nothing of it is kept.
        let ended = failure.map { PQputCopyEnd(connection, "\($0)") } ?? PQputCopyEnd(connection, nil)
        var copied = 0
        var serverError: (any Error)?
        while let result = PQgetResult(connection) {
            do { try check(result, sql: sql) } catch { serverError = serverError ?? error }
            copied = Int(String(cString: PQcmdTuples(result))) ?? copied
            PQclear(result)
        }
        if let failure { throw failure }
        if let serverError { throw serverError }
        guard ended == 1 else { throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), sql: sql, server: server) }
        return copied
    }

    func check(_ result: OpaquePointer, sql: String) throws {
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return
        default:
            throw PostgresError(
                sqlState: Self.field(result, "C"),
                message: Self.field(result, "M") ?? Self.trimmed(PQresultErrorMessage(result)),
                detail: Self.field(result, "D"),
                sql: sql, server: server)
        }
    }

    /// `sql` with each parameter outside quotes and comments written as PostgreSQL's `$N`, read
    /// as SQLite reads them: `?NNN` is parameter NNN, and a bare `?` is one more than the largest
    /// number used before it (so `(?1, ?2, ?, ?), (?1, ?2, ?, ?)` is 1, 2, 3, 4, then 1, 2, 5, 6).
    static func numberedParameters(_ sql: String) -> String {
        guard sql.utf8.contains(UInt8(ascii: "?")) else { return sql }
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var largest = 0
        var quote: Character?
        var lineComment = false
        var previous: Character = " "
        var digits: String?  // the number after a `?`, while it is being read
        func endParameter() {
            guard let number = digits else { return }
            let n = number.isEmpty ? largest + 1 : Int(number) ?? largest + 1
            largest = max(largest, n)
            out += "$\(n)"
            digits = nil
        }
        for c in sql {
            if digits != nil {
                if c.isASCII, c.isNumber {
                    digits!.append(c)
                    continue
                }
                endParameter()
            }
            if lineComment {
                if c == "\n" { lineComment = false }
            } else if let open = quote {
                if c == open { quote = nil }
            } else if c == "'" || c == "\"" {
                quote = c
            } else if c == "-" && previous == "-" {
                lineComment = true
            } else if c == "?" {
                digits = ""
                previous = c
                continue
            }
            out.append(c)
            previous = c
        }
        endParameter()
        return out
    }

    private func execute<T>(_ sql: String, _ values: [any SQLBindable], read: (OpaquePointer) throws -> T) throws -> T {
        let connection = try open()
        let sql = Self.numberedParameters(sql)
        var types: [Oid] = []
        var buffers: [[UInt8]?] = []
        types.reserveCapacity(values.count)
        buffers.reserveCapacity(values.count)
        for value in values {
            let (type, bytes) = Self.encode(value.sqlValue)
            types.append(type)
            buffers.append(bytes)
        }
        let lengths = buffers.map { Int32($0?.count ?? 0) }
        let formats = [Int32](repeating: 1, count: values.count)
        let result: OpaquePointer? = withPointers(to: buffers) { pointers in
            PQexecParams(connection, sql, Int32(values.count), types, pointers, lengths, formats, 1)
        }
        guard let result else {
            throw PostgresError(message: Self.trimmed(PQerrorMessage(connection)), sql: sql, server: server)
        }
        defer { PQclear(result) }
        try check(result, sql: sql)
        return try read(result)
    }

    func withPointers<T>(to buffers: [[UInt8]?], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
        // The buffers outlive the call: pointers taken one by one would not.
        var pointers: [UnsafeMutablePointer<CChar>?] = []
        pointers.reserveCapacity(buffers.count)
        defer { pointers.forEach { $0?.deallocate() } }
        for buffer in buffers {
            guard let buffer else {
                pointers.append(nil)
                continue
            }
            let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: max(buffer.count, 1))
            buffer.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(pointer).copyMemory(from: bytes.baseAddress ?? UnsafeRawPointer(pointer), byteCount: buffer.count)
            }
            pointers.append(pointer)
        }
        return body(pointers.map { UnsafePointer($0) })
    }

    /// The type and binary form of a parameter (PostgreSQL's send functions: big-endian integers
    /// and IEEE doubles, raw bytes for text and bytea).
    static func encode(_ value: SQLValue) -> (Oid, [UInt8]?) {
        switch value {
        case .null: return (0, nil)
        case .integer(let number): return (PostgresType.int8, withUnsafeBytes(of: number.bigEndian) { Array($0) })
        case .real(let number): return (PostgresType.float8, withUnsafeBytes(of: number.bitPattern.bigEndian) { Array($0) })
        case .text(let text): return (PostgresType.text, Array(text.utf8))
        case .blob(let data): return (PostgresType.bytea, Array(data))
        }
    }

    /// A field of an error result, by the one-letter code of the protocol (postgres_ext.h's
    /// `PG_DIAG_*` macros, which Swift cannot import: C sqlstate, M message, D detail).
    private static func field(_ result: OpaquePointer, _ code: Unicode.Scalar) -> String? {
        PQresultErrorField(result, Int32(code.value)).map { String(cString: $0) }
    }

    static func trimmed(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "unknown libpq failure" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `text` is a PostgreSQL URL (what `--store` and `tenant move --to` take) rather
    /// than a path.
    public static func isURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// `url` without its password, for errors and logs.
    public static func redactedURL(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "(unparsable connection string)"
    }

    /// `name` as a quoted SQL identifier.
    public static func quotedIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// A notification received on a channel this connection listens to.
public struct PostgresNotification: Sendable, Hashable {
    public var channel: String
    public var payload: String
    /// The server process that sent it (a connection's own notifications carry its own id).
    public var senderProcessID: Int32
}

/// The type OIDs Rapport reads and writes (`pg_type`).
enum PostgresType {
    static let bool: Oid = 16
    static let bytea: Oid = 17
    static let name: Oid = 19
    static let int8: Oid = 20
    static let int2: Oid = 21
    static let int4: Oid = 23
    static let text: Oid = 25
    static let float4: Oid = 700
    static let float8: Oid = 701
    static let varchar: Oid = 1043
}

/// One row of a result, read column by column in binary. Valid only inside the `row` closure
/// of `PostgresConnection.query`, which owns the result.
public struct PostgresRow: SQLRow {
    let result: OpaquePointer
    let index: Int32
    let sql: String
    let server: String

    /// How many columns the row has.
    public var count: Int { Int(PQnfields(result)) }

    public func isNull(_ column: Int32) -> Bool { PQgetisnull(result, index, column) == 1 }

    /// An integer column (`bigint`, `integer`, `smallint`, `boolean` as 0 or 1).
    public func int64(_ column: Int32) throws -> Int64 {
        let bytes = try raw(column)
        switch PQftype(result, column) {
        case PostgresType.int8 where bytes.count == 8: return Int64(bigEndian: load(bytes, as: Int64.self))
        case PostgresType.int4 where bytes.count == 4: return Int64(Int32(bigEndian: load(bytes, as: Int32.self)))
        case PostgresType.int2 where bytes.count == 2: return Int64(Int16(bigEndian: load(bytes, as: Int16.self)))
        case PostgresType.bool where bytes.count == 1: return Int64(bytes[0])
        default: throw mismatch(column, "an integer")
        }
    }

    /// A floating-point column (`double precision`, `real`), or an integer one.
    public func double(_ column: Int32) throws -> Double {
        let bytes = try raw(column)
        switch PQftype(result, column) {
        case PostgresType.float8 where bytes.count == 8: return Double(bitPattern: UInt64(bigEndian: load(bytes, as: UInt64.self)))
        case PostgresType.float4 where bytes.count == 4: return Double(Float(bitPattern: UInt32(bigEndian: load(bytes, as: UInt32.self))))
        default: return Double(try int64(column))
        }
    }

    /// A text column (`text`, `varchar`, `name`).
    public func string(_ column: Int32) throws -> String {
        switch PQftype(result, column) {
        case PostgresType.text, PostgresType.varchar, PostgresType.name:
            return String(decoding: try raw(column), as: UTF8.self)
        default: throw mismatch(column, "text")
        }
    }

    /// A `bytea` column's bytes.
    public func data(_ column: Int32) throws -> Data {
        try withBytes(column) { Data($0) }
    }

    /// A `bytea` column's bytes without copying them; valid only inside `body`.
    public func withBytes<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard PQftype(result, column) == PostgresType.bytea else { throw mismatch(column, "bytes") }
        return try body(try raw(column))
    }

    /// A `boolean` column.
    public func bool(_ column: Int32) throws -> Bool { try int64(column) != 0 }

    /// The column as the `SQLValue` of its type: integers (and booleans as 0 or 1), floating
    /// point, text, `bytea`; another type is refused, naming it.
    public func value(_ column: Int32) throws -> SQLValue {
        if isNull(column) { return .null }
        switch PQftype(result, column) {
        case PostgresType.int8, PostgresType.int4, PostgresType.int2, PostgresType.bool: return .integer(try int64(column))
        case PostgresType.float8, PostgresType.float4: return .real(try double(column))
        case PostgresType.text, PostgresType.varchar, PostgresType.name: return .text(try string(column))
        case PostgresType.bytea: return .blob(try data(column))
        default: throw mismatch(column, "an integer, a number, text or bytes")
        }
    }

    private func raw(_ column: Int32) throws -> UnsafeRawBufferPointer {
        guard column >= 0, column < PQnfields(result) else {
            throw PostgresError(message: "no column \(column) in the result (it has \(PQnfields(result)))", sql: sql, server: server)
        }
        guard !isNull(column) else {
            throw PostgresError(message: "column \(column) (\(name(column))) is NULL", sql: sql, server: server)
        }
        let length = Int(PQgetlength(result, index, column))
        return UnsafeRawBufferPointer(start: PQgetvalue(result, index, column), count: length)
    }

    private func load<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, as: T.Type) -> T {
        bytes.loadUnaligned(as: T.self)
    }

    private func name(_ column: Int32) -> String {
        PQfname(result, column).map { String(cString: $0) } ?? "?"
    }

    private func mismatch(_ column: Int32, _ wanted: String) -> PostgresError {
        PostgresError(message: "column \(column) (\(name(column))) has type \(PQftype(result, column)), not \(wanted)", sql: sql, server: server)
    }
}
