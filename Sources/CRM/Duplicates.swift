import Foundation
import ReplicaStore
import SyncModel

/// The forms of an e-mail address and a phone number that two people typing the same contact
/// would agree on, so that "Ann@Example.com " and "ann@example.com", or "+44 (20) 7946-0958"
/// and "020 7946 0958", are recognised as one.
public enum ContactKey {
    /// Trimmed and lowercased; `nil` when empty.
    public static func email(_ raw: String) -> String? {
        let email = CRMText.trimmed(raw).lowercased()
        return email.isEmpty ? nil : email
    }

    /// Digits only, a leading `+` kept; `nil` with fewer than 5 digits (an extension, a typo).
    ///
    /// With `defaultCountryPrefix` (such as `+44`), a number without `+` is made international
    /// as people dial it in that country: `00` becomes `+`, a single trunk `0` is replaced by the
    /// prefix, anything else gets the prefix in front.
    public static func phone(_ raw: String, defaultCountryPrefix: String? = nil) -> String? {
        // On the bytes: this runs for every phone of every imported row.
        var digits: [UInt8] = []
        digits.reserveCapacity(raw.utf8.count + 1)
        var international = false
        for byte in raw.utf8 {
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                digits.append(byte)
            } else if byte == UInt8(ascii: "+") && digits.isEmpty {
                international = true
            }
        }
        guard digits.count >= 5 else { return nil }
        let number = String(decoding: digits, as: UTF8.self)
        if international { return "+" + number }
        guard let prefix = defaultCountryPrefix.flatMap(normalisedPrefix) else { return number }
        if number.hasPrefix("00") { return "+" + number.dropFirst(2) }
        return prefix + (number.hasPrefix("0") ? number.dropFirst() : Substring(number))
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
    /// The first record with each key. An import of a million contacts keeps some two million
    /// keys here: by their digests, not their text.
    private var byKey: [Digest: UUID] = [:]

    /// A key as the finder keeps it: 16 bytes, where its text took a string allocation of its
    /// own besides. Two 64-bit hashes of the key, differently salted, with the process's random
    /// hashing seed: two different keys share a digest with a chance of about 2^-128, so among
    /// a million keys never.
    private struct Digest: Hashable {
        let first: Int
        let second: Int

        init(_ key: String) {
            var hasher = Hasher()
            hasher.combine(0 as UInt8)
            hasher.combine(key)
            first = hasher.finalize()
            hasher = Hasher()
            hasher.combine(1 as UInt8)
            hasher.combine(key)
            second = hasher.finalize()
        }

        func hash(into hasher: inout Hasher) { hasher.combine(first) }
    }

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
    public mutating func add(_ id: UUID, _ values: [String: FieldValue]) { add(id, keys: keys(values)) }

    /// `add` with the record's `keys` computed already.
    public mutating func add(_ id: UUID, keys: [(matchedBy: String, key: String)]) {
        for (_, key) in keys {
            let digest = Digest(key)
            if byKey[digest] == nil { byKey[digest] = id }
        }
    }

    /// The known records `values` likely duplicate, each once, best evidence (e-mail) first.
    public func matches(_ values: [String: FieldValue]) -> [DuplicateMatch] { matches(keys: keys(values)) }

    /// `matches` with the record's `keys` computed already.
    public func matches(keys: [(matchedBy: String, key: String)]) -> [DuplicateMatch] {
        var found: [DuplicateMatch] = []
        for (matchedBy, key) in keys {
            if let id = byKey[Digest(key)], !found.contains(where: { $0.record == id }) {
                found.append(DuplicateMatch(record: id, matchedBy: matchedBy, key: String(key.dropFirst(2))))
            }
        }
        return found
    }
}
