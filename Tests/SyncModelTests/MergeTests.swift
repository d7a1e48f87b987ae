import Foundation
import SyncModel
import Testing

/// A replica held in memory: enough to produce realistic record states for merge tests.
struct ModelReplica {
    let id: ReplicaID
    var counter: UInt64 = 0
    var time: UInt64
    var records: [UUID: RecordState] = [:]

    init(_ id: ReplicaID, time: UInt64 = 1_000) {
        self.id = id
        self.time = time
    }

    mutating func next() -> (Dot, HLCTimestamp) {
        counter += 1
        time += 1
        return (try! Dot(replica: id, counter: counter), HLCTimestamp(wallMilliseconds: time, logical: 0))
    }

    mutating func create(_ record: UUID, _ values: [String: FieldValue]) {
        let (d, t) = next()
        records[record] = .created(id: record, type: "contact", fields: values, dot: d, timestamp: t)
    }

    mutating func write(_ record: UUID, _ values: [String: FieldValue]) {
        let (d, t) = next()
        records[record]!.write(values, dot: d, timestamp: t)
    }

    mutating func increment(_ record: UUID, _ amount: Int64) {
        let (d, t) = next()
        records[record]!.increment("points", by: amount, dot: d, timestamp: t)
    }

    mutating func delete(_ record: UUID) {
        let (d, t) = next()
        records[record]!.delete(dot: d, timestamp: t)
    }

    mutating func restore(_ record: UUID) {
        let (d, t) = next()
        records[record]!.restore(dot: d, timestamp: t)
    }

    /// Merges another replica's state of `record` into this one and returns the conflicts found.
    @discardableResult
    mutating func receive(_ state: RecordState) -> [Conflict] {
        let result = try! Merge.merge(local: records[state.id], remote: state)
        records[state.id] = result.state
        return result.conflicts
    }
}

let recordID = UUID(uuidString: "00000000-0000-0000-0000-0000000000AA")!

@Suite struct MergeTests {
    @Test func causalOverwriteWinsWithoutConflict() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b, time: 5_000)
        alice.create(recordID, ["name": .text("Acme")])
        bob.receive(alice.records[recordID]!)
        bob.write(recordID, ["name": .text("Acme Ltd")])
        // Alice's clock is far ahead, but Bob saw her write: causality beats timestamps.
        alice.time = 1_000_000
        let conflicts = alice.receive(bob.records[recordID]!)
        #expect(conflicts.isEmpty)
        #expect(alice.records[recordID]!.values["name"] == .text("Acme Ltd"))
    }

    @Test func concurrentWritesToOneFieldPickTheLaterTimestampAndLogTheLoser() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["stage": .text("lead")])
        bob.receive(alice.records[recordID]!)
        alice.write(recordID, ["stage": .text("won")])       // at 1002
        bob.time = 1_500
        bob.write(recordID, ["stage": .text("lost")])        // at 1501: later
        let (fromAlice, fromBob) = (alice.records[recordID]!, bob.records[recordID]!)
        let atAlice = alice.receive(fromBob)
        let atBob = bob.receive(fromAlice)
        #expect(alice.records[recordID] == bob.records[recordID])
        #expect(alice.records[recordID]!.values["stage"] == .text("lost"))
        #expect(atAlice.count == 1 && atBob.count == 1)
        let conflict = try #require(atAlice.first)
        #expect(conflict.kind == .concurrentUpdate)
        #expect(conflict.field == "stage")
        #expect(conflict.winner.value == .text("lost") && conflict.winner.dot == dot(b, 1))
        #expect(conflict.loser.value == .text("won") && conflict.loser.dot == dot(a, 2))
        #expect(atBob.first == conflict)
        // Once Alice has merged, her state already holds the outcome: nothing new for Bob.
        #expect(bob.receive(alice.records[recordID]!).isEmpty)
    }

    @Test func aWriteAfterSeeingAFutureStampedValueStillWins() {
        var alice = ModelReplica(a, time: 900_000), bob = ModelReplica(b)
        alice.create(recordID, ["name": .text("from the future")])
        bob.receive(alice.records[recordID]!)
        bob.write(recordID, ["name": .text("fixed")])   // Bob's clock says 1001, far behind
        #expect(alice.receive(bob.records[recordID]!).isEmpty)
        #expect(alice.records[recordID]!.values["name"] == .text("fixed"))
    }

    @Test func equalTimestampsAreBrokenByReplicaDeterministically() {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, [:])
        bob.receive(alice.records[recordID]!)
        alice.time = 2_000; bob.time = 2_000
        alice.write(recordID, ["x": .integer(1)])
        bob.write(recordID, ["x": .integer(2)])
        alice.receive(bob.records[recordID]!)
        bob.receive(alice.records[recordID]!)
        #expect(alice.records[recordID] == bob.records[recordID])
        #expect(alice.records[recordID]!.values["x"] == .integer(2))  // "B" > "A"
    }

    @Test func concurrentWritesToDifferentFieldsBothSurvive() {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["name": .text("Acme"), "city": .text("Oslo")])
        bob.receive(alice.records[recordID]!)
        alice.write(recordID, ["name": .text("Acme AS")])
        bob.write(recordID, ["city": .text("Bergen")])
        #expect(alice.receive(bob.records[recordID]!).isEmpty)
        #expect(bob.receive(alice.records[recordID]!).isEmpty)
        #expect(alice.records[recordID] == bob.records[recordID])
        #expect(alice.records[recordID]!.values == ["name": .text("Acme AS"), "city": .text("Bergen")])
    }

    @Test func deleteConcurrentWithUpdateKeepsTheDeleteAndLogsTheUpdate() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["name": .text("Acme")])
        bob.receive(alice.records[recordID]!)
        alice.delete(recordID)
        bob.write(recordID, ["name": .text("Acme (renamed)")])
        let atAlice = alice.receive(bob.records[recordID]!)
        let atBob = bob.receive(alice.records[recordID]!)
        #expect(alice.records[recordID] == bob.records[recordID])
        let merged = try #require(alice.records[recordID])
        #expect(merged.isDeleted)
        // The update is still in the state, so restoring brings it back.
        #expect(merged.values["name"] == .text("Acme (renamed)"))
        for conflicts in [atAlice, atBob] {
            #expect(conflicts.count == 1)
            #expect(conflicts.first?.kind == .updateOfDeleted)
            #expect(conflicts.first?.loser.value == .text("Acme (renamed)"))
            #expect(conflicts.first?.winner.isDeletion == true)
        }
        alice.restore(recordID)
        #expect(alice.records[recordID]!.isDeleted == false)
        #expect(bob.receive(alice.records[recordID]!).isEmpty)
        #expect(bob.records[recordID] == alice.records[recordID])
    }

    @Test func deleteAfterSeeingAnUpdateIsNotAConflict() {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["name": .text("Acme")])
        bob.receive(alice.records[recordID]!)
        bob.write(recordID, ["name": .text("Acme 2")])
        alice.receive(bob.records[recordID]!)
        alice.delete(recordID)
        #expect(bob.receive(alice.records[recordID]!).isEmpty)
        #expect(bob.records[recordID]!.isDeleted)
    }

    @Test func concurrentDeleteAndRestoreIsAConflict() {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, [:])
        alice.delete(recordID)
        bob.receive(alice.records[recordID]!)
        bob.restore(recordID)
        alice.restore(recordID)
        alice.delete(recordID)
        let conflicts = bob.receive(alice.records[recordID]!)
        #expect(conflicts.map(\.kind) == [.deleteVersusRestore])
        alice.receive(bob.records[recordID]!)
        #expect(alice.records[recordID] == bob.records[recordID])
    }

    @Test func concurrentIncrementsAddUp() {
        var alice = ModelReplica(a), bob = ModelReplica(b), carol = ModelReplica(c)
        alice.create(recordID, [:])
        bob.receive(alice.records[recordID]!)
        carol.receive(alice.records[recordID]!)
        alice.increment(recordID, 100)
        bob.increment(recordID, 50)
        bob.increment(recordID, -20)
        carol.increment(recordID, 7)
        for _ in 0..<2 {
            for state in [alice.records[recordID]!, bob.records[recordID]!, carol.records[recordID]!] {
                #expect(alice.receive(state).isEmpty)
                bob.receive(state)
                carol.receive(state)
            }
        }
        #expect(alice.records[recordID]!.values["points"] == .integer(137))
        #expect(alice.records[recordID] == bob.records[recordID])
        #expect(carol.records[recordID] == bob.records[recordID])
    }

    @Test func mergeReportsItsOutcome() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["x": .integer(1)])
        let created = alice.records[recordID]!
        #expect(try Merge.merge(local: nil, remote: created).outcome == .applied)
        #expect(try Merge.merge(local: created, remote: created).outcome == .unchanged)
        bob.receive(created)
        bob.write(recordID, ["y": .integer(2)])
        #expect(try Merge.merge(local: created, remote: bob.records[recordID]!).outcome == .applied)
        alice.write(recordID, ["x": .integer(3)])
        #expect(try Merge.merge(local: alice.records[recordID]!, remote: bob.records[recordID]!).outcome == .merged)
    }

    @Test func aReusedDotWithAnotherValueIsRefused() {
        var alice = ModelReplica(a)
        alice.create(recordID, ["x": .integer(1)])
        var forged = alice.records[recordID]!
        forged.fields["x"] = .register(RegisterState(value: .integer(666), dot: dot(a, 1), timestamp: HLCTimestamp(rawValue: 1)))
        forged.vector = vv([a: 1, b: 1])
        #expect(throws: ModelError.self) { try Merge.merge(local: alice.records[recordID]!, remote: forged) }
    }

    @Test func typeMismatchIsRefused() {
        let alice = { var r = ModelReplica(a); r.create(recordID, [:]); return r }()
        let other = RecordState(id: recordID, type: "account", vector: vv([b: 1]),
                                liveness: Liveness(isDeleted: false, dot: dot(b, 1), timestamp: .zero), fields: [:])
        #expect(throws: ModelError.recordTypeMismatch(record: recordID.uuidString, local: "contact", remote: "account")) {
            try Merge.merge(local: alice.records[recordID]!, remote: other)
        }
    }
}

@Suite struct SchemaTests {
    let schema = Schema([RecordType(name: "contact", fields: ["name": .text, "age": .integer, "points": .counter, "score": .real])])

    func state(_ fields: [String: FieldState], vector: VersionVector = vv([a: 1]), type: String = "contact") -> RecordState {
        RecordState(id: recordID, type: type, vector: vector,
                    liveness: Liveness(isDeleted: false, dot: dot(a, 1), timestamp: .zero), fields: fields)
    }
    func register(_ value: FieldValue) -> FieldState { .register(RegisterState(value: value, dot: dot(a, 1), timestamp: .zero)) }

    @Test func acceptsAWellFormedRecordAndUnknownFields() throws {
        try schema.validate(state(["name": register(.text("x")), "age": register(.null), "future_field": register(.bool(true))]))
    }

    @Test func refusesWhatDoesNotFit() {
        #expect(throws: ModelError.unknownRecordType("spaceship")) { try schema.validate(state([:], type: "spaceship")) }
        #expect(throws: ModelError.wrongFieldType(record: recordID.uuidString, field: "age", expected: "integer", found: "text")) {
            try schema.validate(state(["age": register(.text("forty"))]))
        }
        #expect(throws: ModelError.self) { try schema.validate(state(["points": register(.integer(3))])) }
        #expect(throws: ModelError.self) { try schema.validate(state(["score": register(.real(.nan))])) }
        #expect(throws: ModelError.self) { try schema.validate(state(["bad name": register(.null)])) }
        #expect(throws: ModelError.dotOutsideVector(record: "\(recordID.uuidString) field 'name'", dot: "B:4")) {
            try schema.validate(state(["name": .register(RegisterState(value: .text("x"), dot: dot(b, 4), timestamp: .zero))]))
        }
        #expect(throws: ModelError.self) { try schema.validate(state([:], vector: VersionVector())) }
    }
}
