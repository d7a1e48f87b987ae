import CRM
import Foundation
import ReplicaStore
import SyncModel
import Testing
import TestScheduling

/// The answers of Protocol/SPEC.md's clarifications that live in a replica store, pinned on a
/// CRM store: each test names the clarification it holds.
struct SpecClarificationStoreTests {
    static let wall = UInt64(Fixture.now.timeIntervalSince1970 * 1000)

    static func fixture() throws -> Fixture {
        var options = ReplicaStore.Options(schema: CRMSchema.current)
        options.wallClock = { wall }
        return try Fixture(options: options)
    }

    /// Clarification 10: every local operation is one write with its own dot, so a counter
    /// increment in the same transaction as field updates takes the next counter, not theirs.
    @Test(.blocking) func anIncrementInTheTransactionOfAnUpdateHasADotOfItsOwn() throws {
        let fixture = try Self.fixture()
        let store = fixture.store
        let id = try fixture.account("Acme")
        let state = try store.transaction {
            try store.update(id, ["region": .text("North")])
            return try store.increment(id, field: "loyalty_points", by: 5)
        }
        guard case .register(let region)? = state.fields["region"], case .counter(let points)? = state.fields["loyalty_points"],
              let contribution = points.contributions[store.replicaID] else {
            Issue.record("fields missing: \(state.fields.keys)")
            return
        }
        #expect(contribution.lastCounter == region.dot.counter + 1)
        #expect(state.vector[store.replicaID] == contribution.lastCounter)
    }

    /// Clarification 14: a state stamped more than 24 hours ahead is merged and stored like any
    /// other; only this replica's clock does not follow it. A later local write of the field
    /// still wins, stamped just after the value it overwrites.
    @Test(.blocking) func aStateFarInTheFutureIsMergedButTheClockDoesNotFollowIt() throws {
        let fixture = try Self.fixture()
        let store = fixture.store
        let peer = try ReplicaID("far-ahead")
        let ahead = HLCTimestamp(wallMilliseconds: Self.wall + 48 * 3_600_000, logical: 0)
        let remote = RecordState.created(id: UUID(), type: "account", fields: ["name": .text("Future Ltd")],
                                         dot: try Dot(replica: peer, counter: 1), timestamp: ahead)
        #expect(try store.apply([remote]).outcomes == [.applied])
        #expect(try store.record(remote.id) == remote)

        let local = try store.create("account", ["name": .text("Now Ltd")])
        #expect(local.liveness.timestamp < ahead)
        let overwritten = try store.update(remote.id, ["name": .text("Fixed Ltd")])
        guard case .register(let name)? = overwritten.fields["name"] else { Issue.record("no name"); return }
        #expect(name.timestamp > ahead)

        // Within 24 hours, the clock follows: the next local write sorts after the remote one.
        let soon = HLCTimestamp(wallMilliseconds: Self.wall + 3_600_000, logical: 0)
        let near = RecordState.created(id: UUID(), type: "account", fields: ["name": .text("Soon Ltd")],
                                       dot: try Dot(replica: peer, counter: 2), timestamp: soon)
        try store.apply([near])
        #expect(try store.create("account", ["name": .text("After Ltd")]).liveness.timestamp > soon)
    }
}
