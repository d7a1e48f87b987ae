import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// What each device receives, through a real `rapportd` process: a rep gets their team's records
/// and what hangs off them, never a field their role hides, and loses what leaves their scope.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct ScopesTests {
    @Test func eachDeviceHoldsItsScopeAndRecordsLeaveAndEnterWithReassignment() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        for (email, role, team) in [("nina", "rep", "north"), ("sam", "rep", "south")] {
            await #expect(try operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "\(email)@acme.example",
                                          "--name", email, "--role", role, "--team", team]).status == 0)
        }
        let anna = try await operated.enroll("anna-laptop")
        let ids = try anna.local { store in
            try store.transaction { () -> (UUID, UUID, UUID, UUID) in
                let north = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example"),
                                                         "annual_revenue": .real(1.2e6)]).id
                let ada = try store.create("contact", ["last_name": .text("Lovelace"), "account": .text(north.uuidString)]).id
                let south = try store.create("account", ["name": .text("South plc"), "owner": .text("sam@acme.example")]).id
                let grace = try store.create("contact", ["last_name": .text("Hopper"), "account": .text(south.uuidString)]).id
                return (north, ada, south, grace)
            }
        }
        let (north, ada, south, grace) = ids
        try await anna.sync()
        let nina = try await operated.enroll("nina-phone", user: "nina@acme.example")
        let sam = try await operated.enroll("sam-phone", user: "sam@acme.example")
        try await nina.sync()
        try await sam.sync()

        func holds(_ device: RapportClient) throws -> Set<UUID> {
            Set(try device.local { store in try ["account", "contact"].flatMap { try store.records(ofType: $0) } }.map(\.id))
        }
        #expect(try holds(nina) == [north, ada])
        #expect(try holds(sam) == [south, grace])
        let ninasNorth = try #require(try nina.local { try $0.record(north) })
        #expect(ninasNorth.fields["annual_revenue"] == nil, "a field the rep's role hides never reaches the rep's device")
        #expect(try anna.local { try $0.record(north)?.values["annual_revenue"] } == .real(1.2e6))

        // On the wire: nothing of the other team, no hidden field, in any frame of a pull from 0.
        let frames = try await rawPullFromZero(nina, operated)
        let wire = try frames.flatMap(\.records).map { try $0.decoded() }
        #expect(Set(wire.map(\.id)).isDisjoint(with: [south, grace]))
        #expect(wire.allSatisfy { $0.fields["annual_revenue"] == nil })
        #expect(!wire.isEmpty)

        // Nina edits Ada (hers through North Ltd), and it is accepted. Then North Ltd goes to sam.
        try nina.local { _ = try $0.update(ada, ["phone": .text("+44 20 7946 0001")]) }
        #expect(try await nina.sync().rejected == 0)
        try anna.local { _ = try $0.update(north, ["owner": .text("sam@acme.example")]) }
        try await anna.sync()
        // An edit nina makes offline before she hears of it is refused by the rights of the
        // moment, and kept in her conflict log; the records then leave her device, not as deletes.
        try nina.local { _ = try $0.update(ada, ["title": .text("Countess")]) }
        let report = try await nina.sync()
        #expect(report.rejected == 1)
        #expect(report.evicted == 2)
        #expect(try holds(nina).isEmpty, "North Ltd and Ada, which hangs off it, left nina's device")
        #expect(try nina.local { try $0.record(ada) } == nil, "evicted, not a tombstone")
        let refusals = try nina.local { try $0.conflicts() }.filter { $0.conflict.kind == .rejected && $0.conflict.recordID == ada }
        #expect(refusals.count == 1, "the refused edit stays in nina's conflict log")
        try await sam.sync()
        #expect(try holds(sam) == [north, ada, south, grace], "Ada came with North Ltd although she did not change")
        #expect(try sam.local { try $0.record(ada)?.values["phone"] } == .text("+44 20 7946 0001"), "nina's accepted edit")
        try await anna.sync()
        #expect(try anna.local { try $0.record(ada)?.values["title"] } == nil, "the refused edit never reached the server")

        // Nina becomes an admin: at her next sync she sees everything, the hidden field included.
        await #expect(try operated.ctl.run(["user", "set-role", "--tenant", "acme", "--email", "nina@acme.example", "--role", "admin"]).status == 0)
        try await nina.sync()
        #expect(try holds(nina) == [north, ada, south, grace])
        #expect(try nina.local { try $0.record(north)?.values["annual_revenue"] } == .real(1.2e6))
        // And back to rep: everything goes but what is hers (nothing), the field with it.
        await #expect(try operated.ctl.run(["user", "set-role", "--tenant", "acme", "--email", "nina@acme.example", "--role", "rep"]).status == 0)
        try await nina.sync()
        #expect(try holds(nina).isEmpty)
    }

    /// A rep's role narrowed by the operator while the rep's device is live: the device loses
    /// what its user may no longer see without pushing anything.
    @Test func aLiveDeviceLosesWhatItsUserMayNoLongerSeeWithoutAsking() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        await #expect(try operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "nina@acme.example", "--name", "Nina",
                                      "--role", "rep", "--team", "north"]).status == 0)
        let anna = try await operated.enroll("anna-laptop")
        let north = try anna.local { try $0.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")]).id }
        try await anna.sync()
        let nina = try await operated.enroll("nina-phone", user: "nina@acme.example")
        let live = nina.live()
        var events = live.events.makeAsyncIterator()
        guard case .connected? = await events.next(), case .synced? = await events.next() else {
            Issue.record("the live session did not start")
            return
        }
        #expect(try nina.local { try $0.record(north) } != nil)
        let narrowed = try await operated.ctl.run(["role", "set", "rep", "--tenant", "acme", "account",
                                             "--read", "none", "--write", "none", "--delete", "none", "--no-create"])
        #expect(narrowed.status == 0, "\(narrowed.error)")
        var evicted = 0
        while evicted == 0, let event = await events.next() {
            if case .synced(let report) = event { evicted += report.evicted }
        }
        #expect(try nina.local { try $0.record(north) } == nil)
        await live.stop()
    }

    /// A record the device holds that changed after what it hangs off, both since the device's
    /// last pull: the change of the parent makes the server look at what hangs off it (unchanged
    /// as far as that look goes), and the child's own change, later in the same batch, must
    /// still be sent.
    @Test func aChangeOfWhatHangsOffAChangedRecordReachesTheDeviceInTheSameBatch() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        await #expect(try operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "nina@acme.example", "--name", "Nina",
                                      "--role", "rep", "--team", "north"]).status == 0)
        let anna = try await operated.enroll("anna-laptop")
        let (north, ada) = try anna.local { store in
            try store.transaction { () -> (UUID, UUID) in
                let north = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")]).id
                let ada = try store.create("contact", ["last_name": .text("Lovelace"), "account": .text(north.uuidString)]).id
                return (north, ada)
            }
        }
        try await anna.sync()
        let nina = try await operated.enroll("nina-phone", user: "nina@acme.example")
        try await nina.sync()
        #expect(try nina.local { try $0.record(ada)?.values["title"] } == nil)
        // The account changes first, then the contact that hangs off it.
        try anna.local { _ = try $0.update(north, ["industry": .text("Engines")]) }
        try anna.local { _ = try $0.update(ada, ["title": .text("Countess")]) }
        try await anna.sync()
        let report = try await nina.sync()
        #expect(try nina.local { try $0.record(north)?.values["industry"] } == .text("Engines"))
        #expect(try nina.local { try $0.record(ada)?.values["title"] } == .text("Countess"), "pulled \(report.pulled)")
    }

    /// A contact of an account deleted since stands to the account's owner through it: a device
    /// pulling from 0 (a new device of the owner) gets it, as one that held the account does.
    @Test func aPullFromZeroBringsWhatHangsOffADeletedRecordTheUserMayRead() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        await #expect(try operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "nina@acme.example", "--name", "Nina",
                                      "--role", "rep", "--team", "north"]).status == 0)
        let anna = try await operated.enroll("anna-laptop")
        _ = try anna.local { try $0.create("account", ["name": .text("South plc"), "owner": .text("anna@acme.example")]) }
        try await anna.sync()
        let phone = try await operated.enroll("nina-phone", user: "nina@acme.example")
        try await phone.sync()
        let (north, ada) = try anna.local { store in
            try store.transaction { () -> (UUID, UUID) in
                let north = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")]).id
                let ada = try store.create("contact", ["last_name": .text("Lovelace"), "account": .text(north.uuidString)]).id
                return (north, ada)
            }
        }
        try anna.local { _ = try $0.delete(north) }
        try await anna.sync()
        try await phone.sync()
        #expect(try phone.local { try $0.record(ada).map { !$0.isDeleted } } == true, "an incremental pull brings Ada")
        let tablet = try await operated.enroll("nina-tablet", user: "nina@acme.example")
        try await tablet.sync()
        #expect(try tablet.local { try $0.record(ada).map { !$0.isDeleted } } == true, "a pull from 0 brings Ada too")
        #expect(try tablet.local { try $0.record(north) } == nil, "not the tombstone of what she never held")
    }

    /// An account given away and deleted before the rep's device pulls: the contact that hangs
    /// off it leaves the device with it, as a pull from 0 would leave it out.
    @Test func whatHangsOffARecordGivenAwayAndDeletedLeavesTheDevice() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        await #expect(try operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "nina@acme.example", "--name", "Nina",
                                      "--role", "rep", "--team", "north"]).status == 0)
        let anna = try await operated.enroll("anna-laptop")
        let (north, ada) = try anna.local { store in
            try store.transaction { () -> (UUID, UUID) in
                let north = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")]).id
                let ada = try store.create("contact", ["last_name": .text("Lovelace"), "account": .text(north.uuidString)]).id
                return (north, ada)
            }
        }
        try await anna.sync()
        let phone = try await operated.enroll("nina-phone", user: "nina@acme.example")
        try await phone.sync()
        #expect(try phone.local { try $0.record(ada) } != nil)
        try anna.local { _ = try $0.update(north, ["owner": .text("anna@acme.example")]) }
        try anna.local { _ = try $0.delete(north) }
        try await anna.sync()
        try await phone.sync()
        #expect(try phone.local { try $0.record(ada) } == nil, "Ada hangs off an account nina no longer owns")
        let tablet = try await operated.enroll("nina-tablet", user: "nina@acme.example")
        try await tablet.sync()
        #expect(try tablet.local { try $0.record(ada) } == nil, "nor does a pull from 0 bring her")
    }

    /// Every PullBatch of a pull from 0 as the server sends it to `device`.
    func rawPullFromZero(_ device: RapportClient, _ operated: OperatedServer) async throws -> [Rapport_V1_PullBatch] {
        let connection = try await RawConnection.connect(port: operated.server.port, caPath: operated.data + "/tls/ca.pem")
        defer { Task { await connection.close() } }
        try await connection.waitForHandshake()
        try await connection.send(.helloFrame(device: device.store.replicaID, secret: device.configuration.secret))
        guard case .welcome? = try await connection.nextFrame()?.body else { throw BenchError("no Welcome") }
        var batches: [Rapport_V1_PullBatch] = []
        var after: UInt64 = 0
        repeat {
            try await connection.send(.pullFrame(after: after, limit: 2))
            guard case .pullBatch(let batch)? = try await connection.nextFrame()?.body else { throw BenchError("no PullBatch") }
            batches.append(batch)
            after = batch.lastSequence
        } while batches.last!.remainingRecords > 0
        return batches
    }
}
