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
        var values: [FieldValue] = []
        try forEachLiveState(of: type, read: { _, state in try projection.read(state, into: &values) }) { id, sequence in
            try body(id, sequence, values)
        }
    }

    /// Every live record of `type` in change order: `read` is given its id and encoded state
    /// (a `ModelError` from it is reported as the file's corruption), then `body` its id and
    /// sequence number.
    func forEachLiveState(of type: String, read: (UUID, UnsafeRawBufferPointer) throws -> Void,
                          _ body: (UUID, Int64) throws -> Void = { _, _ in }) throws {
        try Self.forEachLiveState(of: type, in: db, tenant: tenant, path: path, read: read, body)
    }

    /// `forEachLiveState(of:read:_:)` on connection `db` to the store at `path`: a connection
    /// beside the store's own reads a type while the store writes (`FieldIndexPrebuild`).
    static func forEachLiveState(of type: String, in db: any SQLDatabase, tenant: TenantRows, path: String,
                                 read: (UUID, UnsafeRawBufferPointer) throws -> Void,
                                 _ body: (UUID, Int64) throws -> Void = { _, _ in }) throws {
        let statement = try db.statement("SELECT id, state, seq FROM records WHERE \(tenant.and)type = ? AND deleted = 0 ORDER BY seq")
        statement.reset()
        defer { statement.reset() }
        try statement.bind(text: type, at: 1)
        while try statement.step() {
            guard let id = try statement.withBytes(0, { UUID(bytes: $0) }) else {
                throw ReplicaStoreError.corrupt(path: path, reason: "a record id is not 16 bytes")
            }
            do {
                try statement.withBytes(1) { try read(id, $0) }
            } catch let error as ModelError {
                throw ReplicaStoreError.corrupt(path: path, reason: "record \(id.uuidString): \(error)")
            }
            try body(id, try statement.int64(2))
        }
    }
}
