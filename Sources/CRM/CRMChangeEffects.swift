import Access
import Foundation
import ReplicaStore
import SyncModel

/// The CRM's business policy where data changes: what follows from a change, written in the
/// same transaction as the change, on the server after every accepted batch and on a device
/// when its app writes (see `ChangeEffects`).
///
/// What follows:
/// - a case gets its number (`C<device>-<n>`, see `CaseNumbers`), `opened_at`, and its
///   response and resolution deadlines from its priority, type, complaint severity and its
///   account's value segment; `resolved_at` and `closed_at` when its status gets there; its
///   satisfaction follow-up task when it closes;
/// - an opportunity whose stage changes gets a stage-change entry, the stage's probability
///   (unless a later write set one), `closed_at` when it closes, and a win moves its account's
///   lifecycle to customer;
/// - a contact's consent change is stamped with when it was given or withdrawn;
/// - a lead marked converted by a plain write gets the account and contact a conversion makes.
///
/// What is refused (or, for consent where the tenant configures it, flagged):
/// - a computed field (`CRMDerivedFields`) typed by a user, unless the tenant allows an
///   override of it, which the record's `overrides` then lists;
/// - a call or an e-mail logged to a contact who withdrew consent to it (or is not to be
///   called), and a contact without e-mail consent added to an e-mail campaign.
///
/// Every value is derived from the change itself (a stage change is stamped with the time of
/// the write that made it, a follow-up is due a set time after the case's `closed_at`) and
/// every record made has an id derived from its cause, so the device that made a change and
/// the server that receives it compute the same values and the same records: the sync merges
/// them into one instead of keeping two.
public struct CRMChangeEffects: ChangeEffects {
    /// Who the store belongs to, which decides whose writes of computed fields are trusted.
    public enum Role: Sendable {
        /// The tenant's server: its own writes (its rules, an operator's tools) are trusted,
        /// writes from devices below are checked.
        case authority
        /// A device: every write its app makes is checked.
        case device
    }

    public let role: Role
    /// The clock for values that are not derived from a write (a case opened without a time).
    public let now: @Sendable () -> Date

    public init(role: Role, now: @escaping @Sendable () -> Date = Date.init) {
        self.role = role
        self.now = now
    }

    public func apply(_ changes: [RecordChange], in store: ReplicaStore) throws {
        let settings = try CRMSettings.cached(in: store)
        var context = Context(store: store, settings: settings, now: CRMDate.seconds(now()))
        for change in changes { context.changed[change.after.id] = change.after }
        for change in changes where !change.after.isDeleted {
            if !change.isEffect {
                try checkComputedFields(change, &context)
                try checkConsent(change, &context)
            }
            switch change.after.type {
            case "case": try caseChanged(change, &context)
            case "opportunity": try opportunityChanged(change, &context)
            case "contact": try contactChanged(change, &context)
            case "lead": try leadChanged(change, &context)
            default: break
            }
        }
    }

    /// What one run of the effects reads more than once.
    struct Context {
        let store: ReplicaStore
        let settings: CRMSettings
        let now: Int64
        var pipeline: CRMPipeline?
        /// The records of this round's changes, as they were handed in: a batch from a device
        /// that ran the rules brings the records they made and the records they read, so most
        /// look-ups need no query.
        var changed: [UUID: RecordState] = [:]

        /// The record with `id` as this round knows it, else as the store holds it. A state
        /// handed in may predate a write of this round; what is read here is only compared and
        /// written where it differs, so that costs at most a write of an equal value.
        func record(_ id: UUID) throws -> RecordState? {
            try changed[id] ?? store.record(id)
        }

        mutating func stages() throws -> CRMPipeline {
            if let pipeline { return pipeline }
            let loaded = CRMPipeline(stages: try PipelineStage.pipeline(in: RecordLookup(store)))
            pipeline = loaded
            return loaded
        }

        /// Writes the values of `changes` that differ from what `record` holds, if this replica
        /// may; returns whether it wrote. `record` may be a state from before an earlier write
        /// of this run: then a value may be written again, which changes nothing.
        @discardableResult
        func update(_ record: RecordState, _ changes: [String: FieldValue]) throws -> Bool {
            guard !record.isDeleted else { return false }
            let differing = changes.filter { record.fields[$0.key]?.value ?? .null != $0.value }
            guard !differing.isEmpty, store.mayWrite(differing, to: record, type: record.type, id: record.id) else { return false }
            try store.update(record.id, differing)
            return true
        }

        /// Creates a record unless one with its id exists (made by another replica, or
        /// deleted by a user: a deleted follow-up stays deleted), if this replica may.
        ///
        /// - Parameter fresh: the id derives from a write this replica made in this
        ///   transaction, which no other replica has seen yet: only this round can have made
        ///   the record, so the store is not asked (an import of deals asks it per deal).
        func createOnce(_ type: String, id: UUID, _ values: [String: FieldValue], fresh: Bool = false) throws {
            guard changed[id] == nil, try fresh || store.recordType(of: id) == nil,
                  store.mayWrite(values, to: nil, type: type, id: id) else { return }
            _ = try fresh ? store.createNew(type, id: id, values) : store.create(type, id: id, values)
        }
    }

    // MARK: Cases

    private func caseChanged(_ change: RecordChange, _ context: inout Context) throws {
        let record = change.after
        var values: [String: FieldValue] = [:]
        if record.text("number") == nil {
            values["number"] = .text(try CaseNumbers.next(in: context.store, role: role))
        }
        // Opened when it was created, by whichever replica created it.
        let openedAt = record.text("opened_at").flatMap(CRMDate.instant) ?? Self.seconds(of: record.liveness.timestamp)
        values["opened_at"] = .text(CRMDate.format(instant: openedAt))
        // Deadlines given with a new case (an import, an integration) are kept; a later change
        // of what sets the level of service moves them.
        let levelChanged = change.before != nil && ["priority", "type", "severity", "opened_at"].contains(where: change.wrote)
        if levelChanged || record.text("response_due") == nil || record.text("resolution_due") == nil {
            let segment = try record.reference("account").flatMap { try context.record($0) }?.text("value_segment")
            if let due = CRMRules(settings: context.settings, now: Date(timeIntervalSince1970: TimeInterval(context.now)))
                .deadlines(priority: record.text("priority"), type: record.text("type"), severity: record.text("severity"),
                           segment: segment, openedAt: openedAt) {
                if levelChanged || record.text("response_due") == nil { values["response_due"] = .text(CRMDate.format(instant: due.response)) }
                if levelChanged || record.text("resolution_due") == nil {
                    values["resolution_due"] = .text(CRMDate.format(instant: due.resolution))
                }
            }
        }
        let status = record.text("status")
        if change.wrote("status"), let statusTime = Self.writeTime(of: "status", in: record) {
            if status == "resolved" || status == "closed", record.text("resolved_at") == nil {
                values["resolved_at"] = .text(CRMDate.format(instant: statusTime))
            }
            if status == "closed", record.text("closed_at") == nil {
                values["closed_at"] = .text(CRMDate.format(instant: statusTime))
            }
        }
        try context.update(record, values)
        if status == "closed" { try makeFollowUp(of: record.id, record.values.merging(values) { $1 }, &context) }
    }

    /// The id of the satisfaction follow-up of a case: one per case, whichever replica closed it.
    public static func followUpID(forCase caseID: UUID) -> UUID {
        DerivedID.make("case-satisfaction-follow-up", caseID.uuidString.lowercased())
    }

    /// The satisfaction follow-up of a closed case: a task for the case's owner, due
    /// `followUpDays` after the case closed. `values` are the case's, as just written.
    private func makeFollowUp(of caseID: UUID, _ values: [String: FieldValue], _ context: inout Context) throws {
        func text(_ field: String) -> String? {
            if case .text(let value)? = values[field], !value.isEmpty { return value }
            return nil
        }
        let closed = text("closed_at").flatMap(CRMDate.instant) ?? context.now
        var task: [String: FieldValue] = [
            "kind": .text("task"), "status": .text("open"), "case": .text(caseID.uuidString),
            "subject": .text("Satisfaction follow-up: " + (text("number").map { "case \($0)" } ?? "case")
                + (text("subject").map { " (\($0))" } ?? "")),
            "due_at": .text(CRMDate.format(instant: closed + Int64(context.settings.followUpDays) * CRMDate.secondsPerDay)),
        ]
        for field in ["account", "contact", "owner"] { if let v = text(field) { task[field] = .text(v) } }
        try context.createOnce("activity", id: Self.followUpID(forCase: caseID), task)
    }

    // MARK: Opportunities

    /// The id of the stage-change entry for the write that set an opportunity's stage: the
    /// write's dot names it, so every replica that sees the write names the entry alike.
    public static func stageChangeID(opportunity: UUID, write: Dot) -> UUID {
        DerivedID.make("stage-change", opportunity.text(lowercased: true) + "/" + write.description)
    }

    private func opportunityChanged(_ change: RecordChange, _ context: inout Context) throws {
        let record = change.after
        guard change.wrote("stage"), case .register(let stageWrite)? = record.fields["stage"],
              let stageName = record.text("stage") else { return }
        let changedAt = Self.seconds(of: stageWrite.timestamp)
        let from = change.before?.text("stage")
        var entry: [String: FieldValue] = [
            "opportunity": .text(record.id.text()), "to_stage": .text(stageName),
            "changed_at": .text(CRMDate.format(instant: changedAt)),
        ]
        if let from, from != stageName { entry["from_stage"] = .text(from) }
        // A device knows its user from the rights it holds; so does the server for a write of
        // its own made with rights, an integration API key's (named `NAME@apikey.invalid`).
        // For a pushed write the server leaves who to the device that made it.
        if role == .device || change.origin == .local, let user = (context.store.localWriteCheck as? AccessPolicy)?.subject.user {
            entry["changed_by"] = .text(user)
        }
        // A deal this replica created in this transaction: its stage write is new everywhere.
        let fresh = change.before == nil && change.origin == .local && stageWrite.dot.replica == context.store.replicaID
        try context.createOnce("stage_change", id: Self.stageChangeID(opportunity: record.id, write: stageWrite.dot), entry, fresh: fresh)

        guard let stage = try context.stages().stage(stageName) else { return }
        // A probability written with or after the stage was chosen by someone; an older one
        // belongs to the previous stage.
        var probabilityIsOlder = true
        if case .register(let probability)? = record.fields["probability"], probability.value != .null {
            probabilityIsOlder = probability.timestamp < stageWrite.timestamp
        }
        try context.update(record, Self.valuesEntering(stage, probabilityIsOlder: probabilityIsOlder,
                                                       hasClosedAt: record.text("closed_at") != nil, at: changedAt))
        if stage.won, let accountID = record.reference("account"), let account = try context.record(accountID), !account.isDeleted {
            var accountValues: [String: FieldValue] = [:]
            if !CRMDerivedFields.overridden(account.text("overrides")).contains("lifecycle_stage"),
               let next = CRMRules.lifecycleAfterWin(account.text("lifecycle_stage")) {
                accountValues["lifecycle_stage"] = .text(next)
            }
            // Churn risk is the server's to compute: a device does not write it.
            if role == .authority, account.flag("churn_risk"),
               !CRMDerivedFields.overridden(account.text("overrides")).contains("churn_risk") {
                accountValues["churn_risk"] = .bool(false)
            }
            try context.update(account, accountValues)
        }
    }

    /// What an opportunity entering `stage` at `seconds` gets on itself: the stage's
    /// probability unless one was written with or after the stage, and its closing day when
    /// the stage closes it and it has none.
    static func valuesEntering(_ stage: PipelineStage, probabilityIsOlder: Bool, hasClosedAt: Bool,
                               at seconds: Int64) -> [String: FieldValue] {
        var values: [String: FieldValue] = [:]
        if probabilityIsOlder { values["probability"] = .integer(Int64(stage.probability)) }
        if stage.closed, !hasClosedAt {
            values["closed_at"] = .text(CRMDate.format(day: seconds.floorDivided(by: CRMDate.secondsPerDay)))
        }
        return values
    }

    /// What these effects would write on a new record of `type` with `values`, created by a
    /// local write at `seconds` (an opportunity's probability and closing day from its stage,
    /// in a store whose pipeline `pipeline` gives; a contact's consent stamps). Written with
    /// the record instead (as an import does), the effects find them there and write nothing
    /// more, so the record takes one write where it would take two. Fields the record is
    /// given are not among them.
    static func valuesOnCreation(of type: String, _ values: [String: FieldValue], pipeline: () throws -> CRMPipeline,
                                 at seconds: Int64) throws -> [String: FieldValue] {
        switch type {
        case "opportunity":
            guard let stageName = values["stage"]?.crmText, let stage = try pipeline().stage(stageName) else { return [:] }
            // Given with the stage, a probability is the same write's: not older than it.
            return valuesEntering(stage, probabilityIsOlder: (values["probability"] ?? .null) == .null,
                                  hasClosedAt: values["closed_at"]?.crmText != nil, at: seconds)
        case "contact":
            var stamps: [String: FieldValue] = [:]
            for kind in consentKinds where values[kind] != nil && values[kind + "_at"] == nil {
                stamps[kind + "_at"] = .text(CRMDate.format(instant: seconds))
            }
            return stamps
        default:
            return [:]
        }
    }

    // MARK: Leads

    /// A lead marked converted by a plain write (a generic editor, an integration) rather than
    /// by `CRMStore.convert`: the account and contact a conversion makes, with ids derived from
    /// the lead, so that replicas converting it offline make them once.
    private func leadChanged(_ change: RecordChange, _ context: inout Context) throws {
        let lead = change.after
        guard change.wrote("status"), lead.text("status") == "converted", lead.reference("converted_contact") == nil else { return }
        let key = lead.id.uuidString.lowercased()
        let person = [lead.text("first_name"), lead.text("last_name")].compactMap { $0 }.joined(separator: " ")
        var account = lead.reference("converted_account")
        if account == nil {
            let id = DerivedID.make("lead-conversion-account", key)
            var values: [String: FieldValue] = ["name": .text(lead.text("company") ?? (person.isEmpty ? "Lead \(key.prefix(8))" : person)),
                                                "lifecycle_stage": .text("prospect")]
            for (from, to) in [("owner", "owner"), ("phone", "phone")] { if let v = lead.text(from) { values[to] = .text(v) } }
            try context.createOnce("account", id: id, values)
            if try context.record(id) != nil { account = id }
        }
        let contactID = DerivedID.make("lead-conversion-contact", key)
        var contact: [String: FieldValue] = ["last_name": .text(lead.text("last_name") ?? person)]
        for field in ["first_name", "title", "email", "phone", "owner"] { if let v = lead.text(field) { contact[field] = .text(v) } }
        if let account { contact["account"] = .text(account.uuidString) }
        try context.createOnce("contact", id: contactID, contact)
        guard try context.record(contactID) != nil else { return }
        var values: [String: FieldValue] = ["converted_contact": .text(contactID.uuidString)]
        if let account { values["converted_account"] = .text(account.uuidString) }
        if lead.text("converted_at") == nil, let time = Self.writeTime(of: "status", in: lead) {
            values["converted_at"] = .text(CRMDate.format(instant: time))
        }
        try context.update(lead, values)
    }

    // MARK: Contacts

    private func contactChanged(_ change: RecordChange, _ context: inout Context) throws {
        let record = change.after
        var values: [String: FieldValue] = [:]
        for kind in Self.consentKinds where change.wrote(kind) && !change.wrote(kind + "_at") {
            if let time = Self.writeTime(of: kind, in: record) { values[kind + "_at"] = .text(CRMDate.format(instant: time)) }
        }
        try context.update(record, values)
    }

    /// The consents a contact gives or withdraws, each stamped in `<kind>_at`.
    static let consentKinds = ["consent_email", "consent_calls", "consent_data_processing"]

    // MARK: Computed fields

    /// Refuses a computed field a user typed (see `CRMDerivedFields`). The server trusts its
    /// own writes; a lifecycle moved to customer or core is a user's to make only with a won
    /// deal to show for it, which is how a device records the win it just made.
    private func checkComputedFields(_ change: RecordChange, _ context: inout Context) throws {
        if role == .authority && change.origin == .local { return }
        let computed = CRMDerivedFields.fields(of: change.after.type)
        guard !computed.isEmpty else { return }
        let record = change.after
        var overridden = CRMDerivedFields.overridden(record.text("overrides"))
        let before = CRMDerivedFields.overridden(change.before?.text("overrides"))
        for field in overridden.subtracting(before) where !context.settings.overridable.contains("\(record.type).\(field)") {
            throw ModelError.invalidFieldValue(record: record.id.uuidString, field: "overrides", reason:
                "this tenant does not allow '\(field)' of a \(record.type) to be set by hand")
        }
        for field in computed where change.wrote(field) {
            if field == "lifecycle_stage", try lifecycleIsEarned(record, &context) { continue }
            guard context.settings.overridable.contains("\(record.type).\(field)") else {
                throw ModelError.invalidFieldValue(record: record.id.uuidString, field: field, reason:
                    "\(field) is computed by the tenant's rules (\(Self.why(field))); this tenant does not allow setting it by hand")
            }
            overridden.insert(field)
        }
        let value = CRMDerivedFields.overridesValue(overridden)
        if value != (record.text("overrides") ?? "") { try context.update(record, ["overrides": .text(value)]) }
    }

    /// Whether an account's lifecycle stage is one a user may set: before the first sale, or
    /// churned; customer or core only for an account with a win to show for it: a deal won now,
    /// or one whose stage history records a win (the device that won it moved the lifecycle,
    /// and a colleague's later change of the deal does not undo the sale having happened).
    private func lifecycleIsEarned(_ account: RecordState, _ context: inout Context) throws -> Bool {
        guard let stage = account.text("lifecycle_stage"), stage == "customer" || stage == "core" else { return true }
        let pipeline = try context.stages()
        // References may be written in either case (the typed API writes upper, other clients lower).
        let crm = CRMStore(store: context.store)
        for deal in try crm.referencing("opportunity", "account", account.id) {
            if pipeline.stage(deal.text("stage"))?.won == true { return true }
            let history = try crm.referencing("stage_change", "opportunity", deal.id)
            if history.contains(where: { pipeline.stage($0.text("to_stage"))?.won == true }) { return true }
        }
        return false
    }

    private static func why(_ field: String) -> String {
        switch field {
        case "tier": "from spend over 12 months: won deals, orders or both, as tier.basis says"
        case "churn_risk": "from activity and wins"
        case "value_segment": "from revenue, pipeline, activity and strategic fit"
        case "renewal_due": "from the renewal date and open opportunities"
        case "lifecycle_stage": "customer and core follow from a won deal"
        case "sla_breached": "from the case's deadlines"
        default: "by a rule"
        }
    }

    // MARK: Consent

    /// Refuses (or flags, as the tenant configures) a call or e-mail to a contact who withdrew
    /// consent to it, and a contact without e-mail consent in an e-mail campaign. Judged when
    /// the record is made or pointed at another contact, against the consent as it stood when
    /// the activity happened, so a call made before a withdrawal stays editable.
    /// Whether a new record of `type` with `values` is one `checkConsent` judges, and may
    /// refuse: a call or an e-mail to a contact, a contact in a campaign. An import writes only
    /// those in a savepoint of their own, so that a refusal rolls back one row.
    static func consentMayRefuse(_ type: String, _ values: [String: FieldValue]) -> Bool {
        switch type {
        case "activity": values["contact"] != nil && consentCheckedKinds.contains(values["kind"]?.crmText ?? "")
        case "campaign_member": values["contact"] != nil && values["campaign"] != nil
        default: false
        }
    }

    /// The kinds of activity that reach a person through a channel they may have refused.
    static let consentCheckedKinds: Set<String> = ["call", "email"]

    private func checkConsent(_ change: RecordChange, _ context: inout Context) throws {
        let record = change.after
        let violation: String?
        switch record.type {
        case "activity":
            guard Self.consentCheckedKinds.contains(record.text("kind") ?? ""),
                  ["kind", "contact", "occurred_at", "due_at"].contains(where: change.wrote),
                  let contactID = record.reference("contact"), let contact = try context.record(contactID) else { return }
            let time = (record.text("occurred_at") ?? record.text("due_at")).flatMap(CRMDate.instant) ?? context.now
            violation = record.text("kind") == "call" ? Self.callViolation(contact, at: time) : Self.emailViolation(contact, at: time)
        case "campaign_member":
            guard ["contact", "campaign"].contains(where: change.wrote),
                  let contactID = record.reference("contact"), let contact = try context.record(contactID),
                  let campaign = try record.reference("campaign").flatMap({ try context.record($0) }),
                  campaign.text("type") == "email", contact.text("consent_email") != "granted" else { return }
            violation = "\(Self.name(of: contact)) has not consented to e-mail, so cannot be in the e-mail campaign '\(campaign.text("name") ?? "")'"
        default:
            return
        }
        guard let violation else { return }
        switch context.settings.consentEnforcement {
        case .refuse:
            throw ModelError.invalidFieldValue(record: record.id.uuidString, field: "contact", reason: violation)
        case .flag:
            try context.update(record, ["consent_warning": .text(violation)])
        }
    }

    /// A call is judged against do-not-call as it stood when the call was made: the flag
    /// counts from when it was written, so the calls of an org moving in, all made before its
    /// contacts were marked here, are its history and are kept, while a call made since is not.
    private static func callViolation(_ contact: RecordState, at time: Int64) -> String? {
        if contact.flag("do_not_call"), (writeTime(of: "do_not_call", in: contact) ?? .min) <= time {
            return "\(name(of: contact)) is marked do-not-call"
        }
        return withdrawal(contact, "consent_calls", at: time).map { "\(name(of: contact)) withdrew consent to calls on \($0)" }
    }

    private static func emailViolation(_ contact: RecordState, at time: Int64) -> String? {
        withdrawal(contact, "consent_email", at: time).map { "\(name(of: contact)) withdrew consent to e-mail on \($0)" }
    }

    /// When consent `kind` was withdrawn, if it was by `time` (a withdrawal without a time
    /// counts from always).
    private static func withdrawal(_ contact: RecordState, _ kind: String, at time: Int64) -> String? {
        guard contact.text(kind) == "withdrawn" else { return nil }
        guard let at = contact.text(kind + "_at"), let withdrawn = CRMDate.instant(at) else { return "an unknown date" }
        return withdrawn <= time ? at : nil
    }

    private static func name(of contact: RecordState) -> String {
        let name = [contact.text("first_name"), contact.text("last_name")].compactMap { $0 }.joined(separator: " ")
        return name.isEmpty ? "contact \(contact.id.uuidString.lowercased())" : name
    }

    // MARK: Time

    /// Seconds since 1970 of a write's timestamp.
    static func seconds(of timestamp: HLCTimestamp) -> Int64 { Int64(timestamp.wallMilliseconds / 1000) }

    /// When the value of `field` was written.
    static func writeTime(of field: String, in record: RecordState) -> Int64? {
        guard case .register(let register)? = record.fields[field] else { return nil }
        return seconds(of: register.timestamp)
    }
}

/// Case numbers made without coordination: `C<device number>-<n>`, where the tenant's registry
/// gave the device its number when it enrolled and `n` counts the cases this replica opened;
/// the server's own are `CS-<n>`. Chosen over a number the server assigns at sync: a rep who
/// opens a case offline tells the customer its number at once, and it never changes.
public enum CaseNumbers {
    /// The local setting under which a device keeps the number its registry gave it.
    public static let deviceNumberSetting = "device.number"
    static let counterSetting = "crm.case_counter"

    /// The number this replica's registry gave it, as `deviceNumberSetting` keeps it; `nil`
    /// before it is known (and on the server, which has none).
    public static func deviceNumber(in store: ReplicaStore) throws -> Int? {
        try store.localSetting(deviceNumberSetting).flatMap { Int(String(decoding: $0, as: UTF8.self)) }
    }

    /// The next case number of this replica, counted in the open transaction.
    static func next(in store: ReplicaStore, role: CRMChangeEffects.Role) throws -> String {
        let last = try store.localSetting(counterSetting).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
        try store.setLocalSetting(counterSetting, Data(String(last + 1).utf8))
        return prefix(in: store, role: role) + "-" + String(format: "%04d", last + 1)
    }

    /// `C<number>` on a device or a branch office that knows its number (the registry numbers
    /// both from one sequence); `CS` on the centre, which has none; before a device or branch
    /// knows it (never connected since an upgrade), `CR` and the start of its replica id,
    /// unique in practice.
    static func prefix(in store: ReplicaStore, role: CRMChangeEffects.Role) -> String {
        if let number = try? deviceNumber(in: store) {
            return "C\(number)"
        }
        if role == .authority && !store.relaysDownstream { return "CS" }
        return "CR" + store.replicaID.rawValue.filter(\.isHexDigit).prefix(6).uppercased()
    }
}

extension CRMSettings {
    /// The tenant's settings as `store` holds them, kept by the store until a `setting` record
    /// changes. Problems are left to reports, which show them.
    static func cached(in store: ReplicaStore) throws -> CRMSettings {
        try RecordLookup(store).cached("crm.settings") { try load(from: store).settings }
    }
}
