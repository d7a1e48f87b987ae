import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// Protocol/conformance/merge through replica stores on real SQLite files and in PostgreSQL: each input is a
/// store that took the state in, each merge applies the remote side's state to the local side's
/// store (as a pull from upstream does), and the stores must end with the vector's result, its
/// outcome, and its conflicts both reported and in their conflict logs.
@Suite struct ConformanceStoreTests {
    /// A wall clock at the base time of the vectors plus 10 s: later than every write but
    /// clock_skew's, which is 48 hours ahead of it.
    static let wallClock: @Sendable () -> UInt64 = { 1_750_000_010_000 }

    struct Evaluated {
        var store: ReplicaStore
        var state: RecordState
        var outcome: MergeOutcome
        var reported: [Conflict]
    }

    /// The stores of one case: named `case` and a number in `place`, which the cases of a
    /// test share (one PostgreSQL database, not one per case).
    final class Stores {
        let place: StorePlace
        let name: String
        let schema: Schema
        var opened: [ReplicaStore] = []

        init(schema: Schema, place: StorePlace, case number: Int = 0) {
            self.place = place
            name = "case-\(number)"
            self.schema = schema
        }

        func make() throws -> ReplicaStore {
            var options = ReplicaStore.Options(schema: schema, replicaID: try ReplicaID("merging-\(opened.count)"))
            options.wallClock = ConformanceStoreTests.wallClock
            let store = try place.open("\(name)-replica-\(opened.count)", options: options)
            opened.append(store)
            return store
        }

        func closeAll() { opened.forEach { $0.close() } }
    }

    func evaluate(_ expression: KitExpression, _ inputs: [String: RecordState], _ stores: Stores) throws -> Evaluated {
        switch expression {
        case .input(let name):
            let state = try #require(inputs[name])
            let store = try stores.make()
            let report = try store.apply([state])
            return Evaluated(store: store, state: try #require(try store.record(state.id)), outcome: report.outcomes[0], reported: [])
        case .merge(let l, let r):
            let local = try evaluate(l, inputs, stores), remote = try evaluate(r, inputs, stores)
            let report = try local.store.apply([remote.state])
            return Evaluated(store: local.store, state: try #require(try local.store.record(remote.state.id)),
                             outcome: report.outcomes[0], reported: local.reported + remote.reported + report.conflicts)
        }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func everyCaseEndsInTheResultInRealStores(_ backend: DatabaseBackend) throws {
        let vectors = try MergeVector.loadAll()
        try #require(!vectors.isEmpty)
        let place = try StorePlace(backend)
        var cases = 0
        for vector in vectors {
            let inputs = try vector.inputs.mapValues { try $0.state() }
            let result = try vector.result.state()
            for kitCase in vector.cases {
                cases += 1
                let stores = Stores(schema: try vector.schema(), place: place, case: cases)
                defer { stores.closeAll() }
                let evaluated = try evaluate(kitCase.merge, inputs, stores)
                let label = "\(vector.name) \(kitCase.merge)"
                #expect(evaluated.state == result, "\(label): another state")
                #expect(evaluated.outcome.rawValue == kitCase.outcome, "\(label): outcome")
                let expected = kitCase.conflicts.sorted()
                #expect(evaluated.reported.map(KitConflict.init).sorted() == expected, "\(label): reported conflicts")
                let logged = try stores.opened.flatMap { try $0.conflicts(status: nil) }.map(\.conflict)
                #expect(logged.map(KitConflict.init).sorted() == expected, "\(label): conflict logs")
                #expect(logged.allSatisfy { $0.recordID == result.id && $0.recordType == result.type }, "\(label): conflicts name the record")
            }
        }
    }

    /// clock_skew: the store merges the state from a clock 48 hours ahead, and its own clock
    /// does not follow it (SPEC 1.2): the next local write is stamped from its wall clock.
    @Test(.blocking, arguments: DatabaseBackend.allCases) func aStoreMergesAStateFromFarAheadWithoutAdoptingItsClock(_ backend: DatabaseBackend) throws {
        let vector = try #require(try MergeVector.loadAll().first { $0.name == "clock_skew" })
        let ahead = try vector.inputs["b"]!.state(), own = try vector.inputs["a"]!.state()
        let stores = Stores(schema: try vector.schema(), place: try StorePlace(backend))
        defer { stores.closeAll() }
        let store = try stores.make()
        try store.apply([own])
        try store.apply([ahead])
        #expect(try store.record(own.id) == (try vector.result.state()))
        #expect(try store.lastTimestamp < ahead.latestTimestamp)
        #expect(try store.lastTimestamp.wallMilliseconds <= Self.wallClock())
    }
}
