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

    /// How a file without a byte-order mark is read. A file with one (UTF-8, UTF-16) is read
    /// as its mark says, whatever was chosen: the mark cannot be mistaken.
    public enum TextEncoding: String, Sendable, CaseIterable, Codable {
        /// UTF-8; a file that is not is refused at its first line that is not.
        case utf8 = "utf-8"
        /// Windows-1252, which Salesforce's Data Export and Excel on Windows write for many
        /// orgs and locales; also the reading of a Latin-1 (ISO-8859-1) file, as browsers read
        /// one: the two differ only in 0x80-0x9F, control codes Latin-1 text never holds.
        case windows1252 = "windows-1252"

        /// The encoding a name stands for, as tools spell them: `utf-8`, `utf8`, `windows-1252`,
        /// `cp1252`, `latin-1`, `latin1`, `iso-8859-1` (case does not matter).
        public init?(name: String) {
            switch name.lowercased().replacingOccurrences(of: "_", with: "-") {
            case "utf-8", "utf8": self = .utf8
            case "windows-1252", "cp1252", "cp-1252", "latin-1", "latin1", "iso-8859-1", "iso8859-1": self = .windows1252
            default: return nil
            }
        }

        /// The characters of bytes 0x80-0x9F in Windows-1252; the five it leaves undefined read
        /// as the control codes of the same number, as browsers read them, so no byte is lost.
        static let windows1252High: [Unicode.Scalar] = [
            "\u{20AC}", "\u{81}", "\u{201A}", "\u{192}", "\u{201E}", "\u{2026}", "\u{2020}", "\u{2021}",
            "\u{2C6}", "\u{2030}", "\u{160}", "\u{2039}", "\u{152}", "\u{8D}", "\u{17D}", "\u{8F}",
            "\u{90}", "\u{2018}", "\u{2019}", "\u{201C}", "\u{201D}", "\u{2022}", "\u{2013}", "\u{2014}",
            "\u{2DC}", "\u{2122}", "\u{161}", "\u{203A}", "\u{153}", "\u{9D}", "\u{17E}", "\u{178}",
        ]
    }

    /// Every record of `text`. Blank lines are skipped (they carry no record in any export).
    ///
    /// - Throws: `CRMError.malformedCSV` naming the row and line.
    public static func parse(_ text: String) throws -> [Record] {
        try Reader(data: Data(text.utf8)).all()
    }

    /// Why a file read as UTF-8 that is not is refused, and how to read it.
    static let notUTF8Reason = "not UTF-8 (Latin-1 or Windows-1252?); read it as Windows-1252 "
        + "(rapportctl import --encoding windows-1252) or convert it to UTF-8 first, for example with iconv -f WINDOWS-1252 -t UTF-8"

    /// `parse(_:)` over a file's bytes: UTF-8 (with or without a byte-order mark), or UTF-16
    /// with its byte-order mark, as Excel's "Unicode text" and some HubSpot exports are.
    ///
    /// - Parameter encoding: how a file without a byte-order mark is read.
    /// - Throws: `CRMError.malformedCSV` naming the first line that is not UTF-8 (a Latin-1 or
    ///   Windows-1252 file read as UTF-8): guessing its encoding could turn names into other
    ///   names, so it is refused with the line and the ways to read it.
    public static func parse(data: Data, encoding: TextEncoding = .utf8) throws -> [Record] {
        try Reader(data: data, encoding: encoding).all()
    }

    /// Reads the records of a CSV file or bytes one at a time, so that an export of millions of
    /// rows is read in the memory of one chunk and the record in hand, whatever its size.
    ///
    /// Reads what `parse(data:)` reads (it is the one parser): UTF-8 with or without a
    /// byte-order mark, UTF-16 with one, Windows-1252 when told, converted chunk by chunk; a
    /// file read as UTF-8 that is not is refused at the first line that is not, when the
    /// reading reaches it.
    public final class Reader {
        static let chunkSize = 1 << 16

        private enum Encoding { case unknown, utf8, utf16(bigEndian: Bool), windows1252 }

        private let nextChunk: () throws -> Data?
        private let close: () -> Void
        /// Decoded UTF-8 from the first byte of the record in hand.
        private var buffer: [UInt8] = []
        private var start = 0
        private var ended = false
        private var encoding = Encoding.unknown
        /// How the file is read when it has no byte-order mark.
        private let unmarked: TextEncoding
        /// Raw bytes held back because a character continues in the next chunk.
        private var held: [UInt8] = []
        /// Lines of the decoded text so far, to name the line a bad byte is on.
        private var decodedLines = 1
        private var line = 1
        private var row = 0
        private var field: [UInt8] = []
        /// Bytes of the file read so far, and its size, for a progress line.
        public private(set) var bytesRead = 0
        public let totalBytes: Int?

        /// A reader of the file at `path`, read as `encoding` when it has no byte-order mark.
        ///
        /// - Throws: `CRMError.invalidMapping` when it cannot be opened.
        public convenience init(path: String, encoding: TextEncoding = .utf8) throws {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CRMError.invalidMapping("cannot read \(path)") }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            self.init(totalBytes: size, encoding: encoding, chunks: {
                let data = try handle.read(upToCount: Reader.chunkSize)
                return data?.isEmpty == false ? data : nil
            }, close: { try? handle.close() })
        }

        /// A reader of bytes in memory, read as `encoding` when they have no byte-order mark.
        public convenience init(data: Data, encoding: TextEncoding = .utf8) {
            var offset = data.startIndex
            self.init(totalBytes: data.count, encoding: encoding, chunks: {
                guard offset < data.endIndex else { return nil }
                let end = min(offset + Reader.chunkSize, data.endIndex)
                defer { offset = end }
                return data[offset..<end]
            }, close: {})
        }

        init(totalBytes: Int?, encoding: TextEncoding, chunks: @escaping () throws -> Data?, close: @escaping () -> Void) {
            self.totalBytes = totalBytes
            self.unmarked = encoding
            self.nextChunk = chunks
            self.close = close
        }

        deinit { close() }

        /// Every record left.
        public func all() throws -> [Record] {
            var records: [Record] = []
            while let record = try next() { records.append(record) }
            return records
        }

        /// The next record, `nil` at the end of the file.
        ///
        /// - Throws: `CRMError.malformedCSV` naming the row and line.
        public func next() throws -> Record? {
            while true {
                let parsed = try buffer.withUnsafeBufferPointer { input in
                    try Self.parseRecord(input, from: start, ended: ended, row: row + 1, line: line, field: &field)
                }
                guard let (fields, end, newlines) = parsed else {
                    try refill()
                    continue
                }
                if fields.isEmpty && end == start { return nil }
                let recordLine = line
                start = end
                line += newlines
                // A record of one empty field is a blank line.
                if fields.count == 1 && fields[0].isEmpty { continue }
                row += 1
                return Record(fields: fields, row: row, line: recordLine)
            }
        }

        /// Drops what was read and decodes the next chunk into the buffer.
        private func refill() throws {
            buffer.removeSubrange(0..<start)
            start = 0
            guard let raw = try nextChunk() else {
                ended = true
                buffer += try decode([], final: true)
                return
            }
            bytesRead += raw.count
            buffer += try decode([UInt8](raw), final: false)
        }

        /// UTF-8 of the raw bytes, holding back a character the chunk splits.
        private func decode(_ raw: [UInt8], final: Bool) throws -> [UInt8] {
            var bytes = held + raw
            held = []
            if case .unknown = encoding {
                if !final && bytes.count < 3 { held = bytes; return [] }
                if bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF]) {
                    encoding = .utf16(bigEndian: bytes[0] == 0xFE)
                    bytes.removeFirst(2)
                } else if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
                    encoding = .utf8
                    bytes.removeFirst(3)
                } else {
                    encoding = unmarked == .windows1252 ? .windows1252 : .utf8
                }
            }
            switch encoding {
            case .windows1252:
                // One byte, one character: no chunk splits one.
                var text: [UInt8] = []
                text.reserveCapacity(bytes.count + bytes.count / 8)
                for byte in bytes {
                    if byte < 0x80 {
                        text.append(byte)
                        if byte == UInt8(ascii: "\n") { decodedLines += 1 }
                        continue
                    }
                    let scalar = byte < 0xA0 ? TextEncoding.windows1252High[Int(byte - 0x80)] : Unicode.Scalar(byte)
                    text.append(contentsOf: UTF8.encode(scalar)!)
                }
                return text
            case .unknown, .utf8:
                var cut = bytes.count
                if !final {
                    // Back to the start of the last character; held if its bytes are not all here.
                    var lead = bytes.count - 1
                    while lead > 0, lead > bytes.count - 4, bytes[lead] & 0xC0 == 0x80 { lead -= 1 }
                    if lead >= 0, lead < bytes.count {
                        let byte = bytes[lead]
                        let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                        if lead + length > bytes.count { cut = lead }
                    }
                }
                let text = bytes[..<cut]
                guard String(validating: text, as: UTF8.self) != nil else { throw notUTF8(text) }
                held = Array(bytes[cut...])
                decodedLines += text.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
                return Array(text)
            case .utf16(let bigEndian):
                var units: [UInt16] = []
                units.reserveCapacity(bytes.count / 2)
                for index in stride(from: 0, to: bytes.count - 1, by: 2) {
                    let (high, low) = bigEndian ? (bytes[index], bytes[index + 1]) : (bytes[index + 1], bytes[index])
                    units.append(UInt16(high) << 8 | UInt16(low))
                }
                var keep = bytes.count % 2
                if !final, let last = units.last, (0xD800...0xDBFF).contains(last) { units.removeLast(); keep += 2 }
                guard final ? keep == 0 : true, let text = String(validating: units, as: UTF16.self) else {
                    throw CRMError.malformedCSV(row: row + 1, line: decodedLines, reason: "the file starts as UTF-16 but is not valid UTF-16")
                }
                held = Array(bytes.suffix(keep))
                decodedLines += units.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
                return Array(text.utf8)
            }
        }

        /// The refusal of a text that is not UTF-8, naming its first line that is not.
        private func notUTF8(_ text: ArraySlice<UInt8>) -> CRMError {
            var line = decodedLines
            for part in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                if String(validating: part, as: UTF8.self) == nil { break }
                line += 1
            }
            return .malformedCSV(row: 0, line: line, reason: CSV.notUTF8Reason)
        }

        /// One record of `input` from `start`: its fields, where it ends and the line ends it
        /// holds; `nil` when it may go on past the input and the input has not `ended`. At the
        /// end of the input, no fields and `start` itself.
        private static func parseRecord(_ input: UnsafeBufferPointer<UInt8>, from start: Int, ended: Bool, row: Int, line: Int,
                                        field: inout [UInt8]) throws -> (fields: [String], end: Int, newlines: Int)? {
            let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
            let count = input.count
            var index = start, newlines = 0
            var fields: [String] = []
            func fail(_ reason: String) -> CRMError { .malformedCSV(row: row, line: line + newlines, reason: reason) }
            if index == count { return ended ? ([], start, 0) : nil }
            while true {
                // At the start of a field.
                if index < count, input[index] == quote {
                    index += 1
                    field.removeAll(keepingCapacity: true)
                    let opened = line + newlines
                    var closed = false
                    while index < count {
                        let byte = input[index]
                        if byte == quote {
                            // A quote at the end of the input may be the first of a doubled one.
                            if index + 1 == count && !ended { return nil }
                            if index + 1 < count, input[index + 1] == quote {
                                field.append(quote)
                                index += 2
                                continue
                            }
                            index += 1
                            closed = true
                            break
                        }
                        if byte == lf { newlines += 1 }
                        field.append(byte)
                        index += 1
                    }
                    guard closed else {
                        if !ended { return nil }
                        throw CRMError.malformedCSV(row: row, line: opened, reason: "a quoted field opened on this line never ends")
                    }
                    fields.append(String(decoding: field, as: UTF8.self))
                    if index < count, input[index] != comma, input[index] != cr, input[index] != lf {
                        throw fail("text after the closing quote of field \(fields.count)")
                    }
                } else {
                    let begin = index
                    while index < count, input[index] != comma, input[index] != cr, input[index] != lf {
                        if input[index] == quote { throw fail("a quote inside unquoted field \(fields.count + 1); quote the field and double the quote") }
                        index += 1
                    }
                    if index == count && !ended { return nil }
                    fields.append(String(decoding: UnsafeBufferPointer(rebasing: input[begin..<index]), as: UTF8.self))
                }
                // After a field: a comma, a line end or the end.
                if index == count { return ended ? (fields, index, newlines) : nil }
                if input[index] == comma {
                    index += 1
                    if index == count {
                        guard ended else { return nil }
                        fields.append("")
                        return (fields, index, newlines)
                    }
                    continue
                }
                if input[index] == cr {
                    index += 1
                    if index == count && !ended { return nil }
                }
                if index < count, input[index] == lf { index += 1 }
                return (fields, index, newlines + 1)
            }
        }
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
