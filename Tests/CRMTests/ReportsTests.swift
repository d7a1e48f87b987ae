@testable import CRM
import Foundation
import ReplicaStore
import SyncModel
import Testing
import TestScheduling

@Suite struct ReportsTests {
    let f: Fixture
    var reports: CRMReports { CRMReports(store: f.store, rules: CRMRules(now: Fixture.now)) }

    init() throws { f = try Fixture() }

    @Test(.blocking) func pipelineByStageWeightsByStageProbability() throws {
        let a = try f.account("A")
        try f.opportunity(a, stage: "prospecting", amount: 1_000)
        try f.opportunity(a, stage: "prospecting", amount: 500)
        try f.opportunity(a, stage: "negotiation", amount: 2_000)
        try f.opportunity(a, stage: "closed_won", amount: 300)
        let rows = try reports.pipeline()
        #expect(rows.map(\.stage) == ["prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost"])
        #expect(rows[0] == .init(stage: "prospecting", probability: 10, count: 2, amount: 1_500, weightedAmount: 150))
        #expect(rows[1].count == 0 && rows[1].amount == 0)
        #expect(rows[3] == .init(stage: "negotiation", probability: 75, count: 1, amount: 2_000, weightedAmount: 1_500))
        #expect(rows[4].weightedAmount == 300)
    }

    @Test(.blocking) func forecastByExpectedCloseMonthOfOpenDeals() throws {
        let a = try f.account("A")
        try f.opportunity(a, stage: "proposal", amount: 100, expectedClose: "2025-07-03")
        try f.opportunity(a, stage: "qualification", amount: 400, expectedClose: "2025-07-30")
        try f.opportunity(a, stage: "negotiation", amount: 1_000, expectedClose: "2025-09-01")
        try f.opportunity(a, stage: "closed_won", amount: 9_999, expectedClose: "2025-07-01")
        try f.opportunity(a, stage: "proposal", amount: 9_999)
        #expect(try reports.forecast() == [
            .init(month: "2025-07", count: 2, amount: 500, weightedAmount: 150),
            .init(month: "2025-09", count: 1, amount: 1_000, weightedAmount: 750),
        ])
    }

    @Test(.blocking) func winRateAndSalesCycleByOwner() throws {
        let a = try f.account("A")
        let won1 = try f.opportunity(a, stage: "closed_won", amount: 1, owner: "ann@example.com", closed: "2025-06-11")
        let won2 = try f.opportunity(a, stage: "closed_won", amount: 1, owner: "ann@example.com", closed: "2025-06-21")
        try f.opportunity(a, stage: "closed_lost", amount: 1, owner: "ann@example.com", closed: "2025-06-01")
        try f.opportunity(a, stage: "closed_lost", amount: 1, owner: "bob@example.com", closed: "2025-06-01")
        try f.opportunity(a, stage: "proposal", amount: 1, owner: "bob@example.com")
        for (opportunity, at) in [(won1, "2025-06-01T00:00:00Z"), (won1, "2025-06-05T00:00:00Z"), (won2, "2025-06-01T00:00:00Z")] {
            try f.store.create("stage_change", ["opportunity": .text(opportunity.uuidString), "to_stage": .text("proposal"),
                                                "changed_at": .text(at)])
        }
        #expect(try reports.winRates() == [
            .init(owner: "ann@example.com", won: 2, lost: 1, winRate: 2.0 / 3, averageSalesCycleDays: 15),
            .init(owner: "bob@example.com", won: 0, lost: 1, winRate: 0, averageSalesCycleDays: nil),
        ])
    }

    @Test(.blocking) func leadConversionBySource() throws {
        let a = try f.account("A")
        for (source, status) in [("web", "converted"), ("web", "new"), ("web", "working"), ("event", "converted"), (nil, "new")] {
            var values: [String: FieldValue] = ["last_name": .text("L"), "status": .text(status)]
            if let source { values["source"] = .text(source) }
            try f.store.create("lead", values)
        }
        try f.store.create("lead", ["last_name": .text("L"), "status": .text("qualified"), "source": .text("event"),
                                    "converted_account": .text(a.uuidString)])
        #expect(try reports.leadConversion() == [
            .init(source: "", leads: 1, converted: 0, conversionRate: 0),
            .init(source: "event", leads: 2, converted: 2, conversionRate: 1),
            .init(source: "web", leads: 3, converted: 1, conversionRate: 1.0 / 3),
        ])
    }

    @Test(.blocking) func activitiesPerRepPerWeek() throws {
        try f.activity(occurred: "2025-06-09T08:00:00Z", owner: "ann@example.com")
        try f.activity(occurred: "2025-06-15T23:59:59Z", owner: "ann@example.com")
        try f.activity(occurred: "2025-06-16T00:00:00Z", owner: "ann@example.com")
        try f.activity(occurred: "2025-06-10T00:00:00Z", owner: "bob@example.com")
        try f.activity(occurred: "2025-06-10T00:00:00Z", owner: "bob@example.com", status: "cancelled")
        #expect(try reports.activitiesPerRep() == [
            .init(owner: "ann@example.com", week: "2025-06-09", activities: 2),
            .init(owner: "ann@example.com", week: "2025-06-16", activities: 1),
            .init(owner: "bob@example.com", week: "2025-06-09", activities: 1),
        ])
    }

    @Test(.blocking) func openAndBreachedCasesByPriority() throws {
        let past = FieldValue.text(Fixture.instant(days: -1)), future = FieldValue.text(Fixture.instant(days: 1))
        try f.supportCase("1", priority: "urgent", ["response_due": past])
        try f.supportCase("2", priority: "urgent", ["response_due": future])
        try f.supportCase("3", priority: "urgent", status: "closed", ["resolution_due": past, "closed_at": .text(Fixture.instant(days: 0))])
        try f.supportCase("4", priority: "low", status: "resolved", ["resolution_due": future, "resolved_at": past])
        #expect(try reports.casesByPriority() == [
            .init(priority: "urgent", cases: 3, open: 2, breached: 2, openBreached: 1),
            .init(priority: "high", cases: 0, open: 0, breached: 0, openBreached: 0),
            .init(priority: "normal", cases: 0, open: 0, breached: 0, openBreached: 0),
            .init(priority: "low", cases: 1, open: 0, breached: 0, openBreached: 0),
        ])
    }

    @Test(.blocking) func npsAndAverageSatisfaction() throws {
        #expect(try reports.satisfaction()[0].nps == nil)
        for (nps, satisfaction) in [(10, 5), (9, 4), (8, 3), (3, 1)] {
            try f.supportCase("C", priority: "low", ["nps": .integer(Int64(nps)), "satisfaction": .integer(Int64(satisfaction))])
        }
        try f.contact("D", ["nps": .integer(0)])
        #expect(try reports.satisfaction() == [.init(npsResponses: 5, promoters: 2, passives: 1, detractors: 2, nps: 0,
                                                      satisfactionResponses: 4, averageSatisfaction: 3.25)])
    }

    @Test(.blocking) func tierAndLifecycleDistribution() throws {
        try f.account("A", lifecycle: "customer", ["tier": .text("gold")])
        try f.account("B", lifecycle: "customer", ["tier": .text("vip")])
        try f.account("C", lifecycle: "prospect", ["tier": .text("gold")])
        try f.account("D")
        #expect(try reports.tierDistribution() == [
            .init(value: "vip", accounts: 1, share: 0.25), .init(value: "gold", accounts: 2, share: 0.5),
            .init(value: "", accounts: 1, share: 0.25),
        ])
        #expect(try reports.lifecycleDistribution().map(\.value) == ["prospect", "customer", ""])
        #expect(try reports.lifecycleDistribution()[1].accounts == 2)
    }

    @Test(.blocking) func tiersAndSegmentsWithTheirShareOfRevenue() throws {
        let a = try f.account("A", lifecycle: "customer", ["tier": .text("gold"), "value_segment": .text("core")])
        let b = try f.account("B", lifecycle: "customer", ["tier": .text("gold"), "value_segment": .text("regular")])
        try f.account("C", ["value_segment": .text("marginal")])
        try f.opportunity(a, stage: "closed_won", amount: 300, closed: Fixture.day(-10))
        try f.opportunity(b, stage: "closed_won", amount: 100, closed: Fixture.day(-10))
        try f.opportunity(b, stage: "closed_won", amount: 900, closed: Fixture.day(-400))  // over 12 months ago
        #expect(try reports.tiersAndSegments() == [
            .init(tier: "gold", segment: "core", accounts: 1, wonRevenue: 300, revenueShare: 0.75),
            .init(tier: "gold", segment: "regular", accounts: 1, wonRevenue: 100, revenueShare: 0.25),
            .init(tier: "", segment: "marginal", accounts: 1, wonRevenue: 0, revenueShare: 0),
        ])
    }

    @Test(.blocking) func churnRiskListAndRenewals() throws {
        let quiet = try f.account("Quiet", lifecycle: "customer")
        let dropping = try f.account("Dropping", lifecycle: "prospect", renewal: Fixture.day(5))
        for d in [-100.0, -110, -120] { try f.activity(account: dropping, occurred: Fixture.instant(days: d)) }
        try f.activity(account: quiet, occurred: Fixture.instant(days: -200))
        let rows = try reports.churnRisks()
        #expect(rows.map(\.name) == ["Dropping", "Quiet"])
        #expect(rows[0].reasons == ["activity_drop"] && rows[0].previousActivities == 3 && rows[0].currentActivities == 0)
        #expect(rows[1].reasons == ["inactive"] && rows[1].previousActivities == nil)
        #expect(try reports.renewals().map(\.account) == [dropping])
        #expect(try reports.renewals()[0].daysLeft == 5)
    }

    @Test(.blocking) func renderedAsTableJSONAndCSV() throws {
        let a = try f.account("A")
        try f.opportunity(a, stage: "proposal", amount: 1_234.5)
        let csv = try reports.render(.pipeline, as: .csv)
        #expect(csv.hasPrefix("stage,probability,count,amount,weighted_amount\r\nprospecting,10,0,0.00,0.00\r\n"))
        #expect(csv.contains("proposal,50,1,1234.50,617.25\r\n"))
        let table = try reports.render(.pipeline, as: .table)
        #expect(table.split(separator: "\n")[0] == "stage          probability  count   amount  weighted_amount")
        #expect(table.split(separator: "\n")[3] == "proposal                50      1  1234.50           617.25")
        let json = try reports.render(.pipeline, as: .json)
        let decoded = try JSONDecoder().decode([[String: JSONAny]].self, from: Data(json.utf8))
        #expect(decoded[2]["weighted_amount"] == .number(617.25))
        #expect(decoded[2]["stage"] == .string("proposal"))
        for report in CRMReport.allCases { for format in ReportFormat.allCases { _ = try reports.render(report, as: format) } }
    }
}

/// Just enough JSON to check a rendered report's keys and values.
enum JSONAny: Decodable, Equatable {
    case number(Double), string(String), other
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Double.self) { self = .number(n) } else if let s = try? c.decode(String.self) { self = .string(s) } else { self = .other }
    }
}

@Suite struct ProjectionTests {
    @Test(.blocking) func scanReadsTheNamedFieldsOfLiveRecords() throws {
        let f = try Fixture()
        let a = try f.account("A")
        try f.store.increment(a, field: "loyalty_points", by: 7)
        try f.store.increment(a, field: "loyalty_points", by: -2)
        let gone = try f.account("Gone", lifecycle: "churned")
        try f.store.delete(gone)
        var seen: [UUID: [FieldValue]] = [:]
        try f.store.scan("account", fields: ["tier", "name", "loyalty_points"]) { seen[$0] = $1 }
        #expect(seen == [a: [.null, .text("A"), .integer(5)]])
    }
}
