import Foundation
import SQLite
import SyncModel

extension ReplicaStore {
    /// Calls `body` with the id and the values of `fields` of every live record of `type`, in
    /// change order, decoding nothing else: for reports that aggregate a few fields of many
    /// records (see `RecordCodec.Projection`).
    public func scan(_ type: String, fields: [String], _ body: (UUID, [FieldValue]) throws -> Void) throws {
        try scanWithSequence(type, fields: fields) { id, _, values in try body(id, values) }
    }

    /// `scan(_:fields:_:)` with the sequence number of each record's latest change, so that a
    /// caller writing back what it computed from the values can tell, by `change(of:)`, whether
    /// the record changed in between.
    public func scanWithSequence(_ type: String, fields: [String], _ body: (UUID, Int64, [FieldValue]) throws -> Void) throws {
        let projection = RecordCodec.Projection(fields)
        let statement = try db.statement("SELECT id, state, seq FROM records WHERE \(tenant.and)type = ? AND deleted = 0 ORDER BY seq")
        statement.reset()
        defer { statement.reset() }
        try statement.bind(text: type, at: 1)
        var values: [FieldValue] = []
        while try statement.step() {
            guard let id = try statement.withBytes(0, { UUID(bytes: $0) }) else {
                throw ReplicaStoreError.corrupt(path: path, reason: "a record id is not 16 bytes")
            }
            do {
                try statement.withBytes(1) { try projection.read($0, into: &values) }
            } catch let error as ModelError {
                throw ReplicaStoreError.corrupt(path: path, reason: "record \(id.uuidString): \(error)")
            }
            try body(id, statement.int64(2), values)
        }
    }
}
