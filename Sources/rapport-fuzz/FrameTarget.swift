import NIOCore
import NIOEmbedded
import SyncProtocol

/// Target `frames`: the input is a byte stream as it comes out of TLS, decoded as the server
/// decodes it, with the server's frame limit.
///
/// Properties: the stream splits into the same frames and violations whether it arrives at once
/// or in pieces through a channel pipeline (as `ByteToMessageHandler` calls the decoder, ending
/// with `decodeLast` when the connection closes); nothing comes out after a violation; and every
/// frame, encoded again by `FrameEncoder`, decodes to itself.
enum FrameTarget {
    /// What the decoder handed up, in a form that can be compared.
    enum Outcome: Equatable {
        case frame(Rapport_V1_Frame)
        case pullBatch(PulledBatch)
        case invalid(SyncError.Code)

        init(_ inbound: InboundFrame) {
            switch inbound {
            case .frame(let frame): self = .frame(frame)
            case .pullBatch(let batch): self = .pullBatch(batch)
            case .invalid(let error): self = .invalid(error.code)
            }
        }
    }

    static let maxFrameBytes = SessionLimits().maxFrameBytes

    static func run(_ input: UnsafeRawBufferPointer) {
        var decoder = FrameDecoder(maxFrameBytes: maxFrameBytes)
        var buffer = ByteBuffer(bytes: input)
        var expected: [Outcome] = []
        while let inbound = decoder.next(&buffer) {
            let outcome = Outcome(inbound)
            if case .invalid = expected.last { violated("frames: \(outcome) after a violation") }
            expected.append(outcome)
            if case .frame(let frame) = outcome { checkRoundTrip(frame) }
        }
        // A connection that closes now ends in the middle of a frame, unless the stream was
        // already broken or everything was consumed.
        if buffer.readableBytes > 0, !expected.contains(where: { if case .invalid = $0 { true } else { false } }) {
            expected.append(.invalid(.malformedFrame))
        }

        let decoded = decodeInPieces(input)
        guard decoded == expected else {
            violated("frames: in pieces \(decoded.map(describe)), at once \(expected.map(describe))")
        }
        checkDeviceReading(input, server: expected)
    }

    /// A device's decoder, which reads pull batches by hand (`PulledBatch`), reads the stream
    /// as the server's does: the same batch where SwiftProtobuf read one, a refusal only where
    /// SwiftProtobuf refused too or the batch it read would be refused, the same other frames.
    static func checkDeviceReading(_ input: UnsafeRawBufferPointer, server: [Outcome]) {
        var decoder = FrameDecoder(maxFrameBytes: maxFrameBytes, readsPullBatches: true)
        var buffer = ByteBuffer(bytes: input)
        var index = 0
        while let inbound = decoder.next(&buffer) {
            let device = Outcome(inbound)
            guard index < server.count else { violated("frames: the device read \(describe(device)) past the server's \(server.count)") }
            let other = server[index]
            index += 1
            switch (device, other) {
            case (.pullBatch(let batch), .frame(let frame)):
                guard case .pullBatch(let read)? = frame.body, (try? PulledBatch(read)) == batch else {
                    violated("frames: the device read \(describe(device)), SwiftProtobuf \(describe(other))")
                }
            case (.invalid, .frame(let frame)):
                guard case .pullBatch(let read)? = frame.body, (try? PulledBatch(read)) == nil else {
                    violated("frames: the device refused what SwiftProtobuf read: \(describe(other))")
                }
                return
            case (.invalid, .invalid):
                return
            case (.frame(let a), .frame(let b)) where a == b:
                break
            default:
                violated("frames: the device read \(describe(device)), the server \(describe(other))")
            }
        }
    }

    /// The frame as the peer would have to send it, decoded again.
    static func checkRoundTrip(_ frame: Rapport_V1_Frame) {
        var buffer = ByteBuffer()
        do {
            try FrameEncoder.write(frame, to: &buffer)
        } catch {
            violated("frames: a decoded frame does not encode: \(error)")
        }
        var decoder = FrameDecoder(maxFrameBytes: maxFrameBytes)
        guard case .frame(let again)? = decoder.next(&buffer), buffer.readableBytes == 0, again == frame else {
            violated("frames: a decoded frame, encoded again, does not decode to itself: \(frame)")
        }
    }

    /// Feeds the input through an embedded pipeline in pieces whose sizes follow from the input
    /// itself (so a failure replays), then closes the channel.
    static func decodeInPieces(_ input: UnsafeRawBufferPointer) -> [Outcome] {
        let channel = EmbeddedChannel()
        var outcomes: [Outcome] = []
        func drain() throws {
            while let inbound = try channel.readInbound(as: InboundFrame.self) { outcomes.append(Outcome(inbound)) }
        }
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrameBytes)))
            var offset = 0
            var seed = input.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 }
            while offset < input.count {
                seed = seed &* 1_103_515_245 &+ 12_345
                let size = Swift.min(input.count - offset, Int(seed >> 16) % 64 + 1)
                try channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[offset..<offset + size])))
                try drain()
                offset += size
            }
            _ = try channel.finish(acceptAlreadyClosed: true)
            try drain()
        } catch {
            violated("frames: the pipeline threw \(error)")
        }
        return outcomes
    }

    static func describe(_ outcome: Outcome) -> String {
        switch outcome {
        case .frame(let frame): "frame(\(String(describing: frame.body).prefix(60)))"
        case .pullBatch(let batch): "pullBatch(\(batch.records.count) records)"
        case .invalid(let code): "invalid(\(code))"
        }
    }
}
