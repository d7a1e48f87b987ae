import Foundation
import ReplicaStore
import SyncModel

/// What one import wrote, kept so that it can be undone: the records it made (with what the
/// store's effects made from them) and the fields it filled in existing records, with the
/// values it wrote.
public struct ImportJournal: Sendable, Equatable, Codable {
    /// A field an import filled in a record that had no value for it.
    public struct Filled: Sendable, Equatable, Codable {
        public var record: UUID
        public var field: String
        public var value: Value
    }

    /// A field value in a form JSON keeps exactly.
    public struct Value: Sendable, Equatable, Codable {
        var bool: Bool?, integer: Int64?, real: Double?, text: String?

        init(_ value: FieldValue) {
            switch value {
            case .bool(let v): bool = v
            case .integer(let v): integer = v
            case .real(let v): real = v
            case .text(let v): text = v
            case .null, .blob: break
            }
        }

        var fieldValue: FieldValue {
            if let bool { return .bool(bool) }
            if let integer { return .integer(integer) }
            if let real { return .real(real) }
            if let text { return .text(text) }
            return .null
        }
    }

    public var id: String
    public var tenant: String
    /// What was imported, for a person reading the list (`salesforce export from DIR`).
    public var detail: String
    public var at: Date
    public var created: [UUID]
    public var filled: [Filled]
    public var undoneAt: Date?

    /// The live records of every type of `store`, to tell afterwards what an import made.
    public static func liveRecords(_ store: ReplicaStore) throws -> Set<UUID> {
        var ids = Set<UUID>()
        for type in store.schema.types.keys { try store.scan(type, fields: []) { id, _ in ids.insert(id) } }
        return ids
    }

    /// The journal of an import that just ran on `store`, which held `before` before it: the
    /// records made since by this store's own writes (the import and its effects; a device's
    /// record pushed meanwhile carries its own replica's writes and is left out), and the
    /// fields the reports' merges filled.
    public static func after(_ reports: [ImportReport], id: String, tenant: String, detail: String,
                             store: ReplicaStore, before: Set<UUID>) throws -> ImportJournal {
        var created: [UUID] = []
        for record in try liveRecords(store).subtracting(before).sorted(by: { $0.uuidString < $1.uuidString }) {
            guard let state = try store.record(record), Set(state.vector.entries.keys) == [store.replicaID] else { continue }
            created.append(record)
        }
        var filled: [Filled] = []
        for merge in reports.flatMap(\.merges) where !merge.filledFields.isEmpty {
            guard let state = try store.record(merge.record) else { continue }
            let values = state.values
            // The store's effects stamp a consent with its time (`consent_email_at`) when the
            // consent is first written: that field was empty before too, and goes with it.
            let stamps = merge.filledFields.map { $0 + "_at" }.filter {
                store.schema.types[state.type]?.fields[$0] != nil && !merge.filledFields.contains($0) && (values[$0] ?? .null) != .null
            }
            for field in merge.filledFields + stamps { filled.append(.init(record: merge.record, field: field, value: Value(values[field] ?? .null))) }
        }
        return ImportJournal(id: id, tenant: tenant, detail: detail, at: Date(), created: created, filled: filled)
    }

    /// What undoing an import did.
    public struct UndoReport: Sendable, Equatable, Codable {
        /// A filled field left as it is because it holds another value now.
        public struct Kept: Sendable, Equatable, Codable {
            public var record: UUID
            public var field: String
            public var reason: String
        }

        public var id: String
        public var deleted = 0
        /// Records the import made that were deleted already.
        public var alreadyDeleted = 0
        public var fieldsCleared = 0
        public var kept: [Kept] = []

        public var summary: String {
            "undid import \(id): deleted \(deleted) record(s) it made (\(alreadyDeleted) deleted already), "
                + "cleared \(fieldsCleared) field(s) it filled, kept \(kept.count) changed since"
        }
    }

    /// Reverts the import as local writes of `store`, which sync like any change: the records
    /// it made are deleted (tombstones, so `restore` can bring one back), and each field it
    /// filled is emptied again unless it holds another value now, which is kept and reported.
    /// Writes in transactions of `batchSize` so sessions beside it wait one chunk at most.
    public func undo(_ store: ReplicaStore, batchSize: Int = 500) throws -> UndoReport {
        var report = UndoReport(id: id)
        for chunk in stride(from: 0, to: filled.count, by: batchSize) {
            try store.transaction {
                for entry in filled[chunk..<min(chunk + batchSize, filled.count)] {
                    guard let state = try store.record(entry.record), !state.isDeleted else { continue }
                    let now = state.values[entry.field] ?? .null
                    guard now == entry.value.fieldValue else {
                        report.kept.append(.init(record: entry.record, field: entry.field, reason: "changed since the import to \(now)"))
                        continue
                    }
                    try store.update(entry.record, [entry.field: .null])
                    report.fieldsCleared += 1
                }
            }
        }
        for chunk in stride(from: 0, to: created.count, by: batchSize) {
            try store.transaction {
                for record in created[chunk..<min(chunk + batchSize, created.count)] {
                    guard let state = try store.record(record), !state.isDeleted else { report.alreadyDeleted += 1; continue }
                    try store.delete(record)
                    report.deleted += 1
                }
            }
        }
        return report
    }
}
