import CRM
import Foundation
import NIOCore
import NIOEmbedded
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import Testing
import TestScheduling

/// A real server (TLS, SQLite) fed broken, hostile or unlucky clients through `RawConnection`.
/// Each fault must end with the documented answer, touch nothing it should not, and leave the
/// server serving normal devices.
@Suite(.serialized) struct ProtocolFaultTests {
    // MARK: Framing and TLS

    @Test func garbageBeforeTheTLSHandshakeClosesTheConnection() async throws {
        let fixture = try await ServerFixture()
        let connection = try await RawConnection.connect(to: fixture, tls: false)
        try await connection.send(bytes: Array("GET / HTTP/1.1\r\n\r\n".utf8))
        let frames = try await connection.waitForClose()
        #expect(frames.isEmpty)
        #expect(!String(decoding: connection.receivedBytes, as: UTF8.self).contains("HTTP"))
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func bytesThatAreNotAFrameAreMalformed() async throws {
        let fixture = try await ServerFixture()
        let connection = try await RawConnection.tls(to: fixture)
        // A 4-byte body that is a truncated varint tag, so no protobuf parser can read it.
        try await connection.send(bytes: [0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        try await expectErrorThenClose(connection, .malformedFrame)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aLengthPrefixOverTheLimitIsRefusedBeforeItsBodyArrives() async throws {
        let fixture = try await ServerFixture(limits: SessionLimits(maxFrameBytes: 64 << 10))
        let (connection, welcome) = try await RawConnection.established(to: fixture)
        #expect(welcome.limits.maxFrameBytes == 64 << 10)
        // Announces 64 KiB + 1 but sends only a few bytes: the prefix alone is enough to refuse.
        try await connection.send(bytes: [0x00, 0x01, 0x00, 0x01, 0x0a, 0x00])
        try await expectErrorThenClose(connection, .frameTooLarge)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aFrameOfExactlyTheLimitIsAccepted() async throws {
        let limit = 64 << 10
        let fixture = try await ServerFixture(limits: SessionLimits(maxFrameBytes: limit))
        let (connection, _) = try await RawConnection.established(to: fixture)
        // Ping with nonce 7, padded with an unknown field (number 100) up to exactly `limit` bytes.
        var body: [UInt8] = [0x42, 0x02, 0x08, 0x07]   // field 8 (ping), 2 bytes: nonce = 7
        let paddingHeader = 2 + 3                         // tag 100/LEN, 3-byte length
        let padding = limit - body.count - paddingHeader
        body += unknownField100 + varint(UInt64(padding)) + [UInt8](repeating: 0x61, count: padding)
        #expect(body.count == limit)
        try await connection.send(bytes: lengthPrefixed(body))
        let reply = try await connection.nextFrame()
        #expect(reply?.pong.nonce == 7)
        await connection.close()
        await fixture.stop()
    }

    @Test func aTruncatedFrameFollowedByTheClientClosingHarmsNoOne() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let frame = try RawConnection.encode(.pingFrame(42))
        try await connection.send(bytes: Array(frame.prefix(frame.count - 1)))
        await connection.close()
        // And one that never finished its prefix, before any Hello.
        let early = try await RawConnection.tls(to: fixture)
        try await early.send(bytes: [0, 0])
        await early.close()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aFrameWithAnUnknownMessageTypeIsRefused() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        // A valid protobuf Frame whose only field is number 99 (LEN, empty): a message from a
        // newer protocol version. Tag = 99 << 3 | 2 = 794 = varint 0x9a 0x06.
        try await connection.send(bytes: lengthPrefixed([0x9a, 0x06, 0x00]))
        try await expectErrorThenClose(connection, .unknownMessageType)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    // MARK: Session rules

    @Test func aPushBeforeHelloIsUnexpected() async throws {
        let fixture = try await ServerFixture()
        let connection = try await RawConnection.tls(to: fixture)
        let record = try Self.record(["first_name": .text("Early")])
        try await connection.send(.pushFrame([record]))
        try await expectErrorThenClose(connection, .unexpectedMessage)
        #expect(try fixture.tenantStore().record(Self.id(record)) == nil)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func badHellosAreRefusedWithTheirOwnCode() async throws {
        let fixture = try await ServerFixture()
        let cases: [(Rapport_V1_Frame, Rapport_V1_Error.Code)] = [
            (.helloFrame { $0.protocolVersion = 2 }, .unsupportedProtocolVersion),
            (.helloFrame { $0.schemaVersion = CRMSchema.version + 1 }, .incompatibleSchema),
            (.helloFrame(secret: Array("not the secret".utf8)), .authenticationFailed),
            (.helloFrame(tenant: "initech"), .unknownTenant),
        ]
        for (hello, code) in cases {
            let connection = try await RawConnection.tls(to: fixture)
            try await connection.send(hello)
            let error = try await expectErrorThenClose(connection, code)
            #expect(error?.retryable == false, "\(code)")
            try await expectStillServes(fixture)
        }
        await fixture.stop()
    }

    @Test func aPushOverTheBatchLimitIsRefusedWhole() async throws {
        let fixture = try await ServerFixture(limits: SessionLimits(maxBatchRecords: 3))
        let (connection, welcome) = try await RawConnection.established(to: fixture)
        #expect(welcome.limits.maxBatchRecords == 3)
        let records = try (0..<4).map { try Self.record(["first_name": .text("c\($0)")]) }
        try await connection.send(.pushFrame(records))
        try await expectErrorThenClose(connection, .batchTooLarge)
        let server = try fixture.tenantStore()
        for record in records { #expect(try server.record(Self.id(record)) == nil) }
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    // MARK: Timeouts

    @Test func aConnectionThatNeverStartsTLSIsClosedAfterTheHandshakeTimeout() async throws {
        let fixture = try await ServerFixture(limits: SessionLimits(handshakeTimeout: .milliseconds(300)))
        let connection = try await RawConnection.connect(to: fixture, tls: false)
        try await connection.waitForClose()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aTLSConnectionThatNeverSaysHelloTimesOut() async throws {
        // Long enough for the TLS handshake itself on a loaded machine, which the timeout includes.
        let fixture = try await ServerFixture(limits: SessionLimits(handshakeTimeout: .seconds(2)))
        let connection = try await RawConnection.tls(to: fixture)
        let error = try await expectErrorThenClose(connection, .timeout)
        #expect(error?.retryable == true)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aSilentSessionTimesOut() async throws {
        let fixture = try await ServerFixture(limits: SessionLimits(idleTimeout: .milliseconds(500)))
        let (connection, welcome) = try await RawConnection.established(to: fixture)
        #expect(welcome.limits.idleTimeoutMs == 500)
        let error = try await expectErrorThenClose(connection, .timeout)
        #expect(error?.retryable == true)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    // MARK: Pushes

    @Test func aClientThatDisconnectsMidPushStoresNothing() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let record = try Self.record(["first_name": .text("Half"), "last_name": .text(String(repeating: "x", count: 4000))])
        let id = try Self.id(record)
        let frame = try RawConnection.encode(.pushFrame([record]))
        try await connection.send(bytes: Array(frame.prefix(frame.count / 2)))
        await connection.close()

        let other = try await expectStillServes(fixture)
        #expect(try other.local { try $0.record(id) } == nil)
        #expect(try fixture.tenantStore().record(id) == nil)
        await fixture.stop()
    }

    @Test func invalidRecordsAreRejectedByNameAndTheValidOnesApplied() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let good = try Self.record(["first_name": .text("Ada"), "last_name": .text("Lovelace")])
        let wrongType = try Self.record(["last_name": .text("Bob"), "do_not_call": .text("yes")])
        let unknownType = try Self.record(type: "ticket", ["title": .text("help")])
        let alsoGood = try Self.record(type: "account", ["name": .text("Acme"), "annual_revenue": .real(1.5e6)])
        try await connection.send(.pushFrame([good, wrongType, unknownType, alsoGood], batch: 77))

        let reply = try #require(try await connection.nextFrame())
        let result = reply.pushResult
        #expect(result.batchID == 77)
        try #require(result.results.count == 4)
        #expect(result.results.map(\.outcome) == [.applied, .rejected, .rejected, .applied])
        #expect(result.results[1].reason.contains("do_not_call"), "\(result.results[1].reason)")
        #expect(result.results[2].reason.contains("ticket"), "\(result.results[2].reason)")
        #expect(result.serverSequence == 2)

        let server = try fixture.tenantStore()
        #expect(try server.record(Self.id(good)) != nil)
        #expect(try server.record(Self.id(alsoGood)) != nil)
        #expect(try server.record(Self.id(wrongType)) == nil)
        #expect(try server.record(Self.id(unknownType)) == nil)
        // The session goes on after rejections.
        try await connection.send(.pingFrame(5))
        #expect(try await connection.nextFrame()?.pong.nonce == 5)
        await connection.close()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aSecondHelloIsUnexpected() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        try await connection.send(.helloFrame())
        try await expectErrorThenClose(connection, .unexpectedMessage)
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    /// A record that passes validation but cannot be merged (it reuses one of its own dots
    /// for a different value) must be rejected alone, like any invalid record.
    @Test func aRecordThatReusesADotIsRejectedAloneAndTheSessionGoesOn() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let writer = try ReplicaID("raw-device")
        let id = UUID()
        let one = try Dot(replica: writer, counter: 1), two = try Dot(replica: writer, counter: 2)
        let t1 = HLCTimestamp(wallMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000), logical: 0)
        let t2 = HLCTimestamp(rawValue: t1.rawValue + 1)
        let liveness = Liveness(isDeleted: false, dot: one, timestamp: t1)
        let first = RecordState(id: id, type: "contact", vector: try VersionVector([writer: 1]), liveness: liveness,
                                fields: ["first_name": .register(RegisterState(value: .text("a"), dot: one, timestamp: t1)),
                                         "last_name": .register(RegisterState(value: .text("y"), dot: one, timestamp: t1))])
        try await connection.send(.pushFrame([Rapport_V1_Record(first)], batch: 1))
        #expect(try await connection.nextFrame()?.pushResult.results.map(\.outcome) == [.applied])

        // Counter 1 again, with another value: a peer that lies or lost its counter.
        let liar = RecordState(id: id, type: "contact", vector: try VersionVector([writer: 2]), liveness: liveness, fields: [
            "first_name": .register(RegisterState(value: .text("b"), dot: one, timestamp: t1)),
            "last_name": .register(RegisterState(value: .text("z"), dot: two, timestamp: t2)),
        ])
        let good = try Self.record(["last_name": .text("innocent bystander")])
        try await connection.send(.pushFrame([good, Rapport_V1_Record(liar)], batch: 2))
        let reply = try await connection.nextFrame()
        let goodStored = try fixture.tenantStore().record(Self.id(good)) != nil
        #expect(reply?.pushResult.results.map(\.outcome) == [.applied, .rejected])
        #expect(reply?.pushResult.results.last?.reason.contains("same dot") == true)
        #expect(goodStored)
        #expect(try fixture.tenantStore().record(id)?.values["first_name"] == .text("a"))
        await connection.close()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func oneIdPushedAsTwoTypesInOneBatchIsRejectedOnce() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let contact = try Self.record(["last_name": .text("Ada")])
        var account = try Self.record(type: "account", ["name": .text("Acme")])
        account.id = contact.id
        try await connection.send(.pushFrame([contact, account]))
        let reply = try await connection.nextFrame()
        #expect(reply?.pushResult.results.map(\.outcome) == [.applied, .rejected])
        await connection.close()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    // MARK: Pulls

    @Test func aPullFromBeyondTheServerSequenceAsksForAResyncAndTheSessionGoesOn() async throws {
        let fixture = try await ServerFixture()
        let (connection, welcome) = try await RawConnection.established(to: fixture)
        try await connection.send(.pullFrame(after: welcome.serverSequence + 10))
        let error = try #require(try await connection.nextError())
        #expect(error.code == .resyncRequired)
        try await connection.send(.pingFrame(0xfeed))
        let pong = try #require(try await connection.nextFrame())
        #expect(pong.pong.nonce == 0xfeed)
        // A pull from 0 still works on the same session.
        try await connection.send(.pullFrame(after: 0))
        let batch = try #require(try await connection.nextFrame())
        #expect(batch.pullBatch.lastSequence == welcome.serverSequence)
        await connection.close()
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    // MARK: Helpers

    /// Reads an `Error` frame with `code`, then the close that must follow it.
    @discardableResult
    func expectErrorThenClose(_ connection: RawConnection, _ code: Rapport_V1_Error.Code,
                              sourceLocation: SourceLocation = #_sourceLocation) async throws -> Rapport_V1_Error? {
        let first = try await connection.nextFrame()
        guard case .error(let error)? = first?.body else {
            Issue.record("expected an Error \(code), got \(first.map { "\($0)" } ?? "a closed connection")", sourceLocation: sourceLocation)
            return nil
        }
        #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        let after = try await connection.waitForClose()
        #expect(after.isEmpty, "frames after the Error: \(after)", sourceLocation: sourceLocation)
        return error
    }

    /// A normal device pushes a record and pulls everything: the server still works.
    @discardableResult
    func expectStillServes(_ fixture: ServerFixture, sourceLocation: SourceLocation = #_sourceLocation) async throws -> RapportClient {
        let device = try fixture.device("normal-\(UUID().uuidString.lowercased())")
        let id = try device.local { try $0.create("contact", ["first_name": .text("Still"), "last_name": .text("Here")]).id }
        let report = try await device.sync()
        #expect(report.pushed == 1, sourceLocation: sourceLocation)
        #expect(try fixture.tenantStore().record(id) != nil, sourceLocation: sourceLocation)
        return device
    }

    /// A record as the device `raw-device` would push it: one write (counter 1) setting `fields`.
    static func record(type: String = "contact", replica: String = "raw-device",
                       _ fields: [String: FieldValue]) throws -> Rapport_V1_Record {
        let writer = try ReplicaID(replica)
        let dot = try Dot(replica: writer, counter: 1)
        let now = HLCTimestamp(wallMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000), logical: 0)
        let state = RecordState(
            id: UUID(), type: type, vector: try VersionVector([writer: 1]),
            liveness: Liveness(isDeleted: false, dot: dot, timestamp: now),
            fields: fields.mapValues { .register(RegisterState(value: $0, dot: dot, timestamp: now)) })
        return Rapport_V1_Record(state)
    }

    static func id(_ record: Rapport_V1_Record) throws -> UUID {
        try #require(record.id.withUnsafeBytes { UUID(bytes: $0) })
    }

    func lengthPrefixed(_ body: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) } + body
    }

    func varint(_ value: UInt64) -> [UInt8] {
        var v = value, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
}

extension ProtocolFaultTests {
    /// `FrameDecoder.decodeLast` through a real `ByteToMessageHandler` (SyncProtocolTests has no
    /// NIOEmbedded): frames complete before the end come out, then one MALFORMED_FRAME for the tail.
    struct FrameDecoderEndOfStreamTests {
        final class Sink: ChannelInboundHandler, @unchecked Sendable {
            typealias InboundIn = InboundFrame
            var received: [InboundFrame] = []
            func channelRead(context: ChannelHandlerContext, data: NIOAny) { received.append(unwrapInboundIn(data)) }
        }

        @Test(.blocking) func aTruncatedTailAtTheEndOfTheStreamIsMalformed() throws {
            let sink = Sink()
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1024)), sink)
            var bytes = try RawConnection.encode(.pingFrame(1))
            let second = try RawConnection.encode(.pingFrame(2))
            bytes += second.prefix(second.count - 1)
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            #expect(sink.received.count == 1)
            _ = try? channel.finish()
            try #require(sink.received.count == 2)
            guard case .frame(let first) = sink.received[0] else { Issue.record("first is not a frame"); return }
            #expect(first.ping.nonce == 1)
            guard case .invalid(let error) = sink.received[1] else { Issue.record("the tail was not reported"); return }
            #expect(error.code == .malformedFrame)
        }

        @Test(.blocking) func aStreamThatEndsBetweenFramesIsClean() throws {
            let sink = Sink()
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1024)), sink)
            try channel.writeInbound(ByteBuffer(bytes: try RawConnection.encode(.pingFrame(1)) + RawConnection.encode(.pingFrame(2))))
            _ = try? channel.finish()
            #expect(sink.received.count == 2)
            #expect(sink.received.allSatisfy { if case .frame = $0 { true } else { false } })
        }
    }
}
