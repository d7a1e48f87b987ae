import Foundation
import ReplicaStore
import SyncModel

/// The writes of the rules that change with time alone (tiers, churn flags, SLA breaches), made
/// as ordinary local writes of the tenant's server. What follows from a change is written by
/// `CRMChangeEffects` where the change is made.
public struct CRMEffects {
    public let store: ReplicaStore
    public let rules: CRMRules

    /// Effects on `store` under `rules` (settings, pipeline and clock).
    public init(store: ReplicaStore, rules: CRMRules) {
        self.store = store
        self.rules = rules
    }

    /// Effects on `store` with its tenant's own settings and pipeline, at `now`.
    public init(store: ReplicaStore, now: Date) throws {
        self.init(store: store, rules: try CRMRules(store: store, now: now))
    }

    /// How many records `applyComputed` changed, per rule.
    public struct Applied: Sendable, Equatable, Codable {
        public var tiers = 0
        public var churnFlags = 0
        public var breaches = 0
        public init(tiers: Int = 0, churnFlags: Int = 0, breaches: Int = 0) {
            self.tiers = tiers
            self.churnFlags = churnFlags
            self.breaches = breaches
        }
    }

    /// Writes the computed tier and churn flag of every account and the breach flag of every
    /// case where the stored value differs, in one transaction. Running it again, or on another
    /// replica with the same data, writes nothing.
    @discardableResult
    public func applyComputed() throws -> Applied {
        try store.transaction {
            let accounts = try store.records(ofType: "account")
            let opportunities = try store.records(ofType: "opportunity")
            let activities = try store.records(ofType: "activity")
            let contacts = try store.records(ofType: "contact")
            let tiers = rules.tiers(accounts: accounts, opportunities: opportunities)
            let risks = rules.churnRisks(accounts: accounts, opportunities: opportunities, activities: activities, contacts: contacts)
            var applied = Applied()
            for account in accounts {
                let tierChanged = account.text("tier") != tiers[account.id]
                let riskChanged = account.flag("churn_risk") != risks.contains(account.id)
                guard tierChanged || riskChanged else { continue }
                var changes: [String: FieldValue] = [:]
                if tierChanged, let tier = tiers[account.id] { changes["tier"] = .text(tier); applied.tiers += 1 }
                if riskChanged { changes["churn_risk"] = .bool(risks.contains(account.id)); applied.churnFlags += 1 }
                try store.update(account.id, changes)
            }
            for supportCase in try store.records(ofType: "case") {
                let breached = rules.isBreached(supportCase)
                if supportCase.flag("sla_breached") != breached {
                    try store.update(supportCase.id, ["sla_breached": .bool(breached)])
                    applied.breaches += 1
                }
            }
            return applied
        }
    }
}
