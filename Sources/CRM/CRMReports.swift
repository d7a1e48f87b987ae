import Foundation
import ReplicaStore
import SyncModel

/// The CRM's reports over one store: the server's tenant file for `rapportctl report`, a
/// device's replica for an app offline. The same code on both, so a rep's phone and the
/// manager's report agree on the same data.
///
/// Each report reads the store when called and returns rows; `render(_:as:)` writes any of them
/// as a table, JSON or CSV.
public struct CRMReports {
    public let store: ReplicaStore
    /// The tenant's settings, pipeline and the clock reading the reports are computed at.
    public let rules: CRMRules

    /// Reports over `store` with explicit rules (settings, pipeline, clock).
    public init(store: ReplicaStore, rules: CRMRules) {
        self.store = store
        self.rules = rules
    }

    /// Reports over `store` with its tenant's own settings and pipeline, as of `now`.
    public init(store: ReplicaStore, now: Date) throws {
        self.init(store: store, rules: try CRMRules(store: store, now: now))
    }

    /// The tenant's `setting` records whose value does not parse: the reports use each key's
    /// default instead, and should be shown with these so the admin can correct them.
    public var settingProblems: [SettingProblem] { rules.settingProblems }

    // MARK: Sales

    /// One stage of the pipeline: its opportunities, their amount and the amount weighted by the
    /// stage's probability.
    public struct PipelineRow: ReportRow, Equatable {
        public var stage: String
        public var probability: Int
        public var count: Int
        public var amount: Double
        public var weightedAmount: Double
        public static let columns = ["stage", "probability", "count", "amount", "weighted_amount"]
        public var cells: [String] { [stage, String(probability), String(count), ReportNumber.money(amount), ReportNumber.money(weightedAmount)] }
    }

    /// Every stage of the tenant's pipeline in order (empty ones too, so the shape of the funnel
    /// shows), then stages the pipeline no longer has, by name, weighted at 0.
    ///
    /// Reads only the stage and amount of each opportunity, without decoding the rest: it is the
    /// report a device runs most and over the most records.
    public func pipeline() throws -> [PipelineRow] {
        var totals: [String: (count: Int, amount: Double)] = [:]
        try store.scan("opportunity", fields: ["stage", "amount"]) { _, values in
            guard case .text(let stage) = values[0] else { return }
            totals[stage, default: (0, 0)].count += 1
            if case .real(let amount) = values[1] { totals[stage]!.amount += amount }
        }
        var rows = rules.pipeline.stages.map { stage in
            let t = totals.removeValue(forKey: stage.name) ?? (0, 0)
            return PipelineRow(stage: stage.name, probability: stage.probability, count: t.count, amount: t.amount,
                               weightedAmount: t.amount * Double(stage.probability) / 100)
        }
        rows += totals.sorted { $0.key < $1.key }.map {
            PipelineRow(stage: $0.key, probability: 0, count: $0.value.count, amount: $0.value.amount, weightedAmount: 0)
        }
        return rows
    }

    /// Open opportunities expected to close in one month.
    public struct ForecastRow: ReportRow, Equatable {
        /// `YYYY-MM`.
        public var month: String
        public var count: Int
        public var amount: Double
        public var weightedAmount: Double
        public static let columns = ["month", "count", "amount", "weighted_amount"]
        public var cells: [String] { [month, String(count), ReportNumber.money(amount), ReportNumber.money(weightedAmount)] }
    }

    /// Open opportunities by the month of their expected close date, weighted by their stage's
    /// probability; those without a date are left out (nothing to forecast them into).
    public func forecast() throws -> [ForecastRow] {
        var months: [String: ForecastRow] = [:]
        try store.scan("opportunity", fields: ["stage", "amount", "expected_close"]) { _, values in
            guard case .text(let stageName) = values[0], case .text(let close) = values[2],
                  let day = CRMDate.day(close) else { return }
            let stage = rules.pipeline.stage(stageName)
            guard stage?.closed != true else { return }
            let amount: Double = if case .real(let a) = values[1] { a } else { 0 }
            let month = CRMDate.month(ofDay: day)
            var row = months[month] ?? ForecastRow(month: month, count: 0, amount: 0, weightedAmount: 0)
            row.count += 1
            row.amount += amount
            row.weightedAmount += amount * Double(stage?.probability ?? 0) / 100
            months[month] = row
        }
        return months.values.sorted { $0.month < $1.month }
    }

    /// An owner's closed deals: how many were won, and how long the won ones took.
    public struct OwnerPerformanceRow: ReportRow, Equatable {
        public var owner: String
        public var won: Int
        public var lost: Int
        /// Won over closed; `nil` with no closed deal.
        public var winRate: Double?
        /// Mean days from an opportunity's start to its close, over won deals with both dates.
        public var averageSalesCycleDays: Double?
        public static let columns = ["owner", "won", "lost", "win_rate_percent", "average_sales_cycle_days"]
        public var cells: [String] {
            [owner, String(won), String(lost), ReportNumber.percent(winRate), ReportNumber.decimal(averageSalesCycleDays)]
        }
    }

    /// Win rate and average sales cycle per owner, over closed opportunities. An opportunity
    /// starts at its earliest stage change, or, without history, when its record was created.
    public func winRates() throws -> [OwnerPerformanceRow] {
        var firstChange: [UUID: Int64] = [:]
        for change in try store.records(ofType: "stage_change") {
            guard let opportunity = change.reference("opportunity"),
                  let at = change.text("changed_at").flatMap(CRMDate.instant) else { continue }
            firstChange[opportunity] = min(firstChange[opportunity] ?? at, at)
        }
        var owners: [String: (won: Int, lost: Int, cycleDays: [Double])] = [:]
        for opportunity in try store.records(ofType: "opportunity") {
            guard let stage = rules.pipeline.stage(opportunity.text("stage")), stage.closed else { continue }
            let owner = opportunity.text("owner") ?? ""
            guard stage.won else { owners[owner, default: (0, 0, [])].lost += 1; continue }
            owners[owner, default: (0, 0, [])].won += 1
            let start = firstChange[opportunity.id] ?? Int64(opportunity.liveness.timestamp.wallMilliseconds / 1000)
            if let closed = opportunity.text("closed_at").flatMap(CRMDate.instant), closed >= start {
                owners[owner]!.cycleDays.append(Double(closed - start) / Double(CRMDate.secondsPerDay))
            }
        }
        return owners.sorted { $0.key < $1.key }.map { owner, t in
            OwnerPerformanceRow(owner: owner, won: t.won, lost: t.lost,
                                winRate: t.won + t.lost == 0 ? nil : Double(t.won) / Double(t.won + t.lost),
                                averageSalesCycleDays: t.cycleDays.isEmpty ? nil : t.cycleDays.reduce(0, +) / Double(t.cycleDays.count))
        }
    }

    /// Leads of one source and how many were converted.
    public struct LeadConversionRow: ReportRow, Equatable {
        /// `""` for leads without a source.
        public var source: String
        public var leads: Int
        public var converted: Int
        public var conversionRate: Double?
        public static let columns = ["source", "leads", "converted", "conversion_rate_percent"]
        public var cells: [String] { [source, String(leads), String(converted), ReportNumber.percent(conversionRate)] }
    }

    /// Lead conversion rate by source. A lead counts as converted by its status or by the
    /// account its conversion created.
    public func leadConversion() throws -> [LeadConversionRow] {
        var sources: [String: (leads: Int, converted: Int)] = [:]
        for lead in try store.records(ofType: "lead") where lead.text("merged_into") == nil {
            let source = lead.text("source") ?? ""
            sources[source, default: (0, 0)].leads += 1
            if lead.text("status") == "converted" || lead.text("converted_account") != nil { sources[source]!.converted += 1 }
        }
        return sources.sorted { $0.key < $1.key }.map {
            LeadConversionRow(source: $0.key, leads: $0.value.leads, converted: $0.value.converted,
                              conversionRate: Double($0.value.converted) / Double($0.value.leads))
        }
    }

    // MARK: Activity and service

    /// One rep's activities in one week.
    public struct RepWeekRow: ReportRow, Equatable {
        public var owner: String
        /// The Monday the ISO week starts on, `YYYY-MM-DD`.
        public var week: String
        public var activities: Int
        public static let columns = ["owner", "week", "activities"]
        public var cells: [String] { [owner, week, String(activities)] }
    }

    /// Activities per rep per week, by when they happened (or are due), cancelled ones left out.
    public func activitiesPerRep() throws -> [RepWeekRow] {
        var counts: [String: [Int64: Int]] = [:]
        for activity in try store.records(ofType: "activity") {
            guard let time = CRMRules.activityTime(activity) else { continue }
            let week = CRMDate.weekStart(ofDay: time.floorDivided(by: CRMDate.secondsPerDay))
            counts[activity.text("owner") ?? "", default: [:]][week, default: 0] += 1
        }
        return counts.sorted { $0.key < $1.key }.flatMap { owner, weeks in
            weeks.sorted { $0.key < $1.key }.map { RepWeekRow(owner: owner, week: CRMDate.format(day: $0.key), activities: $0.value) }
        }
    }

    /// The cases of one priority.
    public struct CasePriorityRow: ReportRow, Equatable {
        public var priority: String
        public var cases: Int
        /// Not yet resolved or closed.
        public var open: Int
        /// Whose SLA is breached now or was breached before they were resolved.
        public var breached: Int
        /// Open and already past a deadline: where help is needed now.
        public var openBreached: Int
        public static let columns = ["priority", "cases", "open", "breached", "open_breached"]
        public var cells: [String] { [priority, String(cases), String(open), String(breached), String(openBreached)] }
    }

    /// Open and breached cases by priority, every priority listed, most urgent first. Breaches
    /// are computed at the report's clock, so they are right even where the scheduled pass
    /// (`CRMScheduledPass`) has not run yet.
    public func casesByPriority() throws -> [CasePriorityRow] {
        var rows = Dictionary(uniqueKeysWithValues: CRMSchema.casePriorities.map {
            ($0, CasePriorityRow(priority: $0, cases: 0, open: 0, breached: 0, openBreached: 0))
        })
        for supportCase in try store.records(ofType: "case") {
            let priority = supportCase.text("priority") ?? ""
            var row = rows[priority] ?? CasePriorityRow(priority: priority, cases: 0, open: 0, breached: 0, openBreached: 0)
            let open = CRMRules.isOpenCase(supportCase), breached = rules.isBreached(supportCase)
            row.cases += 1
            if open { row.open += 1 }
            if breached { row.breached += 1 }
            if open && breached { row.openBreached += 1 }
            rows[priority] = row
        }
        let order = CRMSchema.casePriorities
        return rows.values.sorted { (order.firstIndex(of: $0.priority) ?? order.count, $0.priority) < (order.firstIndex(of: $1.priority) ?? order.count, $1.priority) }
    }

    /// The tenant's NPS and satisfaction, from the answers recorded on cases and contacts.
    public struct SatisfactionRow: ReportRow, Equatable {
        public var npsResponses: Int
        /// Answers of 9 or 10.
        public var promoters: Int
        public var passives: Int
        /// Answers of 0 to 6.
        public var detractors: Int
        /// Percent of promoters minus percent of detractors, -100 to 100; `nil` with no answer.
        public var nps: Double?
        public var satisfactionResponses: Int
        /// Mean satisfaction score, 1 to 5.
        public var averageSatisfaction: Double?
        public static let columns = ["nps_responses", "promoters", "passives", "detractors", "nps",
                                     "satisfaction_responses", "average_satisfaction"]
        public var cells: [String] {
            [String(npsResponses), String(promoters), String(passives), String(detractors), ReportNumber.decimal(nps),
             String(satisfactionResponses), ReportNumber.decimal(averageSatisfaction)]
        }
    }

    /// NPS (promoters minus detractors) and average satisfaction over cases and contacts.
    public func satisfaction() throws -> [SatisfactionRow] {
        var row = SatisfactionRow(npsResponses: 0, promoters: 0, passives: 0, detractors: 0, nps: nil,
                                  satisfactionResponses: 0, averageSatisfaction: nil)
        var satisfactionTotal: Int64 = 0
        for type in ["case", "contact"] {
            for record in try store.records(ofType: type) {
                if let answer = record.integer("nps") {
                    row.npsResponses += 1
                    if answer >= 9 { row.promoters += 1 } else if answer >= 7 { row.passives += 1 } else { row.detractors += 1 }
                }
                if let score = record.integer("satisfaction") {
                    row.satisfactionResponses += 1
                    satisfactionTotal += score
                }
            }
        }
        if row.npsResponses > 0 { row.nps = Double(row.promoters - row.detractors) * 100 / Double(row.npsResponses) }
        if row.satisfactionResponses > 0 { row.averageSatisfaction = Double(satisfactionTotal) / Double(row.satisfactionResponses) }
        return [row]
    }

    // MARK: Accounts

    /// How many accounts hold one value of a field.
    public struct DistributionRow: ReportRow, Equatable {
        /// `""` for accounts without a value.
        public var value: String
        public var accounts: Int
        public var share: Double
        public static let columns = ["value", "accounts", "share_percent"]
        public var cells: [String] { [value, String(accounts), ReportNumber.percent(share)] }
    }

    /// Accounts by tier, in tier order, as stored (the server's scheduled rules keep it).
    public func tierDistribution() throws -> [DistributionRow] { try distribution("tier", order: CRMSchema.tiers) }

    /// Accounts of one tier and value segment, with the revenue they won over the last 12 months.
    public struct ValueRow: ReportRow, Equatable {
        /// `""` for accounts without a tier (or segment) yet.
        public var tier: String
        public var segment: String
        public var accounts: Int
        public var wonRevenue: Double
        /// Of all won revenue over the last 12 months.
        public var revenueShare: Double
        public static let columns = ["tier", "segment", "accounts", "won_revenue_12m", "revenue_share_percent"]
        public var cells: [String] {
            [tier, segment, String(accounts), ReportNumber.money(wonRevenue), ReportNumber.percent(revenueShare)]
        }
    }

    /// Accounts by tier and value segment (as stored), with their share of the revenue won over
    /// the last 12 months: whether the service levels go where the revenue is.
    public func tiersAndSegments() throws -> [ValueRow] {
        let revenue = rules.wonRevenue(try store.records(ofType: "opportunity"))
        var rows: [String: ValueRow] = [:]
        try store.scan("account", fields: ["tier", "value_segment", "merged_into"]) { id, values in
            guard values[2] == .null else { return }
            let tier: String = if case .text(let v) = values[0] { v } else { "" }
            let segment: String = if case .text(let v) = values[1] { v } else { "" }
            rows["\(tier)/\(segment)", default: ValueRow(tier: tier, segment: segment, accounts: 0, wonRevenue: 0, revenueShare: 0)]
                .accounts += 1
            rows["\(tier)/\(segment)"]!.wonRevenue += revenue[id] ?? 0
        }
        let total = rows.values.reduce(0) { $0 + $1.wonRevenue }
        func rank(_ row: ValueRow) -> (Int, Int, String, String) {
            (CRMSchema.tiers.firstIndex(of: row.tier) ?? CRMSchema.tiers.count,
             CRMSchema.valueSegments.firstIndex(of: row.segment) ?? CRMSchema.valueSegments.count, row.tier, row.segment)
        }
        return rows.values.map { row in
            var row = row
            row.revenueShare = total > 0 ? row.wonRevenue / total : 0
            return row
        }.sorted { rank($0) < rank($1) }
    }

    /// Accounts by lifecycle stage, in lifecycle order.
    public func lifecycleDistribution() throws -> [DistributionRow] {
        try distribution("lifecycle_stage", order: CRMSchema.lifecycleStages)
    }

    private func distribution(_ field: String, order: [String]) throws -> [DistributionRow] {
        var counts: [String: Int] = [:]
        var total = 0
        try store.scan("account", fields: [field, "merged_into"]) { _, values in
            guard values[1] == .null else { return }
            let value: String = if case .text(let v) = values[0] { v } else { "" }
            counts[value, default: 0] += 1
            total += 1
        }
        let rank = { (value: String) in (order.firstIndex(of: value) ?? order.count, value) }
        return counts.sorted { rank($0.key) < rank($1.key) }.map {
            DistributionRow(value: $0.key, accounts: $0.value, share: Double($0.value) / Double(total))
        }
    }

    /// An account at risk of churning, and why.
    public struct ChurnRiskRow: ReportRow, Equatable {
        public var account: UUID
        public var name: String
        public var owner: String
        /// `inactive` (no activity nor won deal for the configured days), `activity_drop`, or both.
        public var reasons: [String]
        public var previousActivities: Int?
        public var currentActivities: Int?
        public static let columns = ["account", "name", "owner", "reasons", "previous_activities", "current_activities"]
        public var cells: [String] {
            [account.uuidString.lowercased(), name, owner, reasons.joined(separator: " "),
             previousActivities.map(String.init) ?? "", currentActivities.map(String.init) ?? ""]
        }
    }

    /// Accounts flagged by the inactivity rule or the activity-drop warning, by name.
    public func churnRisks() throws -> [ChurnRiskRow] {
        let accounts = try store.records(ofType: "account").filter { $0.text("merged_into") == nil }
        let opportunities = try store.records(ofType: "opportunity")
        let activities = try store.records(ofType: "activity")
        let contacts = try store.records(ofType: "contact")
        let inactive = rules.churnRisks(accounts: accounts, opportunities: opportunities, activities: activities, contacts: contacts)
        let drops = Dictionary(uniqueKeysWithValues: rules.activityDrops(
            accounts: accounts, activities: activities, opportunities: opportunities, contacts: contacts).map { ($0.account, $0) })
        return accounts.compactMap { account -> ChurnRiskRow? in
            let drop = drops[account.id]
            let reasons = (inactive.contains(account.id) ? ["inactive"] : []) + (drop == nil ? [] : ["activity_drop"])
            guard !reasons.isEmpty else { return nil }
            return ChurnRiskRow(account: account.id, name: account.text("name") ?? "", owner: account.text("owner") ?? "",
                                reasons: reasons, previousActivities: drop?.previous, currentActivities: drop?.current)
        }.sorted { ($0.name, $0.account.uuidString) < ($1.name, $1.account.uuidString) }
    }

    /// An account due for renewal with nobody working on it.
    public struct RenewalRow: ReportRow, Equatable {
        public var account: UUID
        public var name: String
        public var owner: String
        public var renewalDate: String
        public var daysLeft: Int
        public static let columns = ["account", "name", "owner", "renewal_date", "days_left"]
        public var cells: [String] { [account.uuidString.lowercased(), name, owner, renewalDate, String(daysLeft)] }
    }

    /// Renewal warnings (`CRMRules.renewalsWithoutOpportunity`), soonest first.
    public func renewals() throws -> [RenewalRow] {
        let accounts = try store.records(ofType: "account").filter { $0.text("merged_into") == nil }
        let due = Set(rules.renewalsWithoutOpportunity(accounts: accounts, opportunities: try store.records(ofType: "opportunity")))
        return accounts.filter { due.contains($0.id) }.compactMap { account in
            guard let date = account.text("renewal_date"), let day = CRMDate.day(date) else { return nil }
            return RenewalRow(account: account.id, name: account.text("name") ?? "", owner: account.text("owner") ?? "",
                              renewalDate: date, daysLeft: Int(day - rules.today))
        }.sorted { ($0.daysLeft, $0.name) < ($1.daysLeft, $1.name) }
    }
}

/// The reports by name, for a command line (`rapportctl report pipeline --csv`) or an app menu.
public enum CRMReport: String, Sendable, CaseIterable, Codable {
    case pipeline, forecast, winRates = "win-rates", leadConversion = "lead-conversion", activities = "activities"
    case cases, satisfaction, tiers, segments, lifecycle, churnRisk = "churn-risk", renewals

    /// What the report shows, for help texts.
    public var summary: String {
        switch self {
        case .pipeline: "open and closed opportunities by stage: count, amount, weighted amount"
        case .forecast: "open opportunities by expected close month"
        case .winRates: "win rate and average sales cycle by owner"
        case .leadConversion: "lead conversion rate by source"
        case .activities: "activities per rep per week"
        case .cases: "open and breached cases by priority"
        case .satisfaction: "NPS and average satisfaction"
        case .tiers: "accounts by tier"
        case .segments: "accounts by tier and value segment, with their share of revenue won in 12 months"
        case .lifecycle: "accounts by lifecycle stage"
        case .churnRisk: "accounts at risk of churning"
        case .renewals: "renewals due with no open opportunity"
        }
    }
}

extension CRMReports {
    /// Runs `report` and writes it in `format`: the one call a command line needs.
    public func render(_ report: CRMReport, as format: ReportFormat) throws -> String {
        switch report {
        case .pipeline: try format.render(pipeline())
        case .forecast: try format.render(forecast())
        case .winRates: try format.render(winRates())
        case .leadConversion: try format.render(leadConversion())
        case .activities: try format.render(activitiesPerRep())
        case .cases: try format.render(casesByPriority())
        case .satisfaction: try format.render(satisfaction())
        case .tiers: try format.render(tierDistribution())
        case .segments: try format.render(tiersAndSegments())
        case .lifecycle: try format.render(lifecycleDistribution())
        case .churnRisk: try format.render(churnRisks())
        case .renewals: try format.render(renewals())
        }
    }
}
