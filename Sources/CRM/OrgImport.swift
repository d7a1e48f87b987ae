import Foundation
import ReplicaStore
import SyncModel

/// The CRM a whole-org export comes from.
public enum ImportSource: String, Sendable, Codable, CaseIterable {
    case salesforce, hubspot
}

/// One kind of file an export holds: an object of the source in one of its shapes, with the
/// columns it names and what each becomes.
///
/// Targets are the record type's fields and `CSVMapping.importTargets`, and these, which the
/// whole-org import resolves before the row reaches `CSVImporter`:
/// - `ref:FIELD`: a source id of the record `FIELD` references, found among the records this
///   export made (a contact's `AccountId`; an account's `ParentId`, which may name an account
///   later in the same file, filled once the file is in);
/// - `any:FIELD,FIELD...`: a source id of a record of any of those fields' types (a task's
///   `WhatId`), filling the field whose type holds it;
/// - `owner`: a source user (id, name or e-mail), mapped to a tenant user's e-mail;
/// - `address:N`: the Nth part of an address (street, city, state, postal code, country), joined
///   into the type's address field;
/// - `optout`: an e-mail opt-out flag, which becomes withdrawn e-mail consent with its source.
public struct ImportProfile: Sendable, Equatable {
    /// The source's name of the object: `Account`, `Contact`, `contacts`...
    public var object: String
    /// `api` (Salesforce Data Export / Data Loader field names), `report` (Salesforce report
    /// labels), or `export` (HubSpot).
    public var shape: String
    /// The record type rows become; `nil` for users, which only map owners.
    public var recordType: String?
    /// Normalised column title → target(s) (`|` between several).
    var columns: [String: String]
    /// Values as the source writes them → the schema's, per target, normalised keys.
    var translations: [String: [String: String]] = [:]
    /// Values a row gets where no column fills the target or its column is empty (an
    /// activity's kind for a Task file, whose subtype only newer orgs write).
    var constants: [String: String] = [:]

    init(_ object: String, _ shape: String, _ type: String?, _ columns: [String: String],
         translations: [String: [String: String]] = [:], constants: [String: String] = [:]) {
        self.object = object
        self.shape = shape
        self.recordType = type
        self.columns = Dictionary(columns.map { (CSVMapping.normalise($0.key), $0.value) }, uniquingKeysWith: { $1 })
        self.translations = translations.mapValues { Dictionary($0.map { (Self.key($0.key), $0.value) }, uniquingKeysWith: { $1 }) }
        self.constants = constants
    }

    /// How a source value compares with a translation's key: letters and digits, lowercased.
    static func key(_ text: String) -> String {
        // ASCII, as exports write their values, byte by byte: `CharacterSet` costs more than
        // the rest of a row's conversion.
        if text.utf8.allSatisfy({ $0 < 0x80 }) {
            let kept = text.utf8.compactMap { byte -> UInt8? in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): byte
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte + 32
                default: nil
                }
            }
            return String(decoding: kept, as: UTF8.self)
        }
        return String(text.lowercased().unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) })
    }

    /// The name a person and `--object` use: `Contact (api)`.
    public var name: String { "\(object) (\(shape))" }
}

/// Where the built-in profiles put what the schema has no field for: custom fields the import
/// declares (as `custom_field` records, so devices validate them too) when a file fills them.
enum ImportCustomFields {
    static let all: [CustomField] = [
        CustomField(entity: "contact", name: "mailing_address", kind: .text, label: "Mailing address"),
        CustomField(entity: "contact", name: "lead_source", kind: .text, label: "Lead source"),
        CustomField(entity: "lead", name: "address", kind: .text, label: "Address"),
        CustomField(entity: "lead", name: "do_not_call", kind: .boolean, label: "Do not call"),
        CustomField(entity: "lead", name: "consent_email", kind: .choice, choices: CRMSchema.consentStates, label: "E-mail consent"),
        CustomField(entity: "lead", name: "consent_email_source", kind: .text, label: "E-mail consent source"),
    ] + ["account", "contact", "lead", "opportunity", "activity", "campaign"].map {
        // The free text a record carries (a call's notes, a deal's background), which only
        // cases have a field for.
        CustomField(entity: $0, name: "description", kind: .text, label: "Description")
    }

    /// The field an address fills on a type.
    static func addressField(of type: String) -> String {
        switch type { case "contact": "mailing_address"; default: "address" }
    }
}

extension ImportProfile {
    static let stages = [
        "prospecting": "prospecting", "qualification": "qualification", "needsanalysis": "qualification",
        "valueproposition": "proposal", "iddecisionmakers": "proposal", "perceptionanalysis": "proposal",
        "proposalpricequote": "proposal", "negotiationreview": "negotiation", "closedwon": "closed_won", "closedlost": "closed_lost",
        "appointmentscheduled": "prospecting", "qualifiedtobuy": "qualification", "presentationscheduled": "proposal",
        "decisionmakerboughtin": "proposal", "contractsent": "negotiation",
    ]
    static let leadSources = [
        "web": "web", "phoneinquiry": "cold_call", "partnerreferral": "partner", "partner": "partner", "purchasedlist": "import",
        "other": "other", "employeereferral": "referral", "externalreferral": "referral", "referral": "referral",
        "tradeshow": "event", "seminarinternal": "event", "seminarpartner": "event", "advertisement": "campaign",
        "organicsearch": "web", "paidsearch": "campaign", "emailmarketing": "campaign", "socialmedia": "web",
        "directtraffic": "web", "offlinesources": "other", "referrals": "referral", "paidsocial": "campaign",
    ]
    static let leadStatuses = [
        "opennotcontacted": "new", "workingcontacted": "working", "closedconverted": "converted",
        "closednotconverted": "unqualified", "new": "new", "open": "working", "inprogress": "working",
        "unqualified": "unqualified", "attemptedtocontact": "working", "connected": "working",
        "badtiming": "unqualified",
    ]
    static let priorities = ["high": "high", "medium": "normal", "low": "low", "urgent": "urgent", "critical": "urgent"]
    static let caseStatuses = [
        "new": "new", "working": "open", "escalated": "open", "onhold": "pending", "closed": "closed",
        "waitingoncontact": "pending", "waitingonus": "open", "1": "new", "2": "pending", "3": "open", "4": "closed",
    ]
    static let caseChannels = ["email": "email", "phone": "phone", "web": "web", "chat": "chat", "form": "web", "emailtocase": "email"]
    static let caseTypes = ["question": "question", "problem": "incident", "featurerequest": "request", "complaint": "complaint"]
    static let campaignTypes = [
        "email": "email", "webinar": "webinar", "conference": "event", "tradeshow": "event", "directmail": "direct_mail",
        "advertisement": "advertising", "banneradsads": "advertising", "other": "other", "publicrelations": "other",
        "partners": "other", "referralprogram": "other", "telemarketing": "other",
    ]
    static let campaignStatuses = ["planned": "planned", "inprogress": "active", "completed": "completed", "aborted": "aborted"]
    static let memberStatuses = ["planned": "targeted", "sent": "sent", "received": "opened", "responded": "responded",
                                 "attended": "attended", "unsubscribed": "unsubscribed"]
    /// A task's `TaskSubtype`: a logged call is a call, a sent e-mail an e-mail.
    static let taskSubtypes = ["task": "task", "call": "call", "email": "email", "listemail": "email", "cadence": "task", "linkedin": "task"]
    static let taskStatuses = ["notstarted": "open", "inprogress": "open", "waitingonsomeoneelse": "open",
                               "deferred": "cancelled", "completed": "done"]
    static let address = ["address:0", "address:1", "address:2", "address:3", "address:4"]

    static func addressColumns(_ prefix: String, label: Bool) -> [String: String] {
        let parts = label ? ["Street", "City", "State/Province", "Zip/Postal Code", "Country"]
                          : ["Street", "City", "State", "PostalCode", "Country"]
        return Dictionary(uniqueKeysWithValues: zip(parts, address).map { ((label && !prefix.isEmpty ? prefix + " " : prefix) + $0, $1) })
    }

    /// Every profile of `source`, in the order their files import: what a row references comes
    /// before it.
    public static func all(_ source: ImportSource) -> [ImportProfile] {
        switch source {
        case .salesforce: salesforce
        case .hubspot: hubspot
        }
    }

    static let salesforce: [ImportProfile] = [
        ImportProfile("User", "api", nil, ["Id": "external_id", "Email": "email", "Name": "name", "Username": "username"]),
        ImportProfile("Account", "api", "account", [
            "Id": "external_id", "Name": "name", "Industry": "industry", "Phone": "phone", "Website": "website",
            "OwnerId": "owner", "AnnualRevenue": "annual_revenue", "ParentId": "ref:parent", "Description": "description",
        ].merging(addressColumns("Billing", label: false)) { $1 }),
        ImportProfile("Account", "report", "account", [
            "Account ID": "external_id", "Account Name": "name", "Industry": "industry", "Phone": "phone", "Website": "website",
            "Account Owner": "owner", "Annual Revenue": "annual_revenue", "Description": "description",
        ].merging(addressColumns("Billing", label: true)) { $1 }),
        ImportProfile("Campaign", "api", "campaign", [
            "Id": "external_id", "Name": "name", "Type": "type", "Status": "status", "StartDate": "start_date",
            "EndDate": "end_date", "BudgetedCost": "budget", "Description": "description",
        ], translations: ["type": campaignTypes, "status": campaignStatuses]),
        ImportProfile("Contact", "api", "contact", [
            "Id": "external_id", "AccountId": "ref:account", "FirstName": "first_name", "LastName": "last_name", "Title": "title",
            "Department": "department", "Email": "email", "Phone": "phone", "MobilePhone": "mobile", "Birthdate": "birthday",
            "OwnerId": "owner", "HasOptedOutOfEmail": "optout", "DoNotCall": "do_not_call", "LeadSource": "lead_source",
            "Description": "description",
        ].merging(addressColumns("Mailing", label: false)) { $1 }, translations: ["lead_source": leadSources]),
        ImportProfile("Contact", "report", "contact", [
            "Contact ID": "external_id", "Account ID": "ref:account", "Account Name": "account_name", "First Name": "first_name",
            "Last Name": "last_name", "Title": "title", "Department": "department", "Email": "email", "Phone": "phone",
            "Mobile": "mobile", "Birthdate": "birthday", "Contact Owner": "owner", "Email Opt Out": "optout",
            "Do Not Call": "do_not_call", "Lead Source": "lead_source", "Description": "description",
        ].merging(addressColumns("Mailing", label: true)) { $1 }, translations: ["lead_source": leadSources]),
        ImportProfile("Opportunity", "api", "opportunity", [
            "Id": "external_id", "AccountId": "ref:account", "Name": "name", "Amount": "amount", "StageName": "stage",
            "Probability": "probability", "CloseDate": "expected_close", "OwnerId": "owner", "LeadSource": "lead_source",
            "NextStep": "next_step", "CurrencyIsoCode": "currency", "Description": "description",
        ], translations: ["stage": stages, "lead_source": leadSources]),
        ImportProfile("Opportunity", "report", "opportunity", [
            "Opportunity ID": "external_id", "Account ID": "ref:account", "Account Name": "account_name",
            // A multi-currency org's report gives each amount's currency a column of its own.
            "Opportunity Name": "name", "Amount": "amount", "Amount Currency": "currency", "Opportunity Currency": "currency",
            "Stage": "stage", "Probability (%)": "probability",
            "Close Date": "expected_close", "Opportunity Owner": "owner", "Lead Source": "lead_source", "Next Step": "next_step",
            "Description": "description",
        ], translations: ["stage": stages, "lead_source": leadSources]),
        // After opportunities: a converted lead refers to the opportunity its conversion made.
        ImportProfile("Lead", "api", "lead", [
            "Id": "external_id", "FirstName": "first_name", "LastName": "last_name", "Company": "company", "Title": "title",
            "Email": "email", "Phone": "phone", "LeadSource": "source", "Status": "status", "OwnerId": "owner",
            "HasOptedOutOfEmail": "optout", "DoNotCall": "do_not_call", "Description": "description",
            // A converted lead names what its conversion made, which the export holds too; with
            // them the lead is linked to those records instead of converted again on import,
            // which made a second contact (and account) for every converted lead.
            "ConvertedAccountId": "ref:converted_account", "ConvertedContactId": "ref:converted_contact",
            "ConvertedOpportunityId": "ref:converted_opportunity", "ConvertedDate": "converted_at",
        ].merging(addressColumns("", label: false)) { $1 }, translations: ["source": leadSources, "status": leadStatuses]),
        ImportProfile("Lead", "report", "lead", [
            "Lead ID": "external_id", "First Name": "first_name", "Last Name": "last_name", "Company / Account": "company",
            "Company": "company", "Title": "title", "Email": "email", "Phone": "phone", "Lead Source": "source",
            "Lead Status": "status", "Lead Owner": "owner", "Email Opt Out": "optout", "Do Not Call": "do_not_call",
            "Description": "description",
        ].merging(addressColumns("", label: true)) { $1 }, translations: ["source": leadSources, "status": leadStatuses]),
        ImportProfile("Case", "api", "case", [
            "Id": "external_id", "CaseNumber": "number", "AccountId": "ref:account", "ContactId": "ref:contact",
            "Subject": "subject", "Description": "description", "Priority": "priority", "Status": "status",
            "Origin": "channel", "Type": "type", "OwnerId": "owner", "CreatedDate": "opened_at", "ClosedDate": "closed_at",
        ], translations: ["priority": priorities, "status": caseStatuses, "channel": caseChannels, "type": caseTypes]),
        ImportProfile("Case", "report", "case", [
            "Case Number": "external_id|number", "Account Name": "account_name", "Subject": "subject",
            "Description": "description", "Priority": "priority", "Status": "status", "Case Origin": "channel",
            "Type": "type", "Case Owner": "owner", "Date/Time Opened": "opened_at", "Date/Time Closed": "closed_at",
        ], translations: ["priority": priorities, "status": caseStatuses, "channel": caseChannels, "type": caseTypes]),
        ImportProfile("CampaignMember", "api", "campaign_member", [
            "Id": "external_id", "CampaignId": "ref:campaign", "ContactId": "ref:contact", "LeadId": "ref:lead",
            "Status": "status", "FirstRespondedDate": "responded_at",
        ], translations: ["status": memberStatuses]),
        ImportProfile("Task", "api", "activity", [
            "Id": "external_id", "Subject": "subject", "ActivityDate": "due_at", "Status": "status", "OwnerId": "owner",
            "WhoId": "any:contact", "WhatId": "any:account,opportunity,case", "TaskSubtype": "kind", "Description": "description",
        ], translations: ["status": taskStatuses, "kind": taskSubtypes], constants: ["kind": "task"]),
        ImportProfile("Event", "api", "activity", [
            "Id": "external_id", "Subject": "subject", "StartDateTime": "occurred_at", "DurationInMinutes": "duration_minutes",
            "OwnerId": "owner", "WhoId": "any:contact", "WhatId": "any:account,opportunity,case", "Description": "description",
        ], constants: ["kind": "meeting"]),
    ]

    static let hubspot: [ImportProfile] = [
        ImportProfile("companies", "export", "account", [
            "Record ID": "external_id", "Company name": "name", "Industry": "industry", "Phone Number": "phone",
            "Website URL": "website", "Company owner": "owner", "Annual Revenue": "annual_revenue",
            "Lifecycle Stage": "lifecycle_stage", "Street Address": "address:0", "City": "address:1",
            "State/Region": "address:2", "Postal Code": "address:3", "Country/Region": "address:4", "Description": "description",
        ], translations: ["lifecycle_stage": ["subscriber": "prospect", "lead": "prospect", "marketingqualifiedlead": "prospect",
                                               "salesqualifiedlead": "prospect", "opportunity": "target", "customer": "customer",
                                               "evangelist": "core", "other": "prospect"]]),
        ImportProfile("contacts", "export", "contact", [
            "Record ID": "external_id", "First Name": "first_name", "Last Name": "last_name", "Email": "email",
            "Phone Number": "phone", "Mobile Phone Number": "mobile", "Job Title": "title", "Company Name": "account_name",
            "Associated Company IDs (Primary)": "ref:account", "Contact owner": "owner",
            "Unsubscribed from all email": "optout", "Original Source": "lead_source", "Street Address": "address:0",
            "City": "address:1", "State/Region": "address:2", "Postal Code": "address:3", "Country/Region": "address:4",
        ], translations: ["lead_source": leadSources]),
        ImportProfile("deals", "export", "opportunity", [
            "Record ID": "external_id", "Deal Name": "name", "Amount": "amount", "Deal Stage": "stage",
            "Close Date": "expected_close", "Deal owner": "owner", "Associated Company IDs (Primary)": "ref:account",
            "Associated Company": "account_name", "Original Source": "lead_source", "Deal Description": "description",
        ], translations: ["stage": stages, "lead_source": leadSources]),
        ImportProfile("tickets", "export", "case", [
            "Ticket ID": "external_id|number", "Ticket name": "subject", "Ticket description": "description",
            "Priority": "priority", "Ticket status": "status", "Ticket owner": "owner", "Source": "channel",
            "Associated Company IDs (Primary)": "ref:account", "Associated Contact IDs (Primary)": "ref:contact",
            "Create date": "opened_at", "Close date": "closed_at",
        ], translations: ["priority": priorities, "status": caseStatuses, "channel": caseChannels]),
    ]

    /// The built-in mapping of single files of `type` from `source` (`--mapping`): the
    /// column-to-field part of the source's profiles of that type (report shape for Salesforce)
    /// with its value translations, without the targets only a whole-org import resolves or
    /// declares (references by source id; its custom fields: a tenant may not have them).
    /// Owners map through `CSVImporter.Options.owners`, opt-outs become consent.
    public static func singleFileMapping(_ source: ImportSource, type: String) -> CSVMapping? {
        if type == "contact" { return source == .salesforce ? .salesforceContact : .hubspotContact }
        // HubSpot has no lead object: leads are contacts exported with their company's name.
        if type == "lead" && source == .hubspot { return hubspotLead }
        guard let profile = all(source).last(where: { $0.recordType == type }) else { return nil }
        var columns: [String: String] = [:]
        for (column, targets) in profile.columns {
            let target = targets.split(separator: "|").last.map(String.init) ?? targets
            guard !target.isEmpty, !target.contains(":"),
                  !ImportCustomFields.all.contains(where: { $0.entity == type && $0.name == target }) else { continue }
            columns[column] = target
        }
        return CSVMapping(columns, values: profile.translations)
    }

    /// A HubSpot contact export read as leads.
    static let hubspotLead = CSVMapping([
        "Record ID": "external_id", "First Name": "first_name", "Last Name": "last_name", "Email": "email",
        "Phone Number": "phone", "Company Name": "company", "Job Title": "title",
        "Contact owner": "owner", "Unsubscribed from all email": "optout",
    ])

    /// How many of `header`'s columns this profile names.
    func score(_ header: [String]) -> Int {
        header.filter { columns[CSVMapping.normalise($0)] != nil }.count
    }

    /// The profile of `source` a file with `header` named `fileName` most likely is: the one
    /// naming most columns, the file name (`Contact.csv`, `contacts-export.csv`) breaking ties
    /// and worth two columns; `nil` when none names at least two.
    public static func detect(header: [String], fileName: String, source: ImportSource) -> ImportProfile? {
        let base = key((fileName as NSString).deletingPathExtension)
        let scored = all(source).map { profile -> (ImportProfile, Int, Int) in
            let named = profile.score(header)
            let objectKey = key(profile.object)
            let nameBonus = base == objectKey || base.hasPrefix(objectKey) || base.hasPrefix(String(objectKey.dropLast())) ? 2 : 0
            return (profile, named, named + nameBonus)
        }
        guard let best = scored.max(by: { $0.2 < $1.2 }), best.1 >= 2 else { return nil }
        return best.0
    }

    /// The profile `--object` names: `Contact`, `Contact:report`, `deals`; `nil` if none.
    public static func named(_ text: String, source: ImportSource) -> ImportProfile? {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let candidates = all(source).filter { key($0.object) == key(parts[0]) }
        if parts.count == 2 { return candidates.first { $0.shape == parts[1].lowercased() } }
        return candidates.first
    }
}
