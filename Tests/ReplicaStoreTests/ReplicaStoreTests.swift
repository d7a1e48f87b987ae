import Foundation
import ReplicaStore
import SQLite
import SyncModel
import TestSupport
import Testing
import TestScheduling

@Suite struct ReplicaStoreTests {
    let dir: TemporaryDirectory
    init() throws { dir = try TemporaryDirectory() }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func localWritesPersistWithDotsAndVectors(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let id = UUID()
        let created = try store.create("contact", id: id, ["name": .text("Ada"), "age": .integer(36)])
        #expect(created.vector == (try VersionVector([store.replicaID: 1])))
        let updated = try store.update(id, ["city": .text("London")])
        #expect(updated.values == ["name": .text("Ada"), "age": .integer(36), "city": .text("London")])
        #expect(updated.vector[store.replicaID] == 2)
        guard case .register(let city)? = updated.fields["city"] else { Issue.record("no city"); return }
        #expect(city.dot == (try Dot(replica: store.replicaID, counter: 2)))
        #expect(try store.record(id) == updated)
        #expect(try store.records(ofType: "contact") == [updated])
        #expect(try store.count(ofType: "contact") == 1)
    }

    /// A create or an update inside a larger transaction makes one SQL write and runs without a
    /// savepoint of its own (one with index entries or conflicts to close takes one): a write
    /// that fails there, before its statement or in it, still fails alone, gives back its dot,
    /// and leaves the rest to commit.
    @Test(.blocking, arguments: DatabaseBackend.allCases) func aWriteThatFailsInsideATransactionFailsAlone(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let plain = try openStore(dir, "plain")
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("indexed"))
        options.indexedFields = ["city"]
        let indexed = try dir.open("indexed", options: options)
        for store in [plain, indexed] {
            let kept = try store.create("contact", ["name": .text("kept"), "city": .text("Oslo")])
            let (made, renamed) = try store.transaction {
                let made = try store.create("contact", ["name": .text("made"), "city": .text("Lyon")])
                #expect(throws: ReplicaStoreError.self) { try store.create("contact", ["name": .text("x"), "planet": .text("Mars")]) }
                #expect(throws: ReplicaStoreError.recordExists(made.id)) { try store.create("contact", id: made.id, ["name": .text("again")]) }
                // Not looked for first: the table's unique id refuses it.
                #expect(throws: (any Error).self) { try store.createNew("contact", id: made.id, ["name": .text("again")]) }
                let nobody = UUID()
                #expect(throws: ReplicaStoreError.recordNotFound(nobody)) { try store.update(nobody, ["name": .text("nobody")]) }
                #expect(throws: ReplicaStoreError.self) { try store.update(kept.id, ["city": .text("Rome"), "age": .text("old")]) }
                return (made, try store.update(kept.id, ["name": .text("renamed")]))
            }
            #expect(made.vector[store.replicaID] == 2 && renamed.vector[store.replicaID] == 3, "the failed writes burnt no dot")
            #expect(try store.records(ofType: "contact").map { $0.values["name"] } == [.text("made"), .text("renamed")])
            #expect(try store.records(ofType: "contact", where: "city", equals: "Oslo").map(\.id) == [kept.id], "the failed update left the city")
            #expect(try store.records(ofType: "contact", where: "city", equals: "Lyon").map(\.id) == [made.id])
            #expect(try store.records(ofType: "contact", where: "city", equals: "Rome").isEmpty)
            #expect(try store.lastSequence == 3)
        }
    }

    /// Inside the transaction that made them, the records its local writes made are told from
    /// what it noted; after it, from the rows: the same records, created or restored, and not
    /// those it only changed or made and deleted again.
    @Test(.blocking, arguments: DatabaseBackend.allCases) func whatATransactionMadeReadsTheSameFromItsNotesAsFromItsRows(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let old = try store.create("contact", ["name": .text("old")]).id
        let gone = try store.create("contact", ["name": .text("gone")]).id
        try store.delete(gone)
        let (start, stamp) = (try store.lastSequence, try store.lastTimestamp)
        var made: [UUID] = []
        let noted = try store.transaction {
            made.append(try store.create("contact", ["name": .text("made")]).id)
            let brief = try store.create("account", ["name": .text("brief")]).id
            try store.update(old, ["city": .text("Oslo")])
            try store.delete(brief)
            made.append(try store.restore(gone).id)
            try store.update(made[0], ["city": .text("Lyon")])
            return try store.recordsMadeLocally(after: start, since: stamp)
        }
        #expect(noted == made)
        #expect(Set(try store.recordsMadeLocally(after: start, since: stamp)) == Set(made))
    }

    /// `create` trusts an id the transaction just found absent only while nothing could have
    /// made it since: a write, or a savepoint rolled back (which can bring back what it removed).
    @Test(.blocking, arguments: DatabaseBackend.allCases) func anIdFoundAbsentIsLookedForAgainOnceAnythingCouldHaveMadeIt(_ backend: DatabaseBackend) throws {
        struct Undone: Error {}
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let peer = try openStore(dir, "B")

        let id = UUID()
        #expect(throws: ReplicaStoreError.recordExists(id)) {
            try store.transaction {
                #expect(try store.record(id) == nil)
                try store.create("contact", id: id, ["name": .text("first")])
                try store.create("contact", id: id, ["name": .text("again")])
            }
        }
        #expect(try store.record(id) == nil, "the transaction rolled back whole")

        // A record taken from a peer (so not dirty: evicting removes it), removed and looked
        // for in a savepoint that then rolls back: it is there again, and creating it fails.
        let theirs = try peer.create("contact", ["name": .text("theirs")])
        try store.apply(try peer.changes(after: 0, limit: 10).map(\.state))
        try store.transaction {
            #expect(throws: Undone.self) {
                try store.transaction {
                    try store.evict([theirs.id], reason: "left the scope")
                    #expect(try store.record(theirs.id) == nil)
                    #expect(try store.recordType(of: theirs.id) == nil)
                    throw Undone()
                }
            }
            #expect(throws: ReplicaStoreError.recordExists(theirs.id)) {
                try store.create("contact", id: theirs.id, ["name": .text("a copy")])
            }
        }
        #expect(try store.record(theirs.id)?.values["name"] == .text("theirs"))

        // Found absent, then created: the common case, one search of the index.
        let fresh = UUID()
        try store.transaction {
            #expect(try store.recordType(of: fresh) == nil)
            try store.create("contact", id: fresh, ["name": .text("new")])
        }
        #expect(try store.record(fresh)?.values["name"] == .text("new"))
    }

    /// What a transaction found of a record's type is what it says later in the transaction,
    /// whatever the transaction did to the record since: deleted, rolled back, removed.
    @Test(.blocking, arguments: DatabaseBackend.allCases) func aRecordsTypeFoundInATransactionFollowsWhatTheTransactionDoes(_ backend: DatabaseBackend) throws {
        struct Undone: Error {}
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let peer = try openStore(dir, "B")
        let theirs = try peer.create("contact", ["name": .text("theirs")])
        try store.apply(try peer.changes(after: 0, limit: 10).map(\.state))
        try store.transaction {
            #expect(try store.recordType(of: theirs.id, live: true) == "contact")
            #expect(throws: Undone.self) {
                try store.transaction {
                    try store.delete(theirs.id)
                    #expect(try store.recordType(of: theirs.id, live: true) == nil)
                    #expect(try store.recordType(of: theirs.id) == "contact", "a tombstone keeps its type")
                    throw Undone()
                }
            }
            #expect(try store.recordType(of: theirs.id, live: true) == "contact", "the deletion rolled back")
            try store.delete(theirs.id)
            #expect(try store.recordType(of: theirs.id, live: true) == nil)
        }
        #expect(try store.recordType(of: theirs.id, live: true) == nil)
        #expect(try store.recordType(of: theirs.id) == "contact")

        let other = try peer.create("contact", ["name": .text("other")])
        try store.apply(try peer.changes(after: 0, limit: 10).map(\.state))
        try store.transaction {
            #expect(try store.recordType(of: other.id, live: true) == "contact")
            try store.evict([other.id], reason: "left the scope")
            #expect(try store.recordType(of: other.id) == nil, "removed without a tombstone")
        }
        #expect(try store.record(other.id) == nil)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func counterAndSequenceSurviveARestart(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let id = UUID()
        do {
            let store = try openStore(dir, "A")
            try store.create("contact", id: id, ["name": .text("Ada")])
            try store.update(id, ["name": .text("Ada L.")])
            #expect(try store.lastSequence == 2)
            store.close()
        }
        // An existing store keeps its own identity whatever id the options suggest.
        let reopened = try dir.open("A", options: .init(schema: testSchema, replicaID: try ReplicaID("other")))
        #expect(reopened.replicaID.rawValue == "A")
        let state = try reopened.update(id, ["city": .text("London")])
        #expect(state.vector[reopened.replicaID] == 3)
        #expect(try reopened.lastSequence == 3)
        #expect(try reopened.lastTimestamp > HLCTimestamp.zero)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func invalidLocalWritesChangeNothing(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let id = try store.create("contact", ["name": .text("Ada")]).id
        let before = try StoreSnapshot(store)
        #expect(throws: ReplicaStoreError.invalidRecord(.wrongFieldType(record: id.uuidString, field: "age", expected: "integer", found: "text"))) {
            try store.update(id, ["age": .text("old")])
        }
        #expect(throws: ReplicaStoreError.self) { try store.update(id, ["no_such_field": .text("x")]) }
        #expect(throws: ReplicaStoreError.invalidRecord(.unknownRecordType("spaceship"))) { try store.create("spaceship", [:]) }
        #expect(throws: ReplicaStoreError.recordExists(id)) { try store.create("contact", id: id, [:]) }
        #expect(throws: ReplicaStoreError.recordNotFound(UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)))) {
            try store.update(UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)), [:])
        }
        #expect(throws: ReplicaStoreError.self) { try store.increment(id, field: "name", by: 1) }
        #expect(try StoreSnapshot(store) == before)
        // The failed writes did not burn dots: the next write takes the next counter.
        #expect(try store.update(id, ["age": .integer(1)]).vector[store.replicaID] == 2)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func deleteAndRestore(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let id = try store.create("contact", ["name": .text("Ada")]).id
        try store.delete(id)
        #expect(try store.records(ofType: "contact").isEmpty)
        #expect(try store.record(id)?.isDeleted == true)
        #expect(throws: ReplicaStoreError.recordDeleted(id)) { try store.update(id, ["name": .text("x")]) }
        #expect(throws: ReplicaStoreError.recordDeleted(id)) { try store.delete(id) }
        let restored = try store.restore(id)
        #expect(restored.values["name"] == .text("Ada"))
        #expect(throws: ReplicaStoreError.recordNotDeleted(id)) { try store.restore(id) }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func changesComeInSequenceOrderOncePerRecord(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "A")
        let first = try store.create("contact", ["name": .text("1")]).id
        let second = try store.create("contact", ["name": .text("2")]).id
        try store.update(first, ["name": .text("1b")])
        let all = try store.changes(after: 0, limit: 10)
        #expect(all.map(\.state.id) == [second, first])
        #expect(all.map(\.sequence) == [2, 3])
        #expect(try store.changes(after: 2, limit: 10).map(\.state.id) == [first])
        #expect(try store.changes(after: 0, limit: 1).map(\.state.id) == [second])
        #expect(try store.pendingChanges(after: 0).records == 2)
        #expect(try store.pendingChanges(after: 0).bytes > 0)
        #expect(try store.pendingChanges(after: 3).records == 0)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func dirtySetFollowsPushesAndAcknowledgements(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let server = try openStore(dir, "server")
        let id = try device.create("contact", ["name": .text("Ada")]).id
        #expect(try device.dirtyCount() == 1)
        let pushed = try device.dirtyRecords()
        try server.apply(pushed, from: .downstream)
        #expect(try server.dirtyCount() == 0)  // a server does not forward by default
        // A change made while the push was in flight keeps the record dirty.
        try device.update(id, ["city": .text("Paris")])
        try device.acknowledge(id, upTo: pushed[0].vector)
        #expect(try device.dirtyCount() == 1)
        let again = try device.dirtyRecords()
        try server.apply(again, from: .downstream)
        try device.acknowledge(id, upTo: again[0].vector)
        #expect(try device.dirtyCount() == 0)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func pullingTheMergedStateClearsDirty(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let server = try openStore(dir, "server")
        let id = try device.create("contact", ["name": .text("Ada")]).id
        try server.apply(try device.dirtyRecords(), from: .downstream)
        try server.update(id, ["city": .text("Paris")])
        try device.apply(try server.changes(after: 0, limit: 100).map(\.state), from: .upstream)
        #expect(try device.dirtyCount() == 0)
        #expect(try device.record(id)?.values["city"] == .text("Paris"))
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func applyIsIdempotentAndReportsOutcomes(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let a = try openStore(dir, "A"), b = try openStore(dir, "B")
        let x = try a.create("contact", ["name": .text("x")]).id
        let y = try a.create("contact", ["name": .text("y")]).id
        let batch = try a.changes(after: 0, limit: 10).map(\.state)
        #expect(try b.apply(batch).outcomes == [.applied, .applied])
        let afterFirst = try StoreSnapshot(b)
        #expect(try b.apply(batch).outcomes == [.unchanged, .unchanged])
        #expect(try StoreSnapshot(b) == afterFirst)
        try b.update(x, ["city": .text("Oslo")])
        try a.update(x, ["phone": .text("123")])
        try a.update(y, ["phone": .text("456")])
        let report = try b.apply(try a.changes(after: 2, limit: 10).map(\.state))
        #expect(report.outcomes == [.merged, .applied])
        #expect(report.conflicts.isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func incrementsFromSeveralReplicasAddUp(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let a = try openStore(dir, "A"), b = try openStore(dir, "B")
        let id = try a.create("contact", ["name": .text("x")]).id
        try b.apply(try a.changes(after: 0, limit: 10).map(\.state))
        try a.increment(id, field: "points", by: 100)
        try b.increment(id, field: "points", by: 25)
        try b.increment(id, field: "points", by: -5)
        try a.apply(try b.changes(after: 0, limit: 10).map(\.state))
        try b.apply(try a.changes(after: 0, limit: 10).map(\.state))
        #expect(try a.record(id)?.values["points"] == .integer(120))
        #expect(try a.record(id) == (try b.record(id)))
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aBatchInterruptedHalfWayLeavesTheStoreExactlyAsBefore(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        struct Interrupted: Error {}
        let source = try openStore(dir, "source"), target = try openStore(dir, "target")
        for i in 0..<20 { try source.create("contact", ["name": .text("c\(i)")]) }
        let shared = try target.create("contact", ["name": .text("local")]).id
        try source.apply([try #require(try target.record(shared))])
        try source.update(shared, ["city": .text("changed at source")])
        try target.update(shared, ["city": .text("changed at target")])
        let batch = try source.changes(after: 0, limit: 100).map(\.state)
        let before = try StoreSnapshot(target)
        #expect(throws: Interrupted.self) {
            try target.apply(batch) { index in if index == batch.count / 2 { throw Interrupted() } }
        }
        #expect(try StoreSnapshot(target) == before)
        // The next attempt applies everything, once, and the counters continue where they were.
        let report = try target.apply(batch)
        #expect(report.outcomes.filter { $0 == .applied }.count == 20)
        #expect(report.conflicts.count == 1)
        #expect(try target.lastSequence == before.sequence + 21)
        #expect(try target.update(shared, ["note": .text("n")]).vector[target.replicaID] == 3)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func anInvalidRecordAnywhereInABatchRejectsTheWholeBatch(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let source = try openStore(dir, "source"), target = try openStore(dir, "target")
        for i in 0..<5 { try source.create("contact", ["name": .text("c\(i)")]) }
        var batch = try source.changes(after: 0, limit: 100).map(\.state)
        var bad = batch[3]
        bad.fields["age"] = .register(RegisterState(value: .text("not a number"), dot: bad.liveness.dot, timestamp: .zero))
        batch[3] = bad
        let before = try StoreSnapshot(target)
        let error = try #require(throws: ReplicaStoreError.self) { try target.apply(batch) }
        #expect(error == .invalidRecord(.wrongFieldType(record: bad.id.uuidString, field: "age", expected: "integer", found: "text")))
        #expect(try StoreSnapshot(target) == before)

        let unknown = RecordState(id: UUID(), type: "invoice", vector: bad.vector, liveness: bad.liveness, fields: [:])
        #expect(throws: ReplicaStoreError.invalidRecord(.unknownRecordType("invoice"))) { try target.apply([unknown]) }
        #expect(throws: ReplicaStoreError.self) { try target.validate(unknown) }
        let retyped = RecordState(id: batch[0].id, type: "account", vector: batch[0].vector, liveness: batch[0].liveness, fields: [:])
        try target.apply([batch[0]])
        #expect(throws: ReplicaStoreError.self) { try target.apply([retyped]) }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func checkpointMovesWithItsBatchAndOnlyThen(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        struct Interrupted: Error {}
        let server = try openStore(dir, "server"), device = try openStore(dir, "device")
        for i in 0..<4 { try server.create("contact", ["name": .text("c\(i)")]) }
        let changes = try server.changes(after: 0, limit: 2)
        #expect(try device.checkpoint(for: "server") == 0)
        #expect(throws: Interrupted.self) {
            try device.apply(changes.map(\.state), checkpoint: ("server", changes.last!.sequence)) { _ in throw Interrupted() }
        }
        #expect(try device.checkpoint(for: "server") == 0)
        try device.apply(changes.map(\.state), checkpoint: ("server", changes.last!.sequence))
        #expect(try device.checkpoint(for: "server") == 2)
        let rest = try server.changes(after: try device.checkpoint(for: "server"), limit: 10)
        #expect(rest.count == 2)
        try device.resetCheckpoint(for: "server")
        #expect(try device.checkpoint(for: "server") == 0)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aRejectedPushIsKeptAsAConflictAndStopsBeingPushed(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        let id = try device.create("contact", ["name": .text("Ada")]).id
        let pushed = try #require(try device.dirtyRecords().first)
        try device.reject(id, upTo: pushed.vector, reason: "name must not be Ada")
        #expect(try device.dirtyCount() == 0)
        let entry = try #require(try device.conflicts().first)
        #expect(entry.conflict.kind == .rejected)
        #expect(entry.reason == "name must not be Ada")
        #expect(try device.record(id)?.values["name"] == .text("Ada"))
        try device.resolve(entry.id, .takeLoser)
        #expect(try device.dirtyCount() == 1)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func conflictsReportedByAPeerAreLoggedOnce(_ backend: DatabaseBackend) throws {
        let r = try TwoReplicas(backend)
        let id = try r.sharedContact()
        try r.alice.update(id, ["city": .text("Bergen")])
        try r.bob.update(id, ["city": .text("Trondheim")])
        let report = try r.bob.apply(try r.alice.changes(after: 0, limit: 10).map(\.state))
        let device = try openStore(r.dir, "device")
        try device.logConflicts(report.conflicts)
        try device.logConflicts(report.conflicts)
        #expect(try device.conflicts().map(\.conflict) == report.conflicts)
    }
}
