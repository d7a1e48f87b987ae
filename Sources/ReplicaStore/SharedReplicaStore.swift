import Dispatch
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
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body(self.store) })
            }
        }
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
