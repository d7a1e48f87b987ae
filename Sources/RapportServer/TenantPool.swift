import Foundation
import Logging
import NIOCore
import ReplicaStore
import Synchronization
import SyncModel
import SyncProtocol

/// One tenant's authoritative store and the sessions that want to hear about its changes.
public final class TenantStore: Sendable {
    public let tenant: String
    /// The store, behind its single-writer queue.
    public let store: SharedReplicaStore
    private let subscribers = Mutex<[ObjectIdentifier: any Channel]>([:])

    init(tenant: String, store: SharedReplicaStore) {
        self.tenant = tenant
        self.store = store
    }

    /// Adds a session's channel to those told about new changes.
    func subscribe(_ channel: any Channel) {
        subscribers.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func unsubscribe(_ channel: any Channel) {
        _ = subscribers.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Tells every subscribed session but `origin` that the tenant's sequence reached `sequence`.
    /// Writing to a channel from here is safe: NIO hands the write to the channel's event loop.
    func announce(_ sequence: Int64, except origin: (any Channel)?) {
        var notice = Rapport_V1_ChangesAvailable()
        notice.serverSequence = UInt64(sequence)
        var frame = Rapport_V1_Frame()
        frame.changesAvailable = notice
        let targets = subscribers.withLock { Array($0.values) }
        for channel in targets where origin.map({ ObjectIdentifier($0) != ObjectIdentifier(channel) }) ?? true {
            channel.writeAndFlush(frame, promise: nil)
        }
    }
}

/// The open tenant stores of a server, each opened on first use and kept until shutdown.
public final class TenantPool: Sendable {
    private let directory: String
    private let schema: Schema
    private let rules: (any RecordRules)?
    private let open = Mutex<[String: TenantStore]>([:])
    private let logger: Logger

    /// - Parameter directory: where tenant files live, one `<slug>.sqlite` each.
    /// - Parameter rules: the store-aware checks every tenant's store runs on pushed records.
    public init(directory: String, schema: Schema, rules: (any RecordRules)? = nil, logger: Logger) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.schema = schema
        self.rules = rules
        self.logger = logger
    }

    /// The path of a tenant's file. Only validated slugs get here, so it stays in `directory`.
    public func path(of tenant: String) -> String {
        precondition(TenantID.isValid(tenant), "tenant ids are validated before they reach the pool")
        return directory + "/" + tenant + ".sqlite"
    }

    /// The tenant's store, opening (and if need be creating) its file.
    ///
    /// Opening blocks on SQLite, so it runs on the caller's thread: callers are never event loops.
    public func store(for tenant: String) throws -> TenantStore {
        try open.withLock { open in
            if let existing = open[tenant] { return existing }
            var options = ReplicaStore.Options(schema: schema)
            options.rules = rules
            let replica = try ReplicaStore(path: path(of: tenant), options: options)
            let store = TenantStore(tenant: tenant, store: SharedReplicaStore(replica, label: "tenant.\(tenant)"))
            open[tenant] = store
            logger.info("opened tenant store", metadata: ["tenant": "\(tenant)", "replica": "\(replica.replicaID)"])
            return store
        }
    }

    /// Closes every store after the work already queued on it.
    public func closeAll() async {
        let stores = open.withLock { open in
            defer { open.removeAll() }
            return Array(open.values)
        }
        for store in stores { await store.store.close() }
    }
}
