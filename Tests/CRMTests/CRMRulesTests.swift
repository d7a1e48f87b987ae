import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// A CRM store in a temporary directory, with the CRM's rules and indexes.
func openCRMStore(_ dir: TemporaryDirectory, _ name: String) throws -> ReplicaStore {
    try ReplicaStore(path: dir.path("\(name).sqlite"), options: .crm(replicaID: try ReplicaID(name)))
}

/// `error` as the store reports an invalid record: the model error naming record and field.
func invalid(_ record: UUID, _ field: String, _ reason: String) -> ReplicaStoreError {
    .invalidRecord(.invalidFieldValue(record: record.uuidString, field: field, reason: reason))
}

/// The checks that need the tenant's data: references, the pipeline, custom fields, on local
/// writes (at the end of the transaction) and on batches from downstream, not from upstream.
@Suite struct CRMRulesTests {
    let dir: TemporaryDirectory
    let store: ReplicaStore

    init() throws {
        dir = try TemporaryDirectory()
        store = try openCRMStore(dir, "device-a")
    }

    @Test(.blocking) func aReferenceMustNameARecordOfTheReferencedTypeInThisStore() throws {
        let missing = UUID(), contact = UUID()
        #expect(throws: invalid(contact, "account", "no record of type account with id \(missing.uuidString)")) {
            try store.create("contact", id: contact, ["last_name": .text("Ng"), "account": .text(missing.uuidString)])
        }
        let other = try store.create("contact", ["last_name": .text("Other")]).id
        #expect(throws: invalid(contact, "account", "\(other.uuidString) is a record of type contact, not account")) {
            try store.create("contact", id: contact, ["last_name": .text("Ng"), "account": .text(other.uuidString)])
        }
        #expect(try store.record(contact) == nil)

        // Another tenant's account is in another store: here it is simply missing.
        let globex = try openCRMStore(dir, "globex-device")
        let foreign = try globex.create("account", ["name": .text("Globex")]).id
        #expect(throws: invalid(contact, "account", "no record of type account with id \(foreign.uuidString)")) {
            try store.create("contact", id: contact, ["last_name": .text("Ng"), "account": .text(foreign.uuidString)])
        }
    }

    @Test(.blocking) func aTransactionIsCheckedAsItEnds() throws {
        let account = UUID(), contact = UUID()
        // The contact is written before the account it references, and completed later.
        try store.transaction {
            try store.create("contact", id: contact, ["account": .text(account.uuidString)])
            try store.create("account", id: account, ["name": .text("Acme")])
            try store.update(contact, ["last_name": .text("Ng")])
        }
        #expect(try store.record(contact)?.values["last_name"] == .text("Ng"))

        let incomplete = UUID()
        #expect(throws: invalid(incomplete, "last_name", "required, but missing")) {
            try store.transaction {
                try store.create("account", ["name": .text("Kept only if all is")])
                try store.create("contact", id: incomplete, ["first_name": .text("Ada")])
            }
        }
        #expect(try store.count(ofType: "account") == 1)
        #expect(try store.record(incomplete) == nil)
    }

    @Test(.blocking) func deletingIsNeverRefusedForWhatTheRecordLacks() throws {
        let account = try store.create("account", ["name": .text("Acme")]).id
        try store.delete(account)
        let contact = try store.create("contact", ["last_name": .text("Ng"), "account": .text(account.uuidString)]).id
        #expect(try store.record(contact) != nil, "a deleted account is still a record to point at: a merge leaves one")
    }

    @Test(.blocking) func anOpportunityStageIsOneOfTheTenantsPipeline() throws {
        let account = try store.create("account", ["name": .text("Acme")]).id
        func opportunity(_ stage: String) throws -> UUID {
            try store.create("opportunity", ["name": .text("Deal"), "account": .text(account.uuidString), "stage": .text(stage)]).id
        }
        _ = try opportunity("proposal")  // the default pipeline
        let error = try #require(#expect(throws: ReplicaStoreError.self) { try opportunity("won") })
        #expect("\(error)".contains("field 'stage': 'won' is not a stage of this tenant's pipeline (prospecting, qualification"))

        let crm = CRMStore(store: store)
        try crm.addPipelineStage(PipelineStage(name: "discovery", position: 1, probability: 5))
        try crm.addPipelineStage(PipelineStage(name: "signed", position: 2, probability: 100, isClosed: true, isWon: true))
        #expect(try crm.pipeline().map(\.name) == ["discovery", "signed"])
        _ = try opportunity("discovery")
        #expect(throws: ReplicaStoreError.self) { try opportunity("proposal") }
    }

    @Test(.blocking) func customFieldsAreValidatedLikeBuiltInOnes() throws {
        let crm = CRMStore(store: store)
        let contact = try store.create("contact", ["last_name": .text("Ng")]).id
        // Not declared yet: a local write refuses the unknown field.
        #expect(throws: ReplicaStoreError.invalidRecord(.invalidFieldName(record: contact.uuidString, field: "region_code"))) {
            try store.update(contact, ["region_code": .text("north")])
        }
        try crm.addCustomField(CustomField(entity: "contact", name: "region_code", kind: .choice, choices: ["north", "south"]))
        try crm.addCustomField(CustomField(entity: "contact", name: "seats", kind: .number))
        try crm.addCustomField(CustomField(entity: "contact", name: "renewal", kind: .date))
        try store.update(contact, ["region_code": .text("north"), "seats": .integer(12), "renewal": .text("2027-01-31")])
        #expect(throws: invalid(contact, "region_code", "'east' is not one of north, south")) {
            try store.update(contact, ["region_code": .text("east")])
        }
        #expect(throws: invalid(contact, "seats", "expected number, found text")) { try store.update(contact, ["seats": .text("many")]) }
        #expect(throws: invalid(contact, "renewal", "'31/01/2027' is not a valid date (YYYY-MM-DD)")) {
            try store.update(contact, ["renewal": .text("31/01/2027")])
        }
        #expect(try crm.get(Contact.self, contact)?.custom["region_code"] == .text("north"))
        #expect(Set(try crm.customFields(of: Contact.self).keys) == ["region_code", "seats", "renewal"])
    }

    @Test(.blocking) func aCustomFieldDefinitionMustAddANewValidField() throws {
        let crm = CRMStore(store: store)
        let error = try #require(#expect(throws: ReplicaStoreError.self) {
            try crm.addCustomField(CustomField(entity: "contact", name: "email", kind: .text))
        })
        #expect("\(error)".contains("field 'name': contact already has a built-in field 'email'"))
        #expect(throws: ReplicaStoreError.self) { try crm.addCustomField(CustomField(entity: "contact", name: "two words", kind: .text)) }
        #expect(throws: ReplicaStoreError.self) { try crm.addCustomField(CustomField(entity: "contact", name: "tier", kind: .choice)) }
        #expect(throws: ReplicaStoreError.self) { try crm.addCustomField(CustomField(entity: "pipeline_stage", name: "x", kind: .text)) }
    }

    /// A device that skipped the checks pushes a contact whose account does not exist: the
    /// server (downstream apply) refuses it; a pull (upstream apply) takes it, because upstream
    /// checked it and its account may simply come later in the pull.
    @Test(.blocking) func batchesFromDownstreamAreCheckedAndFromUpstreamNot() throws {
        let lenient = try ReplicaStore(path: dir.path("lenient.sqlite"), options: .init(schema: CRMSchema.current, replicaID: try ReplicaID("lenient")))
        let orphan = try lenient.create("contact", ["last_name": .text("Orphan"), "account": .text(UUID().uuidString)])
        let server = try openCRMStore(dir, "server")
        #expect(throws: ReplicaStoreError.self) { try server.apply([orphan], from: .downstream) }
        #expect(throws: ReplicaStoreError.self) { try server.apply(encoded: [EncodedRecord(orphan)], from: .downstream) }
        #expect(try server.record(orphan.id) == nil)
        try store.apply(encoded: [EncodedRecord(orphan)], from: .upstream)
        #expect(try store.record(orphan.id) != nil)

        // Earlier in the same batch counts.
        let account = try lenient.create("account", ["name": .text("Acme")])
        let contact = try lenient.create("contact", ["last_name": .text("Ng"), "account": .text(account.id.uuidString)])
        try server.apply([account, contact], from: .downstream)
        #expect(try server.record(contact.id) != nil)
    }
}

extension CRMRulesTests {
    /// A setting of a known key must hold a value the key can take, on a local write and in a
    /// batch from downstream; a key this version does not know is kept for the version that does.
    @Test(.blocking) func aSettingWithABadValueIsRefused() throws {
        let bad = UUID()
        let refusal = invalid(bad, "value", "'soon' is not a value for setting 'churn.inactivity_days': expected a whole number of days above 0")
        #expect(throws: refusal) {
            try store.create("setting", id: bad, ["key": .text("churn.inactivity_days"), "value": .text("soon")])
        }
        let good = try store.create("setting", ["key": .text("churn.inactivity_days"), "value": .text("30")]).id
        #expect(throws: ReplicaStoreError.self) { try store.update(good, ["value": .text("-3")]) }
        #expect(try store.record(good)?.values["value"] == .text("30"))
        #expect(throws: ReplicaStoreError.self) { try store.create("setting", ["key": .text("tier.vip"), "value": .text("lots")]) }
        try store.create("setting", ["key": .text("some.future.key"), "value": .text("whatever")])

        let lenient = try ReplicaStore(path: dir.path("lenient-settings.sqlite"),
                                       options: .init(schema: CRMSchema.current, replicaID: try ReplicaID("lenient")))
        let pushed = try lenient.create("setting", id: bad, ["key": .text("churn.inactivity_days"), "value": .text("soon")])
        let server = try openCRMStore(dir, "server")
        #expect(throws: refusal) { try server.apply([pushed], from: .downstream) }
        #expect(throws: refusal) { try server.apply(encoded: [EncodedRecord(pushed)], from: .downstream) }
        #expect(try server.record(bad) == nil)
    }

    /// A write that fails inside a larger transaction is rolled back alone; the checks at the
    /// end see the records as they are, not the states the failed write left behind.
    @Test(.blocking) func aFailedNestedWriteLeavesNoStaleStateToCheck() throws {
        let account = try store.create("account", ["name": .text("Acme")]).id
        try store.transaction {
            #expect(throws: ReplicaStoreError.self) {
                try store.transaction {
                    try store.update(account, ["name": .text("")])  // would fail the end check
                    try store.update(account, ["tier": .text("platinum")])  // fails here
                }
            }
            try store.create("contact", ["last_name": .text("Ng"), "account": .text(account.uuidString)])
        }
        #expect(try store.record(account)?.values["name"] == .text("Acme"))
        #expect(try store.count(ofType: "contact") == 1)
    }
}

extension CRMRulesTests {
    /// A server with a newer schema allowed a lead source this device's schema lacks: the pull
    /// takes it (and passes it on), a push of it from below would not.
    @Test(.blocking) func aValueANewerSchemaAllowsIsTakenFromUpstream() throws {
        var fields = CRMSchema.current.types["lead"]!.fields
        fields["source"] = .text
        var rules = CRMSchema.current.types["lead"]!.rules
        rules["source"] = .oneOf(CRMSchema.leadSources + ["podcast"])
        let newer = Schema(CRMSchema.current.types.values.filter { $0.name != "lead" } + [RecordType(name: "lead", fields: fields, rules: rules)])
        let server = try ReplicaStore(path: dir.path("newer.sqlite"), options: .init(schema: newer, replicaID: try ReplicaID("newer")))
        let lead = try server.create("lead", ["last_name": .text("Li"), "status": .text("new"), "source": .text("podcast")])
        try store.apply(encoded: [EncodedRecord(lead)], from: .upstream)
        #expect(try store.record(lead.id)?.values["source"] == .text("podcast"))
        let other = try openCRMStore(dir, "server-of-this-version")
        #expect(throws: ReplicaStoreError.self) { try other.apply(encoded: [EncodedRecord(lead)], from: .downstream) }
    }
}
