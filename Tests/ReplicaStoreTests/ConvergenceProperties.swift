import Foundation
import PropertyBased
import ReplicaStore
import SyncModel
import TestSupport
import TestScheduling
import Testing

/// The sync invariants, checked on real stores in real SQLite files: 3 to 5 replicas make random
/// creates, edits, deletes, restores, increments and conflict resolutions, and exchange batches
/// in random order, with batches dropped, duplicated, and interrupted half-way.
///
/// Every case runs from one 64-bit seed. A failure prints it; to replay one case, run
/// `RAPPORT_SEED=<seed> swift test --filter ConvergenceProperties`. `RAPPORT_PROPERTY_CASES`
/// raises the number of random cases.
///
/// Each case runs twice over: with batches of `RecordState`s (`apply`) and with batches in the
/// form they travel in between replicas (`encodedChanges`, `apply(encoded:)`).
@Suite(.shrinking(false), .blocking) struct ConvergenceProperties {
    static var caseCount: Int {
        ProcessInfo.processInfo.environment["RAPPORT_PROPERTY_CASES"].flatMap(Int.init) ?? 300
    }

    /// Cases on PostgreSQL (`RAPPORT_POSTGRES_PROPERTY_CASES`): fewer, as every statement is a
    /// round trip to the server.
    static var postgresCaseCount: Int {
        ProcessInfo.processInfo.environment["RAPPORT_POSTGRES_PROPERTY_CASES"].flatMap(Int.init) ?? 40
    }

    @Test(arguments: [Scenario.Form.states, .encoded])
    func replicasConvergeLoseNothingAndAreIdempotent(form: Scenario.Form) async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try Scenario(seed: seed, form: form).run()
            return
        }
        await propertyCheck(count: Self.caseCount, input: Gen.uint64(in: 0 ... .max)) { seed in
            try Scenario(seed: seed, form: form).run()
        }
    }

    /// The same invariants when one replica's file is written through three handles at once
    /// (a server and admin commands on one tenant store): each write picks a handle at random,
    /// and every handle must work from the counter, sequence and clock as committed, so that no
    /// dot or sequence number is issued twice and peers pulling by checkpoint miss nothing.
    @Test func severalHandlesWritingOneReplicaFile() async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try Scenario(seed: seed, form: seed % 2 == 0 ? .states : .encoded, handlesOfFirstReplica: 3).run()
            return
        }
        await propertyCheck(count: max(1, Self.caseCount / 2), input: Gen.uint64(in: 0 ... .max)) { seed in
            try Scenario(seed: seed, form: seed % 2 == 0 ? .states : .encoded, handlesOfFirstReplica: 3).run()
        }
    }

    /// Both properties with every replica a tenant of one PostgreSQL database, the first one
    /// written through three connections: the server tier's stores, several nodes on one
    /// tenant. `RAPPORT_SEED` replays a case here too.
    @Test func replicasOnPostgreSQLConvergeLoseNothingAndAreIdempotent() async throws {
        let database = try PostgresServer.database()
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try Scenario(seed: seed, form: seed % 2 == 0 ? .states : .encoded, handlesOfFirstReplica: 3, postgres: database).run()
            return
        }
        await propertyCheck(count: Self.postgresCaseCount, input: Gen.uint64(in: 0 ... .max)) { seed in
            try Scenario(seed: seed, form: seed % 2 == 0 ? .states : .encoded, handlesOfFirstReplica: 3, postgres: database).run()
        }
    }
}

/// One random history and the bookkeeping that lets it be checked.
final class Scenario {
    /// How batches travel and are applied.
    enum Form: Sendable, CustomStringConvertible {
        case states, encoded
        var description: String { self == .states ? "record states" : "encoded records" }
    }

    struct Message {
        var to: Int
        var from: Int
        var states: [RecordState]
        var records: [EncodedRecord]
        var upTo: Int64
        var origin: ApplyOrigin
    }

    /// A register write as it was made, and whether a later local write on the same field was
    /// made by a replica that had seen it (then losing it is the user's intent, not a loss).
    struct TrackedWrite {
        var record: UUID
        var field: String
        var dot: Dot
        var value: FieldValue
        var overwritten = false
    }

    struct Interrupted: Error {}

    let seed: UInt64
    let form: Form
    var rng: SeededGenerator
    let dir: TemporaryDirectory
    let clocks: [ManualClock]
    /// The handle each step uses for each replica; see `handles`.
    var stores: [ReplicaStore]
    /// Every open handle of each replica's file. Where a replica has several, each step uses
    /// one of them at random.
    let handles: [[ReplicaStore]]
    /// The highest dot counter and sequence number each replica has issued so far: a later
    /// write, through whichever handle, must issue higher ones.
    var issued: [(counter: UInt64, sequence: Int64)]
    var records: [UUID] = []
    var writes: [TrackedWrite] = []
    var expectedPoints: [UUID: Int64] = [:]
    var checkpoints: [[Int64]]
    var inFlight: [Message] = []
    var delivered: [Message] = []

    /// - Parameter postgres: a database whose tenants the replicas are (named after the seed, so
    ///   cases share it without meeting); `nil` for SQLite files.
    init(seed: UInt64, form: Form = .states, handlesOfFirstReplica: Int = 1, postgres: PostgresDatabase? = nil) throws {
        self.seed = seed
        self.form = form
        rng = SeededGenerator(seed: seed)
        let dir = try TemporaryDirectory()
        self.dir = dir
        let count = Int.random(in: 3...5, using: &rng)
        var clocks: [ManualClock] = []
        var handles: [[ReplicaStore]] = []
        for i in 0..<count {
            // Clocks up to ten minutes apart, so timestamps and causality often disagree.
            let clock = ManualClock(1_700_000_000_000 + UInt64.random(in: 0...600_000, using: &rng))
            var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("r\(i)"))
            options.wallClock = { clock.read() }
            options.synchronous = .off
            clocks.append(clock)
            var replicaHandles: [ReplicaStore] = []
            for _ in 0..<(i == 0 ? handlesOfFirstReplica : 1) {
                if let postgres {
                    replicaHandles.append(try StorePlace.open(tenant: "s\(String(seed, radix: 16))-r\(i)", in: postgres, options: options))
                } else {
                    replicaHandles.append(try ReplicaStore(path: dir.path("r\(i).sqlite"), options: options))
                }
            }
            handles.append(replicaHandles)
        }
        self.clocks = clocks
        self.handles = handles
        self.stores = handles.map { $0[0] }
        issued = Array(repeating: (0, 0), count: count)
        checkpoints = Array(repeating: Array(repeating: 0, count: count), count: count)
    }

    func run() throws {
        for _ in 0..<Int.random(in: 40...120, using: &rng) { try step() }
        try exchangeEverything()
        try checkConvergence()
        try checkNothingLost()
    }

    // MARK: Random steps

    func randomUUID() -> UUID {
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { bytes in
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0 ... .max, using: &rng) }
        }
        return UUID(uuid: raw)
    }

    func randomValue(_ field: String) -> FieldValue {
        Int.random(in: 0..<10, using: &rng) == 0 ? .null : .text("\(field)-\(Int.random(in: 0..<1000, using: &rng))")
    }

    func step() throws {
        let r = Int.random(in: 0..<stores.count, using: &rng)
        if handles[r].count > 1 { stores[r] = handles[r].randomElement(using: &rng)! }
        let clock = clocks[r]
        if Int.random(in: 0..<20, using: &rng) == 0 {
            clock.set(clock.read() - UInt64.random(in: 0...5_000, using: &rng))  // stepped back
        } else {
            clock.set(clock.read() + UInt64.random(in: 0...50, using: &rng))
        }
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<12:
            let id = randomUUID()
            var values: [String: FieldValue] = [:]
            for field in ["name", "city", "phone"] where Bool.random(using: &rng) { values[field] = randomValue(field) }
            try local(r, id) { try $0.create("contact", id: id, values) }
            records.append(id)
        case 12..<35:
            guard let id = try pickRecord(at: r, deleted: false) else { return }
            var values: [String: FieldValue] = [:]
            for field in ["name", "city", "phone", "note"] where Int.random(in: 0..<3, using: &rng) == 0 { values[field] = randomValue(field) }
            if values.isEmpty { values["name"] = randomValue("name") }
            try local(r, id) { try $0.update(id, values) }
        case 35..<40:
            guard let id = try pickRecord(at: r, deleted: false) else { return }
            try local(r, id) { try $0.delete(id) }
        case 40..<43:
            guard let id = try pickRecord(at: r, deleted: true) else { return }
            try local(r, id) { try $0.restore(id) }
        case 43..<50:
            guard let id = try pickRecord(at: r, deleted: false) else { return }
            let amount = Int64.random(in: -20...50, using: &rng)
            try local(r, id) { try $0.increment(id, field: "points", by: amount) }
            expectedPoints[id, default: 0] += amount
        case 50..<65:
            let from = Int.random(in: 0..<stores.count, using: &rng)
            guard from != r else { return }
            let limit = Int.random(in: 1...6, using: &rng)
            let changes = try stores[from].changes(after: checkpoints[r][from], limit: limit)
            guard let last = changes.last else { return }
            let encoded = try stores[from].encodedChanges(after: checkpoints[r][from], limit: limit)
            #expect(try encoded.map { try $0.record.decoded() } == changes.map(\.state), "seed \(seed): encoded changes differ")
            inFlight.append(Message(to: r, from: from, states: changes.map(\.state), records: encoded.map(\.record),
                                    upTo: last.sequence, origin: Bool.random(using: &rng) ? .upstream : .downstream))
        case 65..<82:
            guard !inFlight.isEmpty else { return }
            let message = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
            try apply(message, to: stores[message.to])
            checkpoints[message.to][message.from] = max(checkpoints[message.to][message.from], message.upTo)
            delivered.append(message)
        case 82..<87:
            guard !inFlight.isEmpty else { return }
            inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
        case 87..<92:
            guard let message = delivered.randomElement(using: &rng) else { return }
            let store = stores[message.to]
            let before = try StoreSnapshot(store)
            let report = try apply(message, to: store)
            #expect(report.outcomes.allSatisfy { $0 == .unchanged }, "seed \(seed): a duplicate batch changed records")
            #expect(try StoreSnapshot(store) == before, "seed \(seed): applying a batch twice changed the store")
        case 92..<96:
            guard let message = inFlight.randomElement(using: &rng) else { return }
            let store = stores[message.to]
            let before = try StoreSnapshot(store)
            let stopAt = Int.random(in: 0..<message.states.count, using: &rng)
            #expect(throws: Interrupted.self) {
                try apply(message, to: store) { if $0 == stopAt { throw Interrupted() } }
            }
            #expect(try StoreSnapshot(store) == before, "seed \(seed): an interrupted batch left a trace")
        default:
            let open = try stores[r].conflicts()
            guard let entry = open.randomElement(using: &rng) else { return }
            let choice: ConflictResolution = [.keepWinner, .takeLoser, .value(randomValue("resolved"))].randomElement(using: &rng)!
            let before = try StoreSnapshot(stores[r])
            do {
                try local(r, entry.conflict.recordID) { try $0.resolve(entry.id, choice) }
            } catch let error as ReplicaStoreError {
                // Some choices do not fit (a value for a record's existence, an update of a
                // record deleted since): refused, and nothing may have changed.
                #expect(try StoreSnapshot(stores[r]) == before, "seed \(seed): refused resolution \(error) changed the store")
            }
        }
    }

    /// Applies a message's batch in this scenario's form.
    @discardableResult
    func apply(_ message: Message, to store: ReplicaStore, progress: ((Int) throws -> Void)? = nil) throws -> ApplyReport {
        switch form {
        case .states: try store.apply(message.states, from: message.origin, progress: progress)
        case .encoded: try store.apply(encoded: message.records, from: message.origin, progress: progress)
        }
    }

    func pickRecord(at r: Int, deleted: Bool) throws -> UUID? {
        var candidates: [UUID] = []
        for id in records {
            if let state = try stores[r].record(id), state.isDeleted == deleted { candidates.append(id) }
        }
        return candidates.randomElement(using: &rng)
    }

    /// Runs a local write and records which register writes it made and which it overwrote.
    func local(_ r: Int, _ id: UUID, _ body: (ReplicaStore) throws -> Void) throws {
        let before = try stores[r].record(id)?.vector ?? VersionVector()
        try body(stores[r])
        guard let after = try stores[r].record(id) else { return }
        let counter = after.vector[stores[r].replicaID]
        let sequence = try stores[r].lastSequence
        if counter > before[stores[r].replicaID] {
            #expect(counter > issued[r].counter, "seed \(seed): r\(r) issued dot counter \(counter) again (had reached \(issued[r].counter))")
            #expect(sequence > issued[r].sequence, "seed \(seed): r\(r) issued sequence \(sequence) again (had reached \(issued[r].sequence))")
            issued[r] = (max(counter, issued[r].counter), max(sequence, issued[r].sequence))
        }
        for (field, state) in after.fields {
            guard case .register(let register) = state, !before.contains(register.dot) else { continue }
            for index in writes.indices where writes[index].record == id && writes[index].field == field && before.contains(writes[index].dot) {
                writes[index].overwritten = true
            }
            writes.append(TrackedWrite(record: id, field: field, dot: register.dot, value: register.value))
        }
    }

    // MARK: Checks

    func exchangeEverything() throws {
        for _ in 0..<2 {
            for to in stores.indices {
                for from in stores.indices where from != to {
                    switch form {
                    case .states: try stores[to].apply(try stores[from].changes(after: 0, limit: .max).map(\.state))
                    case .encoded: try stores[to].apply(encoded: try stores[from].encodedChanges(after: 0, limit: .max).map(\.record))
                    }
                }
            }
        }
    }

    func checkConvergence() throws {
        let reference = try StoreSnapshot(stores[0]).records
        for (index, store) in stores.enumerated().dropFirst() {
            let records = try StoreSnapshot(store).records
            #expect(records == reference, "seed \(seed): replica r\(index) differs from r0 after exchanging everything")
        }
        for (id, points) in expectedPoints {
            let value = try stores[0].record(id)?.values["points"]
            #expect(value == .integer(points), "seed \(seed): record \(id) counts \(String(describing: value)), increments add up to \(points)")
        }
    }

    func checkNothingLost() throws {
        struct Key: Hashable { var record: UUID; var field: String; var dot: Dot }
        var logged = Set<Key>()
        for store in stores {
            for entry in try store.conflicts(status: nil) {
                logged.insert(Key(record: entry.conflict.recordID, field: entry.conflict.field ?? "", dot: entry.conflict.loser.dot))
            }
        }
        let final = Dictionary(uniqueKeysWithValues: try StoreSnapshot(stores[0]).records.map { ($0.id, $0) })
        for write in writes {
            guard let state = final[write.record] else {
                Issue.record("seed \(seed): record \(write.record) vanished")
                continue
            }
            guard case .register(let current)? = state.fields[write.field] else {
                Issue.record("seed \(seed): field \(write.field) of \(write.record) vanished")
                continue
            }
            let isLogged = logged.contains(Key(record: write.record, field: write.field, dot: write.dot))
            if current.dot == write.dot {
                // In the state. If the record is deleted by someone who never saw this write,
                // the write must also be in a conflict log, so it can be found and restored.
                if state.isDeleted && !state.liveness.deletionContext.contains(write.dot) {
                    #expect(isLogged, "seed \(seed): write \(write.dot) to \(write.field) hidden by a concurrent delete without a conflict entry")
                }
            } else if !write.overwritten {
                #expect(isLogged, "seed \(seed): write \(write.dot) (\(write.value)) to \(write.field) of \(write.record) lost without a conflict entry")
            }
        }
    }
}
