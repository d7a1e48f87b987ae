import ArgumentParser
import CRM
import Foundation
import RapportClient
import Registry
import ReplicaStore
import SyncModel
import TestSupport

/// What scoping by rights costs, against a real `rapportd` process: a rep's initial sync next to
/// the initial sync of a tenant that holds only the rep's records, the server's CPU for an
/// incremental pull with scoping next to one without, and how long reassigning accounts from
/// one rep to another takes to reach both reps' devices.
struct ScopesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scopes",
        abstract: "Benchmark scoped pulls (rights) against a rapportd child process.")

    @Option(help: "Accounts in the tenant.")
    var accounts = 100_000

    @Option(help: "Contacts and opportunities per account (this many of each).")
    var perAccount = 1

    @Option(help: "Reps owning the accounts, in turn.")
    var reps = 50

    @Option(help: "Teams of the reps not measured.")
    var teams = 5

    @Option(help: "Accounts reassigned from one measured rep to the other.")
    var reassign = 1_000

    @Option(help: "Incremental pulls measured on each side.")
    var pulls = 50

    @Option(help: "Changes in the measured rep's scope before each incremental pull.")
    var inScope = 10

    @Option(help: "Changes outside the measured rep's scope before each incremental pull.")
    var outside = 100

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard reps >= 3, teams >= 1, accounts >= reps, perAccount >= 0, pulls > 0, inScope > 0, outside >= 0 else {
            throw ValidationError("need reps >= 3, accounts >= reps, teams, pulls and in-scope changes positive")
        }
        guard reassign > 0, reassign <= accounts / reps else {
            throw ValidationError("--reassign must be between 1 and the accounts of one rep (\(accounts / reps))")
        }
        guard inScope <= (accounts / reps) * max(perAccount, 1) else { throw ValidationError("--in-scope exceeds the rep's records") }
    }

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "scopes")
        let data = dir.path("server")
        let (main, floorTenant) = ("scopes", "floor")
        let setupStart = ContinuousClock.now

        // Two admin devices per tenant: one that reads (measured or warming up), one that writes.
        let admins = try ServerProcess.prepare(data: data, tenants: [main, floorTenant], devicesPerTenant: 2, schema: CRMSchema.current)
        // Reps 0 and 1 are measured: each alone in a team of their own, so that their read level
        // `team` reaches only their own accounts (about accounts/reps of them). The others share
        // `teams` teams.
        let repEmails = (0..<reps).map { "rep\($0)@\(main).example" }
        let registry = try DataDirectory(data).openRegistry()
        var repDevices: [DeviceCredential] = []
        for (index, email) in repEmails.enumerated() {
            let team = index < 2 ? "solo-\(index)" : "team-\(index % teams)"
            try registry.addUser(tenant: main, email: email, name: "Rep \(index)", role: .rep, team: team)
            if index < 2 {
                let ticket = try registry.issueEnrollmentCode(tenant: main, user: email)
                let enrollment = try registry.enroll(tenant: main, code: ticket.code, deviceName: "rep \(index) laptop")
                repDevices.append(DeviceCredential(tenant: main, deviceID: enrollment.device.id, secret: enrollment.secret))
            }
        }
        registry.close()

        // The tenant, written straight into the server's store in one transaction, opened with the
        // fields the server indexes so that it does not rebuild the index at its first session.
        let tenant = ScopesTenant(accounts: accounts, perAccount: perAccount, reps: repEmails)
        try tenant.write(to: data + "/tenants/\(main).sqlite", accounts: Array(0..<accounts))
        // The floor tenant: only rep 0's accounts and what hangs off them, the same records.
        let repAccounts = tenant.accounts(of: 0)
        try tenant.write(to: data + "/tenants/\(floorTenant).sqlite", accounts: repAccounts)
        let scopeRecords = repAccounts.count * (1 + 2 * perAccount)
        let totalRecords = accounts * (1 + 2 * perAccount)
        report.line("setup", [
            "accounts": accounts, "contacts_per_account": perAccount, "opportunities_per_account": perAccount,
            "records": totalRecords, "reps": reps, "teams": teams, "rep_scope_records": scopeRecords,
            "seconds": seconds(ContinuousClock.now - setupStart),
            "note": "the measured reps (rep0, rep1) are each alone in a team of their own, so the rep role's read level 'team' reaches only their own accounts; the other reps share \(teams) teams; the floor tenant holds only rep0's records and is read by an admin device",
        ])

        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data)
        defer { server.stop() }
        try FileManager.default.createDirectory(atPath: dir.path("devices"), withIntermediateDirectories: true)
        let device = { (credential: DeviceCredential, name: String) throws -> RapportClient in
            try benchDevice(credential, store: dir.path("devices/\(name).sqlite"), port: server.port, data: data)
        }
        let floorWriter = try device(admins[floorTenant]![0], "floor-writer")
        let floorReader = try device(admins[floorTenant]![1], "floor-reader")
        let admin = try device(admins[main]![0], "admin")
        let repA = try device(repDevices[0], "rep0"), repB = try device(repDevices[1], "rep1")

        // 1. Initial syncs. The floor tenant is opened first by its writer's sync, the main
        //    tenant by rep1's, so that neither measured sync opens a store.
        func timedSync(_ client: RapportClient, expecting count: Int, _ what: String) async throws -> Double {
            let start = ContinuousClock.now
            let result = try await client.sync()
            let elapsed = seconds(ContinuousClock.now - start)
            guard result.pulled >= count else { throw ValidationError("\(what): pulled \(result.pulled) of \(count) records") }
            return elapsed
        }
        _ = try await timedSync(floorWriter, expecting: scopeRecords, "floor writer")
        let floorSeconds = try await timedSync(floorReader, expecting: scopeRecords, "floor reader")
        let repBSeconds = try await timedSync(repB, expecting: scopeRecords, "rep1")
        let repASeconds = try await timedSync(repA, expecting: scopeRecords, "rep0")
        let heldA = try holdings(repA)
        guard heldA == tenant.expected(accounts: repAccounts.count) else {
            throw ValidationError("rep0 holds \(heldA) after its initial sync, not its scope")
        }
        report.line("initial_sync_rep_scope", [
            "tenant_records": totalRecords, "scope_records": scopeRecords, "seconds": repASeconds,
            "floor_seconds": floorSeconds, "ratio_to_floor": repASeconds / floorSeconds, "target_ratio": 1.5,
            "second_rep_seconds": repBSeconds,
            "floor": "initial sync of an admin device of a tenant holding only the rep's \(scopeRecords) records",
        ])
        let adminSeconds = try await timedSync(admin, expecting: totalRecords, "admin")
        report.line("initial_sync_admin_whole_tenant", [
            "records": totalRecords, "seconds": adminSeconds, "records_per_second": Double(totalRecords) / adminSeconds,
        ])

        // 2. Server CPU per incremental pull. Each round an admin changes `inScope` contacts of
        //    rep0's accounts and `outside` contacts of other reps' (in the floor tenant: the same
        //    `inScope` contacts, which is all of it there), then the reader pulls them.
        func cpu(_ body: () async throws -> Void) async throws -> Double {
            let before = server.cpuSeconds()
            try await body()
            return server.cpuSeconds() - before
        }
        // The session's own cost (TLS handshake, Hello, an empty pull), to read the pull's apart.
        var idleCPU = 0.0
        for _ in 0..<pulls { idleCPU += try await cpu { _ = try await repA.sync() } }
        var scopedCPU = 0.0, floorCPU = 0.0
        let inScopeRecords = tenant.inScopeChildren(repAccounts, count: inScope)
        let outsideRecords = tenant.outsideChildren(count: outside)
        for round in 0..<pulls {
            let title = FieldValue.text("round \(round)")
            try admin.store.performSync { store in
                try store.transaction { for id in inScopeRecords + outsideRecords { _ = try store.update(id, ["title": title]) } }
            }
            try await admin.sync()
            scopedCPU += try await cpu {
                let result = try await repA.sync()
                guard result.pulled == inScope else { throw ValidationError("rep0 pulled \(result.pulled) changes, not \(inScope)") }
            }
            try floorWriter.store.performSync { store in
                try store.transaction { for id in inScopeRecords { _ = try store.update(id, ["title": title]) } }
            }
            try await floorWriter.sync()
            floorCPU += try await cpu {
                let result = try await floorReader.sync()
                guard result.pulled == inScope else { throw ValidationError("floor reader pulled \(result.pulled) changes, not \(inScope)") }
            }
        }
        let pulls = self.pulls
        func perPull(_ total: Double) -> Double { total * 1000 / Double(pulls) }
        report.line("incremental_pull_server_cpu", [
            "pulls": pulls, "changes_in_scope": inScope, "changes_outside_scope": outside,
            "scoped_cpu_ms_per_sync": perPull(scopedCPU), "floor_cpu_ms_per_sync": perPull(floorCPU),
            "ratio_to_floor": scopedCPU / max(floorCPU, 0.001),
            "empty_sync_cpu_ms": perPull(idleCPU),
            "scoped_cpu_ms_per_pull_net": perPull(max(scopedCPU - idleCPU, 0)), "floor_cpu_ms_per_pull_net": perPull(max(floorCPU - idleCPU, 0)),
            "ratio_net": max(scopedCPU - idleCPU, 0) / max(floorCPU - idleCPU, 0.001),
            "note": "each sync is a new TLS session; empty_sync_cpu_ms is the server CPU of a sync with nothing to pull, subtracted for the net figures; /proc CPU time has 10 ms ticks",
        ])

        // 3. Reassignment: the admin gives `reassign` of rep0's accounts to rep1 in one
        //    transaction; timed from the admin's push until both reps' syncs have finished.
        let moved = Array(repAccounts.prefix(reassign))
        let newOwner = FieldValue.text(repEmails[1])
        // The opportunities carry their owner too (a record is the closer of its own standing and
        // its account's), so they are given away with their accounts; the contacts follow.
        let ownedRecords = moved.flatMap { index in [tenant.accountID(index)] + (0..<perAccount).map { tenant.opportunityID(index, $0) } }
        try admin.store.performSync { store in
            try store.transaction { for id in ownedRecords { _ = try store.update(id, ["owner": newOwner]) } }
        }
        let start = ContinuousClock.now
        let pushed = try await admin.sync()
        let pushSeconds = seconds(ContinuousClock.now - start)
        guard pushed.pushed == ownedRecords.count, pushed.rejected == 0 else {
            throw ValidationError("the admin pushed \(pushed.pushed) of \(ownedRecords.count) records, \(pushed.rejected) refused")
        }
        async let syncA = repA.sync()
        async let syncB = repB.sync()
        let (reportA, reportB) = try await (syncA, syncB)
        let totalSeconds = seconds(ContinuousClock.now - start)
        let movedRecords = reassign * (1 + 2 * perAccount)
        let expectedA = tenant.expected(accounts: repAccounts.count - reassign)
        let expectedB = tenant.expected(accounts: tenant.accounts(of: 1).count + reassign)
        let (nowA, nowB) = (try holdings(repA), try holdings(repB))
        guard nowA == expectedA, nowB == expectedB else {
            throw ValidationError("after the reassignment rep0 holds \(nowA) (expected \(expectedA)), rep1 \(nowB) (expected \(expectedB))")
        }
        // The records moved, at the floor tenant's initial-sync rate: what receiving them costs anyway.
        let floorEstimate = Double(movedRecords) * floorSeconds / Double(scopeRecords)
        report.line("reassign_accounts", [
            "accounts": reassign, "records_pushed": ownedRecords.count, "records_moved": movedRecords, "seconds": totalSeconds, "admin_push_seconds": pushSeconds,
            "reps_sync_seconds": totalSeconds - pushSeconds, "rep_losing_pulled": reportA.pulled, "rep_gaining_pulled": reportB.pulled,
            "floor_estimate_seconds": floorEstimate, "ratio_to_floor_estimate": totalSeconds / floorEstimate,
            "floor": "the records moved at the rate of the floor tenant's initial sync in this run",
        ])
    }

    /// How many accounts, contacts and opportunities a device holds.
    func holdings(_ client: RapportClient) throws -> [Int] {
        try client.store.performSync { store in try ["account", "contact", "opportunity"].map { try store.count(ofType: $0) } }
    }
}

/// The benchmark's tenant: account i belongs to rep i % reps; each account has `perAccount`
/// contacts and opportunities. Ids are fixed by index, so the floor tenant holds the same records.
struct ScopesTenant {
    let accounts: Int
    let perAccount: Int
    let reps: [String]
    private let ids: [UUID]

    init(accounts: Int, perAccount: Int, reps: [String]) {
        self.accounts = accounts
        self.perAccount = perAccount
        self.reps = reps
        ids = (0..<accounts * (1 + 2 * perAccount)).map { _ in UUID() }
    }

    func accountID(_ index: Int) -> UUID { ids[index] }
    func contactID(_ index: Int, _ k: Int) -> UUID { ids[accounts + index * perAccount + k] }
    func opportunityID(_ index: Int, _ k: Int) -> UUID { ids[accounts * (1 + perAccount) + index * perAccount + k] }

    func accounts(of rep: Int) -> [Int] { Array(stride(from: rep, to: accounts, by: reps.count)) }

    /// Accounts, contacts, opportunities a rep's device holds with `count` accounts.
    func expected(accounts count: Int) -> [Int] { [count, count * perAccount, count * perAccount] }

    /// Contacts (else accounts) of the rep's accounts, `count` of them.
    func inScopeChildren(_ repAccounts: [Int], count: Int) -> [UUID] {
        let all = perAccount > 0 ? repAccounts.flatMap { a in (0..<perAccount).map { contactID(a, $0) } } : repAccounts.map(accountID)
        return Array(all.prefix(count))
    }

    /// Contacts (else accounts) of reps 2 and on, outside both measured reps' scopes.
    func outsideChildren(count: Int) -> [UUID] {
        let others = (0..<accounts).lazy.filter { $0 % reps.count >= 2 }.prefix(count)
        return Array(others.map { perAccount > 0 ? contactID($0, 0) : accountID($0) })
    }

    /// Writes the accounts at `indexes` and what hangs off them into a tenant store, in one
    /// transaction.
    func write(to path: String, accounts indexes: [Int]) throws {
        let store = try ReplicaStore(path: path, options: .benchTenantLoad)
        defer { store.close() }
        let industries = ["Software", "Retail", "Manufacturing", "Finance", "Health", "Logistics"]
        try store.transaction {
            for i in indexes {
                let owner = FieldValue.text(reps[i % reps.count])
                let account = accountID(i).uuidString
                _ = try store.create("account", id: accountID(i), [
                    "name": .text("Account \(i) Holdings"), "industry": .text(industries[i % industries.count]),
                    "size": .text(CRMSchema.companySizes[i % CRMSchema.companySizes.count]), "region": .text("region \(i % 9)"),
                    "phone": .text("+1 555 \(1_000_000 + i)"), "website": .text("https://account\(i).example"),
                    "owner": owner, "tier": .text(CRMSchema.tiers[i % CRMSchema.tiers.count]),
                    "annual_revenue": .real(Double(i % 997) * 10_000),
                ])
                for k in 0..<perAccount {
                    _ = try store.create("contact", id: contactID(i, k), [
                        "first_name": .text("Ada\(k)"), "last_name": .text("Contact \(i)"), "title": .text("Buyer"),
                        "email": .text("contact\(i).\(k)@account\(i).example"), "phone": .text("+1 555 \(2_000_000 + i)"),
                        "account": .text(account),
                    ])
                    _ = try store.create("opportunity", id: opportunityID(i, k), [
                        "name": .text("Deal \(k) with account \(i)"), "account": .text(account), "stage": .text("prospecting"),
                        "amount": .real(Double(i % 101) * 1_000), "currency": .text("EUR"), "owner": owner,
                    ])
                }
            }
        }
    }
}
