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
        case "churn.inactivity_days": churnInactivityDays = try days()
        case "churn.activity_period_days": activityPeriodDays = try days()
        case "renewal.window_days": renewalWindowDays = try days()
        case "churn.activity_drop_share":
            guard let share = Double(value), share.isFinite, share >= 0, share <= 1 else {
                throw CRMError.invalidSetting(key: key, value: raw, expected: "a share from 0 to 1")
            }
            activityDropShare = share
        default:
            let parts = key.split(separator: ".")
            guard parts.count == 3, parts[0] == "sla", let current = sla[String(parts[1])] else { return }
            var updated = current
            switch parts[2] {
            case "response_hours": updated.responseHours = try number()
            case "resolution_hours": updated.resolutionHours = try number()
            default: return
            }
            sla[String(parts[1])] = updated
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
}

extension PipelineStage {
    /// A stage as the rules and reports name its flags.
    public init(name: String, position: Int, probability: Int, closed: Bool, won: Bool = false) {
        self.init(name: name, position: position, probability: probability, isClosed: closed, isWon: won)
    }

    public var closed: Bool { isClosed }
    public var won: Bool { isWon }
}
