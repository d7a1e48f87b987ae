import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Serves a `SyncServer`'s metrics and health over plain HTTP/1.1, on an address of its own
/// (`rapportd --metrics HOST:PORT`), for Prometheus and load balancers:
///
/// - `GET /metrics`: the Prometheus text exposition of `ServerMetrics`;
/// - `GET /health`: `200` and `{"status":"ok",...}` while the server listens and its registry
///   reads; `503` and `{"status":"unavailable","reason":...}` otherwise (not started, shutting
///   down, registry unreadable).
///
/// Anything else is `404`, another method on those paths `405`. Requests are small by
/// construction (headers at most 8 KiB, a body at most 1 KiB, else `413` and close), and a
/// connection silent for 60 s is closed; keep-alive is honoured. No TLS and no
/// authentication: bind it to loopback or a management network, not the sync address.
public final class MetricsEndpoint: Service, Sendable {
    private let server: SyncServer
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channel = Mutex<(any Channel)?>(nil)

    /// An endpoint for `server`'s metrics and health at `host`:`port` (0 picks a free port);
    /// nothing listens until `start()` or `run()`.
    public init(serving server: SyncServer, host: String, port: Int,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.server = server
        self.host = host
        self.port = port
        self.group = group
        self.logger = logger
    }

    /// Binds the address and starts answering; returns the port (useful with port 0).
    @discardableResult
    public func start() async throws -> Int {
        let server = self.server
        let limits = {
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = 8 * 1024
            limits.maxHeaderListSize = 8 * 1024
            limits.maxHeaderFieldCount = 64
            return limits
        }()
        let bound = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withDecoderLimitConfiguration: limits).flatMapThrowing {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: .seconds(60)))
                    try sync.addHandler(MetricsHTTPHandler(server: server))
                }
            }
            .bind(host: host, port: port)
            .get()
        channel.withLock { $0 = bound }
        let port = bound.localAddress?.port ?? self.port
        logger.info("metrics listening", metadata: ["address": "\(host):\(port)", "paths": "/metrics /health"])
        return port
    }

    /// Waits for the graceful shutdown of the service group (which stops the sync server
    /// first, so `/health` says `shutting down` meanwhile), then stops listening.
    public func run() async throws {
        if channel.withLock({ $0 }) == nil { try await start() }
        try? await gracefulShutdown()
        await stopListening()
    }

    /// Closes the listening socket; connections open on it finish their request.
    public func stopListening() async {
        try? await channel.withLock({ $0 })?.close()
    }
}

/// Answers one HTTP connection's requests, in order (NIO's pipelining handler holds later
/// ones back until each response ends). Everything it calls is in memory and non-blocking.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// A scrape or probe has no body; a little is tolerated, more is refused.
    static let maxBodyBytes = 1024

    private let server: SyncServer
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(server: SyncServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
            bodyBytes = 0
        case .body(let chunk):
            guard head != nil else { return }
            bodyBytes += chunk.readableBytes
            if bodyBytes > Self.maxBodyBytes {
                let request = head!
                head = nil
                respond(context: context, to: request, status: .payloadTooLarge,
                        body: "request body over \(Self.maxBodyBytes) bytes\n", keepAlive: false)
            }
        case .end:
            guard let request = head else { return }
            head = nil
            let (status, type, body, allow) = answer(request)
            respond(context: context, to: request, status: status, contentType: type, body: body,
                    keepAlive: request.isKeepAlive, allow: allow)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func answer(_ request: HTTPRequestHead) -> (HTTPResponseStatus, String, String, String?) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard path == "/metrics" || path == "/health" else {
            return (.notFound, "text/plain; charset=utf-8", "not found: \(path.prefix(100)) (GET /metrics or /health)\n", nil)
        }
        guard request.method == .GET else {
            return (.methodNotAllowed, "text/plain; charset=utf-8", "\(path) answers GET only\n", "GET")
        }
        if path == "/metrics" {
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", server.configuration.metrics.exposition(), nil)
        }
        let health = server.health
        return (health.isHealthy ? .ok : .serviceUnavailable, "application/json", health.json + "\n", nil)
    }

    private func respond(context: ChannelHandlerContext, to request: HTTPRequestHead, status: HTTPResponseStatus,
                         contentType: String = "text/plain; charset=utf-8", body: String, keepAlive: Bool, allow: String? = nil) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        if let allow { headers.add(name: "Allow", value: allow) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let version = HTTPVersion(major: 1, minor: 1)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
