import Access
import Foundation
import ReplicaStore
import Synchronization
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// A check that notes every call and refuses what `refuse` names, standing in for a device's
/// rights: contacts name the account they belong to in `note`.
final class RecordingCheck: LocalWriteCheck {
    struct Call: Equatable {
        var before: RecordState?
        var after: RecordState
        /// Whether the account named in the contact's `note` was there to look up.
        var sawAccount: Bool
    }
    let calls = Mutex<[Call]>([])
    let refuse: @Sendable (RecordState?, RecordState) -> String?

    init(refuse: @escaping @Sendable (RecordState?, RecordState) -> String? = { _, _ in nil }) {
        self.refuse = refuse
    }

    var recorded: [Call] { calls.withLock { $0 } }

    func check(before: RecordState?, after: RecordState, in store: RecordLookup) throws {
        var sawAccount = false
        if case .text(let note)? = after.values["note"], let id = UUID(uuidString: note) {
            sawAccount = try store.record(id)?.type == "account"
        }
        calls.withLock { $0.append(Call(before: before, after: after, sawAccount: sawAccount)) }
        if let reason = refuse(before, after) { throw AccessDenied(record: after.id, type: after.type, reason: reason) }
    }
}

@Suite struct LocalWriteCheckTests {
    let dir: TemporaryDirectory
    init() throws { dir = try TemporaryDirectory() }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func theCheckRunsOnceARecordWhenTheOutermostTransactionEndsAndSeesItsOtherRecords(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "device")
        let check = RecordingCheck()
        store.localWriteCheck = check
        let account = UUID()
        let (contact, callsInside) = try store.transaction {
            // The contact comes first and names an account the same transaction creates later.
            let contact = try store.create("contact", ["name": .text("Ada"), "note": .text(account.uuidString)])
            try store.update(contact.id, ["city": .text("London")])
            try store.create("account", id: account, ["name": .text("Analytical Engines")])
            return (contact.id, check.recorded.count)
        }
        #expect(callsInside == 0, "nothing is judged before the transaction ends")
        let calls = check.recorded
        #expect(calls.map(\.after.id) == [contact, account], "one call a record, in the order first written")
        #expect(calls[0].before == nil, "created by the transaction")
        #expect(calls[0].after == (try store.record(contact)), "judged as the transaction leaves it")
        #expect(calls[0].sawAccount, "the lookup sees the transaction's own writes")

        let before = try #require(try store.record(contact))
        try store.transaction {
            try store.update(contact, ["city": .text("Paris")])
            try store.increment(contact, field: "points", by: 2)
        }
        try store.delete(account)
        try store.restore(account)
        let later = Array(check.recorded.dropFirst(2))
        #expect(later.count == 3)
        #expect(later[0].before == before, "the state before the transaction's first write")
        #expect(later[0].after.values["city"] == .text("Paris") && later[0].after.values["points"] == .integer(2))
        #expect(later[1].after.isDeleted && later[1].before?.isDeleted == false, "deletions are judged too")
        #expect(later[2].before?.isDeleted == true && later[2].after.isDeleted == false)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aRefusedWriteRollsBackTheWholeTransactionWithTheReason(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "device")
        let kept = try store.create("contact", ["name": .text("Ada")])
        store.localWriteCheck = RecordingCheck { before, after in
            if after.values["city"] == .text("Atlantis") { return "no one may move a contact to Atlantis" }
            if after.isDeleted { return "no one may delete contacts" }
            return nil
        }
        let snapshot = try StoreSnapshot(store)
        var refused: RecordState?
        do {
            try store.transaction {
                try store.create("account", ["name": .text("Allowed on its own")])
                refused = try store.update(kept.id, ["city": .text("Atlantis")])
            }
            Issue.record("the refused transaction was kept")
        } catch let error as ReplicaStoreError {
            let id = try #require(refused?.id)
            #expect(error == .accessDenied(AccessDenied(record: id, type: "contact", reason: "no one may move a contact to Atlantis")))
            #expect(error.isAboutTheRecord)
            #expect(error.description.contains("no one may move a contact to Atlantis"))
        }
        #expect(try StoreSnapshot(store) == snapshot, "the account written beside it is gone too")
        #expect(throws: ReplicaStoreError.accessDenied(AccessDenied(record: kept.id, type: "contact", reason: "no one may delete contacts"))) {
            try store.delete(kept.id)
        }
        #expect(try StoreSnapshot(store) == snapshot)
        // The refusals burnt nothing: the next allowed write takes the next counter.
        #expect(try store.update(kept.id, ["city": .text("London")]).vector[store.replicaID] == 2)

        store.localWriteCheck = nil
        #expect(try store.update(kept.id, ["city": .text("Atlantis")]).values["city"] == .text("Atlantis"),
                "the check can be taken away at any time")
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aWriteUndoneByANestedRollbackIsNotJudged(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let store = try openStore(dir, "device")
        let check = RecordingCheck()
        store.localWriteCheck = check
        struct Undo: Error {}
        let kept = try store.transaction {
            _ = try? store.transaction { () throws -> Void in
                try store.create("contact", ["name": .text("Gone")])
                throw Undo()
            }
            return try store.create("account", ["name": .text("Kept")])
        }
        #expect(check.recorded.map(\.after.id) == [kept.id])
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func theCheckNeverRunsOnBatchesFromSync(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        let peer = try openStore(dir, "peer")
        let id = try peer.create("contact", ["name": .text("Ada")]).id
        try peer.update(id, ["city": .text("Atlantis")])
        let other = try peer.create("account", ["name": .text("Engines")]).id
        try peer.delete(other)
        let states = try peer.changes(after: 0, limit: 10).map(\.state)

        let check = RecordingCheck { _, _ in "refuses everything" }
        for origin in [ApplyOrigin.upstream, .downstream] {
            let store = try openStore(dir, "device-\(origin)")
            store.localWriteCheck = check
            try store.apply(states, from: origin)
            try store.apply(encoded: try peer.encodedChanges(after: 0, limit: 10).map(\.record), from: origin)
            #expect(try store.record(id)?.values["city"] == .text("Atlantis"))
            // A sync's bookkeeping in a transaction of its own is no local write either.
            try store.transaction {
                try store.reject(id, upTo: states[0].vector, reason: "refused upstream")
                try store.acknowledge(id, upTo: states[0].vector)
            }
        }
        #expect(check.recorded.isEmpty)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func localSettingsSurviveReopeningAndRollBackWithTheirTransaction(_ backend: DatabaseBackend) throws {
        let dir = try StorePlace(backend)
        do {
            let store = try openStore(dir, "device")
            #expect(try store.localSetting("rights") == nil)
            try store.setLocalSetting("rights", Data([1, 2, 3]))
            struct Undo: Error {}
            #expect(throws: Undo.self) {
                try store.transaction {
                    try store.setLocalSetting("rights", Data([9]))
                    throw Undo()
                }
            }
            store.close()
        }
        let store = try openStore(dir, "device")
        #expect(try store.localSetting("rights") == Data([1, 2, 3]))
        try store.setLocalSetting("rights", nil)
        #expect(try store.localSetting("rights") == nil)
        #expect(try store.dirtyCount() == 0 && store.lastSequence == 0, "a setting is no record and never syncs")
    }
}
