import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS

/// A small HTTP/1.1 client for one origin, over the project's own OpenSSL TLS (`TLSHandler`),
/// with NIO's HTTP/1 encoder and decoder: what `rapportd` posts webhooks with, and what tests
/// of HTTP services can call them with.
///
/// One request per connection (`Connection: close`): a webhook receiver is called at most a few
/// times a second per subscription, and a fresh connection never carries a previous request's
/// failure into the next. The receiver's certificate is checked against `trustRoots` and the
/// URL's host. Plain `http://` is for loopback only (tests, local development).
public struct HTTPSClient: Sendable {
    /// What a server answered.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        /// At most `maxResponseBytes` of the body.
        public var body: [UInt8]

        /// The first header of that name (any case).
        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    /// Why a request got no answer.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let scheme: String
    public let host: String
    public let port: Int
    /// Bytes of a response body kept; the rest is read and dropped.
    public var maxResponseBytes = 64 * 1024
    private let tls: TLSContext?
    private let group: any EventLoopGroup

    /// A client of the origin of `url` (`https://host[:port]` or `http://loopback[:port]`).
    ///
    /// - Parameter trustRoots: what the server's certificate must chain to: the system's roots
    ///   by default, or a PEM file of the CAs (a private CA, a test CA).
    public init(origin url: URL, trustRoots: TrustRoots = .system,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        guard let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty else {
            throw Failure("'\(url.absoluteString.prefix(200))' is not an http(s) URL with a host")
        }
        if scheme == "http", !Self.isLoopback(host) {
            throw Failure("plain http:// is allowed to a loopback host only, not \(host)")
        }
        self.scheme = scheme
        self.host = host
        self.port = url.port ?? (scheme == "https" ? 443 : 80)
        self.group = group
        tls = scheme == "https" ? try TLSContext(configuration: .client(trustRoots: trustRoots, expectedHostname: host)) : nil
    }

    /// Whether `host` names this machine: where plain HTTP is acceptable.
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        return host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// Sends one request and reads the whole answer; fails when no complete answer came within
    /// `timeout` (connecting and TLS included).
    public func send(_ method: HTTPMethod, path: String, headers: [(String, String)] = [], body: [UInt8] = [],
                     timeout: Duration) async throws -> Response {
        let start = ContinuousClock.now
        let channel = try await open(timeout: timeout, keepAlive: false)
        defer { channel.close(promise: nil) }
        return try await exchange(on: channel, method, path: path, headers: headers + [("Connection", "close")], body: body,
                                  timeout: timeout - (ContinuousClock.now - start))
    }

    /// A connection kept open for one request after another (HTTP/1.1 keep-alive): for a client
    /// that reads page after page of the same origin (a change feed), where a connection and a
    /// TLS handshake per request would cost more than the request.
    public func connect(timeout: Duration) async throws -> Connection {
        Connection(client: self, channel: try await open(timeout: timeout, keepAlive: true))
    }

    /// An open connection of `connect(timeout:)`. Requests go one at a time: a caller awaits
    /// each answer before it sends the next.
    public final class Connection: Sendable {
        let client: HTTPSClient
        let channel: any Channel

        init(client: HTTPSClient, channel: any Channel) {
            self.client = client
            self.channel = channel
        }

        /// Sends one request on this connection and reads the whole answer within `timeout`.
        public func send(_ method: HTTPMethod, path: String, headers: [(String, String)] = [], body: [UInt8] = [],
                         timeout: Duration) async throws -> Response {
            try await client.exchange(on: channel, method, path: path, headers: headers, body: body, timeout: timeout)
        }

        public func close() {
            channel.close(promise: nil)
        }

        deinit { channel.close(promise: nil) }
    }

    /// A connection to the origin, TLS set up; with `keepAlive`, it stays open after an answer.
    private func open(timeout: Duration, keepAlive: Bool) async throws -> any Channel {
        let limit = max(TimeAmount(timeout), .nanoseconds(1))
        let tls = self.tls
        let maxBytes = maxResponseBytes
        do {
            return try await ClientBootstrap(group: group)
                .connectTimeout(limit)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let tls { try sync.addHandler(TLSHandler(context: tls)) }
                        try sync.addHandler(HTTPRequestEncoder())
                        try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
                        try sync.addHandler(ResponseCollector(maxBytes: maxBytes, keepAlive: keepAlive))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw Failure("cannot connect to \(host):\(port): \(error)")
        }
    }

    /// One request on `channel` and its whole answer; on a timeout the connection is closed,
    /// since an answer may still be on its way.
    private func exchange(on channel: any Channel, _ method: HTTPMethod, path: String, headers: [(String, String)], body: [UInt8],
                          timeout: Duration) async throws -> Response {
        let limit = max(TimeAmount(timeout), .nanoseconds(1))
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let timer = channel.eventLoop.scheduleTask(in: limit) { [host, port] in
            promise.fail(Failure("no complete answer from \(host):\(port) within \(timeout)"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path.isEmpty ? "/" : path)
        let defaultPort = scheme == "https" ? 443 : 80
        head.headers.add(name: "Host", value: port == defaultPort ? host : "\(host):\(port)")
        head.headers.add(name: "Content-Length", value: String(body.count))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        let buffer = channel.allocator.buffer(bytes: body)
        channel.eventLoop.execute {
            do {
                try channel.pipeline.syncOperations.handler(type: ResponseCollector.self).promise = promise
            } catch {
                promise.fail(error)
                return
            }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { promise.fail($0) }
        }
        return try await promise.futureResult.get()
    }
}

/// Collects one response and completes the request's promise; confined to its channel's event
/// loop like every handler.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    var promise: EventLoopPromise<HTTPSClient.Response>? {
        didSet { if let pending = pendingFailure { fail(pending) } }
    }
    private var pendingFailure: (any Error)?
    private let maxBytes: Int
    /// Whether the connection stays open for the next request after an answer.
    private let keepAlive: Bool
    private var status = 0
    private var headers: [(name: String, value: String)] = []
    private var body: [UInt8] = []

    init(maxBytes: Int, keepAlive: Bool) {
        self.maxBytes = maxBytes
        self.keepAlive = keepAlive
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            headers = head.headers.map { ($0.name, $0.value) }
        case .body(var buffer):
            let room = maxBytes - body.count
            if room > 0, let bytes = buffer.readBytes(length: min(room, buffer.readableBytes)) { body += bytes }
        case .end:
            promise?.succeed(HTTPSClient.Response(status: status, headers: headers, body: body))
            promise = nil
            (status, headers, body) = (0, [], [])
            if !keepAlive { context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(HTTPSClient.Failure("the connection closed before a complete answer"))
        context.fireChannelInactive()
    }

    private func fail(_ error: any Error) {
        guard let promise else {
            pendingFailure = pendingFailure ?? error
            return
        }
        self.promise = nil
        promise.fail(error)
    }
}
