/// Why a value of the sync model was refused. Each case names what was wrong, so that a bad
/// record from a peer can be reported precisely and the store left untouched.
public enum ModelError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidReplicaID(String)
    /// A counter that is zero, negative or beyond `Int64.max`.
    case invalidCounter(replica: String, value: String)
    case unknownRecordType(String)
    case recordTypeMismatch(record: String, local: String, remote: String)
    case invalidFieldName(record: String, field: String)
    /// A field whose value does not have the type the schema declares.
    case wrongFieldType(record: String, field: String, expected: String, found: String)
    case invalidFieldValue(record: String, field: String, reason: String)
    /// A dot that the record's own version vector does not cover: the state is inconsistent.
    case dotOutsideVector(record: String, dot: String)
    /// Two different writes carrying the same dot: a replica reused a counter, or a peer lies.
    case dotReused(record: String, field: String, dot: String)
    case malformedEncoding(String)

    public var description: String {
        switch self {
        case let .invalidReplicaID(id): return "invalid replica id '\(id)': 1 to 64 characters of A-Z a-z 0-9 . _ : -"
        case let .invalidCounter(replica, value): return "invalid counter \(value) for replica \(replica): must be between 1 and \(Int64.max)"
        case let .unknownRecordType(type): return "unknown record type '\(type)'"
        case let .recordTypeMismatch(record, local, remote): return "record \(record) is a '\(local)' here but a '\(remote)' in the incoming state"
        case let .invalidFieldName(record, field): return "record \(record): invalid field name '\(field)'"
        case let .wrongFieldType(record, field, expected, found): return "record \(record), field '\(field)': expected \(expected), found \(found)"
        case let .invalidFieldValue(record, field, reason): return "record \(record), field '\(field)': \(reason)"
        case let .dotOutsideVector(record, dot): return "record \(record): write \(dot) is not covered by the record's version vector"
        case let .dotReused(record, field, dot): return "record \(record), field '\(field)': two different writes carry the same dot \(dot)"
        case let .malformedEncoding(reason): return "malformed record encoding: \(reason)"
        }
    }
}
