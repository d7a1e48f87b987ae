import Foundation
import SQLite
import SyncModel

/// How long a store keeps what only history needs (SPEC.md 1.8): the tombstones of deleted
/// records, and the conflict-log entries someone resolved or a later write superseded. Open
/// conflicts are kept for ever.
public struct RetentionPolicy: Sendable, Equatable, Codable {
    /// How long a tombstone stays after the deletion reached this store, in milliseconds.
    public var tombstoneHorizon: Int64
    /// How long a resolved or superseded conflict-log entry stays after it was closed, in milliseconds.
    public var conflictHorizon: Int64

    public static let day: Int64 = 86_400_000
    /// 90 days of tombstones, 30 days of closed conflicts.
    public static let standard = RetentionPolicy(tombstoneHorizon: 90 * day, conflictHorizon: 30 * day)

    /// The tenant settings that hold each horizon (`rapportctl tenant retention`).
    public static let tombstoneSetting = "tombstone_horizon"
    public static let conflictSetting = "conflict_horizon"

    public init(tombstoneHorizon: Int64, conflictHorizon: Int64) {
        self.tombstoneHorizon = tombstoneHorizon
        self.conflictHorizon = conflictHorizon
    }

    /// The policy a tenant's settings give, the standard one for what they leave out. A value
    /// that does not parse keeps the standard horizon: it was refused when it was set, so it can
    /// only come from an edit by hand, and keeping longer loses nothing.
    public init(settings: [String: String]) {
        self = .standard
        if let text = settings[Self.tombstoneSetting], let value = try? Self.duration(text) { tombstoneHorizon = value }
        if let text = settings[Self.conflictSetting], let value = try? Self.duration(text) { conflictHorizon = value }
    }

    /// Reads a duration with its unit, `90d`, `12h`, `30m`, `2s` or `500ms`, as milliseconds.
    ///
    /// - Throws: `RetentionError.badDuration` naming the text and what is expected.
    public static func duration(_ text: String) throws -> Int64 {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Int64)] = [("ms", 1), ("d", day), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)]
        for (unit, scale) in units where trimmed.hasSuffix(unit) {
            guard let number = Int64(trimmed.dropLast(unit.count)), number > 0 else { break }
            let (value, overflow) = number.multipliedReportingOverflow(by: scale)
            guard !overflow else { break }
            return value
        }
        throw RetentionError.badDuration(text)
    }

    /// A duration as `duration(_:)` reads it, in the largest unit that divides it.
    public static func text(_ milliseconds: Int64) -> String {
        for (unit, scale) in [("d", day), ("h", Int64(3_600_000)), ("m", Int64(60_000)), ("s", Int64(1_000))]
        where milliseconds >= scale && milliseconds % scale == 0 {
            return "\(milliseconds / scale)\(unit)"
        }
        return "\(milliseconds)ms"
    }
}

public enum RetentionError: Error, Sendable, Equatable, CustomStringConvertible {
    case badDuration(String)

    public var description: String {
        switch self {
        case .badDuration(let text):
            "'\(text.prefix(40))' is not a duration: a positive whole number with a unit, d, h, m, s or ms (90d, 2s)"
        }
    }
}

/// What one purge did, and where the store stands after it.
public struct PurgeReport: Sendable, Equatable, Codable {
    public var tombstonesPurged: Int
    public var conflictsPurged: Int
    /// The highest change sequence whose tombstone this store has purged, ever (`purgedThrough`).
    public var purgedThrough: Int64
    /// Tombstones kept (not yet past the horizon, or with a delete still to push).
    public var tombstonesLeft: Int
}

extension ReplicaStore {
    /// Local setting: the highest change sequence whose record this store removed without
    /// leaving a tombstone (decimal text). A peer whose checkpoint is below it may have missed
    /// a deletion, and resyncs (SPEC.md 1.8).
    static let purgedThroughSetting = "retention.purged_through"
    /// Local setting: the retention upstream announced (JSON), for a device's or a branch's own purges.
    static let upstreamRetentionSetting = "retention.upstream"
    /// Local setting: the peer a resync is under way with (text), until the resync ends.
    static let resyncPeerSetting = "retention.resync_peer"

    /// The highest change sequence of this store whose tombstone is gone (0 when none is).
    public var purgedThrough: Int64 {
        get throws { try localSetting(Self.purgedThroughSetting).flatMap { Int64(String(decoding: $0, as: UTF8.self)) } ?? 0 }
    }

    private func raisePurgedThrough(to sequence: Int64) throws {
        guard sequence > (try purgedThrough) else { return }
        try setLocalSetting(Self.purgedThroughSetting, Data(String(sequence).utf8))
    }

    /// The retention upstream last announced, or `nil` when it never did (a server that does not
    /// purge, or no session yet): a replica with an upstream purges by that.
    public var upstreamRetention: RetentionPolicy? {
        get throws { try localSetting(Self.upstreamRetentionSetting).flatMap { try? JSONDecoder().decode(RetentionPolicy.self, from: $0) } }
    }

    public func setUpstreamRetention(_ policy: RetentionPolicy?) throws {
        guard try upstreamRetention != policy else { return }
        try setLocalSetting(Self.upstreamRetentionSetting, try policy.map { try JSONEncoder().encode($0) })
        upstreamPurgesCache = policy != nil
    }

    /// Whether this store's upstream purges tombstones: then a state it sends may lack writes
    /// it once had (`integrate`).
    var upstreamPurges: Bool {
        get throws {
            if let cached = upstreamPurgesCache { return cached }
            let purges = try localSetting(Self.upstreamRetentionSetting) != nil
            upstreamPurgesCache = purges
            return purges
        }
    }

    /// The number of tombstones the store holds.
    public func tombstoneCount() throws -> Int {
        Int(try db.fetchInt("SELECT count(*) FROM records WHERE \(tenant.and)deleted = 1") ?? 0)
    }

    /// Removes the tombstones older than the policy's horizon and the conflict-log entries
    /// closed longer ago than its conflict horizon, in transactions of `chunk` rows, so the
    /// store's other writers (a server's sessions) interleave with it.
    ///
    /// A tombstone's age is the time since this store stored the deletion, read from marks the
    /// purge itself leaves (the sequence it finds, with the wall clock): a tombstone at or below
    /// a mark older than the horizon goes, so a tombstone is never purged early, and at most one
    /// purge interval late. A tombstone with a delete still to push (dirty) stays on a store that
    /// has an upstream to push it to. The highest
    /// sequence purged is kept as `purgedThrough`; a server answers pulls from below it with a
    /// resync. Open conflicts are never purged.
    ///
    /// The one purge of the project: the server's scheduled work, `rapportctl purge`, and a
    /// device or branch after each sync (with the retention upstream announced) all call it.
    @discardableResult
    public func purgeExpired(_ policy: RetentionPolicy, now: Int64? = nil, chunk: Int = 500,
                             isCancelled: () -> Bool = { false }) throws -> PurgeReport {
        let now = now ?? Int64(clamping: options.wallClock())
        let cutoff: Int64? = try write {
            // Marks closer together than a hundredth of the horizon add nothing but rows.
            let newest = try db.fetch("SELECT seq, at FROM sequence_marks\(tenant.only) ORDER BY seq DESC LIMIT 1") { (try $0.int64(0), try $0.int64(1)) }.first
            let sequence = try lastSequence
            if newest == nil || (newest!.0 < sequence && now - newest!.1 >= policy.tombstoneHorizon / 100) {
                try db.run("""
                    INSERT INTO sequence_marks (\(tenant.column)seq, at) VALUES (\(tenant.value)?, ?)
                    ON CONFLICT (\(tenant.column)seq) DO UPDATE SET at = excluded.at
                    """, [sequence, now])
            }
            let cutoff = try db.fetchInt("SELECT max(seq) FROM sequence_marks WHERE \(tenant.and)at <= ?", [now - policy.tombstoneHorizon])
            // Older marks say nothing the cutoff does not.
            if let cutoff { try db.run("DELETE FROM sequence_marks WHERE \(tenant.and)seq < ?", [cutoff]) }
            return cutoff
        }
        // A store that never synced with an upstream (a centre) has no one to push to: its own
        // deletes are as final as its devices', whatever their dirty flag says.
        let keepUnpushed = try hasUpstream
        var tombstones = 0
        if let cutoff {
            while !isCancelled() {
                let done = try write { () -> Int in
                    let rows = try db.fetch("""
                        SELECT seq, id FROM records WHERE \(tenant.and)deleted = 1 AND (dirty = 0 OR ? = 1) AND seq <= ? ORDER BY seq LIMIT ?
                        """, [keepUnpushed ? 0 : 1, cutoff, Int64(chunk)]) { (try $0.int64(0), try $0.data(1)) }
                    let peers = rows.isEmpty ? [] : try peersHoldingRecords()
                    forgetFoundRecords()
                    for (_, id) in rows {
                        try db.run("DELETE FROM records WHERE \(tenant.and)id = ?", [SQLValue.blob(id)])
                        // What a server noted of its peers about the record: it is gone for them too.
                        try forgetHeld(id, peers: peers)
                        try db.run("DELETE FROM pending_evictions WHERE \(tenant.and)id = ?", [SQLValue.blob(id)])
                    }
                    if let last = rows.last?.0 { try raisePurgedThrough(to: last) }
                    return rows.count
                }
                tombstones += done
                if done < chunk { break }
            }
        }
        var conflicts = 0
        while !isCancelled() {
            let done = try write { () -> Int in
                try db.run("""
                    DELETE FROM conflicts WHERE \(tenant.and)id IN (SELECT id FROM conflicts
                        WHERE \(tenant.and)status != 'open' AND coalesce(closed_at, detected_at) <= ? ORDER BY id LIMIT ?)
                    """, [now - policy.conflictHorizon, Int64(chunk)])
            }
            conflicts += done
            if done < chunk { break }
        }
        return PurgeReport(tombstonesPurged: tombstones, conflictsPurged: conflicts, purgedThrough: try purgedThrough,
                           tombstonesLeft: try tombstoneCount())
    }

    /// Whether this store pushes to an upstream (a device, a branch office): it relays, it has
    /// pulled from one, or a resync with one is under way.
    var hasUpstream: Bool {
        get throws {
            if relaysDownstream { return true }
            if try db.fetchInt("SELECT EXISTS (SELECT 1 FROM peer_checkpoints\(tenant.only))") == 1 { return true }
            return try resyncPeer() != nil
        }
    }

    /// Gives free pages back to the file system and empties the write-ahead log, a little at a
    /// time, beside the store's other writers (see `Database.compact`). `nil` for a store in a
    /// database shared by tenants (PostgreSQL), which the database's autovacuum keeps compact.
    public func compact(vacuum: Bool = false, isCancelled: () -> Bool = { false }) throws -> CompactionReport? {
        try sqliteFile?.compact(vacuum: vacuum, isCancelled: isCancelled)
    }

    /// The file's size and free room; `nil` for a store in a database shared by tenants, which
    /// has no file of its own.
    public func storageFigures() throws -> StorageFigures? { try sqliteFile?.storageFigures() }

    // MARK: Resync

    /// Whether a resync with `peer` is under way (begun, its pull from 0 not finished yet).
    public func resyncPeer() throws -> String? {
        try localSetting(Self.resyncPeerSetting).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Starts a resync with upstream `peer`, which purged past this store's checkpoint: in one
    /// transaction the checkpoint goes back to 0 and every record held now is noted as not seen
    /// again yet. Each batch of the pull from 0 then notes what it brought (`noteSeenInResync`)
    /// in its own transaction, and `finishResync` drops what was never brought. All of it is in
    /// the file, so a device killed half-way resumes the resync at its next sync.
    public func beginResync(with peer: String) throws {
        try write {
            try db.run("DELETE FROM peer_checkpoints WHERE \(tenant.and)peer = ?", [peer])
            try db.run("DELETE FROM resync_unseen\(tenant.only)")
            try db.run("INSERT INTO resync_unseen (\(tenant.column)id) SELECT \(tenant.value)id FROM records\(tenant.only)")
            try setLocalSetting(Self.resyncPeerSetting, Data(peer.utf8))
        }
    }

    /// Notes records a resync's pull brought (a no-op when no resync is under way); called in
    /// the transaction that applies them.
    public func noteSeenInResync(_ ids: [UUID]) throws {
        guard !ids.isEmpty, try resyncPeer() != nil else { return }
        try write {
            let statement = try db.statement("DELETE FROM resync_unseen WHERE \(tenant.and)id = ?")
            for id in ids {
                statement.reset()
                try statement.bind(uuid: id, at: 1)
                try statement.step()
            }
            statement.reset()
        }
    }

    /// Ends a resync once its pull from 0 is complete: drops, without tombstones, the records
    /// this store held at its start that upstream did not send again and that have no changes
    /// to push (upstream purged their deletion, or they left this replica's scope meanwhile);
    /// records with changes to push stay and go up with the next push. Returns how many were
    /// dropped. When it dropped any, the store takes a sequence number and counts everything up
    /// to it as purged, so that its own peers (a branch office's devices) resync too and drop
    /// them as well.
    @discardableResult
    public func finishResync() throws -> Int {
        try write {
            let ids = try db.fetch("""
                SELECT r.id FROM resync_unseen u JOIN records r ON \(tenant.and("r"))r.id = u.id WHERE \(tenant.and("u"))r.dirty = 0
                """) { row in try row.withBytes(0) { UUID(bytes: $0) } ?? UUID() }
            let peers = ids.isEmpty ? [] : try peersHoldingRecords()
            for id in ids {
                try purge(id)
                try forgetHeld(Data(id.bytes), peers: peers)
            }
            try db.run("DELETE FROM resync_unseen\(tenant.only)")
            try setLocalSetting(Self.resyncPeerSetting, nil)
            // Peers that pulled these records have checkpoints up to the sequence: a number above
            // it, which no record carries, tells every one of them to resync.
            if !ids.isEmpty { try raisePurgedThrough(to: takeSequenceNumber()) }
            return ids.count
        }
    }
}
