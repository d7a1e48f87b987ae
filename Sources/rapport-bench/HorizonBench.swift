import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SQLite
import SyncModel
import TestSupport

/// What the tombstone horizon saves (SPEC.md 1.8): a tenant's store after N create-update-delete
/// cycles, with and without purges, on a simulated clock of one cycle per second.
struct HorizonBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "horizon",
        abstract: "Store size after N create-update-delete cycles with and without the tombstone horizon.",
        discussion: """
            Two stores take the same cycles (a contact created, updated and deleted; 1,000 cycles \
            per transaction) on a clock that moves one second per cycle. The floor store keeps \
            every tombstone; the other purges what is past --horizon-cycles every --purge-every \
            cycles and compacts (incremental vacuum, WAL checkpoint), as rapportd's \
            housekeeping does. Figures: bytes and tombstones of each, the size ratio, and the \
            time ratio (what purging and compacting cost on top of the writes).
            """)

    @Option(help: "Create-update-delete cycles.")
    var cycles = 1_000_000

    @Option(help: "The tombstone horizon, in cycles (seconds of the simulated clock).")
    var horizonCycles = 100_000

    @Option(help: "Cycles between purges (default: a tenth of the horizon).")
    var purgeEvery: Int?

    @Option(help: "Directory for the database files (a temporary one by default).")
    var directory: String?

    mutating func run() throws {
        guard cycles > 0, horizonCycles > 0 else { throw ValidationError("--cycles and --horizon-cycles must be positive") }
        let every = max(1, purgeEvery ?? horizonCycles / 10)
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "horizon")
        let policy = RetentionPolicy(tombstoneHorizon: Int64(horizonCycles) * 1_000, conflictHorizon: RetentionPolicy.standard.conflictHorizon)

        let floor = try run(path: dir.path("without.sqlite"), purging: nil)
        report.line("store_without_horizon", ["cycles": cycles, "seconds": floor.seconds, "bytes": floor.bytes,
                                              "tombstones": floor.tombstones, "records": floor.records])
        let purged = try run(path: dir.path("with.sqlite"), purging: (policy, every))
        report.line("store_with_horizon", [
            "cycles": cycles, "horizon_cycles": horizonCycles, "purge_every": every, "seconds": purged.seconds,
            "bytes": purged.bytes, "tombstones": purged.tombstones, "records": purged.records,
            "tombstones_purged": purged.purged, "purged_through": purged.purgedThrough,
            "bytes_ratio_to_floor": Double(purged.bytes) / Double(max(1, floor.bytes)),
            "ratio_to_floor": purged.seconds / floor.seconds,
        ])
    }

    struct Outcome {
        var seconds: Double
        var bytes: Int64
        var tombstones: Int
        var records: Int
        var purged = 0
        var purgedThrough: Int64 = 0
    }

    /// The cycles on a fresh store, purging and compacting every `purging.every` cycles when given.
    func run(path: String, purging: (policy: RetentionPolicy, every: Int)?) throws -> Outcome {
        let clock = ManualClock(1_700_000_000_000)
        var options = ReplicaStore.Options(schema: CRMSchema.current)
        options.wallClock = clock.read
        let store = try ReplicaStore(path: path, options: options)
        defer { store.close() }
        var purged = 0
        let seconds = try measure {
            var done = 0
            while done < cycles {
                let batch = min(1_000, cycles - done)
                try store.transaction {
                    for index in 0..<batch {
                        let id = try store.create("contact", ["last_name": .text("Contact \(done + index)"), "email": .text("c\(done + index)@example.com")]).id
                        _ = try store.update(id, ["title": .text("Buyer")])
                        _ = try store.delete(id)
                    }
                }
                let before = done
                done += batch
                clock.set(1_700_000_000_000 + UInt64(done) * 1_000)
                if let purging, before / purging.every != done / purging.every {
                    purged += try store.purgeExpired(purging.policy).tombstonesPurged
                    _ = try store.compact()
                }
            }
            if let purging {
                purged += try store.purgeExpired(purging.policy).tombstonesPurged
            }
            _ = try store.compact()
        }
        // A store opened by its path: a file, which has figures.
        let figures = try store.storageFigures()!
        return Outcome(seconds: seconds, bytes: figures.fileBytes + figures.walBytes, tombstones: try store.tombstoneCount(),
                       records: try store.recordIDs().count, purged: purged, purgedThrough: try store.purgedThrough)
    }
}
