/// Fixed facts of the wire protocol, shared by server and client.
public enum SyncProtocolVersion {
    /// The protocol version this build speaks; `Hello` and `Welcome` carry it.
    public static let current: UInt32 = 1
    /// The ALPN name negotiated in the TLS handshake.
    public static let alpn = "rapport/1"
}

/// Sizes and times that bound a session. The server announces its own in `Welcome`.
public struct SessionLimits: Sendable, Equatable {
    /// Largest frame accepted, length prefix excluded.
    public var maxFrameBytes: Int
    /// Largest frame accepted before login (Hello or Enroll, both well under 1 KiB): a peer
    /// that has not authenticated cannot make the server buffer more than this.
    public var maxPreLoginFrameBytes: Int
    /// Most records in one push or pull batch.
    public var maxBatchRecords: Int
    /// How long a connection may take to finish TLS and say `Hello`.
    public var handshakeTimeout: Duration
    /// How long an established session may stay silent before the server closes it.
    public var idleTimeout: Duration

    public init(
        maxFrameBytes: Int = 16 << 20,
        maxPreLoginFrameBytes: Int = 16 << 10,
        maxBatchRecords: Int = 2_000,
        handshakeTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60)
    ) {
        self.maxFrameBytes = maxFrameBytes
        self.maxPreLoginFrameBytes = maxPreLoginFrameBytes
        self.maxBatchRecords = maxBatchRecords
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
    }

    /// The frame limit of one connection: the pre-login one until the session is authenticated
    /// (never above the session limit).
    public func frameSizeLimit() -> FrameSizeLimit {
        FrameSizeLimit(preLogin: min(maxPreLoginFrameBytes, maxFrameBytes), session: maxFrameBytes)
    }

    /// The limits as `Welcome` carries them.
    public var wire: Rapport_V1_Limits {
        var limits = Rapport_V1_Limits()
        limits.maxFrameBytes = UInt32(clamping: maxFrameBytes)
        limits.maxBatchRecords = UInt32(clamping: maxBatchRecords)
        limits.idleTimeoutMs = idleTimeout.wireMilliseconds
        return limits
    }
}

extension Duration {
    /// Whole milliseconds, as the protocol's `_ms` fields carry them (clamped to their range).
    var wireMilliseconds: UInt32 {
        let (seconds, attoseconds) = components
        return UInt32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}
