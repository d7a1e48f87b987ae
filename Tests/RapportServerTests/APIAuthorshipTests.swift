import CRM
import Foundation
import TestScheduling
import TestSupport
import Testing

/// Who made an API write, where the CRM records who changed what: the stage history of an
/// opportunity names the API key, as it names a device's user. Against a real `rapportd`.
@Suite(.serialized, .ownThread) struct APIAuthorshipTests {
    @Test func aStageSetThroughTheAPINamesTheKeyInTheStageHistory() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let account = try #require(try api.request("POST", "/v1/records/account", json: ["fields": ["name": "Acme", "owner": "owner@acme.example"]])
            .json["id"] as? String)
        let created = try api.request("POST", "/v1/records/opportunity",
                                      json: ["fields": ["name": "Deal", "account": account, "stage": "prospecting", "owner": "owner@acme.example"]])
        let deal = try #require(created.json["id"] as? String, "\(created)")
        #expect(try api.request("PATCH", "/v1/records/opportunity/\(deal)", json: ["fields": ["stage": "proposal"]]).status == 200)
        // Through a batch too.
        let batch = try api.request("POST", "/v1/batch", json: ["items": [["op": "update", "type": "opportunity", "id": deal,
                                                                            "fields": ["stage": "negotiation"]]]])
        #expect(batch.status == 200, "\(batch)")

        let entries = try #require(try api.request("GET", "/v1/records/stage_change?limit=1000").json["records"] as? [[String: Any]])
            .compactMap { $0["fields"] as? [String: Any] }.filter { ($0["opportunity"] as? String)?.lowercased() == deal }
        #expect(Set(entries.compactMap { $0["to_stage"] as? String }) == ["prospecting", "proposal", "negotiation"], "\(entries)")
        #expect(entries.allSatisfy { $0["changed_by"] as? String == "erp@apikey.invalid" }, "\(entries)")

        // A device pulls the history with the key named, as the CRM shows it.
        let device = try server.device()
        _ = try await device.sync()
        let history = try device.local { try CRMStore(store: $0).stageHistory(of: try #require(UUID(uuidString: deal))) }
        #expect(history.count == 3 && history.allSatisfy { $0.changedBy == "erp@apikey.invalid" }, "\(history)")
    }
}
