import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SQLite
import SyncModel

/// Benchmarks that print one JSON line per figure, each next to a floor measured in the same
/// run on the same machine, because only ratios are comparable on shared, noisy machines.
@main
struct RapportBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapport-bench",
        abstract: "Measure Rapport against floors measured in the same run.",
        subcommands: [StoreBench.self, SyncBench.self, TenantsBench.self, CRMBench.self, HostileBench.self, ScopesBench.self, BranchBench.self,
                      HorizonBench.self, IdleBench.self, IdleWorker.self, WebhookBench.self, APIBench.self, OrgImportWorker.self,
                      PostgresBench.self])
}

struct StoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Apply a batch of new records, then the same batch again, against a plain SQLite insert.")

    @Option(help: "Number of contact-like records.")
    var records = 100_000

    @Option(help: "Directory for the database files (a temporary one by default).")
    var directory: String?

    mutating func run() throws {
        guard records > 0 else { throw ValidationError("--records must be positive") }
        let dir = try BenchDirectory(directory)
        let rows = BenchRows(.contact, count: records)
        let schema = BenchRows.Shape.contact.schema
        let report = Reporter(bench: "store")

        let floor = try measure { try rows.insertPlain(into: dir.path("floor.sqlite")) }
        report.line("floor_plain_insert", ["records": records, "seconds": floor, "records_per_second": Double(records) / floor])

        let source = try ReplicaStore(path: dir.path("source.sqlite"), options: .init(schema: schema))
        try rows.create(in: source)
        // Exported and applied in the form records travel in between replicas (a pull).
        let encoded = try source.encodedChanges(after: 0, limit: records).map(\.record)

        let target = try ReplicaStore(path: dir.path("target.sqlite"), options: .init(schema: schema))
        let applyNew = try measure { try target.apply(encoded: encoded) }
        report.figure("apply_new_records", applyNew, records: records, floor: floor, target: 3)

        let applyAgain = try measure { try target.apply(encoded: encoded) }
        report.figure("apply_duplicates", applyAgain, records: records, floor: floor, target: 1)

        let batched = try ReplicaStore(path: dir.path("batched.sqlite"), options: .init(schema: schema))
        let applyBatched = try measure {
            for start in stride(from: 0, to: encoded.count, by: 1_000) {
                try batched.apply(encoded: Array(encoded[start..<min(start + 1_000, encoded.count)]))
            }
        }
        report.figure("apply_new_records_in_batches_of_1000", applyBatched, records: records, floor: floor, target: nil)

        // CRM accounts as a device pulls them: without and with the CRM's field index, whose
        // entries (owner, parent, name words) cost a decode and a few rows per record.
        let accounts = BenchRows(.crmAccount, count: records)
        let accountFloor = try measure { try accounts.insertPlain(into: dir.path("floor-accounts.sqlite")) }
        let crmSource = try ReplicaStore(path: dir.path("crm-source.sqlite"), options: .init(schema: CRMSchema.current))
        try accounts.create(in: crmSource)
        let pulled = try crmSource.encodedChanges(after: 0, limit: records).map(\.record)
        let plainDevice = try ReplicaStore(path: dir.path("crm-plain.sqlite"), options: .init(schema: CRMSchema.current))
        let applyPlain = try measure { try plainDevice.apply(encoded: pulled) }
        report.figure("apply_new_crm_accounts", applyPlain, records: records, floor: accountFloor, target: 3)
        let indexedDevice = try ReplicaStore(path: dir.path("crm-indexed.sqlite"), options: .crm())
        let applyIndexed = try measure { try indexedDevice.apply(encoded: pulled) }
        report.figure("apply_new_crm_accounts_indexed", applyIndexed, records: records, floor: accountFloor, target: nil)
        // As a pull from the start applies them: batches of 2,000, each its own transaction,
        // with the index deferred and built once at the end (`deferFieldIndex(of:)`).
        let deferredDevice = try ReplicaStore(path: dir.path("crm-deferred.sqlite"), options: .crm())
        let applyDeferred = try measure {
            for start in stride(from: 0, to: pulled.count, by: 2_000) {
                let batch = Array(pulled[start..<min(start + 2_000, pulled.count)])
                try deferredDevice.transaction {
                    try deferredDevice.deferFieldIndex(of: batch.map(\.type))
                    try deferredDevice.apply(encoded: batch)
                }
            }
        }
        let build = try measure { try deferredDevice.completeFieldIndex() }
        report.line("apply_new_crm_accounts_indexed_deferred_in_batches_of_2000", [
            "records": records, "seconds": applyDeferred + build, "batches_seconds": applyDeferred, "index_build_seconds": build,
            "records_per_second": Double(records) / (applyDeferred + build),
            "ratio_to_floor": (applyDeferred + build) / accountFloor, "target_ratio": 2.5,
        ])
    }
}

extension ReplicaStore.Options {
    /// A tenant's store as `rapportd` opens it (`.crm(role: .authority)`: the CRM's field
    /// indexes and name search) but without the CRM's rules and effects, for writing generated
    /// records straight into a tenant's file before the server starts. The server then opens it
    /// without rebuilding its field index, which a store written with other indexes makes it do
    /// at its first session, inside whatever that session measures.
    static var benchTenantLoad: Self {
        var options = Self.crm(role: .authority)
        options.rules = nil
        options.effects = nil
        return options
    }
}

/// A working directory that is removed afterwards unless the user named it.
final class BenchDirectory {
    let url: URL
    private let temporary: Bool

    init(_ path: String?) throws {
        if let path {
            url = URL(fileURLWithPath: path)
            temporary = false
        } else {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("rapport-bench-\(UUID().uuidString)")
            temporary = true
        }
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        if !temporary {
            // A named directory is reused between runs: start from nothing.
            for item in (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [] {
                try? FileManager.default.removeItem(at: url.appendingPathComponent(item))
            }
        }
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { if temporary { try? FileManager.default.removeItem(at: url) } }
}

/// xorshift64*: making 1.2 million random strings with the system generator would take longer
/// than the benchmark itself.
struct FastRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// Rows of one record type for a benchmark: text fields of 10 to 40 characters and numbers, the
/// same rows for the measured work and for its floor.
struct BenchRows {
    struct Shape {
        var type: String
        var texts: [String]
        var integers: [String]
        var reals: [String]

        /// A contact-like shape of its own: twelve texts and two numbers (the store bench).
        static let contact = Shape(
            type: "contact",
            texts: ["first_name", "last_name", "title", "department", "email", "phone",
                    "mobile", "street", "city", "region", "country", "note"],
            integers: ["age"], reals: ["score"])

        /// The CRM's account: eleven texts and a number (the sync bench, served by rapportd).
        static let crmAccount = Shape(
            type: "account",
            texts: ["name", "industry", "size", "region", "address", "phone", "website",
                    "owner", "parent", "lifecycle_stage", "tier"],
            integers: [], reals: ["annual_revenue"])

        var schema: Schema {
            var fields: [String: FieldKind] = [:]
            for name in texts { fields[name] = .text }
            for name in integers { fields[name] = .integer }
            for name in reals { fields[name] = .real }
            return Schema([RecordType(name: type, fields: fields)])
        }
    }

    struct Row {
        var id: UUID
        var texts: [String]
        var integers: [Int64]
        var reals: [Double]
    }

    let shape: Shape
    let rows: [Row]

    init(_ shape: Shape, count: Int) {
        self.shape = shape
        var generator = FastRandom(seed: 0x5241_5050_4f52_5400)
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
        var previous: UUID?
        rows = (0..<count).map { _ in
            let id = UUID.newRecordID()
            defer { previous = id }
            return Row(id: id,
                texts: shape.texts.map { field in
                    let text = String((0..<Int.random(in: 10...40, using: &generator)).map { _ in letters.randomElement(using: &generator)! })
                    return Self.valid(field, from: text, parent: previous ?? id)
                },
                integers: shape.integers.map { _ in Int64.random(in: 18...90, using: &generator) },
                reals: shape.reals.map { _ in Double.random(in: 0...1_000_000, using: &generator) })
        }
    }

    /// `text` made into a value the CRM's rules accept for `field` (a choice, an e-mail address,
    /// a reference), about as long as the random text, so the rows stay valid and comparable.
    /// Fields without a rule keep the random text.
    static func valid(_ field: String, from text: String, parent: UUID) -> String {
        let word = text.lowercased().filter { $0 != " " }
        switch field {
        case "size": return CRMSchema.companySizes[text.count % CRMSchema.companySizes.count]
        case "lifecycle_stage": return CRMSchema.lifecycleStages[text.count % CRMSchema.lifecycleStages.count]
        case "tier": return CRMSchema.tiers[text.count % CRMSchema.tiers.count]
        case "phone": return "+1 555 " + String(text.count * 7919 % 10_000_000)
        case "website": return "https://" + word + ".example"
        case "owner", "email": return word + "@example.com"
        case "parent": return parent.uuidString
        default: return text
        }
    }

    func values(_ row: Row) -> [String: FieldValue] {
        var values: [String: FieldValue] = [:]
        for (name, text) in zip(shape.texts, row.texts) { values[name] = .text(text) }
        for (name, number) in zip(shape.integers, row.integers) { values[name] = .integer(number) }
        for (name, number) in zip(shape.reals, row.reals) { values[name] = .real(number) }
        return values
    }

    /// Creates every row in `store`, in one transaction.
    func create(in store: ReplicaStore) throws {
        try store.transaction {
            for row in rows { try store.create(shape.type, id: row.id, values(row)) }
        }
    }

    /// The floor: the same rows into a plain table keyed by id, one transaction, one prepared
    /// statement, the same WAL and synchronous settings as a replica store.
    func insertPlain(into path: String) throws {
        let db = try Database(path: path)
        let columns = shape.texts + shape.integers + shape.reals
        try db.execute("CREATE TABLE rows (id BLOB PRIMARY KEY, \(columns.joined(separator: ", ")))")
        let insert = try db.prepare("INSERT INTO rows VALUES (?\(String(repeating: ", ?", count: columns.count)))")
        try db.transaction {
            for row in rows {
                insert.reset()
                try withUnsafeBytes(of: row.id.uuid) { try insert.bind(bytes: $0, at: 1) }
                var index: Int32 = 2
                for text in row.texts { try insert.bind(text: text, at: index); index += 1 }
                for number in row.integers { try insert.bind(integer: number, at: index); index += 1 }
                for number in row.reals { try insert.bind(.real(number), at: index); index += 1 }
                try insert.step()
            }
        }
        db.close()
    }
}
