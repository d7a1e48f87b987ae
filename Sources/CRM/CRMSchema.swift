import SyncModel

/// The record types of the CRM, shared by the server and every device of a tenant.
///
/// Versioned: a replica refuses a peer whose schema is newer than its own (it could not validate
/// what the peer sends), and serves older peers, which keep and pass on fields they do not know.
public enum CRMSchema {
    /// Bumped whenever a type or a field is added.
    public static let version: UInt32 = 1

    /// The schema of this version.
    public static let current = Schema([
        RecordType(name: "account", fields: [
            "name": .text, "industry": .text, "size": .text, "region": .text, "address": .text,
            "phone": .text, "website": .text, "owner": .text, "parent": .text,
            "lifecycle_stage": .text, "tier": .text, "annual_revenue": .real,
            "loyalty_points": .counter,
        ]),
        RecordType(name: "contact", fields: [
            "first_name": .text, "last_name": .text, "title": .text, "department": .text,
            "email": .text, "phone": .text, "mobile": .text, "account": .text, "owner": .text,
            "birthday": .text, "preferred_channel": .text, "do_not_call": .boolean,
        ]),
        RecordType(name: "opportunity", fields: [
            "name": .text, "account": .text, "amount": .real, "currency": .text, "stage": .text,
            "probability": .integer, "expected_close": .text, "owner": .text, "next_step": .text,
        ]),
        RecordType(name: "activity", fields: [
            "kind": .text, "subject": .text, "due_at": .text, "duration_minutes": .integer,
            "status": .text, "account": .text, "contact": .text, "opportunity": .text, "owner": .text,
        ]),
    ])
}
