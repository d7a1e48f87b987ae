import Access
import Foundation
import Logging
import NIOCore
import NIOPosix
import PrivateFiles
import Registry
import ReplicaStore
import Synchronization
import SyncModel
import SyncProtocol
import TLS

/// Serves sync sessions over TLS for every tenant in a data directory.
///
/// Each connection runs as its own task: TLS and framing on a SwiftNIO event loop, store work on
/// the tenant's single-writer queue, so one slow tenant or peer never blocks the others.
public final class SyncServer: Sendable {
    /// How a server is set up.
    public struct Configuration: Sendable {
        public var host: String
        /// 0 picks a free port (see `SyncServer.port`).
        public var port: Int
        /// Holds `tenants/`, and the dev certificate and credentials when none are given.
        public var dataDirectory: String
        /// A PostgreSQL database (libpq URL) holding the registry and the tenants' stores in
        /// place of the data directory's files, shared by every node that names it; `nil` for
        /// the files.
        public var storeDatabase: String?
        /// The data directory with the store database, if any: where registry and stores are.
        public var data: DataDirectory { DataDirectory(dataDirectory, database: storeDatabase) }
        /// PEM certificate chain and key; `nil` uses (and on first start makes) a dev certificate.
        public var certificateChainPath: String?
        public var privateKeyPath: String?
        public var limits: SessionLimits
        /// How every tenant store opens: its schema, the checks of pushed records that need the
        /// tenant's data (`rules`), what follows from accepted changes (`effects`), its field
        /// indexes. The server adds the fields its access scopes follow to the indexes. Tools
        /// that write a tenant's store beside the server must open it alike.
        public var storeOptions: ReplicaStore.Options
        public var schema: Schema { storeOptions.schema }
        /// Users' rights, applied to every pushed record: how records are owned and the roles a
        /// tenant has until it defines its own. `nil` applies none (a server whose
        /// authenticator knows no users).
        public var access: AccessConfiguration?
        public var schemaVersion: UInt32
        /// How long shutdown waits for sessions to finish their current batch.
        public var shutdownGracePeriod: Duration
        /// The most tenant stores kept open while no session uses them (LRU beyond that).
        public var maxOpenTenants: Int
        /// How often the server looks for revoked devices, suspended users and tenants, and
        /// ends their sessions: the bound on how long a revoked device keeps syncing.
        public var accessCheckInterval: Duration
        /// Open connections at most, sessions, pre-login connections and busy answers together;
        /// one more is closed as soon as it is accepted. Keep it under the process's file limit.
        public var maxConnections: Int
        /// Connections that have not logged in yet (TLS, Hello, Enroll), in all; one more is
        /// answered `SERVER_BUSY` after its TLS handshake.
        public var maxPreLoginConnections: Int
        /// Connections from one IP address that have not logged in yet; one more is answered
        /// `SERVER_BUSY`, so one peer cannot use up the pre-login connections of everyone.
        public var maxPreLoginPerAddress: Int
        /// The delay a `SERVER_BUSY` answer asks for, plus up to half of it again at random so
        /// that the clients it turned away do not come back together.
        public var busyRetryAfter: Duration
        /// Work run on every served tenant's store at an interval (the CRM's scheduled rule
        /// pass); `nil` runs none.
        public var scheduledWork: ScheduledTenantWork?
        /// Purges and compaction of every tenant's store and of the registry (`housekeeping(every:registryPath:)`).
        public var housekeeping: ScheduledTenantWork?
        /// Delivers the webhook subscriptions of the data directory's registry
        /// (`rapportctl webhook`); `nil` delivers none.
        public var webhooks: WebhookOptions?
        /// Set on a branch office's server: the centre whose tenant it replicates (SPEC.md 6).
        public var upstream: UpstreamConfiguration?
        /// Where the server counts what it does; each configuration made by `init` has a
        /// registry of its own, so servers in one process do not share counters.
        public var metrics = ServerMetrics()

        public init(dataDirectory: String, host: String = "127.0.0.1", port: Int = 7443,
                    schema: Schema, schemaVersion: UInt32) {
            self.dataDirectory = dataDirectory
            self.host = host
            self.port = port
            self.limits = SessionLimits()
            self.storeOptions = ReplicaStore.Options(schema: schema)
            self.schemaVersion = schemaVersion
            self.shutdownGracePeriod = .seconds(10)
            self.maxOpenTenants = 256
            self.accessCheckInterval = .seconds(1)
            self.maxConnections = 4096
            self.maxPreLoginConnections = 1024
            self.maxPreLoginPerAddress = 64
            self.busyRetryAfter = .seconds(1)
        }
    }

    /// What rights are measured by (see `Configuration.access`).
    public struct AccessConfiguration: Sendable {
        public var ownership: OwnershipModel
        /// The roles of a tenant that has not defined them itself.
        public var defaultRoles: [Role]

        public init(ownership: OwnershipModel, defaultRoles: [Role]) {
            self.ownership = ownership
            self.defaultRoles = defaultRoles
        }
    }

    public let configuration: Configuration
    /// The CA file clients should trust when the server made its own dev certificate.
    public let devCertificateAuthorityPath: String?
    let logger: Logger
    let tls: TLSContext
    /// The certificate chain and key the server serves sync with, for its other TLS listeners.
    private let certificate: (chain: PEMSource, key: PEMSource)
    let tenants: TenantPool
    let authenticator: any Authenticator
    let group: any EventLoopGroup
    let sessions = SessionRegistry()
    /// For each device pulling from 0 under rights: the records it may read as of the start, by
    /// sequence, so each batch of the catch-up reads its part instead of computing the scope again.
    let catchUps = Mutex<[String: [(sequence: Int64, id: UUID)]]>([:])
    /// For each device pulling under rights: the scope state its last pull read, with the text
    /// it was read from (`storedScopeState`). Bounded; another text is read afresh.
    let scopeStates = Mutex<[String: (text: String, state: ScopeState)]>([:])
    let gate: ConnectionGate
    private let running = Mutex<Running?>(nil)
    /// A branch server's link to its centre, while it runs.
    let branch = Mutex<BranchUpstream?>(nil)
    var metrics: ServerMetrics { configuration.metrics }
    /// Set when shutdown begins, for `health`.
    private let stopping = Atomic<Bool>(false)
    /// Why the last re-read of the registry failed; `nil` once one succeeds again.
    let registryProblem = Mutex<String?>(nil)

    private struct Running: @unchecked Sendable {
        // Safe: the channel is only closed (a thread-safe NIO call), the task only awaited.
        var channel: any Channel
        var acceptLoop: Task<Void, Never>
        var accessWatch: Task<Void, Never>
        var scheduled: Task<Void, Never>?
        var changeListener: StoreChangeListener?
        var port: Int
    }

    /// Sets the server up: TLS material, tenant directory, authenticator (by default the
    /// registry of the data directory). Nothing listens yet.
    public init(configuration: Configuration, authenticator: (any Authenticator)? = nil,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        gate = ConnectionGate(limits: .init(total: configuration.maxConnections,
                                            preLogin: configuration.maxPreLoginConnections,
                                            preLoginPerAddress: configuration.maxPreLoginPerAddress))
        try PrivateFiles.createDirectory(configuration.dataDirectory)
        Self.tightenLooseModes(in: configuration.dataDirectory, logger: logger)
        let chain: PEMSource, key: PEMSource
        if let chainPath = configuration.certificateChainPath, let keyPath = configuration.privateKeyPath {
            (chain, key) = (.file(chainPath), .file(keyPath))
            devCertificateAuthorityPath = nil
        } else {
            let paths = try DevCertificates.ensure(in: configuration.dataDirectory + "/tls")
            (chain, key) = (.file(paths.serverCertificateChain), .file(paths.serverPrivateKey))
            devCertificateAuthorityPath = paths.caCertificate
        }
        certificate = (chain, key)
        tls = try TLSContext(configuration: .server(certificateChain: chain, privateKey: key,
                                                    applicationProtocols: [SyncProtocolVersion.alpn]))
        let directory = configuration.data
        let authenticator = try authenticator ?? RegistryAuthenticator(dataDirectory: directory)
        self.authenticator = authenticator
        var storeOptions = configuration.storeOptions
        storeOptions.replicaID = nil
        storeOptions.indexedFields.formUnion(configuration.access?.ownership.indexedFields ?? [])
        // A branch keeps what its devices push dirty until the centre took it.
        if configuration.upstream != nil { storeOptions.forwardsDownstreamChanges = true }
        tenants = try TenantPool(data: directory, options: storeOptions,
                                 capacity: configuration.maxOpenTenants,
                                 createsMissing: authenticator.createsTenantStores,
                                 metrics: configuration.metrics, logger: logger)
        configuration.metrics.sample { [gate, tenants] gauges in
            let phases = gate.phases
            gauges.connectionsPreLogin.set(Int64(phases.preLogin))
            gauges.connectionsSession.set(Int64(phases.session))
            gauges.connectionsBusy.set(Int64(phases.busy))
            gauges.openTenantStores.set(Int64(tenants.openCount))
            gauges.feedWaiting.set(Int64(tenants.openStores.reduce(0) { $0 + $1.feedWaiters }))
        }
    }

    /// A server TLS context with the certificate sync is served with, offering other protocols
    /// (`http/1.1` for the integration API): one certificate and one TLS stack for both.
    public func tlsContext(applicationProtocols: [String]) throws -> TLSContext {
        try TLSContext(configuration: .server(certificateChain: certificate.chain, privateKey: certificate.key,
                                              applicationProtocols: applicationProtocols))
    }

    /// The port the server listens on, once started.
    public var port: Int? { running.withLock { $0?.port } }

    /// How many tenant stores are open now (bounded by `maxOpenTenants` while unused).
    public var openTenantStores: Int { tenants.openCount }

    /// Takes group and other access away from everything in the data directory, with a warning
    /// naming what changed.
    ///
    /// Tightened rather than refused: data directories made before Rapport created its files
    /// owner-only all have 0644 files, and an upgrade should not stop the server. Nothing of
    /// Rapport's is meant for other users; a file that cannot be tightened is named in an error
    /// line and the server still starts (the operator owns the decision about that file).
    static func tightenLooseModes(in dataDirectory: String, logger: Logger) {
        let loose = PrivateFiles.entries(under: dataDirectory).filter(\.isLoose)
        guard !loose.isEmpty else { return }
        var failed: [String] = []
        for entry in loose {
            do { try PrivateFiles.tighten(entry) } catch { failed.append(error.description) }
        }
        logger.warning("the data directory was readable by other users; made owner-only (folders 0700, files 0600)", metadata: [
            "data": "\(dataDirectory)", "changed": "\(loose.count - failed.count)",
            "examples": "\(loose.prefix(5).map(\.description).joined(separator: ", "))",
        ])
        if !failed.isEmpty {
            logger.error("could not make these owner-only", metadata: ["data": "\(dataDirectory)", "failures": "\(failed.prefix(5))"])
        }
    }

    /// What the server makes of a connection it accepted (see `ConnectionGate`).
    enum Accepted: Sendable {
        case session(NIOAsyncChannel<InboundFrame, any OutboundFrame>, FrameSizeLimit, ConnectionGate.Ticket)
        /// Answered `SERVER_BUSY` or dropped by its own handlers; nothing to serve.
        case refused
    }

    /// Binds the listening socket and starts accepting sessions.
    @discardableResult
    public func start() async throws -> Int {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: configuration.host, port: configuration.port) { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.accept(channel) }
            }
        let port = server.channel.localAddress?.port ?? configuration.port
        let acceptLoop = Task { [self] in
            do {
                try await server.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { group in
                        for try await accepted in inbound {
                            guard case .session(let connection, let frameLimit, let ticket) = accepted else { continue }
                            group.addTask { await self.serve(connection, frameLimit: frameLimit, ticket: ticket) }
                        }
                    }
                }
            } catch {
                logger.error("accept loop ended", metadata: ["error": "\(error)"])
            }
        }
        if let upstream = configuration.upstream {
            let started = try await startUpstream(upstream)
            branch.withLock { $0 = started }
            let gauges = metrics.upstreamGauges()
            metrics.sample { [link = started.link] _ in
                let status = link.status
                gauges.connected.set(Int64(status.connected ? 1 : 0))
                gauges.lastSync.set(status.lastSync?.timeIntervalSince1970 ?? 0)
                gauges.behind.set(Double(status.lag))
                gauges.waiting.set(Int64(status.waiting))
            }
        }
        let accessWatch = Task { [self] in await watchAccess() }
        // One task for every kind of scheduled work, each in a loop of its own: cancelling it stops them all.
        let works = [configuration.scheduledWork, configuration.housekeeping].compactMap { $0 }
        let webhooks = configuration.webhooks
        let scheduled = works.isEmpty && webhooks == nil ? nil : Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                for work in works { group.addTask { await self.runScheduled(work) } }
                if let webhooks { group.addTask { await self.runWebhooks(webhooks) } }
            }
        }
        let changeListener = configuration.storeDatabase.map { StoreChangeListener(database: $0, tenants: tenants, logger: logger) }
        changeListener?.start()
        running.withLock {
            $0 = Running(channel: server.channel, acceptLoop: acceptLoop, accessWatch: accessWatch, scheduled: scheduled,
                         changeListener: changeListener, port: port)
        }
        logger.info("rapportd listening", metadata: ["address": "\(configuration.host):\(port)", "data": "\(configuration.dataDirectory)"])
        return port
    }

    /// Sets up a connection just accepted, on its event loop: a session pipeline (TLS, frames
    /// with the small pre-login limit, timeouts), or a `SERVER_BUSY` answer, or an immediate
    /// close, as the connection caps decide.
    func accept(_ channel: any Channel) throws -> Accepted {
        let limits = configuration.limits
        let address = channel.remoteAddress?.ipAddress ?? "unknown"
        let sync = channel.pipeline.syncOperations
        let ticket: ConnectionGate.Ticket
        switch gate.admit(address: address) {
        case .dropped(let reason):
            metrics.connectionsDropped.increment()
            logger.info("connection dropped: too many connections", metadata: [
                "peer": "\(address)", "reason": "\(reason)", "max_connections": "\(gate.limits.total)"])
            try sync.addHandler(CloseAtOnceHandler())
            return .refused
        case .busy(let busyTicket, let reason):
            metrics.connectionsBusy.increment()
            logger.info("connection answered SERVER_BUSY", metadata: ["peer": "\(address)", "reason": "\(reason)"])
            channel.closeFuture.whenComplete { [gate] _ in gate.release(busyTicket) }
            let delay = configuration.busyRetryAfter * Double.random(in: 1.0...1.5)
            try sync.addHandler(TLSHandler(context: tls))
            try sync.addHandler(FrameEncodingHandler())
            try sync.addHandler(BusyAnswerHandler(SyncError(.serverBusy, "server busy: \(reason); retry later",
                                                            retryable: true, retryAfter: delay)))
            try sync.addHandler(SessionTimeoutHandler(
                handshakeTimeout: .init(limits.handshakeTimeout), idleTimeout: .init(limits.handshakeTimeout)))
            return .refused
        case .admitted(let admitted):
            metrics.connectionsAdmitted.increment()
            ticket = admitted
        }
        channel.closeFuture.whenComplete { [gate] _ in gate.release(ticket) }
        let frameLimit = limits.frameSizeLimit()
        try sync.addHandler(TLSHandler(context: tls))
        try sync.addFrameCodec(limit: frameLimit)
        try sync.addHandler(SessionTimeoutHandler(
            handshakeTimeout: .init(limits.handshakeTimeout), idleTimeout: .init(limits.idleTimeout), metrics: metrics))
        // A few frames queued at most before reading stops: with the frame limit, this bounds
        // what a session holds while the server works on its request (SPEC.md 2.5).
        let inbound = NIOAsyncChannel<InboundFrame, any OutboundFrame>.Configuration(
            backPressureStrategy: .init(lowWatermark: 1, highWatermark: 2))
        let connection = try NIOAsyncChannel<InboundFrame, any OutboundFrame>(
            wrappingChannelSynchronously: channel, configuration: inbound)
        return .session(connection, frameLimit, ticket)
    }

    /// Raises this process's soft limit on open files to its hard limit, and returns the limit
    /// now in force. Every connection is a descriptor and the usual soft limit (1,024) is far
    /// below `maxConnections`; a process that opens many connections (a benchmark) needs it too.
    public static func raiseFileDescriptorLimit() -> Int {
        DescriptorBudget.raiseSoftLimit().soft
    }

    /// Whether the server can take sessions, for a load balancer's probe (`GET /health`).
    public struct Health: Sendable {
        /// Listening, not shutting down, and the registry read at its last check.
        public var isHealthy: Bool
        /// Why not, when not healthy.
        public var reason: String?
        public var sessions: Int
        public var openTenantStores: Int

        /// `{"status":"ok",...}` or `{"status":"unavailable","reason":...}`.
        public var json: String {
            var fields: [String: Any] = ["status": isHealthy ? "ok" : "unavailable", "sessions": sessions,
                                         "open_tenant_stores": openTenantStores]
            if let reason { fields["reason"] = reason }
            let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Health as of now; reads only memory, so it may be called from an event loop.
    public var health: Health {
        let reason: String?
        if stopping.load(ordering: .acquiring) || sessions.isShuttingDown {
            reason = "shutting down"
        } else if port == nil {
            reason = "not listening"
        } else if let problem = registryProblem.withLock({ $0 }) {
            reason = "registry unreadable: \(problem)"
        } else {
            reason = nil
        }
        return Health(isHealthy: reason == nil, reason: reason, sessions: sessions.count, openTenantStores: tenants.openCount)
    }

    /// Open connections now, and how many of them have not logged in (for tests and operators).
    public var connectionCounts: (total: Int, preLogin: Int) { gate.current }

    /// Stops accepting, lets sessions finish the batch they are working on (then tells them the
    /// server is going away), waits for them up to the grace period, and closes the stores.
    public func shutdown() async {
        guard let current = running.withLock({ state in defer { state = nil }; return state }) else { return }
        stopping.store(true, ordering: .releasing)
        logger.info("shutting down", metadata: ["sessions": "\(sessions.count)"])
        try? await current.channel.close()
        // The link stops after the batch in hand, which commits with its checkpoint.
        if let link = branch.withLock({ $0 }) {
            await link.link.stop()
            link.saveStatus(upstream: configuration.upstream.map { "\($0.host):\($0.port)" } ?? "", logger: logger)
            branch.withLock { $0 = nil }
            tenants.release(link.tenant.tenant)
        }
        current.accessWatch.cancel()
        current.scheduled?.cancel()
        current.changeListener?.stop()
        sessions.shutDown()
        let grace = configuration.shutdownGracePeriod
        let finished = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await current.acceptLoop.value; return true }
            group.addTask { try? await Task.sleep(for: grace); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !finished {
            logger.warning("sessions still open after the grace period; closing them")
            sessions.closeAll()
            await current.acceptLoop.value
        }
        await current.accessWatch.value
        // The run in hand stops after its current chunk and closes its own store handle.
        await current.scheduled?.value
        _ = try? await NIOThreadPool.singleton.runIfActive { [authenticator] in try authenticator.refresh() }
        await tenants.closeAll()
        logger.info("stopped")
    }

    /// Every `accessCheckInterval`: announces to live sessions what other processes committed to
    /// open stores, re-reads the registry when it changed (and saves when devices
    /// were last seen), ends the sessions of revoked devices, suspended users and suspended or
    /// deleted tenants with their own error code, and closes the stores of tenants no longer served.
    func watchAccess() async {
        let authenticator = self.authenticator
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.accessCheckInterval)
            if Task.isCancelled { break }
            for store in tenants.openStores { await store.announceOutsideCommits() }
            if let link = branch.withLock({ $0 }), let upstream = configuration.upstream {
                _ = try? await NIOThreadPool.singleton.runIfActive { [logger] in
                    link.saveStatus(upstream: "\(upstream.host):\(upstream.port)", logger: logger)
                }
            }
            do {
                let changed = try await NIOThreadPool.singleton.runIfActive({ try authenticator.refresh() })
                registryProblem.withLock { $0 = nil }
                guard changed else { continue }
            } catch {
                logger.error("cannot re-read the registry; access rules unchanged", metadata: ["error": "\(error)"])
                registryProblem.withLock { $0 = "\(error)" }
                continue
            }
            var ended = Set<ObjectIdentifier>()
            for (entry, identity) in sessions.identified() {
                guard let refusal = authenticator.revocation(of: identity) else { continue }
                logger.notice("ending session: access withdrawn", metadata: [
                    "tenant": "\(identity.tenant)", "device": "\(identity.device)", "code": "\(refusal.code)"])
                ended.insert(ObjectIdentifier(entry.channel))
                entry.channel.writeAndFlush(refusal.frame).whenComplete { _ in entry.channel.close(promise: nil) }
            }
            tenants.retire(Set(tenants.openTenants.filter { !authenticator.isServing(tenant: $0) }))
            // Who may see what may have changed (a role, a team): the live devices that stay
            // pull, and one whose access changed is told to pull again from 0 and loses what its
            // user may no longer see, without waiting for its next push.
            if configuration.access != nil {
                for store in tenants.openStores { await store.announceToAll(except: ended) }
            }
        }
    }
}

/// The live sessions, so shutdown can reach them.
final class SessionRegistry: Sendable {
    final class Entry: Sendable {
        let channel: any Channel
        /// Set while the session works on a request; shutdown then lets it finish first.
        let busy = Atomic<Bool>(false)
        /// Who the session is, once authenticated.
        let identity = Mutex<SessionIdentity?>(nil)
        init(channel: any Channel) { self.channel = channel }
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    private let stopping = Atomic<Bool>(false)

    var count: Int { entries.withLock { $0.count } }
    var isShuttingDown: Bool { stopping.load(ordering: .acquiring) }

    func add(_ channel: any Channel) -> Entry {
        let entry = Entry(channel: channel)
        entries.withLock { $0[ObjectIdentifier(channel)] = entry }
        return entry
    }

    func remove(_ entry: Entry) {
        _ = entries.withLock { $0.removeValue(forKey: ObjectIdentifier(entry.channel)) }
    }

    /// Idle sessions are told and closed now; busy ones close themselves after their reply.
    func shutDown() {
        stopping.store(true, ordering: .releasing)
        let idle = entries.withLock { $0.values.filter { !$0.busy.load(ordering: .acquiring) } }
        for entry in idle {
            entry.channel.writeAndFlush(SyncError(.shuttingDown, "the server is shutting down").frame, promise: nil)
            entry.channel.close(promise: nil)
        }
    }

    /// The authenticated sessions and who they are.
    func identified() -> [(Entry, SessionIdentity)] {
        entries.withLock { Array($0.values) }.compactMap { entry in entry.identity.withLock { $0 }.map { (entry, $0) } }
    }

    func closeAll() {
        for entry in entries.withLock({ Array($0.values) }) { entry.channel.close(promise: nil) }
    }
}
