@testable import CRM
import Foundation
import ReplicaStore
import SyncModel
import Synchronization
import Testing
import TestScheduling

@Suite struct DuplicateTests {
    @Test(.blocking) func normalisedEmailAndPhone() {
        #expect(ContactKey.email("  Ann@Example.COM ") == "ann@example.com")
        #expect(ContactKey.email("   ") == nil)
        #expect(ContactKey.phone("+44 (20) 7946-0958") == "+442079460958")
        #expect(ContactKey.phone("020 7946 0958") == "02079460958")
        #expect(ContactKey.phone("020 7946 0958", defaultCountryPrefix: "+44") == "+442079460958")
        #expect(ContactKey.phone("0044 20 7946 0958", defaultCountryPrefix: "+44") == "+442079460958")
        #expect(ContactKey.phone("555 0100 22", defaultCountryPrefix: "1") == "+1555010022")
        #expect(ContactKey.phone("+1 555 0100", defaultCountryPrefix: "+44") == "+15550100")
        #expect(ContactKey.phone("12-34") == nil)
    }

    /// The import's own trimming cuts exactly what Foundation's did, beyond ASCII too: the
    /// same scalars at either end, none that only looks like white space (a byte order mark),
    /// and nothing inside or after a combining mark.
    @Test(.blocking) func trimmingMatchesFoundationBeyondASCII() {
        func foundation(_ text: String) -> String { text.trimmingCharacters(in: .whitespacesAndNewlines) }
        func same(_ text: String) -> Bool { CRMText.trimmed(text).unicodeScalars.elementsEqual(foundation(text).unicodeScalars) }
        let scalars = (0...0xFFFF).compactMap(Unicode.Scalar.init)
        for scalar in scalars {
            #expect(same(String(scalar) + "x") && same("x" + String(scalar)), "U+\(String(scalar.value, radix: 16))")
        }
        let spaces = scalars.filter { foundation(String($0)).isEmpty }.map { String($0) }
        #expect(spaces.contains("\u{85}") && spaces.contains("\u{A0}") && spaces.contains("\u{3000}") && !spaces.contains("\u{FEFF}"))
        let others: [String] = ["\u{FEFF}", "\u{301}", "é", "Zoë", "東京", "👩‍💻", "a b", "", "x"]
        for space in spaces + ["\t\n", "\u{A0}\u{3000}"] {
            for other in others {
                for text in [space + other, other + space, space + other + space, other + space + other, space + "\u{301}" + other] {
                    #expect(same(text), "\(text.unicodeScalars.map { String($0.value, radix: 16) })")
                }
            }
        }
    }

    /// Names, owners and titles compare with each run of white space as one space, whatever
    /// the spaces are (two, a tab, a no-break space), and with nothing else changed.
    @Test(.blocking) func namesCompareWithTheirSpacesFolded() {
        #expect(CSVMapping.normalise("Carla  Conti") == "carla conti")
        #expect(CSVMapping.normalise(" Carla\t\u{A0}Conti ") == "carla conti")
        #expect(CSVMapping.normalise("Zoë\u{3000}Müller") == "zoë müller")
        #expect(CSVMapping.normalise("Last Name") == "last name" && CSVMapping.normalise("a b c") == "a b c")
        #expect(CRMText.spacedOnce("e\u{301}  x") == "e\u{301} x" && CRMText.spacedOnce("東京") == "東京" && CRMText.spacedOnce("") == "")
        #expect(CRMText.spacedOnce("\u{FEFF}a") == "\u{FEFF}a", "a byte order mark only looks like white space")
    }

    @Test(.blocking) func finderMatchesExistingContactsByEmailOrPhone() throws {
        let f = try Fixture()
        let ann = try f.contact("Ann", email: "ann@example.com", phone: "+44 20 7946 0958")
        let bob = try f.contact("Bob", phone: "020 7946 0000", ["mobile": .text("07700 900123")])
        let merged = try f.contact("Old", email: "old@example.com", ["merged_into": .text(ann.uuidString)])
        _ = merged
        let finder = try DuplicateFinder(store: f.store, type: "contact", defaultCountryPrefix: "+44")
        #expect(finder.matches(["email": .text(" ANN@example.com")]) == [.init(record: ann, matchedBy: "email", key: "ann@example.com")])
        #expect(finder.matches(["phone": .text("020 7946 0958")]) == [.init(record: ann, matchedBy: "phone", key: "+442079460958")])
        #expect(finder.matches(["phone": .text("+447700900123")]).map(\.record) == [bob])
        #expect(finder.matches(["email": .text("ann@example.com"), "mobile": .text("07700 900123")]).map(\.record) == [ann, bob])
        #expect(finder.matches(["email": .text("old@example.com")]).isEmpty)
        #expect(finder.matches(["email": .text("new@example.com")]).isEmpty)
    }
}

@Suite struct ImportTests {
    static let salesforceHeader = ["Contact ID", "First Name", "Last Name", "Title", "Email", "Phone", "Mobile", "Account Name"]

    /// 10,000 Salesforce-shaped rows: every 20th row from the 8th is bad (500: a missing last
    /// name, a malformed e-mail, a malformed phone or a short row in turn), every 20th from the
    /// 14th repeats the contact of 13 rows before with its e-mail in capitals and padded and a
    /// mobile number the original lacks (500).
    static func generated(rows: Int = 10_000) -> String {
        var text = CSV.line(salesforceHeader)
        for i in 0..<rows {
            var fields = ["003\(i)", "First\(i)", "Last\(i)", "Buyer", "person\(i)@example.com", "+1 555 \(1_000_000 + i)", "",
                          "Company \(i % 50)"]
            switch i % 20 {
            case 7:
                switch (i / 20) % 4 {
                case 0: fields[2] = ""
                case 1: fields[4] = "person\(i).example.com"
                case 2: fields[5] = "call me"
                default: fields.removeLast()
                }
            case 13:
                let original = i - 13
                fields = ["003d\(i)", "First\(original)", "Last\(original)", "", "  PERSON\(original)@Example.com ", "",
                          "+1 555 \(2_000_000 + original)", "Company \(original % 50)"]
            default: break
            }
            text += CSV.line(fields)
        }
        return text
    }

    @Test(.blocking) func tenThousandRowsWithBadRowsAndDuplicates() throws {
        let f = try Fixture()
        let csv = Self.generated()
        let report = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(report.rows == 10_000)
        #expect(report.imported == 9_000)
        #expect(report.merged == 500)
        #expect(report.rejected == 500)
        #expect(report.accountsCreated == 50)
        #expect(report.ignoredColumns.isEmpty)
        #expect(try f.store.count(ofType: "contact") == 9_000)
        #expect(try f.store.count(ofType: "account") == 50)

        // Reasons name the row (the header is row 1), the field and the row's id in the other system.
        #expect(report.rejections[0] == .init(row: 9, field: "last_name", column: "Last Name",
                                              reason: "required, and the row has no value for it", externalID: "0037"))
        #expect(report.rejections[1] == .init(row: 29, field: "email", column: "Email",
                                              reason: "'person27.example.com' is not a valid e-mail address", externalID: "00327"))
        #expect(report.rejections[2] == .init(row: 49, field: "phone", column: "Phone", reason: "'call me' is not a valid phone number (digits, spaces and + - ( ) ., at least 5 digits)", externalID: "00347"))
        #expect(report.rejections[3] == .init(row: 69, field: nil, column: nil, reason: "7 field(s) where the header has 8", externalID: "00367"))

        // A duplicate fills what the original lacked and overwrites nothing.
        let merge = report.merges[0]
        #expect(merge.row == 15 && merge.matchedBy == "email" && merge.filledFields == ["mobile"])
        let original = try f.read(merge.record)
        #expect(original.text("last_name") == "Last0" && original.text("email") == "person0@example.com")
        #expect(original.text("mobile") == "+1 555 2000000" && original.text("title") == "Buyer")
        let company = try f.read(try #require(original.reference("account")))
        #expect(company.text("name") == "Company 0")

        // Running it again creates and changes nothing.
        let sequence = try f.store.lastSequence
        let again = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(again.imported == 0 && again.merged == 9_500 && again.rejected == 500 && again.accountsCreated == 0)
        #expect(again.merges.allSatisfy { $0.filledFields.isEmpty })
        #expect(try f.store.lastSequence == sequence)
        #expect(try f.store.count(ofType: "contact") == 9_000)
    }

    @Test(.blocking) func dryRunReportsTheSameAndWritesNothing() throws {
        let f = try Fixture()
        let csv = Self.generated(rows: 1_000)
        var options = CSVImporter.Options()
        options.dryRun = true
        let dry = try CSVImporter(store: f.store, type: "contact", options: options).run(csv: csv)
        #expect(try f.store.lastSequence == 0)
        let real = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(dry.imported == real.imported && dry.merges == real.merges && dry.rejections == real.rejections)
        #expect(dry.accountsCreated == real.accountsCreated)
        #expect(dry.dryRun && !real.dryRun && real.imported == 900)
    }

    @Test(.blocking) func salesforceExportShape() throws {
        let f = try Fixture()
        let csv = #"""
            "Salutation","First Name","Last Name","Title","Department","Email","Phone","Mobile","Account Name","Birthdate","Do Not Call"
            "Ms.","Jane","O'Neil, Jr","VP ""Sales""","Sales","jane@acme.example","(415) 555-0100","","Acme, Inc.","7/4/1980","true"
            """#.replacingOccurrences(of: "\n", with: "\r\n")
        let report = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(report.imported == 1 && report.accountsCreated == 1 && report.ignoredColumns == ["Salutation"])
        let jane = try #require(try f.store.records(ofType: "contact").first)
        #expect(jane.text("last_name") == "O'Neil, Jr" && jane.text("title") == "VP \"Sales\"")
        #expect(jane.text("birthday") == "1980-07-04" && jane.values["do_not_call"] == .bool(true))
        #expect(try f.read(try #require(jane.reference("account"))).text("name") == "Acme, Inc.")
    }

    @Test(.blocking) func hubspotExportShapeUsesAnExistingAccount() throws {
        let f = try Fixture()
        let globex = try f.account("Globex")
        let csv = """
            Record ID,First Name,Last Name,Email,Phone Number,Company Name,Job Title,Lifecycle Stage,Contact owner
            501,Hank,Scorpio,hank@globex.example,+1 555 0199,GLOBEX ,CEO,customer,Some One
            502,Frank,Grimes,frank@initech.example,,Initech,Engineer,evangelist,Some One
            """
        let report = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        // The owner column is read, but a name is no user without the tenant's users to look in.
        #expect(report.imported == 2 && report.accountsCreated == 1 && report.ignoredColumns.isEmpty)
        #expect(report.unmappedOwners == [.init(owner: "Some One", rows: 2)])
        let contacts = try f.store.records(ofType: "contact")
        #expect(contacts[0].reference("account") == globex && contacts[0].text("title") == "CEO" && contacts[0].text("phone") == "+1 555 0199")
        let initech = try f.read(try #require(contacts[1].reference("account")))
        #expect(initech.text("name") == "Initech" && initech.text("lifecycle_stage") == "core")
    }

    @Test(.blocking) func explicitMappingAndItsErrors() throws {
        let f = try Fixture()
        let mapping = try CSVMapping.parse(["Surname=last_name", "Mail=email", "Where=source", "State=status"])
        let csv = "Surname,Mail,Where,State,Notes\nSmith,s@example.com,Cold Call,new,x\nJones,j@example.com,radio,new,y\n"
        let report = try CSVImporter(store: f.store, type: "lead", mapping: mapping).run(csv: csv)
        #expect(report.imported == 1 && report.ignoredColumns == ["Notes"])
        #expect(report.rejections == [.init(row: 3, field: "source", column: "Where",
                                            reason: "'radio' is not one of \(CRMSchema.leadSources.joined(separator: ", "))")])
        #expect(try f.store.records(ofType: "lead")[0].text("source") == "cold_call")
        #expect(try ReportFormat.csv.render(report.rejections)
                == "row,field,column,reason\r\n3,source,Where,\"'radio' is not one of \(CRMSchema.leadSources.joined(separator: ", "))\"\r\n")

        #expect(throws: CRMError.invalidMapping("'Surname' is not column=field")) { try CSVMapping.parse(["Surname"]) }
        #expect(throws: CRMError.invalidMapping("column 'Surname' maps to 'surname', which lead does not have")) {
            try CSVImporter(store: f.store, type: "lead", mapping: try CSVMapping.parse(["Surname=surname"])).run(csv: "Surname\nx\n")
        }
    }

    @Test(.blocking) func aRowTheStoreRefusesLeavesNoTraceAndBlocksNothing() throws {
        let f = try Fixture()
        let huge = String(repeating: "x", count: 1 << 20 + 1)
        let csv = CSV.line(["Last Name", "Title", "Account Name"]) + CSV.line(["Big", huge, "Only Here Inc"])
            + CSV.line(["Fine", "Buyer", "Elsewhere"])
        let report = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(report.imported == 1 && report.accountsCreated == 1)
        #expect(report.rejections.count == 1 && report.rejections[0].row == 2 && report.rejections[0].reason.contains("title"))
        #expect(try f.store.records(ofType: "account").map { $0.text("name") } == ["Elsewhere"])
    }

    @Test(.blocking) func leadsDeduplicateAndDeletedRowsStayDeleted() throws {
        let f = try Fixture()
        let existing = try f.store.create("lead", ["last_name": .text("Known"), "status": .text("new"),
                                                   "phone": .text("+44 20 7946 0958")]).id
        var options = CSVImporter.Options()
        options.defaultCountryPrefix = "+44"
        let csv = "last_name,status,phone,email\nKnown,new,020 7946 0958,known@example.com\nNew,working,,new@example.com\n"
        let report = try CSVImporter(store: f.store, type: "lead", options: options).run(csv: csv)
        #expect(report.imported == 1)
        #expect(report.merges == [.init(row: 2, record: existing, matchedBy: "phone", filledFields: ["email"])])
        let created = try #require(try f.store.records(ofType: "lead").first { $0.text("last_name") == "New" })
        try f.store.delete(created.id)
        let again = try CSVImporter(store: f.store, type: "lead", options: options).run(csv: csv)
        #expect(again.imported == 0 && again.merged == 1)
        #expect(again.rejections.map(\.row) == [3])
        #expect(again.rejections[0].reason.contains("deleted since"))
    }

    @Test(.blocking) func datesInTheFormatTheSourceWritesAndRejectedValuesAsWritten() throws {
        let f = try Fixture()
        var options = CSVImporter.Options()
        options.dateFormat = .european
        let csv = "last_name,birthday\nA,31.12.1980\nB,2026-03-01T10:00:00.000Z\nC,12/31/1980\nD,1975-06-30 00:00\n"
        let report = try CSVImporter(store: f.store, type: "contact", options: options).run(csv: csv)
        #expect(report.imported == 3)
        #expect(report.rejections == [.init(row: 4, field: "birthday", column: "birthday",
                                            reason: "'12/31/1980' is not a valid date (YYYY-MM-DD)")])
        #expect(Set(try f.store.records(ofType: "contact").compactMap { $0.text("birthday") }) == ["1980-12-31", "2026-03-01", "1975-06-30"])
    }

    /// Amounts as reports write them, grouped by thousands in the export's locale, and counts;
    /// what one European locale reads otherwise than another is refused as the file wrote it.
    @Test(.blocking) func numbersGroupedByThousandsAsTheExportsLocaleWritesThem() throws {
        let us: [String: Double?] = [
            "10,000": 10_000, "1,234.56": 1_234.56, "-1,234,567.5": -1_234_567.5, "1234.5": 1_234.5, "1.234": 1.234, "0.5": 0.5,
            "12,5": nil, "1.234.567": nil, "1,23": nil, "1,2345": nil, "10 000": nil, "1,,000": nil, ",5": nil, "1,000.": nil, "USD 10": nil,
        ]
        for (text, expected) in us { #expect(try FieldConversion.number(text, dateFormat: .us) == expected, "\(text)") }
        let european: [String: Double?] = [
            "10.000,00": 10_000, "10 000,50": 10_000.5, "10\u{A0}000,50": 10_000.5, "10'000.25": 10_000.25, "1,234.56": 1_234.56,
            "12,5": 12.5, "3.5": 3.5, "1234,567": 1_234.567, "1.234.567": 1_234_567, "-0,75": -0.75, "1.234,5.6": nil, "1.23,4": nil,
        ]
        for (text, expected) in european { #expect(try FieldConversion.number(text, dateFormat: .european) == expected, "\(text)") }
        for ambiguous in ["10,000", "1.500"] {
            #expect(throws: FieldConversion.Problem.self, "\(ambiguous)") { try FieldConversion.number(ambiguous, dateFormat: .european) }
        }
        #expect(try FieldConversion.wholeNumber("1,200", dateFormat: .us) == 1_200 && FieldConversion.wholeNumber("1,200.00", dateFormat: .us) == 1_200)
        #expect(try FieldConversion.wholeNumber("1.200", dateFormat: .european) == 1_200 && FieldConversion.wholeNumber("1,200", dateFormat: .european) == 1_200)
        #expect(try FieldConversion.wholeNumber("1.200", dateFormat: .us) == nil && FieldConversion.wholeNumber("12.5", dateFormat: .european) == nil)

        // Through an import: the reason quotes the value as the file held it.
        let f = try Fixture()
        var options = CSVImporter.Options()
        options.dateFormat = .european
        let account = try f.account("Acme").text()
        let csv = "name,account,stage,amount\nA,\(account),prospecting,\"12.500,00\"\nB,\(account),prospecting,\"1,500\"\n"
        let report = try CSVImporter(store: f.store, type: "opportunity", options: options).run(csv: csv)
        #expect(report.imported == 1)
        #expect(try f.store.records(ofType: "opportunity").first?.values["amount"] == .real(12_500))
        #expect(report.rejections.map(\.reason) == ["'1,500' is 1500 in some European exports and 1.500 in others: write it without a separator of thousands"])
    }

    /// Times as Salesforce, HubSpot and US reports write them, with and without a zone, kept
    /// as UTC instants; a time that does not exist is refused as the file wrote it.
    @Test(.blocking) func timesInTheFormsExportsWriteThemAreKeptAsUTCInstants() throws {
        let f = try Fixture()
        let written = [
            "2024-02-01 10:00": "2024-02-01T10:00:00Z",              // HubSpot
            "2024-02-01 10:00:59": "2024-02-01T10:00:59Z",
            "2024-05-31T14:30:00.000Z": "2024-05-31T14:30:00Z",       // Salesforce
            "2024-05-31T14:30:00.000+0000": "2024-05-31T14:30:00Z",
            "2024-05-31T00:30:00+02:00": "2024-05-30T22:30:00Z",      // an offset moves the day
            "2024-05-31T23:30:00-0500": "2024-06-01T04:30:00Z",
            "5/31/2024 2:30 PM": "2024-05-31T14:30:00Z",               // a US report
            "5/31/2024 12:05 AM": "2024-05-31T00:05:00Z",
            "5/31/2024 12:05 pm": "2024-05-31T12:05:00Z",
            "5/31/2024 14:30 UTC": "2024-05-31T14:30:00Z",
            "2024-05-31": "2024-05-31T00:00:00Z",
        ]
        let refused = ["2024-05-31 25:00", "5/31/2024 13:00 PM", "2024-05-31 10:61", "2024-05-31 10:00 tomorrow", "2024-02-30 10:00"]
        let rows = written.keys.sorted() + refused
        let csv = "subject,kind,due_at\n" + rows.map { CSV.line(["s " + $0, "task", $0]) }.joined()
        let report = try CSVImporter(store: f.store, type: "activity").run(csv: csv)
        #expect(report.imported == written.count)
        #expect(report.rejections.map(\.reason) == refused.map { "'\($0)' is not a valid instant (YYYY-MM-DDTHH:MM:SSZ, UTC)" })
        let kept = Dictionary(uniqueKeysWithValues: try f.store.records(ofType: "activity").map {
            (String($0.text("subject")!.dropFirst(2)), $0.text("due_at")) })
        for (text, instant) in written { #expect(kept[text] == instant, "\(text)") }
    }

    @Test(.blocking) func orgImporterReportsProgressPerBatchAndResolvesReferences() throws {
        let f = try Fixture()
        let accounts = CSV.line(["Id", "Name"]) + (0..<5).map { CSV.line(["001\($0)", "Firma \($0)"]) }.joined()
        let contacts = CSV.line(["Id", "AccountId", "LastName"]) + (0..<5).map { CSV.line(["003\($0)", "001\($0)", "Nachname \($0)"]) }.joined()
        let seen = Mutex<[String]>([])
        var options = OrgImporter.Options()
        options.batchSize = 2
        options.progress = { file, rows, read, total in seen.withLock { $0.append("\(file) \(rows) \(read)/\(total ?? -1)") } }
        let report = try OrgImporter(store: f.store, source: .salesforce, options: options)
            .run(files: [("Contact.csv", { CSV.Reader(data: Data(contacts.utf8)) }), ("Account.csv", { CSV.Reader(data: Data(accounts.utf8)) })])
        #expect(report.files.map(\.file) == ["Account.csv", "Contact.csv"], "accounts first, whatever the order given")
        #expect(report.created == 10)
        // A file this small is read in one chunk: its bytes are all read at the first batch.
        let (a, c) = (accounts.utf8.count, contacts.utf8.count)
        #expect(seen.withLock { $0 } == ["Account.csv 2 \(a)/\(a)", "Account.csv 4 \(a)/\(a)", "Account.csv 5 \(a)/\(a)",
                                         "Contact.csv 2 \(c)/\(c)", "Contact.csv 4 \(c)/\(c)", "Contact.csv 5 \(c)/\(c)"])
        let contact = try #require(try f.store.records(ofType: "contact").first { $0.text("last_name") == "Nachname 3" })
        #expect(try f.read(try #require(contact.reference("account"))).text("name") == "Firma 3")
    }

    /// Every batch of every file of an import goes in as one bulk write (a larger page cache,
    /// fewer log copies), which ends with the import, whether it succeeds or fails; a dry run
    /// writes nothing and begins none.
    @Test(.blocking) func anImportIsOneBulkWriteThatEndsWithIt() throws {
        let f = try Fixture()
        let accounts = CSV.line(["Id", "Name"]) + (0..<5).map { CSV.line(["001\($0)", "Firma \($0)"]) }.joined()
        let contacts = CSV.line(["Id", "AccountId", "LastName"]) + (0..<5).map { CSV.line(["003\($0)", "001\($0)", "Nachname \($0)"]) }.joined()
        let files: [(name: String, open: () throws -> CSV.Reader)] = [
            ("Contact.csv", { CSV.Reader(data: Data(contacts.utf8)) }), ("Account.csv", { CSV.Reader(data: Data(accounts.utf8)) })]
        // The importer calls its progress on its own thread, between batches, while nothing
        // else uses the store: reading whether it is in a bulk write there races with nothing.
        nonisolated(unsafe) let store = f.store
        let seen = Mutex<[String]>([])
        var options = OrgImporter.Options()
        options.batchSize = 2
        options.progress = { file, rows, _, _ in seen.withLock { $0.append("\(file) \(rows) \(store.isInBulkWrite)") } }
        options.dryRun = true
        _ = try OrgImporter(store: f.store, source: .salesforce, options: options).run(files: files)
        #expect(seen.withLock { $0 }.allSatisfy { $0.hasSuffix("false") })
        #expect(seen.withLock { $0 }.count == 6)

        seen.withLock { $0 = [] }
        options.dryRun = false
        let report = try OrgImporter(store: f.store, source: .salesforce, options: options).run(files: files)
        #expect(report.created == 10)
        #expect(seen.withLock { $0 } == ["Account.csv 2 true", "Account.csv 4 true", "Account.csv 5 true",
                                         "Contact.csv 2 true", "Contact.csv 4 true", "Contact.csv 5 true"])
        #expect(!f.store.isInBulkWrite)

        // A single file on its own, and one that fails as a whole (a mapping to no field).
        seen.withLock { $0 = [] }
        var single = CSVImporter.Options()
        single.progress = { rows, _, _ in seen.withLock { $0.append("\(rows) \(store.isInBulkWrite)") } }
        _ = try CSVImporter(store: f.store, type: "account", options: single).run(csv: CSV.line(["name"]) + CSV.line(["Solo GmbH"]))
        #expect(seen.withLock { $0 } == ["1 true"])
        #expect(!f.store.isInBulkWrite)
        #expect(throws: (any Error).self) {
            try CSVImporter(store: f.store, type: "account", mapping: CSVMapping(["name": "no_such_field"]), options: single)
                .run(csv: CSV.line(["name"]) + CSV.line(["Nobody"]))
        }
        #expect(!f.store.isInBulkWrite)
    }

    /// A Salesforce export holds a converted lead and what its conversion made (account,
    /// contact, opportunity): the lead is linked to those, not converted a second time by the
    /// CRM's effects, which gave every converted lead a second contact.
    @Test(.blocking) func aConvertedLeadIsLinkedToWhatItsConversionMadeNotConvertedAgain() throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        let files = [
            ("Lead.csv", CSV.line(["Id", "FirstName", "LastName", "Company", "Email", "Status", "IsConverted", "ConvertedAccountId",
                                   "ConvertedContactId", "ConvertedOpportunityId", "ConvertedDate"])
                + CSV.line(["00QA", "Peter", "Gibbons", "Initrode Ltd", "peter@initrode.example", "Closed - Converted", "true",
                            "001A", "003A", "006A", "2024-01-10"])
                + CSV.line(["00QB", "Milton", "Waddams", "Initech", "milton@initech.example", "Open - Not Contacted", "false", "", "", "", ""])),
            ("Opportunity.csv", CSV.line(["Id", "AccountId", "Name", "StageName", "CloseDate"])
                + CSV.line(["006A", "001A", "Initrode TPS", "Closed Won", "2024-03-31"])),
            ("Contact.csv", CSV.line(["Id", "AccountId", "FirstName", "LastName", "Email"])
                + CSV.line(["003A", "001A", "Peter", "Gibbons", "peter@initrode.example"])),
            ("Account.csv", CSV.line(["Id", "Name"]) + CSV.line(["001A", "Initrode Ltd"])),
        ]
        var options = OrgImporter.Options()
        options.storeRunsEffects = true
        let report = try OrgImporter(store: f.store, source: .salesforce, options: options)
            .run(files: files.map { name, text in (name, { CSV.Reader(data: Data(text.utf8)) }) })
        #expect(report.files.map(\.file) == ["Account.csv", "Contact.csv", "Opportunity.csv", "Lead.csv"])
        #expect(report.created == 5 && report.rejected == 0, "\(report.summary)")
        try f.store.settleEffects()
        let (accounts, contacts) = (try f.store.records(ofType: "account"), try f.store.records(ofType: "contact"))
        #expect(accounts.count == 1 && contacts.count == 1, "no second contact or account for the converted lead")
        let opportunity = try #require(try f.store.records(ofType: "opportunity").first)
        let converted = try #require(try f.store.records(ofType: "lead").first { $0.text("last_name") == "Gibbons" })
        #expect(converted.text("status") == "converted" && converted.text("converted_at") == "2024-01-10T00:00:00Z")
        #expect(converted.reference("converted_account") == accounts[0].id && converted.reference("converted_contact") == contacts[0].id
                && converted.reference("converted_opportunity") == opportunity.id)
        let open = try #require(try f.store.records(ofType: "lead").first { $0.text("last_name") == "Waddams" })
        #expect(open.text("status") == "new" && open.reference("converted_contact") == nil)
    }

    @Test(.blocking) func referencesMustExist() throws {
        let f = try Fixture()
        let account = try f.account("A")
        let missing = UUID()
        let csv = "last_name,account\nOk,\(account.uuidString)\nBad,\(missing.uuidString)\n"
        let report = try CSVImporter(store: f.store, type: "contact").run(csv: csv)
        #expect(report.imported == 1)
        #expect(report.rejections == [.init(row: 3, field: "account", column: "account", reason: "no account with id \(missing.uuidString)")])
    }

    @Test(.blocking) func exportReimportsIntoAnotherStore() throws {
        let f = try Fixture()
        let account = try f.account("A, with \"quotes\"")
        try f.contact("Doe", email: "doe@example.com", account: account, ["first_name": .text("Jo\nanne"), "nps": .integer(9)])
        let csv = try CSVExporter.export(f.store, type: "account") + ""
        #expect(csv.hasPrefix("id,address,annual_revenue,"))
        let other = try Fixture()
        let accounts = try CSVImporter(store: other.store, type: "account").run(csv: csv)
        #expect(accounts.imported == 1 && accounts.ignoredColumns == ["id", "loyalty_points"])
        #expect(try other.store.records(ofType: "account")[0].text("name") == "A, with \"quotes\"")
        let contacts = try CSVExporter.export(f.store, type: "contact")
        let rows = try CSV.parse(contacts)
        let header = rows[0].fields
        #expect(rows[1].fields[header.firstIndex(of: "first_name")!] == "Jo\nanne")
        #expect(rows[1].fields[header.firstIndex(of: "nps")!] == "9")
    }
}

/// An import into a store with the CRM's effects writes what they would add to a new record
/// with the record (`CSVImporter.Options.storeRunsEffects`): the tenant must end as the
/// effects alone leave it.
@Suite struct ImportFoldedEffectsTests {
    static let opportunities = """
        name,stage,amount,account_name,probability,closed_at
        Open deal,prospecting,100,Acme,,
        Won deal,closed_won,200,Acme,,
        Lost deal with its probability,closed_lost,300,Beta,5,
        Open deal closed by hand,negotiation,400,Beta,,2025-01-01
        Won deal with its day,closed_won,1,Gamma,,2025-02-02

        """
    static let contacts = """
        last_name,email,consent_email,consent_calls,consent_calls_at
        Doe,doe@example.com,withdrawn,,
        Roe,roe@example.com,granted,withdrawn,2024-05-01T10:00:00Z
        Poe,poe@example.com,,,

        """

    func imported(folding: Bool, options: ReplicaStore.Options = Fixture.crmOptions(role: .authority)) throws -> Fixture {
        let f = try Fixture(options: options)
        var importOptions = CSVImporter.Options()
        importOptions.storeRunsEffects = folding
        // Opportunities find or make their account by name, as the whole-org import's report shape does.
        let byName = CSVMapping(Dictionary(uniqueKeysWithValues: ["name", "stage", "amount", "account_name", "probability", "closed_at"].map { ($0, $0) }))
        for (type, csv, mapping) in [("opportunity", Self.opportunities, byName), ("contact", Self.contacts, nil)] {
            let report = try CSVImporter(store: f.store, type: type, mapping: mapping, options: importOptions).run(csv: csv)
            #expect(report.rejections.isEmpty && report.imported > 0, "\(report.rejections)")
        }
        return f
    }

    @Test(.blocking) func theTenantEndsAsTheEffectsAloneLeaveIt() throws {
        let (folded, plain) = (try imported(folding: true), try imported(folding: false))
        for type in ["opportunity", "contact", "account"] {
            let values = { (f: Fixture) in Dictionary(uniqueKeysWithValues: try f.store.records(ofType: type).map { ($0.id, $0.values) }) }
            #expect(try values(folded) == values(plain), "\(type)")
            #expect(try folded.store.count(ofType: type) > 0)
        }
        // Stage changes are named after the write that set the stage, which differs: compared by content.
        let changes = { (f: Fixture) in try f.store.records(ofType: "stage_change").map { $0.values.filter { $0.key != "id" } }
            .map { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }.sorted() }
        #expect(try changes(folded) == changes(plain))
        #expect(try changes(folded).count == 5)
        let won = try #require(try folded.store.records(ofType: "opportunity").first { $0.text("name") == "Won deal" })
        #expect(won.integer("probability") == 100 && won.text("closed_at") == Fixture.day(0))
        #expect(try folded.read(try #require(won.reference("account"))).text("lifecycle_stage") == "customer")
    }

    /// An export's close date of a deal already closed is the day it closed: the record keeps
    /// it as its closing day, where the effects would have dated the close on the import's day.
    /// An open deal's close date stays what it is, expected; a closing day the file gives wins.
    @Test(.blocking, arguments: [true, false]) func aClosedDealClosedOnItsExportedCloseDate(folding: Bool) throws {
        let f = try Fixture(options: Fixture.crmOptions(role: .authority))
        var options = CSVImporter.Options()
        options.storeRunsEffects = folding
        let csv = """
            name,stage,amount,account,expected_close,closed_at
            Won in 2023,closed_won,100,\(try f.account("A").text()),2023-03-31,
            Lost in 2024,closed_lost,100,\(try f.account("B").text()),2024-01-15,
            Still open,negotiation,100,\(try f.account("C").text()),2027-06-30,
            Won with its day,closed_won,100,\(try f.account("D").text()),2023-03-31,2023-04-02

            """
        let report = try CSVImporter(store: f.store, type: "opportunity", options: options).run(csv: csv)
        #expect(report.imported == 4, "\(report.rejections)")
        let closing = Dictionary(uniqueKeysWithValues: try f.store.records(ofType: "opportunity").map { ($0.text("name")!, $0.text("closed_at") ?? "none") })
        #expect(closing == ["Won in 2023": "2023-03-31", "Lost in 2024": "2024-01-15", "Still open": "none", "Won with its day": "2023-04-02"])
    }

    /// The effects date what they write by the write's own time; a clock that moves on between
    /// writes (here by 7 hours at every reading, so every other write is another day) still
    /// gives each record the day and the moment of its own write.
    @Test(.blocking) func aClockThatTicksBetweenWritesStillDatesEachRecordByItsWrite() throws {
        var options = Fixture.crmOptions(role: .authority)
        let ticks = Mutex<UInt64>(0)
        let start = UInt64(Fixture.now.timeIntervalSince1970 * 1000)
        options.wallClock = { ticks.withLock { $0 += 1; return start + $0 * 7 * 3_600_000 } }
        let f = try imported(folding: true, options: options)
        for deal in try f.store.records(ofType: "opportunity") where ["closed_won", "closed_lost"].contains(deal.text("stage")) && deal.text("name") != "Won deal with its day" {
            let day = try #require(CRMChangeEffects.writeTime(of: "stage", in: deal)).floorDivided(by: 86_400)
            #expect(deal.text("closed_at") == CRMDate.format(day: day), "\(deal.text("name") ?? "")")
        }
        for contact in try f.store.records(ofType: "contact") where contact.text("consent_email") != nil {
            let time = try #require(CRMChangeEffects.writeTime(of: "consent_email", in: contact))
            #expect(contact.text("consent_email_at") == CRMDate.format(instant: time))
        }
        let roe = try #require(try f.store.records(ofType: "contact").first { $0.text("last_name") == "Roe" })
        #expect(roe.text("consent_calls_at") == "2024-05-01T10:00:00Z", "a stamp the file gives is kept")
    }
}

@Suite struct ConversionShortcutTests {
    @Test(.blocking) func translationKeysAreLettersAndDigitsLowercasedWhateverTheScript() {
        for text in ["Closed Won", "Open - Not Contacted", "Proposal/Price Quote", "Id. Decision Makers", "  42 ", "", "-",
                     "Zürich", "ÉLAN 2", "Straße", "日本 Sales"] {
            #expect(ImportProfile.key(text) == String(text.lowercased().unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) }), "\(text)")
        }
    }

    /// Ids already in tenants' stores must never change: this one computed apart, by the
    /// definition (128-bit FNV-1a over the namespace, a zero byte and the key).
    @Test(.blocking) func derivedIDsKeepTheirValues() {
        #expect(DerivedID.make("contact", "ann@example.com") == UUID(uuidString: "2415E3A2-9C32-8C14-B301-54A7A495DFE9"))
    }

    /// A journal's batch line, written by hand, reads back as the batch it was written from,
    /// with no ids, one, or many, the fields it filled (texts that need escaping included),
    /// and without the change sequence of a line of an earlier version.
    @Test(.blocking) func aJournalLineReadsBackAsItsBatch() throws {
        let ids = (0..<500).map { DerivedID.make("test", "\($0)") }
        let filled = [
            ImportJournal.Filled(record: ids[0], field: "name", value: .init(.text("Zoë \"Quote\" \\ back\nslash"))),
            ImportJournal.Filled(record: ids[1], field: "amount", value: .init(.real(1_000.5))),
            ImportJournal.Filled(record: ids[1], field: "consent_email_at", value: nil),
        ]
        for (created, filled, sequence) in [([UUID](), [], Int64?.none), ([ids[0]], filled, 7), (ids, [], Int64.max)] {
            let batch = ImportJournal.Writer.Batch(created: created, filled: filled, stamp: UInt64.max, sequence: sequence)
            let line = try batch.line()
            #expect(line.last == UInt8(ascii: "\n") && line.dropLast().allSatisfy { $0 != UInt8(ascii: "\n") }, "one line")
            let read = try ImportJournal.decoder.decode(ImportJournal.Writer.Batch.self, from: line)
            #expect(read.created == created && read.filled == filled && read.stamp == UInt64.max && read.sequence == sequence)
        }
    }
}
