import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// A centre and its branch offices as an operator runs them: a centre `rapportd` serving tenant
/// `acme`, branch `rapportd`s replicating it (`--upstream`, with a credential from `rapportctl
/// branch enroll`), and `rapport` device homes enrolled at the centre or through a branch. Every
/// part is a real process on loopback with real TLS (each server's development certificate);
/// users, roles, devices and branches are made with `rapportctl` at the centre.
///
/// Servers can be stopped (gracefully or killed) and started again on the same port, so a
/// partition and a recovery are what a branch would see in the field. The stores can be read
/// beside the running servers, for what each replica holds byte for byte.
final class BranchTopology {
    static let tenant = "acme"
    /// The tenant's admin, made with it.
    static let admin = "anna@acme.example"

    let dir: TemporaryDirectory
    let centreData: String
    /// `rapportctl` on the centre's data directory.
    let ctl: Ctl
    private(set) var centre: ServerProcess?
    /// The centre's port, kept across restarts: the branches' `--upstream` names it. Outside the
    /// kernel's ephemeral range (`LoopbackPort.stable`), so nothing else takes it while it is down.
    private(set) var centrePort = 0
    private var centreStarts = 0
    private(set) var branches: [Branch] = []
    let rapport = ServerProcess.defaultBinary(named: "rapport")
    /// Given to every `rapportd` the topology starts (`--log-level trace`, `--metrics ...`).
    let serverArguments: [String]

    /// A branch office: its credential, data directory and `rapportd`.
    final class Branch {
        let name: String
        /// The id `rapportctl branch enroll` gave it, as `branch list` and `revoke` take it.
        let id: String
        let data: String
        let credential: String
        /// `rapportctl` on the branch's data directory.
        let ctl: Ctl
        fileprivate(set) var process: ServerProcess?
        /// Kept across restarts, and outside the kernel's ephemeral range (`LoopbackPort.stable`).
        fileprivate(set) var port: Int
        fileprivate var starts = 0

        init(name: String, id: String, data: String, credential: String) throws {
            self.name = name
            self.id = id
            self.data = data
            self.credential = credential
            ctl = Ctl(data: data)
            port = try LoopbackPort.stable()
        }

        /// The branch's own development CA, which its devices trust.
        var ca: String { data + "/tls/ca.pem" }
        var store: String { data + "/tenants/\(BranchTopology.tenant).sqlite" }
    }

    /// Creates the tenant with its admin and `users` (e-mail, role, team), and starts the centre.
    init(users: [(email: String, role: String, team: String?)] = [], serverArguments: [String] = []) throws {
        dir = try TemporaryDirectory()
        // A connection has 60 s, not 10, for its handshake and Hello: beside the other suites a
        // loaded machine stalled a device's session start past 10 s. No test here is about it.
        self.serverArguments = ["--handshake-timeout", "60"] + serverArguments
        centreData = dir.path("centre")
        ctl = Ctl(data: centreData)
        try ctl.ok(["tenant", "create", Self.tenant, "--name", "Acme Corp"])
        try ctl.ok(["user", "add", "--tenant", Self.tenant, "--email", Self.admin, "--name", "Anna", "--role", "admin"])
        for user in users {
            try ctl.ok(["user", "add", "--tenant", Self.tenant, "--email", user.email, "--name", user.email, "--role", user.role]
                       + (user.team.map { ["--team", $0] } ?? []))
        }
        try startCentre()
    }

    var centreCA: String { centreData + "/tls/ca.pem" }
    var centreStore: String { centreData + "/tenants/\(Self.tenant).sqlite" }
    var centreLog: String { dir.path("centre-\(max(centreStarts - 1, 0)).log") }

    /// Starts the centre, on the port it had before when it ran already. The scheduled rule pass
    /// is off: its writes would make what each replica holds depend on timing.
    func startCentre() throws {
        precondition(centre == nil, "the centre runs already")
        if centrePort == 0 { centrePort = try LoopbackPort.stable() }
        let port = ["--port", "\(centrePort)"]
        let started = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: centreData,
                                              arguments: ["--rules-interval", "0", "--no-dev-tenant"] + port + serverArguments,
                                              logFile: dir.path("centre-\(centreStarts).log"))
        centreStarts += 1
        centre = started
        centrePort = started.port
    }

    /// Stops the centre: SIGTERM (a graceful stop) or, with `kill`, SIGKILL (a crash).
    func stopCentre(kill: Bool = false) {
        guard let centre else { return }
        if kill { centre.kill() } else { centre.stop() }
        self.centre = nil
    }

    /// Registers a branch with `rapportctl branch enroll` (for `users`, or the whole tenant when
    /// `nil`) and starts it with the credential.
    @discardableResult
    func addBranch(_ name: String, users: [String]? = nil) throws -> Branch {
        let credential = dir.path("\(name).credential.json")
        let enrolled = try ctl.ok(["branch", "enroll", "--tenant", Self.tenant, "--name", name, "--out", credential, "--json"]
                                  + (users.map { ["--users", $0.joined(separator: ",")] } ?? []))
        let id = try #require((enrolled.json as? [String: Any])?["id"] as? String, "\(enrolled.output)")
        let branch = try Branch(name: name, id: id, data: dir.path("branch-\(name)"), credential: credential)
        branches.append(branch)
        try start(branch)
        return branch
    }

    /// Starts a branch's `rapportd`: the first time with its credential, later from the copy it
    /// keeps (as an operator restarts it), on the port it had.
    func start(_ branch: Branch) throws {
        precondition(branch.process == nil, "branch \(branch.name) runs already")
        var arguments = ["--upstream", "127.0.0.1:\(centrePort)", "--upstream-ca", centreCA, "--rules-interval", "0"]
        if branch.starts == 0 { arguments += ["--upstream-credential", branch.credential] }
        arguments += ["--port", "\(branch.port)"]
        arguments += serverArguments
        let started = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: branch.data, arguments: arguments,
                                              logFile: dir.path("\(branch.name)-\(branch.starts).log"))
        branch.starts += 1
        branch.process = started
        branch.port = started.port
    }

    func stop(_ branch: Branch) {
        branch.process?.stop()
        branch.process = nil
    }

    /// Stops every server (branches first).
    func stopAll() {
        for branch in branches { stop(branch) }
        stopCentre()
    }

    // MARK: Devices

    /// A device of `user` made with `rapport init --enroll`, with a code made at the centre,
    /// enrolled at `branch` (the branch passes the enrollment on to the centre) or at the centre.
    func enroll(_ name: String, user: String, at branch: Branch?) throws -> FieldDevice {
        let ticket = try ctl.ok(["device", "enroll", "--tenant", Self.tenant, "--user", user, "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String, "\(ticket.output)")
        let home = dir.path("devices/\(name)")
        let (port, ca) = branch.map { ($0.port, $0.ca) } ?? (centrePort, centreCA)
        let initialized = try CLI(binary: rapport).run(["init", "--home", home, "--server", "127.0.0.1:\(port)", "--tenant", Self.tenant,
                                                        "--enroll", code, "--ca", ca, "--name", name, "--json"])
        guard initialized.status == 0, let id = (initialized.json as? [String: Any])?["device_id"] as? String else {
            throw BenchError("rapport init \(name) at \(branch?.name ?? "the centre") failed (\(initialized.status)): \(initialized.error)")
        }
        return FieldDevice(name: name, id: id, home: home, cli: CLI(binary: rapport, fixed: ["--home", home]))
    }

    /// Points a device at another server, as a rep visiting another office does:
    /// `rapport server HOST:PORT --ca CA`.
    func move(_ device: FieldDevice, to branch: Branch?) throws {
        let moved = try device.cli.run(["server", "127.0.0.1:\(branch?.port ?? centrePort)", "--ca", branch?.ca ?? centreCA])
        guard moved.status == 0 else { throw BenchError("rapport server for \(device.name) failed (\(moved.status)): \(moved.error)") }
    }

    // MARK: What each server says and holds

    /// `rapportctl stats acme --json` on a branch's data directory (`nil`: the centre's).
    func stats(_ branch: Branch? = nil) throws -> [String: Any] {
        let result = try (branch?.ctl ?? ctl).ok(["stats", Self.tenant, "--json"])
        guard let stats = result.json as? [String: Any] else { throw BenchError("stats --json printed \(result.output)") }
        return stats
    }

    /// The `upstream` object of a branch's stats: its link as its `rapportd` last wrote it
    /// (about once a second, the first time a second after it started).
    func link(_ branch: Branch) throws -> [String: Any] {
        guard let link = try stats(branch)["upstream"] as? [String: Any] else {
            throw BenchError("branch \(branch.name) reports no upstream link (yet)")
        }
        return link
    }

    /// Records of `type` a server holds, by stats.
    func count(_ type: String, at branch: Branch? = nil) throws -> Int {
        (try stats(branch)["records"] as? [String: Any])?[type] as? Int ?? 0
    }

    /// Whether a branch's link is up with nothing waiting to go up and nothing left to pull.
    func isSettled(_ branch: Branch) throws -> Bool {
        let link = try link(branch)
        return link["connected"] as? Bool == true && link["waiting"] as? Int == 0 && link["behind"] as? Int == 0
    }

    /// Waits until every running branch is settled.
    func settle(within limit: Duration = .seconds(30)) async throws {
        for branch in branches where branch.process != nil {
            try await waitFor("branch \(branch.name) to be connected with nothing waiting or behind", within: limit,
                              describe: { self.describe(branch) }) {
                try self.isSettled(branch) ? true : nil
            }
        }
    }

    /// A branch's link and the records it holds dirty (not yet taken by the centre), for a
    /// failure's message.
    func describe(_ branch: Branch) -> String {
        let link = (try? link(branch)).map { "\($0)" } ?? "no link status"
        let dirty = (try? { () throws -> [RecordState] in
            let store = try ReplicaStore(path: branch.store, options: .crm(role: .authority))
            defer { store.close() }
            return try store.dirtyRecords()
        }()).map { "\($0.count) dirty: \($0)" } ?? "store unreadable"
        return "link \(link); \(dirty)"
    }

    /// The logs of every server, for a failure's message.
    func logs() -> String {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir.url.path)) ?? []).filter { $0.hasSuffix(".log") }.sorted()
        return files.map { file in
            let text = (try? String(contentsOfFile: dir.path(file), encoding: .utf8)) ?? ""
            return "== \(file)\n" + text.split(separator: "\n").suffix(40).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Every record of the store at `path` as it is stored (vector and state bytes), with the
    /// store's conflict log. Opened as its owner opens it: the servers' stores as the server
    /// does (beside the running server, as `rapportctl` does), a device's as `rapport` does.
    static func contents(ofStore path: String, server: Bool) throws -> StoreContents {
        let store = try ReplicaStore(path: path, options: server ? .crm(role: .authority) : .crm())
        defer { store.close() }
        let records = try store.encodedChanges(after: 0, limit: .max).map(\.record)
        return StoreContents(replicaID: store.replicaID.rawValue,
                             records: Dictionary(uniqueKeysWithValues: records.map { ($0.id, $0) }),
                             states: Dictionary(uniqueKeysWithValues: try store.changes(after: 0, limit: .max).map { ($0.state.id, $0.state) }),
                             conflicts: try store.conflicts(status: nil))
    }

    func centreContents() throws -> StoreContents { try Self.contents(ofStore: centreStore, server: true) }
    func contents(of branch: Branch) throws -> StoreContents { try Self.contents(ofStore: branch.store, server: true) }
    func contents(of device: FieldDevice) throws -> StoreContents { try Self.contents(ofStore: device.home + "/replica.sqlite", server: false) }
}

/// What one store holds.
struct StoreContents {
    var replicaID: String
    var records: [UUID: EncodedRecord]
    var states: [UUID: RecordState]
    var conflicts: [ConflictEntry]

    /// The live records of `type` whose `field` holds `value`.
    func live(_ type: String, where field: String, is value: String) -> [RecordState] {
        states.values.filter { $0.type == type && !$0.isDeleted && $0.values[field] == .text(value) }
    }

    func liveCount(_ type: String) -> Int { states.values.filter { $0.type == type && !$0.isDeleted }.count }
}

/// A `rapport` device home, run as a rep runs it.
struct FieldDevice {
    let name: String
    /// Its replica id (the device id the registry knows).
    let id: String
    let home: String
    let cli: CLI

    /// Creates a record and returns its id.
    func create(_ type: String, _ assignments: [String]) throws -> UUID {
        try #require(UUID(uuidString: try cli.create(type, assignments)))
    }

    /// Updates a record with `put TYPE ID field=value...`.
    func update(_ type: String, _ id: UUID, _ assignments: [String]) throws {
        let result = try cli.run(["put", type, id.uuidString.lowercased()] + assignments)
        guard result.status == 0 else { throw BenchError("\(name): put \(type) \(id) \(assignments) failed (\(result.status)): \(result.error)") }
    }

    /// `rapport sync --json` once (one attempt: a test polls rather than waits on retries).
    func sync() throws -> ToolResult {
        try cli.run(["sync", "--json", "--attempts", "1", "--no-progress"])
    }

    /// A sync that must succeed: its report (pushed, pulled, rejected, conflicts...).
    @discardableResult
    func synced() throws -> [String: Int] {
        let result = try sync()
        guard result.status == 0, let report = result.json as? [String: Any] else {
            throw BenchError("\(name): rapport sync failed (\(result.status)): \(result.error)")
        }
        return report.compactMapValues { $0 as? Int }
    }

    /// The `fields` of a record as `get --json` prints them; `nil` when the device does not
    /// hold it (exit 2).
    func fields(of id: UUID) throws -> [String: Any]? {
        let result = try cli.run(["get", id.uuidString.lowercased(), "--json"])
        if result.status == 2 { return nil }
        guard result.status == 0, let record = result.json as? [String: Any] else {
            throw BenchError("\(name): rapport get \(id) failed (\(result.status)): \(result.error)")
        }
        return record["fields"] as? [String: Any]
    }

    /// The conflict log as `conflicts --all --json` prints it.
    func conflicts() throws -> [[String: Any]] {
        let result = try cli.run(["conflicts", "--all", "--json"])
        guard result.status == 0, let entries = result.json as? [[String: Any]] else {
            throw BenchError("\(name): rapport conflicts failed (\(result.status)): \(result.error)")
        }
        return entries
    }
}

extension Ctl {
    /// Runs `rapportctl` and requires exit 0.
    @discardableResult
    func ok(_ arguments: [String]) throws -> ToolResult {
        let result = try run(arguments)
        guard result.status == 0 else {
            throw BenchError("rapportctl \(arguments.joined(separator: " ")) exited \(result.status): \(result.error)")
        }
        return result
    }
}

/// Polls `condition` every 100 ms until it returns a value, for at most `limit`: a bound
/// against hanging, never a timing expectation. `describe` says what was seen last, for the
/// failure; an error thrown by `condition` counts as not yet.
@discardableResult
func waitFor<T>(_ what: String, within limit: Duration = .seconds(30), describe: () -> String = { "" },
                _ condition: () async throws -> T?) async throws -> T {
    let deadline = ContinuousClock.now.advanced(by: limit)
    var lastError: (any Error)?
    while true {
        do {
            if let value = try await condition() { return value }
            lastError = nil
        } catch {
            lastError = error
        }
        guard ContinuousClock.now < deadline else {
            throw BenchError("gave up after \(limit) waiting for \(what); last seen: \(describe())\(lastError.map { "; last error: \($0)" } ?? "")")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}
