import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// The typed CRM API: entities, stage history, lead conversion, merges, indexed queries,
/// observation and the push order that keeps references and transactions together.
@Suite struct CRMStoreTests {
    let dir: TemporaryDirectory
    let store: ReplicaStore
    let crm: CRMStore

    init() throws {
        dir = try TemporaryDirectory()
        store = try openCRMStore(dir, "device-a")
        crm = CRMStore(store: store, user: "rep@example.com",
                       now: { Date(timeIntervalSince1970: 1_800_000_000) })
    }

    @Test(.blocking) func entitiesRoundTripAndUpdatesWriteOnlyWhatChanged() throws {
        var account = try crm.create(Account(name: "Acme", owner: "rep@example.com"))
        account.industry = "Retail"
        account.annualRevenue = 2e6
        account.custom["unknown_to_this_version"] = .text("kept")  // as a newer client would send it
        #expect(throws: ReplicaStoreError.self) { try crm.update(account) }  // undeclared locally
        account.custom = [:]
        account = try crm.update(account)
        let record = try #require(try store.record(account.id))
        #expect(record.values["industry"] == .text("Retail"))
        // The name was not part of the second write: it keeps the dot of the first one.
        guard case .register(let name)? = record.fields["name"], case .register(let industry)? = record.fields["industry"] else {
            Issue.record("expected registers")
            return
        }
        #expect(name.dot != industry.dot)
        try crm.awardLoyaltyPoints(5, to: account.id)
        #expect(try crm.get(Account.self, account.id)?.loyaltyPoints == 5)
        try crm.delete(Account.self, account.id)
        #expect(try crm.get(Account.self, account.id) == nil)
    }

    @Test(.blocking) func stageChangesAreKeptAsHistoryWithTheStagesProbability() throws {
        let account = try crm.create(Account(name: "Acme"))
        var deal = try crm.create(Opportunity(name: "Renewal", account: account.id, stage: "qualification", amount: 1000, currency: "EUR"))
        #expect(deal.probability == 25)
        deal.stage = "negotiation"
        deal = try crm.update(deal)
        #expect(deal.probability == 75)
        deal.stage = "closed_won"
        deal.probability = 90  // set by the rep: kept
        deal = try crm.update(deal)
        #expect(deal.probability == 90)
        let history = try crm.stageHistory(of: deal.id)
        #expect(history.map(\.fromStage) == [nil, "qualification", "negotiation"])
        #expect(history.map(\.toStage) == ["qualification", "negotiation", "closed_won"])
        // Stamped with the time of the write that changed the stage, by the acting user.
        #expect(history.allSatisfy { $0.changedBy == "rep@example.com" && CRMDate.instant($0.changedAt) != nil })
    }

    @Test(.blocking) func aLeadConvertsIntoLinkedRecordsInOneTransaction() throws {
        let lead = try crm.create(Lead(firstName: "Ada", lastName: "Lovelace", company: "Analytical Engines",
                                       email: "ada@engines.example", source: "referral", owner: "rep@example.com"))
        let conversion = try crm.convert(lead: lead.id, opportunity: Opportunity(name: "First order", account: nil, stage: "prospecting"))
        #expect(conversion.lead.status == "converted")
        #expect(conversion.lead.convertedAccount == conversion.account.id)
        #expect(conversion.lead.convertedContact == conversion.contact.id)
        #expect(conversion.lead.convertedOpportunity == conversion.opportunity?.id)
        #expect(conversion.lead.convertedAt == "2027-01-15T08:00:00Z")
        #expect(conversion.account.name == "Analytical Engines")
        #expect(conversion.contact.account == conversion.account.id && conversion.contact.email == "ada@engines.example")
        #expect(conversion.opportunity?.account == conversion.account.id && conversion.opportunity?.lead == lead.id)
        #expect(conversion.opportunity?.leadSource == "referral")
        // Converting twice is refused, and writes nothing.
        let before = try store.lastSequence
        #expect(throws: invalid(lead.id, "status", "the lead is converted already")) { try crm.convert(lead: lead.id) }
        #expect(try store.lastSequence == before)
        // The four records (and the stage change) are one push group.
        #expect(try store.pushBatch(limit: 5).count == 5)
    }

    @Test(.blocking) func aFailedConversionLeavesNothing() throws {
        let lead = try crm.create(Lead(lastName: "Babbage", company: "Difference"))
        let before = try store.lastSequence
        #expect(throws: ReplicaStoreError.self) {
            try crm.convert(lead: lead.id, opportunity: Opportunity(name: "Bad", account: nil, stage: "no such stage"))
        }
        #expect(try store.lastSequence == before)
        #expect(try crm.get(Lead.self, lead.id)?.status == "new")
        #expect(try crm.all(Account.self).isEmpty)
    }

    @Test(.blocking) func mergingAccountsRepointsEverythingAndLeavesATombstone() throws {
        let survivor = try crm.create(Account(name: "Acme"))
        var loser = Account(name: "ACME Inc.")
        loser.website = "https://acme.example"
        loser = try crm.create(loser)
        try crm.awardLoyaltyPoints(7, to: loser.id)
        var child = Account(name: "Acme Europe")
        child.parent = loser.id
        child = try crm.create(child)
        let contact = try crm.create(Contact(lastName: "Ng", account: loser.id))
        let deal = try crm.create(Opportunity(name: "Deal", account: loser.id, stage: "proposal"))
        let call = try crm.create(Activity(kind: "call", subject: "Intro", account: loser.id))
        let ticket = try crm.create(ServiceCase(number: "C-1", subject: "Broken", account: loser.id))

        let merged = try crm.merge(Account.self, survivor: survivor.id, loser: loser.id)
        #expect(merged.website == "https://acme.example", "the survivor takes the loser's values where it has none")
        #expect(merged.name == "Acme" && merged.loyaltyPoints == 7)
        #expect(try crm.get(Contact.self, contact.id)?.account == survivor.id)
        #expect(try crm.get(Opportunity.self, deal.id)?.account == survivor.id)
        #expect(try crm.get(Activity.self, call.id)?.account == survivor.id)
        #expect(try crm.get(ServiceCase.self, ticket.id)?.account == survivor.id)
        #expect(try crm.get(Account.self, child.id)?.parent == survivor.id)
        let tombstone = try #require(try store.record(loser.id))
        #expect(tombstone.isDeleted && tombstone.values["merged_into"] == .text(survivor.id.uuidString))
        #expect(try crm.ofAccount(Contact.self, loser.id).isEmpty)
    }

    @Test(.blocking) func mergingContactsAndLeads() throws {
        let account = try crm.create(Account(name: "Acme"))
        let keep = try crm.create(Contact(lastName: "Ng", account: account.id))
        let drop = try crm.create(Contact(firstName: "Jo", lastName: "Ng", email: "jo@acme.example"))
        let campaign = try crm.create(Campaign(name: "Spring"))
        let member = try crm.create(CampaignMember(campaign: campaign.id, contact: drop.id))
        let merged = try crm.merge(Contact.self, survivor: keep.id, loser: drop.id)
        #expect(merged.email == "jo@acme.example" && merged.firstName == "Jo" && merged.account == account.id)
        #expect(try crm.get(CampaignMember.self, member.id)?.contact == keep.id)

        let leadA = try crm.create(Lead(lastName: "Li")), leadB = try crm.create(Lead(lastName: "Li", email: "li@x.example"))
        let leadMember = try crm.create(CampaignMember(campaign: campaign.id, lead: leadB.id))
        try crm.merge(Lead.self, survivor: leadA.id, loser: leadB.id)
        #expect(try crm.get(CampaignMember.self, leadMember.id)?.lead == leadA.id)
        #expect(throws: ReplicaStoreError.self) { try crm.merge(Lead.self, survivor: leadA.id, loser: leadA.id) }
        #expect(throws: ReplicaStoreError.self) { try crm.merge(Campaign.self, survivor: campaign.id, loser: campaign.id) }
    }

    @Test(.blocking) func indexedQueriesFollowWritesAndSyncs() throws {
        let acme = try crm.create(Account(name: "Acme Corporation", owner: "ann@example.com"))
        let globex = try crm.create(Account(name: "Globex", owner: "bob@example.com"))
        var deal = try crm.create(Opportunity(name: "Anvils", account: acme.id, stage: "proposal", owner: "ann@example.com"))
        _ = try crm.create(Opportunity(name: "Rockets", account: globex.id, stage: "proposal", owner: "bob@example.com"))
        #expect(try crm.owned(Account.self, by: "ann@example.com").map(\.id) == [acme.id])
        #expect(try crm.opportunities(inStage: "proposal").count == 2)
        deal.stage = "negotiation"
        deal = try crm.update(deal)
        #expect(try crm.opportunities(inStage: "proposal").map(\.name) == ["Rockets"])
        #expect(try crm.opportunities(inStage: "negotiation").map(\.id) == [deal.id])
        #expect(try crm.ofAccount(Opportunity.self, acme.id).map(\.id) == [deal.id])
        try crm.delete(Opportunity.self, deal.id)
        #expect(try crm.opportunities(inStage: "negotiation").isEmpty)

        #expect(try crm.search(Account.self, "acme corp").map(\.id) == [acme.id])
        #expect(try crm.search(Account.self, "CORP").map(\.id) == [acme.id])
        #expect(try crm.search(Account.self, "corp globex").isEmpty)

        // Another device pulls all of it: its index is built from the applied records.
        let other = try openCRMStore(dir, "device-b")
        try other.apply(encoded: try store.encodedChanges(after: 0, limit: 1_000).map(\.record), from: .upstream)
        let otherCRM = CRMStore(store: other)
        #expect(try otherCRM.opportunities(inStage: "proposal").map(\.name) == ["Rockets"])
        #expect(try otherCRM.search(Account.self, "glo").map(\.id) == [globex.id])
        #expect(try otherCRM.owned(Opportunity.self, by: "ann@example.com").isEmpty)

        // A later change to a record it has moves its entries there too.
        let after = try store.lastSequence
        var moved = try #require(try crm.get(Account.self, globex.id))
        moved.owner = "cy@example.com"
        moved.name = "Globex Holdings"
        try crm.update(moved)
        try other.apply(encoded: try store.encodedChanges(after: after, limit: 1_000).map(\.record), from: .upstream)
        #expect(try otherCRM.owned(Account.self, by: "bob@example.com").isEmpty)
        #expect(try otherCRM.owned(Account.self, by: "cy@example.com").map(\.id) == [globex.id])
        #expect(try otherCRM.search(Account.self, "holdings").map(\.id) == [globex.id])
    }

    @Test(.blocking) func anExistingStoreGetsItsIndexWhenOpenedWithIndexes() throws {
        let path = dir.path("plain.sqlite")
        let plain = try ReplicaStore(path: path, options: .init(schema: CRMSchema.current))
        let id = try plain.create("account", ["name": .text("Initech"), "owner": .text("pat@example.com")]).id
        plain.close()
        let reopened = try ReplicaStore(path: path, options: .crm())
        #expect(try CRMStore(store: reopened).owned(Account.self, by: "pat@example.com").map(\.id) == [id])
    }

    @Test func observersHearOfCommitsNotOfRollbacks() async throws {
        let changes = crm.changes()
        let account = try crm.create(Account(name: "Acme"))
        #expect(throws: ReplicaStoreError.self) {
            try store.transaction {
                try store.create("account", ["name": .text("Rolled back")])
                try store.create("contact", [:])
            }
        }
        let other = try openCRMStore(dir, "device-b")
        let pulled = try other.create("contact", ["last_name": .text("Ng")])
        try store.apply([pulled], from: .upstream)
        var iterator = changes.makeAsyncIterator()
        let first = try #require(await iterator.next())
        #expect(first.origin == .local && first.records == [ChangedRecord(id: account.id, type: "account")])
        let second = try #require(await iterator.next())
        #expect(second.origin == .upstream && second.records == [ChangedRecord(id: pulled.id, type: "contact")])
        #expect(second.contains(type: "contact"))
    }

    @Test(.blocking) func aPushBatchPutsReferencedRecordsFirstAndKeepsTransactionsTogether() throws {
        let account = try crm.create(Account(name: "Acme"))
        let contact = try crm.create(Contact(lastName: "Ng", account: account.id))
        var edited = account
        edited.industry = "Anvils"
        try crm.update(edited)  // the account's latest change is now after the contact's
        #expect(try store.dirtyRecords().map(\.id) == [contact.id, account.id])
        #expect(try store.pushBatch(limit: 10).map(\.id) == [account.id, contact.id])
        #expect(try store.pushBatch(limit: 1).map(\.id) == [account.id])
        for record in try store.pushBatch(limit: 10) { try store.acknowledge(record.id, upTo: record.vector) }

        let single = try crm.create(Campaign(name: "Alone"))
        let lead = try crm.create(Lead(lastName: "Li", company: "Li & Co"))
        for record in try store.dirtyRecords() where record.id == lead.id { try store.acknowledge(record.id, upTo: record.vector) }
        try crm.convert(lead: lead.id)  // lead, account, contact: one transaction of three
        #expect(try store.pushBatch(limit: 3).map(\.id) == [single.id], "the conversion does not fit after the campaign")
        try store.acknowledge(single.id, upTo: try #require(try store.record(single.id)).vector)
        let group = try store.pushBatch(limit: 3)
        #expect(Set(group.map(\.type)) == ["lead", "account", "contact"])
        #expect(group.last?.type == "lead", "the lead references the other two")
    }
}
