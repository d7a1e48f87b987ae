import ArgumentParser
import Foundation
import RapportDevice
import Registry

extension UserRole: ExpressibleByArgument {}

struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Add, list, change, suspend, resume and remove a tenant's users.",
        subcommands: [Add.self, List.self, SetRole.self, SetTeam.self, Suspend.self, Resume.self, Remove.self])

    static func json(_ user: User) -> JSONValue {
        .object([
            "email": .string(user.email), "name": .string(user.name), "tenant": .string(user.tenant),
            "role": .string(user.role.rawValue), "team": .optional(user.team), "status": .string(user.status.rawValue),
            "created_at": jsonDate(user.createdAt),
        ])
    }

    /// The tenant and the user every command but `list` names.
    struct Target: ParsableArguments {
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: "The user's e-mail address.")
        var email: String
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user to a tenant.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        @Option(help: "The user's full name.")
        var name: String
        @Option(help: "admin, manager or rep.")
        var role: UserRole = .rep
        @Option(help: "The user's team, for reports.")
        var team: String?

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let user = try common.audited(registry, "user add", tenant: target.tenant, detail: "\(target.email) \(role.rawValue)") {
                try registry.addUser(tenant: target.tenant, email: target.email, name: name, role: role, team: team)
            }
            common.emit(text: "added \(user.email) (\(user.role.rawValue)) to tenant \(user.tenant)\nnext: rapportctl device enroll --tenant \(user.tenant) --user \(user.email)\n",
                        json: UserCommand.json(user))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's users.")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Flag(help: "Include removed users.")
        var all = false

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let users = try registry.users(tenant: tenant, includeRemoved: all)
            common.emit(text: Output.table(["EMAIL", "NAME", "ROLE", "TEAM", "STATUS"],
                                           users.map { [$0.email, $0.name, $0.role.rawValue, $0.team ?? "", $0.status.rawValue] }),
                        json: .array(users.map(UserCommand.json)))
        }
    }

    struct SetRole: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Change a user's role.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        @Option(help: "admin, manager or rep.")
        var role: UserRole

        func run() throws {
            try UserCommand.change(common, target, "user set-role", detail: role.rawValue) { registry in
                try registry.setRole(tenant: target.tenant, email: target.email, role)
            }
        }
    }

    struct SetTeam: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-team",
            abstract: "Move a user to a team, or out of any (--no-team): team rights follow within a second.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        @Option(help: "The team.")
        var team: String?
        @Flag(help: "Take the user out of any team.")
        var noTeam = false

        func validate() throws {
            guard (team != nil) != noTeam else { throw ValidationError("give --team TEAM or --no-team") }
            if let team, team.trimmingCharacters(in: .whitespaces).isEmpty {
                throw ValidationError("--team is empty; give --no-team to take the user out of any team")
            }
        }

        func run() throws {
            try UserCommand.change(common, target, "user set-team", detail: team ?? "no team") { registry in
                try registry.setTeam(tenant: target.tenant, email: target.email, noTeam ? nil : team)
            }
        }
    }

    struct Suspend: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Suspend a user: the user's devices are refused (live sessions end within seconds).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        func run() throws {
            try UserCommand.change(common, target, "user suspend") { try $0.setUserStatus(tenant: target.tenant, email: target.email, .suspended) }
        }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a suspended user.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        func run() throws {
            try UserCommand.change(common, target, "user resume") { try $0.setUserStatus(tenant: target.tenant, email: target.email, .active) }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a user: revokes the user's devices and unused enrollment codes; records they own stay.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var target: Target
        func run() throws {
            try UserCommand.change(common, target, "user remove") { try $0.setUserStatus(tenant: target.tenant, email: target.email, .removed) }
        }
    }

    static func change(_ common: CommonOptions, _ target: Target, _ action: String, detail: String = "",
                       _ body: (Registry) throws -> Void) throws {
        let registry = try common.registry()
        defer { registry.close() }
        try common.audited(registry, action, tenant: target.tenant, detail: "\(target.email) \(detail)") { try body(registry) }
        let user = try registry.requireUser(tenant: target.tenant, email: target.email)
        common.emit(text: "\(user.email): \(user.role.rawValue), \(user.team.map { "team \($0)" } ?? "no team"), \(user.status.rawValue)\n",
                    json: UserCommand.json(user))
    }
}
