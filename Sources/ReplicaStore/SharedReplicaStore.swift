import Dispatch
import Synchronization
import Foundation
import SyncModel

/// A replica store that async code on any thread can use: every call runs on one serial
/// dispatch queue of its own.
///
/// The queue is the store's single writer, and it keeps SQLite's blocking calls off SwiftNIO's
/// event loops and off the cooperative thread pool that async code shares.
public final class SharedReplicaStore: @unchecked Sendable {
    // Safe: `store` is touched only on `queue`, a serial queue, so never by two threads at once.
    private let store: ReplicaStore
    private let queue: DispatchQueue

    /// The store's replica id, readable from anywhere: it never changes.
    public let replicaID: String
    /// The store's schema, readable from anywhere: it never changes.
    public let schema: Schema

    public init(_ store: ReplicaStore, label: String) {
        self.store = store
        self.replicaID = store.replicaID.rawValue
        self.schema = store.schema
        self.queue = DispatchQueue(label: "rapport.store.\(label)")
    }

    /// Runs `body` with the store on its queue and returns its result.
    public func perform<T: Sendable>(_ body: @escaping @Sendable (ReplicaStore) throws -> T) async throws -> T {
        try await enqueue(body).value
    }

    /// Queues `body` on the store's queue at once and returns without waiting: the caller goes
    /// on (reading the next batch of a pull, say) and awaits `QueuedStoreWork.value` later. No
    /// task is started for it, so nothing waits for a free thread before the work is queued.
    public func enqueue<T: Sendable>(_ body: @escaping @Sendable (ReplicaStore) throws -> T) -> QueuedStoreWork<T> {
        let work = QueuedStoreWork<T>()
        queue.async { work.finish(Result { try body(self.store) }) }
        return work
    }

    /// Runs `body` on the store's queue and waits for it: for code that is not async, such as
    /// command-line tools and tests, never from an event loop.
    public func performSync<T>(_ body: (ReplicaStore) throws -> T) rethrows -> T {
        try queue.sync { try body(store) }
    }

    /// Closes the store after everything already queued has run.
    public func close() async {
        await withCheckedContinuation { continuation in
            queue.async {
                self.store.close()
                continuation.resume()
            }
        }
    }
}

/// The result of work queued by `SharedReplicaStore.enqueue`, awaited by one caller.
public final class QueuedStoreWork<T: Sendable>: Sendable {
    private struct State {
        var result: Result<T, any Error>?
        var waiter: CheckedContinuation<T, any Error>?
    }
    private let state = Mutex(State())

    init() {}

    fileprivate func finish(_ result: Result<T, any Error>) {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            if state.waiter == nil { state.result = result }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    /// What the work returned or threw, once it has run. Awaited once: a second waiter while
    /// the first still waits is a programming error.
    public var value: T {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let result = state.withLock { state -> Result<T, any Error>? in
                    if let result = state.result { return result }
                    precondition(state.waiter == nil, "QueuedStoreWork awaited twice at once")
                    state.waiter = continuation
                    return nil
                }
                if let result { continuation.resume(with: result) }
            }
        }
    }
}
