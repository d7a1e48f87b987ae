import Foundation
import ReplicaStore
import SyncModel

/// What a whole-org import did (or, in a dry run, would do), file by file and row by row.
public struct OrgImportReport: Sendable, Equatable, Codable {
    /// One file of the export.
    public struct File: Sendable, Equatable, Codable {
        public var file: String
        /// The profile the file was read as (`Contact (api)`), `nil` when none fits.
        public var profile: String?
        /// The record type its rows became.
        public var type: String?
        /// `detected` from its header and name, `--object`, or `not recognised` (skipped).
        public var chosenBy: String
        /// Users read from a user file, which map owners.
        public var users: Int?
        public var report: ImportReport?
    }

    /// A source owner no tenant user stands for: the rows keep no owner, and this says so.
    public struct UnmappedOwner: Sendable, Equatable, Codable {
        public var file: String
        public var owner: String
        public var rows: Int
        public var reason: String
    }

    public var source: String
    public var dryRun: Bool
    public var files: [File] = []
    public var unmappedOwners: [UnmappedOwner] = []
    /// Custom fields declared for what the schema has no field for (`contact.mailing_address`).
    public var customFieldsCreated: [String] = []
    /// The id `rapportctl import undo` takes to revert this import; `nil` for a dry run.
    public var importID: String?

    /// Marks a report of the real import into a throw-away copy of a store as a dry run's.
    public mutating func markDryRun() {
        dryRun = true
        for index in files.indices { files[index].report?.dryRun = true }
    }

    public var reports: [ImportReport] { files.compactMap(\.report) }
    public var created: Int { reports.reduce(0) { $0 + $1.imported } }
    public var updated: Int { reports.reduce(0) { $0 + $1.updated } }
    public var duplicates: Int { reports.reduce(0) { $0 + $1.duplicates } }
    public var unchanged: Int { reports.reduce(0) { $0 + $1.unchanged } }
    public var rejected: Int { reports.reduce(0) { $0 + $1.rejected } }

    /// Lines for a terminal: one per file, then the totals.
    public var summary: String {
        var text = ""
        for file in files {
            guard let report = file.report else {
                text += "\(file.file): \(file.profile.map { "\($0), \(file.users ?? 0) user(s) for owners" } ?? "not recognised, skipped")\n"
                continue
            }
            text += "\(file.file): \(file.profile ?? "") -> \(file.type ?? "") (\(file.chosenBy)): \(report.rows) row(s), "
                + "\(dryRun ? "would create" : "created") \(report.imported), updated \(report.updated), "
                + "merged as duplicate \(report.duplicates), unchanged \(report.unchanged), rejected \(report.rejected)"
                + (report.accountsCreated > 0 ? ", accounts by name \(report.accountsCreated)" : "")
                + (report.footerLines.isEmpty ? "" : ", footer lines \(report.footerLines.count)") + "\n"
        }
        text += "\(dryRun ? "dry run: would create" : "created") \(created), updated \(updated), merged as duplicate \(duplicates), "
            + "unchanged \(unchanged), rejected \(rejected)\n"
        return text
    }
}

/// Imports a whole CRM export (every file of a Salesforce or HubSpot export) into a store.
///
/// Each file is recognised by its header and name (`ImportProfile.detect`), or as `--object`
/// says, and files import in dependency order: users (owners only), accounts, campaigns,
/// contacts, leads, opportunities, cases, campaign members, tasks and events. A reference by
/// source id becomes the id of the record the same export made (or an earlier import of it
/// made); one by name (`Account Name` in a report) finds or creates the account by name. A row
/// whose reference names nothing is rejected with the column and the id, never imported
/// without it. Owners map to e-mails through the export's user file and `users`; one that maps
/// to no tenant user is reported and the row keeps no owner. Every row then goes through
/// `CSVImporter`, so validation, duplicates, derived ids and batching are the single-file
/// import's: re-running the same export creates and changes nothing.
public struct OrgImporter {
    public struct Options: Sendable {
        public var dryRun = false
        /// File name → the profile to read it as, `nil` to skip it, overriding detection.
        public var overrides: [String: ImportProfile?] = [:]
        /// Column → target pairs that add to or override every profile's (`--map`).
        public var map: CSVMapping?
        /// Source owner (id, name or e-mail, compared case-insensitively) → user e-mail.
        public var users: [String: String] = [:]
        /// The tenant's users' e-mails; an owner mapping to another is reported. `nil`: no check.
        public var tenantUsers: Set<String>?
        public var dateFormat: ImportDateFormat = .us
        public var batchSize = 2_000
        /// Told the file, the rows done and its rows in all after each batch, for a progress line.
        public var progress: (@Sendable (_ file: String, _ done: Int, _ total: Int) -> Void)?
        public init() {}
    }

    public let store: ReplicaStore
    public let source: ImportSource
    public let options: Options

    public init(store: ReplicaStore, source: ImportSource, options: Options = Options()) {
        self.store = store
        self.source = source
        self.options = options
    }

    /// Imports every `.csv` file of `directory`.
    public func run(directory: String) throws -> OrgImportReport {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.lowercased().hasSuffix(".csv") }.sorted()
        } catch {
            throw CRMError.invalidMapping("cannot list \(directory): \(error.localizedDescription)")
        }
        return try run(files: names.map { name in
            (name, { () throws -> Data in
                guard let data = FileManager.default.contents(atPath: directory + "/" + name) else {
                    throw CRMError.invalidMapping("cannot read \(directory)/\(name)")
                }
                return data
            })
        })
    }

    /// Imports files given by name and contents, read when their turn comes.
    public func run(files: [(name: String, contents: () throws -> Data)]) throws -> OrgImportReport {
        var report = OrgImportReport(source: source.rawValue, dryRun: options.dryRun)
        // Recognise every file from its header first, to import them in dependency order.
        let profiles = ImportProfile.all(source)
        var planned: [(index: Int, name: String, profile: ImportProfile, chosenBy: String, records: [CSV.Record])] = []
        for file in files {
            let records: [CSV.Record]
            do {
                records = try CSV.parse(data: try file.contents())
            } catch CRMError.malformedCSV(let row, let line, let reason) {
                throw CRMError.malformedCSV(row: row, line: line, reason: "\(file.name): \(reason)")
            }
            let header = records.first?.fields ?? []
            let chosen: ImportProfile?, chosenBy: String
            if let override = options.overrides[file.name] {
                (chosen, chosenBy) = (override, "--object")
            } else {
                (chosen, chosenBy) = (ImportProfile.detect(header: header, fileName: file.name, source: source), "detected")
            }
            guard let chosen, let index = profiles.firstIndex(of: chosen) else {
                report.files.append(.init(file: file.name, chosenBy: chosenBy == "detected" ? "not recognised" : "skipped by --object"))
                continue
            }
            planned.append((index, file.name, chosen, chosenBy, records))
        }
        planned.sort { ($0.index, $0.name) < ($1.index, $1.name) }

        var run = OrgRun(importer: self, store: store)
        for (_, name, profile, _, records) in planned where profile.recordType == nil {
            run.learnUsers(records, profile: profile)
        }
        report.customFieldsCreated = try run.declareCustomFields(for: planned.map { ($0.profile, $0.records.first?.fields ?? []) })
        for (_, name, profile, chosenBy, records) in planned {
            guard profile.recordType != nil else {
                report.files.append(.init(file: name, profile: profile.name, chosenBy: chosenBy, users: max(0, records.count - 1)))
                continue
            }
            let fileReport = try run.importFile(name: name, profile: profile, records: records)
            report.files.append(.init(file: name, profile: profile.name, type: profile.recordType, chosenBy: chosenBy, report: fileReport))
        }
        report.unmappedOwners = run.unmapped.map { key, value in
            .init(file: key.file, owner: key.owner, rows: value.rows, reason: value.reason)
        }.sorted { ($0.file, $0.owner) < ($1.file, $1.owner) }
        return report
    }
}


/// The state of one whole-org import: the source ids it has seen, owners, accounts by name.
private struct OrgRun {
    let importer: OrgImporter
    let store: ReplicaStore
    /// Record type → source id → the record it became.
    var ids: [String: [String: UUID]] = [:]
    /// Normalised source owner → e-mail.
    var owners: [String: String] = [:]
    var unmapped: [Key: (rows: Int, reason: String)] = [:]
    /// What a dry run would have made, for the files after it.
    var assumedRecords: Set<UUID> = []
    var assumedAccounts: [String: UUID] = [:]
    var assumedCustomFields: [CustomField] = []

    struct Key: Hashable { var file: String; var owner: String }

    struct Rejected: Error { var field: String?; var column: String?; var reason: String }

    init(importer: OrgImporter, store: ReplicaStore) {
        self.importer = importer
        self.store = store
        for (owner, email) in importer.options.users { owners[CSVMapping.normalise(owner)] = email }
    }

    /// Owners from a user file: its id, name and e-mail all map to the e-mail.
    mutating func learnUsers(_ records: [CSV.Record], profile: ImportProfile) {
        guard let header = records.first?.fields else { return }
        let targets = header.map { profile.columns[CSVMapping.normalise($0)] }
        for record in records.dropFirst() where record.fields.count == header.count {
            var email: String?, keys: [String] = []
            for (index, target) in targets.enumerated() {
                let value = CRMText.trimmed(record.fields[index])
                guard !value.isEmpty else { continue }
                if target == "email" { email = value }
                if target != nil { keys.append(value) }
            }
            guard let email else { continue }
            // An explicit --users entry wins over the export's own.
            for key in keys where owners[CSVMapping.normalise(key)] == nil { owners[CSVMapping.normalise(key)] = email }
        }
    }

    /// Declares the custom fields the files fill and the tenant lacks; their names.
    mutating func declareCustomFields(for files: [(ImportProfile, [String])]) throws -> [String] {
        var needed: [CustomField] = []
        for (profile, header) in files {
            guard let type = profile.recordType else { continue }
            let targets = Set(header.compactMap { target(of: $0, profile: profile) }.flatMap { $0 }.map { target -> String in
                if target.hasPrefix("address:") { return ImportCustomFields.addressField(of: type) }
                if target == "optout" { return "consent_email" }
                return target
            })
            for field in ImportCustomFields.all where field.entity == type && targets.contains(field.name) {
                needed.append(field)
                if field.name == "consent_email", let source = ImportCustomFields.all.first(where: { $0.entity == type && $0.name == "consent_email_source" }) {
                    needed.append(source)
                }
            }
        }
        let existing = try CustomField.all(in: RecordLookup(store))
        var made: [String] = []
        for field in needed where existing[field.entity]?[field.name] == nil && !made.contains("\(field.entity).\(field.name)") {
            let id = DerivedID.make("import:custom_field", "\(field.entity).\(field.name)")
            if importer.options.dryRun {
                assumedCustomFields.append(field)
            } else if try store.record(id) == nil {
                _ = try store.create("custom_field", id: id, field.recordValues)
            }
            made.append("\(field.entity).\(field.name)")
        }
        return made
    }

    /// The targets of a column: `--map` first, else the profile's.
    func target(of column: String, profile: ImportProfile) -> [String]? {
        guard let targets = importer.options.map?.target(ofColumn: column) ?? profile.columns[CSVMapping.normalise(column)] else { return nil }
        return targets.split(separator: "|").map(String.init)
    }

    /// One output column of the rows handed to `CSVImporter`.
    enum Slot {
        case copy(Int, target: String)
        case reference(Int, field: String, types: [(field: String, type: String)])
        case owner(Int)
        case address([Int])
        case optOut(Int, source: Bool)
        case constant(String)
    }

    mutating func importFile(name: String, profile: ImportProfile, records: [CSV.Record]) throws -> ImportReport {
        let type = profile.recordType!
        guard let recordType = store.schema.types[type] else { throw CRMError.unknownRecordType(type) }
        let header = records.first?.fields ?? []
        // The output columns: titled after the file's columns, so rejections name them.
        var slots: [(title: String, target: String, slot: Slot)] = []
        var addressParts: [Int: Int] = [:], addressTitles: [String] = []
        func add(_ title: String, _ target: String, _ slot: Slot) {
            let taken = slots.contains { CSVMapping.normalise($0.title) == CSVMapping.normalise(title) }
            slots.append((taken ? "\(title) (\(target))" : title, target, slot))
        }
        for (index, column) in header.enumerated() {
            for target in target(of: column, profile: profile) ?? [] {
                if target.hasPrefix("ref:") || target.hasPrefix("any:") {
                    let fields = target.dropFirst(4).split(separator: ",").map(String.init)
                    let types = fields.compactMap { field in recordType.rules[field]?.reference.map { (field, $0) } }
                    guard types.count == fields.count else {
                        throw CRMError.invalidMapping("\(name): column '\(column)' maps to '\(target)', but \(type) has no reference field \(fields.joined(separator: ", "))")
                    }
                    for (field, _) in types { add(column, field, .reference(index, field: field, types: types)) }
                } else if target == "owner" {
                    add(column, "owner", .owner(index))
                } else if target.hasPrefix("address:"), let part = Int(target.dropFirst(8)) {
                    addressParts[part] = index
                    addressTitles.append(column)
                } else if target == "optout" {
                    add(column, "consent_email", .optOut(index, source: false))
                    add(column, "consent_email_source", .optOut(index, source: true))
                } else {
                    add(column, target, .copy(index, target: target))
                }
            }
        }
        if !addressParts.isEmpty {
            add(addressTitles.joined(separator: "+"), ImportCustomFields.addressField(of: type), .address(addressParts.sorted { $0.key < $1.key }.map(\.value)))
        }
        for (field, value) in profile.constants.sorted(by: { $0.key < $1.key }) where !slots.contains(where: { $0.target == field }) {
            add("(\(field))", field, .constant(value))
        }

        let (rows, footer) = CSVImporter.splitFooter(records)
        var output: [CSV.Record] = [CSV.Record(fields: slots.map(\.title), row: 1, line: 1)]
        var early: [ImportReport.Rejection] = []
        var sourceIDs: [Int: String] = [:], names: [Int: String] = [:]
        let idColumn = slots.firstIndex { $0.target == "external_id" }.flatMap { if case .copy(let i, _) = slots[$0].slot { i } else { nil } }
        for record in rows {
            guard record.fields.count == header.count else {
                early.append(.init(row: record.row, field: nil, column: nil, reason: "\(record.fields.count) field(s) where the header has \(header.count)"))
                continue
            }
            do {
                var fields: [String] = []
                for (title, target, slot) in slots {
                    fields.append(try value(slot, target: target, title: title, record: record, profile: profile, file: name))
                }
                if let idColumn { sourceIDs[record.row] = CRMText.trimmed(record.fields[idColumn]) }
                if type == "account", let nameIndex = slots.firstIndex(where: { $0.target == "name" }) { names[record.row] = fields[nameIndex] }
                output.append(CSV.Record(fields: fields, row: record.row, line: record.line))
            } catch let rejected as Rejected {
                early.append(.init(row: record.row, field: rejected.field, column: rejected.column, reason: rejected.reason))
            }
        }

        var options = CSVImporter.Options()
        options.dryRun = importer.options.dryRun
        options.batchSize = importer.options.batchSize
        options.dateFormat = importer.options.dateFormat
        options.assumedRecords = assumedRecords
        options.assumedAccounts = assumedAccounts
        options.assumedCustomFields = assumedCustomFields
        if let progress = importer.options.progress { options.progress = { progress(name, $0, $1) } }
        let mapping = CSVMapping(Dictionary(uniqueKeysWithValues: slots.map { ($0.title, $0.target) }))
        var report = try CSVImporter(store: store, type: type, mapping: mapping, options: options).run(records: output)
        report.rows += early.count
        report.rejections = (report.rejections + early).sorted { $0.row < $1.row }
        report.footerLines = footer
        report.ignoredColumns = header.filter { target(of: $0, profile: profile) == nil }

        // What each source id became, for the files after this one.
        for (row, record) in report.created.map({ ($0.row, $0.record) }) + report.merges.map({ ($0.row, $0.record) }) {
            if let sourceID = sourceIDs[row], !sourceID.isEmpty { ids[type, default: [:]][sourceID] = record }
        }
        if importer.options.dryRun {
            for created in report.created {
                assumedRecords.insert(created.record)
                if let name = names[created.row] { assumedAccounts[CSVMapping.normalise(name)] = created.record }
            }
        }
        return report
    }

    /// The text a slot puts in the row's output column.
    mutating func value(_ slot: Slot, target: String, title: String, record: CSV.Record, profile: ImportProfile, file: String) throws -> String {
        switch slot {
        case .copy(let index, let target):
            let text = CRMText.trimmed(record.fields[index])
            return profile.translations[target]?[ImportProfile.key(text)] ?? text
        case .constant(let value):
            return value
        case .address(let indices):
            return indices.map { CRMText.trimmed(record.fields[$0]) }.filter { !$0.isEmpty }.joined(separator: ", ")
        case .optOut(let index, let isSource):
            let text = CRMText.trimmed(record.fields[index])
            guard !text.isEmpty else { return "" }
            guard let optedOut = FieldConversion.boolean(text) else {
                throw Rejected(field: "consent_email", column: title, reason: "'\(text)' is not yes/no")
            }
            // Not opted out is not consent given: the field stays empty.
            guard optedOut else { return "" }
            let column = title.replacingOccurrences(of: " (\(target))", with: "")
            return isSource ? "\(importer.source.rawValue) \(profile.object) export, column \(column)" : "withdrawn"
        case .owner(let index):
            let text = CRMText.trimmed(record.fields[index])
            guard !text.isEmpty else { return "" }
            let email = owners[CSVMapping.normalise(text)] ?? (text.contains("@") ? text : nil)
            guard let email else {
                note(file: file, owner: text, reason: "no user of the export or of --users has this id or name")
                return ""
            }
            if let users = importer.options.tenantUsers, !users.contains(email.lowercased()) {
                note(file: file, owner: text, reason: "maps to \(email), who is no user of the tenant")
                return ""
            }
            return email
        case .reference(let index, let field, let types):
            let text = CRMText.trimmed(record.fields[index])
            guard !text.isEmpty else { return "" }
            // The first of the candidate types that has the id fills its field; the others stay empty.
            for (candidate, type) in types {
                if let id = try find(text, type: type) { return candidate == field ? id.uuidString : "" }
            }
            throw Rejected(field: field, column: title, reason:
                "'\(text)' is no \(types.map(\.type).joined(separator: " or ")) of this export nor of an earlier import")
        }
    }

    /// The record a source id of `type` became, in this run or an earlier import of it.
    func find(_ sourceID: String, type: String) throws -> UUID? {
        if let id = ids[type]?[sourceID] { return id }
        let derived = DerivedID.make("import:\(type)", "external:" + sourceID)
        if assumedRecords.contains(derived) { return derived }
        guard let record = try store.record(derived), record.type == type, !record.isDeleted else { return nil }
        return derived
    }

    mutating func note(file: String, owner: String, reason: String) {
        unmapped[Key(file: file, owner: owner), default: (0, reason)].rows += 1
    }
}
