import CRM
import Foundation
import ReplicaStore
import SyncModel
import Testing
import TestScheduling

/// The `order` entity an ERP writes, and tiering by spend from orders, won deals or both
/// (`tier.basis`), through the scheduled pass the server runs.
@Suite struct OrderTests {
    @Test(.blocking) func anOrderIsValidatedLikeEveryOtherRecord() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        let account = try f.account("Acme")
        let id = try f.order(account, "SO-1001", amount: 1200.5, day: Fixture.day(-3), status: "invoiced")
        let typed = Order(try f.read(id))
        #expect(typed.account == account && typed.number == "SO-1001" && typed.amount == 1200.5 && typed.status == "invoiced")
        #expect(typed.currency == "EUR" && typed.date == Fixture.day(-3))
        let written = try CRMStore(store: f.store).create(Order(account: account, number: "SO-1002", date: Fixture.day(0), amount: 5))
        #expect(try f.read(written.id).text("status") == "confirmed")

        func refused(_ values: [String: FieldValue]) -> String? {
            var order: [String: FieldValue] = ["account": .text(account.uuidString), "number": .text("SO-9"), "amount": .real(1),
                                               "date": .text(Fixture.day(0)), "status": .text("paid")]
            order.merge(values) { $1 }
            do {
                try f.store.create("order", order.filter { $0.value != .null })
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(refused(["status": .text("shipped")])?.contains("status") == true)
        #expect(refused(["date": .text("15/06/2025")])?.contains("date") == true)
        #expect(refused(["amount": .real(-1)])?.contains("amount") == true)
        #expect(refused(["amount": .null])?.contains("amount") == true)
        #expect(refused(["account": .text(UUID().uuidString)])?.contains("account") == true)
        #expect(refused(["number": .null])?.contains("number") == true)
        #expect(try f.store.count(ofType: "order") == 2, "a refused order leaves nothing behind")
    }

    @Test(.blocking) func theTierBasisSettingIsChecked() throws {
        #expect(try CRMSettings([]).tierBasis == .opportunities)
        #expect(try CRMSettings([("tier.basis", "orders")]).tierBasis == .orders)
        #expect(try CRMSettings([("tier.basis", " both ")]).tierBasis == .both)
        #expect(throws: CRMError.invalidSetting(key: "tier.basis", value: "invoices", expected: "opportunities, orders or both")) {
            try CRMSettings([("tier.basis", "invoices")])
        }
        #expect(CRMSettings.keys.contains("tier.basis"))
    }

    /// One account with a won deal and orders: its tier under each basis, from the scheduled
    /// pass; drafts, cancelled orders and orders older than 12 months count for nothing.
    @Test(.blocking) func tiersFollowTheBasisTheTenantChose() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        let account = try f.account("Acme", lifecycle: "customer")
        try f.opportunity(account, stage: "closed_won", amount: 450_000, closed: Fixture.day(-20))
        try f.order(account, "SO-1", amount: 300_000, day: Fixture.day(-10), status: "paid")
        try f.order(account, "SO-2", amount: 260_000, day: Fixture.day(-364), status: "invoiced")
        try f.order(account, "SO-3", amount: 900_000, day: Fixture.day(-2), status: "draft")
        try f.order(account, "SO-4", amount: 900_000, day: Fixture.day(-2), status: "cancelled")
        try f.order(account, "SO-5", amount: 900_000, day: Fixture.day(-400), status: "paid")
        let other = try f.account("Beta", lifecycle: "customer")
        try f.order(other, "SO-6", amount: 100_001, day: Fixture.day(0))

        func tier(basis: String?) throws -> (String?, String?) {
            for setting in try f.store.records(ofType: "setting") { try f.store.delete(setting.id) }
            if let basis { try f.store.create("setting", ["key": .text("tier.basis"), "value": .text(basis)]) }
            try CRMScheduledPass(now: Fixture.now).run(on: f.store)
            return (try f.read(account).text("tier"), try f.read(other).text("tier"))
        }
        #expect(try tier(basis: nil) == ("silver", "standard"), "won deals only, by default: 450,000")
        #expect(try tier(basis: "orders") == ("gold", "bronze"), "560,000 of sales in 12 months")
        #expect(try tier(basis: "both") == ("vip", "bronze"), "1,010,000")
        #expect(try tier(basis: "opportunities") == ("silver", "standard"))

        let rules = CRMRules(settings: try CRMSettings([("tier.basis", "both")]), now: Fixture.now)
        #expect(rules.tiers(accounts: try f.store.records(ofType: "account"), opportunities: try f.store.records(ofType: "opportunity"),
                            orders: try f.store.records(ofType: "order")) == [account: "vip", other: "bronze"])
    }

    /// The built-in roles: a rep reads the orders of the accounts of their team like their
    /// opportunities, and cannot delete one.
    @Test(.blocking) func repsReadOrdersLikeOpportunities() throws {
        let rep = try #require(CRMAccess.defaultRoles.first { $0.name == "rep" })
        #expect(rep.types["order"] == rep.types["opportunity"])
        let admin = try #require(CRMAccess.defaultRoles.first { $0.name == "admin" })
        #expect(admin.types["order"]?.delete == .all)
        #expect(CRMAccess.ownership.parents["order"] == ["account"])
    }
}
