import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import SQLite
import TestScheduling
import TestSupport
import Testing

/// `rapportctl import --source`: whole Salesforce and HubSpot exports into a tenant, as an
/// operator moving a company in runs it.
@Suite(.ownThread) struct OrgImportTests {
    /// A tenant `acme` with users anna and ben; not carl, whom the export knows.
    static func tenant(_ dir: TemporaryDirectory) throws -> Ctl {
        let ctl = Ctl(data: dir.path("data"))
        #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
        for email in ["anna@acme.example", "ben@acme.example"] {
            #expect(try ctl.run(["user", "add", "--tenant", "acme", "--email", email, "--name", "X", "--role", "rep"]).status == 0)
        }
        return ctl
    }

    /// Every record of the tenant by type, from `rapportctl export`: id → fields.
    static func records(_ ctl: Ctl, _ dir: TemporaryDirectory, _ name: String) throws -> [String: [String: [String: Any]]] {
        let out = dir.path(name)
        let exported = try ctl.run(["export", "acme", "--to", out])
        #expect(exported.status == 0, "\(exported.error)")
        var result: [String: [String: [String: Any]]] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: out) where file.hasSuffix(".jsonl") {
            let text = try String(contentsOfFile: out + "/" + file, encoding: .utf8)
            for line in text.split(separator: "\n") {
                let record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard record["deleted"] as? Bool == false else { continue }
                // A field emptied again is null rather than absent: the same value.
                result[record["type"] as! String, default: [:]][record["id"] as! String] = (record["fields"] as? [String: Any])?.filter { !($0.value is NSNull) }
            }
        }
        return result
    }

    /// The report without its dry-run flags, to compare a dry run with the real one.
    static func comparable(_ json: Any?) throws -> NSDictionary {
        var report = try #require(json as? [String: Any])
        report["dryRun"] = nil
        report["importID"] = nil
        report["files"] = (report["files"] as? [[String: Any]])?.map { file in
            var file = file
            if var inner = file["report"] as? [String: Any] { inner["dryRun"] = nil; file["report"] = inner }
            return file
        }
        return report as NSDictionary
    }

    static func file(_ report: Any?, _ name: String) throws -> [String: Any] {
        let files = try #require((report as? [String: Any])?["files"] as? [[String: Any]])
        return try #require(files.first { $0["file"] as? String == name }?["report"] as? [String: Any])
    }

    @Test func aSalesforceDataExportLandsWithReferencesOwnersAndConsent() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let fixture = SalesforceExportFixture()
        try fixture.write(to: dir.path("export"))
        let arguments = ["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--json"]

        let dry = try await ctl.run(arguments + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.error)")
        #expect(try Self.records(ctl, dir, "before")["contact"] == nil, "a dry run writes nothing")
        let real = try await ctl.run(arguments)
        #expect(real.status == 0, "\(real.error)")
        #expect(try Self.comparable(dry.json) == Self.comparable(real.json), "the dry run reports what the import does, row for row")

        // Every file recognised, each count as the fixture made it.
        let accounts = try Self.file(real.json, "Account.csv"), contacts = try Self.file(real.json, "Contact.csv")
        #expect(accounts["imported"] as? Int == fixture.accounts)
        // Every column of a Data Export has a place, descriptions and task kinds included.
        for file in try #require((real.json as? [String: Any])?["files"] as? [[String: Any]]) where file["file"] as? String != "User.csv" {
            #expect((file["report"] as? [String: Any])?["ignoredColumns"] as? [String] == [], "\(file["file"] ?? "")")
        }
        let missingParents = try #require(accounts["rejections"] as? [[String: Any]])
        #expect(missingParents.count == fixture.accountParentsMissing && missingParents.allSatisfy {
            $0["column"] as? String == "ParentId" && ($0["reason"] as? String)?.hasSuffix("the account was imported without it") == true
        }, "\(missingParents)")
        #expect(contacts["imported"] as? Int == fixture.contactsCreated)
        let merges = try #require(contacts["merges"] as? [[String: Any]])
        #expect(merges.count == fixture.contactDuplicates && merges.allSatisfy { $0["matchedBy"] as? String == "email" })
        #expect(merges.allSatisfy { ($0["filledFields"] as? [String])?.contains("mobile") == true })
        let rejections = try #require(contacts["rejections"] as? [[String: Any]])
        #expect(rejections.count == fixture.contactsBroken)
        #expect(rejections.first?["column"] as? String == "AccountId")
        #expect((rejections.first?["reason"] as? String)?.contains("'001BROKEN39' is no account") == true)
        #expect(try Self.file(real.json, "Lead.csv")["imported"] as? Int == fixture.leadsCreated)
        let bogus = try #require((try Self.file(real.json, "Lead.csv")["rejections"] as? [[String: Any]])?.first)
        #expect(bogus["column"] as? String == "Status" && (bogus["reason"] as? String)?.hasPrefix("'Bogus Status' is not one of") == true,
                "a rejected value is quoted as the file held it")
        #expect(try Self.file(real.json, "Opportunity.csv")["imported"] as? Int == fixture.opportunitiesCreated)
        #expect(try Self.file(real.json, "Case.csv")["imported"] as? Int == fixture.cases)
        let members = try Self.file(real.json, "CampaignMember.csv")
        #expect(members["imported"] as? Int == fixture.membersCreated)
        #expect((members["rejections"] as? [[String: Any]])?.first?["reason"] as? String
                == "invalid record: record \(DerivedID.make("import:campaign_member", "external:00v000000000000").uuidString), field 'contact': José García has not consented to e-mail, so cannot be in the e-mail campaign 'Spring, 0'")
        let taskFile = try Self.file(real.json, "Task.csv")
        #expect(taskFile["imported"] as? Int == fixture.tasksCreated, "\(taskFile["rejections"] ?? "")")
        // A logged call (a task of subtype Call) meets the tenant's consent rule like one logged on
        // a device, as consent stood when the call was made: one planned for after the import,
        // which marks the contact do-not-call, is refused; the org's past calls are kept.
        let refusedCalls = ((taskFile["rejections"] as? [[String: Any]]) ?? []).filter { ($0["reason"] as? String)?.hasSuffix("is marked do-not-call") == true }
        #expect(!refusedCalls.isEmpty)
        #expect(refusedCalls.compactMap { $0["row"] as? Int } == (0..<fixture.tasks).filter(fixture.taskRefused).map { $0 + 2 })
        #expect((0..<fixture.tasks).contains { fixture.taskToDoNotCall($0) && !fixture.taskRefused($0) }, "the fixture has past calls to do-not-call contacts")
        #expect(try Self.file(real.json, "Event.csv")["imported"] as? Int == fixture.events)
        let owners = try #require((real.json as? [String: Any])?["unmappedOwners"] as? [[String: Any]])
        #expect(Set(owners.compactMap { $0["owner"] as? String }) == ["005A03", "005GONE"])

        // The tenant holds every object with its references and owners resolved.
        let tenant = try Self.records(ctl, dir, "after")
        #expect(tenant["account"]?.count == fixture.accounts && tenant["contact"]?.count == fixture.contactsCreated)
        #expect(tenant["lead"]?.count == fixture.leadsCreated && tenant["case"]?.count == fixture.cases)
        #expect(tenant["campaign_member"]?.count == fixture.membersCreated && tenant["campaign"]?.count == fixture.campaigns)
        // References hold ids as the store writes them; the export names records in lower case.
        let accountByName = Dictionary(uniqueKeysWithValues: (tenant["account"] ?? [:]).map { ($0.value["name"] as! String, $0.key.uppercased()) })
        let byEmail = Dictionary(uniqueKeysWithValues: (tenant["contact"] ?? [:]).map { ($0.value["email"] as! String, $0.value) })
        for i in 0..<fixture.contacts where !fixture.contactBroken(i) && !fixture.contactDuplicate(i) {
            let contact = try #require(byEmail[fixture.contactEmail(i)])
            #expect(contact["account"] as? String == accountByName[SalesforceExportFixture.accountName(i % fixture.accounts)])
            #expect(contact["last_name"] as? String == SalesforceExportFixture.lastNames[i % 10])
            // Its duplicate row may have filled what it lacked (owner, consent, birthday).
            if fixture.contactDuplicate(i + 10) { continue }
            #expect(contact["owner"] as? String == SalesforceExportFixture.ownerEmail(i))
            #expect(contact["mailing_address"] as? String == "\(i) Chemin des Écoliers, Appt 4\nEscalier B, Genève, Suisse")
            #expect(contact["consent_email"] as? String == (i % 7 == 0 ? "withdrawn" : nil))
            if i % 7 == 0 { #expect(contact["consent_email_source"] as? String == "salesforce Contact export, column HasOptedOutOfEmail") }
            #expect(contact["do_not_call"] as? Bool == (i % 11 == 0))
        }
        let duplicated = try #require(byEmail[fixture.contactEmail(14)])
        #expect(duplicated["mobile"] as? String == "+49 170 200024", "the duplicate filled what the first row lacked")
        // The account hierarchy: parents later in the file, earlier, and missing.
        let accountFields = Dictionary(uniqueKeysWithValues: (tenant["account"] ?? [:]).map { ($0.value["name"] as! String, $0.value) })
        for i in 0..<fixture.accounts {
            let parent = accountFields[SalesforceExportFixture.accountName(i)]?["parent"] as? String
            let named = fixture.accountParent(i)
            if named.isEmpty || named.hasPrefix("001NOPARENT") {
                #expect(parent == nil, "account \(i)")
            } else {
                #expect(parent == accountByName[SalesforceExportFixture.accountName(Int(named.dropFirst(3))!)], "account \(i)")
            }
        }
        // Events are meetings, at the instant Salesforce wrote, with their contact and deal.
        let meetings = (tenant["activity"] ?? [:]).values.filter { $0["kind"] as? String == "meeting" }
        #expect(meetings.count == fixture.events)
        #expect(meetings.allSatisfy { ($0["occurred_at"] as? String)?.hasSuffix("T09:30:00Z") == true && $0["contact"] != nil && $0["opportunity"] != nil })
        #expect(meetings.contains { $0["subject"] as? String == "Réunion, \"kick-off\" 7" && $0["duration_minutes"] as? Int == 75 })
        #expect(meetings.allSatisfy { ($0["description"] as? String)?.hasPrefix("Agenda: pricing,\nthen the roll-out") == true })
        // A task is the call, e-mail or task its subtype says (a task without one), with its notes.
        let tasks = Dictionary(uniqueKeysWithValues: (tenant["activity"] ?? [:]).values.filter { ($0["subject"] as? String)?.hasPrefix("Call about renewal") == true }
            .map { ($0["subject"] as! String, $0) })
        #expect(tasks.count == fixture.tasksCreated)
        for i in 0..<fixture.tasks where !fixture.taskBroken(i) && !fixture.taskRefused(i) {
            let task = try #require(tasks["Call about renewal, part \(i)"])
            #expect(task["kind"] as? String == ["call", "email", "task", "task"][i % 4], "task \(i)")
            #expect(task["description"] as? String == (i % 2 == 0 ? fixture.taskDescription(i) : nil), "task \(i)")
        }
        // Descriptions, which the schema has no field for, land in a declared custom field.
        for i in 0..<fixture.accounts {
            let description = fixture.accountDescription(i)
            #expect(accountFields[SalesforceExportFixture.accountName(i)]?["description"] as? String == (description.isEmpty ? nil : description))
        }
        let deals = tenant["opportunity"] ?? [:]
        #expect(deals.count == fixture.opportunitiesCreated)
        #expect(deals.values.contains { $0["name"] as? String == "Deal 5, phase 2" && $0["description"] as? String == "Competes with \"Globex\", 5" })
        #expect(deals.values.allSatisfy { accountByName.values.contains($0["account"] as! String) })
        #expect(Set(deals.values.compactMap { $0["stage"] as? String }) == Set(PipelineStage.defaultPipeline.map(\.name)))
        let leads = tenant["lead"] ?? [:]
        #expect(leads.values.filter { $0["consent_email"] as? String == "withdrawn" }.count == (0..<fixture.leads).filter { $0 % 9 == 0 && !fixture.leadBogus($0) }.count)
        #expect(Set(leads.values.compactMap { $0["source"] as? String }) == ["web", "event", "cold_call"])

        // The index entries the import deferred are built: none is left deferred, and the
        // index finds each owner's contacts as the records hold them.
        let store = try ReplicaStore(path: try DataDirectory(ctl.data).storePath(of: "acme"), options: .crm(role: .authority))
        #expect(try store.deferredFieldIndexTypes().isEmpty)
        for owner in ["anna@acme.example", "ben@acme.example"] {
            let indexed = try store.records(ofType: "contact", where: "owner", equals: owner).map(\.id)
            let held = (tenant["contact"] ?? [:]).filter { $0.value["owner"] as? String == owner }.keys
            #expect(!indexed.isEmpty && Set(indexed.map { $0.uuidString.lowercased() }) == Set(held.map { $0.lowercased() }), "\(owner)")
        }
        #expect(try store.search("müller", ofType: "contact").count == (tenant["contact"] ?? [:]).values.filter {
            ($0["last_name"] as? String)?.lowercased().contains("müller") == true }.count)
        store.close()

        // The same export again creates and changes nothing.
        let again = try await ctl.run(arguments)
        let totals = try #require(again.json as? [String: Any])
        #expect(again.status == 0 && (totals["files"] as? [[String: Any]])?.compactMap { ($0["report"] as? [String: Any])?["imported"] as? Int }.allSatisfy { $0 == 0 } == true)
        #expect(try Self.records(ctl, dir, "again") as NSDictionary == tenant as NSDictionary)
        // Having written nothing, it is no import: no id, no journal to undo.
        #expect(totals["importID"] == nil && totals["dryRun"] as? Bool == false)
        #expect(try FileManager.default.contentsOfDirectory(atPath: ctl.data + "/imports").filter { $0.hasSuffix(".json") }.count == 1)
    }

    /// A Salesforce org's own stages ("Contract Signed", "Lost to Competitor") are their deals'
    /// problem, reported with them: they stopped the whole import at the batch holding the
    /// first one. With --add-stages the import adds them to the pipeline (the default one made
    /// records first), and undo takes them away again.
    @Test func stagesTheTenantLacksRejectTheirDealsOrAreAddedToThePipeline() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let export = dir.path("export")
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        try (CSV.line(["Id", "Name"]) + CSV.line(["001A", "Acme"])).write(toFile: export + "/Account.csv", atomically: true, encoding: .utf8)
        var deals = CSV.line(["Id", "AccountId", "Name", "Amount", "StageName", "Probability", "IsClosed", "IsWon", "CloseDate"])
        for i in 0..<30 {
            let row: [String] = switch i % 10 {
            case 3: ["Contract Signed", i == 3 ? "80" : "90", "false", "false"]
            case 7: ["Lost to Competitor", "0", "true", "false"]
            default: ["Closed Won", "100", "true", "true"]
            }
            deals += CSV.line(["006\(i)", "001A", "Deal \(i)", "100"] + row + ["2025-06-30"])
        }
        try deals.write(toFile: export + "/Opportunity.csv", atomically: true, encoding: .utf8)
        try (CSV.line(["Id", "Subject", "WhatId"]) + CSV.line(["00T1", "Send the contract", "0063"]))
            .write(toFile: export + "/Task.csv", atomically: true, encoding: .utf8)
        let arguments = ["import", "acme", "--from", export, "--source", "salesforce", "--json"]

        let first = try await ctl.run(arguments)
        #expect(first.status == 0, "\(first.error)")
        let opportunities = try Self.file(first.json, "Opportunity.csv")
        #expect(opportunities["imported"] as? Int == 24)
        let rejections = try #require(opportunities["rejections"] as? [[String: Any]])
        #expect(rejections.compactMap { $0["row"] as? Int } == [5, 9, 15, 19, 25, 29])
        #expect(rejections.first?["column"] as? String == "StageName" && (rejections.first?["reason"] as? String)?.hasPrefix(
            "'Contract Signed' is not a stage of this tenant's pipeline (prospecting, qualification, proposal, negotiation, closed_won, closed_lost); add the stage") == true,
            "\(rejections)")
        // A task of a rejected deal says so, rather than that the export lacks the deal.
        let task = try #require((try Self.file(first.json, "Task.csv")["rejections"] as? [[String: Any]])?.first)
        #expect(task["column"] as? String == "WhatId" && task["reason"] as? String == "'0063' is the opportunity of Opportunity.csv row 5, which was rejected")

        // Again with --add-stages, as a dry run and then for real: the rejected deals come in.
        let dry = try await ctl.run(arguments + ["--add-stages", "--dry-run"])
        let real = try await ctl.run(arguments + ["--add-stages"])
        #expect(real.status == 0, "\(real.error)")
        #expect(try Self.comparable(dry.json) == Self.comparable(real.json))
        #expect(try Self.file(real.json, "Opportunity.csv")["imported"] as? Int == 6)
        #expect(try Self.file(real.json, "Task.csv")["imported"] as? Int == 1)
        let added = try #require((real.json as? [String: Any])?["stagesAdded"] as? [[String: Any]])
        #expect(added.compactMap { $0["name"] as? String } == ["Contract Signed", "Lost to Competitor"])
        #expect(added.first?["probability"] as? Int == 90 && added.first?["isClosed"] as? Bool == false)
        #expect(added.last?["isClosed"] as? Bool == true && added.last?["isWon"] as? Bool == false)
        let tenant = try Self.records(ctl, dir, "after")
        let pipeline = (tenant["pipeline_stage"] ?? [:]).values.sorted { ($0["position"] as! Int) < ($1["position"] as! Int) }.compactMap { $0["name"] as? String }
        #expect(pipeline == ["prospecting", "qualification", "proposal", "negotiation", "Contract Signed", "closed_won", "closed_lost", "Lost to Competitor"])
        let held = tenant["opportunity"] ?? [:]
        #expect(held.count == 30 && held.values.filter { $0["stage"] as? String == "Contract Signed" }.count == 3)
        // A deal at a closed stage keeps its close date as its closing day, an added one too.
        #expect(held.values.filter { ($0["stage"] as? String)?.hasPrefix("Contract") == false }.allSatisfy { $0["closed_at"] as? String == "2025-06-30" })

        // Undo of that import: its deals and the stages it added go, the default pipeline is back.
        let undo = try await ctl.run(["import", "undo", try #require((real.json as? [String: Any])?["importID"] as? String)])
        #expect(undo.status == 0, "\(undo.error)")
        let undone = try Self.records(ctl, dir, "undone")
        #expect(undone["pipeline_stage"] == nil && undone["opportunity"]?.count == 24)
    }

    /// Data Loader's "Export All" holds the recycle bin: a record deleted (or merged away) in
    /// Salesforce stays out of the tenant, and a row referring to it says so.
    @Test func aRecordDeletedInSalesforceIsNotImported() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let export = dir.path("export")
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        try (CSV.line(["Id", "IsDeleted", "MasterRecordId", "Name"]) + CSV.line(["001A", "false", "", "Acme"])
             + CSV.line(["001B", "true", "001A", "ACME Corp (merged)"]) + CSV.line(["001C", "0", "", "Globex"]))
            .write(toFile: export + "/Account.csv", atomically: true, encoding: .utf8)
        try (CSV.line(["Id", "IsDeleted", "AccountId", "LastName"]) + CSV.line(["003A", "false", "001A", "Weiß"])
             + CSV.line(["003B", "false", "001B", "García"]))
            .write(toFile: export + "/Contact.csv", atomically: true, encoding: .utf8)
        let imported = try await ctl.run(["import", "acme", "--from", export, "--source", "salesforce", "--json"])
        #expect(imported.status == 0, "\(imported.error)")
        let accounts = try Self.file(imported.json, "Account.csv")
        #expect(accounts["imported"] as? Int == 2 && accounts["ignoredColumns"] as? [String] == ["MasterRecordId"])
        let deleted = try #require((accounts["rejections"] as? [[String: Any]])?.first)
        #expect(deleted["row"] as? Int == 3 && deleted["column"] as? String == "IsDeleted" && deleted["externalID"] as? String == "001B")
        #expect(deleted["reason"] as? String == "deleted in Salesforce (IsDeleted is true): not imported")
        let contact = try #require((try Self.file(imported.json, "Contact.csv")["rejections"] as? [[String: Any]])?.first)
        #expect(contact["reason"] as? String == "'001B' is the account of Account.csv row 3, which was rejected")
        #expect(Set(try Self.records(ctl, dir, "after")["account"]?.values.compactMap { $0["name"] as? String } ?? []) == ["Acme", "Globex"])
    }

    /// An account list from a report has no ids: imported again with a column more (the owners
    /// left out the first time), it fills in the accounts it made instead of making them all
    /// again, and an account the tenant had takes its row.
    @Test func anAccountListImportedAgainWithAColumnMoreFillsTheAccountsItMade() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let first = ["Account Name", "Billing City"], rows = [["Müller & Söhne", "Köln"], ["Globex", "Oslo"], ["  globex  ", ""]]
        try (CSV.line(first) + rows.map(CSV.line).joined()).write(toFile: dir.path("accounts.csv"), atomically: true, encoding: .utf8)
        let once = try await ctl.run(["import", "acme", "--type", "account", "--from", dir.path("accounts.csv"), "--mapping", "salesforce", "--json"])
        #expect(once.status == 0, "\(once.error)")
        let report = try #require(once.json as? [String: Any])
        #expect(report["imported"] as? Int == 2)
        // Globex twice in the file: the second is the first's account, as a repeated e-mail is the first's contact.
        #expect((report["merges"] as? [[String: Any]])?.map { $0["matchedBy"] as? String } == ["identity"])
        let owners = CSV.line(first + ["Account Owner"]) + rows.map { CSV.line($0 + ["anna@acme.example"]) }.joined()
            + CSV.line(["Initech", "Austin", "anna@acme.example"])
        try owners.write(toFile: dir.path("owners.csv"), atomically: true, encoding: .utf8)
        let again = try await ctl.run(["import", "acme", "--type", "account", "--from", dir.path("owners.csv"), "--mapping", "salesforce",
                                       "--map", "Account Owner=owner", "--json"])
        #expect(again.status == 0, "\(again.error)")
        let second = try #require(again.json as? [String: Any])
        #expect(second["imported"] as? Int == 1)  // Initech only
        let accounts = try #require(try Self.records(ctl, dir, "after")["account"])
        #expect(accounts.count == 3)
        #expect(Set(accounts.values.compactMap { $0["name"] as? String }) == ["Müller & Söhne", "Globex", "Initech"])
        #expect(accounts.values.allSatisfy { $0["owner"] as? String == "anna@acme.example" })
        // An account the tenant has otherwise (made for a contact's company) takes a row of its name.
        try (CSV.line(["First Name", "Last Name", "Account Name"]) + CSV.line(["Ana", "Ruiz", "Hooli"]))
            .write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        #expect(try await ctl.run(["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv"), "--mapping", "salesforce"]).status == 0)
        try (CSV.line(["Account Name", "Industry"]) + CSV.line(["HOOLI", "Software"])).write(toFile: dir.path("more.csv"), atomically: true, encoding: .utf8)
        let more = try await ctl.run(["import", "acme", "--type", "account", "--from", dir.path("more.csv"), "--mapping", "salesforce", "--json"])
        #expect(((more.json as? [String: Any])?["merges"] as? [[String: Any]])?.map { $0["matchedBy"] as? String } == ["name"], "\(more.error)")
        let after = try #require(try Self.records(ctl, dir, "more")["account"])
        #expect(after.count == 4 && after.values.contains { $0["name"] as? String == "Hooli" && $0["industry"] as? String == "Software" })
    }

    /// A report exported from Salesforce or HubSpot names owners by name and carries the e-mail
    /// opt-out: one file imported alone maps the owners to the tenant's users by name or e-mail
    /// (or `--users`), reports those no user stands for, and keeps the opt-out as withdrawn
    /// consent with its file, as a whole export's import does. Read again, the file changes nothing.
    @Test func aSingleReportMapsOwnersByNameAndKeepsOptOuts() async throws {
        let dir = try TemporaryDirectory()
        let ctl = Ctl(data: dir.path("data"))
        #expect(try await ctl.run(["tenant", "create", "acme"]).status == 0)
        for (email, name) in [("ana@acme.example", "Ana López"), ("bo@acme.example", "Bo Chen"), ("bo2@acme.example", "Bo Chen")] {
            #expect(try await ctl.run(["user", "add", "--tenant", "acme", "--email", email, "--name", name, "--role", "rep"]).status == 0)
        }
        let header = ["First Name", "Last Name", "Email", "Account Name", "Contact Owner", "Email Opt Out"]
        let rows = [
            ["Jérôme", "Weiß", "jerome@example.com", "Société Générale", "  ana  lópez ", "1"],  // two spaces inside
            ["Søren", "Kierkegård", "soren@example.com", "Øresund A/S", "BO2@acme.example", "0"],
            ["Carla", "Díaz", "carla@example.com", "Iberia SL", "Zed Former", ""],
            ["Dan", "Eve", "dan@example.com", "Acme Rockets", "Bo Chen", "true"],  // two users have this name
            ["Eva", "Ek", "eva@example.com", "Ek AB", "Zed Former", "maybe"],
            ["Fay", "Fox", "fay@example.com", "Fox Ltd", "Ex Rep", ""],
        ]
        try (CSV.line(header) + rows.map(CSV.line).joined()).write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        try (CSV.line(["Owner", "Email"]) + CSV.line(["Ex Rep", "ana@acme.example"])).write(toFile: dir.path("users.csv"), atomically: true, encoding: .utf8)
        let arguments = ["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv"), "--mapping", "salesforce", "--users", dir.path("users.csv")]
        let dry = try await ctl.run(arguments + ["--dry-run"])
        let run = try await ctl.run(arguments)
        #expect(run.status == 0, "\(run.error)")
        #expect(dry.output.contains("would create 5") && run.output.contains("created 5"), "\(dry.output)\n\(run.output)")
        #expect(run.output.contains("2 kept no owner ('Bo Chen' in 1, 'Zed Former' in 1: no user of the tenant)"), "\(run.output)")
        #expect(run.output.contains("row 6, consent_email: 'maybe' is not yes/no"), "\(run.output)")
        let contacts = try #require(try Self.records(ctl, dir, "after")["contact"])
        let byName = Dictionary(uniqueKeysWithValues: contacts.values.map { ($0["first_name"] as? String ?? "", $0) })
        #expect(byName["Jérôme"]?["owner"] as? String == "ana@acme.example")
        #expect(byName["Søren"]?["owner"] as? String == "bo2@acme.example")
        #expect(byName["Carla"]?["owner"] == nil && byName["Dan"]?["owner"] == nil)
        #expect(byName["Fay"]?["owner"] as? String == "ana@acme.example")
        #expect(byName["Jérôme"]?["consent_email"] as? String == "withdrawn")
        #expect(byName["Jérôme"]?["consent_email_source"] as? String == "salesforce contact file contacts.csv, column Email Opt Out")
        #expect(byName["Dan"]?["consent_email"] as? String == "withdrawn")
        // Not opted out is no consent given.
        #expect(byName["Søren"]?["consent_email"] == nil && byName["Carla"]?["consent_email"] == nil)
        let again = try await ctl.run(arguments)
        #expect(again.output.contains("created 0, updated 0, merged as duplicate 0, unchanged 5"), "\(again.output)")
    }

    /// Salesforce's Data Export writes ISO-8859-1 / Windows-1252 for many orgs: read as UTF-8
    /// it is refused with its line and the option, and `--encoding` reads it, names intact,
    /// for a whole export and for one file.
    @Test func anExportInWindows1252IsRefusedAsUTF8AndReadWhenTold() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let export = dir.path("export")
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        func write(_ text: String, _ path: String) throws { try #require(text.data(using: .windowsCP1252)).write(to: URL(fileURLWithPath: path)) }
        try write(CSV.line(["Id", "Name", "Description"]) + CSV.line(["001A", "Müller & Söhne", "\u{201C}Key\u{201D} account \u{2013} 5 000 \u{20AC}"]),
                  export + "/Account.csv")
        try write(CSV.line(["Id", "AccountId", "FirstName", "LastName"]) + CSV.line(["003A", "001A", "Jérôme", "Weiß"]), export + "/Contact.csv")
        let refused = try await ctl.run(["import", "acme", "--from", export, "--source", "salesforce"])
        #expect(refused.status != 0)
        #expect(refused.error.contains("line 2") && refused.error.contains("--encoding windows-1252"), "\(refused.error)")
        let imported = try await ctl.run(["import", "acme", "--from", export, "--source", "salesforce", "--encoding", "latin-1", "--json"])
        #expect(imported.status == 0, "\(imported.error)")
        let tenant = try Self.records(ctl, dir, "after")
        let account = try #require(tenant["account"]?.values.first)
        #expect(account["name"] as? String == "Müller & Söhne")
        #expect(account["description"] as? String == "\u{201C}Key\u{201D} account \u{2013} 5 000 \u{20AC}")
        let contact = try #require(tenant["contact"]?.values.first)
        #expect(contact["first_name"] as? String == "Jérôme" && contact["last_name"] as? String == "Weiß")
        #expect((contact["account"] as? String)?.lowercased() == tenant["account"]?.keys.first?.lowercased())
        // One file, as a report export saved from Excel on Windows.
        try write(CSV.line(["First Name", "Last Name", "Company"]) + CSV.line(["Zoë", "Ångström", "Åre Skidor"]), dir.path("leads.csv"))
        let lead = try await ctl.run(["import", "acme", "--type", "lead", "--from", dir.path("leads.csv"), "--mapping", "salesforce",
                                      "--encoding", "windows-1252", "--json"])
        #expect(lead.status == 0, "\(lead.error)")
        #expect(try Self.records(ctl, dir, "leads")["lead"]?.values.first?["last_name"] as? String == "Ångström")
        let wrong = try await ctl.run(["import", "acme", "--type", "lead", "--from", dir.path("leads.csv"), "--encoding", "ebcdic"])
        #expect(wrong.status != 0 && wrong.error.contains("--encoding ebcdic"), "\(wrong.error)")
    }

    /// `--mapping salesforce` for one file: the source's values are translated as in a whole
    /// export, and a column the whole export puts in a field it declares is left out, not refused.
    @Test func aSingleReportFileIsTranslatedAndKeepsWhatTheTenantHasFieldsFor() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        let deals = CSV.line(["Opportunity Name", "Account Name", "Amount", "Stage", "Close Date", "Lead Source"])
            + CSV.line(["Renewal", "Navy Systems Inc", "100", "Proposal/Price Quote", "5/31/2026", "Partner Referral"])
        try deals.write(toFile: dir.path("deals.csv"), atomically: true, encoding: .utf8)
        let imported = try await ctl.run(["import", "acme", "--type", "opportunity", "--from", dir.path("deals.csv"), "--mapping", "salesforce", "--json"])
        #expect(imported.status == 0, "\(imported.error)")
        let leads = CSV.line(["First Name", "Last Name", "Company", "Lead Status", "Do Not Call", "Description"])
            + CSV.line(["Ana", "García", "Acme", "Working - Contacted", "true", "Met at the fair"])
        try leads.write(toFile: dir.path("leads.csv"), atomically: true, encoding: .utf8)
        let lead = try await ctl.run(["import", "acme", "--type", "lead", "--from", dir.path("leads.csv"), "--mapping", "salesforce", "--json"])
        #expect(lead.status == 0, "\(lead.error)")
        #expect((lead.json as? [String: Any])?["ignoredColumns"] as? [String] == ["Do Not Call", "Description"])
        let tenant = try Self.records(ctl, dir, "after")
        #expect(tenant["opportunity"]?.values.first?["stage"] as? String == "proposal")
        #expect(tenant["opportunity"]?.values.first?["lead_source"] as? String == "partner")
        #expect(tenant["lead"]?.values.first?["status"] as? String == "working")
    }

    @Test func reportExportsSingleFilesAndHubspot() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try Self.tenant(dir)
        // A Salesforce opportunity report: accounts by name (one it does not have), owners by
        // name through --users, US dates, amounts grouped by thousands, and the report's footer.
        var report = CSV.line(["Opportunity Name", "Account Name", "Amount Currency", "Amount", "Stage", "Close Date", "Opportunity Owner"])
        for i in 0..<200 {
            let amount = (i * 100 >= 1_000 ? "\(i / 10),\(String(format: "%03d", i * 100 % 1_000))" : "\(i * 100)") + (i % 2 == 1 ? ".50" : "")
            report += CSV.line(["Renewal \(i)", i % 2 == 0 ? "Navy Systems Inc" : "  société  ÉTUDES ", i % 2 == 0 ? "USD" : "EUR", amount,
                                i % 3 == 0 ? "Closed Won" : "Prospecting", "5/\(1 + i % 28)/2026", i % 2 == 0 ? "Ben Brown" : "Nobody Known"])
        }
        report += "\r\n\"Grand Totals (200 records)\"\r\n\"\"\r\n\"Copyright (c) 2000-2026 salesforce.com, inc. All rights reserved.\"\r\n"
            + "\"Confidential Information - Do Not Distribute\"\r\n\"Generated By:  Ann Admin  12/1/2026 9:15 AM\"\r\n"
        try FileManager.default.createDirectory(atPath: dir.path("report"), withIntermediateDirectories: true)
        try report.write(toFile: dir.path("report/pipeline.csv"), atomically: true, encoding: .utf8)
        try "owner,email\nBen Brown,ben@acme.example\n".write(toFile: dir.path("users.csv"), atomically: true, encoding: .utf8)
        let imported = try await ctl.run(["import", "acme", "--from", dir.path("report"), "--source", "salesforce", "--users", dir.path("users.csv"),
                                    "--object", "pipeline.csv=Opportunity:report"])
        #expect(imported.status == 0, "\(imported.error)")
        #expect(imported.output.contains("pipeline.csv: Opportunity (report) -> opportunity (--object): 200 row(s), created 200"), "\(imported.output)")
        #expect(imported.output.contains("created 2 account(s) by name") && imported.output.contains("footer lines 4"))
        #expect(imported.output.contains("owner 'Nobody Known' in pipeline.csv (100 row(s))"))
        let tenant = try Self.records(ctl, dir, "out")
        #expect(Set(tenant["account"]?.values.compactMap { $0["name"] as? String } ?? []) == ["Navy Systems Inc", "société  ÉTUDES"])
        #expect(tenant["opportunity"]?.values.filter { $0["owner"] as? String == "ben@acme.example" }.count == 100)
        #expect(tenant["opportunity"]?.values.contains { $0["expected_close"] as? String == "2026-05-28" } == true)
        let renewal = tenant["opportunity"]?.values.first { $0["name"] as? String == "Renewal 123" }
        #expect(renewal?["amount"] as? Double == 12_300.5 && renewal?["currency"] as? String == "EUR")

        // Without --users, and a report has no user file: owners by the name of a user of the
        // tenant, as a single file's import maps them; a name two users share maps to neither.
        #expect(try await ctl.run(["user", "add", "--tenant", "acme", "--email", "carla@acme.example", "--name", "Carla Conti", "--role", "rep"]).status == 0)
        var byName = CSV.line(["Opportunity Name", "Account Name", "Amount", "Stage", "Close Date", "Opportunity Owner"])
        for i in 0..<20 {
            byName += CSV.line(["Upsell \(i)", "Navy Systems Inc", "100", "Prospecting", "6/1/2026", i % 2 == 0 ? " CARLA conti" : "X"])
        }
        try FileManager.default.createDirectory(atPath: dir.path("by-name"), withIntermediateDirectories: true)
        try byName.write(toFile: dir.path("by-name/upsell.csv"), atomically: true, encoding: .utf8)
        let named = try await ctl.run(["import", "acme", "--from", dir.path("by-name"), "--source", "salesforce",
                                       "--object", "upsell.csv=Opportunity:report"])
        #expect(named.status == 0, "\(named.error)")
        #expect(named.output.contains("owner 'X' in upsell.csv (10 row(s))"), "\(named.output)")
        let upsells = try Self.records(ctl, dir, "by-name-out")["opportunity"]?.values.filter { ($0["name"] as? String)?.hasPrefix("Upsell") == true } ?? []
        #expect(upsells.count == 20 && upsells.filter { $0["owner"] as? String == "carla@acme.example" }.count == 10)
        #expect(upsells.filter { $0["owner"] == nil }.count == 10)

        // Single files: an opportunity's account by name, stages as Salesforce names them, a
        // footer that is no rejected row, --mapping combined with --map, a HubSpot lead file.
        try report.write(toFile: dir.path("opps.csv"), atomically: true, encoding: .utf8)
        let single = try await ctl.run(["import", "acme", "--type", "opportunity", "--from", dir.path("opps.csv"), "--mapping", "salesforce", "--json"])
        let singleReport = try #require(single.json as? [String: Any], "\(single.error)")
        #expect(singleReport["rejections"] as? [Any] != nil && (singleReport["rejections"] as? [Any])?.isEmpty == true)
        #expect((singleReport["footerLines"] as? [String])?.count == 4 && singleReport["accountsCreated"] as? Int == 0)
        let leads = "Record ID,First Name,Last Name,Email,Company Name,Lead Status\n901,Åsa,Lindqvist,asa@example.se,Volvo,New\n"
        try leads.write(toFile: dir.path("leads.csv"), atomically: true, encoding: .utf8)
        let lead = try await ctl.run(["import", "acme", "--type", "lead", "--from", dir.path("leads.csv"), "--mapping", "hubspot",
                                "--map", "Lead Status=status", "--json"])
        #expect((lead.json as? [String: Any])?["imported"] as? Int == 1, "\(lead.output) \(lead.error)")
        let storedLead = try #require(try Self.records(ctl, dir, "leads")["lead"]?.values.first)
        #expect(storedLead["company"] as? String == "Volvo" && storedLead["status"] as? String == "new")

        // A HubSpot export: companies, contacts and deals tied by record ids, opt-outs, owners by e-mail.
        let hub = dir.path("hubspot")
        try FileManager.default.createDirectory(atPath: hub, withIntermediateDirectories: true)
        var companies = CSV.line(["Record ID", "Company name", "Phone Number", "City", "Country/Region", "Company owner"])
        var contacts = CSV.line(["Record ID", "First Name", "Last Name", "Email", "Associated Company IDs (Primary)",
                                 "Unsubscribed from all email", "Contact owner", "Original Source"])
        var deals = CSV.line(["Record ID", "Deal Name", "Amount", "Deal Stage", "Close Date", "Associated Company IDs (Primary)", "Deal Description",
                              "Original Source"])
        // HubSpot writes a source's label, as its own screens show it.
        let sources = ["Organic Search", "Direct Traffic", "Offline Sources", "Paid Social"]
        for i in 0..<50 {
            companies += CSV.line(["\(7000 + i)", "Kaufhaus Müller \(i)", "+49 89 \(10000 + i)", "München", "Deutschland", "anna@acme.example"])
            contacts += CSV.line(["\(8000 + i)", "Jürgen", "Weiß \(i)", "j\(i)@example.de", i == 7 ? "9999" : "\(7000 + i)",
                                  i % 2 == 0 ? "true" : "", "anna@acme.example", sources[i % 4]])
            deals += CSV.line(["\(9000 + i)", "Kasse \(i)", "1200", "closedwon", "2026-06-01", "\(7000 + i)", i == 3 ? "Zwei Kassen,\nein Drucker" : "",
                               sources[i % 4]])
        }
        try companies.write(toFile: hub + "/hubspot-crm-exports-all-companies.csv", atomically: true, encoding: .utf8)
        try contacts.write(toFile: hub + "/hubspot-crm-exports-all-contacts.csv", atomically: true, encoding: .utf8)
        try deals.write(toFile: hub + "/hubspot-crm-exports-all-deals.csv", atomically: true, encoding: .utf8)
        var tickets = CSV.line(["Ticket ID", "Ticket name", "Ticket description", "Priority", "Ticket status", "Source",
                                "Associated Company IDs (Primary)", "Associated Contact IDs (Primary)", "Create date", "Ticket owner"])
        for i in 0..<30 {
            tickets += CSV.line(["\(6000 + i)", "Kasse defekt, Filiale \(i)", "Seit Montag\nkein Bon", ["HIGH", "MEDIUM", "LOW"][i % 3],
                                 ["1", "2", "4"][i % 3], "EMAIL", "\(7000 + i)", i == 7 ? "" : "\(8000 + i)", "2026-03-02T08:15:00Z",
                                 "anna@acme.example"])
        }
        try tickets.write(toFile: hub + "/hubspot-crm-exports-all-tickets.csv", atomically: true, encoding: .utf8)
        let hubspot = try await ctl.run(["import", "acme", "--from", hub, "--source", "hubspot", "--json"])
        #expect(hubspot.status == 0, "\(hubspot.error)")
        #expect(try Self.file(hubspot.json, "hubspot-crm-exports-all-contacts.csv")["imported"] as? Int == 49)
        #expect(try Self.file(hubspot.json, "hubspot-crm-exports-all-deals.csv")["imported"] as? Int == 50)
        #expect(try Self.file(hubspot.json, "hubspot-crm-exports-all-deals.csv")["ignoredColumns"] as? [String] == [])
        let after = try Self.records(ctl, dir, "hub")
        let müller = try #require(after["account"]?.first { $0.value["name"] as? String == "Kaufhaus Müller 3" })
        #expect(müller.value["address"] as? String == "München, Deutschland" && müller.value["owner"] as? String == "anna@acme.example")
        #expect(after["opportunity"]?.values.first { $0["name"] as? String == "Kasse 3" }?["description"] as? String == "Zwei Kassen,\nein Drucker")
        let weiß = try #require(after["contact"]?.values.first { $0["last_name"] as? String == "Weiß 3" })
        #expect(weiß["lead_source"] as? String == "campaign", "Paid Social, as the CRM names its sources: \(weiß)")
        #expect(after["opportunity"]?.values.first { $0["name"] as? String == "Kasse 4" }?["lead_source"] as? String == "web")
        #expect(weiß["account"] as? String == müller.key.uppercased() && weiß["consent_email"] == nil)
        #expect(after["contact"]?.values.first { $0["last_name"] as? String == "Weiß 4" }?["consent_email"] as? String == "withdrawn")
        // Tickets are cases with their company and contact by record id.
        #expect(try Self.file(hubspot.json, "hubspot-crm-exports-all-tickets.csv")["imported"] as? Int == 30)
        let ticket = try #require(after["case"]?.values.first { $0["number"] as? String == "6003" })
        #expect(ticket["account"] as? String == müller.key.uppercased() && ticket["contact"] as? String == after["contact"]?.first { $0.value["last_name"] as? String == "Weiß 3" }?.key.uppercased())
        #expect(ticket["subject"] as? String == "Kasse defekt, Filiale 3" && ticket["description"] as? String == "Seit Montag\nkein Bon")
        #expect(ticket["priority"] as? String == "high" && ticket["status"] as? String == "new" && ticket["channel"] as? String == "email")
        #expect(ticket["owner"] as? String == "anna@acme.example" && ticket["opened_at"] as? String == "2026-03-02T08:15:00Z")
        #expect(after["case"]?.values.filter { $0["status"] as? String == "closed" }.count == 10)
    }
}

@Suite(.ownThread) struct ImportUndoTests {
    @Test func undoRestoresTheTenantRecordForRecordAndKeepsLaterChanges() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try OrgImportTests.tenant(dir)
        // Contacts the tenant had before: the export's first five people, without what it adds.
        try "Last Name,Email\nPre,person0@example.com\nPre,person1@example.com\nPre,person2@example.com\n"
            .write(toFile: dir.path("pre.csv"), atomically: true, encoding: .utf8)
        await #expect(try ctl.run(["import", "acme", "--type", "contact", "--from", dir.path("pre.csv")]).status == 0)
        let before = try OrgImportTests.records(ctl, dir, "before")

        let fixture = SalesforceExportFixture(accounts: 40, contacts: 60, leads: 30, opportunities: 40, cases: 20, campaigns: 5, members: 30, tasks: 30)
        try fixture.write(to: dir.path("export"))
        let imported = try await ctl.run(["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--json"])
        let report = try #require(imported.json as? [String: Any], "\(imported.error)")
        let id = try #require(report["importID"] as? String)
        let contacts = try OrgImportTests.file(imported.json, "Contact.csv")
        #expect((contacts["merges"] as? [[String: Any]])?.filter { $0["matchedBy"] as? String == "email" }.count == 3 + fixture.contactDuplicates)

        // Someone changes a field the import filled, and a lead the import made: the undo keeps both.
        let person1 = try #require(before["contact"]?.first { $0.value["email"] as? String == "person1@example.com" }?.key)
        let lead = try #require(try OrgImportTests.records(ctl, dir, "imported")["lead"]?.first { $0.value["email"] as? String == "lead4@example.org" }?.key)
        do {
            let store = try ReplicaStore(path: dir.path("data/tenants/acme.sqlite"), options: .crm(role: .authority))
            defer { store.close() }
            try store.update(try #require(UUID(uuidString: person1)), ["title": .text("CEO")])
            try store.update(try #require(UUID(uuidString: lead)), ["title": .text("Called back, wants a demo")])
        }
        let edited = try #require(try OrgImportTests.records(ctl, dir, "edited")["lead"]?[lead])
        let undo = try await ctl.run(["import", "undo", id, "--json"])
        let undone = try #require(undo.json as? [String: Any], "\(undo.output) \(undo.error)")
        let kept = try #require(undone["kept"] as? [[String: Any]])
        #expect(kept.count == 2 && kept.contains { $0["field"] as? String == "title" && $0["record"] as? String == person1.uppercased() })
        #expect(kept.contains { $0["field"] == nil && $0["record"] as? String == lead.uppercased()
            && ($0["reason"] as? String)?.hasPrefix("lead changed since the import") == true }, "\(kept)")
        var expected = before
        expected["contact"]?[person1]?["title"] = "CEO"
        expected["lead", default: [:]][lead] = edited
        let after = try OrgImportTests.records(ctl, dir, "after")
        #expect(after as NSDictionary == expected as NSDictionary, "the tenant is as before the import, record for record")
        await #expect(try ctl.run(["import", "undo", id]).status == 3, "an import is undone once")
        await #expect(try ctl.run(["import", "undo", "../registry"]).status == 1)

        // Undone to be run again (with other --users, say): the same export brings back what
        // the undo deleted, as the first run made it, and declares its custom fields again.
        let dry = try await ctl.run(["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--dry-run", "--json"])
        let again = try await ctl.run(["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--json"])
        let againReport = try #require(again.json as? [String: Any], "\(again.output) \(again.error)")
        /// What a report says of each file: rows created, merged and rejected.
        func counts(_ json: Any?) -> [String] {
            (((json as? [String: Any])?["files"] as? [[String: Any]]) ?? []).map { file in
                let report = file["report"] as? [String: Any] ?? [:]
                return "\(file["file"] ?? ""): \(report["imported"] ?? 0) \((report["merges"] as? [Any])?.count ?? 0) \((report["rejections"] as? [Any])?.count ?? 0)"
            }
        }
        #expect(counts(dry.json) == counts(again.json), "the dry run reports what the run does")
        #expect(try OrgImportTests.file(again.json, "Account.csv")["imported"] as? Int == fixture.accounts)
        for file in (againReport["files"] as? [[String: Any]]) ?? [] {
            let reasons = (((file["report"] as? [String: Any])?["rejections"] as? [[String: Any]]) ?? []).compactMap { $0["reason"] as? String }
            #expect(!reasons.contains { $0.contains("deleted since") }, "\(file["file"] ?? ""): \(reasons.prefix(3))")
        }
        var firstRun = try OrgImportTests.records(ctl, dir, "imported")
        firstRun["contact"]?[person1]?["title"] = "CEO"
        firstRun["lead"]?[lead] = edited
        let secondRun = try OrgImportTests.records(ctl, dir, "again")
        #expect(ImportResumeTests.stable(secondRun) == ImportResumeTests.stable(firstRun), "the tenant is as the first run left it")

        // A record a person deleted since stays deleted: the row is rejected with the way back.
        let gone = try #require(secondRun["account"]?.keys.first { !(before["account"]?.keys.contains($0) ?? false) })
        do {
            let store = try ReplicaStore(path: dir.path("data/tenants/acme.sqlite"), options: .crm(role: .authority))
            defer { store.close() }
            for record in try store.records(ofType: "contact") where record.reference("account")?.uuidString.lowercased() == gone.lowercased() {
                try store.update(record.id, ["account": .null])
            }
            try store.delete(try #require(UUID(uuidString: gone)))
        }
        let third = try await ctl.run(["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--json"])
        let accounts = try OrgImportTests.file(third.json, "Account.csv")
        #expect(((accounts["rejections"] as? [[String: Any]]) ?? []).compactMap { $0["reason"] as? String }
            .contains { $0.contains("deleted since; restore it instead") }, "\(accounts)")
    }

    /// An import corrected by undoing it and running it again with another mapping: the records
    /// come back as the second run makes them, without what only the first run's mapping gave.
    @Test func aRecordBroughtBackByAnotherMappingHoldsOnlyWhatThatMappingGives() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try OrgImportTests.tenant(dir)
        try "Last Name,Email,Title,Department\nKim,kim@example.com,Buyer,Purchasing\nLee,lee@example.com,CFO,Finance\n"
            .write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        let arguments = ["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv"), "--mapping", "salesforce", "--json"]
        let first = try await ctl.run(arguments)
        let id = try #require((first.json as? [String: Any])?["importID"] as? String, "\(first.output) \(first.error)")
        #expect(try OrgImportTests.records(ctl, dir, "first")["contact"]?.values.allSatisfy { $0["department"] != nil } == true)
        #expect(try await ctl.run(["import", "undo", id]).status == 0)
        // Department was mapped by mistake: the same file again, with it left out this time.
        try "Last Name,Email,Title\nKim,kim@example.com,Buyer\nLee,lee@example.com,CFO\n"
            .write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        let again = try await ctl.run(arguments)
        #expect(again.status == 0 && (again.json as? [String: Any])?["imported"] as? Int == 2, "\(again.output) \(again.error)")
        let contacts = try #require(try OrgImportTests.records(ctl, dir, "again")["contact"])
        #expect(contacts.count == 2 && contacts.values.allSatisfy { $0["department"] == nil && $0["title"] != nil }, "\(contacts)")
    }

    /// An undo leaves the records it made that a record staying references, up the chain: a
    /// deleted account under a contact a later import made, or under one the import made that
    /// someone changed since, would leave that contact pointing at a tombstone.
    @Test func anUndoKeepsWhatRecordsThatStayReference() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try OrgImportTests.tenant(dir)
        let export = dir.path("export")
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        try """
            Id,Name,ParentId
            001000000000001,Parent Co,
            001000000000002,Child Co,001000000000001
            001000000000003,Lonely Co,
            001000000000004,Later Co,
            001000000000005,Lonely Child Co,001000000000003

            """.write(toFile: export + "/Account.csv", atomically: true, encoding: .utf8)
        try """
            Id,AccountId,LastName,Email
            003000000000001,001000000000002,Kim,kim@example.com
            003000000000002,001000000000005,Lee,lee@example.com

            """.write(toFile: export + "/Contact.csv", atomically: true, encoding: .utf8)
        let imported = try await ctl.run(["import", "acme", "--from", export, "--source", "salesforce", "--json"])
        let id = try #require((imported.json as? [String: Any])?["importID"] as? String, "\(imported.output) \(imported.error)")
        let first = try OrgImportTests.records(ctl, dir, "imported")
        func account(_ name: String, in records: [String: [String: [String: Any]]]) -> String? {
            records["account"]?.first { $0.value["name"] as? String == name }?.key
        }
        let kim = try #require(first["contact"]?.first { $0.value["last_name"] as? String == "Kim" }?.key)
        #expect(first["account"]?.count == 5 && first["contact"]?.count == 2)

        // Kim changes since; a later import puts a contact on Later Co.
        do {
            let store = try ReplicaStore(path: dir.path("data/tenants/acme.sqlite"), options: .crm(role: .authority))
            defer { store.close() }
            try store.update(try #require(UUID(uuidString: kim)), ["title": .text("Buyer")])
        }
        try "Last Name,Email,Account Name\nPark,park@example.com,Later Co\n".write(toFile: dir.path("later.csv"), atomically: true, encoding: .utf8)
        let later = try await ctl.run(["import", "acme", "--type", "contact", "--from", dir.path("later.csv"), "--json"])
        #expect(later.status == 0, "\(later.error)")
        let park = try #require(try OrgImportTests.records(ctl, dir, "later")["contact"]?.first { $0.value["last_name"] as? String == "Park" })
        #expect(park.value["account"] as? String == account("Later Co", in: first)?.uppercased(), "\(park)")

        let undo = try await ctl.run(["import", "undo", id, "--json"])
        let undone = try #require(undo.json as? [String: Any], "\(undo.output) \(undo.error)")
        let kept = try #require(undone["kept"] as? [[String: Any]])
        func reason(_ record: String?) -> String {
            kept.first { $0["record"] as? String == record?.uppercased() && $0["field"] == nil }?["reason"] as? String ?? "not kept"
        }
        #expect(reason(kim).hasPrefix("contact changed since the import"), "\(kept)")
        #expect(reason(account("Child Co", in: first)) == "account referenced by contact \(kim.lowercased()), which the undo keeps; left as it is")
        #expect(reason(account("Parent Co", in: first)).hasPrefix("account referenced by account \(account("Child Co", in: first)!.lowercased()), which the undo keeps"))
        #expect(reason(account("Later Co", in: first)) == "account referenced by contact \(park.key.lowercased()), written since the import; left as it is")
        #expect(kept.count == 4, "\(kept)")
        #expect(undone["deleted"] as? Int == 3, "Lonely Co, Lonely Child Co and Lee go: what references them goes too")

        let after = try OrgImportTests.records(ctl, dir, "after")
        #expect(Set(after["account"]?.values.compactMap { $0["name"] as? String } ?? []) == ["Parent Co", "Child Co", "Later Co"])
        #expect(Set(after["contact"]?.values.compactMap { $0["last_name"] as? String } ?? []) == ["Kim", "Park"])
        for (type, records) in after {
            for (record, fields) in records {
                for (field, value) in fields {
                    guard let text = value as? String, let target = UUID(uuidString: text), field != "id" else { continue }
                    let exists = after.values.contains { $0[target.uuidString.lowercased()] != nil || $0[target.uuidString] != nil }
                    #expect(exists || text.count != 36, "\(type) \(record).\(field) points at \(text), which the undo deleted")
                }
            }
        }
    }
}

@Suite(.ownThread) struct ImportResumeTests {
    /// What two runs of one import agree on: every live record's id and fields, but the moments
    /// the store stamps when a write happens (a consent's time, a stage change's), and a stage
    /// change's id, which its write's dot makes, taken by what it records instead.
    static func stable(_ tenant: [String: [String: [String: Any]]]) -> [String: [String: NSDictionary]] {
        var result: [String: [String: NSDictionary]] = [:]
        for (type, records) in tenant {
            for (id, fields) in records {
                let kept = fields.filter { !$0.key.hasSuffix("_at") }
                let key = type == "stage_change" ? "\(kept["opportunity"] ?? "")/\(kept["from_stage"] ?? "")/\(kept["to_stage"] ?? "")" : id
                result[type, default: [:]][key] = kept as NSDictionary
            }
        }
        return result
    }

    @Test func aKilledImportRunAgainGivesTheTenantAnUninterruptedRunGives() async throws {
        let dir = try TemporaryDirectory()
        let ctl = try OrgImportTests.tenant(dir)
        let fixture = SalesforceExportFixture(accounts: 600, contacts: 800, leads: 600, opportunities: 600, cases: 300, campaigns: 5, members: 400, tasks: 600)
        try fixture.write(to: dir.path("export"))
        let arguments = ["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--data", ctl.data]

        // Killed (SIGKILL) part way, then run again.
        let before = try OrgImportTests.records(ctl, dir, "before")
        let process = try ChildProcess(ctl.binary, arguments)
        // Killed once the import has written its first rows (the accounts), not after a fixed
        // time: the tenant's store is read as another process would while the import runs.
        var readOnly = Database.Options()
        readOnly.readOnly = true
        let watcher = try Database(path: try DataDirectory(ctl.data).storePath(of: "acme"), options: readOnly)
        while process.isRunning, try watcher.scalarInt("SELECT count(*) FROM records WHERE type = 'account'") == 0 {
            usleep(5_000)
        }
        watcher.close()
        let killedEarly = process.isRunning
        process.send(SIGKILL)
        try #require(process.waitForExit(within: .seconds(60)), "the killed import did not exit")
        let storePath = try DataDirectory(ctl.data).storePath(of: "acme")
        let killedStore = try Database(path: storePath, options: readOnly)
        let deferredByTheKilledRun = try killedStore.scalarInt("SELECT count(*) FROM field_index_deferred") ?? 0
        killedStore.close()
        let partial = try OrgImportTests.records(ctl, dir, "partial")

        // The killed run left its journal, unfinished: undone (in a copy of the data directory),
        // it takes out everything the run put in.
        let journals = try FileManager.default.contentsOfDirectory(atPath: ctl.data + "/imports").filter { $0.hasSuffix(".json") }
        #expect(journals.count == 1)
        let killedID = String(try #require(journals.first).dropLast(5))
        try FileManager.default.copyItem(atPath: ctl.data, toPath: dir.path("copy"))
        let copy = Ctl(data: dir.path("copy"))
        let undo = try await copy.run(["import", "undo", killedID, "--json"])
        #expect(undo.status == 0, "\(undo.output) \(undo.error)")
        #expect(try OrgImportTests.records(copy, dir, "copy-undone") as NSDictionary == before as NSDictionary,
                "the undo of the killed run gives the tenant as it was before it")

        // Run again, it carries the killed run's journal on.
        let again = try await ctl.run(Array(arguments.dropLast(2)) + ["--json"])
        #expect(again.status == 0, "\(again.error)")
        #expect((again.json as? [String: Any])?["importID"] as? String == killedID)
        #expect(again.error.contains("carrying on import \(killedID)"))
        let resumed = try OrgImportTests.records(ctl, dir, "resumed")
        // The killed run left the index entries of what it imports deferred; the run that
        // carried it on built them.
        #expect(!killedEarly || deferredByTheKilledRun > 0)
        let resumedStore = try ReplicaStore(path: storePath, options: .crm(role: .authority))
        #expect(try resumedStore.deferredFieldIndexTypes().isEmpty)
        #expect(try resumedStore.records(ofType: "account", where: "owner", equals: "anna@acme.example").count
                == (resumed["account"] ?? [:]).values.filter { $0["owner"] as? String == "anna@acme.example" }.count)
        resumedStore.close()

        // The same import, uninterrupted, into a fresh tenant of the same data directory.
        await #expect(try ctl.run(["tenant", "create", "fresh"]).status == 0)
        for email in ["anna@acme.example", "ben@acme.example"] {
            await #expect(try ctl.run(["user", "add", "--tenant", "fresh", "--email", email, "--name", "X", "--role", "rep"]).status == 0)
        }
        await #expect(try ctl.run(["import", "fresh", "--from", dir.path("export"), "--source", "salesforce"]).status == 0)
        let out = dir.path("fresh-export")
        await #expect(try ctl.run(["export", "fresh", "--to", out]).status == 0)
        var uninterrupted: [String: [String: [String: Any]]] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: out) where file.hasSuffix(".jsonl") {
            for line in try String(contentsOfFile: out + "/" + file, encoding: .utf8).split(separator: "\n") {
                let record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                guard record["deleted"] as? Bool == false else { continue }
                uninterrupted[record["type"] as! String, default: [:]][record["id"] as! String] = (record["fields"] as? [String: Any])?.filter { !($0.value is NSNull) }
            }
        }
        let left = Self.stable(resumed), right = Self.stable(uninterrupted)
        let differing = Set(left.keys).union(right.keys).sorted().flatMap { type -> [String] in
            let a = left[type] ?? [:], b = right[type] ?? [:]
            return Set(a.keys).union(b.keys).filter { a[$0] != b[$0] }.prefix(2).map { "\(type) \($0): \(a[$0] ?? [:]) vs \(b[$0] ?? [:])" }
        }
        #expect(differing.isEmpty, "the resumed import made the same records, once: \(differing.joined(separator: "\n"))")
        // Only meaningful when the kill fell inside the import: say so when it did not.
        #expect(killedEarly, "the import finished before the kill; the fixture is too small for this machine")
        #expect(partial.values.reduce(0) { $0 + $1.count } < uninterrupted.values.reduce(0) { $0 + $1.count })
    }
}

@Suite(.timeLimit(.minutes(10)), .ownThread) struct ImportDeviceTests {
    /// Live records per type on a device.
    static func counts(_ client: RapportClient) throws -> [String: Int] {
        try client.local { store in
            Dictionary(uniqueKeysWithValues: try CRMSchema.current.types.keys.map { ($0, try store.count(ofType: $0)) }).filter { $0.value > 0 }
        }
    }

    @Test func aDeviceSyncingThroughAnImportAndItsUndoEndsLikeTheServer() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }
        let phone = try await operated.enroll("phone")
        _ = try await phone.sync()
        let fixture = SalesforceExportFixture(accounts: 100, contacts: 150, leads: 60, opportunities: 80, cases: 40, campaigns: 5, members: 60, tasks: 60)
        try fixture.write(to: dir.path("export"))

        // The device syncs over and over while the import runs beside the server.
        async let imported = operated.ctl.run(["import", "acme", "--from", dir.path("export"), "--source", "salesforce", "--json"])
        for _ in 0..<5 { _ = try await phone.sync() }
        let report = try await imported
        let id = try #require((report.json as? [String: Any])?["importID"] as? String, "\(report.error)")
        _ = try await phone.sync()
        let server = try OrgImportTests.records(operated.ctl, dir, "server").mapValues(\.count).filter { $0.value > 0 }
        #expect(server["contact"] == fixture.contactsCreated && server["account"] == fixture.accounts)
        #expect(try Self.counts(phone) == server, "the device holds what the server holds")

        let undo = try await operated.ctl.run(["import", "undo", id])
        #expect(undo.status == 0, "\(undo.error)")
        _ = try await phone.sync()
        let after = try OrgImportTests.records(operated.ctl, dir, "undone").mapValues(\.count).filter { $0.value > 0 }
        #expect(after.isEmpty, "the undo left \(after)")
        #expect(try Self.counts(phone) == after, "the undo reached the device")
    }
}
