import Foundation
@testable import RapportClient
import RapportServer
import SyncProtocol
import TLS
import Testing

/// Memory before login (SPEC.md 2.5): small frames until Hello is accepted, caps on connections
/// in all and on those not logged in yet, `SERVER_BUSY` for the excess. Same real server, real
/// TLS and helpers as the other protocol faults.
extension ProtocolFaultTests {
    @Test func aPreLoginLengthPrefixOverThePreLoginLimitIsRefusedBeforeItsBody() async throws {
        // A handshake timeout far beyond a loaded machine's handshakes, so that only the frame
        // under test can make the server close (it once closed before the write under load).
        let fixture = try await ServerFixture(limits: SessionLimits(handshakeTimeout: .seconds(120)))
        let limit = SessionLimits().maxPreLoginFrameBytes
        for declared in [limit + 1, 15 << 20] {
            let connection = try await RawConnection.tls(to: fixture)
            // The prefix and a little of the body: the server must answer without the rest.
            try await connection.send(bytes: withUnsafeBytes(of: UInt32(declared).bigEndian) { Array($0) } + [0x0a, 0x00])
            let error = try await expectErrorThenClose(connection, .frameTooLarge)
            #expect(error?.message.contains("before login") == true, "\(error?.message ?? "")")
            #expect(error?.retryable == false)
        }
        try await expectStillServes(fixture)
        await fixture.stop()
    }

    @Test func aHelloPaddedToExactlyThePreLoginLimitIsWelcomed() async throws {
        let fixture = try await ServerFixture()
        let limit = SessionLimits().maxPreLoginFrameBytes
        let hello = try Rapport_V1_Frame.helloFrame().serializedBytes() as [UInt8]
        // An unknown field (number 100, LEN) fills the frame up to the limit; the Hello is intact.
        let paddingHeader = 2 + 2                          // 2-byte tag, 2-byte length
        let padding = limit - hello.count - paddingHeader
        let body = hello + unknownField100 + varint(UInt64(padding)) + [UInt8](repeating: 0x61, count: padding)
        try #require(body.count == limit)
        let connection = try await RawConnection.tls(to: fixture)
        try await connection.send(bytes: lengthPrefixed(body))
        let reply = try await connection.nextFrame()
        guard case .welcome(let welcome)? = reply?.body else {
            Issue.record("expected Welcome, got \(reply.map { "\($0)" } ?? "a closed connection")")
            return
        }
        #expect(welcome.limits.maxFrameBytes == UInt32(SessionLimits().maxFrameBytes))
        await connection.close()
        await fixture.stop()
    }

    @Test func afterLoginFramesUpToTheSessionLimitStillWork() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        // A 4 MiB ping: far over the pre-login limit, under the session's 16 MiB.
        let size = 4 << 20
        var body: [UInt8] = [0x42, 0x02, 0x08, 0x09]    // field 8 (ping), 2 bytes: nonce = 9
        let paddingHeader = 2 + varint(UInt64(size)).count
        let padding = size - body.count - paddingHeader
        body += unknownField100 + varint(UInt64(padding)) + [UInt8](repeating: 0x62, count: padding)
        try #require(body.count == size)
        try await connection.send(bytes: lengthPrefixed(body))
        let reply = try await connection.nextFrame()
        #expect(reply?.pong.nonce == 9)
        // And a push of real records bigger than the pre-login limit.
        let note = String(repeating: "n", count: 2_000)
        let records = try (0..<40).map { try Self.record(["first_name": .text("Big\($0)"), "last_name": .text(note)]) }
        try #require(try RawConnection.encode(.pushFrame(records)).count > SessionLimits().maxPreLoginFrameBytes)
        try await connection.send(.pushFrame(records))
        let result = try await connection.nextFrame()
        #expect(result?.pushResult.results.map(\.outcome) == Array(repeating: .applied, count: 40))
        await connection.close()
        await fixture.stop()
    }

    @Test func overThePerAddressCapANewConnectionIsToldServerBusyUntilOthersLeave() async throws {
        let fixture = try await ServerFixture { $0.maxPreLoginPerAddress = 3 }
        // A session that logged in no longer counts against the cap.
        let (session, _) = try await RawConnection.established(to: fixture)
        var waiting: [RawConnection] = []
        for _ in 0..<3 { waiting.append(try await RawConnection.tls(to: fixture)) }
        #expect(fixture.server.connectionCounts.preLogin == 3)
        let busy = try await RawConnection.tls(to: fixture)
        let error = try await expectErrorThenClose(busy, .serverBusy)
        #expect(error?.retryable == true)
        #expect((error?.retryAfterMs ?? 0) >= 1_000, "\(error.map { "\($0)" } ?? "")")
        #expect(error?.message.contains("127.0.0.1") == true, "\(error?.message ?? "")")

        for connection in waiting { await connection.close() }
        try await eventually("the waiting connections to be counted out") { fixture.server.connectionCounts.preLogin == 0 }
        let (again, welcome) = try await RawConnection.established(to: fixture)
        #expect(!welcome.serverReplicaID.isEmpty)
        await again.close()
        await session.close()
        try await expectStillServes(fixture)
        // Sessions, waiting connections and the busy answer alike gave their places back.
        try await eventually("every connection to be counted out") { fixture.server.connectionCounts == (0, 0) }
        await fixture.stop()
    }

    @Test func overTheTotalCapAConnectionIsClosedAtOnceAndTheClientRetries() async throws {
        let fixture = try await ServerFixture { $0.maxConnections = 2 }
        let (first, _) = try await RawConnection.established(to: fixture)
        let second = try await RawConnection.tls(to: fixture)
        let third = try await RawConnection.connect(to: fixture, tls: true)
        let frames = try await third.waitForClose()
        #expect(frames.isEmpty)

        // The library takes the dropped connection as one worth retrying, and gets in once a
        // place is free.
        let device = try fixture.device("patient") { $0.retry = RetryPolicy(maxAttempts: 1) }
        do {
            try await device.sync()
            Issue.record("a sync went through a full server")
        } catch {
            #expect(RapportClient.isRetryable(error), "\(error)")
        }
        await second.close()
        try await eventually("a place to free up") { fixture.server.connectionCounts.total < 2 }
        try await device.sync()
        await first.close()
        await fixture.stop()
    }

    @Test func theClientWaitsAtLeastAsLongAsServerBusyAsks() async throws {
        let fixture = try await ServerFixture {
            $0.maxPreLoginPerAddress = 1
            $0.busyRetryAfter = .milliseconds(50)
        }
        let holder = try await RawConnection.tls(to: fixture)
        let device = try fixture.device("turned-away") { $0.retry = RetryPolicy(maxAttempts: 1) }
        do {
            try await device.sync()
            Issue.record("the sync went through a full pre-login cap")
        } catch let error as SyncError {
            #expect(error.code == .serverBusy)
            #expect(error.retryable)
            let asked = try #require(error.retryAfter)
            #expect(asked >= .milliseconds(50))
            // The policy never waits less than the server asked, whatever its own backoff.
            let policy = RetryPolicy(initialDelay: .milliseconds(1), maxDelay: .milliseconds(1))
            #expect(policy.delay(before: 1, after: error) >= asked)
        }
        await holder.close()
        try await eventually("the holder to be counted out") { fixture.server.connectionCounts.preLogin == 0 }
        #expect(try await device.sync().attempts == 1)
        await fixture.stop()
    }

    /// Polls `condition` until it holds, for at most 10 s: a bound against hanging, not a
    /// timing expectation.
    func eventually(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now.advanced(by: RawConnection.defaultWait)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw RawConnection.TimedOut(what: what) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}

/// The tag of field 100 with wire type LEN: a field no Frame has, for padding.
let unknownField100: [UInt8] = [0xa2, 0x06]
