import Foundation
import SyncModel
import Testing
import TestSupport

@Suite struct RecordProjectionTests {
    /// The projection reads exactly the values decoding gives, for every kind of field, present or
    /// not, declared or unknown, counters included.
    @Test func projectionAgreesWithDecoding() throws {
        var rng = SeededGenerator(seed: 0x5052_4f4a)
        let names = EncodedRecordTests.schema.types["contact"]!.fields.keys.sorted() + EncodedRecordTests.unknownNames + ["absent"]
        for round in 0..<500 {
            let state = EncodedRecordTests.randomState(&rng)
            let wanted = Array(names.shuffled(using: &rng).prefix(Int.random(in: 1...names.count, using: &rng)))
            let bytes = RecordCodec.encodeState(state)
            let projected = try bytes.withUnsafeBytes { try RecordCodec.Projection(wanted).values(in: $0) }
            #expect(projected == wanted.map { state.fields[$0]?.value ?? .null }, "round \(round)")
        }
    }

    /// Every field with the value decoding gives, in name order, and the deletion flag; bytes
    /// cut short or left over throw.
    @Test func everyValueAgreesWithDecoding() throws {
        var rng = SeededGenerator(seed: 0x4541_4348)
        for round in 0..<500 {
            let state = EncodedRecordTests.randomState(&rng)
            let bytes = RecordCodec.encodeState(state)
            var seen: [(String, FieldValue)] = []
            let deleted = try bytes.withUnsafeBytes { try RecordCodec.forEachValue(in: $0) { seen.append((String(decoding: $0, as: UTF8.self), $1)) } }
            #expect(deleted == state.isDeleted, "round \(round)")
            #expect(seen.map(\.0) == state.fields.keys.sorted(), "round \(round)")
            #expect(seen.map(\.1) == state.fields.keys.sorted().map { state.fields[$0]!.value }, "round \(round)")
            for cut in [bytes.dropLast(), bytes + [0]] {
                #expect(throws: ModelError.self) { try Array(cut).withUnsafeBytes { try RecordCodec.forEachValue(in: $0) { _, _ in } } }
            }
        }
    }

    @Test func truncatedBytesThrowInsteadOfTrapping() throws {
        var rng = SeededGenerator(seed: 7)
        let state = EncodedRecordTests.randomState(&rng)
        let bytes = RecordCodec.encodeState(state)
        let projection = RecordCodec.Projection(state.fields.keys.sorted())
        for length in 0..<bytes.count {
            let cut = Array(bytes.prefix(length))
            // Some prefixes end exactly after a field; reading them must be safe, not complete.
            _ = try? cut.withUnsafeBytes { try projection.values(in: $0) }
        }
        #expect(throws: ModelError.self) { try [UInt8]([9]).withUnsafeBytes { try projection.values(in: $0) } }
    }
}

@Suite struct CounterTotalTests {
    /// Past the bounds of Int64 the total is clamped once, whatever the order of contributions.
    @Test func clampedTotalDoesNotDependOnOrder() throws {
        let time = HLCTimestamp(rawValue: 1)
        let big = CounterContribution(added: UInt64.max, subtracted: 0, lastCounter: 1, lastTimestamp: time)
        let minus = CounterContribution(added: 0, subtracted: UInt64.max, lastCounter: 1, lastTimestamp: time)
        let small = CounterContribution(added: 5, subtracted: 0, lastCounter: 1, lastTimestamp: time)
        #expect(CounterState.total(of: [big, minus, small]) == 5)
        #expect(CounterState.total(of: [small, minus, big]) == 5)
        #expect(CounterState.total(of: [big, small]) == Int64.max)
        #expect(CounterState.total(of: [minus, small]) == Int64.min)
    }
}
