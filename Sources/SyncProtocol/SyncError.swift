/// A protocol-level failure: what an `Error` frame carries, and what a client surfaces to its app.
public struct SyncError: Error, Sendable, Equatable, CustomStringConvertible {
    public typealias Code = Rapport_V1_Error.Code

    public var code: Code
    public var message: String
    /// Whether trying again later can succeed (a busy or restarting server), as opposed to a
    /// request that will fail the same way every time (bad credentials, wrong version).
    public var retryable: Bool
    /// How long the sender asks the client to wait before trying again (`retry_after_ms`), when
    /// it says: a busy server spreads its returning clients out with it.
    public var retryAfter: Duration?
    /// On `RESYNC_REQUIRED`: the sequence through which the server purged tombstones, past the
    /// pull's checkpoint (`purged_through`, SPEC.md 1.8); 0 for a resync of another cause.
    public var purgedThrough: UInt64 = 0

    public init(_ code: Code, _ message: String, retryable: Bool? = nil, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable ?? Self.isRetryable(code)
        self.retryAfter = retryAfter
    }

    /// The answer to a pull from below what the server purged: the device may hold records
    /// whose deletion it can no longer be sent.
    public static func purgedPastCheckpoint(_ checkpoint: Int64, purgedThrough: Int64) -> SyncError {
        var error = SyncError(.resyncRequired, "tombstones were purged through sequence \(purgedThrough), past checkpoint \(checkpoint): push, then pull again from 0")
        error.purgedThrough = UInt64(max(0, purgedThrough))
        return error
    }

    /// The server could not store a batch because its disk is full; nothing of it was kept.
    public static func storageFull() -> SyncError {
        SyncError(.storageFull, "the server's storage is full, retry later", retryAfter: .seconds(30))
    }

    /// Whether the code, by itself, invites a retry (SPEC.md 2.6).
    public static func isRetryable(_ code: Code) -> Bool {
        switch code {
        case .timeout, .serverBusy, .shuttingDown, .internal, .storageFull: true
        default: false
        }
    }

    public init(_ frame: Rapport_V1_Error) {
        self.init(frame.code, frame.message, retryable: frame.retryable,
                  retryAfter: frame.retryAfterMs == 0 ? nil : .milliseconds(frame.retryAfterMs))
        purgedThrough = frame.purgedThrough
    }

    /// The error as a frame to send.
    public var frame: Rapport_V1_Frame {
        var error = Rapport_V1_Error()
        error.code = code
        error.message = message
        error.retryable = retryable
        error.retryAfterMs = retryAfter?.wireMilliseconds ?? 0
        error.purgedThrough = purgedThrough
        var frame = Rapport_V1_Frame()
        frame.error = error
        return frame
    }

    public var description: String {
        "\(code) — \(message)\(retryable ? " (retryable\(retryAfter.map { " after \($0)" } ?? ""))" : "")"
    }
}
