import ArgumentParser
import CRM
import Foundation
import NIOHTTP1
import RapportClient
import RapportServer
import Registry
import ReplicaStore
import SyncModel
import TestSupport

/// The integration API of a `rapportd` child process against the sync path it sits beside:
/// N accounts created through `POST /v1/batch` next to the same accounts pushed by a device,
/// and the change feed of those N read page by page next to a device's initial sync of the
/// same tenant. The batches are sent by `curl`, a process per request as an ERP's script would
/// send them, so each pays its own TLS handshake. The feed is read as an ERP's integration
/// follows it: one keep-alive HTTPS connection (`HTTPSClient.Connection`) for page after page,
/// each page's JSON parsed once. Then webhook delivery latency after a device push
/// (`rapport-bench webhooks`).
struct APIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Benchmark the integration API (batch writes, change feed) against device push and initial sync; then webhooks.")

    @Option(help: "Accounts created through the API, and pushed by a device.")
    var records = 100_000

    @Option(help: "Items per batch (POST /v1/batch; at most 1000).")
    var batch = 1_000

    @Option(help: "Records per page of the change feed (at most 1000).")
    var page = 1_000

    @Option(help: "Edits timed by the webhook latency figures that follow (rapport-bench webhooks); 0 leaves them out.")
    var webhookRounds = 200

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard records > 0 else { throw ValidationError("--records must be positive") }
        guard (1...1000).contains(batch), (1...1000).contains(page) else { throw ValidationError("--batch and --page are 1 to 1000") }
        guard webhookRounds >= 0 else { throw ValidationError("--webhook-rounds must not be negative") }
    }

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "api")
        let rows = BenchRows(.crmAccount, count: records)
        let data = dir.path("server")
        // The API writes into one tenant; a device pushes the same rows into another.
        let devices = try ServerProcess.prepare(data: data, tenants: ["api", "push"], devicesPerTenant: 1, schema: CRMSchema.current)
        let key: String
        do {
            let registry = try DataDirectory(data).openRegistry()
            defer { registry.close() }
            key = try registry.createAPIKey(tenant: "api", name: "bench", role: .admin).secret
        }
        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data,
                                             arguments: ["--api", "127.0.0.1:0", "--api-rate", "1000000", "--rules-interval", "0"],
                                             bannerLine: "integration API at")
        defer { server.stop() }
        guard let apiPort = server.apiPort else { throw ValidationError("no integration API in rapportd's banner: \(server.banner)") }
        let api = APIClient(port: apiPort, caFile: data + "/tls/ca.pem", key: key)
        let note = "rapportd is a child process on 127.0.0.1; the API client is curl, one process and TLS handshake per request"
        let feedNote = "rapportd is a child process on 127.0.0.1; the feed is read on one keep-alive HTTPS connection, as an integration following it would, each page's JSON parsed once"

        // 1. The floor: a device pushing the rows, created in its store beforehand (not timed).
        let pusher = try benchDevice(devices["push"]![0], store: dir.path("pusher.sqlite"), port: server.port, data: data)
        try await pusher.sync()
        // Without the tier and lifecycle stage, which the tenant's rules compute and refuse from a client.
        let values = { (row: BenchRows.Row) -> [String: FieldValue] in rows.values(row).filter { $0.key != "tier" && $0.key != "lifecycle_stage" } }
        try pusher.store.performSync { store in
            try store.transaction { for row in rows.rows { try store.create(rows.shape.type, id: row.id, values(row)) } }
        }
        let pushStart = ContinuousClock.now
        let pushed = try await pusher.sync()
        let pushSeconds = seconds(ContinuousClock.now - pushStart)
        guard pushed.pushed == records else {
            let reason = try pusher.store.performSync { try $0.conflicts().first?.reason }
            throw ValidationError("the device pushed \(pushed.pushed) of \(records) records, \(pushed.rejected) refused: \(reason ?? "")")
        }
        report.figure("floor_device_push", pushSeconds, records: records, floor: nil, target: nil)

        // 2. The same rows through the API, in batches; the bodies are made beforehand, as an
        //    ERP's export would have them.
        let bodies = try stride(from: 0, to: records, by: batch).map { start in
            let items = rows.rows[start..<min(start + batch, records)].map { row -> [String: Any] in
                ["type": rows.shape.type, "id": row.id.uuidString, "fields": values(row).mapValues(Self.json)]
            }
            return String(decoding: try JSONSerialization.data(withJSONObject: ["items": items]), as: UTF8.self)
        }
        let serverCPU = server.cpuSeconds()
        let writeStart = ContinuousClock.now
        for (number, body) in bodies.enumerated() {
            let reply = try api.request("POST", "/v1/batch", body: body, timeout: 600)
            guard reply.status == 200 else { throw ValidationError("batch \(number) answered \(reply)") }
        }
        let writeSeconds = seconds(ContinuousClock.now - writeStart)
        report.line("api_batch_create", [
            "records": records, "batch": batch, "seconds": writeSeconds, "records_per_second": Double(records) / writeSeconds,
            "server_cpu_seconds": server.cpuSeconds() - serverCPU,
            "floor_seconds": pushSeconds, "ratio_to_floor": writeSeconds / pushSeconds, "target_ratio": 3,
            "floor": "the same records pushed by a device in one sync (floor_device_push)", "note": note,
        ])

        // 3. A device's initial sync of the tenant the API wrote, then the change feed of it.
        let reader = try benchDevice(devices["api"]![0], store: dir.path("reader.sqlite"), port: server.port, data: data)
        let syncStart = ContinuousClock.now
        let initial = try await reader.sync()
        let syncSeconds = seconds(ContinuousClock.now - syncStart)
        guard initial.pulled == records else { throw ValidationError("the device pulled \(initial.pulled) of \(records) records") }
        report.figure("floor_device_initial_sync", syncSeconds, records: records, floor: nil, target: nil)

        var client = try HTTPSClient(origin: URL(string: "https://127.0.0.1:\(apiPort)")!,
                                     trustRoots: .certificates(.file(data + "/tls/ca.pem")))
        client.maxResponseBytes = 256 << 20
        let feedStart = ContinuousClock.now
        let connection = try await client.connect(timeout: .seconds(60))
        defer { connection.close() }
        var cursor = 0, read = 0, pages = 0
        while true {
            let reply = try await connection.send(.GET, path: "/v1/changes?after=\(cursor)&limit=\(page)",
                                                  headers: [("Authorization", "Bearer \(key)")], timeout: .seconds(600))
            let json = (try? JSONSerialization.jsonObject(with: Data(reply.body))) as? [String: Any] ?? [:]
            guard reply.status == 200, let changes = json["changes"] as? [Any], let next = json["next"] as? Int, next >= cursor else {
                throw ValidationError("the change feed after \(cursor) answered \(reply.status) \(String(decoding: reply.body.prefix(600), as: UTF8.self))")
            }
            read += changes.count
            pages += 1
            cursor = next
            if json["more"] as? Bool != true { break }
        }
        let feedSeconds = seconds(ContinuousClock.now - feedStart)
        guard read == records else { throw ValidationError("the change feed gave \(read) of \(records) records") }
        report.line("api_change_feed", [
            "records": records, "page": page, "pages": pages, "seconds": feedSeconds, "records_per_second": Double(records) / feedSeconds,
            "floor_seconds": syncSeconds, "ratio_to_floor": feedSeconds / syncSeconds, "target_ratio": 2,
            "floor": "a device's initial sync of the same tenant (floor_device_initial_sync)", "note": feedNote,
        ])
        await server.stop()

        // 4. Webhook delivery latency after a device push: the webhooks bench, run here.
        guard webhookRounds > 0 else {
            report.line("webhook_latency_after_push", ["note": "left out (--webhook-rounds 0); rapport-bench webhooks measures it"])
            return
        }
        var webhooks = try WebhookBench.parse(["--rounds", "\(webhookRounds)"] + (rapportd.map { ["--rapportd", $0] } ?? []))
        try await webhooks.run()
    }

    /// A field value as the API's JSON carries it.
    static func json(_ value: FieldValue) -> Any {
        switch value {
        case .null: NSNull()
        case .bool(let flag): flag
        case .integer(let number): number
        case .real(let number): number
        case .text(let text): text
        case .blob(let bytes): bytes.base64EncodedString()
        }
    }
}
