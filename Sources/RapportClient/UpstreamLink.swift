import Foundation
import Logging
import NIOPosix
import Synchronization
import SyncProtocol
import TLS

/// The branch office's side of its link to the centre (SPEC.md 6): one live session that
/// pushes what the branch's devices wrote, pulls what the rest of the tenant wrote, and keeps
/// the branch's copy of the centre's directory (users, roles, devices) current. It reconnects
/// with exponential backoff and jitter for as long as it runs; the branch serves its devices
/// whether or not it is connected.
///
/// Everything it does is batch by batch with the store's checkpoints, like a device's sync: a
/// link cut or a process killed at any point resumes where it stopped.
public final class UpstreamLink: Sendable {
    /// What the link knows of itself, for `rapportctl stats` and the log.
    public struct Status: Sendable, Codable, Equatable {
        public var connected = false
        /// When the link last connected (while connected) or last went down (while not).
        public var since: Date?
        /// Why the last connection failed or ended.
        public var lastError: String?
        /// The centre's replica id, as of the last session.
        public var centre: String?
        /// The centre's sequence as last heard (Welcome or an announcement).
        public var centreSequence: UInt64 = 0
        /// The branch's checkpoint on the centre's sequence.
        public var checkpoint: Int64 = 0
        /// Records with changes not yet taken by the centre.
        public var waiting = 0
        /// When a push and pull last completed.
        public var lastSync: Date?
        /// When the centre was last found with a new identity (restored from a backup).
        public var centreRestoredAt: Date?
        /// Digest of the directory adopted last.
        public var directory: String?
        /// Sessions opened since the link started.
        public var sessions = 0

        public init() {}

        /// Changes the centre has that the branch has not pulled yet.
        public var lag: UInt64 { centreSequence > UInt64(max(checkpoint, 0)) ? centreSequence - UInt64(checkpoint) : 0 }
    }

    /// How the branch keeps the centre's directory: the digest it holds, and adopting a new one
    /// (called off the event loops; may block on the branch's registry).
    public struct Directory: Sendable {
        public var digest: @Sendable () throws -> String?
        public var adopt: @Sendable (_ directory: Data, _ digest: String) throws -> Void
        /// The centre refuses the tenant's sessions (suspended or deleted there): the branch
        /// stops serving it too, until a directory says it is active again.
        public var tenantRefused: @Sendable (_ refusal: SyncError) throws -> Void

        public init(digest: @escaping @Sendable () throws -> String?, adopt: @escaping @Sendable (Data, String) throws -> Void,
                    tenantRefused: @escaping @Sendable (SyncError) throws -> Void = { _ in }) {
            self.digest = digest
            self.adopt = adopt
            self.tenantRefused = tenantRefused
        }
    }

    /// The sync engine over the branch's store, authenticating with the branch credential.
    public let client: RapportClient
    let directory: Directory
    let logger: Logger
    /// How often the directory is asked for while connected: how soon a revocation at the
    /// centre reaches the branch.
    let directoryInterval: Duration
    /// Called after changes from the centre were applied, for the branch to announce them to
    /// its live devices, and with every status change.
    let onPulled: @Sendable () -> Void
    let onStatus: @Sendable (Status) -> Void
    private let state = Mutex<Status>(Status())
    private let control = SessionControl()

    public init(client: RapportClient, directory: Directory, directoryInterval: Duration = .seconds(2),
                logger: Logger = Logger(label: "rapport.upstream"),
                onPulled: @escaping @Sendable () -> Void = {}, onStatus: @escaping @Sendable (Status) -> Void = { _ in }) {
        self.client = client
        self.directory = directory
        self.directoryInterval = directoryInterval
        self.logger = logger
        self.onPulled = onPulled
        self.onStatus = onStatus
    }

    /// The link as of now.
    public var status: Status { state.withLock { $0 } }

    /// Starts the link; it runs until `stop()`.
    public func start() {
        control.start { [self] in await run() }
    }

    /// Asks for the branch's changes to be pushed now (a device pushed to the branch). While
    /// the link is down, the count of changes waiting is brought up to date instead: it is what
    /// an operator looks at during an outage, and a session's sync is what sets it otherwise.
    public func pushNow() {
        if !control.pushNow() { Task { [self] in await countWaitingWhileDown() } }
    }

    /// Brings `waiting` up to date while the link is down (a session's sync sets it otherwise).
    private func countWaitingWhileDown() async {
        guard let waiting = try? await client.store.perform({ try $0.dirtyCount() }) else { return }
        update { if !$0.connected { $0.waiting = waiting } }
    }

    /// Ends the link after the batch in hand (each batch commits with its checkpoint, so what
    /// was not sent is sent by the next start).
    public func stop() async { await control.stop() }

    private func update(_ change: (inout Status) -> Void) {
        let status = state.withLock { change(&$0); return $0 }
        onStatus(status)
    }

    private func run() async {
        await control.keepSubscribed(client) { session in
            try await self.serve(&session)
        } failed: { error, failures, delay in
            if let refusal = error as? SyncError, [.tenantSuspended, .unknownTenant].contains(refusal.code) {
                let directory = self.directory
                do {
                    try await NIOThreadPool.singleton.runIfActive { try directory.tenantRefused(refusal) }
                } catch {
                    logger.error("cannot stop serving the tenant the centre refuses", metadata: ["error": "\(error)"])
                }
            }
            let wasConnected = status.connected
            update {
                if $0.connected || $0.since == nil { $0.since = Date() }
                $0.connected = false
                $0.lastError = "\(error)"
            }
            // What devices pushed while this session was ending waits too.
            await countWaitingWhileDown()
            // Once per outage at notice level; the retries that follow at debug.
            if wasConnected || failures == 1 {
                logger.notice("upstream link down; retrying with backoff", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
            } else {
                logger.debug("upstream link still down", metadata: ["error": "\(error)", "attempt": "\(failures)", "retry_in": "\(delay)"])
            }
            return true
        }
        update {
            $0.connected = false
            $0.since = Date()
        }
        logger.info("upstream link stopped")
    }

    /// One connected session: directory, push, pull, then push and pull as either side has
    /// news, and the directory every `directoryInterval`.
    private func serve(_ session: inout ClientSession) async throws {
        try await client.adopt(session.welcome)
        let centre = session.welcome.serverReplicaID
        let (restored, checkpoint, waiting) = try await client.store.perform { store -> (Bool, Int64, Int) in
            // Checked before the push, which would otherwise adopt the new identity silently.
            let known = try store.checkpoint(for: centre)
            let restored = try known == 0 && store.knowsOtherUpstream(than: centre)
            // What goes up in this session: the dirty records, or all of them for a restored centre.
            return (restored, known, restored ? try store.pendingChanges(after: 0).records : try store.dirtyCount())
        }
        if restored {
            logger.warning("the centre has a new identity (restored from a backup or replaced): pushing everything this branch holds again and pulling from the start",
                           metadata: ["centre": "\(centre)"])
        }
        update {
            $0.connected = true
            $0.since = Date()
            $0.lastError = nil
            $0.centre = centre
            $0.centreSequence = session.welcome.serverSequence
            // Connected is not caught up: until this session's first sync, what waits and how far
            // behind this centre the branch is are as of the connection.
            $0.waiting = waiting
            $0.checkpoint = checkpoint
            $0.sessions += 1
            if restored { $0.centreRestoredAt = Date() }
        }
        logger.info("upstream link connected", metadata: ["centre": "\(centre)", "centre_sequence": "\(session.welcome.serverSequence)"])
        try await exchangeDirectory(&session)
        try await syncOnce(&session, push: true, pull: true)
        let ticker = session.repeating(.tick, every: .seconds(1))
        defer { ticker.cancel() }
        let keepAlive = session.repeating(.keepAlive, every: client.configuration.keepAliveInterval)
        defer { keepAlive.cancel() }
        var lastDirectory = ContinuousClock.now
        while !Task.isCancelled {
            let input = try await session.next()
            let push = control.takePushRequest() || session.localChangePending
            session.localChangePending = false
            var pull = false
            if case .inbound(.frame(let frame)) = input, case .changesAvailable(let notice)? = frame.body {
                pull = true
                update { $0.centreSequence = max($0.centreSequence, notice.serverSequence) }
            }
            if case .tick = input, ContinuousClock.now - lastDirectory >= directoryInterval {
                lastDirectory = .now
                try await exchangeDirectory(&session)
            }
            if push || pull { try await syncOnce(&session, push: push, pull: pull) }
        }
    }

    private func syncOnce(_ session: inout ClientSession, push: Bool, pull: Bool) async throws {
        var report = SyncReport()
        if push { try await client.push(&session, report: &report, progress: nil) }
        if pull {
            try await client.pull(&session, report: &report, progress: nil)
            if report.pulled > 0 || report.evicted > 0 { onPulled() }
        }
        if report.rejected > 0 {
            logger.notice("the centre refused records the branch relayed; put back and passed on to their devices",
                          metadata: ["count": "\(report.rejected)"])
        }
        let centre = session.welcome.serverReplicaID
        let (waiting, checkpoint) = try await client.store.perform { (try $0.dirtyCount(), try $0.checkpoint(for: centre)) }
        update {
            $0.waiting = waiting
            $0.checkpoint = checkpoint
            $0.centreSequence = max($0.centreSequence, UInt64(max(checkpoint, 0)))
            $0.lastSync = Date()
        }
    }

    /// Fetches the centre's directory now over a session of its own (the link's exchange runs
    /// every `directoryInterval`): after a device enrolled through the branch, so its first
    /// session here finds it.
    public func refreshDirectory() async throws {
        try await ClientSession.run(configuration: client.configuration, tls: client.tls, deviceID: client.sessionID, subscribe: false) { session in
            try await exchangeDirectory(&session)
        }
    }

    private func exchangeDirectory(_ session: inout ClientSession) async throws {
        var request = Rapport_V1_DirectoryRequest()
        let directory = self.directory
        request.digest = try await NIOThreadPool.singleton.runIfActive { try directory.digest() ?? "" }
        request.replicaID = client.store.replicaID
        // A live link pulls only when told, so the centre would otherwise see the checkpoint of
        // its last pull request, one batch behind what the branch applied.
        let centre = session.welcome.serverReplicaID
        request.checkpoint = UInt64(max(0, try await client.store.perform { try $0.checkpoint(for: centre) }))
        var frame = Rapport_V1_Frame()
        frame.directoryRequest = request
        let answer = try await session.request(frame)
        guard case .directoryUpdate(let update)? = answer.body else {
            throw ClientError.protocolViolation("expected DirectoryUpdate")
        }
        guard !update.unchanged else { return }
        guard Crypto.hex(Crypto.sha256(Array(update.directory))) == update.digest else {
            throw ClientError.invalidServerData("the centre's directory does not match its digest")
        }
        let (data, digest) = (update.directory, update.digest)
        try await NIOThreadPool.singleton.runIfActive { try directory.adopt(data, digest) }
        self.update { $0.directory = update.digest }
        logger.info("adopted the centre's directory", metadata: ["digest": "\(update.digest.prefix(12))"])
    }
}
