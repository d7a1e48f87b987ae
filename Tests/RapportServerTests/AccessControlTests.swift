import CRM
import Foundation
import Logging
import RapportClient
import RapportServer
import Registry
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// A real server whose access comes from the registry of its data directory, with an admin
/// connection to that registry playing `rapportctl`.
final class RegistryServer: Sendable {
    let dir: TemporaryDirectory
    let data: DataDirectory
    let server: SyncServer
    let port: Int
    var caPath: String { server.devCertificateAuthorityPath! }

    init(tenants: [String] = ["acme", "globex"], maxOpenTenants: Int = 256,
         access: SyncServer.AccessConfiguration? = nil) async throws {
        dir = try TemporaryDirectory()
        data = DataDirectory(dir.path("server"))
        _ = try ServerProcess.prepare(data: data.path, tenants: tenants, devicesPerTenant: 0, schema: CRMSchema.current)
        var config = SyncServer.Configuration(dataDirectory: data.path, port: 0, schema: CRMSchema.current, schemaVersion: CRMSchema.version)
        config.accessCheckInterval = .milliseconds(200)
        config.maxOpenTenants = maxOpenTenants
        config.shutdownGracePeriod = .seconds(2)
        config.limits = .forTests
        config.access = access
        server = try SyncServer(configuration: config, logger: ServerFixture.logger("test.rapportd"))
        port = try await server.start()
    }

    func stop() async { await server.shutdown() }

    /// What rapportctl does: one change on its own connection to the registry.
    func admin<T>(_ body: (Registry) throws -> T) throws -> T {
        let registry = try data.openRegistry()
        defer { registry.close() }
        return try body(registry)
    }

    func configuration(tenant: String, secret: [UInt8] = []) -> ClientConfiguration {
        var config = ClientConfiguration(host: "127.0.0.1", port: port, tenant: tenant, secret: secret,
                                         trustRoots: .certificates(.file(caPath)), schemaVersion: CRMSchema.version)
        config.retry = RetryPolicy(maxAttempts: 2, initialDelay: .milliseconds(20), maxDelay: .milliseconds(100))
        return config
    }

    /// Enrolls a device through the protocol with a fresh code and gives it its own store.
    func enrolledDevice(_ name: String, tenant: String = "acme", user: String? = nil) async throws -> RapportClient {
        let ticket = try admin { try $0.issueEnrollmentCode(tenant: tenant, user: user ?? "owner@\(tenant).example") }
        let enrollment = try await RapportClient.enroll(configuration: configuration(tenant: tenant), code: ticket.code, deviceName: name)
        return try device(name, enrollment: enrollment)
    }

    func device(_ name: String, enrollment: RapportClient.Enrollment, replicaID: String? = nil) throws -> RapportClient {
        let store = try ReplicaStore(path: dir.path("\(name).sqlite"),
                                     options: .init(schema: CRMSchema.current, replicaID: try ReplicaID(replicaID ?? enrollment.deviceID)))
        return try RapportClient(store: SharedReplicaStore(store, label: name),
                                 configuration: configuration(tenant: enrollment.tenant, secret: enrollment.secret),
                                 logger: ServerFixture.logger("test.\(name)"))
    }
}

/// The error code a sync or an enrollment failed with.
func syncErrorCode(_ body: () async throws -> Void) async -> SyncError.Code? {
    do {
        try await body()
        return nil
    } catch let error as SyncError {
        return error.code
    } catch {
        Issue.record("expected a SyncError, got \(error)")
        return nil
    }
}

/// Waits for a live session to be ended by the server, and returns why.
func endOfLiveSession(_ live: LiveSync) async -> SyncError.Code? {
    for await event in live.events {
        if case .disconnected(let error) = event {
            if let error = error as? SyncError { return error.code }
            Issue.record("the live session ended without the server's reason: \(error)")
            return nil
        }
    }
    return nil
}

@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct AccessControlTests {
    @Test func aDeviceEnrollsOnceThroughTheProtocolAndSyncs() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let ticket = try f.admin { try $0.issueEnrollmentCode(tenant: "acme", user: "owner@acme.example") }
        let enrollment = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: ticket.code, deviceName: "laptop")
        #expect(enrollment.user == "owner@acme.example")
        #expect(enrollment.secret.count == 32)
        let device = try f.device("laptop", enrollment: enrollment)
        try device.local { _ = try $0.create("account", ["name": .text("Acme Corp")]) }
        #expect(try await device.sync().pushed == 1)

        #expect(await syncErrorCode { _ = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: ticket.code, deviceName: "again") } == .enrollmentCodeUsed)
        #expect(await syncErrorCode { _ = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: "AAAAA-BBBBB-CCCCC-DDDDD", deviceName: "x") } == .invalidEnrollmentCode)
        let other = try f.admin { try $0.issueEnrollmentCode(tenant: "globex", user: "owner@globex.example") }
        #expect(await syncErrorCode { _ = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: other.code, deviceName: "x") } == .invalidEnrollmentCode)
        let brief = try f.admin { try $0.issueEnrollmentCode(tenant: "acme", user: "owner@acme.example", validFor: .milliseconds(200)) }
        try await Task.sleep(for: .milliseconds(400))
        #expect(await syncErrorCode { _ = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: brief.code, deviceName: "x") } == .enrollmentCodeExpired)
        let devices = try f.admin { try $0.devices(tenant: "acme") }
        #expect(devices.map(\.name) == ["laptop"])
    }

    @Test func revokingADeviceEndsItsLiveSessionAndRefusesItFromThenOn() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let device = try await f.enrolledDevice("laptop")
        let colleague = try await f.enrolledDevice("phone")
        try device.local { _ = try $0.create("account", ["name": .text("Kept")]) }
        try await device.sync()
        let live = device.live()
        var events = live.events.makeAsyncIterator()
        _ = await events.next()  // connected
        try f.admin { try $0.revokeDevice(device.store.replicaID) }
        // The colleague's session re-reads the registry first: the live session must end anyway.
        // The colleague still syncs, and the revoked device's data stays.
        #expect(try await colleague.sync().pulled == 1)
        #expect(await endOfLiveSession(live) == .deviceRevoked)
        await live.stop()
        #expect(await syncErrorCode { try await device.sync() } == .deviceRevoked)
    }

    @Test func suspendingATenantEndsItsSessionsAndResumingRestoresAccessWithDataIntact() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let device = try await f.enrolledDevice("laptop")
        let neighbour = try await f.enrolledDevice("neighbour", tenant: "globex")
        try device.local { store in for i in 0..<20 { _ = try store.create("account", ["name": .text("a\(i)")]) } }
        try await device.sync()
        let live = device.live()
        var events = live.events.makeAsyncIterator()
        _ = await events.next()
        try f.admin { try $0.setTenantStatus("acme", .suspended) }
        #expect(await endOfLiveSession(live) == .tenantSuspended)
        await live.stop()
        #expect(await syncErrorCode { try await device.sync() } == .tenantSuspended)
        try await neighbour.sync()  // other tenants are served meanwhile

        try f.admin { try $0.setTenantStatus("acme", .active) }
        try await Task.sleep(for: .milliseconds(400))
        let fresh = try await f.enrolledDevice("fresh")
        #expect(try await fresh.sync().pulled == 20)
        try await device.sync()

        try f.admin { try $0.setUserStatus(tenant: "acme", email: "owner@acme.example", .suspended) }
        #expect(await syncErrorCode { try await device.sync() } == .userSuspended)
        try f.admin { try $0.setTenantStatus("acme", .deleted) }
        #expect(await syncErrorCode { try await device.sync() } == .unknownTenant)
    }

    @Test func aCredentialOfOneTenantNeverOpensAnother() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let acme = try await f.enrolledDevice("acme-laptop")
        let globex = try await f.enrolledDevice("globex-laptop", tenant: "globex")
        try globex.local { _ = try $0.create("account", ["name": .text("Globex secret")]) }
        try await globex.sync()
        // Acme's device names tenant globex in its Hello, with its own id and secret.
        let intruder = try RapportClient(store: acme.store, configuration: f.configuration(tenant: "globex", secret: acme.configuration.secret),
                                         logger: ServerFixture.logger("test.intruder"))
        #expect(await syncErrorCode { try await intruder.sync() } == .authenticationFailed)
        // A wrong secret and an unknown device are refused the same way.
        let wrong = try RapportClient(store: acme.store, configuration: f.configuration(tenant: "acme", secret: Array(repeating: 7, count: 32)),
                                      logger: ServerFixture.logger("test.wrong"))
        #expect(await syncErrorCode { try await wrong.sync() } == .authenticationFailed)
        #expect(await syncErrorCode {
            _ = try await RapportClient.enroll(configuration: f.configuration(tenant: "../globex"), code: "X", deviceName: "x")
        } == .unknownTenant)
        try await acme.sync()
        #expect(try acme.local { try $0.count(ofType: "account") } == 0)
    }

    @Test func aDeviceCannotWriteUnderAnotherReplicasId() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let ticket = try f.admin { try $0.issueEnrollmentCode(tenant: "acme", user: "owner@acme.example") }
        let enrollment = try await RapportClient.enroll(configuration: f.configuration(tenant: "acme"), code: ticket.code, deviceName: "forger")
        // A write stamped with a colleague's id, made elsewhere and slipped into the forger's
        // store as if a downstream replica had sent it, so the forger pushes it under its own Hello.
        let scratch = try ReplicaStore(path: f.dir.path("scratch.sqlite"),
                                       options: .init(schema: CRMSchema.current, replicaID: try ReplicaID("someone-else")))
        let forged = try scratch.create("account", ["name": .text("Forged")])
        scratch.close()
        var options = ReplicaStore.Options(schema: CRMSchema.current, replicaID: try ReplicaID(enrollment.deviceID))
        options.forwardsDownstreamChanges = true
        let store = try ReplicaStore(path: f.dir.path("forger.sqlite"), options: options)
        _ = try store.apply([forged], from: .downstream)
        let forger = try RapportClient(store: SharedReplicaStore(store, label: "forger"),
                                       configuration: f.configuration(tenant: "acme", secret: enrollment.secret),
                                       logger: ServerFixture.logger("test.forger"))
        let report = try await forger.sync()
        #expect(report.rejected == 1)
        let rejected = try forger.local { try $0.conflicts(status: .open) }
        #expect(rejected.count == 1)
        #expect(rejected.first.map { "\($0)".contains("own id") } == true)
        let honest = try await f.enrolledDevice("honest")
        #expect(try await honest.sync().pulled == 0)
    }

    @Test func aPoolOfTwoServesMoreTenantsThanItKeepsOpen() async throws {
        let tenants = (0..<6).map { "t\($0)" }
        let f = try await RegistryServer(tenants: tenants, maxOpenTenants: 2)
        defer { Task { await f.stop() } }
        var devices: [RapportClient] = []
        for tenant in tenants { devices.append(try await f.enrolledDevice("d-\(tenant)", tenant: tenant)) }
        for round in 0..<3 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, device) in devices.enumerated() {
                    try device.local { _ = try $0.create("account", ["name": .text("r\(round) d\(index)")]) }
                    group.addTask { _ = try await device.sync() }
                }
                try await group.waitForAll()
            }
        }
        let second = try await f.enrolledDevice("second-t3", tenant: "t3")
        #expect(try await second.sync().pulled == 3)
        #expect(f.server.openTenantStores <= 2)
    }

    @Test func afterARestoreDevicesPushAgainWhatTheBackupLacks() async throws {
        let f = try await RegistryServer()
        defer { Task { await f.stop() } }
        let device = try await f.enrolledDevice("laptop")
        try device.local { store in for i in 0..<100 { _ = try store.create("account", ["name": .text("before \(i)")]) } }
        try await device.sync()
        let backup = f.dir.path("acme.backup")
        try f.admin { try f.data.backup(tenant: "acme", to: backup, in: $0) }
        try device.local { store in for i in 0..<20 { _ = try store.create("account", ["name": .text("after \(i)")]) } }
        try await device.sync()

        try f.admin { try $0.setTenantStatus("acme", .suspended) }
        try await Task.sleep(for: .seconds(1))  // the server closes the suspended tenant's store
        try f.admin { try f.data.restore(tenant: "acme", from: backup, schema: CRMSchema.current, in: $0) }
        try f.admin { try $0.setTenantStatus("acme", .active) }

        let report = try await device.sync()
        #expect(report.pushed == 120, "everything is offered again; the server keeps what it lacks")
        let colleague = try await f.enrolledDevice("colleague")
        #expect(try await colleague.sync().pulled == 120)
    }
}
