import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// A real `rapportd` with its integration API on, keys made with the real `rapportctl`, and
/// `curl` as the client, over HTTPS on loopback; devices sync with the same server.
final class APIServer: Sendable {
    let dir: TemporaryDirectory
    let data: String
    let process: ServerProcess
    let apiPort: Int
    let credentials: [String: [DeviceCredential]]

    init(tenants: [String] = ["acme"], devices: Int = 2, arguments: [String] = []) throws {
        dir = try TemporaryDirectory()
        data = dir.path("server")
        credentials = try ServerProcess.prepare(data: data, tenants: tenants, devicesPerTenant: devices, schema: CRMSchema.current)
        process = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                          arguments: ["--api", "127.0.0.1:0", "--rules-interval", "0", "--api-rate", "100000"] + arguments,
                                          bannerLine: "integration API at")
        guard let port = process.apiPort else {
            process.stop()
            throw BenchError("no API port in the banner: \(process.banner)")
        }
        apiPort = port
    }

    deinit { process.stop() }

    var caFile: String { data + "/tls/ca.pem" }

    func ctl(_ arguments: [String]) throws -> ToolResult {
        try ToolProcess.run(ServerProcess.defaultBinary(named: "rapportctl"), ["--data", data] + arguments)
    }

    /// A new key, made as an operator makes one.
    func key(tenant: String = "acme", name: String, role: String) throws -> String {
        let result = try ctl(["apikey", "create", "--tenant", tenant, "--name", name, "--role", role, "--json"])
        guard result.status == 0, let json = result.json as? [String: Any], let key = json["key"] as? String else {
            throw BenchError("apikey create failed: \(result.error) \(result.output)")
        }
        return key
    }

    func client(_ key: String?) -> APIClient { APIClient(port: apiPort, caFile: caFile, key: key) }

    /// A device of `tenant` (the n-th enrolled), syncing with this server.
    func device(_ index: Int = 0, tenant: String = "acme") throws -> RapportClient {
        let credential = try #require(credentials[tenant]?[index])
        let store = try ReplicaStore(path: dir.path("device-\(tenant)-\(index).sqlite"), options: .crm(replicaID: try credential.replicaID))
        var config = ClientConfiguration(host: "127.0.0.1", port: process.port, tenant: tenant, secret: credential.secret,
                                         trustRoots: .certificates(.file(caFile)), schemaVersion: CRMSchema.version)
        config.retry = RetryPolicy(maxAttempts: 3, initialDelay: .milliseconds(20), maxDelay: .milliseconds(200))
        return try RapportClient(store: SharedReplicaStore(store, label: "device \(index)"), configuration: config,
                                 logger: ServerFixture.logger("api.device"))
    }

    /// The server's store of `tenant`, opened beside the server as tools open it.
    func tenantStore(_ tenant: String = "acme") throws -> ReplicaStore {
        try ReplicaStore(path: data + "/tenants/\(tenant).sqlite", options: .crm(role: .authority))
    }
}

/// The OpenAPI document of Protocol/, for checking every reply the tests get against it.
struct OpenAPIDocument: @unchecked Sendable {
    // Safe: read once from a file and never changed; only read afterwards.
    let root: [String: Any]

    static let shared: OpenAPIDocument = {
        var here = URL(fileURLWithPath: #filePath)
        while here.path != "/" && !FileManager.default.fileExists(atPath: here.appendingPathComponent("Protocol/openapi.json").path) {
            here.deleteLastPathComponent()
        }
        let data = (try? Data(contentsOf: here.appendingPathComponent("Protocol/openapi.json"))) ?? Data()
        return OpenAPIDocument(root: (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }()

    func resolve(_ node: Any?) -> [String: Any] {
        guard let node = node as? [String: Any] else { return [:] }
        guard let reference = node["$ref"] as? String else { return node }
        var current: Any? = root
        for part in reference.dropFirst(2).split(separator: "/") { current = (current as? [String: Any])?[String(part)] }
        return resolve(current)
    }

    /// Problems with `reply` as the answer to `method` on the path template `path`: its status
    /// undocumented, another content type, required members missing (one level deep, and in
    /// the items of arrays), members a closed schema does not have.
    func violations(of reply: APIClient.Reply, method: String, path: String) -> [String] {
        guard let operation = ((root["paths"] as? [String: Any])?[path] as? [String: Any])?[method.lowercased()] as? [String: Any] else {
            return ["\(method) \(path) is not in the document"]
        }
        guard let response = (operation["responses"] as? [String: Any])?[String(reply.status)] else {
            return ["status \(reply.status) of \(method) \(path) is not documented"]
        }
        let resolved = resolve(response)
        guard let content = resolved["content"] as? [String: Any] else { return [] }
        let type = reply.headers["content-type"] ?? ""
        guard let media = content[type] as? [String: Any] else {
            return ["\(method) \(path) \(reply.status): content type '\(type)', documented \(content.keys.sorted())"]
        }
        guard let body = try? JSONSerialization.jsonObject(with: Data(reply.body.utf8)) else { return ["body is not JSON: \(reply.body.prefix(200))"] }
        return check(body, against: resolve(media["schema"]), at: "body")
    }

    private func check(_ value: Any, against schema: [String: Any], at path: String) -> [String] {
        var problems: [String] = []
        if schema["type"] as? String == "array", let items = value as? [Any] {
            for (index, item) in items.enumerated() { problems += check(item, against: resolve(schema["items"]), at: "\(path)[\(index)]") }
        }
        guard schema["type"] as? String == "object", let object = value as? [String: Any] else { return problems }
        for name in schema["required"] as? [String] ?? [] where object[name] == nil { problems.append("\(path).\(name) missing") }
        let properties = schema["properties"] as? [String: Any] ?? [:]
        if schema["additionalProperties"] as? Bool == false {
            for name in object.keys where properties[name] == nil { problems.append("\(path).\(name) is not in the schema") }
        }
        for (name, property) in properties {
            if let member = object[name] { problems += check(member, against: resolve(property), at: "\(path).\(name)") }
        }
        return problems
    }
}

extension APIClient {
    /// A request whose reply must match the OpenAPI document for `template`.
    func checked(_ method: String, _ path: String, template: String, body: String? = nil, json: [String: Any]? = nil,
                 headers: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> Reply {
        let reply = if let json { try request(method, path, json: json, headers: headers) } else { try request(method, path, body: body, headers: headers) }
        let problems = OpenAPIDocument.shared.violations(of: reply, method: method, path: template)
        #expect(problems.isEmpty, "\(method) \(path): \(problems) in \(reply)", sourceLocation: sourceLocation)
        return reply
    }
}

private let recordPath = "/v1/records/{type}"
private let onePath = "/v1/records/{type}/{id}"
private let changesPath = "/v1/changes"

@Suite(.serialized, .ownThread) struct APITests {
    /// Valid new records of every type, in an order in which references exist; a record's
    /// reference fields name types created before it. Configuration types come last, since a
    /// new pipeline stage changes the stages opportunities may have.
    static func sampleFields(_ type: String, ids: [String: String]) -> [String: Any]? {
        switch type {
        case "account": ["name": "Acme GmbH", "industry": "tools", "owner": "owner@acme.example", "annual_revenue": 1_000_000.0]
        case "contact": ["last_name": "Smith", "first_name": "Ann", "account": ids["account"]!, "email": "ann@acme.example", "satisfaction": 4]
        case "lead": ["last_name": "Lee", "status": "new", "source": "web"]
        case "opportunity": ["name": "Big deal", "account": ids["account"]!, "stage": "prospecting", "amount": 5000]
        case "stage_change": ["opportunity": ids["opportunity"]!, "to_stage": "proposal", "changed_at": "2026-01-02T03:04:05Z"]
        case "activity": ["kind": "call", "subject": "Intro call", "contact": ids["contact"]!]
        case "case": ["number": "API-1", "subject": "Broken", "priority": "high", "status": "new", "account": ids["account"]!]
        case "campaign": ["name": "Spring", "status": "planned"]
        case "campaign_member": ["campaign": ids["campaign"]!, "contact": ids["contact"]!, "status": "sent"]
        case "custom_field": ["entity": "account", "name": "erp_number", "kind": "text"]
        case "setting": ["key": "tier.gold", "value": "50000"]
        case "pipeline_stage": ["name": "api_review", "position": 7, "probability": 60]
        case "order": ["account": ids["account"]!, "number": "SO-1001", "date": "2026-11-30", "amount": 1250.0, "currency": "EUR", "status": "confirmed"]
        default: nil
        }
    }

    static let order = ["account", "contact", "lead", "opportunity", "stage_change", "activity", "case", "campaign",
                        "campaign_member", "custom_field", "setting", "pipeline_stage", "order"]

    @Test func crudForEveryTypeOfTheSchema() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        #expect(Set(Self.order) == Set(CRMSchema.current.types.keys), "a type without sample fields: add it to sampleFields")
        var ids: [String: String] = [:]
        for type in Self.order {
            let fields = try #require(Self.sampleFields(type, ids: ids))
            let created = try api.checked("POST", "/v1/records/\(type)", template: recordPath, json: ["fields": fields])
            #expect(created.status == 201, "create \(type): \(created)")
            let id = try #require(created.json["id"] as? String, "create \(type): \(created)")
            ids[type] = id
            let read = try api.checked("GET", "/v1/records/\(type)/\(id)", template: onePath)
            #expect(read.status == 200 && read.json["type"] as? String == type)
            let listed = try api.checked("GET", "/v1/records/\(type)", template: recordPath)
            #expect((listed.json["records"] as? [[String: Any]])?.contains { $0["id"] as? String == id } == true, "list \(type)")
        }
        // Updates and deletes, last created first, so nothing references a deleted record.
        let updates: [String: [String: Any]] = [
            "account": ["industry": "machines"], "contact": ["title": "CFO"], "lead": ["status": "working"],
            "opportunity": ["amount": 7500.5], "stage_change": ["from_stage": "prospecting"], "activity": ["status": "done"],
            "case": ["status": "open"], "campaign": ["status": "active"], "campaign_member": ["status": "responded"],
            "custom_field": ["label": "ERP number"], "setting": ["value": "60000"], "pipeline_stage": ["probability": 65],
            "order": ["status": "invoiced"],
        ]
        for type in Self.order.reversed() {
            let id = try #require(ids[type])
            let patch = try #require(updates[type])
            let patched = try api.checked("PATCH", "/v1/records/\(type)/\(id)", template: onePath, json: ["fields": patch])
            #expect(patched.status == 200, "update \(type): \(patched)")
            let (field, value) = try #require(patch.first)
            #expect("\((patched.json["fields"] as? [String: Any])?[field] ?? "none")" == "\(value)", "update \(type): \(patched)")
            let deleted = try api.checked("DELETE", "/v1/records/\(type)/\(id)", template: onePath)
            #expect(deleted.status == 200 && deleted.json["deleted"] as? Bool == true, "delete \(type): \(deleted)")
            let gone = try api.checked("GET", "/v1/records/\(type)/\(id)", template: onePath)
            #expect(gone.status == 404)
        }
        // The writes are the server's: a device pulls their end state.
        let device = try server.device()
        _ = try await device.sync()
        for (type, id) in ids {
            let record = try device.local { try $0.record(try #require(UUID(uuidString: id))) }
            #expect(record?.isDeleted == true, "\(type) \(id) on the device: \(String(describing: record))")
        }
    }

    @Test func listsFilterOnIndexedFieldsAndPageWithCursors() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        var owners: [String: Int] = [:]
        for index in 0..<25 {
            let owner = index % 3 == 0 ? "ann@acme.example" : "bob@acme.example"
            owners[owner, default: 0] += 1
            let reply = try api.request("POST", "/v1/records/account", json: ["fields": ["name": "A\(index)", "owner": owner]])
            #expect(reply.status == 201)
        }
        var seen: [String] = []
        var cursor: String?
        repeat {
            let path = "/v1/records/account?owner=ann@acme.example&limit=3" + (cursor.map { "&cursor=\($0)" } ?? "")
            let page = try api.checked("GET", path, template: recordPath)
            let records = try #require(page.json["records"] as? [[String: Any]])
            #expect(records.count <= 3)
            #expect(records.allSatisfy { ($0["fields"] as? [String: Any])?["owner"] as? String == "ann@acme.example" })
            seen += records.compactMap { $0["id"] as? String }
            cursor = page.json["next_cursor"] as? String
        } while cursor != nil
        #expect(seen.count == owners["ann@acme.example"] && Set(seen).count == seen.count)
        let all = try api.request("GET", "/v1/records/account?limit=1000")
        #expect((all.json["records"] as? [Any])?.count == 25)
        // Not indexed, unknown, a hidden cursor: refused, naming what is wrong.
        let notIndexed = try api.checked("GET", "/v1/records/account?industry=tools", template: recordPath)
        #expect(notIndexed.status == 400 && notIndexed.json["rule"] as? String == "not-indexed")
        let unknown = try api.checked("GET", "/v1/records/account?colour=red", template: recordPath)
        #expect(unknown.status == 400 && unknown.json["field"] as? String == "colour")
        let badCursor = try api.checked("GET", "/v1/records/account?cursor=xyz", template: recordPath)
        #expect(badCursor.status == 400 && badCursor.json["field"] as? String == "cursor")
        let tooMany = try api.checked("GET", "/v1/records/account?limit=5000", template: recordPath)
        #expect(tooMany.status == 400 && tooMany.json["field"] as? String == "limit")
    }

    @Test func aPatchMergesWithADeviceEditOfAnotherFieldAndConflictsOnTheSameField() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let created = try api.request("POST", "/v1/records/account", json: ["fields": ["name": "Merge AG", "owner": "owner@acme.example"]])
        let id = try #require(created.json["id"] as? String)
        let uuid = try #require(UUID(uuidString: id))
        let device = try server.device()
        _ = try await device.sync()
        // Another field: the device's phone and the ERP's credit field both stay, no conflict.
        try device.local { _ = try $0.update(uuid, ["phone": .text("+49 30 1234567")]) }
        let patched = try api.checked("PATCH", "/v1/records/account/\(id)", template: onePath, json: ["fields": ["industry": "steel"]])
        #expect(patched.status == 200)
        _ = try await device.sync()
        let merged = try api.request("GET", "/v1/records/account/\(id)").json["fields"] as? [String: Any]
        #expect(merged?["phone"] as? String == "+49 30 1234567" && merged?["industry"] as? String == "steel")
        #expect(try device.local { try $0.record(uuid)?.values["industry"] } == .text("steel"))
        let quiet = try server.tenantStore()
        #expect(try quiet.conflicts(status: .open, record: uuid).isEmpty)
        quiet.close()
        // The same field: one of the two wins everywhere, the other is in the conflict log.
        try device.local { _ = try $0.update(uuid, ["industry": .text("from the device")]) }
        let clash = try api.request("PATCH", "/v1/records/account/\(id)", json: ["fields": ["industry": "from the ERP"]])
        #expect(clash.status == 200)
        _ = try await device.sync()
        _ = try await device.sync()
        let store = try server.tenantStore()
        defer { store.close() }
        let conflicts = try store.conflicts(status: .open, record: uuid)
        #expect(conflicts.count == 1, "\(conflicts)")
        let serverValue = try store.record(uuid)?.values["industry"]
        #expect(try device.local { try $0.record(uuid)?.values["industry"] } == serverValue)
        #expect([FieldValue.text("from the device"), .text("from the ERP")].contains(serverValue ?? .null))
    }

    @Test func aRetriedWriteWithAnIdempotencyKeyHappensOnce() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let body: [String: Any] = ["fields": ["name": "Once Ltd", "owner": "owner@acme.example"]]
        let first = try api.checked("POST", "/v1/records/account", template: recordPath, json: body, headers: ["Idempotency-Key": "order-17"])
        let retry = try api.checked("POST", "/v1/records/account", template: recordPath, json: body, headers: ["Idempotency-Key": "order-17"])
        #expect(first.status == 201 && retry.status == 201)
        #expect(first.body == retry.body)
        #expect(first.headers["idempotent-replayed"] == nil && retry.headers["idempotent-replayed"] == "true")
        let listed = try api.request("GET", "/v1/records/account").json["records"] as? [Any]
        #expect(listed?.count == 1)
        // The same key on another request is refused, not replayed.
        let other = try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "Other"]],
                                    headers: ["Idempotency-Key": "order-17"])
        #expect(other.status == 422 && (other.json["type"] as? String)?.hasSuffix("idempotency-key-reused") == true)
        let id = try #require(first.json["id"] as? String)
        let patch: [String: Any] = ["fields": ["industry": "retail"]]
        let patched = try api.request("PATCH", "/v1/records/account/\(id)", json: patch, headers: ["Idempotency-Key": "p-1"])
        let sequence = try server.tenantStore().lastSequence
        let again = try api.request("PATCH", "/v1/records/account/\(id)", json: patch, headers: ["Idempotency-Key": "p-1"])
        #expect(patched.body == again.body && again.headers["idempotent-replayed"] == "true")
        #expect(try server.tenantStore().lastSequence == sequence)
        let deleted = try api.request("DELETE", "/v1/records/account/\(id)", headers: ["Idempotency-Key": "d-1"])
        let deletedAgain = try api.request("DELETE", "/v1/records/account/\(id)", headers: ["Idempotency-Key": "d-1"])
        #expect(deleted.status == 200 && deletedAgain.status == 200 && deleted.body == deletedAgain.body)
        // Another key's same Idempotency-Key is its own.
        let otherKey = server.client(try server.key(name: "shop", role: "admin"))
        let theirs = try otherKey.request("POST", "/v1/records/account", json: body, headers: ["Idempotency-Key": "order-17"])
        #expect(theirs.status == 201 && theirs.json["id"] as? String != id)
    }

    @Test func aKeyHasExactlyTheRightsOfItsRole() async throws {
        let server = try APIServer()
        let admin = server.client(try server.key(name: "erp", role: "admin"))
        let rep = server.client(try server.key(name: "web", role: "rep"))
        let manager = server.client(try server.key(name: "bi", role: "manager"))
        let others = try admin.request("POST", "/v1/records/account", json: ["fields": ["name": "Not yours", "owner": "owner@acme.example", "annual_revenue": 5e6]])
        let othersID = try #require(others.json["id"] as? String)
        // A rep sees the records it owns (its address is its name at apikey.invalid), not others'.
        let own = try rep.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "Mine", "owner": "web@apikey.invalid"]])
        #expect(own.status == 201, "\(own)")
        let ownID = try #require(own.json["id"] as? String)
        #expect(try rep.checked("GET", "/v1/records/account/\(othersID)", template: onePath).status == 404)
        let listed = try rep.request("GET", "/v1/records/account").json["records"] as? [[String: Any]]
        #expect(listed?.compactMap { $0["id"] as? String } == [ownID])
        // Hidden fields: not shown, not writable, not filterable.
        let adminView = try admin.request("GET", "/v1/records/account/\(othersID)").json["fields"] as? [String: Any]
        #expect(adminView?["annual_revenue"] != nil)
        let hiddenWrite = try rep.checked("PATCH", "/v1/records/account/\(ownID)", template: onePath, json: ["fields": ["annual_revenue": 1.0]])
        #expect(hiddenWrite.status == 403, "\(hiddenWrite)")
        #expect(try admin.request("PATCH", "/v1/records/account/\(ownID)", json: ["fields": ["annual_revenue": 2.0]]).status == 200)
        let repView = try rep.request("GET", "/v1/records/account/\(ownID)").json["fields"] as? [String: Any]
        #expect(repView?["annual_revenue"] == nil && repView?["name"] as? String == "Mine")
        // Writes outside the role: someone else's record, a delete reps may not make, configuration.
        let notTheirs = try rep.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "X", "owner": "owner@acme.example"]])
        #expect(notTheirs.status == 403)
        #expect(try rep.checked("DELETE", "/v1/records/account/\(ownID)", template: onePath).status == 403)
        let setting = try rep.checked("POST", "/v1/records/setting", template: recordPath, json: ["fields": ["key": "tier.gold", "value": "1"]])
        #expect(setting.status == 403)
        // A manager (no team) reads no one's accounts but campaigns of all.
        #expect(try manager.request("GET", "/v1/records/account/\(othersID)").status == 404)
        #expect(try admin.request("POST", "/v1/records/campaign", json: ["fields": ["name": "All"]]).status == 201)
        #expect((try manager.request("GET", "/v1/records/campaign").json["records"] as? [Any])?.count == 1)
        // The change feed follows the same rights: the rep's own account, without the hidden field.
        let feed = try rep.checked("GET", "/v1/changes?after=0", template: changesPath)
        let changes = try #require(feed.json["changes"] as? [[String: Any]]).filter { $0["type"] as? String == "account" }
        #expect(changes.compactMap { $0["id"] as? String } == [ownID])
        #expect((changes.first?["fields"] as? [String: Any])?["annual_revenue"] == nil)
    }

    @Test func theChangeFeedResumedFromEveryPositionGivesEveryChangeOnceInOrder() async throws {
        let server = try APIServer()
        let admin = server.client(try server.key(name: "erp", role: "admin"))
        let rep = server.client(try server.key(name: "web", role: "rep"))
        var ids: [String] = []
        for index in 0..<12 {
            let owner = index % 2 == 0 ? "web@apikey.invalid" : "owner@acme.example"
            let reply = try admin.request("POST", "/v1/records/account", json: ["fields": ["name": "F\(index)", "owner": owner]])
            ids.append(try #require(reply.json["id"] as? String))
        }
        for id in ids.prefix(4) { _ = try admin.request("PATCH", "/v1/records/account/\(id)", json: ["fields": ["industry": "updated"]]) }
        for id in ids.suffix(2) { _ = try admin.request("DELETE", "/v1/records/account/\(id)") }
        for client in [admin, rep] {
            // The whole feed, page by page, with the cursor before each page.
            var pages: [(cursor: Int, entries: [String])] = []
            var cursor = 0
            while true {
                let page = try client.checked("GET", "/v1/changes?after=\(cursor)&limit=3", template: changesPath)
                let entries = (page.json["changes"] as? [[String: Any]] ?? []).map { "\($0["id"] ?? "")/\($0["deleted"] ?? "")" }
                pages.append((cursor, entries))
                let next = try #require(page.json["next"] as? Int)
                if page.json["more"] as? Bool != true && entries.isEmpty { break }
                cursor = next
            }
            let all = pages.flatMap(\.entries)
            #expect(Set(all).count == all.count, "a change twice: \(all)")
            // The rep's key sees its six; one of them deleted, which a read from 0 leaves out.
            let expected = client.key == admin.key ? 12 : 5
            #expect(all.count == expected, "\(all)")
            #expect(all.filter { $0.hasSuffix("/1") || $0.hasSuffix("/true") }.count == (client.key == admin.key ? 2 : 0))
            // From each cursor an interrupted read saw, the rest comes exactly once, in order.
            var consumed = 0
            for page in pages {
                var rest: [String] = []
                var position = page.cursor
                while true {
                    let reply = try client.request("GET", "/v1/changes?after=\(position)&limit=3")
                    let entries = (reply.json["changes"] as? [[String: Any]] ?? []).map { "\($0["id"] ?? "")/\($0["deleted"] ?? "")" }
                    rest += entries
                    if entries.isEmpty { break }
                    position = try #require(reply.json["next"] as? Int)
                }
                #expect(rest == Array(all.dropFirst(consumed)), "resumed at \(page.cursor)")
                consumed += page.entries.count
            }
        }
        let malformed = try admin.checked("GET", "/v1/changes?after=abc", template: changesPath)
        #expect(malformed.status == 400 && malformed.json["field"] as? String == "after")
        let ahead = try admin.checked("GET", "/v1/changes?after=999999", template: changesPath)
        #expect(ahead.status == 400)
    }

    /// The feed writes its pages' JSON straight from the stored bytes; a record must come out
    /// byte for byte as a read of it shows it (escapes, numbers, counters, hidden fields, tombstones).
    @Test func theChangeFeedShowsEachRecordExactlyAsAReadOfIt() async throws {
        let server = try APIServer()
        let admin = server.client(try server.key(name: "erp", role: "admin"))
        let rep = server.client(try server.key(name: "web", role: "rep"))
        var reads: [(type: String, id: String)] = []
        var ids: [String: String] = [:]
        for type in Self.order {
            let created = try admin.request("POST", "/v1/records/\(type)", json: ["fields": try #require(Self.sampleFields(type, ids: ids))])
            ids[type] = try #require(created.json["id"] as? String, "create \(type): \(created)")
            reads.append((type, ids[type]!))
        }
        // Text JSON escapes and text it keeps as it is; reals of several forms; a null.
        let tricky = "Q\"uote \\ back\nline\r\ttab \u{1}\u{1F}\u{7F} Müller 東京 🚀 </script>"
        var own: [String] = []
        for (index, fields) in [
            ["name": tricky, "owner": "web@apikey.invalid", "annual_revenue": 1234.5] as [String: Any],
            ["name": "Plain", "owner": "web@apikey.invalid", "industry": NSNull(), "annual_revenue": 1e21],
            ["name": "Small", "owner": "web@apikey.invalid", "annual_revenue": 0.1],
        ].enumerated() {
            let created = try admin.request("POST", "/v1/records/account", json: ["fields": fields])
            let id = try #require(created.json["id"] as? String, "account \(index): \(created)")
            own.append(id)
            reads.append(("account", id))
        }
        // A counter, which only devices change.
        let device = try server.device()
        _ = try await device.sync()
        try device.local { _ = try $0.increment(try #require(UUID(uuidString: own[0])), field: "loyalty_points", by: 42) }
        _ = try await device.sync()
        let tombstone = try admin.request("DELETE", "/v1/records/account/\(own[2])")
        #expect(tombstone.status == 200)
        reads.removeAll { $0.id == own[2] }

        let feed = try admin.checked("GET", "/v1/changes?after=0&limit=1000", template: changesPath)
        // The tenant's rules may add records of their own (a stage change of the opportunity).
        #expect((feed.json["changes"] as? [Any])?.count ?? 0 >= reads.count + 1)
        for (type, id) in reads {
            let read = try admin.request("GET", "/v1/records/\(type)/\(id)")
            #expect(read.status == 200 && feed.body.contains(read.body), "\(type) \(id) in the feed: \(read.body)")
        }
        #expect(feed.body.contains(tombstone.body), "the tombstone \(tombstone.body)")
        #expect((try admin.request("GET", "/v1/records/account/\(own[0])").json["fields"] as? [String: Any])?["loyalty_points"] as? Int == 42)
        // The rep's feed: its own accounts without the hidden revenue, as its reads show them.
        let repFeed = try rep.checked("GET", "/v1/changes?after=0&limit=1000", template: changesPath)
        #expect(!repFeed.body.contains("annual_revenue"))
        for id in own.prefix(2) {
            let read = try rep.request("GET", "/v1/records/account/\(id)")
            #expect(read.status == 200 && repFeed.body.contains(read.body), "account \(id) in the rep's feed: \(read.body)")
        }
    }

    @Test func aLongPollIsWokenByADevicePush() async throws {
        let server = try APIServer()
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let head = try api.request("GET", "/v1/changes?after=0&limit=1000")
        let cursor = try #require(head.json["next"] as? Int)
        // The poll waits up to a minute; the device's push ends it (or, had the push come
        // first, the poll finds it at once: either way it answers with the pushed record).
        let poll = Task { try await offThePool { try api.request("GET", "/v1/changes?after=\(cursor)&wait=60") } }
        let device = try server.device()
        let id = try device.local { try $0.create("contact", ["last_name": .text("Pushed")]).id }
        _ = try await device.sync()
        let reply = try await poll.value
        #expect(reply.status == 200)
        let changes = try #require(reply.json["changes"] as? [[String: Any]])
        #expect(changes.compactMap { $0["id"] as? String } == [id.uuidString.lowercased()])
    }

    @Test func aRevokedKeyIsRefusedAtOnceAndKeysAreAudited() async throws {
        let server = try APIServer()
        let key = try server.key(name: "erp", role: "admin")
        let api = server.client(key)
        #expect(try api.request("GET", "/v1/records/account").status == 200)
        let listed = try server.ctl(["apikey", "list", "--tenant", "acme"])
        #expect(listed.status == 0 && listed.output.contains("erp") && !listed.output.contains(key))
        #expect(try server.ctl(["apikey", "revoke", "--tenant", "acme", "erp"]).status == 0)
        let refused = try api.checked("GET", "/v1/records/account", template: recordPath)
        #expect(refused.status == 401 && refused.headers["content-type"] == "application/problem+json")
        let audit = try server.ctl(["audit", "--tenant", "acme"])
        #expect(audit.output.contains("apikey create") && audit.output.contains("apikey revoke"), "\(audit.output)")
        // Unknown, malformed and missing keys alike.
        for bad in [key + "x", "rk_nope_nope", "hello"] {
            #expect(try server.client(bad).request("GET", "/v1/records/account").status == 401)
        }
        #expect(try server.client(nil).checked("GET", "/v1/changes", template: changesPath).status == 401)
    }

    @Test func aKeyOverItsRateIsAnswered429WithRetryAfter() async throws {
        // A rate so low that the second request within the same quarter-hour is over it.
        let server = try APIServer(arguments: ["--api-rate", "0.001"])
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let other = server.client(try server.key(name: "shop", role: "admin"))
        #expect(try api.request("GET", "/v1/records/account").status == 200)
        let limited = try api.checked("GET", "/v1/records/account", template: recordPath)
        #expect(limited.status == 429)
        #expect(Int(limited.headers["retry-after"] ?? "") ?? 0 >= 1)
        // Another key has its own budget.
        #expect(try other.request("GET", "/v1/records/account").status == 200)
    }

    @Test func badInputIsAClearProblemAndSyncIsUnaffected() async throws {
        let server = try APIServer(tenants: ["acme", "globex"])
        let api = server.client(try server.key(name: "erp", role: "admin"))
        let globex = server.client(try server.key(tenant: "globex", name: "erp", role: "admin"))
        let foreign = try globex.request("POST", "/v1/records/account", json: ["fields": ["name": "Globex"]])
        let foreignID = try #require(foreign.json["id"] as? String)
        func problem(_ reply: APIClient.Reply, _ status: Int, field: String? = nil, rule: String? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(reply.status == status, "\(reply)", sourceLocation: sourceLocation)
            #expect(reply.headers["content-type"] == "application/problem+json", sourceLocation: sourceLocation)
            let json = reply.json
            #expect(json["status"] as? Int == status && json["title"] is String && json["detail"] is String
                    && (json["type"] as? String)?.hasPrefix("https://") == true, "\(reply)", sourceLocation: sourceLocation)
            if let field { #expect(json["field"] as? String == field, "\(reply)", sourceLocation: sourceLocation) }
            if let rule { #expect(json["rule"] as? String == rule, "\(reply)", sourceLocation: sourceLocation) }
        }
        problem(try api.checked("GET", "/v1/records/spaceship", template: recordPath), 404)
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "X", "colour": "red"]]),
                422, field: "colour", rule: "unknown-field")
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": 42]]), 422, field: "name", rule: "type")
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["industry": "no name"]]),
                422, field: "name", rule: "required")
        problem(try api.checked("POST", "/v1/records/contact", template: recordPath, json: ["fields": ["last_name": "X", "account": foreignID]]),
                422, field: "account", rule: "reference")
        problem(try api.checked("POST", "/v1/records/contact", template: recordPath, json: ["fields": ["last_name": "X", "account": UUID().uuidString]]),
                422, field: "account", rule: "reference")
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "X", "size": "huge"]]),
                422, field: "size", rule: "choices")
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, json: ["fields": ["name": "X"], "extra": 1]),
                422, field: "extra", rule: "unknown-field")
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, body: "{not json"), 400)
        problem(try api.checked("POST", "/v1/records/account", template: recordPath, body: String(repeating: "x", count: 2 << 20)), 413)
        problem(try api.checked("GET", "/v1/records/account/not-a-uuid", template: onePath), 400, field: "id")
        problem(try api.checked("GET", "/v1/records/account/\(foreignID)", template: onePath), 404)
        problem(try api.checked("PATCH", "/v1/records/account/\(foreignID)", template: onePath, json: ["fields": ["name": "Mine now"]]), 404)
        problem(try api.checked("GET", "/v1/changes?limit=0", template: changesPath), 400, field: "limit")
        problem(try api.checked("GET", "/v1/changes?wait=999", template: changesPath), 400, field: "wait")
        problem(try api.request("GET", "/v1/nothing"), 404)
        // The other tenant's record is untouched, and devices sync as before.
        #expect((try globex.request("GET", "/v1/records/account/\(foreignID)").json["fields"] as? [String: Any])?["name"] as? String == "Globex")
        let device = try server.device()
        let id = try device.local { try $0.create("contact", ["last_name": .text("Still syncing")]).id }
        let report = try await device.sync()
        #expect(report.pushed == 1)
        #expect(try api.request("GET", "/v1/records/contact/\(id.uuidString)").status == 200)
    }
}
