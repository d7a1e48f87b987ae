import CRM
import Foundation
import Logging
import NIOCore
import NIOPosix
import ReplicaStore
import SyncModel
import SyncProtocol
import TLS

/// The sync library a field-sales app embeds: it keeps a local replica store in step with the
/// server, pushing local changes and pulling everyone else's.
///
/// ```swift
/// let client = try RapportClient(store: shared, configuration: config)
/// let report = try await client.sync { progress in print(progress) }
/// ```
///
/// Every batch is applied atomically with its checkpoint, so a sync interrupted anywhere (the
/// network drops, the app is killed) loses nothing and the next one resumes where it stopped.
public final class RapportClient: Sendable {
    public let store: SharedReplicaStore
    public let configuration: ClientConfiguration
    let tls: TLSContext
    let logger: Logger

    /// Also installs on the store the check of its user's rights kept from the last session
    /// (see `adoptAccess(_:)`), so local writes are checked before any connection; this reads
    /// the store on its queue and waits, like loading the trust roots, so not on an event loop.
    ///
    /// - Throws: `TLSError` when the trust roots or the pin cannot be loaded;
    ///   `ReplicaStoreError` when the kept rights cannot be read.
    public init(store: SharedReplicaStore, configuration: ClientConfiguration,
                logger: Logger = Logger(label: "rapport.client")) throws {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        tls = try Self.tlsContext(configuration)
        _ = try store.performSync { try Self.installSavedAccessCheck(on: $0) }
    }

    static func tlsContext(_ configuration: ClientConfiguration) throws -> TLSContext {
        try TLSContext(configuration: .client(
            trustRoots: configuration.trustRoots, expectedHostname: configuration.serverName,
            spkiSHA256Pin: configuration.serverKeyPin, applicationProtocols: [SyncProtocolVersion.alpn]))
    }

    /// What a device receives when it enrolls: keep `secret` where only its user can read it.
    public struct Enrollment: Sendable, Equatable {
        /// The device's replica id: its store must be created with it, since the server only
        /// accepts writes a device makes under its own id.
        public var deviceID: String
        public var secret: [UInt8]
        public var tenant: String
        /// The e-mail of the user the device belongs to.
        public var user: String
        /// The device's number in its tenant, `nil` from a server that does not number devices:
        /// keep it in the new store with `keepDeviceNumber(_:on:)`.
        public var deviceNumber: UInt32?
    }

    /// Trades a one-time enrollment code (from `rapportctl device enroll`) for this device's id
    /// and secret. Not retried: a code works once, and a refusal (`SyncError` with
    /// `invalidEnrollmentCode`, `enrollmentCodeExpired`, `enrollmentCodeUsed`, ...) will not pass.
    ///
    /// - Parameter configuration: the server and tenant; its `secret` is ignored.
    public static func enroll(configuration: ClientConfiguration, code: String, deviceName: String) async throws -> Enrollment {
        let tls = try tlsContext(configuration)
        let reply = try await ClientSession.enroll(configuration: configuration, tls: tls, code: code, deviceName: deviceName)
        guard !reply.deviceID.isEmpty, reply.secret.count >= 16 else {
            throw ClientError.protocolViolation("the server's enrollment answer has no device id or secret")
        }
        return Enrollment(deviceID: reply.deviceID, secret: Array(reply.secret), tenant: reply.tenant, user: reply.user,
                          deviceNumber: reply.deviceNumber == 0 ? nil : reply.deviceNumber)
    }

    /// Pushes every local change, then pulls every change of others, retrying with backoff when
    /// the network or the server fails in a way that may pass.
    @discardableResult
    public func sync(progress: (@Sendable (SyncProgress) -> Void)? = nil) async throws -> SyncReport {
        try await withRetries { attempt in
            var report = try await ClientSession.run(configuration: configuration, tls: tls, deviceID: sessionID, subscribe: false) { session in
                try await adopt(session.welcome)
                var report = SyncReport()
                try await push(&session, report: &report, progress: progress)
                try await pull(&session, report: &report, progress: progress)
                return report
            }
            report.attempts = attempt
            return report
        }
    }

    /// Who this client says it is in Hello.
    var sessionID: String { configuration.credentialID ?? store.replicaID }

    func withRetries<T: Sendable>(_ body: (Int) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await body(attempt)
            } catch {
                guard attempt < configuration.retry.maxAttempts, Self.isRetryable(error), !Task.isCancelled else { throw error }
                let delay = configuration.retry.delay(before: attempt, after: error)
                logger.info("sync failed, retrying", metadata: ["attempt": "\(attempt)", "delay": "\(delay)", "error": "\(error)"])
                try await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }

    /// Whether trying again may succeed: dropped connections and busy servers yes; bad
    /// credentials, a certificate that does not verify, or an incompatible server no.
    static func isRetryable(_ error: any Error) -> Bool {
        switch error {
        case let error as SyncError: return error.retryable
        case let error as TLSError:
            switch error.operation {
            case .read, .write: return true
            // The server closed before the handshake was done (one over its connection cap does)
            // rather than TLS refusing it: a refusal always carries OpenSSL's reason.
            case .handshake: return error.verifyResult == nil && error.openSSLErrors.isEmpty
            default: return false
            }
        case let error as ClientError:
            if case .connectionLost = error { return true }
            return false
        case is ReplicaStoreError: return false
        case is ChannelError, is IOError, is NIOConnectionError: return true
        default: return false
        }
    }

    // MARK: Local data

    /// The records each committed transaction of the local store changes: the app's own edits
    /// and every batch a sync brings, so a screen can refresh when new data arrives.
    public func changes() async throws -> AsyncStream<StoreChanges> {
        try await store.perform { $0.observeChanges() }
    }

    /// Runs `body` with the typed CRM operations over the local store, on the store's queue:
    /// entities and queries, lead conversion and merges, and a rep's work (`openCase`,
    /// `respond(toCase:note:)`, `closeCase`, `log`, `tasks(of:)`, `moveOpportunity`,
    /// `overview(ofAccount:)`), the same operations the `rapport` command line runs.
    ///
    /// ```swift
    /// let overview = try await client.crm(user: "ana@acme.example") { try $0.overview(ofAccount: id) }
    /// ```
    ///
    /// - Parameter user: the acting user's e-mail address: recorded with stage changes, and
    ///   the owner of the cases and activities the rep's operations create.
    public func crm<T: Sendable>(user: String? = nil, _ body: @escaping @Sendable (CRMStore) throws -> T) async throws -> T {
        try await store.perform { try body(CRMStore(store: $0, user: user)) }
    }

    /// Runs `body` with the CRM's rules and reports over the local data, as of `now`: the same
    /// code and the same tenant settings (they sync as records) the server uses, so a device
    /// offline shows the figures the server would. A tenant setting whose value does not parse
    /// does not fail the reports: its default is used and `CRMReports.settingProblems` names
    /// it, for the app to show beside the figures.
    public func reports<T: Sendable>(now: Date = Date(), _ body: @escaping @Sendable (CRMReports) throws -> T) async throws -> T {
        try await store.perform { try body(try CRMReports(store: $0, now: now)) }
    }

    // MARK: Push

    func push(_ session: inout ClientSession, report: inout SyncReport,
              progress: (@Sendable (SyncProgress) -> Void)?) async throws {
        let peer = session.welcome.serverReplicaID
        if try await store.perform({ try $0.adoptUpstream(peer) }) {
            logger.notice("the server has a new identity (restored or replaced): pushing every record again", metadata: ["server": "\(peer)"])
        }
        let batchSize = min(configuration.pushBatchSize, Int(session.welcome.limits.maxBatchRecords == 0 ? 500 : session.welcome.limits.maxBatchRecords))
        let total = try await store.perform { try $0.dirtyCount() }
        var done = 0, bytes = 0, batchID: UInt64 = 0
        // Bounded, so a record that keeps changing while it is pushed cannot hold the sync
        // forever. Every batch has at least one record, but may have fewer than `batchSize`
        // (it does not split a local transaction that fits in one), hence the bound in records.
        for _ in 0..<(total + 2) {
            let (states, known) = try await store.perform { store in
                // Referenced records first, a local transaction's records together: the server
                // checks references as it applies, and applies each batch atomically.
                let states = try store.pushBatch(limit: batchSize)
                return (states, try store.conflicts(on: states.map(\.id)))
            }
            if states.isEmpty { break }
            batchID += 1
            var request = Rapport_V1_PushRequest()
            request.batchID = batchID
            request.records = states.map(Rapport_V1_Record.init)
            request.conflicts = known.map(Rapport_V1_ConflictReport.init)
            var frame = Rapport_V1_Frame()
            frame.push = request
            let answer = try await session.request(frame)
            guard case .pushResult(let result)? = answer.body, result.batchID == batchID, result.results.count == states.count else {
                throw ClientError.protocolViolation("expected PushResult for batch \(batchID)")
            }
            let (rejected, conflicts) = try await store.perform { store in
                var rejected = 0, conflicts: [Conflict] = []
                try store.transaction {
                    for (state, outcome) in zip(states, result.results) {
                        for report in outcome.conflicts { conflicts.append(try report.decoded(record: state.id, type: state.type)) }
                        if outcome.outcome == .rejected {
                            rejected += 1
                            if self.configuration.relaysForDevices && outcome.takeBack {
                                let upstream = outcome.hasServerState ? try? outcome.serverState.decoded() : nil
                                try store.revertRefused(state.id, upstream: upstream, upTo: state.vector, reason: outcome.reason)
                            } else {
                                try store.reject(state.id, upTo: state.vector, reason: outcome.reason)
                            }
                        } else {
                            try store.acknowledge(state.id, upTo: state.vector)
                        }
                    }
                    try store.logConflicts(conflicts)
                    // Records evicted while they had changes to push go now that those are answered.
                    try store.settleEvictions()
                }
                return (rejected, conflicts.count)
            }
            done += states.count
            bytes += request.records.reduce(0) { $0 + $1.vector.count + $1.state.count }
            report.pushed += states.count - rejected
            report.rejected += rejected
            report.conflicts += conflicts
            progress?(SyncProgress(phase: .push, recordsDone: done, recordsTotal: max(total, done), bytesDone: bytes, bytesTotal: bytes))
        }
    }

    // MARK: Pull

    func pull(_ session: inout ClientSession, report: inout SyncReport,
              progress: (@Sendable (SyncProgress) -> Void)?) async throws {
        do {
            try await pullBatches(&session, report: &report, progress: progress)
        } catch {
            // A pull from the start cut short gives its connection settings back here; the next
            // pull from the start takes them again.
            try? await store.perform { try $0.endBulkWrite() }
            throw error
        }
    }

    private func pullBatches(_ session: inout ClientSession, report: inout SyncReport,
                             progress: (@Sendable (SyncProgress) -> Void)?) async throws {
        let peer = session.welcome.serverReplicaID
        let retention = session.welcome.hasRetention ? RetentionPolicy(session.welcome.retention) : nil
        var checkpoint = try await store.perform { store in
            try store.setUpstreamRetention(retention)
            return try store.checkpoint(for: peer)
        }
        // A pull from the start (an initial sync, a resync) writes the records of the types it
        // brings without their field index entries, and builds those once at its end: many
        // times cheaper than keeping the index batch by batch (`deferFieldIndex(of:)`).
        var fromStart = checkpoint == 0
        // A resync after the server purged deletions this device never saw (SPEC 1.8): what
        // this device has to push goes first, then the fresh copy, then what it did not bring goes.
        func beginResync(_ session: inout ClientSession) async throws {
            try await push(&session, report: &report, progress: progress)
            try await store.perform { try $0.beginResync(with: peer) }
        }
        // A store that holds records but has no checkpoint (it pushed what it made and was cut
        // before its first pull, or a branch stopped before it pulled its devices' writes back)
        // would take the pull from 0 as an initial sync and keep a record whose deletion the
        // server has purged since; when the server has purged anything, it resyncs instead.
        if checkpoint == 0, session.welcome.hasRetention, session.welcome.retention.purgedThrough > 0,
           try await store.perform({ try $0.resyncPeer() == nil && $0.lastSequence > 0 }) {
            try await beginResync(&session)
        }
        var done = 0, bytesDone = 0
        func request(after: Int64) -> Rapport_V1_Frame {
            var request = Rapport_V1_PullRequest()
            request.after = UInt64(after)
            request.limit = UInt32(clamping: configuration.pullBatchSize)
            var frame = Rapport_V1_Frame()
            frame.pull = request
            return frame
        }
        try await session.send(request(after: checkpoint))
        // Into an empty store, the index entries of what the pull brings are made here, beside
        // the store's thread, instead of by reading every record back at the end.
        var gather = fromStart ? try await store.perform { try $0.gatherFieldIndex() } : nil
        // The batch the store is applying while this task reads and checks the next one: each
        // batch is awaited before the next is queued, so a batch that fails keeps every later
        // one (and its checkpoint) out of the store.
        var applying: (work: QueuedStoreWork<Int>, batch: PulledBatch)?
        func finishApplying() async throws {
            guard let (work, batch) = applying else { return }
            applying = nil
            report.conflicts += try await work.value
            done += batch.records.count
            bytesDone += batch.records.reduce(0) { $0 + $1.vector.count + $1.state.count }
            report.pulled += batch.records.count
            report.evicted += batch.evictions.count
            progress?(SyncProgress(phase: .pull, recordsDone: done, recordsTotal: done + Int(batch.remainingRecords),
                                   bytesDone: bytesDone, bytesTotal: bytesDone + Int(batch.remainingBytes)))
        }
        do {
            var more = true
            while more {
                let batch: PulledBatch
                do {
                    batch = try await session.pullResponse()
                } catch let error as SyncError where error.code == .resyncRequired {
                    try await finishApplying()
                    // The server does not know our checkpoint (restored from a backup, say): pull
                    // everything again; merging makes the repeats harmless.
                    logger.notice("server asks for a resync", metadata: ["reason": "\(error.message)", "purged_through": "\(error.purgedThrough)"])
                    if error.purgedThrough > 0 {
                        try await beginResync(&session)
                    } else {
                        try await store.perform { try $0.resetCheckpoint(for: peer) }
                    }
                    checkpoint = 0
                    fromStart = true
                    try await session.send(request(after: 0))
                    continue
                }
                guard batch.lastSequence >= UInt64(checkpoint), batch.lastSequence <= UInt64(Int64.max) else {
                    throw ClientError.protocolViolation("PullBatch moves the checkpoint from \(checkpoint) to \(batch.lastSequence)")
                }
                more = batch.remainingRecords > 0 && !batch.records.isEmpty
                // Ask for the next batch before applying this one: the server reads and sends it
                // while this device writes, instead of each side waiting for the other.
                if more { try await session.send(request(after: Int64(batch.lastSequence))) }
                let last = Int64(batch.lastSequence)
                let deferIndex = fromStart
                // Read and checked here, while the store applies the batch before: not decoded,
                // records new to the store are validated on their bytes and kept as they came,
                // which is most of an initial sync (see `apply(encoded:)`).
                let records: CheckedRecords
                let lost: [Conflict]
                do {
                    records = CheckedRecords(batch.records, against: store.schema,
                                             texts: deferIndex ? gather?.textFields ?? [:] : [:])
                    lost = try batch.conflicts.map { try $0.decoded() }
                } catch {
                    throw ClientError.invalidServerData("\(error)")
                }
                if deferIndex { try gather?.add(records) } else { gather = nil }
                let evictions = try batch.evictions.map { eviction in
                    guard let id = eviction.recordID.withUnsafeBytes({ UUID(bytes: $0) }) else {
                        throw ClientError.invalidServerData("an eviction's record id is not 16 bytes")
                    }
                    return (id, eviction.reason)
                }
                try await finishApplying()
                // A sync cancelled (once its progress showed the batch before, say) writes no more.
                try Task.checkCancellation()
                let work = store.enqueue { store in
                    // A cache that holds the batch's pages, fewer log checkpoints (`beginBulkWrite`).
                    if deferIndex { try store.beginBulkWrite() }
                    return try store.transaction {
                        // Records that left this device's scope go first: one that comes back in
                        // the same batch (its visible fields changed) is then taken in afresh.
                        for (id, reason) in evictions { try store.evict([id], reason: reason) }
                        if deferIndex { try store.deferFieldIndex(of: records.records.map(\.type)) }
                        let report: ApplyReport
                        do {
                            report = try store.apply(checked: records, checkpoint: (peer, last))
                            try store.settleEvictions(returned: records.records.map(\.id))
                            try store.noteSeenInResync(records.records.map(\.id))
                        } catch ReplicaStoreError.invalidRecord(let error) {
                            // A malformed or invalid record: the server's data, refused whole.
                            throw ClientError.invalidServerData("\(error)")
                        }
                        return report.conflicts.count + (try store.logConflicts(lost))
                    }
                }
                applying = (work, batch)
                checkpoint = last
            }
            // Sorted while the store applies the last batch, instead of after it.
            gather?.sort()
            try await finishApplying()
        } catch {
            // Nothing of this pull may still be writing when the caller hears how it ended.
            if let (work, _) = applying { _ = try? await work.value }
            throw error
        }
        // Also what an earlier pull from the start left deferred when it was cut short.
        try await store.perform { [gather] store in
            try store.completeFieldIndex(gathered: gather)
            try store.endBulkWrite()
        }
        report.checkpoint = checkpoint
        let (dropped, purge) = try await store.perform { store -> (Int, PurgeReport?) in
            // A resync ends with the pull that brought the whole fresh copy, here or in a later
            // session when this one was cut (the resync's state is in the store).
            let dropped = try store.resyncPeer() == nil ? 0 : try store.finishResync()
            return (dropped, try retention.map { try store.purgeExpired($0) })
        }
        report.dropped = dropped
        if dropped > 0 { logger.notice("resync done: dropped records the server no longer has", metadata: ["dropped": "\(dropped)"]) }
        if let purge, purge.tombstonesPurged + purge.conflictsPurged > 0 {
            logger.info("purged past the tenant's horizons", metadata: ["tombstones": "\(purge.tombstonesPurged)", "conflicts": "\(purge.conflictsPurged)"])
        }
    }
}

extension RetentionPolicy {
    /// The horizons a server announced in Welcome.
    init(_ wire: Rapport_V1_Retention) {
        self.init(tombstoneHorizon: Int64(clamping: wire.tombstoneHorizonMs), conflictHorizon: Int64(clamping: wire.conflictHorizonMs))
    }
}

