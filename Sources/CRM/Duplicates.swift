import Foundation
import ReplicaStore
import SyncModel

/// The forms of an e-mail address and a phone number that two people typing the same contact
/// would agree on, so that "Ann@Example.com " and "ann@example.com", or "+44 (20) 7946-0958"
/// and "020 7946 0958", are recognised as one.
public enum ContactKey {
    /// Trimmed and lowercased; `nil` when empty.
    public static func email(_ raw: String) -> String? {
        let email = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        return email.isEmpty ? nil : email
    }

    /// Digits only, a leading `+` kept; `nil` with fewer than 5 digits (an extension, a typo).
    ///
    /// With `defaultCountryPrefix` (such as `+44`), a number without `+` is made international
    /// as people dial it in that country: `00` becomes `+`, a single trunk `0` is replaced by the
    /// prefix, anything else gets the prefix in front.
    public static func phone(_ raw: String, defaultCountryPrefix: String? = nil) -> String? {
        let trimmed = raw.drop { $0 == " " || $0 == "\t" }
        let international = trimmed.first == "+"
        let digits = String(trimmed.unicodeScalars.filter { $0.value >= 0x30 && $0.value <= 0x39 }.map(Character.init))
        guard digits.count >= 5 else { return nil }
        if international { return "+" + digits }
        guard let prefix = defaultCountryPrefix.flatMap(normalisedPrefix) else { return digits }
        if digits.hasPrefix("00") { return "+" + digits.dropFirst(2) }
        return prefix + (digits.hasPrefix("0") ? digits.dropFirst() : Substring(digits))
    }

    private static func normalisedPrefix(_ prefix: String) -> String? {
        let digits = prefix.filter(\.isASCII).filter(\.isNumber)
        return digits.isEmpty ? nil : "+" + digits
    }
}

/// An existing record that a new or imported one likely duplicates, and why.
public struct DuplicateMatch: Sendable, Equatable, Codable {
    public var record: UUID
    /// `email` or `phone`.
    public var matchedBy: String
    /// The normalised value both records share.
    public var key: String

    public init(record: UUID, matchedBy: String, key: String) {
        self.record = record
        self.matchedBy = matchedBy
        self.key = key
    }
}

/// Finds the contacts (or leads) that a record likely duplicates by normalised e-mail
/// (`email`, `secondary_email`) and phone (`phone`, `mobile`).
///
/// Built once from a store and then extended with `add`, so that an import of many rows checks
/// each one against the store and against the rows before it without querying per row.
public struct DuplicateFinder: Sendable {
    public static let emailFields = ["email", "secondary_email"]
    public static let phoneFields = ["phone", "mobile"]

    public let type: String
    public let defaultCountryPrefix: String?
    private var byKey: [String: UUID] = [:]

    /// An empty finder for records of `type`.
    public init(type: String, defaultCountryPrefix: String? = nil) {
        self.type = type
        self.defaultCountryPrefix = defaultCountryPrefix
    }

    /// A finder that knows every live record of `type` in `store` (merged-away ones excluded: they
    /// point at their survivor, which is the one to match).
    public init(store: ReplicaStore, type: String, defaultCountryPrefix: String? = nil) throws {
        self.init(type: type, defaultCountryPrefix: defaultCountryPrefix)
        let fields = Self.emailFields + Self.phoneFields
        try store.scan(type, fields: fields + ["merged_into"]) { id, values in
            guard values[fields.count] == .null else { return }
            add(id, Dictionary(uniqueKeysWithValues: zip(fields, values)))
        }
    }

    /// The normalised keys of a record's values, e-mails first.
    public func keys(_ values: [String: FieldValue]) -> [(matchedBy: String, key: String)] {
        var keys: [(String, String)] = []
        for field in Self.emailFields {
            if case .text(let raw)? = values[field], let email = ContactKey.email(raw) { keys.append(("email", "e:" + email)) }
        }
        for field in Self.phoneFields {
            if case .text(let raw)? = values[field], let phone = ContactKey.phone(raw, defaultCountryPrefix: defaultCountryPrefix) {
                keys.append(("phone", "p:" + phone))
            }
        }
        return keys
    }

    /// Remembers a record, so later records that share its e-mail or phone match it. The first
    /// record with a key keeps it.
    public mutating func add(_ id: UUID, _ values: [String: FieldValue]) {
        for (_, key) in keys(values) where byKey[key] == nil { byKey[key] = id }
    }

    /// The known records `values` likely duplicate, each once, best evidence (e-mail) first.
    public func matches(_ values: [String: FieldValue]) -> [DuplicateMatch] {
        var found: [DuplicateMatch] = []
        for (matchedBy, key) in keys(values) {
            if let id = byKey[key], !found.contains(where: { $0.record == id }) {
                found.append(DuplicateMatch(record: id, matchedBy: matchedBy, key: String(key.dropFirst(2))))
            }
        }
        return found
    }
}
