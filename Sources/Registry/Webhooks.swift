import Foundation
import SQLite
import TLS

/// A tenant's webhook subscription: where `rapportd` POSTs the changes of the record types
/// (and fields) it names, signed with its secret, as a user of `role` would see them.
public struct Webhook: Sendable, Equatable, Codable {
    public var id: String
    public var tenant: String
    /// `https://...`, or `http://` to a loopback address (tests, local development).
    public var url: String
    /// `type` (any change of a record of the type) or `type.field` (changes of that field).
    public var events: [String]
    /// The role whose rights filter what is delivered: records it may not read are never sent,
    /// fields it may not see are left out.
    public var role: String
    /// A PEM file of the certificate authorities the receiver's certificate is checked against
    /// instead of the system's.
    public var caFile: String?
    public var enabled: Bool
    /// Why it was disabled (by an operator, or after repeated failure).
    public var disabledReason: String?
    /// The tenant sequence delivered up to: the next delivery starts after it.
    public var cursor: Int64
    /// Failed attempts in a row since the last success.
    public var failures: Int
    /// When the current run of failures began.
    public var failingSince: Date?
    public var createdAt: Date
}

/// One attempt at delivering one event.
public struct WebhookDelivery: Sendable, Equatable, Codable {
    public var eventID: String
    public var sequence: Int64
    public var record: String
    public var attempt: Int
    public var at: Date
    /// The receiver's HTTP status; `nil` when no answer came (refused, timed out, bad TLS).
    public var status: Int?
    /// Why it failed, `nil` after a 2xx.
    public var error: String?

    public init(eventID: String, sequence: Int64, record: String, attempt: Int, at: Date, status: Int?, error: String?) {
        self.eventID = eventID
        self.sequence = sequence
        self.record = record
        self.attempt = attempt
        self.at = at
        self.status = status
        self.error = error
    }

    public var succeeded: Bool { error == nil }
}

extension Registry {
    /// Deliveries kept per subscription in the log; older ones are deleted.
    public static let webhookDeliveriesKept = 50

    private static let webhookColumns = """
        id, tenant, url, events, role, ca_file, enabled, disabled_reason, cursor, failures, failing_since, created_at
        """

    private static func webhook(_ row: any SQLRow) throws -> Webhook {
        Webhook(id: try row.string(0), tenant: try row.string(1), url: try row.string(2),
                events: (try? JSONDecoder().decode([String].self, from: Data(try row.string(3).utf8))) ?? [],
                role: try row.string(4), caFile: try row.optionalString(5), enabled: try row.int64(6) != 0,
                disabledReason: try row.optionalString(7), cursor: try row.int64(8), failures: Int(try row.int64(9)),
                failingSince: try optionalDate(row, 10), createdAt: date(try row.int64(11)))
    }

    /// Whether `url` is one a webhook may post to: `https://HOST...`, or `http://` to a
    /// loopback host only, since plain HTTP would show the events to the network.
    public static func checkWebhookURL(_ url: String) throws {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), let host = parsed.host, !host.isEmpty else {
            throw RegistryError.invalidArgument("'\(url.prefix(200))' is not an http(s) URL with a host")
        }
        switch scheme {
        case "https": return
        case "http":
            guard ["127.0.0.1", "::1", "localhost"].contains(host.lowercased()) || host.hasPrefix("127.") else {
                throw RegistryError.invalidArgument("plain http:// is allowed for a loopback receiver only (127.0.0.1, ::1, localhost); use https://")
            }
        default:
            throw RegistryError.invalidArgument("a webhook URL is https:// (or http:// to loopback), not \(scheme)://")
        }
    }

    /// Registers a subscription of the tenant, delivering the changes after `cursor`, and
    /// returns it with its signing secret (hex), which is shown once.
    ///
    /// `events` are checked against the record types by the caller, which knows the schema.
    public func createWebhook(tenant slug: String, url: String, events: [String], role: String, caFile: String?,
                              cursor: Int64) throws -> (Webhook, secret: String) {
        let tenant = try requireTenant(slug)
        guard tenant.status == .active else { throw RegistryError.tenantNotActive(slug, status: tenant.status) }
        try Self.checkWebhookURL(url)
        guard !events.isEmpty else { throw RegistryError.invalidArgument("name at least one event (a record type, or type.field)") }
        guard UserRole(rawValue: role) != nil else {
            throw RegistryError.invalidArgument("a webhook acts as a role: admin, manager or rep, not '\(role)'")
        }
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw RegistryError.invalidArgument("cannot read the CA file \(caFile)")
        }
        let id = "wh_" + Crypto.hex(try Crypto.randomBytes(8))
        let secret = Crypto.hex(try Crypto.randomBytes(32))
        let json = String(decoding: try JSONEncoder.sorted.encode(events), as: UTF8.self)
        try db.run("""
            INSERT INTO webhooks (id, tenant, url, events, role, ca_file, secret, enabled, cursor, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
            """, [id, slug, url, json, role, caFile, secret, max(cursor, 0), nowMilliseconds])
        return (try requireWebhook(id), secret)
    }

    /// The tenant's subscriptions, oldest first.
    public func webhooks(tenant: String) throws -> [Webhook] {
        _ = try requireTenant(tenant, allowDeleted: true)
        return try db.fetch("SELECT \(Self.webhookColumns) FROM webhooks WHERE tenant = ? ORDER BY created_at, id", [tenant],
                            row: Self.webhook)
    }

    /// Every subscription of every tenant: what the server delivers.
    public func allWebhooks() throws -> [Webhook] {
        try db.fetch("SELECT \(Self.webhookColumns) FROM webhooks ORDER BY created_at, id", row: Self.webhook)
    }

    public func webhook(_ id: String) throws -> Webhook? {
        try db.fetch("SELECT \(Self.webhookColumns) FROM webhooks WHERE id = ?", [id], row: Self.webhook).first
    }

    public func requireWebhook(_ id: String, tenant: String? = nil) throws -> Webhook {
        guard let hook = try webhook(id), tenant == nil || hook.tenant == tenant else {
            throw RegistryError.noSuchWebhook(id)
        }
        return hook
    }

    /// The signing secret (hex): for the server, which signs with it.
    public func webhookSecret(_ id: String) throws -> String {
        guard let secret = try db.fetch("SELECT secret FROM webhooks WHERE id = ?", [id], row: { try $0.string(0) }).first else {
            throw RegistryError.noSuchWebhook(id)
        }
        return secret
    }

    /// Enables (clearing the failures and the reason) or disables a subscription.
    public func setWebhookEnabled(_ id: String, _ enabled: Bool, reason: String? = nil) throws {
        _ = try requireWebhook(id)
        if enabled {
            try db.run("UPDATE webhooks SET enabled = 1, disabled_reason = NULL, failures = 0, failing_since = NULL WHERE id = ?", [id])
        } else {
            try db.run("UPDATE webhooks SET enabled = 0, disabled_reason = ? WHERE id = ?", [reason ?? "disabled by an operator", id])
        }
    }

    /// Delivers again every change after `cursor` (which may be behind or ahead of where it
    /// is): the receiver deduplicates by event id.
    public func rewindWebhook(_ id: String, to cursor: Int64) throws {
        guard cursor >= 0 else { throw RegistryError.invalidArgument("a cursor is a tenant sequence of at least 0") }
        _ = try requireWebhook(id)
        try db.run("UPDATE webhooks SET cursor = ? WHERE id = ?", [cursor, id])
    }

    public func deleteWebhook(_ id: String) throws {
        _ = try requireWebhook(id)
        try db.run("DELETE FROM webhooks WHERE id = ?", [id])
    }

    /// Records an attempt in the log (keeping the last `webhookDeliveriesKept`). A success
    /// clears the failures and moves the cursor to the delivery's sequence if it is still at
    /// `advanceFrom` (an operator's rewind meanwhile stands); a failure counts one more in a
    /// row. Returns the subscription as it stands after.
    @discardableResult
    public func recordWebhookAttempt(_ id: String, _ delivery: WebhookDelivery, advanceFrom cursor: Int64? = nil) throws -> Webhook {
        try db.transaction {
            try db.run("""
                INSERT INTO webhook_deliveries (webhook, event_id, sequence, record, attempt, at, status, error)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, [id, delivery.eventID, delivery.sequence, delivery.record, Int64(delivery.attempt),
                      Self.milliseconds(delivery.at), delivery.status.map { Int64($0) }, delivery.error.map { String($0.prefix(500)) }])
            try db.run("""
                DELETE FROM webhook_deliveries WHERE webhook = ? AND id <= (
                    SELECT id FROM webhook_deliveries WHERE webhook = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
                """, [id, id, Int64(Self.webhookDeliveriesKept)])
            if delivery.succeeded {
                try db.run("UPDATE webhooks SET failures = 0, failing_since = NULL WHERE id = ?", [id])
                if let cursor { try advanceWebhook(id, to: delivery.sequence, from: cursor) }
            } else {
                try db.run("""
                    UPDATE webhooks SET failures = failures + 1, failing_since = coalesce(failing_since, ?) WHERE id = ?
                    """, [Self.milliseconds(delivery.at), id])
            }
            return try requireWebhook(id)
        }
    }

    /// Moves the cursor forward past changes that had nothing to deliver (or were delivered).
    /// Never backwards: a `rewindWebhook` made meanwhile by an operator stands.
    public func advanceWebhook(_ id: String, to cursor: Int64, from previous: Int64? = nil) throws {
        if let previous {
            try db.run("UPDATE webhooks SET cursor = ? WHERE id = ? AND cursor = ?", [cursor, id, previous])
        } else {
            try db.run("UPDATE webhooks SET cursor = \(db.dialect.greatest)(cursor, ?) WHERE id = ?", [cursor, id])
        }
    }

    /// The subscription's log, newest first.
    public func webhookDeliveries(_ id: String, limit: Int = 20) throws -> [WebhookDelivery] {
        try db.fetch("""
            SELECT event_id, sequence, record, attempt, at, status, error FROM webhook_deliveries
            WHERE webhook = ? ORDER BY id DESC LIMIT ?
            """, [id, Int64(limit)]) { row in
            WebhookDelivery(eventID: try row.string(0), sequence: try row.int64(1), record: try row.string(2), attempt: Int(try row.int64(3)),
                            at: Self.date(try row.int64(4)), status: try row.optionalInt64(5).map(Int.init),
                            error: try row.optionalString(6))
        }
    }

    /// The write of each field of `record` as this subscription last delivered it (`nil`:
    /// never delivered): which fields a change touched.
    public func webhookSeenFields(_ id: String, record: String) throws -> [String: String]? {
        try db.fetch("SELECT fields FROM webhook_seen WHERE webhook = ? AND record = ?", [id, record]) {
            (try? JSONDecoder().decode([String: String].self, from: Data(try $0.string(0).utf8))) ?? [:]
        }.first
    }

    public func setWebhookSeenFields(_ id: String, record: String, _ fields: [String: String]) throws {
        let json = String(decoding: try JSONEncoder.sorted.encode(fields), as: UTF8.self)
        try db.run("""
            INSERT INTO webhook_seen (webhook, record, fields) VALUES (?, ?, ?)
            ON CONFLICT (webhook, record) DO UPDATE SET fields = excluded.fields
            """, [id, record, json])
    }
}
