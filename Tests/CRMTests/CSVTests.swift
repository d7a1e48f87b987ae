import CRM
import Foundation
import Testing

@Suite struct CSVTests {
    func fields(_ text: String) throws -> [[String]] { try CSV.parse(text).map(\.fields) }

    @Test func quotedFieldsWithCommasNewlinesAndQuotes() throws {
        let text = "name,note\r\n\"Doe, Jane\",\"said \"\"hi\"\"\nthen left\"\r\nplain,\"\"\r\n"
        #expect(try fields(text) == [["name", "note"], ["Doe, Jane", "said \"hi\"\nthen left"], ["plain", ""]])
        let records = try CSV.parse(text)
        #expect(records.map(\.row) == [1, 2, 3])
        #expect(records.map(\.line) == [1, 2, 4])
    }

    @Test func bomLFAndMissingLastLineEnd() throws {
        #expect(try fields("\u{FEFF}a,b\nc,d") == [["a", "b"], ["c", "d"]])
        #expect(try fields("a,b\n\n\nc,d\n") == [["a", "b"], ["c", "d"]])
        #expect(try fields("a,\n,b,") == [["a", ""], ["", "b", ""]])
        #expect(try fields("\"x\"") == [["x"]])
        #expect(try fields("") == [])
        #expect(try fields("é,ü\r\n") == [["é", "ü"]])
    }

    @Test func malformedInputNamesRowAndLine() {
        #expect(throws: CRMError.malformedCSV(row: 2, line: 2, reason: "a quoted field opened on this line never ends")) {
            try CSV.parse("a,b\n\"open,b\nmore")
        }
        #expect(throws: CRMError.malformedCSV(row: 1, line: 1, reason: "text after the closing quote of field 1")) {
            try CSV.parse("\"a\"b,c")
        }
        #expect(throws: CRMError.self) { try CSV.parse("a,b\"c\n") }
    }

    @Test func writingQuotesOnlyWhatNeedsIt() throws {
        #expect(CSV.field("plain") == "plain")
        #expect(CSV.field("a,b") == "\"a,b\"")
        #expect(CSV.field("say \"hi\"") == "\"say \"\"hi\"\"\"")
        #expect(CSV.field("two\nlines") == "\"two\nlines\"")
        #expect(CSV.field(" padded") == "\" padded\"")
        let row = ["a,b", "c\"d", "e\r\nf", "", "g"]
        #expect(try fields(CSV.line(row)) == [row])
    }
}

@Suite struct CSVEncodingTests {
    static let notUTF8 = "not UTF-8 (Latin-1 or Windows-1252?); read it as Windows-1252 (rapportctl import --encoding windows-1252) "
        + "or convert it to UTF-8 first, for example with iconv -f WINDOWS-1252 -t UTF-8"

    /// Windows-1252 as Salesforce and Excel write it: Latin-1 letters, and the characters it puts
    /// in 0x80-0x9F (euro, curly quotes, dashes); the five bytes it leaves undefined read as the
    /// control codes of the same number, so nothing is lost.
    @Test func windows1252IsReadWhenToldAndAMarkStillWins() throws {
        let bytes: [UInt8] = Array("Name,Note\r\n".utf8) + [0x4D, 0xFC, 0x6C, 0x6C, 0x65, 0x72, 0x2C, 0x80, 0x20, 0x35, 0x20, 0x93, 0x6F, 0x6B, 0x94, 0x20, 0x96, 0x20, 0x53, 0x74, 0x72, 0x61, 0xDF, 0x65, 0x81, 0x0D, 0x0A]
        let expected = [["Name", "Note"], ["Müller", "€ 5 \u{201C}ok\u{201D} \u{2013} Straße\u{81}"]]
        #expect(try CSV.parse(data: Data(bytes), encoding: .windows1252).map(\.fields) == expected)
        #expect(throws: CRMError.self) { try CSV.parse(data: Data(bytes)) }
        // Every byte above 0x7F reads as one character, and back: nothing is lost or merged.
        let high = Data(Array(Array("x\n".utf8)) + (0x80...0xFF).map { UInt8($0) } + [0x0A])
        let text = try #require(try CSV.parse(data: high, encoding: .windows1252).last?.fields.first)
        #expect(text.unicodeScalars.count == 128 && Set(text.unicodeScalars).count == 128)
        // A byte-order mark says what the file is, whatever was chosen.
        let marked = Data([0xEF, 0xBB, 0xBF] + Array("Name\nMüller\n".utf8))
        #expect(try CSV.parse(data: marked, encoding: .windows1252).map(\.fields) == [["Name"], ["Müller"]])
        #expect(CSV.TextEncoding(name: "Latin-1") == .windows1252 && CSV.TextEncoding(name: "ISO-8859-1") == .windows1252
                && CSV.TextEncoding(name: "cp1252") == .windows1252 && CSV.TextEncoding(name: "UTF8") == .utf8
                && CSV.TextEncoding(name: "ebcdic") == nil)
    }

    @Test func utf16IsReadAndLatin1IsRefusedWithItsLine() throws {
        let text = "Last Name,City\r\nMüller,Zürich\r\n"
        var utf16 = Data([0xFF, 0xFE])
        utf16.append(text.data(using: .utf16LittleEndian)!)
        #expect(try CSV.parse(data: utf16).map(\.fields) == [["Last Name", "City"], ["Müller", "Zürich"]])
        let latin1 = "Last Name,City\nSmith,Paris\nMüller,Zürich\n".data(using: .isoLatin1)!
        #expect(throws: CRMError.malformedCSV(row: 0, line: 3, reason:
            Self.notUTF8)) {
            try CSV.parse(data: latin1)
        }
    }
}

@Suite struct CSVStreamingTests {
    /// Rows whose quoted line breaks, doubled quotes and characters of several bytes fall across
    /// the reader's chunks, as in any export larger than one.
    static let rows: [[String]] = [["Id", "Name", "Note"]] + (0..<6_000).map { i in
        ["\(i)", "Zoë Ólafsdóttir 山田 \(i)", i % 3 == 0 ? "line one\r\nline \"two\", end \(i)" : ""]
    }

    func file(_ data: Data) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("csv-\(UUID().uuidString).csv").path
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func aFileReadInChunksGivesWhatTheWholeTextGives() throws {
        let text = Self.rows.map(CSV.line).joined()
        #expect(text.utf8.count > 4 * 65_536, "the file spans several chunks")
        let whole = try CSV.parse(text)
        for data in [Data(text.utf8), Data([0xEF, 0xBB, 0xBF]) + Data(text.utf8), Data([0xFF, 0xFE]) + text.data(using: .utf16LittleEndian)!,
                     Data([0xFE, 0xFF]) + text.data(using: .utf16BigEndian)!] {
            let path = try file(data)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let reader = try CSV.Reader(path: path)
            var records: [CSV.Record] = []
            while let record = try reader.next() { records.append(record) }
            #expect(records == whole)
            #expect(records.map(\.fields) == Self.rows)
            #expect(reader.bytesRead == data.count && reader.totalBytes == data.count)
        }
    }

    @Test func aWindows1252FileReadInChunksGivesWhatItsUTF8GivesWhatTheWholeTextGives() throws {
        let text = Self.rows.map { $0.map { $0.replacingOccurrences(of: "山田", with: "\u{2019}Öström\u{20AC}") } }.map(CSV.line).joined()
        let encoded = try #require(text.data(using: .windowsCP1252))
        #expect(encoded.count > 4 * 65_536, "the file spans several chunks")
        let path = try file(encoded)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = try CSV.Reader(path: path, encoding: .windows1252)
        var records: [CSV.Record] = []
        while let record = try reader.next() { records.append(record) }
        #expect(records == (try CSV.parse(text)))
    }

    @Test func aLatin1LineFarIntoTheFileIsRefusedWithItsLine() throws {
        let text = (0..<20_000).map { "\($0),Smith\n" }.joined() + "20000,M\u{FC}ller\n"
        let path = try file(text.data(using: .isoLatin1)!)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = try CSV.Reader(path: path)
        #expect(throws: CRMError.malformedCSV(row: 0, line: 20_001, reason:
            CSVEncodingTests.notUTF8)) {
            while try reader.next() != nil {}
        }
    }
}
