import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// The CRM's scheduled rule pass as an operator meets it: run by a `rapportd` process on its
/// schedule, and by `rapportctl rules run`.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct ScheduledRulesTests {
    /// A device pushes an urgent case opened two days ago and never answered; the server's
    /// pass, running every second, marks it breached and escalates it to the owner's manager,
    /// and another device receives both. A tenant whose store is gone fails its pass, logged,
    /// and does not stop the others.
    @Test func theServersPassReachesAnotherDevice() async throws {
        let dir = try TemporaryDirectory()
        let log = dir.path("rapportd.log")
        let operated = try await OperatedServer(dir, arguments: ["--rules-interval", "1", "--log-level", "info"], logFile: log)
        defer { operated.server.stop() }
        let ctl = operated.ctl
        for (email, role) in [("ben@acme.example", "rep"), ("mia@acme.example", "manager")] {
            let added = try await ctl.run(["user", "add", "--tenant", "acme", "--email", email, "--name", email, "--role", role, "--team", "north"])
            #expect(added.status == 0, "\(added.error)")
        }
        await #expect(try ctl.run(["tenant", "create", "a-broken"]).status == 0)
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: operated.data + "/tenants/a-broken.sqlite" + suffix) }

        let laptop = try await operated.enroll("laptop")
        let phone = try await operated.enroll("phone")
        let opened = CRMDate.seconds(Date()) - 2 * 86_400
        let due = try #require(CRMRules(now: Date()).deadlines(priority: "urgent", openedAt: opened))
        let (account, supportCase) = try laptop.local { store in
            try store.transaction {
                // A customer without a won deal here: a prospect as far as the rules go (a device
                // may not make it a customer by hand).
                let account = try store.create("account", ["name": .text("Acme Corp"), "lifecycle_stage": .text("target")]).id
                let supportCase = try store.create("case", [
                    "number": .text("C-42"), "subject": .text("Line down"), "priority": .text("urgent"), "status": .text("open"),
                    "owner": .text("ben@acme.example"), "account": .text(account.uuidString),
                    "opened_at": .text(CRMDate.format(instant: opened)), "response_due": .text(CRMDate.format(instant: due.response)),
                    "resolution_due": .text(CRMDate.format(instant: due.resolution)),
                ]).id
                return (account, supportCase)
            }
        }
        try await laptop.sync()

        let response = CRMRules.escalationID(forCase: supportCase, .response)
        let resolution = CRMRules.escalationID(forCase: supportCase, .resolution)
        var seen: (supportCase: RecordState?, response: RecordState?, resolution: RecordState?) = (nil, nil, nil)
        // A bound on waiting only, far above the second between passes; not a measure of speed.
        for _ in 0..<300 {
            try await phone.sync()
            seen = try phone.local { try ($0.record(supportCase), $0.record(response), $0.record(resolution)) }
            if seen.supportCase?.flag("sla_breached") == true, seen.response != nil, seen.resolution != nil { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let breached = try #require(seen.supportCase)
        #expect(breached.flag("sla_breached"))
        #expect(breached.text("escalated_at") != nil)
        let escalation = try #require(seen.response, "the escalation task reached the phone")
        #expect(escalation.type == "activity" && escalation.text("kind") == "task" && escalation.text("status") == "open")
        #expect(escalation.text("owner") == "mia@acme.example", "the case owner's manager, from the registry")
        #expect(escalation.text("subject")?.contains("C-42") == true)
        #expect(escalation.reference("case") == supportCase && escalation.reference("account") == account)
        #expect(seen.resolution?.text("subject")?.contains("resolution") == true)
        let computed = try #require(try phone.local { try $0.record(account) })
        #expect(computed.text("tier") == "standard" && computed.text("value_segment") == "marginal")

        // Written once: the passes that follow leave them as they are.
        try await Task.sleep(for: .seconds(3))
        try await phone.sync()
        #expect(try phone.local { try $0.record(supportCase) } == breached)
        #expect(try phone.local { try $0.count(ofType: "activity") } == 2)
        await operated.server.stop()
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.contains("rules pass done") && text.contains("tenant=acme"), "\(text.suffix(2000))")
        #expect(text.contains("rules pass failed") && text.contains("a-broken"), "\(text.suffix(2000))")
    }

    /// `rapportctl rules run` on a data directory: the manager from the registry, JSON
    /// figures, nothing written the second time, --at for a later date, and its errors.
    @Test func anOperatorRunsThePassAtAChosenMoment() async throws {
        let dir = try TemporaryDirectory()
        let ctl = Ctl(data: dir.path("data"))
        await #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
        for (email, role) in [("ben@acme.example", "rep"), ("mia@acme.example", "manager")] {
            await #expect(try ctl.run(["user", "add", "--tenant", "acme", "--email", email, "--name", email, "--role", role, "--team", "north"]).status == 0)
        }
        let store = try ReplicaStore(path: dir.path("data") + "/tenants/acme.sqlite", options: .crm(role: .authority))
        let account = try store.create("account", ["name": .text("Acme Corp"), "lifecycle_stage": .text("customer")]).id
        try store.create("opportunity", ["name": .text("Renewal"), "account": .text(account.uuidString), "stage": .text("closed_won"),
                                         "amount": .real(300_000), "closed_at": .text("2025-06-01")])
        let supportCase = try store.create("case", [
            "number": .text("C-1"), "subject": .text("Broken"), "priority": .text("high"), "status": .text("open"),
            "owner": .text("ben@acme.example"), "opened_at": .text("2025-06-10T05:00:00Z"),
            "response_due": .text("2025-06-10T09:00:00Z"),
        ]).id
        store.close()

        let first = try await ctl.run(["rules", "run", "--tenant", "acme", "--at", "2025-06-15T12:00:00Z", "--json"])
        #expect(first.status == 0, "\(first.error)")
        let report = try #require(first.json as? [String: Any])
        let written = try #require(report["written"] as? [String: Int])
        // The case was opened with a response deadline; its resolution deadline (high: 24 hours)
        // the store's effects stamped when it was created. Both have passed.
        #expect(written["tiers"] == 1 && written["segments"] == 1 && written["breaches"] == 1 && written["escalations"] == 2, "\(report)")
        #expect(written["churnFlags"] == 0)
        #expect(report["recordsWritten"] as? Int == 4 && report["recordsRead"] as? Int == 3)
        #expect(report["at"] as? String == "2025-06-15T12:00:00Z")

        let again = try await ctl.run(["rules", "run", "--tenant", "acme", "--at", "2025-06-15T12:00:00Z", "--json"])
        #expect((again.json as? [String: Any])?["recordsWritten"] as? Int == 0)
        // Thirteen months on, the deal has left the window.
        let later = try await ctl.run(["rules", "run", "--tenant", "acme", "--at", "2026-07-15"])
        #expect(later.status == 0 && later.output.contains("wrote 1") && later.output.contains("tiers 1"), "\(later.output)")

        let check = try ReplicaStore(path: dir.path("data") + "/tenants/acme.sqlite", options: .crm(role: .authority))
        defer { check.close() }
        #expect(try check.record(account)?.text("tier") == "standard")
        let escalation = try #require(try check.record(CRMRules.escalationID(forCase: supportCase, .response)))
        #expect(escalation.text("owner") == "mia@acme.example")
        #expect(escalation.text("due_at") == "2025-06-15T12:00:00Z")

        await #expect(try ctl.run(["rules", "run", "--tenant", "acme", "--at", "June"]).status == 1)
        await #expect(try ctl.run(["rules", "run", "--tenant", "nope"]).status == 2)
        await #expect(try ctl.run(["audit", "--tenant", "acme"]).output.contains("rules run"))
    }
}
