import ArgumentParser
import CRM
import Foundation
import Registry
import ReplicaStore
import SQLite

/// How long a tenant keeps tombstones and closed conflicts, and the purge and compaction the
/// server runs on its housekeeping schedule (SPEC.md 1.8).
struct RetentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "Show or set a tenant's tombstone and conflict horizons; purge and compact now.",
        subcommands: [Show.self, SetHorizons.self, Run.self])

    /// What `show` and `run` print about a tenant's store.
    struct State: Codable {
        var tenant: String
        var tombstoneHorizon: String
        var conflictHorizon: String
        var purgedThrough: Int64
        var sequence: Int64
        var tombstones: Int
        var closedConflicts: Int
        /// The store file's figures; `nil` for a store in a database shared by tenants.
        var storage: StorageFigures?
        var purge: PurgeReport?
        var compaction: CompactionReport?
        var registryCompaction: CompactionReport?

        var text: String {
            var text = "tenant \(tenant): tombstones kept \(tombstoneHorizon), closed conflicts kept \(conflictHorizon)\n"
            text += "sequence \(sequence), purged through \(purgedThrough), \(tombstones) tombstones, \(closedConflicts) closed conflicts\n"
            if let storage {
                text += "store \(storage.fileBytes) bytes (\(storage.freeBytes) free), wal \(storage.walBytes) bytes"
                text += storage.incrementalVacuum ? "\n" : ", no incremental vacuum (run 'rapportctl retention run --vacuum' once)\n"
            }
            if let purge { text += "purged \(purge.tombstonesPurged) tombstones and \(purge.conflictsPurged) closed conflicts\n" }
            if let compaction {
                text += "compacted: \(compaction.before.fileBytes) -> \(compaction.after.fileBytes) bytes, \(compaction.pagesFreed) pages freed"
                text += compaction.walTruncated ? ", wal truncated\n" : ", wal in use (truncated at a later run)\n"
            }
            if let registryCompaction {
                text += "registry: \(registryCompaction.before.fileBytes) -> \(registryCompaction.after.fileBytes) bytes\n"
            }
            return text
        }
    }

    static func state(of tenant: Tenant, store: ReplicaStore) throws -> State {
        let policy = RetentionPolicy(settings: tenant.settings)
        return State(tenant: tenant.slug, tombstoneHorizon: RetentionPolicy.text(policy.tombstoneHorizon),
                     conflictHorizon: RetentionPolicy.text(policy.conflictHorizon), purgedThrough: try store.purgedThrough,
                     sequence: try store.lastSequence, tombstones: try store.tombstoneCount(),
                     closedConflicts: try store.conflicts(status: nil).filter { $0.status != .open }.count,
                     storage: try store.storageFigures())
    }

    static func emit(_ common: CommonOptions, _ state: State) throws {
        if common.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            Output.standard(String(decoding: try encoder.encode(state), as: UTF8.self) + "\n")
        } else {
            Output.standard(state.text)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A tenant's horizons, how far its store purged, its tombstones and its size.")
        @OptionGroup var common: CommonOptions
        @Argument var tenant: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let row = try registry.requireTenant(tenant, allowDeleted: true)
            let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
            defer { store.close() }
            try RetentionCommand.emit(common, try RetentionCommand.state(of: row, store: store))
        }
    }

    struct SetHorizons: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set how long a tenant keeps tombstones and resolved or superseded conflicts.",
            discussion: """
                Durations take a unit: 90d, 12h, 30m, 2s, 500ms. Defaults: tombstones 90d, \
                closed conflicts 30d; open conflicts are never purged. A device whose checkpoint \
                is older than the tombstone horizon resyncs without losing what it holds unsynced. \
                The server applies a change within a second; devices learn it at their next sync.
                """)
        @OptionGroup var common: CommonOptions
        @Argument var tenant: String
        @Option(help: ArgumentHelp("How long a deleted record's tombstone stays.", valueName: "duration"))
        var tombstones: String?
        @Option(help: ArgumentHelp("How long a resolved or superseded conflict-log entry stays.", valueName: "duration"))
        var conflicts: String?

        func run() throws {
            guard tombstones != nil || conflicts != nil else { throw CtlFailure(.usage, "give --tombstones, --conflicts or both") }
            let registry = try common.registry()
            defer { registry.close() }
            let detail = [tombstones.map { "tombstones \($0)" }, conflicts.map { "conflicts \($0)" }].compactMap { $0 }.joined(separator: ", ")
            _ = try common.audited(registry, "retention set", tenant: tenant, detail: detail) {
                try registry.setRetention(tenant, tombstones: tombstones, conflicts: conflicts)
            }
            let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
            defer { store.close() }
            try RetentionCommand.emit(common, try RetentionCommand.state(of: try registry.requireTenant(tenant), store: store))
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Purge what is past a tenant's horizons and compact its store and the registry now.",
            discussion: """
                What rapportd runs every --housekeeping-interval seconds, safe beside a running \
                server: short transactions, a passive WAL checkpoint, an incremental vacuum. A \
                tombstone's age counts from marks each purge leaves, so a first run on a store \
                only starts the count. --vacuum rewrites a store made before incremental vacuum \
                existed, once (it holds the store's write lock while it runs).
                """)
        @OptionGroup var common: CommonOptions
        @Argument var tenant: String
        @Flag(help: "Rewrite the store and the registry once with a full VACUUM, switching incremental vacuum on.")
        var vacuum = false

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let state = try common.audited(registry, "retention run", tenant: tenant, detail: vacuum ? "vacuum" : "") { () throws -> State in
                let row = try registry.requireTenant(tenant)
                let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
                defer { store.close() }
                let purge = try store.purgeExpired(RetentionPolicy(settings: row.settings))
                let compaction = try store.compact(vacuum: vacuum)
                var state = try RetentionCommand.state(of: row, store: store)
                state.purge = purge
                state.compaction = compaction
                state.registryCompaction = try registry.compact(vacuum: vacuum)
                return state
            }
            try RetentionCommand.emit(common, state)
        }
    }
}
