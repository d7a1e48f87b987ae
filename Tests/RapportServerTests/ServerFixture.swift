import CRM
import Foundation
import Logging
import NIOCore
import NIOPosix
import RapportClient
import RapportServer
import ReplicaStore
import SyncModel
import SyncProtocol
import TestSupport
import TLS

/// A real server on an ephemeral loopback port, with real TLS (its dev certificate) and real
/// SQLite files in a temporary directory, plus helpers to make devices for it.
final class ServerFixture: Sendable {
    static let secret: [UInt8] = Array("correct horse battery staple, 32b".utf8)
    let dir: TemporaryDirectory
    let server: SyncServer
    let port: Int

    var caPath: String { server.devCertificateAuthorityPath! }

    init(limits: SessionLimits = .forTests, dir: TemporaryDirectory? = nil, port: Int = 0, retention: RetentionPolicy? = nil,
         configure: (inout SyncServer.Configuration) -> Void = { _ in }) async throws {
        let dir = try dir ?? TemporaryDirectory()
        self.dir = dir
        var config = SyncServer.Configuration(dataDirectory: dir.path("server"), port: port,
                                              schema: CRMSchema.current, schemaVersion: CRMSchema.version)
        config.limits = limits
        config.storeOptions = .crm(role: .authority)
        config.shutdownGracePeriod = .seconds(2)
        configure(&config)
        server = try SyncServer(configuration: config,
                                authenticator: StaticAuthenticator(secrets: ["acme": Self.secret, "globex": Self.secret], retention: retention),
                                logger: Self.logger("test.rapportd"))
        self.port = try await server.start()
    }

    func stop() async { await server.shutdown() }

    /// Quiet unless `RAPPORT_TEST_LOG` is set, so a failing test can be rerun with logs.
    static func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = ProcessInfo.processInfo.environment["RAPPORT_TEST_LOG"] == nil ? .critical : .debug
        return logger
    }

    func configuration(tenant: String = "acme", secret: [UInt8] = ServerFixture.secret) -> ClientConfiguration {
        var config = ClientConfiguration(host: "127.0.0.1", port: port, tenant: tenant, secret: secret,
                                         trustRoots: .certificates(.file(caPath)), schemaVersion: CRMSchema.version)
        config.retry = RetryPolicy(maxAttempts: 3, initialDelay: .milliseconds(20), maxDelay: .milliseconds(200))
        return config
    }

    /// A device with its own store file, opened as an app opens it (`.crm`) unless `options`
    /// say otherwise (a client without the CRM's effects, as an integration might be).
    func device(_ name: String, tenant: String = "acme", options: ReplicaStore.Options = .crm(),
                configure: (inout ClientConfiguration) -> Void = { _ in }) throws -> RapportClient {
        var options = options
        options.replicaID = try ReplicaID(name)
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"), options: options)
        var config = configuration(tenant: tenant)
        configure(&config)
        return try RapportClient(store: SharedReplicaStore(store, label: name), configuration: config, logger: Self.logger("test.\(name)"))
    }

    /// The server's own store of `tenant`.
    func tenantStore(_ tenant: String = "acme") throws -> ReplicaStore {
        // Opened as the server opens it: a handle with other field indexes would rebuild them.
        try ReplicaStore(path: dir.path("server") + "/tenants/\(tenant).sqlite", options: .crm(role: .authority))
    }
}

extension RapportClient {
    /// Runs a store call synchronously, for test assertions.
    func local<T>(_ body: (ReplicaStore) throws -> T) rethrows -> T { try store.performSync(body) }
}
