import Foundation
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// Protocol/conformance/merge, proven on `SyncModel`: every vector's states decode from their
/// bytes and encode to them, and every case, evaluated with `Merge`, ends in the vector's result
/// with its outcome and conflicts. `ReplicaStoreTests.ConformanceStoreTests` runs the same files
/// through replica stores.
///
/// `RAPPORT_WRITE_VECTORS=1 swift test --filter ConformanceMergeTests` rewrites the files from
/// `ConformanceMergeVectors`; the normal run checks every file in the folder.
@Suite(.serialized) struct ConformanceMergeTests {
    @Test(.blocking, .enabled(if: ConformanceKit.writing, "set RAPPORT_WRITE_VECTORS=1 to rewrite Protocol/conformance/merge"))
    func writeVectors() throws {
        try ConformanceKit.rewrite(MergeVector.directory, ConformanceMergeVectors.all.map { scenario in
            (scenario.name, try ConformanceKit.encode(try ConformanceMergeVectors.vector(scenario)))
        })
    }

    @Test(.blocking) func theFilesAreWhatTheGeneratorMakes() throws {
        let vectors = try MergeVector.loadAll()
        #expect(Set(vectors.map(\.name)) == Set(ConformanceMergeVectors.all.map(\.name)))
        for scenario in ConformanceMergeVectors.all {
            let file = MergeVector.directory.appendingPathComponent("\(scenario.name).json")
            let expected = try ConformanceKit.encode(try ConformanceMergeVectors.vector(scenario))
            #expect(try Data(contentsOf: file) == expected, "\(scenario.name).json is stale; rewrite the vectors?")
        }
    }

    @Test(.blocking) func everyStateDecodesFromItsBytesAndEncodesToThem() throws {
        for vector in try MergeVector.loadAll() {
            for (name, kit) in vector.inputs.sorted(by: { $0.key < $1.key }) + [("result", vector.result)] {
                let state = try kit.state()
                #expect(try kit.decodedFromBytes() == state, "\(vector.name) \(name): the bytes decode to another state")
                #expect(ConformanceKit.hex(RecordCodec.encode(state.vector)) == kit.encoded?.vector, "\(vector.name) \(name): vector bytes")
                #expect(ConformanceKit.hex(RecordCodec.encodeState(state)) == kit.encoded?.state, "\(vector.name) \(name): state bytes")
                #expect(KitState(state) == kit, "\(vector.name) \(name): the neutral form does not round-trip")
                try state.checkConsistency()
            }
        }
    }

    @Test(.blocking) func everyCaseEndsInTheResultWithItsOutcomeAndConflicts() throws {
        let vectors = try MergeVector.loadAll()
        try #require(!vectors.isEmpty)
        for vector in vectors {
            let inputs = try vector.inputs.mapValues { try $0.state() }
            let result = try vector.result.state()
            #expect(Set(vector.cases.flatMap(\.merge.inputs)) == Set(vector.inputs.keys), "\(vector.name): a case leaves an input out")
            for kitCase in vector.cases {
                let evaluated = try kitCase.merge.evaluate(inputs)
                #expect(evaluated.state == result, "\(vector.name) \(kitCase.merge): another state")
                #expect(evaluated.outcome.rawValue == kitCase.outcome, "\(vector.name) \(kitCase.merge): outcome")
                #expect(evaluated.conflicts.map(KitConflict.init).sorted() == kitCase.conflicts.sorted(),
                        "\(vector.name) \(kitCase.merge): conflicts")
            }
        }
    }

    /// The kit promises every order of the inputs ends in the one result; the files list the
    /// orders, and this checks they are all there.
    @Test(.blocking) func everyVectorListsEveryOrderOfItsInputs() throws {
        for vector in try MergeVector.loadAll() {
            let listed = Set(vector.cases.map(\.merge))
            for expected in ConformanceMergeVectors.cases(for: vector.inputs.keys.sorted()) {
                #expect(listed.contains(expected), "\(vector.name) lacks \(expected)")
            }
        }
    }
}
