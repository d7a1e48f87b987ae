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
        try Reader(data: Data(text.utf8)).all()
    }

    /// `parse(_:)` over a file's bytes: UTF-8 (with or without a byte-order mark), or UTF-16
    /// with its byte-order mark, as Excel's "Unicode text" and some HubSpot exports are.
    ///
    /// - Throws: `CRMError.malformedCSV` naming the first line that is not UTF-8 (a Latin-1 or
    ///   Windows-1252 file): guessing its encoding could turn names into other names, so it is
    ///   refused with the line and the way to convert it.
    public static func parse(data: Data) throws -> [Record] {
        try Reader(data: data).all()
    }

    /// Reads the records of a CSV file or bytes one at a time, so that an export of millions of
    /// rows is read in the memory of one chunk and the record in hand, whatever its size.
    ///
    /// Reads what `parse(data:)` reads (it is the one parser): UTF-8 with or without a
    /// byte-order mark, UTF-16 with one, converted chunk by chunk; a file that is not UTF-8 is
    /// refused at the first line that is not, when the reading reaches it.
    public final class Reader {
        static let chunkSize = 1 << 16

        private enum Encoding { case unknown, utf8, utf16(bigEndian: Bool) }

        private let nextChunk: () throws -> Data?
        private let close: () -> Void
        /// Decoded UTF-8 from the first byte of the record in hand.
        private var buffer: [UInt8] = []
        private var start = 0
        private var ended = false
        private var encoding = Encoding.unknown
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

        /// A reader of the file at `path`.
        ///
        /// - Throws: `CRMError.invalidMapping` when it cannot be opened.
        public convenience init(path: String) throws {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CRMError.invalidMapping("cannot read \(path)") }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            self.init(totalBytes: size, chunks: {
                let data = try handle.read(upToCount: Reader.chunkSize)
                return data?.isEmpty == false ? data : nil
            }, close: { try? handle.close() })
        }

        /// A reader of bytes in memory.
        public convenience init(data: Data) {
            var offset = data.startIndex
            self.init(totalBytes: data.count, chunks: {
                guard offset < data.endIndex else { return nil }
                let end = min(offset + Reader.chunkSize, data.endIndex)
                defer { offset = end }
                return data[offset..<end]
            }, close: {})
        }

        init(totalBytes: Int?, chunks: @escaping () throws -> Data?, close: @escaping () -> Void) {
            self.totalBytes = totalBytes
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
                } else {
                    encoding = .utf8
                    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
                }
            }
            switch encoding {
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
            return .malformedCSV(row: 0, line: line, reason:
                "not UTF-8 (Latin-1 or Windows-1252?); convert the file to UTF-8 first, for example with iconv -f WINDOWS-1252 -t UTF-8")
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
