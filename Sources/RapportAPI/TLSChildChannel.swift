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
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
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
