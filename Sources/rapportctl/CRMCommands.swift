import ArgumentParser
import CRM
import Foundation
import PrivateFiles
import RapportDevice
import Registry

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

/// A CSV file into a tenant, through the same validation a device and the server apply.
struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import records from a CSV file into a tenant.",
        discussion: """
            The header is mapped to fields by --mapping (salesforce or hubspot contact exports), \
            by --map column=field, or by matching field names. A rejected row never blocks the \
            others; duplicates (by normalised e-mail or phone) are merged into the existing \
            record; running the same import again creates nothing. --dry-run reports without \
            writing. The report lists every rejected row with the field and the reason.
            """)
    @OptionGroup var common: CommonOptions
    @Argument var tenant: String
    @Option(help: "The record type: contact, lead, account...")
    var type: String
    @Option(help: ArgumentHelp("The CSV file.", valueName: "file"))
    var from: String
    @Option(help: "A built-in header mapping: salesforce or hubspot.")
    var mapping: String?
    @Option(help: ArgumentHelp("A column mapping, column=field; repeatable.", valueName: "column=field"))
    var map: [String] = []
    @Flag(help: "Check and report without writing anything.")
    var dryRun = false

    func run() throws {
        let registry = try common.registry()
        defer { registry.close() }
        guard let data = FileManager.default.contents(atPath: from) else { throw CtlFailure(.notFound, "cannot read \(from)") }
        let chosen: CSVMapping?
        switch (mapping, map.isEmpty) {
        case (nil, true): chosen = nil
        case (nil, false): chosen = try CSVMapping.parse(map)
        case ("salesforce"?, true): chosen = .salesforceContact
        case ("hubspot"?, true): chosen = .hubspotContact
        case (_?, false): throw CtlFailure(.usage, "give --mapping or --map, not both")
        case (let other?, true): throw CtlFailure(.usage, "--mapping \(other): expected salesforce or hubspot")
        }
        var options = CSVImporter.Options()
        options.dryRun = dryRun
        let report: ImportReport
        do {
            report = try common.audited(registry, dryRun ? "import (dry run)" : "import", tenant: tenant, detail: "\(type) from \(from)") {
                let tenantRow = try registry.requireTenant(tenant)
                guard tenantRow.status == .active else { throw RegistryError.tenantNotActive(tenant, status: tenantRow.status) }
                let store = try common.directory.openStore(of: tenant, options: .crm(role: .authority))
                defer { store.close() }
                return try CSVImporter(store: store, type: type, mapping: chosen, options: options).run(data: data)
            }
        } catch let stopped as ImportInterrupted {
            // What did go in is reported like a finished import, then the failure and its exit code.
            try render(stopped.report)
            throw CtlFailure(CtlFailure(stopped.cause)?.status ?? .io, stopped.description)
        }
        try render(report)
    }

    private func render(_ report: ImportReport) throws {
        if common.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            Output.standard(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
        } else {
            var text = report.summary + "\n"
            for rejection in report.rejections.prefix(50) {
                text += "  row \(rejection.row)\(rejection.field.map { ", \($0)" } ?? ""): \(rejection.reason)\n"
            }
            if report.rejections.count > 50 { text += "  ... \(report.rejections.count - 50) more (use --json for all)\n" }
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
