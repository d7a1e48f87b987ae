import NIOCore
import SwiftProtobuf
import SyncModel
import Synchronization

/// What the frame decoder hands up: a frame, or the reason the byte stream cannot be trusted
/// any more. A violation is a value rather than a thrown error so that the session can answer
/// it with an `Error` frame before it closes the connection.
public enum InboundFrame: Sendable {
    case frame(Rapport_V1_Frame)
    /// A frame holding only a pull batch, read by hand, from a decoder made to
    /// (`FrameDecoder(limit:readsPullBatches:)`, a device's).
    case pullBatch(PulledBatch)
    case invalid(SyncError)
}

/// The largest frame a connection accepts: small until its session is authenticated, the full
/// limit after (SPEC.md 2.5), so that a peer nobody knows yet cannot make the server hold a
/// large partial frame. Shared by the decoder, on the event loop, and the session, which
/// raises it once `Hello` is accepted and before `Welcome` goes out.
public final class FrameSizeLimit: Sendable {
    /// The limit before login (Hello or Enroll).
    public let preLoginBytes: Int
    /// The limit of an authenticated session.
    public let sessionBytes: Int
    private let established = Atomic<Bool>(false)

    public init(preLogin: Int, session: Int) {
        preLoginBytes = preLogin
        sessionBytes = session
    }

    /// One limit from the start, for peers that authenticate nobody (the client side).
    public convenience init(_ bytes: Int) {
        self.init(preLogin: bytes, session: bytes)
        establish()
    }

    /// Whether the session limit applies.
    public var isEstablished: Bool { established.load(ordering: .acquiring) }

    /// The limit that applies now.
    public var bytes: Int { isEstablished ? sessionBytes : preLoginBytes }

    /// Switches to the session limit. Call before answering `Welcome`: a client sends nothing
    /// more until it has it, so every later frame is measured against the session limit.
    public func establish() {
        established.store(true, ordering: .releasing)
    }
}

/// Splits the byte stream into frames: a 4-byte big-endian length, then a protobuf `Frame`.
///
/// A length over the limit, bytes that are not a `Frame`, a frame with a message type this
/// version does not know, or a connection that ends in the middle of a frame each produce one
/// `.invalid`; after that the decoder discards everything, because the stream has lost framing.
/// The length is checked as soon as its 4 bytes are in, and nothing is reserved for the body:
/// the buffer only ever holds bytes the peer actually sent, at most one frame under the limit.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = InboundFrame

    private let limit: FrameSizeLimit
    private let readsPullBatches: Bool
    private var broken = false

    public init(maxFrameBytes: Int, readsPullBatches: Bool = false) {
        self.init(limit: FrameSizeLimit(maxFrameBytes), readsPullBatches: readsPullBatches)
    }

    /// A decoder whose limit the session raises after login.
    ///
    /// - Parameter readsPullBatches: whether a frame holding only a pull batch is read by
    ///   hand into `.pullBatch` (`PulledBatch`) rather than by SwiftProtobuf into `.frame`.
    public init(limit: FrameSizeLimit, readsPullBatches: Bool = false) {
        self.limit = limit
        self.readsPullBatches = readsPullBatches
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let result = next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(result))
        return broken ? .needMoreData : .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while let result = next(&buffer) {
            context.fireChannelRead(wrapInboundOut(result))
        }
        if !broken && buffer.readableBytes > 0 {
            broken = true
            buffer.moveReaderIndex(to: buffer.writerIndex)
            context.fireChannelRead(wrapInboundOut(.invalid(SyncError(.malformedFrame, "the connection ended in the middle of a frame"))))
        }
        return .needMoreData
    }

    /// Takes one frame (or one violation) off the front of `buffer`, or `nil` when more bytes
    /// are needed. Pure, so tests and golden vectors can drive it without a channel.
    public mutating func next(_ buffer: inout ByteBuffer) -> InboundFrame? {
        if broken {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else { return nil }
        let maxFrameBytes = limit.bytes
        guard Int(length) <= maxFrameBytes else {
            broken = true
            buffer.moveReaderIndex(to: buffer.writerIndex)
            let when = limit.isEstablished ? "" : " before login (Hello or Enroll)"
            return .invalid(SyncError(.frameTooLarge, "frame of \(length) bytes exceeds the limit of \(maxFrameBytes)\(when)"))
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let body = buffer.readSlice(length: Int(length))!
        if readsPullBatches {
            do {
                if let batch = try body.withUnsafeReadableBytes({ try PulledBatch(frame: $0) }) {
                    return .pullBatch(batch)
                }
            } catch {
                broken = true
                return .invalid(SyncError(.malformedFrame, "the frame is not a valid PullBatch: \(error)"))
            }
        }
        do {
            // Decoded where the bytes lie: a copy of a pull batch (up to megabytes) first
            // cost a fresh allocation, and the kernel zeroing its pages, per frame.
            let frame = try Rapport_V1_Frame(serializedBytes: body.readableBytesSpan)
            guard frame.body != nil else {
                broken = true
                return .invalid(SyncError(.unknownMessageType, "the frame holds no message this server knows (protocol version \(SyncProtocolVersion.current))"))
            }
            return .frame(frame)
        } catch {
            broken = true
            return .invalid(SyncError(.malformedFrame, "the frame is not a valid protobuf Frame: \(error)"))
        }
    }
}

/// Writes frames with their length prefix.
///
/// A channel writes its frames through `FrameEncodingHandler`, which also takes pull batches
/// the server wrote itself; these serve tests, fuzz targets and that handler.
public enum FrameEncoder {
    /// Appends one length-prefixed frame to `out`.
    public static func write(_ frame: Rapport_V1_Frame, to out: inout ByteBuffer) throws {
        var encoded = try encode(frame)
        out.writeBuffer(&encoded)
    }

    /// One length-prefixed frame in a buffer of its own, serialized straight into it: through
    /// an array first, a pull batch (up to megabytes) was written twice into fresh memory.
    public static func encode(_ frame: Rapport_V1_Frame) throws -> ByteBuffer {
        let framed: FramedBytes = try frame.serializedBytes()
        return framed.buffer
    }
}

/// The bytes SwiftProtobuf serializes a frame into: a `ByteBuffer` that starts with the
/// frame's length (SPEC.md 2.2), the body after it. Only `FrameEncoder.encode` makes one, from
/// the allocator every NIO channel uses by default, as `FrameEncodingHandler` did.
private struct FramedBytes: SwiftProtobufContiguousBytes {
    private(set) var buffer: ByteBuffer

    init(repeating: UInt8, count: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: 4 + count)
        buffer.writeInteger(UInt32(count), endianness: .big)  // SwiftProtobuf refuses 2 GiB and more
        buffer.writeRepeatingByte(repeating, count: count)
    }

    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        let bytes = Array(sequence)
        self.init(repeating: 0, count: bytes.count)
        withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
    }

    var count: Int { buffer.readableBytes - 4 }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes { try body(UnsafeRawBufferPointer(rebasing: $0.dropFirst(4))) }
    }

    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes { try body(UnsafeMutableRawBufferPointer(rebasing: $0.dropFirst(4))) }
    }
}

/// A frame as a connection writes it: a message SwiftProtobuf serializes, or a pull batch a
/// server wrote into its buffer itself (`PullBatchFrame`).
public protocol OutboundFrame: Sendable {
    /// The frame with its length prefix (SPEC.md 2.2), in a buffer of its own.
    func framed() throws -> ByteBuffer
    /// Whether it answers a request (Welcome, PushResult, PullBatch, Error): a server's idle
    /// clock does not run while a request waits for its answer.
    var answersRequest: Bool { get }
}

extension Rapport_V1_Frame: OutboundFrame {
    public func framed() throws -> ByteBuffer { try FrameEncoder.encode(self) }

    public var answersRequest: Bool {
        switch body {
        case .welcome?, .pushResult?, .pullBatch?, .error?: true
        default: false
        }
    }
}

/// Writes each frame into a buffer of its own, freed once the bytes are sent.
///
/// NIO's `MessageToByteHandler` reuses one buffer per connection, and that buffer keeps the
/// capacity, and the bytes, of the last frame written until the next one: a live session that
/// goes quiet after its first sync would hold its last pull batch (up to megabytes) all day.
/// Serializing a frame allocates anyway, so a buffer per frame costs nothing worth keeping.
public final class FrameEncodingHandler: ChannelOutboundHandler {
    public typealias OutboundIn = any OutboundFrame
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        do {
            context.write(wrapOutboundOut(try unwrapOutboundIn(data).framed()), promise: promise)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
        }
    }
}

@available(*, unavailable)
extension FrameEncodingHandler: Sendable {}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the frame encoder and decoder, after whatever secures the connection (TLS), so that
    /// both ends of a session frame bytes the same way.
    public func addFrameCodec(maxFrameBytes: Int, readsPullBatches: Bool = false) throws {
        try addFrameCodec(limit: FrameSizeLimit(maxFrameBytes), readsPullBatches: readsPullBatches)
    }

    /// Adds the frame codec with a limit the session can raise after login; see
    /// `FrameDecoder(limit:readsPullBatches:)`.
    public func addFrameCodec(limit: FrameSizeLimit, readsPullBatches: Bool = false) throws {
        try addHandler(FrameEncodingHandler())
        try addHandler(ByteToMessageHandler(FrameDecoder(limit: limit, readsPullBatches: readsPullBatches)))
    }
}
