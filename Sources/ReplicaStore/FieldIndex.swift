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

    /// Whether records of `type` have entries in the index.
    func indexes(_ type: String) -> Bool {
        guard let fields = schema.types[type]?.fields else { return false }
        return fields.keys.contains { options.indexedFields.contains($0) || options.searchFields.contains($0) }
    }

    /// Replaces the index entries of `state`'s record; a tombstone has none.
    func updateFieldIndex(_ state: RecordState, isNew: Bool) throws {
        guard indexes(state.type) else { return }
        if !isNew {
            let remove = try db.cached("DELETE FROM field_index WHERE id = ?")
            remove.reset()
            try remove.bind(uuid: state.id, at: 1)
            try remove.step()
        }
        guard !state.isDeleted else { return }
        var entries: Set<[String]> = []
        for (field, fieldState) in state.fields {
            guard case .text(let text) = fieldState.value else { continue }
            if options.indexedFields.contains(field) { entries.insert([field, text]) }
            if options.searchFields.contains(field) {
                for word in Self.words(text) { entries.insert([Self.searchKey, word]) }
            }
        }
        let insert = try db.cached("INSERT OR IGNORE INTO field_index (type, field, value, id) VALUES (?, ?, ?, ?)")
        for entry in entries {
            insert.reset()
            try insert.bind(text: state.type, at: 1)
            try insert.bind(text: entry[0], at: 2)
            try insert.bind(text: entry[1], at: 3)
            try insert.bind(uuid: state.id, at: 4)
            try insert.step()
        }
    }

    /// Lower-cased words, split at anything that is not a letter or a digit.
    static func words(_ text: String) -> [String] {
        text.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init)
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
                for state in try records(ofType: type) { try updateFieldIndex(state, isNew: true) }
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
