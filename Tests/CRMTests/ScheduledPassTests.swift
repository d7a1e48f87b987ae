import CRM
import Foundation
import ReplicaStore
import SyncModel
import Testing
import TestScheduling

/// The server's scheduled rule pass on known data at `Fixture.now` (2025-06-15T12:00:00Z).
@Suite struct ScheduledPassTests {
    private func pass(at now: Date = Fixture.now, _ manager: @escaping (String) -> String? = { _ in nil }) -> CRMScheduledPass {
        CRMScheduledPass(now: now, manager: manager)
    }

    /// Runs the pass twice: the second run must write nothing and leave the sequence alone.
    @discardableResult
    private func runTwice(_ f: Fixture, at now: Date = Fixture.now, _ manager: @escaping (String) -> String? = { _ in nil })
        throws -> CRMScheduledPass.Report
    {
        let first = try pass(at: now, manager).run(on: f.store)
        let sequence = try f.store.lastSequence
        let second = try pass(at: now, manager).run(on: f.store)
        #expect(second.recordsWritten == 0 && second.written == .init(), "a second pass over unchanged data writes nothing")
        #expect(try f.store.lastSequence == sequence)
        return first
    }

    @Test(.blocking) func tiersFollowWonRevenueOverTwelveMonths() throws {
        let f = try Fixture()
        func account(_ name: String, won amounts: [(Double, Int)]) throws -> UUID {
            let id = try f.account(name, lifecycle: "customer")
            for (amount, daysAgo) in amounts { try f.opportunity(id, stage: "closed_won", amount: amount, closed: Fixture.day(-daysAgo)) }
            return id
        }
        let atBronze = try account("at bronze", won: [(100_000, 10)])
        let bronze = try account("bronze", won: [(60_000, 10), (40_001, 300)])
        let silver = try account("silver", won: [(200_001, 364)])
        let gold = try account("gold", won: [(500_001, 0)])
        let vip = try account("vip", won: [(1_000_001, 1)])
        let old = try account("13 months ago", won: [(2_000_000, 395), (5_000, 20)])
        let lost = try f.account("lost", lifecycle: "customer")
        try f.opportunity(lost, stage: "closed_lost", amount: 900_000, closed: Fixture.day(-5))
        let report = try runTwice(f)
        #expect(try f.read(atBronze).text("tier") == "standard", "a threshold must be exceeded")
        #expect(try f.read(bronze).text("tier") == "bronze")
        #expect(try f.read(silver).text("tier") == "silver")
        #expect(try f.read(gold).text("tier") == "gold")
        #expect(try f.read(vip).text("tier") == "vip")
        #expect(try f.read(old).text("tier") == "standard", "a deal won 13 months ago does not count")
        #expect(try f.read(lost).text("tier") == "standard")
        #expect(report.written.tiers == 7)

        // A year later the revenue has left the window: tiers fall back, written once.
        let later = Fixture.now.addingTimeInterval(366 * 86_400)
        let fall = try runTwice(f, at: later)
        #expect(try f.read(vip).text("tier") == "standard")
        #expect(fall.written.tiers == 4)
    }

    @Test(.blocking) func churnFlagsCustomersButNotMarginalOrProspects() throws {
        let f = try Fixture()
        // Bought 200 days ago (regular), nothing since: at risk.
        let quiet = try f.account("quiet", lifecycle: "customer")
        try f.opportunity(quiet, stage: "closed_won", amount: 50_000, closed: Fixture.day(-200))
        // The same, but a call to its contact 10 days ago keeps it.
        let called = try f.account("called", lifecycle: "core")
        try f.opportunity(called, stage: "closed_won", amount: 50_000, closed: Fixture.day(-200))
        let contact = try f.contact("Lovelace", account: called)
        try f.activity(contact: contact, occurred: Fixture.instant(days: -10))
        // A customer with nothing at all is marginal: reviewed, not followed up for churn.
        let marginal = try f.account("marginal", lifecycle: "customer")
        let prospect = try f.account("prospect", lifecycle: "prospect")
        try f.opportunity(prospect, stage: "closed_won", amount: 50_000, closed: Fixture.day(-200))
        // Flagged before, active now: the flag is cleared.
        let back = try f.account("back", lifecycle: "customer", ["churn_risk": .bool(true)])
        try f.activity(account: back, occurred: Fixture.instant(days: -1))

        let report = try runTwice(f)
        #expect(try f.read(quiet).flag("churn_risk") == true)
        #expect(try f.read(quiet).text("value_segment") == "regular")
        #expect(try f.read(called).flag("churn_risk") == false)
        #expect(try f.read(marginal).text("value_segment") == "marginal")
        #expect(try f.read(marginal).flag("churn_risk") == false)
        #expect(try f.read(prospect).flag("churn_risk") == false)
        #expect(try f.read(back).flag("churn_risk") == false)
        #expect(report.written.churnFlags == 2, "quiet set, back cleared; unset already reads as false")
    }

    @Test(.blocking) func renewalDueWithoutAnOpenOpportunity() throws {
        let f = try Fixture()
        let due = try f.account("due", renewal: Fixture.day(30))
        let worked = try f.account("worked", renewal: Fixture.day(30))
        try f.opportunity(worked, stage: "proposal", amount: 10)
        let far = try f.account("far", renewal: Fixture.day(90))
        let past = try f.account("past", renewal: Fixture.day(-1))
        let today = try f.account("today", renewal: Fixture.day(0))
        let report = try runTwice(f)
        #expect(try f.read(due).flag("renewal_due") == true)
        #expect(try f.read(today).flag("renewal_due") == true)
        #expect(try f.read(worked).flag("renewal_due") == false)
        #expect(try f.read(far).flag("renewal_due") == false)
        #expect(try f.read(past).flag("renewal_due") == false)
        #expect(report.written.renewalFlags == 2)

        // The opportunity is lost: the renewal is nobody's work any more.
        let opportunity = try #require(try f.store.records(ofType: "opportunity").first).id
        try f.store.update(opportunity, ["stage": .text("closed_lost")])
        #expect(try runTwice(f).written.renewalFlags == 1)
        #expect(try f.read(worked).flag("renewal_due") == true)
    }

    @Test(.blocking) func eachValueSegment() throws {
        let f = try Fixture()
        let strategic = try f.account("strategic", ["strategic": .bool(true)])
        let big = try f.account("big")
        try f.opportunity(big, stage: "closed_won", amount: 250_000, closed: Fixture.day(-100))
        let frequent = try f.account("frequent")
        for day in 1...5 { try f.opportunity(frequent, stage: "closed_won", amount: 100, closed: Fixture.day(-day * 30)) }
        let growing = try f.account("growing")
        try f.opportunity(growing, stage: "proposal", amount: 60_000)
        try f.opportunity(growing, stage: "negotiation", amount: 40_000)
        let buyer = try f.account("buyer")
        try f.opportunity(buyer, stage: "closed_won", amount: 10_000, closed: Fixture.day(-300))
        let busy = try f.account("busy")
        for day in [1, 20, 80] { try f.activity(account: busy, occurred: Fixture.instant(days: -Double(day))) }
        let idle = try f.account("idle")
        for day in [1, 20, 120] { try f.activity(account: idle, occurred: Fixture.instant(days: -Double(day))) }
        try f.opportunity(idle, stage: "closed_won", amount: 10_000, closed: Fixture.day(-400))
        let report = try runTwice(f)
        let segments = try [strategic, big, frequent, growing, buyer, busy, idle].map { try f.read($0).text("value_segment") }
        #expect(segments == ["core", "core", "core", "potential", "regular", "regular", "marginal"])
        #expect(report.written.segments == 7)
    }

    @Test(.blocking) func breachesAndEscalationsMadeOnceForTheManager() throws {
        let f = try Fixture()
        let account = try f.account("Acme", lifecycle: "customer")
        let contact = try f.contact("Hopper", account: account)
        // Urgent, opened two hours ago: response due an hour ago, resolution in six hours.
        let late = try f.supportCase("C-7", priority: "urgent", [
            "owner": .text("ann@example.com"), "account": .text(account.uuidString), "contact": .text(contact.uuidString),
            "opened_at": .text(Fixture.instant(days: -2.0 / 24)), "response_due": .text(Fixture.instant(days: -1.0 / 24)),
            "resolution_due": .text(Fixture.instant(days: 6.0 / 24)),
        ])
        // Answered late: breached, but nothing left to push for.
        let answered = try f.supportCase("C-8", priority: "urgent", [
            "owner": .text("ann@example.com"), "response_due": .text(Fixture.instant(days: -1)),
            "first_response_at": .text(Fixture.instant(days: -0.5)), "resolution_due": .text(Fixture.instant(days: 1)),
        ])
        let closed = try f.supportCase("C-9", priority: "urgent", status: "closed", [
            "response_due": .text(Fixture.instant(days: -1)), "closed_at": .text(Fixture.instant(days: -1.5)),
        ])
        // An owner whose team has no manager keeps the escalation.
        let alone = try f.supportCase("C-10", priority: "high", ["owner": .text("solo@example.com"),
                                                                "response_due": .text(Fixture.instant(days: -1))])
        let fine = try f.supportCase("C-11", priority: "low", ["response_due": .text(Fixture.instant(days: 1)),
                                                              "resolution_due": .text(Fixture.instant(days: 7))])
        let managers = CRMScheduledPass.managers(in: [
            .init(email: "ann@example.com", role: "rep", team: "north"),
            .init(email: "mia@example.com", role: "manager", team: "north"),
            .init(email: "max@example.com", role: "manager", team: "south"),
            .init(email: "solo@example.com", role: "rep", team: "west"),
        ])

        let report = try runTwice(f, managers)
        #expect(try f.read(late).flag("sla_breached") == true)
        #expect(try f.read(answered).flag("sla_breached") == true)
        #expect(try f.read(closed).flag("sla_breached") == false, "closed before its deadline passed")
        #expect(try f.read(fine).flag("sla_breached") == false)
        #expect(report.written.breaches == 3)
        #expect(report.written.escalations == 2)

        let escalation = try f.read(CRMRules.escalationID(forCase: late, .response))
        #expect(escalation.type == "activity")
        #expect(escalation.text("kind") == "task" && escalation.text("status") == "open")
        #expect(escalation.text("owner") == "mia@example.com")
        #expect(escalation.text("subject")?.contains("C-7") == true && escalation.text("subject")?.contains("response") == true)
        #expect(escalation.reference("case") == late && escalation.reference("account") == account
            && escalation.reference("contact") == contact)
        #expect(escalation.text("due_at") == Fixture.instant(days: 0))
        #expect(try f.read(late).text("escalated_at") == Fixture.instant(days: 0))
        #expect(try f.store.record(CRMRules.escalationID(forCase: late, .resolution)) == nil, "not due yet")
        #expect(try f.read(CRMRules.escalationID(forCase: alone, .response)).text("owner") == "solo@example.com")
        for quiet in [answered, closed, fine] {
            for deadline in CRMRules.CaseDeadline.allCases {
                #expect(try f.store.record(CRMRules.escalationID(forCase: quiet, deadline)) == nil)
            }
        }
        #expect(try f.store.count(ofType: "activity") == 2)

        // Seven hours later the resolution deadline has passed too: its own escalation, once.
        let later = Fixture.now.addingTimeInterval(7 * 3600)
        let next = try runTwice(f, at: later, managers)
        #expect(next.written.escalations == 1, "C-7's resolution; C-10 has no resolution deadline")
        #expect(try f.read(CRMRules.escalationID(forCase: late, .resolution)).text("subject")?.contains("resolution") == true)
        #expect(try f.read(late).text("escalated_at") == CRMDate.format(instant: CRMDate.seconds(later)))

        // A user deleted an escalation and the case lost its mark: the task is not made again.
        let response = CRMRules.escalationID(forCase: alone, .response)
        try f.store.delete(response)
        try f.store.update(alone, ["escalated_at": .null])
        let again = try pass(at: later, managers).run(on: f.store)
        #expect(again.written.escalations == 0)
        #expect(try f.read(response).isDeleted)
    }

    /// The escalation task a pass makes is about the account, but no work with the customer:
    /// counted as activity, it would clear the churn flag on the next pass.
    @Test(.blocking) func anEscalationDoesNotCountAsActivityWithTheCustomer() throws {
        let f = try Fixture()
        let account = try f.account("Quiet", lifecycle: "customer")
        try f.opportunity(account, stage: "closed_won", amount: 50_000, closed: Fixture.day(-200))
        let late = try f.supportCase("C-1", priority: "high", ["account": .text(account.uuidString), "owner": .text("ann@example.com"),
                                                              "response_due": .text(Fixture.instant(days: -1))])
        let report = try runTwice(f)
        #expect(report.written.escalations == 1 && report.written.churnFlags == 1)
        #expect(try f.read(CRMRules.escalationID(forCase: late, .response)).reference("account") == account)
        #expect(try f.read(account).flag("churn_risk") == true)
        let rules = CRMRules(now: Fixture.now)
        #expect(rules.churnRisks(accounts: try f.store.records(ofType: "account"), opportunities: try f.store.records(ofType: "opportunity"),
                                 activities: try f.store.records(ofType: "activity")) == [account], "reports agree")
    }

    @Test(.blocking) func overriddenFieldsAreLeftAlone() throws {
        let f = try Fixture()
        let account = try f.account("Hand-tiered", lifecycle: "customer", [
            "tier": .text("vip"), "churn_risk": .bool(false), "value_segment": .text("core"),
            "overrides": .text("tier, value_segment"),
        ])
        let supportCase = try f.supportCase("C-1", priority: "urgent", [
            "response_due": .text(Fixture.instant(days: -1)), "first_response_at": .text(Fixture.instant(days: -0.5)),
            "sla_breached": .bool(false), "overrides": .text("sla_breached"),
        ])
        let report = try runTwice(f)
        #expect(try f.read(account).text("tier") == "vip")
        #expect(try f.read(account).text("value_segment") == "core")
        #expect(try f.read(account).flag("churn_risk") == true, "not overridden; core by override, so followed up")
        #expect(try f.read(supportCase).flag("sla_breached") == false)
        #expect(report.written == .init(churnFlags: 1))
    }

    /// A user's edit that lands between the pass's read and its write is never overwritten with
    /// a value computed from the state before it; the next pass catches up.
    @Test(.blocking) func aConcurrentEditBetweenReadAndWriteIsNotOverwritten() throws {
        let f = try Fixture()
        let edited = try f.account("Edited", lifecycle: "customer")
        let other = try f.account("Other", lifecycle: "customer")
        let plan = try pass().plan(f.store)
        #expect(Set(plan.records) == [edited, other])

        // Another handle on the same file, as a session of the server writes beside the pass.
        let session = try ReplicaStore(path: f.store.path, options: .init(schema: CRMSchema.current))
        defer { session.close() }
        try session.update(edited, ["tier": .text("gold"), "overrides": .text("tier")])

        let report = try pass().apply(plan, to: f.store)
        #expect(report.skipped == 1)
        #expect(report.recordsWritten == 1)
        #expect(try f.read(edited).text("tier") == "gold", "the user's value stands")
        #expect(try f.read(edited).text("value_segment") == nil, "nothing of the stale computation was written")
        #expect(try f.read(other).text("tier") == "standard")

        let next = try runTwice(f)
        #expect(next.recordsWritten == 1 && next.written == .init(segments: 1))
        #expect(try f.read(edited).text("tier") == "gold")
        #expect(try f.read(edited).text("value_segment") == "marginal")
    }

    @Test(.blocking) func writesInChunksAndStopsBetweenThemWhenCancelled() throws {
        let f = try Fixture()
        let accounts = try (1...7).map { try f.account("A\($0)") }
        var stopping = pass()
        stopping.chunkSize = 3
        var asked = 0
        stopping.isCancelled = {
            asked += 1
            return asked > 1
        }
        let first = try stopping.run(on: f.store)
        #expect(first.cancelled && first.recordsWritten == 3)
        var chunked = pass()
        chunked.chunkSize = 3
        let rest = try chunked.run(on: f.store)
        #expect(!rest.cancelled && rest.recordsWritten == 4)
        #expect(try accounts.allSatisfy { try f.read($0).text("tier") == "standard" })
        #expect(try pass().run(on: f.store).recordsWritten == 0)
    }

    @Test(.blocking) func theReportCountsReadsAndEncodesAsJSON() throws {
        let f = try Fixture()
        let account = try f.account("A", lifecycle: "customer")
        try f.contact("C", account: account)
        try f.opportunity(account, stage: "proposal", amount: 1)
        try f.activity(account: account, occurred: Fixture.instant(days: -1))
        try f.supportCase("C-1", priority: "low")
        let report = try pass().run(on: f.store)
        #expect(report.recordsRead == 5)
        #expect(report.at == "2025-06-15T12:00:00Z")
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any]
        #expect(json?["recordsWritten"] as? Int == report.recordsWritten)
        #expect(try JSONDecoder().decode(CRMScheduledPass.Report.self, from: JSONEncoder().encode(report)).written == report.written)
    }

    @Test(.blocking) func managersComeFromTheOwnersTeam() {
        let manager = CRMScheduledPass.managers(in: [
            .init(email: "ann@example.com", role: "rep", team: "north"),
            .init(email: "zoe@example.com", role: "manager", team: "north"),
            .init(email: "mia@example.com", role: "manager", team: "north"),
            .init(email: "bob@example.com", role: "rep", team: nil),
            .init(email: "max@example.com", role: "manager", team: "south"),
        ])
        #expect(manager("ann@example.com") == "mia@example.com", "the first by e-mail, whatever the order given")
        #expect(manager("ANN@example.com") == "mia@example.com")
        #expect(manager("mia@example.com") == "zoe@example.com", "a manager's manager is another one of the team")
        #expect(manager("max@example.com") == "max@example.com", "the only manager of the team")
        #expect(manager("bob@example.com") == nil)
        #expect(manager("nobody@example.com") == nil)
    }
}
