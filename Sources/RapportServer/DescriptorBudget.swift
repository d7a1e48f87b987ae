#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a server's limit on open files is shared between connections and tenant stores, so
/// that `--max-connections` is a promise the process can keep (SPEC.md 2.5).
///
/// Every connection is one descriptor; every open tenant store three (the database, its `-wal`
/// and `-shm`); the registry, the listening socket, the event loops and the logs need a few
/// more. A server that ran out of descriptors would fail where it hurts most: accepting stops
/// for a while, and a session whose tenant store is not open yet cannot open it. So the
/// connection cap is derived from the limit rather than the other way round.
public struct DescriptorBudget: Sendable, Equatable, CustomStringConvertible {
    /// Descriptors an open tenant store holds.
    public static let perStore = 3
    /// Registry, listening socket, event loops, thread pool, logs, certificate files.
    public static let reserved = 64
    /// The default connection cap where the limit allows it: 10,000 idle live sessions (field
    /// devices online all day) with room to spare, at about 1 GiB of server memory
    /// (`rapport-bench idle` measures the memory per session).
    public static let defaultMaxConnections = 16_384

    /// The soft limit on open files in force.
    public let limit: Int
    /// The hard limit, up to which the process may raise its soft limit itself.
    public let hardLimit: Int
    /// Stores kept open while unused (`--max-open-tenants`), whose descriptors are set aside.
    public let maxOpenTenants: Int

    public init(limit: Int, hardLimit: Int, maxOpenTenants: Int) {
        self.limit = limit
        self.hardLimit = hardLimit
        self.maxOpenTenants = maxOpenTenants
    }

    /// Raises this process's soft limit to its hard limit (see
    /// `SyncServer.raiseFileDescriptorLimit`) and returns the budget it leaves.
    public static func raisingLimit(maxOpenTenants: Int) -> DescriptorBudget {
        let limits = raiseSoftLimit()
        return DescriptorBudget(limit: limits.soft, hardLimit: limits.hard, maxOpenTenants: maxOpenTenants)
    }

    /// Descriptors set aside for stores and the server's own files.
    public var forStores: Int { Self.perStore * maxOpenTenants + Self.reserved }

    /// Descriptors left for connections.
    public var forConnections: Int { max(0, limit - forStores) }

    /// The connection cap when none is given: the default, or what the limit leaves.
    public var defaultMaxConnections: Int { min(Self.defaultMaxConnections, forConnections) }

    /// Why `maxConnections` cannot be served within the limit, with what to do; `nil` when it
    /// fits.
    public func problem(maxConnections: Int) -> String? {
        guard maxConnections > forConnections else { return nil }
        let needed = maxConnections + forStores
        return "--max-connections \(maxConnections) needs \(needed) file descriptors (one per connection, "
            + "\(Self.perStore) per store for --max-open-tenants \(maxOpenTenants), \(Self.reserved) for the server), "
            + "but the open-file limit is \(limit) (hard limit \(hardLimit)): raise the hard limit "
            + "(ulimit -Hn, LimitNOFILE= in a systemd unit) or lower --max-connections to \(forConnections) "
            + "or --max-open-tenants"
    }

    public var description: String {
        "open-file limit \(limit) (hard \(hardLimit)): \(forConnections) for connections, \(forStores) for "
            + "\(maxOpenTenants) tenant stores and the server"
    }

    /// Raises the soft limit on open files to the hard limit where allowed; returns both as in
    /// force now (0 when they cannot be read).
    static func raiseSoftLimit() -> (soft: Int, hard: Int) {
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return (0, 0) }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return (Int(clamping: limit.rlim_cur), Int(clamping: limit.rlim_max))
    }
}
