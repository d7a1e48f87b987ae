import CRM
import Foundation
import SyncModel

/// Target `records`: the binary record encoding (Protocol/SPEC.md, section 3) against the CRM
/// schema, without protobuf around it so that every mutation lands in the record's own bytes.
///
/// Input: one byte choosing the record type (low seven bits, modulo the schema's types plus one
/// type the schema does not know) and whether rules are checked (high bit, as a replica that
/// skips rules for its upstream's states); two bytes, big-endian, the length of the vector;
/// the vector's bytes; the rest is the state.
///
/// Properties:
/// - `Schema.validate(_: EncodedRecord)` refuses exactly what decoding and then
///   `Schema.validate(_: RecordState)` refuse, and says the same of what both accept; what it
///   takes as canonical (to be stored as it came) is byte for byte what `RecordCodec` writes.
/// - Anything that decodes encodes again to bytes that decode to the same state and encode to
///   the same bytes, and those bytes are taken as canonical when the state is valid.
enum RecordTarget {
    static let schema = CRMSchema.current
    static let typeNames = schema.types.keys.sorted() + ["not_a_type"]
    static let id = UUID(uuid: (0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x4a, 0x6b, 0x8c, 0x7d, 0x9e, 0x0f, 0x1a, 0x2b, 0x3c, 0x4d))

    /// The record an input describes, and whether its rules are checked; `nil` for an input too
    /// short to describe one.
    static func record(_ input: UnsafeRawBufferPointer) -> (EncodedRecord, rules: Bool)? {
        guard input.count >= 3 else { return nil }
        let type = typeNames[Int(input[0] & 0x7f) % typeNames.count]
        let vectorLength = min(Int(input[1]) << 8 | Int(input[2]), input.count - 3)
        let vector = Array(input[3..<3 + vectorLength])
        let state = Array(input[(3 + vectorLength)...])
        return (EncodedRecord(id: id, type: type, vector: vector, state: state), input[0] & 0x80 == 0)
    }

    /// The input that describes `record`: how seeds are written.
    static func input(_ record: EncodedRecord, rules: Bool = true) -> [UInt8] {
        let type = UInt8(typeNames.firstIndex(of: record.type) ?? typeNames.count - 1) | (rules ? 0 : 0x80)
        return [type, UInt8(record.vector.count >> 8), UInt8(record.vector.count & 0xff)] + record.vector + record.state
    }

    static func run(_ input: UnsafeRawBufferPointer) {
        guard let (record, rules) = record(input) else { return }
        checkValidation(record, rules: rules)
        if let state = try? record.decoded() { checkRoundTrip(state, rules: rules) }
    }

    static func checkValidation(_ record: EncodedRecord, rules: Bool) {
        let reference = Result { () throws(ModelError) -> RecordState in
            let state = try record.decoded()
            try schema.validate(state, rules: rules)
            return state
        }
        let validation = Result { () throws(ModelError) in try schema.validate(record, rules: rules) }
        switch (validation, reference) {
        case (.failure, .failure):
            break
        case (.success, .failure(let error)):
            violated("records: validate(EncodedRecord) accepts what the reference refuses: \(error)")
        case (.failure(let error), .success):
            violated("records: validate(EncodedRecord) refuses what the reference accepts: \(error)")
        case (.success(let validation), .success(let state)):
            guard validation.isDeleted == state.isDeleted, validation.latestTimestamp == state.latestTimestamp else {
                violated("records: validation says deleted \(validation.isDeleted) at \(validation.latestTimestamp), the state \(state.isDeleted) at \(state.latestTimestamp)")
            }
            if let decoded = validation.decodedState {
                guard decoded == state else { violated("records: validation decoded another state than the reference") }
            } else {
                guard RecordCodec.encode(state.vector) == record.vector, RecordCodec.encodeState(state) == record.state else {
                    violated("records: taken as canonical, but RecordCodec writes other bytes for the state: \(state)")
                }
            }
        }
    }

    static func checkRoundTrip(_ state: RecordState, rules: Bool) {
        let canonical = EncodedRecord(state)
        let again: RecordState
        do {
            again = try canonical.decoded()
        } catch {
            violated("records: a decoded state, encoded again, does not decode: \(error); \(state)")
        }
        guard EncodedRecord(again) == canonical else {
            violated("records: a decoded state, encoded again, decodes to a state that encodes otherwise: \(state)")
        }
        // A real that is NaN is unequal to itself; the bytes above already compare it.
        guard again == state || hasNaN(state) else {
            violated("records: a decoded state, encoded again, decodes to another state: \(state), then \(again)")
        }
        // The state's own encoding must take the fast path when it is valid, or every stored
        // record would be decoded and encoded again on each sync.
        if (try? schema.validate(state, rules: rules)) != nil {
            guard let validation = try? schema.validate(canonical, rules: rules), validation.decodedState == nil else {
                violated("records: a valid state's own encoding is not taken as canonical: \(state)")
            }
        }
    }

    static func hasNaN(_ state: RecordState) -> Bool {
        state.fields.values.contains {
            if case .register(let register) = $0, case .real(let value) = register.value { value.isNaN } else { false }
        }
    }
}
