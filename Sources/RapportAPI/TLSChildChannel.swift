import HummingbirdCore
import Logging
import NIOCore
import TLS

/// A Hummingbird child channel behind the project's own OpenSSL `TLSHandler`: Hummingbird's
/// HTTP/1 handlers on the decrypted bytes, so the integration API is served with the same TLS
/// stack and certificate as sync (HummingbirdTLS would bring a second stack, NIOSSL).
struct OpenSSLTLSChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let context: TLSContext

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(TLSHandler(context: context))
            try channel.pipeline.syncOperations.addHandler(ClientGoneHandler(promise: channel.eventLoop.makePromise()))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Notices that the client went away: its side of the connection closed (a killed process, a
/// closed socket) or the connection ended. A request that waits (a long-poll of the change
/// feed) stops waiting then, instead of holding its waiter until the wait expires.
///
/// Hummingbird allows half-closure, so a client that shuts down its sending side and still
/// reads is taken as gone too: no HTTP client does that to wait for an answer.
final class ClientGoneHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    /// Completes when the client is gone: read from the channel's event loop.
    static func gone(on channel: any Channel) async throws -> EventLoopFuture<Void> {
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ClientGoneHandler.self).promise.futureResult
        }.get()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.succeed()
    }
}

extension OpenSSLTLSChannel: HTTPChannelHandler where Base: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with keep-alive over the project's TLS, closing connections idle for `idleTimeout`.
    static func http1(tls context: TLSContext, idleTimeout: TimeAmount) -> HTTPServerBuilder {
        .init { responder in
            OpenSSLTLSChannel(base: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout)), context: context)
        }
    }
}
