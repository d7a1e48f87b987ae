import Foundation
import SQLite
import SyncModel

// What a server keeps per downstream peer to give it only its scope (SPEC 2.9), and what a
// device keeps of the records upstream took out of its scope.
extension ReplicaStore {
    // MARK: Server side

    /// Whether `peer` was sent the record `id` and has not been told to drop it since.
    public func isHeld(_ id: UUID, by peer: String) throws -> Bool {
        let statement = try db.statement("SELECT 1 FROM peer_records WHERE \(tenant.and)peer = ? AND id = ?")
        statement.reset()
        defer { statement.reset() }
        try statement.bind(text: peer, at: 1)
        try statement.bind(uuid: id, at: 2)
        return try statement.step()
    }

    /// Every record `peer` holds, as far as this store sent them.
    public func heldRecords(by peer: String) throws -> [UUID] {
        try db.fetch("SELECT id FROM peer_records WHERE \(tenant.and)peer = ?", [peer]) { row in
            try row.withBytes(0) { UUID(bytes: $0) } ?? UUID()
        }
    }

    /// Notes that `peer` now holds (`held`) or no longer holds the records `ids`.
    public func noteHeld(_ ids: [UUID], by peer: String, held: Bool) throws {
        guard !ids.isEmpty else { return }
        try write {
            let statement = try db.statement(held ? "INSERT INTO peer_records (\(tenant.column)peer, id) VALUES (\(tenant.value)?, ?) ON CONFLICT DO NOTHING"
                                               : "DELETE FROM peer_records WHERE \(tenant.and)peer = ? AND id = ?")
            for id in ids {
                statement.reset()
                try statement.bind(text: peer, at: 1)
                try statement.bind(uuid: id, at: 2)
                try statement.step()
            }
            statement.reset()
        }
    }

    /// The peers this store noted records for, found by seeking the key's first column from one
    /// peer to the next (a loose index scan), not by reading every row: `peer_records` holds a
    /// row per record per device, and a tenant has few devices next to its records.
    func peersHoldingRecords() throws -> [String] {
        try db.fetch("""
            WITH RECURSIVE peers (peer) AS (
                SELECT min(peer) FROM peer_records\(tenant.only)
                UNION ALL
                SELECT (SELECT min(peer) FROM peer_records WHERE \(tenant.and)peer > peers.peer) FROM peers WHERE peers.peer IS NOT NULL
            ) SELECT peer FROM peers WHERE peer IS NOT NULL
            """) { try $0.string(0) }
    }

    /// `peer IN (?, ...) AND id = ?` on `peer_records`, with its values for record `id`: the
    /// rows of one record are found through the key (peer, id), peer by peer, where `id = ?`
    /// alone reads the whole table. `nil` when no peer holds anything.
    func heldRowsCondition(of id: Data, peers: [String]) -> (sql: String, values: [SQLValue])? {
        guard !peers.isEmpty else { return nil }
        let list = Array(repeating: "?", count: peers.count).joined(separator: ", ")
        return ("\(tenant.and)peer IN (\(list)) AND id = ?", peers.map { SQLValue.text($0) } + [.blob(id)])
    }

    /// Forgets that any of `peers` (`peersHoldingRecords()`) holds record `id`: it is gone.
    func forgetHeld(_ id: Data, peers: [String]) throws {
        guard let held = heldRowsCondition(of: id, peers: peers) else { return }
        try db.run("DELETE FROM peer_records WHERE \(held.sql)", held.values)
    }

    /// What the peer's scope was last computed for, as its caller wrote it; `nil` before the
    /// first time.
    public func scopeState(of peer: String) throws -> String? {
        try db.fetch("SELECT state FROM peer_scopes WHERE \(tenant.and)peer = ?", [peer]) { try $0.string(0) }.first
    }

    public func setScopeState(_ state: String, of peer: String) throws {
        _ = try write {
            try db.run("""
                INSERT INTO peer_scopes (\(tenant.column)peer, state) VALUES (\(tenant.value)?, ?)
                ON CONFLICT (\(tenant.column)peer) DO UPDATE SET state = excluded.state
                """, [peer, state])
        }
    }

    /// The evictions from upstream waiting for `peer` (see `evict`), removed from the queue: the
    /// caller sends them in the transaction it calls this in.
    public func takePeerEvictions(for peer: String) throws -> [(id: UUID, type: String, reason: String)] {
        try write {
            let queued = try db.fetch("SELECT id, type, reason FROM peer_evictions WHERE \(tenant.and)peer = ?", [peer]) { row in
                (id: try row.withBytes(0) { UUID(bytes: $0) } ?? UUID(), type: try row.string(1), reason: try row.string(2))
            }
            if !queued.isEmpty { try db.run("DELETE FROM peer_evictions WHERE \(tenant.and)peer = ?", [peer]) }
            return queued
        }
    }

    // MARK: Device side

    /// Takes records upstream said left this replica's scope out of the store: they still exist
    /// for others, so this is no delete and nothing of it is pushed. A record with changes not
    /// yet pushed stays until they have been pushed and answered (accepted, or refused and kept
    /// in the conflict log), then goes. Conflict log entries stay. Returns the records kept for now.
    @discardableResult
    ///
    /// A store that relays for downstream replicas (a branch office) passes the eviction on:
    /// each downstream peer that holds the record is told at its next pull (`takePeerEvictions`).
    public func evict(_ ids: [UUID], reason: String) throws -> [UUID] {
        try write {
            var kept: [UUID] = []
            let peers = relaysDownstream ? try peersHoldingRecords() : []
            for id in ids {
                guard let (stored, _) = try load(id, decodeState: false) else { continue }
                if let held = heldRowsCondition(of: Data(id.bytes), peers: peers) {
                    try db.run("""
                        INSERT INTO peer_evictions (\(tenant.column)peer, id, type, reason)
                        SELECT \(tenant.value)peer, id, ?, ? FROM peer_records WHERE \(held.sql)
                        ON CONFLICT (\(tenant.column)peer, id) DO UPDATE SET type = excluded.type, reason = excluded.reason
                        """, [SQLValue.text(stored.type), .text(reason)] + held.values)
                    try forgetHeld(Data(id.bytes), peers: peers)
                }
                if stored.isDirty {
                    try db.run("""
                        INSERT INTO pending_evictions (\(tenant.column)id, reason) VALUES (\(tenant.value)?, ?)
                        ON CONFLICT (\(tenant.column)id) DO UPDATE SET reason = excluded.reason
                        """, [SQLValue.blob(Data(id.bytes)), .text(reason)])
                    kept.append(id)
                } else {
                    try purge(id)
                }
            }
            return kept
        }
    }

    /// Records an eviction waits on (see `evict`).
    public func pendingEvictions() throws -> [UUID] {
        try db.fetch("SELECT id FROM pending_evictions\(tenant.only)") { row in try row.withBytes(0) { UUID(bytes: $0) } ?? UUID() }
    }

    /// Carries out the evictions whose records have nothing left to push; a record that came
    /// back into scope (upstream sent it again) is no longer waiting.
    public func settleEvictions(returned: [UUID] = []) throws {
        let pending = try pendingEvictions()
        guard !pending.isEmpty else { return }  // the common case: one read, nothing to do
        let back = Set(returned)
        for id in pending {
            if back.contains(id) {
                try db.run("DELETE FROM pending_evictions WHERE \(tenant.and)id = ?", [SQLValue.blob(Data(id.bytes))])
            } else if let (stored, _) = try load(id, decodeState: false), !stored.isDirty {
                try purge(id)
            }
        }
    }

    /// Removes a record's row, index entries and pending eviction, without a tombstone.
    func purge(_ id: UUID) throws {
        gatheredIndexWrites = nil  // a record a gather saw may be gone
        guard let (_, state) = try load(id, decodeState: true) else { return }
        if let state, !state.isDeleted {
            // A tombstone has no index entries: going from the state to one removes the record's.
            var gone = state
            gone.liveness.isDeleted = true
            try updateFieldIndex(gone, old: state)
        }
        try db.run("DELETE FROM records WHERE \(tenant.and)id = ?", [SQLValue.blob(Data(id.bytes))])
        forgetFoundRecords()
        try db.run("DELETE FROM pending_evictions WHERE \(tenant.and)id = ?", [SQLValue.blob(Data(id.bytes))])
    }
}

extension ReplicaStore {
    /// The live records of `type` whose indexed `field` holds one of `values`, with their
    /// sequence numbers: how a server finds a user's records by owner, and the records hanging
    /// off one by reference, at a cost in proportion to what it finds. `field` must be one of
    /// `Options.indexedFields`.
    public func indexedChanges(ofType type: String, where field: String, in values: [String]) throws -> [Change] {
        precondition(options.indexedFields.contains(field), "\(field) is not indexed in this store")
        return try withIndexSnapshot(of: type) { deferred in
            if deferred {  // a branch catching up from the start: its entries come at the end
                let wanted = Set(values)
                return try liveChanges(ofTypes: [type]).filter {
                    if case .text(let text)? = $0.state.fields[field]?.value { wanted.contains(text) } else { false }
                }
            }
            var found: [Change] = []
            let statement = try db.statement("""
                SELECT r.seq, r.id, r.type, r.vector, r.state FROM field_index f JOIN records r ON \(tenant.and("r"))r.id = f.id
                WHERE \(tenant.and("f"))f.type = ? AND f.field = ? AND f.value = ? AND r.deleted = 0
                """)
            for value in values {
                found += try statement.fetch([type, field, value]) { Change(sequence: try $0.int64(0), state: try decodeRow($0, from: 1)) }
            }
            return found
        }
    }

    /// The deleted records of the given types with their sequence numbers: a live record that
    /// hangs off one stands to a user through it as through a live one, and tombstones have no
    /// entries in the field index.
    public func deletedChanges(ofTypes types: Set<String>) throws -> [Change] {
        guard !types.isEmpty else { return [] }
        let list = types.sorted().map { "'\($0.replacingOccurrences(of: "'", with: "''"))'" }.joined(separator: ", ")
        return try db.fetch("SELECT seq, id, type, vector, state FROM records WHERE \(tenant.and)deleted = 1 AND type IN (\(list)) ORDER BY seq") {
            Change(sequence: try $0.int64(0), state: try decodeRow($0, from: 1))
        }
    }

    /// The live records of the given types with their sequence numbers, in one pass over the
    /// records: for the types a user reads all of.
    public func liveChanges(ofTypes types: Set<String>) throws -> [Change] {
        guard !types.isEmpty else { return [] }
        let list = types.sorted().map { "'\($0.replacingOccurrences(of: "'", with: "''"))'" }.joined(separator: ", ")
        return try db.fetch("SELECT seq, id, type, vector, state FROM records WHERE \(tenant.and)deleted = 0 AND type IN (\(list)) ORDER BY seq") {
            Change(sequence: try $0.int64(0), state: try decodeRow($0, from: 1))
        }
    }
}

extension ReplicaStore {
    /// A page of the live records of `type`: at most `limit` changed after `after`, in the order
    /// of their last change, so a listing resumes after the last record it was given.
    public func liveChanges(ofType type: String, after: Int64, limit: Int) throws -> [Change] {
        try db.fetchFirst(limit, of: "SELECT seq, id, type, vector, state FROM records WHERE \(tenant.and)seq > ? AND type = ? AND deleted = 0 ORDER BY seq",
                          [after, type]) {
            Change(sequence: try $0.int64(0), state: try decodeRow($0, from: 1))
        }
    }
}

extension ReplicaStore {
    /// The record `id` with the sequence number of its latest change.
    public func change(of id: UUID) throws -> Change? {
        guard let (stored, state) = try load(id, decodeState: true), let state else { return nil }
        return Change(sequence: stored.sequence, state: state)
    }
}

extension ReplicaStore {
    /// The id and type of every record, deleted ones included, without decoding any.
    public func recordIDs() throws -> [(id: UUID, type: String)] {
        try db.fetch("SELECT id, type FROM records\(tenant.only)") { row in (try row.withBytes(0) { UUID(bytes: $0) } ?? UUID(), try row.string(1)) }
    }
}
