import Foundation
import NIOCore
import SwiftProtobuf
import SyncModel
import SyncProtocol
import Testing

/// A device's decoder reads a pull batch frame by hand (`PulledBatch(frame:)`); it must read
/// what SwiftProtobuf reads, refuse what SwiftProtobuf refuses, and leave every other frame
/// to SwiftProtobuf.
struct PulledBatchTests {
    static func frame(_ body: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(body.count), endianness: .big)
        buffer.writeBytes(body)
        return buffer
    }

    static func batch(records: Int, seed: UInt64) -> Rapport_V1_PullBatch {
        var batch = Rapport_V1_PullBatch()
        batch.records = PullBatchWriterTests.rows(records, seed: seed).map { row in
            var record = Rapport_V1_Record()
            record.id = withUnsafeBytes(of: row.id.uuid) { Data($0) }
            record.type = row.type.isEmpty ? "account" : row.type
            record.vector = Data(row.vector)
            record.state = Data(row.state)
            return record
        }
        batch.lastSequence = 42
        batch.remainingRecords = 7
        batch.remainingBytes = 1_000
        batch.conflicts = [PullBatchWriterTests.conflict(3)]
        var eviction = Rapport_V1_Eviction()
        eviction.recordID = Data(repeating: 9, count: 16)
        eviction.recordType = "contact"
        eviction.reason = "left the team"
        batch.evictions = [eviction]
        return batch
    }

    static func body(_ batch: Rapport_V1_PullBatch) throws -> [UInt8] {
        var frame = Rapport_V1_Frame()
        frame.pullBatch = batch
        return try frame.serializedBytes()
    }

    /// What a device's decoder and the server's make of the same frame body.
    static func decode(_ body: [UInt8]) -> (device: InboundFrame?, protobuf: InboundFrame?) {
        var device = FrameDecoder(maxFrameBytes: 1 << 24, readsPullBatches: true)
        var server = FrameDecoder(maxFrameBytes: 1 << 24)
        var a = frame(body), b = frame(body)
        return (device.next(&a), server.next(&b))
    }

    /// The device's reading agrees with SwiftProtobuf's: the same batch, or a refusal where
    /// SwiftProtobuf refuses the frame or the device would refuse the batch it read.
    static func checkAgreement(_ body: [UInt8], _ comment: Comment) {
        let (device, protobuf) = decode(body)
        switch (device, protobuf) {
        case (.pullBatch(let batch)?, .frame(let frame)?):
            guard case .pullBatch(let read)? = frame.body else { Issue.record("device read a batch, SwiftProtobuf \(frame): \(comment)"); return }
            #expect((try? PulledBatch(read)) == batch, comment)
        case (.invalid?, .invalid?):
            break
        case (.invalid?, .frame(let frame)?):
            // Refused by hand only when SwiftProtobuf's batch would be refused as a batch.
            guard case .pullBatch(let read)? = frame.body else { Issue.record("device refused \(frame): \(comment)"); return }
            #expect((try? PulledBatch(read)) == nil, "device refused what SwiftProtobuf read: \(comment)")
        case (.frame(let a)?, .frame(let b)?):
            #expect(a == b, comment)
            if case .pullBatch? = a.body, a.unknownFields.data.isEmpty {
                Issue.record("a frame of only a batch was left to SwiftProtobuf: \(comment)")
            }
        default:
            Issue.record("device \(String(describing: device)), SwiftProtobuf \(String(describing: protobuf)): \(comment)")
        }
    }

    @Test func aBatchReadsAsSwiftProtobufReadsIt() throws {
        for records in [0, 1, 30] {
            let sent = Self.batch(records: records, seed: UInt64(records))
            let body = try Self.body(sent)
            guard case .pullBatch(let batch)? = Self.decode(body).device else {
                Issue.record("\(records) records: not read by hand")
                continue
            }
            #expect(batch == (try PulledBatch(sent)))
            #expect(batch.records.count == records && batch.lastSequence == 42 && batch.evictions.count == 1)
            Self.checkAgreement(body, "\(records) records")
        }
    }

    @Test func aBatchInPiecesIsOneBatch() throws {
        // Protobuf merges a message field given twice: records appended, the last figures kept.
        var second = Self.batch(records: 3, seed: 2)
        second.lastSequence = 99
        second.remainingRecords = 0
        let body = try Self.body(Self.batch(records: 5, seed: 1)) + Self.body(second)
        guard case .pullBatch(let batch)? = Self.decode(body).device else { Issue.record("not read by hand"); return }
        #expect(batch.records.count == 8 && batch.lastSequence == 99 && batch.remainingRecords == 7 && batch.conflicts.count == 2)
        Self.checkAgreement(body, "two pieces")
    }

    @Test func otherFramesAndFramesWithMoreAreLeftToSwiftProtobuf() throws {
        var ping = Rapport_V1_Frame()
        ping.ping.nonce = 5
        guard case .frame? = Self.decode(try ping.serializedBytes()).device else { Issue.record("a ping was not a frame"); return }
        // A batch and a ping in one frame (a oneof given twice: the last wins).
        let both = try Self.body(Self.batch(records: 2, seed: 3)) + ping.serializedBytes()
        Self.checkAgreement(both, "batch then ping")
        Self.checkAgreement([], "empty frame")
    }

    @Test func badBatchesAreRefusedAsSwiftProtobufRefusesThem() throws {
        let good = try Self.body(Self.batch(records: 3, seed: 4))
        var cases: [(String, [UInt8])] = [
            ("cut short", Array(good.dropLast(3))),
            ("record id of 15 bytes", try { var b = Self.batch(records: 1, seed: 5); b.records[0].id = Data(count: 15); return try Self.body(b) }()),
            ("record without a type", try { var b = Self.batch(records: 1, seed: 5); b.records[0].type = ""; return try Self.body(b) }()),
            // records = 1 as a varint instead of a message: an unknown field to SwiftProtobuf.
            ("wrong wire type", [0x32, 0x02, 0x08, 0x01]),
            ("wrong wire type in a record", [0x32, 0x14, 0x0a, 0x12, 0x0a, 0x10] + Array(repeating: 1, count: 16) + [0x10, 0x01]),
            // A record whose type is not UTF-8.
            ("type not UTF-8", [0x32, 0x18, 0x0a, 0x16, 0x0a, 0x10] + Array(repeating: 1, count: 16) + [0x12, 0x02, 0xc3, 0x28]),
            // An unknown field in the batch (a fixed32), skipped by both.
            ("unknown fixed32", [0x32, 0x05, 0x3d, 1, 2, 3, 4]),
            // An unknown group, skipped by both; then one never closed.
            ("unknown group", [0x32, 0x04, 0x3b, 0x08, 0x01, 0x3c]),
            ("group never closed", [0x32, 0x03, 0x3b, 0x08, 0x01]),
            ("field number 0", [0x32, 0x02, 0x00, 0x01]),
        ]
        cases.append(("varint of 11 bytes", [0x32, 0x0c, 0x10] + Array(repeating: 0xff, count: 10) + [0x01]))
        for (name, body) in cases { Self.checkAgreement(body, Comment(rawValue: name)) }
        guard case .invalid(let error)? = Self.decode(cases[1].1).device else { Issue.record("a 15-byte id was read"); return }
        #expect(error.code == .malformedFrame)
    }

    /// Seeded mutations of batch frames (bytes flipped, set, cut and repeated): the device and
    /// SwiftProtobuf agree on each. `RAPPORT_SEED=N` runs one seed.
    @Test func mutatedBatchesReadAlike() throws {
        let seeds: [UInt64] = ProcessInfo.processInfo.environment["RAPPORT_SEED"].flatMap(UInt64.init).map { [$0] } ?? Array(1...400)
        for seed in seeds {
            var random = seed
            func next(_ bound: Int) -> Int {
                random = random &* 6364136223846793005 &+ 1442695040888963407
                return Int((random >> 33) % UInt64(max(bound, 1)))
            }
            var body = try Self.body(Self.batch(records: 1 + next(4), seed: seed))
            for _ in 0...next(4) {
                switch next(4) {
                case 0: body[next(body.count)] ^= UInt8(1 << next(8))
                case 1: body[next(body.count)] = [0, 1, 0x7f, 0x80, 0xff, 0x32, 0x0a][next(7)]
                case 2: body.removeSubrange(next(body.count)..<body.count)
                default:
                    let start = next(body.count)
                    body.insert(contentsOf: body[start..<min(body.count, start + next(20))], at: next(body.count))
                }
                if body.isEmpty { body = [0x32, 0x00] }
            }
            Self.checkAgreement(body, "seed \(seed): RAPPORT_SEED=\(seed)")
        }
    }
}
