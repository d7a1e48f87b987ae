import Foundation
import SQLite
import SyncModel

/// Where a logged conflict stands.
public enum ConflictStatus: String, Sendable, CaseIterable {
    /// Waiting for someone to decide.
    case open
    /// Someone chose a side or a new value.
    case resolved
    /// A later write to the same field (or the record's existence) replaced both sides.
    case superseded
}

/// How to settle a conflict. Every choice that changes data becomes an ordinary local write,
/// causally after both sides, so it wins everywhere it syncs to.
public enum ConflictResolution: Sendable, Hashable {
    /// Keep what the merged state holds. For a concurrent update the winning value is written
    /// again as a new write; for a deletion the record simply stays deleted.
    case keepWinner
    /// Take the losing side: its value, or, for a delete-versus-update, restore the record with it.
    case takeLoser
    /// Write this value instead (restoring the record when it was deleted).
    case value(FieldValue)

    var label: String {
        switch self {
        case .keepWinner: "keep_winner"
        case .takeLoser: "take_loser"
        case .value: "new_value"
        }
    }
}

/// One entry of the conflict log.
public struct ConflictEntry: Sendable, Hashable {
    public var id: Int64
    public var conflict: Conflict
    /// Wall-clock milliseconds when this replica found the conflict.
    public var detectedAt: UInt64
    public var status: ConflictStatus
    /// How it was resolved, for resolved entries.
    public var resolution: String?
    /// Why upstream refused the change, for `rejected` entries.
    public var reason: String?
}

extension ReplicaStore {
    /// Adds conflicts that another replica found (a server reporting on a push) to this log.
    ///
    /// - Returns: how many were new to this log.
    @discardableResult
    public func logConflicts(_ conflicts: [Conflict]) throws -> Int {
        guard !conflicts.isEmpty else { return 0 }
        return try write {
            var added = 0
            for conflict in conflicts {
                if try log(conflict) { added += 1 }
            }
            // The news may come with, or after, the write that settled it.
            for id in Set(conflicts.map(\.recordID)) {
                if let state = try record(id) { try supersedeConflicts(of: state) }
            }
            return added
        }
    }

    /// Upstream refused the record's pushed state: keep the change as a `rejected` conflict and
    /// stop pushing that state. The local value stays; editing the record again (or resolving
    /// with `takeLoser`) pushes it anew.
    ///
    /// - Parameter vector: the vector of the state that was refused.
    public func reject(_ id: UUID, upTo vector: VersionVector, reason: String) throws {
        try write {
            guard let (_, loaded) = try load(id, decodeState: true), let state = loaded else {
                throw ReplicaStoreError.recordNotFound(id)
            }
            let newest = state.fields.values.compactMap { field -> RegisterState? in
                if case .register(let r) = field { return r }
                return nil
            }.max { $0.timestamp < $1.timestamp }
            let side = ConflictSide(value: nil, dot: newest?.dot ?? state.liveness.dot,
                                    timestamp: newest?.timestamp ?? state.liveness.timestamp)
            try log(Conflict(kind: .rejected, recordID: id, recordType: state.type, field: nil, winner: side, loser: side),
                    reason: reason)
            try settle(id, upTo: vector)
        }
    }

    /// Stops pushing a refused state: the record is no longer dirty unless it changed since the
    /// state `vector` describes was sent.
    func settle(_ id: UUID, upTo vector: VersionVector) throws {
        guard let (stored, _) = try load(id, decodeState: false) else { return }
        if stored.isDirty && vector.covers(stored.vector) {
            try db.run("UPDATE records SET dirty = 0 WHERE \(tenant.and)seq = ?", [stored.sequence])
        }
    }

    /// Adds a conflict to the log. The same lost write found twice (arriving through two peers,
    /// or a batch applied again) is logged once: `false` when it was there already.
    ///
    /// Entries are numbered per store, one past the highest, as SQLite numbers rows: the number
    /// is what a user names an entry by, so a tenant's log reads the same on either database.
    /// Writers of a store queue for its header first (`write`), so two never take one number.
    @discardableResult
    func log(_ conflict: Conflict, reason: String? = nil) throws -> Bool {
        let statement = try db.statement("""
            INSERT INTO conflicts (\(tenant.column)id, record, type, field, kind,
                winner_value, winner_replica, winner_counter, winner_clock, winner_deleted,
                loser_value, loser_replica, loser_counter, loser_clock, loser_deleted, detected_at, reason)
            VALUES (\(tenant.value)(SELECT coalesce(max(id), 0) + 1 FROM conflicts\(tenant.only)), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT DO NOTHING
            """)
        statement.reset()
        try statement.bind(uuid: conflict.recordID, at: 1)
        try statement.bind(text: conflict.recordType, at: 2)
        try statement.bind(text: conflict.field ?? "", at: 3)
        try statement.bind(text: conflict.kind.rawValue, at: 4)
        var column: Int32 = 5
        for side in [conflict.winner, conflict.loser] {
            if let value = side.value {
                try statement.bind(bytes: RecordCodec.encode(value), at: column)
            } else {
                try statement.bind(.null, at: column)
            }
            try statement.bind(text: side.dot.replica.rawValue, at: column + 1)
            try statement.bind(integer: Int64(side.dot.counter), at: column + 2)
            try statement.bind(integer: side.timestamp.signedValue, at: column + 3)
            try statement.bind(integer: side.isDeletion ? 1 : 0, at: column + 4)
            column += 5
        }
        try statement.bind(integer: Int64(clamping: options.wallClock()), at: 15)
        try statement.bind((reason ?? conflict.reason).map { SQLValue.text($0) } ?? .null, at: 16)
        try statement.step()
        return statement.changedRows == 1
    }

    /// Marks open conflicts of `state` superseded once their subject (the field, or the record's
    /// existence) holds a write that is neither side: someone has moved on from both.
    func supersedeConflicts(of state: RecordState) throws {
        try closeSuperseded(try conflictsSuperseded(by: state))
    }

    /// The open conflicts of `state` that `supersedeConflicts(of:)` closes, found without
    /// writing: a local write learns whether it writes more than its row before it writes it.
    func conflictsSuperseded(by state: RecordState) throws -> [Int64] {
        let open = try entries(where: "record = ? AND status = 'open'", [uuidBytes(state.id)])
        var superseded: [Int64] = []
        for entry in open {
            let subject: Dot?
            switch entry.conflict.kind {
            case .concurrentUpdate:
                if case .register(let r)? = state.fields[entry.conflict.field ?? ""] { subject = r.dot } else { subject = nil }
            case .updateOfDeleted, .deleteVersusRestore:
                subject = state.liveness.dot
            case .rejected:
                subject = nil
            }
            guard let subject, subject != entry.conflict.winner.dot, subject != entry.conflict.loser.dot else { continue }
            superseded.append(entry.id)
        }
        return superseded
    }

    /// Closes the conflicts `conflictsSuperseded(by:)` found, as superseded.
    func closeSuperseded(_ conflicts: [Int64]) throws {
        for id in conflicts { try close(id, status: .superseded, resolution: nil) }
    }

    private func close(_ id: Int64, status: ConflictStatus, resolution: String?) throws {
        try db.run("UPDATE conflicts SET status = ?, resolution = ?, closed_at = ? WHERE \(tenant.and)id = ?",
                   [status.rawValue, resolution, Int64(clamping: options.wallClock()), id])
    }

    private func uuidBytes(_ id: UUID) -> Data { withUnsafeBytes(of: id.uuid) { Data($0) } }

    /// Conflicts in the log, oldest first; by default only the open ones.
    public func conflicts(status: ConflictStatus? = .open, record: UUID? = nil) throws -> [ConflictEntry] {
        var clauses: [String] = []
        var values: [any SQLBindable] = []
        if let status { clauses.append("status = ?"); values.append(status.rawValue) }
        if let record { clauses.append("record = ?"); values.append(uuidBytes(record)) }
        return try entries(where: clauses.isEmpty ? "TRUE" : clauses.joined(separator: " AND "), values)
    }

    /// Conflicts on `records` in which a write of `loser` lost: what to tell that replica when it
    /// pulls those records. Cheap when the log holds nothing about `loser`.
    public func conflicts(lostBy loser: String, on records: [UUID]) throws -> [Conflict] {
        guard try db.fetchInt("SELECT EXISTS (SELECT 1 FROM conflicts WHERE \(tenant.and)loser_replica = ?)", [loser]) == 1 else { return [] }
        var found: [Conflict] = []
        for record in records {
            found += try entries(where: "record = ? AND loser_replica = ?", [uuidBytes(record), loser]).map(\.conflict)
        }
        return found
    }

    /// Every conflict logged on `records`, whatever its status: what to pass upstream with them.
    public func conflicts(on records: [UUID]) throws -> [Conflict] {
        guard try db.fetchInt("SELECT EXISTS (SELECT 1 FROM conflicts\(tenant.only))") == 1 else { return [] }
        var found: [Conflict] = []
        for record in records { found += try entries(where: "record = ?", [uuidBytes(record)]).map(\.conflict) }
        return found
    }

    /// One conflict by its id.
    public func conflict(_ id: Int64) throws -> ConflictEntry? {
        try entries(where: "id = ?", [id]).first
    }

    private func entries(where clause: String, _ values: [any SQLBindable]) throws -> [ConflictEntry] {
        try db.fetch("""
            SELECT id, record, type, field, kind,
                winner_value, winner_replica, winner_counter, winner_clock, winner_deleted,
                loser_value, loser_replica, loser_counter, loser_clock, loser_deleted,
                detected_at, status, resolution, reason
            FROM conflicts WHERE \(tenant.and)\(clause) ORDER BY id
            """, values) { row in
            do {
                guard let record = try row.withBytes(1, { UUID(bytes: $0) }),
                      let kind = ConflictKind(rawValue: try row.string(4)),
                      let status = ConflictStatus(rawValue: try row.string(16)) else {
                    throw ModelError.malformedEncoding("conflict row \(try row.int64(0))")
                }
                func side(_ c: Int32) throws -> ConflictSide {
                    let value = row.isNull(c) ? nil : try row.withBytes(c) { try RecordCodec.decodeValue($0) }
                    let dot = try Dot(replica: try ReplicaID(row.string(c + 1)), counter: UInt64(max(0, row.int64(c + 2))))
                    return ConflictSide(value: value, dot: dot, timestamp: try HLCTimestamp(signed: row.int64(c + 3)), isDeletion: try row.int64(c + 4) != 0)
                }
                let field = try row.string(3)
                let conflict = Conflict(kind: kind, recordID: record, recordType: try row.string(2),
                                        field: field.isEmpty ? nil : field, winner: try side(5), loser: try side(10),
                                        reason: row.isNull(18) ? nil : try row.string(18))
                return ConflictEntry(id: try row.int64(0), conflict: conflict, detectedAt: UInt64(max(0, try row.int64(15))),
                                     status: status, resolution: row.isNull(17) ? nil : try row.string(17),
                                     reason: row.isNull(18) ? nil : try row.string(18))
            } catch {
                throw ReplicaStoreError.corrupt(path: path, reason: "conflict log: \(error)")
            }
        }
    }

    /// Settles an open conflict. Any data change is written as a new local write in the same
    /// transaction that closes the entry, so the two never disagree.
    @discardableResult
    public func resolve(_ id: Int64, _ resolution: ConflictResolution) throws -> RecordState {
        try write {
            guard let entry = try conflict(id) else { throw ReplicaStoreError.conflictNotFound(id) }
            guard entry.status == .open else { throw ReplicaStoreError.conflictClosed(id: id, status: entry.status.rawValue) }
            let conflict = entry.conflict
            guard var state = try record(conflict.recordID) else { throw ReplicaStoreError.recordNotFound(conflict.recordID) }
            let field = conflict.field ?? ""
            let fieldIsCounter = schema.types[state.type]?.fields[field] == .counter

            switch (conflict.kind, resolution) {
            case (.concurrentUpdate, _):
                guard !state.isDeleted else { throw ReplicaStoreError.recordDeleted(conflict.recordID) }
                let value: FieldValue?
                switch resolution {
                case .keepWinner: value = conflict.winner.value
                case .takeLoser: value = conflict.loser.value
                case .value(let v): value = v
                }
                state = try update(conflict.recordID, [field: value ?? .null])
            case (.updateOfDeleted, .keepWinner), (.deleteVersusRestore, .keepWinner):
                break
            case (.updateOfDeleted, .takeLoser), (.updateOfDeleted, .value):
                if state.isDeleted { state = try restore(conflict.recordID) }
                if case .value(let v) = resolution {
                    state = try update(conflict.recordID, [field: v])
                } else if !fieldIsCounter, let loser = conflict.loser.value,
                          case .register(let current)? = state.fields[field], current.dot != conflict.loser.dot {
                    state = try update(conflict.recordID, [field: loser])
                }
            case (.deleteVersusRestore, .takeLoser):
                if conflict.loser.isDeletion {
                    if !state.isDeleted { state = try delete(conflict.recordID) }
                } else if state.isDeleted {
                    state = try restore(conflict.recordID)
                }
            case (.deleteVersusRestore, .value):
                throw ReplicaStoreError.invalidResolution(id: id, reason: "a record's existence takes no value; keep the winner or take the loser")
            case (.rejected, .keepWinner):
                break
            case (.rejected, .takeLoser):
                // Push the same state again, for when the cause of the refusal has been fixed.
                try db.run("UPDATE records SET dirty = 1 WHERE \(tenant.and)id = ?", [Data(conflict.recordID.bytes)])
            case (.rejected, .value):
                throw ReplicaStoreError.invalidResolution(id: id, reason: "edit the record to correct a rejected change")
            }
            try close(id, status: .resolved, resolution: resolution.label)
            return state
        }
    }
}
