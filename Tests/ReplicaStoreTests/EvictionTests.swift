import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// Records upstream takes out of a device's scope: gone without a tombstone, but never before
/// what the device wrote to them was pushed and answered.
@Suite struct EvictionTests {
    @Test(.blocking, arguments: DatabaseBackend.allCases) func anEvictedRecordGoesAtOnceUnlessItHasChangesToPush(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let server = try openStore(dir, "server")
        let device = try openStore(dir, "device")
        let quiet = try server.create("contact", ["name": .text("Ada")])
        let edited = try server.create("contact", ["name": .text("Grace")])
        try device.apply(try server.changes(after: 0, limit: 10).map(\.state))
        try device.update(edited.id, ["city": .text("Arlington")])
        let sequence = try device.lastSequence

        let kept = try device.evict([quiet.id, edited.id], reason: "the account went to another team")
        #expect(kept == [edited.id], "the record with a change to push stays until it is answered")
        #expect(try device.record(quiet.id) == nil, "gone, and no tombstone")
        #expect(try device.lastSequence == sequence, "an eviction is no change of this replica's")
        #expect(try device.dirtyRecords().map(\.id) == [edited.id])

        // The push is answered: the record then goes.
        let pushed = try #require(try device.record(edited.id))
        try device.acknowledge(edited.id, upTo: pushed.vector)
        try device.settleEvictions()
        #expect(try device.record(edited.id) == nil)
        #expect(try device.pendingEvictions().isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aRecordThatComesBackIsNoLongerWaitingToGo(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let record = try device.create("contact", ["name": .text("Ada")])
        #expect(try device.evict([record.id], reason: "reassigned") == [record.id])
        try device.settleEvictions(returned: [record.id])  // upstream sent it again
        try device.acknowledge(record.id, upTo: record.vector)
        try device.settleEvictions()
        #expect(try device.record(record.id) != nil)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aRefusedChangeStaysInTheConflictLogAfterItsRecordIsEvicted(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let record = try device.create("contact", ["name": .text("Ada")])
        try device.evict([record.id], reason: "reassigned")
        try device.reject(record.id, upTo: record.vector, reason: "reps may not change a contact they do not own")
        try device.settleEvictions()
        #expect(try device.record(record.id) == nil)
        #expect(try device.conflicts().first?.reason == "reps may not change a contact they do not own")
    }
}
