import CRM
import Foundation
import ReplicaStore
import SyncModel
import Testing
import TestScheduling

@Suite struct SettingsTests {
    @Test(.blocking) func defaultsWithoutSettingRecords() throws {
        let f = try Fixture()
        let settings = try CRMSettings.load(from: f.store).settings
        #expect(settings == CRMSettings())
        #expect(settings.tiers.vip == 1_000_000 && settings.tiers.bronze == 100_000)
        #expect(settings.sla["urgent"] == .init(responseHours: 1, resolutionHours: 8))
    }

    @Test(.blocking) func settingRecordsOverrideDefaults() throws {
        let f = try Fixture()
        try f.setting("tier.gold", "400000")
        try f.setting("sla.high.response_hours", "2")
        try f.setting("churn.inactivity_days", "30")
        try f.setting("churn.activity_drop_share", "0.25")
        try f.setting("renewal.window_days", "14")
        try f.setting("some.future.key", "whatever")
        let settings = try CRMSettings.load(from: f.store).settings
        #expect(settings.tiers.gold == 400_000)
        #expect(settings.sla["high"] == .init(responseHours: 2, resolutionHours: 24))
        #expect(settings.churnInactivityDays == 30)
        #expect(settings.activityDropShare == 0.25)
        #expect(settings.renewalWindowDays == 14)
    }

    @Test(.blocking) func invalidSettingNamesKeyAndValue() throws {
        #expect(throws: CRMError.invalidSetting(key: "churn.inactivity_days", value: "soon", expected: "a whole number of days above 0")) {
            try CRMSettings([("churn.inactivity_days", "soon")])
        }
        #expect(throws: CRMError.self) { try CRMSettings([("churn.activity_drop_share", "1.5")]) }
    }

    /// A rep's setting with a bad value (written before the store rules refused it) must not
    /// fail every report of the tenant: the key keeps its default and the record is named.
    @Test(.blocking) func aBadSettingFallsBackToItsDefaultAndIsReported() throws {
        let f = try Fixture()
        try f.setting("tier.gold", "400000")
        let bad = try f.store.create("setting", ["key": .text("churn.inactivity_days"), "value": .text("soon")]).id
        let loaded = try CRMSettings.load(from: f.store)
        #expect(loaded.settings.churnInactivityDays == CRMSettings().churnInactivityDays)
        #expect(loaded.settings.tiers.gold == 400_000, "the good settings still apply")
        #expect(loaded.problems == [SettingProblem(key: "churn.inactivity_days", record: bad, value: "soon",
                                                   expected: "a whole number of days above 0")])
        #expect("\(loaded.problems[0])".contains("churn.inactivity_days") && "\(loaded.problems[0])".contains(bad.uuidString.lowercased()))

        let reports = try CRMReports(store: f.store, now: Fixture.now)
        #expect(reports.settingProblems == loaded.problems)
        _ = try reports.churnRisks()
        _ = try reports.pipeline()
        #expect(try CRMRules(store: f.store, now: Fixture.now).settings.churnInactivityDays == 90)
    }

    @Test(.blocking) func theExpectedFormOfAKnownKeysBadValue() {
        #expect(CRMSettings.expectedForm(ofKey: "churn.inactivity_days", value: "30") == nil)
        #expect(CRMSettings.expectedForm(ofKey: "churn.inactivity_days", value: "0") == "a whole number of days above 0")
        #expect(CRMSettings.expectedForm(ofKey: "sla.urgent.response_hours", value: "-1") == "a number of at least 0")
        #expect(CRMSettings.expectedForm(ofKey: "churn.activity_drop_share", value: "1.5") == "a share from 0 to 1")
        #expect(CRMSettings.expectedForm(ofKey: "some.future.key", value: "anything") == nil)
    }

    @Test(.blocking) func pipelineFromStageRecordsOrDefault() throws {
        let f = try Fixture()
        #expect(try CRMPipeline.load(from: f.store) == .default)
        try f.store.create("pipeline_stage", ["name": .text("won"), "position": .integer(2), "probability": .integer(100),
                                              "closed": .bool(true), "won": .bool(true)])
        try f.store.create("pipeline_stage", ["name": .text("talk"), "position": .integer(1), "probability": .integer(30)])
        let pipeline = try CRMPipeline.load(from: f.store)
        #expect(pipeline.stages.map(\.name) == ["talk", "won"])
        #expect(pipeline.stage("won")?.won == true)
    }
}

@Suite struct DateTests {
    @Test(.blocking) func daysAndInstantsRoundTrip() {
        #expect(CRMDate.day("1970-01-01") == 0)
        #expect(CRMDate.day("2024-02-29") == 19_782)
        #expect(CRMDate.day("2023-02-29") == nil)
        #expect(CRMDate.format(day: 19_782) == "2024-02-29")
        #expect(CRMDate.instant("2025-06-15T12:00:00Z") == 1_749_988_800)
        #expect(CRMDate.instant("2025-06-15T12:00:00.250Z") == 1_749_988_800)
        #expect(CRMDate.instant("2025-06-15") == 1_749_945_600)
        #expect(CRMDate.format(instant: 1_749_988_800) == "2025-06-15T12:00:00Z")
        #expect(CRMDate.format(day: -1) == "1969-12-31")
        // 2025-06-15 is a Sunday: its ISO week starts on Monday the 9th.
        #expect(CRMDate.format(day: CRMDate.weekStart(ofDay: CRMDate.day("2025-06-15")!)) == "2025-06-09")
        #expect(CRMDate.format(day: CRMDate.weekStart(ofDay: CRMDate.day("2025-06-09")!)) == "2025-06-09")
    }
}

@Suite struct RulesTests {
    let rules = CRMRules(now: Fixture.now)

    @Test(.blocking) func tierThresholdsAreExclusive() {
        #expect(rules.tier(forWonRevenue: 1_000_001) == "vip")
        #expect(rules.tier(forWonRevenue: 1_000_000) == "gold")
        #expect(rules.tier(forWonRevenue: 500_000.5) == "gold")
        #expect(rules.tier(forWonRevenue: 200_001) == "silver")
        #expect(rules.tier(forWonRevenue: 100_001) == "bronze")
        #expect(rules.tier(forWonRevenue: 100_000) == "standard")
        #expect(rules.tier(forWonRevenue: 0) == "standard")
    }

    @Test(.blocking) func tiersCountOnlyWonRevenueOfTheLastTwelveMonths() throws {
        let f = try Fixture()
        let a = try f.account("A")
        let b = try f.account("B")
        let c = try f.account("C")
        try f.opportunity(a, stage: "closed_won", amount: 600_000, closed: Fixture.day(-10))
        try f.opportunity(a, stage: "closed_won", amount: 500_000, closed: Fixture.day(-364))
        try f.opportunity(a, stage: "closed_won", amount: 900_000, closed: Fixture.day(-365))  // outside the window
        try f.opportunity(b, stage: "negotiation", amount: 5_000_000)  // not won
        try f.opportunity(b, stage: "closed_lost", amount: 5_000_000, closed: Fixture.day(-1))
        try f.opportunity(b, stage: "closed_won", amount: 150_000, closed: Fixture.day(0))
        let tiers = rules.tiers(accounts: try f.store.records(ofType: "account"),
                                opportunities: try f.store.records(ofType: "opportunity"))
        #expect(tiers == [a: "vip", b: "bronze", c: "standard"])
    }

    @Test(.blocking) func tenantThresholdsChangeTiers() throws {
        let custom = CRMRules(settings: try CRMSettings([("tier.vip", "100")]), now: Fixture.now)
        #expect(custom.tier(forWonRevenue: 101) == "vip")
    }

    @Test(.blocking) func lifecycleAfterWin() {
        #expect(CRMRules.lifecycleAfterWin("prospect") == "customer")
        #expect(CRMRules.lifecycleAfterWin("target") == "customer")
        #expect(CRMRules.lifecycleAfterWin(nil) == "customer")
        #expect(CRMRules.lifecycleAfterWin("customer") == nil)
        #expect(CRMRules.lifecycleAfterWin("core") == nil)
    }

    @Test(.blocking) func churnRiskAfterConfiguredInactivity() throws {
        let f = try Fixture()
        let quiet = try f.account("Quiet", lifecycle: "customer")
        let called = try f.account("Called", lifecycle: "customer")
        let viaContact = try f.account("ViaContact", lifecycle: "core")
        let bought = try f.account("Bought", lifecycle: "customer")
        try f.account("Prospect", lifecycle: "prospect")
        try f.activity(account: quiet, occurred: Fixture.instant(days: -91))
        try f.activity(account: called, occurred: Fixture.instant(days: -89))
        try f.activity(account: called, occurred: Fixture.instant(days: -1), status: "cancelled")
        let person = try f.contact("Doe", account: viaContact)
        try f.activity(contact: person, occurred: Fixture.instant(days: -5))
        try f.opportunity(bought, stage: "closed_won", amount: 10, closed: Fixture.day(-30))
        func risks(_ rules: CRMRules) throws -> Set<UUID> {
            rules.churnRisks(accounts: try f.store.records(ofType: "account"),
                             opportunities: try f.store.records(ofType: "opportunity"),
                             activities: try f.store.records(ofType: "activity"),
                             contacts: try f.store.records(ofType: "contact"))
        }
        #expect(try risks(rules) == [quiet])
        let strict = CRMRules(settings: try CRMSettings([("churn.inactivity_days", "20")]), now: Fixture.now)
        #expect(try risks(strict) == [quiet, called, bought])
        // A marginal account is reviewed, not followed up for churn.
        try f.store.update(quiet, ["value_segment": .text("marginal")])
        #expect(try risks(rules).isEmpty)
    }

    @Test(.blocking) func slaDeadlinesAndBreaches() throws {
        let opened = CRMDate.seconds(Fixture.now) - 10 * 3600
        #expect(rules.deadlines(priority: "urgent", openedAt: opened)! == (opened + 3600, opened + 8 * 3600))
        #expect(rules.deadlines(priority: "low", openedAt: opened)! == (opened + 86_400, opened + 168 * 3600))
        #expect(rules.deadlines(priority: "unknown", openedAt: opened) == nil)

        let f = try Fixture()
        func make(_ values: [String: String]) throws -> RecordState {
            try f.read(try f.supportCase("C", priority: "normal", values.mapValues { .text($0) }))
        }
        let due = ["response_due": Fixture.instant(days: -1), "resolution_due": Fixture.instant(days: 1)]
        #expect(rules.isBreached(try make(due)))  // unanswered past its response deadline
        #expect(!rules.isBreached(try make(due.merging(["first_response_at": Fixture.instant(days: -1.5)]) { $1 })))
        #expect(rules.isBreached(try make(due.merging(["first_response_at": Fixture.instant(days: -0.5)]) { $1 })))
        let resolvedLate = ["response_due": Fixture.instant(days: -5), "resolution_due": Fixture.instant(days: -3),
                            "first_response_at": Fixture.instant(days: -6), "resolved_at": Fixture.instant(days: -2)]
        #expect(rules.isBreached(try make(resolvedLate)))
        #expect(!rules.isBreached(try make(resolvedLate.merging(["resolved_at": Fixture.instant(days: -4)]) { $1 })))
        #expect(!rules.isBreached(try make([:])))
    }

    @Test(.blocking) func activityDropAgainstOwnPreviousPeriod() throws {
        let f = try Fixture()
        let dropped = try f.account("Dropped")
        let steady = try f.account("Steady")
        let exactlyHalf = try f.account("Half")
        for d in [-100.0, -110, -120, -130] { try f.activity(account: dropped, occurred: Fixture.instant(days: d)) }
        try f.activity(account: dropped, occurred: Fixture.instant(days: -10))
        for d in [-100.0, -120, -10, -20] { try f.activity(account: steady, occurred: Fixture.instant(days: d)) }
        for d in [-100.0, -120, -10] { try f.activity(account: exactlyHalf, occurred: Fixture.instant(days: d)) }
        try f.activity(account: exactlyHalf, occurred: Fixture.instant(days: -200))  // before both periods
        let drops = rules.activityDrops(accounts: try f.store.records(ofType: "account"),
                                        activities: try f.store.records(ofType: "activity"))
        #expect(drops == [.init(account: dropped, previous: 4, current: 1)])
    }

    @Test(.blocking) func renewalWithinWindowWithoutOpenOpportunity() throws {
        let f = try Fixture()
        let due = try f.account("Due", renewal: Fixture.day(30))
        let worked = try f.account("Worked", renewal: Fixture.day(10))
        try f.opportunity(worked, stage: "proposal", amount: 1)
        let closedOnly = try f.account("ClosedOnly", renewal: Fixture.day(0))
        try f.opportunity(closedOnly, stage: "closed_won", amount: 1, closed: Fixture.day(-100))
        try f.account("Later", renewal: Fixture.day(61))
        try f.account("Past", renewal: Fixture.day(-1))
        let warned = rules.renewalsWithoutOpportunity(accounts: try f.store.records(ofType: "account"),
                                                      opportunities: try f.store.records(ofType: "opportunity"))
        #expect(Set(warned) == [due, closedOnly])
    }

    @Test(.blocking) func derivedIDsAreStableAndDistinct() {
        let a = DerivedID.make("contact", "ann@example.com")
        #expect(a == DerivedID.make("contact", "ann@example.com"))
        #expect(a != DerivedID.make("lead", "ann@example.com"))
        #expect(a.uuidString.dropFirst(14).first == "8")
    }
}

@Suite struct EffectsTests {
    @Test(.blocking) func theScheduledPassWritesOnlyChanges() throws {
        let f = try Fixture()
        let big = try f.account("Big", lifecycle: "customer")
        let quiet = try f.account("Quiet", lifecycle: "customer", ["tier": .text("standard")])
        try f.opportunity(big, stage: "closed_won", amount: 250_000, closed: Fixture.day(-3))
        // Bought long ago: a regular customer gone quiet (a marginal one is not flagged).
        try f.opportunity(quiet, stage: "closed_won", amount: 50_000, closed: Fixture.day(-200))
        let late = try f.supportCase("C-3", priority: "urgent", ["response_due": .text(Fixture.instant(days: -1))])
        let fine = try f.supportCase("C-4", priority: "urgent", ["response_due": .text(Fixture.instant(days: 1)),
                                                                 "sla_breached": .bool(false)])
        let pass = CRMScheduledPass(rules: CRMRules(now: Fixture.now))
        let applied = try pass.run(on: f.store)
        #expect(applied.written == .init(tiers: 1, churnFlags: 1, segments: 2, breaches: 1, escalations: 1))
        #expect(applied.recordsWritten == 4, "two accounts, the late case and its escalation")
        #expect(try f.read(big).text("tier") == "silver")
        #expect(try f.read(big).flag("churn_risk") == false)
        #expect(try f.read(quiet).flag("churn_risk") == true)
        #expect(try f.read(late).flag("sla_breached") == true)
        #expect(try f.read(fine).flag("sla_breached") == false)
        let before = try f.store.lastSequence
        #expect(try pass.run(on: f.store).recordsWritten == 0)
        #expect(try f.store.lastSequence == before)
    }
}
