import Foundation
import SyncModel
import Testing

/// The answers of Protocol/SPEC.md's clarifications that live in the sync model, pinned so the
/// spec and the code cannot part: each test names the clarification it holds.
@Suite struct SpecClarificationTests {
    static let schema = Schema([RecordType(name: "contact", fields: ["name": .text, "points": .counter])])

    static func bytes(_ vector: VersionVector, _ state: RecordState) -> EncodedRecord {
        EncodedRecord(id: state.id, type: state.type, vector: RecordCodec.encode(vector), state: RecordCodec.encodeState(state))
    }

    /// Writes a state by hand, `context` exactly as given (the encoder would write the canonical one).
    static func encodeDeleted(dotIndex: UInt8, counter: UInt8, context: [(UInt8, UInt8)]) -> [UInt8] {
        var out: [UInt8] = [1, 1, dotIndex, counter, 0x05, UInt8(context.count)]
        for (index, counter) in context { out += [index, counter] }
        return out + [0]  // no fields
    }

    // MARK: The deletion context (clarification 2)

    @Test func aDeletionContextHoldsTheDeletesOwnDot() {
        var alice = ModelReplica(a)
        alice.create(recordID, ["name": .text("Ada")])
        alice.delete(recordID)
        let state = alice.records[recordID]!
        #expect(state.liveness.dot == dot(a, 2))
        #expect(state.liveness.deletionContext == state.vector)
        #expect(state.liveness.deletionContext.contains(dot(a, 2)))
    }

    @Test func aContextWithoutItsOwnDotDecodesToTheCanonicalOneAndIsEncodedAgain() throws {
        let vector = try VersionVector([a: 1, b: 4])
        // Deleted by b:4; the context {a:1, b:3} leaves the delete's own dot out, {a:1, b:4} holds it.
        let without = Self.encodeDeleted(dotIndex: 1, counter: 4, context: [(0, 1), (1, 3)])
        let with = Self.encodeDeleted(dotIndex: 1, counter: 4, context: [(0, 1), (1, 4)])
        let vectorBytes = RecordCodec.encode(vector)
        let fromWithout = try EncodedRecord(id: recordID, type: "contact", vector: vectorBytes, state: without).decoded()
        let fromWith = try EncodedRecord(id: recordID, type: "contact", vector: vectorBytes, state: with).decoded()
        #expect(fromWithout == fromWith)
        #expect(fromWithout.liveness.deletionContext == vector)
        #expect(RecordCodec.encodeState(fromWithout) == with)
        // The canonical form is taken as it is; the other is valid, and re-encoded before it is stored.
        let canonical = try Self.schema.validate(EncodedRecord(id: recordID, type: "contact", vector: vectorBytes, state: with))
        let other = try Self.schema.validate(EncodedRecord(id: recordID, type: "contact", vector: vectorBytes, state: without))
        #expect(canonical.decodedState == nil)
        #expect(other.decodedState == fromWith)
    }

    @Test func aLiveRecordHasNoDeletionContext() throws {
        let liveness = Liveness(isDeleted: false, dot: dot(a, 1), timestamp: .zero, deletionContext: try VersionVector([a: 1]))
        #expect(liveness.deletionContext.isEmpty)
    }

    // MARK: A dot used again (clarification 3)

    @Test func aStateTheReceiverCoversIsUnchangedWhateverItsValues() throws {
        var alice = ModelReplica(a)
        alice.create(recordID, ["name": .text("Ada")])
        let original = alice.records[recordID]!
        var forged = original
        forged.fields["name"] = .register(RegisterState(value: .text("Eve"), dot: dot(a, 1), timestamp: original.liveness.timestamp))
        // Same vector: nothing new, so nothing is read, and the receiver keeps its state.
        let result = try Merge.merge(local: original, remote: forged)
        #expect(result.outcome == .unchanged && result.state == original)
        // With something new beside it, the reused dot is compared and refused.
        forged.write(["other": .integer(1)], dot: dot(a, 2), timestamp: HLCTimestamp(wallMilliseconds: 5_000, logical: 0))
        #expect(throws: ModelError.self) { try Merge.merge(local: original, remote: forged) }
    }

    // MARK: Vectors on the wire (clarifications 4 and 8)

    @Test func aZeroEntryEqualsNoEntryButIsRefusedInTheEncoding() throws {
        #expect(try VersionVector([a: 0, b: 2]) == VersionVector([b: 2]))
        #expect(try VersionVector([a: 0, b: 2]).compare(VersionVector([b: 2])) == .equal)
        #expect(RecordCodec.encode(try VersionVector([a: 0, b: 2])) == [1, 1, 0x42, 2])
        let zero: [UInt8] = [2, 1, 0x41, 0, 1, 0x42, 2]  // {A: 0, B: 2}
        #expect(throws: ModelError.invalidCounter(replica: "A", value: "0")) {
            try zero.withUnsafeBytes { try RecordCodec.decodeVector($0) }
        }
    }

    @Test func replicaIndexesReferToTheSortedVectorWhateverTheWireOrder() throws {
        // The vector listed B first; index 0 still names A, the first replica in sorted order.
        let unsorted: [UInt8] = [2, 1, 0x42, 4, 1, 0x41, 1]
        let state: [UInt8] = [1, 0, 0, 1, 0x05, 0, 1, 4] + Array("name".utf8) + [0, 5, 3] + Array("Ada".utf8) + [1, 4, 0x06]
        let record = EncodedRecord(id: recordID, type: "contact", vector: unsorted, state: state)
        let decoded = try record.decoded()
        #expect(decoded.vector == (try VersionVector([a: 1, b: 4])))
        #expect(decoded.liveness.dot == dot(a, 1))
        guard case .register(let name)? = decoded.fields["name"] else { Issue.record("no name"); return }
        #expect(name.dot == dot(b, 4))
        // Valid, but not canonical: a receiver stores it sorted.
        let validation = try Self.schema.validate(record)
        #expect(validation.decodedState == decoded)
        #expect(RecordCodec.encode(decoded.vector) == [2, 1, 0x41, 1, 1, 0x42, 4])
    }

    // MARK: Deletes and restores (clarifications 11 and 12)

    @Test func twoConcurrentDeletesAreNoConflictAndTheLaterKeepsItsWholeContext() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b), carol = ModelReplica(c)
        alice.create(recordID, ["name": .text("Ada")])
        bob.receive(alice.records[recordID]!)
        carol.receive(alice.records[recordID]!)
        carol.write(recordID, ["name": .text("Ada L.")])   // c:1, which Bob sees and Alice does not
        bob.receive(carol.records[recordID]!)
        bob.delete(recordID)                               // b:1 at 1002, context {A:1, B:1, C:1}
        alice.time = 5_000
        alice.delete(recordID)                             // a:2 at 5001, context {A:2}: the later one
        let (fromAlice, fromBob) = (alice.records[recordID]!, bob.records[recordID]!)
        let atAlice = alice.receive(fromBob)
        let atBob = bob.receive(fromAlice)
        #expect(alice.records[recordID] == bob.records[recordID])
        let merged = alice.records[recordID]!
        #expect(merged.liveness.dot == dot(a, 2))
        #expect(merged.liveness.deletionContext == (try VersionVector([a: 2])))
        // No delete_versus_restore between the deletes; Carol's write, outside the surviving
        // context, is reported as concurrent with the delete where it is news.
        #expect(!(atAlice + atBob).contains { $0.kind == .deleteVersusRestore })
        #expect(atAlice.map(\.kind) == [.updateOfDeleted] && atAlice.first?.loser.dot == dot(c, 1))
        #expect(atBob.map(\.kind) == [.updateOfDeleted] && atBob.first?.loser.dot == dot(c, 1))
    }

    @Test func aRestoreSideIsTheValueTrueAndADeletionSideHasNoValue() throws {
        var alice = ModelReplica(a), bob = ModelReplica(b)
        alice.create(recordID, ["name": .text("Ada")])
        alice.delete(recordID)
        bob.receive(alice.records[recordID]!)
        bob.restore(recordID)                              // b:1
        alice.time = 9_000
        alice.restore(recordID)
        alice.delete(recordID)                             // later than Bob's restore
        let conflicts = bob.receive(alice.records[recordID]!)
        let conflict = try #require(conflicts.first { $0.kind == .deleteVersusRestore })
        #expect(conflict.field == nil)
        #expect(conflict.winner.isDeletion && conflict.winner.value == nil)
        #expect(!conflict.loser.isDeletion && conflict.loser.value == .bool(true) && conflict.loser.dot == dot(b, 1))
    }

    // MARK: Who finds a conflict (clarification 13)

    @Test func aDeviceFindsNoConflictInAStateThatAlreadyMergedItsWrite() {
        var device = ModelReplica(a), other = ModelReplica(b), server = ModelReplica(c)
        device.create(recordID, ["name": .text("Ada")])
        server.receive(device.records[recordID]!)
        other.receive(device.records[recordID]!)
        device.write(recordID, ["name": .text("device")])
        other.time = 5_000
        other.write(recordID, ["name": .text("other")])
        #expect(server.receive(other.records[recordID]!).isEmpty)
        // The server finds the conflict when the device pushes...
        #expect(server.receive(device.records[recordID]!).map(\.kind) == [.concurrentUpdate])
        // ...and the device, pulling the merged state, finds none: it hears of it from the
        // server (PullBatch.conflicts, or the PushResult).
        #expect(device.receive(server.records[recordID]!).isEmpty)
        #expect(device.records[recordID]!.values["name"] == .text("other"))
    }
}
