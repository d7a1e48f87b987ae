import SyncProtocol

/// The server side of one session as a value: given each inbound frame it says what to do, so
/// the protocol's rules are tested without sockets and the connection code only carries out
/// actions.
///
/// States: `awaitingHello` → (`Hello`, then the driver authenticates) → `established` → `closed`;
/// or `awaitingHello` → (`Enroll`, answered by the driver) → `closed`.
struct ServerSessionState {
    enum State: Equatable {
        case awaitingHello
        case authenticating
        case established
        case closed
    }

    enum Action: Equatable {
        /// Check the hello's credentials, then call `authenticated` or `refused`.
        case authenticate(Rapport_V1_Hello)
        /// Trade the enrollment code for a credential, answer `Enrolled` or an error, and close.
        case enroll(Rapport_V1_Enroll)
        case push(Rapport_V1_PushRequest)
        case pull(Rapport_V1_PullRequest)
        /// A branch asks for the centre's directory (SPEC.md 6.3).
        case directory(Rapport_V1_DirectoryRequest)
        case reply(Rapport_V1_Frame)
        /// Send the error, then close.
        case fail(SyncError)
        /// Close without a word (the peer said goodbye, or already broke the stream).
        case close
        /// Nothing to do.
        case ignore
    }

    private(set) var state: State = .awaitingHello
    let schemaVersion: UInt32
    let limits: SessionLimits

    init(schemaVersion: UInt32, limits: SessionLimits) {
        self.schemaVersion = schemaVersion
        self.limits = limits
    }

    mutating func receive(_ inbound: InboundFrame) -> Action {
        guard case .frame(let frame) = inbound else {
            if case .invalid(let error) = inbound { return fail(error) }
            return fail(SyncError(.malformedFrame, "unreadable frame"))
        }
        switch (state, frame.body) {
        case (.closed, _):
            return .close
        case (.awaitingHello, .hello(let hello)?):
            if let error = checkVersions(protocol: hello.protocolVersion, schema: hello.schemaVersion) { return fail(error) }
            state = .authenticating
            return .authenticate(hello)
        case (.awaitingHello, .enroll(let enroll)?):
            if let error = checkVersions(protocol: enroll.protocolVersion, schema: enroll.schemaVersion) { return fail(error) }
            state = .closed
            return .enroll(enroll)
        case (.awaitingHello, _):
            return fail(SyncError(.unexpectedMessage, "the first message of a session must be Hello (or Enroll)"))
        case (.authenticating, _):
            return fail(SyncError(.unexpectedMessage, "wait for Welcome before sending more"))
        case (.established, .push(let push)?):
            guard push.records.count <= limits.maxBatchRecords else {
                return fail(SyncError(.batchTooLarge, "push of \(push.records.count) records exceeds the limit of \(limits.maxBatchRecords)"))
            }
            return .push(push)
        case (.established, .pull(let pull)?):
            return .pull(pull)
        case (.established, .directoryRequest(let request)?):
            return .directory(request)
        case (.established, .ping(let ping)?):
            var pong = Rapport_V1_Pong()
            pong.nonce = ping.nonce
            var reply = Rapport_V1_Frame()
            reply.pong = pong
            return .reply(reply)
        case (.established, .pong?):
            return .ignore
        case (.established, .goodbye?):
            state = .closed
            return .close
        case (.established, .error?):
            state = .closed
            return .close
        case (.established, let body):
            return fail(SyncError(.unexpectedMessage, "a client does not send \(body.map { "\($0)".prefix(40) } ?? "an empty frame")"))
        }
    }

    private func checkVersions(protocol version: UInt32, schema: UInt32) -> SyncError? {
        guard version == SyncProtocolVersion.current else {
            return SyncError(.unsupportedProtocolVersion,
                             "client speaks protocol version \(version), this server speaks \(SyncProtocolVersion.current)")
        }
        guard schema <= schemaVersion else {
            return SyncError(.incompatibleSchema,
                             "client schema version \(schema) is newer than the server's \(schemaVersion); upgrade the server")
        }
        return nil
    }

    /// The driver accepted the hello's credentials.
    mutating func authenticated() {
        if state == .authenticating { state = .established }
    }

    /// The driver refused the hello's credentials.
    mutating func refused(_ error: SyncError) -> Action {
        fail(error)
    }

    private mutating func fail(_ error: SyncError) -> Action {
        state = .closed
        return .fail(error)
    }
}
