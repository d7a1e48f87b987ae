import Foundation
import ReplicaStore
import SyncModel

/// The rules that change with time alone, run by the tenant's server on a schedule: an
/// account's tier from its spend over a rolling 12 months (won deals, orders or both, as the
/// tenant's `tier.basis` says), its churn flag, renewal flag and
/// value segment; a case's SLA breach, and the escalation of an open case whose deadline passed.
///
/// Written as ordinary local writes of the store's replica, so they sync to every device, and
/// only where a value changes: a second pass over the same data writes nothing. A field listed
/// in the record's `overrides` (`CRMDerivedFields.overridden`) is left alone.
///
/// Built for a large tenant (100,000 accounts, 300,000 activities): one read of every record
/// type it needs, decoding only the fields the rules read (`ReplicaStore.scanWithSequence`),
/// then the writes in short transactions, so that the sessions writing the same store through
/// other handles wait for one chunk at most, never for the whole pass. A record that changed
/// between the read and its write is skipped, never overwritten with a value computed from
/// what it held before: the next pass computes it again from what it holds then.
public struct CRMScheduledPass {
    /// The rules to compute with; `nil` loads the tenant's own settings and pipeline from the
    /// store at `now` when the pass reads.
    public var rules: CRMRules?
    /// The moment the pass computes at.
    public var now: Date
    /// The manager of a case owner (an e-mail), who owns the escalation of the owner's case;
    /// `nil` leaves it with the owner. The CRM has no user directory; the server passes its
    /// own (see `managers(in:)`).
    public var manager: (String) -> String?
    /// Records written per transaction.
    public var chunkSize = 500
    /// Asked between chunks: a pass that should stop (a server shutting down) ends after the
    /// chunk in hand; what it did not write, the next pass does.
    public var isCancelled: () -> Bool = { false }

    /// A pass at `now` with the tenant's own settings and pipeline.
    public init(now: Date, manager: @escaping (String) -> String? = { _ in nil }) {
        self.now = now
        self.manager = manager
    }

    /// A pass with explicit rules (settings, pipeline and clock).
    public init(rules: CRMRules, manager: @escaping (String) -> String? = { _ in nil }) {
        self.rules = rules
        self.now = Date(timeIntervalSince1970: TimeInterval(rules.now))
        self.manager = manager
    }

    // MARK: Results

    /// Records changed per rule.
    public struct Counts: Sendable, Equatable, Codable {
        public var tiers = 0
        public var churnFlags = 0
        public var renewalFlags = 0
        public var segments = 0
        public var breaches = 0
        /// Escalation activities made (one per missed deadline).
        public var escalations = 0

        public init(tiers: Int = 0, churnFlags: Int = 0, renewalFlags: Int = 0, segments: Int = 0, breaches: Int = 0,
                    escalations: Int = 0) {
            self.tiers = tiers
            self.churnFlags = churnFlags
            self.renewalFlags = renewalFlags
            self.segments = segments
            self.breaches = breaches
            self.escalations = escalations
        }

        static func + (a: Counts, b: Counts) -> Counts {
            Counts(tiers: a.tiers + b.tiers, churnFlags: a.churnFlags + b.churnFlags, renewalFlags: a.renewalFlags + b.renewalFlags,
                   segments: a.segments + b.segments, breaches: a.breaches + b.breaches, escalations: a.escalations + b.escalations)
        }
    }

    /// A record the pass could not write because the store refused the write, with why.
    public struct Refusal: Sendable, Equatable, Codable {
        public var record: UUID
        public var reason: String
    }

    /// What a pass did.
    public struct Report: Sendable, Equatable, Codable {
        /// The moment computed at, as the schema writes instants.
        public var at: String
        /// Records written, per rule (a record changed by two rules counts under both).
        public var written = Counts()
        /// Records read: every record of the types the rules read.
        public var recordsRead = 0
        /// Records written: accounts and cases updated, escalation activities made.
        public var recordsWritten = 0
        /// Records that changed between the read and their write, left for the next pass.
        public var skipped = 0
        /// Records the store refused to write (a record another version left invalid), at
        /// most 20 of them; the pass goes on with the others.
        public var refused: [Refusal] = []
        /// Whether the pass stopped before writing everything (`isCancelled`).
        public var cancelled = false
        /// The tenant's `setting` records whose value their key cannot take: computed with the
        /// key's default instead.
        public var settingProblems: [SettingProblem] = []
        public var readSeconds = 0.0
        public var writeSeconds = 0.0
        /// Both together.
        public var seconds = 0.0

        public init(at: String) { self.at = at }

        /// The figures a log line carries, by name.
        public var logDetails: [String: String] {
            let w = written
            var details = ["read": "\(recordsRead)", "tiers": "\(w.tiers)", "churn_flags": "\(w.churnFlags)",
                           "renewal_flags": "\(w.renewalFlags)", "segments": "\(w.segments)", "breaches": "\(w.breaches)",
                           "escalations": "\(w.escalations)"]
            if skipped > 0 { details["skipped"] = "\(skipped)" }
            if !refused.isEmpty { details["refused"] = refused.map { "\($0.record.uuidString.lowercased()): \($0.reason)" }.joined(separator: "; ") }
            if !settingProblems.isEmpty { details["setting_problems"] = settingProblems.map(\.description).joined(separator: "; ") }
            if cancelled { details["cancelled"] = "true" }
            return details
        }

        /// One line for a person or a log.
        public var summary: String {
            let w = written
            var text = "read \(recordsRead) records, wrote \(recordsWritten) in \(String(format: "%.2f", seconds)) s"
            text += " (tiers \(w.tiers), churn flags \(w.churnFlags), renewal flags \(w.renewalFlags), segments \(w.segments),"
            text += " breaches \(w.breaches), escalations \(w.escalations))"
            if skipped > 0 { text += "; \(skipped) changed meanwhile, left for the next pass" }
            if !refused.isEmpty { text += "; \(refused.count) refused by the store" }
            if cancelled { text += "; stopped before the end" }
            return text
        }
    }

    /// What a pass will write, as computed from one read of the store.
    public struct Plan {
        /// The rules it was computed with.
        public let rules: CRMRules
        fileprivate var writes: [PlannedWrite] = []
        fileprivate var report: Report

        /// Records the plan will write (escalation activities not counted).
        public var count: Int { writes.count }
        /// The records the plan will write, by id.
        public var records: [UUID] { writes.map(\.id) }
    }

    /// One record's changes, with the sequence number of the state they were computed from.
    fileprivate struct PlannedWrite {
        var id: UUID
        var sequence: Int64
        var values: [String: FieldValue]
        var counts: Counts
        /// For a case: the deadlines to escalate.
        var escalations: [CRMRules.CaseDeadline] = []
    }

    // MARK: Running

    /// Reads, computes and writes: `plan` then `apply`.
    @discardableResult
    public func run(on store: ReplicaStore) throws -> Report {
        try apply(try plan(store), to: store)
    }

    /// Reads what the rules need and computes what should change, writing nothing.
    public func plan(_ store: ReplicaStore) throws -> Plan {
        let clock = ContinuousClock()
        let start = clock.now
        let rules = try self.rules ?? CRMRules(store: store, now: now)
        var read = 0

        // Per account, what the rules need from the records hanging off it.
        var wonRevenue: [UUID: Double] = [:]
        var wonDeals: [UUID: Int] = [:]
        var openPipeline: [UUID: Double] = [:]
        var worked = Set<UUID>()
        var recentlyActive = Set<UUID>()
        var recentActivities: [UUID: Int] = [:]
        var opportunityAccount: [UUID: UUID] = [:]
        var contactAccount: [UUID: UUID] = [:]

        try store.scan("opportunity", fields: ["account", "stage", "amount", "closed_at"]) { id, v in
            read += 1
            guard let account = v[0].crmReference else { return }
            opportunityAccount[id] = account
            let stage = v[1].crmText
            if rules.isWon(stage: stage) {
                let closedAt = v[3].crmText
                if rules.isInRevenueWindow(closedAt: closedAt) {
                    wonRevenue[account, default: 0] += v[2].crmNumber ?? 0
                    wonDeals[account, default: 0] += 1
                }
                if let closed = closedAt.flatMap(CRMDate.instant), rules.isInChurnWindow(closed) { recentlyActive.insert(account) }
            } else if rules.isOpen(stage: stage) {
                worked.insert(account)
                openPipeline[account, default: 0] += v[2].crmNumber ?? 0
            }
        }
        // What the tier counts: won deals, orders, or both (`tier.basis`).
        var tierSpend = rules.settings.tierBasis.countsOpportunities ? wonRevenue : [:]
        if rules.settings.tierBasis.countsOrders {
            try store.scan("order", fields: ["account", "status", "date", "amount"]) { _, v in
                read += 1
                guard let account = v[0].crmReference, rules.isSpend(orderStatus: v[1].crmText, date: v[2].crmText) else { return }
                tierSpend[account, default: 0] += v[3].crmNumber ?? 0
            }
        }
        try store.scan("contact", fields: ["account"]) { id, v in
            read += 1
            if let account = v[0].crmReference { contactAccount[id] = account }
        }
        try store.scan("activity", fields: ["status", "occurred_at", "due_at", "account", "opportunity", "contact", "case"]) { id, v in
            read += 1
            // Escalations count for nothing, or this pass's own would change the next one's result.
            guard !CRMRules.isEscalation(id, ofCase: v[6].crmReference),
                  let time = CRMRules.activityTime(status: v[0].crmText, occurredAt: v[1].crmText, dueAt: v[2].crmText),
                  let account = CRMRules.account(ofActivity: v[3].crmReference, opportunity: v[4].crmReference, contact: v[5].crmReference,
                                                 opportunityAccount: opportunityAccount, contactAccount: contactAccount)
            else { return }
            if rules.isInChurnWindow(time) { recentlyActive.insert(account) }
            if rules.isInActivityPeriod(time) { recentActivities[account, default: 0] += 1 }
        }

        var plan = Plan(rules: rules, report: Report(at: CRMDate.format(instant: rules.now)))
        plan.report.settingProblems = rules.settingProblems
        let accountFields = ["tier", "churn_risk", "renewal_due", "value_segment", "lifecycle_stage", "renewal_date", "strategic",
                             "overrides"]
        try store.scanWithSequence("account", fields: accountFields) { id, sequence, v in
            read += 1
            let overridden = CRMDerivedFields.overridden(v[7].crmText)
            var write = PlannedWrite(id: id, sequence: sequence, values: [:], counts: Counts())
            let revenue = wonRevenue[id] ?? 0
            let tier = rules.tier(forWonRevenue: tierSpend[id] ?? 0)
            if !overridden.contains("tier"), v[0].crmText != tier {
                write.values["tier"] = .text(tier)
                write.counts.tiers = 1
            }
            var segment = rules.segment(wonRevenue: revenue, wonDeals: wonDeals[id] ?? 0, openPipeline: openPipeline[id] ?? 0,
                                        recentActivities: recentActivities[id] ?? 0, strategic: v[6].crmFlag)
            if overridden.contains("value_segment") {
                segment = v[3].crmText ?? segment
            } else if v[3].crmText != segment {
                write.values["value_segment"] = .text(segment)
                write.counts.segments = 1
            }
            // A marginal account is reviewed, not followed up for churn (its level of service).
            let atRisk = CRMRules.canChurn(lifecycle: v[4].crmText) && !recentlyActive.contains(id) && segment != "marginal"
            if !overridden.contains("churn_risk"), v[1].crmFlag != atRisk {
                write.values["churn_risk"] = .bool(atRisk)
                write.counts.churnFlags = 1
            }
            let renewalDue = rules.isRenewalDue(renewalDate: v[5].crmText, hasOpenOpportunity: worked.contains(id))
            if !overridden.contains("renewal_due"), v[2].crmFlag != renewalDue {
                write.values["renewal_due"] = .bool(renewalDue)
                write.counts.renewalFlags = 1
            }
            if !write.values.isEmpty { plan.writes.append(write) }
        }

        let caseFields = ["status", "response_due", "resolution_due", "first_response_at", "resolved_at", "closed_at",
                          "escalated_at", "sla_breached", "overrides"]
        let position = Dictionary(uniqueKeysWithValues: caseFields.enumerated().map { ($1, $0) })
        try store.scanWithSequence("case", fields: caseFields) { id, sequence, v in
            read += 1
            let text = { (field: String) in position[field].flatMap { v[$0].crmText } }
            var write = PlannedWrite(id: id, sequence: sequence, values: [:], counts: Counts())
            let breached = rules.isBreached(text)
            if !CRMDerivedFields.overridden(v[8].crmText).contains("sla_breached"), v[7].crmFlag != breached {
                write.values["sla_breached"] = .bool(breached)
                write.counts.breaches = 1
            }
            write.escalations = rules.deadlinesToEscalate(text)
            if !write.escalations.isEmpty { write.values["escalated_at"] = .text(CRMDate.format(instant: rules.now)) }
            if !write.values.isEmpty { plan.writes.append(write) }
        }
        plan.report.recordsRead = read
        plan.report.readSeconds = (clock.now - start).seconds
        return plan
    }

    /// Writes what `plan` computed, `chunkSize` records per transaction, each only if it has
    /// not changed since the plan read it.
    public func apply(_ plan: Plan, to store: ReplicaStore) throws -> Report {
        let clock = ContinuousClock()
        let start = clock.now
        var report = plan.report
        var next = plan.writes.startIndex
        while next < plan.writes.endIndex {
            if isCancelled() {
                report.cancelled = true
                break
            }
            let chunk = plan.writes[next..<min(next + max(chunkSize, 1), plan.writes.endIndex)]
            next = chunk.endIndex
            do {
                report = try store.transaction {
                    var updated = report
                    for write in chunk { try self.write(write, rules: plan.rules, to: store, report: &updated) }
                    return updated
                }
            } catch let error as ReplicaStoreError where error.isAboutTheRecord {
                // One record the store refuses must not hold back the others of its chunk,
                // pass after pass: the chunk again, one record per transaction.
                for write in chunk {
                    do {
                        report = try store.transaction {
                            var updated = report
                            try self.write(write, rules: plan.rules, to: store, report: &updated)
                            return updated
                        }
                    } catch let error as ReplicaStoreError where error.isAboutTheRecord {
                        if report.refused.count < 20 { report.refused.append(Refusal(record: write.id, reason: error.description)) }
                    }
                }
            }
        }
        report.writeSeconds = (clock.now - start).seconds
        report.seconds = report.readSeconds + report.writeSeconds
        return report
    }

    /// Writes one planned record, and the escalation activities of a case, unless the record
    /// changed since it was read.
    private func write(_ write: PlannedWrite, rules: CRMRules, to store: ReplicaStore, report: inout Report) throws {
        guard let current = try store.change(of: write.id), current.sequence == write.sequence, !current.state.isDeleted else {
            report.skipped += 1
            return
        }
        var counts = write.counts
        for deadline in write.escalations {
            let id = CRMRules.escalationID(forCase: write.id, deadline)
            // Made once: a user may have closed or deleted it since, and that stands.
            guard try store.recordType(of: id) == nil else { continue }
            try store.create("activity", id: id, escalation(of: current.state, deadline, rules: rules))
            counts.escalations += 1
            report.recordsWritten += 1
        }
        try store.update(write.id, write.values)
        report.recordsWritten += 1
        report.written = report.written + counts
    }

    /// The escalation task of a case's missed deadline: due now, for the case owner's manager
    /// (the owner when they have none), about the case, its account and its contact.
    private func escalation(of supportCase: RecordState, _ deadline: CRMRules.CaseDeadline, rules: CRMRules) -> [String: FieldValue] {
        let name = supportCase.text("number").map { "case \($0)" } ?? "a case"
        var values: [String: FieldValue] = [
            "kind": .text("task"), "status": .text("open"), "case": .text(supportCase.id.uuidString),
            "subject": .text("Escalation: \(name) missed its \(deadline.rawValue) deadline"),
            "due_at": .text(CRMDate.format(instant: rules.now)),
        ]
        for field in ["account", "contact"] { if let value = supportCase.text(field) { values[field] = .text(value) } }
        if let owner = supportCase.text("owner") { values["owner"] = .text(manager(owner) ?? owner) }
        return values
    }
}

extension CRMScheduledPass {
    /// A user of the tenant's directory, as escalations need them.
    public struct DirectoryUser: Sendable, Equatable {
        public var email: String
        public var role: String
        public var team: String?

        public init(email: String, role: String, team: String?) {
            self.email = email
            self.role = role
            self.team = team
        }
    }

    /// Who manages each user of `users`: a user whose role is `manager` in their team (another
    /// one than themselves when there is one; the first by e-mail when there are several, so
    /// every pass picks the same), `nil` for a user without a team or whose team has none.
    public static func managers(in users: [DirectoryUser]) -> @Sendable (String) -> String? {
        var teamManagers: [String: [String]] = [:]
        var teams: [String: String] = [:]
        for user in users {
            guard let team = user.team else { continue }
            teams[user.email.lowercased()] = team
            if user.role == "manager" { teamManagers[team, default: []].append(user.email.lowercased()) }
        }
        let sorted = teamManagers.mapValues { $0.sorted() }
        return { [teams] owner in
            let email = owner.lowercased()
            guard let team = teams[email], let managers = sorted[team] else { return nil }
            return managers.first { $0 != email } ?? managers.first
        }
    }
}

extension Duration {
    /// As a number of seconds, for reports.
    fileprivate var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
