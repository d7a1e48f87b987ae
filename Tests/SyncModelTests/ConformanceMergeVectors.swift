import Foundation
import SyncModel
import TestSupport

/// The scenarios of Protocol/conformance/merge, built with the local writes every replica uses
/// (`RecordState.created`, `write`, `increment`, `delete`, `restore`) and merged by `Merge`, so
/// the files say what our code does. `ConformanceMergeTests` writes them (on request) and checks
/// the files against the code.
enum ConformanceMergeVectors {
    struct Scenario {
        var name: String
        var description: String
        var spec: [String]
        var note: String? = nil
        var inputs: [(String, RecordState)]
        /// Cases beyond the left folds of every order of the inputs (and, for three, the folds
        /// that merge the last two first).
        var extraCases: [KitExpression] = []
    }

    static let ana = try! ReplicaID("ana")
    static let ben = try! ReplicaID("ben")
    static let cyd = try! ReplicaID("cyd")
    /// 2025-06-15T15:06:40Z in milliseconds, as in Protocol/vectors.
    static let base: UInt64 = 1_750_000_000_000

    static func t(_ offset: UInt64, _ logical: UInt64 = 0) -> HLCTimestamp {
        HLCTimestamp(wallMilliseconds: base + offset, logical: logical)
    }

    static func d(_ replica: ReplicaID, _ counter: UInt64) -> Dot { try! Dot(replica: replica, counter: counter) }

    static let declaredFields: [String: String] = [
        "name": "text", "city": "text", "phone": "text", "age": "integer", "vip": "boolean",
        "rating": "real", "photo": "blob", "points": "counter",
    ]

    static func id(_ n: Int) -> UUID { UUID(uuidString: String(format: "00000000-0000-4000-8000-%012d", n))! }

    /// The record every scenario starts from: ana creates a contact named Ada (ana:1).
    static func created(_ n: Int, _ values: [String: FieldValue] = ["name": .text("Ada"), "city": .text("London")]) -> RecordState {
        .created(id: id(n), type: "contact", fields: values, dot: d(ana, 1), timestamp: t(1_000))
    }

    static var all: [Scenario] {
        [
            causalOverwrite, concurrentUpdate, equalTimestamps, fieldOnOneSide, counters,
            deleteVersusConcurrentUpdate, deleteVersusLaterConcurrentUpdate, deleteVersusConcurrentIncrement,
            updateThenDelete, deleteThenRestore, deleteVersusRestoreDeletionWins, deleteVersusRestoreRestoreWins,
            twoConcurrentDeletes, restoreWithConcurrentUpdate, clockSkew, unknownFields, threeConcurrentUpdates,
            idempotence,
        ]
    }

    static var causalOverwrite: Scenario {
        let a = created(1)
        let b = a.writing(["name": .text("Ada Lovelace")], d(ben, 1), t(2_000))
        return Scenario(
            name: "causal_overwrite",
            description: "ben received ana's contact and renamed it: ben's write saw ana's, so it wins without a conflict. Merging a into b brings nothing new (b's vector covers a's): unchanged.",
            spec: ["1.4.1", "1.4.2", "1.4.3"], inputs: [("a", a), ("b", b)])
    }

    static var concurrentUpdate: Scenario {
        let base = created(2)
        let a = base.writing(["name": .text("Ada King")], d(ana, 2), t(3_000))
        let b = base.writing(["name": .text("Ada Byron")], d(ben, 1), t(2_000))
        return Scenario(
            name: "concurrent_update",
            description: "ana and ben renamed the contact without seeing each other's write: the later timestamp (ana's) wins, ben's value is logged as a concurrent_update conflict.",
            spec: ["1.4.3", "1.5"], inputs: [("a", a), ("b", b)])
    }

    static var equalTimestamps: Scenario {
        let base = created(3)
        let a = base.writing(["city": .text("Paris")], d(ana, 2), t(1_500)).writing(["name": .text("Ada King")], d(ana, 3), t(2_000))
        let b = base.writing(["name": .text("Ada Byron")], d(ben, 1), t(2_000))
        return Scenario(
            name: "equal_timestamps",
            description: "Concurrent renames with the same timestamp: the higher dot wins, comparing the replica id first (bytewise) and the counter only between equal ids, so ben:1 beats ana:3.",
            spec: ["1.4.3", "1.5"], inputs: [("a", a), ("b", b)])
    }

    static var fieldOnOneSide: Scenario {
        let base = created(4, [
            "name": .text("Ada"), "age": .integer(-36), "vip": .bool(true), "rating": .real(4.5),
            "photo": .blob(Data([0xde, 0xad, 0xbe, 0xef])), "phone": .null,
        ])
        let a = base.writing(["city": .text("Zürich")], d(ana, 2), t(2_000))
        let b = base.writing(["phone": .text("+44 20 7946 0000"), "vip": .bool(false)], d(ben, 1), t(2_500))
        return Scenario(
            name: "field_on_one_side_only",
            description: "ana set city, a field only her side holds; ben set phone and vip, which both sides hold but only ben changed. Each is taken from the side that wrote it, no conflict. The record holds every kind of value (text, integer, boolean, real, blob, null) for codecs to check.",
            spec: ["1.4.3", "1.4.5", "3.4"], inputs: [("a", a), ("b", b)])
    }

    static var counters: Scenario {
        let base = created(5).incrementing("points", by: 10, d(ana, 2), t(1_500))
        let a = base.incrementing("points", by: 5, d(ana, 3), t(2_000))
        let b = base.incrementing("points", by: 3, d(ben, 1), t(2_100)).incrementing("points", by: -1, d(ben, 2), t(2_200))
        return Scenario(
            name: "counter_concurrent_increments",
            description: "ana added 5 to points (10 before) while ben added 3 and subtracted 1: per replica the contribution with the higher last counter is kept, so the increments add up to 17. Counters never conflict.",
            spec: ["1.3", "1.4.4"], inputs: [("a", a), ("b", b)])
    }

    static var deleteVersusConcurrentUpdate: Scenario {
        let base = created(6)
        let a = base.deleting(d(ana, 2), t(3_000))
        let b = base.writing(["city": .text("Paris")], d(ben, 1), t(2_000))
        return Scenario(
            name: "delete_vs_concurrent_update",
            description: "ana deleted the contact while ben, not having seen the delete, changed its city. The record stays deleted; ben's value is kept in the (hidden) state and logged as update_of_deleted, whose winner is the deletion.",
            spec: ["1.4.6", "1.5"], inputs: [("a", a), ("b", b)])
    }

    static var deleteVersusLaterConcurrentUpdate: Scenario {
        let base = created(7)
        let a = base.deleting(d(ana, 2), t(2_000))
        let b = base.writing(["city": .text("Paris")], d(ben, 1), t(3_000))
        return Scenario(
            name: "delete_vs_later_concurrent_update",
            description: "As delete_vs_concurrent_update, but ben's update has the later timestamp: it still does not bring the record back. Only a restore (a write of the existence) does; a field write concurrent with the delete is an update_of_deleted whatever its timestamp.",
            spec: ["1.4.6", "1.5"], inputs: [("a", a), ("b", b)])
    }

    static var deleteVersusConcurrentIncrement: Scenario {
        let base = created(8).incrementing("points", by: 10, d(ana, 2), t(1_500))
        let a = base.deleting(d(ana, 3), t(3_000))
        let b = base.incrementing("points", by: 4, d(ben, 1), t(2_500))
        return Scenario(
            name: "delete_vs_concurrent_increment",
            description: "ana deleted the contact while ben added 4 to points. The record stays deleted with the counter at 14 (hidden); ben's increment is logged as update_of_deleted.",
            spec: ["1.4.4", "1.4.6", "1.5"],
            note: "For a counter, the loser side is the contribution's latest write (its replica, last counter and last timestamp) and its value is the counter's merged total (14), not the increment (4).",
            inputs: [("a", a), ("b", b)])
    }

    static var updateThenDelete: Scenario {
        let base = created(9)
        let b = base.writing(["city": .text("Paris")], d(ben, 1), t(2_000))
        let a = base.receiving(b).deleting(d(ana, 2), t(3_000))
        return Scenario(
            name: "update_then_delete_causal",
            description: "ben changed the city; ana received that and then deleted the contact. The deletion context contains ben's write, so the delete deliberately removed it: no conflict.",
            spec: ["1.4.1", "1.4.6"], inputs: [("a", a), ("b", b)])
    }

    static var deleteThenRestore: Scenario {
        let a = created(10).deleting(d(ana, 2), t(2_000))
        let b = a.restoring(d(ben, 1), t(3_000))
        return Scenario(
            name: "delete_then_restore_causal",
            description: "ana deleted the contact; ben received the deletion and restored it. The restore saw the delete: the record is live with its fields, no conflict.",
            spec: ["1.3", "1.4.3"], inputs: [("a", a), ("b", b)])
    }

    static var deleteVersusRestoreDeletionWins: Scenario {
        let deleted = created(11).deleting(d(ana, 2), t(2_000))
        let a = deleted.restoring(d(ana, 3), t(3_000)).deleting(d(ana, 4), t(4_000))
        let b = deleted.restoring(d(ben, 1), t(3_500))
        return Scenario(
            name: "delete_vs_restore_deletion_wins",
            description: "After a deletion everyone saw, ben restored the contact while ana restored and deleted it again. Existence is a register: ana's later deletion wins and ben's restore is logged as delete_versus_restore.",
            spec: ["1.4.3", "1.5"],
            note: "A restore side carries the value boolean true (the record exists) and deletion false; a deletion side carries no value (null) and deletion true.",
            inputs: [("a", a), ("b", b)])
    }

    static var deleteVersusRestoreRestoreWins: Scenario {
        let deleted = created(12).deleting(d(ana, 2), t(2_000))
        let a = deleted.restoring(d(ana, 3), t(3_000)).deleting(d(ana, 4), t(4_000))
        let b = deleted.restoring(d(ben, 1), t(4_500))
        return Scenario(
            name: "delete_vs_restore_restore_wins",
            description: "As delete_vs_restore_deletion_wins, but ben's restore is later: the record is live and ana's deletion is the conflict's loser.",
            spec: ["1.4.3", "1.5"],
            note: "A restore side carries the value boolean true (the record exists) and deletion false; a deletion side carries no value (null) and deletion true.",
            inputs: [("a", a), ("b", b)])
    }

    static var twoConcurrentDeletes: Scenario {
        let base = created(13)
        let a = base.deleting(d(ana, 2), t(3_000))
        let b = base.deleting(d(ben, 1), t(2_000))
        return Scenario(
            name: "two_concurrent_deletes",
            description: "ana and ben deleted the contact without seeing each other's deletion. The later deletion (ana's) is kept with its own deletion context; ben's is dropped. Nothing is logged: both sides agree the record is deleted.",
            spec: ["1.4.3", "1.4.6", "1.5"],
            note: "The deletion context is the record's vector when it was deleted, including the deletion's own dot ({ana: 2} here): that is what the code's local delete writes.",
            inputs: [("a", a), ("b", b)])
    }

    static var restoreWithConcurrentUpdate: Scenario {
        let base = created(14)
        let deleted = base.deleting(d(ana, 2), t(2_000))
        let restored = deleted.restoring(d(ben, 1), t(3_000))
        let updated = base.writing(["city": .text("Paris")], d(cyd, 1), t(2_500))
        return Scenario(
            name: "restore_with_concurrent_update",
            description: "ana deleted the contact (d), ben restored it (r), and cyd, who saw neither, changed its city (c). Every order ends live with cyd's city. The conflicts depend on the order: a replica that merges cyd's write into the deleted state logs update_of_deleted; one that has the restore first logs nothing.",
            spec: ["1.4", "1.4.6", "1.5"],
            note: "The conflicts a replica logs depend on what it held when each state arrived; the state never does.",
            inputs: [("d", deleted), ("r", restored), ("c", updated)])
    }

    static var clockSkew: Scenario {
        let base = created(15)
        let a = base.writing(["name": .text("Ada King")], d(ana, 2), t(3_000))
        let b = base.writing(["name": .text("Ada Byron")], d(ben, 1), t(48 * 3_600_000))
        return Scenario(
            name: "clock_skew",
            description: "ben's wall clock runs 48 hours ahead. Its concurrent rename wins by timestamp like any other: the merge does not look at clocks.",
            spec: ["1.2", "1.4.3", "1.5"],
            note: "A replica merging b whose wall clock reads the base time (ana's) still merges it; only its own clock does not adopt ben's timestamp (more than 24 hours ahead of its wall clock), so its next write is stamped from its own clock (SPEC 1.2). The replica-store test checks this with a wall clock at 1750000010000 ms.",
            inputs: [("a", a), ("b", b)])
    }

    static var unknownFields: Scenario {
        let base = created(16)
        let a = base.writing(["nickname": .text("Countess")], d(ana, 2), t(2_000))
        let b = base.writing(["nickname": .text("Enchantress of Numbers"), "pronouns": .text("she/her")], d(ben, 1), t(2_500))
            .incrementing("referrals", by: 2, d(ben, 2), t(2_600))
        return Scenario(
            name: "unknown_fields_kept",
            description: "nickname, pronouns and the counter referrals are not declared by the schema (a newer replica added them). They merge like declared fields and are kept: ben's later nickname wins with a concurrent_update conflict.",
            spec: ["1.3", "1.4.3", "1.4.4", "1.5"], inputs: [("a", a), ("b", b)])
    }

    static var threeConcurrentUpdates: Scenario {
        let base = created(17)
        let a = base.writing(["name": .text("Ada King")], d(ana, 2), t(3_000))
        let b = base.writing(["name": .text("Ada Byron")], d(ben, 1), t(2_000))
        let c = base.writing(["name": .text("Ada Lovelace")], d(cyd, 1), t(3_000))
        return Scenario(
            name: "three_concurrent_updates",
            description: "Three replicas renamed the contact concurrently. cyd's write wins (latest timestamp, tied with ana's, then the higher replica id) in every order and grouping: (a ⊔ b) ⊔ c = a ⊔ (b ⊔ c) and so on. Which losers a replica logs depends on the order.",
            spec: ["1.4", "1.4.3", "1.5"], inputs: [("a", a), ("b", b), ("c", c)])
    }

    static var idempotence: Scenario {
        let base = created(18)
        let a = base.writing(["city": .text("Paris")], d(ana, 2), t(2_000))
        let b = base.writing(["city": .text("Rome")], d(ben, 1), t(2_500))
        let ab = KitExpression.merge(.input("a"), .input("b")), ba = KitExpression.merge(.input("b"), .input("a"))
        return Scenario(
            name: "idempotence",
            description: "Merging a state again, or a merged state into itself, changes nothing and logs nothing new: (a ⊔ b) ⊔ a = (a ⊔ b) ⊔ b = (a ⊔ b) ⊔ (a ⊔ b) = a ⊔ b.",
            spec: ["1.4", "1.4.1"], inputs: [("a", a), ("b", b)],
            extraCases: [.merge(ab, .input("a")), .merge(ab, .input("b")), .merge(ab, ab), .merge(ab, ba), .merge(.merge(ab, .input("a")), .input("b"))])
    }

    // MARK: Building the files

    /// Every order of the inputs as a left fold; with three inputs also x ⊔ (y ⊔ z).
    static func cases(for names: [String]) -> [KitExpression] {
        func permutations(_ items: [String]) -> [[String]] {
            guard items.count > 1 else { return [items] }
            return items.indices.flatMap { i -> [[String]] in
                var rest = items
                let first = rest.remove(at: i)
                return permutations(rest).map { [first] + $0 }
            }
        }
        let orders = permutations(names)
        var cases = orders.map { order in
            order.dropFirst().reduce(KitExpression.input(order[0])) { .merge($0, .input($1)) }
        }
        if names.count == 3 {
            cases += orders.map { .merge(.input($0[0]), .merge(.input($0[1]), .input($0[2]))) }
        }
        return cases
    }

    static func vector(_ scenario: Scenario) throws -> MergeVector {
        let inputs = Dictionary(uniqueKeysWithValues: scenario.inputs)
        let expressions = cases(for: scenario.inputs.map(\.0)) + scenario.extraCases
        var result: RecordState?
        var kitCases: [KitMergeCase] = []
        for expression in expressions {
            let evaluated = try expression.evaluate(inputs)
            if let result, result != evaluated.state {
                throw KitError("\(scenario.name): \(expression) ends in another state than the first case: the merge is not a join here")
            }
            result = evaluated.state
            kitCases.append(KitMergeCase(merge: expression, outcome: evaluated.outcome.rawValue,
                                         conflicts: evaluated.conflicts.map(KitConflict.init).sorted()))
        }
        return MergeVector(
            name: scenario.name, description: scenario.description, spec: scenario.spec, note: scenario.note,
            declaredFields: declaredFields, inputs: inputs.mapValues(KitState.init), result: KitState(result!), cases: kitCases)
    }
}

/// Local writes as values, so a scenario reads as a history.
extension RecordState {
    func writing(_ values: [String: FieldValue], _ dot: Dot, _ time: HLCTimestamp) -> RecordState {
        var copy = self
        copy.write(values, dot: dot, timestamp: time)
        return copy
    }

    func incrementing(_ field: String, by amount: Int64, _ dot: Dot, _ time: HLCTimestamp) -> RecordState {
        var copy = self
        copy.increment(field, by: amount, dot: dot, timestamp: time)
        return copy
    }

    func deleting(_ dot: Dot, _ time: HLCTimestamp) -> RecordState {
        var copy = self
        copy.delete(dot: dot, timestamp: time)
        return copy
    }

    func restoring(_ dot: Dot, _ time: HLCTimestamp) -> RecordState {
        var copy = self
        copy.restore(dot: dot, timestamp: time)
        return copy
    }

    /// This replica's state after taking in `other`.
    func receiving(_ other: RecordState) -> RecordState {
        try! Merge.merge(local: self, remote: other).state
    }
}
