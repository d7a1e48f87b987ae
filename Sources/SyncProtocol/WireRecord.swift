import Foundation
import SyncModel

extension Rapport_V1_Record {
    /// A record state as it travels: id and type in the clear, vector and state in the binary
    /// record encoding, which is also how replica stores keep them.
    public init(_ state: RecordState) {
        self.init()
        id = Data(state.id.bytes)
        type = state.type
        vector = Data(RecordCodec.encode(state.vector))
        self.state = Data(RecordCodec.encodeState(state))
    }

    /// The record state this message carries.
    ///
    /// - Throws: `ModelError` when any part is malformed; a peer's bad record never traps.
    public func decoded() throws -> RecordState {
        let recordID = id.withUnsafeBytes { UUID(bytes: $0) }
        guard let recordID else { throw ModelError.malformedEncoding("record id of \(id.count) bytes, expected 16") }
        guard !type.isEmpty, type.utf8.count <= 64 else { throw ModelError.unknownRecordType(String(type.prefix(64))) }
        let vector = try self.vector.withUnsafeBytes { bytes in try RecordCodec.decodeVector(bytes) }
        return try state.withUnsafeBytes { bytes in
            try RecordCodec.decodeState(id: recordID, type: type, vector: vector, bytes)
        }
    }
}

extension Rapport_V1_ConflictReport {
    /// A conflict the server found, to report to the device that pushed the record.
    public init(_ conflict: Conflict) {
        self.init()
        kind = conflict.kind.rawValue
        field = conflict.field ?? ""
        recordID = Data(conflict.recordID.bytes)
        recordType = conflict.recordType
        winner = Rapport_V1_ConflictSide(conflict.winner)
        loser = Rapport_V1_ConflictSide(conflict.loser)
        reason = conflict.reason ?? ""
    }

    /// The conflict, naming the record it carries itself.
    public func decoded() throws -> Conflict {
        guard let record = recordID.withUnsafeBytes({ UUID(bytes: $0) }), !recordType.isEmpty else {
            throw ModelError.malformedEncoding("conflict report without a record id and type")
        }
        return try decoded(record: record, type: recordType)
    }

    /// The conflict, for the device's own log.
    public func decoded(record: UUID, type: String) throws -> Conflict {
        guard let kind = ConflictKind(rawValue: kind) else { throw ModelError.malformedEncoding("unknown conflict kind '\(self.kind)'") }
        return Conflict(kind: kind, recordID: record, recordType: type, field: field.isEmpty ? nil : field,
                        winner: try winner.decoded(), loser: try loser.decoded(), reason: reason.isEmpty ? nil : String(reason.prefix(2000)))
    }
}

extension Rapport_V1_ConflictSide {
    init(_ side: ConflictSide) {
        self.init()
        if let value = side.value { self.value = Data(RecordCodec.encode(value)) }
        replica = side.dot.replica.rawValue
        counter = side.dot.counter
        timestamp = side.timestamp.rawValue
        deletion = side.isDeletion
    }

    func decoded() throws -> ConflictSide {
        let value: FieldValue? = self.value.isEmpty ? nil : try self.value.withUnsafeBytes { bytes in
            try RecordCodec.decodeValue(bytes)
        }
        guard timestamp <= UInt64(Int64.max) else { throw ModelError.malformedEncoding("conflict timestamp out of range") }
        return ConflictSide(value: value, dot: try Dot(replica: try ReplicaID(replica), counter: counter),
                            timestamp: HLCTimestamp(rawValue: timestamp), isDeletion: deletion)
    }
}
