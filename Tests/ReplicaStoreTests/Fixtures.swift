import Foundation
import ReplicaStore
import SyncModel
import TestSupport

let testSchema = Schema([
    RecordType(name: "contact", fields: [
        "name": .text, "city": .text, "phone": .text, "note": .text,
        "age": .integer, "vip": .boolean, "points": .counter,
    ]),
    RecordType(name: "account", fields: ["name": .text]),
])

/// Opens a store in `dir` named after its replica id.
func openStore(_ dir: TemporaryDirectory, _ name: String, wallClock: (@Sendable () -> UInt64)? = nil) throws -> ReplicaStore {
    var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID(name))
    if let wallClock { options.wallClock = wallClock }
    return try ReplicaStore(path: dir.path("\(name).sqlite"), options: options)
}

/// Everything observable about a store's data: its records (deleted too), conflicts, dirty set and
/// change sequence. Two snapshots are equal when nothing changed.
struct StoreSnapshot: Equatable {
    var records: [RecordState]
    var conflicts: [ConflictEntry]
    var dirty: [UUID]
    var sequence: Int64

    init(_ store: ReplicaStore) throws {
        records = try store.changes(after: 0, limit: .max).map(\.state).sorted { $0.id.uuidString < $1.id.uuidString }
        conflicts = try store.conflicts(status: nil)
        dirty = try store.dirtyRecords().map(\.id).sorted { $0.uuidString < $1.uuidString }
        sequence = try store.lastSequence
    }
}
