import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import RapportDevice
import RapportServer
import Registry
import ServiceLifecycle
import Synchronization
import SyncModel
import TLS

/// The HTTP/JSON integration API (Protocol/openapi.json) that `rapportd --api` serves beside
/// sync: records of every type of the tenant's schema and the tenant's change feed, for API
/// keys (`rapportctl apikey`), over HTTPS with the sync server's certificate.
///
/// It runs in the sync server's process and on its event loops, and does its store work the way
/// sessions do (on each tenant's queue, off the loops); its connections, limits and errors are
/// its own, so nothing sent to it reaches a sync session.
public final class IntegrationAPIServer: Service, Sendable {
    /// How the API is served.
    public struct Configuration: Sendable {
        public var host: String
        /// 0 picks a free port (see `start()`).
        public var port: Int
        /// Largest request body accepted; more is answered 413.
        public var maxBodyBytes = 1 << 20
        /// Most items of one batch (`POST /v1/batch`), and its largest body; more is answered 413.
        public var maxBatchItems = 1000
        public var maxBatchBodyBytes = 16 << 20
        /// Largest page a client may ask for (`limit`); more is answered 400.
        public var maxPageSize = 1000
        public var defaultPageSize = 100
        /// Longest long-poll of the change feed (`wait`).
        public var maxWait: Duration = .seconds(60)
        /// Requests a second per key on average; bursts of up to `burst`; more are answered 429.
        public var rate: Double = 50
        public var burst: Double = 100
        /// Connections idle this long are closed.
        public var idleTimeout: TimeAmount = .seconds(60)

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public let configuration: Configuration
    let server: SyncServer
    let tls: TLSContext
    let limiter: RateLimiter
    let logger: Logger
    private let running = Mutex<(task: Task<Void, any Error>, group: ServiceGroup, port: Int)?>(nil)

    /// Sets the API up for `server`'s tenants with its certificate; nothing listens yet.
    public init(server: SyncServer, configuration: Configuration, logger: Logger) throws {
        self.server = server
        self.configuration = configuration
        self.logger = logger
        tls = try server.tlsContext(applicationProtocols: ["http/1.1"])
        limiter = RateLimiter(rate: configuration.rate, burst: max(1, configuration.burst))
    }

    /// The port the API listens on, once started.
    public var port: Int? { running.withLock { $0?.port } }

    /// Binds the listening socket; returns the port.
    @discardableResult
    public func start() async throws -> Int {
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: makeRouter(),
            server: .http1(tls: tls, idleTimeout: configuration.idleTimeout),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "rapportd"),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            },
            logger: logger)
        // A group of its own, so `shutdown()` can end it gracefully (requests in hand finish)
        // whoever started it.
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else {
            // It stopped before listening: its error says why (the address is taken, say).
            try await task.value
            throw APIProblem(500, "internal", "API not started", "the integration API stopped before listening on \(configuration.host):\(configuration.port)")
        }
        running.withLock { $0 = (task, group, port) }
        logger.info("integration API listening", metadata: ["address": "\(configuration.host):\(port)"])
        return port
    }

    /// Runs until graceful shutdown (a `ServiceGroup`'s signal), then stops listening.
    public func run() async throws {
        if port == nil { try await start() }
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops listening and ends the connections, after the requests in hand.
    public func shutdown() async {
        guard let current = running.withLock({ state in defer { state = nil }; return state }) else { return }
        await current.group.triggerGracefulShutdown()
        _ = try? await current.task.value
    }

    // MARK: Routes

    func makeRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: ProblemMiddleware(logger: logger))
        router.get("/v1/records/:type") { request, context in try await self.list(request, context) }
        router.post("/v1/records/:type") { request, context in try await self.create(request, context) }
        router.get("/v1/records/:type/:id") { request, context in try await self.get(request, context) }
        router.patch("/v1/records/:type/:id") { request, context in try await self.update(request, context) }
        router.delete("/v1/records/:type/:id") { request, context in try await self.delete(request, context) }
        router.post("/v1/batch") { request, context in try await self.batch(request, context) }
        router.get("/v1/changes") { request, context in try await self.changes(request, context) }
        return router
    }

    /// The key of `Authorization: Bearer`, checked now, within its rate.
    func caller(_ request: Request) async throws -> APICaller {
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer "),
              case let key = header.dropFirst(7).trimmingCharacters(in: .whitespaces), !key.isEmpty else {
            throw APIProblem(401, "unauthorized", "Unauthorized", "send an API key as 'Authorization: Bearer KEY' (rapportctl apikey create)")
        }
        let caller = try await server.apiCaller(key: key)
        if let wait = limiter.take(caller.key.id) {
            throw APIProblem(429, "rate-limited", "Too many requests",
                             "API key '\(caller.key.name)' is over \(Self.format(configuration.rate)) requests a second; retry in \(wait) s",
                             retryAfter: wait)
        }
        return caller
    }

    func list(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let type = try context.parameters.require("type")
        var filters: [String: String] = [:]
        var limit = configuration.defaultPageSize
        var after: Int64 = 0
        for (name, value) in request.uri.queryParameters {
            switch name {
            case "limit": limit = try pageSize(String(value))
            case "cursor": after = try ListCursor.decode(String(value))
            default: filters[String(name)] = String(value)
            }
        }
        let page = try await server.apiList(caller, type: type, filters: filters, after: after, limit: limit)
        return json(200, .object([
            "records": .array(page.records.map(RecordJSON.render)),
            "next_cursor": page.next.map { .string(ListCursor.encode($0)) } ?? .null,
        ]))
    }

    func get(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let record = try await server.apiRecord(caller, type: try context.parameters.require("type"), id: try recordID(context))
        return json(200, RecordJSON.render(record))
    }

    func create(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let type = try context.parameters.require("type")
        let body = try await self.body(request)
        let document = try RecordJSON.document(body, allowing: ["id", "fields"])
        let values = try RecordJSON.values(document["fields"] ?? .members([]), type: type, schema: server.configuration.schema)
        return try await write(caller, request, body: body, [.create(type: type, id: try newID(document["id"]), values: values)], status: 201)
    }

    /// Several creates, updates and deletes of any types, in one transaction: all or none.
    /// Atomic because an ERP replays a failed batch as a whole once it has fixed the item the
    /// refusal names (its `index`); a half-applied batch would leave it to find which items
    /// landed. Types may be mixed so that an account and the orders that reference it land
    /// together, whatever their order in the batch.
    func batch(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let body = try await self.body(request, limit: configuration.maxBatchBodyBytes)
        let document = try RecordJSON.document(body, allowing: ["items"])
        guard case .array(let items)? = document["items"] else {
            throw APIProblem(422, "validation", "Invalid request", "'items' is an array of writes: {\"op\", \"type\", \"id\", \"fields\"}",
                             field: "items", rule: "required")
        }
        guard !items.isEmpty else { throw APIProblem(422, "validation", "Invalid request", "'items' holds at least one write", field: "items", rule: "range") }
        guard items.count <= configuration.maxBatchItems else {
            throw APIProblem(413, "batch-too-large", "Batch too large",
                             "a batch holds at most \(configuration.maxBatchItems) items, not \(items.count); send the rest in further batches")
        }
        let schema = server.configuration.schema
        var writes: [APIWrite] = []
        writes.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            do {
                writes.append(try Self.batchWrite(item, schema: schema, newID: newID))
            } catch let problem as APIProblem {
                throw problem.at(index)
            }
        }
        return try await write(caller, request, body: body, writes, status: 200) { records in
            .object(["records": .array(records.map(RecordJSON.render))])
        }
    }

    /// One item of a batch: `op` (create by default), `type`, `id` (required but for a
    /// create), `fields` (required but for a delete), read as the single-record endpoints read them.
    static func batchWrite(_ item: JSONValue, schema: Schema, newID: (JSONValue?) throws -> UUID) throws -> APIWrite {
        guard case .members(let members) = item else {
            throw APIProblem(422, "validation", "Invalid request", "an item is an object such as {\"type\": \"account\", \"fields\": {...}}",
                             field: "items", rule: "type")
        }
        var document: [String: JSONValue] = [:]
        for member in members {
            guard ["op", "type", "id", "fields"].contains(member.key) else {
                throw APIProblem(422, "validation", "Invalid request", "unknown member '\(member.key.prefix(64))'; expected fields, id, op, type",
                                 field: String(member.key.prefix(64)), rule: "unknown-field")
            }
            document[member.key] = member.value
        }
        guard case .string(let type)? = document["type"] else {
            throw APIProblem(422, "validation", "Invalid request", "an item names its record 'type'", field: "type", rule: "required")
        }
        let op: String
        switch document["op"] {
        case nil, .null?: op = "create"
        case .string(let text)? where ["create", "update", "delete"].contains(text): op = text
        default: throw APIProblem(422, "validation", "Invalid request", "'op' is create, update or delete", field: "op", rule: "choices")
        }
        if op == "create" {
            let values = try RecordJSON.values(document["fields"] ?? .members([]), type: type, schema: schema)
            return .create(type: type, id: try newID(document["id"]), values: values)
        }
        guard case .string(let text)? = document["id"], let id = UUID(uuidString: text) else {
            throw APIProblem(422, "validation", "Invalid request", "an \(op) names the record's 'id' (a UUID)", field: "id", rule: "required")
        }
        if op == "delete" {
            guard document["fields"] == nil else {
                throw APIProblem(422, "validation", "Invalid request", "a delete takes no 'fields'", field: "fields", rule: "unknown-field")
            }
            return .delete(type: type, id: id)
        }
        let values = try RecordJSON.values(document["fields"] ?? .members([]), type: type, schema: schema)
        guard !values.isEmpty else {
            throw APIProblem(422, "validation", "Invalid request", "an update names at least one field in 'fields'", field: "fields", rule: "required")
        }
        return .update(type: type, id: id, values: values)
    }

    /// The id a create gives its record: the client's (a UUID string), or a new one.
    func newID(_ value: JSONValue?) throws -> UUID {
        switch value {
        case nil, .null?: return .newRecordID()
        case .string(let text)?:
            guard let parsed = UUID(uuidString: text) else { throw APIProblem.badRequest("id '\(text.prefix(80))' is not a UUID", field: "id") }
            return parsed
        default: throw APIProblem.badRequest("id must be a UUID string", field: "id")
        }
    }

    func update(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let type = try context.parameters.require("type")
        let id = try recordID(context)
        let body = try await self.body(request)
        let document = try RecordJSON.document(body, allowing: ["fields"])
        let values = try RecordJSON.values(document["fields"] ?? .members([]), type: type, schema: server.configuration.schema)
        guard !values.isEmpty else { throw APIProblem.badRequest("a PATCH names at least one field in 'fields'", field: "fields") }
        return try await write(caller, request, body: body, [.update(type: type, id: id, values: values)], status: 200)
    }

    func delete(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        let id = try recordID(context)
        return try await write(caller, request, body: ByteBuffer(), [.delete(type: try context.parameters.require("type"), id: id)], status: 200)
    }

    /// Writes in one transaction, once per `Idempotency-Key`: a retry with the key gets the
    /// first response. The response is `render` of the records as the writes left them (by
    /// default the one record of a single write).
    func write(_ caller: APICaller, _ request: Request, body: ByteBuffer, _ writes: [APIWrite], status: Int,
               render: @escaping @Sendable ([RecordState]) -> JSONValue = { RecordJSON.render($0[0]) }) async throws -> Response {
        let idempotency = try request.headers[Self.idempotencyKey].map { key in
            guard (1...255).contains(key.utf8.count) else {
                throw APIProblem.badRequest("an Idempotency-Key is 1 to 255 characters", field: "Idempotency-Key")
            }
            let fingerprint = "\(request.method.rawValue) \(request.uri.path) " + Crypto.hex(Crypto.sha256(Array(body.readableBytesView)))
            return (key: key, fingerprint: fingerprint)
        }
        let (stored, replayed) = try await server.apiWrite(caller, writes, idempotency: idempotency) { records in
            APIStoredResponse(status: status, body: Data(render(records).rendered(pretty: false).utf8), fingerprint: "")
        }
        var response = Response(status: .init(code: stored.status), headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: stored.body)))
        if replayed { response.headers[Self.idempotentReplayed] = "true" }
        return response
    }

    func changes(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let caller = try await caller(request)
        var after: Int64 = 0
        var limit = configuration.defaultPageSize
        var wait: Duration = .zero
        for (name, value) in request.uri.queryParameters {
            switch name {
            case "after":
                guard let cursor = Int64(value), cursor >= 0 else {
                    throw APIProblem(400, "bad-cursor", "Bad cursor", "after=\(value.prefix(40)) is not a cursor: a 'next' this feed returned, or 0", field: "after")
                }
                after = cursor
            case "limit": limit = try pageSize(String(value))
            case "wait":
                guard let seconds = Int(value), seconds >= 0, .seconds(seconds) <= configuration.maxWait else {
                    throw APIProblem.badRequest("wait is whole seconds from 0 to \(configuration.maxWait.components.seconds)", field: "wait")
                }
                wait = .seconds(seconds)
            default:
                throw APIProblem.badRequest("unknown parameter '\(name.prefix(40))': the feed takes after, limit and wait", field: String(name.prefix(40)))
            }
        }
        let server = self.server
        let read = { @Sendable [after, limit, wait] in try await server.apiChanges(caller, after: after, limit: limit, wait: wait) }
        // A long-poll ends when its client goes: the wait (and its waiter) with it.
        let page = wait == .zero ? try await read() : try await Self.cancelled(when: try await ClientGoneHandler.gone(on: context.channel), read)
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: try RecordJSON.feedPage(page)))
    }

    // MARK: Helpers

    /// Runs `body`, cancelled when `gone` completes (or the request's own task is cancelled).
    static func cancelled<T: Sendable>(when gone: EventLoopFuture<Void>, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await body() }
        gone.whenComplete { _ in task.cancel() }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!

    /// The request's body, up to `limit` bytes (by default `maxBodyBytes`).
    func body(_ request: Request, limit: Int? = nil) async throws -> ByteBuffer {
        let limit = limit ?? configuration.maxBodyBytes
        let tooLarge = APIProblem(413, "body-too-large", "Body too large", "a request body here is at most \(limit) bytes")
        // Refused before reading when the client says how much it sends.
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit { throw tooLarge }
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge
        }
    }

    func pageSize(_ text: String) throws -> Int {
        guard let limit = Int(text), (1...configuration.maxPageSize).contains(limit) else {
            throw APIProblem.badRequest("limit is a whole number from 1 to \(configuration.maxPageSize)", field: "limit")
        }
        return limit
    }

    func recordID(_ context: APIRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw APIProblem.badRequest("'\(text.prefix(80))' is not a record id (a UUID)", field: "id") }
        return id
    }

    func json(_ status: Int, _ value: JSONValue) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(string: value.rendered(pretty: false))))
    }

    static func format(_ rate: Double) -> String {
        rate == rate.rounded() ? String(Int(rate)) : String(rate)
    }
}

/// A request's context: Hummingbird's, with the connection it came on (to notice the client
/// going away during a long-poll).
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Every refusal as RFC 9457 problem details (`application/problem+json`), whatever raised it:
/// the API's own checks, the store, Hummingbird (an unknown path, a method not served).
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            let status = Int(error.status.code)
            let problem: APIProblem = switch status {
            case 404: APIProblem(404, "no-such-endpoint", "Not found", "no endpoint \(request.method.rawValue) \(request.uri.path); see Protocol/openapi.json")
            case 405: APIProblem(405, "method-not-allowed", "Method not allowed", "\(request.method.rawValue) is not served at \(request.uri.path)")
            case 413: APIProblem(413, "body-too-large", "Body too large", error.body ?? "request body too large")
            default: APIProblem(status, "http", error.status.reasonPhrase, error.body ?? error.status.reasonPhrase)
            }
            return Self.response(problem, path: request.uri.path)
        } catch {
            let problem = APIProblem.from(error)
            if problem.status >= 500 {
                logger.error("integration API request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return Self.response(problem, path: request.uri.path)
        }
    }

    static func response(_ problem: APIProblem, path: String) -> Response {
        var members: [JSONValue.Member] = [
            .init("type", .string("https://rapport.dev/problems/\(problem.kind)")),
            .init("title", .string(problem.title)),
            .init("status", .integer(Int64(problem.status))),
            .init("detail", .string(problem.detail)),
            .init("instance", .string(path)),
        ]
        if let field = problem.field { members.append(.init("field", .string(field))) }
        if let rule = problem.rule { members.append(.init("rule", .string(rule))) }
        if let index = problem.index { members.append(.init("index", .integer(Int64(index)))) }
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        if let retryAfter = problem.retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: .init(code: problem.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: JSONValue.members(members).rendered(pretty: false))))
    }
}

/// The opaque cursor of a listing: the sequence of the last record of the page, so that a
/// client cannot mistake it for (or compose it from) anything else.
enum ListCursor {
    static func encode(_ sequence: Int64) -> String {
        Data("l1:\(sequence)".utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: String) throws -> Int64 {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard text.count <= 64, let data = Data(base64Encoded: base64), case let plain = String(decoding: data, as: UTF8.self),
              plain.hasPrefix("l1:"), let sequence = Int64(plain.dropFirst(3)), sequence >= 0 else {
            throw APIProblem(400, "bad-cursor", "Bad cursor", "'\(text.prefix(40))' is not a cursor this API returned (next_cursor)", field: "cursor")
        }
        return sequence
    }
}
