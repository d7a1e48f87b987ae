import CRM
import Foundation
import PrivateFiles
import TestScheduling
import TestSupport
import Testing

/// What a server and its tools write is readable by its owner only, whatever the umask, and the
/// development enrollment code never reaches a log: `rapportd`, `rapportctl` and `rapport` as
/// processes, which inherit the umask set here.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct OwnerOnlyFilesTests {
    /// Runs a `rapport` (device CLI) process.
    func rapport(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let result = try ToolProcess.run(ServerProcess.defaultBinary(named: "rapport"), arguments)
        return (result.status, result.output + result.error)
    }

    @Test(arguments: [mode_t(0o022), mode_t(0o000)])
    func everythingMadeForATenantIsOwnerOnly(mask: mode_t) async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data"), home = dir.path("devices/ana")
        try await FileModes.withUmask(mask) {
            let ctl = Ctl(data: data)
            // A fresh data directory: registry, dev tenant and its code, dev certificates.
            let server = try ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data)
            defer { server.stop() }
            let code = try String(contentsOfFile: data + "/dev-enrollment-code", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let initialized = try rapport(["init", "--home", home, "--server", "127.0.0.1:\(server.port)", "--tenant", "dev",
                                           "--enroll", code, "--ca", data + "/tls/ca.pem"])
            #expect(initialized.status == 0, "\(initialized.output)")
            #expect(try rapport(["put", "--home", home, "contact", "first_name=Ada", "last_name=Lovelace"]).status == 0)
            let synced = try rapport(["sync", "--home", home])
            #expect(synced.status == 0, "\(synced.output)")
            #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
            #expect(try ctl.run(["backup", "dev", "--to", dir.path("dev.backup")]).status == 0)
            #expect(try ctl.run(["export", "dev", "--to", dir.path("exports/dev")]).status == 0)
            #expect(try ctl.run(["export-csv", "dev", "--type", "contact", "--to", dir.path("contacts.csv")]).status == 0)

            // While the server runs, its stores and the registry have their -wal and -shm.
            let files = Set(PrivateFiles.entries(under: data).map { String($0.path.dropFirst(data.count)) })
            for expected in ["/registry.sqlite-wal", "/registry.sqlite-shm", "/tenants/dev.sqlite", "/tenants/dev.sqlite-wal",
                             "/tenants/dev.sqlite-shm", "/tenants/acme.sqlite", "/tls/ca.pem", "/tls/server-key.pem", "/dev-enrollment-code"] {
                #expect(files.contains(expected), "\(expected) in \(files.sorted())")
            }
            #expect(FileManager.default.fileExists(atPath: home + "/replica.sqlite"))
            for root in [data, dir.path("devices"), dir.path("dev.backup"), dir.path("exports"), dir.path("contacts.csv")] {
                #expect(FileModes.notOwnerOnly(under: root).isEmpty, "umask \(String(mask, radix: 8)): \(FileModes.notOwnerOnly(under: root))")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path("exports/dev")).contains("contact.jsonl"))
        }
    }

    /// Data directories made before files were owner-only are made so at start, with a warning
    /// (README, "Operating a server"): the server starts and serves.
    @Test func aServerOnALooseDataDirectoryMakesItOwnerOnlyAndSaysSo() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data")
        let ctl = Ctl(data: data)
        await #expect(try ctl.run(["tenant", "create", "acme"]).status == 0)
        for entry in PrivateFiles.entries(under: data) {
            #expect(chmod(entry.path, entry.isDirectory ? 0o755 : 0o644) == 0)
        }
        #expect(PrivateFiles.entries(under: data).allSatisfy { $0.isLoose })

        let log = dir.path("rapportd.log")
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data, logFile: log)
        await #expect(try ctl.run(["tenant", "show", "acme"]).status == 0)
        await server.stop()
        #expect(server.process.terminationStatus == 0)
        #expect(FileModes.notOwnerOnly(under: data).isEmpty, "\(FileModes.notOwnerOnly(under: data))")
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.contains("readable by other users; made owner-only"), "\(logged)")
        #expect(logged.contains(data + "/tenants/acme.sqlite (644)"), "\(logged)")
    }

    @Test func theDevelopmentEnrollmentCodeIsNeverLogged() async throws {
        let dir = try TemporaryDirectory()
        let data = dir.path("data"), log = dir.path("rapportd.log")
        let server = try await ServerProcess.start(binary: ServerProcess.defaultBinary(), data: data,
                                             arguments: ["--log-level", "trace"], logFile: log)
        let code = try String(contentsOfFile: data + "/dev-enrollment-code", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // Using the code makes the server log the enrollment too.
        let enrolled = try rapport(["init", "--home", dir.path("ana"), "--server", "127.0.0.1:\(server.port)", "--tenant", "dev",
                                    "--enroll", code, "--ca", data + "/tls/ca.pem"])
        #expect(enrolled.status == 0, "\(enrolled.output)")
        await server.stop()
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.contains("device enrolled"), "the log is written at trace level: \(logged.prefix(500))")
        let stdout = server.banner + server.remainingOutput()
        #expect(stdout.contains(data + "/dev-enrollment-code"), "the banner says where the code is: \(stdout)")
        for text in [logged, stdout] {
            #expect(!text.contains(code))
            #expect(!text.contains(code.replacingOccurrences(of: "-", with: "")))
        }
    }
}
