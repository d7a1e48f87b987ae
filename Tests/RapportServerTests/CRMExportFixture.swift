import CRM
import Foundation

/// Whole-org exports as Salesforce and HubSpot write them, with what real ones hold: names in
/// many scripts, commas and line breaks inside quoted fields, the same person twice with the
/// e-mail in other case and spacing, references to records the export lacks, owners who are no
/// user, values the CRM does not know, and a report's footer. It knows what each row should
/// become, so tests compare the tenant with it.
struct SalesforceExportFixture {
    var accounts = 300, contacts = 400, leads = 300, opportunities = 300, cases = 200, campaigns = 5, members = 300, tasks = 300, events = 100

    static let firstNames = ["José", "Zoë", "Łukasz", "Ólöf", "Thị Mai", "Søren", "Ana María", "花子", "Анна", "Fatima"]
    static let lastNames = ["García", "Müller", "Dąbrowski", "Ólafsdóttir", "Nguyễn", "O'Brien", "Smith, Jr.", "山田", "Иванова", "Al-Hassan"]
    static let users = [("005A01", "Anna Admin", "anna@acme.example"), ("005A02", "Ben Brown", "ben@acme.example"),
                        ("005A03", "Carl Contractor", "carl@elsewhere.example")]
    static let stages = ["Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"]

    static func id(_ prefix: String, _ i: Int) -> String { prefix + String(format: "%012d", i) }
    static func owner(_ i: Int) -> String { i % 50 == 17 ? "005GONE" : users[i % 3].0 }
    /// The e-mail a row's owner maps to, `nil` when no tenant user stands for it (Carl is no
    /// user of the tenant; 005GONE is in no user file).
    static func ownerEmail(_ i: Int) -> String? { i % 50 == 17 || i % 3 == 2 ? nil : users[i % 3].2 }

    /// An account's parent: one later in the file (i % 10 == 3), one earlier (i % 10 == 8), or an
    /// id the export lacks (i % 100 == 53), which is reported and the account kept without it.
    func accountParent(_ i: Int) -> String {
        if i % 100 == 53 { return "001NOPARENT\(i)" }
        if i % 10 == 3 { return Self.id("001", (i + 7) % accounts) }
        if i % 10 == 8 { return Self.id("001", i - 5) }
        return ""
    }
    var accountParentsMissing: Int { (0..<accounts).filter { $0 % 100 == 53 }.count }

    static func accountName(_ i: Int) -> String { i % 4 == 0 ? "Navy Systems, Inc. \(i)" : "Société Générale d'Études \(i)" }
    func contactBroken(_ i: Int) -> Bool { i % 40 == 39 }
    /// A repeat of contact i-10 with its e-mail in capitals and padded, and a mobile it lacks.
    func contactDuplicate(_ i: Int) -> Bool { i % 25 == 24 && !contactBroken(i) && !contactBroken(i - 10) }
    func leadBogus(_ i: Int) -> Bool { i % 30 == 29 }
    func opportunityBroken(_ i: Int) -> Bool { i % 50 == 49 }
    func taskBroken(_ i: Int) -> Bool { i % 60 == 59 }
    /// A contact put in an e-mail campaign (campaigns 0 and 3) without e-mail consent: the store refuses it.
    func memberRefused(_ i: Int) -> Bool { i % 2 == 0 && [0, 3].contains(i % campaigns) }
    var membersCreated: Int { (0..<members).filter { !memberRefused($0) }.count }
    func contactEmail(_ i: Int) -> String { "person\(i)@example.com" }
    func accountDescription(_ i: Int) -> String { i % 3 == 0 ? "Client clé depuis 2019,\nrenouvelle au printemps \(i)" : "" }
    /// Salesforce's kinds of task, and a task of an org older than the field (no subtype).
    static let taskSubtypes = ["Call", "Email", "Task", ""]
    func taskContact(_ i: Int) -> Int { contactBroken(i % contacts) ? (i + 1) % contacts : i % contacts }
    /// A call planned for after the import (every other call), not one made before it.
    func taskLater(_ i: Int) -> Bool { Self.taskSubtypes[i % 4] == "Call" && i % 8 == 0 }
    /// A call to a contact marked do-not-call: the tenant's consent rule refuses one planned for
    /// after the import, which marks the contact, and keeps one made before as history.
    func taskRefused(_ i: Int) -> Bool { taskLater(i) && taskToDoNotCall(i) }
    func taskToDoNotCall(_ i: Int) -> Bool { Self.taskSubtypes[i % 4] == "Call" && taskContact(i) % 11 == 0 && !taskBroken(i) }
    func taskDescription(_ i: Int) -> String { i % 2 == 0 ? "Left a voicemail, \"urgent\"\nwill try again \(i)" : "" }

    var contactsCreated: Int { (0..<contacts).filter { !contactBroken($0) && !contactDuplicate($0) }.count }
    var contactDuplicates: Int { (0..<contacts).filter(contactDuplicate).count }
    var contactsBroken: Int { (0..<contacts).filter(contactBroken).count }
    var leadsCreated: Int { (0..<leads).filter { !leadBogus($0) }.count }
    var opportunitiesCreated: Int { (0..<opportunities).filter { !opportunityBroken($0) }.count }
    var tasksCreated: Int { (0..<tasks).filter { !taskBroken($0) && !taskRefused($0) }.count }
    var rowsRejected: Int { contactsBroken + (leads - leadsCreated) + (opportunities - opportunitiesCreated) + (tasks - tasksCreated) + (members - membersCreated) }

    func write(to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func file(_ name: String, _ header: [String], _ rows: [[String]]) throws {
            let text = CSV.line(header) + rows.map(CSV.line).joined()
            try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
        }
        let id = Self.id, names = (Self.firstNames, Self.lastNames)
        try file("User.csv", ["Id", "Username", "Name", "Email", "IsActive"],
                 Self.users.map { [$0.0, $0.2 + ".sf", $0.1, $0.2, "true"] })
        try file("Account.csv", ["Id", "Name", "Industry", "Phone", "Website", "BillingStreet", "BillingCity", "BillingPostalCode",
                                 "BillingCountry", "OwnerId", "AnnualRevenue", "ParentId", "Description"],
                 (0..<accounts).map { i in
                     [id("001", i), Self.accountName(i), i % 2 == 0 ? "Défense" : "Banking", "+33 1 40 20 \(1000 + i)",
                      "https://a\(i).example", i % 2 == 0 ? "\(i) Rue de Rivoli\nBâtiment B" : "\(i) Main St, Suite 5",
                      "Paris", "75001", "France", Self.owner(i), "\(100_000 + i * 1_000)", accountParent(i), accountDescription(i)]
                 })
        try file("Campaign.csv", ["Id", "Name", "Type", "Status", "StartDate", "EndDate", "BudgetedCost"],
                 (0..<campaigns).map { i in
                     [id("701", i), "Spring, \(i)", ["Email", "Webinar", "Conference"][i % 3], ["Planned", "In Progress", "Completed"][i % 3],
                      "2026-03-0\(i + 1)", "2026-04-0\(i + 1)", "\(5_000 + i)"]
                 })
        try file("Contact.csv", ["Id", "AccountId", "FirstName", "LastName", "Title", "Email", "Phone", "MobilePhone", "MailingStreet",
                                 "MailingCity", "MailingCountry", "HasOptedOutOfEmail", "DoNotCall", "LeadSource", "OwnerId", "Birthdate",
                                 "Description"],
                 (0..<contacts).map { i in
                     let original = contactDuplicate(i) ? i - 10 : i
                     return [id("003", i), contactBroken(i) ? "001BROKEN\(i)" : id("001", original % accounts),
                             names.0[original % 10], names.1[original % 10], "Directeur, \"Achats\"",
                             contactDuplicate(i) ? "  PERSON\(original)@Example.COM " : contactEmail(i),
                             contactDuplicate(i) ? "" : "+49 30 \(100_000 + i)", contactDuplicate(i) ? "+49 170 \(200_000 + i)" : "",
                             "\(i) Chemin des Écoliers, Appt 4\nEscalier B", "Genève", "Suisse",
                             i % 7 == 0 ? "true" : "false", i % 11 == 0 ? "true" : "false", ["Web", "Partner Referral", ""][i % 3],
                             Self.owner(i), i % 5 == 0 ? "1980-07-04" : "", i % 6 == 0 ? "Parle français, pas d'appels le lundi" : ""]
                 })
        try file("Lead.csv", ["Id", "FirstName", "LastName", "Company", "Email", "Phone", "Status", "LeadSource", "HasOptedOutOfEmail",
                              "Street", "City", "Country", "OwnerId", "Description"],
                 (0..<leads).map { i in
                     [id("00Q", i), names.0[(i + 3) % 10], names.1[(i + 3) % 10], "Prospect, Ltd \(i)", "lead\(i)@example.org",
                      "+44 20 7946 \(1000 + i)",
                      leadBogus(i) ? "Bogus Status" : ["Open - Not Contacted", "Working - Contacted", "Closed - Not Converted"][i % 3],
                      ["Web", "Trade Show", "Phone Inquiry"][i % 3], i % 9 == 0 ? "true" : "false", "\(i) High St", "London", "UK",
                      Self.owner(i), i % 4 == 0 ? "Met at the Lyon fair" : ""]
                 })
        try file("Opportunity.csv", ["Id", "AccountId", "Name", "Amount", "StageName", "Probability", "CloseDate", "OwnerId",
                                     "LeadSource", "NextStep", "Description"],
                 (0..<opportunities).map { i in
                     [id("006", i), opportunityBroken(i) ? "001BROKEN\(i)" : id("001", i % accounts), "Deal \(i), phase 2",
                      "\(1_000 + i * 10).50", Self.stages[i % Self.stages.count], "", "2026-0\(1 + i % 9)-15", Self.owner(i),
                      ["Web", "Partner Referral"][i % 2], i % 3 == 0 ? "Call back\nafter the board meets" : "", i % 4 == 1 ? "Competes with \"Globex\", \(i)" : ""]
                 })
        try file("Case.csv", ["Id", "CaseNumber", "AccountId", "ContactId", "Subject", "Description", "Priority", "Status", "Origin",
                              "OwnerId", "CreatedDate"],
                 (0..<cases).map { i in
                     let contact = i * 2 % contacts
                     return [id("500", i), "000\(10_000 + i)", id("001", i % accounts), contactBroken(contact) ? "" : id("003", contact),
                             "Facture reçue deux fois, \(i)", "Line one\nline two", ["High", "Medium", "Low"][i % 3],
                             ["New", "Working", "Closed"][i % 3], ["Phone", "Email", "Web"][i % 3], Self.owner(i),
                             "2026-03-01T10:\(String(format: "%02d", i % 60)):00.000Z"]
                 })
        try file("CampaignMember.csv", ["Id", "CampaignId", "ContactId", "LeadId", "Status"],
                 (0..<members).map { i in
                     let lead = leadBogus(i % leads) ? (i + 1) % leads : i % leads
                     let contact = contactBroken(i % contacts) ? (i + 1) % contacts : i % contacts
                     return [id("00v", i), id("701", i % campaigns), i % 2 == 0 ? id("003", contact) : "",
                             i % 2 == 1 ? id("00Q", lead) : "", ["Sent", "Responded"][i % 2]]
                 })
        try file("Event.csv", ["Id", "Subject", "StartDateTime", "DurationInMinutes", "WhoId", "WhatId", "OwnerId", "Description"],
                 (0..<events).map { i in
                     let contact = contactBroken(i % contacts) || contactDuplicate(i % contacts) ? (i + 1) % contacts : i % contacts
                     return [id("00U", i), "Réunion, \"kick-off\" \(i)", "2026-05-0\(1 + i % 9)T09:30:00.000Z", "\(30 + i % 4 * 15)",
                             id("003", contact), id("006", opportunityBroken(i % opportunities) ? (i + 1) % opportunities : i % opportunities),
                             Self.owner(i), "Agenda: pricing,\nthen the roll-out \(i)"]
                 })
        try file("Task.csv", ["Id", "Subject", "ActivityDate", "Status", "WhoId", "WhatId", "OwnerId", "TaskSubtype", "Description"],
                 (0..<tasks).map { i in
                     let contact = taskContact(i)
                     let what = taskBroken(i) ? "006BROKEN\(i)" : i % 2 == 0 ? id("001", i % accounts)
                         : id("006", opportunityBroken(i % opportunities) ? (i + 1) % opportunities : i % opportunities)
                     return [id("00T", i), "Call about renewal, part \(i)", "\(taskLater(i) ? 2099 : 2026)-04-0\(1 + i % 9)", ["Not Started", "Completed"][i % 2],
                             id("003", contact), what, Self.owner(i), Self.taskSubtypes[i % 4], taskDescription(i)]
                 })
    }
}
