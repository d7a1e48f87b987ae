import Foundation

/// RFC 4180 CSV: the format spreadsheets and other CRMs exchange records in.
///
/// Parsing works on UTF-8 bytes, because an import of a large export is dominated by it; it
/// accepts what real exports contain beyond the RFC (a byte-order mark, LF or CRLF line ends, a
/// last line without one) and refuses what would silently shift columns (a quote inside an
/// unquoted field, text after a closing quote, a quoted field that never ends).
public enum CSV {
    /// One record of a CSV text and where it starts, for reports that point a person at it.
    public struct Record: Sendable, Equatable {
        /// The fields, unquoted.
        public var fields: [String]
        /// 1-based position among the records of the text; the header is record 1.
        public var row: Int
        /// 1-based line of the text where the record starts (a quoted field may span lines).
        public var line: Int
    }

    /// Every record of `text`. Blank lines are skipped (they carry no record in any export).
    ///
    /// - Throws: `CRMError.malformedCSV` naming the row and line.
    public static func parse(_ text: String) throws -> [Record] {
        var text = text
        return try text.withUTF8 { try parse(bytes: $0) }
    }

    /// `parse(_:)` over a file's bytes: UTF-8 (with or without a byte-order mark), or UTF-16
    /// with its byte-order mark, as Excel's "Unicode text" and some HubSpot exports are.
    ///
    /// - Throws: `CRMError.malformedCSV` naming the first line that is not UTF-8 (a Latin-1 or
    ///   Windows-1252 file): guessing its encoding could turn names into other names, so it is
    ///   refused with the line and the way to convert it.
    public static func parse(data: Data) throws -> [Record] {
        let utf8 = try utf8(data)
        return try utf8.withUnsafeBytes { try parse(bytes: $0.bindMemory(to: UInt8.self)) }
    }

    /// `data` as UTF-8, converted from UTF-16 when it starts with that byte-order mark.
    static func utf8(_ data: Data) throws -> Data {
        if data.starts(with: [0xFF, 0xFE]) || data.starts(with: [0xFE, 0xFF]) {
            guard let text = String(data: data, encoding: .utf16) else {
                throw CRMError.malformedCSV(row: 1, line: 1, reason: "the file starts as UTF-16 but is not valid UTF-16")
            }
            return Data(text.utf8)
        }
        if String(data: data, encoding: .utf8) == nil {
            // The first line holding a byte sequence UTF-8 does not allow.
            var line = 1, start = data.startIndex
            for index in data.indices where data[index] == UInt8(ascii: "\n") || index == data.index(before: data.endIndex) {
                if String(data: data[start...index], encoding: .utf8) == nil { break }
                line += 1
                start = data.index(after: index)
            }
            throw CRMError.malformedCSV(row: 0, line: line, reason:
                "not UTF-8 (Latin-1 or Windows-1252?); convert the file to UTF-8 first, for example with iconv -f WINDOWS-1252 -t UTF-8")
        }
        return data
    }

    static func parse(bytes input: UnsafeBufferPointer<UInt8>) throws -> [Record] {
        let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        var index = 0
        if input.count >= 3, input[0] == 0xEF, input[1] == 0xBB, input[2] == 0xBF { index = 3 }
        var records: [Record] = []
        var fields: [String] = []
        var line = 1
        var recordLine = 1
        var field: [UInt8] = []
        func text(_ bytes: UnsafeBufferPointer<UInt8>.SubSequence) -> String { String(decoding: UnsafeBufferPointer(rebasing: bytes), as: UTF8.self) }
        func fail(_ reason: String) -> CRMError { .malformedCSV(row: records.count + 1, line: line, reason: reason) }
        func endRecord() {
            // A record of one empty field is a blank line.
            if !(fields.count == 1 && fields[0].isEmpty) {
                records.append(Record(fields: fields, row: records.count + 1, line: recordLine))
            }
            fields.removeAll(keepingCapacity: true)
        }
        while index < input.count {
            // At the start of a field.
            if input[index] == quote {
                index += 1
                field.removeAll(keepingCapacity: true)
                let opened = line
                var closed = false
                while index < input.count {
                    let byte = input[index]
                    if byte == quote {
                        if index + 1 < input.count, input[index + 1] == quote {
                            field.append(quote)
                            index += 2
                            continue
                        }
                        index += 1
                        closed = true
                        break
                    }
                    if byte == lf { line += 1 }
                    field.append(byte)
                    index += 1
                }
                guard closed else { throw CRMError.malformedCSV(row: records.count + 1, line: opened, reason: "a quoted field opened on this line never ends") }
                fields.append(String(decoding: field, as: UTF8.self))
                if index < input.count, input[index] != comma, input[index] != cr, input[index] != lf {
                    throw fail("text after the closing quote of field \(fields.count)")
                }
            } else {
                let start = index
                while index < input.count, input[index] != comma, input[index] != cr, input[index] != lf {
                    if input[index] == quote { throw fail("a quote inside unquoted field \(fields.count + 1); quote the field and double the quote") }
                    index += 1
                }
                fields.append(text(input[start..<index]))
            }
            // After a field: a comma, a line end or the end.
            if index == input.count { break }
            if input[index] == comma {
                index += 1
                if index == input.count { fields.append("") }
                continue
            }
            if input[index] == cr { index += 1 }
            if index < input.count, input[index] == lf { index += 1 }
            line += 1
            endRecord()
            recordLine = line
        }
        if !fields.isEmpty { endRecord() }
        return records
    }

    /// One field as CSV writes it: quoted when it holds a comma, a quote, a line break or
    /// leading or trailing spaces (which spreadsheets would otherwise trim), quotes doubled.
    /// The one place that quotes, used by report output and export alike.
    public static func field(_ value: String) -> String {
        let needsQuotes = value.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }
            || value.first == " " || value.last == " "
        guard needsQuotes else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// One record as a CSV line, ended with CRLF as the RFC asks.
    public static func line(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",") + "\r\n"
    }
}
