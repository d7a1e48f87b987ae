import NIOCore
import NIOEmbedded
@testable import TLS

/// A freshly generated PKI plus contexts built from it; nothing is committed to the repo.
struct TestPKI {
    let bundle: DevCertificates.Bundle

    init() throws {
        bundle = try DevCertificates.generate()
    }

    func serverContext(alpn: [String] = []) throws -> TLSContext {
        try TLSContext(configuration: .server(
            certificateChain: .pem(bundle.serverCertificateChainPEM),
            privateKey: .pem(bundle.serverPrivateKeyPEM),
            applicationProtocols: alpn
        ))
    }

    func clientConfiguration(host: String = "localhost", pin: String? = nil, alpn: [String] = []) -> TLSConfiguration {
        .client(
            trustRoots: .certificates(.pem(bundle.caCertificatePEM)),
            expectedHostname: host,
            spkiSHA256Pin: pin,
            applicationProtocols: alpn
        )
    }

    func clientContext(host: String = "localhost", pin: String? = nil, alpn: [String] = []) throws -> TLSContext {
        try TLSContext(configuration: clientConfiguration(host: host, pin: pin, alpn: alpn))
    }
}

/// Sits above the TLS handler and remembers everything that reached it.
/// Swallowing errors keeps EmbeddedChannel from rethrowing them out of writeInbound.
final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var received: [UInt8] = []
    var events: [TLSEvent] = []
    var errors: [Error] = []
    var sawInactive = false

    var handshakeCompleted: Bool {
        events.contains { if case .handshakeCompleted = $0 { return true } else { return false } }
    }

    var tlsErrors: [TLSError] { errors.compactMap { $0 as? TLSError } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytesView
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSEvent { events.append(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        errors.append(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        sawInactive = true
    }
}

/// Two in-memory channels joined by a TLS session.
struct EmbeddedPair {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientRecorder = Recorder()
    let serverRecorder = Recorder()
    let clientHandler: TLSHandler
    let serverHandler: TLSHandler

    init(client clientContext: TLSContext, server serverContext: TLSContext) throws {
        clientHandler = try TLSHandler(context: clientContext)
        serverHandler = try TLSHandler(context: serverContext)
        try client.pipeline.syncOperations.addHandlers(clientHandler, clientRecorder)
        try server.pipeline.syncOperations.addHandlers(serverHandler, serverRecorder)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 443)
        try server.connect(to: address).wait()
        try client.connect(to: address).wait()
    }

    /// Closes whatever is still open: an open EmbeddedChannel keeps its
    /// pipeline (and thus the SSL objects) alive through a reference cycle.
    func finish() {
        _ = try? client.finish(acceptAlreadyClosed: true)
        _ = try? server.finish(acceptAlreadyClosed: true)
    }

    /// Moves ciphertext both ways until neither side has anything left to say.
    func shuttle() throws {
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(client, server), (server, client)] {
                while let bytes = try from.readOutbound(as: ByteBuffer.self) {
                    guard bytes.readableBytes > 0, to.isActive else { continue }
                    moved = true
                    try to.writeInbound(bytes)
                }
            }
        }
    }
}
