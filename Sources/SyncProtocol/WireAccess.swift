import Access

extension AccessSubject {
    /// The subject as `Welcome.access` carries it to the device.
    public var wire: Rapport_V1_Access {
        var access = Rapport_V1_Access()
        access.user = user
        access.team = team ?? ""
        access.role = role.name
        access.teamMembers = teamMembers.sorted()
        access.types = role.types.keys.sorted().map { type in
            let rights = role.types[type]!
            var wire = Rapport_V1_TypeRights()
            wire.type = type
            wire.read = rights.read.wire
            wire.write = rights.write.wire
            wire.create = rights.create
            wire.delete = rights.delete.wire
            wire.hiddenFields = rights.hiddenFields.sorted()
            wire.readOnlyFields = rights.readOnlyFields.sorted()
            return wire
        }
        return access
    }

    /// The subject a server described in `Welcome.access`; `nil` when it sent none (an older
    /// server, or one that applies no rights), in which case a device checks nothing itself.
    public init?(_ access: Rapport_V1_Access) {
        guard !access.user.isEmpty else { return nil }
        var types: [String: TypeRights] = [:]
        for rights in access.types {
            types[rights.type] = TypeRights(read: AccessLevel(rights.read), write: AccessLevel(rights.write), create: rights.create,
                                            delete: AccessLevel(rights.delete), hiddenFields: Set(rights.hiddenFields),
                                            readOnlyFields: Set(rights.readOnlyFields))
        }
        self.init(user: access.user, team: access.team.isEmpty ? nil : access.team,
                  role: Role(name: access.role, types: types), teamMembers: Set(access.teamMembers))
    }
}

extension AccessLevel {
    var wire: Rapport_V1_AccessLevel {
        switch self {
        case .none: .accessNone
        case .own: .accessOwn
        case .team: .accessTeam
        case .all: .accessAll
        }
    }

    /// An unknown level from a newer peer reaches nothing, the safe reading.
    init(_ wire: Rapport_V1_AccessLevel) {
        switch wire {
        case .accessOwn: self = .own
        case .accessTeam: self = .team
        case .accessAll: self = .all
        default: self = .none
        }
    }
}
