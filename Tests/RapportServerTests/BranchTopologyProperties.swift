import Access
import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// Branch offices under faults, as real processes: a centre `rapportd`, two branch `rapportd`s
/// (`--upstream` the centre, each with a credential from `rapportctl branch enroll`), two devices
/// enrolled through each branch with codes made at the centre, and one device at the centre.
/// The devices are in-process clients over their own store files, talking TLS on loopback.
///
/// Each case makes random edits on every device (creates, field writes and clears, counter
/// increments, reassignments, deletes, restores; and, now and then, a write of ben's at a branch
/// cut off from the centre to an account the admin gives away there meanwhile), while servers
/// are killed with SIGKILL (at rest, in the middle of a device's sync, or just after one, while
/// a branch's link pushes), branches are stopped with SIGTERM, and everything is restarted on
/// the same data directory and port at random.
/// Then everything heals: servers up, rounds of device syncs until nothing moves and each
/// branch's `rapportctl stats` shows its link connected with nothing waiting and nothing
/// behind. Then, with the servers stopped:
///
/// - the centre, both branches and every admin's device hold the same record states, and a
///   rep's device holds exactly the live records the rep may read, with the centre's values
///   but for the fields the rep's role hides (a record its own server refused a write of
///   stays on the device as written, by design, and is left out);
/// - every write a device made is in the centre's state, was overwritten by a later write
///   made on a device that had seen it, or is in a conflict log (lost to a concurrent write, or
///   refused with the reason); a write kept in the state under a concurrent delete is logged too;
/// - the admin's counter increments add up (ben's are left out: see `BranchRefusalTests`);
/// - nothing waits to be pushed anywhere, no server exited on its own, and every one stopped
///   on SIGTERM.
///
/// Users: anna, an admin, and ben, a rep (team north, alone in it), whose device at the second
/// branch (and, in half the cases, one at the first) works within his scope: the centre checks
/// what a branch relays for him against his rights, and the branch puts back what it refuses.
/// The second branch serves everyone, or in half the cases anna and ben by name (it then holds
/// what either reads, through the centre's scoped pull).
///
/// `BranchRefusalTests` and `BranchScopeTests` below go through what the random cases reach
/// rarely, step by step, on the same set-up.
///
/// A failure prints its seed; `RAPPORT_SEED=<seed> swift test --filter BranchTopologyProperties`
/// replays that case (the same choices; the processes' timing is the machine's, so a replay is
/// the same scenario, not always the same interleaving). `RAPPORT_TOPOLOGY_CASES` sets how many
/// cases run (3 by default: each starts three servers and restarts them many times), and
/// `RAPPORT_TEST_LOG=1` has the servers log at debug level (their logs' tails are printed on
/// failure in any case) and prints every case's steps; `RAPPORT_TOPOLOGY_KEEP=DIR` keeps a
/// failed case's stores and logs in DIR.
@Suite(.serialized, .timeLimit(.minutes(20)), .ownThread) struct BranchTopologyProperties {
    @Test func branchesAndDevicesConvergeThroughCutsAndKillsAndLoseNoWrite() async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try await TopologyScenario(seed: seed).run()
            return
        }
        let count = ProcessInfo.processInfo.environment["RAPPORT_TOPOLOGY_CASES"].flatMap(Int.init) ?? 3
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<count {
            let seed = UInt64.random(in: 0 ... .max, using: &rng)
            try await TopologyScenario(seed: seed).run()
        }
    }
}

/// The centre refusing what a branch relayed, step by step (the random cases reach it rarely):
/// ben writes to his account at a branch cut off from the centre (a new value or the one it
/// has, or he adds a contact to it), anna's device there writes to it too in one variant, and
/// the admin at the centre gives the account to anna meanwhile. The centre refuses the relayed
/// record, the branch puts it back, and then everything must heal as in the random cases: the
/// put-back taken by the centre, nothing left waiting, every replica alike, and every write in
/// the state or in a conflict log.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct BranchRefusalTests {
    enum Variant: String, CaseIterable, CustomStringConvertible {
        case field, sameValue, fieldsOfTwoDevices, created, counter
        var description: String { rawValue }
    }

    @Test(arguments: Variant.allCases)
    func whatTheCentreRefusesIsPutBackAndEverythingHeals(_ variant: Variant) async throws {
        guard variant == .counter else { return try await run(variant) }
        // A counter keeps each replica's contribution for good: the branch cannot take ben's
        // increment back, so it keeps his points and the record waits there to go up, and any
        // later write to the account through that branch carries the increment and is refused
        // too (the refusal it logs names another write than ben's).
        await withKnownIssue("a counter increment the centre refuses stays at the branch: the branch and the centre never agree on the account again") {
            try await run(variant)
        }
    }

    func run(_ variant: Variant) async throws {
        let scenario = try TopologyScenario(seed: 1)
        scenario.isRandomCase = false
        // The counter never converges (the known issue); the others took over 30 s beside the
        // other suites on 2 cores, a round of syncs through the branches at 15 s.
        scenario.healingDeadline = .seconds(variant == .counter ? 10 : 90)
        do {
            try await scenario.refusedAtTheCentre(variant)
        } catch {
            if variant != .counter { scenario.report(error) }
            scenario.shutDown()
            throw error
        }
        if !scenario.problems.isEmpty { scenario.report(nil) }
        scenario.shutDown()
    }
}

/// A branch of ben alone holds his scope: an account given away at the centre leaves the branch
/// (the centre evicts it there), and must leave ben's devices at the branch too.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct BranchScopeTests {
    @Test func aRecordThatLeavesTheScopeOfABranchLeavesItsDevices() async throws {
        // The branch purges what the centre evicts; the eviction is queued for the devices that
        // hold the record and goes with their next pull.
        let scenario = try TopologyScenario(seed: 2)
        scenario.isRandomCase = false
        // A round of syncs through the branch took 20 s beside the other suites on 2 cores.
        scenario.healingDeadline = .seconds(90)
        defer { scenario.shutDown() }
        try await scenario.givenAwayFromABranchOfBen()
    }
}

extension TopologyScenario {
    func givenAwayFromABranchOfBen() async throws {
        try await setUp(secondBranch: .benOnly)
        let admin = 0
        let bens = [3, 4]  // b2-ben2, b2-ben
        let id = randomUUID()
        try local(admin, id) { store in _ = try store.create("account", id: id, ["name": .text("North Ltd"), "owner": .text(Self.ben)]) }
        records.append(id)
        guard case .success = await sync(admin) else { throw BenchError("the admin cannot sync") }
        let deadline = ContinuousClock.now + Self.roundThroughABranch
        for ben in bens {
            while try devices[ben].client.local({ try $0.record(id) }) == nil {
                guard ContinuousClock.now < deadline else { throw BenchError("the account never reached \(devices[ben].name)") }
                try await Task.sleep(for: .milliseconds(100))
                await sync(ben)
            }
        }
        try local(admin, id) { store in _ = try store.update(id, ["owner": .text(Self.anna)]) }
        note("centre-anna gives the account to anna")
        await sync(admin)
        try await heal()
        try checkEverything()
    }

    func refusedAtTheCentre(_ variant: BranchRefusalTests.Variant) async throws {
        try await setUp(secondBranch: .everyone)
        let (admin, colleague, ben) = (0, 3, 4)  // centre-anna, b2-anna, b2-ben
        let id = randomUUID()
        try local(admin, id) { store in
            _ = try store.create("account", id: id, ["name": .text("North Ltd"), "industry": .text("Engines"), "owner": .text(Self.ben)])
        }
        records.append(id)
        guard case .success = await sync(admin) else { throw BenchError("the admin cannot sync") }
        let deadline = ContinuousClock.now + Self.roundThroughABranch
        while try devices[ben].client.local({ try $0.record(id) }) == nil {
            guard ContinuousClock.now < deadline else { throw BenchError("the account never reached ben's device") }
            try await Task.sleep(for: .milliseconds(100))
            await sync(ben)
        }
        await sync(colleague)
        centre.kill()
        note("SIGKILL centre")
        switch variant {
        case .field, .fieldsOfTwoDevices:
            try local(ben, id) { store in _ = try store.update(id, ["industry": .text("Looms")]) }
            note("b2-ben writes [industry]")
        case .sameValue:
            // The value it has: the put-back must still take ben's write out of the state.
            try local(ben, id) { store in _ = try store.update(id, ["industry": .text("Engines")]) }
            note("b2-ben writes [industry] to the value it has")
        case .created:
            let contact = randomUUID()
            try local(ben, contact) { store in
                _ = try store.create("contact", id: contact, ["last_name": .text("Lovelace"), "account": .text(id.uuidString)])
            }
            records.append(contact)
            note("b2-ben creates a contact of it")
        case .counter:
            try local(ben, id) { store in _ = try store.increment(id, field: "loyalty_points", by: 7) }
            increments[id, default: 0] += 7
            note("b2-ben adds 7 points")
        }
        guard case .success(let accepted) = await sync(ben), accepted.rejected == 0 else { throw BenchError("the branch did not take ben's write") }
        if variant == .fieldsOfTwoDevices {
            try local(colleague, id) { store in _ = try store.update(id, ["address": .text("1 Quay Street")]) }
            note("b2-anna writes [address]")
            await sync(colleague)
        }
        // The branch stays away until the centre has the account given away.
        let branch = devices[ben].node
        stop(branch)
        note("SIGTERM \(branch.name)")
        try local(admin, id) { store in _ = try store.update(id, ["owner": .text(Self.anna)]) }
        note("centre-anna gives the account to anna")
        try centre.start()
        note("start centre")
        guard case .success = await sync(admin) else { throw BenchError("the admin cannot sync") }
        try branch.start()
        note("start \(branch.name)")
        try await heal()
        try checkEverything()
        let store = try ReplicaStore(path: branch.data + "/tenants/acme.sqlite", options: .crm(role: .authority))
        defer { store.close() }
        if try !store.conflicts(status: nil).contains(where: { $0.conflict.kind == .rejected }) {
            fail("\(branch.name) logged no refusal: the centre did not refuse what it relayed")
        }
    }
}

/// One `rapportd` of the topology: its data directory, its port (the same across restarts) and
/// the process while it runs.
final class TopologyNode {
    let name: String
    let data: String
    let ctl: Ctl
    let logDirectory: String
    /// Arguments of every start after the first (the credential is kept in the data directory).
    var arguments: [String] = []
    /// Arguments of the first start only.
    var firstArguments: [String] = []
    private(set) var port: Int?
    private(set) var process: ServerProcess?
    private(set) var starts = 0
    private(set) var logs: [String] = []
    /// The step at which it went down, while it is down.
    var downSince: Int?

    init(name: String, data: String, logDirectory: String) throws {
        self.name = name
        self.data = data
        self.logDirectory = logDirectory
        ctl = Ctl(data: data)
        // Chosen outside the kernel's ephemeral range, so that no other test's server or
        // connection takes it while this node is down between restarts.
        port = try LoopbackPort.stable()
    }

    var isUp: Bool { process != nil }
    var caPath: String { data + "/tls/ca.pem" }

    /// Starts the server on its port. A port just freed by a killed process is taken again at
    /// once (the server sets SO_REUSEADDR), but a start is retried a few times before it counts
    /// as a failure.
    func start() throws {
        precondition(process == nil)
        var level = ["--log-level", ProcessInfo.processInfo.environment["RAPPORT_TEST_LOG"] == nil ? "info" : "debug"]
        if let port { level += ["--port", String(port)] }
        let arguments = level + (starts == 0 ? firstArguments : self.arguments)
        var failure: (any Error)?
        for attempt in 0..<5 {
            let log = "\(logDirectory)/\(name)-\(starts)-\(attempt).log"
            logs.append(log)
            do {
                let started = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data, arguments: arguments, logFile: log)
                process = started
                port = started.port
                downSince = nil
                starts += 1
                return
            } catch {
                failure = error
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        throw BenchError("\(name) does not start again: \(failure.map { "\($0)" } ?? "?")")
    }

    /// SIGKILL: no shutdown, no last batch, no status file.
    func kill() {
        process?.kill()
        process = nil
    }

    /// SIGTERM: the graceful stop (the link ends after the batch in hand). Returns `false` when
    /// the server was still running 20 s later; it is then killed.
    @discardableResult
    func stop() -> Bool {
        guard let running = process?.process else { return true }
        process = nil
        guard running.isRunning else { return true }
        running.terminate()
        let deadline = Date().addingTimeInterval(20)
        while running.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        guard running.isRunning else { return true }
        running.send(SIGKILL)
        _ = running.waitForExit(within: .seconds(60))
        return false
    }

    /// Whether the process said to be up has exited on its own.
    var exitedOnItsOwn: Bool { process.map { !$0.process.isRunning } ?? false }

    /// The last lines of its logs, for a failure report.
    func logTail(lines: Int = 25) -> String {
        logs.suffix(3).map { path -> String in
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            let tail = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
            return "--- \(URL(fileURLWithPath: path).lastPathComponent)\n\(tail)"
        }.joined(separator: "\n")
    }
}

/// A device of the topology: an in-process client with its own store, at the centre or a branch.
final class TopologyDevice {
    let name: String
    let user: String
    let node: TopologyNode
    let client: RapportClient

    init(name: String, user: String, node: TopologyNode, client: RapportClient) {
        self.name = name
        self.user = user
        self.node = node
        self.client = client
    }

    var isAdmin: Bool { user == TopologyScenario.anna }
}

final class TopologyScenario {
    /// How long a record or an enrollment may take to get through a branch: a bound on waiting
    /// only, since a round through a branch took 15-20 s beside the other suites on 2 cores.
    static let roundThroughABranch: Duration = .seconds(90)
    static let anna = "anna@acme.example"
    static let ben = "ben@acme.example"

    /// A register write as a device made it, and whether a later write on the same field was
    /// made by a device that had seen it (losing it then is the user's intent).
    struct TrackedWrite {
        var writer: Int
        var record: UUID
        var field: String
        var dot: Dot
        var value: FieldValue
        var overwritten = false
    }

    struct ScenarioFailure: Error, CustomStringConvertible {
        var seed: UInt64
        var error: any Error
        var description: String { "seed \(seed): \(error)" }
    }

    let seed: UInt64
    var rng: SeededGenerator
    let dir: TemporaryDirectory
    var nodes: [TopologyNode] = []
    var devices: [TopologyDevice] = []
    var records: [UUID] = []
    var writes: [TrackedWrite] = []
    /// Increments each device made, per record, to check that counters add up.
    var increments: [UUID: Int64] = [:]
    /// What happened, step by step, for a failure report.
    var history: [String] = []
    var syncFailures = 0
    var syncs = 0
    var kills = 0
    var problems: [String] = []
    var stepNumber = 0
    var secondBranch = SecondBranch.everyone
    /// How long healing may take before the case fails.
    var healingDeadline: Duration = .seconds(90)
    /// A case of the property test, replayed by its seed; `false` for the tests that go step by
    /// step on the same set-up.
    var isRandomCase = true

    var centre: TopologyNode { nodes[0] }
    var branches: ArraySlice<TopologyNode> { nodes[1...] }

    init(seed: UInt64) throws {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
        dir = try TemporaryDirectory()
    }

    func run() async throws {
        do {
            try await setUp()
            for _ in 0..<Int.random(in: 30...60, using: &rng) { try await step() }
            try await heal()
            try checkEverything()
        } catch {
            report(error)
            shutDown()
            throw ScenarioFailure(seed: seed, error: error)
        }
        if !problems.isEmpty || ProcessInfo.processInfo.environment["RAPPORT_TEST_LOG"] != nil { report(nil) }
        print("BranchTopologyProperties seed \(seed): \(stepNumber) steps, \(writes.count) writes, \(syncs) syncs (\(syncFailures) failed), \(kills) kills; \(history.suffix(3).joined(separator: "; "))")
        shutDown()
    }

    func shutDown() {
        for node in nodes { node.stop() }
    }

    /// Stops `node` with SIGTERM, as an operator would; one that does not stop is a failure.
    func stop(_ node: TopologyNode) {
        if !node.stop() { fail("\(node.name) did not stop within 20 s of SIGTERM:\n\(node.logTail())") }
    }

    /// Records a failed invariant with the seed; the case goes on, so that one run shows all.
    func fail(_ message: String) {
        problems.append(message)
        Issue.record("seed \(seed): \(message)")
    }

    func report(_ error: (any Error)?) {
        let failed = error != nil || !problems.isEmpty
        let replay = isRandomCase ? " (replay: RAPPORT_SEED=\(seed) swift test --filter BranchTopologyProperties)" : ""
        var text = "BranchTopologyProperties seed \(seed) \(failed ? "failed" : "passed")\(replay)\n"
        if let error { text += "error: \(error)\n" }
        // Every step up to the healing, and the last rounds of it.
        let healing = history.firstIndex(of: "heal: everything started") ?? history.endIndex
        let shown = history[..<healing] + (history[healing...].count > 40 ? ["..."] : []) + history[healing...].suffix(40)
        text += "steps:\n" + shown.map { "  \($0)" }.joined(separator: "\n") + "\n"
        for node in nodes { text += "log tail of \(node.name):\n\(node.logTail())\n" }
        // The stores and logs of the case, to look into with sqlite3 and a text editor.
        if failed, let keep = ProcessInfo.processInfo.environment["RAPPORT_TOPOLOGY_KEEP"] {
            let target = keep + "/seed-\(seed)"
            try? FileManager.default.removeItem(atPath: target)
            try? FileManager.default.createDirectory(atPath: keep, withIntermediateDirectories: true)
            try? FileManager.default.copyItem(atPath: dir.url.path, toPath: target)
            text += "stores and logs kept in \(target)\n"
        }
        print(text)
    }

    func note(_ line: String) { history.append(line) }

    // MARK: Set-up

    /// Whom the second branch serves (`rapportctl branch enroll --users`): everyone; anna and
    /// ben by name (it then holds the union of what they read, through the centre's scoped
    /// pull: everything, anna being an admin); or ben alone (it holds his scope, and both its
    /// devices are his).
    enum SecondBranch: String {
        case everyone, annaAndBen, benOnly
    }

    func setUp(secondBranch: SecondBranch? = nil) async throws {
        // Not ben alone yet: what the centre evicts from such a branch stays on its devices
        // (BranchScopeTests), which a random case reaches often.
        self.secondBranch = secondBranch ?? [.everyone, .annaAndBen].randomElement(using: &rng)!
        let centre = try TopologyNode(name: "centre", data: dir.path("centre"), logDirectory: dir.path("."))
        nodes = [centre]
        let ctl = centre.ctl
        for arguments in [["tenant", "create", "acme", "--name", "Acme Corp"],
                          ["user", "add", "--tenant", "acme", "--email", Self.anna, "--name", "Anna", "--role", "admin"],
                          ["user", "add", "--tenant", "acme", "--email", Self.ben, "--name", "Ben", "--role", "rep", "--team", "north"]] {
            let result = try await ctl.run(arguments)
            guard result.status == 0 else { throw BenchError("rapportctl \(arguments.joined(separator: " ")): \(result.error)") }
        }
        try centre.start()
        let upstream = "127.0.0.1:\(centre.port!)"
        for index in 1...2 {
            let credential = dir.path("branch\(index).credential")
            let users: [String] = switch (index, self.secondBranch) {
            case (2, .annaAndBen): ["--users", "\(Self.anna),\(Self.ben)"]
            case (2, .benOnly): ["--users", Self.ben]
            default: []
            }
            let enrolled = try await ctl.run(["branch", "enroll", "--tenant", "acme", "--name", "branch \(index)", "--out", credential] + users)
            guard enrolled.status == 0 else { throw BenchError("branch enroll: \(enrolled.error)") }
            let branch = try TopologyNode(name: "branch\(index)", data: dir.path("branch\(index)"), logDirectory: dir.path("."))
            branch.arguments = ["--upstream", upstream, "--upstream-ca", centre.caPath]
            branch.firstArguments = branch.arguments + ["--upstream-credential", credential]
            try branch.start()
            nodes.append(branch)
        }
        // anna's at the centre; two at each branch: anna's and ben's at the second (both ben's
        // at a branch of ben alone), anna's and, in half the cases, ben's at the first.
        let benAtFirst = Bool.random(using: &rng)
        let plan: [(String, String, TopologyNode)] = [
            ("centre-anna", Self.anna, nodes[0]),
            ("b1-anna", Self.anna, nodes[1]), ("b1-\(benAtFirst ? "ben" : "anna2")", benAtFirst ? Self.ben : Self.anna, nodes[1]),
            self.secondBranch == .benOnly ? ("b2-ben2", Self.ben, nodes[2]) : ("b2-anna", Self.anna, nodes[2]), ("b2-ben", Self.ben, nodes[2]),
        ]
        for (name, user, node) in plan { devices.append(try await enroll(name, user: user, at: node)) }
        note("set up: centre :\(centre.port!), branch1 :\(nodes[1].port!), branch2 :\(nodes[2].port!) serving \(self.secondBranch); devices \(devices.map { "\($0.name)=\($0.client.store.replicaID)" })")

        // A few records to start with, from the centre's admin device.
        let first = devices[0]
        for i in 0..<3 {
            let id = randomUUID()
            try local(0, id) { store in
                _ = try store.create("account", id: id, ["name": .text("account \(i)"), "owner": .text(i == 0 ? Self.ben : Self.anna)])
            }
            records.append(id)
        }
        _ = try? await first.client.sync()
    }

    func configuration(for node: TopologyNode, secret: [UInt8]) -> ClientConfiguration {
        var config = ClientConfiguration(host: "127.0.0.1", port: node.port!, tenant: "acme", secret: secret,
                                         trustRoots: .certificates(.file(node.caPath)), schemaVersion: CRMSchema.version)
        // One attempt: a server that is down is an expected, recorded failure, not a wait.
        config.retry = RetryPolicy(maxAttempts: 1, initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        config.connectTimeout = .seconds(3)
        return config
    }

    /// A device of `user` enrolled at `node` with a code made at the centre (a branch relays
    /// the enrollment), synced once so that it holds its user's rights.
    func enroll(_ name: String, user: String, at node: TopologyNode) async throws -> TopologyDevice {
        let ticket = try await centre.ctl.run(["device", "enroll", "--tenant", "acme", "--user", user, "--json"])
        guard let code = (ticket.json as? [String: Any])?["code"] as? String else { throw BenchError("no enrollment code: \(ticket.error)") }
        let enrollment = try await RapportClient.enroll(configuration: configuration(for: node, secret: []), code: code, deviceName: name)
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"), options: .crm(replicaID: try ReplicaID(enrollment.deviceID)))
        let client = try RapportClient(store: SharedReplicaStore(store, label: name),
                                       configuration: configuration(for: node, secret: enrollment.secret),
                                       logger: ServerFixture.logger("test.\(name)"))
        // The branch knows the device once it adopted the centre's directory (it asks for it
        // before answering the enrollment, and every 2 s).
        let deadline = ContinuousClock.now + Self.roundThroughABranch
        while true {
            do {
                try await client.sync()
                break
            } catch {
                guard ContinuousClock.now < deadline else { throw BenchError("\(name) cannot sync at \(node.name) after enrolling: \(error)") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        return TopologyDevice(name: name, user: user, node: node, client: client)
    }

    // MARK: Random steps

    func randomUUID() -> UUID {
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { bytes in
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0 ... .max, using: &rng) }
        }
        return UUID(uuid: raw)
    }

    func step() async throws {
        stepNumber += 1
        for node in nodes where node.exitedOnItsOwn {
            fail("\(node.name) exited on its own (status \(node.process!.process.terminationStatus)):\n\(node.logTail())")
            node.kill()
            node.downSince = stepNumber
        }
        var roll = Int.random(in: 0..<100, using: &rng)
        // A server down for long is started again: most of the time most of them run.
        if let node = nodes.first(where: { !$0.isUp && stepNumber - ($0.downSince ?? stepNumber) > 8 }) {
            try node.start()
            note("start \(node.name) (down for long)")
            return
        }
        if roll >= 78 && roll < 90 && nodes.allSatisfy(\.isUp) { roll = 0 }
        switch roll {
        case 0..<36:
            try edit(Int.random(in: 0..<devices.count, using: &rng))
        case 36..<38:
            try await contestedWrite()
        case 38..<42:
            // The admin at the centre gives an account to the other user and syncs at once:
            // what ben wrote to it at a branch meanwhile is then refused at the centre, and
            // put back at the branch.
            let accounts = try devices[0].client.local { store in
                try records.compactMap { try store.record($0) }.filter { !$0.isDeleted && $0.type == "account" }
            }
            guard let account = accounts.randomElement(using: &rng) else { return }
            let owner = account.values["owner"] == .text(Self.anna) ? Self.ben : Self.anna
            try local(0, account.id) { store in _ = try store.update(account.id, ["owner": .text(owner)]) }
            note("\(devices[0].name) gives account \(short(account.id)) to \(owner)")
            await sync(0)
        case 42..<64:
            await sync(Int.random(in: 0..<devices.count, using: &rng))
        case 64..<68:
            // A device's server killed while the device syncs with it.
            let index = Int.random(in: 0..<devices.count, using: &rng)
            let node = devices[index].node
            let delay = Int.random(in: 0...40, using: &rng)
            guard node.isUp else {
                await sync(index)
                return
            }
            let client = devices[index].client
            let syncing = Task { try await client.sync() }
            try await Task.sleep(for: .milliseconds(delay))
            node.kill()
            node.downSince = stepNumber
            kills += 1
            let outcome = await syncing.result
            syncs += 1
            if case .failure = outcome { syncFailures += 1 }
            note("\(devices[index].name) syncs; \(node.name) SIGKILLed after \(delay) ms: \(describe(outcome))")
        case 68..<74:
            // SIGKILL, often just after a device's sync, while a branch's link is at work.
            let candidates = nodes.filter(\.isUp)
            guard let node = candidates.randomElement(using: &rng) else { return }
            let delay = Int.random(in: 0...60, using: &rng)
            try await Task.sleep(for: .milliseconds(delay))
            node.kill()
            node.downSince = stepNumber
            kills += 1
            note("SIGKILL \(node.name) (after \(delay) ms)")
        case 74..<78:
            // A branch stopped: its link ends after the batch in hand.
            guard let node = branches.filter(\.isUp).randomElement(using: &rng) else { return }
            stop(node)
            node.downSince = stepNumber
            note("SIGTERM \(node.name)")
        case 78..<90:
            guard let node = nodes.filter({ !$0.isUp }).randomElement(using: &rng) else { return }
            try node.start()
            note("start \(node.name)")
        default:
            // Time for the links to work (and to be caught at work by the next kill).
            let pause = Int.random(in: 50...400, using: &rng)
            try await Task.sleep(for: .milliseconds(pause))
            note("pause \(pause) ms")
        }
    }

    /// Ben writes to his account at a branch that cannot reach the centre (the centre is
    /// down), and so does anna's device there, to another field, in half the cases; meanwhile
    /// the admin at the centre gives the account to anna. When the link is back, the centre
    /// refuses what the branch relays for ben, and the branch puts the record back.
    func contestedWrite() async throws {
        let bens = devices.indices.filter { !devices[$0].isAdmin && devices[$0].node.isUp }
        guard let index = bens.randomElement(using: &rng) else { return }
        let device = devices[index]
        let accounts = try device.client.local { store in
            try records.compactMap { try store.record($0) }.filter { !$0.isDeleted && $0.type == "account" && $0.values["owner"] == .text(Self.ben) }
        }
        guard let account = accounts.randomElement(using: &rng) else { return }
        note("contested write on \(short(account.id)) through \(device.node.name):")
        if centre.isUp {
            centre.kill()
            kills += 1
            note("SIGKILL centre")
        }
        let field = ["industry", "region"].randomElement(using: &rng)!
        let value = randomValue(field)
        try local(index, account.id) { store in _ = try store.update(account.id, [field: value]) }
        note("\(device.name) writes [\(field)] of account \(short(account.id))")
        await sync(index)
        if Bool.random(using: &rng), let colleague = devices.indices.first(where: { devices[$0].isAdmin && devices[$0].node === device.node }) {
            let other = "address"
            try local(colleague, account.id) { store in
                guard try store.record(account.id).map({ !$0.isDeleted }) == true else { return }
                _ = try store.update(account.id, [other: randomValue(other)])
            }
            note("\(devices[colleague].name) writes [\(other)] of account \(short(account.id))")
            await sync(colleague)
        }
        // The branch away (killed or stopped) until the centre has the account given away.
        let branch = device.node
        if Bool.random(using: &rng) {
            branch.kill()
            kills += 1
            note("SIGKILL \(branch.name)")
        } else {
            stop(branch)
            note("SIGTERM \(branch.name)")
        }
        try local(0, account.id) { store in
            guard try store.record(account.id).map({ !$0.isDeleted }) == true else { return }
            _ = try store.update(account.id, ["owner": .text(Self.anna)])
        }
        note("\(devices[0].name) gives account \(short(account.id)) to \(Self.anna)")
        try centre.start()
        note("start centre")
        await sync(0)
        try branch.start()
        note("start \(branch.name)")
    }

    func describe(_ outcome: Result<SyncReport, any Error>) -> String {
        switch outcome {
        case .success(let report):
            "pushed \(report.pushed), pulled \(report.pulled), rejected \(report.rejected), evicted \(report.evicted), conflicts \(report.conflicts)"
        case .failure(let error):
            "failed: \(String("\(error)".prefix(160)))"
        }
    }

    @discardableResult
    func sync(_ index: Int) async -> Result<SyncReport, any Error> {
        let device = devices[index]
        let outcome: Result<SyncReport, any Error>
        do {
            outcome = .success(try await device.client.sync())
        } catch {
            outcome = .failure(error)
            syncFailures += 1
        }
        syncs += 1
        note("\(device.name) syncs with \(device.node.name) (\(device.node.isUp ? "up" : "down")): \(describe(outcome))")
        return outcome
    }

    static let accountFields = ["name", "industry", "region", "address"]
    static let contactFields = ["first_name", "last_name", "title", "department"]
    static let required: Set<String> = ["name", "last_name"]

    func randomValue(_ field: String) -> FieldValue {
        if !Self.required.contains(field), Int.random(in: 0..<8, using: &rng) == 0 { return .null }
        return .text("\(field)-\(Int.random(in: 0..<100_000, using: &rng))")
    }

    /// A random local write on device `index`, of what it holds; its own rights check may
    /// refuse it at once (then nothing was written).
    func edit(_ index: Int) throws {
        let device = devices[index]
        let held = try device.client.local { store in try records.compactMap { try store.record($0) } }
        let live = held.filter { !$0.isDeleted }
        let accounts = live.filter { $0.type == "account" }
        let roll = Int.random(in: 0..<100, using: &rng)
        do {
            switch roll {
            case 0..<14:
                let id = randomUUID()
                let owner = device.isAdmin && Bool.random(using: &rng) ? Self.anna : Self.ben
                try local(index, id) { store in
                    _ = try store.create("account", id: id, ["name": randomValue("name"), "industry": randomValue("industry"),
                                                             "owner": .text(owner)])
                }
                records.append(id)
                note("\(device.name) creates account \(short(id)) owned by \(owner)")
            case 14..<24:
                guard let account = accounts.randomElement(using: &rng) else { return }
                let id = randomUUID()
                try local(index, id) { store in
                    _ = try store.create("contact", id: id, ["last_name": randomValue("last_name"), "title": randomValue("title"),
                                                             "account": .text(account.id.uuidString)])
                }
                records.append(id)
                note("\(device.name) creates contact \(short(id)) of \(short(account.id))")
            case 24..<66:
                guard let record = live.randomElement(using: &rng) else { return }
                let fields = record.type == "account" ? Self.accountFields : Self.contactFields
                var values: [String: FieldValue] = [:]
                for _ in 0..<Int.random(in: 1...2, using: &rng) {
                    let field = fields.randomElement(using: &rng)!
                    values[field] = randomValue(field)
                }
                try local(index, record.id) { store in _ = try store.update(record.id, values) }
                note("\(device.name) writes \(values.keys.sorted()) of \(record.type) \(short(record.id))")
            case 66..<74:
                guard let account = accounts.randomElement(using: &rng) else { return }
                let owner = account.values["owner"] == .text(Self.anna) ? Self.ben : Self.anna
                try local(index, account.id) { store in _ = try store.update(account.id, ["owner": .text(owner)]) }
                note("\(device.name) gives account \(short(account.id)) to \(owner)")
            case 74..<86:
                // Not ben's: an increment the centre refuses cannot be put back at a branch (see
                // BranchRefusalTests' counter case), and a reassignment races with it here.
                guard device.isAdmin, let account = accounts.randomElement(using: &rng) else { return }
                let amount = Int64.random(in: -20...50, using: &rng)
                try local(index, account.id) { store in _ = try store.increment(account.id, field: "loyalty_points", by: amount) }
                increments[account.id, default: 0] += amount
                note("\(device.name) adds \(amount) points to \(short(account.id))")
            case 86..<94:
                guard let record = live.randomElement(using: &rng) else { return }
                try local(index, record.id) { store in _ = try store.delete(record.id) }
                note("\(device.name) deletes \(record.type) \(short(record.id))")
            default:
                guard let record = held.filter(\.isDeleted).randomElement(using: &rng) else { return }
                try local(index, record.id) { store in _ = try store.restore(record.id) }
                note("\(device.name) restores \(record.type) \(short(record.id))")
            }
        } catch ReplicaStoreError.accessDenied {
            // The device's own check of its user's rights refused it: nothing was written.
            note("\(device.name): refused at once by its rights")
        }
    }

    func short(_ id: UUID) -> String { String(id.uuidString.prefix(8)) }

    /// Runs a local write on device `index` and records which register writes it made and which
    /// earlier ones it overwrote having seen them.
    func local(_ index: Int, _ id: UUID, _ body: (ReplicaStore) throws -> Void) throws {
        let (before, after) = try devices[index].client.local { store -> (VersionVector, RecordState?) in
            let before = try store.record(id)?.vector ?? VersionVector()
            try store.transaction { try body(store) }
            return (before, try store.record(id))
        }
        guard let after else { return }
        for (field, state) in after.fields {
            guard case .register(let register) = state, !before.contains(register.dot) else { continue }
            for earlier in writes.indices where writes[earlier].record == id && writes[earlier].field == field
                && before.contains(writes[earlier].dot) {
                writes[earlier].overwritten = true
            }
            writes.append(TrackedWrite(writer: index, record: id, field: field, dot: register.dot, value: register.value))
        }
    }

    // MARK: Healing

    /// Everything up, then rounds of device syncs until nothing moves anywhere: every device's
    /// sync succeeds having pushed and pulled nothing, twice in a row, the admins' devices hold
    /// the same records, and each branch's link is connected with nothing waiting or behind.
    func heal() async throws {
        for node in nodes where node.exitedOnItsOwn {
            fail("\(node.name) exited on its own (status \(node.process!.process.terminationStatus)):\n\(node.logTail())")
            node.kill()
        }
        for node in nodes where !node.isUp { try node.start() }
        note("heal: everything started")
        let started = ContinuousClock.now
        let deadline = started + healingDeadline
        var quietRounds = 0
        var rounds = 0
        var why = ""
        while quietRounds < 2 {
            guard ContinuousClock.now < deadline else {
                throw BenchError("no convergence \(ContinuousClock.now - started) after healing (\(rounds) rounds): \(why)")
            }
            rounds += 1
            var quiet = true
            why = ""
            for index in devices.indices {
                switch await sync(index) {
                case .success(let report):
                    if report.pushed > 0 || report.pulled > 0 || report.evicted > 0 {
                        quiet = false
                        why += "\(devices[index].name) moved records; "
                    }
                case .failure(let error):
                    quiet = false
                    why += "\(devices[index].name) cannot sync: \(error); "
                }
            }
            for branch in branches {
                let link = try linkStats(branch)
                let connected = link["connected"] as? Bool ?? false
                let waiting = (link["waiting"] as? NSNumber)?.intValue ?? -1
                let behind = (link["behind"] as? NSNumber)?.intValue ?? -1
                if !connected || waiting != 0 || behind != 0 {
                    quiet = false
                    why += "\(branch.name) link connected \(connected) waiting \(waiting) behind \(behind) (\(link["last_error"] as? String ?? "")); "
                }
            }
            let admins = try devices.filter(\.isAdmin).map { try states(of: $0.client) }
            if admins.contains(where: { $0 != admins[0] }) {
                quiet = false
                why += "admins' devices differ; "
            }
            quietRounds = quiet ? quietRounds + 1 : 0
            if quietRounds < 2 { try await Task.sleep(for: .milliseconds(250)) }
        }
        note("heal: quiet after \(rounds) rounds, \(ContinuousClock.now - started)")
    }

    /// The branch's link as `rapportctl stats --json` shows it.
    func linkStats(_ branch: TopologyNode) throws -> [String: Any] {
        let stats = try branch.ctl.run(["stats", "acme", "--json"])
        guard stats.status == 0, let json = stats.json as? [String: Any] else {
            throw BenchError("rapportctl stats at \(branch.name): \(stats.status) \(stats.error)")
        }
        // Absent until the branch's server first writes its link's status (within a second).
        return json["upstream"] as? [String: Any] ?? ["connected": false, "last_error": "no link status written yet"]
    }

    func states(of client: RapportClient) throws -> [UUID: RecordState] {
        try client.local { try states(of: $0) }
    }

    func states(of store: ReplicaStore) throws -> [UUID: RecordState] {
        Dictionary(uniqueKeysWithValues: try store.changes(after: 0, limit: .max).map { ($0.state.id, $0.state) })
    }

    // MARK: Checks

    func checkEverything() throws {
        for node in nodes { stop(node) }
        let centreStore = try ReplicaStore(path: centre.data + "/tenants/acme.sqlite", options: .crm(role: .authority))
        defer { centreStore.close() }
        let branchStores = try branches.map { try ReplicaStore(path: $0.data + "/tenants/acme.sqlite", options: .crm(role: .authority)) }
        defer { for store in branchStores { store.close() } }
        let reference = try states(of: centreStore)
        note("check: \(reference.count) records at the centre, \(writes.count) writes, \(syncs) syncs (\(syncFailures) failed), \(kills) kills")

        // Convergence.
        let registry = try DataDirectory(centre.data).openRegistry()
        let snapshot = try registry.accessSnapshot()
        registry.close()
        func policy(of user: String) -> AccessPolicy? {
            snapshot.subject(tenant: "acme", user: user, defaults: CRMAccess.defaultRoles).map { AccessPolicy(model: CRMAccess.ownership, subject: $0) }
        }
        for (node, store) in zip(branches, branchStores) {
            if node === nodes[2] && secondBranch == .benOnly {
                // A branch of ben alone holds his scope, as his devices do.
                guard let policy = policy(of: Self.ben) else { throw BenchError("no rights for \(Self.ben)") }
                checkScope(try states(of: store), of: "\(node.name)'s store", policy: policy, reference: reference, keptRefused: [])
            } else {
                compare(try states(of: store), to: reference, "\(node.name)'s store")
            }
            if try store.dirtyCount() != 0 { fail("\(node.name) still has \(try store.dirtyCount()) records waiting to go up") }
        }
        for device in devices {
            let held = try states(of: device.client)
            if try device.client.local({ try $0.dirtyCount() }) != 0 { fail("\(device.name) still has records waiting to be pushed") }
            if device.isAdmin {
                compare(held, to: reference, "\(device.name)'s store")
                continue
            }
            guard let policy = policy(of: device.user) else {
                fail("no rights for \(device.user)")
                continue
            }
            // A write its own server refused stays on the device as it wrote it (with a
            // `rejected` entry whose two sides are that write), where a refusal by the centre
            // of what a branch relayed is put back by the branch: only the former is left out.
            let keptRefused = Set(try device.client.local { try $0.conflicts(status: nil) }
                .filter { $0.conflict.kind == .rejected && $0.conflict.winner == $0.conflict.loser }.map(\.conflict.recordID))
            checkScope(held, of: "\(device.name) (\(device.user))", policy: policy, reference: reference, keptRefused: keptRefused)
        }

        // Nothing lost.
        var logs: [(String, [ConflictEntry])] = [("centre", try centreStore.conflicts(status: nil))]
        for (node, store) in zip(branches, branchStores) { logs.append((node.name, try store.conflicts(status: nil))) }
        for device in devices { logs.append((device.name, try device.client.local { try $0.conflicts(status: nil) })) }
        checkNothingLost(reference, logs: logs)
    }

    func compare(_ held: [UUID: RecordState], to reference: [UUID: RecordState], _ what: String) {
        let missing = reference.keys.filter { held[$0] == nil }
        let extra = held.keys.filter { reference[$0] == nil }
        let different = reference.keys.filter { held[$0] != nil && held[$0] != reference[$0] }
        guard missing.isEmpty, extra.isEmpty, different.isEmpty else {
            var text = "\(what) differs from the centre's: \(missing.count) missing \(missing.map(short)), \(extra.count) extra \(extra.map(short)), \(different.count) different"
            for id in different.prefix(3) {
                text += "\n  \(short(id)): centre \(describeState(reference[id]!))\n  \(String(repeating: " ", count: 10))here   \(describeState(held[id]!))"
            }
            fail(text)
            return
        }
    }

    func describeState(_ state: RecordState) -> String {
        let fields = state.fields.sorted { $0.key < $1.key }.map { name, field -> String in
            switch field {
            case .register(let register): "\(name)=\(register.value) @\(register.dot)"
            case .counter(let counter): "\(name)=\(counter)"
            }
        }
        return "\(state.isDeleted ? "deleted" : "live") \(state.liveness.dot) vector \(state.vector) [\(fields.joined(separator: ", "))]"
    }

    /// A rep's device holds exactly the live records the rep may read in the centre's state
    /// (with what they hang off), each with the centre's values but for the hidden fields;
    /// records whose write its own server refused (`keptRefused`) are left out.
    func checkScope(_ held: [UUID: RecordState], of holder: String, policy: AccessPolicy, reference: [UUID: RecordState],
                    keptRefused: Set<UUID>) {
        var expected: Set<UUID> = []
        for (id, record) in reference where !record.isDeleted && ["account", "contact"].contains(record.type) {
            guard policy.mayRead(record, lookup: { reference[$0] }) else { continue }
            expected.insert(id)
            var next = policy.parent(of: record)
            while let parent = next, let state = reference[parent], !state.isDeleted {
                expected.insert(parent)
                next = policy.parent(of: state)
            }
        }
        expected.subtract(keptRefused)
        let live = Set(held.values.filter { !$0.isDeleted && ["account", "contact"].contains($0.type) }.map(\.id)).subtracting(keptRefused)
        if live != expected {
            fail("\(holder) holds \(live.count) live records, may read \(expected.count): missing \(expected.subtracting(live).map(short)), extra \(live.subtracting(expected).map(short))")
        }
        for id in live.intersection(expected) {
            let mine = held[id]!, theirs = reference[id]!
            let hidden = policy.subject.role.rights(for: theirs.type).hiddenFields
            var visible = theirs.values
            for field in hidden { visible[field] = nil }
            if mine.values != visible || hidden.contains(where: { mine.fields[$0] != nil }) {
                fail("\(holder) holds \(theirs.type) \(short(id)) with other values than the centre:\n  centre \(describeState(theirs))\n  here   \(describeState(mine))")
            }
        }
    }

    /// Each tracked write is in the centre's state, overwritten by a device that saw it, lost to
    /// a concurrent write with a conflict entry, or refused with a `rejected` entry naming a
    /// write of the same device at least as recent (or any refusal of the record in the
    /// writer's own log). Counters add up on records no refusal touched.
    func checkNothingLost(_ reference: [UUID: RecordState], logs: [(String, [ConflictEntry])]) {
        struct Key: Hashable { var record: UUID; var field: String; var dot: Dot }
        var lost = Set<Key>()
        var refusals: [UUID: [(log: String, loser: Dot)]] = [:]
        for (name, entries) in logs {
            for entry in entries {
                let conflict = entry.conflict
                if conflict.kind == .rejected { refusals[conflict.recordID, default: []].append((name, conflict.loser.dot)) }
                lost.insert(Key(record: conflict.recordID, field: conflict.field ?? "", dot: conflict.loser.dot))
            }
        }
        note("conflict entries: " + logs.map { "\($0.0) \($0.1.count) (\($0.1.filter { $0.conflict.kind == .rejected }.count) refusals)" }.joined(separator: ", "))
        for write in writes {
            let writer = devices[write.writer]
            let refused = (refusals[write.record] ?? []).contains { log, loser in
                log == writer.name || (loser.replica == write.dot.replica && loser.counter >= write.dot.counter)
            }
            let logged = lost.contains(Key(record: write.record, field: write.field, dot: write.dot))
            guard let state = reference[write.record] else {
                if !refused { fail("\(writer.name)'s record \(short(write.record)) is not at the centre and no refusal of it is logged") }
                continue
            }
            let current: RegisterState? = if case .register(let register)? = state.fields[write.field] { register } else { nil }
            if current?.dot == write.dot {
                if state.isDeleted && !state.liveness.deletionContext.contains(write.dot) && !logged && !refused {
                    fail("\(writer.name)'s write \(write.dot) of \(write.field) on \(short(write.record)) is hidden by a concurrent delete without a conflict entry")
                }
            } else if !write.overwritten && !logged && !refused {
                fail("""
                    \(writer.name)'s write \(write.dot) of \(write.field) = \(write.value) on \(state.type) \(short(write.record)) is lost: \
                    the centre holds \(current.map { "\($0.value) @\($0.dot)" } ?? "nothing"), and no conflict log has it
                    """)
            }
        }
        for (id, sum) in increments where refusals[id] == nil {
            guard let state = reference[id] else { continue }
            let value = state.values["loyalty_points"] ?? .integer(0)
            if value != .integer(sum) {
                fail("account \(short(id)) has \(value) loyalty points at the centre; the devices' increments add up to \(sum)")
            }
        }
    }
}
