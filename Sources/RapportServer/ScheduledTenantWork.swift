import Dispatch
import Foundation
import Logging
import Registry
import ReplicaStore
import Synchronization

/// Work the server runs on the store of every tenant it serves, at an interval, beside the
/// sessions: for rules that change with time alone (the CRM's scheduled pass). The server
/// knows nothing of what the work does; the program that starts it passes it in, as it passes
/// the schema and the access rules.
///
/// Each run gets a store handle of its own on the tenant's file, on a thread of its own (never
/// an event loop, never the queue of the pool's handle), so the tenant's sessions go on while
/// it runs: their write transactions and the work's interleave in SQLite, and what the work
/// commits reaches live devices through the server's announcement of other handles' commits.
public struct ScheduledTenantWork: Sendable {
    /// What the log calls it ("rules pass").
    public var name: String
    /// From the end of one round over the tenants to the start of the next; the first round
    /// starts one interval after the server.
    public var interval: Duration
    /// The work on one tenant's store. It may write through `store` as local writes of the
    /// tenant's replica; the store is closed when it returns.
    public var body: @Sendable (Context, ReplicaStore) throws -> Outcome

    public init(name: String, interval: Duration, body: @escaping @Sendable (Context, ReplicaStore) throws -> Outcome) {
        self.name = name
        self.interval = interval
        self.body = body
    }

    /// What one run is about.
    public struct Context: Sendable {
        public var tenant: String
        /// The moment of the run, read once at its start.
        public var now: Date
        /// The tenant's active users (e-mail, role, team), from the registry.
        public var users: [AccessSnapshot.UserAccess]
        /// Becomes true when the server shuts down: the work should stop at its next safe
        /// point, leaving the rest to the next run.
        public var isCancelled: @Sendable () -> Bool
        /// The tenant's retention horizons from the registry; `nil` without one.
        public var retention: RetentionPolicy?

        public init(tenant: String, now: Date, users: [AccessSnapshot.UserAccess], retention: RetentionPolicy? = nil,
                    isCancelled: @escaping @Sendable () -> Bool) {
            self.tenant = tenant
            self.now = now
            self.users = users
            self.retention = retention
            self.isCancelled = isCancelled
        }
    }

    /// What one run did, for the log.
    public struct Outcome: Sendable {
        public var recordsWritten: Int
        /// More to log (counts per rule), by name.
        public var details: [String: String]

        public init(recordsWritten: Int, details: [String: String] = [:]) {
            self.recordsWritten = recordsWritten
            self.details = details
        }
    }
}

extension SyncServer {
    /// Runs `work` over every served tenant, one after the other, a round every interval, until
    /// cancelled. A tenant whose run fails is logged with the error; the others still run.
    func runScheduled(_ work: ScheduledTenantWork) async {
        // One serial queue: a round is one tenant at a time, so the work never takes more than
        // one thread and one extra store handle whatever the number of tenants.
        let queue = DispatchQueue(label: "rapport.scheduled.\(work.name)")
        while !Task.isCancelled {
            try? await Task.sleep(for: work.interval)
            for tenant in authenticator.servedTenants {
                guard !Task.isCancelled else { return }
                // Suspended or deleted since the list was taken: its file may be about to be replaced.
                guard authenticator.isServing(tenant: tenant) else { continue }
                await run(work, on: tenant, queue: queue)
            }
        }
    }

    private func run(_ work: ScheduledTenantWork, on tenant: String, queue: DispatchQueue) async {
        let stopping = StopFlag()
        let context = ScheduledTenantWork.Context(tenant: tenant, now: Date(), users: authenticator.users(of: tenant),
                                                  retention: authenticator.retention(of: tenant), isCancelled: { stopping.isSet })
        let tenants = self.tenants
        let clock = ContinuousClock()
        let start = clock.now
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                queue.async {
                    continuation.resume(returning: Result { () throws -> ScheduledTenantWork.Outcome in
                        let store = try tenants.openSeparateHandle(tenant)
                        defer { store.close() }
                        return try work.body(context, store)
                    })
                }
            }
        } onCancel: {
            stopping.set()
        }
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        switch result {
        case .success(let outcome):
            var metadata: Logger.Metadata = [
                "tenant": "\(tenant)", "written": "\(outcome.recordsWritten)", "seconds": "\(String(format: "%.3f", seconds))"]
            for (key, value) in outcome.details { metadata[key] = "\(value)" }
            // A pass that changed nothing is the usual case on a server with many tenants: worth
            // a line only when debugging.
            logger.log(level: outcome.recordsWritten > 0 ? .info : .debug, "\(work.name) done", metadata: metadata)
        case .failure(let error):
            logger.error("\(work.name) failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
        }
    }
}

/// Set once, from any thread, when a run should stop.
private final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
