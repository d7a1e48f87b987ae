import NIOCore
import SyncProtocol
import Testing

/// `FrameDecoder.next`, the pure half of the decoder. (`decodeLast`, which needs a channel, is
/// exercised through an EmbeddedChannel in RapportServerTests/ProtocolFaultTests.swift, since
/// this target does not depend on NIOEmbedded.)
struct FrameDecoderTests {
    static func ping(_ nonce: UInt64) -> Rapport_V1_Frame {
        var frame = Rapport_V1_Frame()
        frame.ping.nonce = nonce
        return frame
    }

    static func encoded(_ frames: Rapport_V1_Frame...) throws -> [UInt8] {
        var buffer = ByteBuffer()
        for frame in frames { try FrameEncoder.write(frame, to: &buffer) }
        return Array(buffer.readableBytesView)
    }

    static func lengthPrefixed(_ body: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) } + body
    }

    static func error(_ result: InboundFrame?) -> SyncError.Code? {
        if case .invalid(let error)? = result { return error.code }
        return nil
    }

    @Test func aFrameArrivingByteByByteIsDecodedOnceComplete() throws {
        let bytes = try Self.encoded(Self.ping(0xdead_beef))
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        var buffer = ByteBuffer()
        for (position, byte) in bytes.enumerated() {
            buffer.writeInteger(byte)
            let result = decoder.next(&buffer)
            if position < bytes.count - 1 {
                #expect(result.isNone, "decoded after \(position + 1) of \(bytes.count) bytes")
                // Nothing is consumed until the whole frame is there.
                #expect(buffer.readableBytes == position + 1)
            } else {
                guard case .frame(let frame)? = result else { Issue.record("no frame: \(String(describing: result))"); return }
                #expect(frame == Self.ping(0xdead_beef))
            }
        }
        #expect(buffer.readableBytes == 0)
        #expect(decoder.next(&buffer).isNone)
    }

    @Test func theLimitBeforeLoginAppliesUntilTheSessionIsEstablished() throws {
        // A 600-byte ping: over a 512-byte pre-login limit, under the 4 KiB session one.
        // Field 8 (ping, nonce 5), then an unknown field 100 of 588 bytes (length varint 0xcc 0x04).
        let bytes = Self.lengthPrefixed([0x42, 0x02, 0x08, 0x05, 0xa2, 0x06, 0xcc, 0x04] + [UInt8](repeating: 0x61, count: 588))
        try #require(bytes.count - 4 == 596)

        let early = FrameSizeLimit(preLogin: 512, session: 4096)
        var refusing = FrameDecoder(limit: early)
        // The prefix alone is enough to refuse, and the message says why this limit applies.
        var prefix = ByteBuffer(bytes: bytes.prefix(4))
        guard case .invalid(let error)? = refusing.next(&prefix) else { Issue.record("not refused on its prefix"); return }
        #expect(error.code == .frameTooLarge)
        #expect(error.message.contains("before login"), "\(error.message)")

        let late = FrameSizeLimit(preLogin: 512, session: 4096)
        var accepting = FrameDecoder(limit: late)
        late.establish()
        var whole = ByteBuffer(bytes: bytes)
        guard case .frame(let frame)? = accepting.next(&whole) else { Issue.record("refused after login"); return }
        #expect(frame.ping.nonce == 5)
    }

    @Test func aFrameSplitAcrossReadsInTheMiddleOfItsPrefix() throws {
        let bytes = try Self.encoded(Self.ping(1), Self.ping(2))
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        var buffer = ByteBuffer(bytes: bytes.prefix(2))
        #expect(decoder.next(&buffer).isNone)
        buffer.writeBytes(bytes[2..<(bytes.count - 3)])
        guard case .frame(let first)? = decoder.next(&buffer) else { Issue.record("first frame missing"); return }
        #expect(first.ping.nonce == 1)
        #expect(decoder.next(&buffer).isNone)
        buffer.writeBytes(bytes.suffix(3))
        guard case .frame(let second)? = decoder.next(&buffer) else { Issue.record("second frame missing"); return }
        #expect(second.ping.nonce == 2)
    }

    @Test func twoFramesInOneBufferComeOutInOrder() throws {
        var goodbye = Rapport_V1_Frame()
        goodbye.goodbye.reason = "done"
        var buffer = ByteBuffer(bytes: try Self.encoded(Self.ping(7), goodbye))
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        guard case .frame(let first)? = decoder.next(&buffer), case .frame(let second)? = decoder.next(&buffer) else {
            Issue.record("two frames expected")
            return
        }
        #expect(first == Self.ping(7))
        #expect(second == goodbye)
        #expect(decoder.next(&buffer).isNone)
        #expect(buffer.readableBytes == 0)
    }

    @Test func aLengthOverTheLimitIsRefusedFromThePrefixAloneAndTheStreamIsDropped() throws {
        var decoder = FrameDecoder(maxFrameBytes: 100)
        var buffer = ByteBuffer(bytes: [0, 0, 0, 101])
        #expect(Self.error(decoder.next(&buffer)) == .frameTooLarge)
        #expect(buffer.readableBytes == 0)
        // Whatever follows is discarded: framing is lost.
        buffer.writeBytes(try Self.encoded(Self.ping(1)))
        #expect(decoder.next(&buffer).isNone)
        #expect(buffer.readableBytes == 0)
    }

    @Test func aFrameOfExactlyTheLimitIsAccepted() throws {
        let frame = Self.ping(300)
        let bytes = try Self.encoded(frame)
        var decoder = FrameDecoder(maxFrameBytes: bytes.count - 4)
        var buffer = ByteBuffer(bytes: bytes)
        guard case .frame(let decoded)? = decoder.next(&buffer) else { Issue.record("refused at the limit"); return }
        #expect(decoded == frame)
    }

    @Test func bytesThatAreNotAFrameAreMalformed() throws {
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        // A truncated varint, then a valid frame that must not be read after the failure.
        var buffer = ByteBuffer(bytes: Self.lengthPrefixed([0xff, 0xff, 0xff, 0xff]) + (try Self.encoded(Self.ping(1))))
        #expect(Self.error(decoder.next(&buffer)) == .malformedFrame)
        #expect(decoder.next(&buffer).isNone)
        #expect(buffer.readableBytes == 0)
        // Wire type 7 does not exist.
        var other = FrameDecoder(maxFrameBytes: 1024)
        var invalidWireType = ByteBuffer(bytes: Self.lengthPrefixed([0x0f, 0x00]))
        #expect(Self.error(other.next(&invalidWireType)) == .malformedFrame)
    }

    @Test func aFrameWithOnlyAnUnknownMessageTypeIsRefused() throws {
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        // Field 99, length-delimited, empty: a message type of a later protocol version.
        var buffer = ByteBuffer(bytes: Self.lengthPrefixed([0x9a, 0x06, 0x00]))
        #expect(Self.error(decoder.next(&buffer)) == .unknownMessageType)
        var empty = FrameDecoder(maxFrameBytes: 1024)
        var nothing = ByteBuffer(bytes: Self.lengthPrefixed([]))
        #expect(Self.error(empty.next(&nothing)) == .unknownMessageType)
    }

    @Test func unknownFieldsBesideAKnownMessageAreIgnored() throws {
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        // ping { nonce: 9 } then field 99 (empty): a newer peer's addition to a known frame.
        var buffer = ByteBuffer(bytes: Self.lengthPrefixed([0x42, 0x02, 0x08, 0x09, 0x9a, 0x06, 0x00]))
        guard case .frame(let frame)? = decoder.next(&buffer) else { Issue.record("refused"); return }
        #expect(frame.ping.nonce == 9)
    }

    @Test func aTruncatedTailIsJustIncompleteForNext() throws {
        // `next` cannot tell a truncated frame from one still arriving; decodeLast reports it.
        let bytes = try Self.encoded(Self.ping(1), Self.ping(2))
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        var buffer = ByteBuffer(bytes: bytes.dropLast())
        guard case .frame? = decoder.next(&buffer) else { Issue.record("first frame missing"); return }
        #expect(decoder.next(&buffer).isNone)
        #expect(buffer.readableBytes > 0)
    }
}

extension Optional where Wrapped == InboundFrame {
    /// `InboundFrame` is not Equatable; tests only need to know that nothing came out.
    var isNone: Bool { if case .none = self { true } else { false } }
}
