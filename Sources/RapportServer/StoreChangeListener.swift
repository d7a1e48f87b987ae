import Foundation
import Logging
import Postgres
import ReplicaStore
import Synchronization

/// Hears the commits every node makes to a shared PostgreSQL store database (each write
/// transaction notifies `ReplicaStore.changesChannel` with its tenant and sequence) and
/// announces them to this node's live sessions of the tenant: a device connected here learns of
/// an edit pushed through another node within milliseconds, instead of at the next poll of
/// open stores (`SyncServer.watchAccess`), which still catches whatever a lost connection missed.
///
/// Waits on its own thread, since libpq's wait blocks: never on an event loop, and it holds no
/// thread of a shared pool for its whole life.
final class StoreChangeListener: Sendable {
    private let stopped = Mutex(false)
    private let database: String
    private let tenants: TenantPool
    private let logger: Logger

    init(database: String, tenants: TenantPool, logger: Logger) {
        self.database = database
        self.tenants = tenants
        self.logger = logger
    }

    /// Starts listening; returns at once.
    func start() {
        let thread = Thread { [self] in listen() }
        thread.name = "rapport-store-changes"
        thread.start()
    }

    /// Stops listening within a wait (`wait`); the connection closes with the thread.
    func stop() {
        stopped.withLock { $0 = true }
    }

    /// How long one wait for notifications lasts: how soon `stop` takes effect.
    private static let wait = Duration.milliseconds(200)

    private func listen() {
        var connection: PostgresConnection?
        var failures = 0
        while !stopped.withLock({ $0 }) {
            do {
                if connection == nil {
                    let made = try PostgresConnection(url: database)
                    try made.listen(ReplicaStore.changesChannel)
                    connection = made
                    if failures > 0 { logger.info("listening for other nodes' commits again") }
                    failures = 0
                }
                for notification in try connection!.notifications(waitingUpTo: Self.wait) {
                    announce(notification.payload)
                }
            } catch {
                connection?.close()
                connection = nil
                failures += 1
                // Once, then once a minute: the poll of open stores announces meanwhile.
                if failures == 1 || failures % 60 == 0 {
                    logger.warning("not hearing other nodes' commits; retrying every second",
                                   metadata: ["database": "\(PostgresConnection.redactedURL(database))", "error": "\(error)"])
                }
                Thread.sleep(forTimeInterval: 1)
            }
        }
        connection?.close()
    }

    /// `"<tenant> <sequence>"`, for a tenant whose store is open here (a tenant with live
    /// sessions on this node always is).
    private func announce(_ payload: String) {
        let parts = payload.split(separator: " ")
        guard parts.count == 2, let sequence = Int64(parts[1]), let store = tenants.openStore(of: String(parts[0])) else { return }
        store.announceCommitted(sequence)
    }
}
