import ArgumentParser
import CRM
import Foundation
import Logging
import RapportDevice

/// `rapport`, the command-line device: a local replica of a tenant's CRM data that works offline
/// and syncs with `rapportd`. The logic lives in `RapportDevice`; these types only parse
/// arguments, call it and print.
@main
struct Rapport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapport",
        abstract: "A command-line Rapport device: edit CRM records offline, sync them with a server.",
        discussion: """
            A device lives in a directory: --home DIR, else $RAPPORT_HOME, else ./rapport-device. \
            Create one with 'rapport init', then put, get, list, delete and restore records \
            offline; 'rapport sync' exchanges changes with the server. Concurrent edits to the \
            same field are kept as conflicts: list them with 'rapport conflicts', settle them \
            with 'rapport resolve'.

            The CRM work, offline too: 'account show' (an account's 360 view), 'lead convert', \
            'opportunity stage', 'case open|respond|close', 'log call|visit|meeting', 'tasks', \
            'list TYPE --where field=value', 'report NAME'.

            Record types: \(CRMSchema.current.types.keys.sorted().joined(separator: ", ")). \
            'rapport types' shows each type's fields and the values they take.

            Commands that print take --json for scripts; errors go to standard error.

            Exit codes:
            \(ExitStatus.documentation)
            """,
        subcommands: [
            Init.self, Put.self, Get.self, List.self, Delete.self, Restore.self,
            Sync.self, Conflicts.self, Resolve.self, Status.self, Server.self,
            AccountCommand.self, LeadCommand.self, OpportunityCommand.self, CaseCommand.self, Log.self, Tasks.self,
            ReportCommand.self, Types.self,
        ])

    /// Replaces ArgumentParser's `main` only to keep the documented exit codes: its own would
    /// exit 64 on a usage error and 1 on any thrown error.
    static func main() async {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        do {
            var command = try await asyncParseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as DeviceError {
            Output.error(error.message)
            Foundation.exit(error.status.rawValue)
        } catch {
            // --help and --version are "errors" that exit 0; let ArgumentParser print those.
            if exitCode(for: error) == .success { exit(withError: error) }
            Output.error(fullMessage(for: error), prefixed: false)
            Foundation.exit(ExitStatus.usage.rawValue)
        }
    }
}

/// The options every device command takes.
struct DeviceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The device directory.", discussion: "Default: $RAPPORT_HOME, else ./rapport-device.",
                               valueName: "dir"))
    var home: String?

    var deviceHome: DeviceHome { DeviceHome.resolve(explicit: home) }

    /// Opens the device, runs `body`, closes it, whether `body` throws or not.
    func withDevice<T>(_ body: (Device) throws -> T) throws -> T {
        let device = try Device.open(deviceHome)
        defer { device.close() }
        return try body(device)
    }
}

/// `--json`, for commands that print something.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON (for scripts) instead of text.")
    var json = false

    /// Prints `text` for a person or `json` for a script.
    func emit(text: @autoclosure () -> String, json value: @autoclosure () -> JSONValue) {
        if json {
            Output.standard(value().rendered() + "\n")
        } else {
            Output.standard(text())
        }
    }
}

/// Where the commands write. Errors and the progress bar go to standard error so that standard
/// output holds only the result, which scripts capture.
enum Output {
    static var width: Int { Terminal.width() }

    static func standard(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func error(_ message: String, prefixed: Bool = true) {
        var text = prefixed ? "rapport: \(message)" : message
        if !text.hasSuffix("\n") { text += "\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }
}
