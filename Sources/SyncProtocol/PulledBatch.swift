import Foundation
import SwiftProtobuf
import SyncModel

/// A `PullBatch` as a device applies it: its records as `EncodedRecord`s.
///
/// A frame that holds only a pull batch is read into one by hand (`init(frame:)`), on the
/// event loop that read the frame: SwiftProtobuf made a `Rapport_V1_Record` of each record
/// (its id, vector and state each copied into `Data`), which the device copied again into
/// arrays and then freed, a seventh of a device's work in an initial sync, and on the path of
/// every batch: the device asks for the next batch when it has read this one.
public struct PulledBatch: Sendable, Equatable {
    public var records: [EncodedRecord] = []
    /// The checkpoint to save once the batch is applied.
    public var lastSequence: UInt64 = 0
    public var remainingRecords: UInt64 = 0
    public var remainingBytes: UInt64 = 0
    public var conflicts: [Rapport_V1_ConflictReport] = []
    public var evictions: [Rapport_V1_Eviction] = []

    public init() {}

    /// The batch SwiftProtobuf read.
    ///
    /// - Throws: `ModelError` for a record whose id is not 16 bytes or whose type is empty or
    ///   too long, as `init(frame:)` does.
    public init(_ batch: Rapport_V1_PullBatch) throws(ModelError) {
        records = try batch.records.map { message throws(ModelError) in try EncodedRecord(message) }
        lastSequence = batch.lastSequence
        remainingRecords = batch.remainingRecords
        remainingBytes = batch.remainingBytes
        conflicts = batch.conflicts
        evictions = batch.evictions
    }

    /// The batch of a frame's bytes (without their length prefix), or `nil` when the frame
    /// holds anything but `pull_batch`: SwiftProtobuf then reads it. As protobuf has it, a
    /// batch written in several pieces is one batch: their records in order, the last figures.
    ///
    /// - Throws: `ModelError.malformedEncoding` for bytes that are not a valid `Frame`, or a
    ///   record SwiftProtobuf would have read but `EncodedRecord` refuses.
    public init?(frame: UnsafeRawBufferPointer) throws(ModelError) {
        var reader = ByteReader(frame)
        // Only pull_batch (field 6, length-delimited), once or more.
        while !reader.isAtEnd {
            guard try reader.varint() == 6 << 3 | 2 else { return nil }
            _ = try reader.raw(try reader.count(limit: reader.remaining))
        }
        guard !frame.isEmpty else { return nil }
        reader = ByteReader(frame)
        while !reader.isAtEnd {
            _ = try reader.varint()
            try read(try reader.raw(try reader.count(limit: reader.remaining)))
        }
    }

    /// Reads one `PullBatch` message into this batch.
    private mutating func read(_ bytes: UnsafeRawBufferPointer) throws(ModelError) {
        var reader = ByteReader(bytes)
        while !reader.isAtEnd {
            let key = try reader.varint()
            switch (key >> 3, key & 7) {
            case (1, 2): records.append(try Self.record(try Self.lengthDelimited(&reader)))
            case (2, 0): lastSequence = try reader.varint()
            case (3, 0): remainingRecords = try reader.varint()
            case (4, 0): remainingBytes = try reader.varint()
            case (5, 2): conflicts.append(try Self.message(try Self.lengthDelimited(&reader)))
            case (6, 2): evictions.append(try Self.message(try Self.lengthDelimited(&reader)))
            // A known field with another wire type is an unknown one, as SwiftProtobuf reads it.
            default: try Self.skip(key, &reader)
            }
        }
    }

    /// One `Record`: proto3 leaves out empty fields, and a field given twice keeps the last.
    private static func record(_ bytes: UnsafeRawBufferPointer) throws(ModelError) -> EncodedRecord {
        var reader = ByteReader(bytes)
        var id = UnsafeRawBufferPointer(start: nil, count: 0), type = "", vector: [UInt8] = [], state: [UInt8] = []
        while !reader.isAtEnd {
            let key = try reader.varint()
            switch (key >> 3, key & 7) {
            case (1, 2): id = try lengthDelimited(&reader)
            case (2, 2): type = try reader.string()
            case (3, 2): vector = Array(try lengthDelimited(&reader))
            case (4, 2): state = Array(try lengthDelimited(&reader))
            default: try skip(key, &reader)
            }
        }
        return try EncodedRecord(idBytes: id, type: type, vector: vector, state: state)
    }

    private static func lengthDelimited(_ reader: inout ByteReader) throws(ModelError) -> UnsafeRawBufferPointer {
        try reader.raw(try reader.count(limit: reader.remaining))
    }

    /// A message the batch holds few of (conflicts, evictions), read by SwiftProtobuf.
    private static func message<M: Message>(_ bytes: UnsafeRawBufferPointer) throws(ModelError) -> M {
        do {
            return try M(serializedBytes: Array(bytes))
        } catch {
            throw .malformedEncoding("\(M.protoMessageName): \(error)")
        }
    }

    /// Passes over a field this version does not know, as protobuf asks, groups included
    /// (nested no deeper than SwiftProtobuf reads messages).
    private static func skip(_ key: UInt64, _ reader: inout ByteReader, depth: Int = 0) throws(ModelError) {
        guard (1...0x1FFF_FFFF).contains(key >> 3) else { throw .malformedEncoding("field number \(key >> 3)") }
        switch key & 7 {
        case 0: _ = try reader.varint()
        case 1: _ = try reader.raw(8)
        case 2: _ = try lengthDelimited(&reader)
        case 3:
            guard depth < 100 else { throw .malformedEncoding("groups nested deeper than 100") }
            while true {
                let inner = try reader.varint()
                if inner & 7 == 4 {
                    guard inner >> 3 == key >> 3 else { throw .malformedEncoding("group \(key >> 3) ended as \(inner >> 3)") }
                    return
                }
                try skip(inner, &reader, depth: depth + 1)
            }
        case 5: _ = try reader.raw(4)
        default: throw .malformedEncoding("field \(key >> 3) with wire type \(key & 7)")
        }
    }
}

extension EncodedRecord {
    /// The record a message carries, its vector and state left encoded.
    public init(_ message: Rapport_V1_Record) throws(ModelError) {
        self = try message.id.withUnsafeBytes { bytes in
            Result { () throws(ModelError) in
                try EncodedRecord(idBytes: bytes, type: message.type, vector: Array(message.vector), state: Array(message.state))
            }
        }.get()
    }
}
