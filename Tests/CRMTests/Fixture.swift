import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// A tenant store in a temporary directory with helpers that write valid CRM records: every
/// reference points at a record created first, every choice and format follows the rules.
final class Fixture {
    let directory: TemporaryDirectory
    let store: ReplicaStore

    /// - Parameter options: how the store opens; the schema alone (no rules, no effects) by
    ///   default, so a test sees exactly what it writes.
    init(options: ReplicaStore.Options = .init(schema: CRMSchema.current)) throws {
        directory = try TemporaryDirectory()
        store = try ReplicaStore(path: directory.path("tenant.sqlite"), options: options)
    }

    /// A CRM store as a device or the server opens it, with its effects, at `Fixture.now` (the
    /// clock of writes and of the effects alike, plus `offset` seconds).
    static func crmOptions(role: CRMChangeEffects.Role, offset: TimeInterval = 0) -> ReplicaStore.Options {
        var options = ReplicaStore.Options.crm(role: role)
        let now = now.addingTimeInterval(offset)
        options.wallClock = { UInt64(now.timeIntervalSince1970 * 1000) }
        options.effects = CRMChangeEffects(role: role, now: { now })
        return options
    }

    deinit { store.close() }

    /// 2025-06-15T12:00:00Z, the clock of every test.
    static let now = Date(timeIntervalSince1970: 1_749_988_800)

    static func day(_ offset: Int) -> String { CRMDate.format(day: CRMDate.seconds(now) / 86_400 + Int64(offset)) }
    static func instant(days offset: Double) -> String { CRMDate.format(instant: CRMDate.seconds(now) + Int64(offset * 86_400)) }

    @discardableResult
    func account(_ name: String, lifecycle: String? = nil, renewal: String? = nil, _ extra: [String: FieldValue] = [:]) throws -> UUID {
        var values: [String: FieldValue] = ["name": .text(name)]
        if let lifecycle { values["lifecycle_stage"] = .text(lifecycle) }
        if let renewal { values["renewal_date"] = .text(renewal) }
        return try store.create("account", values.merging(extra) { $1 }).id
    }

    @discardableResult
    func opportunity(_ account: UUID, stage: String, amount: Double, owner: String = "ann@example.com",
                     closed: String? = nil, expectedClose: String? = nil, source: String? = nil) throws -> UUID {
        var values: [String: FieldValue] = ["name": .text("deal"), "account": .text(account.uuidString),
                                            "stage": .text(stage), "amount": .real(amount), "owner": .text(owner)]
        if let closed { values["closed_at"] = .text(closed) }
        if let expectedClose { values["expected_close"] = .text(expectedClose) }
        if let source { values["lead_source"] = .text(source) }
        return try store.create("opportunity", values).id
    }

    @discardableResult
    func order(_ account: UUID, _ number: String, amount: Double, day: String, status: String = "confirmed") throws -> UUID {
        try store.create("order", ["account": .text(account.uuidString), "number": .text(number), "amount": .real(amount),
                                   "date": .text(day), "status": .text(status), "currency": .text("EUR")]).id
    }

    @discardableResult
    func activity(account: UUID? = nil, contact: UUID? = nil, occurred: String, owner: String = "ann@example.com",
                  kind: String = "call", status: String = "done") throws -> UUID {
        var values: [String: FieldValue] = ["kind": .text(kind), "subject": .text("touch"), "occurred_at": .text(occurred),
                                            "owner": .text(owner), "status": .text(status)]
        if let account { values["account"] = .text(account.uuidString) }
        if let contact { values["contact"] = .text(contact.uuidString) }
        return try store.create("activity", values).id
    }

    @discardableResult
    func contact(_ last: String, email: String? = nil, phone: String? = nil, account: UUID? = nil,
                 _ extra: [String: FieldValue] = [:]) throws -> UUID {
        var values: [String: FieldValue] = ["last_name": .text(last)]
        if let email { values["email"] = .text(email) }
        if let phone { values["phone"] = .text(phone) }
        if let account { values["account"] = .text(account.uuidString) }
        return try store.create("contact", values.merging(extra) { $1 }).id
    }

    @discardableResult
    func supportCase(_ number: String, priority: String, status: String = "open", _ extra: [String: FieldValue] = [:]) throws -> UUID {
        try store.create("case", ["number": .text(number), "subject": .text("broken \(number)"), "priority": .text(priority),
                                  "status": .text(status)].merging(extra) { $1 }).id
    }

    func setting(_ key: String, _ value: String) throws {
        try store.create("setting", ["key": .text(key), "value": .text(value)])
    }

    func read(_ id: UUID) throws -> RecordState { try #require(try store.record(id)) }
}

