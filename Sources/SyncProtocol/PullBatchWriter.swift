import Foundation
import NIOCore
import SwiftProtobuf

/// A `PullBatch` frame written straight from the rows a store holds into the buffer that goes
/// out, as the bytes SwiftProtobuf writes for the same frame (`PullBatchWriterTests`).
///
/// Why: a message per record (its id, vector and state copied into `Data`), sized, serialized
/// and freed was about a fifth of a server's work in an initial sync. It was also on the
/// device's path: a device asks for the next batch when one arrives, so each batch waits for
/// the server to write it (`rapport-bench sync`).
public struct PullBatchWriter {
    /// Room at the front for the frame's length prefix, `pull_batch`'s tag and the batch's
    /// length, written once the records are in: 4 bytes, 1 and up to 5.
    private static let headerRoom = 10
    private var buffer: ByteBuffer
    /// Records written.
    public private(set) var count = 0
    /// The sum of their vectors' and states' sizes, which `remaining_bytes` counts.
    public private(set) var recordBytes = 0
    /// Their ids, in order.
    public private(set) var ids: [UUID] = []
    /// The sequence number of the last record written, `nil` before the first.
    public private(set) var lastSequence: Int64?

    /// A writer whose buffer starts with room for `capacity` bytes of records: a batch that
    /// outgrows it is copied as it grows.
    public init(capacity: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: Self.headerRoom + max(capacity, 1 << 12))
        buffer.writeRepeatingByte(0, count: Self.headerRoom)
    }

    /// Appends one record as a store holds it: its vector and state as encoded there.
    public mutating func append(sequence: Int64, id: UUID, type: String, vector: UnsafeRawBufferPointer, state: UnsafeRawBufferPointer) {
        var type = type
        type.withUTF8 { typeBytes in
            // Proto3 leaves out empty bytes and strings; an id is never empty.
            let length = 2 + 16 + Self.lengthDelimited(typeBytes.count) + Self.lengthDelimited(vector.count)
                + Self.lengthDelimited(state.count)
            write(upTo: 1 + 10 + length) { out in
                out.field(1, length: length)  // PullBatch.records = 1
                out.field(1, length: 16)  // Record.id = 1
                withUnsafeBytes(of: id.uuid) { out.bytes($0) }
                out.field(2, UnsafeRawBufferPointer(typeBytes))
                out.field(3, vector)
                out.field(4, state)
            }
        }
        count += 1
        recordBytes += vector.count + state.count
        ids.append(id)
        lastSequence = sequence
    }

    /// The frame: the records appended, then the batch's other fields, each in field order.
    /// Call once, after the last record: the frame shares the writer's buffer, which a copy
    /// of the writer alive at this point would make it copy whole.
    public mutating func frame(lastSequence: UInt64, remainingRecords: UInt64, remainingBytes: UInt64,
                                conflicts: [Rapport_V1_ConflictReport]) throws -> PullBatchFrame {
        var encoded: [[UInt8]] = []
        for conflict in conflicts { encoded.append(try conflict.serializedBytes()) }
        write(upTo: 3 * 11 + encoded.reduce(0) { $0 + 11 + $1.count }) { out in
            for (field, value) in [(UInt8(2), lastSequence), (3, remainingRecords), (4, remainingBytes)] where value != 0 {
                out.byte(field << 3)
                out.varint(value)
            }
            for conflict in encoded { conflict.withUnsafeBytes { out.field(5, $0) } }
        }
        // The header, right-aligned in its room: the frame's length, then Frame.pull_batch
        // (field 6) with the batch's length.
        let batchLength = buffer.writerIndex - Self.headerRoom
        let headerLength = 1 + Self.varintSize(UInt64(batchLength))
        let frameLength = headerLength + batchLength
        guard frameLength <= Int(UInt32.max) else { throw SyncError(.frameTooLarge, "a pull batch of \(frameLength) bytes") }
        let start = Self.headerRoom - headerLength - 4
        buffer.withUnsafeMutableReadableBytes { bytes in
            var out = RawWriter(bytes.baseAddress! + start)
            withUnsafeBytes(of: UInt32(frameLength).bigEndian) { out.bytes($0) }
            out.field(6, length: batchLength)
        }
        buffer.moveReaderIndex(to: start)
        return PullBatchFrame(framed: buffer, records: count)
    }

    /// The size of a length-delimited field of `count` bytes with its one-byte tag, 0 when
    /// proto3 leaves it out.
    private static func lengthDelimited(_ count: Int) -> Int {
        count == 0 ? 0 : 1 + varintSize(UInt64(count)) + count
    }

    private static func varintSize(_ value: UInt64) -> Int {
        var size = 1, rest = value >> 7
        while rest != 0 { size += 1; rest >>= 7 }
        return size
    }

    /// Writes at most `bound` bytes at the end of the buffer, growing it first if need be: one
    /// check of room per record instead of one per byte.
    private mutating func write(upTo bound: Int, _ body: (inout RawWriter) -> Void) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { free in
            var out = RawWriter(free.baseAddress!)
            body(&out)
            precondition(out.written <= bound, "wrote \(out.written) bytes where \(bound) were reserved")
            return out.written
        }
    }
}

/// A `PullBatch` frame `PullBatchWriter` wrote, length prefix included, ready to go out.
public struct PullBatchFrame: OutboundFrame {
    let buffer: ByteBuffer
    /// The records it holds.
    public let records: Int

    init(framed buffer: ByteBuffer, records: Int) {
        self.buffer = buffer
        self.records = records
    }

    public func framed() -> ByteBuffer { buffer }
    public var answersRequest: Bool { true }
}

/// Protobuf's pieces written at a pointer into room made for them (`PullBatchWriter.write`).
private struct RawWriter {
    let start: UnsafeMutableRawPointer
    var written = 0

    init(_ start: UnsafeMutableRawPointer) { self.start = start }

    mutating func byte(_ value: UInt8) {
        start.storeBytes(of: value, toByteOffset: written, as: UInt8.self)
        written += 1
    }

    /// Seven bits at a time, the lowest first, each byte but the last with its high bit set.
    mutating func varint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            byte(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        byte(UInt8(rest))
    }

    mutating func bytes(_ value: UnsafeRawBufferPointer) {
        guard let source = value.baseAddress, !value.isEmpty else { return }
        (start + written).copyMemory(from: source, byteCount: value.count)
        written += value.count
    }

    /// The tag and length of length-delimited field `number`.
    mutating func field(_ number: UInt8, length: Int) {
        byte(number << 3 | 2)
        varint(UInt64(length))
    }

    /// Length-delimited field `number` holding `value`, left out when empty as proto3 does.
    mutating func field(_ number: UInt8, _ value: UnsafeRawBufferPointer) {
        guard !value.isEmpty else { return }
        field(number, length: value.count)
        bytes(value)
    }
}
