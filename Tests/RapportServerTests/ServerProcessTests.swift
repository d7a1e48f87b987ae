import CRM
import Foundation
import RapportClient
import ReplicaStore
import Synchronization
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// What only a real process can show: a server killed outright (SIGKILL, no shutdown) in the
/// middle of a pull loses nothing, and the device resumes from its checkpoint.
@Suite(.serialized, .ownThread) struct ServerProcessTests {
    @Test func aServerKilledMidPullLosesNothingAndTheDeviceResumes() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("server")
        let credential = try #require(try ServerProcess.prepare(data: data, tenants: ["acme"], schema: CRMSchema.current)["acme"]?.first)
        do {
            let tenant = try ReplicaStore(path: data + "/tenants/acme.sqlite", options: .init(schema: CRMSchema.current))
            try tenant.transaction {
                for i in 0..<3_000 { try tenant.create("contact", ["last_name": .text("c\(i)")]) }
            }
            tenant.close()
        }
        let binary = ServerProcess.defaultBinary()
        let first = try await ServerProcess.start(binary: binary, data: data)
        let store = SharedReplicaStore(
            try ReplicaStore(path: dir.path("device.sqlite"), options: .init(schema: CRMSchema.current, replicaID: try credential.replicaID)),
            label: "device")
        func client(port: Int) throws -> RapportClient {
            var config = ClientConfiguration(host: "127.0.0.1", port: port, tenant: "acme", secret: credential.secret,
                                             trustRoots: .certificates(.file(data + "/tls/ca.pem")), schemaVersion: CRMSchema.version)
            config.pullBatchSize = 200
            config.retry = RetryPolicy(maxAttempts: 2, initialDelay: .milliseconds(20), maxDelay: .milliseconds(50))
            return try RapportClient(store: store, configuration: config, logger: ServerFixture.logger("device"))
        }
        let killed = Atomic<Bool>(false)
        await #expect(throws: (any Error).self) {
            try await client(port: first.port).sync { progress in
                if progress.phase == .pull, !killed.exchange(true, ordering: .relaxed) { first.kill() }
            }
        }
        let wasKilled = killed.load(ordering: .relaxed)
        #expect(wasKilled)
        let partial = try store.performSync { try $0.count(ofType: "contact") }
        #expect(partial >= 200 && partial < 3_000 && partial % 200 == 0)

        let second = try await ServerProcess.start(binary: binary, data: data)
        defer { second.stop() }
        let report = try await client(port: second.port).sync()
        #expect(report.pulled == 3_000 - partial)
        #expect(try store.performSync { try $0.count(ofType: "contact") } == 3_000)
    }
}
