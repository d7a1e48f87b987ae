/// The fields whose values the CRM's rules compute rather than a user types: written by the
/// tenant's server (and, for lifecycle, by any replica that records the win that moves it), and
/// refused from a user's write unless the tenant allows an override of that field
/// (`CRMSettings.overridable`), in which case the record lists the field in `overrides` and the
/// rules leave it alone.
public enum CRMDerivedFields {
    /// `type.field` of every computed field.
    public static let all: [String] = [
        "account.tier", "account.churn_risk", "account.value_segment", "account.renewal_due",
        "account.lifecycle_stage", "case.sla_breached",
    ]

    /// The computed fields of records of `type`, by name.
    public static func fields(of type: String) -> [String] {
        all.compactMap { $0.hasPrefix(type + ".") ? String($0.dropFirst(type.count + 1)) : nil }
    }

    /// The field names an `overrides` value lists (comma-separated).
    public static func overridden(_ value: String?) -> Set<String> {
        Set((value ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }

    /// `fields` as an `overrides` value: sorted, so every replica writes the same text.
    public static func overridesValue(_ fields: Set<String>) -> String {
        fields.sorted().joined(separator: ",")
    }
}
