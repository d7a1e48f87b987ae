import Foundation
import ReplicaStore
import SyncModel

/// The business rules of the CRM as pure functions of records, settings and a clock reading.
///
/// Pure so that the server and every device compute the same tiers, flags and deadlines from
/// the same data: nothing here reads the wall clock, and only loading the settings reads a store.
/// `CRMChangeEffects` (where data changes) and `CRMScheduledPass` (as time passes) read a store,
/// run these and write what changed.
public struct CRMRules: Sendable {
    public let settings: CRMSettings
    public let pipeline: CRMPipeline
    /// The tenant's `setting` records that hold a value their key cannot take: `settings` has
    /// the key's default instead, and whoever shows results should show these beside them.
    public let settingProblems: [SettingProblem]
    /// The moment the rules are evaluated at, in seconds since 1970.
    public let now: Int64
    /// `now`'s day, in days since 1970 (UTC).
    public var today: Int64 { now.floorDivided(by: CRMDate.secondsPerDay) }

    /// Rules evaluated at `now`.
    public init(settings: CRMSettings = CRMSettings(), pipeline: CRMPipeline = .default, now: Date,
                settingProblems: [SettingProblem] = []) {
        self.settings = settings
        self.pipeline = pipeline
        self.settingProblems = settingProblems
        self.now = CRMDate.seconds(now)
    }

    /// Rules with the settings and pipeline of the tenant whose records `store` holds: what a
    /// replica uses so that its results match every other replica's. A setting whose value does
    /// not parse has its default and is listed in `settingProblems`.
    public init(store: ReplicaStore, now: Date) throws {
        let loaded = try CRMSettings.load(from: store)
        self.init(settings: loaded.settings, pipeline: try CRMPipeline.load(from: store), now: now,
                  settingProblems: loaded.problems)
    }

    // MARK: Tiering

    /// The tier of an account that won (or spent, see `tierSpend`) `revenue` over the last 12 months.
    public func tier(forWonRevenue revenue: Double) -> String {
        let t = settings.tiers
        if revenue > t.vip { return "vip" }
        if revenue > t.gold { return "gold" }
        if revenue > t.silver { return "silver" }
        if revenue > t.bronze { return "bronze" }
        return "standard"
    }

    /// Whether an opportunity is won in this tenant's pipeline.
    public func isWon(_ opportunity: RecordState) -> Bool { isWon(stage: opportunity.text("stage")) }

    /// Whether an opportunity in `stage` is won in this tenant's pipeline.
    public func isWon(stage: String?) -> Bool { pipeline.stage(stage)?.won == true }

    /// Whether an opportunity is still open: its stage is not a closed one. A stage the pipeline
    /// does not know counts as open, so an opportunity is never silently dropped from follow-up.
    public func isOpen(_ opportunity: RecordState) -> Bool { isOpen(stage: opportunity.text("stage")) }

    /// Whether an opportunity in `stage` is still open (see `isOpen(_:)`).
    public func isOpen(stage: String?) -> Bool { pipeline.stage(stage)?.closed != true }

    /// Whether a won deal closed on `closedAt` (`closed_at`, a day) counts for the last 12
    /// months: 365 days up to and including today. Without a date it cannot be placed in the
    /// window and does not count (`CRMChangeEffects` sets it when a deal closes).
    public func isInRevenueWindow(closedAt: String?) -> Bool {
        guard let closed = closedAt.flatMap(CRMDate.day) else { return false }
        return closed > today - 365 && closed <= today
    }

    /// Won revenue per account over the last 12 months (`isInRevenueWindow`), by each won
    /// opportunity's `closed_at` day.
    public func wonRevenue(_ opportunities: [RecordState]) -> [UUID: Double] {
        var revenue: [UUID: Double] = [:]
        for opportunity in opportunities where isWon(opportunity) {
            guard let account = opportunity.reference("account"), isInRevenueWindow(closedAt: opportunity.text("closed_at")) else { continue }
            revenue[account, default: 0] += opportunity.number("amount") ?? 0
        }
        return revenue
    }

    /// Whether an order counts towards its account's spend: a sale (`CRMSchema.orderRevenueStatuses`)
    /// dated within the last 12 months (`isInRevenueWindow`).
    public func isSpend(orderStatus status: String?, date: String?) -> Bool {
        guard let status, CRMSchema.orderRevenueStatuses.contains(status) else { return false }
        return isInRevenueWindow(closedAt: date)
    }

    /// Spend per account over the last 12 months, what its tier is computed from: won
    /// opportunities, orders, or both, as the tenant's `tier.basis` says.
    public func tierSpend(opportunities: [RecordState], orders: [RecordState]) -> [UUID: Double] {
        var spend = settings.tierBasis.countsOpportunities ? wonRevenue(opportunities) : [:]
        if settings.tierBasis.countsOrders {
            for order in orders where isSpend(orderStatus: order.text("status"), date: order.text("date")) {
                guard let account = order.reference("account") else { continue }
                spend[account, default: 0] += order.number("amount") ?? 0
            }
        }
        return spend
    }

    /// The tier every account should have now, from the spend `tier.basis` names.
    public func tiers(accounts: [RecordState], opportunities: [RecordState], orders: [RecordState] = []) -> [UUID: String] {
        let spend = tierSpend(opportunities: opportunities, orders: orders)
        return Dictionary(uniqueKeysWithValues: accounts.map { ($0.id, tier(forWonRevenue: spend[$0.id] ?? 0)) })
    }

    // MARK: Lifecycle

    /// The lifecycle stage an account moves to when it wins a deal, `nil` when it stays. A
    /// prospect, a target or a churned account (won back) becomes a customer; customers and core
    /// accounts keep their stage.
    public static func lifecycleAfterWin(_ current: String?) -> String? {
        switch current {
        case nil, "prospect", "target", "churned": "customer"
        default: nil
        }
    }

    /// When an activity happened (or is due), in seconds since 1970; `nil` for a cancelled one
    /// or one without a time.
    static func activityTime(_ activity: RecordState) -> Int64? {
        activityTime(status: activity.text("status"), occurredAt: activity.text("occurred_at"), dueAt: activity.text("due_at"))
    }

    /// `activityTime(_:)` from the activity's fields.
    static func activityTime(status: String?, occurredAt: String?, dueAt: String?) -> Int64? {
        guard status != "cancelled" else { return nil }
        return (occurredAt ?? dueAt).flatMap(CRMDate.instant)
    }

    /// Whether something that happened at `time` keeps an account from being a churn risk: it
    /// falls in the last `churnInactivityDays` days.
    func isInChurnWindow(_ time: Int64) -> Bool {
        time > now - Int64(settings.churnInactivityDays) * CRMDate.secondsPerDay && time <= now
    }

    /// Whether an account at `lifecycle` can churn: customers and core accounts; prospects never
    /// bought.
    static func canChurn(lifecycle: String?) -> Bool { lifecycle == "customer" || lifecycle == "core" }

    /// Whether an activity at `time` falls in the latest activity period (`activityPeriodDays`
    /// up to now), which value segments and activity drops count.
    func isInActivityPeriod(_ time: Int64) -> Bool {
        time > now - Int64(settings.activityPeriodDays) * CRMDate.secondsPerDay && time <= now
    }

    /// The account each activity concerns: its own `account`, else its opportunity's or its
    /// contact's account, so a call logged against a contact still counts for the company.
    /// Escalations (`isEscalation`) are left out: a task the rules made for a manager is no
    /// work with the customer.
    static func activityAccounts(_ activities: [RecordState], opportunities: [RecordState], contacts: [RecordState])
        -> [(account: UUID, time: Int64)]
    {
        var opportunityAccount: [UUID: UUID] = [:]
        for o in opportunities { opportunityAccount[o.id] = o.reference("account") }
        var contactAccount: [UUID: UUID] = [:]
        for c in contacts { contactAccount[c.id] = c.reference("account") }
        return activities.compactMap { activity in
            guard !isEscalation(activity.id, ofCase: activity.reference("case")), let time = activityTime(activity),
                  let account = account(ofActivity: activity.reference("account"), opportunity: activity.reference("opportunity"),
                                        contact: activity.reference("contact"),
                                        opportunityAccount: opportunityAccount, contactAccount: contactAccount) else { return nil }
            return (account, time)
        }
    }

    /// The account an activity concerns (see `activityAccounts`) from its references.
    static func account(ofActivity account: UUID?, opportunity: UUID?, contact: UUID?,
                        opportunityAccount: [UUID: UUID], contactAccount: [UUID: UUID]) -> UUID? {
        account ?? opportunity.flatMap { opportunityAccount[$0] } ?? contact.flatMap { contactAccount[$0] }
    }

    /// The customer and core accounts with neither an activity nor a won deal in the last
    /// `churnInactivityDays` days. Prospects are not at risk of churning: they never bought.
    public func churnRisks(accounts: [RecordState], opportunities: [RecordState], activities: [RecordState],
                           contacts: [RecordState] = []) -> Set<UUID> {
        var recent = Set<UUID>()
        for (account, time) in Self.activityAccounts(activities, opportunities: opportunities, contacts: contacts)
        where isInChurnWindow(time) {
            recent.insert(account)
        }
        for opportunity in opportunities where isWon(opportunity) {
            if let account = opportunity.reference("account"),
               let closed = opportunity.text("closed_at").flatMap(CRMDate.instant), isInChurnWindow(closed) {
                recent.insert(account)
            }
        }
        // A marginal account is reviewed, not followed up for churn (as the scheduled pass has it).
        return Set(accounts.filter {
            Self.canChurn(lifecycle: $0.text("lifecycle_stage")) && $0.text("value_segment") != "marginal" && !recent.contains($0.id)
        }.map(\.id))
    }

    // MARK: SLA

    /// The response and resolution deadlines of a case of `priority` opened at `openedAt`
    /// (seconds since 1970); `nil` for a priority the tenant has no SLA for.
    public func deadlines(priority: String, openedAt: Int64) -> (response: Int64, resolution: Int64)? {
        deadlines(priority: priority, type: nil, severity: nil, segment: nil, openedAt: openedAt)
    }

    /// The deadlines of a case by everything that sets its level of service: its priority's SLA;
    /// for a complaint, the stricter of that and its severity's (`CRMSettings.complaintSLA`);
    /// for a core account's case, those hours times `coreSLAFactor`. `nil` when neither the
    /// priority nor the severity has an SLA.
    public func deadlines(priority: String?, type: String?, severity: String?, segment: String?, openedAt: Int64)
        -> (response: Int64, resolution: Int64)?
    {
        var hours: (response: Double, resolution: Double)?
        if let priority, let sla = settings.sla[priority] { hours = (sla.responseHours, sla.resolutionHours) }
        if type == "complaint", let severity, let sla = settings.complaintSLA[severity] {
            hours = (min(hours?.response ?? .infinity, sla.responseHours), min(hours?.resolution ?? .infinity, sla.resolutionHours))
        }
        guard var hours else { return nil }
        if segment == "core" { hours = (hours.response * settings.coreSLAFactor, hours.resolution * settings.coreSLAFactor) }
        return (openedAt + Int64((hours.response * 3600).rounded()), openedAt + Int64((hours.resolution * 3600).rounded()))
    }

    // MARK: Value segments

    /// The value segment of an account from its contribution (won revenue and won deals over
    /// the last 12 months), its growth potential (open pipeline), its strategic fit (flagged by
    /// a manager) and its recent activity: core by contribution or fit, potential by pipeline,
    /// regular when it bought or is being worked with, marginal otherwise.
    public func segment(wonRevenue: Double, wonDeals: Int, openPipeline: Double, recentActivities: Int, strategic: Bool) -> String {
        let t = settings.segments
        if strategic || wonRevenue >= t.coreRevenue || (t.coreOrders > 0 && wonDeals >= t.coreOrders) { return "core" }
        if openPipeline >= t.potentialPipeline && openPipeline > 0 { return "potential" }
        if wonRevenue > 0 || wonDeals > 0 || recentActivities >= t.regularActivities { return "regular" }
        return "marginal"
    }

    /// Whether a case missed a deadline: answered after `response_due` (or still unanswered
    /// past it), or resolved after `resolution_due` (or still unresolved past it). A case
    /// without deadlines has nothing to breach.
    public func isBreached(_ supportCase: RecordState) -> Bool {
        isBreached { supportCase.text($0) }
    }

    /// `isBreached(_:)` from a case's fields as `text` reads them by name.
    public func isBreached(_ text: (String) -> String?) -> Bool {
        func missed(_ due: String, _ doneFields: [String]) -> Bool {
            guard let deadline = text(due).flatMap(CRMDate.instant) else { return false }
            for field in doneFields {
                if let done = text(field).flatMap(CRMDate.instant) { return done > deadline }
            }
            return now > deadline
        }
        return missed("response_due", ["first_response_at", "resolved_at", "closed_at"])
            || missed("resolution_due", ["resolved_at", "closed_at"])
    }

    /// A deadline of a case, which an escalation names.
    public enum CaseDeadline: String, Sendable, CaseIterable, Codable {
        case response, resolution
    }

    /// The deadlines of a case (its fields as `text` reads them by name) that passed with their
    /// work undone while it is still open, and that were not escalated since they passed
    /// (`escalated_at` before the deadline, or unset): what the server escalates now. A case
    /// answered late is past needing a push for its answer, so only what is still undone counts.
    public func deadlinesToEscalate(_ text: (String) -> String?) -> [CaseDeadline] {
        guard Self.isOpenCase(status: text("status")) else { return [] }
        let escalated = text("escalated_at").flatMap(CRMDate.instant)
        func passed(_ due: String, undone doneFields: [String]) -> Bool {
            guard let deadline = text(due).flatMap(CRMDate.instant), now > deadline,
                  doneFields.allSatisfy({ text($0) == nil }) else { return false }
            return escalated.map { $0 < deadline } ?? true
        }
        var missed: [CaseDeadline] = []
        if passed("response_due", undone: ["first_response_at", "resolved_at", "closed_at"]) { missed.append(.response) }
        if passed("resolution_due", undone: ["resolved_at", "closed_at"]) { missed.append(.resolution) }
        return missed
    }

    /// The id of the escalation activity of a case's missed deadline: derived from its cause,
    /// so it is made once however many passes (or replicas) see the deadline missed.
    public static func escalationID(forCase caseID: UUID, _ deadline: CaseDeadline) -> UUID {
        DerivedID.make("case-escalation", caseID.uuidString.lowercased() + ":" + deadline.rawValue)
    }

    /// Whether the activity `id` about `supportCase` is one of its escalations: told by its
    /// derived id rather than by a field (a subject, a kind) that a user edits freely.
    public static func isEscalation(_ id: UUID, ofCase supportCase: UUID?) -> Bool {
        guard let supportCase else { return false }
        return CaseDeadline.allCases.contains { escalationID(forCase: supportCase, $0) == id }
    }

    /// Whether a case is still being worked on.
    public static func isOpenCase(_ supportCase: RecordState) -> Bool {
        isOpenCase(status: supportCase.text("status"))
    }

    /// Whether a case in `status` is still being worked on.
    public static func isOpenCase(status: String?) -> Bool {
        !["resolved", "closed"].contains(status ?? "")
    }

    // MARK: Warnings

    /// An account whose activity fell against its own previous period.
    public struct ActivityDrop: Sendable, Equatable, Codable {
        public var account: UUID
        /// Activities in the period before the latest one.
        public var previous: Int
        /// Activities in the latest period (ending now).
        public var current: Int
        public init(account: UUID, previous: Int, current: Int) {
            self.account = account
            self.previous = previous
            self.current = current
        }
    }

    /// Accounts whose activities in the last `activityPeriodDays` fell by more than
    /// `activityDropShare` against the period before. An account with no activity in either
    /// period has nothing to compare and is left to the inactivity rule.
    public func activityDrops(accounts: [RecordState], activities: [RecordState], opportunities: [RecordState] = [],
                              contacts: [RecordState] = []) -> [ActivityDrop] {
        let period = Int64(settings.activityPeriodDays) * CRMDate.secondsPerDay
        var counts: [UUID: (previous: Int, current: Int)] = [:]
        for (account, time) in Self.activityAccounts(activities, opportunities: opportunities, contacts: contacts) {
            if isInActivityPeriod(time) {
                counts[account, default: (0, 0)].current += 1
            } else if time > now - 2 * period && time <= now - period {
                counts[account, default: (0, 0)].previous += 1
            }
        }
        return accounts.compactMap { account in
            guard let c = counts[account.id], c.previous > 0,
                  Double(c.current) < Double(c.previous) * (1 - settings.activityDropShare) else { return nil }
            return ActivityDrop(account: account.id, previous: c.previous, current: c.current)
        }
    }

    /// Accounts whose `renewal_date` falls between today and `renewalWindowDays` from now with no
    /// open opportunity on them: a renewal nobody is working on.
    public func renewalsWithoutOpportunity(accounts: [RecordState], opportunities: [RecordState]) -> [UUID] {
        let worked = Set(opportunities.filter(isOpen).compactMap { $0.reference("account") })
        return accounts.compactMap { account in
            isRenewalDue(renewalDate: account.text("renewal_date"), hasOpenOpportunity: worked.contains(account.id)) ? account.id : nil
        }
    }

    /// Whether an account renewing on `renewalDate` (a day) needs a renewal worked on: the date
    /// falls between today and `renewalWindowDays` from now and no opportunity is open on it.
    public func isRenewalDue(renewalDate: String?, hasOpenOpportunity: Bool) -> Bool {
        guard !hasOpenOpportunity, let renewal = renewalDate.flatMap(CRMDate.day) else { return false }
        return renewal >= today && renewal <= today + Int64(settings.renewalWindowDays)
    }
}

/// Record ids derived from a name, so that two replicas (or two runs of an import) that make
/// "the same" record make it under the same id, and the sync merges them into one instead of
/// keeping two.
public enum DerivedID {
    /// A version 8 (custom) UUID from the 128-bit FNV-1a hash of `namespace` and `key`. Not a
    /// security measure: ids are public; this only has to spread well and never change.
    public static func make(_ namespace: String, _ key: String) -> UUID {
        var hash: UInt128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d
        let prime: UInt128 = (1 << 88) + (1 << 8) + 0x3b
        // Byte by byte from both texts, without joining them first: an import derives an id
        // for every row and every reference it resolves.
        func mix(_ byte: UInt8) {
            hash ^= UInt128(byte)
            hash &*= prime
        }
        for byte in namespace.utf8 { mix(byte) }
        mix(0)
        for byte in key.utf8 { mix(byte) }
        var bytes = withUnsafeBytes(of: hash.bigEndian) { Array($0) }
        bytes[6] = (bytes[6] & 0x0f) | 0x80
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }
}
