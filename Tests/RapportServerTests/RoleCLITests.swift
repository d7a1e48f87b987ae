import Access
import CRM
import Foundation
import ReplicaStore
import SyncModel
import TestScheduling
import TestSupport
import Testing

/// `rapportctl role` and `user set-team` as an operator runs them: a process on a data directory.
@Suite(.ownThread) struct RoleCLITests {
    let dir: TemporaryDirectory
    let ctl: Ctl

    init() throws {
        dir = try TemporaryDirectory()
        ctl = Ctl(data: dir.path("data"))
        guard try ctl.run(["tenant", "create", "acme"]).status == 0,
              try ctl.run(["user", "add", "--tenant", "acme", "--email", "anna@acme.example", "--name", "Anna"]).status == 0
        else { throw BenchError("cannot set up tenant acme") }
    }

    /// The role as `role show --json` prints it, decoded as the registry stores it.
    func shown(_ name: String) throws -> Role {
        let result = try ctl.run(["role", "show", name, "--tenant", "acme", "--json"])
        #expect(result.status == 0, "\(result.error)")
        return try JSONDecoder().decode(Role.self, from: Data(result.output.utf8))
    }

    func listed() throws -> [[String: Any]] {
        let result = try ctl.run(["role", "list", "--tenant", "acme", "--json"])
        #expect(result.status == 0, "\(result.error)")
        return try #require(result.json as? [[String: Any]], "\(result.output)")
    }

    func auditActions() throws -> [(action: String, result: String)] {
        let entries = try #require(try ctl.run(["audit", "--tenant", "acme", "--json"]).json as? [[String: Any]])
        return entries.map { ($0["action"] as? String ?? "", $0["result"] as? String ?? "") }
    }

    static let defaultRep = CRMAccess.defaultRoles.first { $0.name == "rep" }!

    @Test func aTenantStartsWithTheDefaultRoles() async throws {
        let roles = try listed()
        #expect(roles.compactMap { $0["name"] as? String } == ["admin", "manager", "rep"])
        #expect(roles.allSatisfy { $0["source"] as? String == "default" })
        let rep = try #require(roles.last?["types"] as? [String: [String: Any]])
        #expect(rep["account"]?["hidden_fields"] as? [String] == ["annual_revenue"])
        #expect(rep["lead"]?["read"] as? String == "own")
        #expect(try shown("rep") == Self.defaultRep)
        let text = try await ctl.run(["role", "list", "--tenant", "acme"])
        #expect(text.status == 0)
        #expect(text.output.contains("READ-ONLY") && text.output.contains("annual_revenue"), "\(text.output)")
    }

    @Test func setChangesOneTypeOfTheRoleAndResetGivesTheDefaultsBack() async throws {
        let set = try await ctl.run(["role", "set", "rep", "--tenant", "acme", "contact", "--read", "all", "--write", "team",
                               "--no-create", "--hide", "birthday", "mobile", "--read-only", "email", "--json", "--actor", "ops"])
        #expect(set.status == 0, "\(set.error)")
        var expected = Self.defaultRep
        expected.types["contact"] = TypeRights(read: .all, write: .team, create: false, delete: .own,
                                               hiddenFields: ["birthday", "mobile"], readOnlyFields: ["email"])
        #expect(try JSONDecoder().decode(Role.self, from: Data(set.output.utf8)) == expected)
        #expect(try shown("rep") == expected, "the other types keep their rights")
        #expect(try listed().map { $0["source"] as? String } == ["default", "default", "tenant"])

        // A second change starts from the tenant's definition, not from the defaults.
        await #expect(try ctl.run(["role", "set", "rep", "--tenant", "acme", "contact", "--show", "mobile", "--writable", "email"]).status == 0)
        expected.types["contact"]!.hiddenFields = ["birthday"]
        expected.types["contact"]!.readOnlyFields = []
        #expect(try shown("rep") == expected)

        let reset = try await ctl.run(["role", "reset", "rep", "--tenant", "acme"])
        #expect(reset.status == 0, "\(reset.error)")
        #expect(try shown("rep") == Self.defaultRep)
        #expect(try listed().allSatisfy { $0["source"] as? String == "default" })

        let actions = try auditActions().filter { $0.action.hasPrefix("role ") }
        #expect(actions.map(\.action) == ["role set", "role set", "role reset"])
        #expect(actions.allSatisfy { $0.result == "ok" })
        let entries = try await #require(try ctl.run(["audit", "--tenant", "acme", "--json"]).json as? [[String: Any]])
        let first = try #require(entries.first { $0["action"] as? String == "role set" })
        #expect(first["actor"] as? String == "ops")
        #expect((first["detail"] as? String)?.contains("rep contact read=all write=team no-create") == true, "\(first)")
    }

    @Test func unknownTypesFieldsLevelsAndRolesAreRefusedAndNothingIsStored() async throws {
        let refused: [([String], String)] = [
            (["role", "set", "rep", "--tenant", "acme", "widget", "--read", "all"], "no record type 'widget'"),
            (["role", "set", "rep", "--tenant", "acme", "contact", "--hide", "nickname"], "contact has no field 'nickname'"),
            (["role", "set", "rep", "--tenant", "acme", "contact", "--read-only", "email", "nickname"], "no field 'nickname'"),
            (["role", "set", "rep", "--tenant", "acme", "contact", "--read", "most"], "most"),
            (["role", "set", "rep", "--tenant", "acme", "contact", "--write", "all"], "write all is more than read team"),
            (["role", "set", "rep", "--tenant", "acme", "contact", "--hide", "email", "--show", "email"], "both --hide and --show"),
            (["role", "set", "rep", "--tenant", "acme", "contact"], "nothing to change"),
            (["role", "set", "boss", "--tenant", "acme", "contact", "--read", "all"], "no role 'boss'"),
            (["role", "show", "boss", "--tenant", "acme"], "no role 'boss'"),
            (["role", "reset", "boss", "--tenant", "acme"], "no role 'boss'"),
        ]
        for (arguments, message) in refused {
            let result = try await ctl.run(arguments)
            #expect(result.status == 1, "\(arguments): \(result.output)")
            #expect(result.error.contains(message), "\(arguments): \(result.error)")
        }
        #expect(try shown("rep") == Self.defaultRep)
        #expect(try listed().allSatisfy { $0["source"] as? String == "default" })
        #expect(try auditActions().allSatisfy { $0.action != "role set" || $0.result.hasPrefix("failed") })
        await #expect(try ctl.run(["role", "list", "--tenant", "globex"]).status == 2)
        await #expect(try ctl.run(["role", "set", "rep", "--tenant", "globex", "contact", "--read", "all"]).status == 2)
    }

    @Test func aUserMovesBetweenTeams() async throws {
        func team() throws -> Any? {
            let users = try #require(try ctl.run(["user", "list", "--tenant", "acme", "--json"]).json as? [[String: Any]])
            return users.first { $0["email"] as? String == "anna@acme.example" }?["team"]
        }
        let moved = try await ctl.run(["user", "set-team", "--tenant", "acme", "--email", "anna@acme.example", "--team", "north", "--json"])
        #expect(moved.status == 0, "\(moved.error)")
        #expect((moved.json as? [String: Any])?["team"] as? String == "north")
        #expect(try team() as? String == "north")
        await #expect(try ctl.run(["user", "list", "--tenant", "acme"]).output.contains("north"))

        await #expect(try ctl.run(["user", "set-team", "--tenant", "acme", "--email", "anna@acme.example", "--no-team"]).status == 0)
        #expect(try team() is NSNull)

        for arguments in [[], ["--team", "north", "--no-team"], ["--team", " "]] {
            let result = try await ctl.run(["user", "set-team", "--tenant", "acme", "--email", "anna@acme.example"] + arguments)
            #expect(result.status == 1, "\(arguments): \(result.error)")
        }
        await #expect(try ctl.run(["user", "set-team", "--tenant", "acme", "--email", "nobody@acme.example", "--team", "x"]).status == 2)
        #expect(try team() is NSNull)
        let actions = try auditActions().filter { $0.action == "user set-team" }
        #expect(actions.map(\.result).filter { $0 == "ok" }.count == 2)
    }

    /// A setting written before the store rules refused bad values: reports still run, with the
    /// default, and say which record to correct.
    @Test func aReportOverABadSettingUsesTheDefaultAndNamesTheSetting() async throws {
        let store = try ReplicaStore(path: dir.path("data") + "/tenants/acme.sqlite", options: .init(schema: CRMSchema.current))
        let bad = try store.create("setting", ["key": .text("churn.inactivity_days"), "value": .text("soon")]).id
        store.close()

        let json = try await ctl.run(["report", "churn-risk", "acme", "--json"])
        #expect(json.status == 0, "\(json.error)")
        #expect(json.json is [Any], "the JSON keeps its shape: \(json.output)")
        for result in await [json, try ctl.run(["report", "pipeline", "acme"])] {
            #expect(result.error.contains("warning: setting 'churn.inactivity_days' (record \(bad.uuidString.lowercased())) is 'soon'"),
                    "\(result.error)")
            #expect(result.error.contains("expected a whole number of days above 0"))
        }
    }
}
