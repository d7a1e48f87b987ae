import Access
import Foundation
import SyncModel

/// A check of who may write what, run on this replica's own writes before they can leave it:
/// a device runs the very check the server runs on what it pushes (`AccessPolicy`), so an
/// honest app shows a refusal at once instead of after the next sync.
///
/// Set it with `ReplicaStore.localWriteCheck`. It runs where `RecordRules` run, when the
/// outermost local transaction ends, once per record the transaction wrote (created, updated,
/// incremented, deleted, restored, or changed by resolving a conflict), so the records of one
/// transaction are judged together: a contact and the account it is created under, say. It
/// never runs on batches from sync (`apply`): they were checked where they were written.
public protocol LocalWriteCheck: Sendable {
    /// Throws (`AccessDenied`, which the store reports as `ReplicaStoreError.accessDenied`)
    /// when this replica may not turn `before` into `after`.
    ///
    /// - Parameters:
    ///   - before: the record as it was when the transaction first wrote it; `nil` when the
    ///     transaction created it.
    ///   - after: the record as the transaction leaves it, deleted or not.
    ///   - store: the store as the transaction left it, its own writes included.
    func check(before: RecordState?, after: RecordState, in store: RecordLookup) throws
}

extension AccessPolicy: LocalWriteCheck {
    public func check(before: RecordState?, after: RecordState, in store: RecordLookup) throws {
        try checkWrite(before: before, after: after, lookup: store.record)
    }
}
