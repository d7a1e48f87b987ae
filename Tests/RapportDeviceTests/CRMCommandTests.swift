import CRM
import Foundation
import TestScheduling
import TestSupport
import Testing

/// The CRM verbs of `rapport` as a rep runs them: `rapport` processes on device homes enrolled
/// with a `rapportd` process, users and teams set with `rapportctl`. Each verb's `--json` is
/// parsed and its values checked, and each has a failure with its exit code and message.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct DeviceCRMCommandTests {
    // MARK: Types and help

    @Test func helpAndTypesListEveryTypeWithTheValuesItsFieldsTake() async throws {
        let cli = CLI(binary: ServerProcess.defaultBinary(named: "rapport"))
        let help = try await cli.run(["--help"])
        #expect(help.status == 0)
        for type in CRMSchema.current.types.keys { #expect(help.output.contains(type), "\(type) in --help") }
        for verb in ["account", "lead", "opportunity", "case", "log", "tasks", "report", "types"] {
            #expect(help.output.contains("  \(verb)"), "\(verb) in --help")
        }

        let types = try await cli.run(["types", "--json"])
        #expect(types.status == 0, "\(types.error)")
        let listed = try #require(types.json as? [[String: Any]])
        #expect(Set(listed.compactMap { $0["type"] as? String }) == Set(CRMSchema.current.types.keys))
        let account = try #require(listed.first { $0["type"] as? String == "account" })
        let fields = try #require(account["fields"] as? [[String: Any]])
        let tier = try #require(fields.first { $0["name"] as? String == "tier" })
        #expect(tier["choices"] as? [String] == CRMSchema.tiers)
        #expect(tier["computed"] as? Bool == true)
        let points = try #require(fields.first { $0["name"] as? String == "loyalty_points" })
        #expect(points["kind"] as? String == "counter")

        let caseHelp = try await cli.run(["types", "--help"])
        #expect(caseHelp.output.contains("one of urgent, high, normal, low"), "\(caseHelp.output.prefix(400))")
        let oneType = try await cli.run(["types", "case"])
        #expect(oneType.output.hasPrefix("case\n"))
        #expect(oneType.output.contains("one of question, request, complaint, incident"))
        #expect(!oneType.output.contains("\naccount\n"))

        let unknown = try await cli.run(["types", "customer"])
        #expect(unknown.status == 1)
        #expect(unknown.error.contains("unknown record type 'customer'") && unknown.error.contains("account, activity"), "\(unknown.error)")
    }

    // MARK: Accounts

    @Test func accountShowGathersContactsDealsActivitiesAndCases() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let account = try ana.create("account", ["name=Acme Trading", "owner=ana@acme.example", "loyalty_points+=120",
                                                     "renewal_date=2031-01-31"])
            let ada = try ana.create("contact", ["first_name=Ada", "last_name=Lovelace", "account=\(account)",
                                                 "consent_email=granted", "consent_calls=withdrawn", "do_not_call=yes"])
            // A reference typed in upper case is the same id.
            _ = try ana.create("contact", ["first_name=Bob", "last_name=Babbage", "account=\(account.uppercased())"])
            let open = try ana.create("opportunity", ["name=Fleet", "account=\(account)", "stage=proposal", "amount=5000"])
            _ = try ana.create("opportunity", ["name=Old deal", "account=\(account)", "stage=closed_lost"])
            _ = try ana.create("case", ["number=C-7", "subject=Broken", "account=\(account)", "priority=high", "status=open"])
            _ = try ana.create("case", ["number=C-8", "subject=Done", "account=\(account)", "priority=low", "status=closed"])
            // Twelve activities, some on the account, some only on its contact: the ten latest show.
            for day in 1...12 {
                let target = day % 2 == 0 ? ["--account", account] : ["--contact", ada]
                let logged = try ana.run(["log", "meeting", "--subject", "Meeting \(day)", "--at", String(format: "2030-05-%02dT09:00:00Z", day)] + target)
                #expect(logged.status == 0, "\(logged.error)")
            }

            let shown = try ana.run(["account", "show", account, "--json"])
            #expect(shown.status == 0, "\(shown.error)")
            let view = try #require(shown.json as? [String: Any])
            let figures = try #require(view["account"] as? [String: Any])
            #expect(figures["name"] as? String == "Acme Trading")
            #expect(figures["loyalty_points"] as? Int == 120)
            #expect(figures["renewal_date"] as? String == "2031-01-31")
            let contacts = try #require(view["contacts"] as? [[String: Any]])
            #expect(contacts.map { $0["name"] as? String } == ["Ada Lovelace", "Bob Babbage"])
            #expect(contacts[0]["consent_calls"] as? String == "withdrawn")
            #expect(contacts[0]["consent_email"] as? String == "granted")
            #expect(contacts[0]["do_not_call"] as? Bool == true)
            let deals = try #require(view["open_opportunities"] as? [[String: Any]])
            #expect(deals.map { $0["id"] as? String } == [open])
            #expect(deals.first?["stage"] as? String == "proposal")
            #expect(deals.first?["amount"] as? Double == 5000)
            let activities = try #require(view["recent_activities"] as? [[String: Any]])
            #expect(activities.map { $0["subject"] as? String } == (3...12).reversed().map { "Meeting \($0)" })
            let cases = try #require(view["open_cases"] as? [[String: Any]])
            #expect(cases.map { $0["number"] as? String } == ["C-7"])
            #expect(cases.first?["priority"] as? String == "high")

            let text = try ana.run(["account", "show", account])
            #expect(text.output.contains("account Acme Trading"))
            #expect(text.output.contains("open cases (1)"))

            let wrongType = try ana.run(["account", "show", ada])
            #expect(wrongType.status == 1)
            #expect(wrongType.error.contains("is a contact, not an account"), "\(wrongType.error)")
            let missing = try ana.run(["account", "show", UUID().uuidString])
            #expect(missing.status == 2)
            #expect(missing.error.contains("no account"), "\(missing.error)")
        }
    }

    // MARK: Leads and opportunities

    @Test func leadConvertMakesTheAccountContactAndOpportunityOnce() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let lead = try ana.create("lead", ["first_name=Grace", "last_name=Hopper", "company=Cobol Inc",
                                               "email=grace@cobol.example", "owner=ana@acme.example", "source=event", "status=qualified"])

            let badStage = try ana.run(["lead", "convert", lead, "--opportunity", "Compilers", "--stage", "dreaming"])
            #expect(badStage.status == 1)
            #expect(badStage.error.contains("'dreaming' is not a stage") && badStage.error.contains("prospecting, qualification"), "\(badStage.error)")
            let noName = try ana.run(["lead", "convert", lead, "--amount", "10"])
            #expect(noName.status == 1)
            #expect(noName.error.contains("--opportunity"), "\(noName.error)")

            let converted = try ana.run(["lead", "convert", lead, "--opportunity", "Compilers", "--amount", "48000",
                                         "--stage", "qualification", "--json"])
            #expect(converted.status == 0, "\(converted.error)")
            let result = try #require(converted.json as? [String: Any])
            let leadFields = try fields(result["lead"])
            let account = try #require((result["account"] as? [String: Any])?["id"] as? String)
            #expect(leadFields["status"] as? String == "converted")
            #expect(UUID(uuidString: leadFields["converted_account"] as? String ?? "") == UUID(uuidString: account))
            #expect(try fields(result["account"])["name"] as? String == "Cobol Inc")
            #expect(try fields(result["contact"])["email"] as? String == "grace@cobol.example")
            let deal = try fields(result["opportunity"])
            #expect(deal["name"] as? String == "Compilers")
            #expect(deal["stage"] as? String == "qualification")
            #expect(deal["amount"] as? Double == 48000)
            #expect(deal["lead_source"] as? String == "event")

            let again = try ana.run(["lead", "convert", lead])
            #expect(again.status == 1)
            #expect(again.error.contains("converted already"), "\(again.error)")
            // Nothing of the refused attempts was written.
            #expect(try ana.list("account").count == 1)
            #expect(try ana.list("opportunity").count == 1)
        }
    }

    @Test func opportunityStageTakesOnlyTheTenantsStages() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let account = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])
            let deal = try ana.create("opportunity", ["name=Fleet", "account=\(account)", "stage=prospecting", "amount=1000"])

            let moved = try ana.run(["opportunity", "stage", deal, "negotiation", "--json"])
            #expect(moved.status == 0, "\(moved.error)")
            let negotiating = try fields(moved.json)
            #expect(negotiating["stage"] as? String == "negotiation")
            // What follows from the stage the store's effects wrote: its probability and history.
            #expect(negotiating["probability"] as? Int == 75)
            let history = try #require(try ana.run(["list", "stage_change", "--where", "opportunity=\(deal)",
                                                    "--where", "to_stage=negotiation", "--json"]).json as? [[String: Any]])
            #expect(history.count == 1)
            let entry = try fields(history.first)
            #expect(entry["from_stage"] as? String == "prospecting")
            #expect(entry["changed_by"] as? String == "ana@acme.example")

            // A win closes the deal and makes the account a customer, as its 360 view shows.
            let won = try fields(ana.run(["opportunity", "stage", deal, "closed_won", "--json"]).json)
            #expect(won["probability"] as? Int == 100)
            #expect(won["closed_at"] is String)
            let view = try #require(try ana.run(["account", "show", account, "--json"]).json as? [String: Any])
            #expect((view["account"] as? [String: Any])?["lifecycle_stage"] as? String == "customer")
            #expect((view["open_opportunities"] as? [Any])?.isEmpty == true)

            let refused = try ana.run(["opportunity", "stage", deal, "won"])
            #expect(refused.status == 1)
            #expect(refused.error.contains("'won' is not a stage of the tenant's pipeline")
                    && refused.error.contains("closed_won, closed_lost"), "\(refused.error)")
            let notADeal = try ana.run(["opportunity", "stage", account, "proposal"])
            #expect(notADeal.status == 1)
            #expect(notADeal.error.contains("is an account, not an opportunity"), "\(notADeal.error)")
            #expect(try fields(ana.run(["get", deal, "--json"]).json)["stage"] as? String == "closed_won")
        }
    }

    // MARK: Cases

    @Test func aCaseIsOpenedAnsweredByNumberAndClosed() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let account = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])

            let badPriority = try ana.run(["case", "open", "--subject", "Broken", "--priority", "asap"])
            #expect(badPriority.status == 1)
            #expect(badPriority.error.contains("priority") && badPriority.error.contains("urgent, high, normal, low"), "\(badPriority.error)")

            let opened = try ana.run(["case", "open", "--subject", "Invoice twice", "--account", account, "--priority", "urgent",
                                      "--type", "complaint", "--severity", "major", "--channel", "phone", "--json"])
            #expect(opened.status == 0, "\(opened.error)")
            let openedCase = try #require(opened.json as? [String: Any])
            let id = try #require(openedCase["id"] as? String)
            let before = try fields(openedCase)
            #expect(before["status"] as? String == "new")
            #expect(before["owner"] as? String == "ana@acme.example")
            #expect(before["type"] as? String == "complaint")
            #expect(before["severity"] as? String == "major")
            // Numbered and given deadlines by the store's effects, not by the command.
            let number = try #require(before["number"] as? String)
            #expect(!number.isEmpty)
            #expect(before["opened_at"] is String)
            #expect(before["response_due"] is String)
            #expect(before["resolution_due"] is String)

            let answered = try ana.run(["case", "respond", number, "--note", "Called back, refund on its way", "--json"])
            #expect(answered.status == 0, "\(answered.error)")
            let answer = try #require(answered.json as? [String: Any])
            let after = try fields(answer["case"])
            #expect(after["status"] as? String == "open")
            #expect(after["first_response_at"] is String)
            let note = try fields(answer["note"])
            #expect(note["kind"] as? String == "note")
            #expect(note["subject"] as? String == "Called back, refund on its way")
            #expect(UUID(uuidString: note["case"] as? String ?? "") == UUID(uuidString: id))
            #expect(note["owner"] as? String == "ana@acme.example")

            let badScore = try ana.run(["case", "close", id, "--satisfaction", "9"])
            #expect(badScore.status == 1)
            let closed = try ana.run(["case", "close", id, "--satisfaction", "4", "--json"])
            #expect(closed.status == 0, "\(closed.error)")
            let closedFields = try fields(closed.json)
            #expect(closedFields["status"] as? String == "closed")
            #expect(closedFields["satisfaction"] as? Int == 4)
            #expect(closedFields["closed_at"] is String)

            // Closing made a satisfaction follow-up task, which is the rep's to do.
            let tasks = try #require(try ana.run(["tasks", "--json"]).json as? [[String: Any]])
            #expect(tasks.contains { UUID(uuidString: (try? fields($0)["case"] as? String) ?? "") == UUID(uuidString: id) })

            let respondClosed = try ana.run(["case", "respond", id])
            #expect(respondClosed.status == 1)
            #expect(respondClosed.error.contains("is closed"), "\(respondClosed.error)")
            let closeAgain = try ana.run(["case", "close", number])
            #expect(closeAgain.status == 1)
            #expect(closeAgain.error.contains("closed already"), "\(closeAgain.error)")
            let unknown = try ana.run(["case", "close", "NO-SUCH-NUMBER"])
            #expect(unknown.status == 2)
            #expect(unknown.error.contains("no case with id or number 'NO-SUCH-NUMBER'"), "\(unknown.error)")
        }
    }

    // MARK: Activities and tasks

    @Test func logRecordsWhatHappenedAndTasksListsWhatIsDue() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let account = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])
            let contact = try ana.create("contact", ["last_name=Lovelace", "account=\(account)"])

            let call = try ana.run(["log", "call", "--subject", "Renewal terms", "--contact", contact, "--minutes", "15",
                                    "--outcome", "connected", "--at", "2030-03-01T15:30:00+01:00", "--json"])
            #expect(call.status == 0, "\(call.error)")
            let logged = try fields(call.json)
            #expect(logged["kind"] as? String == "call")
            #expect(logged["status"] as? String == "done")
            #expect(logged["occurred_at"] as? String == "2030-03-01T14:30:00Z")
            #expect(logged["duration_minutes"] as? Int == 15)
            #expect(logged["call_outcome"] as? String == "connected")
            #expect(logged["owner"] as? String == "ana@acme.example")
            #expect(UUID(uuidString: logged["contact"] as? String ?? "") == UUID(uuidString: contact))
            let visit = try ana.run(["log", "visit", "--subject", "Site tour", "--account", account, "--json"])
            #expect(try fields(visit.json)["occurred_at"] is String)

            let outcomeOfVisit = try ana.run(["log", "visit", "--subject", "x", "--outcome", "connected"])
            #expect(outcomeOfVisit.status == 1)
            #expect(outcomeOfVisit.error.contains("--outcome is a call's"), "\(outcomeOfVisit.error)")
            let badTime = try ana.run(["log", "call", "--subject", "x", "--at", "yesterday"])
            #expect(badTime.status == 1)
            #expect(badTime.error.contains("not an ISO 8601 instant"), "\(badTime.error)")
            let badKind = try ana.run(["log", "email", "--subject", "x"])
            #expect(badKind.status == 1)
            // A contact who withdrew consent to calls may be visited, not called.
            let withdrawn = try ana.create("contact", ["first_name=Carl", "last_name=Quiet", "account=\(account)",
                                                       "consent_calls=withdrawn"])
            let refusedCall = try ana.run(["log", "call", "--subject", "Offer", "--contact", withdrawn])
            #expect(refusedCall.status == 1)
            #expect(refusedCall.error.contains("Carl Quiet withdrew consent to calls"), "\(refusedCall.error)")
            #expect(try ana.run(["log", "visit", "--subject", "Offer", "--contact", withdrawn]).status == 0)

            // Tasks: open ones of this user by due date; done ones and others' are left out.
            for (subject, extra) in [("Later", ["due_at=2999-01-01T00:00:00Z"]), ("Overdue", ["due_at=2001-01-01T00:00:00Z"]),
                                     ("Undated", []), ("Done", ["due_at=2002-01-01T00:00:00Z", "status=done"]),
                                     ("Ben's", ["due_at=2003-01-01T00:00:00Z", "owner=ben@acme.example"])] {
                _ = try ana.create("activity", ["kind=task", "subject=\(subject)", "account=\(account)"]
                                   + (subject == "Ben's" ? [] : ["owner=ana@acme.example"]) + extra)
            }
            let open = try #require(try ana.run(["tasks", "--json"]).json as? [[String: Any]])
            #expect(try open.map { try fields($0)["subject"] as? String } == ["Overdue", "Later", "Undated"])
            let overdue = try #require(try ana.run(["tasks", "--overdue", "--json"]).json as? [[String: Any]])
            #expect(try overdue.map { try fields($0)["subject"] as? String } == ["Overdue"])
            #expect(try ana.run(["tasks", "--overdue"]).output.contains("Overdue"))
        }
    }

    @Test func aDeviceMadeWithASecretLearnsItsUserAtItsFirstSync() async throws {
        try CRMServer.with { server in
            let owner = try server.withSecret("owner-device")
            let before = try owner.run(["tasks"])
            #expect(before.status == 1)
            #expect(before.error.contains("does not know its user yet"), "\(before.error)")
            #expect(try owner.run(["sync"]).status == 0)
            let after = try owner.run(["tasks"])
            #expect(after.status == 0, "\(after.error)")
            #expect(after.output == "no open tasks\n")
            let logged = try owner.run(["log", "meeting", "--subject", "Kick-off", "--json"])
            #expect(try fields(logged.json)["owner"] as? String == CRMServer.admin)
        }
    }

    // MARK: Lists and reports

    @Test func listFiltersByIndexedAndOtherFields() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let acme = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])
            let other = try ana.create("account", ["name=Other", "owner=ana@acme.example"])
            let ada = try ana.create("contact", ["last_name=Lovelace", "title=CFO", "account=\(acme)"])
            let bob = try ana.create("contact", ["last_name=Babbage", "title=CTO", "account=\(acme.uppercased())"])
            _ = try ana.create("contact", ["last_name=Hopper", "title=CFO", "account=\(other)"])

            #expect(try ana.list("contact", ["--where", "account=\(acme)"]) == [ada, bob])
            #expect(try ana.list("contact", ["--where", "account=\(acme.uppercased())", "--where", "title=CFO"]) == [ada])
            #expect(try ana.list("contact", ["--where", "title=CFO", "--limit", "1"]) == [ada])
            #expect(try ana.list("account", ["--where", "loyalty_points=0"]).count == 2)
            #expect(try ana.list("contact", ["--where", "email="]).count == 3)

            let unknownField = try ana.run(["list", "contact", "--where", "shoe_size=42"])
            #expect(unknownField.status == 1)
            #expect(unknownField.error.contains("contact has no field 'shoe_size'"), "\(unknownField.error)")
            let badValue = try ana.run(["list", "opportunity", "--where", "amount=lots"])
            #expect(badValue.status == 1)
            #expect(badValue.error.contains("field 'amount' (real)"), "\(badValue.error)")
        }
    }

    @Test func reportsRunOnTheDevicesOwnData() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let account = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])
            _ = try ana.create("opportunity", ["name=A", "account=\(account)", "stage=proposal", "amount=1000"])
            _ = try ana.create("opportunity", ["name=B", "account=\(account)", "stage=proposal", "amount=3000"])

            let pipeline = try ana.run(["report", "pipeline", "--json"])
            #expect(pipeline.status == 0, "\(pipeline.error)")
            let rows = try #require(pipeline.json as? [[String: Any]])
            let proposal = try #require(rows.first { $0["stage"] as? String == "proposal" })
            #expect(proposal["count"] as? Int == 2)
            #expect(proposal["amount"] as? Double == 4000)
            #expect(proposal["weighted_amount"] as? Double == 2000)
            #expect(try ana.run(["report", "pipeline", "--csv"]).output.hasPrefix("stage,probability,count,amount,weighted_amount"))

            let help = try ana.run(["report", "--help"])
            for report in CRMReport.allCases { #expect(help.output.contains(report.rawValue)) }
            let unknown = try ana.run(["report", "forecasts"])
            #expect(unknown.status == 1)
            #expect(unknown.error.contains("unknown report 'forecasts'") && unknown.error.contains("pipeline, forecast, win-rates"), "\(unknown.error)")
        }
    }

    // MARK: Two devices

    @Test func aCaseOpenedOnOneDeviceShowsInTheAccountOnAnother() async throws {
        try CRMServer.with { server in
            let ana = try server.enroll("ana", user: "ana@acme.example")
            let ben = try server.enroll("ben", user: "ben@acme.example")
            let account = try ana.create("account", ["name=Acme", "owner=ana@acme.example"])
            let deal = try ana.create("opportunity", ["name=Fleet", "account=\(account)", "stage=prospecting"])
            #expect(try ana.run(["sync"]).status == 0)
            #expect(try ben.run(["sync"]).status == 0)

            // Ben's role reads his team's deals but changes only his own: refused with exit 4.
            let refused = try ben.run(["opportunity", "stage", deal, "negotiation"])
            #expect(refused.status == 4)
            #expect(refused.error.contains("not allowed: reps may") && refused.error.contains("nothing was changed"), "\(refused.error)")
            #expect(try fields(ben.run(["get", deal, "--json"]).json)["stage"] as? String == "prospecting")

            let opened = try ana.run(["case", "open", "--subject", "Broken pump", "--account", account, "--priority", "high", "--json"])
            #expect(opened.status == 0, "\(opened.error)")
            let number = try #require(try fields(opened.json)["number"] as? String)
            #expect(try ana.run(["sync"]).status == 0)

            let synced = try ben.run(["sync", "--json"])
            #expect(synced.status == 0, "\(synced.error)")
            let view = try #require(try ben.run(["account", "show", account, "--json"]).json as? [String: Any])
            let cases = try #require(view["open_cases"] as? [[String: Any]])
            #expect(cases.map { $0["number"] as? String } == [number])
            #expect(cases.first?["subject"] as? String == "Broken pump")
            #expect(cases.first?["response_due"] is String)
            // Ben finds it by its number too, and may not answer a case of a colleague's account.
            let answer = try ben.run(["case", "respond", number])
            #expect(answer.status == 4, "\(answer.error)")
        }
    }

    // MARK: Helpers

    /// The `fields` object of a record as `--json` prints it.
    func fields(_ record: Any?) throws -> [String: Any] {
        try #require((record as? [String: Any])?["fields"] as? [String: Any], "not a record: \(String(describing: record))")
    }
}

/// A `rapportd` process serving tenant `acme`, with two reps of team north (ana and ben) made
/// by `rapportctl`, and devices enrolled with codes from it.
struct CRMServer {
    /// The tenant's first user, an admin, made with the tenant.
    static let admin = "owner@acme.example"
    let dir: TemporaryDirectory
    let data: String
    let server: ServerProcess
    let ctl: CLI
    /// The credential of a device of the admin, enrolled before the server started.
    let adminDevice: DeviceCredential

    static func with(_ body: (CRMServer) throws -> Void) throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data")
        let credentials = try ServerProcess.prepare(data: data, tenants: ["acme"], schema: CRMSchema.current)
        let ctl = CLI(binary: ServerProcess.defaultBinary(named: "rapportctl"), fixed: ["--data", data])
        for user in ["ana", "ben"] {
            for arguments in [["user", "add", "--tenant", "acme", "--email", "\(user)@acme.example", "--name", user, "--role", "rep"],
                              ["user", "set-team", "--tenant", "acme", "--email", "\(user)@acme.example", "--team", "north"]] {
                let result = try ctl.run(arguments)
                guard result.status == 0 else { throw BenchError("rapportctl \(arguments): \(result.error)") }
            }
        }
        let server = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data)
        defer { server.stop() }
        try body(CRMServer(dir: dir, data: data, server: server, ctl: ctl, adminDevice: try #require(credentials["acme"]?.first)))
    }

    /// A device of `user` made with `rapport init --enroll`, as a rep would.
    func enroll(_ name: String, user: String) throws -> CLI {
        let ticket = try ctl.run(["device", "enroll", "--tenant", "acme", "--user", user, "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String, "\(ticket.error)")
        return try initialize(name, ["--enroll", code])
    }

    /// The admin's device made with `rapport init --secret`: it learns its user at its first sync.
    func withSecret(_ name: String) throws -> CLI {
        try initialize(name, ["--secret", adminDevice.secret.map { String(format: "%02x", $0) }.joined(),
                              "--device-id", adminDevice.deviceID])
    }

    private func initialize(_ name: String, _ credential: [String]) throws -> CLI {
        let home = dir.path("devices/\(name)")
        let rapport = CLI(binary: ServerProcess.defaultBinary(named: "rapport"))
        let result = try rapport.run(["init", "--home", home, "--server", "127.0.0.1:\(server.port)", "--tenant", "acme",
                                      "--ca", data + "/tls/ca.pem"] + credential)
        guard result.status == 0 else { throw BenchError("rapport init \(name): \(result.error)") }
        return CLI(binary: rapport.binary, fixed: ["--home", home])
    }
}
