import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// Orders an ERP's device pushes to a real `rapportd`: the server's rule pass tiers their
/// account by spend, as the tenant's `tier.basis` says, and the tier syncs back.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct OrderTieringTests {
    @Test func pushedOrdersTierTheirAccountAtTheServer() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir, arguments: ["--rules-interval", "1"])
        defer { operated.server.stop() }
        let erp = try await operated.enroll("erp")
        let phone = try await operated.enroll("phone")
        let today = CRMDate.format(day: CRMDate.seconds(Date()) / 86_400)
        let (account, setting) = try erp.local { store in
            try store.transaction {
                let setting = try store.create("setting", ["key": .text("tier.basis"), "value": .text("orders")]).id
                let account = try store.create("account", ["name": .text("Acme Corp")]).id
                for (number, amount, status) in [("SO-1", 400_000.0, "paid"), ("SO-2", 150_000.0, "invoiced"),
                                                 ("SO-3", 5_000_000.0, "draft")] {
                    try store.create("order", ["account": .text(account.uuidString), "number": .text(number),
                                               "date": .text(today), "amount": .real(amount), "currency": .text("EUR"),
                                               "status": .text(status)])
                }
                return (account, setting)
            }
        }
        try await erp.sync()

        /// The account's tier as the phone receives it, once it is `expected` (bounded wait
        /// for the server's next pass, not a measure of speed).
        func tierOnPhone(becomes expected: String) async throws -> String? {
            var tier: String?
            for _ in 0..<300 {
                try await phone.sync()
                tier = try phone.local { try $0.record(account)?.text("tier") }
                if tier == expected { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            return tier
        }
        #expect(try await tierOnPhone(becomes: "gold") == "gold", "550,000 of orders in 12 months; the draft does not count")

        // The ERP cancels the biggest order: 150,000 is left, bronze.
        let big = try #require(try erp.local { store in
            try store.records(ofType: "order").first { $0.text("number") == "SO-1" }?.id
        })
        try erp.local { try $0.update(big, ["status": .text("cancelled")]) }
        try await erp.sync()
        #expect(try await tierOnPhone(becomes: "bronze") == "bronze")

        // A typo in the setting is refused by the server, and the tier stays as it was.
        try erp.local { try $0.update(setting, ["value": .text("invoices")]) }
        try await erp.sync()
        try await phone.sync()
        #expect(try phone.local { try $0.record(setting)?.text("value") } == "orders")
    }
}
