import ArgumentParser
import CRM
import Foundation
import PrivateFiles
import RapportDevice
import Registry
import ReplicaStore

extension CRMReport: ExpressibleByArgument {}

/// Reports over a tenant's data, computed by the same code a device runs on its replica.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a CRM report on a tenant's data: a table, or --json / --csv for scripts.",
        discussion: "Reports:\n" + CRMReport.allCases.map { "  \($0.rawValue): \($0.summary)" }.joined(separator: "\n"))
    @OptionGroup var common: CommonOptions
    @Argument(help: "The report (see below).")
    var report: CRMReport
    @Argument var tenant: String
    @Flag(help: "Write CSV instead of a table.")
    var csv = false
    @Option(help: ArgumentHelp("Compute as of this day (YYYY-MM-DD) instead of now.", valueName: "date"))
    var asOf: String?

    func run() throws {
        guard !(csv && common.json) else { throw CtlFailure(.usage, "give --json or --csv, not both") }
        var now = Date()
        if let asOf {
            guard let day = ISO8601DateFormatter.day.date(from: asOf) else { throw CtlFailure(.usage, "--as-of \(asOf): expected YYYY-MM-DD") }
            now = day
        }
        let registry = try common.registry()
        defer { registry.close() }
        _ = try registry.requireTenant(tenant, allowDeleted: true)
        let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
        defer { store.close() }
        let format: ReportFormat = common.json ? .json : csv ? .csv : .table
        let reports = try CRMReports(store: store, now: now)
        Output.standard(try reports.render(report, as: format))
        // On standard error only: the JSON and CSV on standard output keep their shape.
        for problem in reports.settingProblems { Output.error("warning: \(problem)") }
    }
}

/// Imports and their undo: `rapportctl import TENANT ...` runs an import (the default
/// subcommand, so the arguments read as before), `rapportctl import undo ID` reverts one.
struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a CSV file or a whole Salesforce or HubSpot export into a tenant; undo an import.",
        subcommands: [ImportRun.self, ImportUndo.self], defaultSubcommand: ImportRun.self)
}

/// A CSV file, or a whole CRM export, into a tenant, through the same validation a device and
/// the server apply.
struct ImportRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Import a CSV file, or a whole Salesforce or HubSpot export, into a tenant.",
        discussion: """
            One file: --type and a CSV file. The header is mapped to fields by --mapping (the \
            built-in mapping of salesforce or hubspot exports of that type), by --map \
            column=field (added to or overriding --mapping), or by matching field names. A \
            column mapped to owner (a report's Account Owner, Contact Owner...) names the \
            tenant's users by e-mail or full name, or as --users maps them; an owner no user \
            stands for is reported and the row keeps no owner. A column mapped to optout (Email \
            Opt Out) becomes withdrawn e-mail consent, the file noted as its source.

            A whole export: --from DIR --source salesforce|hubspot. Every .csv file is recognised \
            by its header and name (Salesforce Data Export files such as Account.csv or \
            Contact.csv with API names, Salesforce report exports with labels and footer lines, \
            HubSpot contacts, companies, deals and tickets); the report shows what each file was \
            read as, and --object FILE=OBJECT[:SHAPE] overrides it (or skips it: FILE=skip). \
            Files import in dependency order; references between them resolve by the source's \
            ids (and accounts by name in report exports); owners map to the tenant's users by \
            e-mail, through the export's User file or --users (a CSV of owner id or name, \
            e-mail); an owner no user stands for is reported and the row keeps no owner. E-mail \
            opt-outs become withdrawn e-mail consent with the source noted; addresses, lead \
            source, do-not-call and descriptions are kept (in custom fields the import declares \
            where the schema has none). A deal at a stage the tenant's pipeline lacks is \
            rejected, or with --add-stages the stage is added to the pipeline first (closed, won \
            and probability as most of its deals say).

            A rejected row never blocks the others; duplicates (by normalised e-mail or phone, \
            and an account without a source id by its name) are merged into the existing record, filling only empty fields; running the same \
            import again creates and changes nothing. --dry-run reports exactly what the import \
            would do (created, updated, merged as duplicate, unchanged, rejected, per file and \
            with --json per row) without writing.

            Every import that writes gets an id (shown, and 'importID' with --json; a run that \
            writes nothing gets none); \
            'rapportctl import undo ID' reverts it. Its journal is written as batches commit: \
            a run that is killed can be undone too, and running the same import again carries \
            it on under the same id. Files are read as they import, in the same memory whatever \
            their size; on a terminal a progress line shows the rows done and the file read.
            """)
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: "The record type of a single file: contact, lead, account...")
    var type: String?
    @Option(help: ArgumentHelp("The CSV file, or with --source the export's directory.", valueName: "path"))
    var from: String
    @Option(help: ArgumentHelp("A whole export's CRM: salesforce or hubspot.", valueName: "crm"))
    var source: ImportSource?
    @Option(help: "A single file's built-in header mapping: salesforce or hubspot.")
    var mapping: ImportSource?
    @Option(help: ArgumentHelp("A column mapping, column=field; repeatable; adds to or overrides the built-in one.", valueName: "column=field"))
    var map: [String] = []
    @Option(help: ArgumentHelp("Read FILE of the export as OBJECT (Contact, Contact:report, deals...) or skip it; repeatable.", valueName: "file=object"))
    var object: [String] = []
    @Option(help: ArgumentHelp("A CSV of source owner (id, name or e-mail) and tenant user e-mail.", valueName: "file"))
    var users: String?
    @Option(help: ArgumentHelp("How days with separators read: MM/DD/YYYY (default) or DD.MM.YYYY. A day may carry a time (2024-05-31 14:30, 5/31/2024 2:30 PM) and a zone (Z, +02:00); one without a zone is read as UTC. Numbers grouped by thousands read as the same locale writes them: 10,000.00 (US) or 10.000,00 (European).", valueName: "format"))
    var dateFormat: String = ImportDateFormat.us.rawValue
    @Option(help: ArgumentHelp("How files without a byte-order mark are encoded: utf-8 (default) or windows-1252 (also for latin-1 / ISO-8859-1, as Salesforce's Data Export writes for many orgs). Files with a mark (UTF-8, UTF-16) are read as it says.", valueName: "encoding"))
    var encoding: String = CSV.TextEncoding.utf8.rawValue
    @Flag(help: "Check and report without writing anything.")
    var dryRun = false
    @Flag(help: "A whole export: add the stages its deals are at and the tenant's pipeline lacks, rather than reject those deals.")
    var addStages = false

    func validate() throws {
        guard (type == nil) != (source == nil) else { throw ValidationError("give --type for one file or --source for a whole export") }
        guard source != nil || !addStages else { throw ValidationError("--add-stages is for a whole export (--source)") }
        guard source == nil || mapping == nil else { throw ValidationError("--mapping is for one file; a whole export is mapped by --source") }
        guard ImportDateFormat(rawValue: dateFormat) != nil else {
            throw ValidationError("--date-format \(dateFormat): expected \(ImportDateFormat.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        guard CSV.TextEncoding(name: encoding) != nil else {
            throw ValidationError("--encoding \(encoding): expected utf-8 or windows-1252 (latin-1)")
        }
    }

    /// `--encoding`, checked by `validate()`.
    private var textEncoding: CSV.TextEncoding { CSV.TextEncoding(name: encoding) ?? .utf8 }

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        if let source {
            try runExport(source, registry: registry)
            return
        }
        let type = type ?? ""
        guard let data = FileManager.default.contents(atPath: from) else { throw CtlFailure(.notFound, "cannot read \(from)") }
        var chosen: CSVMapping?
        if let mapping {
            guard let builtIn = ImportProfile.singleFileMapping(mapping, type: type) else {
                throw CtlFailure(.usage, "--mapping \(mapping.rawValue): no built-in mapping for \(type)")
            }
            chosen = builtIn
        }
        if !map.isEmpty {
            let explicit = try CSVMapping.parse(map)
            chosen = CSVMapping((chosen?.columns ?? [:]).merging(explicit.columns) { $1 }, values: chosen?.values ?? [:])
        }
        var options = CSVImporter.Options()
        options.dryRun = dryRun
        // Every store below opens with `.crm`, so with the CRM's effects.
        options.storeRunsEffects = true
        options.dateFormat = ImportDateFormat(rawValue: dateFormat) ?? .us
        options.encoding = textEncoding
        options.owners = try owners(registry)
        options.undone = try undoneRecords()
        options.origin = "\(mapping.map { "\($0.rawValue) " } ?? "")\(type) file \((from as NSString).lastPathComponent)"
        let report: ImportReport
        do {
            report = try common.audited(registry, dryRun ? "import (dry run)" : "import", tenant: tenant, detail: "\(type) from \(from)") {
                let store = try openActiveStore(registry)
                defer { store.close() }
                guard !dryRun else { return try CSVImporter(store: store, type: type, mapping: chosen, options: options).run(data: data) }
                return try journaled(detail: "\(type) from \(from)") { (journal: ImportJournal.Writer) -> ImportReport in
                    var options = options
                    options.journal = journal
                    return try CSVImporter(store: store, type: type, mapping: chosen, options: options).run(data: data)
                } setting: { (report: inout ImportReport, id: String) in report.importID = id }
            }
        } catch let stopped as ImportInterrupted {
            // What did go in is reported like a finished import, then the failure and its exit code.
            try render(stopped.report)
            throw CtlFailure(CtlFailure(stopped.cause)?.status ?? .io, stopped.description)
        }
        try render(report)
    }

    /// `--users`: source owner (id, name or e-mail) → tenant user e-mail.
    private func usersFile() throws -> [String: String] {
        guard let users else { return [:] }
        guard let data = FileManager.default.contents(atPath: users) else { throw CtlFailure(.notFound, "cannot read --users \(users)") }
        var map: [String: String] = [:]
        for record in try CSV.parse(data: data, encoding: textEncoding) {
            guard record.fields.count >= 2 else { throw CtlFailure(.usage, "--users \(users), line \(record.line): expected owner,e-mail") }
            let email = record.fields[1].trimmingCharacters(in: .whitespaces)
            // A header line is allowed: its second column is no e-mail.
            if record.row == 1 && !email.contains("@") { continue }
            map[record.fields[0]] = email
        }
        return map
    }

    /// The tenant's users as an owner column may name them: by e-mail and by full name (a
    /// report names owners by name; a name two users share maps to neither).
    private func tenantOwners(_ users: [User]) -> [String: String] {
        var owners: [String: String] = [:]
        var names: [String: [String]] = [:]
        for user in users {
            owners[CSVMapping.normalise(user.email)] = user.email
            if !user.name.isEmpty { names[CSVMapping.normalise(user.name), default: []].append(user.email) }
        }
        for (name, emails) in names where emails.count == 1 && owners[name] == nil { owners[name] = emails[0] }
        return owners
    }

    /// The owners a single file may name, as `CSVImporter.Options.owners` takes them: the
    /// tenant's users (`tenantOwners`), then `--users`, which wins.
    private func owners(_ registry: Registry) throws -> [String: String] {
        let users = try registry.users(tenant: tenant)
        var owners = tenantOwners(users)
        let tenantEmails = Set(users.map(\.email))
        for (owner, email) in try usersFile() {
            // Like a whole export's: an owner mapped to someone who is no user stays unmapped.
            guard tenantEmails.contains(email.lowercased()) else { continue }
            owners[CSVMapping.normalise(owner)] = email.lowercased()
        }
        return owners
    }

    /// What the tenant's undone imports deleted, which the rows that made it bring back; `nil`
    /// when no import of the tenant was undone.
    private func undoneRecords() throws -> ImportJournal.UndoneRecords? {
        let undone = try ImportJournal.UndoneRecords.load(tenant: tenant, in: common.directory.path)
        return undone.isEmpty ? nil : undone
    }

    private func requireActive(_ registry: Registry) throws {
        let tenantRow = try registry.requireTenant(tenant)
        guard tenantRow.status == .active else { throw RegistryError.tenantNotActive(tenant, status: tenantRow.status) }
    }

    private func openActiveStore(_ registry: Registry) throws -> ReplicaStore {
        try requireActive(registry)
        return try common.directory.openStore(of: tenant, options: .crm(role: .authority))
    }

    private func runExport(_ source: ImportSource, registry: Registry) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: from, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CtlFailure(.notFound, "--from \(from): not a directory (a whole export is a directory of CSV files)")
        }
        var options = OrgImporter.Options()
        options.dryRun = dryRun
        // The tenant's store and a dry run's snapshot both open with `.crm`, so with the CRM's effects.
        options.storeRunsEffects = true
        options.addsStages = addStages
        options.dateFormat = ImportDateFormat(rawValue: dateFormat) ?? .us
        options.encoding = textEncoding
        if !map.isEmpty { options.map = try CSVMapping.parse(map) }
        for pair in object {
            guard let equals = pair.lastIndex(of: "="), equals != pair.startIndex else { throw CtlFailure(.usage, "--object \(pair): expected FILE=OBJECT") }
            let file = String(pair[..<equals]), name = String(pair[pair.index(after: equals)...])
            if name.lowercased() == "skip" {
                options.overrides[file] = .some(nil)
            } else {
                guard let profile = ImportProfile.named(name, source: source) else {
                    let known = ImportProfile.all(source).map { "\($0.object):\($0.shape)" }.joined(separator: ", ")
                    throw CtlFailure(.usage, "--object \(pair): \(source.rawValue) has no object '\(name)' (\(known))")
                }
                options.overrides[file] = profile
            }
        }
        options.users = try usersFile()
        let users = try registry.users(tenant: tenant)
        options.tenantUsers = Set(users.map { $0.email.lowercased() })
        options.tenantOwners = tenantOwners(users)
        options.undone = try undoneRecords()
        // A line redrawn on a terminal only: piped output and --json keep their shape.
        let drawsProgress = isatty(STDERR_FILENO) == 1
        if drawsProgress {
            options.progress = { file, rows, read, total in
                let share = total.map { $0 > 0 ? " (\(read * 100 / $0)% of the file)" : "" } ?? ""
                FileHandle.standardError.write(Data("\r\u{1B}[K\(file): \(rows) rows\(share)".utf8))
            }
        }
        defer { if drawsProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
        let report = try common.audited(registry, dryRun ? "import (dry run)" : "import", tenant: tenant, detail: "\(source.rawValue) export from \(from)") {
            guard dryRun else {
                let store = try openActiveStore(registry)
                defer { store.close() }
                return try journaled(detail: "\(source.rawValue) export from \(from)") { (journal: ImportJournal.Writer) -> OrgImportReport in
                    var options = options
                    options.journal = journal
                    return try OrgImporter(store: store, source: source, options: options).run(directory: from)
                } setting: { (report: inout OrgImportReport, id: String) in report.importID = id }
            }
            return try dryRunOnSnapshot(source, options: options, registry: registry)
        }
        if common.json {
            Output.standard(try Self.json(report))
        } else {
            var text = report.summary
            if let id = report.importID {
                text += "import id \(id): 'rapportctl import undo \(id)' reverts it\n"
            } else if !dryRun {
                text += "nothing written, so no import to undo\n"
            }
            for owner in report.unmappedOwners { text += "  owner '\(owner.owner)' in \(owner.file) (\(owner.rows) row(s)): \(owner.reason); left without owner\n" }
            if !report.customFieldsCreated.isEmpty { text += "  custom fields declared: \(report.customFieldsCreated.joined(separator: ", "))\n" }
            for stage in report.stagesAdded {
                text += "  stage added to the pipeline: '\(stage.name)', \(stage.isWon ? "closed won" : stage.isClosed ? "closed lost" : "open"), "
                    + "probability \(stage.probability)%, position \(stage.position)\n"
            }
            var shown = 0
            for file in report.files {
                for rejection in file.report?.rejections ?? [] where shown < 50 {
                    text += "  \(file.file) row \(rejection.row)\(rejection.column.map { ", \($0)" } ?? ""): \(rejection.reason)\n"
                    shown += 1
                }
            }
            if report.rejected > shown { text += "  ... \(report.rejected - shown) more (use --json for all)\n" }
            Output.standard(text)
        }
    }

    /// Runs an import that writes with its journal, owner-only, for `import undo`: started
    /// before the first write and written as batches commit, so an import that is killed or
    /// stopped can be undone too; running it again carries the same journal on.
    private func journaled<R>(detail: String, _ body: (ImportJournal.Writer) throws -> R, setting: (inout R, String) -> Void) throws -> R {
        let journal = try ImportJournal.Writer(tenant: tenant, detail: detail, dataDirectory: common.directory.path, newID: ImportUndo.newID)
        if journal.resumed { Output.error("carrying on import \(journal.id), whose run did not finish") }
        var result: R
        do {
            result = try body(journal)
        } catch {
            if (try? journal.discardIfEmpty()) != true {
                Output.error("import \(journal.id) stopped: 'rapportctl import undo \(journal.id)' reverts what went in; "
                    + "running the same import again carries it on")
            }
            throw error
        }
        if try journal.discardIfEmpty() { return result }
        try journal.finish()
        setting(&result, journal.id)
        return result
    }

    /// A dry run is the real import into a snapshot of the tenant's store, thrown away after:
    /// what the store's rules and effects refuse (consent, the pipeline) is in its report as in
    /// the real run's, and nothing of the tenant is locked or written meanwhile.
    private func dryRunOnSnapshot(_ source: ImportSource, options: OrgImporter.Options, registry: Registry) throws -> OrgImportReport {
        try requireActive(registry)
        // Beside the tenant's own file; a tenant kept in PostgreSQL (--store) has no folder
        // here, and its snapshot goes to an owner-only folder of its own.
        var folder = common.directory.tenantsPath
        var madeFolder: String?
        if !FileManager.default.fileExists(atPath: folder) {
            folder = FileManager.default.temporaryDirectory.path + "/rapport-dry-run-\(UUID().uuidString)"
            try PrivateFiles.createDirectory(folder)
            madeFolder = folder
        }
        let snapshot = folder + "/.dry-run-\(tenant)-\(ProcessInfo.processInfo.processIdentifier).sqlite"
        defer {
            for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: snapshot + suffix) }
            if let madeFolder { try? FileManager.default.removeItem(atPath: madeFolder) }
        }
        _ = try common.directory.backup(tenant: tenant, to: snapshot, in: registry)
        let store = try ReplicaStore(path: snapshot, options: .crm(role: .authority))
        defer { store.close() }
        var real = options
        real.dryRun = false
        var report = try OrgImporter(store: store, source: source, options: real).run(directory: from)
        report.markDryRun()
        return report
    }

    static func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }

    private func render(_ report: ImportReport) throws {
        if common.json {
            Output.standard(try Self.json(report))
        } else {
            var text = report.summary + "\n"
            if let id = report.importID {
                text += "import id \(id): 'rapportctl import undo \(id)' reverts it\n"
            } else if !dryRun {
                text += "nothing written, so no import to undo\n"
            }
            if !report.footerLines.isEmpty { text += "  \(report.footerLines.count) footer line(s) after the data, not imported\n" }
            for rejection in report.rejections.prefix(50) {
                text += "  row \(rejection.row)\(rejection.field.map { ", \($0)" } ?? ""): \(rejection.reason)\n"
            }
            if report.rejections.count > 50 { text += "  ... \(report.rejections.count - 50) more (use --json for all)\n" }
            Output.standard(text)
        }
    }
}

extension ImportSource: ExpressibleByArgument {}

/// Reverts an import by its id, as local writes of the tenant's store that sync to devices.
struct ImportUndo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undo",
        abstract: "Revert an import: delete the records it made, empty the fields it filled.",
        discussion: """
            A field the import filled that holds another value now is kept and reported. The \
            deletions are tombstones ('rapport restore' brings one back) and, like every change, \
            reach the tenant's devices at their next sync. An import is undone once.
            """)
    @OptionGroup var common: CommonOptions
    @Argument(help: "The import's id, as the import printed it.")
    var id: String

    static func newID() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMddHHmmss"
        return "imp-" + formatter.string(from: Date()) + "-" + String(format: "%06x", UInt32.random(in: 0..<(1 << 24)))
    }

    static func path(of id: String, in directory: DataDirectory) throws -> String {
        // Only ids of this form name files, so an id cannot reach outside the folder.
        guard id.hasPrefix("imp-"), id.count == 25, id.dropFirst(4).allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            throw CtlFailure(.usage, "'\(id)' is not an import id (imp-YYYYMMDDHHMMSS-xxxxxx)")
        }
        return directory.path + "/imports/" + id + ".json"
    }

    func run() throws {
        let path = try Self.path(of: id, in: common.directory)
        guard FileManager.default.fileExists(atPath: path) else { throw CtlFailure(.notFound, "no import \(id)") }
        var journal = try ImportJournal.load(id, in: common.directory.path)
        guard journal.undoneAt == nil else { throw CtlFailure(.conflict, "import \(id) was undone already") }
        let registry = try common.registry()
        defer { registry.close() }
        let report = try common.audited(registry, "import undo", tenant: journal.tenant, detail: "\(id): \(journal.detail)") {
            let tenantRow = try registry.requireTenant(journal.tenant)
            guard tenantRow.status == .active else { throw RegistryError.tenantNotActive(journal.tenant, status: tenantRow.status) }
            let store = try common.directory.openStore(of: journal.tenant, options: .crm(role: .authority))
            defer { store.close() }
            let report = try journal.undo(store)
            journal.undoStamp = try store.lastTimestamp.rawValue
            return report
        }
        journal.undoneAt = Date()
        try journal.save(in: common.directory.path)
        if common.json {
            Output.standard(try ImportRun.json(report))
        } else {
            var text = report.summary + "\n"
            for kept in report.kept.prefix(50) { text += "  kept \(kept.record.uuidString.lowercased())\(kept.field.map { " " + $0 } ?? ""): \(kept.reason)\n" }
            Output.standard(text)
        }
    }
}

/// Every live record of a type as CSV, for spreadsheets and other systems.
struct ExportCSV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-csv", abstract: "Write every live record of one type of a tenant as CSV.")
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: "The record type.")
    var type: String
    @Option(help: ArgumentHelp("The file to write, owner-only (standard output if omitted).", valueName: "file"))
    var to: String?

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        let text = try common.audited(registry, "export-csv", tenant: tenant, detail: "\(type) to \(to ?? "stdout")") {
            _ = try registry.requireTenant(tenant, allowDeleted: true)
            let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
            defer { store.close() }
            return try CSVExporter.export(store, type: type)
        }
        if let to {
            try PrivateFiles.write(text, to: to)
        } else {
            Output.standard(text)
        }
    }
}

extension ISO8601DateFormatter {
    /// `YYYY-MM-DD` in UTC.
    static var day: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter
    }
}
