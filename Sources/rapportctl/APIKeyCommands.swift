import ArgumentParser
import Foundation
import RapportDevice
import Registry

struct APIKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "Create, list and revoke the API keys of the integration API (rapportd --api).",
        subcommands: [Create.self, List.self, Revoke.self])

    static func json(_ key: APIKey) -> JSONValue {
        .object([
            "id": .string(key.id), "tenant": .string(key.tenant), "name": .string(key.name), "role": .string(key.role.rawValue),
            "status": .string(key.status.rawValue), "created_at": jsonDate(key.createdAt), "revoked_at": jsonDate(key.revokedAt),
        ])
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an API key that acts on a tenant with a role's rights; the key is printed once.",
            discussion: """
                A client sends it as 'Authorization: Bearer KEY'. It reads and writes exactly as a \
                user of the role would (the tenant's definition of the role: read and write levels, \
                hidden and read-only fields); it owns nothing and is in no team. Only its SHA-256 \
                is stored, so it cannot be shown again: keep it in the client's secret store.
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("What the key is for (erp, webshop): names it in list, revoke and the audit log.", valueName: "name"))
        var name: String
        @Option(help: ArgumentHelp("admin, manager or rep.", valueName: "role"))
        var role: String

        func run() throws {
            guard let role = UserRole(rawValue: role) else {
                throw CtlFailure(.usage, "--role \(role): expected admin, manager or rep")
            }
            let registry = try common.registry()
            defer { registry.close() }
            let issued = try common.audited(registry, "apikey create", tenant: tenant, detail: "\(name) role \(role.rawValue)") {
                try registry.createAPIKey(tenant: tenant, name: name, role: role)
            }
            var json = APIKeyCommand.json(issued.key)
            if case .members(let members) = json { json = .members(members + [.init("key", .string(issued.secret))]) }
            common.emit(text: """
                API key '\(issued.key.name)' (id \(issued.key.id)) for tenant \(issued.key.tenant), role \(role.rawValue); shown once:
                  \(issued.secret)

                """, json: json)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's API keys, active and revoked (never their secrets).")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let keys = try registry.apiKeys(tenant: tenant)
            let rows = keys.map { [$0.id, $0.name, $0.role.rawValue, $0.status.rawValue, iso($0.createdAt), iso($0.revokedAt)] }
            common.emit(text: Output.table(["ID", "NAME", "ROLE", "STATUS", "CREATED", "REVOKED"], rows),
                        json: .array(keys.map(APIKeyCommand.json)))
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key: refused from its next request on.")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Argument(help: "The key's name or id (see apikey list).")
        var key: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let revoked = try common.audited(registry, "apikey revoke", tenant: tenant, detail: key) {
                try registry.revokeAPIKey(tenant: tenant, key)
            }
            common.emit(text: "revoked API key '\(revoked.name)' (id \(revoked.id)) of tenant \(revoked.tenant)\n", json: APIKeyCommand.json(revoked))
        }
    }
}
