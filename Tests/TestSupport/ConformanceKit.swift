import Foundation
import SyncModel

/// The language-neutral JSON of Protocol/conformance (its README describes every field), read
/// and written by the tests that generate the kit and prove it on our own code.
///
/// 64-bit integers (counters, timestamps, integer values) are decimal strings, as in the protobuf
/// JSON mapping: HLC timestamps exceed 2^53, which a JavaScript number cannot hold exactly.
public enum ConformanceKit {
    /// Protocol/conformance in this checkout.
    public static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/conformance")

    /// Whether this run rewrites the kit's files (`RAPPORT_WRITE_VECTORS=1`) instead of only
    /// checking them, as for Protocol/vectors.
    public static var writing: Bool { ProcessInfo.processInfo.environment["RAPPORT_WRITE_VECTORS"] == "1" }

    /// Sorted keys and indentation, so that a regenerated file differs only where a vector did.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value) + Data("\n".utf8)
    }

    /// Replaces the `.json` files of `directory` by `files` (named without `.json`), so that a
    /// vector taken out of the generator leaves no stale file behind.
    public static func rewrite(_ directory: URL, _ files: [(name: String, json: Data)]) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path) where file.hasSuffix(".json") {
            try FileManager.default.removeItem(at: directory.appendingPathComponent(file))
        }
        for file in files { try file.json.write(to: directory.appendingPathComponent("\(file.name).json")) }
    }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    public static func bytes(hex: String) throws -> [UInt8] {
        let digits = Array(hex.filter { !$0.isWhitespace }.utf8)
        guard digits.count.isMultiple(of: 2) else { throw KitError("odd number of hex digits") }
        return try stride(from: 0, to: digits.count, by: 2).map { i in
            guard let byte = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else {
                throw KitError("not hex: \(String(decoding: digits[i..<i + 2], as: UTF8.self))")
            }
            return byte
        }
    }
}

public struct KitError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

// MARK: Values, dots, sides

/// A field value as an object with one key naming its kind.
public enum KitValue: Codable, Hashable, Sendable {
    case null, boolean(Bool), integer(String), real(Double), text(String), blob(String)

    public init(_ value: FieldValue) {
        switch value {
        case .null: self = .null
        case .bool(let v): self = .boolean(v)
        case .integer(let v): self = .integer(String(v))
        case .real(let v): self = .real(v)
        case .text(let v): self = .text(v)
        case .blob(let v): self = .blob(ConformanceKit.hex(v))
        }
    }

    public func fieldValue() throws -> FieldValue {
        switch self {
        case .null: return .null
        case .boolean(let v): return .bool(v)
        case .integer(let v):
            guard let n = Int64(v) else { throw KitError("integer \(v)") }
            return .integer(n)
        case .real(let v): return .real(v)
        case .text(let v): return .text(v)
        case .blob(let v): return .blob(Data(try ConformanceKit.bytes(hex: v)))
        }
    }

    enum Key: String, CodingKey { case null, boolean, integer, real, text, blob }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        guard c.allKeys.count == 1, let key = c.allKeys.first else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "a value has exactly one key"))
        }
        switch key {
        case .null: self = .null
        case .boolean: self = .boolean(try c.decode(Bool.self, forKey: key))
        case .integer: self = .integer(try c.decode(String.self, forKey: key))
        case .real: self = .real(try c.decode(Double.self, forKey: key))
        case .text: self = .text(try c.decode(String.self, forKey: key))
        case .blob: self = .blob(try c.decode(String.self, forKey: key))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .null: try c.encode(true, forKey: .null)
        case .boolean(let v): try c.encode(v, forKey: .boolean)
        case .integer(let v): try c.encode(v, forKey: .integer)
        case .real(let v): try c.encode(v, forKey: .real)
        case .text(let v): try c.encode(v, forKey: .text)
        case .blob(let v): try c.encode(v, forKey: .blob)
        }
    }
}

public struct KitDot: Codable, Hashable, Sendable {
    public var replica: String
    public var counter: String

    public init(replica: String, counter: String) {
        self.replica = replica
        self.counter = counter
    }

    public init(_ dot: Dot) {
        replica = dot.replica.rawValue
        counter = String(dot.counter)
    }

    public func dot() throws -> Dot {
        guard let n = UInt64(counter) else { throw KitError("counter \(counter)") }
        return try Dot(replica: try ReplicaID(replica), counter: n)
    }
}

func timestamp(_ text: String) throws -> HLCTimestamp {
    guard let raw = UInt64(text) else { throw KitError("timestamp \(text)") }
    return HLCTimestamp(rawValue: raw)
}

func kitVector(_ entries: [String: String]) throws -> VersionVector {
    var result: [ReplicaID: UInt64] = [:]
    for (replica, counter) in entries {
        guard let n = UInt64(counter) else { throw KitError("counter \(counter)") }
        result[try ReplicaID(replica)] = n
    }
    return try VersionVector(result)
}

func kitEntries(_ vector: VersionVector) -> [String: String] {
    Dictionary(uniqueKeysWithValues: vector.sortedEntries.map { ($0.replica.rawValue, String($0.counter)) })
}

// MARK: Record states

public struct KitRegister: Codable, Hashable, Sendable {
    public var value: KitValue
    public var dot: KitDot
    public var timestamp: String

    public init(value: KitValue, dot: KitDot, timestamp: String) {
        self.value = value
        self.dot = dot
        self.timestamp = timestamp
    }
}

public struct KitContribution: Codable, Hashable, Sendable {
    public var added: String
    public var subtracted: String
    public var lastCounter: String
    public var lastTimestamp: String

    enum CodingKeys: String, CodingKey {
        case added, subtracted, lastCounter = "last_counter", lastTimestamp = "last_timestamp"
    }
}

/// A field: exactly one of `register` and `counter` (contributions by replica id).
public struct KitField: Codable, Hashable, Sendable {
    public var register: KitRegister?
    public var counter: [String: KitContribution]?

    public init(register: KitRegister? = nil, counter: [String: KitContribution]? = nil) {
        self.register = register
        self.counter = counter
    }
}

public struct KitLiveness: Codable, Hashable, Sendable {
    public var deleted: Bool
    public var dot: KitDot
    public var timestamp: String
    public var deletionContext: [String: String]

    public init(deleted: Bool, dot: KitDot, timestamp: String, deletionContext: [String: String]) {
        self.deleted = deleted
        self.dot = dot
        self.timestamp = timestamp
        self.deletionContext = deletionContext
    }

    enum CodingKeys: String, CodingKey { case deleted, dot, timestamp, deletionContext = "deletion_context" }
}

/// SPEC 3's bytes of the state: `vector` is `Record.vector`, `state` is `Record.state`.
public struct KitEncoding: Codable, Hashable, Sendable {
    public var vector: String
    public var state: String
}

/// One record state, in the neutral form and in SPEC 3's bytes (which session vectors leave out:
/// their records hold the device's id, known only once it enrolled).
public struct KitState: Codable, Hashable, Sendable {
    public var id: String
    public var type: String
    public var vector: [String: String]
    public var liveness: KitLiveness
    public var fields: [String: KitField]
    public var encoded: KitEncoding?

    public init(id: String, type: String, vector: [String: String], liveness: KitLiveness, fields: [String: KitField], encoded: KitEncoding?) {
        self.id = id
        self.type = type
        self.vector = vector
        self.liveness = liveness
        self.fields = fields
        self.encoded = encoded
    }

    public init(_ state: RecordState) {
        id = state.id.uuidString.lowercased()
        type = state.type
        vector = kitEntries(state.vector)
        liveness = KitLiveness(
            deleted: state.liveness.isDeleted, dot: KitDot(state.liveness.dot),
            timestamp: String(state.liveness.timestamp.rawValue), deletionContext: kitEntries(state.liveness.deletionContext))
        fields = state.fields.mapValues { field in
            switch field {
            case .register(let r):
                KitField(register: KitRegister(value: KitValue(r.value), dot: KitDot(r.dot), timestamp: String(r.timestamp.rawValue)))
            case .counter(let c):
                KitField(counter: Dictionary(uniqueKeysWithValues: c.contributions.map { replica, contribution in
                    (replica.rawValue, KitContribution(
                        added: String(contribution.added), subtracted: String(contribution.subtracted),
                        lastCounter: String(contribution.lastCounter), lastTimestamp: String(contribution.lastTimestamp.rawValue)))
                }))
            }
        }
        encoded = KitEncoding(vector: ConformanceKit.hex(RecordCodec.encode(state.vector)),
                              state: ConformanceKit.hex(RecordCodec.encodeState(state)))
    }

    /// The state the neutral form describes (`encoded` is not read: see `decodedFromBytes`).
    public func state() throws -> RecordState {
        guard let uuid = UUID(uuidString: id) else { throw KitError("record id \(id)") }
        var states: [String: FieldState] = [:]
        for (name, field) in fields {
            switch (field.register, field.counter) {
            case (let r?, nil):
                states[name] = .register(RegisterState(value: try r.value.fieldValue(), dot: try r.dot.dot(), timestamp: try timestamp(r.timestamp)))
            case (nil, let c?):
                var contributions: [ReplicaID: CounterContribution] = [:]
                for (replica, k) in c {
                    guard let added = UInt64(k.added), let subtracted = UInt64(k.subtracted), let last = UInt64(k.lastCounter) else {
                        throw KitError("counter \(name) of \(replica)")
                    }
                    contributions[try ReplicaID(replica)] = CounterContribution(
                        added: added, subtracted: subtracted, lastCounter: last, lastTimestamp: try timestamp(k.lastTimestamp))
                }
                states[name] = .counter(CounterState(contributions: contributions))
            default:
                throw KitError("field \(name) must have exactly one of register and counter")
            }
        }
        return RecordState(
            id: uuid, type: type, vector: try kitVector(vector),
            liveness: Liveness(isDeleted: liveness.deleted, dot: try liveness.dot.dot(), timestamp: try timestamp(liveness.timestamp),
                               deletionContext: try kitVector(liveness.deletionContext)),
            fields: states)
    }

    /// The state `encoded` holds, decoded by `RecordCodec`.
    public func decodedFromBytes() throws -> RecordState {
        guard let uuid = UUID(uuidString: id), let encoded else { throw KitError("record \(id) without bytes") }
        let vectorBytes = try ConformanceKit.bytes(hex: encoded.vector), stateBytes = try ConformanceKit.bytes(hex: encoded.state)
        return try vectorBytes.withUnsafeBytes { v in
            try stateBytes.withUnsafeBytes { s in try RecordCodec.decode(id: uuid, type: type, vector: v, state: s) }
        }
    }
}

// MARK: Conflicts

public struct KitSide: Codable, Hashable, Sendable {
    /// `nil` for a deletion.
    public var value: KitValue?
    public var dot: KitDot
    public var timestamp: String
    public var deletion: Bool

    public init(_ side: ConflictSide) {
        value = side.value.map(KitValue.init)
        dot = KitDot(side.dot)
        timestamp = String(side.timestamp.rawValue)
        deletion = side.isDeletion
    }

    enum CodingKeys: String, CodingKey { case value, dot, timestamp, deletion }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        value = try c.decodeIfPresent(KitValue.self, forKey: .value)
        dot = try c.decode(KitDot.self, forKey: .dot)
        timestamp = try c.decode(String.self, forKey: .timestamp)
        deletion = try c.decode(Bool.self, forKey: .deletion)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let value { try c.encode(value, forKey: .value) } else { try c.encodeNil(forKey: .value) }
        try c.encode(dot, forKey: .dot)
        try c.encode(timestamp, forKey: .timestamp)
        try c.encode(deletion, forKey: .deletion)
    }
}

public struct KitConflict: Codable, Hashable, Sendable, Comparable {
    public var kind: String
    /// `nil` (JSON null) for the record's existence.
    public var field: String?
    public var winner: KitSide
    public var loser: KitSide

    public init(_ conflict: Conflict) {
        kind = conflict.kind.rawValue
        field = conflict.field
        winner = KitSide(conflict.winner)
        loser = KitSide(conflict.loser)
    }

    enum CodingKeys: String, CodingKey { case kind, field, winner, loser }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        field = try c.decodeIfPresent(String.self, forKey: .field)
        winner = try c.decode(KitSide.self, forKey: .winner)
        loser = try c.decode(KitSide.self, forKey: .loser)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        if let field { try c.encode(field, forKey: .field) } else { try c.encodeNil(forKey: .field) }
        try c.encode(winner, forKey: .winner)
        try c.encode(loser, forKey: .loser)
    }

    /// The order conflicts are listed in: it carries no meaning (they compare as a multiset),
    /// but one order keeps regenerated files stable.
    public static func < (a: KitConflict, b: KitConflict) -> Bool {
        func key(_ c: KitConflict) -> [String] {
            [c.field ?? "", c.kind, c.loser.dot.replica, c.loser.dot.counter.leftPadded, c.winner.dot.replica, c.winner.dot.counter.leftPadded]
        }
        return key(a).lexicographicallyPrecedes(key(b))
    }
}

private extension String {
    var leftPadded: String { String(repeating: "0", count: max(0, 20 - count)) + self }
}

// MARK: Merge vectors

/// An expression over a vector's inputs: an input's name, or `[local, remote]`, the state of
/// merging `remote`'s result into `local`'s.
public indirect enum KitExpression: Codable, Hashable, Sendable, CustomStringConvertible {
    case input(String)
    case merge(KitExpression, KitExpression)

    public init(from decoder: any Decoder) throws {
        if let name = try? decoder.singleValueContainer().decode(String.self) {
            self = .input(name)
            return
        }
        var c = try decoder.unkeyedContainer()
        let local = try c.decode(KitExpression.self)
        let remote = try c.decode(KitExpression.self)
        guard c.isAtEnd else { throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "a merge has two operands")) }
        self = .merge(local, remote)
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .input(let name):
            var c = encoder.singleValueContainer()
            try c.encode(name)
        case .merge(let local, let remote):
            var c = encoder.unkeyedContainer()
            try c.encode(local)
            try c.encode(remote)
        }
    }

    public var description: String {
        switch self {
        case .input(let name): name
        case .merge(let l, let r): "(\(l) ⊔ \(r))"
        }
    }
}

public struct KitMergeCase: Codable, Hashable, Sendable {
    public var merge: KitExpression
    /// What the outermost merge did: `applied`, `merged` or `unchanged`.
    public var outcome: String
    /// Every conflict the merges of the expression found, as a multiset.
    public var conflicts: [KitConflict]

    public init(merge: KitExpression, outcome: String, conflicts: [KitConflict]) {
        self.merge = merge
        self.outcome = outcome
        self.conflicts = conflicts
    }
}

public struct MergeVector: Codable, Hashable, Sendable {
    public var name: String
    public var description: String
    /// The sections of Protocol/SPEC.md the vector exercises.
    public var spec: [String]
    /// Where the code's behaviour needs a word beyond the spec; absent otherwise.
    public var note: String?
    /// The fields the record type declares, with their kinds: what a replica store of the kit
    /// accepts. Fields of a state that are not listed are unknown to the schema, kept and passed on.
    public var declaredFields: [String: String]
    public var inputs: [String: KitState]
    /// The state every case ends in.
    public var result: KitState
    public var cases: [KitMergeCase]

    public init(name: String, description: String, spec: [String], note: String?, declaredFields: [String: String],
                inputs: [String: KitState], result: KitState, cases: [KitMergeCase]) {
        self.name = name
        self.description = description
        self.spec = spec
        self.note = note
        self.declaredFields = declaredFields
        self.inputs = inputs
        self.result = result
        self.cases = cases
    }

    enum CodingKeys: String, CodingKey {
        case name, description, spec, note, inputs, result, cases
        case declaredFields = "declared_fields"
    }

    public static var directory: URL { ConformanceKit.directory.appendingPathComponent("merge") }

    /// Every vector in Protocol/conformance/merge, by file name order.
    public static func loadAll() throws -> [MergeVector] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        return try files.map { file in
            try JSONDecoder().decode(MergeVector.self, from: Data(contentsOf: directory.appendingPathComponent(file)))
        }
    }

    /// The schema a replica store of the kit runs with: the vector's record type and fields.
    public func schema() throws -> Schema {
        var kinds: [String: FieldKind] = [:]
        for (name, kind) in declaredFields {
            guard let k = FieldKind(rawValue: kind) else { throw KitError("field kind \(kind)") }
            kinds[name] = k
        }
        return Schema([RecordType(name: result.type, fields: kinds)])
    }
}

extension KitExpression {
    /// The names of the inputs the expression reads, left to right.
    public var inputs: [String] {
        switch self {
        case .input(let name): [name]
        case .merge(let l, let r): l.inputs + r.inputs
        }
    }

    /// Evaluates the expression with `SyncModel`'s merge: the state, the outermost merge's
    /// outcome (`applied` for a lone input) and every conflict found on the way.
    public func evaluate(_ inputs: [String: RecordState]) throws -> (state: RecordState, outcome: MergeOutcome, conflicts: [Conflict]) {
        switch self {
        case .input(let name):
            guard let state = inputs[name] else { throw KitError("no input named \(name)") }
            return (state, .applied, [])
        case .merge(let l, let r):
            let local = try l.evaluate(inputs), remote = try r.evaluate(inputs)
            let merged = try Merge.merge(local: local.state, remote: remote.state)
            return (merged.state, merged.outcome, local.conflicts + remote.conflicts + merged.conflicts)
        }
    }
}

// MARK: Session vectors

/// Any JSON value: the frames of session vectors in the protobuf JSON mapping.
public enum KitJSON: Codable, Hashable, Sendable {
    case null, bool(Bool), number(Double), string(String), array([KitJSON]), object([String: KitJSON])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Double.self) { self = .number(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([KitJSON].self) { self = .array(v) }
        else { self = .object(try c.decode([String: KitJSON].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let v): try c.encode(v)
        // The protobuf JSON mapping writes 32-bit integers as numbers: keep them integral.
        case .number(let v): if v == v.rounded(), abs(v) < 1e15 { try c.encode(Int64(v)) } else { try c.encode(v) }
        case .string(let v): try c.encode(v)
        case .array(let v): try c.encode(v)
        case .object(let v): try c.encode(v)
        }
    }

    public static func parse(_ text: String) throws -> KitJSON {
        try JSONDecoder().decode(KitJSON.self, from: Data(text.utf8))
    }

    /// Compact JSON text.
    public var text: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// The value at a dotted path of object keys, `nil` when absent.
    public subscript(path path: String) -> KitJSON? {
        var current: KitJSON? = self
        for key in path.split(separator: ".") {
            guard case .object(let object)? = current else { return nil }
            current = object[String(key)]
        }
        return current
    }

    /// Where `actual` differs from this pattern, `nil` when it matches: objects have the same
    /// keys (a key whose pattern is the string "any" may also be absent), arrays the same length,
    /// and every other value is equal, except that "any" matches every value.
    public func mismatch(_ actual: KitJSON?, at path: String = "") -> String? {
        if self == .string("any") { return nil }
        guard let actual else { return "\(path.isEmpty ? "the frame" : path) is absent, expected \(text)" }
        switch (self, actual) {
        case (.object(let expected), .object(let got)):
            for key in Set(expected.keys).union(got.keys).sorted() {
                let sub = path.isEmpty ? key : "\(path).\(key)"
                guard let pattern = expected[key] else { return "\(sub) is unexpected: \(got[key]!.text)" }
                if let problem = pattern.mismatch(got[key], at: sub) { return problem }
            }
            return nil
        case (.array(let expected), .array(let got)):
            guard expected.count == got.count else { return "\(path) has \(got.count) elements, expected \(expected.count)" }
            for (i, pattern) in expected.enumerated() {
                if let problem = pattern.mismatch(got[i], at: "\(path)[\(i)]") { return problem }
            }
            return nil
        default:
            return self == actual ? nil : "\(path) is \(actual.text), expected \(text)"
        }
    }
}

/// Takes one value of an answer (or of an admin command's JSON output) for later steps.
public struct KitCapture: Codable, Hashable, Sendable {
    /// Dotted path of object keys.
    public var path: String
    /// What the capture holds when the path is absent: the protobuf JSON mapping leaves default
    /// values out (a sequence of 0).
    public var `default`: String?

    public init(path: String, default value: String? = nil) {
        self.path = path
        self.default = value
    }
}

/// A frame the client sends: `json` in the protobuf JSON mapping, with `${name}` placeholders
/// in its strings, and `hex`, the framed bytes (length prefix included) of the frame with the
/// vector's `example_bindings`, or with nothing bound when it has no placeholder.
public struct KitFrame: Codable, Hashable, Sendable {
    public var json: KitJSON
    public var hex: String

    public init(json: KitJSON, hex: String) {
        self.json = json
        self.hex = hex
    }
}

/// One step of a session; exactly one of the action keys is set.
public struct KitStep: Codable, Hashable, Sendable {
    public var note: String?
    /// Runs `rapportctl --data DATA` with these arguments; must succeed.
    public var admin: [String]?
    /// Opens a new TLS connection (ALPN `rapport/1`), closing the previous one.
    public var connect: Bool?
    public var send: KitFrame?
    /// Bytes that are not a well-formed frame, sent as they are.
    public var sendBytes: String?
    /// The next frame the server sends, as a pattern (see `KitJSON.mismatch`).
    public var expect: KitJSON?
    /// The server closes the connection without sending anything more.
    public var expectClose: Bool?
    /// Closes the client's side.
    public var close: Bool?
    /// After `admin` (its `--json` output) or `expect` (the frame's JSON).
    public var capture: [String: KitCapture]?

    public init(note: String? = nil, admin: [String]? = nil, connect: Bool? = nil, send: KitFrame? = nil, sendBytes: String? = nil,
                expect: KitJSON? = nil, expectClose: Bool? = nil, close: Bool? = nil, capture: [String: KitCapture]? = nil) {
        self.note = note
        self.admin = admin
        self.connect = connect
        self.send = send
        self.sendBytes = sendBytes
        self.expect = expect
        self.expectClose = expectClose
        self.close = close
        self.capture = capture
    }

    enum CodingKeys: String, CodingKey {
        case note, admin, connect, send, expect, close, capture
        case sendBytes = "send_bytes", expectClose = "expect_close"
    }
}

public struct SessionVector: Codable, Hashable, Sendable {
    public var name: String
    public var description: String
    public var spec: [String]
    /// Error codes of SPEC 2.6 the session provokes.
    public var errors: [String]
    /// Records the session sends, in the neutral form with placeholders; a frame names their
    /// bytes `${record:NAME:vector}` and `${record:NAME:state}` (base64, as the JSON mapping
    /// writes bytes).
    public var records: [String: KitState]?
    /// A value for every placeholder, with which the `hex` of every frame was made.
    public var exampleBindings: [String: String]
    public var steps: [KitStep]

    public init(name: String, description: String, spec: [String], errors: [String], records: [String: KitState]?,
                exampleBindings: [String: String], steps: [KitStep]) {
        self.name = name
        self.description = description
        self.spec = spec
        self.errors = errors
        self.records = records
        self.exampleBindings = exampleBindings
        self.steps = steps
    }

    enum CodingKeys: String, CodingKey {
        case name, description, spec, errors, records, steps
        case exampleBindings = "example_bindings"
    }

    public static var directory: URL { ConformanceKit.directory.appendingPathComponent("sessions") }

    public static func loadAll() throws -> [SessionVector] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        return try files.map { file in
            try JSONDecoder().decode(SessionVector.self, from: Data(contentsOf: directory.appendingPathComponent(file)))
        }
    }

    /// `text` with every `${name}` replaced by its binding.
    public static func substitute(_ text: String, _ bindings: [String: String]) throws -> String {
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { throw KitError("unclosed placeholder in \(text)") }
            let name = String(rest[start.upperBound..<end])
            guard let value = bindings[name] else { throw KitError("nothing bound to ${\(name)}") }
            result += value
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }

    /// The bindings plus the bytes of every record whose placeholders they bind, encoded.
    public func bindingRecords(_ bindings: [String: String]) throws -> [String: String] {
        var all = bindings
        for (name, record) in records ?? [:] {
            let text = String(decoding: try ConformanceKit.encode(record), as: UTF8.self)
            // A record whose placeholders are not bound yet (the device has not enrolled) is
            // left out: no frame can name it before then.
            guard let substituted = try? Self.substitute(text, bindings) else { continue }
            let bound = try JSONDecoder().decode(KitState.self, from: Data(substituted.utf8))
            let state = try bound.state()
            all["record:\(name):vector"] = Data(RecordCodec.encode(state.vector)).base64EncodedString()
            all["record:\(name):state"] = Data(RecordCodec.encodeState(state)).base64EncodedString()
        }
        return all
    }
}
