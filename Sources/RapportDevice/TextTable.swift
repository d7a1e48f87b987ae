import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A table of text aligned in columns and fitted to a terminal's width.
///
/// When the table is too wide, the widest shrinkable columns are narrowed first and their cells
/// end in "…"; columns marked not shrinkable (record ids, which people copy) are never cut.
/// Widths count characters, so East Asian wide characters may make a line overflow slightly.
public struct TextTable: Sendable {
    /// A column's title and how it may be laid out.
    public struct Column: Sendable {
        public var title: String
        /// Whether cells may be truncated to make the table fit.
        public var shrinkable: Bool
        /// Numbers read better aligned right.
        public var alignRight: Bool

        /// A column titled `title`, shrinkable and left-aligned unless told otherwise.
        public init(_ title: String, shrinkable: Bool = true, alignRight: Bool = false) {
            self.title = title
            self.shrinkable = shrinkable
            self.alignRight = alignRight
        }
    }

    public var columns: [Column]
    /// Cells by row; a short row is padded with empty cells.
    public var rows: [[String]]
    /// Whether the first line holds the column titles.
    public var showsHeader: Bool
    /// Spaces between columns.
    public static let gap = 2
    /// A shrinkable column is not narrowed below this (or its natural width, if smaller).
    public static let minimumWidth = 6

    /// A table of `rows` under `columns`.
    public init(columns: [Column], rows: [[String]] = [], showsHeader: Bool = true) {
        self.columns = columns
        self.rows = rows
        self.showsHeader = showsHeader
    }

    /// The table as lines of at most `width` characters (unless even the narrowest layout is
    /// wider), each ending in a newline; no trailing spaces.
    public func render(width: Int) -> String {
        guard !columns.isEmpty else { return "" }
        let body = rows.map { row in columns.indices.map { Self.clean($0 < row.count ? row[$0] : "") } }
        let titles = columns.map { Self.clean($0.title) }
        var natural = titles.map { showsHeader ? $0.count : 0 }
        for row in body {
            for (index, cell) in row.enumerated() { natural[index] = max(natural[index], cell.count) }
        }
        let widths = Self.fit(natural: natural, shrinkable: columns.map(\.shrinkable), width: width)
        var lines: [[String]] = showsHeader ? [titles] : []
        lines += body
        var output = ""
        for line in lines {
            var text = ""
            for (index, cell) in line.enumerated() {
                let fitted = Self.truncate(cell, to: widths[index])
                let padding = String(repeating: " ", count: widths[index] - fitted.count)
                if index > 0 { text += String(repeating: " ", count: Self.gap) }
                text += columns[index].alignRight ? padding + fitted : fitted + padding
            }
            while text.last == " " { text.removeLast() }
            output += text + "\n"
        }
        return output
    }

    /// Column widths that fit `width`: every shrinkable column is capped at one common width,
    /// the largest cap that fits, so wide columns give way before narrow ones lose anything.
    static func fit(natural: [Int], shrinkable: [Bool], width: Int) -> [Int] {
        let gaps = Self.gap * max(0, natural.count - 1)
        func total(cap: Int) -> Int {
            zip(natural, shrinkable).reduce(gaps) { sum, column in
                sum + (column.1 ? min(column.0, max(cap, Self.minimumWidth)) : column.0)
            }
        }
        let widest = natural.max() ?? 0
        guard total(cap: widest) > width else { return natural }
        var low = 0, high = widest  // total(high) > width; find the largest cap with total <= width
        while low < high {
            let middle = (low + high + 1) / 2
            if total(cap: middle) <= width { low = middle } else { high = middle - 1 }
        }
        var widths = zip(natural, shrinkable).map { $0.1 ? min($0.0, max(low, Self.minimumWidth)) : $0.0 }
        // The common cap leaves up to one character per capped column unused: hand it out
        // left to right so the line uses the whole width.
        var spare = width - total(cap: low)
        for index in widths.indices where spare > 0 && shrinkable[index] && widths[index] < natural[index] {
            widths[index] += 1
            spare -= 1
        }
        return widths
    }

    /// Cuts `text` to `width` characters, marking the cut with "…".
    public static func truncate(_ text: String, to width: Int) -> String {
        guard text.count > width else { return text }
        guard width > 1 else { return String(text.prefix(max(width, 0))) }
        return String(text.prefix(width - 1)) + "…"
    }

    /// One line per row: tabs, newlines and other control characters become spaces.
    static func clean(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map {
            $0.properties.generalCategory == .control ? " " : $0
        }))
    }
}

/// What the commands know about where their output goes.
public enum Terminal {
    /// Used when `COLUMNS` is unset or not a number.
    public static let defaultWidth = 100

    /// The width to fit output to: `COLUMNS` (as shells export it) or 100.
    public static func width(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        if let text = environment["COLUMNS"], let columns = Int(text.trimmingCharacters(in: .whitespaces)), columns >= 20 {
            return columns
        }
        return defaultWidth
    }

    /// Whether `descriptor` is a terminal (a person is watching), which decides the progress bar.
    public static func isTerminal(_ descriptor: Int32) -> Bool { isatty(descriptor) != 0 }
}
