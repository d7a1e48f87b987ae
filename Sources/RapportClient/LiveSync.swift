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
    private let inject = Mutex<AsyncStream<SessionInput>.Continuation?>(nil)
    private let pushRequested = Atomic<Bool>(false)
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(client: RapportClient) {
        let (events, sink) = AsyncStream<LiveEvent>.makeStream()
        self.events = events
        let work = Task { [self] in
            await run(client: client, sink: sink)
            sink.yield(.stopped)
            sink.finish()
        }
        task.withLock { $0 = work }
    }

    /// Asks for local changes to be pushed now.
    public func pushNow() {
        pushRequested.store(true, ordering: .releasing)
        _ = inject.withLock { $0?.yield(.localChange) }
    }

    /// Ends the session and waits until it has closed.
    public func stop() async {
        let work = task.withLock { $0 }
        work?.cancel()
        await work?.value
    }

    private func run(client: RapportClient, sink: AsyncStream<LiveEvent>.Continuation) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await ClientSession.run(configuration: client.configuration, tls: client.tls, deviceID: client.sessionID,
                                            subscribe: true, onOpen: { continuation in self.inject.withLock { $0 = continuation } }) { session in
                    failures = 0
                    try await client.adopt(session.welcome)
                    sink.yield(.connected)
                    let keepAlive = Task { [inject = session.inject, interval = client.configuration.keepAliveInterval] in
                        while !Task.isCancelled {
                            try? await Task.sleep(for: interval)
                            inject.yield(.keepAlive)
                        }
                    }
                    defer { keepAlive.cancel() }
                    var report = SyncReport()
                    pushRequested.store(false, ordering: .releasing)
                    try await client.push(&session, report: &report, progress: nil)
                    try await client.pull(&session, report: &report, progress: nil)
                    sink.yield(.synced(report))
                    while !Task.isCancelled {
                        let input = try await session.next()
                        var report = SyncReport()
                        if pushRequested.exchange(false, ordering: .acquiringAndReleasing) || session.localChangePending {
                            session.localChangePending = false
                            try await client.push(&session, report: &report, progress: nil)
                        }
                        if case .inbound(.frame(let frame)) = input, case .changesAvailable? = frame.body {
                            try await client.pull(&session, report: &report, progress: nil)
                        }
                        if report != SyncReport() { sink.yield(.synced(report)) }
                    }
                }
            } catch {
                inject.withLock { $0 = nil }
                if Task.isCancelled { return }
                sink.yield(.disconnected(error))
                guard RapportClient.isRetryable(error) else { return }
                failures += 1
                try? await Task.sleep(for: client.configuration.retry.delay(before: min(failures, 16), after: error))
            }
        }
    }
}

extension RapportClient {
    /// Starts a live session; see `LiveSync`. Call `stop()` when the screen goes away.
    public func live() -> LiveSync {
        LiveSync(client: self)
    }
}
