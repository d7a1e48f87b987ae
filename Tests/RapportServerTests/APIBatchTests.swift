import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

private let batchPath = "/v1/batch"

/// `POST /v1/batch` against a real `rapportd` over HTTPS (`APIServer`, curl as the client):
/// several writes of any types in one transaction, all or none.
@Suite(.serialized, .ownThread) struct APIBatchTests {
    @Test func aBatchLandsInOneTransactionAndDevicesReceiveIt() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let existing = try #require(try api.request("POST", "/v1/records/account", json: ["fields": ["name": "Old", "owner": "owner@acme.example"]])
            .json["id"] as? String)
        let account = UUID().uuidString.lowercased()
        let before = try server.tenantStore().lastSequence
        // The order comes before the account it references: the batch is checked as a whole.
        let items: [[String: Any]] = [
            ["type": "order", "fields": ["account": account, "number": "SO-1", "date": "2026-11-30", "amount": 120.5,
                                         "currency": "EUR", "status": "confirmed"]],
            ["op": "create", "type": "account", "id": account, "fields": ["name": "New GmbH", "owner": "owner@acme.example"]],
            ["op": "update", "type": "account", "id": existing, "fields": ["industry": "steel"]],
            ["type": "contact", "fields": ["last_name": "Batch", "account": account]],
            ["op": "delete", "type": "account", "id": existing],
        ]
        let reply = try api.checked("POST", batchPath, template: batchPath, json: ["items": items])
        #expect(reply.status == 200, "\(reply)")
        let records = try #require(reply.json["records"] as? [[String: Any]])
        #expect(records.compactMap { $0["type"] as? String } == ["order", "account", "account", "contact", "account"])
        #expect(records[1]["id"] as? String == account)
        #expect((records[2]["fields"] as? [String: Any])?["industry"] as? String == "steel")
        #expect(records[4]["deleted"] as? Bool == true)
        // One transaction: the tenant's sequence moved past every record at once, and a device
        // pulls all of them.
        let store = try server.tenantStore()
        let changed = try store.changes(after: before, limit: 100)
        store.close()
        #expect(Set(changed.map(\.state.id.uuidString)).count == 4, "\(changed.map(\.state.type))")
        let device = try server.device()
        _ = try await device.sync()
        // Each record as the last item that wrote it left it (the updated account was deleted after).
        var last: [String: Bool] = [:]
        for record in records { last[try #require(record["id"] as? String)] = record["deleted"] as? Bool }
        for (id, deleted) in last {
            let held = try device.local { try $0.record(try #require(UUID(uuidString: id))) }
            #expect(held?.isDeleted == deleted, "\(id) on the device: \(String(describing: held))")
        }
    }

    @Test(.blocking) func anInvalidItemRefusesTheWholeBatchNamingItsIndex() throws {
        let server = try APIServer(tenants: ["acme", "globex"])
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let foreign = try #require(try server.client(try server.key(tenant: "globex", name: "erp", role: "admin"))
            .request("POST", "/v1/records/account", json: ["fields": ["name": "Globex"]]).json["id"] as? String)
        let good: [String: Any] = ["type": "account", "fields": ["name": "Fine", "owner": "owner@acme.example"]]
        let before = try server.tenantStore().lastSequence
        func refused(_ bad: [String: Any], at index: Int, _ status: Int, field: String?, rule: String?,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
            var items = Array(repeating: good, count: 4)
            items.insert(bad, at: index)
            let reply = try api.checked("POST", batchPath, template: batchPath, json: ["items": items], sourceLocation: sourceLocation)
            #expect(reply.status == status && reply.headers["content-type"] == "application/problem+json", "\(reply)", sourceLocation: sourceLocation)
            #expect(reply.json["index"] as? Int == index, "\(reply)", sourceLocation: sourceLocation)
            #expect((reply.json["detail"] as? String)?.hasPrefix("item \(index):") == true, "\(reply)", sourceLocation: sourceLocation)
            if let field { #expect(reply.json["field"] as? String == field, "\(reply)", sourceLocation: sourceLocation) }
            if let rule { #expect(reply.json["rule"] as? String == rule, "\(reply)", sourceLocation: sourceLocation) }
        }
        // Refused as the item is written, at the transaction's end, and before anything is written.
        try refused(["type": "account", "fields": ["name": "X", "size": "huge"]], at: 3, 422, field: "size", rule: "choices")
        try refused(["type": "account", "fields": ["industry": "no name"]], at: 2, 422, field: "name", rule: "required")
        try refused(["type": "contact", "fields": ["last_name": "X", "account": foreign]], at: 1, 422, field: "account", rule: "reference")
        try refused(["type": "account", "fields": ["name": 42]], at: 4, 422, field: "name", rule: "type")
        try refused(["type": "account", "colour": "red"], at: 0, 422, field: "colour", rule: "unknown-field")
        try refused(["op": "update", "type": "account", "id": UUID().uuidString, "fields": ["name": "Y"]], at: 2, 404, field: nil, rule: nil)
        try refused(["op": "merge", "type": "account"], at: 1, 422, field: "op", rule: "choices")
        try refused(["type": "spaceship", "fields": [:]], at: 0, 404, field: nil, rule: nil)
        // Nothing of any of them was written.
        #expect(try server.tenantStore().lastSequence == before)
        // A taken id, within the batch itself.
        let id = UUID().uuidString
        let twice = try api.checked("POST", batchPath, template: batchPath, json: ["items": [
            ["type": "account", "id": id, "fields": ["name": "A"]], ["type": "account", "id": id, "fields": ["name": "B"]],
        ]])
        #expect(twice.status == 409 && twice.json["index"] as? Int == 1, "\(twice)")
        #expect(try server.tenantStore().lastSequence == before)
        // Malformed batches.
        #expect(try api.checked("POST", batchPath, template: batchPath, json: ["items": []]).status == 422)
        #expect(try api.checked("POST", batchPath, template: batchPath, json: ["writes": [good]]).status == 422)
        #expect(try api.checked("POST", batchPath, template: batchPath, body: "[1, 2").status == 400)
    }

    @Test(.blocking) func aRetriedBatchWithAnIdempotencyKeyHappensOnce() throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let items = (0..<20).map { ["type": "account", "fields": ["name": "Account \($0)", "owner": "owner@acme.example"]] as [String: Any] }
        let first = try api.checked("POST", batchPath, template: batchPath, json: ["items": items], headers: ["Idempotency-Key": "import-1"])
        #expect(first.status == 200)
        let sequence = try server.tenantStore().lastSequence
        let retry = try api.checked("POST", batchPath, template: batchPath, json: ["items": items], headers: ["Idempotency-Key": "import-1"])
        #expect(retry.status == 200 && retry.body == first.body && retry.headers["idempotent-replayed"] == "true")
        #expect(try server.tenantStore().lastSequence == sequence)
        #expect((try api.request("GET", "/v1/records/account?limit=1000").json["records"] as? [Any])?.count == 20)
        // The same key on another batch is refused; a refused batch keeps no response for its key.
        let other = try api.checked("POST", batchPath, template: batchPath, json: ["items": Array(items.prefix(3))],
                                    headers: ["Idempotency-Key": "import-1"])
        #expect(other.status == 422 && (other.json["type"] as? String)?.hasSuffix("idempotency-key-reused") == true)
        let bad = items.prefix(2) + [["type": "account", "fields": ["size": "huge"]]]
        #expect(try api.request("POST", batchPath, json: ["items": Array(bad)], headers: ["Idempotency-Key": "import-2"]).status == 422)
        let fixed = items.prefix(2) + [["type": "account", "fields": ["name": "Fixed"]]]
        let again = try api.request("POST", batchPath, json: ["items": Array(fixed)], headers: ["Idempotency-Key": "import-2"])
        #expect(again.status == 200 && again.headers["idempotent-replayed"] == nil, "\(again)")
    }

    @Test(.blocking) func aBatchHasExactlyTheRightsOfTheKeysRole() throws {
        let server = try APIServer()
        let rep = server.client(try server.key(name: "web", role: "rep"))
        let mine: [String: Any] = ["type": "account", "fields": ["name": "Mine", "owner": "web@apikey.invalid"]]
        let before = try server.tenantStore().lastSequence
        let others = try rep.checked("POST", batchPath, template: batchPath, json: ["items": [
            mine, ["type": "account", "fields": ["name": "Theirs", "owner": "owner@acme.example"]],
        ]])
        #expect(others.status == 403 && others.json["index"] as? Int == 1, "\(others)")
        let hidden = try rep.checked("POST", batchPath, template: batchPath, json: ["items": [
            ["type": "account", "fields": ["name": "Rich", "owner": "web@apikey.invalid", "annual_revenue": 5.0]], mine,
        ]])
        #expect(hidden.status == 403 && hidden.json["index"] as? Int == 0, "\(hidden)")
        let configuration = try rep.checked("POST", batchPath, template: batchPath, json: ["items": [
            mine, mine, ["type": "setting", "fields": ["key": "tier.gold", "value": "1"]],
        ]])
        #expect(configuration.status == 403 && configuration.json["index"] as? Int == 2, "\(configuration)")
        #expect(try server.tenantStore().lastSequence == before)
        let allowed = try rep.checked("POST", batchPath, template: batchPath, json: ["items": [mine, mine]])
        #expect(allowed.status == 200, "\(allowed)")
        let id = try #require((allowed.json["records"] as? [[String: Any]])?.first?["id"] as? String)
        let deleted = try rep.checked("POST", batchPath, template: batchPath, json: ["items": [["op": "delete", "type": "account", "id": id]]])
        #expect(deleted.status == 403 && deleted.json["index"] == nil, "a batch of one is refused as its item: \(deleted)")
    }

    @Test(.blocking) func aBatchBeyondItsLimitsIsRefused413() throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let item: [String: Any] = ["type": "account", "fields": ["name": "N"]]
        let tooMany = try api.checked("POST", batchPath, template: batchPath, json: ["items": Array(repeating: item, count: 1001)])
        #expect(tooMany.status == 413 && (tooMany.json["type"] as? String)?.hasSuffix("batch-too-large") == true, "\(tooMany)")
        let tooLarge = try api.checked("POST", batchPath, template: batchPath, body: String(repeating: "x", count: 17 << 20))
        #expect(tooLarge.status == 413, "\(tooLarge)")
        // At the limit it lands, and a body over the single-record endpoints' 1 MiB is fine.
        let full = (0..<1000).map { ["type": "account", "fields": ["name": "Account \($0) " + String(repeating: "n", count: 1200)]] as [String: Any] }
        let landed = try api.checked("POST", batchPath, template: batchPath, json: ["items": full])
        #expect(landed.status == 200 && (landed.json["records"] as? [Any])?.count == 1000, "\(landed)")
    }
}
