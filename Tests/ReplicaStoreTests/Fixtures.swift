import Foundation
import Postgres
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

/// Where one test's stores are: files in a temporary folder, or tenants of a new PostgreSQL
/// database of the test's own. A name is one replica's store; opening it again (a restart, a
/// second handle) reaches the same store.
final class StorePlace: Sendable {
    let backend: DatabaseBackend
    let dir: TemporaryDirectory
    let postgres: PostgresDatabase?

    init(_ backend: DatabaseBackend) throws {
        self.backend = backend
        dir = try TemporaryDirectory()
        postgres = backend == .postgres ? try PostgresServer.database() : nil
    }

    /// Opens the store `name` (a new connection each time on PostgreSQL, as another process or
    /// node would have).
    func open(_ name: String, options: ReplicaStore.Options) throws -> ReplicaStore {
        guard let postgres else { return try ReplicaStore(path: dir.path("\(name).sqlite"), options: options) }
        return try Self.open(tenant: Self.slug(name), in: postgres, options: options)
    }

    /// Opens tenant `slug`'s store in `database`, creating the store tables when they are missing.
    static func open(tenant slug: String, in database: PostgresDatabase, options: ReplicaStore.Options) throws -> ReplicaStore {
        let connection = try PostgresConnection(url: database.url)
        try connection.migrate("store", ReplicaStore.postgresMigrations)
        return try ReplicaStore(database: connection, tenant: slug, options: options)
    }

    /// A tenant id for a test's store name ("A", "device"): lower case, anything else a '-'.
    static func slug(_ name: String) -> String {
        String(name.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "-" })
    }
}

/// Opens the store `name` of `place`, as `openStore(_:_:)` opens a file.
func openStore(_ place: StorePlace, _ name: String, wallClock: (@Sendable () -> UInt64)? = nil) throws -> ReplicaStore {
    var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID(name))
    if let wallClock { options.wallClock = wallClock }
    return try place.open(name, options: options)
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
