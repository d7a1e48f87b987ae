import Foundation
import SyncModel
import SyncProtocol

/// The frames of Protocol/vectors, built from fixed values. `GoldenVectorTests` writes them to
/// files (on request) and checks every file against them.
///
/// The record carried by `push` and `pull_batch` is `GoldenVectors.contact`; Protocol/vectors/
/// README.md describes it in words. Its `state` bytes are the *canonical* encoding (fields sorted
/// by name, counter contributions by replica), see `CanonicalRecordEncoding`.
enum GoldenVectors {
    static let names = [
        "hello", "enrolled", "welcome", "push", "push_result", "pull", "pull_batch",
        "changes_available", "ping", "pong", "goodbye", "error",
    ]

    // MARK: The record

    static let recordID = UUID(uuidString: "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D")!
    static let ana = try! ReplicaID("ana-laptop")
    static let ben = try! ReplicaID("ben-phone")
    /// 2025-06-15T15:06:40Z, in milliseconds.
    static let baseMilliseconds: UInt64 = 1_750_000_000_000

    static func time(_ offset: UInt64, _ logical: UInt64 = 0) -> HLCTimestamp {
        HLCTimestamp(wallMilliseconds: baseMilliseconds + offset, logical: logical)
    }

    static func dot(_ replica: ReplicaID, _ counter: UInt64) -> Dot {
        try! Dot(replica: replica, counter: counter)
    }

    static func register(_ value: FieldValue, _ dot: Dot, _ time: HLCTimestamp) -> FieldState {
        .register(RegisterState(value: value, dot: dot, timestamp: time))
    }

    /// A contact that ana-laptop created and edited, ben-phone edited and then deleted, while
    /// ana-laptop, not having seen the delete yet, changed `score` and `visits`.
    static let contact = RecordState(
        id: recordID,
        type: "contact",
        vector: try! VersionVector([ana: 7, ben: 4]),
        liveness: Liveness(isDeleted: true, dot: dot(ben, 4), timestamp: time(6_000, 1),
                           deletionContext: try! VersionVector([ana: 5, ben: 4])),
        fields: [
            "first_name": register(.text("Ada"), dot(ana, 1), time(1_000)),
            "last_name": register(.text("Lovelace"), dot(ana, 1), time(1_000)),
            "avatar": register(.blob(Data([0xde, 0xad, 0xbe, 0xef])), dot(ana, 2), time(2_000)),
            "do_not_call": register(.bool(true), dot(ben, 2), time(3_000)),
            "rating": register(.real(4.5), dot(ben, 3), time(4_000)),
            "phone": register(.null, dot(ana, 5), time(5_000)),
            "score": register(.integer(-42), dot(ana, 6), time(6_500)),
            "visits": .counter(CounterState(contributions: [
                ana: CounterContribution(added: 5, subtracted: 1, lastCounter: 7, lastTimestamp: time(7_000)),
                ben: CounterContribution(added: 2, subtracted: 0, lastCounter: 1, lastTimestamp: time(2_500)),
            ])),
        ])

    /// The contact as it travels, with the canonical state encoding.
    static var contactRecord: Rapport_V1_Record {
        var record = Rapport_V1_Record()
        record.id = Data(contact.id.bytes)
        record.type = contact.type
        record.vector = Data(RecordCodec.encode(contact.vector))
        record.state = Data(CanonicalRecordEncoding.state(contact))
        return record
    }

    // MARK: Conflict reports

    static func side(_ value: FieldValue?, _ dot: Dot, _ time: HLCTimestamp, deletion: Bool = false) -> Rapport_V1_ConflictSide {
        var side = Rapport_V1_ConflictSide()
        if let value { side.value = Data(RecordCodec.encode(value)) }
        side.replica = dot.replica.rawValue
        side.counter = dot.counter
        side.timestamp = time.rawValue
        side.deletion = deletion
        return side
    }

    static func conflict(_ kind: String, field: String, winner: Rapport_V1_ConflictSide, loser: Rapport_V1_ConflictSide,
                         record: UUID?, type: String) -> Rapport_V1_ConflictReport {
        var report = Rapport_V1_ConflictReport()
        report.kind = kind
        report.field = field
        report.winner = winner
        report.loser = loser
        if let record { report.recordID = Data(record.bytes) }
        report.recordType = type
        return report
    }

    /// ana-laptop set rating 4.0 (ana:4) concurrently with ben-phone's 4.5 (ben:3, later): ana lost.
    static let ratingConflict = conflict(
        "concurrent_update", field: "rating",
        winner: side(.real(4.5), dot(ben, 3), time(4_000)), loser: side(.real(4.0), dot(ana, 4), time(3_500)),
        record: recordID, type: "contact")

    /// ana-laptop's score write (ana:6) came after ben-phone's delete (ben:4) without seeing it.
    static let scoreConflict = conflict(
        "update_of_deleted", field: "score",
        winner: side(nil, dot(ben, 4), time(6_000, 1), deletion: true), loser: side(.integer(-42), dot(ana, 6), time(6_500)),
        record: recordID, type: "contact")

    // MARK: Frames

    static func frame(_ name: String) -> Rapport_V1_Frame {
        var frame = Rapport_V1_Frame()
        switch name {
        case "hello":
            var hello = Rapport_V1_Hello()
            hello.protocolVersion = 1
            hello.schemaVersion = 1
            hello.tenant = "acme"
            hello.deviceID = "ana-laptop"
            hello.secret = Data((1...16).map { UInt8($0) })
            hello.subscribe = true
            hello.client = "rapport/0.1"
            frame.hello = hello
        case "welcome":
            var welcome = Rapport_V1_Welcome()
            welcome.protocolVersion = 1
            welcome.schemaVersion = 1
            welcome.serverReplicaID = "server-1f0c"
            welcome.serverSequence = 1234
            var limits = Rapport_V1_Limits()
            limits.maxFrameBytes = 16 << 20
            limits.maxBatchRecords = 2000
            limits.idleTimeoutMs = 60_000
            welcome.limits = limits
            welcome.deviceNumber = 7
            frame.welcome = welcome
        case "enrolled":
            var enrolled = Rapport_V1_Enrolled()
            enrolled.deviceID = "ana-laptop"
            enrolled.secret = Data((1...32).map { UInt8($0) })
            enrolled.tenant = "acme"
            enrolled.user = "ana@acme.example"
            enrolled.deviceNumber = 7
            frame.enrolled = enrolled
        case "push":
            var push = Rapport_V1_PushRequest()
            push.batchID = 42
            push.records = [contactRecord]
            push.conflicts = [ratingConflict]
            frame.push = push
        case "push_result":
            var applied = Rapport_V1_RecordResult()
            applied.outcome = .applied
            var merged = Rapport_V1_RecordResult()
            merged.outcome = .merged
            var inResult = ratingConflict
            inResult.recordID = Data()   // may be empty inside a RecordResult
            inResult.recordType = ""
            merged.conflicts = [inResult]
            var rejected = Rapport_V1_RecordResult()
            rejected.outcome = .rejected
            rejected.reason = "invalid record: unknown record type 'ticket'"
            var result = Rapport_V1_PushResult()
            result.batchID = 42
            result.results = [applied, merged, rejected]
            result.serverSequence = 1240
            frame.pushResult = result
        case "pull":
            var pull = Rapport_V1_PullRequest()
            pull.after = 1234
            pull.limit = 500
            frame.pull = pull
        case "pull_batch":
            var batch = Rapport_V1_PullBatch()
            batch.records = [contactRecord]
            batch.lastSequence = 1240
            batch.remainingRecords = 3
            batch.remainingBytes = 912
            batch.conflicts = [scoreConflict]
            frame.pullBatch = batch
        case "changes_available":
            var notice = Rapport_V1_ChangesAvailable()
            notice.serverSequence = 1241
            frame.changesAvailable = notice
        case "ping":
            var ping = Rapport_V1_Ping()
            ping.nonce = 0x0123_4567_89ab_cdef
            frame.ping = ping
        case "pong":
            var pong = Rapport_V1_Pong()
            pong.nonce = 0x0123_4567_89ab_cdef
            frame.pong = pong
        case "goodbye":
            var goodbye = Rapport_V1_Goodbye()
            goodbye.reason = "sync complete"
            frame.goodbye = goodbye
        case "error":
            var error = Rapport_V1_Error()
            error.code = .serverBusy
            error.message = "too many sessions; try again later"
            error.retryable = true
            error.retryAfterMs = 1500
            frame.error = error
        default:
            preconditionFailure("no golden vector named \(name)")
        }
        return frame
    }
}

/// The record state encoding of RecordCodec (format 1), with one order for everything a
/// Dictionary holds: fields sorted by the UTF-8 bytes of their names, counter contributions by
/// replica position. RecordCodec decodes it; its own encoder emits the same bytes in whatever
/// order the dictionaries iterate, which Swift randomizes per process.
///
/// Layout (all integers unsigned LEB128 varints unless noted; a dot is replica-index, counter;
/// replica indexes are positions in the record's vector sorted by replica id):
///
///     u8 format = 1 | u8 deleted | dot liveness | ts | n, n × (index, counter) deletion context
///     | n fields, each: string name, then
///         u8 0 (register), value, dot, ts
///       | u8 1 (counter), n, n × (index, added, subtracted, last counter, last ts)
///     value: u8 tag: 0 null | 1 false | 2 true | 3 integer (zigzag varint)
///            | 4 real (8 bytes IEEE 754 little-endian) | 5 text (string) | 6 blob (n, bytes)
///     string: n, UTF-8 bytes
enum CanonicalRecordEncoding {
    static func state(_ state: RecordState) -> [UInt8] {
        let replicas = state.vector.sortedEntries.map(\.replica)
        func index(_ replica: ReplicaID) -> UInt64 { UInt64(replicas.firstIndex(of: replica)!) }
        var out: [UInt8] = [RecordCodec.formatVersion, state.liveness.isDeleted ? 1 : 0]
        func dot(_ dot: Dot) { varint(index(dot.replica), &out); varint(dot.counter, &out) }
        dot(state.liveness.dot)
        varint(state.liveness.timestamp.rawValue, &out)
        let context = state.liveness.deletionContext.sortedEntries
        varint(UInt64(context.count), &out)
        for (replica, counter) in context { varint(index(replica), &out); varint(counter, &out) }
        varint(UInt64(state.fields.count), &out)
        for (name, field) in state.fields.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            string(name, &out)
            switch field {
            case .register(let r):
                out.append(0)
                out += RecordCodec.encode(r.value)
                dot(r.dot)
                varint(r.timestamp.rawValue, &out)
            case .counter(let c):
                out.append(1)
                let contributions = c.contributions.sorted { index($0.key) < index($1.key) }
                varint(UInt64(contributions.count), &out)
                for (replica, contribution) in contributions {
                    varint(index(replica), &out)
                    varint(contribution.added, &out)
                    varint(contribution.subtracted, &out)
                    varint(contribution.lastCounter, &out)
                    varint(contribution.lastTimestamp.rawValue, &out)
                }
            }
        }
        return out
    }

    static func varint(_ value: UInt64, _ out: inout [UInt8]) {
        var v = value
        while v >= 0x80 { out.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    static func string(_ s: String, _ out: inout [UInt8]) {
        varint(UInt64(s.utf8.count), &out)
        out += s.utf8
    }
}
