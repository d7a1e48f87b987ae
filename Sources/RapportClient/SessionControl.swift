import Synchronization

/// What a long-running session loop (`LiveSync`, `UpstreamLink`) shares with the code that
/// drives it: its task, a way into the open session's inputs, and whether a push was asked for
/// while no session was open (the next session starts with one anyway).
final class SessionControl: Sendable {
    private let inject = Mutex<AsyncStream<SessionInput>.Continuation?>(nil)
    private let pushRequested = Atomic<Bool>(false)
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Runs `body` as the loop's task.
    func start(_ body: @escaping @Sendable () async -> Void) {
        let work = Task { await body() }
        task.withLock { $0 = work }
    }

    /// The inputs of the session now open, or `nil` once it closed.
    func attach(_ continuation: AsyncStream<SessionInput>.Continuation?) {
        inject.withLock { $0 = continuation }
    }

    /// Asks for a push; returns whether a session was open to hear it now.
    @discardableResult
    func pushNow() -> Bool {
        pushRequested.store(true, ordering: .releasing)
        return inject.withLock { inject in
            inject?.yield(.localChange)
            return inject != nil
        }
    }

    /// Whether a push was asked for since the last look, clearing the request.
    func takePushRequest() -> Bool {
        pushRequested.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// Cancels the loop and waits until it has ended.
    func stop() async {
        let work = task.withLock { $0 }
        work?.cancel()
        await work?.value
    }

    /// Keeps a subscribed session to `client`'s server open until the task is cancelled:
    /// `serve` runs on each session that opens. After a failure, `failed` hears the error, how
    /// many sessions failed in a row and the backoff before the next attempt, and says whether
    /// to try again at all.
    func keepSubscribed(
        _ client: RapportClient,
        serve: (inout ClientSession) async throws -> Void,
        failed: (_ error: any Error, _ failures: Int, _ delay: Duration) async -> Bool
    ) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await ClientSession.run(configuration: client.configuration, tls: client.tls, deviceID: client.sessionID,
                                            subscribe: true, onOpen: { continuation in self.attach(continuation) }) { session in
                    failures = 0
                    try await serve(&session)
                }
            } catch {
                attach(nil)
                if Task.isCancelled { return }
                failures += 1
                let delay = client.configuration.retry.delay(before: min(failures, 16), after: error)
                guard await failed(error, failures, delay) else { return }
                try? await Task.sleep(for: delay)
            }
        }
    }
}
