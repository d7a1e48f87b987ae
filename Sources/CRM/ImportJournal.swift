import Foundation
import PrivateFiles
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
        /// What the import wrote; `nil` for a moment the store's effects stamped beside it
        /// (`consent_email_at`), emptied with its field.
        public var value: Value?
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
    /// When the import ended; `nil` while it runs or when it was killed: a re-run of the same
    /// import then carries on this journal.
    public var finishedAt: Date?
    /// The store's clock after the import's last committed batch: a record it made that was
    /// written after that was changed by someone since.
    public var lastStamp: UInt64?
    /// The store's change sequence after the import's last committed batch: a record it made
    /// whose change is later was written by someone since. `nil` when a batch of the journal
    /// was written by a version that did not note it.
    public var lastSequence: Int64?
    /// The store's clock when the undo of the import ended: a record the import made that is
    /// deleted, and was written no later, was deleted by the undo and touched by no one since.
    public var undoStamp: UInt64?

    public init(id: String, tenant: String, detail: String, at: Date = Date(), created: [UUID] = [], filled: [Filled] = []) {
        self.id = id
        self.tenant = tenant
        self.detail = detail
        self.at = at
        self.created = created
        self.filled = filled
    }

    /// What undoing an import did.
    public struct UndoReport: Sendable, Equatable, Codable {
        /// A filled field left as it is because it holds another value now.
        public struct Kept: Sendable, Equatable, Codable {
            public var record: UUID
            /// The field kept, `nil` for a record the import made that was changed or referenced since.
            public var field: String?
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
                + "cleared \(fieldsCleared) field(s) it filled, kept \(kept.filter { $0.field == nil }.count) record(s) "
                + "changed or referenced since and \(kept.filter { $0.field != nil }.count) field(s) changed since"
        }
    }

    /// Reverts the import as local writes of `store`, which sync like any change: the records
    /// it made are deleted (tombstones, so `restore` can bring one back) unless someone changed
    /// them since (kept and reported: deleting would lose their work) or a record that stays
    /// references them (kept and reported: it would point at a deleted record), and each field it filled
    /// is emptied again unless it holds another value now, which is kept and reported. A record
    /// the journal names that the store never got (the batch of a killed run that did not
    /// commit) is passed over. Writes in transactions of `batchSize` so sessions beside it wait
    /// one chunk at most.
    public func undo(_ store: ReplicaStore, batchSize: Int = 500) throws -> UndoReport {
        var report = UndoReport(id: id)
        // Fields emptied with the one they were stamped for.
        var cleared = Set<String>()
        // A field filled in a record the import made goes with the record (an account's parent,
        // filled once its file was in); emptying it first would look like a change since.
        let made = Set(created)
        let stamped = filled.filter { $0.value == nil && !made.contains($0.record) }
        let written = filled.filter { $0.value != nil && !made.contains($0.record) }
        for chunk in stride(from: 0, to: written.count, by: batchSize) {
            try store.transaction {
                for entry in written[chunk..<min(chunk + batchSize, written.count)] {
                    guard let state = try store.record(entry.record), !state.isDeleted, let value = entry.value else { continue }
                    let now = state.values[entry.field] ?? .null
                    // Never written: the batch that would have filled it did not commit.
                    if now == .null { continue }
                    guard now == value.fieldValue else {
                        report.kept.append(.init(record: entry.record, field: entry.field, reason: "changed since the import to \(now)"))
                        continue
                    }
                    try store.update(entry.record, [entry.field: .null])
                    cleared.insert("\(entry.record)/\(entry.field)")
                    report.fieldsCleared += 1
                }
                for entry in stamped where cleared.contains("\(entry.record)/\(entry.field.dropLast(3))") {
                    guard let state = try store.record(entry.record), (state.values[entry.field] ?? .null) != .null else { continue }
                    try store.update(entry.record, [entry.field: .null])
                    report.fieldsCleared += 1
                }
            }
        }
        // The records it made go unless someone changed them since, or a record that stays
        // references them: a contact a rep added to an imported account, another import's
        // opportunities on it, or a record of this import that is kept. Deleting those would
        // leave the records that stay pointing at a tombstone.
        let stamp = lastStamp.map(HLCTimestamp.init(rawValue:))
        func changedSince(_ state: RecordState) -> String? {
            let elsewhere = state.vector.entries.keys.contains { $0 != store.replicaID }
            guard elsewhere || stamp.map({ state.latestTimestamp > $0 }) == true else { return nil }
            return "\(state.type) changed since the import\(elsewhere ? " on a device" : ""); left as it is"
        }
        var referrals = Referrals(made: made, schema: store.schema)
        // Anything written from here on is looked at again before each chunk of deletes.
        var seen = try store.lastSequence
        if let lastSequence {
            // Those written since the import (changed, deleted) are the changes after its last:
            // the others need not be read one by one.
            var since = Set<UUID>()
            var after = lastSequence
            while true {
                let changes = try store.encodedChanges(after: after, limit: 10_000)
                guard let last = changes.last else { break }
                for change in changes where made.contains(change.record.id) { since.insert(change.record.id) }
                after = last.sequence
            }
            referrals.candidates = made.subtracting(since)
        } else {
            for record in created {
                guard let state = try store.record(record), !state.isDeleted, changedSince(state) == nil else { continue }
                referrals.candidates.insert(record)
            }
        }
        try referrals.find(in: store)
        var gone = Set<UUID>()
        for chunk in stride(from: 0, to: created.count, by: batchSize) {
            try store.transaction {
                // What was written since the search, by a session beside the undo: a record
                // that now references one of those still here keeps it too.
                for change in try store.changes(after: seen, limit: Int.max) where !change.state.isDeleted {
                    referrals.note(change.state, except: gone)
                }
                for record in created[chunk..<min(chunk + batchSize, created.count)] {
                    guard let state = try store.record(record) else { continue }
                    guard !state.isDeleted else { report.alreadyDeleted += 1; continue }
                    if let reason = changedSince(state) ?? referrals.kept[record].map({ "\(state.type) \($0)" }) {
                        report.kept.append(.init(record: record, field: nil, reason: reason))
                        continue
                    }
                    try store.delete(record)
                    gone.insert(record)
                    report.deleted += 1
                }
                // The effects of these deletes are the undo's own writes, not someone's since.
                try store.settleEffects()
                seen = try store.lastSequence
            }
        }
        return report
    }

    /// Which of the records an undo would delete something that stays references, found by
    /// reading the reference fields of every live record once.
    struct Referrals {
        /// Every record the import made: those of them that stay are kept by the undo.
        let made: Set<UUID>
        /// The records the undo would delete: made by the import, unchanged since.
        var candidates: Set<UUID> = []
        /// For each candidate, the candidates its reference fields name: what must stay if it does.
        private var references: [UUID: [UUID]] = [:]
        /// The types of the candidates that reference others, as the search read them.
        private var types: [UUID: String] = [:]
        /// The candidates that stay, with why (after the record's type: "referenced by ...").
        private(set) var kept: [UUID: String] = [:]
        /// The reference fields of each type that has any.
        private let referenceFields: [String: [String]]

        init(made: Set<UUID>, schema: Schema) {
            self.made = made
            referenceFields = schema.types.compactMapValues { type in
                let fields = type.rules.filter { $0.value.reference != nil }.keys.sorted()
                return fields.isEmpty ? nil : fields
            }
        }

        /// Reads every live record's reference fields: a candidate named by a record that is no
        /// candidate stays, and so does what a staying record names, up the chain.
        mutating func find(in store: ReplicaStore) throws {
            guard !candidates.isEmpty else { return }
            var referred: [(target: UUID, by: UUID, type: String)] = []
            for (type, fields) in referenceFields.sorted(by: { $0.key < $1.key }) {
                try store.scan(type, fields: fields) { id, values in
                    for value in values {
                        guard case .text(let text) = value, let target = UUID(text: text), target != id, candidates.contains(target) else { continue }
                        if candidates.contains(id) {
                            references[id, default: []].append(target)
                            types[id] = type
                        } else {
                            referred.append((target, id, type))
                        }
                    }
                }
            }
            for (target, by, type) in referred { keep(target, referencedBy: by, type: type, except: []) }
        }

        /// Keeps what `state`, written since the candidates were chosen, references among those
        /// not in `gone`. A candidate written since stays itself (changed since the import).
        mutating func note(_ state: RecordState, except gone: Set<UUID>) {
            for field in referenceFields[state.type] ?? [] {
                guard case .text(let text)? = state.fields[field]?.value, let target = UUID(text: text), target != state.id,
                      candidates.contains(target) else { continue }
                keep(target, referencedBy: state.id, type: state.type, except: gone)
            }
        }

        private mutating func keep(_ target: UUID, referencedBy referrer: UUID, type: String, except gone: Set<UUID>) {
            var work = [(target, referrer, type)]
            while let (record, by, byType) = work.popLast() {
                guard kept[record] == nil, !gone.contains(record), candidates.contains(record) else { continue }
                let why = made.contains(by) ? "which the undo keeps" : "written since the import"
                kept[record] = "referenced by \(byType) \(by.text(lowercased: true)), \(why); left as it is"
                for parent in references[record] ?? [] { work.append((parent, record, types[record] ?? "record")) }
            }
        }
    }

    /// The folder of a data directory that holds the journals.
    public static func folder(in dataDirectory: String) -> String { dataDirectory + "/imports" }

    /// The records the undone imports of a tenant deleted, so that importing the same rows
    /// again brings them back: undoing an import to run it again with another mapping or
    /// `--users` is the way to correct one. A record deleted since by a person stays deleted.
    public struct UndoneRecords: Sendable {
        private struct Entry {
            var high: UInt64, low: UInt64, stamp: UInt64
        }
        /// Sorted by id (24 bytes a record, found by halving: an import of a million rows).
        private let entries: [Entry]

        private init(entries: [Entry]) { self.entries = entries }

        /// Whether any undone import of the tenant made records.
        public var isEmpty: Bool { entries.isEmpty }

        private static func key(_ id: UUID) -> (UInt64, UInt64) {
            withUnsafeBytes(of: id.uuid) { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        }

        /// Reads the journals of the tenant's undone imports in a data directory.
        public static func load(tenant: String, in dataDirectory: String) throws -> UndoneRecords {
            let folder = ImportJournal.folder(in: dataDirectory)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            var entries: [Entry] = []
            for name in names.sorted() where name.hasSuffix(".json") {
                let id = String(name.dropLast(5))
                guard let data = FileManager.default.contents(atPath: folder + "/" + name),
                      let header = try? decoder.decode(ImportJournal.self, from: data),
                      header.tenant == tenant, let undoneAt = header.undoneAt else { continue }
                // An undo of an earlier version noted only the wall clock's time when it ended,
                // which the journal keeps to the second: its last deletes may be up to one later.
                let stamp = header.undoStamp ?? HLCTimestamp(wallMilliseconds: UInt64(max(0, (undoneAt.timeIntervalSince1970 + 1) * 1000)),
                                                             logical: HLCTimestamp.maxLogical).rawValue
                for record in try ImportJournal.load(id, in: dataDirectory).created {
                    let (high, low) = key(record)
                    entries.append(Entry(high: high, low: low, stamp: stamp))
                }
            }
            // One entry a record: made by several imports undone, the latest undo counts.
            entries.sort { ($0.high, $0.low, $0.stamp) < ($1.high, $1.low, $1.stamp) }
            var unique: [Entry] = []
            unique.reserveCapacity(entries.count)
            for entry in entries {
                if let last = unique.last, last.high == entry.high, last.low == entry.low {
                    unique[unique.count - 1] = entry
                } else {
                    unique.append(entry)
                }
            }
            return UndoneRecords(entries: unique)
        }

        /// Whether `state` is a record an undo deleted that no one has written since.
        public func deletedByUndo(_ state: RecordState) -> Bool {
            guard state.isDeleted, !entries.isEmpty else { return false }
            let (high, low) = Self.key(state.id)
            var range = entries.startIndex..<entries.endIndex
            while !range.isEmpty {
                let middle = range.lowerBound + range.count / 2
                let entry = entries[middle]
                if (entry.high, entry.low) < (high, low) { range = middle + 1..<range.upperBound }
                else if (entry.high, entry.low) > (high, low) { range = range.lowerBound..<middle }
                else { return state.latestTimestamp.rawValue <= entry.stamp }
            }
            return false
        }
    }

    /// Reads the journal `id` of a data directory, with what its runs wrote batch by batch.
    ///
    /// - Throws: `CRMError.invalidMapping` when it is not there or cannot be read.
    public static func load(_ id: String, in dataDirectory: String) throws -> ImportJournal {
        let path = folder(in: dataDirectory) + "/" + id
        guard let data = FileManager.default.contents(atPath: path + ".json") else { throw CRMError.invalidMapping("no import \(id)") }
        var journal = try decoder.decode(ImportJournal.self, from: data)
        if let entries = FileManager.default.contents(atPath: path + ".jsonl") {
            var seen = Set(journal.created)
            var sequences: [Int64?] = []
            for line in entries.split(separator: UInt8(ascii: "\n")) {
                // The last line of a killed run may be cut short; its batch never committed.
                guard let batch = try? decoder.decode(Writer.Batch.self, from: line) else { continue }
                for id in batch.created where seen.insert(id).inserted { journal.created.append(id) }
                journal.filled += batch.filled
                journal.lastStamp = max(journal.lastStamp ?? 0, batch.stamp)
                sequences.append(batch.sequence)
            }
            journal.lastSequence = sequences.contains(nil) ? nil : sequences.compactMap { $0 }.max()
        }
        return journal
    }

    /// Writes the journal's header (the lists of what it did stay in the batch lines).
    public func save(in dataDirectory: String) throws {
        try PrivateFiles.createDirectory(Self.folder(in: dataDirectory))
        var header = self
        header.created = []
        header.filled = []
        try PrivateFiles.write(Self.encoder.encode(header), to: Self.folder(in: dataDirectory) + "/" + id + ".json")
    }

    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    /// The journal of an import while it runs. Each batch of the import appends what it made
    /// and filled before its transaction commits, so a run killed at any point leaves a
    /// journal that names everything it committed (and perhaps a batch it did not, which undo
    /// passes over): `rapportctl import undo` works for it, and a re-run carries it on.
    ///
    /// Lines are appended to an owner-only file and synced; the header, with the import's id,
    /// is written before the first write of the import.
    public final class Writer: Sendable {
        /// One committed batch, one line of the journal.
        struct Batch: Decodable {
            var created: [UUID]
            var filled: [Filled]
            /// The store's clock at the end of the batch.
            var stamp: UInt64
            /// The store's change sequence at the end of the batch; `nil` in lines of earlier versions.
            var sequence: Int64?

            /// The batch's line of the journal, written by hand for the ids: a batch line names
            /// every record the batch made, and `JSONEncoder` took a fiftieth of a large
            /// import's time to write them. Hex and dashes need no escaping.
            func line() throws -> Data {
                var line = Data("{\"created\":[".utf8)
                line.reserveCapacity(created.count * 39 + 96)
                for (index, id) in created.enumerated() {
                    line.append(contentsOf: (index == 0 ? "\"" : ",\"").utf8)
                    line.append(contentsOf: id.text().utf8)
                    line.append(UInt8(ascii: "\""))
                }
                line.append(contentsOf: "],\"filled\":".utf8)
                line.append(filled.isEmpty ? Data("[]".utf8) : try ImportJournal.encoder.encode(filled))
                line.append(contentsOf: ",\"stamp\":\(stamp)".utf8)
                if let sequence { line.append(contentsOf: ",\"sequence\":\(sequence)".utf8) }
                line.append(contentsOf: "}\n".utf8)
                return line
            }
        }

        /// Where the store stood when a batch began, to tell what it made.
        public struct Mark: Sendable {
            var sequence: Int64
            var timestamp: HLCTimestamp
        }

        public let id: String
        /// Whether this run carries on the journal of a run that was killed.
        public let resumed: Bool
        let dataDirectory: String
        // FileHandle is safe to share: each append is one write call, and the importer writes
        // from one thread.
        let handle: FileHandle

        /// Starts the journal of an import of `detail` into `tenant`, or carries on the one of
        /// the same import that did not finish (killed or stopped by the store).
        public init(tenant: String, detail: String, dataDirectory: String, newID: () -> String) throws {
            let folder = ImportJournal.folder(in: dataDirectory)
            try PrivateFiles.createDirectory(folder)
            var unfinished: ImportJournal?
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder))?.sorted() ?? [] where name.hasSuffix(".json") {
                guard let data = FileManager.default.contents(atPath: folder + "/" + name),
                      let journal = try? ImportJournal.decoder.decode(ImportJournal.self, from: data) else { continue }
                if journal.tenant == tenant, journal.detail == detail, journal.finishedAt == nil, journal.undoneAt == nil { unfinished = journal }
            }
            let journal = unfinished ?? ImportJournal(id: newID(), tenant: tenant, detail: detail)
            if unfinished == nil { try journal.save(in: dataDirectory) }
            let path = folder + "/" + journal.id + ".jsonl"
            try PrivateFiles.createFileIfMissing(path)
            guard let handle = FileHandle(forWritingAtPath: path) else { throw CRMError.invalidMapping("cannot write the import journal \(path)") }
            _ = try handle.seekToEnd()
            self.id = journal.id
            self.resumed = unfinished != nil
            self.dataDirectory = dataDirectory
            self.handle = handle
        }

        deinit { try? handle.close() }

        /// Where `store` stands, inside the transaction of a batch, before its writes.
        public func mark(_ store: ReplicaStore) throws -> Mark {
            Mark(sequence: try store.lastSequence, timestamp: try store.lastTimestamp)
        }

        /// Appends what the batch that began at `mark` made (the records the store's own writes
        /// created since, effects' included) and the fields its `merges` filled, inside its
        /// transaction, before it commits.
        public func record(_ store: ReplicaStore, since mark: Mark, merges: some Sequence<ImportReport.Merge>) throws {
            try store.settleEffects()
            var batch = Batch(created: try store.recordsMadeLocally(after: mark.sequence, since: mark.timestamp), filled: [],
                              stamp: try store.lastTimestamp.rawValue, sequence: try store.lastSequence)
            let made = Set(batch.created)
            for merge in merges where !merge.filledFields.isEmpty && !made.contains(merge.record) {
                guard let state = try store.record(merge.record) else { continue }
                let values = state.values
                for field in merge.filledFields {
                    batch.filled.append(.init(record: merge.record, field: field, value: Value(values[field] ?? .null)))
                    // The store's effects stamp a consent with its time when it is first written.
                    let stamp = field + "_at"
                    if store.schema.types[state.type]?.fields[stamp] != nil, !merge.filledFields.contains(stamp), (values[stamp] ?? .null) != .null {
                        batch.filled.append(.init(record: merge.record, field: stamp, value: nil))
                    }
                }
            }
            guard !batch.created.isEmpty || !batch.filled.isEmpty else { return }
            try handle.write(contentsOf: try batch.line())
            try handle.synchronize()
        }

        /// Runs `body` as one journaled transaction of `store` (writes outside the row batches:
        /// the custom fields an import declares).
        public func transaction<T>(_ store: ReplicaStore, _ body: () throws -> T) throws -> T {
            try store.transaction {
                let mark = try mark(store)
                let result = try body()
                try record(store, since: mark, merges: [])
                return result
            }
        }

        /// Removes the journal when this run wrote nothing and carried on no earlier run (a
        /// re-run of an import already in, a run stopped before its first write): there is
        /// nothing to undo, so the run is no import. Whether it did.
        public func discardIfEmpty() throws -> Bool {
            guard !resumed, try handle.offset() == 0 else { return false }
            let folder = ImportJournal.folder(in: dataDirectory)
            try FileManager.default.removeItem(atPath: folder + "/" + id + ".jsonl")
            try FileManager.default.removeItem(atPath: folder + "/" + id + ".json")
            return true
        }

        /// Marks the import finished: a later run of it is a new import.
        public func finish() throws {
            // The header alone: the batch lines may be as long as the import.
            let path = ImportJournal.folder(in: dataDirectory) + "/" + id + ".json"
            guard let data = FileManager.default.contents(atPath: path) else { throw CRMError.invalidMapping("no import \(id)") }
            var journal = try ImportJournal.decoder.decode(ImportJournal.self, from: data)
            journal.finishedAt = Date()
            try journal.save(in: dataDirectory)
        }
    }
}
