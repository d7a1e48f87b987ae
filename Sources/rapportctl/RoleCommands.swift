import Access
import ArgumentParser
import CRM
import Foundation
import RapportDevice
import Registry

extension AccessLevel: ExpressibleByArgument {}

/// The roles of a tenant (admin, manager, rep): what each may read, change, create and delete
/// per record type. A tenant starts with `CRMAccess.defaultRoles`; `set` stores the tenant's own
/// definition of a role, `reset` drops it. The server applies a change within a second.
struct RoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "role",
        abstract: "List, show, change and reset the rights of a tenant's roles.",
        subcommands: [List.self, Show.self, Set.self, Reset.self])

    /// A role as the tenant has it now, and whether that is its own definition.
    struct Current {
        var role: Role
        var isOwn: Bool
        var source: String { isOwn ? "tenant" : "default" }
    }

    /// Refuses a name that is not a role, before anything is read or stored.
    static func checkName(_ name: String) throws {
        guard UserRole(rawValue: name) != nil else {
            throw CtlFailure(.usage, "no role '\(name)': a role is \(UserRole.allNames)")
        }
    }

    /// Every role of `tenant` in the order of `UserRole`, the tenant's own definition where it
    /// has one, else the default.
    static func current(_ registry: Registry, tenant: String) throws -> [Current] {
        let own = try registry.roleOverrides(tenant: tenant)
        return UserRole.allCases.map { name in
            if let role = own[name.rawValue] { return Current(role: role, isOwn: true) }
            let role = CRMAccess.defaultRoles.first { $0.name == name.rawValue } ?? Role(name: name.rawValue, types: [:])
            return Current(role: role, isOwn: false)
        }
    }

    static func current(_ registry: Registry, tenant: String, name: String) throws -> Current {
        try checkName(name)
        return try current(registry, tenant: tenant).first { $0.role.name == name }!
    }

    /// The rights of one type as `Role`'s own JSON has them, with field lists sorted so that the
    /// same definition always prints the same.
    static func json(_ rights: TypeRights) -> JSONValue {
        .object([
            "read": .string(rights.read.rawValue), "write": .string(rights.write.rawValue), "create": .bool(rights.create),
            "delete": .string(rights.delete.rawValue),
            "hidden_fields": .array(rights.hiddenFields.sorted().map { .string($0) }),
            "read_only_fields": .array(rights.readOnlyFields.sorted().map { .string($0) }),
        ])
    }

    /// The role in `Role`'s JSON shape (`JSONDecoder` reads it back into a `Role`).
    static func json(_ role: Role) -> JSONValue {
        .object(["name": .string(role.name), "types": .object(sorted: role.types.mapValues(json))])
    }

    /// One table row per record type the role names.
    static func rows(_ current: Current) -> [[String]] {
        current.role.types.sorted { $0.key < $1.key }.map { type, rights in
            [current.role.name, current.source, type, rights.read.rawValue, rights.write.rawValue, rights.create ? "yes" : "no",
             rights.delete.rawValue, rights.hiddenFields.sorted().joined(separator: ","),
             rights.readOnlyFields.sorted().joined(separator: ",")]
        }
    }

    /// The role and the tenant every command but `list` names.
    struct Target: ParsableArguments {
        @Argument(help: "admin, manager or rep.")
        var name: String
        @Option(help: "The tenant.")
        var tenant: String
    }

    static let titles = ["ROLE", "SOURCE", "TYPE", "READ", "WRITE", "CREATE", "DELETE", "HIDDEN", "READ-ONLY"]

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a tenant's roles with their rights per record type, and whether each is the default or the tenant's own.")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let roles = try RoleCommand.current(registry, tenant: tenant)
            common.emit(text: Output.table(RoleCommand.titles, roles.flatMap(RoleCommand.rows)),
                        json: .array(roles.map { current in
                            .object(["name": .string(current.role.name), "source": .string(current.source),
                                     "types": .object(sorted: current.role.types.mapValues(RoleCommand.json))])
                        }))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the whole definition of one role of a tenant; --json prints it as the registry stores it.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let current = try RoleCommand.current(registry, tenant: target.tenant, name: target.name)
            let heading = "role \(target.name) of tenant \(target.tenant): \(current.isOwn ? "the tenant's own definition" : "the default")\n"
            common.emit(text: heading + Output.table(Array(RoleCommand.titles.dropFirst(2)), RoleCommand.rows(current).map { Array($0.dropFirst(2)) }),
                        json: RoleCommand.json(current.role))
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change what a role may do with one record type.",
            discussion: """
                Starts from the role as the tenant has it now (its own definition or the \
                default) and stores the whole role as the tenant's own. Levels: none, own \
                (records the user owns), team (owned within the user's team), all. A role may \
                not write more than it reads, nor delete more than it writes. Fields are those \
                of the CRM schema's record type.
                """)
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        @Argument(help: "The record type: account, contact, opportunity...")
        var type: String
        @Option(help: "Which records the role sees.")
        var read: AccessLevel?
        @Option(help: "Which records the role may change.")
        var write: AccessLevel?
        @Flag(inversion: .prefixedNo, help: "Whether the role may create records of the type.")
        var create: Bool?
        @Option(help: "Which records the role may delete or restore.")
        var delete: AccessLevel?
        @Option(parsing: .upToNextOption, help: ArgumentHelp("Fields the role never sees nor writes.", valueName: "field"))
        var hide: [String] = []
        @Option(parsing: .upToNextOption, help: ArgumentHelp("Hidden fields the role sees again.", valueName: "field"))
        var show: [String] = []
        @Option(name: .customLong("read-only"), parsing: .upToNextOption,
                help: ArgumentHelp("Fields the role reads but may not write.", valueName: "field"))
        var readOnly: [String] = []
        @Option(parsing: .upToNextOption, help: ArgumentHelp("Read-only fields the role may write again.", valueName: "field"))
        var writable: [String] = []

        /// The changes as the audit log records them: `read=team hide=annual_revenue`.
        var detail: String {
            var parts = [target.name, type]
            if let read { parts.append("read=\(read.rawValue)") }
            if let write { parts.append("write=\(write.rawValue)") }
            if let create { parts.append(create ? "create" : "no-create") }
            if let delete { parts.append("delete=\(delete.rawValue)") }
            for (label, fields) in [("hide", hide), ("show", show), ("read-only", readOnly), ("writable", writable)] where !fields.isEmpty {
                parts.append("\(label)=\(fields.joined(separator: ","))")
            }
            return parts.joined(separator: " ")
        }

        /// `rights` with the requested changes, or a usage failure saying which argument is wrong.
        func changed(_ rights: TypeRights) throws -> TypeRights {
            guard let recordType = CRMSchema.current.types[type] else {
                throw CtlFailure(.usage, "no record type '\(type)' in the CRM schema; types: \(CRMSchema.current.types.keys.sorted().joined(separator: ", "))")
            }
            guard read != nil || write != nil || create != nil || delete != nil || !(hide + show + readOnly + writable).isEmpty else {
                throw CtlFailure(.usage, "nothing to change: give --read, --write, --create/--no-create, --delete, --hide, --show, --read-only or --writable")
            }
            let fields = recordType.fields.keys
            // A field being made visible or writable again may have left the schema since it was
            // hidden; what the role lists is as good as the schema for taking it out.
            for (option, names, allowed) in [("--hide", hide, Swift.Set(fields)), ("--read-only", readOnly, Swift.Set(fields)),
                                             ("--show", show, Swift.Set(fields).union(rights.hiddenFields)),
                                             ("--writable", writable, Swift.Set(fields).union(rights.readOnlyFields))] {
                if let unknown = names.first(where: { !allowed.contains($0) }) {
                    throw CtlFailure(.usage, "\(option) \(unknown): \(type) has no field '\(unknown)'; its fields: \(fields.sorted().joined(separator: ", "))")
                }
            }
            for (first, second, a, b) in [("--hide", "--show", hide, show), ("--read-only", "--writable", readOnly, writable)] {
                if let both = a.first(where: b.contains) { throw CtlFailure(.usage, "\(both) is given to both \(first) and \(second)") }
            }
            let newRead = read ?? rights.read
            let newWrite = write ?? rights.write
            let newDelete = delete ?? rights.delete
            // TypeRights would quietly lower these; an operator who asked for more should hear why not.
            guard newWrite <= newRead else {
                throw CtlFailure(.usage, "write \(newWrite.rawValue) is more than read \(newRead.rawValue): a role cannot change records it does not see")
            }
            guard newDelete <= newWrite else {
                throw CtlFailure(.usage, "delete \(newDelete.rawValue) is more than write \(newWrite.rawValue): a role cannot delete records it may not change")
            }
            return TypeRights(read: newRead, write: newWrite, create: create ?? rights.create, delete: newDelete,
                              hiddenFields: rights.hiddenFields.union(hide).subtracting(show),
                              readOnlyFields: rights.readOnlyFields.union(readOnly).subtracting(writable))
        }

        func run() throws {
            try RoleCommand.checkName(target.name)
            let registry = try common.registry()
            defer { registry.close() }
            let role = try common.audited(registry, "role set", tenant: target.tenant, detail: detail) {
                var role = try RoleCommand.current(registry, tenant: target.tenant, name: target.name).role
                role.types[type] = try changed(role.rights(for: type))
                try registry.setRole(tenant: target.tenant, role)
                return role
            }
            common.emit(text: Output.table(Array(RoleCommand.titles.dropFirst(2)),
                                           RoleCommand.rows(Current(role: Role(name: target.name, types: [type: role.rights(for: type)]), isOwn: true))
                                               .map { Array($0.dropFirst(2)) }),
                        json: RoleCommand.json(role))
        }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a role of a tenant back its default rights.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target

        func run() throws {
            try RoleCommand.checkName(target.name)
            let registry = try common.registry()
            defer { registry.close() }
            let wasOwn = try common.audited(registry, "role reset", tenant: target.tenant, detail: target.name) {
                let wasOwn = try registry.roleOverrides(tenant: target.tenant)[target.name] != nil
                try registry.resetRole(tenant: target.tenant, name: target.name)
                return wasOwn
            }
            let current = try RoleCommand.current(registry, tenant: target.tenant, name: target.name)
            common.emit(text: wasOwn ? "role \(target.name) of tenant \(target.tenant) has its default rights again\n"
                                     : "role \(target.name) of tenant \(target.tenant) already had its default rights\n",
                        json: RoleCommand.json(current.role))
        }
    }
}

extension UserRole {
    /// "admin, manager or rep", for messages.
    static var allNames: String {
        let names = allCases.map(\.rawValue)
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }
}
