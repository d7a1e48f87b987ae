import Access
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Registry
import ReplicaStore
import Synchronization
import SyncModel
import TLS

/// How `rapportd` delivers webhooks (`rapportctl webhook`).
public struct WebhookOptions: Sendable {
    /// How long one POST may take, connecting included, before it counts as failed.
    public var requestTimeout: Duration = .seconds(10)
    /// The first wait after a failure; each next one doubles, up to `maxBackoff`, plus up to
    /// half again at random so that many subscriptions failing together do not retry together.
    public var initialBackoff: Duration = .seconds(1)
    public var maxBackoff: Duration = .seconds(300)
    /// A subscription is disabled after this many failures in a row ...
    public var failuresToDisable = 10
    /// ... spanning at least this long, so that a short outage of the receiver never disables it.
    public var failingPeriodToDisable: Duration = .seconds(3600)
    /// How often the registry is read for new, changed and deleted subscriptions.
    public var registryInterval: Duration = .seconds(1)
    /// The longest a subscription waits for changes without looking: a safety net, since a
    /// device's push, and any other commit within a second, wakes it.
    public var pollInterval: Duration = .seconds(5)
    /// Changes read per page.
    public var pageSize = 100

    public init() {}
}

/// One event as a receiver gets it: the JSON body of a POST.
struct WebhookEvent {
    var id: String
    var sequence: Int64
    var record: RecordState
    var changedFields: [String]

    /// `created` when the subscription never sent the record, `deleted` for a tombstone.
    var kind: String

    func body(tenant: String) -> [UInt8] {
        var object: [String: Any] = [
            "id": id, "type": "\(record.type).\(kind)", "tenant": tenant, "record_type": record.type,
            "record_id": record.id.uuidString.lowercased(), "sequence": sequence, "changed_fields": changedFields,
            "deleted": record.isDeleted,
        ]
        object["record"] = record.isDeleted ? NSNull() : record.values.mapValues(Self.json)
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Array(data)
    }

    /// A value as JSON: blobs as base64, the only text form JSON has for bytes.
    private static func json(_ value: FieldValue) -> Any {
        switch value {
        case .null: NSNull()
        case .bool(let v): v
        case .integer(let v): v
        case .real(let v): v
        case .text(let v): v
        case .blob(let v): v.base64EncodedString()
        }
    }

    /// The same change of the same record has the same id for a subscription, whoever delivers
    /// it and however often: what receivers deduplicate by.
    static func id(webhook: String, record: UUID, sequence: Int64) -> String {
        "evt_" + Crypto.hex(Crypto.sha256(Array("\(webhook)/\(record.uuidString.lowercased())/\(sequence)".utf8)).prefix(16))
    }
}

/// The signature of a delivery: `t=TIMESTAMP,v1=HEX` where HEX is HMAC-SHA256 under the
/// subscription's secret of `TIMESTAMP.BODY` (the Unix time in seconds, a dot, the raw body).
public enum WebhookSignature {
    public static let header = "Rapport-Signature"

    public static func sign(body: [UInt8], secret: String, timestamp: Int64) -> String {
        "t=\(timestamp),v1=" + Crypto.hex(Crypto.hmacSHA256(key: Array(secret.utf8), Array("\(timestamp).".utf8) + body))
    }

    /// Whether `header` is a valid signature of `body` under `secret` (compared in constant
    /// time); a receiver should also refuse a timestamp far from its clock (replays).
    public static func verify(header: String, body: [UInt8], secret: String) -> Bool {
        var timestamp: Int64?, signature: String?
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            if pair[0] == "t" { timestamp = Int64(pair[1]) } else if pair[0] == "v1" { signature = pair[1] }
        }
        guard let timestamp, let signature, let given = Crypto.bytes(fromHex: signature) else { return false }
        let expected = Crypto.hmacSHA256(key: Array(secret.utf8), Array("\(timestamp).".utf8) + body)
        return Crypto.constantTimeEquals(given, expected)
    }
}

extension SyncServer {
    /// Runs every enabled subscription of the data directory's registry, each as a task of its
    /// own, until cancelled; reads the registry every `registryInterval` to start, restart and
    /// stop them, and to wake one whose cursor an operator moved back (`webhook redeliver`). A
    /// subscription's task never runs on an event loop and holds no session up: a slow receiver
    /// slows its own subscription only.
    func runWebhooks(_ options: WebhookOptions) async {
        let directory = configuration.data
        await withDiscardingTaskGroup { group in
            // A subscription's task ends by itself when it is disabled or deleted (`ended`): it
            // is started again once it is enabled.
            var running: [String: (task: Task<Void, Never>, key: String, ended: Ended, wakeup: Wakeup, cursor: Int64)] = [:]
            while !Task.isCancelled {
                let hooks: [Webhook] = (try? await NIOThreadPool.singleton.runIfActive {
                    let registry = try directory.openRegistry()
                    defer { registry.close() }
                    return try registry.allWebhooks()
                }) ?? []
                let served = Set(authenticator.servedTenants)
                let wanted = Dictionary(hooks.filter { $0.enabled && served.contains($0.tenant) }.map {
                    ($0.id, "\($0.url)|\($0.events)|\($0.role)|\($0.caFile ?? "")")
                }, uniquingKeysWith: { a, _ in a })
                for (id, entry) in running where wanted[id] != entry.key || entry.ended.flag.load(ordering: .acquiring) {
                    entry.task.cancel()
                    running[id] = nil
                }
                for hook in hooks where wanted[hook.id] != nil {
                    if let entry = running[hook.id] {
                        if hook.cursor < entry.cursor { entry.wakeup.signal() }
                        running[hook.id]?.cursor = hook.cursor
                        continue
                    }
                    let ended = Ended(), wakeup = Wakeup()
                    let task = Task {
                        await self.deliver(hook, options: options, directory: directory, wakeup: wakeup)
                        ended.flag.store(true, ordering: .releasing)
                    }
                    running[hook.id] = (task, wanted[hook.id]!, ended, wakeup, hook.cursor)
                    group.addTask { await task.value }
                }
                try? await Task.sleep(for: options.registryInterval)
            }
            for entry in running.values { entry.task.cancel() }
        }
    }

    /// Delivers one subscription's events, in the tenant's sequence order, until it is
    /// cancelled, disabled or deleted.
    private func deliver(_ hook: Webhook, options: WebhookOptions, directory: DataDirectory, wakeup: Wakeup) async {
        var logger = self.logger
        logger[metadataKey: "webhook"] = "\(hook.id)"
        logger[metadataKey: "tenant"] = "\(hook.tenant)"
        let box = RegistryBox()
        let client: HTTPSClient
        let secret: String
        let policy: AccessPolicy?
        let tenant: TenantStore
        do {
            try await box.open(directory)
            secret = try await box.run { try $0.webhookSecret(hook.id) }
            let roles = try await box.run { try $0.roleOverrides(tenant: hook.tenant) }
            if let access = configuration.access {
                let role = roles[hook.role] ?? access.defaultRoles.first { $0.name == hook.role } ?? Role(name: hook.role, types: [:])
                policy = AccessPolicy(model: access.ownership,
                                      subject: AccessSubject(user: "webhook:\(hook.id)", team: nil, role: role, teamMembers: []))
            } else {
                policy = nil
            }
            guard let url = URL(string: hook.url) else { throw HTTPSClient.Failure("'\(hook.url)' is not a URL") }
            client = try HTTPSClient(origin: url, trustRoots: hook.caFile.map { .certificates(.file($0)) } ?? .system)
            tenant = try await NIOThreadPool.singleton.runIfActive { [tenants] in try tenants.lease(hook.tenant) }
        } catch {
            logger.error("webhook cannot start", metadata: ["error": "\(error)"])
            await box.close()
            return
        }
        tenant.addObserver(hook.id) { _ in wakeup.signal() }
        defer {
            tenant.removeObserver(hook.id)
            tenants.release(hook.tenant)
            Task { await box.close() }
        }
        let path = Self.requestPath(hook.url)
        let matcher = WebhookMatcher(events: hook.events)

        while !Task.isCancelled {
            guard let current = try? await box.run({ try $0.webhook(hook.id) }), current.enabled else { return }
            let cursor = current.cursor
            // Each change with the record as the role sees it; `nil` for one it may not read,
            // or of a type no event names: passed over.
            let page: [Visible]
            do {
                page = try await tenant.store.perform { [self] store in
                    try store.changes(after: cursor, limit: options.pageSize).map { change in
                        guard matcher.mayMatch(change.state.type) else { return Visible(sequence: change.sequence, record: nil) }
                        guard let policy else { return Visible(sequence: change.sequence, record: change.state) }
                        // Exactly as a user of the role: a record it may not read is not sent,
                        // fields it may not see are left out.
                        guard try policy.mayRead(change.state, lookup: store.record) else {
                            return Visible(sequence: change.sequence, record: nil)
                        }
                        return Visible(sequence: change.sequence, record: self.stripped(change.state, policy))
                    }
                }
            } catch {
                logger.error("webhook cannot read the tenant's changes", metadata: ["error": "\(error)"])
                await wakeup.wait(upTo: options.pollInterval)
                continue
            }
            if page.isEmpty {
                await wakeup.wait(upTo: options.pollInterval)
                continue
            }
            var position = cursor
            var passedOver = cursor
            for visible in page {
                guard !Task.isCancelled else { return }
                let sequence = visible.sequence
                guard let record = visible.record else {
                    passedOver = sequence
                    continue
                }
                let key = record.id.uuidString.lowercased()
                let versions = Self.fieldVersions(record)
                let seen = try? await box.run { try $0.webhookSeenFields(hook.id, record: key) }
                let changed = versions.keys.filter { seen?[$0] != versions[$0] }.sorted()
                guard matcher.matches(type: record.type, changedFields: Set(changed), deleted: record.isDeleted) else {
                    _ = try? await box.run { try $0.setWebhookSeenFields(hook.id, record: key, versions) }
                    passedOver = sequence
                    continue
                }
                if passedOver > position {
                    _ = try? await box.run { [position, passedOver] in try $0.advanceWebhook(hook.id, to: passedOver, from: position) }
                    position = passedOver
                }
                let event = WebhookEvent(id: WebhookEvent.id(webhook: hook.id, record: record.id, sequence: sequence),
                                         sequence: sequence, record: record, changedFields: changed,
                                         kind: record.isDeleted ? "deleted" : seen == nil ? "created" : "updated")
                let outcome = await post(event, hook: hook, secret: secret, client: client, path: path, from: position, box: box,
                                         options: options, logger: logger)
                guard outcome == .delivered else {
                    if outcome == .stop { return }
                    break
                }
                _ = try? await box.run { try $0.setWebhookSeenFields(hook.id, record: key, versions) }
                position = sequence
                passedOver = sequence
            }
            if passedOver > position {
                _ = try? await box.run { [position, passedOver] in try $0.advanceWebhook(hook.id, to: passedOver, from: position) }
            }
        }
    }

    /// A change as a subscription's role sees it: `record` is `nil` when the role may not read
    /// it or no event names its type.
    private struct Visible: Sendable {
        var sequence: Int64
        var record: RecordState?
    }

    private enum Outcome { case delivered, stop, restart }

    /// Posts one event until a 2xx, with backoff between attempts; `.stop` when the
    /// subscription was disabled (by this, after repeated failure, or by an operator) or
    /// cancelled, `.restart` when an operator moved its cursor meanwhile.
    private func post(_ event: WebhookEvent, hook: Webhook, secret: String, client: HTTPSClient, path: String, from cursor: Int64,
                      box: RegistryBox, options: WebhookOptions, logger: Logger) async -> Outcome {
        let body = event.body(tenant: hook.tenant)
        var attempt = 0
        var backoff = options.initialBackoff
        while !Task.isCancelled {
            attempt += 1
            let timestamp = Int64(Date().timeIntervalSince1970)
            let headers = [("Content-Type", "application/json"), (WebhookSignature.header, WebhookSignature.sign(body: body, secret: secret, timestamp: timestamp)),
                           ("Rapport-Event-Id", event.id), ("Rapport-Webhook-Id", hook.id), ("User-Agent", "rapportd-webhooks")]
            var status: Int?
            var failure: String?
            do {
                let response = try await client.send(.POST, path: path, headers: headers, body: body, timeout: options.requestTimeout)
                status = response.status
                if !(200..<300).contains(response.status) { failure = "the receiver answered \(response.status)" }
            } catch {
                failure = "\(error)"
            }
            let delivery = WebhookDelivery(eventID: event.id, sequence: event.sequence, record: event.record.id.uuidString.lowercased(),
                                           attempt: attempt, at: Date(), status: status, error: failure)
            guard let after = try? await box.run({ try $0.recordWebhookAttempt(hook.id, delivery, advanceFrom: cursor) }) else {
                return .stop
            }
            if failure == nil {
                logger.debug("webhook delivered", metadata: ["event": "\(event.id)", "sequence": "\(event.sequence)"])
                return after.cursor == event.sequence ? .delivered : .restart
            }
            logger.info("webhook delivery failed", metadata: ["event": "\(event.id)", "attempt": "\(attempt)", "error": "\(failure!)"])
            if after.failures >= options.failuresToDisable, let since = after.failingSince,
               Date().timeIntervalSince(since) >= Double(TimeAmount(options.failingPeriodToDisable).nanoseconds) / 1e9 {
                let reason = "disabled after \(after.failures) failed deliveries in a row since "
                    + "\(since.formatted(.iso8601)); last: \(failure!)"
                try? await box.run { try $0.setWebhookEnabled(hook.id, false, reason: reason) }
                logger.warning("webhook disabled", metadata: ["reason": "\(reason)"])
                return .stop
            }
            let jittered = backoff * Double.random(in: 1.0...1.5)
            try? await Task.sleep(for: jittered)
            backoff = min(backoff * 2, options.maxBackoff)
            guard let current = try? await box.run({ try $0.webhook(hook.id) }), current.enabled else { return .stop }
            if current.cursor != cursor { return .restart }
        }
        return .stop
    }

    /// The path and query of a URL, as a request line needs them.
    static func requestPath(_ url: String) -> String {
        guard let components = URLComponents(string: url) else { return "/" }
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        return components.percentEncodedQuery.map { path + "?" + $0 } ?? path
    }

    /// The write of each field (its dot, or a counter's total): two states of a record differ
    /// in a field exactly when these differ.
    static func fieldVersions(_ record: RecordState) -> [String: String] {
        record.fields.mapValues { state in
            switch state {
            case .register(let register): register.dot.description
            case .counter(let counter): "counter:\(counter.value)"
            }
        }
    }
}

/// Which changes a subscription's events name: `type` for any change of a record of the type,
/// `type.field` for changes of that field (including the record's creation with it, and its
/// deletion).
struct WebhookMatcher: Sendable {
    private var types: Set<String> = []
    private var fields: [String: Set<String>] = [:]

    init(events: [String]) {
        for event in events {
            let parts = event.split(separator: ".", maxSplits: 1).map(String.init)
            if parts.count == 2 { fields[parts[0], default: []].insert(parts[1]) } else if let type = parts.first { types.insert(type) }
        }
    }

    func mayMatch(_ type: String) -> Bool { types.contains(type) || fields[type] != nil }

    func matches(type: String, changedFields: Set<String>, deleted: Bool) -> Bool {
        if types.contains(type) { return true }
        guard let wanted = fields[type] else { return false }
        return deleted || !wanted.isDisjoint(with: changedFields)
    }
}

/// A registry connection of one subscription's task, used by it alone and one call at a time,
/// each on NIO's thread pool (SQLite blocks).
private final class RegistryBox: Sendable {
    // `Registry` belongs to one thread at a time; the mutex makes every use exclusive.
    private let registry = Mutex<Registry?>(nil)

    func open(_ directory: DataDirectory) async throws {
        try await NIOThreadPool.singleton.runIfActive { [self] in
            try registry.withLock { $0 = try directory.openRegistry() }
        }
    }

    func run<T: Sendable>(_ body: @escaping @Sendable (Registry) throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive { [self] in
            try registry.withLock { registry in
                guard let registry else { throw RegistryError.invalidArgument("the webhook's registry connection is closed") }
                return try body(registry)
            }
        }
    }

    func close() async {
        _ = try? await NIOThreadPool.singleton.runIfActive { [self] in
            registry.withLock { registry in
                registry?.close()
                registry = nil
            }
        }
    }
}

/// Set when a subscription's task returned.
private final class Ended: Sendable {
    let flag = Atomic<Bool>(false)
}

/// Wakes a subscription's task when the tenant's sequence is announced: a signal that arrives
/// while it is not waiting is kept for its next wait.
private final class Wakeup: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns at the next signal, after `timeout`, or when the task is cancelled.
    func wait(upTo timeout: Duration) async {
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            signal()
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            signal()
        }
    }
}
