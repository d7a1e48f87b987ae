import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SyncModel

/// The server's rule pass after a batch: a batch of 1,000 changed records from a device applied
/// to a tenant store with the CRM's effects, against the same batch applied to a copy of the
/// same store opened alike but without effects (the floor). Two batches: from a client that
/// ran no rules (the server computes and writes what follows) and from a device that ran them
/// offline (the server computes the same and writes nothing).
extension CRMBench {
    func effectsFigures(_ dir: BenchDirectory, _ report: Reporter) throws {
        let changes = 1_000
        let base = dir.path("rules-base.sqlite")
        var ids = (accounts: [UUID](), contacts: [UUID](), deals: [UUID](), cases: [UUID]())
        do {
            let server = try ReplicaStore(path: base, options: .crm(role: .authority))
            defer { server.close() }
            try server.transaction {
                for i in 0..<2_000 {
                    let account = try server.create("account", ["name": .text("Account \(i)"), "lifecycle_stage": .text("prospect"),
                                                                "owner": .text("rep\(i % 20)@example.com")]).id
                    ids.accounts.append(account)
                    for j in 0..<2 {
                        ids.contacts.append(try server.create("contact", [
                            "last_name": .text("Person \(i)-\(j)"), "account": .text(account.uuidString),
                            "consent_calls": .text("granted"),
                        ]).id)
                    }
                    ids.deals.append(try server.create("opportunity", [
                        "name": .text("Deal \(i)"), "account": .text(account.uuidString), "stage": .text("qualification"),
                        "amount": .real(Double(1_000 + i)),
                    ]).id)
                    ids.cases.append(try server.create("case", [
                        "subject": .text("Case \(i)"), "priority": .text("normal"), "status": .text("open"),
                        "account": .text(account.uuidString), "owner": .text("rep\(i % 20)@example.com"),
                    ]).id)
                }
            }
        }

        /// The same 1,000 changes on a device holding the tenant: 200 each of new cases, cases
        /// closed, stage changes (half of them wins), calls logged and contacts edited.
        func batch(effects: Bool) throws -> [RecordState] {
            let path = dir.path("rules-device-\(effects).sqlite")
            var options = ReplicaStore.Options.crm(role: .device)
            if !effects { options.effects = nil }
            let device = try ReplicaStore(path: path, options: options)
            defer { device.close() }
            let server = try ReplicaStore(path: base, options: .crm(role: .authority))
            try device.apply(try server.changes(after: 0, limit: .max).map(\.state), from: .upstream)
            server.close()
            try device.transaction {
                for i in 0..<changes / 5 {
                    try device.create("case", ["number": .text("D-\(i)"), "subject": .text("New \(i)"), "priority": .text("high"),
                                               "status": .text("new"), "account": .text(ids.accounts[i].uuidString)])
                    try device.update(ids.cases[i], ["status": .text("closed")])
                    try device.update(ids.deals[i], ["stage": .text(i % 2 == 0 ? "closed_won" : "proposal")])
                    try device.create("activity", ["kind": .text("call"), "subject": .text("Call \(i)"), "status": .text("done"),
                                                   "contact": .text(ids.contacts[i].uuidString),
                                                   "occurred_at": .text("2026-01-01T10:00:00Z")])
                    try device.update(ids.contacts[changes + i], ["title": .text("Buyer")])
                }
            }
            return try device.dirtyRecords()
        }

        for (name, records) in [("thin_client", try batch(effects: false)), ("device_ran_rules", try batch(effects: true))] {
            /// Applies the batch to a fresh copy of the tenant, `runs` times; the median.
            func apply(effects: Bool) throws -> (seconds: Double, written: Int64) {
                var times: [Double] = []
                var written: Int64 = 0
                for run in 0..<runs {
                    let path = dir.path("rules-\(name)-\(effects)-\(run).sqlite")
                    try? FileManager.default.removeItem(atPath: path)
                    try FileManager.default.copyItem(atPath: base, toPath: path)
                    var options = ReplicaStore.Options.crm(role: .authority)
                    if !effects { options.effects = nil }
                    let server = try ReplicaStore(path: path, options: options)
                    let before = try server.lastSequence
                    times.append(try measure { try server.apply(records, from: .downstream) })
                    written = try server.lastSequence - before - Int64(records.count)
                    server.close()
                }
                return (times.sorted()[times.count / 2], written)
            }
            let floor = try apply(effects: false)
            let ruled = try apply(effects: true)
            report.line("apply_batch_without_rules_\(name)", ["records": records.count, "median_seconds": floor.seconds, "runs": runs])
            report.figure("apply_batch_with_rules_\(name)", ruled.seconds, records: records.count, floor: floor.seconds, target: 1.3)
            report.line("records_the_rules_wrote_\(name)", ["records": ruled.written])
        }
    }
}
