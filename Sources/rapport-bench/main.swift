import ArgumentParser
import Foundation
import ReplicaStore
import SQLite
import SyncModel

/// Benchmarks that print one JSON line per figure, each next to a floor measured in the same
/// run on the same machine, because only ratios are comparable on shared, noisy machines.
@main
struct RapportBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapport-bench",
        abstract: "Measure Rapport against floors measured in the same run.",
        subcommands: [StoreBench.self])
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
        let rows = ContactRows(count: records)

        let floor = try measure { try rows.insertPlain(into: dir.path("floor.sqlite")) }
        report("floor_plain_insert", floor, floor: nil, target: nil)

        let source = try ReplicaStore(path: dir.path("source.sqlite"), options: .init(schema: ContactRows.schema))
        try source.transaction {
            for row in rows.rows { try source.create("contact", id: row.id, row.values) }
        }
        let states = try source.changes(after: 0, limit: records).map(\.state)

        let target = try ReplicaStore(path: dir.path("target.sqlite"), options: .init(schema: ContactRows.schema))
        let applyNew = try measure { try target.apply(states) }
        report("apply_new_records", applyNew, floor: floor, target: 3)

        let applyAgain = try measure { try target.apply(states) }
        report("apply_duplicates", applyAgain, floor: floor, target: 1)

        let batched = try ReplicaStore(path: dir.path("batched.sqlite"), options: .init(schema: ContactRows.schema))
        let applyBatched = try measure {
            for start in stride(from: 0, to: states.count, by: 1_000) {
                try batched.apply(Array(states[start..<min(start + 1_000, states.count)]))
            }
        }
        report("apply_new_records_in_batches_of_1000", applyBatched, floor: floor, target: nil)
    }

    func measure(_ body: () throws -> Void) throws -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func report(_ figure: String, _ seconds: Double, floor: Double?, target: Double?) {
        var line: [String: Any] = [
            "bench": "store", "figure": figure, "records": records,
            "seconds": (seconds * 10_000).rounded() / 10_000,
            "records_per_second": Int(Double(records) / seconds),
        ]
        if let floor { line["ratio_to_floor"] = ((seconds / floor) * 100).rounded() / 100 }
        if let target { line["target_ratio"] = target }
        let data = try! JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
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
        for name in ["floor", "source", "target", "batched"] {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: self.path(name + ".sqlite") + suffix) }
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

/// Contact-like rows: twelve text fields of 10 to 40 characters and two numbers.
struct ContactRows {
    static let textFields = [
        "first_name", "last_name", "title", "department", "email", "phone",
        "mobile", "street", "city", "region", "country", "note",
    ]
    static let schema = Schema([RecordType(
        name: "contact",
        fields: Dictionary(uniqueKeysWithValues: textFields.map { ($0, FieldKind.text) })
            .merging(["age": .integer, "score": .real]) { $1 })])

    struct Row {
        var id: UUID
        var texts: [String]
        var age: Int64
        var score: Double

        var values: [String: FieldValue] {
            var values: [String: FieldValue] = ["age": .integer(age), "score": .real(score)]
            for (name, text) in zip(ContactRows.textFields, texts) { values[name] = .text(text) }
            return values
        }
    }

    let rows: [Row]

    init(count: Int) {
        var generator = FastRandom(seed: 0x5241_5050_4f52_5400)
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
        rows = (0..<count).map { _ in
            Row(id: UUID(),
                texts: Self.textFields.map { _ in
                    String((0..<Int.random(in: 10...40, using: &generator)).map { _ in letters.randomElement(using: &generator)! })
                },
                age: Int64.random(in: 18...90, using: &generator),
                score: Double.random(in: 0...100, using: &generator))
        }
    }

    /// The floor: the same rows into a plain table keyed by id, one transaction, one prepared
    /// statement, the same WAL and synchronous settings as a replica store.
    func insertPlain(into path: String) throws {
        let db = try Database(path: path)
        let columns = Self.textFields + ["age", "score"]
        try db.execute("CREATE TABLE contacts (id BLOB PRIMARY KEY, \(columns.joined(separator: ", ")))")
        let insert = try db.prepare(
            "INSERT INTO contacts VALUES (?\(String(repeating: ", ?", count: columns.count)))")
        try db.transaction {
            for row in rows {
                insert.reset()
                try withUnsafeBytes(of: row.id.uuid) { try insert.bind(bytes: $0, at: 1) }
                for (offset, text) in row.texts.enumerated() { try insert.bind(text: text, at: Int32(offset + 2)) }
                try insert.bind(integer: row.age, at: 14)
                try insert.bind(.real(row.score), at: 15)
                try insert.step()
            }
        }
        db.close()
    }
}
