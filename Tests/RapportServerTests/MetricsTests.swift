import CRM
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import Synchronization
import SyncProtocol
import TestScheduling
import TestSupport
import Testing
import TLS

/// `rapportd --metrics`: a `rapportd` process scraped over HTTP after a known sequence of
/// sessions, every count read from the parsed Prometheus text.
@Suite(.serialized, .ownThread) struct MetricsTests {
    @Test func aScrapeAfterAKnownSequenceOfSessionsShowsTheRightCounts() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data")
        let credentials = try ServerProcess.prepare(data: data, tenants: ["acme", "globex"], devicesPerTenant: 3, schema: CRMSchema.current)
        // One open store at most: the second tenant's session evicts the first's store.
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data, arguments: [
            "--metrics", "127.0.0.1:0", "--max-open-tenants", "1", "--no-dev-tenant", "--rules-interval", "0",
        ], logFile: dir.path("rapportd.log"))
        defer { server.stop() }
        let metrics = try MetricsClient(banner: server.banner)
        let ca = data + "/tls/ca.pem"

        // Before any session: every counter is there, at zero; the server is healthy.
        let empty = try await metrics.scrape()
        #expect(empty["rapport_sessions_started_total"] == 0)
        #expect(empty["rapport_pushed_records_total", ["outcome": "rejected"]] == 0)
        #expect(empty["rapport_tls_handshake_failures_total", ["reason": "not_tls"]] == 0)
        #expect(empty.has("rapport_upstream_connected") == false, "a centre has no link")
        let health = try await metrics.get("/health")
        #expect(health.status == 200, "\(health.body)")
        let healthJSON = try #require(try JSONSerialization.jsonObject(with: Data(health.body.utf8)) as? [String: Any])
        #expect(healthJSON["status"] as? String == "ok")

        func device(_ tenant: String, _ index: Int, schema: Schema = CRMSchema.current,
                    options: ReplicaStore.Options? = nil) throws -> RapportClient {
            let credential = try #require(credentials[tenant]?[index])
            var storeOptions = options ?? .crm()
            storeOptions.replicaID = try credential.replicaID
            let store = try ReplicaStore(path: dir.path("\(tenant)-\(index).sqlite"), options: storeOptions)
            var config = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: tenant, secret: credential.secret,
                                             trustRoots: .certificates(.file(ca)), schemaVersion: CRMSchema.version)
            config.retry = RetryPolicy(maxAttempts: 1, initialDelay: .milliseconds(20), maxDelay: .milliseconds(20))
            return try RapportClient(store: SharedReplicaStore(store, label: "\(tenant)-\(index)"), configuration: config,
                                     logger: ServerFixture.logger("test.\(tenant)-\(index)"))
        }

        // 1. ana pushes three contacts (one push batch, three applied) and pulls.
        let ana = try device("acme", 0), ben = try device("acme", 1)
        let contacts = try ana.local { store in
            try (1...3).map { try store.create("contact", ["first_name": .text("C\($0)"), "last_name": .text("Doe")]).id }
        }
        #expect(try await ana.sync().pushed == 3)
        // 2. ben has nothing to push: a pull only.
        #expect(try await ben.sync().pulled == 3)
        // 3, 4. Both change one field of one contact; ben's later write wins, merged with one conflict.
        _ = try ana.local { try $0.update(contacts[0], ["last_name": .text("Ana's")]) }
        try await Task.sleep(for: .milliseconds(5))
        _ = try ben.local { try $0.update(contacts[0], ["last_name": .text("Ben's")]) }
        try await ana.sync()
        let merged = try await ben.sync()
        #expect(merged.conflicts == 1)
        // 5. A device whose schema knows a type the server does not: one record applied, one refused.
        let lenient = Schema([RecordType(name: "contact", fields: ["last_name": .text]), RecordType(name: "ticket", fields: ["title": .text])])
        let old = try device("acme", 2, options: .init(schema: lenient))
        try old.local { store in
            _ = try store.create("contact", ["last_name": .text("Old")])
            _ = try store.create("ticket", ["title": .text("help")])
        }
        let refused = try await old.sync()
        #expect(refused.pushed == 1 && refused.rejected == 1)
        // 6. Another tenant: its store opens, acme's (unused) is evicted.
        let gus = try device("globex", 0)
        _ = try gus.local { try $0.create("contact", ["last_name": .text("Globex")]) }
        #expect(try await gus.sync().pushed == 1)
        // A wrong secret: refused at Hello.
        var intruderConfig = ClientConfiguration(host: "127.0.0.1", port: server.port, tenant: "acme",
                                                 secret: Array(repeating: 7, count: 32), trustRoots: .certificates(.file(ca)),
                                                 schemaVersion: CRMSchema.version)
        intruderConfig.credentialID = try #require(credentials["acme"]?[1].deviceID)
        intruderConfig.retry = RetryPolicy(maxAttempts: 1, initialDelay: .milliseconds(20), maxDelay: .milliseconds(20))
        let intruderStore = try ReplicaStore(path: dir.path("intruder.sqlite"), options: .crm(replicaID: try ReplicaID("intruder")))

        let intruder = try RapportClient(store: SharedReplicaStore(intruderStore, label: "intruder"), configuration: intruderConfig,
                                         logger: ServerFixture.logger("test.intruder"))
        let refusal = try await #require(throws: SyncError.self) { try await intruder.sync() }
        #expect(refusal.code == .authenticationFailed)
        // Plain HTTP at the sync port: a failed TLS handshake.
        let plain = try await RawConnection.connect(port: server.port, caPath: ca, tls: false)
        try await plain.send(bytes: Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        _ = try await plain.waitForClose()

        // The session notes a failed handshake once its connection is gone, after the gauge of
        // open connections dropped: on a loaded machine a scrape fell between the two.
        let scraped = try await metrics.scrapeWhen {
            $0.sum("rapport_connections_open") == 0 && $0.sum("rapport_tls_handshake_failures_total") > 0
        }
        let expected: [(String, [String: String], Double)] = [
            // Six syncs, a refused Hello, a plain-HTTP connection.
            ("rapport_connections_total", ["result": "admitted"], 8),
            ("rapport_connections_total", ["result": "busy"], 0),
            ("rapport_connections_total", ["result": "dropped"], 0),
            ("rapport_sessions_started_total", [:], 6),
            ("rapport_sessions_refused_total", ["code": "AUTHENTICATION_FAILED"], 1),
            ("rapport_enrollments_total", [:], 0),
            // ana (twice), ben (his edit), the old device, gus; ben's first sync pushed nothing.
            ("rapport_pushes_total", [:], 5),
            ("rapport_pulls_total", [:], 6),
            ("rapport_pushed_records_total", ["outcome": "applied"], 6),
            ("rapport_pushed_records_total", ["outcome": "merged"], 1),
            ("rapport_pushed_records_total", ["outcome": "unchanged"], 0),
            ("rapport_pushed_records_total", ["outcome": "rejected"], 1),
            ("rapport_conflicts_total", [:], 1),
            ("rapport_push_duration_seconds_count", [:], 5),
            ("rapport_pull_duration_seconds_count", [:], 6),
            ("rapport_tls_handshake_failures_total", ["reason": "not_tls"], 1),
            ("rapport_tenant_store_opens_total", [:], 2),
            ("rapport_tenant_store_evictions_total", [:], 1),
            ("rapport_tenant_stores_open", [:], 1),
            ("rapport_protocol_violations_total", [:], 0),
            ("rapport_timeouts_total", ["phase": "handshake"], 0),
            ("rapport_connections_open", ["state": "session"], 0),
        ]
        for (name, labels, value) in expected {
            #expect(scraped[name, labels] == value, "\(name)\(labels): \(scraped[name, labels].map { "\($0)" } ?? "absent")")
        }
        #expect(scraped.sum("rapport_tls_handshake_failures_total") == 1, "only the plain-HTTP connection failed TLS")
        #expect(scraped.sum("rapport_sessions_refused_total") == 1)
        // A pull sends each record changed after the device's checkpoint once, its own included:
        // ana 3, ben 3, ana the edited contact, ben the same, the old device acme's 4 contacts, gus 1.
        #expect(scraped["rapport_pulled_records_total"] == 13, "\(scraped["rapport_pulled_records_total"] ?? -1)")
        #expect(scraped["rapport_push_duration_seconds_bucket", ["le": "+Inf"]] == 5)

        // Anything but GET /metrics and GET /health is refused.
        #expect(try await metrics.get("/nothing").status == 404)
        #expect(try await metrics.get("/metrics", method: "POST").status == 405)
        #expect(try await metrics.get("/health?probe=lb").status == 200)
    }

    /// Two servers in one process count apart, and `/health` says 503 once shutdown begins
    /// (the endpoint outlives the server in rapportd's service group).
    @Test func eachServerCountsApartAndHealthTurnsUnavailableOnShutdown() async throws {
        let busy = try await ServerFixture(), quiet = try await ServerFixture()
        let endpoint = MetricsEndpoint(serving: busy.server, host: "127.0.0.1", port: 0, logger: ServerFixture.logger("test.metrics"))
        let port = try await endpoint.start()
        let metrics = MetricsClient(base: "http://127.0.0.1:\(port)")
        let device = try busy.device("alice")
        _ = try device.local { try $0.create("contact", ["last_name": .text("Ada")]) }
        try await device.sync()
        #expect(try await metrics.scrape()["rapport_sessions_started_total"] == 1)
        #expect(try Exposition(quiet.server.configuration.metrics.exposition())["rapport_sessions_started_total"] == 0)
        #expect(try await metrics.get("/health").status == 200)

        await busy.stop()
        let health = try await metrics.get("/health")
        #expect(health.status == 503)
        let body = try #require(try JSONSerialization.jsonObject(with: Data(health.body.utf8)) as? [String: Any])
        #expect(body["status"] as? String == "unavailable" && body["reason"] as? String == "shutting down", "\(health.body)")
        #expect(try await metrics.scrape()["rapport_pushes_total"] == 1, "the last figures stay readable while draining")
        await endpoint.stopListening()
        await quiet.stop()
    }

    /// A registry that cannot be re-read makes the server unhealthy (503 with the reason) until
    /// a re-read succeeds again.
    @Test func anUnreadableRegistryMakesTheServerUnhealthyUntilItReadsAgain() async throws {
        let dir = try TemporaryDirectory()
        var config = SyncServer.Configuration(dataDirectory: dir.path("server"), port: 0, schema: CRMSchema.current,
                                              schemaVersion: CRMSchema.version)
        config.storeOptions = .crm(role: .authority)
        config.accessCheckInterval = .milliseconds(20)
        config.shutdownGracePeriod = .seconds(2)
        config.limits = .forTests
        let registry = UnreliableRegistry()
        let server = try SyncServer(configuration: config, authenticator: registry, logger: ServerFixture.logger("test.rapportd"))
        #expect(server.health.reason == "not listening")
        try await server.start()
        let endpoint = MetricsEndpoint(serving: server, host: "127.0.0.1", port: 0, logger: ServerFixture.logger("test.metrics"))
        let metrics = MetricsClient(base: "http://127.0.0.1:\(try await endpoint.start())")
        #expect(try await metrics.get("/health").status == 200)

        registry.failing.withLock { $0 = true }
        let unhealthy = try await waitFor("/health to answer 503") { server.health.isHealthy ? nil : server.health }
        #expect(unhealthy.reason?.hasPrefix("registry unreadable: ") == true, "\(unhealthy.json)")
        let answer = try await metrics.get("/health")
        #expect(answer.status == 503 && answer.body.contains("registry unreadable"), "\(answer.body)")

        registry.failing.withLock { $0 = false }
        try await waitFor("/health to answer 200 again") { server.health.isHealthy ? true : nil }
        #expect(try await metrics.get("/health").status == 200)
        await server.shutdown()
        await endpoint.stopListening()
    }
}

/// An authenticator whose registry re-read fails while `failing` is set.
final class UnreliableRegistry: Authenticator {
    let failing = Mutex(false)
    private let secrets = StaticAuthenticator(secrets: ["acme": ServerFixture.secret])

    func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws -> SessionIdentity {
        try secrets.authenticate(tenant: tenant, device: device, secret: secret)
    }

    func refresh() throws -> Bool {
        if failing.withLock({ $0 }) { throw BenchError("registry.sqlite: disk I/O error") }
        return false
    }

    var createsTenantStores: Bool { true }
}

/// The parsed Prometheus text exposition: each sample by metric name and label set.
struct Exposition {
    private(set) var samples: [String: [[String: String]: Double]] = [:]

    /// Parses `name{label="value",...} value` lines; `#` lines are comments (HELP, TYPE).
    init(_ text: String) throws {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw BenchError("not a sample line: \(line)")
            }
            let series = line[..<space]
            var labels: [String: String] = [:]
            let name: Substring
            if let brace = series.firstIndex(of: "{") {
                name = series[..<brace]
                guard series.hasSuffix("}") else { throw BenchError("unterminated labels: \(line)") }
                var rest = series[series.index(after: brace)..<series.index(before: series.endIndex)]
                while !rest.isEmpty {
                    guard let equals = rest.firstIndex(of: "="), rest[rest.index(after: equals)] == "\"" else {
                        throw BenchError("bad label in: \(line)")
                    }
                    let key = String(rest[..<equals])
                    var index = rest.index(equals, offsetBy: 2)
                    var text = ""
                    while index < rest.endIndex, rest[index] != "\"" {
                        if rest[index] == "\\" { index = rest.index(after: index) }
                        text.append(rest[index])
                        index = rest.index(after: index)
                    }
                    guard index < rest.endIndex else { throw BenchError("unterminated label value in: \(line)") }
                    labels[key] = text
                    rest = rest[rest.index(after: index)...]
                    if rest.first == "," { rest = rest.dropFirst() }
                }
            } else {
                name = series
            }
            samples[String(name), default: [:]][labels] = value
        }
    }

    subscript(_ name: String, _ labels: [String: String] = [:]) -> Double? { samples[name]?[labels] }

    func has(_ name: String) -> Bool { samples[name] != nil }

    /// Every sample of `name`, whatever its labels.
    func sum(_ name: String) -> Double { samples[name]?.values.reduce(0, +) ?? 0 }
}

/// HTTP to a `rapportd --metrics` endpoint, found in the server's banner.
struct MetricsClient {
    let base: String

    init(base: String) {
        self.base = base
    }

    init(banner: String) throws {
        guard let line = banner.split(separator: "\n").first(where: { $0.hasPrefix("metrics at http://") }),
              let url = line.split(separator: " ").dropFirst(2).first, url.hasSuffix("/metrics") else {
            throw BenchError("no metrics address in the banner: \(banner)")
        }
        base = String(url.dropLast("/metrics".count))
    }

    func get(_ path: String, method: String = "GET") async throws -> (status: Int, body: String) {
        var request = URLRequest(url: try #require(URL(string: base + path)))
        request.httpMethod = method
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = try #require(response as? HTTPURLResponse).statusCode
        return (status, String(decoding: data, as: UTF8.self))
    }

    func scrape() async throws -> Exposition {
        let (status, body) = try await get("/metrics")
        guard status == 200 else { throw BenchError("GET /metrics answered \(status): \(body)") }
        return try Exposition(body)
    }

    /// Scrapes until `condition` holds (connections close a moment after the client's end),
    /// for at most 30 s: a bound against hanging, not a timing expectation.
    func scrapeWhen(_ condition: (Exposition) -> Bool) async throws -> Exposition {
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while true {
            let exposition = try await scrape()
            if condition(exposition) || ContinuousClock.now > deadline { return exposition }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
