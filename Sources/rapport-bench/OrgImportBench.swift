import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SQLite
import TestSupport

/// A Salesforce Data Export of a given number of rows across objects, generated row by row
/// (never whole in memory), the same rows for the export's files and for the floor's tables.
struct OrgExport {
    /// The objects in the order they import, each with its share of the rows and its columns.
    static let objects: [(name: String, share: Int, header: [String])] = [
        ("User", 0, ["Id", "Name", "Email"]),
        ("Account", 10, ["Id", "Name", "Industry", "Phone", "BillingCity", "BillingCountry", "OwnerId"]),
        ("Contact", 30, ["Id", "AccountId", "FirstName", "LastName", "Email", "Phone", "MailingCity", "HasOptedOutOfEmail", "OwnerId"]),
        ("Lead", 10, ["Id", "FirstName", "LastName", "Company", "Email", "Status", "LeadSource", "OwnerId"]),
        ("Opportunity", 20, ["Id", "AccountId", "Name", "Amount", "StageName", "CloseDate", "OwnerId"]),
        ("Task", 30, ["Id", "Subject", "ActivityDate", "Status", "WhoId", "WhatId", "OwnerId"]),
    ]
    static let users = 20

    let rows: Int

    /// Rows of each object: its share of `rows`, tasks taking what rounding leaves.
    func count(_ object: String) -> Int {
        if object == "User" { return Self.users }
        let shares = Self.objects.filter { $0.name != "User" && $0.name != "Task" }.map { rows * $0.share / 100 }
        if object == "Task" { return rows - shares.reduce(0, +) }
        return rows * (Self.objects.first { $0.name == object }?.share ?? 0) / 100
    }

    static func id(_ prefix: String, _ i: Int) -> String { prefix + String(format: "%012d", i) }

    /// Row `i` of `object`, as the export's file and the floor's table hold it.
    func row(_ object: String, _ i: Int) -> [String] {
        let owner = Self.id("005", i % Self.users)
        let accounts = max(1, count("Account")), contacts = max(1, count("Contact")), opportunities = max(1, count("Opportunity"))
        switch object {
        case "User": return [owner, "Rep \(i)", "rep\(i)@acme.example"]
        case "Account": return [Self.id("001", i), "Company \(i), Inc.", ["Banking", "Retail", "Energy"][i % 3], "+1 212 \(1_000_000 + i)",
                                "Zürich", "Switzerland", owner]
        case "Contact": return [Self.id("003", i), Self.id("001", i % accounts), ["José", "Zoë", "Anna"][i % 3], "Müller \(i)",
                                "person\(i)@example.com", "+1 555 \(1_000_000 + i)", "Genève", i % 7 == 0 ? "true" : "false", owner]
        case "Lead": return [Self.id("00Q", i), "Ada", "Lovelace \(i)", "Prospect \(i), Ltd", "lead\(i)@example.org",
                             ["Open - Not Contacted", "Working - Contacted"][i % 2], ["Web", "Trade Show"][i % 2], owner]
        case "Opportunity": return [Self.id("006", i), Self.id("001", i % accounts), "Deal \(i)", "\(1_000 + i % 50_000).50",
                                    ["Prospecting", "Qualification", "Closed Won"][i % 3], "2026-0\(1 + i % 9)-15", owner]
        default: return [Self.id("00T", i), "Call \(i)", "2026-04-0\(1 + i % 9)", ["Not Started", "Completed"][i % 2],
                         Self.id("003", i % contacts), i % 2 == 0 ? Self.id("001", i % accounts) : Self.id("006", i % opportunities), owner]
        }
    }

    /// Writes the export's files to `directory`, a buffer at a time.
    func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, _, header) in Self.objects {
            let path = directory + "/" + name + ".csv"
            FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            var buffer = CSV.line(header)
            for i in 0..<count(name) {
                buffer += CSV.line(row(name, i))
                if buffer.utf8.count > 1 << 20 { try handle.write(contentsOf: Data(buffer.utf8)); buffer = "" }
            }
            try handle.write(contentsOf: Data(buffer.utf8))
        }
    }

    /// The floor: the same rows, already split into fields, into plain tables of a plain SQLite
    /// file in one transaction.
    func insertPlainly(into path: String) throws {
        let db = try Database(path: path)
        defer { db.close() }
        try db.transaction {
            for (name, _, header) in Self.objects {
                try db.execute("CREATE TABLE \"\(name)\" (row_key BLOB PRIMARY KEY, \(header.map { "\"\($0)\"" }.joined(separator: ", ")))")
                let insert = try db.prepare("INSERT INTO \"\(name)\" VALUES (?\(String(repeating: ", ?", count: header.count)))")
                for i in 0..<count(name) {
                    insert.reset()
                    try withUnsafeBytes(of: UUID().uuid) { try insert.bind(bytes: $0, at: 1) }
                    for (index, field) in row(name, i).enumerated() { try insert.bind(text: field, at: Int32(index + 2)) }
                    try insert.step()
                }
            }
        }
    }
}

extension CRMBench {
    /// The whole-org import of an export of `orgRows` rows and of a quarter of it, each in a
    /// child process whose peak memory is its own, against plain inserts of the same rows.
    func orgImportFigures(_ dir: BenchDirectory, _ report: Reporter) throws {
        for rows in [orgRows / 4, orgRows] where rows >= 100 {
            let export = OrgExport(rows: rows)
            try export.write(to: dir.path("org-export-\(rows)"))
            // The median of three: one run of it moved by half between runs on a shared machine.
            let floor = try median(runs: 3) {
                try? FileManager.default.removeItem(atPath: dir.path("org-floor-\(rows).sqlite"))
                try export.insertPlainly(into: dir.path("org-floor-\(rows).sqlite"))
            }
            let process = try ChildProcess(Bundle.main.executablePath ?? CommandLine.arguments[0],
                                           ["crm-org-import", "--from", dir.path("org-export-\(rows)"), "--directory", dir.path("org-import-\(rows)")],
                                           standardOutput: .pipe, standardError: .inherited)
            let data = process.output!.readDataToEndOfFile()
            _ = process.waitForExit(within: .seconds(3600))
            guard !process.isRunning, process.terminationStatus == 0,
                  let result = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let seconds = result["seconds"] as? Double, let created = result["created"] as? Int, let memory = result["peak_memory_kb"] as? Int
            else { throw ValidationError("the whole-org import of \(rows) rows failed: \(String(decoding: data, as: UTF8.self))") }
            guard created == rows, result["rejected"] as? Int == 0 else {
                throw ValidationError("the whole-org import went wrong: \(String(decoding: data, as: UTF8.self))")
            }
            report.line("org_import_salesforce_export", [
                "rows": rows, "seconds": seconds, "rows_per_second": Double(rows) / seconds, "floor_plain_insert_seconds": floor, "floor_runs": 3,
                "ratio_to_floor": seconds / floor, "target_ratio": 4, "peak_memory_mb": Double(memory) / 1024,
                "export_mb": Double(result["export_bytes"] as? Int ?? 0) / 1_048_576,
            ])
        }
    }
}

/// The child of `crm --org-rows`: imports an export as `rapportctl import --source` does (the
/// CRM store with its rules and effects, the journal written batch by batch) and prints its time
/// and its own peak memory.
struct OrgImportWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "crm-org-import", shouldDisplay: false)

    @Option var from: String
    @Option var directory: String

    func run() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let store = try ReplicaStore(path: directory + "/tenant.sqlite", options: .crm(role: .authority))
        defer { store.close() }
        var options = OrgImporter.Options()
        options.storeRunsEffects = true
        options.journal = try ImportJournal.Writer(tenant: "bench", detail: "salesforce export", dataDirectory: directory) {
            "imp-00000000000000-000000"
        }
        var result: OrgImportReport?
        let seconds = try measure { result = try OrgImporter(store: store, source: .salesforce, options: options).run(directory: from) }
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let bytes = try FileManager.default.contentsOfDirectory(atPath: from).reduce(0) {
            $0 + ((try? FileManager.default.attributesOfItem(atPath: from + "/" + $1)[.size] as? Int) ?? 0)
        }
        let object: [String: Any] = ["seconds": seconds, "created": result?.created ?? 0, "rejected": result?.rejected ?? -1,
                                     "peak_memory_kb": usage.ru_maxrss, "export_bytes": bytes]
        FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: object))
    }
}
