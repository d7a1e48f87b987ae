import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// A centre that purges tombstones past the horizon while a branch office's link is down
/// (SPEC.md 1.8, 6.5): the branch is told to resync like a device, drops what the centre purged,
/// and passes the resync on to its devices, which drop it too; its link keeps working and an
/// edit a device made meanwhile reaches the centre.
///
/// It once failed beside other suites: a branch stopped before it had pulled its devices' own
/// writes back held them with no checkpoint, and took the pull from 0 after the purge as an
/// initial sync, keeping the purged record; a store with records and no checkpoint now resyncs
/// when the server has purged (SPEC.md 1.8).
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread)
struct BranchHorizonTests {
    @Test func aBranchPastTheHorizonResyncsAndPassesTheResyncOnToItsDevices() async throws {
        let topology = try BranchTopology()
        defer { topology.stopAll() }
        try topology.ctl.ok(["retention", "set", BranchTopology.tenant, "--tombstones", "1s"])
        let branch = try topology.addBranch("lyon")
        let ana = try topology.enroll("ana", user: BranchTopology.admin, at: branch)
        let ben = try topology.enroll("ben", user: BranchTopology.admin, at: nil)
        let kept = try ana.create("contact", ["last_name=Kept"])
        let doomed = try ana.create("contact", ["last_name=Doomed"])
        try ana.synced()
        try await topology.settle()
        try await waitFor("ben holds both") { try ben.synced(); return try ben.fields(of: doomed) }

        // The branch is down; meanwhile the record is deleted at the centre and its tombstone purged.
        topology.stop(branch)
        let deleted = try await ben.cli.run(["delete", doomed.uuidString.lowercased()])
        #expect(deleted.status == 0, "\(deleted.error)")
        try ben.synced()
        try topology.ctl.ok(["retention", "run", BranchTopology.tenant])
        try await Task.sleep(for: .milliseconds(1_200))
        let run = try topology.ctl.ok(["retention", "run", BranchTopology.tenant, "--json"])
        let purge = try #require((run.json as? [String: Any])?["purge"] as? [String: Any], "\(run.output)")
        #expect(purge["tombstones_purged"] as? Int == 1, "\(run.output)")
        try ana.update("contact", kept, ["department=Offline edit"])

        // The branch comes back: its link resyncs, and then its device does.
        try topology.start(branch)
        try await waitFor("the branch drops the purged record", within: .seconds(60), describe: {
            let states = try? topology.contents(of: branch).states
            return topology.describe(branch) + "; doomed \(states?[doomed].map { "\($0)" } ?? "gone"); kept \(states?[kept].map { "\($0.vector)" } ?? "gone")"
        }) {
            try topology.contents(of: branch).states[doomed] == nil && topology.contents(of: branch).states[kept] != nil ? true : nil
        }
        let report = try await waitFor("ana resyncs at the branch", within: .seconds(60)) { () -> [String: Int]? in
            let report = try ana.synced()
            return report["dropped"] == 1 ? report : nil
        }
        #expect(report["rejected"] == 0)
        #expect(try ana.fields(of: doomed) == nil)
        try await topology.settle()
        try await waitFor("the offline edit reaches the centre") {
            try topology.centreContents().states[kept]?.text("department") == "Offline edit" ? true : nil
        }
        let link = try topology.link(branch)
        #expect(link["connected"] as? Bool == true, "\(link)")
        #expect(try topology.centreContents().states[doomed] == nil)
    }
}
