import Foundation
import NIOCore
import SyncProtocol
import Testing

/// `PullBatchWriter` writes the bytes SwiftProtobuf writes for the same frame, so a device (or
/// any protobuf decoder) cannot tell a batch written from rows from one built message by message.
struct PullBatchWriterTests {
    struct Row {
        var sequence: Int64
        var id: UUID
        var type: String
        var vector: [UInt8]
        var state: [UInt8]
    }

    /// Rows with every length a field's varint takes one, two or three bytes for, an empty
    /// vector and type (which proto3 leaves out), and multi-byte text.
    static func rows(_ count: Int, seed: UInt64) -> [Row] {
        var random = seed
        func next(_ bound: Int) -> Int {
            random = random &* 6364136223846793005 &+ 1442695040888963407
            return Int((random >> 33) % UInt64(bound))
        }
        let types = ["account", "contact", "", "opportunité", String(repeating: "t", count: 64)]
        return (0..<count).map { i in
            let stateLength = [0, 1, 127, 128, 300, 16_384, 20_000][next(7)]
            return Row(sequence: Int64(i * 3 + 1), id: UUID(), type: types[next(types.count)],
                       vector: (0..<[0, 5, 40][next(3)]).map { _ in UInt8(next(256)) },
                       state: (0..<stateLength).map { _ in UInt8(next(256)) })
        }
    }

    static func conflict(_ n: Int) -> Rapport_V1_ConflictReport {
        var report = Rapport_V1_ConflictReport()
        report.kind = "field"
        report.field = "name"
        report.recordID = Data(repeating: UInt8(n), count: 16)
        report.recordType = "account"
        report.reason = "kept the later write \(n)"
        return report
    }

    /// The frame as SwiftProtobuf writes it.
    static func expected(_ rows: [Row], last: UInt64, remainingRecords: UInt64, remainingBytes: UInt64,
                         conflicts: [Rapport_V1_ConflictReport]) throws -> [UInt8] {
        var batch = Rapport_V1_PullBatch()
        batch.records = rows.map { row in
            var record = Rapport_V1_Record()
            record.id = withUnsafeBytes(of: row.id.uuid) { Data($0) }
            record.type = row.type
            record.vector = Data(row.vector)
            record.state = Data(row.state)
            return record
        }
        batch.lastSequence = last
        batch.remainingRecords = remainingRecords
        batch.remainingBytes = remainingBytes
        batch.conflicts = conflicts
        var frame = Rapport_V1_Frame()
        frame.pullBatch = batch
        return Array(try FrameEncoder.encode(frame).readableBytesView)
    }

    static func written(_ rows: [Row], capacity: Int, last: UInt64, remainingRecords: UInt64, remainingBytes: UInt64,
                        conflicts: [Rapport_V1_ConflictReport]) throws -> (bytes: [UInt8], writer: PullBatchWriter) {
        var writer = PullBatchWriter(capacity: capacity)
        for row in rows {
            row.vector.withUnsafeBytes { vector in
                row.state.withUnsafeBytes { state in
                    writer.append(sequence: row.sequence, id: row.id, type: row.type, vector: vector, state: state)
                }
            }
        }
        let frame = try writer.frame(lastSequence: last, remainingRecords: remainingRecords, remainingBytes: remainingBytes,
                                     conflicts: conflicts)
        #expect(frame.records == rows.count)
        #expect(frame.answersRequest)
        return (Array(try frame.framed().readableBytesView), writer)
    }

    @Test(arguments: [(0, 0), (1, 0), (3, 2), (40, 1), (400, 0)])
    func theFrameIsTheOneSwiftProtobufWrites(records: Int, conflicts: Int) throws {
        for seed in 1...5 as ClosedRange<UInt64> {
            let rows = Self.rows(records, seed: seed)
            let reports = (0..<conflicts).map(Self.conflict)
            // Figures that take one to ten bytes as varints, and zeros, which proto3 leaves out.
            let figures: [(UInt64, UInt64, UInt64)] = [(0, 0, 0), (1, 127, 128), (UInt64(Int64.max), 300_000, 1 << 40)]
            for (last, remainingRecords, remainingBytes) in figures {
                // A small capacity makes the buffer grow while records are written.
                let written = try Self.written(rows, capacity: seed == 1 ? 0 : 1 << 20, last: last, remainingRecords: remainingRecords,
                                               remainingBytes: remainingBytes, conflicts: reports)
                let expected = try Self.expected(rows, last: last, remainingRecords: remainingRecords,
                                                 remainingBytes: remainingBytes, conflicts: reports)
                #expect(written.bytes == expected, "seed \(seed), \(records) records, figures \(last) \(remainingRecords) \(remainingBytes)")
                #expect(written.writer.ids == rows.map(\.id))
                #expect(written.writer.lastSequence == rows.last?.sequence)
                #expect(written.writer.recordBytes == rows.reduce(0) { $0 + $1.vector.count + $1.state.count })
            }
        }
    }

    @Test func theFrameDecodesToTheBatchItWasWrittenFrom() throws {
        let rows = Self.rows(50, seed: 9)
        let written = try Self.written(rows, capacity: 100, last: 151, remainingRecords: 7, remainingBytes: 9_000,
                                       conflicts: [Self.conflict(1)])
        var decoder = FrameDecoder(maxFrameBytes: 1 << 24)
        var buffer = ByteBuffer(bytes: written.bytes)
        guard case .frame(let frame)? = decoder.next(&buffer), case .pullBatch(let batch)? = frame.body else {
            Issue.record("not a pull batch frame")
            return
        }
        #expect(buffer.readableBytes == 0)
        #expect(batch.records.map(\.id) == rows.map { row in withUnsafeBytes(of: row.id.uuid) { Data($0) } })
        #expect(batch.records.map(\.state) == rows.map { Data($0.state) })
        #expect(batch.records.map(\.type) == rows.map(\.type))
        #expect(batch.lastSequence == 151 && batch.remainingRecords == 7 && batch.remainingBytes == 9_000)
        #expect(batch.conflicts == [Self.conflict(1)])
    }
}
