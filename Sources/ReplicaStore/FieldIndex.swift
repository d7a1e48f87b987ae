import Foundation
import SQLite
import SyncModel

/// Indexed lookups: `records(ofType:)` reads every record of a type, which a screen listing an
/// owner's opportunities or an account's contacts cannot afford on a large tenant. The fields
/// apps query are kept in `field_index`, maintained with the record row in the same
/// transaction, on local writes and on applies from sync alike.
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

    /// Whether records of `type` have entries in the index.
    func indexes(_ type: String) -> Bool {
        indexedFieldsByType[type] != nil
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
        let entries = indexEntries(state)
        let previous = old.map(indexEntries) ?? []
        guard !entries.isEmpty || !previous.isEmpty else { return }
        let gone = previous.subtracting(entries)
        if !gone.isEmpty {
            let remove = try db.cached("DELETE FROM field_index WHERE type = ? AND field = ? AND value = ? AND id = ?")
            for entry in gone {
                remove.reset()
                try bind(entry, of: state, to: remove)
                try remove.step()
            }
        }
        if indexInsertStatement == nil {
            indexInsertStatement = try db.cached("INSERT OR IGNORE INTO field_index (type, field, value, id) VALUES (?, ?, ?, ?)")
        }
        let insert = indexInsertStatement!
        for entry in entries.subtracting(previous) {
            insert.reset()
            try bind(entry, of: state, to: insert)
            try insert.step()
        }
    }

    private func bind(_ entry: IndexEntry, of state: RecordState, to statement: Statement) throws {
        try statement.bind(text: state.type, at: 1)
        try statement.bind(text: entry.field, at: 2)
        try statement.bind(text: entry.value, at: 3)
        try statement.bind(uuid: state.id, at: 4)
    }

    /// Lower-cased words, split at anything that is not a letter or a digit. Scalars rather
    /// than characters: a name is split the same way, at a fraction of the cost.
    static func words(_ text: String) -> [String] {
        text.lowercased().unicodeScalars.split { !$0.properties.isAlphabetic && $0.properties.numericType == nil }
            .map { String(String.UnicodeScalarView($0)) }
    }

    /// Builds the index again when the options name other fields than the index was built for
    /// (a new store, a store from before the index, a program that indexes more).
    func ensureFieldIndex() throws {
        let config = "indexed:" + options.indexedFields.sorted().joined(separator: ",")
            + ";search:" + options.searchFields.sorted().joined(separator: ",")
        let built = try db.query("SELECT fields FROM field_index_config") { $0.string(0) }.first
        guard built != config else { return }
        try write {
            try db.run("DELETE FROM field_index")
            let types = schema.types.keys.filter(indexes)
            for type in types {
                for state in try records(ofType: type) { try updateFieldIndex(state, old: nil) }
            }
            try db.run("INSERT OR REPLACE INTO field_index_config (singleton, fields) VALUES (1, ?)", [config])
        }
    }

    /// The live records of `type` whose text `field` is exactly `value`, in change order.
    ///
    /// Reads the index when `field` is one of `Options.indexedFields`; otherwise reads every
    /// record of the type, so the answer is the same either way and only the cost differs.
    public func records(ofType type: String, where field: String, equals value: String) throws -> [RecordState] {
        guard options.indexedFields.contains(field) else {
            return try records(ofType: type).filter { $0.fields[field]?.value == .text(value) }
        }
        return try db.query("""
            SELECT r.id, r.type, r.vector, r.state FROM field_index f JOIN records r ON r.id = f.id
            WHERE f.type = ? AND f.field = ? AND f.value = ? AND r.deleted = 0 ORDER BY r.seq
            """, [type, field, value]) { try decodeRow($0) }
    }

    /// The live records of `type` with, for every word of `text`, a word in one of their
    /// search fields that starts with it (case-insensitive): "ann sm" finds "Anna Smith".
    /// At most `limit` of them, in change order.
    public func search(_ text: String, ofType type: String, limit: Int = 100) throws -> [RecordState] {
        let words = Self.words(text)
        guard let first = words.max(by: { $0.count < $1.count }) else { return [] }
        // The longest word narrows the index range most; the others are checked on the records.
        let candidates = try db.query("""
            SELECT r.id, r.type, r.vector, r.state FROM field_index f JOIN records r ON r.id = f.id
            WHERE f.type = ? AND f.field = ? AND f.value >= ? AND f.value < ? AND r.deleted = 0
            GROUP BY r.id ORDER BY r.seq
            """, [type, Self.searchKey, first, first + "\u{10FFFF}"]) { try decodeRow($0) }
        return Array(candidates.lazy.filter { state in
            let held = state.fields.compactMap { name, field -> [String]? in
                guard self.options.searchFields.contains(name), case .text(let text) = field.value else { return nil }
                return Self.words(text)
            }.joined()
            return words.allSatisfy { word in held.contains { $0.hasPrefix(word) } }
        }.prefix(limit))
    }
}
