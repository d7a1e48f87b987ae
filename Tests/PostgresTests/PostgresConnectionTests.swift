import Foundation
@testable import Postgres
import SQLite
import SQLBackend
import TestSupport
import Testing
import TestScheduling

/// The libpq layer against a real server (see `PostgresServer`): values both ways in binary,
/// errors with their context, transactions and savepoints, and notifications between connections.
@Suite(.serialized) struct PostgresConnectionTests {
    @Test(.blocking) func valuesGoInAndComeBackUnchanged() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        try connection.run("CREATE TABLE t (i bigint, r double precision, s text, b bytea, f boolean, n text)")
        let bytes = Data([0, 1, 0xff, 0, 39, 34])
        let text = "Zoë O'Brien \"quoted\"; DROP TABLE t; -- 名前"
        // Booleans are bound as integers (SQLValue has none), so the statement converts.
        let changed = try connection.run("INSERT INTO t VALUES ($1, $2, $3, $4, $5 = 1, $6)",
                                         [Int64.min, -0.125, text, bytes, true, SQLValue.null])
        #expect(changed == 1)
        let rows = try connection.query("SELECT i, r, s, b, f, n, 7::int, 3::smallint FROM t") { row in
            (try row.int64(0), try row.double(1), try row.string(2), try row.data(3), try row.bool(4), row.isNull(5),
             try row.int64(6), try row.int64(7))
        }
        #expect(rows.count == 1)
        let row = try #require(rows.first)
        #expect(row.0 == Int64.min && row.1 == -0.125 && row.2 == text && row.3 == bytes && row.4 && row.5)
        #expect(row.6 == 7 && row.7 == 3)
        #expect(try connection.scalarInt("SELECT count(*) FROM t") == 1)
        #expect(try connection.scalarInt("SELECT NULL::bigint") == nil)
    }

    @Test(.blocking) func aFailingStatementSaysWhatRanWhereAndWhy() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let syntax = #expect(throws: PostgresError.self) { try connection.run("SELEC 1") }
        #expect(syntax?.sqlState == "42601")
        #expect(syntax?.sql == "SELEC 1")
        #expect(syntax?.server.hasSuffix("/\(database.name)") == true)
        try connection.run("CREATE TABLE u (k text PRIMARY KEY)")
        try connection.run("INSERT INTO u VALUES ($1)", ["a"])
        let duplicate = #expect(throws: PostgresError.self) { try connection.run("INSERT INTO u VALUES ($1)", ["a"]) }
        #expect(duplicate?.isUniqueViolation == true)
        #expect(duplicate?.detail?.contains("(k)=(a)") == true)
        #expect(duplicate?.isConnectionLost == false)
        // Reading a column as the wrong type is an error naming the column, not a wrong value.
        let mismatch = #expect(throws: PostgresError.self) { _ = try connection.query("SELECT 'x'::text AS label") { try $0.int64(0) } }
        #expect(mismatch?.message.contains("label") == true)
        let null = #expect(throws: PostgresError.self) { _ = try connection.query("SELECT NULL::text") { try $0.string(0) } }
        #expect(null?.message.contains("NULL") == true)
    }

    @Test(.blocking) func anUnreachableServerOrAWrongPasswordIsAClearErrorWithoutThePassword() throws {
        let server = try PostgresServer.shared()
        let closed = #expect(throws: PostgresError.self) {
            _ = try PostgresConnection(url: "postgresql://rapport:hunter2@127.0.0.1:1/postgres?connect_timeout=5")
        }
        #expect(closed?.isConnectionLost == true)
        #expect(closed?.description.contains("hunter2") == false)
        #expect(closed?.server == "127.0.0.1:1/postgres")
        let missing = #expect(throws: PostgresError.self) {
            _ = try PostgresConnection(url: server.url(database: "no_such_database_here"))
        }
        #expect(missing?.message.contains("no_such_database_here") == true)
    }

    @Test(.blocking) func transactionsCommitOrRollBackAndNestedOnesAreSavepoints() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let other = try PostgresConnection(url: database.url)
        try connection.run("CREATE TABLE v (n bigint)")
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            try connection.transaction {
                try connection.run("INSERT INTO v VALUES (1)")
                throw Refused()
            }
        }
        #expect(try other.scalarInt("SELECT count(*) FROM v") == 0)
        try connection.transaction {
            try connection.run("INSERT INTO v VALUES (2)")
            #expect(try other.scalarInt("SELECT count(*) FROM v") == 0, "another connection sees nothing before the commit")
            try? connection.transaction {
                try connection.run("INSERT INTO v VALUES (3)")
                throw Refused()
            }
            try connection.transaction { try connection.run("INSERT INTO v VALUES (4)") }
        }
        #expect(try other.query("SELECT n FROM v ORDER BY n") { try $0.int64(0) } == [2, 4])
        // A statement failing inside a transaction rolls the whole of it back.
        #expect(throws: PostgresError.self) {
            try connection.transaction {
                try connection.run("INSERT INTO v VALUES (5)")
                try connection.run("INSERT INTO v VALUES ('five')")
            }
        }
        #expect(try other.query("SELECT n FROM v ORDER BY n") { try $0.int64(0) } == [2, 4])
    }

    @Test(.blocking) func notificationsReachAListeningConnectionOnlyWhenTheirTransactionCommits() throws {
        let database = try PostgresServer.database()
        let listener = try PostgresConnection(url: database.url)
        let sender = try PostgresConnection(url: database.url)
        try listener.listen("tenant changes")
        #expect(try listener.notifications(waitingUpTo: .milliseconds(50)).isEmpty)
        try? sender.transaction {
            try sender.run("SELECT pg_notify($1, $2)", ["tenant changes", "rolled back"])
            throw PostgresError(message: "abandoned", server: sender.server)
        }
        try sender.transaction {
            try sender.run("SELECT pg_notify($1, $2)", ["tenant changes", "acme:42"])
            try sender.run("SELECT pg_notify($1, $2)", ["other channel", "unheard"])
        }
        var received: [PostgresNotification] = []
        // Waits for the one notification that must come; the bound is on attempts, not time.
        for _ in 0..<100 where received.isEmpty {
            received += try listener.notifications(waitingUpTo: .seconds(1))
        }
        #expect(received.map(\.payload) == ["acme:42"])
        #expect(received.first?.channel == "tenant changes")
    }

    @Test(.blocking) func questionMarksAreParametersOutsideQuotesAndComments() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let rows = try connection.query("""
            SELECT '?' || ?, "?col" FROM (SELECT ? AS "?col") AS q -- what? not a parameter
            """, ["a", "b"]) { (try $0.string(0), try $0.string(1)) }
        #expect(rows.map(\.0) == ["?a"] && rows.map(\.1) == ["b"])
        // SQL written for any SQLDatabase reads the same through the protocol.
        let any: any SQLDatabase = connection
        #expect(try any.fetch("SELECT ? + ?", [2, 3]) { try $0.int64(0) } == [5])
        #expect(any.dialect == .postgres)
        // Numbered as SQLite numbers them: `?N` is N, a bare `?` one past the largest so far, so
        // a many-row insert binds its shared values once.
        #expect(PostgresConnection.numberedParameters("VALUES (?1, ?2, ?, ?), (?1, ?2, ?, ?)") == "VALUES ($1, $2, $3, $4), ($1, $2, $5, $6)")
        #expect(try any.fetch("SELECT ?2 || ?1 || ?", ["a", "b", "c"]) { try $0.string(0) } == ["bac"])
    }

    @Test(.blocking) func fetchFirstReadsAnOrderedRangeByItsIndexWhateverTheStatisticsSayAsSQLiteDoes() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let file = try Database(path: ":memory:")
        defer { file.close() }
        // Rows just loaded, not analysed yet: the case where a LIMIT read and sorted them all.
        try connection.run("CREATE TABLE w (tenant_id text, k bigint, label text, PRIMARY KEY (tenant_id, k)) WITH (autovacuum_enabled = false)")
        try connection.run("INSERT INTO w SELECT 'a', g, 'row ' || g FROM generate_series(1, 20000) g")
        try file.execute("CREATE TABLE w (tenant_id text, k integer, label text, PRIMARY KEY (tenant_id, k))")
        try file.transaction { for k in 1...300 { try file.run("INSERT INTO w VALUES ('a', ?, ?)", [k, "row \(k)"]) } }
        let query = "SELECT k, label FROM w WHERE tenant_id = 'a' AND k > ? ORDER BY k"
        for database in [connection, file] as [any SQLDatabase] {
            let page = try database.fetchFirst(3, of: query, [10]) { (try $0.int64(0), try $0.string(1)) }
            #expect(page.map(\.0) == [11, 12, 13] && page.map(\.1) == ["row 11", "row 12", "row 13"], "\(database.dialect)")
            #expect(try database.fetchFirst(5, of: query, [298]) { try $0.int64(0) }.prefix(2) == [299, 300])
            #expect(try database.fetchFirst(0, of: query, [0]) { try $0.int64(0) }.isEmpty)
            #expect(try database.fetchFirst(Int.max, of: query, [295]) { try $0.int64(0) }.prefix(5) == [296, 297, 298, 299, 300])
            // Inside a transaction, twice, and after a reader that failed half-way.
            struct Stop: Error {}
            let pages = try database.transaction { () throws -> [[Int64]] in
                #expect(throws: Stop.self) { _ = try database.fetchFirst(4, of: query, [0]) { _ in throw Stop() } }
                return [try database.fetchFirst(2, of: query, [0]) { try $0.int64(0) }, try database.fetchFirst(2, of: query, [2]) { try $0.int64(0) }]
            }
            #expect(pages == [[1, 2], [3, 4]])
            #expect(throws: Stop.self) { _ = try database.fetchFirst(4, of: query, [0]) { _ in throw Stop() } }
            #expect(try database.fetchFirst(1, of: query, [7]) { try $0.int64(0) } == [8])
        }
        // The cursor's plan walks the primary key in order and stops; a LIMIT without statistics
        // expects a few rows, so it would fetch all of them and sort them.
        let plan = try connection.transaction {
            try connection.query("EXPLAIN DECLARE c NO SCROLL CURSOR FOR " + query, [0]) { try $0.string(0) }
        }
        #expect(plan.first?.contains("Index Scan using w_pkey") == true && !plan.contains { $0.contains("Sort") }, "\(plan)")
    }

    @Test(.blocking) func copyInLoadsRowsAndAFailingWriterLeavesNone() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        try connection.run("CREATE TABLE t (n bigint, name text, bytes bytea)")
        let copied = try connection.copyIn("COPY t FROM STDIN") { send in
            for n in 0..<5_000 { try send("\(n)\tname \(n)\t\\\\x0a\(String(n % 256, radix: 16).count == 1 ? "0" : "")\(String(n % 256, radix: 16))\n") }
        }
        #expect(copied == 5_000)
        #expect(try connection.scalarInt("SELECT count(*) FROM t") == 5_000)
        #expect(try connection.query("SELECT bytes FROM t WHERE n = 255") { try $0.data(0) } == [Data([0x0a, 0xff])])
        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try connection.copyIn("COPY t FROM STDIN") { send in
                try send("1\tone\t\\\\x00\n")
                throw Stop()
            }
        }
        #expect(try connection.scalarInt("SELECT count(*) FROM t") == 5_000, "an abandoned copy keeps nothing")
        #expect(throws: PostgresError.self) { try connection.copyIn("COPY t FROM STDIN") { try $0("not a number\tx\t\\\\x00\n") } }
        #expect(try connection.scalarInt("SELECT 1") == 1, "the connection serves on after a refused copy")
    }

    @Test(.blocking) func aConnectionTheServerClosedIsMadeAgainForTheNextStatementNotInsideATransaction() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let admin = try PostgresConnection(url: database.url)
        try connection.run("CREATE TABLE t (n bigint)")
        let insert = try connection.cached("INSERT INTO t VALUES (?)")
        try insert.bind(integer: 1, at: 1)
        try insert.step()
        func endBackend() throws {
            let pid = try #require(try connection.scalarInt("SELECT pg_backend_pid()"))
            try admin.run("SELECT pg_terminate_backend(?::int)", [pid])
        }
        try endBackend()
        #expect(throws: PostgresError.self, "the statement that meets the closed connection fails") {
            try connection.run("SELECT 1")
        }
        #expect(try connection.scalarInt("SELECT 2") == 2, "the next one runs on a new session")
        insert.reset()
        try insert.bind(integer: 2, at: 1)
        try insert.step()  // prepared again on the new session
        // Inside a transaction the connection stays closed: the transaction fails whole.
        #expect(throws: PostgresError.self) {
            try connection.transaction {
                try connection.run("INSERT INTO t VALUES (3)")
                try endBackend()
                try connection.run("INSERT INTO t VALUES (4)")
            }
        }
        #expect(try connection.query("SELECT n FROM t ORDER BY n") { try $0.int64(0) } == [1, 2])
    }

    @Test(.blocking) func migrationsRunOnceEvenFromSeveralConnectionsAndANewerSchemaIsRefused() throws {
        let database = try PostgresServer.database()
        let migrations = [
            PostgresMigration(version: 1, "a table", sql: "CREATE TABLE m (k text PRIMARY KEY); INSERT INTO m VALUES ('one');"),
            PostgresMigration(version: 2, "a column", sql: "ALTER TABLE m ADD COLUMN n bigint NOT NULL DEFAULT 2;"),
        ]
        let first = try PostgresConnection(url: database.url)
        let second = try PostgresConnection(url: database.url)
        #expect(try first.migrate("test", Array(migrations.prefix(1))) == [1])
        #expect(try second.migrate("test", migrations) == [2])
        #expect(try first.migrate("test", migrations) == [])
        #expect(try first.query("SELECT k, n FROM m") { "\(try $0.string(0)) \(try $0.int64(1))" } == ["one 2"])
        let newer = #expect(throws: PostgresError.self) { try first.migrate("test", Array(migrations.prefix(1))) }
        #expect(newer?.message.contains("newer") == true)
        // A failing migration leaves the schema as it was.
        let broken = migrations + [PostgresMigration(version: 3, "broken", sql: "ALTER TABLE m ADD COLUMN o bigint; SELEC 1;")]
        #expect(throws: PostgresError.self) { try first.migrate("test", broken) }
        #expect(try first.schemaVersion(of: "test") == 2)
        #expect(try first.scalarInt("SELECT count(*) FROM information_schema.columns WHERE table_name = 'm' AND column_name = 'o'") == 0)
    }

    /// Code that binds and steps a statement per record (the stores' hot paths) runs unchanged
    /// on both databases, and reads the same rows back.
    @Test(.blocking) func aPreparedStatementRunsManyTimesAndReadsRowsAsSQLitesDoes() throws {
        let database = try PostgresServer.database()
        let postgres = try PostgresConnection(url: database.url)
        let dir = try TemporaryDirectory()
        let sqlite = try Database(path: dir.path("statements.sqlite"))
        func exercise(_ db: any SQLDatabase, blob: String) throws -> [String] {
            try db.run("CREATE TABLE r (seq bigint PRIMARY KEY, id \(blob) NOT NULL UNIQUE, type text NOT NULL, n bigint)")
            let insert = try db.statement("INSERT INTO r (seq, id, type, n) VALUES (?, ?, ?, ?)")
            for i in 1...60 {
                insert.reset()
                try insert.bind(integer: Int64(i), at: 1)
                try insert.bind(bytes: [UInt8(i), 0, 0xff], at: 2)
                try insert.bind(text: "t\(i % 3)", at: 3)
                // A NULL where the statement was prepared for an integer, and back.
                try insert.bind(i % 5 == 0 ? .null : .integer(Int64(i * 10)), at: 4)
                #expect(try insert.step() == false)
            }
            let duplicate = try db.statement("INSERT INTO r (seq, id, type) VALUES (?, ?, 'x')")
            try duplicate.bind(integer: 100, at: 1)
            try duplicate.bind(bytes: [1, 0, 0xff], at: 2)
            do {
                try duplicate.step()
                Issue.record("the unique id let a second row in")
            } catch {
                #expect(error is any SQLDatabaseError, "\(error)")
            }
            let select = try db.statement("SELECT seq, id, type, n FROM r WHERE type = ? AND seq > ? ORDER BY seq")
            var lines: [String] = []
            for (type, after) in [("t1", 0), ("t2", 40), ("none", 0), ("t1", 50)] {
                select.reset()
                try select.bind(text: type, at: 1)
                try select.bind(integer: Int64(after), at: 2)
                while try select.step() {
                    let id = try select.withBytes(1) { Array($0) }
                    lines.append("\(try select.int64(0)) \(id) \(try select.string(2)) \(select.isNull(3) ? "NULL" : String(try select.int64(3)))")
                }
                lines.append("--")
            }
            return lines
        }
        let onSQLite = try exercise(sqlite, blob: "BLOB")
        #expect(onSQLite.count == 20 + 7 + 0 + 3 + 4, "rows of each query, and a line after each")
        #expect(try exercise(postgres, blob: "bytea") == onSQLite)
    }

    @Test(.blocking) func aStatementBoundWithOtherTypesIsPreparedAgainNotMisread() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let echo = try connection.cached("SELECT ?::text")
        try echo.bind(integer: 42, at: 1)
        #expect(try echo.step() && echo.string(0) == "42")
        echo.reset()
        try echo.bind(text: "forty-two", at: 1)
        #expect(try echo.step() && echo.string(0) == "forty-two")
        #expect(try echo.step() == false)
        #expect(try connection.cached("SELECT ?::text") === echo, "one statement per SQL text")
        // Reading before stepping is an error that names the statement, not garbage.
        echo.reset()
        let early = #expect(throws: PostgresError.self) { _ = try echo.string(0) }
        #expect(early?.sql == "SELECT ?::text")
    }
}
