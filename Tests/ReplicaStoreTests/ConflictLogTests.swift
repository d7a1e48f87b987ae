import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// Two replicas with hand-set clocks, so which concurrent write wins is known in advance.
struct TwoReplicas {
    let dir: StorePlace
    let alice: ReplicaStore
    let bob: ReplicaStore
    let aliceTime = ManualClock(1_000_000)
    let bobTime = ManualClock(2_000_000)

    init(_ backend: DatabaseBackend = .sqlite) throws {
        dir = try StorePlace(backend)
        let (at, bt) = (aliceTime, bobTime)
        alice = try openStore(dir, "alice", wallClock: { at.read() })
        bob = try openStore(dir, "bob", wallClock: { bt.read() })
    }

    /// Each side applies what the other changed: both see the other's pre-merge state.
    func exchange() throws {
        let fromAlice = try alice.changes(after: 0, limit: .max).map(\.state)
        let fromBob = try bob.changes(after: 0, limit: .max).map(\.state)
        try bob.apply(fromAlice)
        try alice.apply(fromBob)
    }

    /// A shared contact both replicas hold.
    func sharedContact() throws -> UUID {
        let id = try alice.create("contact", ["name": .text("Acme"), "city": .text("Oslo")]).id
        try exchange()
        return id
    }
}

@Suite struct ConflictLogTests {
    @Test(.blocking, arguments: DatabaseBackend.allCases) func concurrentUpdateIsLoggedWithBothSides(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.update(id, ["city": .text("Bergen")])
        try r.bob.update(id, ["city": .text("Trondheim")])  // Bob's clock is later: he wins
        try r.exchange()
        #expect(try r.alice.record(id) == (try r.bob.record(id)))
        #expect(try r.alice.record(id)?.values["city"] == .text("Trondheim"))
        for store in [r.alice, r.bob] {
            let entries = try store.conflicts()
            #expect(entries.count == 1)
            let entry = try #require(entries.first)
            #expect(entry.status == .open)
            #expect(entry.conflict.kind == .concurrentUpdate)
            #expect(entry.conflict.field == "city")
            #expect(entry.conflict.winner.value == .text("Trondheim"))
            #expect(entry.conflict.winner.dot.replica == r.bob.replicaID)
            #expect(entry.conflict.loser.value == .text("Bergen"))
            #expect(entry.conflict.loser.dot.replica == r.alice.replicaID)
            #expect(entry.conflict.loser.timestamp < entry.conflict.winner.timestamp)
            #expect(try store.conflict(entry.id) == entry)
        }
        // Exchanging again finds nothing new.
        try r.exchange()
        #expect(try r.alice.conflicts(status: nil).count == 1)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func takingTheLoserIsACausalWriteThatWinsEverywhere(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.update(id, ["city": .text("Bergen")])
        try r.bob.update(id, ["city": .text("Trondheim")])
        try r.exchange()
        let entry = try #require(try r.alice.conflicts().first)
        // Alice's clock is behind Bob's, but her resolution saw both writes, so it wins anyway.
        let resolved = try r.alice.resolve(entry.id, .takeLoser)
        #expect(resolved.values["city"] == .text("Bergen"))
        #expect(try r.alice.conflict(entry.id)?.status == .resolved)
        #expect(try r.alice.conflict(entry.id)?.resolution == "take_loser")
        #expect(throws: ReplicaStoreError.conflictClosed(id: entry.id, status: "resolved")) { try r.alice.resolve(entry.id, .keepWinner) }
        try r.exchange()
        #expect(try r.bob.record(id)?.values["city"] == .text("Bergen"))
        #expect(try r.bob.record(id) == (try r.alice.record(id)))
        // Bob's copy of the conflict is settled by Alice's resolution arriving.
        #expect(try r.bob.conflicts().isEmpty)
        #expect(try r.bob.conflicts(status: .superseded).count == 1)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func resolvingWithANewValue(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.update(id, ["city": .text("Bergen")])
        try r.bob.update(id, ["city": .text("Trondheim")])
        try r.exchange()
        let entry = try #require(try r.bob.conflicts().first)
        #expect(try r.bob.resolve(entry.id, .value(.text("Stavanger"))).values["city"] == .text("Stavanger"))
        #expect(throws: ReplicaStoreError.conflictNotFound(999)) { try r.bob.resolve(999, .keepWinner) }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func updateOfDeletedCanBeRestored(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.delete(id)
        try r.bob.update(id, ["city": .text("Bergen")])
        try r.exchange()
        #expect(try r.alice.record(id)?.isDeleted == true)
        let entry = try #require(try r.alice.conflicts().first)
        #expect(entry.conflict.kind == .updateOfDeleted)
        #expect(entry.conflict.loser.value == .text("Bergen"))
        #expect(entry.conflict.winner.isDeletion)
        let restored = try r.alice.resolve(entry.id, .takeLoser)
        #expect(!restored.isDeleted)
        #expect(restored.values["city"] == .text("Bergen"))
        try r.exchange()
        #expect(try r.bob.record(id)?.isDeleted == false)
        #expect(try r.bob.conflicts().isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func keepingTheDeletionLeavesTheRecordDeleted(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.delete(id)
        try r.bob.update(id, ["city": .text("Bergen")])
        try r.exchange()
        let entry = try #require(try r.bob.conflicts().first)
        let state = try r.bob.resolve(entry.id, .keepWinner)
        #expect(state.isDeleted)
        #expect(try r.bob.conflicts().isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func updatingAFieldSupersedesItsOpenConflict(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.update(id, ["city": .text("Bergen")])
        try r.bob.update(id, ["city": .text("Trondheim")])
        try r.exchange()
        try r.alice.update(id, ["name": .text("other field")])
        #expect(try r.alice.conflicts().count == 1)
        try r.alice.update(id, ["city": .text("Oslo again")])
        #expect(try r.alice.conflicts().isEmpty)
        #expect(try r.alice.conflicts(status: .superseded).count == 1)
    }
}
