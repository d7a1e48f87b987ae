import Foundation

/// A row of a report: `Codable` for JSON, and cells under fixed column titles for a table and CSV,
/// so that one report renders the same in a terminal, a script and a spreadsheet.
public protocol ReportRow: Codable, Sendable {
    /// The column titles, which are also the JSON keys (snake_case).
    static var columns: [String] { get }
    /// The row's cells, one per column, formatted for reading.
    var cells: [String] { get }
}

/// How a report is written out: `rapportctl report` takes it from `--json` and `--csv`.
public enum ReportFormat: String, Sendable, CaseIterable, Codable {
    /// Columns aligned for a terminal, numbers right-aligned.
    case table
    /// An array of objects, keys sorted: for scripts.
    case json
    /// A header line and one line per row (RFC 4180): for spreadsheets.
    case csv

    /// `rows` in this format.
    public func render<Row: ReportRow>(_ rows: [Row]) throws -> String {
        switch self {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            return String(decoding: try encoder.encode(rows), as: UTF8.self) + "\n"
        case .csv:
            return CSV.line(Row.columns) + rows.map { CSV.line($0.cells) }.joined()
        case .table:
            return Self.table(columns: Row.columns, rows: rows.map(\.cells))
        }
    }

    /// A plain aligned table. The device CLI fits its own tables to the terminal; a report is
    /// also printed to files and logs, where nothing should be cut.
    static func table(columns: [String], rows: [[String]]) -> String {
        let clean = { (cell: String) in cell.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ") }
        let body = rows.map { $0.map(clean) }
        var widths = columns.map(\.count)
        for row in body { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        let numeric = columns.indices.map { i in !body.isEmpty && body.allSatisfy { i < $0.count && ($0[i].isEmpty || Double($0[i]) != nil) } }
        func line(_ cells: [String]) -> String {
            var text = ""
            for (i, width) in widths.enumerated() {
                let cell = i < cells.count ? cells[i] : ""
                let pad = String(repeating: " ", count: width - cell.count)
                text += (i > 0 ? "  " : "") + (numeric[i] ? pad + cell : cell + pad)
            }
            while text.last == " " { text.removeLast() }
            return text + "\n"
        }
        return ([line(columns)] + body.map(line)).joined()
    }
}

/// How reports write numbers: money with two decimals, shares as percentages with one.
enum ReportNumber {
    static func money(_ value: Double) -> String { String(format: "%.2f", value) }
    static func percent(_ share: Double?) -> String { share.map { String(format: "%.1f", $0 * 100) } ?? "" }
    static func decimal(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "" }
}
