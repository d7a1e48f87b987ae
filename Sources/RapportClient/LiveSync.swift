import Synchronization
import SyncProtocol

/// What a live session reports to the app.
public enum LiveEvent: Sendable {
    /// Connected and authenticated; an initial push and pull follow.
    case connected
    /// A push or a pull finished; the app refreshes what it shows from the store.
    case synced(SyncReport)
    /// The connection failed; it is retried after a backoff unless the error is permanent.
    case disconnected(any Error)
    /// The live session ended: `stop()` was called or the error was permanent.
    case stopped
}

/// A session that stays open: local changes are pushed when the app says so, and changes of
/// other devices are pulled as soon as the server announces them, so a screen shows a
/// colleague's edit without polling.
public final class LiveSync: Sendable {
    /// The events, in order. Finishes after `.stopped`.
    public let events: AsyncStream<LiveEvent>
    private let control = SessionControl()

    init(client: RapportClient) {
        let (events, sink) = AsyncStream<LiveEvent>.makeStream()
        self.events = events
        control.start { [self] in
            await run(client: client, sink: sink)
            sink.yield(.stopped)
            sink.finish()
        }
    }

    /// Asks for local changes to be pushed now.
    public func pushNow() { control.pushNow() }

    /// Ends the session and waits until it has closed.
    public func stop() async { await control.stop() }

    private func run(client: RapportClient, sink: AsyncStream<LiveEvent>.Continuation) async {
        await control.keepSubscribed(client) { session in
            try await client.adopt(session.welcome)
            sink.yield(.connected)
            let keepAlive = session.repeating(.keepAlive, every: client.configuration.keepAliveInterval)
            defer { keepAlive.cancel() }
            var report = SyncReport()
            _ = control.takePushRequest()
            try await client.push(&session, report: &report, progress: nil)
            try await client.pull(&session, report: &report, progress: nil)
            sink.yield(.synced(report))
            while !Task.isCancelled {
                let input = try await session.next()
                var report = SyncReport()
                if control.takePushRequest() || session.localChangePending {
                    session.localChangePending = false
                    try await client.push(&session, report: &report, progress: nil)
                }
                if case .inbound(.frame(let frame)) = input, case .changesAvailable? = frame.body {
                    try await client.pull(&session, report: &report, progress: nil)
                }
                if report != SyncReport() { sink.yield(.synced(report)) }
            }
        } failed: { error, _, _ in
            sink.yield(.disconnected(error))
            return RapportClient.isRetryable(error)
        }
    }
}

extension RapportClient {
    /// Starts a live session; see `LiveSync`. Call `stop()` when the screen goes away.
    public func live() -> LiveSync {
        LiveSync(client: self)
    }
}
