import Access
import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// The default roles as a sales organisation uses them: reps in two teams, a manager, an admin.
/// Each test writes records into a real store, then asks the policy what each person may do.
@Suite struct CRMAccessTests {
    let dir: TemporaryDirectory
    let store: ReplicaStore
    let north = ["nina@acme.example", "nick@acme.example", "mona@acme.example"]

    init() throws {
        dir = try TemporaryDirectory()
        store = try openCRMStore(dir, "server")
    }

    func policy(_ user: String, role: String, team: String?) throws -> AccessPolicy {
        let role = try #require(CRMAccess.defaultRoles.first { $0.name == role })
        let members: Set<String> = team == "north" ? Set(north) : team == "south" ? ["sam@acme.example", "sue@acme.example"] : []
        return AccessPolicy(model: CRMAccess.ownership, subject: AccessSubject(user: user, team: team, role: role, teamMembers: members))
    }

    var nina: AccessPolicy { get throws { try policy("nina@acme.example", role: "rep", team: "north") } }
    var nick: AccessPolicy { get throws { try policy("nick@acme.example", role: "rep", team: "north") } }
    var sam: AccessPolicy { get throws { try policy("sam@acme.example", role: "rep", team: "south") } }
    var mona: AccessPolicy { get throws { try policy("mona@acme.example", role: "manager", team: "north") } }
    var ada: AccessPolicy { get throws { try policy("ada@acme.example", role: "admin", team: nil) } }

    func lookup(_ id: UUID) throws -> RecordState? { try store.record(id) }

    /// The state `body` would leave, without keeping it: what a device's change looks like
    /// to the check.
    func proposed(_ body: (ReplicaStore) throws -> RecordState) throws -> RecordState {
        struct Undo: Error { var state: RecordState }
        do {
            try store.transaction { throw Undo(state: try body(store)) }
        } catch let undo as Undo {
            return undo.state
        }
        Issue.record("the change was kept")
        throw Undo(state: try body(store))
    }

    func denial(_ policy: AccessPolicy, before: RecordState?, after: RecordState) -> String? {
        do {
            try policy.checkWrite(before: before, after: after, lookup: lookup)
            return nil
        } catch let denied as AccessDenied {
            return denied.reason
        } catch {
            return "\(error)"
        }
    }

    @Test(.blocking) func repsSeeTheirTeamsAccountsAndWhatHangsOffThemButNotOtherTeams() throws {
        let ninas = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")])
        let sams = try store.create("account", ["name": .text("South plc"), "owner": .text("sam@acme.example")])
        let contact = try store.create("contact", ["last_name": .text("Lovelace"), "account": .text(ninas.id.uuidString)])
        let visit = try store.create("activity", ["kind": .text("visit"), "subject": .text("Demo"),
                                                  "account": .text(ninas.id.uuidString), "owner": .text("nina@acme.example")])
        #expect(try nick.mayRead(ninas, lookup: lookup))
        #expect(try nick.mayRead(contact, lookup: lookup), "a contact hangs off its account")
        #expect(try !nick.mayRead(visit, lookup: lookup), "reps see their own activities only")
        #expect(try nina.mayRead(visit, lookup: lookup))
        #expect(try !sam.mayRead(ninas, lookup: lookup))
        #expect(try !sam.mayRead(contact, lookup: lookup))
        #expect(try !nina.mayRead(sams, lookup: lookup))
        #expect(try mona.mayRead(visit, lookup: lookup), "a manager sees the team's everything")
        #expect(try !mona.mayRead(sams, lookup: lookup))
        #expect(try ada.mayRead(sams, lookup: lookup))
        let stage = try store.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(9), "probability": .integer(40)])
        #expect(try sam.mayRead(stage, lookup: lookup), "every device reads the tenant's configuration")
    }

    @Test(.blocking) func repsChangeWhatTheyOwnAndNothingOfAnotherTeam() throws {
        let ninas = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")])
        let renamed = try proposed { try $0.update(ninas.id, ["phone": .text("+44 20 7946 0000")]) }
        #expect(try denial(nina, before: ninas, after: renamed) == nil)
        #expect(try denial(nick, before: ninas, after: renamed) == "reps may not change an account they do not own")
        let reassigned = try proposed { try $0.update(ninas.id, ["owner": .text("sam@acme.example")]) }
        #expect(try denial(sam, before: ninas, after: reassigned) == "reps may not change the owner of an account they do not own")
        #expect(try denial(nina, before: ninas, after: reassigned)?.hasPrefix("reps may not give an account to an owner outside") == true)
        let deleted = try proposed { try $0.delete(ninas.id) }
        #expect(try denial(nina, before: ninas, after: deleted) == "reps may not delete or restore accounts")
        #expect(try denial(sam, before: ninas, after: deleted) == "reps may not change an account they do not own")
        #expect(try denial(mona, before: ninas, after: deleted) == nil, "a manager deletes the team's accounts")
        #expect(try denial(mona, before: ninas, after: reassigned)?.contains("outside") == true, "not into another team")
        #expect(try denial(ada, before: ninas, after: reassigned) == nil)
    }

    @Test(.blocking) func createsAreCheckedForTheRightAndForWhoWillOwnTheRecord() throws {
        let mine = try proposed { try $0.create("lead", ["last_name": .text("Turing"), "status": .text("new"), "owner": .text("nina@acme.example")]) }
        #expect(try denial(nina, before: nil, after: mine) == nil)
        let unowned = try proposed { try $0.create("lead", ["last_name": .text("Turing"), "status": .text("new")]) }
        #expect(try denial(nina, before: nil, after: unowned)?.hasPrefix("reps may create only leads they own") == true)
        #expect(try denial(ada, before: nil, after: unowned) == nil)
        let campaign = try proposed { try $0.create("campaign", ["name": .text("Spring")]) }
        #expect(try denial(mona, before: nil, after: campaign) == "managers may not create campaigns")
        let account = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")])
        let contact = try proposed { try $0.create("contact", ["last_name": .text("Hopper"), "account": .text(account.id.uuidString)]) }
        #expect(try denial(nina, before: nil, after: contact) == nil, "a contact of her account is hers to create")
        #expect(try denial(sam, before: nil, after: contact) != nil)
    }

    @Test(.blocking) func onlyAdminsWriteTheTenantsConfiguration() throws {
        let stage = try proposed { try $0.create("pipeline_stage", ["name": .text("Pilot"), "position": .integer(3), "probability": .integer(40)]) }
        #expect(try denial(nina, before: nil, after: stage) == "reps may not create pipeline_stages")
        #expect(try denial(mona, before: nil, after: stage) == "managers may not create pipeline_stages")
        #expect(try denial(ada, before: nil, after: stage) == nil)
        let setting = try store.create("setting", ["key": .text("churn_days"), "value": .text("90")])
        let changed = try proposed { try $0.update(setting.id, ["value": .text("banana")]) }
        #expect(try denial(nina, before: setting, after: changed) == "reps may not change settings")
        #expect(try denial(ada, before: setting, after: changed) == nil)
    }

    @Test(.blocking) func hiddenAndReadOnlyFieldsRefuseWrites() throws {
        let account = try store.create("account", ["name": .text("North Ltd"), "owner": .text("nina@acme.example")])
        let revenue = try proposed { try $0.update(account.id, ["annual_revenue": .real(1e6)]) }
        #expect(try denial(nina, before: account, after: revenue) == "reps may not write the field annual_revenue")
        var role = try nina.subject.role
        role.types["account"]?.readOnlyFields = ["tier"]
        let strict = AccessPolicy(model: CRMAccess.ownership, subject: AccessSubject(user: "nina@acme.example", team: "north", role: role, teamMembers: Set(north)))
        let tier = try proposed { try $0.update(account.id, ["tier": .text("gold")]) }
        #expect(denial(strict, before: account, after: tier) == "the field tier is read-only for reps")
    }

    @Test(.blocking) func rolesRoundTripThroughJSONWithDefaultsForWhatIsLeftOut() throws {
        let data = try JSONEncoder().encode(CRMAccess.defaultRoles)
        #expect(try JSONDecoder().decode([Role].self, from: data) == CRMAccess.defaultRoles)
        let short = try JSONDecoder().decode(TypeRights.self, from: Data(#"{"read": "team", "write": "all"}"#.utf8))
        #expect(short == TypeRights(read: .team, write: .team), "write never reaches further than read")
    }
}
