import ArgumentParser
import Foundation
import PrivateFiles
import RapportDevice
import Registry

struct BranchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "branch",
        abstract: "Enroll, list and revoke branch offices (rapportd --upstream replicas of a tenant).",
        subcommands: [Enroll.self, List.self, Revoke.self])

    static func json(_ branch: RegisteredBranch, replicas: [String]) -> JSONValue {
        .object([
            "id": .string(branch.id), "tenant": .string(branch.tenant), "number": .integer(branch.number), "name": .string(branch.name),
            "users": branch.users.map { .array($0.map(JSONValue.string)) } ?? .string("all"),
            "status": .string(branch.status.rawValue), "enrolled_at": jsonDate(branch.enrolledAt), "revoked_at": jsonDate(branch.revokedAt),
            "last_seen": jsonDate(branch.lastSeen), "last_checkpoint": branch.lastCheckpoint.map { JSONValue.integer($0) } ?? .null,
            "replicas": .array(replicas.map(JSONValue.string)),
        ])
    }

    struct Enroll: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a branch office of a tenant and write its credential.",
            discussion: """
                Run at the centre. The credential file (owner-only) goes to the branch, whose \
                server then runs: rapportd --upstream CENTRE:PORT --upstream-ca CA.pem \
                --upstream-credential FILE. The branch serves the devices of --users (all the \
                tenant's users without it), relays their writes to the centre, and learns \
                users, roles, devices and revocations from the centre over that link. Only the \
                secret's hash is kept here: a lost credential means a new branch enrollment.
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("The branch's name, shown to operators.", valueName: "name"))
        var name: String
        @Option(help: ArgumentHelp("Comma-separated e-mails of the users whose devices it serves; all users when omitted.", valueName: "emails"))
        var users: String?
        @Option(help: ArgumentHelp("Where to write the credential (owner-only); refused if the file exists.", valueName: "file"))
        var out: String

        func run() throws {
            guard !FileManager.default.fileExists(atPath: out) else {
                throw CtlFailure(.usage, "\(out) exists; a credential is written to a new file only")
            }
            let emails = users.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            let registry = try common.registry()
            defer { registry.close() }
            let (branch, credential) = try common.audited(registry, "branch enroll", tenant: tenant,
                                                          detail: "\(name) users \(emails?.joined(separator: ",") ?? "all")") {
                try registry.enrollBranch(tenant: tenant, name: name, users: emails)
            }
            try PrivateFiles.write(Array(try JSONEncoder().encode(credential)), to: out)
            common.emit(text: """
                branch '\(branch.name)' (\(branch.id), number \(branch.number)) of tenant \(branch.tenant), serving \(branch.users?.joined(separator: ", ") ?? "every user")
                credential written to \(out); at the branch:
                  rapportd --upstream CENTRE:PORT --upstream-ca CA.pem --upstream-credential \(out)

                """, json: BranchCommand.json(branch, replicas: []))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a tenant's branches, with when each last synced and the replica ids its store has had.",
            discussion: "A branch with more than one replica id was restored from a backup or rebuilt.")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let branches = try registry.branches(tenant: tenant)
            let replicas = try Dictionary(uniqueKeysWithValues: branches.map { ($0.id, try registry.branchReplicas(branch: $0.id)) })
            let rows = branches.map { (branch: RegisteredBranch) -> [String] in
                [String(branch.number), branch.id, branch.name, branch.users?.joined(separator: ",") ?? "all", branch.status.rawValue,
                 iso(branch.lastSeen), branch.lastCheckpoint.map { String($0) } ?? "-", String(replicas[branch.id]?.count ?? 0)]
            }
            common.emit(text: Output.table(["NO", "BRANCH", "NAME", "USERS", "STATUS", "LAST SEEN", "CHECKPOINT", "REPLICAS"], rows),
                        json: .array(branches.map { BranchCommand.json($0, replicas: replicas[$0.id] ?? []) }))
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a branch: its link to the centre ends within seconds and its credential never works again.",
            discussion: """
                The branch keeps serving its devices with the directory it last saw, and keeps \
                what they write until it is enrolled again (a new credential, the same data \
                directory: what is still waiting goes up then). Its devices can also sync at the \
                centre or another branch directly.
                """)
        @OptionGroup var common: CommonOptions
        @Argument(help: "The branch id (see branch list).")
        var branch: String
        @Option(help: "The tenant, to guard against revoking another tenant's branch by mistake.")
        var tenant: String?

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let owner = try registry.branch(branch)?.tenant ?? tenant
            try common.audited(registry, "branch revoke", tenant: owner, detail: branch) {
                try registry.revokeBranch(branch, tenant: tenant)
            }
            guard let revoked = try registry.branch(branch) else { throw RegistryError.noSuchDevice(branch) }
            let replicas = try registry.branchReplicas(branch: revoked.id)
            common.emit(text: "revoked branch '\(revoked.name)' (\(revoked.id)) of tenant \(revoked.tenant)\n",
                        json: BranchCommand.json(revoked, replicas: replicas))
        }
    }
}
