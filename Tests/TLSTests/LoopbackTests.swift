import NIOCore
import NIOPosix
import Testing
import TLS

/// Echoes plaintext and reports the peer's close_notify.
private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let sawCloseNotify: EventLoopPromise<Void>

    init(sawCloseNotify: EventLoopPromise<Void>) { self.sawCloseNotify = sawCloseNotify }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? TLSEvent == .closeNotifyReceived {
            sawCloseNotify.succeed()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        sawCloseNotify.fail(error)
        context.close(promise: nil)
    }

    // Completing an already-completed promise is a no-op; this only prevents a hang.
    func channelInactive(context: ChannelHandlerContext) {
        sawCloseNotify.fail(ChannelError.eof)
    }
}

/// Completes once `expected` bytes have arrived.
private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let expected: Int
    let done: EventLoopPromise<[UInt8]>
    let handshake: EventLoopPromise<TLSEvent>
    var received: [UInt8] = []

    init(expected: Int, done: EventLoopPromise<[UInt8]>, handshake: EventLoopPromise<TLSEvent>) {
        self.expected = expected
        self.done = done
        self.handshake = handshake
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytesView
        if received.count >= expected { done.succeed(received) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSEvent { handshake.succeed(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        handshake.fail(error)
        context.close(promise: nil)
    }

    // Completing an already-completed promise is a no-op; this only prevents a hang.
    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.eof)
        handshake.fail(ChannelError.eof)
    }
}

@Suite struct LoopbackTests {
    @Test func echoOverRealSockets() async throws {
        let bundle = try DevCertificates.generate()
        let serverContext = try TLSContext(configuration: .server(
            certificateChain: .pem(bundle.serverCertificateChainPEM),
            privateKey: .pem(bundle.serverPrivateKeyPEM),
            applicationProtocols: ["rapport/1"]
        ))
        let clientContext = try TLSContext(configuration: .client(
            trustRoots: .certificates(.pem(bundle.caCertificatePEM)),
            expectedHostname: "localhost",
            applicationProtocols: ["rapport/1"]
        ))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            try await runEcho(group: group, serverContext: serverContext, clientContext: clientContext)
        } catch {
            try await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    private func runEcho(group: EventLoopGroup, serverContext: TLSContext, clientContext: TLSContext) async throws {
        let serverSawCloseNotify = group.next().makePromise(of: Void.self)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        TLSHandler(context: serverContext),
                        EchoHandler(sawCloseNotify: serverSawCloseNotify)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()

        let payload = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let echoed = group.next().makePromise(of: [UInt8].self)
        let handshake = group.next().makePromise(of: TLSEvent.self)
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        TLSHandler(context: clientContext),
                        Collector(expected: payload.count, done: echoed, handshake: handshake)
                    )
                }
            }
            .connect(to: try #require(server.localAddress))
            .get()

        try await client.writeAndFlush(ByteBuffer(bytes: payload))
        #expect(try await handshake.futureResult.get() == .handshakeCompleted(alpn: "rapport/1", version: "TLSv1.3"))
        #expect(try await echoed.futureResult.get() == payload)

        try await client.close()
        try await serverSawCloseNotify.futureResult.get()
        try await server.close()
    }
}
