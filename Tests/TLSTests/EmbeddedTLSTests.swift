import NIOCore
import NIOEmbedded
import Testing
@testable import TLS

@Suite struct EmbeddedTLSTests {
    @Test func handshakeDataBothWaysAndALPN() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(
            client: try pki.clientContext(alpn: ["h2", "rapport/1"]),
            server: try pki.serverContext(alpn: ["rapport/1", "h2"])
        )
        defer { pair.finish() }
        // Written before the handshake: must be buffered, then delivered.
        let early = pair.client.writeAndFlush(ByteBuffer(string: "hello before handshake"))
        try pair.shuttle()

        #expect(pair.clientRecorder.events.first == .handshakeCompleted(alpn: "rapport/1", version: "TLSv1.3"))
        #expect(pair.serverRecorder.events.first == .handshakeCompleted(alpn: "rapport/1", version: "TLSv1.3"))
        #expect(pair.serverHandler.negotiatedALPN == "rapport/1")
        #expect(pair.clientHandler.negotiatedVersion == "TLSv1.3")
        try early.wait()
        #expect(pair.serverRecorder.received == Array("hello before handshake".utf8))

        // Larger than one 16 KiB record, in both directions.
        let big = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let reply = pair.server.writeAndFlush(ByteBuffer(bytes: big))
        pair.client.writeAndFlush(ByteBuffer(bytes: big.reversed()), promise: nil)
        try pair.shuttle()
        try reply.wait()
        #expect(pair.clientRecorder.received == big)
        #expect(pair.serverRecorder.received.dropFirst(22) == big.reversed()[...])
        #expect(pair.clientRecorder.errors.isEmpty && pair.serverRecorder.errors.isEmpty)
    }

    /// A live session quiet after its first sync must not keep the megabyte its pull batch took
    /// in OpenSSL's memory BIOs (they keep their largest buffer unless replaced).
    @Test func aQuietConnectionKeepsNoBufferOfALargeTransfer() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()
        let big = [UInt8](repeating: 0x5a, count: 1 << 20)
        pair.server.writeAndFlush(ByteBuffer(bytes: big), promise: nil)
        pair.client.writeAndFlush(ByteBuffer(bytes: big), promise: nil)
        try pair.shuttle()
        #expect(pair.clientRecorder.received.count == big.count)
        #expect(pair.serverRecorder.received.count == big.count)
        #expect(pair.serverHandler.bufferedCapacity <= 16 << 10, "\(pair.serverHandler.bufferedCapacity)")
        #expect(pair.clientHandler.bufferedCapacity <= 16 << 10, "\(pair.clientHandler.bufferedCapacity)")

        // The fresh buffers carry on where the old ones stopped.
        pair.server.writeAndFlush(ByteBuffer(string: "pong"), promise: nil)
        pair.client.writeAndFlush(ByteBuffer(string: "ping"), promise: nil)
        try pair.shuttle()
        #expect(pair.clientRecorder.received.suffix(4) == Array("pong".utf8)[...])
        #expect(pair.serverRecorder.received.suffix(4) == Array("ping".utf8)[...])
        #expect(pair.clientRecorder.errors.isEmpty && pair.serverRecorder.errors.isEmpty)
    }

    /// A frame of a megabyte leaves as one buffer of ciphertext, made at its final size: the
    /// estimate covers every record's overhead, so it never grows while the frame is encrypted
    /// a record at a time, and the peer reads back exactly what was written.
    @Test func aLargeWriteLeavesAsOneBufferSizedForItsCiphertext() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()
        for size in [1, 16 * 1024, 16 * 1024 + 1, (1 << 20) + 7] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ size) }
            let before = pair.clientRecorder.received.count
            pair.server.writeAndFlush(ByteBuffer(bytes: plaintext), promise: nil)
            let ciphertext = try #require(try pair.server.readOutbound(as: ByteBuffer.self))
            #expect(try pair.server.readOutbound(as: ByteBuffer.self) == nil, "one buffer per write (\(size) bytes)")
            let records = (size + TLSHandler.recordPlaintextBytes - 1) / TLSHandler.recordPlaintextBytes
            #expect(ciphertext.readableBytes == size + 22 * records, "TLS 1.3 adds 22 bytes to each record")
            #expect(ciphertext.readableBytes <= TLSHandler.ciphertextCapacity(plaintext: size))
            try pair.client.writeInbound(ciphertext)
            #expect(Array(pair.clientRecorder.received[before...]) == plaintext)
            #expect(pair.serverHandler.bufferedCapacity <= 16 << 10, "\(pair.serverHandler.bufferedCapacity)")
        }
        #expect(pair.clientRecorder.errors.isEmpty && pair.serverRecorder.errors.isEmpty)
    }

    @Test func closeNotifyIsObservedByPeer() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()
        #expect(pair.clientRecorder.handshakeCompleted)

        try pair.client.close().wait()
        try pair.shuttle()
        #expect(pair.serverRecorder.events.contains(.closeNotifyReceived))
        #expect(pair.serverRecorder.sawInactive)
        #expect(!pair.server.isActive)
        #expect(pair.serverRecorder.errors.isEmpty)
        #expect(pair.clientRecorder.errors.isEmpty)
    }

    @Test func untrustedCAIsRejected() throws {
        let pki = try TestPKI()
        let otherPKI = try TestPKI()
        let pair = try EmbeddedPair(client: try otherPKI.clientContext(), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()

        let error = try #require(pair.clientRecorder.tlsErrors.first)
        #expect(error.operation == .handshake)
        #expect(error.verifyResult != nil)
        #expect(error.description.contains("verif"))
        #expect(!error.openSSLErrors.isEmpty)
        #expect(!pair.clientRecorder.handshakeCompleted)
        #expect(!pair.client.isActive)
        // The client's alert tells the server why, which the server's metrics count by kind.
        #expect(error.handshakeFailureReason == .certificate)
        #expect(pair.serverRecorder.tlsErrors.first?.handshakeFailureReason == .certificate, "\(pair.serverRecorder.tlsErrors)")
    }

    @Test func wrongHostnameIsRejected() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(host: "rapport.example.com"), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()

        let error = try #require(pair.clientRecorder.tlsErrors.first)
        #expect(error.verifyResult?.contains("hostname mismatch") == true)
        #expect(!pair.clientRecorder.handshakeCompleted)
    }

    @Test func ipAddressIsVerifiedAgainstIPSubjectAltName() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(host: "127.0.0.1"), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()
        #expect(pair.clientRecorder.handshakeCompleted)

        let wrongIP = try EmbeddedPair(client: try pki.clientContext(host: "10.0.0.1"), server: try pki.serverContext())
        defer { wrongIP.finish() }
        try wrongIP.shuttle()
        #expect(wrongIP.clientRecorder.tlsErrors.first?.verifyResult != nil)
    }

    @Test func spkiPinning() throws {
        let pki = try TestPKI()
        let pin = try SPKIPin.sha256Hex(certificatePEM: pki.bundle.serverCertificateChainPEM)
        #expect(pin.count == 64)

        let good = try EmbeddedPair(client: try pki.clientContext(pin: pin.uppercased()), server: try pki.serverContext())
        defer { good.finish() }
        try good.shuttle()
        #expect(good.clientRecorder.handshakeCompleted)
        #expect(good.clientRecorder.errors.isEmpty)

        let otherPin = try SPKIPin.sha256Hex(certificatePEM: try TestPKI().bundle.serverCertificateChainPEM)
        let bad = try EmbeddedPair(client: try pki.clientContext(pin: otherPin), server: try pki.serverContext())
        defer { bad.finish() }
        try bad.shuttle()
        let error = try #require(bad.clientRecorder.tlsErrors.first)
        #expect(error.operation == .pinVerification)
        #expect(error.description.contains(otherPin))
        #expect(!bad.clientRecorder.handshakeCompleted)
        #expect(!bad.client.isActive)
        // The server never got our Finished, so it never completed either.
        #expect(!bad.serverRecorder.handshakeCompleted)

        #expect(throws: TLSError.self) { try pki.clientContext(pin: "abcd") }
    }

    @Test func emptyHostnameIsRejected() throws {
        let pki = try TestPKI()
        #expect(throws: TLSError.self) { try TLSHandler(context: try pki.clientContext(host: "")) }
    }

    @Test func alpnWithoutOverlapFailsHandshake() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(alpn: ["h2"]), server: try pki.serverContext(alpn: ["rapport/1"]))
        defer { pair.finish() }
        try pair.shuttle()
        #expect(pair.serverRecorder.tlsErrors.first?.handshakeFailureReason == .applicationProtocol, "\(pair.serverRecorder.tlsErrors)")
        #expect(!pair.clientRecorder.tlsErrors.isEmpty)
        #expect(!pair.clientRecorder.handshakeCompleted)
    }

    @Test func tls11ClientIsRefused() throws {
        let pki = try TestPKI()
        var configuration = pki.clientConfiguration()
        // TLS1_VERSION ... TLS1_1_VERSION at security level 0, which OpenSSL 3
        // requires before it will even offer these versions.
        configuration._unsafeProtocolOverride = (min: 0x0301, max: 0x0302, securityLevel: 0)
        // A legacy client offers the suites those versions have (no AEAD suite exists before 1.2).
        configuration._unsafeCipherList = "DEFAULT"
        let pair = try EmbeddedPair(client: try TLSContext(configuration: configuration), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()

        #expect(!pair.clientRecorder.handshakeCompleted)
        #expect(!pair.serverRecorder.handshakeCompleted)
        let serverError = try #require(pair.serverRecorder.tlsErrors.first)
        #expect(serverError.description.contains("unsupported protocol"))
        #expect(serverError.handshakeFailureReason == .protocolVersion)
        #expect(!pair.clientRecorder.tlsErrors.isEmpty)
    }

    /// TLS 1.2 offers only ECDHE with AES-GCM or ChaCha20-Poly1305: a client offering nothing
    /// but CBC suites finds no shared cipher; one offering an AEAD suite connects with TLS 1.2.
    @Test(arguments: [
        ("ECDHE-ECDSA-AES128-SHA", false), ("ECDHE-ECDSA-AES256-SHA384", false),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", true), ("ECDHE-ECDSA-AES256-GCM-SHA384", true),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", true),
    ])
    func tls12AcceptsOnlyAEADSuites(suite: String, accepted: Bool) throws {
        let pki = try TestPKI()
        var configuration = pki.clientConfiguration()
        configuration._unsafeProtocolOverride = (min: 0x0303, max: 0x0303, securityLevel: 1)
        configuration._unsafeCipherList = suite
        let pair = try EmbeddedPair(client: try TLSContext(configuration: configuration), server: try pki.serverContext())
        defer { pair.finish() }
        try pair.shuttle()

        #expect(pair.clientRecorder.handshakeCompleted == accepted, "\(suite)")
        #expect(pair.serverRecorder.handshakeCompleted == accepted, "\(suite)")
        if accepted {
            #expect(pair.serverHandler.negotiatedVersion == "TLSv1.2")
        } else {
            let serverError = try #require(pair.serverRecorder.tlsErrors.first)
            #expect(serverError.description.contains("no shared cipher"), "\(serverError)")
            #expect(serverError.handshakeFailureReason == .noSharedCipher)
        }
    }

    @Test func garbageFromClientFailsCleanly() throws {
        let pki = try TestPKI()
        let server = EmbeddedChannel()
        let recorder = Recorder()
        try server.pipeline.syncOperations.addHandlers(try TLSHandler(context: try pki.serverContext()), recorder)
        defer { _ = try? server.finish(acceptAlreadyClosed: true) }
        try server.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()

        try server.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        let error = try #require(recorder.tlsErrors.first)
        #expect(error.operation == .handshake)
        #expect(error.handshakeFailureReason == .notTLS, "\(error)")
        #expect(!error.openSSLErrors.isEmpty)
        #expect(!server.isActive)
        #expect(recorder.sawInactive)
        #expect(recorder.received.isEmpty)
        // More bytes after the failure are ignored rather than crashing.
        _ = try? server.writeInbound(ByteBuffer(string: "more"))
    }

    @Test func writesAfterCloseFail() throws {
        let pki = try TestPKI()
        let pair = try EmbeddedPair(client: try pki.clientContext(), server: try pki.serverContext())
        defer { pair.finish() }
        let unflushed = pair.client.write(ByteBuffer(string: "never flushed"))
        try pair.client.close().wait()
        #expect(throws: (any Error).self) { try unflushed.wait() }
        #expect(throws: (any Error).self) { try pair.client.writeAndFlush(ByteBuffer(string: "late")).wait() }
    }
}
