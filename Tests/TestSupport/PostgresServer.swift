import Foundation
import Postgres
import Synchronization

/// A real PostgreSQL server for tests and benchmarks, and a fresh database on it per test.
///
/// `RAPPORT_POSTGRES_URL` names a server to use (a superuser's URL; CI or a developer's own).
/// Without it, the first use starts a throwaway server for this process from Debian's
/// `postgresql` package: its own data directory under the temp folder, listening on loopback
/// only, trust authentication for its one user, durability off (it lives as long as the
/// tests), stopped and removed when the process exits. initdb refuses to run as root, so as
/// root the server runs as the `postgres` user. A missing installation fails the test with how
/// to fix it: no test is skipped because a server is missing.
public final class PostgresServer: Sendable {
    /// A superuser's URL for the server's `postgres` database.
    public let url: String
    private let stop: (@Sendable () -> Void)?

    private static let started = Mutex<Result<PostgresServer, PostgresServerError>?>(nil)

    /// The server of this process, started on first use.
    public static func shared() throws -> PostgresServer {
        try started.withLock { server in
            if let server { return try server.get() }
            let result = Result { try start() }.mapError { $0 as? PostgresServerError ?? PostgresServerError("\($0)") }
            server = result
            if case .success = result { atexit { PostgresServer.stopShared() } }
            return try result.get()
        }
    }

    /// A new, empty database on the shared server, dropped when the value goes away.
    public static func database() throws -> PostgresDatabase {
        try PostgresDatabase(on: shared())
    }

    private init(url: String, stop: (@Sendable () -> Void)?) {
        self.url = url
        self.stop = stop
    }

    /// `url` with another database name.
    public func url(database: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        components.path = "/" + database
        return components.string ?? url
    }

    private static func stopShared() {
        if case .success(let server)? = started.withLock({ $0 }) { server.stop?() }
    }

    private static func start() throws -> PostgresServer {
        if let given = ProcessInfo.processInfo.environment["RAPPORT_POSTGRES_URL"], !given.isEmpty {
            return PostgresServer(url: given, stop: nil)
        }
        guard let bin = serverBinaries() else {
            throw PostgresServerError("no PostgreSQL server found (initdb, pg_ctl): install Debian's postgresql package (apt-get install postgresql), or set RAPPORT_POSTGRES_URL to a server's superuser URL")
        }
        let root = NSTemporaryDirectory() + "rapport-postgres-\(UUID().uuidString)"
        let data = root + "/data"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let runAs: [String] = geteuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        if geteuid() == 0 {
            guard let account = getpwnam("postgres") else {
                throw PostgresServerError("running as root and there is no postgres user to run the server as")
            }
            guard chown(root, account.pointee.pw_uid, account.pointee.pw_gid) == 0 else {
                throw PostgresServerError("cannot give \(root) to the postgres user: \(String(cString: strerror(errno)))")
            }
        }
        try run(runAs + [bin + "/initdb", "-D", data, "-U", "rapport", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"], what: "initdb")
        let port = try LoopbackPort.free()
        let options = "-c listen_addresses=127.0.0.1 -p \(port) -k \(root) -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        try run(runAs + [bin + "/pg_ctl", "-D", data, "-l", root + "/server.log", "-w", "-t", "120", "-o", options, "start"], what: "pg_ctl start")
        let url = "postgresql://rapport@127.0.0.1:\(port)/postgres"
        return PostgresServer(url: url) {
            _ = try? run(runAs + [bin + "/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], what: "pg_ctl stop")
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    /// Where Debian's `postgresql` package put the server's programs, the newest version first.
    private static func serverBinaries() -> String? {
        let base = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        return versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
            .map { base + "/" + $0 + "/bin" }
            .first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
    }

    /// Runs a server program and waits for it, its output in a file. The server pg_ctl starts
    /// inherits the program's descriptors: it gets the file and nothing else (`ChildProcess`).
    private static func run(_ command: [String], what: String) throws {
        let output = NSTemporaryDirectory() + "rapport-postgres-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let child: ChildProcess
        do {
            child = try ChildProcess(command[0], Array(command.dropFirst()), standardOutput: .file(output), standardError: .output)
        } catch {
            throw PostgresServerError("\(what): \(error)")
        }
        guard child.waitForExit(within: .seconds(600)) else {
            child.send(SIGKILL)
            throw PostgresServerError("\(what) did not end within 10 minutes")
        }
        let code = child.terminationStatus
        guard !child.endedBySignal, code == 0 else {
            let said = String(decoding: FileManager.default.contents(atPath: output) ?? Data(), as: UTF8.self)
            throw PostgresServerError("\(what) failed (\(child.endedBySignal ? "signal" : "status") \(code)): \(said)")
        }
    }
}

/// A database of its own on the test server, so tests running in parallel never meet; dropped
/// (with any connection still open to it) when the value goes away.
public final class PostgresDatabase: Sendable {
    public let name: String
    /// A superuser's URL for this database.
    public let url: String
    private let server: PostgresServer

    init(on server: PostgresServer) throws {
        self.server = server
        name = "rapport_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        url = server.url(database: name)
        let admin = try PostgresConnection(url: server.url)
        try admin.run("CREATE DATABASE \(PostgresConnection.quotedIdentifier(name))")
    }

    deinit {
        let admin = try? PostgresConnection(url: server.url)
        _ = try? admin?.run("DROP DATABASE IF EXISTS \(PostgresConnection.quotedIdentifier(name)) WITH (FORCE)")
    }
}

/// Why a test server could not be had.
public struct PostgresServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// What a test's registry or stores run on: SQLite files, or a database of the test's own on
/// the test PostgreSQL server (`PostgresServer`). Suites of code that serves both, with the
/// same SQL, run on both.
public enum DatabaseBackend: String, CaseIterable, Sendable {
    case sqlite
    case postgres
}
