import Foundation
import ReplicaStore
import SyncModel

/// Why a rule, report, import or export could not run.
public enum CRMError: Error, Equatable, CustomStringConvertible {
    /// A `setting` record holds a value its key cannot take.
    case invalidSetting(key: String, value: String, expected: String)
    /// A record type the CRM schema does not have.
    case unknownRecordType(String)
    /// A CSV text that is not RFC 4180, at a 1-based record (row) and line.
    case malformedCSV(row: Int, line: Int, reason: String)
    /// A column mapping that names a field the record type does not have, or a column twice.
    case invalidMapping(String)
    /// A record a rule was asked to act on does not exist or is of another type.
    case recordNotFound(type: String, id: UUID)

    public var description: String {
        switch self {
        case .invalidSetting(let key, let value, let expected):
            "setting '\(key)' is '\(value)', expected \(expected)"
        case .unknownRecordType(let type): "no record type '\(type)' in the CRM schema"
        case .malformedCSV(let row, let line, let reason): "CSV row \(row) (line \(line)): \(reason)"
        case .invalidMapping(let reason): "column mapping: \(reason)"
        case .recordNotFound(let type, let id): "no live \(type) \(id.uuidString.lowercased())"
        }
    }
}

/// The tenant's configuration of the rules, read from its `setting` records so that a device
/// computes tiers, deadlines and warnings exactly as the server does.
///
/// Every value has a default, so a tenant that configured nothing still gets sensible rules, and
/// a setting a newer version adds is ignored here rather than refused.
public struct CRMSettings: Sendable, Equatable, Codable {
    /// Won revenue over the last 12 months an account must exceed for each tier.
    public struct TierThresholds: Sendable, Equatable, Codable {
        public var vip: Double = 1_000_000
        public var gold: Double = 500_000
        public var silver: Double = 200_000
        public var bronze: Double = 100_000
        public init() {}
    }

    /// How quickly a case of one priority must be answered and resolved.
    public struct SLA: Sendable, Equatable, Codable {
        public var responseHours: Double
        public var resolutionHours: Double
        public init(responseHours: Double, resolutionHours: Double) {
            self.responseHours = responseHours
            self.resolutionHours = resolutionHours
        }
    }

    public var tiers = TierThresholds()

    /// What an account's spend for its tier is summed from: its won opportunities (the default,
    /// for a tenant without an ERP), its orders (`CRMSchema.orderRevenueStatuses`), or both.
    public enum TierBasis: String, Sendable, Equatable, Codable, CaseIterable {
        case opportunities, orders, both

        public var countsOpportunities: Bool { self != .orders }
        public var countsOrders: Bool { self != .opportunities }
    }
    /// Setting `tier.basis`.
    public var tierBasis = TierBasis.opportunities
    /// By case priority (`CRMSchema.casePriorities`).
    public var sla: [String: SLA] = [
        "urgent": SLA(responseHours: 1, resolutionHours: 8),
        "high": SLA(responseHours: 4, resolutionHours: 24),
        "normal": SLA(responseHours: 8, resolutionHours: 72),
        "low": SLA(responseHours: 24, resolutionHours: 168),
    ]
    /// A customer with no activity and no won deal for this many days is a churn risk.
    public var churnInactivityDays = 90
    /// An account whose activities in the latest period fell by more than this share against the
    /// period before is warned about (0.5: fewer than half as many).
    public var activityDropShare = 0.5
    /// The length of the two periods compared for the activity drop.
    public var activityPeriodDays = 90
    /// Accounts whose renewal date falls within this many days are warned about when no
    /// opportunity is open on them.
    public var renewalWindowDays = 60

    /// By complaint severity (`CRMSchema.complaintSeverities`): a complaint's deadlines are the
    /// stricter of these and its priority's.
    public var complaintSLA: [String: SLA] = [
        "critical": SLA(responseHours: 1, resolutionHours: 8),
        "major": SLA(responseHours: 2, resolutionHours: 24),
        "minor": SLA(responseHours: 4, resolutionHours: 48),
    ]
    /// A core account's cases get their SLA hours multiplied by this (0.5: twice as fast).
    public var coreSLAFactor = 0.5
    /// Days after a case closes that its satisfaction follow-up is due.
    public var followUpDays = 1

    /// The thresholds of the value segments (`CRMSchema.valueSegments`), each over the last 12
    /// months unless said otherwise.
    public struct SegmentThresholds: Sendable, Equatable, Codable {
        /// Won revenue from which an account is core (its contribution).
        public var coreRevenue: Double = 250_000
        /// Won deals from which an account is core, whatever their amounts.
        public var coreOrders = 5
        /// Open pipeline (amounts of open opportunities) from which an account is potential.
        public var potentialPipeline: Double = 100_000
        /// Activities in the last `activityPeriodDays` from which an account with no won
        /// revenue is still regular rather than marginal.
        public var regularActivities = 3
        public init() {}
    }
    public var segments = SegmentThresholds()

    /// What a write that breaks a contact's consent gets: refused (the default), or accepted
    /// with a `consent_warning` on the record for a manager to review.
    public enum ConsentEnforcement: String, Sendable, Equatable, Codable { case refuse, flag }
    public var consentEnforcement = ConsentEnforcement.refuse

    /// The computed fields (`type.field`, as `account.tier`) a user may set by hand; the rules
    /// then leave the value alone and the record lists the field in `overrides`.
    public var overridable: Set<String> = []

    /// The defaults.
    public init() {}

    /// The `setting` keys this version understands, with what each sets.
    public static let keys: [String] = {
        var keys = ["tier.vip", "tier.gold", "tier.silver", "tier.bronze", "tier.basis",
                    "churn.inactivity_days", "churn.activity_drop_share", "churn.activity_period_days",
                    "renewal.window_days", "sla.core_factor", "case.follow_up_days",
                    "segment.core_revenue", "segment.core_orders", "segment.potential_pipeline",
                    "segment.regular_activities", "consent.enforcement"]
        for priority in CRMSchema.casePriorities {
            keys += ["sla.\(priority).response_hours", "sla.\(priority).resolution_hours"]
        }
        for severity in CRMSchema.complaintSeverities {
            keys += ["sla.complaint.\(severity).response_hours", "sla.complaint.\(severity).resolution_hours"]
        }
        keys += CRMDerivedFields.all.map { "override.\($0)" }
        return keys
    }()

    /// The settings of the tenant whose records `store` holds, defaults where none is set, and
    /// the `setting` records whose value their key cannot take.
    ///
    /// Lenient, because one bad record (a value written before the store rules refused it, or
    /// by an older version) must not stop every report and rule of the tenant: such a setting
    /// keeps its default and is returned as a `SettingProblem` for the caller to show, rather
    /// than silently running the rules on a default the admin did not choose.
    public static func load(from store: ReplicaStore) throws -> (settings: CRMSettings, problems: [SettingProblem]) {
        var settings = CRMSettings()
        var problems: [SettingProblem] = []
        for record in try store.records(ofType: "setting") {
            guard let key = record.text("key") else { continue }
            let value = record.text("value") ?? ""
            do {
                try settings.apply(key: key, value: value)
            } catch .invalidSetting(_, _, let expected) {
                problems.append(SettingProblem(key: key, record: record.id, value: value, expected: expected))
            } catch {
                // `apply` throws only `invalidSetting`.
            }
        }
        return (settings, problems.sorted { ($0.key, $0.record.uuidString) < ($1.key, $1.record.uuidString) })
    }

    /// Settings from key/value pairs; later pairs win, unknown keys are ignored.
    ///
    /// - Throws: `CRMError.invalidSetting` naming the key and value of the first pair whose value
    ///   its key cannot take.
    public init(_ pairs: [(key: String, value: String)]) throws {
        self.init()
        for (key, value) in pairs { try apply(key: key, value: value) }
    }

    /// What a value of `key` must look like when `value` is not one (`nil`: it is, or the key is
    /// not one this version knows). The store rules refuse such a `setting` record with it.
    public static func expectedForm(ofKey key: String, value: String) -> String? {
        var settings = CRMSettings()
        do {
            try settings.apply(key: key, value: value)
            return nil
        } catch .invalidSetting(_, _, let expected) {
            return expected
        } catch {
            return nil
        }
    }

    /// Sets `key` to `value`; an unknown key changes nothing, so that a setting a newer version
    /// adds is ignored rather than refused.
    mutating func apply(key: String, value raw: String) throws(CRMError) {
        let value = raw.trimmingCharacters(in: .whitespaces)
        func number() throws(CRMError) -> Double {
            guard let number = Double(value), number.isFinite, number >= 0 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a number of at least 0")
            }
            return number
        }
        func count() throws(CRMError) -> Int {
            guard let count = Int(value), count >= 0 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a whole number of at least 0")
            }
            return count
        }
        func days() throws(CRMError) -> Int {
            guard let days = Int(value), days > 0 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a whole number of days above 0")
            }
            return days
        }
        switch key {
        case "tier.vip": tiers.vip = try number()
        case "tier.gold": tiers.gold = try number()
        case "tier.silver": tiers.silver = try number()
        case "tier.bronze": tiers.bronze = try number()
        case "tier.basis":
            guard let basis = TierBasis(rawValue: value) else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "opportunities, orders or both")
            }
            tierBasis = basis
        case "churn.inactivity_days": churnInactivityDays = try days()
        case "churn.activity_period_days": activityPeriodDays = try days()
        case "renewal.window_days": renewalWindowDays = try days()
        case "case.follow_up_days": followUpDays = try days()
        case "segment.core_revenue": segments.coreRevenue = try number()
        case "segment.potential_pipeline": segments.potentialPipeline = try number()
        case "segment.core_orders": segments.coreOrders = try count()
        case "segment.regular_activities": segments.regularActivities = try count()
        case "sla.core_factor":
            guard let factor = Double(value), factor.isFinite, factor > 0, factor <= 1 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a factor above 0 and at most 1")
            }
            coreSLAFactor = factor
        case "consent.enforcement":
            guard let enforcement = ConsentEnforcement(rawValue: value) else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "refuse or flag")
            }
            consentEnforcement = enforcement
        case _ where key.hasPrefix("override."):
            let field = String(key.dropFirst("override.".count))
            guard CRMDerivedFields.all.contains(field) else { return }
            switch value.lowercased() {
            case "true", "yes", "allowed": overridable.insert(field)
            case "false", "no", "refused", "": overridable.remove(field)
            default: throw CRMError.invalidSetting(key: key, value: raw, expected: "true or false")
            }
        case "churn.activity_drop_share":
            guard let share = Double(value), share.isFinite, share >= 0, share <= 1 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a share from 0 to 1")
            }
            activityDropShare = share
        default:
            let parts = key.split(separator: ".").map(String.init)
            guard parts.first == "sla", parts.count == 3 || (parts.count == 4 && parts[1] == "complaint") else { return }
            let name = parts[parts.count - 2]
            guard var updated = parts.count == 3 ? sla[name] : complaintSLA[name] else { return }
            switch parts[parts.count - 1] {
            case "response_hours": updated.responseHours = try number()
            case "resolution_hours": updated.resolutionHours = try number()
            default: return
            }
            if parts.count == 3 { sla[name] = updated } else { complaintSLA[name] = updated }
        }
    }
}

/// A `setting` record whose value its key cannot take. The rules and reports run with the
/// key's default instead and report this, so that one bad record neither stops them for the
/// whole tenant nor goes unnoticed.
public struct SettingProblem: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The setting's key (`churn.inactivity_days`).
    public var key: String
    /// The `setting` record holding the value, to correct or delete.
    public var record: UUID
    /// The value as stored.
    public var value: String
    /// What a value of the key must look like ("a whole number of days above 0").
    public var expected: String

    public init(key: String, record: UUID, value: String, expected: String) {
        self.key = key
        self.record = record
        self.value = value
        self.expected = expected
    }

    public var description: String {
        "setting '\(key)' (record \(record.uuidString.lowercased())) is '\(value)', expected \(expected); its default is used"
    }
}

/// The tenant's sales pipeline for the rules and reports: its stages in order (see
/// `PipelineStage`, which also holds the default pipeline and the loading rules).
public struct CRMPipeline: Sendable, Equatable {
    public typealias Stage = PipelineStage

    /// In pipeline order.
    public var stages: [Stage]

    public init(stages: [Stage]) {
        self.stages = stages.sorted { ($0.position, $0.name) < ($1.position, $1.name) }
    }

    /// Prospecting 10, qualification 25, proposal 50, negotiation 75, closed won 100, closed lost 0.
    public static let `default` = CRMPipeline(stages: PipelineStage.defaultPipeline)

    /// The pipeline of the tenant whose records `store` holds.
    public static func load(from store: ReplicaStore) throws -> CRMPipeline {
        CRMPipeline(stages: try PipelineStage.pipeline(in: RecordLookup(store)))
    }

    /// The stage named `name`, `nil` for a name the pipeline does not have.
    public func stage(_ name: String?) -> Stage? {
        guard let name else { return nil }
        return stages.first { $0.name == name }
    }

    /// Why an opportunity cannot be at `name`, as the store's rules and the import say it;
    /// `nil` when `name` is a stage of this pipeline. `written`: the value a file held, when
    /// an import translated it to `name`.
    public func refusal(ofStage name: String, written: String? = nil) -> String? {
        guard stage(name) == nil else { return nil }
        let quoted = written.map { $0 == name ? "'\(name)'" : "'\($0)' (read as '\(name)')" } ?? "'\(name)'"
        return "\(quoted) is not a stage of this tenant's pipeline (\(stages.map(\.name).joined(separator: ", ")))"
    }
}

extension PipelineStage {
    /// A stage as the rules and reports name its flags.
    public init(name: String, position: Int, probability: Int, closed: Bool, won: Bool = false) {
        self.init(name: name, position: position, probability: probability, isClosed: closed, isWon: won)
    }

    public var closed: Bool { isClosed }
    public var won: Bool { isWon }
}
