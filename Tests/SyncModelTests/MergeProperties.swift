import Foundation
import PropertyBased
import SyncModel
import TestSupport
import TestScheduling
import Testing

/// Random histories of one record over three replicas, then checks that the merge is a join:
/// commutative, associative and idempotent, which is what convergence rests on.
@Suite(.shrinking(false), .blocking) struct MergeProperties {
    static func randomStates(seed: UInt64) -> [RecordState] {
        var rng = SeededGenerator(seed: seed)
        var replicas = [ModelReplica(a), ModelReplica(b), ModelReplica(c)]
        replicas[0].create(recordID, ["name": .text("n0")])
        for _ in 0..<Int.random(in: 5...40, using: &rng) {
            let i = Int.random(in: 0..<3, using: &rng)
            replicas[i].time += UInt64.random(in: 0...3, using: &rng)
            guard let current = replicas[i].records[recordID] else {
                replicas[i].receive(replicas[0].records[recordID]!)
                continue
            }
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4 where !current.isDeleted:
                let field = ["name", "city", "phone"].randomElement(using: &rng)!
                replicas[i].write(recordID, [field: .text("\(field)-\(Int.random(in: 0..<100, using: &rng))")])
            case 4 where !current.isDeleted:
                replicas[i].increment(recordID, Int64.random(in: -5...10, using: &rng))
            case 5 where !current.isDeleted:
                replicas[i].delete(recordID)
            case 5 where current.isDeleted:
                replicas[i].restore(recordID)
            default:
                let j = Int.random(in: 0..<3, using: &rng)
                if let state = replicas[j].records[recordID] { replicas[i].receive(state) }
            }
        }
        return replicas.compactMap { $0.records[recordID] }
    }

    static func join(_ x: RecordState, _ y: RecordState) -> RecordState { try! Merge.merge(local: x, remote: y).state }

    @Test func mergeIsCommutativeAssociativeAndIdempotent() async {
        await propertyCheck(count: 1_000, input: Gen.uint64(in: 0 ... .max)) { seed in
            let states = Self.randomStates(seed: seed)
            guard states.count == 3 else { return }
            let (x, y, z) = (states[0], states[1], states[2])
            #expect(Self.join(x, y) == Self.join(y, x), "commutativity, seed \(seed)")
            #expect(Self.join(Self.join(x, y), z) == Self.join(x, Self.join(y, z)), "associativity, seed \(seed)")
            #expect(try! Merge.merge(local: x, remote: x).outcome == .unchanged, "idempotence, seed \(seed)")
            let xy = Self.join(x, y)
            #expect(Self.join(xy, x) == xy && Self.join(xy, y) == xy, "absorption, seed \(seed)")
        }
    }
}
