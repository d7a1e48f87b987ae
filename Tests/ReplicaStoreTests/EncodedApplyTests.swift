import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// `apply(encoded:)` keeps every promise of `apply`: atomic, idempotent, the same outcomes,
/// conflicts, dirty set and checkpoint, whichever path a record takes inside.
@Suite struct EncodedApplyTests {
    let dir: TemporaryDirectory
    init() throws { dir = try TemporaryDirectory() }

    func encoded(_ store: ReplicaStore, after: Int64 = 0) throws -> [EncodedRecord] {
        try store.encodedChanges(after: after, limit: .max).map(\.record)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func newRecordsAreStoredAsTheyCame(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let source = try openStore(dir, "source"), target = try openStore(dir, "target")
        for i in 0..<5 {
            let id = try source.create("contact", ["name": .text("c\(i) ✓"), "age": .integer(Int64(i)), "vip": .bool(i % 2 == 0)]).id
            try source.increment(id, field: "points", by: Int64(i))
        }
        try source.delete(try #require(try source.records(ofType: "contact").first).id)
        let records = try encoded(source)
        #expect(try records.map { try $0.decoded() } == (try source.changes(after: 0, limit: .max).map(\.state)))

        let report = try target.apply(encoded: records)
        #expect(report.outcomes == Array(repeating: .applied, count: 5))
        #expect(report.sequence == 5)
        #expect(try encoded(target) == records)
        #expect(try target.records(ofType: "contact", includeDeleted: true) == (try source.records(ofType: "contact", includeDeleted: true)))
        #expect(try target.count(ofType: "contact") == 4)
        #expect(try target.dirtyCount() == 0)
        // The clock has seen the newest write, so local writes sort after it.
        #expect(try target.lastTimestamp >= source.lastTimestamp)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func itEndsWhereApplyEndsWithMergesAndConflicts(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let clock = ManualClock(1_700_000_000_000)
        let source = try openStore(dir, "source", wallClock: { clock.read() })
        let viaStates = try openStore(dir, "states", wallClock: { clock.read() })
        // The same replica id for both targets, so their merged states are comparable.
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("states"))
        options.wallClock = { clock.read() }
        let viaEncoded = try dir.open("encoded", options: options)

        let shared = try source.create("contact", ["name": .text("shared")]).id
        let first = try source.changes(after: 0, limit: .max)
        try viaStates.apply(first.map(\.state))
        try viaEncoded.apply(encoded: try encoded(source))
        clock.set(clock.read() + 10)
        for target in [viaStates, viaEncoded] {
            try target.update(shared, ["city": .text("target's")])
            try target.create("contact", id: UUID(uuidString: "00000000-0000-0000-0000-0000000000C1")!, ["name": .text("local")])
        }
        clock.set(clock.read() + 10)
        try source.update(shared, ["city": .text("source's"), "phone": .text("1")])
        try source.create("contact", ["name": .text("new")])
        try source.delete(try source.create("contact", ["name": .text("gone")]).id)

        let statesReport = try viaStates.apply(try source.changes(after: 0, limit: .max).map(\.state), from: .upstream)
        let encodedReport = try viaEncoded.apply(encoded: try encoded(source), from: .upstream)
        #expect(encodedReport.outcomes == statesReport.outcomes)
        #expect(encodedReport.outcomes.contains(.merged))
        #expect(encodedReport.conflicts == statesReport.conflicts)
        #expect(encodedReport.conflicts.count == 1)
        #expect(try StoreSnapshot(viaEncoded) == (try StoreSnapshot(viaStates)))
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func downstreamRecordsStayDirtyOnlyWhenForwarded(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let device = try openStore(dir, "device")
        try device.create("contact", ["name": .text("Ada")])
        let plain = try openStore(dir, "server")
        try plain.apply(encoded: try encoded(device), from: .downstream)
        #expect(try plain.dirtyCount() == 0)
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("branch"))
        options.forwardsDownstreamChanges = true
        let branch = try dir.open("branch", options: options)
        try branch.apply(encoded: try encoded(device), from: .downstream)
        #expect(try branch.dirtyCount() == 1)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func duplicatesChangeNothingAndClearWhatUpstreamHolds(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let server = try openStore(dir, "server"), device = try openStore(dir, "device")
        for i in 0..<4 { try server.create("contact", ["name": .text("c\(i)")]) }
        let batch = try encoded(server)
        try device.apply(encoded: batch)
        let before = try StoreSnapshot(device)
        let again = try device.apply(encoded: batch)
        #expect(again.outcomes == Array(repeating: .unchanged, count: 4))
        #expect(try StoreSnapshot(device) == before)
        // An older state than the one stored is a duplicate too, found by decoding its vector.
        let id = batch[0].id
        try server.update(id, ["city": .text("Oslo")])
        try device.apply(encoded: try encoded(server, after: 4))
        #expect(try device.apply(encoded: [batch[0]]).outcomes == [.unchanged])
        // A record pushed, then pulled back as it is, leaves the dirty set.
        try device.update(id, ["phone": .text("1")])
        try server.apply(try device.dirtyRecords(), from: .downstream)
        #expect(try device.dirtyCount() == 1)
        try device.apply(encoded: try encoded(server, after: 5), from: .upstream)
        #expect(try device.dirtyCount() == 0)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func invalidBytesAnywhereInABatchLeaveTheStoreUnchanged(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let source = try openStore(dir, "source"), target = try openStore(dir, "target")
        for i in 0..<5 { try source.create("contact", ["name": .text("c\(i)")]) }
        let shared = try source.create("contact", ["name": .text("shared")]).id
        try target.apply(encoded: try encoded(source).filter { $0.id == shared })
        try source.update(shared, ["city": .text("Rome")])
        let batch = try encoded(source)
        let before = try StoreSnapshot(target)

        var truncated = batch
        truncated[3].state.removeLast()
        var wrongType = batch
        wrongType[2] = EncodedRecord(try {
            var state = try wrongType[2].decoded()
            state.fields["age"] = .register(RegisterState(value: .text("old"), dot: state.liveness.dot, timestamp: .zero))
            return state
        }())
        var badVector = batch
        badVector[4].vector = [1, 0]
        var unknownType = batch
        unknownType[1].type = "invoice"
        var badUpdate = batch  // the record the target has, with news and a malformed state
        let sharedIndex = try #require(batch.firstIndex { $0.id == shared })
        badUpdate[sharedIndex].state = [1]
        for (name, bad) in [("truncated", truncated), ("wrong type", wrongType), ("bad vector", badVector),
                            ("unknown type", unknownType), ("bad update", badUpdate)] {
            #expect(throws: ReplicaStoreError.self, "\(name)") {
                try target.apply(encoded: bad, checkpoint: ("source", 99))
            }
            #expect(try StoreSnapshot(target) == before, "\(name)")
            #expect(try target.checkpoint(for: "source") == 0, "\(name)")
        }
        #expect(try target.apply(encoded: batch).outcomes.count == 6)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func anInterruptedBatchLeavesNoTraceAndTheCheckpointMovesWithItsBatch(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        struct Interrupted: Error {}
        let server = try openStore(dir, "server"), device = try openStore(dir, "device")
        for i in 0..<6 { try server.create("contact", ["name": .text("c\(i)")]) }
        let first = try server.encodedChanges(after: 0, limit: 3)
        let before = try StoreSnapshot(device)
        for stop in 0..<3 {
            #expect(throws: Interrupted.self) {
                try device.apply(encoded: first.map(\.record), checkpoint: ("server", first.last!.sequence)) {
                    if $0 == stop { throw Interrupted() }
                }
            }
            #expect(try StoreSnapshot(device) == before)
            #expect(try device.checkpoint(for: "server") == 0)
        }
        try device.apply(encoded: first.map(\.record), checkpoint: ("server", first.last!.sequence))
        #expect(try device.checkpoint(for: "server") == 3)
        let rest = try server.encodedChanges(after: try device.checkpoint(for: "server"), limit: 10)
        #expect(rest.map(\.sequence) == [4, 5, 6])
        try device.apply(encoded: rest.map(\.record), checkpoint: ("server", rest.last!.sequence))
        #expect(try device.checkpoint(for: "server") == 6)
        #expect(try device.count(ofType: "contact") == 6)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aValidRecordInAnotherFormIsStoredCanonical(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let source = try openStore(dir, "source"), target = try openStore(dir, "target")
        let state = try source.create("contact", ["name": .text("Ada"), "age": .integer(36)])
        var record = EncodedRecord(state)
        // The same state with a timestamp varint one byte longer than it needs (the last one).
        record.state[record.state.count - 1] |= 0x80
        record.state.append(0)
        #expect(try record.decoded() == state)
        #expect(try target.apply(encoded: [record]).outcomes == [.applied])
        #expect(try encoded(target) == [EncodedRecord(state)])
        // The same after a known record, when the id is looked up before the record is stored;
        // either way the sequence has no gap.
        let second = try source.create("contact", ["name": .text("Bob")])
        var other = EncodedRecord(second)
        other.state[other.state.count - 1] |= 0x80
        other.state.append(0)
        #expect(try target.apply(encoded: [record, other]).outcomes == [.unchanged, .applied])
        #expect(try target.encodedChanges(after: 0, limit: 10).map(\.sequence) == [1, 2])
        #expect(try encoded(target) == [EncodedRecord(state), EncodedRecord(second)])
    }
}
