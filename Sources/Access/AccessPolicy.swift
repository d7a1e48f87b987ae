import Foundation
import SyncModel

/// A write the writer's role does not allow, with the rule it breaks in words a person reads
/// ("reps may not change the owner of an account they do not own").
public struct AccessDenied: Error, Equatable, Sendable, CustomStringConvertible {
    public var record: UUID
    public var type: String
    public var reason: String

    /// A refusal of a write to the record `record` of `type`, for `reason`.
    public init(record: UUID, type: String, reason: String) {
        self.record = record
        self.type = type
        self.reason = reason
    }

    public var description: String { "\(type) \(record.uuidString.lowercased()): \(reason)" }
}

/// A subject's rights applied to records: the one check that the server runs on every pushed
/// record and a device runs on every local write, so an honest app hears a refusal at once and
/// a client that skips it is refused by the server with the same words.
public struct AccessPolicy: Sendable {
    public var model: OwnershipModel
    public var subject: AccessSubject

    public init(model: OwnershipModel, subject: AccessSubject) {
        self.model = model
        self.subject = subject
    }

    /// Looks a record up by id in the store the check runs against (deleted ones too).
    public typealias Lookup = (UUID) throws -> RecordState?

    /// How `state` stands to the subject: the closer of its owner and of the record it hangs
    /// off (followed up a few levels: an activity on an opportunity of an account).
    public func relation(of state: RecordState, lookup: Lookup) rethrows -> Relation {
        try relation(of: state, lookup: lookup, depth: 0)
    }

    private func relation(of state: RecordState, lookup: Lookup, depth: Int) rethrows -> Relation {
        var relation = subject.relation(toOwner: text(state, model.ownerField))
        guard relation != .own, depth < 4 else { return relation }
        if let id = parent(of: state), let parent = try lookup(id) {
            relation = max(relation, try self.relation(of: parent, lookup: lookup, depth: depth + 1))
        }
        return relation
    }

    /// The record `state` hangs off: the first of its parent references that is set.
    public func parent(of state: RecordState) -> UUID? {
        for field in model.parents[state.type] ?? [] {
            if let id = text(state, field).flatMap(UUID.init(text:)) { return id }
        }
        return nil
    }

    /// Whether the subject may read `state`.
    public func mayRead(_ state: RecordState, lookup: Lookup) rethrows -> Bool {
        let level = subject.role.rights(for: state.type).read
        if level == .all { return true }
        if level == .none { return false }
        return level.reaches(try relation(of: state, lookup: lookup))
    }

    /// Throws `AccessDenied` unless the subject may turn `before` (`nil`: the record is new)
    /// into `after`: create it, change the fields that differ, delete or restore it, give it
    /// another owner.
    public func checkWrite(before: RecordState?, after: RecordState, lookup: Lookup) throws {
        let rights = subject.role.rights(for: after.type)
        let role = subject.role.name + "s"
        let type = after.type
        func deny(_ reason: String) -> AccessDenied { AccessDenied(record: after.id, type: type, reason: reason) }

        let reachAfter = rights.write.reaches(try relation(of: after, lookup: lookup))
        let ownerChanged = before.map { $0.fields[model.ownerField] != after.fields[model.ownerField] } ?? false
        if let before {
            let reachBefore = rights.write.reaches(try relation(of: before, lookup: lookup))
            guard reachBefore else {
                if rights.write == .none { throw deny("\(role) may not change \(plural(type))") }
                if ownerChanged { throw deny("\(role) may not change the owner of \(article(type)) \(type) \(scopeWords(rights.write, negated: true))") }
                throw deny("\(role) may not change \(article(type)) \(type) \(scopeWords(rights.write, negated: true))")
            }
            if before.isDeleted != after.isDeleted {
                guard rights.delete.reaches(try relation(of: before, lookup: lookup)) else {
                    throw deny(rights.delete == .none ? "\(role) may not delete or restore \(plural(type))"
                                                      : "\(role) may not delete or restore \(article(type)) \(type) \(scopeWords(rights.delete, negated: true))")
                }
            }
            guard reachAfter else {
                throw deny("\(role) may not give \(article(type)) \(type) to an owner outside what they may change (\(scopeWords(rights.write, negated: false)))")
            }
        } else {
            guard rights.create else { throw deny("\(role) may not create \(plural(type))") }
            guard reachAfter else {
                throw deny("\(role) may create only \(plural(type)) \(scopeWords(rights.write, negated: false)): set \(model.ownerField) to yourself or attach it to a record you may change")
            }
        }
        for (name, field) in after.fields where before?.fields[name] != field {
            if rights.hiddenFields.contains(name) { throw deny("\(role) may not write the field \(name)") }
            if rights.readOnlyFields.contains(name) { throw deny("the field \(name) is read-only for \(role)") }
        }
    }

    private func text(_ state: RecordState, _ field: String) -> String? {
        if case .text(let value)? = state.fields[field]?.value { return value }
        return nil
    }

    private func scopeWords(_ level: AccessLevel, negated: Bool) -> String {
        switch (level, negated) {
        case (.own, true): "they do not own"
        case (.own, false): "they own"
        case (.team, true): "owned outside their team"
        case (.team, false): "owned within their team"
        case (.all, _), (.none, _): ""
        }
    }

    private func plural(_ type: String) -> String {
        type.hasSuffix("y") && !type.hasSuffix("ey") ? type.dropLast() + "ies" : type.hasSuffix("s") ? type + "es" : type + "s"
    }

    private func article(_ type: String) -> String {
        "aeiou".contains(type.first ?? "x") ? "an" : "a"
    }
}
