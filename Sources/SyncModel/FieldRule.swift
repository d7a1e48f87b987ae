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

    /// A live record must have a non-null value. Tombstones are not checked.
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
