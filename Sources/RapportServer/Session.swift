import Access
import Foundation
import Logging
import NIOCore
import NIOPosix
import Registry
import ReplicaStore
import SQLite
import SyncModel
import SyncProtocol
import TLS

extension SyncServer {
    /// Runs one session from Hello to close. Whatever the peer does, the only effects are on this
    /// connection and, through validated batches, on its own tenant's store.
    ///
    /// Until its Hello is accepted the connection counts as pre-login (`ticket`) and reads only
    /// small frames (`frameLimit`); both change before `Welcome` goes out.
    func serve(_ connection: NIOAsyncChannel<InboundFrame, any OutboundFrame>, frameLimit: FrameSizeLimit,
               ticket: ConnectionGate.Ticket) async {
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(connection.channel.remoteAddress?.description ?? "unknown")"
        let entry = sessions.add(connection.channel)
        defer { sessions.remove(entry) }
        var tenant: TenantStore?
        defer {
            if let tenant {
                tenant.unsubscribe(connection.channel)
                tenants.release(tenant.tenant)
            }
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
              do {
                var machine = ServerSessionState(schemaVersion: configuration.schemaVersion, limits: configuration.limits)
                var identity: SessionIdentity?
                var backlog: PullBacklog?
                // The end of the last batch sent: the device's checkpoint once it applies it.
                var sentCheckpoint: Int64?
                for try await frame in inbound {
                    entry.busy.store(true, ordering: .releasing)
                    defer { entry.busy.store(false, ordering: .releasing) }
                    switch machine.receive(frame) {
                    case .authenticate(let hello):
                        do {
                            let (store, id) = try await authenticate(hello)
                            tenant = store
                            identity = id
                            entry.identity.withLock { $0 = id }
                            logger[metadataKey: "tenant"] = "\(store.tenant)"
                            logger[metadataKey: "device"] = "\(id.device)"
                            machine.authenticated()
                            frameLimit.establish()
                            gate.loggedIn(ticket)
                            metrics.sessionsStarted.increment()
                            let tenantName = store.tenant
                            let (sequence, retention) = try await store.store.perform { (try $0.lastSequence, try self.wireRetention(of: $0, tenant: tenantName)) }
                            var welcome = Rapport_V1_Welcome()
                            welcome.protocolVersion = SyncProtocolVersion.current
                            welcome.schemaVersion = configuration.schemaVersion
                            welcome.serverReplicaID = store.store.replicaID
                            welcome.serverSequence = UInt64(sequence)
                            welcome.limits = configuration.limits.wire
                            welcome.deviceNumber = id.deviceNumber ?? 0
                            if let retention { welcome.retention = retention }
                            if let access = configuration.access, let subject = authenticator.subject(of: id, defaults: access.defaultRoles) {
                                welcome.access = subject.wire
                            }
                            var reply = Rapport_V1_Frame()
                            reply.welcome = welcome
                            try await outbound.write(reply)
                            if hello.subscribe { store.subscribe(connection.channel) }
                            logger.info("session started", metadata: ["subscribed": "\(hello.subscribe)", "client": "\(hello.client.prefix(64))"])
                        } catch let error as SyncError {
                            _ = machine.refused(error)
                            metrics.refused(error.code)
                            logger.notice("session refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                            try await outbound.write(error.frame)
                            return
                        }
                    case .enroll(let request):
                        logger[metadataKey: "tenant"] = "\(request.tenant.prefix(64))"
                        do {
                            let authenticator = self.authenticator
                            var reply = Rapport_V1_Frame()
                            if let link = branch.withLock({ $0 }), link.tenant.tenant == request.tenant {
                                // Codes are made at the centre: a branch passes the enrollment on.
                                reply.enrolled = try await link.enroll(request)
                            } else {
                                reply.enrolled = try await NIOThreadPool.singleton.runIfActive {
                                    try authenticator.enroll(tenant: request.tenant, code: request.code, deviceName: request.deviceName)
                                }
                            }
                            metrics.enrollments.increment()
                            logger.notice("device enrolled", metadata: ["device": "\(reply.enrolled.deviceID)", "user": "\(reply.enrolled.user)"])
                            try await outbound.write(reply)
                        } catch let error as SyncError {
                            metrics.refused(error.code)
                            logger.notice("enrollment refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                            try await outbound.write(error.frame)
                        }
                        return
                    case .push(let request):
                        guard let tenant, let identity else { return }
                        let started = ContinuousClock.now
                        let (result, advanced) = try await push(request, into: tenant, from: identity, logger: logger)
                        metrics.pushed(result, in: ContinuousClock.now - started)
                        var reply = Rapport_V1_Frame()
                        reply.pushResult = result
                        try await outbound.write(reply)
                        if advanced {
                            tenant.announce(Int64(result.serverSequence), except: connection.channel)
                            if let link = branch.withLock({ $0 }), link.tenant.tenant == tenant.tenant { link.link.pushNow() }
                        }
                    case .pull(let request):
                        guard let tenant, let identity else { return }
                        let device = identity.device
                        authenticator.recordActivity(of: identity, checkpoint: request.after <= UInt64(Int64.max) ? Int64(request.after) : nil)
                        do {
                            let started = ContinuousClock.now
                            let pulled = try await pull(request, from: tenant, for: device, policy: policy(of: identity),
                                                        relays: identity.branch != nil, backlog: backlog)
                            backlog = pulled.backlog
                            metrics.pullDuration.record(ContinuousClock.now - started)
                            metrics.pulls.increment()
                            metrics.pulledRecords.increment(by: Int64(pulled.records))
                            try await outbound.write(pulled.frame)
                            sentCheckpoint = Int64(pulled.lastSequence)
                        } catch let error as SyncError {
                            try await outbound.write(error.frame)
                        }
                    case .directory(let request):
                        guard let identity else { return }
                        do {
                            var reply = Rapport_V1_Frame()
                            reply.directoryUpdate = try await directory(request, for: identity, logger: logger)
                            try await outbound.write(reply)
                        } catch let error as SyncError {
                            logger.notice("directory request refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                            try await outbound.write(error.frame)
                            return
                        }
                    case .reply(let reply):
                        try await outbound.write(reply)
                    case .ignore:
                        break
                    case .fail(let error):
                        metrics.protocolViolations.increment()
                        logger.notice("closing session after a protocol violation", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                        try await outbound.write(error.frame)
                        return
                    case .close:
                        // A client says Goodbye only after applying every batch it was sent, so
                        // the last batch's end is now its checkpoint; no Pull will report it.
                        if let identity, let sentCheckpoint, case .frame(let last) = frame, case .goodbye? = last.body {
                            authenticator.recordActivity(of: identity, checkpoint: sentCheckpoint)
                        }
                        logger.debug("session closed by the client")
                        return
                    }
                    if sessions.isShuttingDown {
                        try await outbound.write(SyncError(.shuttingDown, "the server is shutting down").frame)
                        return
                    }
                }
              } catch let error as any SQLDatabaseError {
                  // The client is told to come back later; the store rolled the batch back.
                  logger.error(error.isStorageFull ? "storage full; session closed" : "store failure; session closed",
                               metadata: ["error": "\(error)"])
                  let refusal = error.isStorageFull ? SyncError.storageFull()
                      : SyncError(.internal, "the server could not store the batch; retry later")
                  try? await outbound.write(refusal.frame)
              } catch let error as ReplicaStoreError {
                  logger.error("store failure; session closed", metadata: ["error": "\(error)"])
                  // A moved tenant's writes go to its new server; the device keeps them until it reaches it.
                  let reason = if case .moved = error { "the tenant's store moved to another server; this one takes no more of its writes" }
                      else { "the server could not store the batch" }
                  try? await outbound.write(SyncError(.internal, reason + "; retry later").frame)
              }
            }
        } catch let error as TLSError {
            if let reason = error.handshakeFailureReason { metrics.handshakeFailed(reason) }
            logger.notice("connection failed in TLS", metadata: ["error": "\(error)"])
        } catch {
            logger.info("session ended", metadata: ["error": "\(error)"])
        }
    }

    /// The session user's rights as of now, so that a role or team changed a moment ago applies
    /// to the next push or pull; `nil` when the server applies no rights.
    ///
    /// For a branch, what it may read: every record for a branch of the whole tenant (`nil`),
    /// otherwise the union of what its users read (`AccessSubject.readingUnion`).
    func policy(of identity: SessionIdentity) -> AccessPolicy? {
        guard let access = configuration.access else { return nil }
        if let branch = identity.branch {
            guard let users = branch.users else { return nil }
            let subjects = users.sorted().compactMap {
                authenticator.subject(of: SessionIdentity(tenant: identity.tenant, device: identity.device, user: $0), defaults: access.defaultRoles)
            }
            return AccessPolicy(model: access.ownership, subject: .readingUnion(of: subjects, name: "branch \(branch.name)"))
        }
        return authenticator.subject(of: identity, defaults: access.defaultRoles).map { AccessPolicy(model: access.ownership, subject: $0) }
    }

    /// Checks a Hello's identity and credential and leases the tenant's store (released when
    /// the session ends).
    func authenticate(_ hello: Rapport_V1_Hello) async throws -> (TenantStore, SessionIdentity) {
        if let problem = TenantID.problem(with: hello.tenant) {
            throw SyncError(.unknownTenant, "\(TenantID.quoted(hello.tenant)) is not a valid tenant id: \(problem)")
        }
        guard let device = try? ReplicaID(hello.deviceID) else {
            throw SyncError(.authenticationFailed, "'\(hello.deviceID.prefix(64))' is not a valid device id")
        }
        let (tenants, authenticator) = (self.tenants, self.authenticator)
        let secret = Array(hello.secret)
        return try await NIOThreadPool.singleton.runIfActive {
            let identity = try authenticator.authenticate(tenant: hello.tenant, device: device, secret: secret)
            authenticator.recordActivity(of: identity, checkpoint: nil)
            do {
                return (try tenants.lease(hello.tenant), identity)
            } catch {
                throw SyncError(.internal, "tenant '\(hello.tenant)' cannot be opened now: \(error)")
            }
        }
    }

    /// Validates each pushed record, merges the valid ones in one transaction, and answers for
    /// every record in order. An invalid record is answered `REJECTED` with its reason and never
    /// stored; it does not keep the valid ones out.
    ///
    /// With a `policy`, each record is also checked against the writer's rights as the change it
    /// makes to the stored record (create, fields, delete, owner), with records earlier in the
    /// batch visible to the check; a refusal is answered `PERMISSION_DENIED` with the rule, as
    /// is a record carrying a write under another replica's id that the server never had.
    ///
    /// A branch (SPEC.md 6.2) may bring the writes of the devices it serves: each record is
    /// checked against the rights of the users whose devices made its new writes, and a refused
    /// record's answer carries this server's state of it, for the branch to put its copy back.
    func push(_ request: Rapport_V1_PushRequest, into tenant: TenantStore, from identity: SessionIdentity,
              logger: Logger) async throws -> (Rapport_V1_PushResult, Bool) {
        let records = request.records
        let reported = request.conflicts
        let device = identity.device
        let relays = identity.branch != nil
        let policy = relays ? nil : policy(of: identity)
        let authenticator = self.authenticator
        let access = configuration.access
        /// The rights a record's new writes are checked against: the session user's, or for a
        /// branch those of each device's user whose writes the record brings. What a branch
        /// sends when it puts back a record this server refused brings nothing of the device
        /// to check (checking it would refuse the put-back itself, again at every push): a
        /// device's dot whose write the state no longer holds (overwritten by the put-back),
        /// and the writes in a tombstone the branch made of a record this server has no live
        /// copy of (a creation it refused: they are dead there, as deleted records keep their
        /// fields, and come back only with a restore, whose writer's rights are checked).
        ///
        /// A relayed write of a user who is no longer active here is refused: the branch let it
        /// in with the directory it had, and the centre decides.
        @Sendable func policies(for state: RecordState, stored: RecordState?) throws -> [AccessPolicy] {
            guard relays else { return policy.map { [$0] } ?? [] }
            guard let access else { return [] }
            let deadHere = state.isDeleted && (stored?.isDeleted ?? true)
            return try state.vector.sortedEntries.compactMap { replica, counter -> AccessPolicy? in
                let known = stored?.vector[replica] ?? 0
                guard counter > known, state.holdsWrite(of: replica, after: known),
                      !(deadHere && state.liveness.dot.replica != replica),
                      let user = authenticator.user(ofDevice: replica, tenant: identity.tenant) else { return nil }
                guard let subject = authenticator.subject(of: SessionIdentity(tenant: identity.tenant, device: replica, user: user),
                                                          defaults: access.defaultRoles) else {
                    throw AccessDenied(record: state.id, type: state.type, reason: "\(user) is no longer an active user of this tenant")
                }
                return AccessPolicy(model: access.ownership, subject: subject)
            }
        }
        let rule = relays ? "branch '\(identity.branch?.name ?? "")' may relay only the writes of the devices it serves"
                          : "a device may only write under its own id \(device)"
        let (results, sequence, advanced) = try await tenant.store.perform { store in
            // Writes under this store's ids from before a restore are its own, come back.
            let former = try store.formerReplicaIDs
            // A record this store no longer holds may be one whose tombstone it purged (SPEC 1.8):
            // the writes of others it carries can no longer be checked, and refusing them would
            // lose the pusher's own work on it; its rights are checked as for a creation.
            let purged = try store.purgedThrough > 0
            let mayCarry: (ReplicaID) -> Bool = { replica in
                replica == device || former.contains(replica) || (relays && authenticator.mayRelay(replica, for: identity))
            }
            var results = [Rapport_V1_RecordResult](repeating: Rapport_V1_RecordResult(), count: records.count)
            // Refused for carrying writes the peer may not relay, not for what its devices wrote.
            var forged = Set<Int>()
            var accepted: [(index: Int, state: RecordState)] = []
            var seen = Set<UUID>()
            // What each record of the batch will be once merged, for the rights of later ones
            // (a contact pushed with its new account).
            var proposed: [UUID: RecordState] = [:]
            for (index, record) in records.enumerated() {
                do {
                    let state = try record.decoded()
                    guard seen.insert(state.id).inserted else {
                        throw ModelError.malformedEncoding("record \(state.id) appears twice in one push")
                    }
                    try store.validate(state)
                    // Only a record carrying other replicas' writes, or checked for rights, needs the stored state.
                    let foreign = state.vector.sortedEntries.contains { $0.replica != device }
                    let stored = foreign || policy != nil || relays ? try store.record(state.id) : nil
                    do {
                        if stored != nil || !purged { try state.checkAuthorship(against: stored, as: rule, mayCarry: mayCarry) }
                    } catch {
                        // Not a malformed record but a write this device may not make.
                        forged.insert(index)
                        results[index].outcome = .rejected
                        results[index].code = .permissionDenied
                        results[index].reason = "\(error)"
                        continue
                    }
                    let writers = try policies(for: state, stored: stored)
                    if !writers.isEmpty {
                        let after = try stored.map { try Merge.merge(local: $0, remote: state).state } ?? state
                        for writer in writers {
                            try writer.checkWrite(before: stored, after: after) { id in try proposed[id] ?? store.record(id) }
                        }
                        proposed[state.id] = after
                    }
                    accepted.append((index, state))
                } catch let denied as AccessDenied {
                    results[index].outcome = .rejected
                    results[index].code = .permissionDenied
                    results[index].reason = denied.description
                } catch {
                    results[index].outcome = .rejected
                    results[index].reason = "\(error)"
                }
            }
            let before = try store.lastSequence
            // Conflicts the device found are kept here too, so the device whose write lost
            // hears of them when it pulls. A malformed report is dropped, never fatal.
            let deviceConflicts = reported.compactMap { try? $0.decoded() }
            var report: ApplyReport
            do {
                report = try store.transaction {
                    let report = try store.apply(accepted.map(\.state), from: .downstream)
                    try store.logConflicts(deviceConflicts)
                    return report
                }
            } catch ReplicaStoreError.invalidRecord {
                // Validation passed but the merge or the tenant's rules refused a record (a
                // reused dot, a reference to a record that does not exist): apply them one by
                // one so only the offending ones are refused, never the batch. A record that
                // references one later in the batch is tried again once that one is in.
                report = ApplyReport(outcomes: [], conflicts: [], sequence: try store.lastSequence)
                var kept: [(index: Int, state: RecordState)] = []
                var pending = accepted
                var failures: [Int: ReplicaStoreError] = [:]
                var progressed = true
                while progressed && !pending.isEmpty {
                    progressed = false
                    var refused: [(index: Int, state: RecordState)] = []
                    for item in pending {
                        do {
                            let single = try store.apply([item.state], from: .downstream)
                            report.outcomes += single.outcomes
                            report.conflicts += single.conflicts
                            kept.append(item)
                            progressed = true
                        } catch let error as ReplicaStoreError {
                            refused.append(item)
                            failures[item.index] = error
                        }
                    }
                    pending = refused
                }
                for item in pending {
                    results[item.index].outcome = .rejected
                    results[item.index].reason = failures[item.index].map { "\($0)" } ?? "refused"
                }
                accepted = kept
                try store.logConflicts(deviceConflicts)
            }
            var conflictsByRecord: [UUID: [Conflict]] = [:]
            for conflict in report.conflicts { conflictsByRecord[conflict.recordID, default: []].append(conflict) }
            for (position, item) in accepted.enumerated() {
                switch report.outcomes[position] {
                case .applied: results[item.index].outcome = .applied
                case .merged: results[item.index].outcome = .merged
                case .unchanged: results[item.index].outcome = .unchanged
                }
                results[item.index].conflicts = (conflictsByRecord[item.state.id] ?? []).map(Rapport_V1_ConflictReport.init)
            }
            if relays {
                for index in results.indices where results[index].outcome == .rejected && !forged.contains(index) {
                    results[index].takeBack = true
                    guard let id = records[index].id.withUnsafeBytes({ UUID(bytes: $0) }),
                          let current = try store.record(id) else { continue }
                    results[index].serverState = Rapport_V1_Record(current)
                }
            }
            let sequence = try store.lastSequence
            return (results, sequence, sequence > before)
        }
        let rejected = results.filter { $0.outcome == .rejected }.count
        if rejected > 0 { logger.notice("rejected pushed records", metadata: ["count": "\(rejected)", "first": "\(results.first { $0.outcome == .rejected }?.reason ?? "")"]) }
        var result = Rapport_V1_PushResult()
        result.batchID = request.batchID
        result.results = results
        result.serverSequence = UInt64(sequence)
        return (result, advanced)
    }

    /// Answers a branch's DirectoryRequest: records the replica id its store has now (a new
    /// one means it was restored or rebuilt, which is logged), then sends the directory unless
    /// the branch's digest shows it has it already.
    func directory(_ request: Rapport_V1_DirectoryRequest, for identity: SessionIdentity,
                   logger: Logger) async throws -> Rapport_V1_DirectoryUpdate {
        guard identity.branch != nil else { throw SyncError(.unexpectedMessage, "only a branch asks for the directory") }
        let authenticator = self.authenticator
        if request.checkpoint > 0, request.checkpoint <= UInt64(Int64.max) {
            authenticator.recordActivity(of: identity, checkpoint: Int64(request.checkpoint))
        }
        return try await NIOThreadPool.singleton.runIfActive {
            if !request.replicaID.isEmpty {
                guard let replica = try? ReplicaID(request.replicaID) else {
                    throw SyncError(.malformedFrame, "'\(request.replicaID.prefix(64))' is not a replica id")
                }
                do {
                    if try authenticator.registerReplica(replica, of: identity) {
                        logger.notice("branch has a new replica id: it was restored from a backup or rebuilt", metadata: ["replica": "\(replica)"])
                    }
                } catch let error as SyncError {
                    throw error
                } catch {
                    throw SyncError(.permissionDenied, "the branch's replica id cannot be taken: \(error)")
                }
            }
            let data = try authenticator.directory(for: identity)
            var update = Rapport_V1_DirectoryUpdate()
            update.digest = BranchDirectory.digest(of: data)
            if update.digest == request.digest {
                update.unchanged = true
            } else {
                update.directory = data
            }
            return update
        }
    }

    /// What is left to pull after a checkpoint, as of a tenant sequence: lets the next batch of
    /// a session derive its "remaining" figures instead of recounting every row after it.
    struct PullBacklog: Sendable {
        var after: Int64
        var sequence: Int64
        var records: Int
        var bytes: Int
    }

    /// A pull batch's frame with what the session reads of it, which a frame `PullBatchWriter`
    /// wrote holds only as bytes.
    struct Pulled {
        var frame: any OutboundFrame
        var records: Int
        var lastSequence: UInt64
        var backlog: PullBacklog?
    }

    /// The next batch of changes after the client's checkpoint.
    ///
    /// A branch (`relays`) gets every conflict logged on the records sent, whoever's write lost:
    /// the devices behind it learn of theirs from it (SPEC.md 6.2).
    func pull(_ request: Rapport_V1_PullRequest, from tenant: TenantStore, for device: ReplicaID,
              policy: AccessPolicy?, relays: Bool = false, backlog: PullBacklog?) async throws -> Pulled {
        // 0 (proto3's default) leaves the batch size to the server.
        let maximum = UInt32(clamping: configuration.limits.maxBatchRecords)
        let limit = Int(request.limit == 0 ? maximum : min(request.limit, maximum))
        guard request.after <= UInt64(Int64.max) else { throw SyncError(.resyncRequired, "checkpoint out of range") }
        let after = Int64(request.after)
        if let policy, let batch = try await tenant.store.perform({ store in
            try self.scopedPull(after: after, limit: limit, store: store, device: device, policy: policy, relays: relays)
                .map { batch in try Self.checkNotPurged(after: after, in: store); return batch }
        }) {
            var frame = Rapport_V1_Frame()
            frame.pullBatch = batch
            return Pulled(frame: frame, records: batch.records.count, lastSequence: batch.lastSequence, backlog: nil)
        }
        return try await tenant.store.perform { store in
            let sequence = try store.lastSequence
            guard after <= sequence else {
                throw SyncError(.resyncRequired, "checkpoint \(after) is ahead of this server's sequence \(sequence): pull from 0")
            }
            // The rows' bytes go out as they are: the device validates every record anyway.
            // Room for a batch of records the size of the last one's, as far as the backlog tells.
            let average = backlog.map { $0.records > 0 ? $0.bytes / $0.records : 0 } ?? 0
            var writer = PullBatchWriter(capacity: min(limit * (average + 32), 8 << 20))
            try store.forEachEncodedChange(after: after, limit: limit) { sequence, id, type, vector, state in
                writer.append(sequence: sequence, id: id, type: type, vector: vector, state: state)
            }
            try Self.checkNotPurged(after: after, in: store)
            // At the end, the checkpoint is the store's sequence, which a purged or dropped record
            // may have held (SPEC 1.8): everything up to it was read, and a checkpoint below
            // what the store purged would be answered with a resync at every pull.
            let last = writer.count < limit ? max(writer.lastSequence ?? after, sequence) : writer.lastSequence ?? after
            let remaining: (records: Int, bytes: Int)
            if let backlog, backlog.after == after, backlog.sequence == sequence {
                // Nothing changed since the previous batch was counted: subtract this one.
                remaining = (backlog.records - writer.count, backlog.bytes - writer.recordBytes)
            } else {
                remaining = try store.pendingChanges(after: last)
            }
            let conflicts = try (relays ? store.conflicts(on: writer.ids) : store.conflicts(lostBy: device.rawValue, on: writer.ids))
                .map(Rapport_V1_ConflictReport.init)
            let frame = try writer.frame(lastSequence: UInt64(last), remainingRecords: UInt64(remaining.records),
                                         remainingBytes: UInt64(remaining.bytes), conflicts: conflicts)
            return Pulled(frame: frame, records: frame.records, lastSequence: UInt64(last),
                          backlog: PullBacklog(after: last, sequence: sequence, records: remaining.records, bytes: remaining.bytes))
        }
    }
}
