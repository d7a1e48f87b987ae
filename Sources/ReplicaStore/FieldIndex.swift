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
    public func completeFieldIndex() throws {
        for type in try committedDeferredIndexTypes().sorted() {
            try write {
                guard deferredIndexTypes.contains(type) else { return }  // another handle built it
                try db.run("DELETE FROM field_index_deferred WHERE \(tenant.and)type = ?", [type])
                deferredIndexTypes.remove(type)
                try buildFieldIndex(of: type)
            }
        }
    }

    func committedDeferredIndexTypes() throws -> Set<String> {
        guard !indexedFieldsByType.isEmpty else { return [] }
        return Set(try db.fetch("SELECT type FROM field_index_deferred\(tenant.only)") { try $0.string(0) })
    }

    /// Replaces the entries of `type` by those of its live records, inserted in key order, so
    /// that every insert appends to the b-tree instead of landing on a page anywhere in it.
    /// Only the indexed fields are decoded (`scan`); the entries are those `indexEntries` gives.
    private func buildFieldIndex(of type: String) throws {
        guard let fields = indexedFieldsByType[type] else { return }
        try db.run("DELETE FROM field_index WHERE \(tenant.and)type = ?", [type])
        // One list per field name, the words under `searchKey`.
        let names = Array(Set(fields.values + (fields.words.isEmpty ? [] : [Self.searchKey]))).sorted()
        var lists = [[SortedEntry]](repeating: [], count: names.count)
        let valueList = fields.values.map { names.firstIndex(of: $0)! }
        let wordList = names.firstIndex(of: Self.searchKey)
        try scan(type, fields: fields.values + fields.words) { id, values in
            for (index, value) in values.enumerated() {
                guard case .text(let text) = value else { continue }
                if index < valueList.count {
                    lists[valueList[index]].append(SortedEntry(text, id))
                } else if let wordList {
                    for word in Self.words(text) { lists[wordList].append(SortedEntry(word, id)) }
                }
            }
        }
        for (name, entries) in zip(names, lists) {
            // Positions are sorted rather than the entries, by the values' first bytes kept
            // apart: moving or reading an entry copies its string, whose reference counting
            // cost more than comparing. The strings are read only where the first bytes tie.
            let prefixes = entries.map(\.prefix)
            var order = Array(entries.indices)
            order.sort { prefixes[$0] != prefixes[$1] ? prefixes[$0] < prefixes[$1] : entries[$0] < entries[$1] }
            // A word twice in one record, or in two of its search fields, is one entry.
            var unique: [SortedEntry] = []
            unique.reserveCapacity(entries.count)
            for index in order where unique.last != entries[index] { unique.append(entries[index]) }
            try insertSorted(unique, type: type, field: name)
        }
    }

    /// Inserts entries of one field, many rows per statement: most of the cost of inserting a
    /// row one statement at a time is running the statement, not the b-tree.
    private func insertSorted(_ entries: [SortedEntry], type: String, field: String) throws {
        let rows = 64
        let many = try db.statement("INSERT INTO field_index (\(tenant.column)type, field, value, id) VALUES "
                                    + Array(repeating: "(\(tenant.value)?1, ?2, ?, ?)", count: rows).joined(separator: ", "))
        let one = try db.statement("INSERT INTO field_index (\(tenant.column)type, field, value, id) VALUES (\(tenant.value)?1, ?2, ?, ?)")
        var start = 0
        while start < entries.count {
            let statement = entries.count - start >= rows ? many : one
            let count = statement === many ? rows : 1
            statement.reset()
            try statement.bind(text: type, at: 1)
            try statement.bind(text: field, at: 2)
            for (offset, entry) in entries[start..<start + count].enumerated() {
                try statement.bind(text: entry.value, at: Int32(3 + 2 * offset))
                try statement.bind(uuid: entry.id, at: Int32(4 + 2 * offset))
            }
            try statement.step()
            start += count
        }
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

/// An index entry of one field, ordered as SQLite orders the table's key: the value's UTF-8
/// bytes, then the id's. The first eight bytes of the value, kept as a number, decide most
/// comparisons without reading either string.
struct SortedEntry: Comparable {
    let value: String
    let id: UUID
    /// The first eight bytes of the value, big-endian, zero-padded.
    let prefix: UInt64

    init(_ value: String, _ id: UUID) {
        self.value = value
        self.id = id
        var prefix: UInt64 = 0, taken = 0
        for byte in value.utf8.prefix(8) {
            prefix |= UInt64(byte) << (56 - 8 * taken)
            taken += 1
        }
        self.prefix = prefix
    }

    static func < (a: Self, b: Self) -> Bool { compare(a, b) < 0 }

    /// Equal bytes, not equal strings: two spellings of one text are two keys to SQLite.
    static func == (a: Self, b: Self) -> Bool { a.prefix == b.prefix && compare(a, b) == 0 }

    private static func compare(_ a: Self, _ b: Self) -> Int {
        if a.prefix != b.prefix { return a.prefix < b.prefix ? -1 : 1 }
        var x = a.value, y = b.value
        let order = x.withUTF8 { x in
            y.withUTF8 { y in
                let common = min(x.count, y.count)
                let compared = common == 0 ? 0 : memcmp(x.baseAddress!, y.baseAddress!, common)
                return compared != 0 ? Int(compared) : x.count - y.count
            }
        }
        if order != 0 { return order }
        return withUnsafeBytes(of: a.id.uuid) { x in
            withUnsafeBytes(of: b.id.uuid) { y in Int(memcmp(x.baseAddress!, y.baseAddress!, 16)) }
        }
    }
}
