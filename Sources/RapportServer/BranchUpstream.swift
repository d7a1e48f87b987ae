import Foundation
import Logging
import NIOPosix
import PrivateFiles
import RapportClient
import Registry
import Synchronization
import SyncProtocol
import TLS

/// Where a branch office's server syncs its tenant to (SPEC.md 6): set in
/// `SyncServer.Configuration.upstream`, it makes the server a replica of one tenant at a
/// centre, serving its devices with the centre's directory whether or not the link is up.
public struct UpstreamConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The CAs the centre's certificate must chain to.
    public var trustRoots: TrustRoots
    /// The name the centre's certificate must carry; the host by default.
    public var serverName: String?
    /// From `rapportctl branch enroll` at the centre.
    public var credential: BranchCredential
    /// How often the centre's directory is asked for: how soon a revocation there ends a
    /// session here, once the link is up.
    public var directoryInterval: Duration = .seconds(2)
    public var retry = RetryPolicy(maxAttempts: .max, initialDelay: .milliseconds(250), maxDelay: .seconds(30))

    public init(host: String, port: Int, trustRoots: TrustRoots, serverName: String? = nil, credential: BranchCredential) {
        self.host = host
        self.port = port
        self.trustRoots = trustRoots
        self.serverName = serverName
        self.credential = credential
    }
}

/// The running link of a branch server: the link, the lease on its tenant's store, where its
/// status is kept for `rapportctl stats`.
final class BranchUpstream: Sendable {
    let link: UpstreamLink
    let tenant: TenantStore
    let statusPath: String
    private let written = Mutex<UpstreamStatusFile?>(nil)

    init(link: UpstreamLink, tenant: TenantStore, statusPath: String) {
        self.link = link
        self.tenant = tenant
        self.statusPath = statusPath
    }

    /// Passes a device's enrollment on to the centre (codes are made there) and adopts the
    /// centre's directory before answering, so the new device's first session here is known.
    func enroll(_ request: Rapport_V1_Enroll) async throws -> Rapport_V1_Enrolled {
        let enrollment: RapportClient.Enrollment
        do {
            enrollment = try await RapportClient.enroll(configuration: link.client.configuration, code: request.code, deviceName: request.deviceName)
        } catch let error as SyncError {
            throw error
        } catch {
            throw SyncError(.serverBusy, "this branch cannot reach the centre to enroll the device now: \(error)", retryable: true,
                            retryAfter: .seconds(30))
        }
        do {
            try await link.refreshDirectory()
        } catch {
            // The link's own exchange brings the device within seconds.
        }
        var reply = Rapport_V1_Enrolled()
        reply.deviceID = enrollment.deviceID
        reply.secret = Data(enrollment.secret)
        reply.tenant = enrollment.tenant
        reply.user = enrollment.user
        reply.deviceNumber = enrollment.deviceNumber ?? 0
        return reply
    }

    /// Writes the link's status file when it changed (called every access check, about once a
    /// second, rather than on every sync).
    func saveStatus(upstream: String, logger: Logger) {
        let file = UpstreamStatusFile(tenant: tenant.tenant, upstream: upstream, link: link.status, updatedAt: nil)
        guard written.withLock({ $0 != file }) else { return }
        var stamped = file
        stamped.updatedAt = Date()
        do {
            try PrivateFiles.write(try JSONEncoder.upstreamStatus.encode(stamped), to: statusPath)
            written.withLock { $0 = file }
        } catch {
            logger.warning("cannot write the upstream link's status", metadata: ["path": "\(statusPath)", "error": "\(error)"])
        }
    }
}

/// What a branch server writes about its link (`DATA/upstream-status.json`), read by
/// `rapportctl stats`.
public struct UpstreamStatusFile: Codable, Sendable, Equatable {
    public var tenant: String
    /// The centre's address.
    public var upstream: String
    public var link: UpstreamLink.Status
    public var updatedAt: Date?

    public static let fileName = "upstream-status.json"

    /// Reads the status a branch server left in `dataDirectory`; `nil` when it is no branch.
    public static func read(dataDirectory: String) throws -> UpstreamStatusFile? {
        let path = dataDirectory + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(UpstreamStatusFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}

extension JSONEncoder {
    static var upstreamStatus: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

/// The branch's registry as the link updates it: one connection of its own, used off the
/// event loops.
private final class DirectoryMirror: Sendable {
    private let registry: Mutex<Registry>
    let tenant: String

    /// Opens its own connection to the registry of `directory`.
    init(directory: DataDirectory, tenant: String) throws {
        self.registry = Mutex(try directory.openRegistry())
        self.tenant = tenant
    }

    var directory: UpstreamLink.Directory {
        UpstreamLink.Directory(
            digest: { [self] in try registry.withLock { try $0.adoptedDirectoryDigest(tenant: tenant) } },
            adopt: { [self] data, digest in
                let directory = try BranchDirectory.decoded(data)
                guard directory.tenant.slug == tenant else {
                    throw RegistryError.invalidArgument("the centre sent the directory of tenant '\(directory.tenant.slug)', this branch serves '\(tenant)'")
                }
                _ = try registry.withLock { try $0.adopt(directory, digest: digest) }
            },
            tenantRefused: { [self] _ in
                try registry.withLock { registry in
                    guard try registry.tenant(tenant)?.status == .active else { return }
                    try registry.suspendForCentre(tenant: tenant)
                }
            })
    }
}

extension SyncServer {
    /// Makes the branch's tenant when this data directory has none yet (its store pulls
    /// everything from the centre), leases its store for as long as the server runs, and
    /// starts the link.
    func startUpstream(_ upstream: UpstreamConfiguration) async throws -> BranchUpstream {
        let credential = upstream.credential
        guard let secret = credential.secretBytes, secret.count >= 16 else {
            throw RegistryError.invalidArgument("the branch credential's secret is not base64 of 32 bytes")
        }
        let directory = configuration.data
        let schema = configuration.schema
        try await NIOThreadPool.singleton.runIfActive { [logger] in
            let registry = try directory.openRegistry()
            defer { registry.close() }
            if try registry.tenant(credential.tenant) == nil {
                try registry.audited(actor: "branch", action: "branch tenant create", tenant: credential.tenant,
                                     detail: "replica of the centre's tenant as branch \(credential.name)") {
                    _ = try directory.createTenant(credential.tenant, name: credential.tenant, schema: schema, in: registry)
                }
                logger.notice("made the branch's tenant; its data comes from the centre", metadata: ["tenant": "\(credential.tenant)"])
            }
        }
        let mirror = try DirectoryMirror(directory: directory, tenant: credential.tenant)
        _ = try await NIOThreadPool.singleton.runIfActive { [authenticator] in try authenticator.refresh() }
        let tenant = try await NIOThreadPool.singleton.runIfActive { [tenants] in try tenants.lease(credential.tenant) }
        var client = ClientConfiguration(host: upstream.host, port: upstream.port, tenant: credential.tenant, secret: secret,
                                         trustRoots: upstream.trustRoots, schemaVersion: configuration.schemaVersion,
                                         serverName: upstream.serverName)
        client.credentialID = credential.branchID
        client.relaysForDevices = true
        client.retry = upstream.retry
        var linkLogger = logger
        linkLogger[metadataKey: "upstream"] = "\(upstream.host):\(upstream.port)"
        linkLogger[metadataKey: "tenant"] = "\(credential.tenant)"
        let link = UpstreamLink(client: try RapportClient(store: tenant.store, configuration: client, logger: linkLogger),
                                directory: mirror.directory, directoryInterval: upstream.directoryInterval, logger: linkLogger,
                                onPulled: { Task { await tenant.announceOutsideCommits() } })
        link.start()
        return BranchUpstream(link: link, tenant: tenant, statusPath: configuration.dataDirectory + "/" + UpstreamStatusFile.fileName)
    }
}
