import Foundation

/// Tenant ids are slugs: they name files in a server's data directory and appear in URLs and
/// logs, so nothing that could escape a directory, hide in a terminal or confuse a shell passes.
public enum TenantID {
    /// The longest slug.
    public static let maxLength = 63

    /// 1 to 63 characters of `a-z 0-9 -`, not starting or ending with `-`.
    public static func isValid(_ slug: String) -> Bool { problem(with: slug) == nil }

    /// Why `slug` is not a valid tenant id, in words an operator can act on; `nil` when it is.
    public static func problem(with slug: String) -> String? {
        let bytes = slug.utf8
        if bytes.isEmpty { return "a tenant id cannot be empty" }
        if bytes.count > maxLength { return "a tenant id has at most \(maxLength) characters (this one has \(slug.count))" }
        let allowed = { (b: UInt8) in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-")
        }
        if let bad = bytes.first(where: { !allowed($0) }) {
            let shown = bad >= 0x21 && bad < 0x7F ? "'\(Character(Unicode.Scalar(bad)))'" : String(format: "byte 0x%02X", bad)
            return "a tenant id has only lowercase letters, digits and '-' (found \(shown))"
        }
        if bytes.first == UInt8(ascii: "-") || bytes.last == UInt8(ascii: "-") {
            return "a tenant id cannot start or end with '-'"
        }
        return nil
    }

    /// The slug as shown in an error message: short, and with control characters escaped.
    public static func quoted(_ slug: String) -> String {
        "'" + String(slug.prefix(64)).unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined() + "'"
    }
}
