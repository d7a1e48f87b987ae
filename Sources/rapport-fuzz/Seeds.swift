import Foundation
import NIOCore
import SyncModel
import SyncProtocol

/// Seeds for the `records` target, which reads its own layout rather than frames: the records
/// of the golden vectors, and a few states of other types so that every kind of field and rule
/// starts out reachable. (The `frames` and `messages` targets take the golden vectors as they
/// are; scripts/fuzz.sh converts them from hex.)
enum Seeds {
    static func write(vectors: URL, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var records: [(String, EncodedRecord)] = []
        // `pull_batch` carries the same record.
        let hex = try String(contentsOf: vectors.appendingPathComponent("push.hex"), encoding: .utf8)
        var buffer = ByteBuffer(bytes: try bytes(hex: hex))
        var decoder = FrameDecoder(maxFrameBytes: SessionLimits().maxFrameBytes)
        guard case .frame(let frame)? = decoder.next(&buffer) else { throw SeedError("push.hex is not a frame") }
        for (index, record) in frame.push.records.enumerated() {
            let encoded = try record.id.withUnsafeBytes { id in
                try EncodedRecord(idBytes: id, type: record.type, vector: Array(record.vector), state: Array(record.state))
            }
            records.append(("push-\(index)", encoded))
        }
        for (name, state) in try madeStates() { records.append((name, EncodedRecord(state))) }
        for (name, record) in records {
            try Data(RecordTarget.input(record)).write(to: directory.appendingPathComponent(name))
        }
    }

    static func madeStates() throws -> [(String, RecordState)] {
        let device = try ReplicaID("device-a"), server = try ReplicaID("server")
        let time = HLCTimestamp(rawValue: 1_750_000_000_000 << HLCTimestamp.logicalBits)
        func register(_ value: FieldValue, _ counter: UInt64) throws -> FieldState {
            .register(RegisterState(value: value, dot: try Dot(replica: device, counter: counter), timestamp: time))
        }
        let account = RecordState(
            id: RecordTarget.id, type: "account", vector: try VersionVector([device: 3, server: 1]),
            liveness: Liveness(isDeleted: false, dot: try Dot(replica: device, counter: 1), timestamp: time),
            fields: [
                "name": try register(.text("Acme"), 1),
                "size": try register(.text("11-50"), 2),
                "website": try register(.text("https://acme.example"), 2),
                "annual_revenue": try register(.real(1_250_000), 3),
                "consent_marketing": try register(.bool(false), 3),
                "loyalty_points": .counter(CounterState(contributions: [
                    server: CounterContribution(added: 10, subtracted: 2, lastCounter: 1, lastTimestamp: time),
                ])),
                "notes_v3": try register(.blob(Data([1, 2, 3])), 3),
            ])
        let lead = RecordState(
            id: RecordTarget.id, type: "lead", vector: try VersionVector([device: 2]),
            liveness: Liveness(isDeleted: true, dot: try Dot(replica: device, counter: 2), timestamp: time,
                               deletionContext: try VersionVector([device: 1])),
            fields: [
                "last_name": try register(.text("Byron"), 1),
                "status": try register(.text("new"), 1),
                "score": try register(.integer(-7), 1),
                "converted_at": try register(.null, 1),
            ])
        return [("account", account), ("lead-deleted", lead)]
    }

    static func bytes(hex: String) throws -> [UInt8] {
        let digits = hex.unicodeScalars.filter { !$0.properties.isWhitespace }.map { Character($0) }
        guard digits.count % 2 == 0 else { throw SeedError("odd number of hex digits") }
        return try stride(from: 0, to: digits.count, by: 2).map { index in
            guard let byte = UInt8(String(digits[index...index + 1]), radix: 16) else { throw SeedError("not hex") }
            return byte
        }
    }

    struct SeedError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
