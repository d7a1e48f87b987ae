import ArgumentParser
import CRM
import Foundation
import RapportDevice
import SyncModel

// The CRM verbs a field-sales rep uses, on the device's local store: they work offline and
// 'rapport sync' sends what they wrote. They write what the user means (a case's subject, a
// deal's stage, a case's closed status); what follows from it (case numbers, deadlines,
// probabilities, follow-up tasks) is written by the store's effects in the same transaction,
// and each verb shows the record as it stands after the write.

struct AccountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "account", abstract: "Look at accounts.", subcommands: [AccountShow.self])
}

struct AccountShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "An account at a glance: its figures, contacts and their consent, open deals, recent activities, open cases.",
        discussion: """
            Figures: owner, tier, lifecycle stage, value segment, loyalty points, churn risk, \
            renewal. Contacts with their consent to e-mail, calls and data processing and their \
            do-not-call flag; open opportunities with stage, amount and probability; the latest \
            10 activities, newest first (the account's own and those of its contacts, deals and \
            cases); open cases with number, priority, status, deadlines and SLA breach.

            Example: rapport account show 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The account id.")
    var id: String

    func run() throws {
        let overview = try device.withDevice { device in
            let id = try device.resolve(self.id, as: Account.recordType)
            return try device.crm { try $0.overview(ofAccount: id) }
        }
        output.emit(text: Presentation.text(overview, width: Output.width), json: Presentation.json(overview))
    }
}

struct LeadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lead", abstract: "Work on leads.", subcommands: [LeadConvert.self])
}

struct LeadConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a lead into an account, a contact and optionally an opportunity.",
        discussion: """
            The account is a new one named after the lead's company (or person), or --account \
            EXISTING_ID. The contact takes the lead's person details. With --opportunity NAME, \
            an opportunity at the account in --stage (default: the pipeline's first stage) \
            with --amount. The lead is marked converted and points at all of them; one \
            transaction, so nothing is written unless everything is.

            Example: rapport lead convert 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41 --opportunity "Fleet renewal" --amount 48000
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The lead id.")
    var id: String

    @Option(help: ArgumentHelp("Also create an opportunity with this name.", valueName: "name"))
    var opportunity: String?

    @Option(help: ArgumentHelp("The opportunity's amount.", valueName: "n"))
    var amount: Double?

    @Option(help: ArgumentHelp("The opportunity's stage (default: the pipeline's first).", valueName: "stage"))
    var stage: String?

    @Option(help: ArgumentHelp("Attach to this existing account instead of creating one.", valueName: "id"))
    var account: String?

    func validate() throws {
        if opportunity == nil && (amount != nil || stage != nil) {
            throw ValidationError("--amount and --stage describe the opportunity: give --opportunity NAME too")
        }
        if let amount, !(amount >= 0 && amount.isFinite) { throw ValidationError("--amount must be a number of at least 0") }
    }

    func run() throws {
        let (conversion, records) = try device.withDevice { device in
            let lead = try device.resolve(id, as: Lead.recordType)
            let existing = try account.map { text throws(DeviceError) in try device.resolve(text, as: Account.recordType) }
            let conversion = try device.crm { crm in
                var deal: Opportunity?
                if let opportunity {
                    let stages = try crm.pipeline()
                    let new = Opportunity(name: opportunity, account: nil, stage: stage ?? stages.first { !$0.isClosed }?.name ?? "", amount: amount)
                    try crm.checkStage(new.stage, of: new.id)
                    deal = new
                }
                return try crm.convert(lead: lead, existingAccount: existing, opportunity: deal)
            }
            let ids = [conversion.lead.id, conversion.account.id, conversion.contact.id] + (conversion.opportunity.map { [$0.id] } ?? [])
            var records: [RecordState] = []
            for id in ids { records.append(try device.current(id)) }
            return (conversion, records)
        }
        var text = "converted lead \(Device.text(conversion.lead.id))\n"
        text += "  account      \(Device.text(conversion.account.id))  \(conversion.account.name)\n"
        text += "  contact      \(Device.text(conversion.contact.id))  \([conversion.contact.firstName, conversion.contact.lastName].compactMap { $0 }.joined(separator: " "))\n"
        if let deal = conversion.opportunity {
            text += "  opportunity  \(Device.text(deal.id))  \(deal.name) (\(deal.stage))\n"
        }
        output.emit(text: text, json: .object([
            "lead": Presentation.json(records[0]), "account": Presentation.json(records[1]),
            "contact": Presentation.json(records[2]), "opportunity": records.count > 3 ? Presentation.json(records[3]) : .null,
        ]))
    }
}

struct OpportunityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "opportunity", abstract: "Work on opportunities.", subcommands: [OpportunityStage.self])
}

struct OpportunityStage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage",
        abstract: "Move an opportunity to a stage of the tenant's pipeline.",
        discussion: """
            STAGE must be a stage of the tenant's pipeline (by default: \
            \(PipelineStage.defaultPipeline.map(\.name).joined(separator: ", "))); the error for \
            another lists the tenant's. The probability, close date and stage history follow \
            from the change. Prints the opportunity as it stands after it.

            Example: rapport opportunity stage 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41 negotiation
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The opportunity id.")
    var id: String

    @Argument(help: "The new stage.")
    var stage: String

    func run() throws {
        let record = try device.withDevice { device in
            let id = try device.resolve(self.id, as: Opportunity.recordType)
            try device.crm { _ = try $0.moveOpportunity(id, toStage: stage) }
            return try device.current(id)
        }
        output.emit(text: Presentation.text(record, width: Output.width), json: Presentation.json(record))
    }
}

struct CaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "case", abstract: "Open, answer and close service cases.",
        discussion: "A case is named by its id or its number.",
        subcommands: [CaseOpen.self, CaseRespond.self, CaseClose.self])
}

struct CaseOpen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "open",
        abstract: "Open a service case, owned by this device's user.",
        discussion: """
            The case gets its number, opening time and response and resolution deadlines (from \
            its priority, type and severity) when it is written. Prints the case.

            Priorities: \(CRMSchema.casePriorities.joined(separator: ", ")). Types: \
            \(CRMSchema.caseTypes.joined(separator: ", ")). Severities (complaints): \
            \(CRMSchema.complaintSeverities.joined(separator: ", ")). Channels: \
            \(CRMSchema.caseChannels.joined(separator: ", ")).

            Example: rapport case open --subject "Invoice twice" --account 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41 --type complaint --severity major
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Option(help: "What the case is about.")
    var subject: String

    @Option(help: ArgumentHelp("The customer's account.", valueName: "id"))
    var account: String?

    @Option(help: ArgumentHelp("The contact who raised it.", valueName: "id"))
    var contact: String?

    @Option(help: "The priority.")
    var priority = "normal"

    @Option(help: "question, request, complaint or incident.")
    var type: String?

    @Option(help: "A complaint's severity: minor, major or critical.")
    var severity: String?

    @Option(help: "The details.")
    var description: String?

    @Option(help: "How the customer got in touch.")
    var channel: String?

    func run() throws {
        let record = try device.withDevice { device in
            let account = try self.account.map { text throws(DeviceError) in try device.resolve(text, as: Account.recordType) }
            let contact = try self.contact.map { text throws(DeviceError) in try device.resolve(text, as: Contact.recordType) }
            let opened = try device.crm {
                try $0.openCase(subject: subject, account: account, contact: contact, priority: priority, type: type,
                                severity: severity, description: description, channel: channel)
            }
            return try device.current(opened.id)
        }
        output.emit(text: Presentation.text(record, width: Output.width), json: Presentation.json(record))
    }
}

struct CaseRespond: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "respond",
        abstract: "Record the first response to a case, with an optional note.",
        discussion: """
            Stamps the case's first response with now (unless it was answered before) and \
            moves a new case to open. --note logs the text as an activity of kind note on the \
            case. A resolved or closed case is refused. --json prints {"case", "note"}.

            Example: rapport case respond C-1042 --note "Called back, refund on its way"
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The case id or number.")
    var id: String

    @Option(help: ArgumentHelp("A note to log on the case.", valueName: "text"))
    var note: String?

    func run() throws {
        let (serviceCase, note) = try device.withDevice { device in
            let id = try device.resolve(self.id, as: ServiceCase.recordType)
            let answered = try device.crm { try $0.respond(toCase: id, note: self.note) }
            return (try device.current(id), try answered.note.map { activity throws(DeviceError) in try device.current(activity.id) })
        }
        var text = Presentation.text(serviceCase, width: Output.width)
        if let note { text += "logged note \(Device.text(note.id))\n" }
        output.emit(text: text, json: .object(["case": Presentation.json(serviceCase), "note": note.map { Presentation.json($0) } ?? .null]))
    }
}

struct CaseClose: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "close",
        abstract: "Close a case, with the customer's satisfaction (1 to 5).",
        discussion: """
            Sets the status to closed; the close time and a satisfaction follow-up task (see \
            'rapport tasks') follow from it. Prints the case.

            Example: rapport case close C-1042 --satisfaction 4
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The case id or number.")
    var id: String

    @Option(help: ArgumentHelp("The customer's satisfaction, 1 to 5.", valueName: "1-5"))
    var satisfaction: Int?

    func validate() throws {
        if let satisfaction, !(1...5).contains(satisfaction) { throw ValidationError("--satisfaction must be 1 to 5") }
    }

    func run() throws {
        let record = try device.withDevice { device in
            let id = try device.resolve(self.id, as: ServiceCase.recordType)
            try device.crm { _ = try $0.closeCase(id, satisfaction: satisfaction) }
            return try device.current(id)
        }
        output.emit(text: Presentation.text(record, width: Output.width), json: Presentation.json(record))
    }
}

/// What `rapport log` records: something that happened with a customer.
enum LoggedKind: String, CaseIterable, ExpressibleByArgument {
    case call, visit, meeting
}

struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Log a call, visit or meeting that happened.",
        discussion: """
            Writes an activity with status done, owned by this device's user, that occurred \
            --at (ISO 8601, e.g. 2025-03-01T14:30:00Z; default now). Attach it to a contact, \
            account, opportunity or case (by id, a case also by number). Call outcomes: \
            \(CRMSchema.callOutcomes.joined(separator: ", ")). A call to a contact who withdrew \
            their consent to calls is refused with the reason.

            Example: rapport log call --subject "Renewal terms" --contact 3f2a6c1e-0b7d-4c36-9a51-2d7e8f9b0c41 --minutes 15 --outcome connected
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "call, visit or meeting.")
    var kind: LoggedKind

    @Option(help: "What it was about.")
    var subject: String

    @Option(help: ArgumentHelp("The contact.", valueName: "id"))
    var contact: String?

    @Option(help: ArgumentHelp("The account.", valueName: "id"))
    var account: String?

    @Option(help: ArgumentHelp("The opportunity.", valueName: "id"))
    var opportunity: String?

    @Option(name: .customLong("case"), help: ArgumentHelp("The case, by id or number.", valueName: "id"))
    var serviceCase: String?

    @Option(help: ArgumentHelp("When it happened (default: now).", valueName: "iso8601"))
    var at: String?

    @Option(help: ArgumentHelp("How long it took.", valueName: "n"))
    var minutes: Int?

    @Option(help: ArgumentHelp("A call's outcome.", valueName: "outcome"))
    var outcome: String?

    func validate() throws {
        if outcome != nil && kind != .call { throw ValidationError("--outcome is a call's; leave it out for a \(kind.rawValue)") }
        if let minutes, minutes < 0 { throw ValidationError("--minutes must be at least 0") }
    }

    func run() throws {
        let moment = try at.map(Self.instant)
        let record = try device.withDevice { device in
            _ = try device.requireUser()
            func id(_ text: String?, _ type: String) throws(DeviceError) -> UUID? {
                try text.map { text throws(DeviceError) in try device.resolve(text, as: type) }
            }
            let contact = try id(self.contact, Contact.recordType), account = try id(self.account, Account.recordType)
            let opportunity = try id(self.opportunity, Opportunity.recordType)
            let serviceCase = try id(self.serviceCase, ServiceCase.recordType)
            let logged = try device.crm {
                try $0.log(kind.rawValue, subject: subject, contact: contact, account: account, opportunity: opportunity,
                           serviceCase: serviceCase, at: moment, minutes: minutes, outcome: outcome)
            }
            return try device.current(logged.id)
        }
        output.emit(text: Presentation.text(record, width: Output.width), json: Presentation.json(record))
    }

    /// An ISO 8601 instant as people type it: with Z or an offset, with or without fractions.
    static func instant(_ text: String) throws(DeviceError) -> Date {
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return date }
        }
        throw .usage("--at '\(text.prefix(60))' is not an ISO 8601 instant such as 2025-03-01T14:30:00Z or 2025-03-01T15:30:00+01:00")
    }
}

struct Tasks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this device's user's open tasks, soonest due first.",
        discussion: """
            Open tasks are activities of kind task whose status is open (or unset), owned by \
            the device's user; those without a due date come last. --overdue lists only those \
            due before now.

            Example: rapport tasks --overdue
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Flag(help: "Only the tasks due before now.")
    var overdue = false

    func run() throws {
        let records = try device.withDevice { device in
            let user = try device.requireUser()
            let tasks = try device.crm { try $0.tasks(of: user, overdueAt: overdue ? Date() : nil) }
            var records: [RecordState] = []
            for task in tasks { records.append(try device.current(task.id)) }
            return records
        }
        let text = records.isEmpty
            ? (overdue ? "no overdue tasks\n" : "no open tasks\n")
            : Presentation.table(records, fields: ["due_at", "subject", "account", "contact", "opportunity", "case"], width: Output.width)
        output.emit(text: text, json: .array(records.map { Presentation.json($0) }))
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Run a CRM report on this device's data (offline): a table, or --json / --csv.",
        discussion: "Reports (the same as 'rapportctl report'):\n"
            + CRMReport.allCases.map { "  \($0.rawValue): \($0.summary)" }.joined(separator: "\n")
            + "\n\nExample: rapport report pipeline")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The report (see below).")
    var name: String

    @Flag(help: "Write CSV instead of a table.")
    var csv = false

    func validate() throws {
        if csv && output.json { throw ValidationError("give --json or --csv, not both") }
    }

    func run() throws {
        let report = try Device.report(named: name)
        let format: ReportFormat = output.json ? .json : csv ? .csv : .table
        let (text, problems) = try device.withDevice { try $0.run(report, as: format) }
        Output.standard(text)
        // On standard error only: the JSON and CSV on standard output keep their shape.
        for problem in problems { Output.error("warning: \(problem)") }
    }
}

struct Types: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the record types and their fields, with the values each field takes.",
        discussion: "The record types and their fields:\n\n" + Presentation.text(types: Types.all))

    @OptionGroup var output: OutputOptions

    @Argument(help: "Only this type.")
    var type: String?

    /// Every type of the schema, by name.
    static var all: [RecordType] { CRMSchema.current.types.values.sorted { $0.name < $1.name } }

    func run() throws {
        let types = try type.map { name throws(DeviceError) in [try ValueParser.recordType(name, in: CRMSchema.current)] } ?? Self.all
        output.emit(text: Presentation.text(types: types), json: Presentation.json(types: types))
    }
}
