import CRM
import Foundation
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// Webhooks as an operator and a receiver meet them: subscriptions made with `rapportctl
/// webhook`, a real `rapportd` delivering over HTTPS (the project's TLS, a test CA) to a real
/// receiver on loopback, after a device's push.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct WebhookTests {
    /// Fast retries, so that failures play out in a test's time. A receiver has 30 s to answer:
    /// the receiver is in the test process, which a loaded machine stalled past 1 s, and the
    /// server then delivered the event again (at least once, as it should), one request more
    /// than the test counted. The test of the timeout itself sets 1 s (`timingOut`).
    static let arguments = ["--rules-interval", "0", "--webhook-timeout", "30", "--webhook-retry", "0.05",
                            "--webhook-disable-after", "4", "--webhook-disable-period", "0"]
    /// `arguments` with a receiver that never answers failing after 1 s.
    static let timingOut = arguments + ["--webhook-timeout", "1"]

    /// `rapportctl webhook create`; returns the id and the secret.
    static func create(_ operated: OperatedServer, _ receiver: WebhookReceiver, events: String,
                       role: String = "admin") throws -> (id: String, secret: String) {
        var arguments = ["webhook", "create", "--tenant", "acme", "--url", receiver.url, "--events", events, "--role", role, "--json"]
        if let ca = receiver.caFile { arguments += ["--ca", ca] }
        let created = try operated.ctl.run(arguments)
        #expect(created.status == 0, "\(created.error)")
        let json = try #require(created.json as? [String: Any])
        return (try #require(json["id"] as? String), try #require(json["secret"] as? String))
    }

    /// The requests received once there are at least `count` (a bound on waiting only).
    static func received(_ receiver: WebhookReceiver, atLeast count: Int) async throws -> [WebhookReceiver.Request] {
        for _ in 0..<600 {
            if receiver.requests.count >= count { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        return receiver.requests
    }

    /// The requests received once `done` holds for them (a bound on waiting only).
    static func received(_ receiver: WebhookReceiver,
                         until done: ([WebhookReceiver.Request]) -> Bool) async throws -> [WebhookReceiver.Request] {
        for _ in 0..<600 {
            if done(receiver.requests) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        return receiver.requests
    }

    static func show(_ operated: OperatedServer, _ id: String) throws -> [String: Any] {
        let shown = try operated.ctl.run(["webhook", "show", id, "--json"])
        return (shown.json as? [String: Any]) ?? [:]
    }

    @Test func aDevicesPushArrivesSignedWithTheFieldsThatChanged() async throws {
        let dir = try TemporaryDirectory()
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        defer { Task { await receiver.stop() } }
        let operated = try await OperatedServer(dir, arguments: Self.arguments)
        defer { operated.server.stop() }
        let hook = try Self.create(operated, receiver, events: "opportunity.stage,account")
        let laptop = try await operated.enroll("laptop")

        let (account, deal) = try laptop.local { store in
            try store.transaction {
                let account = try store.create("account", ["name": .text("Acme Corp")]).id
                let deal = try store.create("opportunity", ["name": .text("Fleet"), "account": .text(account.uuidString),
                                                            "stage": .text("prospecting"), "amount": .real(1000)]).id
                return (account, deal)
            }
        }
        try await laptop.sync()
        var requests = try await Self.received(receiver, atLeast: 2)
        #expect(requests.count == 2)
        // The name of a deal is not what the subscription asked for; its stage is.
        try laptop.local { try $0.update(deal, ["name": .text("Fleet renewal")]) }
        try await laptop.sync()
        try laptop.local { try $0.update(deal, ["stage": .text("proposal")]) }
        try await laptop.sync()
        requests = try await Self.received(receiver, atLeast: 3)
        #expect(requests.count == 3, "\(requests.map(\.json))")

        for request in requests {
            let signature = try #require(request.header("Rapport-Signature"))
            #expect(WebhookSignature.verify(header: signature, body: request.body, secret: hook.secret), "\(signature)")
            #expect(!WebhookSignature.verify(header: signature, body: request.body + [32], secret: hook.secret))
            #expect(request.header("Rapport-Event-Id") == request.json["id"] as? String)
            #expect(request.header("Content-Type") == "application/json")
        }
        let events = requests.map(\.json)
        #expect(events[0]["type"] as? String == "account.created" && events[0]["record_id"] as? String == account.uuidString.lowercased())
        #expect((events[0]["record"] as? [String: Any])?["name"] as? String == "Acme Corp")
        #expect(events[1]["type"] as? String == "opportunity.created" && events[1]["record_id"] as? String == deal.uuidString.lowercased())
        #expect(events[2]["type"] as? String == "opportunity.updated")
        let changed = try #require(events[2]["changed_fields"] as? [String])
        #expect(changed.contains("stage") && !changed.contains("name") && !changed.contains("amount"), "\(changed)")
        // The server's effects ran first: the stage's probability is in the record sent.
        #expect((events[2]["record"] as? [String: Any])?["probability"] as? Int == 50)
        let sequences = events.compactMap { $0["sequence"] as? Int }
        #expect(sequences == sequences.sorted() && Set(sequences).count == 3)

        let listed = try await operated.ctl.run(["webhook", "list", "--tenant", "acme"])
        #expect(listed.output.contains(hook.id) && listed.output.contains("enabled"))
        let shown = try Self.show(operated, hook.id)
        #expect(shown["cursor"] as? Int == sequences.last)
        #expect((shown["deliveries"] as? [[String: Any]])?.first?["status"] as? Int == 200)
        await #expect(try operated.ctl.run(["audit", "--tenant", "acme"]).output.contains("webhook create"))
    }

    /// A receiver that answers 500, never answers (the timeout), answers 503, then recovers:
    /// every event arrives, each record's in order; the log shows the failures.
    @Test func aReceiverThatFailsTimesOutAndRecoversGetsEveryEvent() async throws {
        let dir = try TemporaryDirectory()
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        defer { Task { await receiver.stop() } }
        receiver.answer { n in
            switch n {
            case 0: .status(500)
            case 1: .never
            case 2: .status(503)
            default: .status(200)
            }
        }
        let operated = try await OperatedServer(dir, arguments: Self.timingOut)
        defer { operated.server.stop() }
        let hook = try Self.create(operated, receiver, events: "case")
        let laptop = try await operated.enroll("laptop")
        var ids: [UUID] = []
        for round in 0..<3 {
            try laptop.local { store in
                try store.transaction {
                    if round == 0 {
                        for n in 0..<2 {
                            ids.append(try store.create("case", ["number": .text("C-\(n)"), "subject": .text("broken"),
                                                                 "priority": .text("normal"), "status": .text("new")]).id)
                        }
                    } else {
                        for id in ids { try store.update(id, ["status": .text(round == 1 ? "open" : "resolved")]) }
                    }
                }
            }
            try await laptop.sync()
        }
        // 3 failed attempts, then the events: a record changed several times while the
        // receiver was failing is sent as it is now, once, so wait for both as resolved.
        let resolved = Set(ids.map { $0.uuidString.lowercased() })
        let requests = try await Self.received(receiver) { requests in
            Set(requests.dropFirst(3).map(\.json).filter { ($0["record"] as? [String: Any])?["status"] as? String == "resolved" }
                .compactMap { $0["record_id"] as? String }) == resolved
        }
        #expect(requests.count >= 3 + 2)
        var delivered: [String: [String: Any]] = [:]
        for request in requests.dropFirst(3) {
            let event = request.json
            #expect(WebhookSignature.verify(header: request.header("Rapport-Signature") ?? "", body: request.body, secret: hook.secret))
            delivered[event["id"] as? String ?? ""] = event
        }
        for id in ids {
            let events = delivered.values.filter { $0["record_id"] as? String == id.uuidString.lowercased() }
                .sorted { ($0["sequence"] as? Int ?? 0) < ($1["sequence"] as? Int ?? 0) }
            #expect(events.first?["type"] as? String == "case.created", "\(events)")
            #expect((events.last?["record"] as? [String: Any])?["status"] as? String == "resolved", "the latest state arrives last")
        }
        // In the order sent, each record's sequences only grow.
        var last: [String: Int] = [:]
        for request in requests.dropFirst(3) {
            let event = request.json
            let record = event["record_id"] as? String ?? "", sequence = event["sequence"] as? Int ?? 0
            #expect(sequence >= last[record, default: 0])
            last[record] = sequence
        }
        let shown = try Self.show(operated, hook.id)
        #expect(shown["state"] as? String == "enabled" && shown["failures"] as? Int == 0)
        let log = try #require(shown["deliveries"] as? [[String: Any]])
        let errors = log.compactMap { $0["error"] as? String }
        #expect(errors.contains { $0.contains("500") } && errors.contains { $0.contains("503") }, "\(errors)")
        #expect(errors.contains { $0.contains("no complete answer") }, "the timeout is logged: \(errors)")
    }

    /// A rep's webhook: records a rep may not read are never sent, fields a rep may not see are
    /// left out.
    @Test func aRolesWebhookSeesWhatAUserOfTheRoleSees() async throws {
        let dir = try TemporaryDirectory()
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        defer { Task { await receiver.stop() } }
        let operated = try await OperatedServer(dir, arguments: Self.arguments)
        defer { operated.server.stop() }
        // Reps of this tenant see every account, without its annual revenue (hidden by default),
        // and only their own leads.
        await #expect(try operated.ctl.run(["role", "set", "rep", "--tenant", "acme", "account", "--read", "all"]).status == 0)
        _ = try Self.create(operated, receiver, events: "account,lead", role: "rep")
        let laptop = try await operated.enroll("laptop")
        try laptop.local { store in
            try store.transaction {
                try store.create("lead", ["last_name": .text("Secret"), "status": .text("new"), "owner": .text("anna@acme.example")])
                try store.create("account", ["name": .text("Acme Corp"), "annual_revenue": .real(5_000_000)])
            }
        }
        try await laptop.sync()
        let requests = try await Self.received(receiver, atLeast: 1)
        // Nothing more is coming: the lead came first in the tenant's order and was passed over.
        #expect(requests.count == 1)
        let event = try #require(requests.first?.json)
        #expect(event["record_type"] as? String == "account")
        let record = try #require(event["record"] as? [String: Any])
        #expect(record["name"] as? String == "Acme Corp" && record["annual_revenue"] == nil, "\(record)")
    }

    /// Repeated failure disables the subscription with the reason; enabled again it delivers
    /// from where it stopped, and a redelivery from a cursor sends the same events again.
    @Test func repeatedFailureDisablesThenEnableAndRedeliver() async throws {
        let dir = try TemporaryDirectory()
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        defer { Task { await receiver.stop() } }
        receiver.answer { _ in .status(500) }
        let operated = try await OperatedServer(dir, arguments: Self.arguments)
        defer { operated.server.stop() }
        let hook = try Self.create(operated, receiver, events: "account")
        let start = try #require(Self.show(operated, hook.id)["cursor"] as? Int)
        let laptop = try await operated.enroll("laptop")
        try laptop.local { _ = try $0.create("account", ["name": .text("Acme Corp")]) }
        try await laptop.sync()

        var shown: [String: Any] = [:]
        for _ in 0..<600 {
            shown = try Self.show(operated, hook.id)
            if shown["state"] as? String == "disabled" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(shown["state"] as? String == "disabled")
        let reason = try #require(shown["disabled_reason"] as? String)
        #expect(reason.contains("4 failed deliveries") && reason.contains("500"), "\(reason)")
        await #expect(try operated.ctl.run(["webhook", "list", "--tenant", "acme"]).output.contains("disabled: "))
        #expect(receiver.requests.count == 4)

        receiver.answer { _ in .status(200) }
        await #expect(try operated.ctl.run(["webhook", "enable", hook.id]).status == 0)
        let first = try await Self.received(receiver, atLeast: 5)
        #expect(first.count == 5, "delivered once enabled")
        let id = try #require(first.last?.json["id"] as? String)
        for _ in 0..<600 {
            if try Self.show(operated, hook.id)["cursor"] as? Int != start { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let delivered = try Self.show(operated, hook.id)
        #expect(delivered["state"] as? String == "enabled" && (delivered["cursor"] as? Int ?? 0) > start)

        await #expect(try operated.ctl.run(["webhook", "redeliver", hook.id, "--from", "\(start)"]).status == 0)
        let again = try await Self.received(receiver, atLeast: 6)
        #expect(again.count == 6)
        #expect(again.last?.json["id"] as? String == id, "the same event, the same id")
        await #expect(try operated.ctl.run(["webhook", "show", "wh_nope"]).status == 2)
        await #expect(try operated.ctl.run(["webhook", "create", "--tenant", "acme", "--url", "http://example.com/x", "--events", "account"]).status == 1)
        await #expect(try operated.ctl.run(["webhook", "create", "--tenant", "acme", "--url", receiver.url, "--events", "account.colour"]).status == 1)
        await #expect(try operated.ctl.run(["webhook", "delete", hook.id]).status == 0)
        await #expect(try operated.ctl.run(["webhook", "list", "--tenant", "acme", "--json"]).json as? [Any] != nil)
    }

    /// While the receiver holds a delivery unanswered, devices push and pull as usual.
    @Test func aSlowReceiverDoesNotSlowADevicesSync() async throws {
        let dir = try TemporaryDirectory()
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        defer { Task { await receiver.stop() } }
        receiver.answer { _ in .held }
        let operated = try await OperatedServer(dir, arguments: Self.arguments + ["--webhook-timeout", "600"])
        defer { operated.server.stop() }
        _ = try Self.create(operated, receiver, events: "account")
        let laptop = try await operated.enroll("laptop")
        let phone = try await operated.enroll("phone")
        try laptop.local { _ = try $0.create("account", ["name": .text("First")]) }
        try await laptop.sync()
        for _ in 0..<600 {
            if receiver.heldCount > 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(receiver.heldCount == 1, "the receiver holds the first delivery")

        let second = try laptop.local { try $0.create("account", ["name": .text("Second")]).id }
        try await laptop.sync()
        try await phone.sync()
        #expect(try phone.local { try $0.record(second) } != nil, "the phone got the push while the receiver held the webhook")
        #expect(receiver.requests.count == 1, "the second waits behind the first")

        receiver.answer { _ in .status(200) }
        receiver.release()
        let requests = try await Self.received(receiver, atLeast: 2)
        #expect(requests.last?.json["record_id"] as? String == second.uuidString.lowercased())
    }
}
