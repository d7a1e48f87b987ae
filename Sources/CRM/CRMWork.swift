import Foundation
import ReplicaStore
import SyncModel

// The day-to-day work of a field-sales rep over the local store: opening and answering cases,
// logging calls and visits, moving deals, the tasks due, an account at a glance. The `rapport`
// command line and an app (through `RapportClient.crm`) reach the same operations here.
//
// These write only what the user means (a case's subject and priority, a deal's new stage,
// a case's `closed` status); what follows from it (a case's number and deadlines, stamps,
// probabilities, follow-up tasks) is the store's effects' to write (`CRMChangeEffects`), in the
// same transaction, on every replica alike. Each operation settles the effects before it reads
// its record back, so what it returns is complete, inside a caller's transaction too.

extension CRMStore {
    // MARK: Cases

    /// Opens a service case owned by the acting user (`user`), with status `new`. Its number,
    /// opening time and deadlines are left empty for the store's effects to fill in.
    ///
    /// - Parameters:
    ///   - priority: one of `CRMSchema.casePriorities`.
    ///   - type: one of `CRMSchema.caseTypes`; `severity` (one of `CRMSchema.complaintSeverities`)
    ///     grades a complaint.
    ///   - channel: how the customer got in touch, one of `CRMSchema.caseChannels`.
    /// - Returns: the case with what its effects wrote (number, `opened_at`, deadlines).
    /// - Throws: `ReplicaStoreError.invalidRecord` naming the field for a value the schema or the
    ///   store's rules refuse (an account that does not exist, say); nothing is written then.
    @discardableResult
    public func openCase(subject: String, account: UUID? = nil, contact: UUID? = nil, priority: String = "normal",
                         type: String? = nil, severity: String? = nil, description: String? = nil,
                         channel: String? = nil) throws -> ServiceCase {
        let id = UUID.newRecordID()
        var values: [String: FieldValue] = ["subject": .text(subject), "priority": .text(priority), "status": .text("new")]
        let optional: [(String, String?)] = [
            ("account", account?.uuidString), ("contact", contact?.uuidString), ("type", type), ("severity", severity),
            ("description", description), ("channel", channel), ("owner", user),
        ]
        for (field, value) in optional { if let value { values[field] = .text(value) } }
        // Not `create(_:)`, whose entity would write an empty number: it is the effects' to assign.
        return try store.transaction {
            try store.create(ServiceCase.recordType, id: id, values)
            try store.settleEffects()
            guard let created = try get(ServiceCase.self, id) else { throw ReplicaStoreError.recordNotFound(id) }
            return created
        }
    }

    /// Answers a case: stamps `first_response_at` with now unless it was answered before,
    /// moves a `new` case to `open`, and with a `note` logs it as an activity of kind `note` on
    /// the case (and its account and contact), owned by the acting user. One transaction.
    ///
    /// - Throws: `ReplicaStoreError.recordNotFound` for no such live case; an invalid record
    ///   error naming `status` for a case that is resolved or closed already.
    @discardableResult
    public func respond(toCase id: UUID, note: String? = nil) throws -> (serviceCase: ServiceCase, note: Activity?) {
        try store.transaction {
            var serviceCase = try openServiceCase(id, doing: "answer")
            if serviceCase.status == "new" { serviceCase.status = "open" }
            if serviceCase.firstResponseAt == nil { serviceCase.firstResponseAt = timestamp() }
            serviceCase = try update(serviceCase)
            guard let note else { return (serviceCase, nil) }
            var activity = Activity(kind: "note", subject: note, account: serviceCase.account, contact: serviceCase.contact, owner: user)
            activity.serviceCase = id
            activity.status = "done"
            activity.occurredAt = timestamp()
            return (serviceCase, try create(activity))
        }
    }

    /// Closes a case (status `closed`), with the customer's satisfaction (1 to 5) when given.
    ///
    /// - Throws: `ReplicaStoreError.recordNotFound` for no such live case; an invalid record
    ///   error naming `status` for a case closed already, or `satisfaction` out of range.
    @discardableResult
    public func closeCase(_ id: UUID, satisfaction: Int? = nil) throws -> ServiceCase {
        try store.transaction {
            guard var serviceCase = try get(ServiceCase.self, id) else { throw ReplicaStoreError.recordNotFound(id) }
            guard serviceCase.status != "closed" else { throw refusal(id, "status", "case \(Self.label(serviceCase)) is closed already") }
            serviceCase.status = "closed"
            if let satisfaction { serviceCase.satisfaction = satisfaction }
            return try update(serviceCase)
        }
    }

    /// The case whose `number` is `number` (compared without regard to case and surrounding
    /// spaces), `nil` when this store holds none: what a customer quotes on the phone.
    public func caseID(forNumber number: String) throws -> UUID? {
        let wanted = number.trimmingCharacters(in: .whitespaces).lowercased()
        guard !wanted.isEmpty else { return nil }
        var found: UUID?
        try store.scan(ServiceCase.recordType, fields: ["number"]) { id, values in
            if found == nil, case .text(let text) = values[0], text.lowercased() == wanted { found = id }
        }
        return found
    }

    // MARK: Activities

    /// Logs something that happened (a call, visit or meeting; any of `CRMSchema.activityKinds`):
    /// an activity with status `done`, `occurred_at` the given moment or now, owned by the
    /// acting user.
    ///
    /// - Parameters:
    ///   - minutes: how long it took (`duration_minutes`).
    ///   - outcome: a call's outcome, one of `CRMSchema.callOutcomes`.
    /// - Throws: `ReplicaStoreError.invalidRecord` for a value the schema or the store's rules
    ///   refuse (among them, once the rules enforce consent, a call to a contact who withdrew it).
    @discardableResult
    public func log(_ kind: String, subject: String, contact: UUID? = nil, account: UUID? = nil, opportunity: UUID? = nil,
                    serviceCase: UUID? = nil, at moment: Date? = nil, minutes: Int? = nil, outcome: String? = nil) throws -> Activity {
        var activity = Activity(kind: kind, subject: subject, account: account, contact: contact, opportunity: opportunity, owner: user)
        activity.serviceCase = serviceCase
        activity.status = "done"
        activity.occurredAt = moment.map { CRMDate.format(instant: CRMDate.seconds($0)) } ?? timestamp()
        activity.durationMinutes = minutes
        activity.callOutcome = outcome
        return try create(activity)
    }

    /// The open tasks (activities of kind `task` whose status is `open`, or unset: nobody marked
    /// them done) owned by `owner`, soonest due first, those without a due date last.
    ///
    /// - Parameter overdueAt: when given, only the tasks due before this moment.
    public func tasks(of owner: String, overdueAt: Date? = nil) throws -> [Activity] {
        let cutoff = overdueAt.map(CRMDate.seconds)
        return try query(Activity.self, where: "owner", equals: owner)
            .filter { $0.kind == "task" && ($0.status ?? "open") == "open" }
            .map { ($0, $0.dueAt.flatMap(CRMDate.instant)) }
            .filter { _, due in cutoff.map { cutoff in due.map { $0 < cutoff } ?? false } ?? true }
            .sorted { ($0.1 ?? .max, $0.0.subject) < ($1.1 ?? .max, $1.0.subject) }
            .map(\.0)
    }

    // MARK: Opportunities

    /// Moves an opportunity to `stage` of the tenant's pipeline. Only the stage is written:
    /// its probability, close date and history follow from the store's effects.
    ///
    /// - Throws: an invalid record error naming `stage` and listing the pipeline's stages when
    ///   `stage` is not one of them; `ReplicaStoreError.recordNotFound` for no such opportunity.
    @discardableResult
    public func moveOpportunity(_ id: UUID, toStage stage: String) throws -> Opportunity {
        try store.transaction {
            try checkStage(stage, of: id)
            guard var opportunity = try get(Opportunity.self, id) else { throw ReplicaStoreError.recordNotFound(id) }
            opportunity.stage = stage
            return try update(opportunity)
        }
    }

    /// Throws an invalid record error listing the tenant's stages unless `stage` is one of them.
    public func checkStage(_ stage: String, of record: UUID) throws {
        let stages = try pipeline().map(\.name)
        guard stages.contains(stage) else {
            throw refusal(record, "stage", "'\(stage)' is not a stage of the tenant's pipeline; the stages are: \(stages.joined(separator: ", "))")
        }
    }

    // MARK: Accounts

    /// An account at a glance, its 360 view: its own figures, its contacts with their consent,
    /// its open opportunities, its latest activities (the account's own and those of its
    /// contacts, deals and cases) and its open cases.
    ///
    /// - Parameter recentActivities: how many activities to include, newest first.
    /// - Throws: `ReplicaStoreError.recordNotFound` for no such live account.
    public func overview(ofAccount id: UUID, recentActivities: Int = 10) throws -> AccountOverview {
        guard let account = try store.record(id), account.type == Account.recordType, !account.isDeleted else {
            throw ReplicaStoreError.recordNotFound(id)
        }
        let stages = try pipeline()
        let contacts = try referencing(Contact.recordType, "account", id)
        let opportunities = try referencing(Opportunity.recordType, "account", id)
        let cases = try referencing(ServiceCase.recordType, "account", id)
        var activities: [UUID: RecordState] = [:]
        for (field, records) in [("account", [account]), ("contact", contacts), ("opportunity", opportunities), ("case", cases)] {
            for record in records {
                for activity in try referencing(Activity.recordType, field, record.id) { activities[activity.id] = activity }
            }
        }
        let moment = { (activity: RecordState) in (activity.text("occurred_at") ?? activity.text("due_at")).flatMap(CRMDate.instant) }
        return AccountOverview(
            account: .init(account),
            contacts: contacts.map(AccountOverview.ContactLine.init)
                .sorted { ($0.name.lowercased(), $0.id.uuidString) < ($1.name.lowercased(), $1.id.uuidString) },
            openOpportunities: opportunities.filter { opportunity in
                // A stage the pipeline does not know counts as open, as in the reports.
                stages.first { $0.name == opportunity.text("stage") }?.isClosed != true
            }.map(AccountOverview.OpportunityLine.init).sorted { ($0.expectedClose ?? "~", $0.name) < ($1.expectedClose ?? "~", $1.name) },
            recentActivities: activities.values
                .map { ($0, moment($0) ?? .min) }
                .sorted { ($0.1, $0.0.id.uuidString) > ($1.1, $1.0.id.uuidString) }
                .prefix(max(recentActivities, 0)).map { AccountOverview.ActivityLine($0.0) },
            openCases: cases.filter(CRMRules.isOpenCase).map(AccountOverview.CaseLine.init)
                .sorted { ($0.openedAt ?? "~", $0.number) < ($1.openedAt ?? "~", $1.number) })
    }

    // MARK: Finding records

    /// The live records of `type` whose fields hold every value of `conditions`, in change order
    /// (least recently changed first), at most `limit` of them. A condition on an indexed field
    /// (`CRMSchema.indexedFields`) is looked up in the index, the others are checked on the
    /// records found; a record id matches however its letters are cased, as ids typed on a
    /// device may be lowercase.
    public func records(ofType type: String, where conditions: [(field: String, value: FieldValue)],
                        limit: Int? = nil) throws -> [RecordState] {
        var candidates: [RecordState]
        if let (field, text) = conditions.lazy.compactMap({ condition -> (String, String)? in
            guard CRMSchema.indexedFields.contains(condition.field), case .text(let text) = condition.value else { return nil }
            return (condition.field, text)
        }).first {
            candidates = try records(ofType: type, where: field, equalsText: text)
        } else {
            candidates = try store.records(ofType: type)
        }
        // A counter nobody changed holds no value, and its total is 0.
        let counters = Set((store.schema.types[type]?.fields ?? [:]).filter { $0.value == .counter }.keys)
        candidates = candidates.filter { record in
            conditions.allSatisfy {
                Self.same(record.fields[$0.field]?.value ?? (counters.contains($0.field) ? .integer(0) : .null), $0.value)
            }
        }
        return limit.map { Array(candidates.prefix(max($0, 0))) } ?? candidates
    }

    /// Whether two values are equal, ids compared whatever their case.
    static func same(_ stored: FieldValue, _ wanted: FieldValue) -> Bool {
        if case .text(let a) = stored, case .text(let b) = wanted, let x = UUID(uuidString: a), let y = UUID(uuidString: b) {
            return x == y
        }
        return stored == wanted
    }

    /// The live records of `type` whose `field` holds `text`, both spellings of an id, in
    /// change order.
    private func records(ofType type: String, where field: String, equalsText text: String) throws -> [RecordState] {
        guard let id = UUID(uuidString: text) else { return try store.records(ofType: type, where: field, equals: text) }
        let upper = try store.records(ofType: type, where: field, equals: id.uuidString)
        let lower = try store.records(ofType: type, where: field, equals: id.uuidString.lowercased())
        guard !upper.isEmpty, !lower.isEmpty else { return upper + lower }
        // Each lookup is in change order; together they need their sequence numbers.
        return try (upper + lower).map { ($0, try store.change(of: $0.id)?.sequence ?? 0) }.sorted { $0.1 < $1.1 }.map(\.0)
    }

    /// The live records of `type` that reference `id` through `field`, however the id is cased.
    func referencing(_ type: String, _ field: String, _ id: UUID) throws -> [RecordState] {
        try records(ofType: type, where: field, equalsText: id.uuidString)
    }

    // MARK: Helpers

    /// The live case `id`, refusing one that is resolved or closed.
    private func openServiceCase(_ id: UUID, doing what: String) throws -> ServiceCase {
        guard let serviceCase = try get(ServiceCase.self, id) else { throw ReplicaStoreError.recordNotFound(id) }
        guard !["resolved", "closed"].contains(serviceCase.status) else {
            throw refusal(id, "status", "case \(Self.label(serviceCase)) is \(serviceCase.status); reopen it (status=open) to \(what) it")
        }
        return serviceCase
    }

    /// A case as people name it: its number, else its id.
    static func label(_ serviceCase: ServiceCase) -> String {
        serviceCase.number.isEmpty ? serviceCase.id.uuidString.lowercased() : serviceCase.number
    }

    private func refusal(_ record: UUID, _ field: String, _ reason: String) -> ReplicaStoreError {
        .invalidRecord(.invalidFieldValue(record: record.uuidString.lowercased(), field: field, reason: reason))
    }
}

/// An account at a glance, as `CRMStore.overview(ofAccount:)` reads it from the local store:
/// what a rep looks at before a visit. Values are as stored (computed ones as the rules last
/// wrote them); dates are the schema's texts.
public struct AccountOverview: Sendable, Hashable, Codable {
    /// The account's own figures.
    public struct AccountLine: Sendable, Hashable, Codable {
        public var id: UUID
        public var name: String
        public var owner: String?
        public var industry: String?
        public var tier: String?
        public var lifecycleStage: String?
        public var valueSegment: String?
        public var loyaltyPoints: Int64
        public var churnRisk: Bool?
        public var renewalDate: String?
        /// Whether the renewal is near with nothing in the pipeline for it.
        public var renewalDue: Bool?

        init(_ record: RecordState) {
            id = record.id
            name = record.text("name") ?? ""
            owner = record.text("owner")
            industry = record.text("industry")
            tier = record.text("tier")
            lifecycleStage = record.text("lifecycle_stage")
            valueSegment = record.text("value_segment")
            loyaltyPoints = record.integer("loyalty_points") ?? 0
            churnRisk = record.optionalFlag("churn_risk")
            renewalDate = record.text("renewal_date")
            renewalDue = record.optionalFlag("renewal_due")
        }
    }

    /// A contact with how they may be reached.
    public struct ContactLine: Sendable, Hashable, Codable {
        public var id: UUID
        /// First and last name.
        public var name: String
        public var title: String?
        public var email: String?
        public var phone: String?
        /// `granted`, `withdrawn`, or `nil` when never asked.
        public var consentEmail: String?
        public var consentCalls: String?
        public var consentDataProcessing: String?
        public var doNotCall: Bool?

        init(_ record: RecordState) {
            id = record.id
            name = [record.text("first_name"), record.text("last_name")].compactMap { $0 }.joined(separator: " ")
            title = record.text("title")
            email = record.text("email")
            phone = record.text("phone") ?? record.text("mobile")
            consentEmail = record.text("consent_email")
            consentCalls = record.text("consent_calls")
            consentDataProcessing = record.text("consent_data_processing")
            doNotCall = record.optionalFlag("do_not_call")
        }
    }

    /// An opportunity not yet won or lost.
    public struct OpportunityLine: Sendable, Hashable, Codable {
        public var id: UUID
        public var name: String
        public var stage: String
        public var amount: Double?
        public var currency: String?
        public var probability: Int64?
        public var expectedClose: String?
        public var owner: String?

        init(_ record: RecordState) {
            id = record.id
            name = record.text("name") ?? ""
            stage = record.text("stage") ?? ""
            amount = record.number("amount")
            currency = record.text("currency")
            probability = record.integer("probability")
            expectedClose = record.text("expected_close")
            owner = record.text("owner")
        }
    }

    /// An activity: something done, or a task to do.
    public struct ActivityLine: Sendable, Hashable, Codable {
        public var id: UUID
        public var kind: String
        public var subject: String
        public var status: String?
        /// When it happened, else when it is due.
        public var at: String?
        public var owner: String?

        init(_ record: RecordState) {
            id = record.id
            kind = record.text("kind") ?? ""
            subject = record.text("subject") ?? ""
            status = record.text("status")
            at = record.text("occurred_at") ?? record.text("due_at")
            owner = record.text("owner")
        }
    }

    /// A case not yet resolved or closed, with its deadlines.
    public struct CaseLine: Sendable, Hashable, Codable {
        public var id: UUID
        /// `""` until the store's effects number it.
        public var number: String
        public var subject: String
        public var priority: String
        public var status: String
        public var type: String?
        public var severity: String?
        public var openedAt: String?
        public var responseDue: String?
        public var resolutionDue: String?
        public var firstResponseAt: String?
        public var slaBreached: Bool?

        init(_ record: RecordState) {
            id = record.id
            number = record.text("number") ?? ""
            subject = record.text("subject") ?? ""
            priority = record.text("priority") ?? ""
            status = record.text("status") ?? ""
            type = record.text("type")
            severity = record.text("severity")
            openedAt = record.text("opened_at")
            responseDue = record.text("response_due")
            resolutionDue = record.text("resolution_due")
            firstResponseAt = record.text("first_response_at")
            slaBreached = record.optionalFlag("sla_breached")
        }
    }

    public var account: AccountLine
    /// By name.
    public var contacts: [ContactLine]
    /// By expected close date, those without one last.
    public var openOpportunities: [OpportunityLine]
    /// Newest first.
    public var recentActivities: [ActivityLine]
    /// Oldest first.
    public var openCases: [CaseLine]
}

extension RecordState {
    /// A boolean field, `nil` when unset: for showing, where "not set" and "no" differ.
    fileprivate func optionalFlag(_ field: String) -> Bool? {
        guard case .bool(let value)? = fields[field]?.value else { return nil }
        return value
    }
}
