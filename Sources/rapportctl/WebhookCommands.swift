import ArgumentParser
import CRM
import Foundation
import RapportDevice
import Registry
import ReplicaStore

struct WebhookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Create, list, show, enable, disable, redeliver and delete a tenant's webhook subscriptions.",
        discussion: """
            rapportd POSTs each change of the record types (or fields) a subscription names to \
            its URL, as JSON signed with the subscription's secret (header Rapport-Signature: \
            t=TIMESTAMP,v1=HEX of HMAC-SHA256(secret, "TIMESTAMP.BODY")), in the tenant's order, \
            at least once: retried with backoff until the receiver answers 2xx, and disabled \
            after repeated failure (see rapportd --webhook-*). See README, Webhooks.
            """,
        subcommands: [Create.self, List.self, Show.self, Enable.self, Disable.self, Redeliver.self, Delete.self])

    static func json(_ hook: Webhook, deliveries: [WebhookDelivery]? = nil, secret: String? = nil) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(hook.id), "tenant": .string(hook.tenant), "url": .string(hook.url),
            "events": .array(hook.events.map(JSONValue.string)), "role": .string(hook.role),
            "ca": .optional(hook.caFile), "state": .string(hook.enabled ? "enabled" : "disabled"),
            "disabled_reason": .optional(hook.disabledReason), "cursor": .integer(hook.cursor),
            "failures": .integer(Int64(hook.failures)), "failing_since": jsonDate(hook.failingSince),
            "created_at": jsonDate(hook.createdAt),
        ]
        if let secret { object["secret"] = .string(secret) }
        if let deliveries {
            object["deliveries"] = .array(deliveries.map { delivery in
                .object(sorted: [
                    "event_id": .string(delivery.eventID), "sequence": .integer(delivery.sequence), "record": .string(delivery.record),
                    "attempt": .integer(Int64(delivery.attempt)), "at": jsonDate(delivery.at),
                    "status": delivery.status.map { .integer(Int64($0)) } ?? .null, "error": .optional(delivery.error),
                ])
            })
        }
        return .object(sorted: object)
    }

    static func state(_ hook: Webhook) -> String {
        hook.enabled ? (hook.failures > 0 ? "enabled (\(hook.failures) failures in a row)" : "enabled")
                     : "disabled: \(hook.disabledReason ?? "by an operator")"
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Subscribe a URL to changes of a tenant's records; prints the signing secret once.",
            discussion: """
                --events is a comma-separated list of record types (any change of a record of \
                the type: opportunity) and type.field (changes of that field: opportunity.stage, \
                case.status). Deliveries start with the changes made after now. The receiver \
                sees what a user of --role sees: records the role may not read are never sent, \
                fields it may not see are left out. The URL is https://, verified against the \
                system's CAs or --ca; plain http:// is accepted for a loopback receiver only \
                (127.0.0.1, ::1, localhost: tests and local development).
                Example: rapportctl webhook create --tenant acme --url https://erp.example/hooks/rapport --events opportunity.stage,case.status,order --role manager
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("Where to POST events: https://..., or http:// to loopback only.", valueName: "url"))
        var url: String
        @Option(help: ArgumentHelp("Comma-separated record types and type.field names.", valueName: "events"))
        var events: String
        @Option(help: ArgumentHelp("The role whose rights filter what is sent: admin, manager or rep.", valueName: "role"))
        var role = "admin"
        @Option(help: ArgumentHelp("PEM file of the CA(s) the receiver's certificate must chain to, instead of the system's.", valueName: "file"))
        var ca: String?

        func run() throws {
            let names = events.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for name in names { try Self.check(event: name) }
            let registry = try common.registry()
            defer { registry.close() }
            let ca = self.ca.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            let (hook, secret) = try common.audited(registry, "webhook create", tenant: tenant,
                                                    detail: "\(url) events \(names.joined(separator: ",")) role \(role)") {
                let row = try registry.requireTenant(tenant)
                guard row.status == .active else { throw RegistryError.tenantNotActive(tenant, status: row.status) }
                let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
                defer { store.close() }
                return try registry.createWebhook(tenant: tenant, url: url, events: names, role: role, caFile: ca,
                                                  cursor: try store.lastSequence)
            }
            let json = WebhookCommand.json(hook, secret: secret)
            common.emit(text: """
                webhook \(hook.id) of tenant \(hook.tenant): \(hook.url)
                events \(hook.events.joined(separator: ", ")) as \(hook.role), from sequence \(hook.cursor)
                signing secret (shown once; keep it with the receiver):
                  \(secret)

                """, json: json)
        }

        /// A record type of the CRM, or one of its fields.
        static func check(event: String) throws {
            let parts = event.split(separator: ".", maxSplits: 1).map(String.init)
            guard let type = CRMSchema.current.types[parts[0]] else {
                throw CtlFailure(.usage, "--events: no record type '\(parts[0])' (types: \(CRMSchema.current.types.keys.sorted().joined(separator: ", ")))")
            }
            if parts.count == 2, type.fields[parts[1]] == nil {
                throw CtlFailure(.usage, "--events: a \(parts[0]) has no field '\(parts[1])' (fields: \(type.fields.keys.sorted().joined(separator: ", ")))")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's webhooks with their state, cursor and failures.")
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let hooks = try registry.webhooks(tenant: tenant)
            let rows = hooks.map { [$0.id, $0.url, $0.events.joined(separator: ","), $0.role, String($0.cursor), WebhookCommand.state($0)] }
            common.emit(text: Output.table(["WEBHOOK", "URL", "EVENTS", "ROLE", "CURSOR", "STATE"], rows),
                        json: .array(hooks.map { WebhookCommand.json($0) }))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a webhook: its state, cursor, failure reason and last deliveries (newest first).")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The webhook id (see webhook list).")
        var webhook: String
        @Option(help: "Deliveries to show.")
        var last = 20

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let hook = try registry.requireWebhook(webhook)
            let deliveries = try registry.webhookDeliveries(hook.id, limit: max(last, 0))
            let rows = deliveries.map {
                [iso($0.at), $0.eventID, String($0.sequence), $0.record, String($0.attempt), $0.status.map(String.init) ?? "-",
                 $0.error ?? "ok"]
            }
            common.emit(text: """
                webhook \(hook.id) of tenant \(hook.tenant): \(hook.url)
                events \(hook.events.joined(separator: ", ")) as \(hook.role)\(hook.caFile.map { ", CA \($0)" } ?? "")
                state  \(WebhookCommand.state(hook))
                cursor \(hook.cursor)\(hook.failingSince.map { "; failing since \(iso($0))" } ?? "")

                """ + Output.table(["AT", "EVENT", "SEQUENCE", "RECORD", "ATTEMPT", "STATUS", "RESULT"], rows),
                        json: WebhookCommand.json(hook, deliveries: deliveries))
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enable a webhook again (after fixing its receiver): delivery resumes from its cursor.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The webhook id.")
        var webhook: String

        func run() throws { try WebhookCommand.change(common, webhook, "webhook enable") { try $0.setWebhookEnabled(webhook, true) } }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a webhook: nothing is sent until it is enabled; changes wait at its cursor.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The webhook id.")
        var webhook: String

        func run() throws {
            try WebhookCommand.change(common, webhook, "webhook disable") {
                try $0.setWebhookEnabled(webhook, false, reason: "disabled by \(common.actorName)")
            }
        }
    }

    struct Redeliver: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deliver again every change after a cursor (a tenant sequence, as in the events' \"sequence\").",
            discussion: "Events keep their ids, so a receiver that deduplicates by Rapport-Event-Id sees each once.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The webhook id.")
        var webhook: String
        @Option(help: ArgumentHelp("Deliver the changes after this sequence (0: from the beginning).", valueName: "cursor"))
        var from: Int64

        func run() throws {
            try WebhookCommand.change(common, webhook, "webhook redeliver", detail: "from \(from)") { try $0.rewindWebhook(webhook, to: from) }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a webhook and its delivery log.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The webhook id.")
        var webhook: String

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let hook = try registry.requireWebhook(webhook)
            try common.audited(registry, "webhook delete", tenant: hook.tenant, detail: "\(hook.id) \(hook.url)") {
                try registry.deleteWebhook(webhook)
            }
            common.emit(text: "deleted webhook \(hook.id) (\(hook.url))\n", json: .object(["deleted": .string(hook.id)]))
        }
    }

    /// Runs an audited change of one webhook and prints it as it stands after.
    static func change(_ common: CommonOptions, _ id: String, _ action: String, detail: String = "",
                       _ body: (Registry) throws -> Void) throws {
        let registry = try common.registry()
        defer { registry.close() }
        let before = try registry.requireWebhook(id)
        try common.audited(registry, action, tenant: before.tenant, detail: [id, detail].filter { !$0.isEmpty }.joined(separator: " ")) {
            try body(registry)
        }
        let hook = try registry.requireWebhook(id)
        common.emit(text: "webhook \(hook.id): \(state(hook)), cursor \(hook.cursor)\n", json: json(hook))
    }
}
