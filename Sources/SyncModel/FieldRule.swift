/// What a field's value must look like beyond its storage kind: the business constraints a CRM
/// puts on a record (a required name, a stage from a list, an e-mail address that parses, a
/// reference to an existing account).
///
/// Rules are data, part of the `Schema`, so that a device checks a change before it leaves and
/// the server checks it again for a client that skipped the check.
public struct FieldRule: Sendable, Equatable, Codable {
    /// How a text value must be written.
    public enum Format: String, Sendable, Equatable, Codable, CaseIterable {
        /// `local@domain.tld`.
        case email
        /// `http://` or `https://` and a host.
        case url
        /// Digits, spaces and `+ - ( ) .`, at least 5 digits.
        case phone
        /// A calendar day, `YYYY-MM-DD`.
        case date
        /// An instant, ISO 8601 in UTC: `YYYY-MM-DDTHH:MM:SSZ`.
        case dateTime
        /// An ISO 4217 code: three capital letters.
        case currency
    }

    /// A live record must have a non-null value (for text, a non-empty one). Tombstones are not
    /// checked.
    public var required: Bool
    /// The text values allowed; `nil` allows any.
    public var choices: [String]?
    public var format: Format?
    /// The text holds the id (UUID string) of a record of this type in the same store.
    public var reference: String?
    /// Bounds for integer and real values, inclusive.
    public var minimum: Double?
    public var maximum: Double?

    public init(required: Bool = false, choices: [String]? = nil, format: Format? = nil, reference: String? = nil,
                minimum: Double? = nil, maximum: Double? = nil) {
        self.required = required
        self.choices = choices
        self.format = format
        self.reference = reference
        self.minimum = minimum
        self.maximum = maximum
    }

    /// A field every live record must have.
    public static let required = FieldRule(required: true)
    /// One of these values.
    public static func oneOf(_ choices: [String], required: Bool = false) -> FieldRule {
        FieldRule(required: required, choices: choices)
    }
    /// The id of a record of `type`.
    public static func references(_ type: String, required: Bool = false) -> FieldRule {
        FieldRule(required: required, reference: type)
    }
    /// Text in `format`.
    public static func formatted(_ format: Format, required: Bool = false) -> FieldRule {
        FieldRule(required: required, format: format)
    }
    /// A number within bounds.
    public static func range(_ minimum: Double?, _ maximum: Double? = nil, required: Bool = false) -> FieldRule {
        FieldRule(required: required, minimum: minimum, maximum: maximum)
    }
}

extension FieldRule {
    /// Why `value` breaks the rule, or `nil` when it does not. Null passes: whether a value must
    /// be there is `required`, a property of the whole live record (`Schema.validate`), because a
    /// local transaction may fill a required field after the write that created the record.
    public func violation(of value: FieldValue) -> String? {
        switch value {
        case .text(let text):
            var text = text
            return text.withUTF8 { violation(text: UnsafeRawBufferPointer($0)) }
        case .integer(let v): return violation(number: Double(v))
        case .real(let v): return violation(number: v)
        case .null, .bool, .blob: return nil
        }
    }

    /// `violation(of:)` for a text value as UTF-8 bytes, so encoded records are checked in place.
    func violation(text: UnsafeRawBufferPointer) -> String? {
        if let choices, !choices.contains(where: { $0.utf8.elementsEqual(text) }) {
            return "'\(String(decoding: text, as: UTF8.self))' is not one of \(choices.joined(separator: ", "))"
        }
        if let format, !Self.matches(text, format) {
            return "'\(String(decoding: text, as: UTF8.self))' is not a valid \(format.description)"
        }
        if let reference, !Self.isUUID(text) {
            return "'\(String(decoding: text, as: UTF8.self))' is not a record id (a UUID) of a record of type \(reference)"
        }
        return nil
    }

    /// `violation(of:)` for a number.
    func violation(number: Double) -> String? {
        if let minimum, number < minimum { return "\(Self.show(number)) is below the minimum \(Self.show(minimum))" }
        if let maximum, number > maximum { return "\(Self.show(number)) is above the maximum \(Self.show(maximum))" }
        return nil
    }

    /// Whole numbers without a fraction, as a user wrote them.
    private static func show(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }

    static func matches(_ text: UnsafeRawBufferPointer, _ format: Format) -> Bool {
        switch format {
        case .email: isEmail(text)
        case .url: isURL(text)
        case .phone: isPhone(text)
        case .date: isDate(text[...])
        case .dateTime: isDateTime(text)
        case .currency: text.count == 3 && text.allSatisfy { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
        }
    }

    /// A UUID string as `UUID(uuidString:)` reads it: 8-4-4-4-12 hexadecimal digits.
    static func isUUID(_ text: UnsafeRawBufferPointer) -> Bool {
        guard text.count == 36 else { return false }
        for (index, byte) in text.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                guard isHexDigit(byte) else { return false }
            }
        }
        return true
    }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || ((b | 0x20) >= UInt8(ascii: "a") && (b | 0x20) <= UInt8(ascii: "f"))
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// Visible ASCII or any non-ASCII byte: what may appear in an address or a URL.
    private static func isVisible(_ b: UInt8) -> Bool { b > 0x20 && b != 0x7F }

    /// `local@domain.tld`: one `@`, a non-empty local part, a domain of non-empty dot-separated
    /// labels with at least two of them, no spaces or control characters, at most 254 bytes.
    private static func isEmail(_ text: UnsafeRawBufferPointer) -> Bool {
        guard text.count <= 254, text.allSatisfy(isVisible), let at = text.firstIndex(of: UInt8(ascii: "@")),
              at > 0 else { return false }
        let domain = text[(at + 1)...]
        guard !domain.contains(UInt8(ascii: "@")) else { return false }
        let labels = domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    /// `http://` or `https://`, then a host of at least one byte, no spaces.
    private static func isURL(_ text: UnsafeRawBufferPointer) -> Bool {
        let lowered = text.prefix(8).map { $0 | 0x20 }
        let scheme: Int
        if lowered.starts(with: Array("https://".utf8)) { scheme = 8 }
        else if lowered.starts(with: Array("http://".utf8)) { scheme = 7 }
        else { return false }
        let rest = text[scheme...]
        guard let first = rest.first, first != UInt8(ascii: "/"), text.count <= 2048 else { return false }
        return rest.allSatisfy(isVisible)
    }

    /// Digits, spaces and `+ - ( ) .`, at least 5 digits, at most 32 bytes.
    private static func isPhone(_ text: UnsafeRawBufferPointer) -> Bool {
        guard text.count <= 32 else { return false }
        var digits = 0
        for b in text {
            if isDigit(b) { digits += 1; continue }
            guard b == UInt8(ascii: " ") || b == UInt8(ascii: "+") || b == UInt8(ascii: "-") || b == UInt8(ascii: "(")
                    || b == UInt8(ascii: ")") || b == UInt8(ascii: ".") else { return false }
        }
        return digits >= 5
    }

    /// `YYYY-MM-DD`, a day that exists in that month (leap years included).
    private static func isDate(_ text: Slice<UnsafeRawBufferPointer>) -> Bool {
        guard text.count == 10 else { return false }
        let b = Array(text)
        guard b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              let year = number(b[0..<4]), let month = number(b[5..<7]), let day = number(b[8..<10]),
              (1...12).contains(month), day >= 1 else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return day <= days
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    private static func isDateTime(_ text: UnsafeRawBufferPointer) -> Bool {
        guard text.count == 20, isDate(text[0..<10]) else { return false }
        let b = Array(text[10...])
        guard b[0] == UInt8(ascii: "T"), b[3] == UInt8(ascii: ":"), b[6] == UInt8(ascii: ":"), b[9] == UInt8(ascii: "Z"),
              let hour = number(b[1..<3]), let minute = number(b[4..<6]), let second = number(b[7..<9]) else { return false }
        return hour < 24 && minute < 60 && second < 60
    }

    private static func number(_ digits: ArraySlice<UInt8>) -> Int? {
        var value = 0
        for d in digits {
            guard isDigit(d) else { return nil }
            value = value * 10 + Int(d - UInt8(ascii: "0"))
        }
        return value
    }
}

extension FieldRule.Format: CustomStringConvertible {
    public var description: String {
        switch self {
        case .email: "e-mail address"
        case .url: "http or https URL"
        case .phone: "phone number (digits, spaces and + - ( ) ., at least 5 digits)"
        case .date: "date (YYYY-MM-DD)"
        case .dateTime: "instant (YYYY-MM-DDTHH:MM:SSZ, UTC)"
        case .currency: "currency code (three capital letters, ISO 4217)"
        }
    }
}
