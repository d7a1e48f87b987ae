import Foundation
import ReplicaStore
import SyncModel

/// What an import did (or, in a dry run, would do), row by row where it matters.
public struct ImportReport: Sendable, Equatable, Codable {
    /// A row left out, and why.
    public struct Rejection: Sendable, Equatable, Codable {
        /// The CSV record number; the header is row 1.
        public var row: Int
        /// The field the problem is in, `nil` for the row as a whole.
        public var field: String?
        /// The column that field came from.
        public var column: String?
        public var reason: String
    }

    /// A row found to be a record that exists already: merged into it rather than created.
    public struct Merge: Sendable, Equatable, Codable {
        public var row: Int
        public var record: UUID
        /// `email`, `phone`, or `identity` (the same row, imported before).
        public var matchedBy: String
        /// Fields the row filled in because the record had no value; never an overwrite.
        public var filledFields: [String]
    }

    public var type: String
    public var dryRun: Bool
    /// Data rows read (the header not counted).
    public var rows = 0
    public var imported = 0
    public var merges: [Merge] = []
    public var rejections: [Rejection] = []
    /// Accounts created for contacts whose company the store did not have.
    public var accountsCreated = 0
    /// Columns of the file that no mapping took, so a person sees what was left behind.
    public var ignoredColumns: [String] = []

    public var merged: Int { merges.count }
    public var rejected: Int { rejections.count }

    /// One line for a terminal.
    public var summary: String {
        "\(dryRun ? "dry run: would import" : "imported") \(imported) \(type) record(s) of \(rows) row(s), "
            + "merged \(merged) duplicate(s), rejected \(rejected), created \(accountsCreated) account(s)"
    }
}

/// An import stopped by the store (locked too long, disk full, damaged file), not by a row's
/// content: nothing of the batch in hand was written. `report` counts what the batches before
/// it committed; running the same import again creates nothing twice and finishes it.
public struct ImportInterrupted: Error, CustomStringConvertible {
    /// What the committed batches did.
    public var report: ImportReport
    /// The first CSV row of the batch that rolled back.
    public var atRow: Int
    public var cause: any Error

    public var description: String {
        "the import stopped at row \(atRow) because the store failed: \(cause). "
            + "\(report.imported) record(s) of the rows before it are in; running the same import again finishes it without duplicates"
    }
}

/// Imports records of one type from CSV into a store, as local writes that then sync.
///
/// A bad row is reported (row, field, reason) and skipped, never blocking the good ones. A row
/// that matches an existing record by normalised e-mail or phone, or by its identity from a
/// previous run, is merged into it (empty fields filled, nothing overwritten), so re-running an
/// import changes nothing. New records get ids derived from the row's identity (`external_id`,
/// else e-mail, else phone, else the row's values), so two replicas importing the same file make
/// the same records. Rows are written in transactions of `batchSize`.
public struct CSVImporter {
    public struct Options: Sendable {
        /// Check and report everything, write nothing.
        public var dryRun = false
        /// Rows per transaction: large enough that commits do not dominate, small enough that
        /// a long import does not hold the store's write lock for its whole length.
        public var batchSize = 2_000
        /// For phone numbers written without `+` (see `ContactKey.phone`).
        public var defaultCountryPrefix: String?
        /// Create an account for an `account_name` the store does not have (otherwise the row is
        /// rejected).
        public var createsMissingAccounts = true
        public init() {}
    }

    public let store: ReplicaStore
    public let type: String
    /// `nil`: detected from the header (`CSVMapping.detect`).
    public let mapping: CSVMapping?
    public let options: Options

    public init(store: ReplicaStore, type: String, mapping: CSVMapping? = nil, options: Options = Options()) {
        self.store = store
        self.type = type
        self.mapping = mapping
        self.options = options
    }

    /// Imports a CSV text whose first record is the header.
    public func run(csv text: String) throws -> ImportReport { try run(records: try CSV.parse(text)) }

    /// Imports a CSV file's bytes (UTF-8).
    public func run(data: Data) throws -> ImportReport { try run(records: try CSV.parse(data: data)) }

    /// Imports parsed CSV records whose first is the header.
    ///
    /// - Throws: for the file as a whole (an unknown type, a mapping to a field the type does
    ///   not have, a store that fails); a bad row is a rejection in the report instead.
    public func run(records: [CSV.Record]) throws -> ImportReport {
        guard let recordType = store.schema.types[type] else { throw CRMError.unknownRecordType(type) }
        var report = ImportReport(type: type, dryRun: options.dryRun)
        guard let header = records.first?.fields else { return report }
        let mapping = self.mapping ?? CSVMapping.detect(header: header, type: recordType)
        try mapping.check(header: header, type: recordType)
        let targets = header.map { mapping.target(ofColumn: $0) }
        report.ignoredColumns = zip(header, targets).filter { $0.1 == nil }.map(\.0)
        var run = ImportRun(importer: self, recordType: recordType, header: header, targets: targets,
                            finder: try DuplicateFinder(store: store, type: type, defaultCountryPrefix: options.defaultCountryPrefix),
                            accounts: type == "contact" ? try Self.accountsByName(store) : [:])
        let rows = records.dropFirst()
        report.rows = rows.count
        var start = rows.startIndex
        while start < rows.endIndex {
            let batch = rows[start..<min(start + max(1, options.batchSize), rows.endIndex)]
            var next = report
            do {
                if options.dryRun {
                    for record in batch { try run.importRow(record, into: &next) }
                } else {
                    try store.transaction { for record in batch { try run.importRow(record, into: &next) } }
                }
            } catch {
                // The batch rolled back whole; what earlier batches committed stays, and a
                // re-run finds those rows imported and goes on from there.
                throw ImportInterrupted(report: report, atRow: batch.first?.row ?? 0, cause: error)
            }
            report = next
            start = batch.endIndex
        }
        return report
    }

    /// Live, unmerged accounts by normalised name; the first of a name wins.
    static func accountsByName(_ store: ReplicaStore) throws -> [String: UUID] {
        var byName: [String: UUID] = [:]
        try store.scan("account", fields: ["name", "merged_into"]) { id, values in
            guard case .text(let name) = values[0], values[1] == .null else { return }
            let key = CSVMapping.normalise(name)
            if byName[key] == nil { byName[key] = id }
        }
        return byName
    }
}

/// The state of one import while it runs: what it learnt from earlier rows.
private struct ImportRun {
    let importer: CSVImporter
    let recordType: RecordType
    let header: [String]
    let targets: [String?]
    var finder: DuplicateFinder
    var accounts: [String: UUID]
    /// Records a dry run would have created, which later rows may duplicate.
    var pending: [UUID: [String: FieldValue]] = [:]
    var store: ReplicaStore { importer.store }

    struct Rejected: Error {
        var field: String?
        var column: String?
        var reason: String
    }

    /// Imports one row, or records why it is rejected. Throws only what is not about the row:
    /// a store that fails must stop the import, never pass for rejected rows.
    mutating func importRow(_ record: CSV.Record, into report: inout ImportReport) throws {
        do {
            guard record.fields.count == header.count else {
                throw Rejected(reason: "\(record.fields.count) field(s) where the header has \(header.count)")
            }
            var values: [String: FieldValue] = [:]
            var extra: [String: String] = [:]
            for (index, raw) in record.fields.enumerated() {
                guard let target = targets[index] else { continue }
                let text = CRMText.trimmed(raw)
                guard !text.isEmpty else { continue }
                if CSVMapping.importTargets.contains(target) {
                    extra[target] = text
                    continue
                }
                do {
                    values[target] = try FieldConversion.value(text, field: target, type: recordType)
                } catch let problem as FieldConversion.Problem {
                    throw Rejected(field: target, column: header[index], reason: problem.reason)
                }
            }
            for (field, rule) in recordType.rules where rule.required && values[field] == nil {
                throw Rejected(field: field, column: column(of: field), reason: "required, and the row has no value for it")
            }
            for (field, rule) in recordType.rules {
                guard let target = rule.reference, case .text(let id)? = values[field] else { continue }
                guard let uuid = UUID(uuidString: id), try referenceExists(uuid, type: target) else {
                    throw Rejected(field: field, column: column(of: field), reason: "no \(target) with id \(id)")
                }
            }
            // One write is atomic on its own; a row that also creates its account needs both or neither.
            let createsAccount = extra["account_name"].map { accounts[CSVMapping.normalise($0)] == nil } ?? false
            try store.savepoint(if: createsAccount && !importer.options.dryRun) {
                try write(values, extra: extra, row: record.row, into: &report)
            }
        } catch let rejected as Rejected {
            report.rejections.append(.init(row: record.row, field: rejected.field, column: rejected.column, reason: rejected.reason))
        } catch let error as ReplicaStoreError where error.isAboutTheRecord {
            // The store refused the write (its own validation): the row's savepoint rolled back.
            report.rejections.append(.init(row: record.row, field: nil, column: nil, reason: String(describing: error)))
        } catch let error as ModelError {
            report.rejections.append(.init(row: record.row, field: nil, column: nil, reason: String(describing: error)))
        }
    }

    func column(of field: String) -> String? {
        targets.firstIndex(of: field).map { header[$0] }
    }

    func referenceExists(_ id: UUID, type: String) throws -> Bool {
        if pending[id] != nil { return true }
        guard let record = try store.record(id) else { return false }
        return record.type == type && !record.isDeleted
    }

    /// Creates or merges the row's record (and its account), as one savepoint. What the run
    /// remembers (accounts, duplicate keys, counts) changes only after every write succeeded, so
    /// a row the store refuses leaves no trace.
    mutating func write(_ values: [String: FieldValue], extra: [String: String], row: Int, into report: inout ImportReport) throws {
        var values = values
        let dryRun = importer.options.dryRun
        var newAccount: (key: String, id: UUID)?
        if let company = extra["account_name"], values["account"] == nil {
            let key = CSVMapping.normalise(company)
            if let existing = accounts[key] {
                values["account"] = .text(existing.uuidString)
            } else {
                guard importer.options.createsMissingAccounts else {
                    throw Rejected(field: "account", column: column(of: "account_name"), reason: "no account named '\(company)'")
                }
                let id = DerivedID.make("import:account", key)
                var account: [String: FieldValue] = ["name": .text(company)]
                if let stage = extra["account_lifecycle_stage"].flatMap(FieldConversion.lifecycle) { account["lifecycle_stage"] = .text(stage) }
                if dryRun { pending[id] = account } else if try store.record(id) == nil { try store.create("account", id: id, account) }
                values["account"] = .text(id.uuidString)
                newAccount = (key, id)
            }
        }
        let keys = finder.keys(values)
        let identity = extra["external_id"].map { "external:" + $0 } ?? keys.first?.key
            ?? values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\u{1F}")
        let id = DerivedID.make("import:\(importer.type)", identity)
        var match = finder.matches(keys: keys).first.map { ($0.record, $0.matchedBy) }
        if match == nil, pending[id] != nil { match = (id, "identity") }
        if match == nil, let earlier = try store.record(id) {
            // Deleted since the import that made it: bringing it back is a person's decision.
            guard !earlier.isDeleted else {
                throw Rejected(reason: "this row was imported before as \(earlier.type) \(id.uuidString.lowercased()), deleted since; restore it instead")
            }
            match = (id, "identity")
        }
        if let (existing, matchedBy) = match {
            let current = try pending[existing] ?? store.record(existing)?.values ?? [:]
            let filled = values.filter { (current[$0.key] ?? .null) == .null }
            if !filled.isEmpty {
                if dryRun { pending[existing, default: [:]].merge(filled) { $1 } } else { try store.update(existing, filled) }
            }
            finder.add(existing, keys: keys)
            report.merges.append(.init(row: row, record: existing, matchedBy: matchedBy, filledFields: filled.keys.sorted()))
        } else {
            if dryRun { pending[id] = values } else { try store.create(importer.type, id: id, values) }
            finder.add(id, keys: keys)
            report.imported += 1
        }
        if let newAccount {
            accounts[newAccount.key] = newAccount.id
            report.accountsCreated += 1
        }
    }
}

extension ReplicaStore {
    /// One row's writes as a savepoint of the batch's transaction when `needed`, so a row the
    /// store refuses rolls back alone. Each savepoint costs two statements, so rows that write
    /// one record, which is atomic already, go without.
    fileprivate func savepoint<T>(if needed: Bool, _ body: () throws -> T) throws -> T {
        needed ? try transaction(body) : try body()
    }
}

/// Turns CSV text into field values by the field's kind, with what exports write for people
/// turned into what the schema takes; the value is then checked by the field's rule, the same
/// check the store and the server run, so the reason a person reads is the same everywhere.
enum FieldConversion {
    struct Problem: Error { var reason: String }

    static func value(_ text: String, field: String, type: RecordType) throws -> FieldValue {
        let rule = type.rules[field] ?? FieldRule()
        let value: FieldValue
        switch type.fields[field] ?? .text {
        case .integer:
            guard let number = Int64(text) else { throw Problem(reason: "'\(text)' is not a whole number") }
            value = .integer(number)
        case .real:
            guard let number = Double(text), number.isFinite else { throw Problem(reason: "'\(text)' is not a number") }
            value = .real(number)
        case .boolean:
            switch text.lowercased() {
            case "true", "yes", "1", "y": value = .bool(true)
            case "false", "no", "0", "n": value = .bool(false)
            default: throw Problem(reason: "'\(text)' is not yes/no")
            }
        case .text, .counter, .blob:
            value = .text(normalised(text, rule: rule))
        }
        if let violation = rule.violation(of: value) { throw Problem(reason: violation) }
        return value
    }

    /// Choices as exports write them for people ("Cold Call") as the schema's keys
    /// ("cold_call"), and US-locale dates (M/D/YYYY) as ISO days; anything else as it is.
    private static func normalised(_ text: String, rule: FieldRule) -> String {
        if let choices = rule.choices {
            let key = text.lowercased().replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "-", with: "_")
            return choices.contains(key) ? key : text
        }
        if rule.format == .date, CRMDate.day(text) == nil {
            let parts = text.split(separator: "/")
            if parts.count == 3, let m = Int(parts[0]), let d = Int(parts[1]), let y = Int(parts[2]), parts[2].count == 4 {
                return String(format: "%04d-%02d-%02d", y, m, d)
            }
        }
        return text
    }

    /// A HubSpot lifecycle stage as the CRM's account lifecycle; `nil` for one with no match.
    static func lifecycle(_ hubspot: String) -> String? {
        switch hubspot.lowercased().replacingOccurrences(of: " ", with: "") {
        case "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity": "prospect"
        case "customer": "customer"
        case "evangelist": "core"
        case let other where CRMSchema.lifecycleStages.contains(other): other
        default: nil
        }
    }
}

/// Every live record of a type as CSV, in the shape `CSVMapping.fieldNames` imports again.
public enum CSVExporter {
    /// `id` and then the type's fields in name order; counters as their totals, booleans as
    /// `true`/`false`, blobs in base64.
    public static func export(_ store: ReplicaStore, type: String) throws -> String {
        guard let recordType = store.schema.types[type] else { throw CRMError.unknownRecordType(type) }
        let fields = recordType.fields.keys.sorted()
        var output = CSV.line(["id"] + fields)
        try store.scan(type, fields: fields) { id, values in
            output += CSV.line([id.uuidString.lowercased()] + values.map { value in
                switch value {
                case .null: ""
                case .blob(let data): data.base64EncodedString()
                default: value.description
                }
            })
        }
        return output
    }
}

// An import's rejections and merges render like any report, so `rapportctl import` prints them
// as a table, JSON or CSV with the same code.
extension ImportReport.Rejection: ReportRow {
    public static let columns = ["row", "field", "column", "reason"]
    public var cells: [String] { [String(row), field ?? "", column ?? "", reason] }
}

extension ImportReport.Merge: ReportRow {
    public static let columns = ["row", "record", "matched_by", "filled_fields"]
    public var cells: [String] { [String(row), record.uuidString.lowercased(), matchedBy, filledFields.joined(separator: " ")] }
}
