import SyncProtocol

extension SessionLimits {
    /// The limits of an in-process test server: 60 s, not 10, for a connection's handshake and
    /// Hello. Beside the other suites a loaded machine stalled a client past the default; tests
    /// of the timeout itself set their own.
    public static let forTests = SessionLimits(handshakeTimeout: .seconds(60))
}
