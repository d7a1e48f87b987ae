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
    /// Stages the export's deals are at that the tenant's pipeline lacked, added to it
    /// (`Options.addsStages`).
    public var stagesAdded: [PipelineStage] = []
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
            text += "\(file.file): \(file.profile ?? "") -> \(file.type ?? "") (\(file.chosenBy)): \(report.counts)"
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
/// contacts, opportunities, leads (a converted one refers to all three), cases, campaign
/// members, tasks and events. A reference by
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
        /// The tenant's users as an owner column may name them (`CSVMapping.normalise`d e-mail
        /// or full name → e-mail; a name two users share is left out), for an owner that
        /// neither `users` nor the export's user file knows: a report export names owners by
        /// name and has no user file. A single file's import maps owners the same way.
        public var tenantOwners: [String: String] = [:]
        /// The records undone imports deleted, which the same rows bring back
        /// (`CSVImporter.Options.undone`); a custom field declaration an undo took away is
        /// brought back whenever a file needs it.
        public var undone: ImportJournal.UndoneRecords?
        public var dateFormat: ImportDateFormat = .us
        /// How `run(directory:)` reads files without a byte-order mark (`--encoding`).
        public var encoding: CSV.TextEncoding = .utf8
        public var batchSize = 2_000
        /// Told the file, the rows done, the bytes of it read and its size after each batch, for
        /// a progress line.
        public var progress: (@Sendable (_ file: String, _ rows: Int, _ bytesRead: Int, _ totalBytes: Int?) -> Void)?
        /// Where each batch notes what it made and filled before it commits, for undo.
        public var journal: ImportJournal.Writer?
        /// Whether the store runs the CRM's effects (`CSVImporter.Options.storeRunsEffects`).
        public var storeRunsEffects = false
        /// Adds the stages the export's deals are at and the tenant's pipeline lacks (an org's
        /// own `Contract Signed`) to the pipeline before the deals import (`--add-stages`);
        /// otherwise those deals are rejected.
        public var addsStages = false
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

    /// Imports every `.csv` file of `directory`, each read as it imports: the memory the
    /// import takes does not grow with the files' size.
    public func run(directory: String) throws -> OrgImportReport {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.lowercased().hasSuffix(".csv") }.sorted()
        } catch {
            throw CRMError.invalidMapping("cannot list \(directory): \(error.localizedDescription)")
        }
        return try run(files: names.map { name in (name, { try CSV.Reader(path: directory + "/" + name, encoding: options.encoding) }) })
    }

    /// Imports files given by name and a way to open them, each opened twice: for its header
    /// when the files are recognised, and for its rows when its turn comes.
    public func run(files: [(name: String, open: () throws -> CSV.Reader)]) throws -> OrgImportReport {
        // A larger page cache and fewer log copies while the rows go in (`bulkWrite`).
        options.dryRun ? try importFiles(files) : try store.bulkWrite { try importFiles(files) }
    }

    private func importFiles(_ files: [(name: String, open: () throws -> CSV.Reader)]) throws -> OrgImportReport {
        var report = OrgImportReport(source: source.rawValue, dryRun: options.dryRun)
        // Recognise every file from its header first, to import them in dependency order.
        let profiles = ImportProfile.all(source)
        var planned: [(index: Int, name: String, profile: ImportProfile, chosenBy: String, header: [String],
                       open: () throws -> CSV.Reader)] = []
        var bytesByType: [String: Int] = [:]
        for file in files {
            var size: Int?
            let header = try Self.reading(file.name) {
                let reader = try file.open()
                size = reader.totalBytes
                return try reader.next()?.fields ?? []
            }
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
            planned.append((index, file.name, chosen, chosenBy, header, file.open))
            if let type = chosen.recordType { bytesByType[type, default: 0] += size ?? 0 }
        }
        planned.sort { ($0.index, $0.name) < ($1.index, $1.name) }
        if !options.dryRun { try deferIndex(bytesByType) }

        let run = OrgRun(importer: self, store: store)
        var users: [String: Int] = [:]
        for (_, name, profile, _, _, open) in planned where profile.recordType == nil {
            // A user file is one line per person of the company: read whole.
            users[name] = try Self.reading(name) { run.learnUsers(try open().all(), profile: profile) }
        }
        report.customFieldsCreated = try run.declareCustomFields(for: planned.map { ($0.profile, $0.header) })
        if options.addsStages {
            report.stagesAdded = try run.addStages(from: planned.filter { $0.profile.recordType == "opportunity" }.map { ($0.name, $0.profile, $0.open) })
        }
        for (_, name, profile, chosenBy, _, open) in planned {
            guard profile.recordType != nil else {
                report.files.append(.init(file: name, profile: profile.name, chosenBy: chosenBy, users: users[name] ?? 0))
                continue
            }
            let fileReport = try Self.reading(name) { try run.importFile(name: name, profile: profile, reader: try open()) }
            report.files.append(.init(file: name, profile: profile.name, type: profile.recordType, chosenBy: chosenBy, report: fileReport))
        }
        // The deferred entries, in one sorted pass per type. A run killed before this leaves
        // the types deferred (queries read their records meanwhile); the next run builds them.
        if !options.dryRun { try store.completeFieldIndex() }
        report.unmappedOwners = run.unmapped.map { key, value in
            .init(file: key.file, owner: key.owner, rows: value.rows, reason: value.reason)
        }.sorted { ($0.file, $0.owner) < ($1.file, $1.owner) }
        return report
    }

    /// Bytes of export a record type needs, per live record the store holds of it, for its
    /// index entries to be deferred: a row is rarely under 100 bytes, so this defers when the
    /// files bring about as many records as the store has, or more.
    static let deferringBytesPerRecord = 100

    /// Defers the field index entries (`ReplicaStore.deferFieldIndex(of:)`) of the types the
    /// files bring at least as many records of as the store holds. Writing each record's
    /// entries at random places of a b-tree larger than SQLite's cache, batch after batch,
    /// cost more than the records themselves; a sorted pass over the type at the end (which
    /// reads its records already there too, hence the size test) costs a fraction of it.
    private func deferIndex(_ bytesByType: [String: Int]) throws {
        var bytesByType = bytesByType
        // An opportunity's effects make its stage change, one per imported opportunity.
        if let bytes = bytesByType["opportunity"] { bytesByType["stage_change"] = bytes }
        let types = try bytesByType.filter { type, bytes in
            bytes / Self.deferringBytesPerRecord >= max(1, try store.count(ofType: type))
        }.keys
        try store.deferFieldIndex(of: types)
    }

    /// `body`, with a malformed file's error naming the file.
    static func reading<T>(_ file: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch CRMError.malformedCSV(let row, let line, let reason) {
            throw CRMError.malformedCSV(row: row, line: line, reason: "\(file): \(reason)")
        }
    }
}


/// The state of one whole-org import: the source ids it has seen, owners, accounts by name.
/// A class, because the rows of a file are converted as the file's import asks for them.
private final class OrgRun {
    let importer: OrgImporter
    let store: ReplicaStore
    /// Record type → source id → the record it was merged into. A row that made a record needs
    /// no entry: its id derives from its source id (`find`), so the map holds only the rows
    /// that matched another record (duplicates, earlier imports) and stays small however many
    /// rows the export has.
    var ids: [String: [String: UUID]] = [:]
    /// Normalised source owner → e-mail.
    var owners: [String: String] = [:]
    var unmapped: [Key: (rows: Int, reason: String)] = [:]
    /// What a dry run would have made, for the files after it.
    var assumedRecords: Set<UUID> = []
    var assumedAccounts: [String: UUID] = [:]
    var assumedCustomFields: [CustomField] = []
    var assumedPipeline: CRMPipeline?
    /// Source ids of rows rejected so far, by type, with their file and row: a later row
    /// referring to one says so, rather than that the export lacks it. As large as the
    /// rejections the report lists anyway.
    var rejected: [String: [String: (file: String, row: Int)]] = [:]
    /// Records `find` saw live in the store, with their types: the rows of a batch are
    /// converted just before the batch is written, whose reference checks then need not ask
    /// the store again. Emptied when it fills, so it stays small however large the export.
    var verified: [UUID: String] = [:]
    static let verifiedLimit = 16_384

    struct Key: Hashable { var file: String; var owner: String }

    struct Rejected: Error { var field: String?; var column: String?; var reason: String }

    init(importer: OrgImporter, store: ReplicaStore) {
        self.importer = importer
        self.store = store
        for (owner, email) in importer.options.users { owners[CSVMapping.normalise(owner)] = email }
    }

    /// Owners from a user file: its id, name and e-mail all map to the e-mail.
    @discardableResult
    func learnUsers(_ records: [CSV.Record], profile: ImportProfile) -> Int {
        guard let header = records.first?.fields else { return 0 }
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
        return records.count - 1
    }

    /// Declares the custom fields the files fill and the tenant lacks; their names.
    func declareCustomFields(for files: [(ImportProfile, [String])]) throws -> [String] {
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
        var toCreate: [(UUID, CustomField)] = []
        // Declared by an import undone since (or removed by hand): the file cannot be read
        // without it, so it comes back as it was, journaled like a new one.
        var toRestore: [UUID] = []
        for field in needed where existing[field.entity]?[field.name] == nil && !made.contains("\(field.entity).\(field.name)") {
            let id = DerivedID.make("import:custom_field", "\(field.entity).\(field.name)")
            if importer.options.dryRun {
                assumedCustomFields.append(field)
            } else if let earlier = try store.record(id) {
                if earlier.isDeleted { toRestore.append(id) }
            } else {
                toCreate.append((id, field))
            }
            made.append("\(field.entity).\(field.name)")
        }
        guard !toCreate.isEmpty || !toRestore.isEmpty else { return made }
        let create = { [store] in
            for (id, field) in toCreate { _ = try store.create("custom_field", id: id, field.recordValues) }
            for id in toRestore { try store.restore(id) }
        }
        if let journal = importer.options.journal { try journal.transaction(store, create) } else { try store.transaction(create) }
        return made
    }

    /// Adds to the tenant's pipeline the stages the files' deals are at and it lacks; the
    /// stages added. Each file is read once more for it, a row at a time.
    ///
    /// A stage is closed, won and at the probability most of its deals say (Salesforce's
    /// `IsClosed`, `IsWon` and `Probability`); without those columns it is open, at 50%. An
    /// open stage goes before the first stage of a higher probability, a closed one at the end.
    /// A tenant still on the default pipeline gets it as records first, since a tenant's stage
    /// records replace the default: adding one stage alone would have left only that one.
    /// Only records are created, in one journaled transaction, so undo takes them away again.
    func addStages(from files: [(name: String, profile: ImportProfile, open: () throws -> CSV.Reader)]) throws -> [PipelineStage] {
        struct Seen { var order: Int; var rows = 0; var closed = 0; var won = 0; var probabilities: [Int: Int] = [:] }
        let pipeline = try CRMPipeline.load(from: store)
        var seen: [String: Seen] = [:]
        for file in files {
            try OrgImporter.reading(file.name) {
                let reader = try file.open()
                let header = try reader.next()?.fields ?? []
                func column(_ wanted: (String) -> Bool) -> Int? {
                    header.indices.first { wanted(CSVMapping.normalise(header[$0])) }
                }
                guard let stageColumn = column({ self.target(of: $0, profile: file.profile)?.contains("stage") == true }) else { return }
                let closedColumn = column { $0 == "isclosed" }, wonColumn = column { $0 == "iswon" }
                let probabilityColumn = column { self.target(of: $0, profile: file.profile)?.contains("probability") == true }
                while let record = try reader.next() {
                    guard record.fields.count == header.count else { continue }
                    let written = CRMText.trimmed(record.fields[stageColumn])
                    let name = file.profile.translations["stage"]?[ImportProfile.key(written)] ?? written
                    guard !name.isEmpty, pipeline.stage(name) == nil else { continue }
                    var stage = seen[name] ?? Seen(order: seen.count)
                    stage.rows += 1
                    if let closedColumn, FieldConversion.boolean(CRMText.trimmed(record.fields[closedColumn])) == true { stage.closed += 1 }
                    if let wonColumn, FieldConversion.boolean(CRMText.trimmed(record.fields[wonColumn])) == true { stage.won += 1 }
                    if let probabilityColumn, let percent = Double(CRMText.trimmed(record.fields[probabilityColumn])), (0...100).contains(percent) {
                        stage.probabilities[Int(percent.rounded()), default: 0] += 1
                    }
                    seen[name] = stage
                }
            }
        }
        guard !seen.isEmpty else { return [] }
        let added = seen.sorted { $0.value.order < $1.value.order }.map { name, stage -> PipelineStage in
            let closed = stage.closed * 2 > stage.rows, won = closed && stage.won * 2 > stage.rows
            // The most common probability, the lower of a tie; a closed stage's is its outcome's.
            let probability = closed ? (won ? 100 : 0)
                : stage.probabilities.max { ($0.value, -$0.key) < ($1.value, -$1.key) }?.key ?? 50
            return PipelineStage(name: name, position: 0, probability: probability, isClosed: closed, isWon: won)
        }
        let onDefault = try store.records(ofType: "pipeline_stage").isEmpty
        // The default pipeline as records, spaced so that stages fit between them.
        var stages = onDefault ? pipeline.stages.enumerated().map { index, stage in
            PipelineStage(name: stage.name, position: (index + 1) * 100, probability: stage.probability, isClosed: stage.isClosed, isWon: stage.isWon)
        } : pipeline.stages
        var made = onDefault ? stages : []
        for var stage in added.sorted(by: { ($0.isClosed ? 1 : 0, $0.probability) < ($1.isClosed ? 1 : 0, $1.probability) }) {
            let index = stage.isClosed ? stages.count
                : stages.firstIndex { $0.isClosed || $0.probability > stage.probability } ?? stages.count
            let before = index > 0 ? stages[index - 1].position : 0
            let after = index < stages.count ? stages[index].position : before + 200
            // Between its neighbours; where they leave no room, at the earlier one's position
            // (ties list by name).
            stage.position = after - before >= 2 ? (before + after) / 2 : before
            stages.insert(stage, at: index)
            made.append(stage)
        }
        if !importer.options.dryRun {
            let create = { [store] in
                for stage in made {
                    let id = DerivedID.make("import:pipeline_stage", stage.name)
                    guard try store.record(id) == nil else { continue }
                    _ = try store.create("pipeline_stage", id: id, [
                        "name": .text(stage.name), "position": .integer(Int64(stage.position)),
                        "probability": .integer(Int64(stage.probability)), "closed": .bool(stage.isClosed), "won": .bool(stage.isWon),
                    ])
                }
            }
            if let journal = importer.options.journal { try journal.transaction(store, create) } else { try store.transaction(create) }
        } else {
            assumedPipeline = CRMPipeline(stages: stages)
        }
        return stages.filter { stage in added.contains { $0.name == stage.name } }
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
        case constant(String)
    }

    /// A reference to the file's own type whose record comes later in the file (an account's
    /// parent): filled once the whole file is in.
    struct Deferred { var row: Int; var sourceID: String; var field: String; var column: String; var target: String; var type: String }
    var deferred: [Deferred] = []
    /// The file being imported: its type and the column of its rows' source ids.
    var current: (type: String, idColumn: Int?)?

    func importFile(name: String, profile: ImportProfile, reader: CSV.Reader) throws -> ImportReport {
        let type = profile.recordType!
        guard let recordType = store.schema.types[type] else { throw CRMError.unknownRecordType(type) }
        let header = try reader.next()?.fields ?? []
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

        let dryRun = importer.options.dryRun
        let idColumn = slots.firstIndex { $0.target == "external_id" }.flatMap { if case .copy(let i, _) = slots[$0].slot { i } else { nil } }
        // Data Loader's "Export All" holds the recycle bin too, rows with IsDeleted true: what
        // was deleted (or merged away) there stays out of the tenant, each row reported.
        let deletedColumn = importer.source == .salesforce ? header.firstIndex { CSVMapping.normalise($0) == "isdeleted" } : nil
        current = (type, idColumn)
        deferred = []
        defer { current = nil }
        var rows = CSVImporter.Rows(next: reader.next, headerWidth: header.count)
        var early: [ImportReport.Rejection] = []
        var names: [Int: String] = [:]
        var headerGiven = false
        let nameIndex = type == "account" && dryRun ? slots.firstIndex(where: { $0.target == "name" }) : nil
        // The rows as CSVImporter takes them, converted as it asks for the next batch.
        let next: () throws -> CSV.Record? = { [self] in
            guard headerGiven else {
                headerGiven = true
                return CSV.Record(fields: slots.map(\.title), row: 1, line: 1)
            }
            while let record = try rows.next() {
                guard record.fields.count == header.count else {
                    early.append(.init(row: record.row, field: nil, column: nil, reason: "\(record.fields.count) field(s) where the header has \(header.count)"))
                    continue
                }
                let externalID = idColumn.map { CRMText.trimmed(record.fields[$0]) }.flatMap { $0.isEmpty ? nil : $0 }
                if let deletedColumn, FieldConversion.boolean(CRMText.trimmed(record.fields[deletedColumn])) == true {
                    early.append(.init(row: record.row, field: nil, column: header[deletedColumn],
                                       reason: "deleted in Salesforce (IsDeleted is true): not imported", externalID: externalID))
                    continue
                }
                do {
                    var fields: [String] = []
                    fields.reserveCapacity(slots.count)
                    for (title, target, slot) in slots {
                        fields.append(try value(slot, target: target, title: title, record: record, profile: profile, file: name))
                    }
                    if let nameIndex { names[record.row] = fields[nameIndex] }
                    return CSV.Record(fields: fields, row: record.row, line: record.line)
                } catch let rejected as Rejected {
                    early.append(.init(row: record.row, field: rejected.field, column: rejected.column, reason: rejected.reason, externalID: externalID))
                }
            }
            return nil
        }

        var options = CSVImporter.Options()
        options.dryRun = dryRun
        options.batchSize = importer.options.batchSize
        options.dateFormat = importer.options.dateFormat
        options.assumedRecords = assumedRecords
        options.assumedAccounts = assumedAccounts
        options.assumedCustomFields = assumedCustomFields
        options.assumedPipeline = assumedPipeline
        options.journal = importer.options.journal
        options.undone = importer.options.undone
        options.storeRunsEffects = importer.options.storeRunsEffects
        // An opt-out column (`optout`) becomes withdrawn consent in `CSVImporter`, this noted as its source.
        options.origin = "\(importer.source.rawValue) \(profile.object) export"
        if let progress = importer.options.progress { options.progress = { progress(name, $0, $1, $2) } }
        let mapping = CSVMapping(Dictionary(uniqueKeysWithValues: slots.map { ($0.title, $0.target) }), values: profile.translations)
        var report = try CSVImporter(store: store, type: type, mapping: mapping, options: options)
            .run(next: next, verified: { [self] id, type in verified[id] == type }) { (reader.bytesRead, reader.totalBytes) }
        report.rows += early.count
        report.footerLines = rows.footer
        report.ignoredColumns = header.indices.filter { $0 != deletedColumn && target(of: header[$0], profile: profile) == nil }.map { header[$0] }

        // What each source id merged into another record became, for the files after this one.
        for merge in report.merges {
            guard let sourceID = merge.externalID, !sourceID.isEmpty,
                  merge.record != DerivedID.make("import:\(type)", "external:" + sourceID) else { continue }
            ids[type, default: [:]][sourceID] = merge.record
        }
        if dryRun {
            for created in report.created {
                assumedRecords.insert(created.record)
                if let name = names[created.row] { assumedAccounts[CSVMapping.normalise(name)] = created.record }
            }
        }
        early += try resolveDeferred(type: type)
        report.rejections = (report.rejections + early).sorted { $0.row < $1.row }
        for rejection in report.rejections {
            if let externalID = rejection.externalID { rejected[type, default: [:]][externalID] = (name, rejection.row) }
        }
        return report
    }

    /// Fills the references to records later in the same file (`deferred`), now that the file
    /// is in, as journaled batches; a reference that names nothing still is reported.
    func resolveDeferred(type: String) throws -> [ImportReport.Rejection] {
        var problems: [ImportReport.Rejection] = []
        var updates: [(row: Int, record: UUID, field: String, value: UUID)] = []
        for entry in deferred {
            // A row that was rejected has no record to fill.
            guard let own = try find(entry.sourceID, type: type) else { continue }
            guard let target = try find(entry.target, type: entry.type) else {
                problems.append(.init(row: entry.row, field: entry.field, column: entry.column, reason:
                    "'\(entry.target)' is no \(entry.type) of this export nor of an earlier import; the \(type) was imported without it"))
                continue
            }
            updates.append((entry.row, own, entry.field, target))
        }
        deferred = []
        guard !importer.options.dryRun else { return problems }
        let size = max(1, importer.options.batchSize)
        for start in stride(from: 0, to: updates.count, by: size) {
            let batch = updates[start..<min(start + size, updates.count)]
            try store.transaction {
                let mark = try importer.options.journal?.mark(store)
                var merges: [ImportReport.Merge] = []
                for update in batch {
                    // Never an overwrite: what the record holds stays.
                    guard let state = try store.record(update.record), (state.values[update.field] ?? .null) == .null else { continue }
                    try store.update(update.record, [update.field: .text(update.value.text())])
                    merges.append(.init(row: update.row, record: update.record, matchedBy: "identity", filledFields: [update.field]))
                }
                if let journal = importer.options.journal, let mark { try journal.record(store, since: mark, merges: merges) }
            }
        }
        return problems
    }

    /// The text a slot puts in the row's output column.
    func value(_ slot: Slot, target: String, title: String, record: CSV.Record, profile: ImportProfile, file: String) throws -> String {
        switch slot {
        case .copy(let index, let target):
            // Translated by the mapping (`CSVMapping.values`) as the row is imported, so a
            // rejection quotes the value as the file held it.
            let text = CRMText.trimmed(record.fields[index])
            return text.isEmpty ? profile.constants[target] ?? "" : text
        case .constant(let value):
            return value
        case .address(let indices):
            return indices.map { CRMText.trimmed(record.fields[$0]) }.filter { !$0.isEmpty }.joined(separator: ", ")
        case .owner(let index):
            let text = CRMText.trimmed(record.fields[index])
            guard !text.isEmpty else { return "" }
            let key = CSVMapping.normalise(text)
            let email = owners[key] ?? importer.options.tenantOwners[key] ?? (text.utf8.contains(UInt8(ascii: "@")) ? text : nil)
            guard let email else {
                note(file: file, owner: text, reason: "no user of the export, of --users or of the tenant has this id or name")
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
                if let id = try find(text, type: type) { return candidate == field ? id.text() : "" }
            }
            // The file's own type: the record may come later in the file.
            if types.count == 1, let current, types[0].type == current.type, let idColumn = current.idColumn {
                let sourceID = CRMText.trimmed(record.fields[idColumn])
                if !sourceID.isEmpty {
                    deferred.append(.init(row: record.row, sourceID: sourceID, field: field, column: title, target: text, type: current.type))
                    return ""
                }
            }
            for (_, type) in types {
                if let (file, row) = rejected[type]?[text] {
                    throw Rejected(field: field, column: title, reason: "'\(text)' is the \(type) of \(file) row \(row), which was rejected")
                }
            }
            throw Rejected(field: field, column: title, reason:
                "'\(text)' is no \(types.map(\.type).joined(separator: " or ")) of this export nor of an earlier import")
        }
    }

    /// The record a source id of `type` became, in this run or an earlier import of it.
    func find(_ sourceID: String, type: String) throws -> UUID? {
        if let id = ids[type]?[sourceID] { return id }
        let derived = DerivedID.make("import:\(type)", "external:" + sourceID)
        if assumedRecords.contains(derived) || verified[derived] == type { return derived }
        guard try store.recordType(of: derived, live: true) == type else { return nil }
        if verified.count >= Self.verifiedLimit { verified.removeAll(keepingCapacity: true) }
        verified[derived] = type
        return derived
    }

    func note(file: String, owner: String, reason: String) {
        unmapped[Key(file: file, owner: owner), default: (0, reason)].rows += 1
    }
}
