import CPostgres
import Foundation
import SQLBackend

/// A statement prepared on the server once and run many times with new values, read row by row
/// like SQLite's: the shape of code that runs one statement per record of a batch.
///
/// The server plans it at its first run, for the types of the values bound then (`?`
/// parameters numbered as `PostgresConnection` does). A later run that binds another type to a
/// parameter (text where an integer was) prepares it again under a new name rather than having
/// the server misread binary data. A NULL fits any type.
///
/// Like its connection, it belongs to one thread at a time; it lives as long as the connection
/// keeps it (`PostgresConnection.cached`).
public final class PostgresStatement: SQLStatement {
    public let sql: String
    /// Unowned: the connection's cache holds its statements, which must not hold it back.
    private unowned let connection: PostgresConnection
    private let numberedSQL: String
    private var values: [SQLValue] = []
    /// The server-side name and the parameter types it was prepared for.
    private var prepared: (name: String, types: [Oid], session: Int)?
    private var result: OpaquePointer?
    private var row: Int32 = -1
    private var rows: Int32 = 0

    init(connection: PostgresConnection, sql: String) {
        self.connection = connection
        self.sql = sql
        numberedSQL = PostgresConnection.numberedParameters(sql)
    }

    deinit { if let result { PQclear(result) } }

    // MARK: Binding

    public func bind(_ value: SQLValue, at index: Int32) throws {
        guard index >= 1 else {
            throw PostgresError(message: "parameter \(index): parameters are numbered from 1", sql: sql, server: connection.server)
        }
        dropResult()
        let slot = Int(index) - 1
        if values.count <= slot { values.append(contentsOf: repeatElement(.null, count: slot + 1 - values.count)) }
        values[slot] = value
    }

    public func bind(text: String, at index: Int32) throws { try bind(.text(text), at: index) }
    public func bind(utf8: UnsafeRawBufferPointer, at index: Int32) throws { try bind(.text(String(decoding: utf8, as: UTF8.self)), at: index) }
    public func bind(integer: Int64, at index: Int32) throws { try bind(.integer(integer), at: index) }
    public func bind(bytes: UnsafeRawBufferPointer, at index: Int32) throws { try bind(.blob(Data(bytes)), at: index) }
    public func bind(bytes: [UInt8], at index: Int32) throws { try bind(.blob(Data(bytes)), at: index) }
    public func bind(uncopiedBytes: UnsafeRawBufferPointer, at index: Int32) throws { try bind(bytes: uncopiedBytes, at: index) }

    // MARK: Running

    @discardableResult
    public func step() throws -> Bool {
        if result == nil { try execute() }
        row += 1
        return row < rows
    }

    /// Rows the last run inserted, changed or deleted, as the server counted them.
    public var changedRows: Int {
        guard let result else { return 0 }
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    public func reset() {
        dropResult()
        values.removeAll(keepingCapacity: true)
    }

    private func dropResult() {
        if let result { PQclear(result) }
        result = nil
        row = -1
        rows = 0
    }

    private func execute() throws {
        let connection = try self.connection.open()
        var types: [Oid] = []
        var buffers: [[UInt8]?] = []
        types.reserveCapacity(values.count)
        buffers.reserveCapacity(values.count)
        for value in values {
            let (type, bytes) = PostgresConnection.encode(value)
            types.append(type)
            buffers.append(bytes)
        }
        let name = try preparedName(for: types, on: connection)
        let lengths = buffers.map { Int32($0?.count ?? 0) }
        let formats = [Int32](repeating: 1, count: values.count)
        let executed: OpaquePointer? = self.connection.withPointers(to: buffers) { pointers in
            PQexecPrepared(connection, name, Int32(values.count), pointers, lengths, formats, 1)
        }
        guard let executed else {
            throw PostgresError(message: PostgresConnection.trimmed(PQerrorMessage(connection)), sql: sql, server: self.connection.server)
        }
        do {
            try self.connection.check(executed, sql: sql)
        } catch {
            PQclear(executed)
            throw error
        }
        result = executed
        rows = PQntuples(executed)
        row = -1
    }

    /// The name of the server's prepared statement for values of `types`, preparing it when it
    /// does not exist yet or was prepared for other types.
    private func preparedName(for types: [Oid], on connection: OpaquePointer) throws -> String {
        if let prepared, prepared.session == self.connection.session, prepared.types.count == types.count,
           zip(prepared.types, types).allSatisfy({ $0 == $1 || $1 == 0 }) {
            return prepared.name
        }
        self.connection.preparedCount += 1
        let name = "rapport_\(self.connection.preparedCount)"
        guard let made = PQprepare(connection, name, numberedSQL, Int32(types.count), types) else {
            throw PostgresError(message: PostgresConnection.trimmed(PQerrorMessage(connection)), sql: sql, server: self.connection.server)
        }
        defer { PQclear(made) }
        try self.connection.check(made, sql: sql)
        prepared = (name, types, self.connection.session)
        return name
    }

    // MARK: Reading the current row

    private func current() throws -> PostgresRow {
        guard let result, row >= 0, row < rows else {
            throw PostgresError(message: "no current row (step() first)", sql: sql, server: connection.server)
        }
        return PostgresRow(result: result, index: row, sql: sql, server: connection.server)
    }

    public func isNull(_ column: Int32) -> Bool { (try? current().isNull(column)) ?? true }
    public func int64(_ column: Int32) throws -> Int64 { try current().int64(column) }
    public func double(_ column: Int32) throws -> Double { try current().double(column) }
    public func string(_ column: Int32) throws -> String { try current().string(column) }
    public func data(_ column: Int32) throws -> Data { try current().data(column) }
    public func value(_ column: Int32) throws -> SQLValue { try current().value(column) }

    public func withBytes<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        try current().withBytes(column, body)
    }
}
