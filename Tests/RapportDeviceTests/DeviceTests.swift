import Access
import CRM
import Foundation
import RapportClient
import RapportDevice
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import Testing
import TLS
import TestScheduling

/// The device's local commands, on a real store in a temporary directory (no server).
@Suite struct DeviceTests {
    let dir: TemporaryDirectory
    let device: Device

    init() throws {
        dir = try TemporaryDirectory()
        let home = DeviceHome(path: dir.path("device"))
        try home.initialize(DeviceHomeTests.settings(in: dir))
        device = try Device.open(home)
    }

    @Test(.blocking) func putCreatesThenUpdates() throws {
        let created = try device.put(type: "account", id: nil, assignments: ["name=Acme", "industry=Retail", "loyalty_points+=10", "annual_revenue=2e6"])
        #expect(created.created)
        let id = Device.text(created.record.id)
        let updated = try device.put(type: "account", id: id, assignments: ["region=EMEA", "industry=", "loyalty_points-=3"])
        #expect(!updated.created)
        let record = try device.record(id)
        #expect(record.values["region"] == .text("EMEA"))
        #expect(record.values["industry"] == .null)
        #expect(record.values["name"] == .text("Acme"))
        #expect(record.values["loyalty_points"] == .integer(7))
        #expect(record.values["annual_revenue"] == .real(2e6))
        #expect(try device.list(type: "account").map(\.id) == [created.record.id])
        #expect(try device.status().dirtyCount == 1)
    }

    @Test(.blocking) func aWriteTheUsersRightsRefuseExitsRefusedWithTheRuleAndKeepsNothingEvenOffline() throws {
        let account = try device.put(type: "account", id: nil, assignments: ["name=North Ltd", "owner=nina@acme.example"]).record
        // Rights a session's Welcome gave, kept in the store: a device opened later, offline, checks with them.
        let rep = try #require(CRMAccess.defaultRoles.first { $0.name == "rep" })
        let nina = AccessSubject(user: "nina@acme.example", team: "north", role: rep, teamMembers: [])
        try device.store.performSync { try RapportClient.adoptAccess(nina.wire, on: $0) }
        let offline = try Device.open(device.home)
        defer { offline.close() }
        let dirty = try offline.status().dirtyCount

        let error = try #require(#expect(throws: DeviceError.self) {
            try offline.put(type: "account", id: Device.text(account.id), assignments: ["annual_revenue=2e6", "region=North"])
        })
        #expect(error.status == .refused)
        #expect(error.message.contains("reps may not write the field annual_revenue"), "\(error.message)")
        #expect(try offline.record(Device.text(account.id)) == account)
        let stage = try #require(#expect(throws: DeviceError.self) {
            try offline.put(type: "pipeline_stage", id: nil, assignments: ["name=Pilot", "position=3", "probability=40"])
        })
        #expect(stage.status == .refused && stage.message.contains("reps may not create pipeline_stages"))
        #expect(try offline.status().dirtyCount == dirty)
        #expect(try offline.put(type: "account", id: Device.text(account.id), assignments: ["region=North"]).record.values["region"] == .text("North"))
        // A computed field is the rules' to set, whatever the user's rights.
        let computed = try #require(#expect(throws: DeviceError.self) {
            try offline.put(type: "account", id: Device.text(account.id), assignments: ["tier=gold"])
        })
        #expect(computed.message.contains("tier is computed by the tenant's rules"), "\(computed.message)")
    }

    @Test(.blocking) func aBadArgumentWritesNothing() throws {
        let error = #expect(throws: DeviceError.self) {
            try device.put(type: "contact", id: nil, assignments: ["first_name=Ada", "do_not_call=perhaps"])
        }
        #expect(error?.status == .usage)
        #expect(error?.message.contains("do_not_call") == true)
        #expect(try device.list(type: "contact").isEmpty)
        #expect(try device.status().dirtyCount == 0)
    }

    @Test(.blocking) func updatesAreCheckedAgainstTheRecord() throws {
        let contact = Device.text(try device.put(type: "contact", id: nil, assignments: ["first_name=Ada", "last_name=Lovelace"]).record.id)
        #expect(throws: DeviceError.usage("record \(contact) is a contact, not a account")) {
            try device.put(type: "account", id: contact, assignments: ["name=X"])
        }
        #expect(throws: DeviceError.self) { try device.put(type: "contact", id: contact, assignments: []) }
        let missing = try #require(#expect(throws: DeviceError.self) {
            try device.put(type: "contact", id: UUID().uuidString, assignments: ["first_name=X"])
        })
        #expect(missing.status == .notFound)
        #expect(try #require(#expect(throws: DeviceError.self) { try device.record("not-an-id") }).status == .usage)
        #expect(try #require(#expect(throws: DeviceError.self) { try device.record(UUID().uuidString) }).status == .notFound)
    }

    @Test(.blocking) func deleteAndRestore() throws {
        let id = Device.text(try device.put(type: "contact", id: nil, assignments: ["first_name=Ada", "last_name=Lovelace"]).record.id)
        #expect(try device.delete(id).isDeleted)
        #expect(try device.list(type: "contact").isEmpty)
        #expect(try device.list(type: "contact", includeDeleted: true).count == 1)
        let edit = try #require(#expect(throws: DeviceError.self) { try device.put(type: "contact", id: id, assignments: ["title=Dr"]) })
        #expect(edit.status == .usage)
        #expect(try device.restore(id).values["first_name"] == .text("Ada"))
        #expect(try #require(#expect(throws: DeviceError.self) { try device.restore(id) }).status == .usage)
    }

    @Test(.blocking) func resolvingAConflictThatDoesNotExistIsNotFound() throws {
        let error = try #require(#expect(throws: DeviceError.self) { try device.resolve(42, .keepWinner) })
        #expect(error.status == .notFound)
    }
}
