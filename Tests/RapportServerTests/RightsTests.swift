import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// Rights through a real `rapportd` process: an admin, reps in two teams, and writes that
/// devices push. What a rep may not do is written through a second handle on the rep's store
/// file, which runs no check of its own, and pushed as a client that skips the device's check
/// would push it; the server must refuse it with the rule, whatever the client did.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct RightsTests {
    @Test func theServerRefusesWhatARoleMayNotDoAndNamesTheRule() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        for (email, role, team) in [("nina", "rep", "north"), ("nick", "rep", "north"), ("sam", "rep", "south")] {
            let added = try await operated.ctl.run(["user", "add", "--tenant", "acme", "--email", "\(email)@acme.example",
                                              "--name", email, "--role", role, "--team", team])
            #expect(added.status == 0, "\(added.error)")
        }
        let anna = try await operated.enroll("anna-laptop")
        let (north, north2) = try anna.local { store in
            try store.transaction {
                (try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")]).id,
                 try store.create("account", ["name": .text("North Two"), "owner": .text("nick@acme.example")]).id)
            }
        }
        #expect(try await anna.sync().rejected == 0, "an admin writes anything")

        let sam = try await operated.enroll("sam-phone", user: "sam@acme.example")
        let nina = try await operated.enroll("nina-phone", user: "nina@acme.example")
        let nick = try await operated.enroll("nick-phone", user: "nick@acme.example")
        for device in [sam, nina, nick] { try await device.sync() }

        // The Welcome tells a device its rights, so it can check before a change leaves it.
        let welcome = try await welcomeOf(sam, operated)
        #expect(welcome.access.user == "sam@acme.example")
        #expect(welcome.access.role == "rep")
        #expect(welcome.access.team == "south")
        #expect(welcome.access.types.first { $0.type == "account" }?.hiddenFields == ["annual_revenue"])

        // Sam (south) takes a north account, which his device never received: refused with the
        // rule, kept in sam's conflict log.
        #expect(try sam.local { try $0.record(north) } == nil, "a rep of another team does not receive it")
        let northState = try #require(try anna.local { try $0.record(north) })
        try bypass("sam-phone", sam, operated) { store in
            try store.apply([northState])
            try store.update(north, ["owner": .text("sam@acme.example")])
        }
        let refused = try await pushDirty(of: sam, operated)
        #expect(refused.map(\.outcome) == [.rejected])
        #expect(refused.first?.code == .permissionDenied)
        #expect(refused.first?.reason.contains("reps may not change the owner of an account they do not own") == true,
                "\(refused.first?.reason ?? "")")
        let report = try await sam.sync()
        #expect(report.rejected == 1)
        let logged = try sam.local { try $0.conflicts() }.filter { $0.conflict.kind == .rejected }
        #expect(logged.first?.reason?.contains("reps may not change the owner") == true, "\(logged)")

        // Nina may edit her own account; not the tenant's configuration, nor a hidden field.
        try nina.local { _ = try $0.update(north, ["phone": .text("+44 20 7946 0000")]) }
        #expect(try await nina.sync().rejected == 0)
        try bypass("nina-phone", nina, operated) { store in
            _ = try store.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)])
            _ = try store.update(north, ["annual_revenue": .real(5e6)])
        }
        let ninas = try await pushDirty(of: nina, operated)
        #expect(ninas.map(\.code) == [.permissionDenied, .permissionDenied], "\(ninas.map(\.reason))")
        #expect(Set(ninas.map { $0.reason.components(separatedBy: ": ").last ?? "" })
                == ["reps may not create pipeline_stages", "reps may not write the field annual_revenue"])

        // The admin's configuration write goes through.
        try anna.local { _ = try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)]) }
        #expect(try await anna.sync().rejected == 0, "an admin writes the tenant's configuration")

        // A role changed by the operator applies at the device's next push.
        try bypass("nick-phone", nick, operated) { _ = try $0.delete(north2) }
        #expect(try await pushDirty(of: nick, operated).map(\.code) == [.permissionDenied])
        await #expect(try operated.ctl.run(["user", "set-role", "--tenant", "acme", "--email", "nick@acme.example", "--role", "manager"]).status == 0)
        #expect(try await pushDirty(of: nick, operated).map(\.outcome) == [.applied], "a manager deletes the team's accounts")

        // What the server holds: nothing refused got in.
        try await anna.sync()
        let held = try #require(try anna.local { try $0.record(north) })
        #expect(held.values["owner"] == .text("nina@acme.example"))
        #expect(held.values["phone"] == .text("+44 20 7946 0000"))
        #expect(held.values["annual_revenue"] == nil)
        #expect(try anna.local { try $0.record(north2)?.isDeleted } == true)
        #expect(try anna.local { try $0.records(ofType: "pipeline_stage") }.filter { $0.values["name"] == .text("Pilot") }.count == 1,
                "only the admin's Pilot stage, not nina's")
    }

    /// Writes to the store file of `device` (enrolled as `name`) through a handle of its own,
    /// which runs none of the device's checks: what a client that skips them would hold.
    func bypass(_ name: String, _ device: RapportClient, _ operated: OperatedServer, _ body: (ReplicaStore) throws -> Void) throws {
        let store = try ReplicaStore(path: operated.dir.path("\(name).sqlite"), options: .crm(replicaID: try ReplicaID(device.store.replicaID)))
        defer { store.close() }
        try store.transaction { try body(store) }
    }

    /// Pushes the device's dirty records over a raw session and returns the server's answers.
    func pushDirty(of device: RapportClient, _ operated: OperatedServer) async throws -> [Rapport_V1_RecordResult] {
        let (connection, _) = try await established(device, operated)
        defer { Task { await connection.close() } }
        let dirty = try device.local { try $0.dirtyRecords() }
        try await connection.send(.pushFrame(dirty.map(Rapport_V1_Record.init)))
        guard case .pushResult(let result)? = try await connection.nextFrame()?.body else {
            throw BenchError("no PushResult")
        }
        return result.results
    }

    func welcomeOf(_ device: RapportClient, _ operated: OperatedServer) async throws -> Rapport_V1_Welcome {
        let (connection, welcome) = try await established(device, operated)
        await connection.close()
        return welcome
    }

    func established(_ device: RapportClient, _ operated: OperatedServer) async throws -> (RawConnection, Rapport_V1_Welcome) {
        let connection = try await RawConnection.connect(port: operated.server.port, caPath: operated.data + "/tls/ca.pem")
        try await connection.waitForHandshake()
        try await connection.send(.helloFrame(device: device.store.replicaID, secret: device.configuration.secret))
        guard case .welcome(let welcome)? = try await connection.nextFrame()?.body else {
            throw BenchError("no Welcome")
        }
        return (connection, welcome)
    }
}
