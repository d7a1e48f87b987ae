import Foundation
import SyncModel

/// Which CSV column fills which field, for files exported by other CRMs.
///
/// Besides the record type's own fields, a column may fill one of the import's own targets:
/// `external_id` (the other system's id: the row's identity, so a re-import finds the record it
/// made before), `account_name` (a contact's company, found by name or created), and
/// `account_lifecycle_stage` (the lifecycle of an account the import creates).
public struct CSVMapping: Sendable, Equatable {
    /// Targets that are not fields of the record type.
    public static let importTargets = ["external_id", "account_name", "account_lifecycle_stage", "optout"]

    /// Column title → target; titles compare trimmed and case-insensitively.
    public var columns: [String: String]
    /// Target → the source's value → the value Rapport has for it: a Salesforce stage
    /// `Closed Won` is `closed_won`. Source values compare by their letters and digits,
    /// lower-cased (`Closed - Won` is the same); a value without a translation is imported as
    /// written.
    public var values: [String: [String: String]]

    public init(_ columns: [String: String], values: [String: [String: String]] = [:]) {
        self.columns = Dictionary(columns.map { (Self.normalise($0.key), $0.value) }, uniquingKeysWith: { $1 })
        self.values = values.mapValues { Dictionary($0.map { (ImportProfile.key($0.key), $0.value) }, uniquingKeysWith: { $1 }) }
    }

    /// How column titles, account names and owners compare: trimmed, lower-cased, each run of
    /// white space inside one space, so that "Carla  Conti", typed with two spaces in one system,
    /// is the Carla Conti of another.
    public static func normalise(_ title: String) -> String {
        CRMText.spacedOnce(CRMText.trimmed(title)).lowercased()
    }

    /// The target of a column, `nil` when the column is not imported.
    public func target(ofColumn title: String) -> String? { columns[Self.normalise(title)] }

    /// A contact export of Salesforce ("First Name", "Last Name", "Account Name", "Mobile"...).
    public static let salesforceContact = CSVMapping([
        "Contact ID": "external_id", "First Name": "first_name", "Last Name": "last_name", "Title": "title",
        "Department": "department", "Email": "email", "Phone": "phone", "Mobile": "mobile",
        "Account Name": "account_name", "Birthdate": "birthday", "Do Not Call": "do_not_call",
        "Email Opt Out": "optout", "Contact Owner": "owner",
    ])

    /// A contact export of HubSpot ("Phone Number", "Company Name", "Job Title", "Lifecycle Stage"...).
    public static let hubspotContact = CSVMapping([
        "Record ID": "external_id", "First Name": "first_name", "Last Name": "last_name", "Email": "email",
        "Phone Number": "phone", "Mobile Phone Number": "mobile", "Company Name": "account_name",
        "Job Title": "title", "Lifecycle Stage": "account_lifecycle_stage",
        "Unsubscribed from all email": "optout", "Contact owner": "owner",
    ])

    /// Every column titled exactly like a field of `type` (as `CSVExporter` writes them), but
    /// counters and blobs, which an import cannot set.
    public static func fieldNames(of type: RecordType) -> CSVMapping {
        CSVMapping(Dictionary(uniqueKeysWithValues: type.fields.filter { $0.value != .counter && $0.value != .blob }.keys.map { ($0, $0) }))
    }

    /// `column=field` pairs, as `--map` gives them. The column title may contain `=` only
    /// before the last one.
    public static func parse(_ pairs: [String]) throws -> CSVMapping {
        var columns: [String: String] = [:]
        for pair in pairs {
            guard let equals = pair.lastIndex(of: "="), equals != pair.startIndex, pair.index(after: equals) != pair.endIndex else {
                throw CRMError.invalidMapping("'\(pair)' is not column=field")
            }
            let column = String(pair[..<equals]), field = String(pair[pair.index(after: equals)...]).trimmingCharacters(in: .whitespaces)
            guard columns[normalise(column)] == nil else { throw CRMError.invalidMapping("column '\(column)' is mapped twice") }
            columns[normalise(column)] = field
        }
        return CSVMapping(columns)
    }

    /// The mapping for a file with `header` for records of `type`: the built-in export shape
    /// that names most of its columns, else columns named like fields.
    public static func detect(header: [String], type: RecordType) -> CSVMapping {
        let builtIns: [CSVMapping] = type.name == "contact" ? [.salesforceContact, .hubspotContact] : []
        let own = fieldNames(of: type)
        let scored = ([own] + builtIns).map { mapping in (mapping, header.filter { mapping.target(ofColumn: $0) != nil }.count) }
        return scored.max { $0.1 < $1.1 }!.0
    }

    /// Checks that every target exists for `type` and is not a counter (counters only take
    /// increments), and that no two columns of `header` fill the same target.
    func check(header: [String], type: RecordType, customFields: Set<String> = []) throws {
        var seen: [String: String] = [:]
        for title in header {
            guard let target = target(ofColumn: title) else { continue }
            if !Self.importTargets.contains(target) && !customFields.contains(target) {
                guard let kind = type.fields[target] else {
                    throw CRMError.invalidMapping("column '\(title)' maps to '\(target)', which \(type.name) does not have")
                }
                guard kind != .counter && kind != .blob else {
                    throw CRMError.invalidMapping("column '\(title)' maps to \(kind.rawValue) field '\(target)', which an import cannot set")
                }
            } else if target == "account_name" && type.fields["account"] == nil {
                throw CRMError.invalidMapping("column '\(title)' maps to '\(target)', which \(type.name) does not take: it has no account")
            } else if target == "optout" && type.fields["consent_email"] == nil && !customFields.contains("consent_email") {
                throw CRMError.invalidMapping("column '\(title)' maps to '\(target)', which \(type.name) does not take: it has no e-mail consent")
            } else if target == "account_lifecycle_stage" && type.name != "contact" {
                throw CRMError.invalidMapping("column '\(title)' maps to '\(target)', which only a contact import takes")
            }
            if let other = seen[target] { throw CRMError.invalidMapping("columns '\(other)' and '\(title)' both map to '\(target)'") }
            seen[target] = title
        }
    }
}
