import ArgumentParser
import Foundation
import Logging
import RapportClient
import RapportDevice
import Synchronization

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a device: its settings, credential and empty replica.",
        discussion: """
            Trust: the connection is always TLS, and the server's certificate chain is always \
            verified. --ca FILE trusts the CA that signed it (for rapportd's development \
            certificate, the ca.pem it prints at start); the file is copied into the device. \
            --pin SHA256HEX additionally requires the server's key to have that SPKI SHA-256, \
            and with --pin alone the chain is verified against the system's CAs, which only \
            works for a publicly trusted server certificate. Give --ca, --pin, or both.

            Credential: --enroll CODE trades a one-time enrollment code from an admin \
            ('rapportctl device enroll', or DATA/dev-enrollment-code of a development rapportd) \
            for this device's id and secret. A secret you already have can be given as hex \
            with --secret-file (or '--secret-file -' for standard input) or --secret, which \
            shows in process lists and shell history. The secret is stored in DIR/secret with \
            mode 0600, never in device.json.

            An existing device is never replaced unless --force is given; its unsynced \
            changes and conflicts are then lost.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Option(help: ArgumentHelp("The server, HOST:PORT (port 7443 if omitted).", valueName: "host:port"))
    var server: String

    @Option(help: "The tenant (a slug such as acme).")
    var tenant: String

    @Option(help: ArgumentHelp("A file holding the secret as hex, or - for standard input.", valueName: "file"))
    var secretFile: String?

    @Option(help: ArgumentHelp("The secret as hex.", valueName: "hex"))
    var secret: String?

    @Option(help: ArgumentHelp("PEM file of the CA that signed the server's certificate.", valueName: "file"))
    var ca: String?

    @Option(help: ArgumentHelp("SHA-256 (hex) of the server key's SubjectPublicKeyInfo.", valueName: "sha256hex"))
    var pin: String?

    @Option(help: ArgumentHelp("The name the server's certificate must carry (default: the host).", valueName: "name"))
    var serverName: String?

    @Option(help: ArgumentHelp("The device id (default: a random UUID); unique in the tenant forever.", valueName: "id"))
    var deviceID: String?

    @Option(help: ArgumentHelp("A one-time enrollment code from an admin.", valueName: "code"))
    var enroll: String?

    @Option(help: ArgumentHelp("The device's name, shown to admins (default: this host's name).", valueName: "name"))
    var name: String?

    @Flag(help: "Replace an existing device in the directory.")
    var force = false

    func validate() throws {
        guard [secretFile, secret, enroll].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --enroll, --secret-file and --secret")
        }
        guard ca != nil || pin != nil else {
            throw ValidationError("give --ca FILE, --pin SHA256HEX, or both (see --help on trust)")
        }
    }

    func run() async throws {
        let home = device.deviceHome
        if let enroll {
            let settings = DeviceSettings(server: try ServerAddress(parsing: server), tenant: tenant, secret: [],
                                          caFile: ca, pin: pin, serverName: serverName)
            let profile = try await home.enroll(settings, code: enroll, deviceName: name ?? ProcessInfo.processInfo.hostName, force: force)
            report(profile, home: home, how: "enrolled")
            return
        }
        let secretBytes: [UInt8]
        if let secret {
            secretBytes = try DeviceHome.decodeSecret(secret, source: "--secret")
        } else if secretFile == "-" {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            secretBytes = try DeviceHome.decodeSecret(String(decoding: data, as: UTF8.self), source: "standard input")
        } else {
            let path = secretFile ?? ""
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DeviceError.usage("cannot read the secret file \(path)")
            }
            secretBytes = try DeviceHome.decodeSecret(String(decoding: data, as: UTF8.self), source: path)
        }
        let settings = DeviceSettings(
            server: try ServerAddress(parsing: server), tenant: tenant, secret: secretBytes,
            caFile: ca, pin: pin, serverName: serverName, deviceID: deviceID)
        report(try home.initialize(settings, force: force), home: home, how: "created")
    }

    private func report(_ profile: DeviceProfile, home: DeviceHome, how: String) {
        output.emit(
            text: """
                \(how) device \(profile.deviceID) in \(home.path)
                server \(profile.server), tenant \(profile.tenant)
                next: rapport put TYPE field=value..., then rapport sync

                """,
            json: Presentation.json(profile, home: home))
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push local changes to the server, then pull everyone else's.",
        discussion: """
            On a terminal a progress bar is drawn on standard error. Network failures are \
            retried with backoff; if the sync still fails it exits 3, keeping everything \
            applied so far, and the next sync resumes. A refused credential or a server \
            certificate that does not verify exits 4 at once.

            The first sync (and one after the server was restored) builds the lookup index \
            of what it brought when it ends; meanwhile other commands, run beside it, read \
            every record of a type instead: the same answers, later ones faster.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Option(help: "Connection attempts before giving up.")
    var attempts = 5

    @Flag(help: "Never draw the progress bar.")
    var noProgress = false

    @Flag(help: "Log retries and protocol details to standard error.")
    var verbose = false

    func validate() throws {
        guard attempts >= 1 else { throw ValidationError("--attempts must be at least 1") }
    }

    func run() async throws {
        let opened = try Device.open(device.deviceHome)
        defer { opened.close() }
        var logger = Logger(label: "rapport.sync")
        logger.logLevel = verbose ? .debug : .warning
        let bar = noProgress || !Terminal.isTerminal(STDERR_FILENO) ? nil : ProgressLine(width: Terminal.width() - 1)
        let report: SyncReport
        do {
            var progress: (@Sendable (SyncProgress) -> Void)?
            if let bar { progress = { bar.draw($0) } }
            report = try await opened.sync(maxAttempts: attempts, logger: logger, progress: progress)
            bar?.clear()
        } catch {
            bar?.clear()
            throw error
        }
        let open = try opened.conflicts().count
        output.emit(text: Presentation.text(report, server: opened.profile.server, openConflicts: open),
                    json: Presentation.json(report, openConflicts: open))
    }
}

/// The progress bar on standard error, redrawn in place.
final class ProgressLine: Sendable {
    let width: Int
    /// Whether anything was drawn, so `clear` leaves an untouched line alone.
    private let drawn = Mutex(false)

    init(width: Int) { self.width = max(width, 10) }

    func draw(_ progress: SyncProgress) {
        drawn.withLock { drawn in
            drawn = true
            FileHandle.standardError.write(Data(("\r" + ProgressBar.render(progress, width: width) + "\u{1B}[K").utf8))
        }
    }

    func clear() {
        drawn.withLock { drawn in
            if drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            drawn = false
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the device: id, server, tenant, unsynced changes, conflicts, last sync.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let status = try device.withDevice { try $0.status() }
        output.emit(text: Presentation.text(status, width: Output.width), json: Presentation.json(status))
    }
}

struct Conflicts: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the conflict log: writes that lost a merge, and changes the server rejected.",
        discussion: """
            Kinds: concurrent_update (two devices wrote one field), update_of_deleted (a field \
            was written while the record was deleted), delete_versus_restore, rejected (the \
            server refused a pushed change). 'winner' is what the record holds, 'loser' what \
            it lost. Settle an entry with 'rapport resolve ID'.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Flag(help: "Also list resolved and superseded entries.")
    var all = false

    func run() throws {
        let entries = try device.withDevice { try $0.conflicts(includeClosed: all) }
        let text = entries.isEmpty
            ? (all ? "the conflict log is empty\n" : "no open conflicts\n")
            : Presentation.table(entries, width: Output.width)
        output.emit(text: text, json: .array(entries.map { Presentation.json($0) }))
    }
}

struct Resolve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Settle an open conflict.",
        discussion: """
            --keep-winner keeps what the record holds; --take-loser takes the losing value \
            back (restoring a deleted record, or pushing a rejected change again); --value \
            writes a new value, read like a 'put' value. The choice is a new local write that \
            wins everywhere once synced.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The conflict id, as 'rapport conflicts' shows it.")
    var id: Int64

    @Flag(help: "Keep the value the record holds.")
    var keepWinner = false

    @Flag(help: "Take the losing side back.")
    var takeLoser = false

    @Option(help: ArgumentHelp("Write this value instead.", valueName: "value"))
    var value: String?

    func validate() throws {
        guard [keepWinner, takeLoser, value != nil].filter({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --keep-winner, --take-loser and --value")
        }
    }

    func run() throws {
        let choice: Device.ResolutionChoice = keepWinner ? .keepWinner : takeLoser ? .takeLoser : .value(value ?? "")
        let (entry, record) = try device.withDevice { try $0.resolve(id, choice) }
        output.emit(
            text: "resolved conflict \(entry.id) (\(entry.resolution ?? "resolved")) on \(record.type) \(Device.text(record.id))\n",
            json: .object(["conflict": Presentation.json(entry), "record": Presentation.json(record)]))
    }
}

struct Server: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Point this device at another server of its tenant: a branch office, or the centre.",
        discussion: """
            For a rep visiting another office: the device keeps its credential, its data and its \
            unsynced changes. Its next sync pushes everything it holds and pulls from the start \
            (a new server), so nothing is duplicated or lost. The server must serve the device's \
            user (a branch of every user, one naming them, or the centre). Without an address, \
            shows the current one.
            """)
    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: ArgumentHelp("The server, HOST:PORT (port 7443 if omitted).", valueName: "host:port"))
    var server: String?

    @Option(help: ArgumentHelp("PEM file of the CA that signed the new server's certificate (default: keep the current CA).", valueName: "file"))
    var ca: String?

    @Option(help: ArgumentHelp("SHA-256 (hex) of the new server key's SubjectPublicKeyInfo.", valueName: "sha256hex"))
    var pin: String?

    @Option(help: ArgumentHelp("The name the new server's certificate carries, when not its host.", valueName: "name"))
    var serverName: String?

    func run() throws {
        let home = device.deviceHome
        var profile = try home.loadProfile()
        if let server {
            profile = try home.moveServer(to: try ServerAddress(parsing: server), serverName: serverName, caFile: ca, pin: pin)
        }
        output.emit(text: "server \(profile.server), tenant \(profile.tenant)\(server == nil ? "" : "; the next sync pushes everything this device holds and pulls from the start")\n",
                    json: .object(["server": .string(profile.server.description), "server_name": .string(profile.serverName),
                                   "tenant": .string(profile.tenant)]))
    }
}

