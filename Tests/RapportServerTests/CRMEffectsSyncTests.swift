import CRM
import Foundation
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import TestSupport
import Testing

/// The CRM's rules where data changes, through a real server: the server runs them on every
/// accepted batch and its effects reach the other devices; a device runs them offline and the
/// server, computing the same, adds nothing; what the rules refuse is refused by the server too,
/// per record, with the reason.
@Suite(.serialized) struct CRMEffectsSyncTests {
    /// A client without the CRM's rules (an integration, an old app) pushes plain records; the
    /// server completes them as the tenant's authority and another device receives the result.
    @Test func theServerRunsTheRulesOnWhatAClientWithoutThemPushes() async throws {
        let fixture = try await ServerFixture()
        let thin = try fixture.device("thin", options: .init(schema: CRMSchema.current))
        let bob = try fixture.device("bob")
        let (account, caseID, deal) = try thin.local { store in
            let account = try store.create("account", ["name": .text("Acme"), "lifecycle_stage": .text("prospect")]).id
            let caseID = try store.create("case", ["number": .text("ERP-1"), "subject": .text("late delivery"),
                                                   "priority": .text("urgent"), "status": .text("new"),
                                                   "account": .text(account.uuidString), "owner": .text("bob@example.com")]).id
            let deal = try store.create("opportunity", ["name": .text("Pilot"), "account": .text(account.uuidString),
                                                        "stage": .text("proposal"), "amount": .real(5_000)]).id
            return (account, caseID, deal)
        }
        var report = try await thin.sync()
        #expect(report.rejected == 0)
        try thin.local { store in
            try store.update(caseID, ["status": .text("closed")])
            try store.update(deal, ["stage": .text("closed_won")])
        }
        report = try await thin.sync()
        #expect(report.rejected == 0)
        try await bob.sync()

        let seen = try bob.local { store in
            (try store.record(caseID), try store.record(CRMChangeEffects.followUpID(forCase: caseID)),
             try store.record(deal), try store.record(account), try store.records(ofType: "stage_change"))
        }
        let supportCase = try #require(seen.0)
        let opened = try #require(supportCase.text("opened_at").flatMap(CRMDate.instant))
        #expect(supportCase.text("number") == "ERP-1")
        #expect(supportCase.text("response_due") == CRMDate.format(instant: opened + 3_600))  // urgent: 1 hour
        #expect(supportCase.text("resolution_due") == CRMDate.format(instant: opened + 8 * 3_600))
        #expect(supportCase.text("closed_at") != nil)
        let followUp = try #require(seen.1)
        #expect(followUp.text("kind") == "task" && followUp.text("owner") == "bob@example.com" && followUp.reference("case") == caseID)
        #expect(seen.2?.integer("probability") == 100 && seen.2?.text("closed_at") != nil)
        #expect(seen.3?.text("lifecycle_stage") == "customer")
        #expect(Set(seen.4.compactMap { $0.text("to_stage") }) == ["proposal", "closed_won"])
        // The thin client hears of what its changes led to at its next pull, too.
        try await thin.sync()
        #expect(try thin.local { try $0.record(account)?.text("lifecycle_stage") } == "customer")
        await fixture.stop()
    }

    /// A device computes what follows from its changes offline; the server, receiving them,
    /// computes the same values and the same records, and writes nothing of its own.
    @Test func whatADeviceComputedOfflineTheServerKeepsAsIs() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice")
        let caseID = try await alice.crm(user: "alice@example.com") { crm in
            let account = try crm.create(Account(name: "Acme", owner: "alice@example.com"))
            var opened = try crm.create(ServiceCase(number: "", subject: "printer", account: account.id, priority: "high"))
            opened.status = "closed"
            _ = try crm.update(opened)
            var deal = try crm.create(Opportunity(name: "Pilot", account: account.id, stage: "proposal", amount: 10))
            deal.stage = "closed_won"
            _ = try crm.update(deal)
            return opened.id
        }
        let local = try alice.local { try $0.record(caseID) }
        #expect(local?.text("number")?.hasPrefix("CR") == true && local?.text("response_due") != nil)
        let report = try await alice.sync()
        #expect(report.rejected == 0)
        let server = try fixture.tenantStore()
        defer { server.close() }
        var records: [RecordState] = []
        for type in ["account", "case", "activity", "opportunity", "stage_change"] { records += try server.records(ofType: type) }
        // The account, the case, its follow-up, the deal and its two stage changes.
        #expect(records.count == 6)
        for record in records {
            #expect(!record.vector.sortedEntries.contains { $0.replica == server.replicaID }, "the server wrote \(record.type)")
            #expect(try alice.local { try $0.record(record.id) } == record)
        }
        await fixture.stop()
    }

    /// What the rules refuse on a device is refused by the server from a client that skipped
    /// them, per record, with the reason, and the rest of the batch is kept.
    @Test func theServerRefusesAComputedFieldAndABreachOfConsentWithTheReason() async throws {
        let fixture = try await ServerFixture()
        let thin = try fixture.device("thin", options: .init(schema: CRMSchema.current))
        let (account, contact) = try thin.local { store in
            let account = try store.create("account", ["name": .text("Acme")]).id
            let contact = try store.create("contact", ["last_name": .text("Smith"), "account": .text(account.uuidString),
                                                       "consent_calls": .text("withdrawn"),
                                                       "consent_calls_at": .text("2025-01-01T00:00:00Z")]).id
            return (account, contact)
        }
        #expect(try await thin.sync().rejected == 0)
        let (call, note) = try thin.local { store in
            try store.update(account, ["tier": .text("vip")])
            let call = try store.create("activity", ["kind": .text("call"), "subject": .text("pitch"), "contact": .text(contact.uuidString),
                                                     "occurred_at": .text("2025-06-01T10:00:00Z"), "status": .text("done")]).id
            let note = try store.create("activity", ["kind": .text("note"), "subject": .text("likes golf"),
                                                     "contact": .text(contact.uuidString)]).id
            return (call, note)
        }
        let report = try await thin.sync()
        #expect(report.rejected == 2)
        let server = try fixture.tenantStore()
        defer { server.close() }
        #expect(try server.record(account)?.text("tier") == nil)
        #expect(try server.record(call) == nil)
        #expect(try server.record(note) != nil)
        let reasons = try thin.local { try $0.conflicts() }.compactMap(\.reason)
        #expect(reasons.contains { $0.contains("tier is computed by the tenant's rules") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("withdrew consent to calls on 2025-01-01T00:00:00Z") }, "\(reasons)")
        await fixture.stop()
    }
}
