import Foundation
import Logging
import NIOCore
import PrivateFiles
import Registry
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
    /// The highest sequence subscribers were told about (or that was committed when the store
    /// opened), so commits made by other processes can be told apart and announced too.
    private let announced: Mutex<Int64>
    /// Change-feed readers waiting for the next change (`waitForChange`), resumed by `announce`.
    private let waiters = Mutex<[UUID: CheckedContinuation<Void, Never>]>([:])
    /// Told the new sequence whenever sessions are (the server's webhook deliveries), by a key
    /// of the observer's choosing.
    private let observers = Mutex<[String: @Sendable (Int64) -> Void]>([:])

    init(tenant: String, store: SharedReplicaStore, sequence: Int64) {
        self.tenant = tenant
        self.store = store
        self.announced = Mutex(sequence)
    }

    /// Adds a session's channel to those told about new changes.
    func subscribe(_ channel: any Channel) {
        subscribers.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func unsubscribe(_ channel: any Channel) {
        _ = subscribers.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Calls `observer` with the tenant's sequence whenever it is announced, until
    /// `removeObserver(key)`: work beside the sessions that follows the tenant's changes.
    func addObserver(_ key: String, _ observer: @escaping @Sendable (Int64) -> Void) {
        observers.withLock { $0[key] = observer }
    }

    func removeObserver(_ key: String) {
        _ = observers.withLock { $0.removeValue(forKey: key) }
    }

    /// Tells every subscribed session but `origin` that the tenant's sequence reached `sequence`.
    /// Writing to a channel from here is safe: NIO hands the write to the channel's event loop.
    func announce(_ sequence: Int64, except origin: (any Channel)?) {
        announced.withLock { $0 = max($0, sequence) }
        for waiter in waiters.withLock({ waiters in defer { waiters.removeAll() }; return Array(waiters.values) }) {
            waiter.resume()
        }
        var notice = Rapport_V1_ChangesAvailable()
        notice.serverSequence = UInt64(sequence)
        var frame = Rapport_V1_Frame()
        frame.changesAvailable = notice
        for observer in observers.withLock({ Array($0.values) }) { observer(sequence) }
        let targets = subscribers.withLock { Array($0.values) }
        for channel in targets where origin.map({ ObjectIdentifier($0) != ObjectIdentifier(channel) }) ?? true {
            channel.writeAndFlush(frame, promise: nil)
        }
    }

    /// Tells every subscribed session but those `ending` to pull, whatever the sequence: after a
    /// change of the registry that may change what each of them may see.
    func announceToAll(except ending: Set<ObjectIdentifier>) async {
        guard subscribers.withLock({ !$0.isEmpty }), let sequence = try? await store.perform({ try $0.lastSequence }) else { return }
        var notice = Rapport_V1_ChangesAvailable()
        notice.serverSequence = UInt64(sequence)
        var frame = Rapport_V1_Frame()
        frame.changesAvailable = notice
        for channel in subscribers.withLock({ Array($0.values) }) where !ending.contains(ObjectIdentifier(channel)) {
            channel.writeAndFlush(frame, promise: nil)
        }
    }

    /// Announces a commit another node made (`StoreChangeListener`), unless sessions here
    /// announced that sequence already.
    func announceCommitted(_ sequence: Int64) {
        guard sequence > announced.withLock({ $0 }) else { return }
        announce(sequence, except: nil)
    }

    /// Announces what other processes committed to the store (`rapportctl import`, another
    /// server node), which no session of this server announced, so live devices pull it
    /// without waiting for their next push. Costs one read, and only for a store with
    /// subscribers, change-feed readers or observers.
    func announceOutsideCommits() async {
        guard subscribers.withLock({ !$0.isEmpty }) || waiters.withLock({ !$0.isEmpty }) || observers.withLock({ !$0.isEmpty }),
              let sequence = try? await store.perform({ try $0.lastSequence }) else { return }
        announceCommitted(sequence)
    }
}

extension TenantStore {
    /// Change-feed readers waiting now (the `rapport_api_feed_waiting` gauge).
    var feedWaiters: Int { waiters.withLock { $0.count } }

    /// Returns at the next announcement of a change (a device's push, an API write, a commit
    /// of another process), or after `timeout`, or when the task is cancelled: what a long-poll
    /// of the change feed waits on, the same announcement live sessions hear.
    func waitForChange(after sequence: Int64, timeout: Duration) async {
        let id = UUID()
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.waiters.withLock { $0.removeValue(forKey: id) }?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiters.withLock { $0[id] = continuation }
                // Announced between the caller's read and now: no need to wait.
                if announced.withLock({ $0 }) > sequence { waiters.withLock { $0.removeValue(forKey: id) }?.resume() }
                // Cancelled before it was registered: the handler below found nothing to resume.
                if Task.isCancelled { waiters.withLock { $0.removeValue(forKey: id) }?.resume() }
            }
        } onCancel: {
            waiters.withLock { $0.removeValue(forKey: id) }?.resume()
        }
        timer.cancel()
    }
}

/// The open tenant stores of a server: opened on first use, kept while sessions use them, and
/// closed least recently used first once more than `capacity` are open, so a server with tens
/// of thousands of tenants keeps a bounded number of files (three descriptors per store).
///
/// A store in use is never closed: sessions hold a lease from `lease(_:)` to `release(_:)`.
/// When every open store is leased the pool goes over capacity rather than refuse a session,
/// and shrinks back as leases end.
public final class TenantPool: Sendable {
    private struct Entry {
        var store: TenantStore
        var leases: Int
        var lastUse: UInt64
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var clock: UInt64 = 0
        /// Tenants that may no longer be served: closed as soon as their last lease ends.
        var retired: Set<String> = []
    }

    /// Where the stores are: the data directory's files, or the PostgreSQL database it names.
    private let data: DataDirectory
    /// How each tenant's store opens.
    private let options: ReplicaStore.Options
    /// The most stores kept open while not in use.
    public let capacity: Int
    private let createsMissing: Bool
    private let state = Mutex(State())
    /// Opening a store blocks on SQLite; these keep two sessions from opening the same tenant at
    /// once without serialising the opening of different tenants behind one lock.
    private let openingLocks: [OpeningLock] = (0..<64).map { _ in OpeningLock() }
    private final class OpeningLock: Sendable { let mutex = Mutex(()) }
    private let logger: Logger
    private let metrics: ServerMetrics?

    /// - Parameter data: where the stores are (the directory's `tenants/<slug>.sqlite` files, or
    ///   the PostgreSQL database it names).
    /// - Parameter options: how each tenant's store opens (schema, rules, effects, indexes; the
    ///   indexes include the references scopes follow from a record to those hanging off it).
    /// - Parameter createsMissing: make a missing store file (tests, embedding) instead of refusing.
    /// - Parameter metrics: where opens and evictions are counted.
    public init(data: DataDirectory, options: ReplicaStore.Options,
                capacity: Int = 256, createsMissing: Bool = false, metrics: ServerMetrics? = nil, logger: Logger) throws {
        precondition(capacity > 0, "a pool holds at least one store")
        if data.database == nil { try PrivateFiles.createDirectory(data.tenantsPath) }
        self.data = data
        self.options = options
        self.capacity = capacity
        self.createsMissing = createsMissing
        self.metrics = metrics
        self.logger = logger
    }

    /// A handle of the tenant's store of its own, apart from the pool's, for work that runs
    /// beside the sessions (`ScheduledTenantWork`) and must not hold up their queue: its write
    /// transactions interleave with theirs (SQLite's write lock, PostgreSQL's lock on the tenant's
    /// header). Never creates a store. The caller closes it.
    func openSeparateHandle(_ tenant: String) throws -> ReplicaStore {
        // Opened as the pool's: a handle with other field indexes would rebuild the store's.
        try data.openStore(of: tenant, options: options, creating: false)
    }

    /// How many stores are open now.
    public var openCount: Int { state.withLock { $0.entries.count } }

    /// The tenants whose stores are open now.
    public var openTenants: [String] { state.withLock { Array($0.entries.keys) } }

    /// The stores open now.
    var openStores: [TenantStore] { state.withLock { $0.entries.values.map(\.store) } }

    /// The tenant's store if it is open now, without a lease (nothing to release).
    func openStore(of tenant: String) -> TenantStore? {
        state.withLock { $0.entries[tenant]?.store }
    }

    /// The tenant's store, opened if need be, leased until `release(tenant)`.
    ///
    /// Opening blocks on SQLite, so it runs on the caller's thread: callers are never event loops.
    public func lease(_ tenant: String) throws -> TenantStore {
        if let store = try takeCurrentLease(tenant) { return store }
        let lock = openingLocks[Int(UInt(bitPattern: tenant.hashValue) % UInt(openingLocks.count))]
        return try lock.mutex.withLock { _ in
            if let store = try takeCurrentLease(tenant) { return store }
            precondition(TenantID.isValid(tenant), "tenant ids are validated before they reach the pool")
            let replica = try data.openStore(of: tenant, options: options, creating: createsMissing)
            let store = TenantStore(tenant: tenant, store: SharedReplicaStore(replica, label: "tenant.\(tenant)"),
                                    sequence: try replica.lastSequence)
            let evicted = state.withLock { state -> [TenantStore] in
                state.clock += 1
                state.retired.remove(tenant)
                state.entries[tenant] = Entry(store: store, leases: 1, lastUse: state.clock)
                return evict(&state)
            }
            metrics?.tenantStoreOpens.increment()
            logger.debug("opened tenant store", metadata: ["tenant": "\(tenant)", "replica": "\(replica.replicaID)"])
            close(evicted)
            return store
        }
    }

    /// Ends a lease from `lease(_:)`.
    public func release(_ tenant: String) {
        let evicted = state.withLock { state -> [TenantStore] in
            guard var entry = state.entries[tenant] else { return [] }
            entry.leases -= 1
            state.clock += 1
            entry.lastUse = state.clock
            state.entries[tenant] = entry
            return evict(&state)
        }
        close(evicted)
    }

    /// Closes the stores of tenants that may no longer be served (suspended, deleted, about to
    /// be restored), now if unused or when their last session ends, so an admin's file
    /// operations never race a server that still holds the old file open.
    public func retire(_ tenants: Set<String>) {
        let evicted = state.withLock { state -> [TenantStore] in
            state.retired = tenants
            return evict(&state)
        }
        close(evicted)
    }

    /// `takeLease`, for a store that is still the tenant's: one a restore replaced under the
    /// pool (a tenant restored while suspended, before this server closed it) is closed when
    /// its last session ends, and opened again by the next lease once it is. Until then a
    /// session is refused, to retry; none is served under the old identity.
    private func takeCurrentLease(_ tenant: String) throws -> TenantStore? {
        guard let store = takeLease(tenant) else { return nil }
        let replaced: Bool
        do {
            replaced = try store.store.performSync { try $0.isReplaced() }
        } catch {
            release(tenant)
            throw error
        }
        guard replaced else { return store }
        logger.notice("tenant store replaced by a restore: opening it again", metadata: ["tenant": "\(tenant)"])
        state.withLock { _ = $0.retired.insert(tenant) }
        release(tenant)
        guard state.withLock({ $0.entries[tenant] == nil }) else {
            throw ReplicaStoreError.replaced(path: tenant, by: "a restored store; its sessions are ending")
        }
        return nil
    }

    private func takeLease(_ tenant: String) -> TenantStore? {
        state.withLock { state in
            guard var entry = state.entries[tenant] else { return nil }
            state.clock += 1
            entry.leases += 1
            entry.lastUse = state.clock
            state.entries[tenant] = entry
            return entry.store
        }
    }

    /// Removes unleased retired stores, then unleased ones least recently used first until
    /// `capacity` are open. Returns them for closing outside the lock.
    private func evict(_ state: inout State) -> [TenantStore] {
        var evicted: [TenantStore] = []
        for tenant in state.retired {
            if let entry = state.entries[tenant], entry.leases == 0 {
                state.entries[tenant] = nil
                evicted.append(entry.store)
            }
        }
        let excess = state.entries.count - capacity
        if excess > 0 {
            let idle = state.entries.filter { $0.value.leases == 0 }.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(excess)
            for (tenant, entry) in idle {
                state.entries[tenant] = nil
                evicted.append(entry.store)
            }
            metrics?.tenantStoreEvictions.increment(by: Int64(idle.count))
        }
        return evicted
    }

    private func close(_ stores: [TenantStore]) {
        guard !stores.isEmpty else { return }
        logger.debug("closing idle tenant stores", metadata: ["count": "\(stores.count)"])
        // After the work already queued on each (none: unleased stores have no sessions).
        Task { for store in stores { await store.store.close() } }
    }

    /// Closes every store after the work already queued on it.
    public func closeAll() async {
        let stores = state.withLock { state in
            defer { state.entries.removeAll() }
            return state.entries.values.map(\.store)
        }
        for store in stores { await store.store.close() }
    }
}
