import Foundation
import Postgres
import TestSupport
import Testing

/// The libpq layer against a real server (see `PostgresServer`): values both ways in binary,
/// errors with their context, transactions and savepoints, and notifications between connections.
@Suite(.serialized) struct PostgresConnectionTests {
    @Test func valuesGoInAndComeBackUnchanged() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        try connection.run("CREATE TABLE t (i bigint, r double precision, s text, b bytea, f boolean, n text)")
        let bytes = Data([0, 1, 0xff, 0, 39, 34])
        let text = "Zoë O'Brien \"quoted\"; DROP TABLE t; -- 名前"
        let changed = try connection.run("INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)",
                                         [.integer(Int64.min), .real(-0.125), .text(text), .bytes(bytes), .bool(true), .null])
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

    @Test func aFailingStatementSaysWhatRanWhereAndWhy() throws {
        let database = try PostgresServer.database()
        let connection = try PostgresConnection(url: database.url)
        let syntax = #expect(throws: PostgresError.self) { try connection.run("SELEC 1") }
        #expect(syntax?.sqlState == "42601")
        #expect(syntax?.sql == "SELEC 1")
        #expect(syntax?.server.hasSuffix("/\(database.name)") == true)
        try connection.run("CREATE TABLE u (k text PRIMARY KEY)")
        try connection.run("INSERT INTO u VALUES ($1)", [.text("a")])
        let duplicate = #expect(throws: PostgresError.self) { try connection.run("INSERT INTO u VALUES ($1)", [.text("a")]) }
        #expect(duplicate?.isUniqueViolation == true)
        #expect(duplicate?.detail?.contains("(k)=(a)") == true)
        #expect(duplicate?.isConnectionLost == false)
        // Reading a column as the wrong type is an error naming the column, not a wrong value.
        let mismatch = #expect(throws: PostgresError.self) { _ = try connection.query("SELECT 'x'::text AS label") { try $0.int64(0) } }
        #expect(mismatch?.message.contains("label") == true)
        let null = #expect(throws: PostgresError.self) { _ = try connection.query("SELECT NULL::text") { try $0.string(0) } }
        #expect(null?.message.contains("NULL") == true)
    }

    @Test func anUnreachableServerOrAWrongPasswordIsAClearErrorWithoutThePassword() throws {
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

    @Test func transactionsCommitOrRollBackAndNestedOnesAreSavepoints() throws {
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

    @Test func notificationsReachAListeningConnectionOnlyWhenTheirTransactionCommits() throws {
        let database = try PostgresServer.database()
        let listener = try PostgresConnection(url: database.url)
        let sender = try PostgresConnection(url: database.url)
        try listener.listen("tenant changes")
        #expect(try listener.notifications(waitingUpTo: .milliseconds(50)).isEmpty)
        try? sender.transaction {
            try sender.run("SELECT pg_notify($1, $2)", [.text("tenant changes"), .text("rolled back")])
            throw PostgresError(message: "abandoned", server: sender.server)
        }
        try sender.transaction {
            try sender.run("SELECT pg_notify($1, $2)", [.text("tenant changes"), .text("acme:42")])
            try sender.run("SELECT pg_notify($1, $2)", [.text("other channel"), .text("unheard")])
        }
        var received: [PostgresNotification] = []
        // Waits for the one notification that must come; the bound is on attempts, not time.
        for _ in 0..<100 where received.isEmpty {
            received += try listener.notifications(waitingUpTo: .seconds(1))
        }
        #expect(received.map(\.payload) == ["acme:42"])
        #expect(received.first?.channel == "tenant changes")
    }
}
