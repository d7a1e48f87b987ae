import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// One tenant store written by several processes at once, as an operator does it: `rapportd`
/// serving devices that push in a loop while `rapportctl import` and `rapportctl backup` run
/// on the same store. Every write must be accounted for everywhere, and no device may see an
/// error for it.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct SeveralWritersTests {
    @Test func importAndBackupWhileDevicesPushLoseNothingAndFailNoDevice() async throws {
        let dir = try TemporaryDirectory()
        let log = dir.path("rapportd.log")
        let operated = try await OperatedServer(dir, logFile: log)
        defer { operated.server.stop() }
        /// A device's failure with what the server logged about it.
        func withServerLog(_ error: any Error) -> any Error {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            let tail = text.split(separator: "\n").filter { $0.contains("error") || $0.contains("warning") }.suffix(10)
            return BenchError("\(error); the server logged:\n\(tail.joined(separator: "\n"))")
        }
        // One attempt per sync: a store error must reach the test, not be retried away.
        var devices: [RapportClient] = []
        for name in ["laptop", "phone", "tablet"] { devices.append(try await operated.enroll(name, attempts: 1)) }

        let rows = 3_000
        var csv = "first_name,last_name,email\n"
        for row in 0..<rows { csv += "Ada\(row),Lovelace\(row),ada\(row)@import.example\n" }
        try csv.write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)

        // Devices create and edit accounts and sync, round after round, until the import ends.
        let importDone = ManualClock(0)
        let pushing = devices.enumerated().map { index, device in
            Task { () throws -> (created: [UUID], rejected: Int, rounds: Int) in
                var created: [UUID] = []
                var rejected = 0
                var round = 0
                while importDone.read() == 0 || round < 5 {
                    let ids = try device.local { store in
                        try store.transaction {
                            let ids = try (0..<20).map { i in try store.create("account", ["name": .text("d\(index)-r\(round)-\(i)")]).id }
                            if let earlier = created.last { try store.update(earlier, ["industry": .text("round \(round)")]) }
                            return ids
                        }
                    }
                    created += ids
                    do { rejected += try await device.sync().rejected } catch { throw withServerLog(error) }
                    round += 1
                }
                return (created, rejected, round)
            }
        }
        try await Task.sleep(for: .milliseconds(300))  // the devices are pushing by now
        async let imported = operated.ctl.run(["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv"), "--json"])
        async let backedUp = operated.ctl.run(["backup", "acme", "--to", dir.path("acme.backup"), "--json"])
        let (importResult, backupResult) = try await (imported, backedUp)
        importDone.set(1)
        var created: [UUID] = []
        for task in pushing {
            let outcome = try await task.value
            #expect(outcome.rejected == 0, "a device's push was refused while the import ran")
            #expect(outcome.rounds >= 5)
            created += outcome.created
        }

        #expect(importResult.status == 0, "\(importResult.error)")
        let report = try #require(importResult.json as? [String: Any], "\(importResult.output)")
        #expect(report["imported"] as? Int == rows)
        #expect((report["rejections"] as? [Any])?.isEmpty == true, "\(importResult.output.prefix(600))")
        #expect(backupResult.status == 0, "\(backupResult.error)")
        let restored = try await operated.ctl.run(["restore", "acme-copy", "--from", dir.path("acme.backup"), "--json"])
        #expect(restored.status == 0, "\(restored.error)")

        // Two rounds: the first pushes what is left, the second brings everyone's changes.
        for _ in 0..<2 { for device in devices { #expect(try await device.sync().rejected == 0) } }
        await operated.server.stop()
        let server = try ReplicaStore(path: operated.data + "/tenants/acme.sqlite", options: .init(schema: CRMSchema.current))
        defer { server.close() }
        let everything = try server.changes(after: 0, limit: .max).map(\.state)
        let byID = Dictionary(uniqueKeysWithValues: everything.map { ($0.id, $0) })
        #expect(Set(everything.map(\.id)).count == everything.count)
        #expect(created.allSatisfy { byID[$0]?.type == "account" }, "every account a device created is on the server")
        let emails = Set(try server.records(ofType: "contact").compactMap { $0.values["email"].flatMap { value -> String? in
            if case .text(let text) = value { text } else { nil }
        } })
        let missing = Set((0..<rows).map { "ada\($0)@import.example" }).subtracting(emails)
        #expect(missing.isEmpty && emails.count == rows, "\(missing.count) imported contacts are missing on the server")
        for device in devices {
            let held = try device.store.performSync { try $0.changes(after: 0, limit: .max).map(\.state) }
            #expect(held.count == everything.count)
            #expect(held.allSatisfy { byID[$0.id] == $0 }, "device \(device.store.replicaID) holds what the server holds")
            #expect(try device.store.performSync { try $0.dirtyCount() } == 0)
        }
    }

    /// What another process commits to a served store reaches live devices without their
    /// asking: the server notices the store's sequence moved and announces it.
    @Test func aLiveDeviceReceivesWhatAnImportCommitsBesideTheServer() async throws {
        let dir = try TemporaryDirectory()
        let log = dir.path("rapportd.log")
        let operated = try await OperatedServer(dir, logFile: log)
        defer { operated.server.stop() }
        /// A device's failure with what the server logged about it.
        func withServerLog(_ error: any Error) -> any Error {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            let tail = text.split(separator: "\n").filter { $0.contains("error") || $0.contains("warning") }.suffix(10)
            return BenchError("\(error); the server logged:\n\(tail.joined(separator: "\n"))")
        }
        let phone = try await operated.enroll("phone")
        let live = phone.live()
        var events = live.events.makeAsyncIterator()
        guard case .connected? = await events.next(), case .synced? = await events.next() else {
            Issue.record("the live session did not start")
            return
        }
        try "last_name,email\nBabbage,charles@import.example\nSomerville,mary@import.example\n"
            .write(toFile: dir.path("contacts.csv"), atomically: true, encoding: .utf8)
        let imported = try await operated.ctl.run(["import", "acme", "--type", "contact", "--from", dir.path("contacts.csv")])
        #expect(imported.status == 0, "\(imported.error)")
        var pulled = 0
        while pulled < 2, let event = await events.next() {
            if case .synced(let report) = event { pulled += report.pulled }
        }
        #expect(try phone.local { try $0.count(ofType: "contact") } == 2)
        await live.stop()
    }
}
