import ArgumentParser
import CRM
import Foundation
import Logging
import Postgres
import PrivateFiles
import RapportAPI
import RapportServer
import Registry
import ReplicaStore
import ServiceLifecycle
import TLS

/// The Rapport server: serves sync sessions over TLS for every tenant in a data directory.
@main
struct Rapportd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapportd",
        abstract: "Serve Rapport sync sessions over TLS.",
        discussion: """
            With no arguments it serves ./rapport-data on 127.0.0.1:7443 with a development \
            certificate and, when the data directory has no tenant yet, a development tenant \
            'dev' whose enrollment code is written to DATA/dev-enrollment-code. Tenants, users \
            and devices are managed with rapportctl on the same data directory, while the \
            server runs. The code is printed only when standard output is a terminal, and never \
            logged.

            Everything in the data directory is owner-only (folders 0700, files 0600); at start, \
            anything there that group or others can read is made owner-only, with a warning.
            """)

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 7443

    @Option(name: .customLong("data"), help: "Data directory: tenant stores, credentials, dev certificate.")
    var dataDirectory = "rapport-data"

    @Option(name: .customLong("store"), help: ArgumentHelp("Keep the registry and every tenant's store in this PostgreSQL database (postgres://user@host:port/db) instead of the data directory's SQLite files. Several rapportd nodes (and rapportctl --store) naming one database serve any of its tenants; the data directory keeps each node's TLS files.", valueName: "url"))
    var store: String?

    @Option(name: .customLong("cert"), help: "PEM certificate chain (leaf first). Without it a dev certificate is used.")
    var certificateChain: String?

    @Option(name: .customLong("key"), help: "PEM private key of --cert.")
    var privateKey: String?

    @Option(help: "Tenant stores kept open while unused; least recently used are closed beyond it.")
    var maxOpenTenants = 256

    @Option(help: ArgumentHelp("Open connections at most (sessions, connections not logged in yet, busy answers); more are closed at once. By default 16384, or what the open-file limit leaves after 3 per --max-open-tenants and 64; a value the limit cannot hold is refused.", valueName: "n"))
    var maxConnections: Int?

    @Option(name: .customLong("max-prelogin"), help: "Connections that have not logged in yet, in all; more are answered SERVER_BUSY.")
    var maxPreLogin = 1024

    @Option(name: .customLong("max-prelogin-per-address"), help: "Connections not logged in yet from one IP address; more are answered SERVER_BUSY.")
    var maxPreLoginPerAddress = 64

    @Option(help: "Seconds a connection has for its TLS handshake and Hello.")
    var handshakeTimeout: Double = 10

    @Option(help: "Seconds a logged-in session may stay silent before it is closed (devices ping every 20 s by default; Welcome tells them this limit).")
    var idleTimeout: Double = 60

    @Option(help: "Seconds between the server's checks for revoked devices, suspended users and tenants (their sessions end), registry changes and commits other processes made to open stores (announced to live devices; with --store, other nodes' commits are announced at once anyway).")
    var accessCheckInterval: Double = 1

    @Option(help: "Seconds between runs of the rule pass over every active tenant (tiers, churn and renewal flags, value segments, SLA breaches, escalations); 0 disables it.")
    var rulesInterval: Double = 300

    @Option(help: "Seconds between housekeeping runs over every active tenant: tombstones and closed conflicts past the tenant's horizons purged ('rapportctl retention set'), stores and registry compacted; 0 disables it.")
    var housekeepingInterval: Double = 3600

    @Option(help: "Seconds a webhook receiver has to answer one delivery ('rapportctl webhook create') before it counts as failed.")
    var webhookTimeout: Double = 10

    @Option(help: "Seconds before the first retry of a failed webhook delivery; each next retry waits twice as long (at most 300 s), plus up to half again at random.")
    var webhookRetry: Double = 1

    @Option(help: "Failed webhook deliveries in a row after which the subscription is disabled (with the reason in 'rapportctl webhook show') ...")
    var webhookDisableAfter: Int = 10

    @Option(help: "... provided they span at least this many seconds (so a short outage of the receiver never disables it).")
    var webhookDisablePeriod: Double = 3600

    @Flag(help: "Deliver no webhooks (a branch office never does: its centre does).")
    var noWebhooks = false

    @Flag(help: "Do not make the development tenant 'dev' in an empty data directory.")
    var noDevTenant = false

    @Option(help: ArgumentHelp("Run as a branch office: replicate the credential's tenant from the centre at HOST:PORT, serving local devices whether or not the centre is reachable.", valueName: "host:port"))
    var upstream: String?

    @Option(help: ArgumentHelp("PEM CA certificate(s) the centre's certificate must chain to.", valueName: "file"))
    var upstreamCa: String?

    @Option(help: ArgumentHelp("The branch credential from 'rapportctl branch enroll' at the centre (default: DATA/branch-credential.json, where the first start keeps a copy).", valueName: "file"))
    var upstreamCredential: String?

    @Option(help: ArgumentHelp("The name the centre's certificate carries, when not the host of --upstream.", valueName: "name"))
    var upstreamServerName: String?

    @Option(help: ArgumentHelp("Serve Prometheus metrics (GET /metrics) and a health check for load balancers (GET /health: 200, or 503 with the reason) over plain HTTP at HOST:PORT; off unless given. Bind it to loopback or a management network.", valueName: "host:port"))
    var metrics: String?

    @Option(help: ArgumentHelp("Serve the HTTP/JSON integration API (Protocol/openapi.json) over HTTPS with the sync certificate at HOST:PORT, for API keys made with 'rapportctl apikey create'; 'off' serves none. Off unless given, except in the development setup (no --cert, a loopback --host): then on the sync port plus one (a free port with --port 0).", valueName: "host:port"))
    var api: String?

    @Option(help: ArgumentHelp("Requests a second each API key may make on average (bursts of twice as many); more are answered 429 with Retry-After.", valueName: "n"))
    var apiRate: Double = 50

    @Option(help: ArgumentHelp("How long the integration API keeps the response of a write sent with an Idempotency-Key, for its retries (a duration: 24h, 7d, 90m); housekeeping removes older ones.", valueName: "duration"))
    var idempotencyHorizon: String = "24h"

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (certificateChain == nil) == (privateKey == nil) else {
            throw ValidationError("--cert and --key go together")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
        guard maxOpenTenants > 0 else { throw ValidationError("--max-open-tenants must be at least 1") }
        for (name, value) in [("--max-connections", maxConnections ?? 1), ("--max-prelogin", maxPreLogin),
                              ("--max-prelogin-per-address", maxPreLoginPerAddress)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        if let metrics {
            guard let (_, metricsPort) = Self.hostAndPort(metrics) else { throw ValidationError("--metrics takes HOST:PORT") }
            if metricsPort != 0 && metricsPort == port { throw ValidationError("--metrics needs a port of its own, not the sync port \(port)") }
        }
        if let api, api != "off" {
            guard let (_, apiPort) = Self.hostAndPort(api) else { throw ValidationError("--api takes HOST:PORT or off") }
            if apiPort != 0 && apiPort == port { throw ValidationError("--api needs a port of its own, not the sync port \(port)") }
        }
        do { _ = try RetentionPolicy.duration(idempotencyHorizon) } catch { throw ValidationError("--idempotency-horizon: \(error)") }
        guard apiRate > 0, apiRate.isFinite else { throw ValidationError("--api-rate must be a positive number of requests a second") }
        guard handshakeTimeout > 0 else { throw ValidationError("--handshake-timeout must be positive") }
        guard accessCheckInterval > 0, accessCheckInterval.isFinite else { throw ValidationError("--access-check-interval must be a positive number of seconds") }
        guard idleTimeout > 0, idleTimeout.isFinite else { throw ValidationError("--idle-timeout must be a positive number of seconds") }
        guard webhookTimeout > 0, webhookTimeout.isFinite, webhookRetry > 0, webhookRetry.isFinite else {
            throw ValidationError("--webhook-timeout and --webhook-retry must be positive numbers of seconds")
        }
        guard webhookDisableAfter >= 1, webhookDisablePeriod >= 0, webhookDisablePeriod.isFinite else {
            throw ValidationError("--webhook-disable-after must be at least 1 and --webhook-disable-period at least 0")
        }
        guard rulesInterval >= 0, rulesInterval.isFinite else { throw ValidationError("--rules-interval must be 0 (off) or a number of seconds") }
        guard housekeepingInterval >= 0, housekeepingInterval.isFinite else { throw ValidationError("--housekeeping-interval must be 0 (off) or a number of seconds") }
        if let store, !PostgresConnection.isURL(store) {
            throw ValidationError("--store takes a PostgreSQL URL (postgres://user@host:port/database)")
        }
        if store != nil && upstream != nil {
            throw ValidationError("--store and --upstream do not go together: a branch office keeps its replica in its data directory")
        }
        if upstream != nil {
            guard upstreamAddress != nil else { throw ValidationError("--upstream takes HOST:PORT") }
            guard upstreamCa != nil else { throw ValidationError("--upstream needs --upstream-ca, the CA of the centre's certificate") }
        } else if upstreamCa != nil || upstreamCredential != nil || upstreamServerName != nil {
            throw ValidationError("--upstream-ca, --upstream-credential and --upstream-server-name go with --upstream")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "rapportd")
        let data = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        var config = SyncServer.Configuration(dataDirectory: data, host: host, port: port,
                                              schema: CRMSchema.current, schemaVersion: CRMSchema.version)
        config.storeOptions = .crm(role: .authority)
        config.storeDatabase = store
        config.access = .init(ownership: CRMAccess.ownership, defaultRoles: CRMAccess.defaultRoles)
        config.certificateChainPath = certificateChain
        config.privateKeyPath = privateKey
        config.maxOpenTenants = maxOpenTenants
        config.maxPreLoginConnections = maxPreLogin
        config.maxPreLoginPerAddress = maxPreLoginPerAddress
        config.limits.handshakeTimeout = .milliseconds(Int64(handshakeTimeout * 1000))
        config.limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        config.accessCheckInterval = .milliseconds(Int64(accessCheckInterval * 1000))
        // A branch leaves the scheduled pass to the centre: the same rules run there on the
        // whole tenant, and a branch would write the same values again under its own id.
        if rulesInterval > 0 && upstream == nil { config.scheduledWork = Self.rulePass(every: .milliseconds(Int64(rulesInterval * 1000))) }
        if !noWebhooks && upstream == nil {
            var webhooks = WebhookOptions()
            webhooks.requestTimeout = .milliseconds(Int64(webhookTimeout * 1000))
            webhooks.initialBackoff = .milliseconds(Int64(webhookRetry * 1000))
            webhooks.failuresToDisable = webhookDisableAfter
            webhooks.failingPeriodToDisable = .milliseconds(Int64(webhookDisablePeriod * 1000))
            config.webhooks = webhooks
        }
        if housekeepingInterval > 0 {
            config.housekeeping = .housekeeping(every: .milliseconds(Int64(housekeepingInterval * 1000)),
                                                // A registry in PostgreSQL is the database's to keep compact.
                                                registryPath: store == nil ? DataDirectory(data).registryPath : nil,
                                                idempotencyHorizon: try RetentionPolicy.duration(idempotencyHorizon))
        }
        if let (host, port) = upstreamAddress, let ca = upstreamCa {
            let credential = try Self.branchCredential(upstreamCredential, data: data)
            config.upstream = UpstreamConfiguration(host: host, port: port, trustRoots: .certificates(.file(ca)),
                                                    serverName: upstreamServerName, credential: credential)
        }
        // Out of descriptors a server stops accepting and cannot open a tenant's store: a cap
        // the limit cannot hold is refused, not discovered under load.
        let descriptors = DescriptorBudget.raisingLimit(maxOpenTenants: maxOpenTenants)
        if let maxConnections, let problem = descriptors.problem(maxConnections: maxConnections) {
            throw ValidationError(problem)
        }
        config.maxConnections = maxConnections ?? descriptors.defaultMaxConnections
        guard config.maxConnections > 0 else {
            throw ValidationError("no connection fits the open-file limit: \(descriptors); raise it or lower --max-open-tenants")
        }
        logger.info("file descriptors", metadata: [
            "limit": "\(descriptors.limit)", "hard_limit": "\(descriptors.hardLimit)",
            "max_connections": "\(config.maxConnections)", "for_stores": "\(descriptors.forStores)"])
        let directory = config.data
        // A branch's tenants come from its centre; it makes no development tenant.
        let ticket = noDevTenant || upstream != nil ? nil : try directory.bootstrapDevelopmentTenant(schema: CRMSchema.current)
        let server = try SyncServer(configuration: config, logger: logger)
        let boundPort = try await server.start()
        let endpoint = metrics.flatMap(Self.hostAndPort).map { MetricsEndpoint(serving: server, host: $0.0, port: $0.1, logger: logger) }
        let metricsPort = try await endpoint?.start()
        let integration = try apiAddress(boundPort: boundPort).map { address in
            var apiConfig = IntegrationAPIServer.Configuration(host: address.0, port: address.1)
            apiConfig.rate = apiRate
            apiConfig.burst = apiRate * 2
            return try IntegrationAPIServer(server: server, configuration: apiConfig, logger: logger)
        }
        let apiPort = try await integration?.start()

        // The first line ends with the port, which scripts and tests read.
        let serving = store.map { "the PostgreSQL store \(PostgresConnection.redactedURL($0)) (node files in \(data))" } ?? data
        var banner = "rapportd serving \(serving) on \(host):\(boundPort)\n"
        banner += "connections: at most \(config.maxConnections); \(descriptors)\n"
        if let branch = config.upstream {
            banner += "branch '\(branch.credential.name)' of tenant '\(branch.credential.tenant)' at \(branch.host):\(branch.port)\n"
        }
        if let (metricsHost, _) = metrics.flatMap(Self.hostAndPort), let metricsPort {
            banner += "metrics at http://\(metricsHost.contains(":") ? "[\(metricsHost)]" : metricsHost):\(metricsPort)/metrics and /health\n"
        }
        if let integration, let apiPort {
            let host = integration.configuration.host
            banner += "integration API at https://\(host.contains(":") ? "[\(host)]" : host):\(apiPort)/v1 (keys: rapportctl apikey create)\n"
        }
        if let ca = server.devCertificateAuthorityPath {
            banner += "development CA for clients: \(ca)\n"
        }
        if let ticket {
            // The code is a credential: shown to a person at a terminal, never to a log. When
            // stdout is a pipe or a file (a supervisor, a log collector) only its file is named.
            let code = isatty(STDOUT_FILENO) == 1 ? ticket.code : "\"$(cat \(directory.developmentCodePath))\""
            banner += "development tenant 'dev' created; enroll a device (code valid until \(ticket.expiresAt.formatted(.iso8601))):\n"
            banner += "  rapport init --server \(host):\(boundPort) --tenant dev --enroll \(code)"
            banner += server.devCertificateAuthorityPath.map { " --ca \($0)" } ?? ""
            banner += "\nmore codes: rapportctl --data \(data) device enroll --tenant dev --user dev@example.com\n"
        }
        // Unbuffered, so a supervisor or script reading stdout sees the port at once.
        FileHandle.standardOutput.write(Data(banner.utf8))
        // SIGTERM or SIGINT shuts the services down in reverse order: a branch's link first,
        // after the batch in hand (each commits with its checkpoint), then the server.
        // The metrics endpoint stops last, so /health answers 503 while the server drains.
        let services: [any Service] = (endpoint.map { [$0] } ?? []) + [server] + (integration.map { [$0] } ?? [])
            + (server.upstreamService.map { [$0] } ?? [])
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }

    /// Where the integration API listens: `--api`, or in the development setup (the dev
    /// certificate on a loopback address, a centre with its dev tenant) the sync port plus one.
    func apiAddress(boundPort: Int) -> (String, Int)? {
        if let api { return api == "off" ? nil : Self.hostAndPort(api) }
        let loopback = host == "127.0.0.1" || host == "::1" || host == "localhost"
        guard certificateChain == nil, loopback, !noDevTenant, upstream == nil else { return nil }
        return (host, port == 0 ? 0 : boundPort + 1)
    }

    /// `--upstream` as host and port.
    var upstreamAddress: (String, Int)? {
        upstream.flatMap(Self.hostAndPort).flatMap { $0.1 > 0 ? $0 : nil }
    }

    /// `HOST:PORT` (`[::1]:PORT` for an IPv6 address) as host and port; port 0 picks a free one.
    static func hostAndPort(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (0...65535).contains(port), colon > address.startIndex else { return nil }
        var host = address[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return host.isEmpty ? nil : (String(host), port)
    }

    /// The branch credential: read from `path` and kept in the data directory (owner-only), so
    /// that later starts need only `--upstream`; or the kept copy when no path is given.
    static func branchCredential(_ path: String?, data: String) throws -> BranchCredential {
        let kept = data + "/branch-credential.json"
        let source = path ?? kept
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: source))
        } catch {
            throw ValidationError(path == nil ? "no branch credential: give --upstream-credential FILE (from 'rapportctl branch enroll' at the centre)"
                                              : "cannot read the branch credential \(source): \(error.localizedDescription)")
        }
        let credential: BranchCredential
        do {
            credential = try JSONDecoder().decode(BranchCredential.self, from: bytes)
        } catch {
            throw ValidationError("\(source) is not a branch credential: \(error)")
        }
        if let existing = try? Data(contentsOf: URL(fileURLWithPath: kept)),
           let previous = try? JSONDecoder().decode(BranchCredential.self, from: existing), previous.tenant != credential.tenant {
            throw ValidationError("this data directory is a branch of tenant '\(previous.tenant)'; the credential is for '\(credential.tenant)'")
        }
        if path != nil {
            try PrivateFiles.createDirectory(data)
            try PrivateFiles.write(Array(bytes), to: kept)
        }
        return credential
    }

    /// The CRM's scheduled rule pass as the server's work on every tenant: escalations go to
    /// the case owner's manager in the registry's directory.
    static func rulePass(every interval: Duration) -> ScheduledTenantWork {
        ScheduledTenantWork(name: "rules pass", interval: interval) { context, store in
            let directory = context.users.map { CRMScheduledPass.DirectoryUser(email: $0.email, role: $0.role, team: $0.team) }
            var pass = CRMScheduledPass(now: context.now, manager: CRMScheduledPass.managers(in: directory))
            pass.isCancelled = context.isCancelled
            let report = try pass.run(on: store)
            return ScheduledTenantWork.Outcome(recordsWritten: report.recordsWritten, details: report.logDetails)
        }
    }
}
