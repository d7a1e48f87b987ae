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

    /// The defaults.
    public init() {}

    /// The `setting` keys this version understands, with what each sets.
    public static let keys: [String] = {
        var keys = ["tier.vip", "tier.gold", "tier.silver", "tier.bronze",
                    "churn.inactivity_days", "churn.activity_drop_share", "churn.activity_period_days",
                    "renewal.window_days"]
        for priority in CRMSchema.casePriorities {
            keys += ["sla.\(priority).response_hours", "sla.\(priority).resolution_hours"]
        }
        return keys
    }()

    /// The settings of the tenant whose records `store` holds, defaults where none is set.
    ///
    /// - Throws: `CRMError.invalidSetting` naming the key and value, rather than silently running
    ///   the rules on a default the admin did not choose.
    public static func load(from store: ReplicaStore) throws -> CRMSettings {
        var pairs: [(String, String)] = []
        for record in try store.records(ofType: "setting") {
            if let key = record.text("key") { pairs.append((key, record.text("value") ?? "")) }
        }
        return try CRMSettings(pairs)
    }

    /// Settings from key/value pairs; later pairs win, unknown keys are ignored.
    public init(_ pairs: [(key: String, value: String)]) throws {
        self.init()
        for (key, raw) in pairs {
            let value = raw.trimmingCharacters(in: .whitespaces)
            func number(positive: Bool = true) throws -> Double {
                guard let number = Double(value), number.isFinite, positive ? number >= 0 : true else {
                    throw CRMError.invalidSetting(key: key, value: raw, expected: "a number of at least 0")
                }
                return number
            }
            func days() throws -> Int {
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
            case "churn.inactivity_days": churnInactivityDays = try days()
            case "churn.activity_period_days": activityPeriodDays = try days()
            case "renewal.window_days": renewalWindowDays = try days()
            case "churn.activity_drop_share":
                let share = try number()
                guard share <= 1 else { throw CRMError.invalidSetting(key: key, value: raw, expected: "a share from 0 to 1") }
                activityDropShare = share
            default:
                let parts = key.split(separator: ".")
                guard parts.count == 3, parts[0] == "sla", let current = sla[String(parts[1])] else { continue }
                var updated = current
                switch parts[2] {
                case "response_hours": updated.responseHours = try number()
                case "resolution_hours": updated.resolutionHours = try number()
                default: continue
                }
                sla[String(parts[1])] = updated
            }
        }
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
}

extension PipelineStage {
    /// A stage as the rules and reports name its flags.
    public init(name: String, position: Int, probability: Int, closed: Bool, won: Bool = false) {
        self.init(name: name, position: position, probability: probability, isClosed: closed, isWon: won)
    }

    public var closed: Bool { isClosed }
    public var won: Bool { isWon }
}
