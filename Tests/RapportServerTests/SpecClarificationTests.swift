import CRM
import Foundation
import RapportServer
import SyncModel
import SyncProtocol
import Testing

/// The answers of Protocol/SPEC.md's clarifications that live in the server, pinned on a real
/// server over TLS: each test names the clarification it holds.
@Suite(.serialized) struct SpecClarificationServerTests {
    let faults = ProtocolFaultTests()

    /// Clarification 1: the server checks only that the client's schema is not newer; 0 (an
    /// unset field) and older versions get the same session, under the server's own schema.
    @Test func anyOlderSchemaVersionIsServedUnderTheServersSchema() async throws {
        // Several handshakes in a row: a loaded machine must not turn them into timeouts.
        let fixture = try await ServerFixture(limits: SessionLimits(handshakeTimeout: .seconds(120)))
        for version in UInt32(0)...CRMSchema.version {
            let connection = try await RawConnection.tls(to: fixture)
            try await connection.send(.helloFrame { $0.schemaVersion = version })
            let reply = try await connection.nextFrame()
            #expect(reply?.welcome.schemaVersion == CRMSchema.version, "client schema \(version)")
            await connection.close()
        }
        let newer = try await RawConnection.tls(to: fixture)
        try await newer.send(.helloFrame { $0.schemaVersion = CRMSchema.version + 1 })
        try await faults.expectErrorThenClose(newer, .incompatibleSchema)
        await fixture.stop()
    }

    /// Clarification 3: a state whose vector the server already covers is `UNCHANGED`, even
    /// when it carries another value under a dot the server has: nothing of it is read.
    @Test func aDifferentValueUnderAKnownDotAndVectorIsUnchanged() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        var record = try ProtocolFaultTests.record(["last_name": .text("Lovelace")])
        try await connection.send(.pushFrame([record], batch: 1))
        #expect(try await connection.nextFrame()?.pushResult.results.map(\.outcome) == [.applied])
        let id = try ProtocolFaultTests.id(record)
        var other = try record.decoded()
        guard case .register(let name)? = other.fields["last_name"] else { Issue.record("no last_name"); return }
        other.fields["last_name"] = .register(RegisterState(value: .text("Byron"), dot: name.dot, timestamp: name.timestamp))
        record = Rapport_V1_Record(other)
        try await connection.send(.pushFrame([record], batch: 2))
        #expect(try await connection.nextFrame()?.pushResult.results.map(\.outcome) == [.unchanged])
        #expect(try fixture.tenantStore().record(id)?.values["last_name"] == .text("Lovelace"))
        await connection.close()
        await fixture.stop()
    }

    /// Clarification 5: the first occurrence of a record in a push is applied, later ones are
    /// refused, whatever they hold.
    @Test func aRecordTwiceInOnePushIsAppliedOnceAndRefusedOnce() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let record = try ProtocolFaultTests.record(["last_name": .text("Lovelace")])
        try await connection.send(.pushFrame([record, record]))
        let results = try #require(try await connection.nextFrame()).pushResult.results
        #expect(results.map(\.outcome) == [.applied, .rejected])
        #expect(results.last?.reason.contains("twice") == true, "\(results.last?.reason ?? "")")
        #expect(results.last?.code == .unspecified)
        await connection.close()
        await fixture.stop()
    }

    /// Clarification 6: ALPN `rapport/1` is what the server offers; a client without ALPN is
    /// served, one that offers only other protocols fails the handshake
    /// (no_application_protocol) before any frame.
    @Test func aClientWithoutALPNIsServedAndOneWithAnotherProtocolIsRefused() async throws {
        let fixture = try await ServerFixture()
        let plain = try await RawConnection.connect(to: fixture, tls: true, alpn: [])
        try await plain.waitForHandshake()
        try await plain.send(.helloFrame())
        #expect(try await plain.nextFrame()?.welcome.schemaVersion == CRMSchema.version)
        await plain.close()

        let wrong = try await RawConnection.connect(to: fixture, tls: true, alpn: ["h2"])
        let frames = try await wrong.waitForClose()
        #expect(frames.isEmpty)
        #expect(!wrong.errors.isEmpty)
        try await faults.expectStillServes(fixture)
        await fixture.stop()
    }

    /// Clarification 7: a write under another replica's id the server never had is `REJECTED`
    /// with `PERMISSION_DENIED`, like a write the user's rights refuse.
    @Test func aWriteUnderAnotherReplicasIdIsPermissionDenied() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        let forged = try ProtocolFaultTests.record(replica: "someone-else", ["last_name": .text("Forged")])
        let own = try ProtocolFaultTests.record(["last_name": .text("Mine")])
        try await connection.send(.pushFrame([forged, own]))
        let results = try #require(try await connection.nextFrame()).pushResult.results
        #expect(results.map(\.outcome) == [.rejected, .applied])
        #expect(results.first?.code == .permissionDenied)
        #expect(results.first?.reason.contains("own id") == true, "\(results.first?.reason ?? "")")
        #expect(try fixture.tenantStore().record(ProtocolFaultTests.id(forged)) == nil)
        await connection.close()
        await fixture.stop()
    }

    /// Clarification 9: a device's pull brings back the records it pushed, as the server
    /// stored them (here exactly the bytes pushed, which were new and canonical).
    @Test func aPullBringsBackWhatTheDevicePushed() async throws {
        let fixture = try await ServerFixture()
        let (connection, welcome) = try await RawConnection.established(to: fixture)
        let record = try ProtocolFaultTests.record(["last_name": .text("Lovelace")])
        try await connection.send(.pushFrame([record]))
        let pushed = try #require(try await connection.nextFrame()).pushResult
        try await connection.send(.pullFrame(after: welcome.serverSequence))
        let batch = try #require(try await connection.nextFrame()).pullBatch
        #expect(batch.records == [record])
        #expect(batch.lastSequence == pushed.serverSequence)
        await connection.close()
        await fixture.stop()
    }

    /// Clarification 16: after Goodbye the server closes its side with a TLS close_notify, so
    /// the client can tell the end from a truncation.
    @Test func theServerAnswersGoodbyeWithCloseNotify() async throws {
        let fixture = try await ServerFixture()
        let (connection, _) = try await RawConnection.established(to: fixture)
        var goodbye = Rapport_V1_Frame()
        goodbye.goodbye = Rapport_V1_Goodbye()
        try await connection.send(goodbye)
        let frames = try await connection.waitForClose()
        #expect(frames.isEmpty)
        #expect(connection.errors.isEmpty, "\(connection.errors)")
        await fixture.stop()
    }
}
