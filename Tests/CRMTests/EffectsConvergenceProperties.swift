import CRM
import Foundation
import PropertyBased
import ReplicaStore
import SyncModel
import TestSupport
import TestScheduling
import Testing

/// What follows from changes converges: three devices and their server edit cases and deals
/// offline with the CRM's effects on everywhere, and sync in random order. Afterwards every
/// replica holds the same records; each closed case has exactly one follow-up; each write of a
/// stage has exactly one stage-change entry, none more; case numbers are unique; nothing was
/// refused.
///
/// A failure prints its seed; `RAPPORT_SEED=<seed> swift test --filter EffectsConvergence`
/// replays it, and `RAPPORT_PROPERTY_CASES` raises the number of cases.
@Suite(.shrinking(false), .blocking) struct EffectsConvergenceProperties {
    @Test func effectsComputedOfflineOnSeveralReplicasConverge() async throws {
        if let seed = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init) {
            try EffectsScenario(seed: seed).run()
            return
        }
        let cases = ProcessInfo.processInfo.environment["RAPPORT_PROPERTY_CASES"].flatMap(Int.init) ?? 60
        await propertyCheck(count: cases, input: Gen.uint64(in: 0 ... .max)) { seed in
            try EffectsScenario(seed: seed).run()
        }
    }
}

/// One random history of CRM edits across a server and its devices.
final class EffectsScenario {
    let seed: UInt64
    var rng: SeededGenerator
    let directory: TemporaryDirectory
    /// Index 0 is the server (the authority); the others are devices.
    var replicas: [ReplicaStore] = []
    /// Each replica's clock, in milliseconds: moved forward by the steps, at different paces.
    let clocks: [ManualClock]
    /// What each device pulled up to, on the server's sequence.
    var checkpoints: [Int64]
    var cases: [UUID] = []
    var deals: [UUID] = []
    var accounts: [UUID] = []
    /// Every write of a stage, by the write's dot: each must have exactly one entry.
    var stageWrites: Set<UUID> = []
    /// Every case some replica closed.
    var closedCases: Set<UUID> = []

    init(seed: UInt64) throws {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
        directory = try TemporaryDirectory()
        let start: UInt64 = 1_750_000_000_000
        clocks = (0..<4).map { _ in ManualClock(start) }
        checkpoints = Array(repeating: 0, count: 4)
        for index in 0..<4 {
            var options = ReplicaStore.Options.crm(role: index == 0 ? .authority : .device)
            let clock = clocks[index]
            options.wallClock = { clock.read() }
            options.effects = CRMChangeEffects(role: index == 0 ? .authority : .device,
                                               now: { Date(timeIntervalSince1970: Double(clock.read()) / 1000) })
            replicas.append(try ReplicaStore(path: directory.path("replica-\(index).sqlite"), options: options))
        }
    }

    deinit { for replica in replicas { replica.close() } }

    func run() throws {
        do {
            try setUp()
            for _ in 0..<Int.random(in: 20...60, using: &rng) { try step() }
            for _ in 0..<2 { for device in 1..<4 { try sync(device) } }
            try check()
        } catch {
            Issue.record("seed \(seed): \(error)")
            throw error
        }
    }

    private func setUp() throws {
        let server = replicas[0]
        for name in ["Acme", "Globex"] {
            accounts.append(try server.create("account", ["name": .text(name), "lifecycle_stage": .text("prospect")]).id)
        }
        for _ in 0..<3 { try newCase(on: 0) }
        for _ in 0..<3 { try newDeal(on: 0) }
        for device in 1..<4 { try sync(device) }
    }

    private func step() throws {
        let replica = Int.random(in: 0..<4, using: &rng)
        clocks[replica].set(clocks[replica].read() + UInt64.random(in: 1...5_000, using: &rng))
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: try newCase(on: replica)
        case 1: try newDeal(on: replica)
        case 2, 3:
            guard let id = try pick(cases, on: replica) else { return }
            let status = CRMSchema.caseStatuses.randomElement(using: &rng)!
            try replicas[replica].update(id, ["status": .text(status)])
            if status == "closed" { closedCases.insert(id) }
        case 4:
            guard let id = try pick(cases, on: replica) else { return }
            try replicas[replica].update(id, ["priority": .text(CRMSchema.casePriorities.randomElement(using: &rng)!)])
        case 5, 6, 7:
            guard let id = try pick(deals, on: replica) else { return }
            let stage = PipelineStage.defaultPipeline.randomElement(using: &rng)!.name
            try noteStageWrite(try replicas[replica].update(id, ["stage": .text(stage)]))
        default:
            if replica != 0 { try sync(replica) }
        }
    }

    /// One of `ids` that `replica` holds (it may not have pulled the others yet).
    private func pick(_ ids: [UUID], on replica: Int) throws -> UUID? {
        try ids.filter { try replicas[replica].record($0) != nil }.randomElement(using: &rng)
    }

    private func newCase(on replica: Int) throws {
        let account = accounts.randomElement(using: &rng)!
        cases.append(try replicas[replica].create("case", [
            "subject": .text("case \(cases.count)"), "priority": .text(CRMSchema.casePriorities.randomElement(using: &rng)!),
            "status": .text("new"), "account": .text(account.uuidString), "owner": .text("rep@example.com"),
        ]).id)
    }

    private func newDeal(on replica: Int) throws {
        let account = accounts.randomElement(using: &rng)!
        let deal = try replicas[replica].create("opportunity", [
            "name": .text("deal \(deals.count)"), "account": .text(account.uuidString), "stage": .text("prospecting"),
            "amount": .real(Double(Int.random(in: 1...100, using: &rng)) * 1_000),
        ])
        deals.append(deal.id)
        try noteStageWrite(deal)
    }

    private func noteStageWrite(_ deal: RecordState) throws {
        guard case .register(let stage)? = deal.fields["stage"] else { throw ModelError.malformedEncoding("no stage") }
        stageWrites.insert(CRMChangeEffects.stageChangeID(opportunity: deal.id, write: stage.dot))
    }

    /// A device's sync as the server runs it: its dirty records in one batch from downstream
    /// (one by one if the batch is refused, so only refused records fail), then everything
    /// after its checkpoint from upstream.
    private func sync(_ device: Int) throws {
        let (server, store) = (replicas[0], replicas[device])
        let dirty = try store.dirtyRecords()
        if !dirty.isEmpty {
            do {
                try server.apply(dirty, from: .downstream)
            } catch {
                for record in dirty {
                    do { try server.apply([record], from: .downstream) } catch {
                        throw ModelError.malformedEncoding("the server refused \(record.type) \(record.id): \(error)")
                    }
                }
            }
            for record in dirty { try store.acknowledge(record.id, upTo: record.vector) }
        }
        let changes = try server.changes(after: checkpoints[device], limit: .max)
        if let last = changes.last?.sequence {
            try store.apply(changes.map(\.state), from: .upstream)
            checkpoints[device] = last
        }
    }

    private func check() throws {
        let types = ["account", "case", "activity", "opportunity", "stage_change"]
        func everything(_ store: ReplicaStore) throws -> [UUID: RecordState] {
            var all: [UUID: RecordState] = [:]
            for type in types { for record in try store.records(ofType: type, includeDeleted: true) { all[record.id] = record } }
            return all
        }
        let server = try everything(replicas[0])
        for device in 1..<4 {
            let held = try everything(replicas[device])
            #expect(held == server, "seed \(seed): device \(device) differs from the server")
            #expect(try replicas[device].dirtyCount() == 0, "seed \(seed): device \(device) has unsent changes")
        }
        let followUps = Set(server.values.filter { $0.type == "activity" }.map(\.id))
        #expect(followUps == Set(closedCases.map(CRMChangeEffects.followUpID(forCase:))), "seed \(seed): follow-ups")
        let entries = Set(server.values.filter { $0.type == "stage_change" }.map(\.id))
        #expect(entries == stageWrites, "seed \(seed): \(entries.count) stage-change entries for \(stageWrites.count) stage writes")
        let numbers = server.values.filter { $0.type == "case" }.compactMap { $0.text("number") }
        #expect(numbers.count == cases.count && Set(numbers).count == numbers.count, "seed \(seed): case numbers \(numbers)")
        for id in cases {
            let record = try #require(server[id])
            #expect(record.text("response_due") != nil && record.text("opened_at") != nil, "seed \(seed): case without deadlines")
        }
    }
}
