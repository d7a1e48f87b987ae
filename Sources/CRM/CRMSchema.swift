import SyncModel

/// The record types of the CRM, shared by the server and every device of a tenant.
///
/// Versioned: a replica refuses a peer whose schema is newer than its own (it could not validate
/// what the peer sends), and serves older peers, which keep and pass on fields they do not know.
///
/// Ids of related records are UUID strings in text fields with a `reference` rule. Owners are
/// user e-mail addresses from the tenant's registry. Dates are `YYYY-MM-DD`, instants ISO 8601 UTC.
/// Tenant configuration that rules need on devices too (the pipeline, custom fields, thresholds
/// and SLAs) is stored as records of the tenant (`pipeline_stage`, `custom_field`, `setting`), so
/// it syncs like everything else.
public enum CRMSchema {
    /// Bumped whenever a type or a field is added. 3: value segments, complaints (case type and
    /// severity, escalation), renewal flag, manual overrides of computed fields, consent warnings.
    /// 4: orders (from an ERP).
    public static let version: UInt32 = 4

    // The allowed values of the choice fields, for validation, imports and reports.
    public static let lifecycleStages = ["prospect", "target", "customer", "core", "churned"]
    public static let tiers = ["vip", "gold", "silver", "bronze", "standard"]
    public static let companySizes = ["1-10", "11-50", "51-200", "201-1000", "1001-5000", "5001+"]
    public static let channels = ["email", "phone", "sms", "visit", "mail"]
    public static let consentStates = ["granted", "withdrawn"]
    public static let leadSources = ["web", "referral", "event", "campaign", "cold_call", "partner", "import", "other"]
    public static let leadStatuses = ["new", "working", "qualified", "unqualified", "converted"]
    public static let activityKinds = ["task", "call", "meeting", "visit", "note", "email"]
    public static let activityStatuses = ["open", "done", "cancelled"]
    public static let callOutcomes = ["connected", "no_answer", "voicemail", "busy", "wrong_number"]
    public static let casePriorities = ["urgent", "high", "normal", "low"]
    public static let caseStatuses = ["new", "open", "pending", "resolved", "closed"]
    public static let caseChannels = ["email", "phone", "web", "chat", "visit"]
    public static let caseTypes = ["question", "request", "complaint", "incident"]
    /// How grave a complaint is; a graver one gets a stricter SLA (`CRMSettings.complaintSLA`).
    public static let complaintSeverities = ["minor", "major", "critical"]
    /// Value segments (maintenance strategy): core customers get the best service, potential
    /// ones are developed, regular ones served at optimised cost, marginal ones reviewed.
    public static let valueSegments = ["core", "potential", "regular", "marginal"]
    /// An order's states in an ERP; `orderRevenueStatuses` of them count as revenue.
    public static let orderStatuses = ["draft", "confirmed", "invoiced", "paid", "cancelled"]
    /// The order states that are a sale: a draft may never happen, a cancelled one did not.
    public static let orderRevenueStatuses: Set<String> = ["confirmed", "invoiced", "paid"]
    public static let campaignTypes = ["email", "event", "webinar", "direct_mail", "advertising", "other"]
    public static let campaignStatuses = ["planned", "active", "completed", "aborted"]
    public static let memberStatuses = ["targeted", "sent", "opened", "responded", "attended", "unsubscribed"]
    public static let customFieldKinds = ["text", "number", "date", "choice", "boolean"]
    /// The entities an admin may add custom fields to.
    public static let customizableEntities = ["account", "contact", "lead", "opportunity", "activity", "case", "campaign"]

    /// The schema of this version.
    public static let current = Schema([
        type("account", [
            ("name", .text, .required), ("industry", .text, nil), ("size", .text, .oneOf(companySizes)),
            ("region", .text, nil), ("address", .text, nil), ("phone", .text, .formatted(.phone)),
            ("website", .text, .formatted(.url)), ("owner", .text, .formatted(.email)),
            ("parent", .text, .references("account")),
            ("lifecycle_stage", .text, .oneOf(lifecycleStages)), ("tier", .text, .oneOf(tiers)),
            ("annual_revenue", .real, .range(0)), ("loyalty_points", .counter, nil),
            ("consent_marketing", .boolean, nil), ("consent_data_processing", .boolean, nil),
            ("renewal_date", .text, .formatted(.date)), ("churn_risk", .boolean, nil),
            ("merged_into", .text, .references("account")),
            // Computed by the server's rules (see `CRMDerivedFields`), never typed by hand unless
            // the tenant allows an override, which `overrides` then lists.
            ("value_segment", .text, .oneOf(valueSegments)), ("renewal_due", .boolean, nil),
            ("strategic", .boolean, nil), ("overrides", .text, nil),
        ]),
        type("contact", [
            ("first_name", .text, nil), ("last_name", .text, .required), ("title", .text, nil),
            ("department", .text, nil), ("email", .text, .formatted(.email)),
            ("secondary_email", .text, .formatted(.email)), ("phone", .text, .formatted(.phone)),
            ("mobile", .text, .formatted(.phone)), ("account", .text, .references("account")),
            ("owner", .text, .formatted(.email)), ("birthday", .text, .formatted(.date)),
            ("preferred_channel", .text, .oneOf(channels)), ("do_not_call", .boolean, nil),
            // Consent: each kind with its state, when it was given or withdrawn, and how.
            ("consent_email", .text, .oneOf(consentStates)), ("consent_email_at", .text, .formatted(.dateTime)),
            ("consent_email_source", .text, nil),
            ("consent_calls", .text, .oneOf(consentStates)), ("consent_calls_at", .text, .formatted(.dateTime)),
            ("consent_calls_source", .text, nil),
            ("consent_data_processing", .text, .oneOf(consentStates)),
            ("consent_data_processing_at", .text, .formatted(.dateTime)), ("consent_data_processing_source", .text, nil),
            ("satisfaction", .integer, .range(1, 5)), ("nps", .integer, .range(0, 10)),
            ("merged_into", .text, .references("contact")),
        ]),
        type("lead", [
            ("first_name", .text, nil), ("last_name", .text, .required), ("company", .text, nil),
            ("title", .text, nil), ("email", .text, .formatted(.email)), ("phone", .text, .formatted(.phone)),
            ("source", .text, .oneOf(leadSources)), ("status", .text, .oneOf(leadStatuses, required: true)),
            ("owner", .text, .formatted(.email)), ("score", .integer, .range(0, 100)),
            ("converted_account", .text, .references("account")), ("converted_contact", .text, .references("contact")),
            ("converted_opportunity", .text, .references("opportunity")),
            ("converted_at", .text, .formatted(.dateTime)), ("merged_into", .text, .references("lead")),
        ]),
        type("opportunity", [
            ("name", .text, .required), ("account", .text, .references("account", required: true)),
            ("amount", .real, .range(0)), ("currency", .text, .formatted(.currency)),
            // One of the tenant's `pipeline_stage` names: checked against the tenant's pipeline.
            ("stage", .text, .required), ("probability", .integer, .range(0, 100)),
            ("expected_close", .text, .formatted(.date)), ("owner", .text, .formatted(.email)),
            ("lead_source", .text, .oneOf(leadSources)), ("next_step", .text, nil),
            ("closed_at", .text, .formatted(.date)), ("loss_reason", .text, nil),
            ("lead", .text, .references("lead")), ("merged_into", .text, .references("opportunity")),
        ]),
        // An order from the tenant's ERP: what an account bought, for tiering by spend.
        type("order", [
            ("account", .text, .references("account", required: true)), ("number", .text, .required),
            ("date", .text, .formatted(.date, required: true)), ("amount", .real, .range(0, required: true)),
            ("currency", .text, .formatted(.currency)), ("status", .text, .oneOf(orderStatuses, required: true)),
        ]),
        // One per stage change of an opportunity: a history that concurrent edits only add to.
        type("stage_change", [
            ("opportunity", .text, .references("opportunity", required: true)), ("from_stage", .text, nil),
            ("to_stage", .text, .required), ("changed_at", .text, .formatted(.dateTime, required: true)),
            ("changed_by", .text, .formatted(.email)),
        ]),
        type("activity", [
            ("kind", .text, .oneOf(activityKinds, required: true)), ("subject", .text, .required),
            ("due_at", .text, .formatted(.dateTime)), ("occurred_at", .text, .formatted(.dateTime)),
            ("duration_minutes", .integer, .range(0)), ("status", .text, .oneOf(activityStatuses)),
            ("account", .text, .references("account")), ("contact", .text, .references("contact")),
            ("opportunity", .text, .references("opportunity")), ("case", .text, .references("case")),
            ("owner", .text, .formatted(.email)), ("call_outcome", .text, .oneOf(callOutcomes)),
            // Set instead of refusing the activity when the tenant flags consent violations.
            ("consent_warning", .text, nil),
        ]),
        type("case", [
            ("number", .text, .required), ("account", .text, .references("account")),
            ("contact", .text, .references("contact")), ("subject", .text, .required), ("description", .text, nil),
            ("priority", .text, .oneOf(casePriorities, required: true)),
            ("status", .text, .oneOf(caseStatuses, required: true)), ("channel", .text, .oneOf(caseChannels)),
            ("owner", .text, .formatted(.email)), ("opened_at", .text, .formatted(.dateTime)),
            ("response_due", .text, .formatted(.dateTime)), ("resolution_due", .text, .formatted(.dateTime)),
            ("first_response_at", .text, .formatted(.dateTime)), ("resolved_at", .text, .formatted(.dateTime)),
            ("closed_at", .text, .formatted(.dateTime)), ("sla_breached", .boolean, nil),
            ("satisfaction", .integer, .range(1, 5)), ("nps", .integer, .range(0, 10)),
            ("type", .text, .oneOf(caseTypes)), ("severity", .text, .oneOf(complaintSeverities)),
            ("escalated_at", .text, .formatted(.dateTime)), ("overrides", .text, nil),
        ]),
        type("campaign", [
            ("name", .text, .required), ("type", .text, .oneOf(campaignTypes)),
            ("status", .text, .oneOf(campaignStatuses)), ("start_date", .text, .formatted(.date)),
            ("end_date", .text, .formatted(.date)), ("budget", .real, .range(0)),
        ]),
        // A contact or a lead in a campaign, with their response.
        type("campaign_member", [
            ("campaign", .text, .references("campaign", required: true)), ("contact", .text, .references("contact")),
            ("lead", .text, .references("lead")), ("status", .text, .oneOf(memberStatuses)),
            ("responded_at", .text, .formatted(.dateTime)), ("consent_warning", .text, nil),
        ]),
        // Tenant configuration, synced to devices so rules compute the same everywhere.
        type("pipeline_stage", [
            ("name", .text, .required), ("position", .integer, .required), ("probability", .integer, .range(0, 100, required: true)),
            ("closed", .boolean, nil), ("won", .boolean, nil),
        ]),
        type("custom_field", [
            ("entity", .text, .oneOf(customizableEntities, required: true)), ("name", .text, .required),
            ("kind", .text, .oneOf(customFieldKinds, required: true)), ("choices", .text, nil),
            ("label", .text, nil),
        ]),
        // One tenant setting: tier thresholds, SLA hours per priority, churn windows (see CRMSettings).
        type("setting", [("key", .text, .required), ("value", .text, nil)]),
    ])

    private static func type(_ name: String, _ fields: [(String, FieldKind, FieldRule?)]) -> RecordType {
        RecordType(name: name,
                   fields: Dictionary(uniqueKeysWithValues: fields.map { ($0.0, $0.1) }),
                   rules: Dictionary(uniqueKeysWithValues: fields.compactMap { f in f.2.map { (f.0, $0) } }))
    }
}
