import ArgumentParser
import CRM
import Foundation
import ReplicaStore
import SyncModel

/// The server's scheduled rule pass over a generated tenant: per account two contacts, one and
/// a half opportunities, three activities and half a case, owned by 50 reps in five teams.
extension CRMBench {
    /// The moment the tenant is generated around and the passes compute at.
    static let passNow = Date(timeIntervalSince1970: 1_749_988_800)  // 2025-06-15T12:00:00Z

    func scheduledPassFigures(_ dir: BenchDirectory, _ report: Reporter) throws {
        let store = try ReplicaStore(path: dir.path("tenant.sqlite"), options: .crm(role: .authority))
        defer { store.close() }
        let records = try generateTenant(in: store)
        let counts = try ["account", "contact", "opportunity", "activity", "case"].map { try store.count(ofType: $0) }
        report.line("tenant", ["accounts": counts[0], "contacts": counts[1], "opportunities": counts[2], "activities": counts[3],
                               "cases": counts[4], "records": records])

        // Floor: reading the same records whole, as `records(ofType:)` gives them, and nothing more.
        let floor = try measure {
            for type in ["account", "contact", "opportunity", "activity", "case"] { _ = try store.records(ofType: type) }
        }
        report.line("floor_read_records", ["records": records, "seconds": floor])

        let directory = (0..<50).map { CRMScheduledPass.DirectoryUser(email: "rep\($0)@example.com", role: "rep", team: "team\($0 % 5)") }
            + (0..<5).map { CRMScheduledPass.DirectoryUser(email: "manager\($0)@example.com", role: "manager", team: "team\($0)") }
        let pass = CRMScheduledPass(now: Self.passNow, manager: CRMScheduledPass.managers(in: directory))
        var first: CRMScheduledPass.Report?
        var written: [UUID] = []
        let firstSeconds = try measure {
            let plan = try pass.plan(store)
            written = plan.records
            first = try pass.apply(plan, to: store)
        }
        guard let first else { return }
        report.line("scheduled_pass_first", [
            "records_read": first.recordsRead, "records_written": first.recordsWritten, "seconds": firstSeconds,
            "read_seconds": first.readSeconds, "write_seconds": first.writeSeconds, "ratio_to_floor": firstSeconds / floor,
            "tiers": first.written.tiers, "churn_flags": first.written.churnFlags, "renewal_flags": first.written.renewalFlags,
            "segments": first.written.segments, "breaches": first.written.breaches, "escalations": first.written.escalations,
        ])
        var second: CRMScheduledPass.Report?
        let secondSeconds = try measure { second = try pass.run(on: store) }
        guard let second else { return }
        report.line("scheduled_pass_unchanged", [
            "records_read": second.recordsRead, "records_written": second.recordsWritten, "target_records_written": 0,
            "seconds": secondSeconds, "ratio_to_floor": secondSeconds / floor,
        ])
        guard second.recordsWritten == 0 else {
            throw ValidationError("the second pass over unchanged data wrote \(second.recordsWritten) records: \(second.summary)")
        }

        // For the first pass's writes: the store's own cost of updating the same accounts and
        // cases, one field the rules do not read, in the same chunks of 500.
        let updates = try measure {
            for start in stride(from: 0, to: written.count, by: 500) {
                try store.transaction {
                    for id in written[start..<min(start + 500, written.count)] {
                        let field = try store.recordType(of: id) == "case" ? "description" : "industry"
                        try store.update(id, [field: .text("benchmark")])
                    }
                }
            }
        }
        report.line("store_update_same_records", ["records": written.count, "seconds": updates,
                                                  "first_pass_write_seconds": first.writeSeconds,
                                                  "ratio_first_pass_writes_to_this": first.writeSeconds / updates])
    }

    /// Writes the tenant, 20,000 records per transaction; returns how many records it holds.
    private func generateTenant(in store: ReplicaStore) throws -> Int {
        var random = FastRandom(seed: 0x5343_4845_4455_4c45)
        let today = CRMDate.seconds(Self.passNow) / 86_400
        let now = CRMDate.seconds(Self.passNow)
        let rules = CRMRules(now: Self.passNow)
        let openStages = ["prospecting", "qualification", "proposal", "negotiation"]
        func owner() -> FieldValue { .text("rep\(Int.random(in: 0..<50, using: &random))@example.com") }
        func chance(_ share: Double) -> Bool { Double.random(in: 0..<1, using: &random) < share }
        func instant(daysAgo: Double) -> FieldValue { .text(CRMDate.format(instant: now - Int64(daysAgo * 86_400))) }

        // Ids are chosen here, so that a record may reference one created in the same batch.
        var pending: [(id: UUID, type: String, values: [String: FieldValue])] = []
        var written = 0
        func flush(force: Bool = false) throws {
            guard pending.count >= 20_000 || (force && !pending.isEmpty) else { return }
            try store.transaction { for record in pending { try store.create(record.type, id: record.id, record.values) } }
            written += pending.count
            pending.removeAll(keepingCapacity: true)
        }
        func create(_ type: String, _ values: [String: FieldValue]) throws -> UUID {
            let id = UUID()
            pending.append((id, type, values))
            try flush()
            return id
        }

        var accountIDs: [UUID] = []
        var contactIDs: [UUID] = []
        var opportunityIDs: [UUID] = []
        for index in 0..<accounts {
            let roll = Double.random(in: 0..<1, using: &random)
            let lifecycle = roll < 0.45 ? "customer" : roll < 0.55 ? "core" : roll < 0.85 ? "prospect" : roll < 0.95 ? "target" : "churned"
            var values: [String: FieldValue] = ["name": .text("Account \(index)"), "lifecycle_stage": .text(lifecycle), "owner": owner()]
            if lifecycle == "customer" || lifecycle == "core", chance(0.7) {
                values["renewal_date"] = .text(CRMDate.format(day: today + Int64.random(in: -200...300, using: &random)))
            }
            if chance(0.02) { values["strategic"] = .bool(true) }
            accountIDs.append(try create("account", values))
        }
        for index in 0..<(accounts * 2) {
            contactIDs.append(try create("contact", ["last_name": .text("Contact \(index)"), "owner": owner(),
                                                     "account": .text(accountIDs[index / 2].uuidString)]))
        }
        for index in 0..<(accounts * 3 / 2) {
            let roll = Double.random(in: 0..<1, using: &random)
            var values: [String: FieldValue] = [
                "name": .text("Deal \(index)"), "account": .text(accountIDs[Int.random(in: 0..<accounts, using: &random)].uuidString),
                "amount": .real((Double.random(in: 1_000...400_000, using: &random)).rounded()), "owner": owner(),
            ]
            if roll < 0.65 {
                values["stage"] = .text(roll < 0.4 ? "closed_won" : "closed_lost")
                values["closed_at"] = .text(CRMDate.format(day: today - Int64.random(in: 0...730, using: &random)))
            } else {
                values["stage"] = .text(openStages[Int.random(in: 0..<openStages.count, using: &random)])
            }
            opportunityIDs.append(try create("opportunity", values))
        }
        for index in 0..<(accounts * 3) {
            var values: [String: FieldValue] = ["kind": .text(["call", "meeting", "visit", "email"][index % 4]),
                                                "subject": .text("Touch \(index)"), "owner": owner()]
            switch index % 3 {
            case 0: values["account"] = .text(accountIDs[Int.random(in: 0..<accounts, using: &random)].uuidString)
            case 1: values["contact"] = .text(contactIDs[Int.random(in: 0..<contactIDs.count, using: &random)].uuidString)
            default: values["opportunity"] = .text(opportunityIDs[Int.random(in: 0..<opportunityIDs.count, using: &random)].uuidString)
            }
            let roll = Double.random(in: 0..<1, using: &random)
            if roll < 0.85 {
                values["status"] = .text("done")
                values["occurred_at"] = instant(daysAgo: Double.random(in: 0...365, using: &random))
            } else {
                values["status"] = .text(roll < 0.95 ? "open" : "cancelled")
                values["due_at"] = instant(daysAgo: Double.random(in: -30...30, using: &random))
            }
            _ = try create("activity", values)
        }
        for index in 0..<(accounts / 2) {
            let priority = CRMSchema.casePriorities[Int.random(in: 0..<CRMSchema.casePriorities.count, using: &random)]
            let opened = now - Int64(Double.random(in: 0...60, using: &random) * 86_400)
            let due = rules.deadlines(priority: priority, openedAt: opened)!
            let account = Int.random(in: 0..<accounts, using: &random)
            var values: [String: FieldValue] = [
                "number": .text("C-\(index)"), "subject": .text("Case \(index)"), "priority": .text(priority), "owner": owner(),
                "account": .text(accountIDs[account].uuidString), "contact": .text(contactIDs[account * 2].uuidString),
                "opened_at": .text(CRMDate.format(instant: opened)),
                "response_due": .text(CRMDate.format(instant: due.response)), "resolution_due": .text(CRMDate.format(instant: due.resolution)),
            ]
            // Answered and resolved within or past their deadlines, or still open.
            let answered = opened + Int64(Double.random(in: 0.2...1.5, using: &random) * Double(due.response - opened))
            let resolved = opened + Int64(Double.random(in: 0.2...1.5, using: &random) * Double(due.resolution - opened))
            let roll = Double.random(in: 0..<1, using: &random)
            if roll < 0.7, resolved <= now {
                values["status"] = .text(chance(0.5) ? "closed" : "resolved")
                values["first_response_at"] = .text(CRMDate.format(instant: min(answered, resolved)))
                values["resolved_at"] = .text(CRMDate.format(instant: resolved))
            } else {
                values["status"] = .text(["new", "open", "pending"][index % 3])
                if answered <= now, chance(0.6) { values["first_response_at"] = .text(CRMDate.format(instant: answered)) }
            }
            _ = try create("case", values)
        }
        try flush(force: true)
        return written
    }
}
