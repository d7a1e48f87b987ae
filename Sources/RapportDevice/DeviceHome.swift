import CRM
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PrivateFiles
import RapportClient
import ReplicaStore
import SyncModel
import TLS

/// A server's address as a device stores it.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    /// A DNS name or an IP literal (IPv6 without brackets).
    public var host: String
    public var port: Int

    /// The port `rapportd` listens on unless told otherwise.
    public static let defaultPort = 7443

    /// An address as given; `init(parsing:)` is the one that checks.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`, `HOST` (the default port), `[IPv6]:PORT` or `[IPv6]`.
    public init(parsing text: String) throws(DeviceError) {
        let invalid = DeviceError.usage("invalid server address '\(text)': expected HOST:PORT, e.g. sync.example.com:7443 or [::1]:7443")
        var host: Substring, port: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw invalid }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                port = nil
            } else {
                guard rest.hasPrefix(":") else { throw invalid }
                port = rest.dropFirst()
            }
        } else if let colon = text.lastIndex(of: ":") {
            // More than one colon without brackets is a bare IPv6 literal, which is ambiguous
            // with a port: refuse it rather than guess.
            guard text.firstIndex(of: ":") == colon else { throw invalid }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            host = Substring(text)
            port = nil
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace) else { throw invalid }
        var number = Self.defaultPort
        if let port {
            guard let value = Int(port), (1...65535).contains(value) else { throw invalid }
            number = value
        }
        self.init(host: String(host), port: number)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What `rapport init` needs to make a device.
public struct DeviceSettings: Sendable {
    /// Where the device syncs to.
    public var server: ServerAddress
    /// The name the server certificate must carry; the host when `nil`.
    public var serverName: String?
    /// The tenant slug, checked at init as the server would (1 to 63 of a-z 0-9 -).
    public var tenant: String
    /// The raw credential bytes the server checks (`rapportd`'s `dev-secret` file holds them as hex).
    public var secret: [UInt8]
    /// A PEM file of the CA(s) that signed the server's certificate; copied into the home.
    public var caFile: String?
    /// SHA-256 of the server key's SubjectPublicKeyInfo, checked on top of the chain.
    public var pin: String?
    /// The device's replica id; random when `nil`.
    public var deviceID: String?
    /// The device's number in its tenant, from enrollment; kept in the new store for the CRM's
    /// case numbers (`RapportClient.keepDeviceNumber`). `nil` leaves it to the first sync.
    public var deviceNumber: UInt32?
    /// The e-mail of the user the device belongs to, when known (enrollment says).
    public var user: String?

    /// Settings for `DeviceHome.initialize`; nothing is checked until then.
    public init(server: ServerAddress, tenant: String, secret: [UInt8], caFile: String? = nil, pin: String? = nil,
                serverName: String? = nil, deviceID: String? = nil, user: String? = nil) {
        self.server = server
        self.tenant = tenant
        self.secret = secret
        self.caFile = caFile
        self.pin = pin
        self.serverName = serverName
        self.deviceID = deviceID
        self.user = user
    }
}

/// The settings of a device as saved in `device.json`. The secret is deliberately not here: it
/// lives in its own file with mode 0600, so the profile can be shown, copied or attached to a bug
/// report without leaking the credential.
public struct DeviceProfile: Codable, Sendable, Equatable {
    /// Bumped when the file's meaning changes, so an older `rapport` refuses a newer file.
    public static let currentFormat = 1

    /// The file format, ``currentFormat`` when written by this version.
    public var format: Int
    /// The replica id, also the store's; unique in the tenant forever.
    public var deviceID: String
    public var host: String
    public var port: Int
    /// The name the server's certificate must carry.
    public var serverName: String
    public var tenant: String
    /// The CA file, relative to the home directory (it is copied there at init).
    public var caFile: String?
    /// The server key's SPKI SHA-256, lowercase hex, checked on top of the chain.
    public var pin: String?
    /// The CRM schema version this device was made with, sent in Hello.
    public var schemaVersion: UInt32
    /// ISO 8601, for the user's information only.
    public var createdAt: String
    /// The e-mail of the user the device belongs to, as enrollment gave it; `nil` for a device
    /// made with a secret (its user is then known from its first sync on, see `Device.user`).
    public var user: String?

    /// A profile in the current format.
    public init(deviceID: String, host: String, port: Int, serverName: String, tenant: String,
                caFile: String?, pin: String?, schemaVersion: UInt32 = CRMSchema.version, createdAt: String,
                user: String? = nil) {
        self.format = Self.currentFormat
        self.deviceID = deviceID
        self.host = host
        self.port = port
        self.serverName = serverName
        self.tenant = tenant
        self.caFile = caFile
        self.pin = pin
        self.schemaVersion = schemaVersion
        self.createdAt = createdAt
        self.user = user
    }

    /// The host and port together.
    public var server: ServerAddress { ServerAddress(host: host, port: port) }

    /// Snake case, like the `--json` output, so one convention serves people reading both.
    enum CodingKeys: String, CodingKey {
        case format, host, port, tenant, pin, user
        case deviceID = "device_id"
        case serverName = "server_name"
        case caFile = "ca_file"
        case schemaVersion = "schema_version"
        case createdAt = "created_at"
    }
}

/// What the last successful sync left behind, kept in `state.json` because the store's own
/// checkpoint is keyed by the server's replica id, which a device only learns while connected.
public struct SyncState: Codable, Sendable, Equatable {
    /// ISO 8601.
    public var lastSyncAt: String
    /// The server sequence the device had applied up to.
    public var checkpoint: Int64
    public var pushed: Int
    public var pulled: Int
    public var rejected: Int
    public var conflicts: Int

    enum CodingKeys: String, CodingKey {
        case checkpoint, pushed, pulled, rejected, conflicts
        case lastSyncAt = "last_sync_at"
    }

    /// The state after a sync that produced `report`.
    public init(lastSyncAt: String, report: SyncReport) {
        self.lastSyncAt = lastSyncAt
        checkpoint = report.checkpoint
        pushed = report.pushed
        pulled = report.pulled
        rejected = report.rejected
        conflicts = report.conflicts
    }
}

/// The directory a device lives in, and the files in it, all owner-only (the folder 0700, files
/// 0600: the store holds the tenant's customers):
///
/// | file | what |
/// |---|---|
/// | `device.json` | the ``DeviceProfile`` |
/// | `secret` | the credential as hex |
/// | `ca.pem` | a copy of the CA given at init |
/// | `replica.sqlite` | the replica store (plus SQLite's `-wal` and `-shm`) |
/// | `state.json` | the ``SyncState`` of the last sync |
public struct DeviceHome: Sendable, Equatable {
    /// The directory, absolute and standardized.
    public let path: String

    /// The directory used when neither `--home` nor `RAPPORT_HOME` says otherwise.
    public static let defaultPath = "./rapport-device"
    /// The environment variable that names the directory when `--home` is not given.
    public static let environmentVariable = "RAPPORT_HOME"

    /// A home at `path`, relative to the current directory unless absolute.
    public init(path: String) {
        self.path = URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// `--home` if given, else `RAPPORT_HOME`, else `./rapport-device`.
    public static func resolve(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> DeviceHome {
        if let explicit, !explicit.isEmpty { return DeviceHome(path: explicit) }
        if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty { return DeviceHome(path: fromEnvironment) }
        return DeviceHome(path: defaultPath)
    }

    // The files of the table above.
    public var profilePath: String { path + "/device.json" }
    public var secretPath: String { path + "/secret" }
    public var storePath: String { path + "/replica.sqlite" }
    public var caPath: String { path + "/ca.pem" }
    public var statePath: String { path + "/state.json" }

    /// Whether a device (or the remains of one) is here.
    public var exists: Bool {
        let files = FileManager.default
        return files.fileExists(atPath: profilePath) || files.fileExists(atPath: storePath)
    }

    // MARK: Creating

    /// Creates a device: checks every setting first, then writes the store, the CA copy, the
    /// secret and finally the profile, so a device without `device.json` is never half usable.
    ///
    /// - Parameter force: replace an existing device. Its unsynced changes and open conflicts
    ///   are lost, which is why this is never the default.
    @discardableResult
    public func initialize(_ settings: DeviceSettings, force: Bool = false,
                           now: Date = Date()) throws(DeviceError) -> DeviceProfile {
        let files = FileManager.default
        if let problem = TenantID.problem(with: settings.tenant) {
            throw .usage("invalid tenant \(TenantID.quoted(settings.tenant)): \(problem)")
        }
        guard !settings.secret.isEmpty else { throw .usage("the secret is empty") }
        guard settings.caFile != nil || settings.pin != nil else {
            throw .usage("give --ca FILE (the CA that signed the server's certificate), --pin SHA256HEX, or both")
        }
        let pin = try settings.pin.map { pin throws(DeviceError) in try Self.normalizePin(pin) }
        let caPEM = try settings.caFile.map { file throws(DeviceError) in try Self.readCA(file) }
        let replicaID: ReplicaID
        do {
            replicaID = try settings.deviceID.map { try ReplicaID($0) } ?? ReplicaID.random()
        } catch {
            throw .usage("invalid device id: \(error)")
        }
        if let serverName = settings.serverName, serverName.isEmpty || serverName.contains(where: \.isWhitespace) {
            throw .usage("invalid server name '\(serverName)'")
        }
        if exists && !force {
            throw .usage("a device already exists in \(path); use --force to replace it (its unsynced changes are lost)")
        }

        do {
            try PrivateFiles.createDirectory(path)
            if force {
                for file in [profilePath, secretPath, caPath, statePath, storePath, storePath + "-wal", storePath + "-shm"]
                where files.fileExists(atPath: file) {
                    try files.removeItem(atPath: file)
                }
            }
            let store = try ReplicaStore(path: storePath, options: .crm(replicaID: replicaID))
            defer { store.close() }
            try RapportClient.keepDeviceNumber(settings.deviceNumber, on: store)
            if let caPEM { try Self.write(caPEM, to: caPath) }
            try saveSecret(settings.secret)
            let profile = DeviceProfile(
                deviceID: replicaID.rawValue, host: settings.server.host, port: settings.server.port,
                serverName: settings.serverName ?? settings.server.host, tenant: settings.tenant,
                caFile: caPEM == nil ? nil : "ca.pem", pin: pin, createdAt: Self.timestamp(now), user: settings.user)
            try saveProfile(profile)
            return profile
        } catch let error as DeviceError {
            throw error
        } catch {
            throw DeviceError.classify(error)
        }
    }

    /// Creates a device by enrolling it: trades the one-time `code` (from `rapportctl device
    /// enroll`) for the device id, secret and number the server issues, then writes the device
    /// as `initialize` does. `settings.secret`, `settings.deviceID` and `settings.deviceNumber`
    /// are ignored. Settings are checked before the server is contacted, so a mistake does not
    /// use up the code.
    @discardableResult
    public func enroll(_ settings: DeviceSettings, code: String, deviceName: String, force: Bool = false,
                       now: Date = Date()) async throws(DeviceError) -> DeviceProfile {
        if let problem = TenantID.problem(with: settings.tenant) {
            throw .usage("invalid tenant \(TenantID.quoted(settings.tenant)): \(problem)")
        }
        guard settings.caFile != nil || settings.pin != nil else {
            throw .usage("give --ca FILE (the CA that signed the server's certificate), --pin SHA256HEX, or both")
        }
        if exists && !force {
            throw .usage("a device already exists in \(path); use --force to replace it (its unsynced changes are lost)")
        }
        let pin = try settings.pin.map { pin throws(DeviceError) in try Self.normalizePin(pin) }
        let configuration = ClientConfiguration(
            host: settings.server.host, port: settings.server.port, tenant: settings.tenant, secret: [],
            trustRoots: settings.caFile.map { .certificates(.file($0)) } ?? .system, schemaVersion: CRMSchema.version,
            serverName: settings.serverName, serverKeyPin: pin)
        let enrollment: RapportClient.Enrollment
        do {
            enrollment = try await RapportClient.enroll(configuration: configuration, code: code, deviceName: deviceName)
        } catch {
            throw DeviceError.classify(error, duringSync: true)
        }
        var enrolled = settings
        enrolled.secret = enrollment.secret
        enrolled.deviceID = enrollment.deviceID
        enrolled.deviceNumber = enrollment.deviceNumber
        enrolled.user = enrollment.user
        return try initialize(enrolled, force: force, now: now)
    }

    // MARK: Files

    /// Writes `device.json` (pretty, sorted keys, so it diffs well), replacing it atomically.
    /// Points the device at another server of its tenant (a branch office, or the centre), with
    /// that server's CA and pin: the credential, the store and its unsynced changes stay. The
    /// next sync finds a server it has not synced with, so it pushes everything it holds and
    /// pulls from the start (SPEC.md 6.4): nothing is duplicated or lost.
    ///
    /// - Parameter caFile: the new server's CA; `nil` keeps the current one, as `pin` does.
    @discardableResult
    public func moveServer(to server: ServerAddress, serverName: String? = nil, caFile: String?, pin: String?) throws(DeviceError) -> DeviceProfile {
        var profile = try loadProfile()
        if let serverName, serverName.isEmpty || serverName.contains(where: \.isWhitespace) {
            throw .usage("invalid server name '\(serverName)'")
        }
        let pin = try pin.map { pin throws(DeviceError) in try Self.normalizePin(pin) }
        let caPEM = try caFile.map { file throws(DeviceError) in try Self.readCA(file) }
        profile.host = server.host
        profile.port = server.port
        profile.serverName = serverName ?? server.host
        if let pin { profile.pin = pin }
        do {
            if let caPEM {
                try Self.write(caPEM, to: caPath)
                profile.caFile = "ca.pem"
            }
            try saveProfile(profile)
        } catch let error as DeviceError {
            throw error
        } catch {
            throw DeviceError.classify(error)
        }
        return profile
    }

    public func saveProfile(_ profile: DeviceProfile) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(profile)
        try Self.write(String(decoding: data, as: UTF8.self) + "\n", to: profilePath)
    }

    /// Reads `device.json`; a missing file means there is no device here.
    public func loadProfile() throws(DeviceError) -> DeviceProfile {
        guard let data = FileManager.default.contents(atPath: profilePath) else {
            throw .notFound("no device in \(path) (no device.json); create one with 'rapport init' or pass --home")
        }
        let profile: DeviceProfile
        do {
            profile = try JSONDecoder().decode(DeviceProfile.self, from: data)
        } catch {
            throw .usage("\(profilePath) is not a valid device profile: \(error)")
        }
        guard profile.format <= DeviceProfile.currentFormat else {
            throw .usage("\(profilePath) has format \(profile.format), newer than this rapport understands (\(DeviceProfile.currentFormat))")
        }
        return profile
    }

    /// Writes the secret as hex with mode 0600 from the start (never briefly world-readable).
    public func saveSecret(_ secret: [UInt8]) throws {
        try Self.write(Crypto.hex(secret) + "\n", to: secretPath)
    }

    /// The credential bytes.
    public func loadSecret() throws(DeviceError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: secretPath) else {
            throw .usage("the device's secret file \(secretPath) is missing; run 'rapport init --force' again")
        }
        return try Self.decodeSecret(String(decoding: data, as: UTF8.self), source: secretPath)
    }

    /// The last sync's outcome; `nil` before the first (or if the file is unreadable, since it
    /// is informational only).
    public func loadState() -> SyncState? {
        guard let data = FileManager.default.contents(atPath: statePath) else { return nil }
        return try? JSONDecoder().decode(SyncState.self, from: data)
    }

    /// Replaces `state.json`.
    public func saveState(_ state: SyncState) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Self.write(String(decoding: try encoder.encode(state), as: UTF8.self) + "\n", to: statePath)
    }

    // MARK: Helpers

    /// Parses a secret given as hex (how `rapportd` writes `dev-secret`); whitespace around it
    /// is ignored because files end with a newline.
    public static func decodeSecret(_ text: String, source: String) throws(DeviceError) -> [UInt8] {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, let bytes = Crypto.bytes(fromHex: trimmed), !bytes.isEmpty else {
            throw .usage("\(source): the secret must be hex digits (as in rapportd's dev-secret file)")
        }
        return bytes
    }

    /// Accepts a pin as admins paste it (any case, `:` separators) and stores it canonically.
    /// The PEM of a `--ca` file, checked to hold a certificate.
    static func readCA(_ file: String) throws(DeviceError) -> String {
        do {
            let pem = try String(contentsOfFile: file, encoding: .utf8)
            _ = try SPKIPin.sha256Hex(certificatePEM: pem)
            return pem
        } catch {
            throw .usage("cannot use --ca \(file): \(error is TLSError ? "\(error)" : error.localizedDescription)")
        }
    }

    public static func normalizePin(_ text: String) throws(DeviceError) -> String {
        let hex = text.replacingOccurrences(of: ":", with: "").lowercased()
        guard hex.count == 64, hex.allSatisfy(\.isHexDigit) else {
            throw .usage("invalid --pin: expected the 64 hex digits of a SHA-256 (of the server key's SubjectPublicKeyInfo)")
        }
        return hex
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    /// Writes owner-only (0600) and atomically (see `PrivateFiles.write`): a reader never sees
    /// half a file and the secret is never readable by others, even for a moment.
    static func write(_ text: String, to path: String) throws {
        do {
            try PrivateFiles.write(text, to: path)
        } catch {
            throw DeviceError.usage("cannot write \(path): \(String(cString: strerror(error.code)))")
        }
    }
}

