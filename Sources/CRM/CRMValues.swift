import Foundation
import SyncModel

/// Typed reads of a record's fields for the rules and reports, which treat a value of the wrong
/// kind as absent: a replica may hold a field written by a newer schema, and a report must not
/// fail on it.
extension RecordState {
    /// The text of `field`, `nil` when it is unset, empty or not text.
    public func text(_ field: String) -> String? { fields[field]?.value.crmText }

    /// The number in `field` (real or integer), `nil` when it is unset or not a number.
    public func number(_ field: String) -> Double? { fields[field]?.value.crmNumber }

    /// The integer in `field`, `nil` when it is unset or not an integer.
    public func integer(_ field: String) -> Int64? {
        guard case .integer(let value)? = fields[field]?.value else { return nil }
        return value
    }

    /// The boolean in `field`; unset reads as `false`, as a checkbox nobody ticked.
    public func flag(_ field: String) -> Bool { fields[field]?.value.crmFlag ?? false }

    /// The id in a reference field, `nil` when it is unset or not a UUID.
    public func reference(_ field: String) -> UUID? { fields[field]?.value.crmReference }
}

/// The same reads on a value alone, for rules that read projected fields (`ReplicaStore.scan`)
/// rather than whole records: one definition, so both read a value alike.
extension FieldValue {
    var crmText: String? {
        guard case .text(let value) = self, !value.isEmpty else { return nil }
        return value
    }

    var crmNumber: Double? {
        switch self {
        case .real(let value): value
        case .integer(let value): Double(value)
        default: nil
        }
    }

    var crmFlag: Bool {
        guard case .bool(let value) = self else { return false }
        return value
    }

    var crmReference: UUID? { crmText.flatMap { UUID(text: $0) } }
}

/// The two date forms of the CRM schema, `YYYY-MM-DD` days and `YYYY-MM-DDTHH:MM:SSZ` instants,
/// parsed and written by hand: the rules and reports read them for every record of a store, and
/// the result must not depend on the locale or time zone of the machine that runs them.
public enum CRMDate {
    static let secondsPerDay: Int64 = 86_400

    /// Days since 1970-01-01 of a `YYYY-MM-DD` text (or of the day part of an instant).
    public static func day(_ text: String) -> Int64? {
        let utf8 = Array(text.utf8.prefix(10))
        guard utf8.count == 10, utf8[4] == UInt8(ascii: "-"), utf8[7] == UInt8(ascii: "-"),
              let year = digits(utf8[0..<4]), let month = digits(utf8[5..<7]), let day = digits(utf8[8..<10]),
              (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year) else { return nil }
        return daysFromCivil(year: year, month: month, day: day)
    }

    /// Seconds since 1970 of an instant `YYYY-MM-DDTHH:MM:SSZ` (fractions of a second allowed);
    /// a bare day reads as its midnight UTC, so either form can stand where an instant is needed.
    public static func instant(_ text: String) -> Int64? {
        guard let day = day(text) else { return nil }
        let utf8 = Array(text.utf8)
        if utf8.count == 10 { return day * secondsPerDay }
        guard utf8.count >= 20, utf8[10] == UInt8(ascii: "T"), utf8[13] == UInt8(ascii: ":"), utf8[16] == UInt8(ascii: ":"),
              utf8.last == UInt8(ascii: "Z"),
              let hour = digits(utf8[11..<13]), let minute = digits(utf8[14..<16]), let second = digits(utf8[17..<19]),
              hour < 24, minute < 60, second < 61 else { return nil }
        return day * secondsPerDay + Int64(hour * 3600 + minute * 60 + second)
    }

    /// The instant `seconds` after 1970 as the schema writes it.
    public static func format(instant seconds: Int64) -> String {
        let day = seconds.floorDivided(by: secondsPerDay)
        let rest = seconds - day * secondsPerDay
        return format(day: day) + "T" + pad(Int(rest / 3600), 2) + ":" + pad(Int(rest / 60 % 60), 2) + ":" + pad(Int(rest % 60), 2) + "Z"
    }

    /// The day `day` (days since 1970) as `YYYY-MM-DD`.
    public static func format(day: Int64) -> String {
        let (year, month, dayOfMonth) = civil(fromDays: day)
        return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(dayOfMonth, 2)
    }

    /// `YYYY-MM` of a day, the key of monthly reports.
    public static func month(ofDay day: Int64) -> String {
        String(format(day: day).prefix(7))
    }

    /// The Monday that starts the ISO week holding `day`.
    public static func weekStart(ofDay day: Int64) -> Int64 {
        // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday = 0.
        day - (day + 3).floorModulo(7)
    }

    /// Seconds since 1970 of a `Date`, the form the rules take their clock in.
    public static func seconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }

    private static func digits(_ bytes: ArraySlice<UInt8>) -> Int? {
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }

    private static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    // Howard Hinnant's days-from-civil and its inverse, in the proleptic Gregorian calendar.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = y.floorDivided(by: 400)
        let yearOfEra = y - era * 400
        let m = Int64(month)
        let dayOfYear = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int64) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = z.floorDivided(by: 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month), Int(day))
    }
}

extension Int64 {
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }

    func floorModulo(_ divisor: Int64) -> Int64 { self - floorDivided(by: divisor) * divisor }
}

/// Text clean-up shared by imports and duplicate keys.
enum CRMText {
    /// `text` without leading and trailing white space. Most values have none, and checking the
    /// two ends costs far less than Foundation's trimming, which an import runs for every field.
    static func trimmed(_ text: String) -> String {
        guard let first = text.utf8.first, let last = text.utf8.last else { return text }
        let isSpace = { (b: UInt8) in b == 0x20 || (b >= 0x09 && b <= 0x0D) || b >= 0x80 }
        guard isSpace(first) || isSpace(last) else { return text }
        // The scalars Foundation's `whitespacesAndNewlines` holds: Unicode's White_Space, and
        // the zero-width space. Foundation's trimming, through NSString, cost an import of names
        // ending in a letter beyond ASCII more than converting the value.
        let scalars = text.unicodeScalars
        let isWhite = { (scalar: Unicode.Scalar) in scalar.properties.isWhitespace || scalar == "\u{200B}" }
        guard let start = scalars.firstIndex(where: { !isWhite($0) }),
              let end = scalars.lastIndex(where: { !isWhite($0) }) else { return "" }
        return String(scalars[start...end])
    }

    /// `text` with each run of white space inside it as one space. Most values have none but
    /// single spaces, which the bytes show without looking at any scalar's properties.
    static func spacedOnce(_ text: String) -> String {
        var previousWasSpace = false
        let plain = text.utf8.allSatisfy { byte in
            defer { previousWasSpace = byte == 0x20 }
            return byte < 0x80 && !(byte >= 0x09 && byte <= 0x0D) && !(byte == 0x20 && previousWasSpace)
        }
        guard !plain else { return text }
        var result = String.UnicodeScalarView()
        var inSpace = false
        for scalar in text.unicodeScalars {
            if scalar.properties.isWhitespace || scalar == "\u{200B}" {
                if !inSpace { result.append(" ") }
                inSpace = true
            } else {
                result.append(scalar)
                inSpace = false
            }
        }
        return String(result)
    }
}

