import CRM
import Foundation
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import Testing

/// The CRM through a real server: what one device does in one transaction reaches the others
/// whole, custom fields travel as records, and the server refuses what a careless or hostile
/// client pushes, per record, with the record and the field named.
@Suite(.serialized) struct CRMSyncTests {
    @Test func aLeadConversionSyncsToAnotherDevice() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let lead = try await alice.crm(user: "alice@example.com") {
            try $0.create(Lead(firstName: "Ada", lastName: "Lovelace", company: "Engines", source: "event", owner: "alice@example.com"))
        }
        try await alice.sync()
        try await bob.sync()
        let bobChanges = try await bob.changes()

        let conversion = try await alice.crm(user: "alice@example.com") {
            try $0.convert(lead: lead.id, opportunity: Opportunity(name: "Pilot", account: nil, stage: "proposal", amount: 5000, currency: "GBP"))
        }
        let pushed = try await alice.sync()
        let log = try alice.local { try $0.conflicts() }
        #expect(pushed.pushed == 5 && pushed.rejected == 0, "\(pushed) \(log)")  // lead, account, contact, opportunity, stage change
        try await bob.sync()

        let seen = try await bob.crm { crm in
            (try crm.get(Lead.self, lead.id), try crm.ofAccount(Opportunity.self, conversion.account.id),
             try crm.ofAccount(Contact.self, conversion.account.id), try crm.stageHistory(of: conversion.opportunity!.id))
        }
        #expect(seen.0?.status == "converted" && seen.0?.convertedAccount == conversion.account.id)
        #expect(seen.0?.convertedOpportunity == conversion.opportunity?.id)
        #expect(seen.1.map(\.id) == [conversion.opportunity!.id] && seen.1.first?.probability == 50)
        #expect(seen.2.map(\.id) == [conversion.contact.id])
        #expect(seen.3.map(\.toStage) == ["proposal"] && seen.3.first?.changedBy == "alice@example.com")
        // Bob's screens hear of it.
        var iterator = bobChanges.makeAsyncIterator()
        let change = try #require(await iterator.next())
        #expect(change.origin == .upstream && change.contains(type: "lead") && change.contains(type: "opportunity"))
        await fixture.stop()
    }

    @Test func aDeviceRunsReportsOnItsLocalDataAsTheServerWould() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        try await alice.crm(user: "alice@example.com") { crm in
            let lead = try crm.create(Lead(firstName: "Ada", lastName: "Lovelace", company: "Engines", source: "event", owner: "alice@example.com"))
            _ = try crm.convert(lead: lead.id, opportunity: Opportunity(name: "Pilot", account: nil, stage: "proposal", amount: 5000, currency: "GBP"))
        }
        try await alice.sync()
        try await bob.sync()
        let pipeline = try await bob.reports { try $0.pipeline() }
        let proposal = try #require(pipeline.first { $0.stage == "proposal" })
        #expect(proposal.count == 1 && proposal.amount == 5000 && proposal.weightedAmount == 2500)
        let server = try fixture.tenantStore()
        #expect(try CRMReports(store: server, now: Date()).pipeline() == pipeline)
        server.close()
        await fixture.stop()
    }

    @Test func aMergeSyncsToAnotherDevice() async throws {
        let fixture = try await ServerFixture()
        let alice = try fixture.device("alice"), bob = try fixture.device("bob")
        let (keep, drop, contact, deal) = try await alice.crm { crm in
            let keep = try crm.create(Account(name: "Acme"))
            let drop = try crm.create(Account(name: "Acme Ltd"))
            let contact = try crm.create(Contact(lastName: "Ng", account: drop.id))
            let deal = try crm.create(Opportunity(name: "Anvils", account: drop.id, stage: "qualification"))
            return (keep.id, drop.id, contact.id, deal.id)
        }
        try await alice.sync()
        try await bob.sync()
        _ = try await bob.crm { try $0.merge(Account.self, survivor: keep, loser: drop) }
        let report = try await bob.sync()
        #expect(report.rejected == 0)
        try await alice.sync()
        let seen = try await alice.crm { crm in
            (try crm.get(Contact.self, contact)?.account, try crm.get(Opportunity.self, deal)?.account,
             try crm.store.record(drop), try crm.ofAccount(Contact.self, drop))
        }
        #expect(seen.0 == keep && seen.1 == keep)
        #expect(seen.2?.isDeleted == true && seen.2?.values["merged_into"] == .text(keep.uuidString))
        #expect(seen.3.isEmpty)
        #expect(try fixture.tenantStore().record(drop)?.isDeleted == true)
        await fixture.stop()
    }

    @Test func aCustomFieldReachesAnotherDeviceWhichValidatesWithIt() async throws {
        let fixture = try await ServerFixture()
        let admin = try fixture.device("admin"), rep = try fixture.device("rep")
        let contact = try await rep.crm { try $0.create(Contact(lastName: "Ng")).id }
        try await rep.sync()
        // The rep's device does not know the field yet.
        await #expect(throws: ReplicaStoreError.self) {
            _ = try await rep.crm { try $0.store.update(contact, ["shoe_size": .integer(42)]) }
        }
        _ = try await admin.crm { try $0.addCustomField(CustomField(entity: "contact", name: "shoe_size", kind: .number, label: "Shoe size")) }
        try await admin.sync()
        try await rep.sync()
        #expect(try await rep.crm { try $0.customFields(of: Contact.self)["shoe_size"]?.label } == "Shoe size")
        let expected = ReplicaStoreError.invalidRecord(.invalidFieldValue(
            record: contact.uuidString, field: "shoe_size", reason: "expected number, found text"))
        await #expect(throws: expected) {
            try await rep.crm { try $0.store.update(contact, ["shoe_size": .text("large")]) }
        }
        _ = try await rep.crm { try $0.store.update(contact, ["shoe_size": .integer(42)]) }
        #expect(try await rep.sync().pushed == 1)
        try await admin.sync()
        #expect(try await admin.crm { try $0.get(Contact.self, contact)?.custom["shoe_size"] } == .integer(42))
        await fixture.stop()
    }

    /// A client that skips the checks: each bad record is refused with its field named, the
    /// good ones in the same batch are applied.
    @Test func theServerRefusesWhatARawClientPushesPerRecord() async throws {
        let fixture = try await ServerFixture()
        // An account of another tenant: its id means nothing in acme's store.
        let globex = try fixture.device("globex-device", tenant: "globex")
        let foreign = try globex.local { try $0.create("account", ["name": .text("Globex")]).id }
        try await globex.sync()

        let (connection, _) = try await RawConnection.established(to: fixture)
        let account = try ProtocolFaultTests.record(type: "account", ["name": .text("Acme")])
        let accountID = try ProtocolFaultTests.id(account).uuidString
        let records = [
            account,
            try ProtocolFaultTests.record(["last_name": .text("Ng"), "account": .text(accountID)]),  // earlier in the batch
            try ProtocolFaultTests.record(["last_name": .text("Spy"), "account": .text(foreign.uuidString)]),
            try ProtocolFaultTests.record(type: "opportunity", ["name": .text("Deal"), "account": .text(accountID), "stage": .text("won")]),
            try ProtocolFaultTests.record(["last_name": .text("Ng"), "email": .text("ng at acme")]),
            try ProtocolFaultTests.record(["first_name": .text("Nameless")]),
            try ProtocolFaultTests.record(type: "opportunity", ["name": .text("Deal"), "account": .text(accountID), "amount": .real(-1), "stage": .text("proposal")]),
        ]
        try await connection.send(.pushFrame(records, batch: 9))
        let result = try #require(try await connection.nextFrame()).pushResult
        try #require(result.results.count == records.count)
        #expect(result.results.map(\.outcome) == [.applied, .applied, .rejected, .rejected, .rejected, .rejected, .rejected])
        let reasons = result.results.map(\.reason)
        #expect(reasons[2].contains("field 'account': no record of type account with id \(foreign.uuidString)"), "\(reasons[2])")
        #expect(reasons[3].contains("field 'stage': 'won' is not a stage of this tenant's pipeline"), "\(reasons[3])")
        #expect(reasons[4].contains("field 'email': 'ng at acme' is not a valid e-mail address"), "\(reasons[4])")
        #expect(reasons[5].contains("field 'last_name': required, but missing"), "\(reasons[5])")
        #expect(reasons[6].contains("field 'amount': -1 is below the minimum 0"), "\(reasons[6])")
        for (index, record) in records.enumerated() {
            let id = try ProtocolFaultTests.id(record).uuidString
            #expect(reasons[index].isEmpty || reasons[index].contains(id))
        }
        await connection.close()
        await fixture.stop()
    }

    /// A device whose store runs no CRM rules writes a contact at an account that does not
    /// exist: the server refuses it and the device keeps it in its conflict log.
    @Test func aRejectionStaysInTheConflictLogOfADeviceThatSkippedTheChecks() async throws {
        let fixture = try await ServerFixture()
        let store = try ReplicaStore(path: fixture.dir.path("careless.sqlite"),
                                     options: .init(schema: CRMSchema.current, replicaID: try ReplicaID("careless")))
        let careless = try RapportClient(store: SharedReplicaStore(store, label: "careless"), configuration: fixture.configuration(),
                                         logger: ServerFixture.logger("careless"))
        let missing = UUID()
        let orphan = try careless.local { try $0.create("contact", ["last_name": .text("Orphan"), "account": .text(missing.uuidString)]).id }
        let report = try await careless.sync()
        #expect(report.rejected == 1 && report.pushed == 0)
        let entry = try #require(try careless.local { try $0.conflicts() }.first)
        #expect(entry.conflict.kind == .rejected && entry.conflict.recordID == orphan)
        #expect(entry.reason?.contains("record \(orphan.uuidString), field 'account': no record of type account with id \(missing.uuidString)") == true,
                "\(entry.reason ?? "")")
        #expect(try fixture.tenantStore().record(orphan) == nil)
        await fixture.stop()
    }

    /// A lead created and converted offline: the new lead and its new opportunity reference
    /// each other, so no order of the batch is right and only checking at its end works.
    @Test func aLeadCreatedAndConvertedOfflineSyncsInOneBatch() async throws {
        let fixture = try await ServerFixture()
        let device = try fixture.device("offline-rep")
        let conversion = try await device.crm { crm in
            let lead = try crm.create(Lead(lastName: "Li", company: "Li & Co"))
            return try crm.convert(lead: lead.id, opportunity: Opportunity(name: "Tea", account: nil, stage: "prospecting"))
        }
        let report = try await device.sync()
        #expect(report.pushed == 5 && report.rejected == 0)
        #expect(try fixture.tenantStore().record(conversion.lead.id)?.values["status"] == .text("converted"))
        await fixture.stop()
    }

    /// A batch with a bad record is applied record by record; a record that references one
    /// later in the batch is then tried again after it, and only the bad record is refused.
    @Test func aBadRecordDoesNotTakeTheReferencesOfOthersDownWithIt() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let account = try ProtocolFaultTests.record(type: "account", ["name": .text("Acme")])
        let contact = try ProtocolFaultTests.record(["last_name": .text("Ng"), "account": .text(try ProtocolFaultTests.id(account).uuidString)])
        let orphan = try ProtocolFaultTests.record(["last_name": .text("Orphan"), "account": .text(UUID().uuidString)])
        try await connection.send(.pushFrame([contact, orphan, account]))
        let result = try #require(try await connection.nextFrame()).pushResult
        #expect(result.results.map(\.outcome) == [.applied, .rejected, .applied])
        #expect(try fixture.tenantStore().record(try ProtocolFaultTests.id(contact)) != nil)
        await connection.close()
        await fixture.stop()
    }

    /// One record per push batch: the account edited after its contact was created still
    /// reaches the server first, so the contact's reference holds.
    @Test func referencedRecordsArePushedFirst() async throws {
        let fixture = try await ServerFixture()
        let device = try fixture.device("alice") { $0.pushBatchSize = 1 }
        let (account, contact) = try await device.crm { crm in
            var account = try crm.create(Account(name: "Acme"))
            let contact = try crm.create(Contact(lastName: "Ng", account: account.id))
            account.industry = "Anvils"
            try crm.update(account)
            return (account.id, contact.id)
        }
        let report = try await device.sync()
        #expect(report.pushed == 2 && report.rejected == 0)
        let server = try fixture.tenantStore()
        #expect(try server.record(account) != nil && server.record(contact) != nil)
        await fixture.stop()
    }
}
