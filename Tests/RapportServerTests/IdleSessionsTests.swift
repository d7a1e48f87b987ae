import CRM
import Foundation
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import Testing
import TestScheduling

/// Field devices keep a live session open all day: a `rapportd` process with a few hundred idle
/// live (subscribed) sessions, each an enrolled device of its own, still carries an edit from
/// one device to a live one, announces it to every subscribed session, answers their pings, and
/// serves a new session. (`rapport-bench idle` does the same with 10,000 and measures it.)
@Suite(.serialized, .ownThread) struct IdleSessionsTests {
    static let idleCount = 300

    @Test func aServerWithHundredsOfIdleLiveSessionsStillCarriesAnEditAndServesANewSession() async throws {
        _ = SyncServer.raiseFileDescriptorLimit()
        let dir = try TemporaryDirectory()
        let data = dir.path("server")
        let credentials = try #require(try ServerProcess.prepare(data: data, tenants: ["acme"], devicesPerTenant: Self.idleCount + 3,
                                                                 schema: CRMSchema.current)["acme"])
        // rapportd's own connection cap (no --max-connections): the default must hold them. The
        // raw sessions never ping, and opening them all can take over a minute beside the other
        // suites, so the silence limit (60 s, what a pinging device never meets) is lifted, and
        // the handshake's (10 s), which a loaded machine stalled 32 TLS handshakes at once past.
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                             arguments: ["--idle-timeout", "600", "--handshake-timeout", "60"])
        defer { server.stop() }
        let caPath = data + "/tls/ca.pem"

        var idle: [RawConnection] = []
        for batch in stride(from: 0, to: Self.idleCount, by: 32) {
            // Fewer at once than the per-address cap on connections not logged in yet (64).
            let opened = try await withThrowingTaskGroup(of: RawConnection.self) { group in
                for credential in credentials[3...].dropFirst(batch).prefix(32) {
                    group.addTask {
                        let connection = try await RawConnection.connect(port: server.port, caPath: caPath)
                        try await connection.send(.helloFrame(device: credential.deviceID, tenant: "acme",
                                                              secret: credential.secret, subscribe: true))
                        let reply = try await connection.nextFrame()
                        guard case .welcome? = reply?.body else {
                            throw RawConnection.TimedOut(what: "Welcome for an idle session (got \(reply.map { "\($0)" } ?? "a close"))")
                        }
                        return connection
                    }
                }
                return try await group.reduce(into: [RawConnection]()) { $0.append($1) }
            }
            idle += opened
        }
        #expect(idle.count == Self.idleCount)
        #expect(server.openFileDescriptors() >= Self.idleCount)

        func device(_ index: Int, _ name: String) throws -> RapportClient {
            let credential = credentials[index]
            let store = try ReplicaStore(path: dir.path("\(name).sqlite"), options: .crm(replicaID: try credential.replicaID))
            var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: "acme", secret: credential.secret,
                                             trustRoots: .certificates(.file(caPath)), schemaVersion: CRMSchema.version)
            config.retry = RetryPolicy(maxAttempts: 3, initialDelay: .milliseconds(20), maxDelay: .milliseconds(200))
            return try RapportClient(store: SharedReplicaStore(store, label: name), configuration: config,
                                     logger: ServerFixture.logger("test.\(name)"))
        }
        let writer = try device(0, "writer"), reader = try device(1, "reader")
        let live = reader.live()
        // Ends the live session, and so its events, if the edit never arrives.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            await live.stop()
        }
        defer { watchdog.cancel() }
        var events = live.events.makeAsyncIterator()
        guard case .connected? = await events.next(), case .synced? = await events.next() else {
            Issue.record("the reader's live session did not start")
            return
        }

        let id = try writer.store.performSync { try $0.create("account", ["name": .text("Umbrella Corp")]).id }
        let pushed = try await writer.sync()
        #expect(pushed.pushed == 1)
        var received = false
        while !received, let event = await events.next() {
            if case .synced(let report) = event, report.pulled > 0 { received = true }
        }
        #expect(received, "the edit did not reach the live device")
        #expect(try reader.store.performSync { try $0.record(id)?.values["name"] } == .text("Umbrella Corp"))

        // Every idle session was told, and is still live: it answers a ping.
        var announced = 0, answered = 0
        // The writer's checkpoint after its sync: the sequence its push reached.
        let sequence = UInt64(pushed.checkpoint)
        #expect(sequence > 0)
        for connection in idle {
            var ping = Rapport_V1_Frame()
            ping.ping = Rapport_V1_Ping()
            try await connection.send(ping)
            // The announcement and the pong, in whichever order they were written.
            var told = false, ponged = false
            while !(told && ponged), let frame = try await connection.nextFrame() {
                switch frame.body {
                case .changesAvailable(let notice)?: told = told || notice.serverSequence >= sequence
                case .pong?: ponged = true
                default: break
                }
            }
            if told { announced += 1 }
            if ponged { answered += 1 }
        }
        #expect(announced == Self.idleCount)
        #expect(answered == Self.idleCount)

        // A new session is served while they are all connected.
        let newcomer = try device(2, "newcomer")
        let first = try await newcomer.sync()
        #expect(first.pulled >= 1)
        #expect(try newcomer.store.performSync { try $0.record(id)?.values["name"] } == .text("Umbrella Corp"))
        #expect(idle.filter(\.isClosed).isEmpty)

        await live.stop()
        for connection in idle { await connection.close() }
    }

    @Test func rapportdSaysWhatDescriptorsItHasAndRefusesAConnectionCapTheyCannotHold() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("server")
        _ = try ServerProcess.prepare(data: data, tenants: ["acme"], schema: CRMSchema.current)
        let binary = ServerProcess.defaultBinary()

        let server = try await ServerProcess.start(binary: binary, data: data, arguments: ["--no-dev-tenant"])
        let line = try #require(server.banner.split(separator: "\n").first { $0.hasPrefix("connections: at most ") })
        let budget = DescriptorBudget.raisingLimit(maxOpenTenants: 256)
        // The server raised its soft limit to the hard one, as this process just did.
        #expect(line.contains("open-file limit \(budget.limit)"), "\(line)")
        #expect(line.contains("connections: at most \(budget.defaultMaxConnections);"), "\(line)")
        await server.stop()

        let tooMany = budget.forConnections + 1
        let refused = try await ToolProcess.run(binary, ["--port", "0", "--data", data, "--no-dev-tenant", "--max-connections", "\(tooMany)"])
        #expect(refused.status != 0)
        #expect(refused.error.contains("--max-connections \(tooMany) needs"), "\(refused.error)")
        #expect(refused.error.contains("open-file limit is \(budget.limit)"), "\(refused.error)")
        #expect(!refused.output.contains("serving"))

        // The same cap fits once fewer tenant stores are kept open beside it.
        let fewerStores = DescriptorBudget(limit: budget.limit, hardLimit: budget.hardLimit, maxOpenTenants: 1)
        if fewerStores.problem(maxConnections: tooMany) == nil {
            let fits = try await ServerProcess.start(binary: binary, data: data, arguments: [
                "--no-dev-tenant", "--max-connections", "\(tooMany)", "--max-open-tenants", "1"])
            #expect(fits.banner.contains("connections: at most \(tooMany);"), "\(fits.banner)")
            await fits.stop()
        }
    }

    /// A frame moves the silence deadline on (the timer, firing early, waits again), so a session
    /// that pings outlives the timeout many times over; once it stops it is closed with TIMEOUT.
    @Test func aSessionThatPingsOutlivesTheSilenceTimeoutAndTimesOutOnceItStops() async throws {
        // A silence of 3 s, outlived twice over by pings 0.2 s apart: with 1 s, one ping that
        // came late on a loaded machine (the test's wake-up after its sleep) ended the session.
        let fixture = try await ServerFixture(limits: SessionLimits(idleTimeout: .seconds(3)))
        let (connection, _) = try await RawConnection.established(to: fixture)
        let start = ContinuousClock.now
        var pongs = 0
        while ContinuousClock.now - start < .seconds(7) {
            var ping = Rapport_V1_Frame()
            ping.ping = Rapport_V1_Ping()
            try await connection.send(ping)
            if case .pong? = try await connection.nextFrame()?.body { pongs += 1 }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(pongs >= 10)
        #expect(!connection.isClosed)
        guard case .error(let error)? = try await connection.nextFrame()?.body else {
            Issue.record("the silent session was not told TIMEOUT")
            return
        }
        #expect(error.code == .timeout)
        #expect(try await connection.waitForClose().isEmpty)
        await fixture.stop()
    }

    /// With a total cap sized for thousands of idle sessions, connections that never log in must
    /// not hold thousands of TLS handshakes: busy answers are bounded by the pre-login cap.
    @Test func busyAnswersAreBoundedByThePreLoginCapAndTheRestAreDroppedAtOnce() async throws {
        let fixture = try await ServerFixture { $0.maxPreLoginConnections = 1 }
        func until(_ what: String, _ condition: () -> Bool) async throws {
            let deadline = ContinuousClock.now + RawConnection.defaultWait
            while !condition() {
                guard ContinuousClock.now < deadline else { throw RawConnection.TimedOut(what: what) }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        // Plain TCP, no TLS: each holds its place until the handshake timeout.
        let waiting = try await RawConnection.connect(to: fixture, tls: false)
        try await until("the first connection to take the pre-login place") { fixture.server.connectionCounts == (1, 1) }
        let busy = try await RawConnection.connect(to: fixture, tls: false)
        try await until("the second connection to be taken as a busy answer") { fixture.server.connectionCounts == (2, 1) }

        // The one busy answer the cap allows is taken: a third gets no handshake and no frame.
        let dropped = try await RawConnection.connect(to: fixture, tls: true)
        #expect(try await dropped.waitForClose().isEmpty)
        #expect(fixture.server.connectionCounts == (2, 1))

        // Once it is gone, a connection is answered SERVER_BUSY again.
        await busy.close()
        try await until("the busy answer to be counted out") { fixture.server.connectionCounts.total == 1 }
        let again = try await RawConnection.tls(to: fixture)
        guard case .error(let answer)? = try await again.nextFrame()?.body else {
            Issue.record("a connection after the busy answer left was not answered")
            return
        }
        #expect(answer.code == .serverBusy)
        await again.close()
        await waiting.close()
        await fixture.stop()
    }

    @Test(.blocking) func theBudgetSetsTheStoresDescriptorsAsideAndNamesWhatToChange() {
        let budget = DescriptorBudget(limit: 20_000, hardLimit: 20_000, maxOpenTenants: 256)
        #expect(budget.forStores == 3 * 256 + 64)
        #expect(budget.forConnections == 20_000 - 832)
        #expect(budget.defaultMaxConnections == 16_384)
        #expect(budget.problem(maxConnections: 19_168) == nil)
        let problem = budget.problem(maxConnections: 19_169)
        #expect(problem?.contains("needs 20001 file descriptors") == true, "\(problem ?? "")")
        #expect(problem?.contains("hard limit 20000") == true)
        // A small limit leaves less than the default, and says so.
        let small = DescriptorBudget(limit: 1_024, hardLimit: 1_024, maxOpenTenants: 256)
        #expect(small.defaultMaxConnections == 192)
        let none = DescriptorBudget(limit: 512, hardLimit: 512, maxOpenTenants: 256)
        #expect(none.forConnections == 0)
    }
}
