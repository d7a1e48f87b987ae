import ArgumentParser
import CRM
import Foundation
import PrivateFiles
import RapportDevice
import Registry
import ReplicaStore
import SQLite

/// The admin CLI: tenants, users, devices, backups, exports and statistics of a data directory,
/// usable while `rapportd` serves it; the server sees each change within about a second.
@main
struct RapportCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapportctl",
        abstract: "Administer a Rapport server's data directory: tenants, users, devices, backups.",
        discussion: """
            Works on the data directory of a running or stopped rapportd; a running server \
            applies changes (suspensions, revocations, new tenants) within a second, and ends \
            the sessions they concern. Every change is recorded in the audit log (rapportctl audit).
            The common options (--data, --json, --actor) go before the subcommand or after it.

            Exit codes:
            \(CtlExit.documentation)
            """,
        subcommands: [
            TenantCommand.self, UserCommand.self, RoleCommand.self, DeviceCommand.self, BranchCommand.self, Backup.self, Restore.self,
            Export.self, Stats.self, Audit.self, Report.self, Import.self, ExportCSV.self, RulesCommand.self, RetentionCommand.self,
            SchemaCommand.self, APIKeyCommand.self, WebhookCommand.self,
        ])

    /// Replaces ArgumentParser's `main` to keep the documented exit codes.
    static func main() async {
        do {
            var command = try parseAsRoot(CommonOptions.movedAfterSubcommand(Array(CommandLine.arguments.dropFirst()),
                                                                           subcommands: configuration.subcommands.map { $0._commandName }))
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if let failure = CtlFailure(error) {
                Output.error(failure.message)
                Foundation.exit(failure.status.rawValue)
            }
            if exitCode(for: error) == .success { exit(withError: error) }
            Output.error(fullMessage(for: error), prefixed: false)
            Foundation.exit(CtlExit.usage.rawValue)
        }
    }
}

/// The exit codes of `rapportctl`; scripts branch on them, so a code never changes meaning.
enum CtlExit: Int32, CaseIterable, CustomStringConvertible {
    case ok = 0
    /// A bad argument: an invalid tenant id, e-mail, role, duration.
    case usage = 1
    /// The tenant, user or device named does not exist.
    case notFound = 2
    /// The operation does not fit the current state: the tenant exists already, is not
    /// suspended (restore) or not deleted (purge), the confirmation does not match.
    case conflict = 3
    /// A file is not a usable Rapport store (a backup failed verification, a store is damaged).
    case badFile = 4
    /// The disk or the file system failed (full, unwritable).
    case io = 5

    var description: String {
        switch self {
        case .ok: "success"
        case .usage: "bad argument"
        case .notFound: "no such tenant, user or device"
        case .conflict: "not possible in the current state (exists, not suspended, confirmation missing)"
        case .badFile: "a store or backup file failed verification"
        case .io: "the disk or file system failed"
        }
    }

    static var documentation: String { allCases.map { "  \($0.rawValue)  \($0.description)" }.joined(separator: "\n") }
}

/// An error as the operator sees it: one line and an exit code.
struct CtlFailure: Error {
    var status: CtlExit
    var message: String

    init(_ status: CtlExit, _ message: String) {
        self.status = status
        self.message = message
    }

    /// Classifies errors by meaning; `nil` for ArgumentParser's own (help, usage).
    init?(_ error: any Error) {
        switch error {
        case let error as CtlFailure:
            self = error
        case let error as RegistryError:
            switch error {
            case .noSuchTenant, .noSuchUser, .noSuchDevice, .noSuchWebhook: self.init(.notFound, error.description)
            case .tenantExists, .tenantNotActive, .tenantNotDeleted, .confirmationMismatch, .userExists, .userNotActive:
                self.init(.conflict, error.description)
            case .badRegistryFile: self.init(.badFile, error.description)
            default: self.init(.usage, error.description)
            }
        case let error as ReplicaStoreError:
            self.init(.badFile, error.description)
        case let error as any SQLDatabaseError:
            self.init(error.isCorruption ? .badFile : .io, error.description)
        case let error as CRMError:
            self.init(.usage, "\(error)")
        case let error as CocoaError:
            self.init(.io, error.localizedDescription)
        case let error as PrivateFileError:
            self.init(.io, error.description)
        default:
            return nil
        }
    }
}

/// The options every command takes.
///
/// Declared by each subcommand (ArgumentParser passes nothing down from the root), and also
/// accepted before the subcommand, as in `rapportctl --data DIR device enroll ...` (rapportd's
/// startup hint): `movedAfterSubcommand` rewrites that form before parsing.
struct CommonOptions: ParsableArguments {
    /// The options below that take a value, and those that do not, as written before a subcommand.
    static let valueOptions: Set<String> = ["--data", "--store", "--actor"]
    static let flags: Set<String> = ["--json"]

    @Option(name: .customLong("data"), help: "The server's data directory.")
    var dataDirectory = "rapport-data"

    @Option(help: ArgumentHelp("The PostgreSQL database the servers keep the registry and the tenants' stores in (rapportd --store), instead of the data directory's files.", valueName: "url"))
    var store: String?

    @Flag(help: "Print JSON (for scripts) instead of text.")
    var json = false

    @Option(help: ArgumentHelp("Who is acting, for the audit log (default: the operating-system user).", valueName: "name"))
    var actor: String?

    var directory: DataDirectory { DataDirectory(URL(fileURLWithPath: dataDirectory).standardizedFileURL.path, database: store) }

    /// `arguments` with the common options that precede the first subcommand moved after the
    /// subcommand's own arguments (before a `--`, which ends the options), where the subcommand
    /// parses them. When no known subcommand follows them they are dropped, so that the mistake
    /// (an unknown command, `--help`) gets ArgumentParser's own message, not "unknown --data".
    static func movedAfterSubcommand(_ arguments: [String], subcommands: [String]) -> [String] {
        var leading: [String] = []
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            let name = String(argument.prefix { $0 != "=" })
            if flags.contains(argument) || (valueOptions.contains(name) && argument.contains("=")) {
                leading.append(argument)
                index += 1
            } else if valueOptions.contains(argument), index + 1 < arguments.endIndex {
                leading += arguments[index...index + 1]
                index += 2
            } else {
                break
            }
        }
        guard !leading.isEmpty else { return arguments }
        let rest = arguments[index...]
        guard let first = rest.first, subcommands.contains(first) else { return Array(rest) }
        let end = rest.firstIndex(of: "--") ?? rest.endIndex
        return Array(rest[..<end]) + leading + Array(rest[end...])
    }

    var actorName: String {
        if let actor, !actor.isEmpty { return actor }
        let environment = ProcessInfo.processInfo.environment
        return environment["SUDO_USER"] ?? environment["USER"] ?? "uid \(getuid())"
    }

    /// Opens the registry; a data directory without one is an error, not a new empty server,
    /// except for the commands that create (tenant create).
    func registry(creating: Bool = false) throws -> Registry {
        let directory = self.directory
        guard creating || directory.database != nil || FileManager.default.fileExists(atPath: directory.registryPath) else {
            throw CtlFailure(.notFound, "no registry in \(directory.path): is --data the server's data directory?")
        }
        return try directory.openRegistry()
    }

    /// Runs a change with its audit entry (see `Registry.audited`).
    func audited<T>(_ registry: Registry, _ action: String, tenant: String?, detail: String = "", _ body: () throws -> T) throws -> T {
        try registry.audited(actor: actorName, action: action, tenant: tenant, detail: detail, body)
    }

    /// Prints `text` for a person or `json` for a script.
    func emit(text: @autoclosure () -> String, json value: @autoclosure () -> JSONValue) {
        Output.standard(json ? value().rendered() + "\n" : text())
    }
}

/// Where the commands write: results to standard output, errors to standard error.
enum Output {
    static func standard(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }

    static func error(_ message: String, prefixed: Bool = true) {
        var text = prefixed ? "rapportctl: \(message)" : message
        if !text.hasSuffix("\n") { text += "\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }

    static func table(_ titles: [String], _ rows: [[String]]) -> String {
        TextTable(columns: titles.map { TextTable.Column($0) }, rows: rows).render(width: Terminal.width())
    }
}

/// Dates as operators read them and scripts parse them.
func iso(_ date: Date?) -> String { date.map { $0.formatted(.iso8601) } ?? "-" }
func jsonDate(_ date: Date?) -> JSONValue { date.map { .string($0.formatted(.iso8601)) } ?? .null }
