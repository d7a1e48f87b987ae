import ArgumentParser
import CRM
import Foundation
import PrivateFiles
import RapportDevice
import Registry
import ReplicaStore

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a tenant's store to a file, consistently, while the server keeps serving it.",
        discussion: "Uses SQLite's online backup API; the file is verified (integrity check) before it is put in place.")
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: ArgumentHelp("The backup file to write (replaced if it exists).", valueName: "file"))
    var to: String

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        let info = try common.audited(registry, "backup", tenant: tenant, detail: to) {
            try common.directory.backup(tenant: tenant, to: to, in: registry)
        }
        common.emit(text: "backed up tenant \(tenant) to \(to): \(info.records) records up to sequence \(info.lastSequence)\n",
                    json: .object(["tenant": .string(tenant), "file": .string(to), "records": .integer(Int64(info.records)),
                                   "sequence": .integer(info.lastSequence), "schema_version": .integer(Int64(info.schemaVersion))]))
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a tenant from a backup file, after verifying it.",
        discussion: """
            The backup is checked first (SQLite integrity check, that it is a Rapport store, its \
            schema version); nothing is replaced if it fails. A tenant that does not exist is \
            created from it. An existing tenant must be suspended first; resume it afterwards. \
            The restored store takes a new server identity, so every device pulls from the \
            start and pushes again what the backup lacks.
            """)
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: ArgumentHelp("The backup file.", valueName: "file"))
    var from: String
    @Option(help: "The display name of a tenant created by the restore.")
    var name: String?

    func run() throws {
        let registry = try common.registry(creating: true)
        defer { registry.close() }
        let info = try common.audited(registry, "restore", tenant: tenant, detail: from) {
            try common.directory.restore(tenant: tenant, from: from, name: name, schema: CRMSchema.current, in: registry)
        }
        common.emit(text: "restored tenant \(tenant) from \(from): \(info.records) records\n",
                    json: .object(["tenant": .string(tenant), "file": .string(from), "records": .integer(Int64(info.records)),
                                   "replica_id": .string(info.replicaID)]))
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export every record of a tenant as JSON lines, one file per record type.",
        discussion: """
            Writes DIR/<type>.jsonl (one record per line, as 'rapport get --json' shows it) and \
            DIR/manifest.json, readable only by their owner (DIR 0700 if created, files 0600).
            """)
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: ArgumentHelp("The directory to write (created if missing).", valueName: "dir"))
    var to: String
    @Flag(help: "Also export deleted records (tombstones).")
    var includeDeleted = false

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        let counts = try common.audited(registry, "export", tenant: tenant, detail: to) { () throws -> [String: Int] in
            _ = try registry.requireTenant(tenant, allowDeleted: true)
            let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
            defer { store.close() }
            try PrivateFiles.createDirectory(to)
            var counts: [String: Int] = [:]
            for type in store.schema.types.keys.sorted() {
                let records = try store.records(ofType: type, includeDeleted: includeDeleted)
                let lines = records.map { Presentation.json($0).rendered(pretty: false) + "\n" }.joined()
                try PrivateFiles.write(lines, to: to + "/\(type).jsonl")
                counts[type] = records.count
            }
            let manifest = JSONValue.object([
                "tenant": .string(tenant), "exported_at": jsonDate(Date()), "schema_version": .integer(Int64(CRMSchema.version)),
                "records": .object(sorted: counts.mapValues { .integer(Int64($0)) }),
            ])
            try PrivateFiles.write(manifest.rendered() + "\n", to: to + "/manifest.json")
            return counts
        }
        common.emit(text: "exported \(counts.values.reduce(0, +)) records of tenant \(tenant) to \(to)\n",
                    json: .object(["tenant": .string(tenant), "directory": .string(to),
                                   "records": .object(sorted: counts.mapValues { .integer(Int64($0)) })]))
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Records per type, devices, last sync per device, store size and open conflicts.",
        discussion: "With a tenant, its details; without, one line per tenant.")
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String?

    struct TenantStats {
        var tenant: Tenant
        var records: [String: Int]
        var devices: [RegisteredDevice]
        var branches: [RegisteredBranch]
        /// The replica ids each branch's store has had: more than one, it was restored or rebuilt.
        var branchReplicas: [String: [String]]
        /// The tenant's sequence, for how far each branch lags.
        var sequence: Int64
        /// On a branch: its link to the centre, as its server last wrote it.
        var upstream: [String: Any]?
        var bytes: Int64
        var openConflicts: Int
        var lastSync: Date? { devices.compactMap(\.lastSeen).max() }
    }

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        if let tenant {
            let stats = try collect(try registry.requireTenant(tenant, allowDeleted: true), registry)
            var text = "tenant \(tenant) (\(stats.tenant.status.rawValue)): \(stats.records.values.reduce(0, +)) records, "
            text += "\(stats.bytes) bytes, \(stats.openConflicts) open conflicts\n\n"
            text += Output.table(["TYPE", "RECORDS"], stats.records.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
            let rows = stats.devices.map { (device: RegisteredDevice) -> [String] in
                [device.id, device.user, device.status.rawValue, iso(device.lastSeen), device.lastCheckpoint.map { String($0) } ?? "-"]
            }
            text += "\n" + Output.table(["DEVICE", "USER", "STATUS", "LAST SYNC", "CHECKPOINT"], rows)
            if !stats.branches.isEmpty {
                let rows = stats.branches.map { (branch: RegisteredBranch) -> [String] in
                    [branch.id, branch.name, branch.status.rawValue, iso(branch.lastSeen), branch.lastCheckpoint.map { String($0) } ?? "-",
                     branch.lastCheckpoint.map { String(max(0, stats.sequence - $0)) } ?? "-",
                     String(stats.branchReplicas[branch.id]?.count ?? 0)]
                }
                text += "\n" + Output.table(["BRANCH", "NAME", "STATUS", "LAST SYNC", "CHECKPOINT", "BEHIND", "REPLICAS"], rows)
                let restored = stats.branches.filter { (stats.branchReplicas[$0.id]?.count ?? 0) > 1 }.map(\.name)
                if !restored.isEmpty { text += "restored or rebuilt (more than one replica id): \(restored.joined(separator: ", "))\n" }
            }
            if let link = stats.upstream { text += "\n" + Self.describe(link: link) }
            common.emit(text: text, json: json(stats))
        } else {
            let all = try registry.tenants().map { try collect($0, registry) }
            let rows = all.map { (stats: TenantStats) -> [String] in
                let active = stats.devices.filter { $0.status == .active }.count
                return [stats.tenant.slug, stats.tenant.status.rawValue, String(stats.records.values.reduce(0, +)),
                        String(active), iso(stats.lastSync), String(stats.bytes), String(stats.openConflicts)]
            }
            common.emit(text: Output.table(["TENANT", "STATUS", "RECORDS", "DEVICES", "LAST SYNC", "BYTES", "CONFLICTS"], rows),
                        json: .array(all.map(json)))
        }
    }

    func collect(_ tenant: Tenant, _ registry: Registry) throws -> TenantStats {
        let store = try common.directory.openStore(of: tenant.slug, options: .crm(role: .authority))
        defer { store.close() }
        var records: [String: Int] = [:]
        for type in store.schema.types.keys { records[type] = try store.count(ofType: type) }
        var upstream: [String: Any]?
        if let data = FileManager.default.contents(atPath: common.directory.path + "/upstream-status.json"),
           let file = try? JSONSerialization.jsonObject(with: data) as? [String: Any], file["tenant"] as? String == tenant.slug {
            upstream = file
        }
        let branches = try registry.branches(tenant: tenant.slug)
        return TenantStats(tenant: tenant, records: records, devices: try registry.devices(tenant: tenant.slug),
                           branches: branches, branchReplicas: try Dictionary(uniqueKeysWithValues: branches.map { ($0.id, try registry.branchReplicas(branch: $0.id)) }),
                           sequence: try store.lastSequence, upstream: upstream,
                           bytes: try common.directory.storeSize(of: tenant.slug),
                           openConflicts: try store.conflicts(status: .open).count)
    }

    func json(_ stats: TenantStats) -> JSONValue {
        .object([
            "tenant": .string(stats.tenant.slug), "status": .string(stats.tenant.status.rawValue),
            "records": .object(sorted: stats.records.mapValues { .integer(Int64($0)) }),
            "store_bytes": .integer(stats.bytes), "open_conflicts": .integer(Int64(stats.openConflicts)),
            "last_sync": jsonDate(stats.lastSync), "devices": .array(stats.devices.map(DeviceCommand.json)),
            "sequence": .integer(stats.sequence),
            "branches": .array(stats.branches.map { BranchCommand.json($0, replicas: stats.branchReplicas[$0.id] ?? []) }),
            "upstream": stats.upstream.map(Self.json(link:)) ?? .null,
        ])
    }

    /// A branch's link as `rapportd` left it in `upstream-status.json`.
    static func describe(link file: [String: Any]) -> String {
        let link = file["link"] as? [String: Any] ?? [:]
        let connected = link["connected"] as? Bool ?? false
        let since = link["since"] as? String ?? "-"
        var text = "upstream link to \(file["upstream"] as? String ?? "?"): \(connected ? "connected" : "not connected") since \(since)\n"
        let centreSequence = (link["centreSequence"] as? NSNumber)?.int64Value ?? 0
        let checkpoint = (link["checkpoint"] as? NSNumber)?.int64Value ?? 0
        text += "  changes waiting to go up: \((link["waiting"] as? NSNumber)?.intValue ?? 0)"
        text += ", behind the centre: \(max(0, centreSequence - checkpoint)) (checkpoint \(checkpoint) of \(centreSequence))\n"
        if let error = link["lastError"] as? String, !connected { text += "  last error: \(error)\n" }
        if let restored = link["centreRestoredAt"] as? String { text += "  the centre was found restored (new identity) at \(restored)\n" }
        text += "  status written \(file["updatedAt"] as? String ?? "-") by the branch's rapportd\n"
        return text
    }

    static func json(link file: [String: Any]) -> JSONValue {
        let link = file["link"] as? [String: Any] ?? [:]
        let centreSequence = (link["centreSequence"] as? NSNumber)?.int64Value ?? 0
        let checkpoint = (link["checkpoint"] as? NSNumber)?.int64Value ?? 0
        return .object([
            "upstream": .optional(file["upstream"] as? String), "connected": .bool(link["connected"] as? Bool ?? false),
            "since": .optional(link["since"] as? String), "waiting": .integer((link["waiting"] as? NSNumber)?.int64Value ?? 0),
            "centre_sequence": .integer(centreSequence), "checkpoint": .integer(checkpoint), "behind": .integer(max(0, centreSequence - checkpoint)),
            "last_error": .optional(link["lastError"] as? String), "centre_restored_at": .optional(link["centreRestoredAt"] as? String),
            "updated_at": .optional(file["updatedAt"] as? String),
        ])
    }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the audit log: who did what, when, and how it went.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Only this tenant's entries.")
    var tenant: String?
    @Option(help: "The most recent N entries.")
    var limit = 100

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        let entries = try registry.auditEntries(tenant: tenant, limit: limit)
        let rows = entries.map { (entry: AuditEntry) -> [String] in
            [iso(entry.at), entry.actor, entry.action, entry.tenant ?? "", entry.detail, entry.result]
        }
        let json = entries.map { (entry: AuditEntry) -> JSONValue in
            .object(["id": .integer(entry.id), "at": jsonDate(entry.at), "actor": .string(entry.actor), "action": .string(entry.action),
                     "tenant": .optional(entry.tenant), "detail": .string(entry.detail), "result": .string(entry.result)])
        }
        common.emit(text: Output.table(["WHEN", "WHO", "ACTION", "TENANT", "DETAIL", "RESULT"], rows), json: .array(json))
    }
}
