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
    /// Most records in one push or pull batch.
    public var maxBatchRecords: Int
    /// How long a connection may take to finish TLS and say `Hello`.
    public var handshakeTimeout: Duration
    /// How long an established session may stay silent before the server closes it.
    public var idleTimeout: Duration

    public init(
        maxFrameBytes: Int = 16 << 20,
        maxBatchRecords: Int = 2_000,
        handshakeTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60)
    ) {
        self.maxFrameBytes = maxFrameBytes
        self.maxBatchRecords = maxBatchRecords
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
    }

    /// The limits as `Welcome` carries them.
    public var wire: Rapport_V1_Limits {
        var limits = Rapport_V1_Limits()
        limits.maxFrameBytes = UInt32(clamping: maxFrameBytes)
        limits.maxBatchRecords = UInt32(clamping: maxBatchRecords)
        let (seconds, attoseconds) = idleTimeout.components
        limits.idleTimeoutMs = UInt32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        return limits
    }
}
