import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// What follows from a change (`CRMChangeEffects`), written by the store in the transaction of
/// the change: on a device when its app writes, on the server when a batch arrives.
@Suite struct ChangeEffectsTests {
    @Test(.blocking) func aNewCaseGetsANumberOpenedAtAndDeadlines() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let first = try f.store.create("case", ["subject": .text("printer"), "priority": .text("high"), "status": .text("new")])
        let record = try f.read(first.id)
        let prefix = "CR" + f.store.replicaID.rawValue.filter(\.isHexDigit).prefix(6).uppercased()
        #expect(record.text("number") == prefix + "-0001")
        #expect(record.text("opened_at") == "2025-06-15T12:00:00Z")
        #expect(record.text("response_due") == "2025-06-15T16:00:00Z")
        #expect(record.text("resolution_due") == "2025-06-16T12:00:00Z")

        // Once the device knows the number its registry gave it, numbers carry it.
        try f.store.setLocalSetting(CaseNumbers.deviceNumberSetting, Data("7".utf8))
        let second = try f.store.create("case", ["subject": .text("fax"), "priority": .text("low"), "status": .text("new")])
        #expect(try f.read(second.id).text("number") == "C7-0002")
        // A number the user gave is kept.
        let given = try f.store.create("case", ["number": .text("EXT-1"), "subject": .text("x"), "priority": .text("low"),
                                                "status": .text("new")])
        #expect(try f.read(given.id).text("number") == "EXT-1")

        // Changing the priority moves the deadlines; an unrelated edit writes nothing more.
        try f.store.update(first.id, ["priority": .text("urgent")])
        #expect(try f.read(first.id).text("response_due") == "2025-06-15T13:00:00Z")
        let before = try f.store.lastSequence
        try f.store.update(first.id, ["description": .text("toner")])
        #expect(try f.store.lastSequence == before + 1)
    }

    @Test(.blocking) func complaintsAndCoreAccountsGetStricterDeadlines() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        let complaint = try f.store.create("case", ["subject": .text("rude driver"), "priority": .text("normal"),
                                                    "status": .text("new"), "type": .text("complaint"),
                                                    "severity": .text("critical")])
        // normal is 8 h / 72 h, a critical complaint 1 h / 8 h: the stricter wins.
        #expect(try f.read(complaint.id).text("response_due") == "2025-06-15T13:00:00Z")
        #expect(try f.read(complaint.id).text("resolution_due") == "2025-06-15T20:00:00Z")
        let core = try f.account("Core Ltd", ["value_segment": .text("core")])
        let coreCase = try f.store.create("case", ["subject": .text("late"), "priority": .text("high"), "status": .text("new"),
                                                   "account": .text(core.uuidString)])
        // high is 4 h / 24 h; a core account's cases take half.
        #expect(try f.read(coreCase.id).text("response_due") == "2025-06-15T14:00:00Z")
        #expect(try f.read(coreCase.id).text("resolution_due") == "2025-06-16T00:00:00Z")
    }

    @Test(.blocking) func closingACaseStampsItAndMakesOneFollowUp() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let account = try f.account("A")
        let id = try f.store.create("case", ["subject": .text("broken"), "priority": .text("low"), "status": .text("open"),
                                             "account": .text(account.uuidString), "owner": .text("bob@example.com")]).id
        try f.store.update(id, ["status": .text("closed")])
        let closed = try f.read(id)
        #expect(closed.text("closed_at") == "2025-06-15T12:00:00Z")
        #expect(closed.text("resolved_at") == "2025-06-15T12:00:00Z")
        let followUp = try f.read(CRMChangeEffects.followUpID(forCase: id))
        #expect(followUp.text("kind") == "task" && followUp.text("status") == "open")
        #expect(followUp.reference("case") == id && followUp.reference("account") == account)
        #expect(followUp.text("owner") == "bob@example.com")
        #expect(followUp.text("due_at") == "2025-06-16T12:00:00Z")
        #expect(followUp.text("subject")?.hasPrefix("Satisfaction follow-up: case C") == true)

        // Reopened and closed again: still one follow-up; a deleted one stays deleted.
        try f.store.update(id, ["status": .text("open")])
        try f.store.update(id, ["status": .text("closed")])
        try f.store.delete(followUp.id)
        try f.store.update(id, ["status": .text("open")])
        try f.store.update(id, ["status": .text("closed")])
        #expect(try f.store.count(ofType: "activity") == 0)
        #expect(try f.store.records(ofType: "activity", includeDeleted: true).count == 1)
    }

    @Test(.blocking) func aStageChangeIsRecordedOnceWithItsProbabilityAndAWinMakesACustomer() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let account = try f.account("A", lifecycle: "prospect")
        let deal = try f.opportunity(account, stage: "prospecting", amount: 5_000)
        #expect(try f.read(deal).integer("probability") == 10)
        try f.store.update(deal, ["stage": .text("proposal")])
        #expect(try f.read(deal).integer("probability") == 50)
        // A probability chosen with the stage is kept.
        try f.store.update(deal, ["stage": .text("negotiation"), "probability": .integer(60)])
        #expect(try f.read(deal).integer("probability") == 60)
        try f.store.update(deal, ["stage": .text("closed_won")])
        let won = try f.read(deal)
        #expect(won.integer("probability") == 100)
        #expect(won.text("closed_at") == "2025-06-15")
        #expect(try f.read(account).text("lifecycle_stage") == "customer")

        let history = try CRMStore(store: f.store).stageHistory(of: deal)
        #expect(history.map(\.toStage) == ["prospecting", "proposal", "negotiation", "closed_won"])
        #expect(history.map(\.fromStage) == [nil, "prospecting", "proposal", "negotiation"])
        // Each entry's id is derived from the write that set the stage.
        guard case .register(let stage)? = won.fields["stage"] else { Issue.record("no stage register"); return }
        #expect(history.last?.id == CRMChangeEffects.stageChangeID(opportunity: deal, write: stage.dot))
        // Rewriting the same stage is a new write, hence a new entry; an unrelated edit is none.
        try f.store.update(deal, ["next_step": .text("invoice")])
        #expect(try f.store.count(ofType: "stage_change") == 4)
    }

    @Test(.blocking) func consentChangesAreStampedWithTheirWrite() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let contact = try f.contact("Smith", ["consent_email": .text("granted")])
        #expect(try f.read(contact).text("consent_email_at") == "2025-06-15T12:00:00Z")
        // A time given with the change is the user's.
        try f.store.update(contact, ["consent_calls": .text("withdrawn"), "consent_calls_at": .text("2025-06-01T09:00:00Z")])
        #expect(try f.read(contact).text("consent_calls_at") == "2025-06-01T09:00:00Z")
    }

    @Test(.blocking) func aLeadMarkedConvertedByAPlainWriteIsConvertedOnce() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let lead = try f.store.create("lead", ["first_name": .text("Ada"), "last_name": .text("Lovelace"), "company": .text("Engines"),
                                               "email": .text("ada@engines.example"), "status": .text("qualified")]).id
        try f.store.update(lead, ["status": .text("converted")])
        let converted = try f.read(lead)
        let account = try #require(converted.reference("converted_account"))
        let contact = try #require(converted.reference("converted_contact"))
        #expect(try f.read(account).text("name") == "Engines" && f.read(account).text("lifecycle_stage") == "prospect")
        #expect(try f.read(contact).text("email") == "ada@engines.example" && f.read(contact).reference("account") == account)
        #expect(converted.text("converted_at") == "2025-06-15T12:00:00Z")
        // Another replica converting the same lead offline makes the same records.
        let other = try Fixture(options: Fixture.crmOptions(role: .authority))
        try other.store.create("lead", id: lead, ["last_name": .text("Lovelace"), "company": .text("Engines"), "status": .text("converted")])
        #expect(try other.read(lead).reference("converted_contact") == contact)
        // Converting through the typed API makes nothing more.
        let typed = try f.store.create("lead", ["last_name": .text("Byron"), "status": .text("new")]).id
        try CRMStore(store: f.store).convert(lead: typed)
        #expect(try f.store.count(ofType: "contact") == 2 && f.store.count(ofType: "account") == 2)
    }

    // MARK: Refusals

    @Test(.blocking) func aComputedFieldTypedByAUserIsRefusedUnlessTheTenantAllowsAnOverride() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let account = try f.account("A")
        #expect { try f.store.update(account, ["tier": .text("vip")]) } throws: { error in
            "\(error)".contains("tier is computed by the tenant's rules")
        }
        #expect { try f.account("B", ["churn_risk": .bool(true)]) } throws: { "\($0)".contains("churn_risk") }
        #expect(try f.read(account).text("tier") == nil)
        // Lifecycle: customer needs a won deal.
        #expect(throws: ReplicaStoreError.self) { try f.store.update(account, ["lifecycle_stage": .text("customer")]) }
        try f.store.update(account, ["lifecycle_stage": .text("target")])
        // A win written by a client that spells ids in lower case counts too.
        try f.store.create("opportunity", ["name": .text("deal"), "account": .text(account.uuidString.lowercased()),
                                           "stage": .text("closed_won"), "amount": .real(10)])
        #expect(try f.read(account).text("lifecycle_stage") == "customer")
        try f.store.update(account, ["lifecycle_stage": .text("target")])
        try f.store.update(account, ["lifecycle_stage": .text("customer")])

        try f.setting("override.account.tier", "true")
        try f.store.update(account, ["tier": .text("vip")])
        #expect(try f.read(account).text("tier") == "vip")
        #expect(try f.read(account).text("overrides") == "tier")
        // Listing a field the tenant does not allow to override is refused too.
        #expect { try f.store.update(account, ["overrides": .text("churn_risk,tier")]) } throws: { "\($0)".contains("overrides") }
    }

    @Test(.blocking) func theServerTrustsItsOwnWritesAndChecksThoseFromBelow() throws {
        let server = try Fixture(options: Fixture.crmOptions(role: .authority))
        let account = try server.account("A")
        try server.store.update(account, ["tier": .text("gold")])  // an operator's tool, or the rules
        #expect(try server.read(account).text("tier") == "gold")

        // A device that wrote the tier by hand (an old app, or one that skipped its checks).
        let device = try Fixture(options: .init(schema: CRMSchema.current))
        try device.store.apply([try server.read(account)], from: .upstream)
        try device.store.update(account, ["tier": .text("vip"), "name": .text("A plc")])
        #expect { try server.store.apply(try device.store.dirtyRecords(), from: .downstream) } throws: {
            "\($0)".contains("tier is computed")
        }
        #expect(try server.read(account).text("tier") == "gold")
    }

    @Test(.blocking) func aCallToAContactWhoWithdrewConsentIsRefusedOrFlagged() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .device))
        let contact = try f.contact("Smith", ["first_name": .text("Jo"), "consent_calls": .text("withdrawn"),
                                              "consent_calls_at": .text("2025-06-10T00:00:00Z")])
        #expect { try f.activity(contact: contact, occurred: "2025-06-15T10:00:00Z") } throws: { error in
            "\(error)".contains("Jo Smith withdrew consent to calls on 2025-06-10T00:00:00Z")
        }
        // A call made before the withdrawal is history, and stays editable.
        let earlier = try f.activity(contact: contact, occurred: "2025-06-01T10:00:00Z")
        try f.store.update(earlier, ["subject": .text("renewal talk")])
        // A visit is not a call.
        try f.activity(contact: contact, occurred: "2025-06-15T10:00:00Z", kind: "visit")
        // Marked do-not-call at the fixture's noon: a call made after is refused, one made that
        // morning, before the mark, is history (the calls of an org moving in).
        let quiet = try f.contact("Doe", ["do_not_call": .bool(true)])
        #expect(throws: ReplicaStoreError.self) { try f.activity(contact: quiet, occurred: "2025-06-15T14:00:00Z") }
        let beforeTheMark = try f.activity(contact: quiet, occurred: "2025-06-15T10:00:00Z")
        try f.store.update(beforeTheMark, ["subject": .text("asked not to be called again")])

        // E-mail campaigns take contacts who consented to e-mail only.
        let campaign = try f.store.create("campaign", ["name": .text("Summer"), "type": .text("email")]).id
        #expect { try f.store.create("campaign_member", ["campaign": .text(campaign.uuidString), "contact": .text(contact.uuidString)]) }
            throws: { "\($0)".contains("has not consented to e-mail") }
        let willing = try f.contact("Lee", ["consent_email": .text("granted")])
        try f.store.create("campaign_member", ["campaign": .text(campaign.uuidString), "contact": .text(willing.uuidString)])

        // A tenant that flags instead: the call is kept with the warning.
        try f.setting("consent.enforcement", "flag")
        let flagged = try f.activity(contact: contact, occurred: "2025-06-15T11:00:00Z")
        #expect(try f.read(flagged).text("consent_warning")?.contains("withdrew consent to calls") == true)
    }

    // MARK: Convergence

    /// The device computes what follows offline; the server, receiving the device's changes,
    /// computes the same and writes nothing of its own.
    @Test(.blocking) func theServerComputesWhatTheDeviceDidAndWritesNothingMore() throws {
        let server = try Fixture(options: Fixture.crmOptions(role: .authority))
        let device = try Fixture(options: Fixture.crmOptions(role: .device, offset: 3_600))
        let account = try device.account("A", lifecycle: "prospect")
        let contact = try device.contact("Smith", account: account, ["consent_email": .text("granted")])
        let caseID = try device.store.create("case", ["subject": .text("broken"), "priority": .text("urgent"),
                                                      "status": .text("new"), "account": .text(account.uuidString),
                                                      "contact": .text(contact.uuidString)]).id
        try device.store.update(caseID, ["status": .text("closed")])
        let deal = try device.opportunity(account, stage: "proposal", amount: 9)
        try device.store.update(deal, ["stage": .text("closed_won")])

        let pushed = try device.store.dirtyRecords()
        let before = try server.store.lastSequence
        try server.store.apply(pushed, from: .downstream)
        #expect(try server.store.lastSequence == before + Int64(pushed.count))
        for record in pushed { #expect(try server.read(record.id) == record) }
        #expect(try server.store.count(ofType: "stage_change") == 2)
        #expect(try server.store.count(ofType: "activity") == 1)
    }

    /// Two devices close the same case offline: each makes the follow-up, under the same id, and
    /// the sync keeps one.
    @Test(.blocking) func twoDevicesClosingOneCaseMakeOneFollowUp() throws {
        let server = try Fixture(options: Fixture.crmOptions(role: .authority))
        let caseID = try server.store.create("case", ["subject": .text("broken"), "priority": .text("low"),
                                                      "status": .text("open"), "owner": .text("bob@example.com")]).id
        let devices = try (0..<2).map { _ in try Fixture(options: Fixture.crmOptions(role: .device, offset: 60)) }
        for device in devices {
            try device.store.apply(try server.store.changes(after: 0, limit: 100).map(\.state), from: .upstream)
            try device.store.update(caseID, ["status": .text("closed")])
        }
        for device in devices { try server.store.apply(try device.store.dirtyRecords(), from: .downstream) }
        #expect(try server.store.records(ofType: "activity").map(\.id) == [CRMChangeEffects.followUpID(forCase: caseID)])
    }
}
