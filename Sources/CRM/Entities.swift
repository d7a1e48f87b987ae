import Foundation
import SyncModel

// The CRM's entities as typed values (see `CRMEntity`). Field names and allowed values are
// those of `CRMSchema`; dates are `YYYY-MM-DD` and instants ISO 8601 UTC strings, as stored.

/// A customer company.
public struct Account: CRMEntity {
    public static let recordType = "account"
    public let id: UUID
    public var name = ""
    public var industry: String?, size: String?, region: String?, address: String?, phone: String?, website: String?
    /// The owning user's e-mail address.
    public var owner: String?
    public var parent: UUID?
    public var lifecycleStage: String?, tier: String?
    public var annualRevenue: Double?
    /// A counter: change it with `CRMStore.awardLoyaltyPoints`, so concurrent awards add up.
    public var loyaltyPoints: Int64 = 0
    public var consentMarketing: Bool?, consentDataProcessing: Bool?
    public var renewalDate: String?
    public var churnRisk: Bool?
    /// Set on the tombstone of an account merged into another.
    public var mergedInto: UUID?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), name: String, owner: String? = nil) {
        self.id = id
        self.name = name
        self.owner = owner
    }

    public static let fields: [CRMField<Account>] = [
        .text("name", \.name), .text("industry", \.industry), .text("size", \.size), .text("region", \.region),
        .text("address", \.address), .text("phone", \.phone), .text("website", \.website), .text("owner", \.owner),
        .id("parent", \.parent), .text("lifecycle_stage", \.lifecycleStage), .text("tier", \.tier),
        .real("annual_revenue", \.annualRevenue), .counter("loyalty_points", \.loyaltyPoints),
        .bool("consent_marketing", \.consentMarketing), .bool("consent_data_processing", \.consentDataProcessing),
        .text("renewal_date", \.renewalDate), .bool("churn_risk", \.churnRisk), .id("merged_into", \.mergedInto),
    ]
}

/// A person at an account.
public struct Contact: CRMEntity {
    public static let recordType = "contact"
    public let id: UUID
    public var firstName: String?
    public var lastName = ""
    public var title: String?, department: String?, email: String?, secondaryEmail: String?, phone: String?, mobile: String?
    public var account: UUID?
    public var owner: String?, birthday: String?, preferredChannel: String?
    public var doNotCall: Bool?
    public var consentEmail: String?, consentEmailAt: String?, consentEmailSource: String?
    public var consentCalls: String?, consentCallsAt: String?, consentCallsSource: String?
    public var consentDataProcessing: String?, consentDataProcessingAt: String?, consentDataProcessingSource: String?
    public var satisfaction: Int?, nps: Int?
    public var mergedInto: UUID?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), firstName: String? = nil, lastName: String, account: UUID? = nil, email: String? = nil, owner: String? = nil) {
        self.id = id
        self.firstName = firstName
        self.lastName = lastName
        self.account = account
        self.email = email
        self.owner = owner
    }

    public static let fields: [CRMField<Contact>] = [
        .text("first_name", \.firstName), .text("last_name", \.lastName), .text("title", \.title),
        .text("department", \.department), .text("email", \.email), .text("secondary_email", \.secondaryEmail),
        .text("phone", \.phone), .text("mobile", \.mobile), .id("account", \.account), .text("owner", \.owner),
        .text("birthday", \.birthday), .text("preferred_channel", \.preferredChannel), .bool("do_not_call", \.doNotCall),
        .text("consent_email", \.consentEmail), .text("consent_email_at", \.consentEmailAt),
        .text("consent_email_source", \.consentEmailSource), .text("consent_calls", \.consentCalls),
        .text("consent_calls_at", \.consentCallsAt), .text("consent_calls_source", \.consentCallsSource),
        .text("consent_data_processing", \.consentDataProcessing),
        .text("consent_data_processing_at", \.consentDataProcessingAt),
        .text("consent_data_processing_source", \.consentDataProcessingSource),
        .integer("satisfaction", \.satisfaction), .integer("nps", \.nps), .id("merged_into", \.mergedInto),
    ]
}

/// Someone who may become a customer; converted into an account, a contact and optionally an
/// opportunity by `CRMStore.convert(lead:...)`.
public struct Lead: CRMEntity {
    public static let recordType = "lead"
    public let id: UUID
    public var firstName: String?
    public var lastName = ""
    public var company: String?, title: String?, email: String?, phone: String?, source: String?
    public var status = "new"
    public var owner: String?
    public var score: Int?
    public var convertedAccount: UUID?, convertedContact: UUID?, convertedOpportunity: UUID?
    public var convertedAt: String?
    public var mergedInto: UUID?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), firstName: String? = nil, lastName: String, company: String? = nil,
                email: String? = nil, source: String? = nil, owner: String? = nil) {
        self.id = id
        self.firstName = firstName
        self.lastName = lastName
        self.company = company
        self.email = email
        self.source = source
        self.owner = owner
    }

    public static let fields: [CRMField<Lead>] = [
        .text("first_name", \.firstName), .text("last_name", \.lastName), .text("company", \.company),
        .text("title", \.title), .text("email", \.email), .text("phone", \.phone), .text("source", \.source),
        .text("status", \.status), .text("owner", \.owner), .integer("score", \.score),
        .id("converted_account", \.convertedAccount), .id("converted_contact", \.convertedContact),
        .id("converted_opportunity", \.convertedOpportunity), .text("converted_at", \.convertedAt),
        .id("merged_into", \.mergedInto),
    ]
}

/// A deal in the tenant's pipeline. Stage changes through `CRMStore` are kept as `StageChange`s.
public struct Opportunity: CRMEntity {
    public static let recordType = "opportunity"
    public let id: UUID
    public var name = ""
    public var account: UUID?
    public var amount: Double?
    public var currency: String?
    public var stage = ""
    public var probability: Int?
    public var expectedClose: String?, owner: String?, leadSource: String?, nextStep: String?, closedAt: String?, lossReason: String?
    public var lead: UUID?
    public var mergedInto: UUID?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), name: String, account: UUID?, stage: String, amount: Double? = nil,
                currency: String? = nil, owner: String? = nil) {
        self.id = id
        self.name = name
        self.account = account
        self.stage = stage
        self.amount = amount
        self.currency = currency
        self.owner = owner
    }

    public static let fields: [CRMField<Opportunity>] = [
        .text("name", \.name), .id("account", \.account), .real("amount", \.amount), .text("currency", \.currency),
        .text("stage", \.stage), .integer("probability", \.probability), .text("expected_close", \.expectedClose),
        .text("owner", \.owner), .text("lead_source", \.leadSource), .text("next_step", \.nextStep),
        .text("closed_at", \.closedAt), .text("loss_reason", \.lossReason), .id("lead", \.lead),
        .id("merged_into", \.mergedInto),
    ]
}

/// An order an ERP wrote for an account: what the account actually bought. Confirmed, invoiced
/// and paid orders count towards the account's tier when the tenant's `tier.basis` says so.
public struct Order: CRMEntity {
    public static let recordType = "order"
    public let id: UUID
    public var account: UUID?
    /// The ERP's order number, as the customer sees it.
    public var number = ""
    /// The order day, `YYYY-MM-DD`: what places it in the 12 months tiering counts.
    public var date = ""
    public var amount: Double?
    public var currency: String?
    /// One of `CRMSchema.orderStatuses`.
    public var status = "confirmed"
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), account: UUID, number: String, date: String, amount: Double, currency: String? = nil,
                status: String = "confirmed") {
        self.id = id
        self.account = account
        self.number = number
        self.date = date
        self.amount = amount
        self.currency = currency
        self.status = status
    }

    public static let fields: [CRMField<Order>] = [
        .id("account", \.account), .text("number", \.number), .text("date", \.date), .real("amount", \.amount),
        .text("currency", \.currency), .text("status", \.status),
    ]
}

/// One change of an opportunity's stage: its history, which concurrent edits only add to.
public struct StageChange: CRMEntity {
    public static let recordType = "stage_change"
    public let id: UUID
    public var opportunity: UUID?
    /// `nil` for the stage an opportunity was created in.
    public var fromStage: String?
    public var toStage = ""
    public var changedAt = ""
    public var changedBy: String?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }

    public static let fields: [CRMField<StageChange>] = [
        .id("opportunity", \.opportunity), .text("from_stage", \.fromStage), .text("to_stage", \.toStage),
        .text("changed_at", \.changedAt), .text("changed_by", \.changedBy),
    ]
}

/// A task, call, meeting, visit, note or e-mail.
public struct Activity: CRMEntity {
    public static let recordType = "activity"
    public let id: UUID
    public var kind = "task"
    public var subject = ""
    public var dueAt: String?, occurredAt: String?
    public var durationMinutes: Int?
    public var status: String?
    public var account: UUID?, contact: UUID?, opportunity: UUID?, serviceCase: UUID?
    public var owner: String?, callOutcome: String?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), kind: String, subject: String, account: UUID? = nil, contact: UUID? = nil,
                opportunity: UUID? = nil, owner: String? = nil) {
        self.id = id
        self.kind = kind
        self.subject = subject
        self.account = account
        self.contact = contact
        self.opportunity = opportunity
        self.owner = owner
    }

    public static let fields: [CRMField<Activity>] = [
        .text("kind", \.kind), .text("subject", \.subject), .text("due_at", \.dueAt), .text("occurred_at", \.occurredAt),
        .integer("duration_minutes", \.durationMinutes), .text("status", \.status), .id("account", \.account),
        .id("contact", \.contact), .id("opportunity", \.opportunity), .id("case", \.serviceCase),
        .text("owner", \.owner), .text("call_outcome", \.callOutcome),
    ]
}

/// A service request or complaint (`case` is a Swift keyword, hence the name).
public struct ServiceCase: CRMEntity {
    public static let recordType = "case"
    public let id: UUID
    public var number = ""
    public var account: UUID?, contact: UUID?
    public var subject = ""
    public var description: String?
    public var priority = "normal"
    public var status = "new"
    public var channel: String?, owner: String?, openedAt: String?, responseDue: String?, resolutionDue: String?
    public var firstResponseAt: String?, resolvedAt: String?, closedAt: String?
    public var slaBreached: Bool?
    public var satisfaction: Int?, nps: Int?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), number: String, subject: String, account: UUID? = nil, contact: UUID? = nil,
                priority: String = "normal", owner: String? = nil) {
        self.id = id
        self.number = number
        self.subject = subject
        self.account = account
        self.contact = contact
        self.priority = priority
        self.owner = owner
    }

    public static let fields: [CRMField<ServiceCase>] = [
        .text("number", \.number), .id("account", \.account), .id("contact", \.contact), .text("subject", \.subject),
        .text("description", \.description), .text("priority", \.priority), .text("status", \.status),
        .text("channel", \.channel), .text("owner", \.owner), .text("opened_at", \.openedAt),
        .text("response_due", \.responseDue), .text("resolution_due", \.resolutionDue),
        .text("first_response_at", \.firstResponseAt), .text("resolved_at", \.resolvedAt),
        .text("closed_at", \.closedAt), .bool("sla_breached", \.slaBreached),
        .integer("satisfaction", \.satisfaction), .integer("nps", \.nps),
    ]
}

/// A marketing campaign.
public struct Campaign: CRMEntity {
    public static let recordType = "campaign"
    public let id: UUID
    public var name = ""
    public var type: String?, status: String?, startDate: String?, endDate: String?
    public var budget: Double?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), name: String, type: String? = nil, status: String? = nil) {
        self.id = id
        self.name = name
        self.type = type
        self.status = status
    }

    public static let fields: [CRMField<Campaign>] = [
        .text("name", \.name), .text("type", \.type), .text("status", \.status), .text("start_date", \.startDate),
        .text("end_date", \.endDate), .real("budget", \.budget),
    ]
}

/// A contact or a lead in a campaign, with their response.
public struct CampaignMember: CRMEntity {
    public static let recordType = "campaign_member"
    public let id: UUID
    public var campaign: UUID?
    public var contact: UUID?, lead: UUID?
    public var status: String?, respondedAt: String?
    public var custom: [String: FieldValue] = [:]

    public init(id: UUID) { self.id = id }
    public init(id: UUID = .newRecordID(), campaign: UUID, contact: UUID? = nil, lead: UUID? = nil, status: String? = nil) {
        self.id = id
        self.campaign = campaign
        self.contact = contact
        self.lead = lead
        self.status = status
    }

    public static let fields: [CRMField<CampaignMember>] = [
        .id("campaign", \.campaign), .id("contact", \.contact), .id("lead", \.lead), .text("status", \.status),
        .text("responded_at", \.respondedAt),
    ]
}
