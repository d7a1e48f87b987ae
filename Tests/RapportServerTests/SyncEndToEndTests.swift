import CRM
import Foundation
import RapportClient
import Synchronization
import RapportServer
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing
import TLS

@Suite(.serialized, .ownThread) struct SyncEndToEndTests {
    @Test func offlineEditsOnTwoDevicesConverge() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let account = try alice.local { try $0.create("account", ["name": .text("Acme"), "phone": .text("555-0100")]).id }
        let contact = try bob.local { try $0.create("contact", ["first_name": .text("Ada"), "last_name": .text("Lovelace")]).id }

        let first = try await alice.sync()
        #expect(first.pushed == 1 && first.pulled == 1)
        let second = try await bob.sync()
        #expect(second.pushed == 1 && second.pulled == 2)
        try await alice.sync()

        // Both edit different fields of the account offline, then sync in the other order.
        try bob.local { try $0.update(account, ["website": .text("https://acme.example")]) }
        try alice.local { try $0.update(account, ["phone": .text("555-0199")]) }
        try await bob.sync()
        try await alice.sync()
        try await bob.sync()

        for id in [account, contact] {
            let a = try alice.local { try $0.record(id) }, b = try bob.local { try $0.record(id) }
            #expect(a != nil && a == b)
        }
        #expect(try alice.local { try $0.record(account)?.values["phone"] } == .text("555-0199"))
        #expect(try alice.local { try $0.record(account)?.values["website"] } == .text("https://acme.example"))
        #expect(try alice.local { try $0.dirtyCount() } == 0)
        #expect(try alice.local { try $0.conflicts() }.isEmpty)
        let server = try fixture.tenantStore()
        #expect(try server.record(account) == (try alice.local { try $0.record(account) }))
        await fixture.stop()
    }

    @Test func concurrentEditsOfOneFieldLeaveAConflictOnTheLosingDevice() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let id = try alice.local { store in
            let account = try store.create("account", ["name": .text("Acme")]).id
            return try store.create("opportunity", ["name": .text("Big deal"), "account": .text(account.uuidString),
                                                    "stage": .text("qualification")]).id
        }
        try await alice.sync()
        try await bob.sync()
        try alice.local { try $0.update(id, ["stage": .text("closed_won")]) }
        try await Task.sleep(for: .milliseconds(5))
        try bob.local { try $0.update(id, ["stage": .text("closed_lost")]) }   // later: wins
        try await alice.sync()
        let bobReport = try await bob.sync()
        try await alice.sync()
        #expect(try alice.local { try $0.record(id)?.values["stage"] } == .text("closed_lost"))
        #expect(try bob.local { try $0.record(id)?.values["stage"] } == .text("closed_lost"))
        // Alice's value lost; her device has the conflict with her value in it. What each
        // device's rules set from its stage (probability, closed_at) lost with it, beside it.
        let entries = try alice.local { try $0.conflicts() }
        #expect(Set(entries.compactMap(\.conflict.field)) == ["stage", "probability", "closed_at"])
        let stage = entries.first { $0.conflict.field == "stage" }
        #expect(stage?.conflict.loser.value == .text("closed_won"))
        #expect(stage?.conflict.winner.value == .text("closed_lost"))
        #expect(try alice.local { try $0.record(id)?.values["probability"] } == .integer(0))
        // Bob's push was merged on the server, which reported the conflicts to him too.
        #expect(bobReport.conflicts == entries.count)
        #expect(try fixture.tenantStore().conflicts().count == entries.count)
        await fixture.stop()
    }

    @Test func aRejectedRecordIsKeptInTheConflictLogAndTheRestSyncs() async throws {
        let fixture = try await ServerFixture()
        // The device's schema knows a field type the server does not: the server refuses it.
        let lenient = Schema([RecordType(name: "contact", fields: ["last_name": .text]),
                              RecordType(name: "ticket", fields: ["title": .text])])
        let store = try ReplicaStore(path: fixture.dir.path("old.sqlite"), options: .init(schema: lenient, replicaID: try ReplicaID("old")))
        let device = try RapportClient(store: SharedReplicaStore(store, label: "old"), configuration: fixture.configuration(),
                                       logger: ServerFixture.logger("old"))
        let good = try device.local { try $0.create("contact", ["last_name": .text("Ada")]).id }
        let bad = try device.local { try $0.create("ticket", ["title": .text("help")]).id }
        let report = try await device.sync()
        #expect(report.pushed == 1 && report.rejected == 1)
        let entry = try #require(try device.local { try $0.conflicts() }.first)
        #expect(entry.conflict.kind == .rejected)
        #expect(entry.conflict.recordID == bad)
        #expect(entry.reason?.contains("ticket") == true)
        #expect(try device.local { try $0.dirtyCount() } == 0)
        #expect(try fixture.tenantStore().record(good) != nil)
        #expect(try fixture.tenantStore().record(bad) == nil)
        await fixture.stop()
    }

    @Test func progressIsReportedAndAnInterruptedPullResumes() async throws {
        let fixture = try await ServerFixture()
        let writer = try fixture.device("writer")
        try writer.local { store in
            try store.transaction { for i in 0..<250 { try store.create("contact", ["last_name": .text("c\(i)")]) } }
        }
        try await writer.sync()

        let reader = try fixture.device("reader") { $0.pullBatchSize = 100 }
        let seen = Mutex<[SyncProgress]>([])
        // The app is killed (the task cancelled) once the first batch is in.
        let task = Task { [reader] in
            try await reader.sync { progress in
                seen.withLock { $0.append(progress) }
                if progress.phase == .pull { withUnsafeCurrentTask { $0?.cancel() } }
            }
        }
        await #expect(throws: (any Error).self) { try await task.value }
        #expect(seen.withLock { $0.first { $0.phase == .pull } }?.recordsTotal == 250)
        #expect(seen.withLock { $0.first { $0.phase == .pull } }?.recordsDone == 100)
        #expect(try reader.local { try $0.count(ofType: "contact") } == 100)

        let resumed = try await reader.sync { progress in seen.withLock { $0.append(progress) } }
        #expect(resumed.pulled == 150)
        #expect(try reader.local { try $0.count(ofType: "contact") } == 250)
        #expect(seen.withLock { $0 }.allSatisfy { $0.bytesDone <= $0.bytesTotal && $0.recordsDone <= $0.recordsTotal })
        await fixture.stop()
    }

    @Test func aServerStoppedMidPullIsResumedFromTheCheckpointAfterRestart() async throws {
        let dir = try TemporaryDirectory()
        let fixture = try await ServerFixture(dir: dir)
        let writer = try fixture.device("writer")
        try writer.local { store in
            try store.transaction { for i in 0..<300 { try store.create("contact", ["last_name": .text("c\(i)")]) } }
        }
        try await writer.sync()

        // Small batches, and the first one waits until the server has begun to stop: a busy
        // machine must not let the whole pull finish before the shutdown even starts.
        let reader = try fixture.device("reader") { $0.pullBatchSize = 10 }
        let stopping = Mutex<Task<Void, Never>?>(nil)
        await #expect(throws: (any Error).self) {
            try await reader.sync { progress in
                guard progress.phase == .pull else { return }
                let started = stopping.withLock { task in
                    defer { if task == nil { task = Task { await fixture.stop() } } }
                    return task != nil
                }
                guard !started else { return }
                for _ in 0..<5_000 where fixture.server.port != nil { usleep(1_000) }
            }
        }
        await stopping.withLock { $0 }?.value
        let partial = try reader.local { try $0.count(ofType: "contact") }
        #expect(partial >= 10 && partial < 300)

        // Same data directory, a new process's worth of server, on a new port.
        let restarted = try await ServerFixture(dir: dir)
        let again = try RapportClient(store: reader.store, configuration: restarted.configuration(), logger: ServerFixture.logger("again"))
        let report = try await again.sync()
        #expect(report.pulled == 300 - partial)
        #expect(try reader.local { try $0.count(ofType: "contact") } == 300)
        await restarted.stop()
    }

    @Test func wrongCredentialsAndUnknownTenantsAreRefusedWithoutRetrying() async throws {
        let fixture = try await ServerFixture()
        let wrong = try fixture.device("mallory") { $0.secret = Array("not the secret".utf8) }
        let error = try await #require(throws: SyncError.self) { try await wrong.sync() }
        #expect(error.code == .authenticationFailed)
        #expect(!error.retryable)
        let lost = try fixture.device("lost", tenant: "initech")
        #expect(try await #require(throws: SyncError.self) { try await lost.sync() }.code == .unknownTenant)
        let bad = try fixture.device("bad", tenant: "../etc")
        #expect(try await #require(throws: SyncError.self) { try await bad.sync() }.code == .unknownTenant)
        await fixture.stop()
    }

    @Test func tenantsAreIsolated() async throws {
        let fixture = try await ServerFixture()
        let acme = try fixture.device("acme-device", tenant: "acme")
        let globex = try fixture.device("globex-device", tenant: "globex")
        let secret = try acme.local { try $0.create("account", ["name": .text("Acme secret plans")]).id }
        try await acme.sync()
        let report = try await globex.sync()
        #expect(report.pulled == 0)
        #expect(try globex.local { try $0.record(secret) } == nil)
        await fixture.stop()
    }

    @Test func aClientThatDoesNotTrustTheServerRefusesToConnect() async throws {
        let fixture = try await ServerFixture()
        let other = try DevCertificates.generate(commonName: "someone else")
        let otherCA = fixture.dir.path("other-ca.pem")
        try other.caCertificatePEM.write(toFile: otherCA, atomically: true, encoding: .utf8)

        let wrongCA = try fixture.device("a") { $0.trustRoots = .certificates(.file(otherCA)) }
        let caError = try await #require(throws: TLSError.self) { try await wrongCA.sync() }
        #expect(caError.description.contains("verif") || caError.verifyResult != nil)

        let wrongName = try fixture.device("b") { $0.serverName = "crm.example.com" }
        let nameError = try await #require(throws: TLSError.self) { try await wrongName.sync() }
        #expect("\(nameError)".lowercased().contains("hostname") || nameError.verifyResult != nil)

        let wrongPin = try fixture.device("c") { $0.serverKeyPin = String(repeating: "ab", count: 32) }
        let pinError = try await #require(throws: TLSError.self) { try await wrongPin.sync() }
        #expect(pinError.operation == .pinVerification)

        let rightPin = try SPKIPin.sha256Hex(certificateFile: fixture.dir.path("server") + "/tls/server-chain.pem")
        let pinned = try fixture.device("d") { $0.serverKeyPin = rightPin }
        try await pinned.sync()
        await fixture.stop()
    }

    @Test func aLiveDeviceSeesAColleaguesEditWithoutPolling() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let bobLive = bob.live()
        var bobEvents = bobLive.events.makeAsyncIterator()
        // Connected, then the initial (empty) sync.
        guard case .connected? = await bobEvents.next(), case .synced? = await bobEvents.next() else {
            Issue.record("bob's live session did not start")
            return
        }
        let aliceLive = alice.live()
        var aliceEvents = aliceLive.events.makeAsyncIterator()
        _ = await aliceEvents.next()
        _ = await aliceEvents.next()

        let id = try alice.local { try $0.create("account", ["name": .text("Initech")]).id }
        aliceLive.pushNow()
        var received = false
        while !received, let event = await bobEvents.next() {
            if case .synced(let report) = event, report.pulled > 0 { received = true }
        }
        #expect(received)
        #expect(try bob.local { try $0.record(id)?.values["name"] } == .text("Initech"))

        // The other way round, through the same open sessions.
        try bob.local { try $0.update(id, ["phone": .text("555-0123")]) }
        bobLive.pushNow()
        received = false
        while !received, let event = await aliceEvents.next() {
            if case .synced(let report) = event, report.pulled > 0 { received = true }
        }
        #expect(try alice.local { try $0.record(id)?.values["phone"] } == .text("555-0123"))
        await aliceLive.stop()
        await bobLive.stop()
        await fixture.stop()
    }

    /// A live device busy pushing its own changes still pulls a colleague's: the announcement
    /// mostly comes while its session waits for a push's answer, and must not be dropped there.
    @Test func aLiveDeviceBusyPushingStillPullsWhatWasAnnouncedMeanwhile() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let id = try alice.local { try $0.create("account", ["name": .text("edit 0")]).id }
        try await alice.sync()
        try await bob.sync()
        let bobLive = bob.live()
        var bobEvents = bobLive.events.makeAsyncIterator()
        _ = await bobEvents.next()
        _ = await bobEvents.next()
        rounds: for round in 1...10 {
            let expected = FieldValue.text("edit \(round)")
            try alice.local { _ = try $0.update(id, ["name": expected]) }
            let announced = Mutex(false)
            let edit = Task {
                try await alice.sync()
                announced.withLock { $0 = true }
            }
            // Bob writes without pause, so a push request always arrives while his session waits
            // for the answer to the last push: the state in which a pending push once came
            // before an announcement, every time.
            let writer = Task {
                var n = 0
                while !Task.isCancelled {
                    try bob.local { _ = try $0.create("account", ["name": .text("bob \(round)-\(n)")]) }
                    bobLive.pushNow()
                    n += 1
                    try? await Task.sleep(for: .milliseconds(1))
                }
            }
            // Counted in bob's syncs after alice's has returned (her edit committed and
            // announced), not in seconds: a loaded machine may take long to bring her edit in.
            var syncsSinceAnnounced = 0
            while try bob.local({ try $0.record(id)?.values["name"] }) != expected {
                if announced.withLock({ $0 }) { syncsSinceAnnounced += 1 }
                guard syncsSinceAnnounced <= 20 else {
                    Issue.record("round \(round): bob synced 20 times after alice's edit was announced and never pulled it")
                    writer.cancel()
                    break rounds
                }
                guard case .synced? = await bobEvents.next() else {
                    Issue.record("bob's live session ended")
                    writer.cancel()
                    break rounds
                }
            }
            writer.cancel()
            try await writer.value
            _ = try await edit.value
        }
        await bobLive.stop()
        await fixture.stop()
    }
    /// The other way round: a device edits while its live session is pulling. The push request
    /// is read inside the pull's wait for a batch; the session must push once the pull ends, not
    /// wait for the next input (here a keep-alive an hour away, so a lost request hangs).
    @Test func aLiveDeviceBusyPullingStillPushesWhatWasWrittenMeanwhile() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice")
        let bob = try fixture.device("bob") {
            $0.pullBatchSize = 10
            $0.keepAliveInterval = .seconds(3600)
        }
        try alice.local { store in
            for n in 0..<400 { _ = try store.create("account", ["name": .text("bulk \(n)")]) }
        }
        try await bob.sync()
        let bobLive = bob.live()
        var bobEvents = bobLive.events.makeAsyncIterator()
        guard case .connected? = await bobEvents.next(), case .synced? = await bobEvents.next() else {
            Issue.record("bob's live session did not start")
            return
        }
        // Bob's first batch of alice's 400 accounts commits, with 39 batches to go. (Alice pushes
        // them in one batch, so one announcement: a second would wake bob's loop and hide the bug.)
        let changes = try await bob.changes()
        let edit = Task { () throws -> UUID? in
            for await change in changes where change.origin == .upstream {
                let id = try bob.local { try $0.create("account", ["name": .text("written mid-pull")]).id }
                bobLive.pushNow()
                return id
            }
            return nil
        }
        let watchdog = Task {
            try await Task.sleep(for: .seconds(60))
            await bobLive.stop()
        }
        try await alice.sync()
        var pushed = 0
        while pushed == 0, let event = await bobEvents.next() {
            if case .synced(let report) = event { pushed += report.pushed }
        }
        watchdog.cancel()
        #expect(pushed == 1, "bob's edit made during his pull was never pushed")
        let id = try #require(try await edit.value)
        try await alice.sync()
        #expect(try alice.local { try $0.record(id)?.values["name"] } == .text("written mid-pull"))
        #expect(try bob.local { try $0.count(ofType: "account") } == 401)
        await bobLive.stop()
        await fixture.stop()
    }
}
