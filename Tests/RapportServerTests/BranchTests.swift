import CRM
import Foundation
import RapportClient
import ReplicaStore
import SyncModel
import SyncProtocol
import TestScheduling
import TestSupport
import Testing

/// Branch offices (`rapportd --upstream`) as processes: a centre, branches replicating its
/// tenant, and `rapport` devices enrolled through them, over real TLS on loopback. What a
/// device writes at a branch reaches the centre and the other offices, whatever the link did in
/// between; what the centre decides (rights, revocations, a restore) reaches the branch's
/// devices. Waits poll with a deadline; no assertion depends on how fast anything is.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct BranchTests {
    static let nina = "nina@acme.example"
    static let nick = "nick@acme.example"
    static let reps: [(email: String, role: String, team: String?)] = [(nina, "rep", "north"), (nick, "rep", "north")]

    /// A record written on a device at the branch reaches a device at the centre, the centre's
    /// edit comes back to it, and after the round trip every replica holds the record with the
    /// same bytes (vector and state), once, with no conflict anywhere.
    @Test func writesRelayBothWaysAndEndIdenticalEverywhere() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let anna = try net.enroll("anna-laptop", user: BranchTopology.admin, at: nil)

        let account = try nina.create("account", ["name=Fjord Freight", "owner=\(Self.nina)", "phone=+47 10000"])
        let pushed = try nina.synced()
        #expect(pushed["pushed"] == 1 && pushed["rejected"] == 0, "\(pushed)")
        let atCentre = try await waitFor("the account written at the branch to reach a device at the centre", describe: net.logs) {
            try anna.synced()
            return try anna.fields(of: account)
        }
        #expect(atCentre["name"] as? String == "Fjord Freight")
        #expect(atCentre["phone"] as? String == "+47 10000")

        // The centre's side edits it and adds a contact to it; both reach the device at the branch.
        try anna.update("account", account, ["phone=+47 20000", "industry=Logistics"])
        let contact = try anna.create("contact", ["last_name=Solberg", "account=\(account.uuidString.lowercased())"])
        #expect(try anna.synced()["rejected"] == 0)
        try await waitFor("the centre's edit and contact to reach the device at the branch", describe: net.logs) {
            try nina.synced()
            return try nina.fields(of: account)?["phone"] as? String == "+47 20000" && nina.fields(of: contact) != nil ? true : nil
        }
        #expect(try nina.fields(of: account)?["industry"] as? String == "Logistics")

        // Nothing more to exchange: every replica holds what the centre holds.
        try await net.settle()
        try nina.synced()
        try anna.synced()
        let centre = try net.centreContents()
        let holders: [(String, StoreContents)] = [
            ("nina's device", try net.contents(of: nina)), ("the branch", try net.contents(of: north)),
            ("the centre", centre), ("anna's device", try net.contents(of: anna)),
        ]
        let reference = try #require(centre.records[account])
        let state = try #require(centre.states[account])
        let (ninas, annas) = (try ReplicaID(nina.id), try ReplicaID(anna.id))
        #expect(state.vector[ninas] > 0 && state.vector[annas] > 0,
                "the centre's copy carries both devices' writes: \(state.vector.sortedEntries)")
        for (name, held) in holders {
            #expect(held.records[account] == reference, "\(name) holds the account byte for byte as the centre does")
            #expect(held.records[contact] == centre.records[contact], "\(name) holds the contact as the centre does")
            #expect(held.live("account", where: "name", is: "Fjord Freight").count == 1, "\(name) holds the account once")
            #expect(held.liveCount("account") == 1 && held.liveCount("contact") == 1, "\(name): nothing duplicated")
            #expect(held.conflicts.isEmpty, "\(name) logged no conflict: \(held.conflicts)")
        }
        #expect(try nina.conflicts().isEmpty && anna.conflicts().isEmpty)
    }

    /// The centre crashes: the branch keeps taking its devices' writes and says in its stats that
    /// the link is down with changes waiting; once the centre is back, everything reaches it.
    @Test func aBranchServesItsDevicesWhileTheCentreIsDownAndCatchesUpAfter() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let nick = try net.enroll("nick-phone", user: Self.nick, at: north)
        let anna = try net.enroll("anna-laptop", user: BranchTopology.admin, at: nil)
        try nina.synced()
        try await net.settle()

        net.stopCentre(kill: true)
        var written: [UUID] = []
        for index in 0..<3 { written.append(try nina.create("account", ["name=Offline \(index)", "owner=\(Self.nina)"])) }
        let report = try nina.synced()
        #expect(report["pushed"] == 3 && report["rejected"] == 0, "the branch takes the writes with the centre down: \(report)")
        try nick.synced()
        for id in written { #expect(try nick.fields(of: id) != nil, "a colleague at the branch gets them with the centre down") }

        let down = try await waitFor("the branch to report its link down with the writes waiting", describe: { net.describe(north) }) {
            let link = try net.link(north)
            return link["connected"] as? Bool == false && (link["waiting"] as? Int ?? 0) >= 3 ? link : nil
        }
        #expect((down["last_error"] as? String)?.isEmpty == false, "\(down)")
        let text = try north.ctl.ok(["stats", BranchTopology.tenant]).output
        #expect(text.contains("upstream link to 127.0.0.1:\(net.centrePort): not connected since"), "\(text)")
        #expect(text.contains("changes waiting to go up: \(down["waiting"] as? Int ?? -1)"), "\(text)")
        #expect(try net.count("account") == 0, "the centre has none of it yet")

        try net.startCentre()
        try await net.settle(within: .seconds(60))
        #expect(try net.link(north)["waiting"] as? Int == 0)
        let centre = try net.centreContents()
        let branch = try net.contents(of: north)
        for id in written {
            #expect(centre.records[id] != nil && centre.records[id] == branch.records[id], "every write reached the centre as the branch holds it")
        }
        #expect(centre.liveCount("account") == 3)
        try anna.synced()
        for id in written { #expect(try anna.fields(of: id) != nil, "a device at the centre gets them") }
        #expect(centre.conflicts.isEmpty && branch.conflicts.isEmpty)
    }

    /// A device revoked at the centre loses its live session at the branch and is refused at its
    /// next one, once the branch has the centre's directory; other devices carry on.
    @Test func aDeviceRevokedAtTheCentreIsRefusedAtTheBranch() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let nick = try net.enroll("nick-phone", user: Self.nick, at: north)
        try nina.synced()

        // A tablet of nina's in a live session at the branch (the library an app embeds).
        let ticket = try net.ctl.ok(["device", "enroll", "--tenant", BranchTopology.tenant, "--user", Self.nina, "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String)
        var config = ClientConfiguration(host: "127.0.0.1", port: north.port, tenant: BranchTopology.tenant, secret: [],
                                         trustRoots: .certificates(.file(north.ca)), schemaVersion: CRMSchema.version)
        let enrollment = try await RapportClient.enroll(configuration: config, code: code, deviceName: "nina-tablet")
        config.secret = enrollment.secret
        let store = try ReplicaStore(path: net.dir.path("nina-tablet.sqlite"), options: .crm(replicaID: try ReplicaID(enrollment.deviceID)))
        let tablet = try RapportClient(store: SharedReplicaStore(store, label: "nina-tablet"), configuration: config,
                                       logger: ServerFixture.logger("test.nina-tablet"))
        let live = tablet.live()
        var events = live.events.makeAsyncIterator()
        guard case .connected? = await events.next(), case .synced? = await events.next() else {
            Issue.record("the tablet's live session at the branch did not start")
            return
        }

        try net.ctl.ok(["device", "revoke", enrollment.deviceID, "--tenant", BranchTopology.tenant])
        try net.ctl.ok(["device", "revoke", nina.id, "--tenant", BranchTopology.tenant])
        let ended = await within(.seconds(20)) { await endOfLiveSession(live) }
        #expect(ended == .deviceRevoked, "the live session at the branch ends with DEVICE_REVOKED")
        await live.stop()

        let refused = try await waitFor("the revoked phone to be refused at the branch", describe: net.logs) {
            let result = try nina.sync()
            return result.status == 4 ? result : nil
        }
        #expect(refused.error.contains("revoked"), "\(refused.error)")
        _ = try nick.create("account", ["name=Still here", "owner=\(Self.nick)"])
        #expect(try nick.synced()["rejected"] == 0, "another device of the branch syncs as before")
    }

    /// With the link down, a rep edits at the branch an account of hers; meanwhile the centre
    /// takes away reps' right to write accounts. When the link comes back the centre refuses the
    /// relayed write: the branch puts the centre's value back, and the rep's device, at its next
    /// sync, holds that value and a `rejected` conflict with the centre's reason.
    @Test func aWriteTheCentreRefusesIsPutBackAndTheDeviceHearsWhy() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let anna = try net.enroll("anna-laptop", user: BranchTopology.admin, at: nil)
        let account = try anna.create("account", ["name=Nordlys AS", "owner=\(Self.nina)", "phone=+47 11111"])
        try anna.synced()
        try await waitFor("the account to reach nina's device at the branch", describe: net.logs) {
            try nina.synced()
            return try nina.fields(of: account)
        }
        try await net.settle()

        net.stopCentre()
        try nina.update("account", account, ["phone=+47 99999"])
        let accepted = try nina.synced()
        #expect(accepted["pushed"] == 1 && accepted["rejected"] == 0, "the branch takes it by the rights it knows: \(accepted)")
        try net.ctl.ok(["role", "set", "rep", "--tenant", BranchTopology.tenant, "account",
                        "--write", "none", "--delete", "none", "--no-create"])
        try net.startCentre()
        try await waitFor("the branch to put the centre's value back", within: .seconds(60), describe: { net.describe(north) }) {
            try net.contents(of: north).states[account]?.values["phone"] == .text("+47 11111") ? true : nil
        }
        // Settled: the write that put the value back was taken by the centre, not refused again.
        try await net.settle()
        let branch = try net.contents(of: north)
        let centre = try net.centreContents()
        #expect(branch.records[account] == centre.records[account], "the branch and the centre hold the same record again")
        #expect(centre.states[account]?.values["phone"] == .text("+47 11111"), "the refused value never reached the centre")
        let atBranch = branch.conflicts.filter { $0.conflict.recordID == account && $0.conflict.kind == .rejected }
        #expect(atBranch.count == 1, "the branch logged the refusal: \(atBranch.map { "\($0.conflict) \($0.reason ?? "-") \($0.status)" })")

        try await waitFor("nina's device to hold the centre's value again", describe: net.logs) {
            try nina.synced()
            return try nina.fields(of: account)?["phone"] as? String == "+47 11111" ? true : nil
        }
        let refusals = try nina.conflicts().filter { $0["kind"] as? String == "rejected" }
        #expect(refusals.count == 1, "\(refusals)")
        let refusal = try #require(refusals.first)
        #expect(refusal["record"] as? String == account.uuidString.lowercased())
        #expect(refusal["field"] as? String == "phone")
        #expect((refusal["loser"] as? [String: Any])?["value"] as? String == "+47 99999", "what nina wrote lost: \(refusal)")
        #expect((refusal["loser"] as? [String: Any])?["replica"] as? String == nina.id)
        #expect((refusal["winner"] as? [String: Any])?["value"] as? String == "+47 11111", "\(refusal)")
        #expect(refusal["status"] as? String == "open")
        let reason = refusal["reason"] as? String ?? ""
        #expect(reason.hasSuffix("reps may not change accounts"), "the centre's reason reaches the device: '\(reason)'")

        // Kept once, through further syncs; the centre's side never saw nina's value.
        try nina.synced()
        #expect(try nina.conflicts().filter { $0["kind"] as? String == "rejected" }.count == 1)
        try anna.synced()
        #expect(try anna.fields(of: account)?["phone"] as? String == "+47 11111")
    }

    /// The same refusal when the centre gives the account to another rep while the rep's edit
    /// waits at the branch (the branch is down while the admin reassigns it, and starts again
    /// from the credential it kept): to a colleague of her team, whose account she still sees,
    /// and to a rep of another team, whose account leaves her device.
    @Test func anEditOfAnAccountReassignedMeanwhileIsRefusedAndTheDeviceHearsWhy() async throws {
        let net = try BranchTopology(users: Self.reps + [("sam@acme.example", "rep", "south")])
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let anna = try net.enroll("anna-laptop", user: BranchTopology.admin, at: nil)
        let toNick = try anna.create("account", ["name=Stays In Team", "owner=\(Self.nina)", "phone=+47 11111"])
        let toSam = try anna.create("account", ["name=Leaves Team", "owner=\(Self.nina)", "phone=+47 22222"])
        try anna.synced()
        try await waitFor("the accounts to reach nina's device at the branch", describe: net.logs) {
            try nina.synced()
            return try nina.fields(of: toNick) != nil && nina.fields(of: toSam) != nil ? true : nil
        }
        try await net.settle()

        net.stopCentre()
        try nina.update("account", toNick, ["phone=+47 99999"])
        try nina.update("account", toSam, ["phone=+47 88888"])
        #expect(try nina.synced()["rejected"] == 0)
        net.stop(north)
        try net.startCentre()
        try anna.update("account", toNick, ["owner=\(Self.nick)"])
        try anna.update("account", toSam, ["owner=sam@acme.example"])
        #expect(try anna.synced()["rejected"] == 0)
        try net.start(north)

        try await waitFor("the branch to put the centre's values back", within: .seconds(60), describe: { net.describe(north) }) {
            let branch = try net.contents(of: north)
            return branch.states[toNick]?.values["phone"] == .text("+47 11111") && branch.states[toSam]?.values["phone"] == .text("+47 22222")
                ? true : nil
        }
        try await net.settle()
        let report = try nina.synced()
        #expect(report["evicted"] == 1, "sam's account leaves nina's device: \(report)")
        #expect(try nina.fields(of: toSam) == nil)
        let kept = try #require(try nina.fields(of: toNick), "nick's account stays: nina reads her team's")
        #expect(kept["owner"] as? String == Self.nick)
        #expect(kept["phone"] as? String == "+47 11111", "the centre's value is back on nina's device")

        let refusals = Dictionary(grouping: try nina.conflicts().filter { $0["kind"] as? String == "rejected" }) { $0["record"] as? String ?? "" }
        #expect(refusals.count == 2, "\(refusals)")
        for (id, mine, theirs) in [(toNick, "+47 99999", "+47 11111" as String?), (toSam, "+47 88888", nil)] {
            let entries = refusals[id.uuidString.lowercased()] ?? []
            #expect(entries.count == 1, "one refusal of nina's edit of \(id) in her log: \(entries)")
            guard let refusal = entries.first else { continue }
            #expect(refusal["field"] as? String == "phone")
            #expect((refusal["loser"] as? [String: Any])?["value"] as? String == mine)
            // The centre's value of an account nina may no longer read is not sent to her.
            #expect((refusal["winner"] as? [String: Any])?["value"] as? String == theirs, "\(refusal)")
            #expect((refusal["reason"] as? String)?.contains("reps may not change an account they do not own") == true, "\(refusal)")
        }
        let centre = try net.centreContents()
        #expect(centre.states[toNick]?.values["phone"] == .text("+47 11111") && centre.states[toSam]?.values["phone"] == .text("+47 22222"),
                "neither refused value reached the centre")
    }

    /// A device enrolled at one branch syncs at another later (a rep moving office): what it
    /// wrote is neither lost nor duplicated, and what it writes there reaches the first branch's
    /// devices.
    @Test func aDeviceMovingToAnotherBranchLosesAndDuplicatesNothing() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let south = try net.addBranch("south")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let nick = try net.enroll("nick-phone", user: Self.nick, at: north)

        let first = try nina.create("account", ["name=Moved One", "owner=\(Self.nina)"])
        let second = try nina.create("account", ["name=Moved Two", "owner=\(Self.nina)", "phone=+47 1000"])
        #expect(try nina.synced()["pushed"] == 2)
        try await net.settle()
        try await waitFor("south to hold what nina wrote at north", describe: net.logs) {
            try net.count("account", at: south) == 2 ? true : nil
        }

        // South learns of nina's device from the centre's directory (every 2 s).
        try await waitFor("south to know nina's device") {
            let devices = try south.ctl.ok(["device", "list", "--tenant", BranchTopology.tenant, "--json"]).json as? [[String: Any]]
            return devices?.contains { $0["id"] as? String == nina.id } == true ? true : nil
        }
        try net.move(nina, to: south)
        let moved = try nina.synced()
        #expect(moved["rejected"] == 0 && moved["conflicts"] == 0, "\(moved)")
        let held = try net.contents(of: nina)
        #expect(held.liveCount("account") == 2, "nothing duplicated on the device")
        #expect(try nina.conflicts().isEmpty)

        try nina.update("account", second, ["phone=+47 200000"])
        let third = try nina.create("account", ["name=Moved Three", "owner=\(Self.nina)"])
        #expect(try nina.synced()["rejected"] == 0)
        try await waitFor("nina's writes at south to reach nick's device at north", describe: net.logs) {
            try nick.synced()
            return try nick.fields(of: third) != nil && nick.fields(of: second)?["phone"] as? String == "+47 200000" ? true : nil
        }
        try await net.settle()
        try nina.synced()
        try nick.synced()
        let centre = try net.centreContents()
        let holders: [(String, StoreContents)] = [
            ("nina's device", try net.contents(of: nina)), ("south", try net.contents(of: south)), ("the centre", centre),
            ("north", try net.contents(of: north)), ("nick's device", try net.contents(of: nick)),
        ]
        for (name, contents) in holders {
            #expect(contents.liveCount("account") == 3, "\(name) holds three accounts")
            for id in [first, second, third] {
                #expect(contents.records[id] == centre.records[id], "\(name) holds \(id) as the centre does")
            }
            #expect(contents.conflicts.isEmpty, "\(name): \(contents.conflicts)")
        }
    }

    /// The centre is restored from a backup older than what the branch relayed: the branch sees
    /// the centre's new identity, pushes everything again, and the centre ends with every write.
    @Test func aCentreRestoredFromAnOldBackupGetsEveryWriteBackFromTheBranch() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let anna = try net.enroll("anna-laptop", user: BranchTopology.admin, at: nil)
        let early = try nina.create("account", ["name=Before Backup", "owner=\(Self.nina)"])
        try nina.synced()
        try await net.settle()
        try await waitFor("the first account at the centre") { try net.count("account") == 1 ? true : nil }
        try net.ctl.ok(["backup", BranchTopology.tenant, "--to", net.dir.path("acme.backup")])

        var later = [try nina.create("account", ["name=After Backup 1", "owner=\(Self.nina)"]),
                     try nina.create("account", ["name=After Backup 2", "owner=\(Self.nina)"])]
        try nina.update("account", early, ["phone=+47 3000"])
        try nina.synced()
        later.append(try anna.create("account", ["name=Centre After Backup", "owner=\(Self.nick)"]))
        try anna.synced()
        try await net.settle()
        #expect(try net.count("account") == 4)
        let before = try net.centreContents()

        net.stopCentre()
        try net.ctl.ok(["tenant", "suspend", BranchTopology.tenant])
        try net.ctl.ok(["restore", BranchTopology.tenant, "--from", net.dir.path("acme.backup")])
        try net.ctl.ok(["tenant", "resume", BranchTopology.tenant])
        #expect(try net.count("account") == 1, "the restored centre holds what the backup held")
        #expect(try net.centreContents().replicaID != before.replicaID, "a restored store has a new replica id")
        try net.startCentre()

        let restoredAt = try await waitFor("the branch to notice the restored centre", describe: net.logs) {
            try net.link(north)["centre_restored_at"] as? String
        }
        #expect(!restoredAt.isEmpty)
        let centre = try await waitFor("every write back at the centre", within: .seconds(60), describe: net.logs) {
            let centre = try net.centreContents()
            return centre.liveCount("account") == 4 && centre.states[early]?.values["phone"] == .text("+47 3000") ? centre : nil
        }
        try await net.settle()
        for id in [early] + later {
            #expect(centre.states[id] == before.states[id], "\(id) is back at the centre as it was before the restore")
        }
        #expect(centre.states[early]?.values["phone"] == .text("+47 3000"))
        let log = (try? String(contentsOfFile: net.dir.path("north-0.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("the centre has a new identity"), "the branch logs the restored centre")

        // The device at the centre pushes again what it holds, and nothing is refused.
        let report = try anna.synced()
        #expect(report["rejected"] == 0, "\(report)")
        #expect(try anna.conflicts().isEmpty)
        #expect(try net.centreContents().liveCount("account") == 4)
    }

    /// A branch restored from its own backup takes a new replica id: the centre records it
    /// (two replicas in `branch list`), and what the branch's devices wrote since the backup,
    /// pushed to it again, and what they write next reach the centre.
    @Test func aBranchRestoredFromABackupKeepsRelaying() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let early = try nina.create("account", ["name=Before Branch Backup", "owner=\(Self.nina)"])
        try nina.synced()
        try await net.settle()
        try north.ctl.ok(["backup", BranchTopology.tenant, "--to", net.dir.path("north.backup")])
        let later = try nina.create("account", ["name=After Branch Backup", "owner=\(Self.nina)"])
        try nina.synced()
        try await waitFor("both accounts at the centre", describe: { net.describe(north) }) {
            try net.count("account") == 2 ? true : nil
        }
        let formerID = try net.contents(of: north).replicaID

        net.stop(north)
        try north.ctl.ok(["tenant", "suspend", BranchTopology.tenant])
        try north.ctl.ok(["restore", BranchTopology.tenant, "--from", net.dir.path("north.backup")])
        try north.ctl.ok(["tenant", "resume", BranchTopology.tenant])
        #expect(try net.contents(of: north).replicaID != formerID, "a restored store has a new replica id")
        try net.start(north)

        let listed = try await waitFor("the centre to record the branch's new replica id", describe: { net.describe(north) }) {
            let branches = try net.ctl.ok(["branch", "list", "--tenant", BranchTopology.tenant, "--json"]).json as? [[String: Any]]
            let replicas = branches?.first { $0["id"] as? String == north.id }?["replicas"] as? [String]
            return replicas?.count == 2 ? replicas : nil
        }
        #expect(Set(listed).contains(formerID))
        let report = try nina.synced()
        #expect(report["rejected"] == 0, "\(report)")
        let third = try nina.create("account", ["name=After Branch Restore", "owner=\(Self.nina)"])
        #expect(try nina.synced()["rejected"] == 0)
        let centre = try await waitFor("every account at the centre", describe: { net.describe(north) }) {
            let centre = try net.centreContents()
            return centre.liveCount("account") == 3 ? centre : nil
        }
        try await net.settle()
        let branch = try net.contents(of: north)
        for id in [early, later, third] {
            #expect(centre.records[id] != nil && branch.records[id] == centre.records[id], "\(id) at the branch as at the centre")
        }
        #expect(branch.liveCount("account") == 3)
        #expect(try nina.conflicts().isEmpty && branch.conflicts.isEmpty && centre.conflicts.isEmpty)
    }

    /// A branch whose credential is revoked at the centre loses its link (the stats say why)
    /// and still serves its devices.
    @Test func aRevokedBranchLosesItsLinkAndStillServesItsDevices() async throws {
        let net = try BranchTopology(users: Self.reps)
        defer { net.stopAll() }
        let north = try net.addBranch("north")
        let nina = try net.enroll("nina-phone", user: Self.nina, at: north)
        let nick = try net.enroll("nick-phone", user: Self.nick, at: north)
        try nina.synced()
        try await net.settle()

        try net.ctl.ok(["branch", "revoke", north.id, "--tenant", BranchTopology.tenant])
        let down = try await waitFor("the revoked branch's link to go down", describe: { net.describe(north) }) {
            let link = try net.link(north)
            return link["connected"] as? Bool == false ? link : nil
        }
        let error = down["last_error"] as? String ?? ""
        #expect(error.contains("deviceRevoked") || error.contains("DEVICE_REVOKED"), "\(down)")
        #expect(error.contains("revoked"), "\(down)")

        let account = try nina.create("account", ["name=Written After Revocation", "owner=\(Self.nina)"])
        #expect(try nina.synced()["rejected"] == 0, "the branch still takes its devices' writes")
        try nick.synced()
        #expect(try nick.fields(of: account) != nil, "and serves them to its other devices")
        try await waitFor("the write to be waiting at the branch", describe: { net.describe(north) }) {
            try net.link(north)["waiting"] as? Int ?? 0 >= 1 ? true : nil
        }
        #expect(try net.link(north)["connected"] as? Bool == false)
        #expect(try net.count("account") == 0, "nothing reaches the centre from a revoked branch")
        let listed = try #require(try net.ctl.ok(["branch", "list", "--tenant", BranchTopology.tenant, "--json"]).json as? [[String: Any]])
        #expect(listed.first { $0["id"] as? String == north.id }?["status"] as? String == "revoked")
    }
}

/// `body`'s result, or `nil` when it takes longer than `limit` (a bound against hanging).
func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
