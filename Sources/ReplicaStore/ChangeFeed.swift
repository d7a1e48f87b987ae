import Foundation
import Synchronization
import SyncModel

/// The records one committed transaction of a store changed, for screens that show them.
public struct StoreChanges: Sendable, Hashable {
    /// Where the changes came from: a screen may treat its own edits and a sync differently.
    public enum Origin: Sendable, Hashable {
        case local
        case upstream
        case downstream
    }

    public var origin: Origin
    /// Record ids and their types, in the order the transaction changed them, each once.
    public var records: [ChangedRecord]

    /// Whether any record of `type` changed, for a list screen of that type.
    public func contains(type: String) -> Bool { records.contains { $0.type == type } }
}

/// One record a transaction changed.
public struct ChangedRecord: Sendable, Hashable {
    public var id: UUID
    /// The record's type, so a screen can tell whether the change concerns it without a read.
    public var type: String

    public init(id: UUID, type: String) {
        self.id = id
        self.type = type
    }
}

/// The streams of a store's observers. Separate from the store and locked, because a stream's
/// termination handler runs on whatever thread ends it, while the store belongs to one thread.
final class ChangeFeed: Sendable {
    private let observers = Mutex<(next: Int, continuations: [Int: AsyncStream<StoreChanges>.Continuation])>((0, [:]))

    func subscribe() -> AsyncStream<StoreChanges> {
        let (stream, continuation) = AsyncStream.makeStream(of: StoreChanges.self, bufferingPolicy: .unbounded)
        let key = observers.withLock { state in
            state.next += 1
            state.continuations[state.next] = continuation
            return state.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.observers.withLock { $0.continuations.removeValue(forKey: key) }
        }
        return stream
    }

    var hasObservers: Bool { observers.withLock { !$0.continuations.isEmpty } }

    func publish(_ changes: StoreChanges) {
        let targets = observers.withLock { Array($0.continuations.values) }
        for continuation in targets { continuation.yield(changes) }
    }

    func finish() {
        let targets = observers.withLock { state in
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        for continuation in targets { continuation.finish() }
    }
}
