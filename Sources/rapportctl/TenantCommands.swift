import ArgumentParser
import CRM
import Foundation
import Postgres
import RapportDevice
import Registry

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Create, list, suspend, resume, delete and move tenants.",
        subcommands: [Create.self, List.self, Show.self, Rename.self, Suspend.self, Resume.self, Delete.self, Purge.self, Move.self])

    static func json(_ tenant: Tenant) -> JSONValue {
        .object([
            "slug": .string(tenant.slug), "name": .string(tenant.name), "status": .string(tenant.status.rawValue),
            "created_at": jsonDate(tenant.createdAt), "deleted_at": jsonDate(tenant.deletedAt),
            "settings": .object(sorted: tenant.settings.mapValues { .string($0) }),
        ])
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a tenant and its empty CRM store.",
            discussion: "The store file is complete before the tenant appears in the registry: a crash leaves no half-made tenant.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The tenant id: 1 to 63 of a-z 0-9 -, not starting or ending with -.")
        var slug: String
        @Option(help: "The display name (default: the id).")
        var name: String?
        @Option(help: ArgumentHelp("An operator setting, key=value; repeatable.", valueName: "key=value"))
        var setting: [String] = []

        func run() throws {
            var settings: [String: String] = [:]
            for pair in setting {
                guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                    throw CtlFailure(.usage, "--setting \(pair): expected key=value")
                }
                settings[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
            let registry = try common.registry(creating: true)
            defer { registry.close() }
            let crashAt = ProcessInfo.processInfo.environment["RAPPORTCTL_CRASH_AT"].flatMap(DataDirectory.CreationStep.init)
            let tenant = try common.audited(registry, "tenant create", tenant: slug) {
                try common.directory.createTenant(slug, name: name ?? slug, settings: settings, schema: CRMSchema.current, in: registry,
                                                  crashAt: { step in if step == crashAt { abort() } })
            }
            common.emit(text: "created tenant \(tenant.slug) (\(tenant.name))\nnext: rapportctl user add --tenant \(tenant.slug) --email ... --name ... --role admin\n",
                        json: TenantCommand.json(tenant))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var common: CommonOptions
        @Flag(help: "Include deleted tenants (kept until purged).")
        var all = false

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let tenants = try registry.tenants(includeDeleted: all)
            common.emit(text: Output.table(["TENANT", "NAME", "STATUS", "CREATED"],
                                           tenants.map { [$0.slug, $0.name, $0.status.rawValue, iso($0.createdAt)] }),
                        json: .array(tenants.map(TenantCommand.json)))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant with its users and devices.")
        @OptionGroup var common: CommonOptions
        @Argument var slug: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let tenant = try registry.requireTenant(slug, allowDeleted: true)
            let users = try registry.users(tenant: slug, includeRemoved: true)
            let devices = try registry.devices(tenant: slug)
            var text = "tenant \(tenant.slug): \(tenant.name)\nstatus \(tenant.status.rawValue), created \(iso(tenant.createdAt))\n"
            text += tenant.settings.sorted { $0.key < $1.key }.map { "setting \($0.key)=\($0.value)\n" }.joined()
            text += "users \(users.filter { $0.status != .removed }.count), devices \(devices.filter { $0.status == .active }.count) active of \(devices.count)\n"
            var json = TenantCommand.json(tenant)
            if case .members(var members) = json {
                members.append(.init("users", .integer(Int64(users.filter { $0.status != .removed }.count))))
                members.append(.init("active_devices", .integer(Int64(devices.filter { $0.status == .active }.count))))
                json = .members(members)
            }
            common.emit(text: text, json: json)
        }
    }

    struct Rename: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a tenant's display name (its id never changes).")
        @OptionGroup var common: CommonOptions
        @Argument var slug: String
        @Argument var name: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            try common.audited(registry, "tenant rename", tenant: slug, detail: name) { try registry.renameTenant(slug, to: name) }
            let tenant = try registry.requireTenant(slug)
            common.emit(text: "renamed tenant \(slug) to \(name)\n", json: TenantCommand.json(tenant))
        }
    }

    /// Suspend and resume share everything but the status they set.
    static func setStatus(_ common: CommonOptions, _ slug: String, _ status: TenantStatus, action: String, allowDeleted: Bool = false) throws {
        let registry = try common.registry()
        defer { registry.close() }
        try common.audited(registry, action, tenant: slug) {
            let tenant = try registry.requireTenant(slug, allowDeleted: allowDeleted)
            if tenant.status == .deleted && !allowDeleted { throw RegistryError.noSuchTenant(slug) }
            try registry.setTenantStatus(slug, status)
        }
        let tenant = try registry.requireTenant(slug, allowDeleted: true)
        common.emit(text: "tenant \(slug) is \(tenant.status.rawValue)\n", json: TenantCommand.json(tenant))
    }

    struct Suspend: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Suspend a tenant: its sessions end within seconds and new ones are refused; data stays intact.")
        @OptionGroup var common: CommonOptions
        @Argument var slug: String
        func run() throws { try TenantCommand.setStatus(common, slug, .suspended, action: "tenant suspend") }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a suspended tenant, or bring back a deleted one that was not purged.")
        @OptionGroup var common: CommonOptions
        @Argument var slug: String
        func run() throws { try TenantCommand.setStatus(common, slug, .active, action: "tenant resume", allowDeleted: true) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a tenant: refused from then on and hidden; its data is kept until 'tenant purge'.",
            discussion: "'tenant resume' brings a deleted tenant back as it was.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: ConfirmedTenant

        func run() throws {
            try target.confirmed()
            try TenantCommand.setStatus(common, target.slug, .deleted, action: "tenant delete")
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a deleted tenant for good: its store file, users and devices (the audit log keeps its history).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: ConfirmedTenant

        func run() throws {
            try target.confirmed()
            let slug = target.slug
            let registry = try common.registry()
            defer { registry.close() }
            try common.audited(registry, "tenant purge", tenant: slug) { try common.directory.purgeTenant(slug, in: registry) }
            common.emit(text: "purged tenant \(slug)\n", json: .object(["slug": .string(slug), "purged": .bool(true)]))
        }
    }
}

extension TenantCommand {
    struct Move: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a tenant to PostgreSQL (--to postgres://...) or to a data directory (--to DIR), keeping its replica.",
            discussion: """
                The store is copied row for row under its write lock and checked, then the registry rows (users, devices, \
                branches, API keys, webhooks, roles, audit log), then the tenant is removed here. The replica id, sequence \
                numbers and credentials stay, so devices keep their checkpoints and need no resync: point them (or the \
                server's address) at a server of the target. A server still serving the tenant here is refused every write \
                after the copy, so nothing is lost. Run again after a stop, it finishes the move.
                """)
        @OptionGroup var common: CommonOptions
        @Argument(help: "The tenant id.")
        var slug: String
        @Option(help: ArgumentHelp("Where to: a PostgreSQL URL (postgres://...) or a data directory.", valueName: "store"))
        var to: String

        func run() throws {
            let target = PostgresConnection.isURL(to)
                ? DataDirectory(common.directory.path, database: to)
                : DataDirectory(URL(fileURLWithPath: to).standardizedFileURL.path)
            let crashAt = ProcessInfo.processInfo.environment["RAPPORTCTL_CRASH_AT"].flatMap(DataDirectory.MoveStep.init)
            let move = try common.directory.moveTenant(slug, to: target, actor: common.actorName,
                                                       crashAt: { step in if step == crashAt { abort() } })
            let users = move.registryRows["users"] ?? 0, devices = move.registryRows["devices"] ?? 0
            common.emit(text: """
                moved tenant \(slug) to \(move.destination)\(move.finishedEarlierMove ? " (finished an earlier move)" : "")
                store: \(move.store.records) records, sequence \(move.store.sequence), replica \(move.store.replicaID), checked table by table
                registry: \(users) users, \(devices) devices, \(move.registryRows["api_keys"] ?? 0) API keys, \(move.registryRows["webhooks"] ?? 0) webhooks
                next: serve it from there (rapportd \(target.database == nil ? "--data DIR" : "--store URL")); devices keep their checkpoints

                """, json: .object([
                    "slug": .string(slug), "to": .string(move.destination), "finished_earlier_move": .bool(move.finishedEarlierMove),
                    "records": .integer(Int64(move.store.records)), "sequence": .integer(move.store.sequence), "replica_id": .string(move.store.replicaID),
                    "registry_rows": .object(sorted: move.registryRows.mapValues { .integer(Int64($0)) }),
                ]))
        }
    }
}

/// A tenant named twice, for the commands that cannot be undone lightly.
struct ConfirmedTenant: ParsableArguments {
    @Argument var slug: String
    @Option(help: ArgumentHelp("The tenant id again, to confirm.", valueName: "tenant"))
    var confirm: String?

    func confirmed() throws {
        guard confirm == slug else { throw RegistryError.confirmationMismatch(expected: slug, got: confirm) }
    }
}
