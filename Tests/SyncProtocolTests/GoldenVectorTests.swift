import Foundation
import NIOCore
import SyncModel
import SyncProtocol
import Testing

/// Protocol/vectors: one `NAME.hex` (the whole length-prefixed frame) and one `NAME.json` (the
/// same frame in the protobuf JSON mapping) per case, so other implementations can check
/// themselves against this one.
///
/// `RAPPORT_WRITE_VECTORS=1 swift test --filter GoldenVectorTests` rewrites the files from
/// `GoldenVectors`; the normal run checks every file in the folder.
@Suite(.serialized) struct GoldenVectorTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/vectors")

    static var writing: Bool { ProcessInfo.processInfo.environment["RAPPORT_WRITE_VECTORS"] == "1" }

    @Test(.enabled(if: GoldenVectorTests.writing, "set RAPPORT_WRITE_VECTORS=1 to rewrite Protocol/vectors"))
    func writeVectors() throws {
        try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
        for name in GoldenVectors.names {
            let frame = GoldenVectors.frame(name)
            var buffer = ByteBuffer()
            try FrameEncoder.write(frame, to: &buffer)
            try Self.hexText(Array(buffer.readableBytesView)).write(
                to: Self.directory.appendingPathComponent("\(name).hex"), atomically: true, encoding: .utf8)
            try (frame.jsonString() + "\n").write(
                to: Self.directory.appendingPathComponent("\(name).json"), atomically: true, encoding: .utf8)
        }
    }

    @Test func theFolderHoldsExactlyTheNamedVectors() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
        let hex = Set(files.filter { $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) })
        let json = Set(files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) })
        #expect(hex == Set(GoldenVectors.names))
        #expect(json == hex)
    }

    /// For every `.hex` in the folder: it decodes to the frame of its `.json`, re-encodes to the
    /// same bytes, and its records decode to the states described in the README.
    @Test func everyVectorDecodesAndReencodesExactly() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
            .filter { $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) }.sorted()
        try #require(!names.isEmpty)
        for name in names {
            let bytes = try Self.readHex(Self.directory.appendingPathComponent("\(name).hex"))
            let json = try String(contentsOf: Self.directory.appendingPathComponent("\(name).json"), encoding: .utf8)
            let expected = try Rapport_V1_Frame(jsonString: json)

            var decoder = FrameDecoder(maxFrameBytes: SessionLimits().maxFrameBytes)
            var buffer = ByteBuffer(bytes: bytes)
            guard case .frame(let frame)? = decoder.next(&buffer) else {
                Issue.record("\(name).hex does not decode to a frame")
                continue
            }
            #expect(buffer.readableBytes == 0, "\(name).hex has bytes after its frame")
            #expect(frame == expected, "\(name).hex and \(name).json disagree")
            #expect(try frame.jsonString() + "\n" == json, "\(name).json is not as SwiftProtobuf prints it")

            var out = ByteBuffer()
            try FrameEncoder.write(frame, to: &out)
            #expect(Array(out.readableBytesView) == bytes, "\(name): re-encoding changes the bytes")

            if GoldenVectors.names.contains(name) {
                #expect(frame == GoldenVectors.frame(name), "\(name) differs from GoldenVectors; rewrite the vectors?")
            }
            try checkRecordsAndConflicts(of: frame, name: name)
        }
    }

    func checkRecordsAndConflicts(of frame: Rapport_V1_Frame, name: String) throws {
        let records: [Rapport_V1_Record], conflicts: [Rapport_V1_ConflictReport]
        switch frame.body {
        case .push(let push)?: (records, conflicts) = (push.records, push.conflicts)
        case .pullBatch(let batch)?: (records, conflicts) = (batch.records, batch.conflicts)
        case .pushResult(let result)?:
            for conflict in result.results.flatMap(\.conflicts) {
                let decoded = try conflict.decoded(record: GoldenVectors.recordID, type: "contact")
                #expect(decoded.field == "rating" && decoded.winner.value == .real(4.5) && decoded.loser.value == .real(4.0))
            }
            return
        default: return
        }
        try #require(records.count == 1, "\(name)")
        let state = try records[0].decoded()
        #expect(state == GoldenVectors.contact, "\(name): the record decodes to another state")
        #expect(state.values["visits"] == .integer(6))
        #expect(state.isDeleted)
        for conflict in conflicts {
            let decoded = try conflict.decoded()
            #expect(decoded.recordID == GoldenVectors.recordID)
            #expect(decoded.recordType == "contact")
        }
    }

    // MARK: The record encoding

    @Test func theCanonicalStateDecodesToTheRecordAndRecordCodecAgrees() throws {
        let canonical = CanonicalRecordEncoding.state(GoldenVectors.contact)
        let record = GoldenVectors.contactRecord
        #expect(Array(record.state) == canonical)
        #expect(try record.decoded() == GoldenVectors.contact)
        // RecordCodec's own bytes: same length, same meaning...
        let codec = RecordCodec.encodeState(GoldenVectors.contact)
        #expect(codec.count == canonical.count)
        #expect(try Rapport_V1_Record(GoldenVectors.contact).decoded() == GoldenVectors.contact)
        #expect(Array(Rapport_V1_Record(GoldenVectors.contact).vector) == Array(record.vector))
        // ...and the same bytes: fields and counter contributions are written in sorted order.
        #expect(codec == canonical, "RecordCodec.encodeState differs from the canonical encoding")
    }

    @Test func theSchemaAcceptsTheGoldenRecord() throws {
        // Declared fields have their declared kinds; the others are ones a newer schema added.
        let contact = RecordType(name: "contact", fields: [
            "first_name": .text, "last_name": .text, "phone": .text, "do_not_call": .boolean,
        ])
        try Schema([contact]).validate(GoldenVectors.contact)
    }

    // MARK: Hex files

    /// Lowercase hex: the length prefix on the first line, then 32 bytes per line.
    static func hexText(_ bytes: [UInt8]) -> String {
        func hex(_ slice: ArraySlice<UInt8>) -> String { slice.map { String(format: "%02x", $0) }.joined() }
        var lines = [hex(bytes.prefix(4))]
        var offset = 4
        while offset < bytes.count {
            lines.append(hex(bytes[offset..<min(offset + 32, bytes.count)]))
            offset += 32
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Hex digits with any whitespace between them.
    static func readHex(_ url: URL) throws -> [UInt8] {
        let digits = try String(contentsOf: url, encoding: .utf8).filter { !$0.isWhitespace }
        try #require(digits.count % 2 == 0, "\(url.lastPathComponent): odd number of hex digits")
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            bytes.append(try #require(UInt8(digits[index..<next], radix: 16), "\(url.lastPathComponent): not hex"))
            index = next
        }
        return bytes
    }
}
