import Prometheus
import Synchronization
import SyncProtocol
import TLS

/// One server's metrics, in a Prometheus registry of its own.
///
/// Not a process-wide `MetricsSystem` bootstrap: two servers in one process (tests, a bench)
/// each count their own sessions. `rapportd --metrics HOST:PORT` serves `exposition()` over
/// HTTP (`MetricsEndpoint`). Counters are made with every label value up front, so a scrape
/// shows a zero rather than no line, and no label holds a value a peer chooses (no tenant,
/// device or address): the series stay bounded whatever connects.
public final class ServerMetrics: Sendable {
    /// The registry every metric of this server is in.
    public let registry = PrometheusCollectorRegistry()

    /// Connections accepted, by what the connection caps made of them.
    let connectionsAdmitted: Counter
    let connectionsBusy: Counter
    let connectionsDropped: Counter
    /// Sessions that logged in (Hello accepted).
    let sessionsStarted: Counter
    /// Hellos and enrollments refused, by the error code sent.
    private let refusals: [Rapport_V1_Error.Code: Counter]
    let enrollments: Counter
    let pushes: Counter
    let pulls: Counter
    private let pushedRecords: [Rapport_V1_RecordResult.Outcome: Counter]
    let pulledRecords: Counter
    let conflicts: Counter
    let pushDuration: DurationHistogram
    let pullDuration: DurationHistogram
    let tenantStoreOpens: Counter
    /// Tenant stores closed to stay within `--max-open-tenants` (least recently used first).
    let tenantStoreEvictions: Counter
    private let tlsFailures: [TLSError.FailureReason: Counter]
    let protocolViolations: Counter
    /// Connections closed for silence: before their Hello (TLS included), or once established.
    let handshakeTimeouts: Counter
    let idleTimeouts: Counter

    private let sampled: Sampled
    /// What is read at each scrape rather than counted as it happens: states held elsewhere
    /// (the connection gate, the pool, a branch's link), set by the server that owns them.
    private let samplers = Mutex<[@Sendable (Sampled) -> Void]>([])

    /// The gauges set by samplers just before each scrape.
    struct Sampled: Sendable {
        let connectionsPreLogin: Gauge
        let connectionsSession: Gauge
        let connectionsBusy: Gauge
        let openTenantStores: Gauge
        let feedWaiting: Gauge
    }

    /// A branch's link to its centre, set before each scrape; only a branch has them.
    struct UpstreamGauges: Sendable {
        let connected: Gauge
        let lastSync: Gauge
        let behind: Gauge
        let waiting: Gauge
    }

    /// The wire name of an error code (`AUTHENTICATION_FAILED`), as SPEC.md writes it.
    static func label(_ code: Rapport_V1_Error.Code) -> String {
        var name = ""
        for character in "\(code)" {
            if character.isUppercase { name += "_" }
            name += character.uppercased()
        }
        return name
    }

    /// Batch latency buckets, 1 ms to 10 s: a push or pull of one batch on a quiet server is
    /// milliseconds; seconds mean a large batch, a slow disk or a queue behind other sessions.
    static let batchBuckets: [Duration] = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
        .map { Duration.microseconds(Int64($0 * 1000)) }

    /// `rapport_<base>_<unit>`, with the help text Prometheus shows.
    private static func name(_ base: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "rapport", metricName: base, unitName: unit, helpText: help)
    }

    /// A registry with every metric of a server in it, counters at zero.
    public init() {
        let registry = self.registry
        let name = Self.name
        func counter(_ base: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(descriptor: name(base, "total", help), labels: labels)
        }
        func gauge(_ base: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
            registry.makeGauge(descriptor: name(base, unit, help), labels: labels)
        }
        let connectionsHelp = "Connections accepted, by what the connection caps made of them."
        connectionsAdmitted = counter("connections", connectionsHelp, [("result", "admitted")])
        connectionsBusy = counter("connections", connectionsHelp, [("result", "busy")])
        connectionsDropped = counter("connections", connectionsHelp, [("result", "dropped")])
        sessionsStarted = counter("sessions_started", "Sessions whose Hello was accepted.")
        let refusalHelp = "Hellos and enrollments refused, by the error code sent."
        refusals = Dictionary(uniqueKeysWithValues: Rapport_V1_Error.Code.allCases.filter { $0 != .unspecified }.map {
            ($0, counter("sessions_refused", refusalHelp, [("code", Self.label($0))]))
        })
        enrollments = counter("enrollments", "Devices enrolled.")
        pushes = counter("pushes", "Push batches answered.")
        pulls = counter("pulls", "Pull batches sent.")
        let recordsHelp = "Pushed records, by the outcome answered: applied, merged, unchanged, rejected."
        pushedRecords = Dictionary(uniqueKeysWithValues: [Rapport_V1_RecordResult.Outcome.applied, .merged, .unchanged, .rejected].map {
            ($0, counter("pushed_records", recordsHelp, [("outcome", "\($0)")]))
        })
        pulledRecords = counter("pulled_records", "Records sent in pull batches.")
        conflicts = counter("conflicts", "Conflicts found when merging pushed records (both sides kept, one in the conflict log).")
        pushDuration = registry.makeDurationHistogram(
            descriptor: name("push_duration", "seconds", "Time to validate, merge and answer one push batch."), buckets: Self.batchBuckets)
        pullDuration = registry.makeDurationHistogram(
            descriptor: name("pull_duration", "seconds", "Time to read and answer one pull batch."), buckets: Self.batchBuckets)
        tenantStoreOpens = counter("tenant_store_opens", "Tenant stores opened.")
        tenantStoreEvictions = counter("tenant_store_evictions",
                                       "Unused tenant stores closed to stay within --max-open-tenants (least recently used first).")
        let tlsHelp = "TLS handshakes that failed, by reason."
        tlsFailures = Dictionary(uniqueKeysWithValues: TLSError.FailureReason.allCases.map {
            ($0, counter("tls_handshake_failures", tlsHelp, [("reason", $0.rawValue)]))
        })
        protocolViolations = counter("protocol_violations", "Sessions closed for a protocol error: malformed, oversize or unexpected frames, wrong versions.")
        let timeoutHelp = "Connections closed for silence: handshake (no Hello within --handshake-timeout, TLS included) or idle."
        handshakeTimeouts = counter("timeouts", timeoutHelp, [("phase", "handshake")])
        idleTimeouts = counter("timeouts", timeoutHelp, [("phase", "idle")])
        let connectionsOpen = "Open connections, by state: prelogin (TLS and Hello), session (logged in), busy (answered SERVER_BUSY)."
        sampled = Sampled(
            connectionsPreLogin: gauge("connections_open", "", connectionsOpen, [("state", "prelogin")]),
            connectionsSession: gauge("connections_open", "", connectionsOpen, [("state", "session")]),
            connectionsBusy: gauge("connections_open", "", connectionsOpen, [("state", "busy")]),
            openTenantStores: gauge("tenant_stores_open", "", "Tenant stores open now."),
            feedWaiting: gauge("api_feed_waiting", "", "Long-polls of the integration API's change feed waiting for a change now."))
    }

    func refused(_ code: Rapport_V1_Error.Code) {
        refusals[code]?.increment()
    }

    /// Counts an answered push: the batch, its time, each record's outcome and conflicts.
    func pushed(_ result: Rapport_V1_PushResult, in duration: Duration) {
        pushDuration.record(duration)
        pushes.increment()
        // Tallied first: one atomic add per outcome, not one per record of a large batch.
        var outcomes: [Rapport_V1_RecordResult.Outcome: Int64] = [:]
        var found: Int64 = 0
        for record in result.results {
            outcomes[record.outcome, default: 0] += 1
            found += Int64(record.conflicts.count)
        }
        for (outcome, count) in outcomes { pushedRecords[outcome]?.increment(by: count) }
        if found > 0 { conflicts.increment(by: found) }
    }

    func handshakeFailed(_ reason: TLSError.FailureReason) {
        tlsFailures[reason]?.increment()
    }

    /// Adds what is read at each scrape.
    func sample(_ sampler: @escaping @Sendable (Sampled) -> Void) {
        samplers.withLock { $0.append(sampler) }
    }

    /// The gauges of a branch's link (a centre has none).
    func upstreamGauges() -> UpstreamGauges {
        func gauge(_ base: String, _ unit: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: Self.name(base, unit, help))
        }
        return UpstreamGauges(
            connected: gauge("upstream_connected", "", "A branch's link to its centre: 1 connected, 0 not."),
            lastSync: gauge("upstream_last_sync", "timestamp_seconds", "When the branch's link last completed a sync (Unix time; 0 never)."),
            behind: gauge("upstream_behind", "changes", "Changes at the centre the branch has not pulled yet, as of the link's last exchange."),
            waiting: gauge("upstream_waiting", "changes", "Changes made at the branch waiting to go up to the centre."))
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, gauges read now.
    /// Cheap and non-blocking (locks held for a copy), so it may run on an event loop.
    public func exposition() -> String {
        let sampled = self.sampled
        for sampler in samplers.withLock({ $0 }) { sampler(sampled) }
        return registry.emitToString()
    }
}
