import Foundation
import SyncModel

/// How far a right reaches, measured by the record's owner (its `owner` field, a user's e-mail)
/// and what it hangs off (a contact's account): none, records the user owns, records of the
/// user's team, or every record of the tenant.
public enum AccessLevel: String, Codable, Sendable, CaseIterable, Comparable {
    case none, own, team, all

    public static func < (lhs: AccessLevel, rhs: AccessLevel) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Whether this level reaches a record standing in `relation` to the user.
    public func reaches(_ relation: Relation) -> Bool {
        switch self {
        case .none: false
        case .own: relation == .own
        case .team: relation >= .team
        case .all: true
        }
    }
}

/// How a record stands to a user: the closest of its owner and of what it hangs off.
public enum Relation: Int, Sendable, Comparable {
    /// Owned by someone outside the user's team, or by no one.
    case other
    /// Owned by someone of the user's team.
    case team
    /// Owned by the user.
    case own

    public static func < (lhs: Relation, rhs: Relation) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What a role may do with the records of one type.
public struct TypeRights: Codable, Sendable, Equatable {
    /// Which records the role sees.
    public var read: AccessLevel
    /// Which records the role may change (a record it may not read it may not change either).
    public var write: AccessLevel
    /// Whether the role may create records of the type (within its write level).
    public var create: Bool
    /// Which records the role may delete or restore.
    public var delete: AccessLevel
    /// Fields never sent to the role's devices and never written by it.
    public var hiddenFields: Set<String>
    /// Fields the role reads but may not write.
    public var readOnlyFields: Set<String>

    public init(read: AccessLevel, write: AccessLevel = .none, create: Bool = false, delete: AccessLevel = .none,
                hiddenFields: Set<String> = [], readOnlyFields: Set<String> = []) {
        self.read = read
        self.write = min(write, read)
        self.create = create
        self.delete = min(delete, self.write)
        self.hiddenFields = hiddenFields
        self.readOnlyFields = readOnlyFields
    }

    /// No access at all: what a role has for a type it does not name.
    public static let none = TypeRights(read: .none)

    enum CodingKeys: String, CodingKey {
        case read, write, create, delete
        case hiddenFields = "hidden_fields"
        case readOnlyFields = "read_only_fields"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(read: try container.decode(AccessLevel.self, forKey: .read),
                  write: try container.decodeIfPresent(AccessLevel.self, forKey: .write) ?? .none,
                  create: try container.decodeIfPresent(Bool.self, forKey: .create) ?? false,
                  delete: try container.decodeIfPresent(AccessLevel.self, forKey: .delete) ?? .none,
                  hiddenFields: try container.decodeIfPresent(Set<String>.self, forKey: .hiddenFields) ?? [],
                  readOnlyFields: try container.decodeIfPresent(Set<String>.self, forKey: .readOnlyFields) ?? [])
    }
}

/// A named set of rights per record type, held per tenant in the registry.
public struct Role: Codable, Sendable, Equatable {
    public var name: String
    /// Rights by record type; a type the role does not name is `TypeRights.none`.
    public var types: [String: TypeRights]

    public init(name: String, types: [String: TypeRights]) {
        self.name = name
        self.types = types
    }

    public func rights(for type: String) -> TypeRights { types[type] ?? .none }
}

/// The parts of a record type that rights are measured by: which field names its owner and
/// which reference fields it hangs off, in the order they are tried (an activity hangs off its
/// account, else its opportunity, else its contact). Domain modules describe their schema with it.
public struct OwnershipModel: Sendable {
    /// The field holding the owner's e-mail, in every type that has one.
    public var ownerField: String
    /// For each type, the reference fields whose target a record of it hangs off.
    public var parents: [String: [String]]

    public init(ownerField: String = "owner", parents: [String: [String]]) {
        self.ownerField = ownerField
        self.parents = parents
    }

    /// The fields a server indexes to find a user's records (by owner) and what hangs off a
    /// record (by reference) in proportion to what it finds.
    public var indexedFields: Set<String> { Set(parents.values.joined()).union([ownerField]) }
}

/// Who acts: a user with their team and role, as the registry knows them now.
public struct AccessSubject: Sendable, Equatable {
    /// The user's e-mail, lowercased as the registry keeps it.
    public var user: String
    public var team: String?
    public var role: Role
    /// The e-mails of the users of `team`, the user included.
    public var teamMembers: Set<String>

    public init(user: String, team: String?, role: Role, teamMembers: Set<String>) {
        self.user = user.lowercased()
        self.team = team
        self.role = role
        self.teamMembers = team == nil ? [self.user] : teamMembers.union([self.user])
    }

    /// How an owner's e-mail stands to this user.
    public func relation(toOwner owner: String?) -> Relation {
        guard let owner = owner?.lowercased(), !owner.isEmpty else { return .other }
        if owner == user { return .own }
        return teamMembers.contains(owner) ? .team : .other
    }
}

extension AccessSubject {
    /// One subject that reads at least what any of `subjects` reads: what a branch office that
    /// serves those users holds (SPEC.md 6.2), so that the scope code that serves one user
    /// serves a branch unchanged. Per type it takes the widest read level among them, with
    /// `own` widened to `team` over all their teams (a subject has one e-mail, and the users
    /// are several), and hides only the fields hidden from every one of them who reads the
    /// type. The branch may therefore hold records of the users' teammates that none of its
    /// users reads (their own-level types), never records outside their teams; its devices
    /// still receive exactly their own users' scopes. It may write nothing: a branch's relayed
    /// writes are checked against each device user's own rights.
    public static func readingUnion(of subjects: [AccessSubject], name: String) -> AccessSubject {
        var members = Set<String>()
        for subject in subjects { members.formUnion(subject.teamMembers) }
        var types: [String: TypeRights] = [:]
        for type in Set(subjects.flatMap { $0.role.types.keys }) {
            let readers = subjects.map { $0.role.rights(for: type) }.filter { $0.read != .none }
            guard var level = readers.map(\.read).max() else { continue }
            if level == .own { level = .team }
            let hidden = readers.dropFirst().reduce(readers[0].hiddenFields) { $0.intersection($1.hiddenFields) }
            types[type] = TypeRights(read: level, hiddenFields: hidden)
        }
        return AccessSubject(user: name, team: name, role: Role(name: "branch", types: types), teamMembers: members)
    }
}
