import SyncProtocol
import TLS

/// Where a device syncs to and how it proves who it is.
public struct ClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The name the server's certificate must carry; the host by default.
    public var serverName: String
    /// Which CAs to trust for the server's certificate.
    public var trustRoots: TrustRoots
    /// Optional SHA-256 of the server key (hex), checked on top of the certificate.
    public var serverKeyPin: String?
    public var tenant: String
    public var secret: [UInt8]
    /// The CRM schema version this client's app was built with.
    public var schemaVersion: UInt32
    /// Records per push batch.
    public var pushBatchSize = 500
    /// Records asked for per pull batch (the server may send fewer).
    public var pullBatchSize = 2_000
    public var retry = RetryPolicy()
    /// How long connecting, TLS and Hello may take.
    public var connectTimeout: Duration = .seconds(10)
    /// How often a live session pings an otherwise quiet server, below its idle timeout.
    public var keepAliveInterval: Duration = .seconds(20)
    /// The id to authenticate as when it is not the store's replica id: a branch office's
    /// credential, which stays while its store takes a new replica id after a restore
    /// (SPEC.md 6.4). `nil` for a device, which authenticates as its store.
    public var credentialID: String?
    /// Whether this client relays the writes of devices it serves (a branch office): a record
    /// upstream refuses is then put back to upstream's state and the refusal passed on to the
    /// device that made it (`ReplicaStore.revertRefused`), instead of kept as a local value.
    public var relaysForDevices = false

    public init(host: String, port: Int, tenant: String, secret: [UInt8], trustRoots: TrustRoots,
                schemaVersion: UInt32, serverName: String? = nil, serverKeyPin: String? = nil) {
        self.host = host
        self.port = port
        self.tenant = tenant
        self.secret = secret
        self.trustRoots = trustRoots
        self.schemaVersion = schemaVersion
        self.serverName = serverName ?? host
        self.serverKeyPin = serverKeyPin
    }
}

/// Exponential backoff with jitter, so that devices coming back online together do not retry
/// in lockstep.
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first included.
    public var maxAttempts = 5
    public var initialDelay: Duration = .milliseconds(200)
    public var maxDelay: Duration = .seconds(30)

    public init(maxAttempts: Int = 5, initialDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(30)) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// The wait before attempt `attempt` (1 for the first retry): the doubled delay, capped,
    /// then a random point in its upper half.
    public func delay(before attempt: Int) -> Duration {
        let doubled = initialDelay * (1 << min(attempt - 1, 20))
        let capped = min(doubled, maxDelay)
        return capped * Double.random(in: 0.5...1.0)
    }

    /// The wait before attempt `attempt` after `error`: the backoff, or longer when the server
    /// asked for a delay (`SERVER_BUSY`'s or `STORAGE_FULL`'s `retry_after_ms`), so a busy server
    /// is not hit again before it said it could take the client, even past `maxDelay`; at most
    /// `longestServerHint`, so a broken or hostile server cannot park a device for days.
    public func delay(before attempt: Int, after error: any Error) -> Duration {
        max(delay(before: attempt), min((error as? SyncError)?.retryAfter ?? .zero, Self.longestServerHint))
    }

    /// The longest wait a server's `retry_after_ms` can impose.
    public static let longestServerHint: Duration = .seconds(300)
}

/// Why a sync failed on the client's side.
public enum ClientError: Error, Sendable, CustomStringConvertible {
    /// The connection ended before the server answered.
    case connectionLost(String)
    /// The server sent something that breaks the protocol.
    case protocolViolation(String)
    /// The server's data could not be applied (it was invalid); nothing of that batch was kept.
    case invalidServerData(String)

    public var description: String {
        switch self {
        case .connectionLost(let detail): "connection lost: \(detail)"
        case .protocolViolation(let detail): "protocol violation by the server: \(detail)"
        case .invalidServerData(let detail): "the server sent data that cannot be applied: \(detail)"
        }
    }
}

/// How far a sync has come, for a progress bar.
public struct SyncProgress: Sendable, Equatable {
    public enum Phase: String, Sendable { case push, pull }
    public var phase: Phase
    public var recordsDone: Int
    public var recordsTotal: Int
    public var bytesDone: Int
    public var bytesTotal: Int

    public init(phase: Phase, recordsDone: Int, recordsTotal: Int, bytesDone: Int, bytesTotal: Int) {
        self.phase = phase
        self.recordsDone = recordsDone
        self.recordsTotal = recordsTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
    }
}

/// What one sync did.
public struct SyncReport: Sendable, Equatable {
    public var pushed = 0
    public var rejected = 0
    public var pulled = 0
    /// Records the server took out of this device's scope (SPEC 2.9): removed here, not deleted.
    public var evicted = 0
    /// Conflicts logged on this device during the sync, found here or reported by the server.
    public var conflicts = 0
    /// The server sequence this device has applied up to.
    public var checkpoint: Int64 = 0
    /// Connection attempts it took.
    public var attempts = 0
    /// Records dropped at the end of a resync (SPEC 1.8): the server purged their deletion, or
    /// they left this device's scope; none had anything left to push.
    public var dropped = 0

    public init() {}
}
