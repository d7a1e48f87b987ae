import CRM
import Foundation
import Logging
import RapportDevice
import RapportServer
import SyncModel
import SyncProtocol
import TestSupport
import Testing
import TLS

/// A real `rapportd` in-process on an ephemeral loopback port, with its development CA, as in
/// Tests/RapportServerTests/ServerFixture.swift.
final class TestServer: Sendable {
    static let secret: [UInt8] = Array("correct horse battery staple, 32b".utf8)
    let dir: TemporaryDirectory
    let server: SyncServer
    let port: Int

    init() async throws {
        dir = try TemporaryDirectory()
        var config = SyncServer.Configuration(dataDirectory: dir.path("server"), port: 0,
                                              schema: CRMSchema.current, schemaVersion: CRMSchema.version)
        config.shutdownGracePeriod = .seconds(2)
        config.limits = .forTests
        var logger = Logger(label: "test.rapportd")
        logger.logLevel = ProcessInfo.processInfo.environment["RAPPORT_TEST_LOG"] == nil ? .critical : .debug
        server = try SyncServer(configuration: config, authenticator: StaticAuthenticator(secrets: ["acme": Self.secret]),
                                logger: logger)
        port = try await server.start()
    }

    /// Runs `body` with a fresh server, stopping it whether `body` throws or not.
    static func with(_ body: (TestServer) async throws -> Void) async throws {
        let server = try await TestServer()
        do {
            try await body(server)
        } catch {
            await server.server.shutdown()
            throw error
        }
        await server.server.shutdown()
    }

    /// Creates a device home through the library, as `rapport init` does, and opens it.
    func device(_ name: String, secret: [UInt8] = TestServer.secret, caFile: String? = nil) throws -> Device {
        let home = DeviceHome(path: dir.path(name))
        try home.initialize(DeviceSettings(
            server: ServerAddress(host: "127.0.0.1", port: port), tenant: "acme", secret: secret,
            caFile: caFile ?? server.devCertificateAuthorityPath, deviceID: name))
        return try Device.open(home)
    }
}

@Suite struct EndToEndTests {
    @Test func recordsPutOnOneDeviceArriveOnTheOther() async throws {
        try await TestServer.with { server in
            let a = try server.device("laptop-a"), b = try server.device("phone-b")
            defer { a.close(); b.close() }
            let contact = try a.put(type: "contact", id: nil, assignments: ["first_name=Ada", "last_name=Lovelace", "do_not_call=yes"])
            let account = try a.put(type: "account", id: nil, assignments: ["name=Acme", "loyalty_points+=10"])

            let pushed = try await a.sync(maxAttempts: 3)
            #expect(pushed.pushed == 2)
            #expect(try a.status().dirtyCount == 0)
            let pulled = try await b.sync(maxAttempts: 3)
            #expect(pulled.pulled >= 2)

            let copy = try b.record(Device.text(contact.record.id))
            #expect(copy.values == contact.record.values)
            #expect(try b.record(Device.text(account.record.id)).values["loyalty_points"] == .integer(10))

            // Counter changes from both sides add up.
            try b.put(type: "account", id: Device.text(account.record.id), assignments: ["loyalty_points+=5"])
            try a.put(type: "account", id: Device.text(account.record.id), assignments: ["loyalty_points-=1"])
            try await b.sync(maxAttempts: 3)
            try await a.sync(maxAttempts: 3)
            try await b.sync(maxAttempts: 3)
            for device in [a, b] {
                #expect(try device.record(Device.text(account.record.id)).values["loyalty_points"] == .integer(14))
                #expect(try device.conflicts().isEmpty)
            }
            #expect(a.home.loadState()?.checkpoint ?? 0 > 0)
        }
    }

    @Test func aConflictIsListedAndItsResolutionSyncs() async throws {
        try await TestServer.with { server in
            let a = try server.device("laptop-a"), b = try server.device("phone-b")
            defer { a.close(); b.close() }
            let id = Device.text(try a.put(type: "contact", id: nil, assignments: ["first_name=Ada", "last_name=Lovelace", "title=Analyst"]).record.id)
            try await a.sync(maxAttempts: 3)
            try await b.sync(maxAttempts: 3)

            // Both edit the same field before either syncs: concurrent writes.
            try a.put(type: "contact", id: id, assignments: ["title=Countess"])
            try b.put(type: "contact", id: id, assignments: ["title=Mathematician"])
            try await a.sync(maxAttempts: 3)
            let report = try await b.sync(maxAttempts: 3)
            #expect(report.conflicts >= 1)

            let open = try b.conflicts()
            let entry = try #require(open.first { $0.conflict.field == "title" })
            #expect(entry.conflict.kind == .concurrentUpdate)
            let sides = Set([entry.conflict.winner.value, entry.conflict.loser.value])
            #expect(sides == [.text("Countess"), .text("Mathematician")])
            #expect(try b.openConflictCount(on: entry.conflict.recordID) >= 1)

            let (closed, record) = try b.resolve(entry.id, .value("Countess of Lovelace"))
            #expect(closed.status == .resolved)
            #expect(record.values["title"] == .text("Countess of Lovelace"))
            let again = try #require(#expect(throws: DeviceError.self) { try b.resolve(entry.id, .keepWinner) })
            #expect(again.status == .usage)

            try await b.sync(maxAttempts: 3)
            try await a.sync(maxAttempts: 3)
            #expect(try a.record(id).values["title"] == .text("Countess of Lovelace"))
            // The resolution saw both sides, so no device should be left with an open conflict on it.
            #expect(try b.conflicts().filter { $0.conflict.field == "title" }.isEmpty)
            // A learns that its write lost in the same pull that brings B's resolution: the
            // entry is logged already superseded (SPEC 1.5), so nothing is left open on A.
            let leftOnA = try a.conflicts().filter { $0.conflict.field == "title" }
            #expect(leftOnA.isEmpty)
        }
    }

    @Test func refusalsAndFailuresHaveTheirExitStatus() async throws {
        try await TestServer.with { server in
            let wrongSecret = try server.device("wrong-secret", secret: Array("guess".utf8))
            defer { wrongSecret.close() }
            let error = try await #require(#expect(throws: DeviceError.self) { try await wrongSecret.sync(maxAttempts: 3) })
            #expect(error.status == .refused)

            let otherCA = server.dir.path("other-ca.pem")
            try DevCertificates.generate().caCertificatePEM.write(toFile: otherCA, atomically: true, encoding: .utf8)
            let wrongCA = try server.device("wrong-ca", caFile: otherCA)
            defer { wrongCA.close() }
            let tls = try await #require(#expect(throws: DeviceError.self) { try await wrongCA.sync(maxAttempts: 3) })
            #expect(tls.status == .refused)

            let offline = try server.device("offline")
            defer { offline.close() }
            try offline.put(type: "contact", id: nil, assignments: ["last_name=Kept"])
            await server.server.shutdown()
            // Nothing listens on the port now: a network failure, and the change stays to push.
            let down = try await #require(#expect(throws: DeviceError.self) { try await offline.sync(maxAttempts: 1) })
            #expect(down.status == .syncFailed)
            #expect(try offline.status().dirtyCount == 1)
        }
    }
}
