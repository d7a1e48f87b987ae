import CRM
import Foundation
import SyncModel

/// How the CRM verbs show an account's 360 view and the record types, in the text and JSON
/// forms of the other commands (`--json` keys in snake_case, ids lowercase).
extension Presentation {
    // MARK: Account overview

    /// `account show --json`: the account's figures, then each list under its name.
    public static func json(_ overview: AccountOverview) -> JSONValue {
        let account = overview.account
        return .object([
            "account": .object([
                "id": .string(Device.text(account.id)),
                "name": .string(account.name),
                "owner": .optional(account.owner),
                "industry": .optional(account.industry),
                "tier": .optional(account.tier),
                "lifecycle_stage": .optional(account.lifecycleStage),
                "value_segment": .optional(account.valueSegment),
                "loyalty_points": .integer(account.loyaltyPoints),
                "churn_risk": optional(account.churnRisk),
                "renewal_date": .optional(account.renewalDate),
                "renewal_due": optional(account.renewalDue),
            ]),
            "contacts": .array(overview.contacts.map { contact in
                .object([
                    "id": .string(Device.text(contact.id)),
                    "name": .string(contact.name),
                    "title": .optional(contact.title),
                    "email": .optional(contact.email),
                    "phone": .optional(contact.phone),
                    "consent_email": .optional(contact.consentEmail),
                    "consent_calls": .optional(contact.consentCalls),
                    "consent_data_processing": .optional(contact.consentDataProcessing),
                    "do_not_call": optional(contact.doNotCall),
                ])
            }),
            "open_opportunities": .array(overview.openOpportunities.map { opportunity in
                .object([
                    "id": .string(Device.text(opportunity.id)),
                    "name": .string(opportunity.name),
                    "stage": .string(opportunity.stage),
                    "amount": opportunity.amount.map { .number($0) } ?? .null,
                    "currency": .optional(opportunity.currency),
                    "probability": opportunity.probability.map { .integer($0) } ?? .null,
                    "expected_close": .optional(opportunity.expectedClose),
                    "owner": .optional(opportunity.owner),
                ])
            }),
            "recent_activities": .array(overview.recentActivities.map { activity in
                .object([
                    "id": .string(Device.text(activity.id)),
                    "kind": .string(activity.kind),
                    "subject": .string(activity.subject),
                    "status": .optional(activity.status),
                    "at": .optional(activity.at),
                    "owner": .optional(activity.owner),
                ])
            }),
            "open_cases": .array(overview.openCases.map { line in
                .object([
                    "id": .string(Device.text(line.id)),
                    "number": .string(line.number),
                    "subject": .string(line.subject),
                    "priority": .string(line.priority),
                    "status": .string(line.status),
                    "type": .optional(line.type),
                    "severity": .optional(line.severity),
                    "opened_at": .optional(line.openedAt),
                    "response_due": .optional(line.responseDue),
                    "resolution_due": .optional(line.resolutionDue),
                    "first_response_at": .optional(line.firstResponseAt),
                    "sla_breached": optional(line.slaBreached),
                ])
            }),
        ])
    }

    /// `account show`: the figures as `key  value` lines, then a table per list (or a line
    /// saying it is empty).
    public static func text(_ overview: AccountOverview, width: Int) -> String {
        let account = overview.account
        let renewal = account.renewalDate.map { $0 + (account.renewalDue == true ? " (due, nothing in the pipeline)" : "") }
        let figures: [(String, String?)] = [
            ("owner", account.owner), ("industry", account.industry), ("tier", account.tier),
            ("lifecycle", account.lifecycleStage), ("value segment", account.valueSegment),
            ("loyalty points", String(account.loyaltyPoints)), ("churn risk", account.churnRisk.map { $0 ? "yes" : "no" }),
            ("renewal", renewal),
        ]
        var text = "account \(account.name)  \(Device.text(account.id))\n"
        text += TextTable(columns: [.init("key", shrinkable: false), .init("value")],
                          rows: figures.map { [$0.0, $0.1 ?? ""] }, showsHeader: false).render(width: width)
        func section(_ title: String, _ columns: [TextTable.Column], _ rows: [[String]]) {
            text += "\n\(title) (\(rows.count))\n"
            guard !rows.isEmpty else { text += "  none\n"; return }
            // Columns no row fills would only take width from those that say something.
            let kept = columns.indices.filter { index in rows.contains { !$0[index].isEmpty } }
            text += TextTable(columns: kept.map { columns[$0] }, rows: rows.map { row in kept.map { row[$0] } }).render(width: width)
        }
        let id = TextTable.Column("id", shrinkable: false)
        section("contacts", [id, .init("name"), .init("title"), .init("email"), .init("phone"), .init("email consent"),
                             .init("calls consent"), .init("data consent"), .init("do not call")],
                overview.contacts.map {
                    [Device.text($0.id), $0.name, $0.title ?? "", $0.email ?? "", $0.phone ?? "", $0.consentEmail ?? "",
                     $0.consentCalls ?? "", $0.consentDataProcessing ?? "", yesNo($0.doNotCall)]
                })
        section("open opportunities", [id, .init("name"), .init("stage"), .init("amount", alignRight: true),
                                       .init("probability", alignRight: true), .init("expected close")],
                overview.openOpportunities.map { line in
                    [Device.text(line.id), line.name, line.stage,
                     line.amount.map { ([cell(.real($0))] + (line.currency.map { [$0] } ?? [])).joined(separator: " ") } ?? "",
                     line.probability.map { "\($0)%" } ?? "", line.expectedClose ?? ""]
                })
        section("recent activities", [id, .init("at"), .init("kind"), .init("subject"), .init("status"), .init("owner")],
                overview.recentActivities.map {
                    [Device.text($0.id), $0.at ?? "", $0.kind, $0.subject, $0.status ?? "", $0.owner ?? ""]
                })
        section("open cases", [id, .init("number"), .init("subject"), .init("priority"), .init("status"),
                               .init("response due"), .init("resolution due"), .init("breached")],
                overview.openCases.map {
                    [Device.text($0.id), $0.number, $0.subject, $0.priority, $0.status, $0.responseDue ?? "",
                     $0.resolutionDue ?? "", yesNo($0.slaBreached)]
                })
        return text
    }

    private static func optional(_ flag: Bool?) -> JSONValue { flag.map { .bool($0) } ?? .null }

    private static func yesNo(_ flag: Bool?) -> String { flag.map { $0 ? "yes" : "no" } ?? "" }

    // MARK: Record types

    /// What a field of `type` may hold, in words: its kind, then its rule (required, the
    /// allowed values, the format, the record type it refers to, the range), and whether the
    /// CRM's rules compute it.
    public static func allowedValues(of field: String, in type: RecordType) -> String {
        var parts: [String] = [type.fields[field].map { $0 == .counter ? "counter (change with +=N, -=N)" : $0.rawValue } ?? "?"]
        if let rule = type.rules[field] {
            if rule.required { parts.append("required") }
            if let choices = rule.choices { parts.append("one of " + choices.joined(separator: ", ")) }
            if let format = rule.format { parts.append(format.description) }
            if let reference = rule.reference { parts.append("id of \(Device.article(reference)) \(reference)") }
            switch (rule.minimum, rule.maximum) {
            case let (low?, high?): parts.append("\(number(low)) to \(number(high))")
            case let (low?, nil): parts.append("at least \(number(low))")
            case let (nil, high?): parts.append("at most \(number(high))")
            case (nil, nil): break
            }
        }
        if type.name == Opportunity.recordType && field == "stage" {
            parts.append("a stage of the tenant's pipeline (by default " + PipelineStage.defaultPipeline.map(\.name).joined(separator: ", ") + ")")
        }
        if CRMDerivedFields.fields(of: type.name).contains(field) { parts.append("computed by the CRM's rules") }
        return parts.joined(separator: "; ")
    }

    private static func number(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    /// `rapport types`: each type of `types`, then its fields with what they may hold, one per
    /// line, not cut to the terminal (help texts are read whole).
    public static func text(types: [RecordType]) -> String {
        types.map { type in
            let rows = type.fields.keys.sorted().map { ["  " + $0, allowedValues(of: $0, in: type)] }
            return type.name + "\n" + TextTable(columns: [.init("field", shrinkable: false), .init("values", shrinkable: false)],
                                                rows: rows, showsHeader: false).render(width: .max)
        }.joined(separator: "\n")
    }

    /// `rapport types --json`: `[{"type", "fields": [{"name", "kind", "required", "choices",
    /// "format", "reference", "minimum", "maximum", "computed", "allowed"}]}]`.
    public static func json(types: [RecordType]) -> JSONValue {
        .array(types.map { type in
            .object([
                "type": .string(type.name),
                "fields": .array(type.fields.keys.sorted().map { field in
                    let rule = type.rules[field]
                    return .object([
                        "name": .string(field),
                        "kind": .string(type.fields[field]?.rawValue ?? ""),
                        "required": .bool(rule?.required ?? false),
                        "choices": rule?.choices.map { .array($0.map { .string($0) }) } ?? .null,
                        "format": .optional(rule?.format?.rawValue),
                        "reference": .optional(rule?.reference),
                        "minimum": rule?.minimum.map { .number($0) } ?? .null,
                        "maximum": rule?.maximum.map { .number($0) } ?? .null,
                        "computed": .bool(CRMDerivedFields.fields(of: type.name).contains(field)),
                        "allowed": .string(allowedValues(of: field, in: type)),
                    ])
                }),
            ])
        })
    }
}
