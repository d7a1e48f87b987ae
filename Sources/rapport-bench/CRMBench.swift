import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SQLite
import SyncModel

/// The CRM on a device's data: a contact import against a plain SQLite insert of the same rows,
/// and (`--org-rows`) a whole Salesforce export's import against plain inserts of its rows,
/// and the pipeline report against a plain SQL GROUP BY over the same opportunities; on a
/// server's: the rule pass after a batch against applying it without rules, and the scheduled
/// rule pass over a large tenant against reading its records.
struct CRMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm",
        abstract: "Import a generated contact CSV, run the pipeline report and the scheduled rule pass, each against its floor.")

    @Option(help: "Rows of the generated contact CSV.")
    var contacts = 100_000

    @Option(help: "Opportunities for the pipeline report.")
    var opportunities = 100_000

    @Option(help: "Accounts of the tenant the scheduled rule pass runs over, with 2 contacts, 1.5 opportunities, 3 activities and 0.5 cases each.")
    var accounts = 100_000

    @Option(help: "Rows of a generated Salesforce Data Export (accounts, contacts, leads, opportunities, tasks) imported whole, and a quarter of it, to show rows per second and peak memory; 0 leaves the figure out.")
    var orgRows = 0

    @Option(help: "Runs of each report; the median is reported.")
    var runs = 7

    @Option(help: "Directory for the database files (a temporary one by default).")
    var directory: String?

    mutating func run() throws {
        guard contacts > 0, opportunities > 0, accounts > 1, runs > 0 else { throw ValidationError("counts must be positive") }
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "crm")
        try importFigures(dir, report)
        try orgImportFigures(dir, report)
        try pipelineFigures(dir, report)
        try effectsFigures(dir, report)
        try scheduledPassFigures(dir, report)
    }

    /// Salesforce-shaped contact rows: distinct e-mails and phones, 1,000 companies.
    private func contactCSV() -> (text: String, rows: [[String]]) {
        var generator = FastRandom(seed: 0x4352_4d42_454e_4348)
        let titles = ["Buyer", "CFO", "Head of IT", "Office Manager, EMEA", "VP \"Sales\""]
        var rows: [[String]] = []
        rows.reserveCapacity(contacts)
        for i in 0..<contacts {
            rows.append(["003\(i)", "First\(UInt32.random(in: 0...99_999, using: &generator))", "Last\(i)",
                         titles[Int.random(in: 0..<titles.count, using: &generator)], "person\(i)@example.com",
                         "+1 555 \(1_000_000 + i)", "", "Company \(i % 1_000)"])
        }
        let header = ["Contact ID", "First Name", "Last Name", "Title", "Email", "Phone", "Mobile", "Account Name"]
        return (CSV.line(header) + rows.map(CSV.line).joined(), rows)
    }

    private func importFigures(_ dir: BenchDirectory, _ report: Reporter) throws {
        let (text, rows) = contactCSV()
        let data = Data(text.utf8)

        // Floor: the same rows, already split into fields, into a plain table in one transaction.
        let floor = try measure {
            let db = try Database(path: dir.path("contacts-floor.sqlite"))
            try db.execute("CREATE TABLE contacts (id BLOB PRIMARY KEY, external_id, first_name, last_name, title, email, phone, mobile, account)")
            let insert = try db.prepare("INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            try db.transaction {
                for row in rows {
                    insert.reset()
                    try withUnsafeBytes(of: UUID().uuid) { try insert.bind(bytes: $0, at: 1) }
                    for (index, field) in row.enumerated() { try insert.bind(text: field, at: Int32(index + 2)) }
                    try insert.step()
                }
            }
            db.close()
        }
        report.line("floor_plain_insert", ["records": contacts, "seconds": floor, "records_per_second": Double(contacts) / floor])

        // Between the two: the store alone creating the same contacts (no parsing, checks,
        // duplicate search or accounts), to show what the import adds to the store's own cost.
        let plainStore = try ReplicaStore(path: dir.path("store-only.sqlite"), options: .init(schema: CRMSchema.current))
        defer { plainStore.close() }
        let storeOnly = try measure {
            try plainStore.transaction {
                for row in rows {
                    try plainStore.create("contact", [
                        "first_name": .text(row[1]), "last_name": .text(row[2]), "title": .text(row[3]),
                        "email": .text(row[4]), "phone": .text(row[5]),
                    ])
                }
            }
        }
        report.figure("store_create_same_contacts", storeOnly, records: contacts, floor: floor, target: nil)

        let parse = try measure { _ = try CSV.parse(data: data) }
        report.figure("csv_parse", parse, records: contacts, floor: floor, target: nil)

        let store = try ReplicaStore(path: dir.path("device.sqlite"), options: .init(schema: CRMSchema.current))
        defer { store.close() }
        var result: ImportReport?
        let importing = try measure { result = try CSVImporter(store: store, type: "contact").run(data: data) }
        guard let result, result.imported == contacts, result.rejected == 0 else {
            throw ValidationError("import went wrong: \(result?.summary ?? "no report")")
        }
        report.figure("import_contacts_csv", importing, records: contacts, floor: floor, target: nil)

        let again = try measure { _ = try CSVImporter(store: store, type: "contact").run(data: data) }
        report.figure("reimport_same_csv", again, records: contacts, floor: floor, target: nil)
    }

    private func pipelineFigures(_ dir: BenchDirectory, _ report: Reporter) throws {
        var generator = FastRandom(seed: 0x5049_5045_4c49_4e45)
        let stages = CRMPipeline.default.stages.map(\.name)
        let rows = (0..<opportunities).map { _ in
            (id: UUID(), stage: stages[Int.random(in: 0..<stages.count, using: &generator)],
             amount: (Double.random(in: 1_000...500_000, using: &generator) * 100).rounded() / 100,
             close: CRMDate.format(day: 20_000 + Int64.random(in: 0...365, using: &generator)))
        }

        // Floor: the same stage and amount columns in a plain table, grouped by SQL.
        let plain = try Database(path: dir.path("opportunities-floor.sqlite"))
        defer { plain.close() }
        try plain.execute("CREATE TABLE opportunities (id BLOB PRIMARY KEY, name, account, stage, amount REAL, expected_close, owner)")
        let insert = try plain.prepare("INSERT INTO opportunities VALUES (?, 'deal', 'acct', ?, ?, ?, 'rep@example.com')")
        try plain.transaction {
            for row in rows {
                insert.reset()
                try withUnsafeBytes(of: row.id.uuid) { try insert.bind(bytes: $0, at: 1) }
                try insert.bind(text: row.stage, at: 2)
                try insert.bind(.real(row.amount), at: 3)
                try insert.bind(text: row.close, at: 4)
                try insert.step()
            }
        }
        let floor = try median {
            _ = try plain.query("SELECT stage, count(*), sum(amount) FROM opportunities GROUP BY stage") { ($0.string(0), $0.int64(1), $0.double(2)) }
        }
        report.line("floor_sql_group_by", ["records": opportunities, "median_seconds": floor, "runs": runs])

        let store = try ReplicaStore(path: dir.path("pipeline.sqlite"), options: .init(schema: CRMSchema.current))
        defer { store.close() }
        try store.transaction {
            let accounts = try (0..<100).map { try store.create("account", ["name": .text("Account \($0)")]).id.uuidString }
            for (index, row) in rows.enumerated() {
                try store.create("opportunity", id: row.id, [
                    "name": .text("deal \(index)"), "account": .text(accounts[index % accounts.count]), "stage": .text(row.stage),
                    "amount": .real(row.amount), "currency": .text("EUR"), "expected_close": .text(row.close),
                    "owner": .text("rep\(index % 20)@example.com"), "probability": .integer(50),
                ])
            }
        }
        let reports = CRMReports(store: store, rules: CRMRules(now: Date()))
        var total = 0
        let pipeline = try median { total = try reports.pipeline().reduce(0) { $0 + $1.count } }
        guard total == opportunities else { throw ValidationError("the pipeline counted \(total) of \(opportunities)") }
        report.line("pipeline_report", ["records": opportunities, "median_seconds": pipeline, "runs": runs,
                                        "ratio_to_floor": pipeline / floor])
        // For scale: the same report had it decoded every record whole.
        let decoded = try median { _ = try store.records(ofType: "opportunity").count }
        report.line("decode_all_opportunities", ["records": opportunities, "median_seconds": decoded, "runs": runs,
                                                 "ratio_to_floor": decoded / floor])
    }

    /// The median time of `count` runs of `body` (`runs` by default).
    func median(runs count: Int? = nil, _ body: () throws -> Void) throws -> Double {
        var times = try (0..<(count ?? runs)).map { _ in try measure(body) }
        times.sort()
        return times[times.count / 2]
    }
}
