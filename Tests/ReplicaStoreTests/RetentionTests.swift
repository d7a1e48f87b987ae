import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// The store's purge, resync and compaction (SPEC.md 1.8), on one replica's file with a clock
/// the test moves.
@Suite struct RetentionTests {
    let policy = RetentionPolicy(tombstoneHorizon: 10_000, conflictHorizon: 5_000)

    @Test(.blocking, arguments: DatabaseBackend.allCases) func settingsUnderAPrefixGoOncePastTheirHorizonAndOthersStay(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let clock = ManualClock(1_000_000)
        let store = try openStore(dir, "server", wallClock: clock.read)
        let horizon = RetentionPolicy.day, day = UInt64(RetentionPolicy.day)
        try store.setLocalSetting("api.idempotency.k1.old", Data("first".utf8))
        try store.setLocalSetting("retention.upstream", Data("kept for ever".utf8))
        clock.set(1_000_000 + day / 2)
        let record = try store.create("contact", ["name": .text("Ada")])
        // Kept with a write, in its transaction, as the API keeps a response.
        try store.transaction {
            _ = try store.update(record.id, ["name": .text("Ada L.")])
            try store.setLocalSetting("api.idempotency.k1.new", Data("second".utf8))
        }
        clock.set(1_000_000 + day - 1)
        #expect(try store.purgeLocalSettings(prefix: "api.idempotency.", olderThan: horizon) == 0, "not before the horizon")
        clock.set(1_000_000 + day)
        #expect(try store.purgeLocalSettings(prefix: "api.idempotency.", olderThan: horizon) == 1)
        #expect(try store.localSetting("api.idempotency.k1.old") == nil)
        #expect(try store.localSetting("api.idempotency.k1.new") == Data("second".utf8))
        #expect(try store.localSetting("retention.upstream") != nil, "another prefix is not touched")
        // Written again, a setting's age starts again.
        clock.set(1_000_000 + day + day / 4)
        try store.setLocalSetting("api.idempotency.k1.new", Data("third".utf8))
        clock.set(1_000_000 + 2 * day)
        #expect(try store.purgeLocalSettings(prefix: "api.idempotency.", olderThan: horizon) == 0)
        // Many at once go in chunks, every one of them.
        for index in 0..<1_200 { try store.setLocalSetting("api.idempotency.k2.\(index)", Data([1])) }
        clock.set(1_000_000 + 4 * day)
        #expect(try store.purgeLocalSettings(prefix: "api.idempotency.", olderThan: horizon, chunk: 500) == 1_201)
        #expect(try store.localSetting("retention.upstream") != nil)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aTombstoneGoesOncePastTheHorizonCountedFromAMarkAndNotBefore(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let clock = ManualClock(1_000_000)
        let store = try openStore(dir, "device", wallClock: clock.read)
        try store.apply([], checkpoint: ("server", 0))  // it has an upstream to push its deletes to
        let live = try store.create("contact", ["name": .text("Ada")])
        let gone = try store.create("contact", ["name": .text("Grace")])
        try store.delete(gone.id)
        try store.acknowledge(gone.id, upTo: try #require(try store.record(gone.id)).vector)
        let unpushed = try store.create("contact", ["name": .text("Linus")])
        try store.delete(unpushed.id)  // dirty: a delete still to push
        let deletedAt = try store.lastSequence

        var report = try store.purgeExpired(policy)
        #expect(report.tombstonesPurged == 0, "the first purge only leaves a mark")
        clock.set(1_000_000 + 9_999)
        #expect(try store.purgeExpired(policy).tombstonesPurged == 0, "not before the horizon")
        clock.set(1_000_000 + 10_000)
        report = try store.purgeExpired(policy)
        #expect(report.tombstonesPurged == 1)
        #expect(try store.record(gone.id) == nil, "no tombstone left")
        #expect(try store.record(unpushed.id)?.isDeleted == true, "a delete still to push stays")
        #expect(try store.record(live.id) != nil)
        #expect(try store.purgedThrough == report.purgedThrough)
        #expect(report.purgedThrough > 0 && report.purgedThrough <= deletedAt)
        #expect(report.tombstonesLeft == 1)

        // A deletion made after the mark waits for a later one.
        try store.delete(live.id)
        try store.acknowledge(live.id, upTo: try #require(try store.record(live.id)).vector)
        clock.set(1_000_000 + 15_000)
        #expect(try store.purgeExpired(policy).tombstonesPurged == 0)
        clock.set(1_000_000 + 25_000)
        #expect(try store.purgeExpired(policy).tombstonesPurged == 1)
        #expect(try store.record(live.id) == nil)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aStoreWithoutUpstreamPurgesItsOwnDeletesToo(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let clock = ManualClock(1_000_000)
        let centre = try openStore(dir, "centre", wallClock: clock.read)
        let record = try centre.create("contact", ["name": .text("Ada")])
        try centre.delete(record.id)
        _ = try centre.purgeExpired(policy)
        clock.set(1_000_000 + 10_000)
        #expect(try centre.purgeExpired(policy).tombstonesPurged == 1, "no one would ever acknowledge its own delete")
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func closedConflictsGoAfterTheirHorizonAndOpenOnesNever(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let clock = ManualClock(2_000_000)
        let a = try openStore(dir, "a", wallClock: clock.read)
        let b = try openStore(dir, "b", wallClock: clock.read)
        let one = try a.create("contact", ["name": .text("Ada")])
        let two = try a.create("contact", ["name": .text("Grace")])
        try b.apply(try a.changes(after: 0, limit: 10).map(\.state))
        for id in [one.id, two.id] {
            try a.update(id, ["city": .text("Paris")])
            try b.update(id, ["city": .text("Lyon")])
        }
        try a.apply(try b.changes(after: 0, limit: 10).map(\.state))
        let logged = try a.conflicts()
        #expect(logged.count == 2)
        _ = try a.resolve(logged[0].id, .keepWinner)
        clock.set(2_000_000 + 5_000)
        let report = try a.purgeExpired(policy)
        #expect(report.conflictsPurged == 1)
        #expect(try a.conflicts(status: nil).map(\.id) == [logged[1].id], "the open one stays")
        clock.set(2_000_000 + 10_000_000)
        #expect(try a.purgeExpired(policy).conflictsPurged == 0)
        #expect(try a.conflicts().count == 1, "open conflicts are never purged")
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aResyncDropsWhatTheFreshCopyLacksKeepsWhatIsDirtyAndSurvivesAReopen(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let server = try openStore(dir, "server")
        let kept = try server.create("contact", ["name": .text("Ada")])
        let purged = try server.create("contact", ["name": .text("Grace")])
        try device.apply(try server.changes(after: 0, limit: 10).map(\.state), checkpoint: ("server", 2))
        let edited = try device.create("contact", ["name": .text("Linus")])  // unsynced
        try device.delete(purged.id)  // an unsynced delete of a record the server will forget
        try device.beginResync(with: "server")
        #expect(try device.checkpoint(for: "server") == 0)
        #expect(try device.resyncPeer() == "server")
        device.close()

        // Killed mid-resync: the state is in the file.
        let reopened = try openStore(dir, "device")
        #expect(try reopened.resyncPeer() == "server")
        try reopened.transaction {
            try reopened.apply([try #require(try server.record(kept.id))], checkpoint: ("server", 1))
            try reopened.noteSeenInResync([kept.id])
        }
        let dropped = try reopened.finishResync()
        #expect(dropped == 0, "the records not brought again have changes to push")
        #expect(try reopened.record(edited.id) != nil)
        #expect(try reopened.record(purged.id)?.isDeleted == true)
        #expect(try reopened.resyncPeer() == nil)

        // Once pushed (acknowledged) and not brought again by another resync, they go.
        for id in [edited.id, purged.id] {
            try reopened.acknowledge(id, upTo: try #require(try reopened.record(id)).vector)
        }
        try reopened.beginResync(with: "server")
        try reopened.transaction {
            try reopened.apply([try #require(try server.record(kept.id))], checkpoint: ("server", 1))
            try reopened.noteSeenInResync([kept.id])
        }
        #expect(try reopened.finishResync() == 2)
        #expect(try reopened.record(edited.id) == nil && reopened.record(purged.id) == nil)
        #expect(try reopened.record(kept.id) != nil)
        #expect(try reopened.purgedThrough == reopened.lastSequence, "its own peers must resync too")
    }

    @Test(.blocking) func compactionGivesBackWhatAPurgeFreed() throws {
        let dir = try TemporaryDirectory()
        let clock = ManualClock(3_000_000)
        let store = try openStore(dir, "server", wallClock: clock.read)
        let note = String(repeating: "x", count: 2_000)
        var ids: [UUID] = []
        try store.transaction {
            for _ in 0..<2_000 { ids.append(try store.create("contact", ["name": .text("N"), "note": .text(note)]).id) }
        }
        try store.transaction { for id in ids { try store.delete(id) } }
        try store.transaction {
            for id in ids { try store.acknowledge(id, upTo: try #require(try store.record(id)).vector) }
        }
        _ = try store.purgeExpired(policy)
        clock.set(3_000_000 + 10_000)
        #expect(try store.purgeExpired(policy).tombstonesPurged == 2_000)
        let report = try #require(try store.compact(), "a store file compacts")
        #expect(report.before.incrementalVacuum, "a new store gives free pages back")
        #expect(report.pagesFreed > 0)
        #expect(report.after.fileBytes < report.before.fileBytes)
        #expect(report.after.freeBytes == 0)
    }

    @Test(.blocking) func durationsTakeAUnitAndBadOnesAreRefused() throws {
        #expect(try RetentionPolicy.duration("90d") == 90 * RetentionPolicy.day)
        #expect(try RetentionPolicy.duration("2s") == 2_000)
        #expect(try RetentionPolicy.duration("500ms") == 500)
        #expect(try RetentionPolicy.duration("12h") == 12 * 3_600_000)
        for bad in ["", "90", "d", "-1d", "0s", "1.5d", "3w", "99999999999999999d"] {
            #expect(throws: RetentionError.self) { try RetentionPolicy.duration(bad) }
        }
        #expect(RetentionPolicy.text(90 * RetentionPolicy.day) == "90d")
        #expect(RetentionPolicy.text(1_500) == "1500ms")
        #expect(RetentionPolicy(settings: ["tombstone_horizon": "2s"]).tombstoneHorizon == 2_000)
        #expect(RetentionPolicy(settings: ["tombstone_horizon": "soon"]) == .standard)
    }
}
