import ArgumentParser
import CRM
import Foundation
import Registry
import ReplicaStore

/// The CRM's rules over a tenant's data, as the server runs them on its schedule.
struct RulesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Run the CRM's scheduled rule pass on a tenant.",
        subcommands: [Run.self])

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the rule pass on one tenant now (tiers, churn and renewal flags, value segments, SLA breaches, escalations).",
            discussion: """
                What rapportd runs every --rules-interval seconds: writes, as the server's \
                replica, every computed value that changed, so they sync to every device; a \
                field listed in a record's overrides is left alone. Safe beside a running \
                server. --at computes as of another moment (YYYY-MM-DD or \
                YYYY-MM-DDTHH:MM:SSZ), to see what a later date brings.
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("Compute as of this moment instead of now (ISO 8601, UTC).", valueName: "instant"))
        var at: String?

        func run() throws {
            var now = Date()
            if let at {
                guard let seconds = CRMDate.instant(at) else {
                    throw CtlFailure(.usage, "--at \(at): expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
                }
                now = Date(timeIntervalSince1970: TimeInterval(seconds))
            }
            let registry = try common.registry()
            defer { registry.close() }
            let report = try common.audited(registry, "rules run", tenant: tenant, detail: at.map { "at \($0)" } ?? "") {
                let row = try registry.requireTenant(tenant)
                guard row.status == .active else { throw RegistryError.tenantNotActive(tenant, status: row.status) }
                let directory = try registry.users(tenant: tenant).filter { $0.status == .active }.map {
                    CRMScheduledPass.DirectoryUser(email: $0.email, role: $0.role.rawValue, team: $0.team)
                }
                // Opened as rapportd opens it, so its field index is not rebuilt under a running server.
                let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
                defer { store.close() }
                return try CRMScheduledPass(now: now, manager: CRMScheduledPass.managers(in: directory)).run(on: store)
            }
            if common.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                Output.standard(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
            } else {
                Output.standard("rules pass on \(tenant) at \(report.at): \(report.summary)\n")
            }
            for problem in report.settingProblems { Output.error("warning: \(problem)") }
        }
    }
}
