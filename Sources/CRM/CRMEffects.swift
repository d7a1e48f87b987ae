import Foundation
import ReplicaStore
import SyncModel

/// The writes that follow from events and from the rules, made as ordinary local writes of a
/// replica: inside the caller's `store.transaction` when there is one (they nest as
/// savepoints), each in its own transaction otherwise.
///
/// Every function writes only values that differ from what the record holds, and records it
/// creates get ids derived from their cause, so two replicas that run the same effect end with
/// the same state instead of fighting over it or duplicating it.
public struct CRMEffects {
    public let store: ReplicaStore
    public let rules: CRMRules

    /// Effects on `store` under `rules` (settings, pipeline and clock).
    public init(store: ReplicaStore, rules: CRMRules) {
        self.store = store
        self.rules = rules
    }

    /// Effects on `store` with its tenant's own settings and pipeline, at `now`.
    public init(store: ReplicaStore, now: Date) throws {
        self.init(store: store, rules: try CRMRules(store: store, now: now))
    }

    private func live(_ id: UUID, _ type: String) throws -> RecordState {
        guard let record = try store.record(id), record.type == type, !record.isDeleted else {
            throw CRMError.recordNotFound(type: type, id: id)
        }
        return record
    }

    /// Writes the values of `changes` that differ from `record`'s; returns whether it wrote.
    @discardableResult
    private func update(_ record: RecordState, _ changes: [String: FieldValue]) throws -> Bool {
        let differing = changes.filter { record.fields[$0.key]?.value ?? .null != $0.value }
        guard !differing.isEmpty else { return false }
        try store.update(record.id, differing)
        return true
    }

    /// Stamps a case with its SLA deadlines from its priority and `opened_at` (set to now when
    /// missing): what a new case, or a case whose priority changed, needs.
    @discardableResult
    public func setCaseDeadlines(_ caseID: UUID) throws -> RecordState {
        let record = try live(caseID, "case")
        let openedAt = record.text("opened_at").flatMap(CRMDate.instant) ?? rules.now
        var changes: [String: FieldValue] = ["opened_at": .text(CRMDate.format(instant: openedAt))]
        if let priority = record.text("priority"), let due = rules.deadlines(priority: priority, openedAt: openedAt) {
            changes["response_due"] = .text(CRMDate.format(instant: due.response))
            changes["resolution_due"] = .text(CRMDate.format(instant: due.resolution))
        }
        try update(record, changes)
        return try live(caseID, "case")
    }

    /// The id of the satisfaction follow-up of a case: one per case, whichever replica closed it.
    public static func followUpID(forCase caseID: UUID) -> UUID {
        DerivedID.make("case-satisfaction-follow-up", caseID.uuidString.lowercased())
    }

    /// A case was closed: stamps `closed_at` when missing and creates the satisfaction follow-up
    /// task (due a day later, for the case's owner, about its account and contact) unless it
    /// exists. Returns the follow-up's id.
    @discardableResult
    public func caseClosed(_ caseID: UUID) throws -> UUID {
        let record = try live(caseID, "case")
        try update(record, ["status": .text("closed"),
                            "closed_at": .text(record.text("closed_at") ?? CRMDate.format(instant: rules.now))])
        let followUp = Self.followUpID(forCase: caseID)
        guard try store.record(followUp) == nil else { return followUp }
        var values: [String: FieldValue] = [
            "kind": .text("task"), "status": .text("open"), "case": .text(caseID.uuidString),
            "subject": .text("Satisfaction follow-up: " + (record.text("subject") ?? record.text("number") ?? "case")),
            "due_at": .text(CRMDate.format(instant: rules.now + CRMDate.secondsPerDay)),
        ]
        for field in ["account", "contact", "owner"] { if let v = record.text(field) { values[field] = .text(v) } }
        try store.create("activity", id: followUp, values)
        return followUp
    }

    /// An opportunity was won: stamps `closed_at` with today when missing, and moves its account's
    /// lifecycle (`CRMRules.lifecycleAfterWin`) and clears its churn flag.
    public func opportunityWon(_ opportunityID: UUID) throws {
        let opportunity = try live(opportunityID, "opportunity")
        guard rules.isWon(opportunity) else { return }
        if opportunity.text("closed_at") == nil {
            try update(opportunity, ["closed_at": .text(CRMDate.format(day: rules.today))])
        }
        guard let accountID = opportunity.reference("account") else { return }
        let account = try live(accountID, "account")
        var changes: [String: FieldValue] = [:]
        if let next = CRMRules.lifecycleAfterWin(account.text("lifecycle_stage")) { changes["lifecycle_stage"] = .text(next) }
        if account.flag("churn_risk") { changes["churn_risk"] = .bool(false) }
        try update(account, changes)
    }

    /// Writes what the rules compute from time and data (tiers, churn and renewal flags, value
    /// segments, SLA breaches, escalations) where the stored value differs: the scheduled pass
    /// (`CRMScheduledPass`) with these rules. Running it again, or on another replica with the
    /// same data, writes nothing.
    @discardableResult
    public func applyComputed(manager: @escaping (String) -> String? = { _ in nil }) throws -> CRMScheduledPass.Report {
        try CRMScheduledPass(rules: rules, manager: manager).run(on: store)
    }
}
