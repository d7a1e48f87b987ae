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

    /// Writes what the rules compute from time and data (tiers, churn and renewal flags, value
    /// segments, SLA breaches, escalations) where the stored value differs: the scheduled pass
    /// (`CRMScheduledPass`) with these rules. Running it again, or on another replica with the
    /// same data, writes nothing.
    @discardableResult
    public func applyComputed(manager: @escaping (String) -> String? = { _ in nil }) throws -> CRMScheduledPass.Report {
        try CRMScheduledPass(rules: rules, manager: manager).run(on: store)
    }
}
