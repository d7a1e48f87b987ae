import Foundation
import TestScheduling
import TestSupport
import Testing

/// No secret reaches a server's log or standard output, at any level: a centre and a branch
/// `rapportd` at `--log-level trace` through enrollment (at the centre and passed on by the
/// branch), syncs, a used code offered again, a login with a wrong secret and the branch's
/// link; then every form of every secret used is looked for in what they wrote.
@Suite(.serialized, .ownThread) struct SecretLogTests {
    @Test func noSecretReachesAServersLogAtTraceLevel() async throws {
        let topology = try BranchTopology(serverArguments: ["--log-level", "trace", "--metrics", "127.0.0.1:0"])
        defer { topology.stopAll() }
        let branch = try topology.addBranch("lyon")
        let rapport = CLI(binary: topology.rapport)

        func code() throws -> String {
            let ticket = try topology.ctl.ok(["device", "enroll", "--tenant", BranchTopology.tenant, "--user", BranchTopology.admin, "--json"])
            return try #require((ticket.json as? [String: Any])?["code"] as? String, "\(ticket.output)")
        }
        func initialize(_ name: String, code: String, port: Int, ca: String) throws -> ToolResult {
            try rapport.run(["init", "--home", topology.dir.path(name), "--server", "127.0.0.1:\(port)", "--tenant", BranchTopology.tenant,
                             "--enroll", code, "--ca", ca, "--name", name])
        }
        let centrePort = try #require(topology.centre?.port)
        let codes = [try code(), try code()]
        #expect(try initialize("ana", code: codes[0], port: centrePort, ca: topology.centreCA).status == 0)
        #expect(try initialize("ben", code: codes[1], port: branch.port, ca: branch.ca).status == 0)
        // A used code offered again is refused, at the centre and through the branch.
        #expect(try initialize("eve", code: codes[0], port: centrePort, ca: topology.centreCA).status != 0)
        #expect(try initialize("eve2", code: codes[1], port: branch.port, ca: branch.ca).status != 0)
        // A valid code mistyped (its last character changed) is refused; neither form is logged.
        let spare = try code()
        let typo = String(spare.dropLast()) + (spare.last == "A" ? "B" : "A")
        #expect(try initialize("eve3", code: typo, port: centrePort, ca: topology.centreCA).status != 0)
        for home in ["ana", "ben"] {
            let device = CLI(binary: topology.rapport, fixed: ["--home", topology.dir.path(home)])
            _ = try await device.create("contact", ["first_name=\(home)", "last_name=Secretless"])
            await #expect(try device.run(["sync"]).status == 0)
        }
        // A wrong secret in a copy of ana's home: refused at login.
        let mallory = topology.dir.path("mallory")
        try FileManager.default.copyItem(atPath: topology.dir.path("ana"), toPath: mallory)
        let wrongSecret = String(repeating: "5a", count: 32)
        try wrongSecret.write(toFile: mallory + "/secret", atomically: true, encoding: .utf8)
        await #expect(try CLI(binary: topology.rapport, fixed: ["--home", mallory]).run(["sync"]).status != 0)
        try await topology.settle()

        // The branch's link as its metrics show it.
        let branchProcess = try #require(branch.process), centre = try #require(topology.centre)
        let link = try await MetricsClient(banner: branchProcess.banner).scrape()
        #expect(link["rapport_upstream_connected"] == 1)
        #expect(link["rapport_upstream_behind_changes"] == 0)
        #expect(link["rapport_upstream_waiting_changes"] == 0)
        #expect((link["rapport_upstream_last_sync_timestamp_seconds"] ?? 0) > 0)

        var secrets: [(what: String, text: String)] = []
        for (index, code) in (codes + [spare, typo]).enumerated() {
            secrets += [("enrollment code \(index)", code), ("enrollment code \(index) without dashes", code.replacingOccurrences(of: "-", with: ""))]
        }
        for home in ["ana", "ben"] {
            let hex = try String(contentsOfFile: topology.dir.path(home) + "/secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            secrets += [("\(home)'s device secret", hex), ("\(home)'s device secret, base64", Self.base64(hex: hex))]
        }
        secrets += [("the wrong secret", wrongSecret), ("the wrong secret, base64", Self.base64(hex: wrongSecret))]
        let credential = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: branch.credential))) as? [String: Any])
        let branchSecret = try #require(credential["secret"] as? String)
        let branchBytes = try #require(Data(base64Encoded: branchSecret))
        secrets += [("the branch secret", branchSecret), ("the branch secret, hex", branchBytes.map { String(format: "%02x", $0) }.joined())]
        for data in [topology.centreData, branch.data] {
            for file in try FileManager.default.contentsOfDirectory(atPath: data + "/tls") {
                let pem = try String(contentsOfFile: data + "/tls/" + file, encoding: .utf8)
                guard pem.contains("PRIVATE KEY") else { continue }
                for line in pem.split(separator: "\n") where !line.hasPrefix("-----") && line.count >= 16 {
                    secrets.append(("a line of \(file)", String(line)))
                }
            }
        }
        #expect(secrets.count > 12)

        topology.stopAll()
        let outputs = [centre, branchProcess].map { $0.banner + $0.remainingOutput() }
        let logs = try FileManager.default.contentsOfDirectory(atPath: topology.dir.url.path).filter { $0.hasSuffix(".log") }
            .map { try String(contentsOfFile: topology.dir.path($0), encoding: .utf8) }
        let written = (logs + outputs).joined(separator: "\n")
        #expect(written.contains("device enrolled") && written.contains("session refused") && written.contains("upstream link connected"),
                "the servers log at trace level: \(written.suffix(2000))")
        let leaked = secrets.filter { written.contains($0.text) }.map(\.what)
        #expect(leaked.isEmpty, "in a server's log or output: \(leaked.joined(separator: ", "))")
    }

    static func base64(hex: String) -> String {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex), index < hex.endIndex {
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return Data(bytes).base64EncodedString()
    }
}
