import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import SQLite
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// Tombstones past the tenant's horizon, through a `rapportd` process and `rapportctl` (SPEC.md
/// 1.8): the server's housekeeping purges them, a device offline for longer resyncs without
/// losing what it held unsynced, and compaction runs while devices push.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct HorizonTests {
    func retention(_ ctl: Ctl) throws -> [String: Any] {
        let shown = try ctl.run(["retention", "show", "acme", "--json"])
        #expect(shown.status == 0, "\(shown.error)")
        return shown.json as? [String: Any] ?? [:]
    }

    /// A device that pushed what it made but was cut before its first pull holds records and no
    /// checkpoint: its next pull from 0 must be a resync once the server has purged, or it keeps
    /// a record deleted elsewhere meanwhile, clean, for good (a branch stopped right after
    /// relaying its devices' writes is the same case).
    @Test func aDeviceWithRecordsButNoCheckpointResyncsAfterAPurge() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir, arguments: ["--housekeeping-interval", "0.3", "--rules-interval", "0"])
        defer { operated.server.stop() }
        await #expect(try operated.ctl.run(["retention", "set", "acme", "--tombstones", "1s"]).status == 0)
        let laptop = try await operated.enroll("laptop")
        let phone = try await operated.enroll("phone")
        let (kept, doomed) = try laptop.local { store throws in
            (try store.create("contact", ["last_name": .text("Kept")]).id, try store.create("contact", ["last_name": .text("Doomed")]).id)
        }
        try await laptop.sync()
        try await phone.sync()
        var readOnly = Database.Options()
        readOnly.readOnly = true
        let serverStore = try Database(path: try DataDirectory(operated.data).storePath(of: "acme"), options: readOnly)
        let serverID = try #require(try serverStore.query("SELECT replica_id FROM replica") { $0.string(0) }.first)
        serverStore.close()
        try laptop.local { store throws in try store.resetCheckpoint(for: serverID) }

        try phone.local { store throws in _ = try store.delete(doomed) }
        try await phone.sync()
        var state: [String: Any] = [:]
        for _ in 0..<100 {
            state = try retention(operated.ctl)
            if state["tombstones"] as? Int == 0, (state["purged_through"] as? Int ?? 0) > 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(state["tombstones"] as? Int == 0 && (state["purged_through"] as? Int ?? 0) > 0, "\(state)")

        let report = try await laptop.sync()
        #expect(report.dropped == 1, "the record deleted elsewhere and purged goes: \(report)")
        try laptop.local { store throws in
            #expect(try store.record(doomed) == nil)
            #expect(try store.record(kept)?.text("last_name") == "Kept")
            #expect(try store.resyncPeer() == nil)
        }
    }

    @Test func aDeviceOfflinePastTheHorizonResyncsWithoutLosingItsEditsAndDeletes() async throws {
        let dir = try TemporaryDirectory()
        let log = dir.path("rapportd.log")
        let operated = try await OperatedServer(dir, arguments: ["--housekeeping-interval", "0.3", "--rules-interval", "0", "--log-level", "info"],
                                      logFile: log)
        defer { operated.server.stop() }
        let ctl = operated.ctl
        let set = try await ctl.run(["retention", "set", "acme", "--tombstones", "2s", "--conflicts", "1h"])
        #expect(set.status == 0, "\(set.error)")
        #expect(set.output.contains("tombstones kept 2s"), "\(set.output)")
        await #expect(try ctl.run(["retention", "set", "acme", "--tombstones", "soon"]).status == 1, "a duration without a unit is refused")

        let laptop = try await operated.enroll("laptop")
        let phone = try await operated.enroll("phone")
        let (edited, deletedHere, deletedThere, untouched) = try laptop.local { store throws in
            try store.transaction {
                try (1...4).map { try store.create("contact", ["last_name": .text("Contact \($0)")]).id }
            }
        }.tuple4
        try await laptop.sync()
        try await phone.sync()
        #expect(try phone.local { try $0.count(ofType: "contact") } == 4)

        // The laptop goes offline with unsynced work: an edit, a new record, and a delete of a
        // record the phone deletes too (whose tombstone the server will purge).
        let created = try laptop.local { store -> UUID in
            _ = try store.update(edited, ["department": .text("Field sales")])
            _ = try store.delete(deletedHere)
            return try store.create("contact", ["last_name": .text("Made offline")]).id
        }
        try phone.local { store throws in
            _ = try store.delete(deletedHere)
            _ = try store.delete(deletedThere)
        }
        try await phone.sync()

        // The server purges both tombstones once they are older than 2 s.
        var state: [String: Any] = [:]
        for _ in 0..<100 {
            state = try retention(ctl)
            if state["tombstones"] as? Int == 0, (state["purged_through"] as? Int ?? 0) > 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(state["tombstones"] as? Int == 0 && (state["purged_through"] as? Int ?? 0) > 0, "\(state)")
        #expect(state["tombstone_horizon"] as? String == "2s")

        // The phone synced after the deletes: its checkpoint is past what was purged.
        let phoneReport = try await phone.sync()
        #expect(phoneReport.dropped == 0)

        // The laptop comes back: told to resync, it pushes first, then takes a fresh copy.
        let report = try await laptop.sync()
        // Its own delete of `deletedHere` went up again as a tombstone, which the fresh copy
        // brings back, unless the sync took longer than the 2 s horizon (a loaded machine) and
        // housekeeping purged it again meanwhile: then that tombstone is dropped too.
        let tombstoneDropped = try laptop.local { try $0.record(deletedHere) == nil }
        #expect(report.dropped == (tombstoneDropped ? 2 : 1), "the record deleted elsewhere and purged goes: \(report)")
        try laptop.local { store throws in
            #expect(try store.record(deletedThere) == nil, "no tombstone needed")
            #expect(try store.record(edited)?.text("department") == "Field sales")
            #expect(try store.record(created) != nil)
            #expect(try store.record(untouched) != nil)
            #expect(try store.record(deletedHere).map(\.isDeleted) ?? true)
            #expect(try store.dirtyCount() == 0)
            #expect(try store.resyncPeer() == nil)
        }
        try await phone.sync()
        try phone.local { store throws in
            #expect(try store.record(edited)?.text("department") == "Field sales", "the offline edit reached the others")
            #expect(try store.record(created) != nil, "and the record made offline")
            #expect(try store.record(deletedHere).map(\.isDeleted) ?? true, "the delete of a purged record stays a delete")
            #expect(try store.record(deletedThere).map(\.isDeleted) ?? true)
        }
        let laptopLive = try laptop.local { store in try store.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }.map(\.state) }
        let phoneLive = try phone.local { store in try store.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }.map(\.state) }
        #expect(Set(laptopLive) == Set(phoneLive))
        #expect(laptopLive.count == 3)

        // Devices learnt the horizon and purge their own tombstones after it.
        try await Task.sleep(for: .milliseconds(2_200))
        try await phone.sync()
        try await Task.sleep(for: .milliseconds(2_200))
        try await phone.sync()
        #expect(try phone.local { try $0.tombstoneCount() } == 0)
        #expect(try phone.local { try $0.upstreamRetention }?.tombstoneHorizon == 2_000)

        await operated.server.stop()
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.contains("housekeeping done") && text.contains("tombstones_purged=2"), "\(text.suffix(2000))")
        #expect(!text.contains("housekeeping failed"), "\(text.suffix(2000))")
        await #expect(try ctl.run(["audit", "--tenant", "acme"]).output.contains("retention set"))
    }

    @Test func compactionRunsWhileDevicesPush() async throws {
        let dir = try TemporaryDirectory()
        let log = dir.path("rapportd.log")
        let operated = try await OperatedServer(dir, arguments: ["--housekeeping-interval", "0.2", "--rules-interval", "0", "--log-level", "debug"],
                                      logFile: log)
        defer { operated.server.stop() }
        let ctl = operated.ctl
        await #expect(try ctl.run(["retention", "set", "acme", "--tombstones", "1s"]).status == 0)
        let devices = [try await operated.enroll("one"), try await operated.enroll("two"), try await operated.enroll("three")]
        let note = String(repeating: "n", count: 1_500)
        let deadline = ContinuousClock.now + .seconds(6)
        let kept = try await withThrowingTaskGroup(of: [UUID].self) { group in
            for device in devices {
                group.addTask {
                    var kept: [UUID] = []
                    var round = 0
                    while ContinuousClock.now < deadline {
                        round += 1
                        try device.local { store in
                            try store.transaction {
                                // Twenty records each round, all but one deleted at once: the
                                // store fills with tombstones for the purge and room for the vacuum.
                                for index in 0..<20 {
                                    let id = try store.create("contact", ["last_name": .text("R\(round)-\(index)"), "title": .text(note)]).id
                                    if index == 0 { kept.append(id) } else { _ = try store.delete(id) }
                                }
                            }
                        }
                        try await device.sync()
                    }
                    return kept
                }
            }
            group.addTask {
                // And the operator's on-demand run beside the server's.
                for _ in 0..<3 {
                    let run = try await ctl.run(["retention", "run", "acme", "--json"])
                    #expect(run.status == 0, "\(run.error)")
                    try await Task.sleep(for: .seconds(1))
                }
                return []
            }
            var all: [UUID] = []
            for try await ids in group { all += ids }
            return all
        }
        for device in devices { try await device.sync() }
        let server = try ReplicaStore(path: operated.data + "/tenants/acme.sqlite", options: .crm(role: .authority))
        defer { server.close() }
        for id in kept { #expect(try server.record(id)?.isDeleted == false, "every kept record reached the server") }
        let live = Set(try server.changes(after: 0, limit: .max).filter { !$0.state.isDeleted }.map(\.state.id))
        #expect(live == Set(kept))
        for device in devices {
            let held = Set(try device.local { try $0.changes(after: 0, limit: .max) }.filter { !$0.state.isDeleted }.map(\.state.id))
            #expect(held == live, "each device holds every record pushed")
        }
        #expect(try server.purgedThrough > 0)
        await operated.server.stop()
        let text = try String(contentsOfFile: log, encoding: .utf8)
        let runs = text.components(separatedBy: "housekeeping done").count - 1
        #expect(runs >= 3, "\(text.suffix(2000))")
        #expect(text.contains("registry_pages_freed"))
        #expect(!text.contains("housekeeping failed"), "\(text.suffix(3000))")
    }
}

private extension Array {
    /// The first four elements, for a destructuring `let`.
    var tuple4: (Element, Element, Element, Element) { (self[0], self[1], self[2], self[3]) }
}
