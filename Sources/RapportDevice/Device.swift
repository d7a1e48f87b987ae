import Access
import CRM
import Foundation
import Logging
import RapportClient
import ReplicaStore
import SyncModel
import TLS

/// An opened device: its profile and its replica store, with the operations of the `rapport`
/// commands. Each operation is one store transaction, so a command that fails half-way leaves
/// nothing behind.
public final class Device: Sendable {
    /// Where the device's files are.
    public let home: DeviceHome
    /// The settings `rapport init` saved.
    public let profile: DeviceProfile
    /// Shared (queue-confined) because `sync` hands it to `RapportClient`; local commands use
    /// `performSync`, which is fine in a command-line process that owns no event loop.
    public let store: SharedReplicaStore
    /// The schema values are checked against: the one this program was built with, which is
    /// also what the server is told in Hello.
    public var schema: Schema { CRMSchema.current }
    /// The e-mail of the user the device belongs to: from enrollment, else from the rights the
    /// server sent at the last sync; `nil` for a device made with a secret that never synced.
    public let user: String?

    /// Drops the client's log lines: a command prints its own summary, and a library caller
    /// that wants the details passes its own logger.
    public static let quietLogger = Logger(label: "rapport.device") { _ in SwiftLogNoOpLogHandler() }

    private init(home: DeviceHome, profile: DeviceProfile, store: SharedReplicaStore, user: String?) {
        self.home = home
        self.profile = profile
        self.store = store
        self.user = user
    }

    /// Opens the device in `home`.
    ///
    /// - Throws: `.notFound` when there is no device there, `.usage` for a damaged profile or store.
    public static func open(_ home: DeviceHome) throws(DeviceError) -> Device {
        let profile = try home.loadProfile()
        guard FileManager.default.fileExists(atPath: home.storePath) else {
            throw .usage("\(home.storePath) is missing; the device in \(home.path) is incomplete (run 'rapport init --force')")
        }
        do {
            let replica = try ReplicaStore(path: home.storePath, options: .crm())
            guard replica.replicaID.rawValue == profile.deviceID else {
                replica.close()
                throw DeviceError.usage("\(home.storePath) belongs to replica \(replica.replicaID), not to device \(profile.deviceID)")
            }
            // Offline too, a write the user's rights do not allow is refused here, not at the next sync.
            let rights: AccessSubject?
            do {
                rights = try RapportClient.installSavedAccessCheck(on: replica)
            } catch {
                replica.close()
                throw error
            }
            return Device(home: home, profile: profile, store: SharedReplicaStore(replica, label: profile.deviceID),
                          user: profile.user ?? rights?.user)
        } catch {
            throw DeviceError.classify(error)
        }
    }

    /// Closes the store; the device must not be used afterwards.
    public func close() {
        store.performSync { $0.close() }
    }

    /// Runs `body` on the store, turning whatever it throws into a classified `DeviceError`.
    func withStore<T>(_ body: (ReplicaStore) throws -> T) throws(DeviceError) -> T {
        do {
            return try store.performSync(body)
        } catch {
            throw DeviceError.classify(error)
        }
    }

    /// Parses a record id as typed on a command line.
    public static func recordID(_ text: String) throws(DeviceError) -> UUID {
        guard let id = UUID(uuidString: text.trimmingCharacters(in: .whitespaces)) else {
            throw .usage("'\(text.prefix(60))' is not a record id (a UUID such as 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41)")
        }
        return id
    }

    // MARK: Records

    /// What `put` did.
    public struct PutResult: Sendable {
        /// Whether a new record was made (its id is new) rather than an existing one changed.
        public var created: Bool
        /// The record after the change.
        public var record: RecordState
    }

    /// Creates a record of `type` (when `id` is nil) or updates the record `id`, from
    /// `field=value` / `field+=N` / `field-=N` arguments.
    @discardableResult
    public func put(type: String, id: String?, assignments: [String]) throws(DeviceError) -> PutResult {
        let edit = try ValueParser.parseEdit(assignments, type: type, schema: schema)
        return try put(type: type, id: try id.map { text throws(DeviceError) in try Self.recordID(text) }, edit: edit)
    }

    /// Creates or updates a record with an already parsed edit, all in one transaction.
    @discardableResult
    public func put(type: String, id: UUID?, edit: RecordEdit) throws(DeviceError) -> PutResult {
        _ = try ValueParser.recordType(type, in: schema)
        return try withStore { store in
            try store.transaction {
                var state: RecordState
                if let id {
                    guard let existing = try store.record(id) else { throw ReplicaStoreError.recordNotFound(id) }
                    guard existing.type == type else {
                        throw DeviceError.usage("record \(Self.text(id)) is a \(existing.type), not a \(type)")
                    }
                    guard !edit.isEmpty else { throw DeviceError.usage("nothing to change: give field=value arguments") }
                    state = edit.values.isEmpty ? existing : try store.update(id, edit.values)
                } else {
                    state = try store.create(type, edit.values)
                }
                for (field, amount) in edit.increments.sorted(by: { $0.key < $1.key }) {
                    state = try store.increment(state.id, field: field, by: amount)
                }
                return PutResult(created: id == nil, record: state)
            }
        }
    }

    /// The record `id`, of any type, deleted or not.
    public func record(_ id: String) throws(DeviceError) -> RecordState {
        let uuid = try Self.recordID(id)
        guard let state = try withStore({ try $0.record(uuid) }) else {
            throw .notFound("no record \(Self.text(uuid)) on this device")
        }
        return state
    }

    /// Records of `type` in change order (the most recently changed last): all of them, or
    /// the live ones whose fields hold the values of `conditions` (`field=value` arguments),
    /// at most `limit`.
    public func list(type: String, includeDeleted: Bool = false, where conditions: [String] = [],
                     limit: Int? = nil) throws(DeviceError) -> [RecordState] {
        let recordType = try ValueParser.recordType(type, in: schema)
        var parsed: [(field: String, value: FieldValue)] = []
        for condition in conditions {
            parsed.append(try ValueParser.parseCondition(condition, recordType: recordType))
        }
        guard parsed.isEmpty else {
            guard !includeDeleted else { throw .usage("--where finds live records only; leave out --deleted") }
            return try crm { try $0.records(ofType: type, where: parsed, limit: limit) }
        }
        let all = try withStore { try $0.records(ofType: type, includeDeleted: includeDeleted) }
        return limit.map { Array(all.prefix(max($0, 0))) } ?? all
    }

    /// Deletes a record; it stays as a tombstone that syncs and can be restored.
    @discardableResult
    public func delete(_ id: String) throws(DeviceError) -> RecordState {
        let uuid = try Self.recordID(id)
        return try withStore { try $0.delete(uuid) }
    }

    @discardableResult
    public func restore(_ id: String) throws(DeviceError) -> RecordState {
        let uuid = try Self.recordID(id)
        return try withStore { try $0.restore(uuid) }
    }

    /// Open conflicts on one record, for showing next to it.
    public func openConflictCount(on id: UUID) throws(DeviceError) -> Int {
        try withStore { try $0.conflicts(status: .open, record: id).count }
    }

    // MARK: Conflicts

    /// The conflict log, oldest first: the open entries, or every entry with `includeClosed`.
    public func conflicts(includeClosed: Bool = false) throws(DeviceError) -> [ConflictEntry] {
        try withStore { try $0.conflicts(status: includeClosed ? nil : .open) }
    }

    /// How `resolve` settles a conflict, as given on the command line.
    public enum ResolutionChoice: Sendable, Equatable {
        case keepWinner
        case takeLoser
        /// A new value, parsed by the kind of the conflict's field.
        case value(String)
    }

    /// Settles an open conflict; returns the closed entry and the record as it now is.
    @discardableResult
    public func resolve(_ id: Int64, _ choice: ResolutionChoice) throws(DeviceError) -> (entry: ConflictEntry, record: RecordState) {
        let schema = self.schema
        return try withStore { store in
            guard let entry = try store.conflict(id) else { throw ReplicaStoreError.conflictNotFound(id) }
            let resolution: ConflictResolution
            switch choice {
            case .keepWinner: resolution = .keepWinner
            case .takeLoser: resolution = .takeLoser
            case .value(let text):
                guard let field = entry.conflict.field else {
                    throw DeviceError.usage("conflict \(id) is about whether the record exists, which takes no value: use --keep-winner or --take-loser")
                }
                let recordType = try ValueParser.recordType(entry.conflict.recordType, in: schema)
                let kind = try ValueParser.kind(of: field, in: recordType)
                resolution = .value(try ValueParser.parse(text, kind: kind, field: field))
            }
            let state = try store.resolve(id, resolution)
            return (try store.conflict(id) ?? entry, state)
        }
    }

    // MARK: Status

    /// Everything `rapport status` shows.
    public struct Status: Sendable {
        public var profile: DeviceProfile
        /// The home directory's full path.
        public var home: String
        /// Records with local changes not yet acknowledged by the server.
        public var dirtyCount: Int
        /// Conflict log entries waiting for `resolve`.
        public var openConflicts: Int
        /// Live records per type.
        public var recordCounts: [String: Int]
        /// `nil` until the first successful sync.
        public var lastSync: SyncState?
        /// The e-mail of the user the device belongs to, when known (see `Device.user`).
        public var user: String?
        /// The number the tenant's registry gave the device, which its case numbers carry
        /// (`C<number>-<n>`); `nil` until enrollment or a sync told it.
        public var deviceNumber: String?
    }

    /// Counts from the store and the last sync's outcome; works offline.
    public func status() throws(DeviceError) -> Status {
        let types = schema.types.keys.sorted()
        let (dirty, open, counts, number) = try withStore { store in
            (try store.dirtyCount(), try store.conflicts(status: .open).count,
             Dictionary(uniqueKeysWithValues: try types.map { ($0, try store.count(ofType: $0)) }),
             try CaseNumbers.deviceNumber(in: store).map(String.init))
        }
        return Status(profile: profile, home: home.path, dirtyCount: dirty, openConflicts: open,
                      recordCounts: counts, lastSync: home.loadState(), user: user, deviceNumber: number)
    }

    // MARK: Sync

    /// The client settings of this device: the profile, the secret and the trust roots.
    public func clientConfiguration() throws(DeviceError) -> ClientConfiguration {
        let secret = try home.loadSecret()
        let trust: TrustRoots
        if let caFile = profile.caFile {
            let path = caFile.hasPrefix("/") ? caFile : home.path + "/" + caFile
            guard FileManager.default.fileExists(atPath: path) else {
                throw .usage("the device's CA file \(path) is missing; run 'rapport init --force' with --ca")
            }
            trust = .certificates(.file(path))
        } else {
            trust = .system
        }
        return ClientConfiguration(host: profile.host, port: profile.port, tenant: profile.tenant, secret: secret,
                                   trustRoots: trust, schemaVersion: profile.schemaVersion,
                                   serverName: profile.serverName, serverKeyPin: profile.pin)
    }

    /// Pushes local changes and pulls everyone else's, then records the outcome in `state.json`.
    ///
    /// - Parameters:
    ///   - maxAttempts: connection attempts before giving up (the client's default when `nil`).
    ///   - progress: called as batches complete, from the client's task.
    /// - Throws: `.syncFailed` when the network or the server failed (run it again: nothing
    ///   applied is lost), `.refused` for a credential or TLS refusal.
    @discardableResult
    public func sync(maxAttempts: Int? = nil, logger: Logger = Device.quietLogger,
                     progress: (@Sendable (SyncProgress) -> Void)? = nil) async throws(DeviceError) -> SyncReport {
        var configuration = try clientConfiguration()
        if let maxAttempts { configuration.retry.maxAttempts = max(1, maxAttempts) }
        let client: RapportClient
        do {
            client = try RapportClient(store: store, configuration: configuration, logger: logger)
        } catch {
            throw DeviceError.classify(error)
        }
        let report: SyncReport
        do {
            report = try await client.sync(progress: progress)
        } catch {
            throw DeviceError.classify(error, duringSync: true)
        }
        // The sync itself succeeded and is stored; failing to note it must not turn it into an error.
        try? home.saveState(SyncState(lastSyncAt: DeviceHome.timestamp(Date()), report: report))
        return report
    }

    /// Record ids as this tool prints them: lowercase, like replica ids.
    public static func text(_ id: UUID) -> String { id.uuidString.lowercased() }
}
