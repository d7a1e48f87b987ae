import CSQLite
import Foundation
import SQLite
import SyncModel

/// Indexed lookups: `records(ofType:)` reads every record of a type, which a screen listing an
/// owner's opportunities or an account's contacts cannot afford on a large tenant. The fields
/// apps query are kept in `field_index`, maintained with the record row in the same
/// transaction, on local writes and on applies from sync alike.
///
/// Except while a pull from the start runs (`deferFieldIndex(of:)`): inserting each record's
/// entries at random places of a b-tree that outgrows SQLite's cache, and committing it batch
/// after batch, made an initial sync several times slower than the same sync without the index,
/// so the types it brings are written without entries and indexed in one sorted pass when it
/// ends (`completeFieldIndex()`). Queries on a deferred type read its records instead.
extension ReplicaStore {
    /// The name under which words of search fields are indexed: no field may be called ''.
    static let searchKey = ""

    /// The indexed and search fields of each type that has any, worked out once.
    static func indexedFields(of schema: Schema, options: Options) -> [String: IndexedFields] {
        var result: [String: IndexedFields] = [:]
        for (name, type) in schema.types {
            let fields = IndexedFields(values: type.fields.keys.filter(options.indexedFields.contains).sorted(),
                                       words: type.fields.keys.filter(options.searchFields.contains).sorted())
            if !fields.values.isEmpty || !fields.words.isEmpty { result[name] = fields }
        }
        return result
    }

    struct IndexedFields {
        /// Fields whose text values are indexed.
        var values: [String]
        /// Fields whose words are indexed.
        var words: [String]
    }

    /// Whether writing a record of `type` writes its index entries now: it has indexed
    /// fields, and its entries are not deferred.
    func maintainsIndex(of type: String) -> Bool {
        indexedFieldsByType[type] != nil && !deferredIndexTypes.contains(type)
    }

    /// The index entries of a state: (field, value) pairs, the words of search fields under
    /// `searchKey`; none for a tombstone or a type without indexed fields.
    func indexEntries(_ state: RecordState) -> Set<IndexEntry> {
        guard !state.isDeleted, let fields = indexedFieldsByType[state.type] else { return [] }
        var entries: Set<IndexEntry> = []
        for field in fields.values {
            if case .text(let text)? = state.fields[field]?.value { entries.insert(IndexEntry(field: field, value: text)) }
        }
        for field in fields.words {
            guard case .text(let text)? = state.fields[field]?.value else { continue }
            for word in Self.words(text) { entries.insert(IndexEntry(field: Self.searchKey, value: word)) }
        }
        return entries
    }

    struct IndexEntry: Hashable {
        var field: String
        var value: String
    }

    /// Brings the record's index entries from those of `old` (the state the row held, `nil`
    /// for a new row) to those of `state`. Entries are removed by their key, computed from the
    /// old state, so the table needs no second index by record, and an edit that leaves the
    /// indexed fields alone writes nothing here.
    func updateFieldIndex(_ state: RecordState, old: RecordState?) throws {
        guard !deferredIndexTypes.contains(state.type) else { return }  // built whole at the end
        let entries = indexEntries(state)
        let previous = old.map(indexEntries) ?? []
        guard !entries.isEmpty || !previous.isEmpty else { return }
        let gone = previous.subtracting(entries)
        if !gone.isEmpty {
            let remove = try db.statement("DELETE FROM field_index WHERE \(tenant.and)type = ? AND field = ? AND value = ? AND id = ?")
            for entry in gone {
                remove.reset()
                try bind(entry, of: state, to: remove)
                try remove.step()
            }
        }
        if indexInsertStatement == nil {
            indexInsertStatement = try db.statement("INSERT INTO field_index (\(tenant.column)type, field, value, id) VALUES (\(tenant.value)?, ?, ?, ?) ON CONFLICT DO NOTHING")
        }
        let insert = indexInsertStatement!
        for entry in entries.subtracting(previous) {
            insert.reset()
            try bind(entry, of: state, to: insert)
            try insert.step()
        }
    }

    private func bind(_ entry: IndexEntry, of state: RecordState, to statement: any SQLStatement) throws {
        try statement.bind(text: state.type, at: 1)
        try statement.bind(text: entry.field, at: 2)
        try statement.bind(text: entry.value, at: 3)
        try statement.bind(uuid: state.id, at: 4)
    }

    /// Lower-cased words, split at anything that is not a letter or a digit. Scalars rather
    /// than characters: a name is split the same way, at a fraction of the cost.
    static func words(_ text: String) -> [String] {
        if let ascii = asciiWords(text) { return ascii }
        return text.lowercased().unicodeScalars.split { !$0.properties.isAlphabetic && $0.properties.numericType == nil }
            .map { String(String.UnicodeScalarView($0)) }
    }

    /// `words` of an ASCII text, from its bytes: the same words (ASCII letters and digits are
    /// its only letters and digits), without looking up each scalar's properties, which was
    /// most of the cost of indexing a name. `nil` for any other text.
    private static func asciiWords(_ text: String) -> [String]? {
        var text = text
        return text.withUTF8 { bytes -> [String]? in
            var words: [String] = []
            var word: [UInt8] = []
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): word.append(byte)
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): word.append(byte + 32)
                case 0x80...: return nil
                default:
                    if !word.isEmpty { words.append(String(decoding: word, as: UTF8.self)); word.removeAll(keepingCapacity: true) }
                }
            }
            if !word.isEmpty { words.append(String(decoding: word, as: UTF8.self)) }
            return words
        }
    }

    /// Builds the index again when the options name other fields than the index was built for
    /// (a new store, a store from before the index, a program that indexes more).
    func ensureFieldIndex() throws {
        let config = "indexed:" + options.indexedFields.sorted().joined(separator: ",")
            + ";search:" + options.searchFields.sorted().joined(separator: ",")
        let built = try db.fetch("SELECT fields FROM field_index_config\(tenant.only)") { try $0.string(0) }.first
        guard built != config else { return }
        try write {
            try db.run("DELETE FROM field_index\(tenant.only)")
            try db.run("DELETE FROM field_index_deferred\(tenant.only)")
            deferredIndexTypes = []
            for type in indexedFieldsByType.keys.sorted() { try buildFieldIndex(of: type) }
            try db.run("""
                INSERT INTO field_index_config (\(tenant.column)singleton, fields) VALUES (\(tenant.value)1, ?)
                ON CONFLICT (\(tenant.column)singleton) DO UPDATE SET fields = excluded.fields
                """, [config])
        }
    }

    // MARK: Deferred entries

    /// Stops writing the index entries of those of `types` that have indexed fields, from now
    /// until `completeFieldIndex()` builds them: for a pull from the start, whose records are
    /// then stored without entries and indexed in one sorted pass at its end. Takes effect in
    /// the open transaction (with the batch it precedes) or, outside one, at once; recorded in
    /// the file, so a sync killed half-way leaves the types deferred, never half indexed.
    ///
    /// Queries on a deferred type give the same answers, reading its records instead of the
    /// index; the index is only slower to have.
    public func deferFieldIndex(of types: some Sequence<String>) throws {
        let wanted = Set(types).filter { indexedFieldsByType[$0] != nil }
        guard !wanted.isEmpty else { return }
        try write {
            for type in wanted.subtracting(deferredIndexTypes).sorted() {
                try db.run("INSERT INTO field_index_deferred (\(tenant.column)type) VALUES (\(tenant.value)?) ON CONFLICT DO NOTHING", [type])
                deferredIndexTypes.insert(type)
            }
        }
    }

    /// The types whose index entries are deferred (`deferFieldIndex(of:)`), as committed.
    public func deferredFieldIndexTypes() throws -> Set<String> {
        isWriting ? deferredIndexTypes : try committedDeferredIndexTypes()
    }

    /// Builds the index entries of every deferred type and ends their deferral: one
    /// transaction per type, so readers and local writes wait for one type at most. Does
    /// nothing when no type is deferred, so a sync can call it at the end of every pull, and
    /// the pull after one killed half-way finishes what that one deferred.
    ///
    /// - Parameter gathered: the entries a pull gathered from the records it brought
    ///   (`gatherFieldIndex()`), inserted instead of reading the records back, for each type
    ///   they are known to be complete for; the other types are read back as without them.
    ///
    /// On SQLite, each type's records are read on a connection and a thread of their own
    /// while the store's connection inserts the entries of the type before
    /// (`FieldIndexPrebuild`): the two halves of a build took about as long as each other, and
    /// the other core was idle.
    public func completeFieldIndex(gathered: FieldIndexGather? = nil) throws {
        defer { gatheredIndexWrites = nil }
        let types = try committedDeferredIndexTypes().sorted()
        // Complete when every live record of the type was stored by this handle as it came,
        // since a store that held no record, and each of those was gathered once.
        let gatheredTypes = Set(types.filter { type in
            guard let build = gathered?.builds[type], let writes = gatheredIndexWrites else { return false }
            return build.records == writes[type] ?? 0
        })
        // Read beside the store's writes when every type is read back and there is a write to
        // go beside. Two builds then hold entries at once: each takes half the memory one would.
        let prebuilds = sqliteFile != nil && gatheredTypes.isEmpty && types.count > 1
        let limit = prebuilds ? Self.fieldIndexBuildLimit / 2 : Self.fieldIndexBuildLimit
        var next: FieldIndexPrebuild?
        for (index, type) in types.enumerated() {
            let prebuilt = next
            next = nil
            if prebuilds, index + 1 < types.count, let fields = indexedFieldsByType[types[index + 1]] {
                next = FieldIndexPrebuild(type: types[index + 1], fields: fields, path: path, tenant: tenant, store: try prebuildMark(), limit: limit)
            }
            try write {
                guard deferredIndexTypes.contains(type) else { return }  // another handle built it
                try db.run("DELETE FROM field_index_deferred WHERE \(tenant.and)type = ?", [type])
                deferredIndexTypes.remove(type)
                if gatheredTypes.contains(type), let build = gathered?.builds[type] {
                    try db.run("DELETE FROM field_index WHERE \(tenant.and)type = ?", [type])
                    try build.insert(type: type, into: db, tenant: tenant)
                } else if let prebuilt, let collected = prebuilt.take(ifStoreIsStill: try prebuildMark()) {
                    try db.run("DELETE FROM field_index WHERE \(tenant.and)type = ?", [type])
                    try insert(collected, type: type)
                } else {
                    try buildFieldIndex(of: type, limit: limit)
                }
            }
        }
        next?.discard()
    }

    /// What says whether records changed between a prebuild's start and its use: the store's
    /// change sequence (this handle's writes) and SQLite's `data_version` (commits of any
    /// other connection, a purge among them, which moves no sequence).
    func prebuildMark() throws -> [Int64] {
        [try lastSequence, try sqliteFile?.scalarInt("PRAGMA data_version") ?? 0]
    }

    // MARK: Entries gathered by a pull

    /// Starts gathering index entries beside a pull from the start into this store, when the
    /// store holds no record yet (an initial sync): the pull adds each batch it checked to the
    /// gather on its own task (`FieldIndexGather.add`), and hands it to `completeFieldIndex`,
    /// which then need not read every record back. `nil` when the store indexes nothing or
    /// holds records (a resync): those the pull does not bring would be missing.
    ///
    /// Whatever this handle writes otherwise until then (a merge, a local edit, an eviction,
    /// a rolled back batch), or another handle's write, makes the index be built by reading
    /// the records back after all: the gather is an optimisation, never the source of truth.
    public func gatherFieldIndex() throws -> FieldIndexGather? {
        guard !indexedFieldsByType.isEmpty, try db.fetchInt("SELECT 1 FROM records\(tenant.only) LIMIT 1") == nil else {
            gatheredIndexWrites = nil
            return nil
        }
        gatheredIndexWrites = [:]
        return FieldIndexGather(indexedFieldsByType)
    }

    /// Counts a live record of a deferred type stored as it came (its bytes canonical), which
    /// a gather reads the same bytes of.
    func noteGatherableWrite(of type: String) {
        if gatheredIndexWrites != nil, deferredIndexTypes.contains(type) { gatheredIndexWrites![type, default: 0] += 1 }
    }

    func committedDeferredIndexTypes() throws -> Set<String> {
        guard !indexedFieldsByType.isEmpty else { return [] }
        return Set(try db.fetch("SELECT type FROM field_index_deferred\(tenant.only)") { try $0.string(0) })
    }

    /// How much memory a build of one type's entries may take before it sets them aside
    /// (`buildFieldIndex`): a type of a million records has some 300 MB of entries, which an
    /// import or a sync must not hold whole.
    static let fieldIndexBuildLimit = 24 << 20

    /// Replaces the entries of `type` by those of its live records, inserted in key order
    /// (`FieldIndexBuild`). Only the indexed fields are read from each state.
    ///
    /// The entries are made in memory while they fit in `limit` bytes. A type with more has
    /// them sorted and set aside in a file each time they fill it (`IndexRuns`), and those
    /// sorted runs merged into the index at the end: a build's memory stays the same however
    /// many records the type has, and the index is still inserted in key order. A PostgreSQL
    /// store reads the type's rows whole anyway, and builds in memory.
    ///
    /// - Returns: how many sorted runs were set aside: none when the entries fit in memory.
    @discardableResult
    func buildFieldIndex(of type: String, limit: Int = ReplicaStore.fieldIndexBuildLimit) throws -> Int {
        guard let fields = indexedFieldsByType[type] else { return 0 }
        try db.run("DELETE FROM field_index WHERE \(tenant.and)type = ?", [type])
        return try insert(Self.collectFieldIndex(of: type, fields: fields, in: db, tenant: tenant, path: path, limit: limit), type: type)
    }

    /// The entries of the live records of `type` read on `db`, in memory while they fit in
    /// `limit` bytes, else set aside in sorted runs beside the store at `path` (see
    /// `buildFieldIndex`).
    static func collectFieldIndex(of type: String, fields: IndexedFields, in db: any SQLDatabase, tenant: TenantRows,
                                  path: String, limit: Int = ReplicaStore.fieldIndexBuildLimit) throws -> CollectedFieldIndex {
        var build = FieldIndexBuild(fields)
        var runs: IndexRuns?
        let setsAside = db.dialect == .sqlite
        try forEachLiveState(of: type, in: db, tenant: tenant, path: path, read: { id, state in
            try build.add(id, state: state)
            guard setsAside, build.memory >= limit else { return }
            if runs == nil { runs = try IndexRuns(beside: path) }
            try runs!.add(&build)
            build = FieldIndexBuild(fields)
        })
        return CollectedFieldIndex(fields: fields, build: build, runs: runs)
    }

    /// Inserts collected entries into the index, in key order; how many sorted runs they
    /// were set aside in.
    func insert(_ collected: consuming CollectedFieldIndex, type: String) throws -> Int {
        var build = collected.build
        guard var runs = collected.runs.take() else {
            try build.insert(type: type, into: db, tenant: tenant)
            return 0
        }
        try runs.add(&build)
        try runs.merge(into: FieldIndexBuild(collected.fields), type: type, db: db, tenant: tenant)
        return runs.count
    }

    /// Runs `body` in one read snapshot, so that whether a type is deferred and what the index
    /// holds are read from the same state of the file (WAL: readers never wait for the writer).
    func withIndexSnapshot<T>(of type: String, _ body: (_ deferred: Bool) throws -> T) throws -> T {
        if isWriting { return try body(deferredIndexTypes.contains(type)) }
        guard indexedFieldsByType[type] != nil else { return try body(false) }
        return try db.transaction(.deferred) {
            try body(try db.fetchInt("SELECT 1 FROM field_index_deferred WHERE \(tenant.and)type = ?", [type]) != nil)
        }
    }

    /// The live records of `type` whose text `field` is exactly `value`, in change order.
    ///
    /// Reads the index when `field` is one of `Options.indexedFields`; otherwise reads every
    /// record of the type, so the answer is the same either way and only the cost differs.
    public func records(ofType type: String, where field: String, equals value: String) throws -> [RecordState] {
        try withIndexSnapshot(of: type) { deferred in
            guard options.indexedFields.contains(field), !deferred else {
                return try records(ofType: type).filter { $0.fields[field]?.value == .text(value) }
            }
            return try db.fetch("""
                SELECT r.id, r.type, r.vector, r.state FROM field_index f JOIN records r ON \(tenant.and("r"))r.id = f.id
                WHERE \(tenant.and("f"))f.type = ? AND f.field = ? AND f.value = ? AND r.deleted = 0 ORDER BY r.seq
                """, [type, field, value]) { try decodeRow($0) }
        }
    }

    /// The live records of `type` with, for every word of `text`, a word in one of their
    /// search fields that starts with it (case-insensitive): "ann sm" finds "Anna Smith".
    /// At most `limit` of them, in change order.
    public func search(_ text: String, ofType type: String, limit: Int = 100) throws -> [RecordState] {
        let words = Self.words(text)
        guard let first = words.max(by: { $0.count < $1.count }) else { return [] }
        // The longest word narrows the index range most; the others are checked on the records.
        let candidates = try withIndexSnapshot(of: type) { deferred in
            guard !deferred else { return try records(ofType: type) }
            return try db.fetch("""
                SELECT r.id, r.type, r.vector, r.state FROM records r
                WHERE \(tenant.and("r"))r.deleted = 0 AND r.id IN (
                    SELECT f.id FROM field_index f
                    WHERE \(tenant.and("f"))f.type = ? AND f.field = ? AND f.value >= ? AND f.value < ?)
                ORDER BY r.seq
                """, [type, Self.searchKey, first, first + "\u{10FFFF}"]) { try decodeRow($0) }
        }
        return Array(candidates.lazy.filter { state in
            let held = state.fields.compactMap { name, field -> [String]? in
                guard self.options.searchFields.contains(name), case .text(let text) = field.value else { return nil }
                return Self.words(text)
            }.joined()
            return words.allSatisfy { word in held.contains { $0.hasPrefix(word) } }
        }.prefix(limit))
    }
}

/// One type's index entries read from its records (`ReplicaStore.collectFieldIndex`): in
/// memory, and the sorted runs set aside when they outgrew it.
struct CollectedFieldIndex: ~Copyable {
    let fields: ReplicaStore.IndexedFields
    var build: FieldIndexBuild
    var runs: IndexRuns?
}

/// A deferred type's index entries read on a connection and a thread of their own, while the
/// store's connection inserts another type's (`ReplicaStore.completeFieldIndex`). They are
/// taken only if no record changed since the read began, by this handle or any other:
/// otherwise the store reads the type again itself.
final class FieldIndexPrebuild: @unchecked Sendable {
    // Safe to share: the reading thread sets `collected` before it signals `finished`, and
    // the store's thread reads it only after waiting for that signal.
    /// The store's mark when the read began (`ReplicaStore.prebuildMark()`).
    private let mark: [Int64]
    private let finished = DispatchSemaphore(value: 0)
    private var collected: CollectedFieldIndex?

    init(type: String, fields: ReplicaStore.IndexedFields, path: String, tenant: TenantRows, store mark: [Int64],
         limit: Int = ReplicaStore.fieldIndexBuildLimit) {
        self.mark = mark
        DispatchQueue.global().async { [self] in
            defer { finished.signal() }
            var options = Database.Options()
            options.create = false
            // One statement reads one snapshot. A failure leaves the type to the store, which
            // meets it again if it lasts.
            guard let db = try? Database(path: path, options: options) else { return }
            defer { db.close() }
            collected = try? ReplicaStore.collectFieldIndex(of: type, fields: fields, in: db, tenant: tenant, path: path, limit: limit)
            // Sorted here too, so that the store's thread only inserts.
            collected?.build.sort()
        }
    }

    /// The entries, when the store's mark is still the one the read began at; `nil` when a
    /// record may have changed since, or reading them failed. Waits for them.
    func take(ifStoreIsStill current: [Int64]) -> CollectedFieldIndex? {
        finished.wait()
        guard current == mark else { return nil }
        return collected.take()
    }

    /// Waits for a read no one takes, so that its runs' file is closed before the store goes on.
    func discard() {
        finished.wait()
    }
}

/// Index entries of the records a pull from the start brings, made on the pull's own task
/// while the store applies the batch before (`ReplicaStore.gatherFieldIndex()`).
public struct FieldIndexGather: Sendable {
    private let indexed: [String: ReplicaStore.IndexedFields]
    /// The fields whose texts the gather reads, by type: the pull asks the check of each batch
    /// for them (`CheckedRecords.init(_:against:texts:)`), which then finds them on its walk
    /// through each state, so that `add` need not walk it again.
    public let textFields: [String: [String]]
    fileprivate(set) var builds: [String: FieldIndexBuild] = [:]

    init(_ indexed: [String: ReplicaStore.IndexedFields]) {
        self.indexed = indexed
        textFields = indexed.mapValues { $0.values + $0.words }
    }

    /// Adds the live records of a checked batch whose bytes the store keeps as they came.
    public mutating func add(_ batch: CheckedRecords) throws {
        // The notes name fields by their place in what the check was asked for: usable when
        // it was asked for these; otherwise each state is walked here.
        let noted = batch.textFields == textFields
        var span = 0
        for (index, (record, outcome)) in zip(batch.records, batch.outcomes).enumerated() {
            let first = span
            while span < batch.texts.count && batch.texts[span].record == index { span += 1 }
            guard let fields = indexed[record.type], case .success(let check) = outcome,
                  !check.isDeleted, check.decodedState == nil else { continue }
            try record.state.withUnsafeBytes { state in
                if noted {
                    builds[record.type, default: FieldIndexBuild(fields)].add(record.id, state: state, texts: batch.texts[first..<span])
                } else {
                    try builds[record.type, default: FieldIndexBuild(fields)].add(record.id, state: state)
                }
            }
        }
    }

    /// Sorts the entries, so that the store's thread only inserts them.
    public mutating func sort() {
        for type in builds.keys { builds[type]!.sort() }
    }
}

/// One type's index entries made in memory, then inserted field by field in the table's key
/// order, so that every insert appends to the b-tree instead of landing on a page anywhere in
/// it: a pull from the start builds its index this way (`completeFieldIndex`).
///
/// The values' bytes are kept end to end in one buffer per field name, and entries are small
/// values pointing into it, sorted in place: a `String` per entry, moved and compared while
/// sorting, made its reference counting a third of the build.
struct FieldIndexBuild {
    private let projection: RecordCodec.Projection
    /// The field names, sorted (`searchKey` for words), one list each.
    private let names: [String]
    /// For each projected field (the indexed ones, then the search ones): its list, and
    /// whether its words are indexed rather than its value.
    private let targets: [(list: Int, words: Bool)]
    private var ids: [UUID] = []
    private var lists: [List]
    private var isSorted = false

    /// How many records were added.
    var records: Int { ids.count }

    /// The bytes the entries take, about: their values, their entries and their records' ids.
    var memory: Int {
        ids.count * MemoryLayout<UUID>.stride
            + lists.reduce(0) { $0 + $1.bytes.count + $1.entries.count * MemoryLayout<Entry>.stride }
    }

    private struct List {
        var bytes: [UInt8] = []
        var entries: [Entry] = []
    }

    /// A value's bytes in its list's buffer and the record it indexes. The first sixteen bytes,
    /// big-endian, decide most comparisons without reading the buffer.
    private struct Entry {
        var head: UInt64
        var next: UInt64
        var start: Int
        var count: Int32
        var record: Int32
    }

    init(_ fields: ReplicaStore.IndexedFields) {
        projection = RecordCodec.Projection(fields.values + fields.words)
        let names = Array(Set(fields.values + (fields.words.isEmpty ? [] : [ReplicaStore.searchKey]))).sorted()
        let wordList = names.firstIndex(of: ReplicaStore.searchKey)
        self.names = names
        targets = fields.values.map { (names.firstIndex(of: $0)!, false) } + fields.words.map { _ in (wordList!, true) }
        lists = Array(repeating: List(), count: names.count)
    }

    /// Adds the entries of a live record's encoded state.
    mutating func add(_ id: UUID, state: UnsafeRawBufferPointer) throws(ModelError) {
        let record = begin(id)
        try projection.forEachText(in: state) { field, text in add(text, field: field, record: record) }
    }

    /// `add(_:state:)` for a state whose check found where the texts of the indexed fields lie
    /// (`CheckedRecords.texts`, for the fields of `ReplicaStore.IndexedFields` in order).
    mutating func add(_ id: UUID, state: UnsafeRawBufferPointer, texts: some Collection<CheckedRecords.TextSpan>) {
        let record = begin(id)
        for text in texts {
            add(UnsafeRawBufferPointer(rebasing: state[Int(text.start)..<Int(text.start) + Int(text.count)]), field: Int(text.field), record: record)
        }
    }

    private mutating func begin(_ id: UUID) -> Int32 {
        ids.append(id)
        isSorted = false
        return Int32(ids.count - 1)
    }

    /// Adds the entries of one text of the projected field `field`: its value, or its words.
    private mutating func add(_ text: UnsafeRawBufferPointer, field: Int, record: Int32) {
        let target = targets[field]
        guard target.words else { return append(text, record: record, to: target.list) }
        var start = -1
        for (offset, byte) in text.enumerated() {
            let isWordByte = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            if byte >= 0x80 {
                // Beyond ASCII, letters are told by their Unicode properties: `words` does it.
                for word in ReplicaStore.words(String(decoding: text, as: UTF8.self)) {
                    var word = word
                    word.withUTF8 { append(UnsafeRawBufferPointer($0), record: record, to: target.list) }
                }
                return
            }
            if isWordByte, start < 0 { start = offset }
            if !isWordByte, start >= 0 {
                appendLowercased(UnsafeRawBufferPointer(rebasing: text[start..<offset]), record: record, to: target.list)
                start = -1
            }
        }
        if start >= 0 { appendLowercased(UnsafeRawBufferPointer(rebasing: text[start...]), record: record, to: target.list) }
    }

    private mutating func append(_ text: UnsafeRawBufferPointer, record: Int32, to list: Int) {
        let start = lists[list].bytes.count
        lists[list].bytes.append(contentsOf: text)
        lists[list].entries.append(Self.entry(text, start: start, record: record))
    }

    /// `append` for an ASCII word, lower-cased as `ReplicaStore.words` does.
    private mutating func appendLowercased(_ word: UnsafeRawBufferPointer, record: Int32, to list: Int) {
        let start = lists[list].bytes.count
        lists[list].bytes.append(contentsOf: word.lazy.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 })
        lists[list].bytes.withUnsafeBytes { all in
            lists[list].entries.append(Self.entry(UnsafeRawBufferPointer(rebasing: all[start...]), start: start, record: record))
        }
    }

    private static func entry(_ text: UnsafeRawBufferPointer, start: Int, record: Int32) -> Entry {
        var head: UInt64 = 0, next: UInt64 = 0
        for (index, byte) in text.prefix(16).enumerated() {
            if index < 8 { head |= UInt64(byte) << (56 - 8 * index) } else { next |= UInt64(byte) << (56 - 8 * (index - 8)) }
        }
        return Entry(head: head, next: next, start: start, count: Int32(text.count), record: record)
    }

    /// Sorts each list as SQLite orders the table's key (the value's bytes, then the id's) and
    /// drops repeats (a word twice in one record, or in two of its search fields).
    mutating func sort() {
        guard !isSorted else { return }
        let ids = self.ids
        for index in lists.indices {
            var entries = lists[index].entries
            lists[index].entries = []
            lists[index].bytes.withUnsafeBytes { bytes in
                entries.sort { a, b in
                    if a.head != b.head { return a.head < b.head }
                    if a.next != b.next { return a.next < b.next }
                    let order = Self.compare(a, b, in: bytes)
                    if order != 0 { return order < 0 }
                    return withUnsafeBytes(of: ids[Int(a.record)].uuid) { x in
                        withUnsafeBytes(of: ids[Int(b.record)].uuid) { y in memcmp(x.baseAddress!, y.baseAddress!, 16) < 0 }
                    }
                }
                var unique: [Entry] = []
                unique.reserveCapacity(entries.count)
                for entry in entries {
                    if let last = unique.last, last.record == entry.record, Self.compare(last, entry, in: bytes) == 0 { continue }
                    unique.append(entry)
                }
                lists[index].entries = unique
            }
        }
        isSorted = true
    }

    /// Inserts the entries in key order (sorting them first if `sort()` was not called), many
    /// rows per statement: most of the cost of inserting a row one statement at a time is
    /// running the statement, not the b-tree.
    func insert(type: String, into db: any SQLDatabase, tenant: TenantRows) throws {
        var build = self
        build.sort()
        let names = names
        try build.insertRows(into: db, "INSERT INTO field_index (\(tenant.column)type, field, value, id) VALUES ",
                             row: "(\(tenant.value)?1, ?2, ?, ?)", firstVariable: 3) { statement, list in
            try statement.bind(text: type, at: 1)
            try statement.bind(text: names[list], at: 2)
        }
    }

    /// Sorts the entries and writes them as one run of `runs`: for each entry its list, the
    /// length of its value, the value and the id, list by list in key order.
    mutating func write(to runs: inout IndexRuns) throws {
        sort()
        var out: [UInt8] = []
        out.reserveCapacity(1 << 20)
        try ids.withUnsafeBytes { ids in
            for (index, list) in lists.enumerated() {
                try list.bytes.withUnsafeBytes { bytes in
                    for entry in list.entries {
                        withUnsafeBytes(of: UInt16(index).littleEndian) { out.append(contentsOf: $0) }
                        withUnsafeBytes(of: UInt32(entry.count).littleEndian) { out.append(contentsOf: $0) }
                        out.append(contentsOf: bytes[entry.start..<entry.start + Int(entry.count)])
                        let id = Int(entry.record) * MemoryLayout<UUID>.stride
                        out.append(contentsOf: ids[id..<id + 16])
                        if out.count >= 1 << 20 {
                            try runs.write(out)
                            out.removeAll(keepingCapacity: true)
                        }
                    }
                }
            }
        }
        try runs.write(out)
    }

    /// Adds one entry of a merge, already in key order among those before it.
    mutating func appendMerged(_ value: UnsafeRawBufferPointer, list: Int, id: UnsafeRawBufferPointer) {
        let record = begin(UUID(uuid: id.loadUnaligned(as: uuid_t.self)))
        append(value, record: record, to: list)
        isSorted = true
    }

    /// Inserts the entries list by list, each in its order, `rows` at a time: `row` is one row's
    /// values, its own parameters numbered from `firstVariable` on (value, then id), and
    /// `constants` binds the others for a list.
    private func insertRows(into db: any SQLDatabase, _ insert: String, row: String, firstVariable: Int32,
                            constants: (any SQLStatement, Int) throws -> Void) throws {
        let rows = 64
        let many = try db.statement(insert + Array(repeating: row, count: rows).joined(separator: ", "))
        let one = try db.statement(insert + row)
        // Values and ids are bound from the lists' buffers and the ids' array, uncopied: no
        // statement keeps them bound. An id is bound as the 16 bytes `UUID` holds, as
        // `bind(uuid:)` binds them.
        assert(MemoryLayout<UUID>.size == 16 && MemoryLayout<UUID>.stride == 16)
        defer { many.reset(); one.reset() }
        try ids.withUnsafeBytes { ids in
            for (index, list) in lists.enumerated() {
                try list.bytes.withUnsafeBytes { bytes in
                    var start = 0
                    while start < list.entries.count {
                        let statement = list.entries.count - start >= rows ? many : one
                        let count = statement === many ? rows : 1
                        statement.reset()
                        try constants(statement, index)
                        for (offset, entry) in list.entries[start..<start + count].enumerated() {
                            try statement.bind(utf8: UnsafeRawBufferPointer(rebasing: bytes[entry.start..<entry.start + Int(entry.count)]),
                                               at: firstVariable + Int32(2 * offset))
                            let id = Int(entry.record) * MemoryLayout<UUID>.stride
                            try statement.bind(uncopiedBytes: UnsafeRawBufferPointer(rebasing: ids[id..<id + 16]),
                                               at: firstVariable + 1 + Int32(2 * offset))
                        }
                        try statement.step()
                        start += count
                    }
                }
            }
        }
    }

    /// The order of two entries' values: their bytes, then their lengths.
    private static func compare(_ a: Entry, _ b: Entry, in bytes: UnsafeRawBufferPointer) -> Int {
        compare(UnsafeRawBufferPointer(rebasing: bytes[a.start..<a.start + Int(a.count)]),
                UnsafeRawBufferPointer(rebasing: bytes[b.start..<b.start + Int(b.count)]))
    }

    /// The order of two byte strings as SQLite orders text and blobs: their bytes, then their
    /// lengths.
    static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let common = min(a.count, b.count)
        if common > 0 {
            let order = memcmp(a.baseAddress!, b.baseAddress!, common)
            if order != 0 { return Int(order) }
        }
        return a.count - b.count
    }
}

/// Sorted runs of one type's index entries, set aside by a build too large for its memory
/// (`ReplicaStore.buildFieldIndex`) in a file of their own: made beside the store, readable by
/// its owner only (`mkstemp`), and unlinked at once, so that it goes with the build however
/// the build ends, a crash included.
struct IndexRuns: ~Copyable {
    private let descriptor: Int32
    private let place: String
    /// Where each run starts and ends in the file.
    private var runs: [Range<Int>] = []
    private var end = 0

    /// How many runs were set aside.
    var count: Int { runs.count }

    init(beside store: String) throws {
        let directory = (store as NSString).deletingLastPathComponent
        var template = Array(((directory.isEmpty ? "." : directory) + "/.index-runs-XXXXXX").utf8CString)
        descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        place = String(cString: template)
        guard descriptor >= 0 else { throw Self.failure(IndexRuns.writeFailed, "cannot make a file for index entries", place) }
        unlink(place)
    }

    deinit { close(descriptor) }

    // SQLite's extended codes for them, macros Swift does not import.
    static let readFailed = SQLITE_IOERR | 1 << 8, endedEarly = SQLITE_IOERR | 2 << 8, writeFailed = SQLITE_IOERR | 3 << 8

    /// A failure of the file as SQLite reports one of its own temporary files', so that a full
    /// disk is told as one (`SQLiteError.isStorageFull`).
    static func failure(_ code: Int32, _ what: String, _ place: String, errno error: Int32 = errno) -> SQLiteError {
        SQLiteError(code: SQLITE_IOERR, extendedCode: code,
                    message: error == 0 ? what : "\(what): \(String(cString: strerror(error)))", path: place, systemErrno: error)
    }

    /// Sorts `build`'s entries and sets them aside as the next run.
    mutating func add(_ build: inout FieldIndexBuild) throws {
        let start = end
        try build.write(to: &self)
        runs.append(start..<end)
    }

    /// Appends bytes of the current run.
    mutating func write(_ bytes: [UInt8]) throws {
        var written = 0
        try bytes.withUnsafeBytes { bytes in
            while written < bytes.count {
                let count = pwrite(descriptor, bytes.baseAddress! + written, bytes.count - written, off_t(end + written))
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw Self.failure(IndexRuns.writeFailed, "cannot set index entries aside", place) }
                written += count
            }
        }
        end += written
    }

    /// Inserts the runs' entries into the index of `type`, merged into key order: each run is
    /// read a buffer at a time, and `merged` is inserted and emptied each time it holds a few MB.
    func merge(into empty: FieldIndexBuild, type: String, db: any SQLDatabase, tenant: TenantRows) throws {
        var merged = empty
        var readers = runs.map { Reader(range: $0) }
        var live: [Int] = []
        for index in readers.indices where try readers[index].advance(descriptor, place) { live.append(index) }
        while !live.isEmpty {
            var least = 0
            for position in live.indices.dropFirst() where readers[live[position]].precedes(readers[live[least]]) { least = position }
            readers[live[least]].withEntry { list, value, id in merged.appendMerged(value, list: list, id: id) }
            if try !readers[live[least]].advance(descriptor, place) { live.remove(at: least) }
            if merged.memory >= 4 << 20 {
                try merged.insert(type: type, into: db, tenant: tenant)
                merged = empty
            }
        }
        try merged.insert(type: type, into: db, tenant: tenant)
    }

    /// One run read back a buffer at a time, positioned on an entry.
    private struct Reader {
        var range: Range<Int>
        var buffer: [UInt8] = []
        /// Where the current entry starts in `buffer`, and its value's length.
        var entry = 0
        var valueCount = 0
        var next = 0

        init(range: Range<Int>) { self.range = range }

        static let header = 6

        /// Moves to the next entry; false when the run has none left.
        mutating func advance(_ descriptor: Int32, _ place: String) throws -> Bool {
            if !buffer.isEmpty { next = entry + Self.header + valueCount + 16 }
            guard try fill(Self.header, descriptor, place) else { return false }
            valueCount = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: next + 2, as: UInt32.self) }.littleEndian)
            guard try fill(Self.header + valueCount + 16, descriptor, place) else {
                throw IndexRuns.failure(IndexRuns.endedEarly, "a run of index entries ends inside an entry", place, errno: 0)
            }
            entry = next
            return true
        }

        /// Makes `count` bytes from `next` on be in the buffer, reading on; false when the run
        /// has none left.
        private mutating func fill(_ count: Int, _ descriptor: Int32, _ place: String) throws -> Bool {
            if next + count <= buffer.count { return true }
            buffer.removeSubrange(0..<next)
            next = 0
            let wanted = max(count, 256 << 10)
            guard !range.isEmpty || buffer.count >= count else { return false }
            let start = buffer.count
            let reading = min(wanted - start, range.count)
            if reading > 0 {
                buffer.append(contentsOf: repeatElement(0, count: reading))
                var read = 0
                try buffer.withUnsafeMutableBytes { bytes in
                    while read < reading {
                        let count = pread(descriptor, bytes.baseAddress! + start + read, reading - read, off_t(range.lowerBound + read))
                        if count < 0, errno == EINTR { continue }
                        guard count > 0 else {
                            throw count == 0 ? IndexRuns.failure(IndexRuns.endedEarly, "a run of index entries ends early", place, errno: 0)
                                : IndexRuns.failure(IndexRuns.readFailed, "cannot read index entries back", place)
                        }
                        read += count
                    }
                }
                range = range.lowerBound + reading..<range.upperBound
            }
            return buffer.count >= count
        }

        func withEntry<T>(_ body: (Int, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> T) rethrows -> T {
            try buffer.withUnsafeBytes { bytes in
                let list = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: entry, as: UInt16.self)))
                let value = UnsafeRawBufferPointer(rebasing: bytes[entry + Self.header..<entry + Self.header + valueCount])
                let id = UnsafeRawBufferPointer(rebasing: bytes[entry + Self.header + valueCount..<entry + Self.header + valueCount + 16])
                return try body(list, value, id)
            }
        }

        /// Whether this reader's entry comes before `other`'s in the index's key order.
        func precedes(_ other: Reader) -> Bool {
            withEntry { list, value, id in
                other.withEntry { otherList, otherValue, otherID in
                    if list != otherList { return list < otherList }
                    let order = FieldIndexBuild.compare(value, otherValue)
                    return order != 0 ? order < 0 : FieldIndexBuild.compare(id, otherID) < 0
                }
            }
        }
    }
}
