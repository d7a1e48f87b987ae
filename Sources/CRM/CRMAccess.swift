import Access
import Foundation
import ReplicaStore

/// Rights over the CRM's records: what each record hangs off, and the roles a tenant starts
/// with, as a sales organisation would recognise them.
public enum CRMAccess {
    /// A contact, an opportunity, an order or a case hangs off its account; an activity off its account,
    /// else its opportunity, contact or case; a stage change off its opportunity; a campaign
    /// member off its contact or lead.
    public static let ownership = OwnershipModel(parents: [
        "contact": ["account"], "opportunity": ["account"], "order": ["account"], "case": ["account", "contact"],
        "activity": ["account", "opportunity", "contact", "case"], "stage_change": ["opportunity"],
        "campaign_member": ["contact", "lead"],
    ])

    /// The tenant configuration every device reads and only admins write.
    public static let configurationTypes: Set<String> = ["pipeline_stage", "custom_field", "setting"]

    /// The roles of a new tenant. A tenant may change them (`rapportctl role set`).
    public static let defaultRoles: [Role] = [
        Role(name: "admin", types: Dictionary(uniqueKeysWithValues: CRMSchema.current.types.keys.map {
            ($0, TypeRights(read: .all, write: .all, create: true, delete: .all))
        })),
        Role(name: "manager", types: rights(
            sales: TypeRights(read: .team, write: .team, create: true, delete: .team),
            campaign: TypeRights(read: .all))),
        Role(name: "rep", types: rights(
            sales: TypeRights(read: .team, write: .own, create: true, delete: .own),
            overrides: [
                "account": TypeRights(read: .team, write: .own, create: true, delete: .none, hiddenFields: ["annual_revenue"]),
                "opportunity": TypeRights(read: .team, write: .own, create: true, delete: .none),
                "order": TypeRights(read: .team, write: .own, create: true, delete: .none),
                "case": TypeRights(read: .team, write: .own, create: true, delete: .none),
                "lead": TypeRights(read: .own, write: .own, create: true, delete: .own),
                "activity": TypeRights(read: .own, write: .own, create: true, delete: .own),
            ],
            campaign: TypeRights(read: .all))),
    ]

    /// Every sales type with `sales`, campaigns with `campaign`, configuration read-only.
    private static func rights(sales: TypeRights, overrides: [String: TypeRights] = [:], campaign: TypeRights) -> [String: TypeRights] {
        var types: [String: TypeRights] = [:]
        for type in CRMSchema.current.types.keys {
            types[type] = configurationTypes.contains(type) ? TypeRights(read: .all) : overrides[type] ?? sales
        }
        types["campaign"] = campaign
        return types
    }
}
