import Foundation
import Registry
import ReplicaStore
import SQLite
import SyncProtocol
import Synchronization

extension ScheduledTenantWork {
    /// Keeps stores from growing for ever (SPEC.md 1.8): on every served tenant, purges the
    /// tombstones and closed conflicts past the tenant's horizons, then gives free pages back and
    /// empties the write-ahead log; and once a round, the same compaction of the registry (whose
    /// audit log is kept whole). Everything runs in short transactions on a handle of its own
    /// (see `ScheduledTenantWork`), so sessions push and pull meanwhile.
    ///
    /// A branch office purges by the horizons its centre announced (`upstreamRetention`), not by
    /// its own registry's: its devices must be told to resync exactly when the centre's are.
    ///
    /// The responses the integration API keeps for `Idempotency-Key` retries go once older than
    /// `idempotencyHorizon` (milliseconds, 24 hours by default): a retry comes within minutes,
    /// and an integration that replays a day later means a new write.
    public static func housekeeping(every interval: Duration, registryPath: String?,
                                    idempotencyHorizon: Int64 = RetentionPolicy.day) -> ScheduledTenantWork {
        let registryRuns = OncePerInterval(interval)
        return ScheduledTenantWork(name: "housekeeping", interval: interval) { context, store in
            var details: [String: String] = [:]
            if let policy = try store.upstreamRetention ?? context.retention {
                let purge = try store.purgeExpired(policy, isCancelled: context.isCancelled)
                details["tombstones_purged"] = "\(purge.tombstonesPurged)"
                details["conflicts_purged"] = "\(purge.conflictsPurged)"
                details["purged_through"] = "\(purge.purgedThrough)"
            }
            let idempotency = try store.purgeLocalSettings(prefix: SyncServer.idempotencyPrefix, olderThan: idempotencyHorizon)
            if idempotency > 0 { details["idempotency_keys_purged"] = "\(idempotency)" }
            if let compaction = try store.compact(isCancelled: context.isCancelled) {
                details["pages_freed"] = "\(compaction.pagesFreed)"
                details["bytes"] = "\(compaction.after.fileBytes)"
            }
            if let registryPath, registryRuns.due() {
                let registry = try Registry(path: registryPath)
                defer { registry.close() }
                if let freed = try registry.compact()?.pagesFreed { details["registry_pages_freed"] = "\(freed)" }
            }
            let purged = Int(details["tombstones_purged"] ?? "0")! + Int(details["conflicts_purged"] ?? "0")!
            return Outcome(recordsWritten: purged, details: details)
        }
    }
}

/// Says yes at most once per interval, from whatever thread asks: for the part of a round that
/// is done once, not once per tenant.
private final class OncePerInterval: Sendable {
    private let interval: Duration
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    init(_ interval: Duration) { self.interval = interval }

    func due() -> Bool {
        let now = ContinuousClock.now
        return last.withLock { last in
            if let previous = last, now - previous < interval { return false }
            last = now
            return true
        }
    }
}

extension SyncServer {
    /// The retention a tenant's devices learn in Welcome: its horizons (the centre's, at a branch
    /// office) and how far this store purged; `nil` when this server does not purge.
    func wireRetention(of store: ReplicaStore, tenant: String) throws -> Rapport_V1_Retention? {
        guard let policy = try store.upstreamRetention ?? authenticator.retention(of: tenant) else { return nil }
        var retention = Rapport_V1_Retention()
        retention.tombstoneHorizonMs = UInt64(max(0, policy.tombstoneHorizon))
        retention.conflictHorizonMs = UInt64(max(0, policy.conflictHorizon))
        retention.purgedThrough = UInt64(max(0, try store.purgedThrough))
        return retention
    }

    /// Refuses a pull from below what the store purged: the device may hold a record whose
    /// tombstone is gone, and no change would ever tell it. Checked after the batch was read, so
    /// a purge that commits while the batch is read is seen too.
    static func checkNotPurged(after: Int64, in store: ReplicaStore) throws {
        guard after > 0 else { return }
        let purged = try store.purgedThrough
        if after < purged { throw SyncError.purgedPastCheckpoint(after, purgedThrough: purged) }
    }
}
