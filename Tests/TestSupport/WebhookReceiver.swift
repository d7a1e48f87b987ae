import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import TLS

/// A webhook receiver on loopback for tests: HTTPS with the project's TLS and a development CA
/// of its own (or plain HTTP), recording every request and answering as the test says: a
/// status, never (the sender's timeout), or once the test releases it.
public final class WebhookReceiver: Sendable {
    /// One request as it arrived.
    public struct Request: Sendable {
        public var headers: [String: String]
        public var body: [UInt8]
        /// When its last byte arrived.
        public var at: ContinuousClock.Instant

        /// The header of that name (any case).
        public func header(_ name: String) -> String? { headers[name.lowercased()] }

        /// The body as a JSON object.
        public var json: [String: Any] {
            ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]) ?? [:]
        }
    }

    /// How to answer a request.
    public enum Answer: Sendable {
        case status(Int)
        /// Never: the connection stays open until the sender gives up.
        case never
        /// 200 once `release()` is called.
        case held
    }

    public let port: Int
    /// The CA file a client must trust; `nil` for plain HTTP.
    public let caFile: String?
    private let channel: any Channel
    private struct State {
        var requests: [Request] = []
        var answer: @Sendable (Int) -> Answer = { _ in .status(200) }
        var held: [any Channel] = []
    }

    /// What the receiver's connections and the test share.
    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    private let shared = Shared()

    /// Starts listening on 127.0.0.1 (a free port); HTTPS with a CA made in `directory` unless
    /// `tls` is false.
    public init(directory: String, tls: Bool = true) async throws {
        var context: TLSContext?
        if tls {
            let paths = try DevCertificates.ensure(in: directory)
            context = try TLSContext(configuration: .server(certificateChain: .file(paths.serverCertificateChain),
                                                            privateKey: .file(paths.serverPrivateKey)))
            caFile = paths.caCertificate
        } else {
            caFile = nil
        }
        let shared = self.shared
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [context] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context { try channel.pipeline.syncOperations.addHandler(TLSHandler(context: context)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Recorder(shared: shared))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    /// `https://127.0.0.1:PORT/hooks` (or `http://`).
    public var url: String { "\(caFile == nil ? "http" : "https")://127.0.0.1:\(port)/hooks" }

    /// How to answer the `n`th request (0-based, counting every request received).
    public func answer(_ rule: @escaping @Sendable (Int) -> Answer) { shared.state.withLock { $0.answer = rule } }

    /// Every request received, in order.
    public var requests: [Request] { shared.state.withLock { $0.requests } }

    /// How many requests are being held (`Answer.held`).
    public var heldCount: Int { shared.state.withLock { $0.held.count } }

    /// Answers 200 to every held request.
    public func release() {
        let held = shared.state.withLock { state in
            defer { state.held = [] }
            return state.held
        }
        for channel in held { Recorder.respond(on: channel, status: 200) }
    }

    public func stop() async {
        release()
        try? await channel.close()
    }

    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let shared: Shared
        var headers: [String: String] = [:]
        var body: [UInt8] = []

        init(shared: Shared) { self.shared = shared }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                headers = Dictionary(head.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                let request = Request(headers: headers, body: body, at: .now)
                let channel = context.channel
                let answer = shared.state.withLock { state -> Answer in
                    let answer = state.answer(state.requests.count)
                    state.requests.append(request)
                    if case .held = answer { state.held.append(channel) }
                    return answer
                }
                if case .status(let status) = answer { Self.respond(on: channel, status: status) }
            }
        }

        static func respond(on channel: any Channel, status: Int) {
            var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
            head.headers.add(name: "Content-Length", value: "0")
            head.headers.add(name: "Connection", value: "close")
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
