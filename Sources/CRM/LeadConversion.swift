import Foundation
import ReplicaStore
import SyncModel

/// What converting a lead made, all linked to each other and written in one local transaction,
/// which syncs in one push batch and is applied atomically by the server.
public struct LeadConversion: Sendable, Hashable {
    /// The lead, now `converted`, pointing at the records below.
    public var lead: Lead
    public var account: Account
    public var contact: Contact
    public var opportunity: Opportunity?
}

extension CRMStore {
    /// Converts a qualified lead into a customer: an account (a new one named after the lead's
    /// company, or `existingAccount`), a contact at it with the lead's person details, and, when
    /// `opportunity` is given, that opportunity at the account, sourced from the lead. The lead
    /// is marked `converted` and points at all of them.
    ///
    /// - Throws: `ReplicaStoreError.recordNotFound` for a missing lead or account; an invalid
    ///   record error naming the lead's `status` when it was converted already. Nothing is
    ///   written unless everything is.
    @discardableResult
    public func convert(lead id: UUID, existingAccount: UUID? = nil, opportunity: Opportunity? = nil) throws -> LeadConversion {
        try store.transaction {
            guard var lead = try get(Lead.self, id) else { throw ReplicaStoreError.recordNotFound(id) }
            guard lead.status != "converted" else {
                throw ReplicaStoreError.invalidRecord(.invalidFieldValue(record: id.uuidString, field: "status", reason: "the lead is converted already"))
            }
            let account: Account
            if let existingAccount {
                guard let found = try get(Account.self, existingAccount) else { throw ReplicaStoreError.recordNotFound(existingAccount) }
                account = found
            } else {
                let person = [lead.firstName, lead.lastName].compactMap { $0 }.joined(separator: " ")
                var new = Account(name: lead.company.flatMap { $0.isEmpty ? nil : $0 } ?? person, owner: lead.owner)
                new.lifecycleStage = "prospect"
                new.phone = lead.phone
                account = try create(new)
            }
            var contact = Contact(firstName: lead.firstName, lastName: lead.lastName, account: account.id,
                                  email: lead.email, owner: lead.owner)
            contact.title = lead.title
            contact.phone = lead.phone
            contact = try create(contact)
            var deal: Opportunity?
            if var opportunity {
                opportunity.account = account.id
                opportunity.lead = lead.id
                opportunity.leadSource = opportunity.leadSource ?? lead.source
                opportunity.owner = opportunity.owner ?? lead.owner
                deal = try create(opportunity)
            }
            lead.status = "converted"
            lead.convertedAccount = account.id
            lead.convertedContact = contact.id
            lead.convertedOpportunity = deal?.id
            lead.convertedAt = timestamp()
            lead = try update(lead)
            return LeadConversion(lead: lead, account: account, contact: contact, opportunity: deal)
        }
    }

    /// Merges two records of one entity that stand for the same thing (duplicate accounts,
    /// contacts, leads): the survivor stays and takes the loser's values where it has none and
    /// its counters' totals; every record that referenced the loser (activities, opportunities,
    /// cases, campaign members, an account's contacts, child accounts, converted leads) is
    /// re-pointed at the survivor; the loser becomes a tombstone whose `merged_into` names the
    /// survivor, so a device that still refers to it can follow. One local transaction.
    ///
    /// - Returns: the survivor as it is after the merge.
    @discardableResult
    public func merge<E: CRMEntity>(_ type: E.Type, survivor: UUID, loser: UUID) throws -> E {
        try store.transaction {
            guard let recordType = store.schema.types[E.recordType], recordType.fields["merged_into"] != nil else {
                throw ReplicaStoreError.invalidRecord(.unknownRecordType("\(E.recordType) records cannot be merged"))
            }
            guard survivor != loser else {
                throw ReplicaStoreError.invalidRecord(.invalidFieldValue(record: loser.uuidString, field: "merged_into", reason: "a record cannot be merged into itself"))
            }
            guard let kept = try store.record(survivor), kept.type == E.recordType, !kept.isDeleted else { throw ReplicaStoreError.recordNotFound(survivor) }
            guard let gone = try store.record(loser), gone.type == E.recordType, !gone.isDeleted else { throw ReplicaStoreError.recordNotFound(loser) }

            // The survivor's blanks from the loser; unknown fields (newer versions) are left alone.
            var filled: [String: FieldValue] = [:]
            let known = try recordType.fields.keys.filter { recordType.fields[$0] != .counter } + customFields(of: E.self).keys
            for name in known where name != "merged_into" {
                let value = gone.fields[name]?.value ?? .null
                if value != .null, (kept.fields[name]?.value ?? .null) == .null { filled[name] = value }
            }
            if !filled.isEmpty { try store.update(survivor, filled) }
            for (name, kind) in recordType.fields where kind == .counter {
                if case .integer(let total)? = gone.fields[name]?.value, total != 0 {
                    try store.increment(survivor, field: name, by: total)
                }
            }

            // Every reference to the loser, in every type, found through the field index.
            let loserID = loser.uuidString
            for (typeName, referencing) in store.schema.types.sorted(by: { $0.key < $1.key }) {
                for (field, rule) in referencing.rules.sorted(by: { $0.key < $1.key })
                where rule.reference == E.recordType && field != "merged_into" {
                    for record in try store.records(ofType: typeName, where: field, equals: loserID) {
                        // The survivor referencing the loser (its parent, say) would point at itself.
                        let target: FieldValue = record.id == survivor ? .null : .text(survivor.uuidString)
                        try store.update(record.id, [field: target])
                    }
                }
            }

            try store.update(loser, ["merged_into": .text(survivor.uuidString)])
            try store.delete(loser)
            guard let merged = try get(E.self, survivor) else { throw ReplicaStoreError.recordNotFound(survivor) }
            return merged
        }
    }
}
