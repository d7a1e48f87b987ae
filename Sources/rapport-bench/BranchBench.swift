import ArgumentParser
import CRM
import Foundation
import PrivateFiles
import RapportClient
import Registry
import ReplicaStore
import SQLite
import SyncModel
import TestSupport

/// Branch offices (`rapportd --upstream`) against a centre, all `rapportd` child processes: a
/// fresh branch catching up on a tenant of N accounts next to a device's initial sync of the
/// same tenant from the centre; the same catch-up stopped half way and started again; and the
/// latency of one edit from a live device at one branch to a live device at another, next to
/// the same between two live devices of the centre.
struct BranchBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "branch",
        abstract: "Benchmark branch offices (rapportd --upstream) against a centre rapportd, all child processes.")

    @Option(help: "Accounts at the centre that a fresh branch catches up on.")
    var records = 100_000

    @Option(help: "Edits timed from a live device at one branch to a live device at another.")
    var rounds = 200

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard records >= 2 else { throw ValidationError("--records must be at least 2") }
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
    }

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "branch")
        let binary = rapportd ?? ServerProcess.defaultBinary()
        let centreData = dir.path("centre")
        let (catchUpTenant, liveTenant, floorTenant) = ("catchup", "live", "live-floor")
        let setupStart = ContinuousClock.now

        // Two admin devices per tenant: the catch-up's floor device; a device at each of two
        // branches; two devices of the centre for the latency floor.
        let devices = try ServerProcess.prepare(data: centreData, tenants: [catchUpTenant, liveTenant, floorTenant],
                                                devicesPerTenant: 2, schema: CRMSchema.current)
        // Branch credentials, as `rapportctl branch enroll` writes them.
        let registry = try DataDirectory(centreData).openRegistry()
        var credentials: [String: String] = [:]
        for (name, tenant) in [("east", catchUpTenant), ("west", catchUpTenant), ("north", liveTenant), ("south", liveTenant)] {
            let (_, credential) = try registry.enrollBranch(tenant: tenant, name: name, users: nil)
            let path = dir.path("\(name)-credential.json")
            try PrivateFiles.write(Array(try JSONEncoder().encode(credential)), to: path)
            credentials[name] = path
        }
        registry.close()

        // The accounts, written straight into the centre's store in one transaction, opened with
        // the server's indexes so that it does not rebuild them at its first session. The rows are
        // valid accounts; the CRM's rules and effects are left out of this load (an import beside
        // the server would run them): they do not change what a branch pulls.
        let rows = BenchRows(.crmAccount, count: records)
        let centreStorePath = centreData + "/tenants/\(catchUpTenant).sqlite"
        let centreID: String, centreSequence: Int64
        do {
            let store = try ReplicaStore(path: centreStorePath, options: .benchTenantLoad)
            defer { store.close() }
            try rows.create(in: store)
            (centreID, centreSequence) = (store.replicaID.rawValue, try store.lastSequence)
        }
        report.line("setup", ["records": records, "centre_sequence": centreSequence, "seconds": seconds(ContinuousClock.now - setupStart),
                              "note": "centre and branches are rapportd child processes on 127.0.0.1; the centre runs with --rules-interval 0"])

        let centre = try await ServerProcess.start(binary: binary, data: centreData, arguments: ["--rules-interval", "0"])
        defer { centre.stop() }
        let startBranch = { (name: String) throws -> ServerProcess in
            try ServerProcess.start(binary: binary, data: dir.path(name), arguments: [
                "--upstream", "127.0.0.1:\(centre.port)", "--upstream-ca", centreData + "/tls/ca.pem",
                "--upstream-credential", credentials[name]!,
            ])
        }

        // 1. The floor: a device's initial sync of the tenant from the centre, into a store opened
        //    as the `rapport` device opens its own (the CRM's field index and name search, as the
        //    branch's store keeps them).
        let floorDevice = try benchDevice(devices[catchUpTenant]![0], store: dir.path("floor-device.sqlite"), port: centre.port,
                                          data: centreData, options: .crm())
        let floorCPU = (centre: centre.cpuSeconds(), bench: ServerProcess.cpuSeconds(of: getpid()))
        let floorStart = ContinuousClock.now
        let initial = try await floorDevice.sync()
        let floorSeconds = seconds(ContinuousClock.now - floorStart)
        let floorHeld = try floorDevice.store.performSync { try $0.count(ofType: "account") }
        guard initial.pulled == records, floorHeld == records else {
            throw ValidationError("the floor device pulled \(initial.pulled) and holds \(floorHeld) of \(records) accounts")
        }
        report.line("floor_device_initial_sync", [
            "records": records, "seconds": floorSeconds, "records_per_second": Double(records) / floorSeconds,
            "centre_cpu_seconds": centre.cpuSeconds() - floorCPU.centre,
            "device_cpu_seconds": ServerProcess.cpuSeconds(of: getpid()) - floorCPU.bench,
        ])
        await floorDevice.store.close()

        // 2. A fresh branch catching up: from starting its process until its link's checkpoint on
        //    the centre reaches the centre's sequence (each batch commits with its checkpoint).
        let eastProbe = StoreProbe(path: dir.path("east") + "/tenants/\(catchUpTenant).sqlite")
        let eastBytes = centre.bytesWritten()
        let eastCPU = centre.cpuSeconds()
        let eastStart = ContinuousClock.now
        let east = try startBranch("east")
        defer { east.stop() }
        let eastListening = seconds(ContinuousClock.now - eastStart)
        try await eastProbe.wait(for: east, "branch east's catch-up") { try $0.checkpoint(peer: centreID) >= centreSequence }
        let eastSeconds = seconds(ContinuousClock.now - eastStart)
        let eastSent = centre.bytesWritten() - eastBytes
        let eastCentreCPU = centre.cpuSeconds() - eastCPU
        let eastBranchCPU = east.cpuSeconds()
        await east.stop()
        eastProbe.close()
        let eastHeld = try eastProbe.liveRecords(ofType: "account")
        guard eastHeld == records else { throw ValidationError("branch east holds \(eastHeld) of \(records) accounts after its catch-up") }
        report.line("branch_catch_up", [
            "records": records, "seconds": eastSeconds, "records_per_second": Double(records) / eastSeconds,
            "floor_seconds": floorSeconds, "ratio_to_floor": eastSeconds / floorSeconds, "target_ratio": 1.5,
            "branch_start_seconds": eastListening, "centre_cpu_seconds": eastCentreCPU, "branch_cpu_seconds": eastBranchCPU,
            "centre_bytes_written": eastSent,
            "floor": "a device's initial sync of the same tenant from the centre (floor_device_initial_sync); the branch's time counts from starting its process",
        ])

        // 3. The same catch-up stopped (SIGTERM) once its checkpoint passed half the tenant, then
        //    started again on the same data directory.
        let westProbe = StoreProbe(path: dir.path("west") + "/tenants/\(catchUpTenant).sqlite")
        let westBytes = centre.bytesWritten()
        let westStart = ContinuousClock.now
        var west = try startBranch("west")
        defer { west.stop() }
        try await westProbe.wait(for: west, "branch west's first half") { try $0.checkpoint(peer: centreID) >= centreSequence / 2 }
        await west.stop()
        let beforeStop = seconds(ContinuousClock.now - westStart)
        let stoppedAt = try westProbe.checkpoint(peer: centreID)
        let heldAtStop = try westProbe.liveRecords(ofType: "account")
        westProbe.close()
        // What the restarted link has left to pull: the centre's records changed after the checkpoint.
        let centreProbe = StoreProbe(path: centreStorePath)
        let leftToPull = try centreProbe.records(after: stoppedAt)
        let coveredAtStop = try centreProbe.records(after: 0) - leftToPull
        centreProbe.close()
        let restart = ContinuousClock.now
        west = try startBranch("west")
        try await westProbe.wait(for: west, "branch west's catch-up after its restart") { try $0.checkpoint(peer: centreID) >= centreSequence }
        let afterRestart = seconds(ContinuousClock.now - restart)
        await west.stop()
        westProbe.close()
        let westSent = centre.bytesWritten() - westBytes
        let westHeld = try westProbe.liveRecords(ofType: "account")
        guard westHeld == records else { throw ValidationError("branch west holds \(westHeld) of \(records) accounts after its restart") }
        // Resumed: the checkpoint kept at the stop covers exactly the records the branch held then,
        // and the restarted link had only the rest to pull.
        // Not interrupted: the catch-up finished before the stop took effect (a small tenant: the
        // link finishes the batches already on their way).
        let interrupted = stoppedAt < centreSequence
        let resumed = interrupted && stoppedAt > 0 && heldAtStop == coveredAtStop
        report.line("branch_catch_up_interrupted", [
            "records": records, "interrupted": interrupted, "resumed": resumed, "checkpoint_at_stop": stoppedAt, "records_held_at_stop": heldAtStop,
            "records_left_to_pull": leftToPull, "records_pulled_total": heldAtStop + leftToPull,
            "seconds_before_stop": beforeStop, "seconds_after_restart": afterRestart, "seconds_total": beforeStop + afterRestart,
            "uninterrupted_seconds": eastSeconds,
            "centre_bytes_written": westSent, "bytes_ratio_to_uninterrupted": Double(westSent) / Double(max(eastSent, 1)),
            "note": "records_pulled_total counts what the branch held at the stop plus what the centre had after its checkpoint; the bytes the centre wrote over both runs, next to the uninterrupted catch-up's, include what was in flight at the stop",
        ])

        // 4. One edit from a live device at branch north to a live device at branch south, through
        //    the centre, next to the same between two live devices of the centre itself.
        let north = try startBranch("north"), south = try startBranch("south")
        defer { north.stop(); south.stop() }
        let a = try benchDevice(devices[liveTenant]![0], store: dir.path("live-a.sqlite"), port: north.port, data: dir.path("north"))
        let b = try benchDevice(devices[liveTenant]![1], store: dir.path("live-b.sqlite"), port: south.port, data: dir.path("south"))
        let across = try await Self.latencies(from: a, to: b, rounds: rounds, "branch north to branch south")
        let c = try benchDevice(devices[floorTenant]![0], store: dir.path("live-c.sqlite"), port: centre.port, data: centreData)
        let d = try benchDevice(devices[floorTenant]![1], store: dir.path("live-d.sqlite"), port: centre.port, data: centreData)
        let direct = try await Self.latencies(from: c, to: d, rounds: rounds, "centre to centre")
        report.line("live_latency_across_branches", [
            "rounds": rounds, "median_ms": across.median, "p99_ms": across.p99,
            "floor_median_ms": direct.median, "floor_p99_ms": direct.p99, "ratio_to_floor": across.median / direct.median,
            "target_median_ms": 10,
            "floor": "the same edits between two live devices of one tenant of the centre",
        ])
    }

    /// Times `rounds` edits of one account by live device `a` until live device `b` holds each:
    /// from the write at `a` to the event after which `b`'s store has the new value. (Also the
    /// idle bench's measure.)
    static func latencies(from a: RapportClient, to b: RapportClient, rounds: Int, _ what: String) async throws -> (median: Double, p99: Double) {
        // The first sessions wait until the branch adopted the centre's directory, which lists the device.
        try await firstSync(a, what)
        try await firstSync(b, what)
        let id = try a.store.performSync { try $0.create("account", ["name": .text("round 0")]).id }
        try await a.sync()
        let name = { (client: RapportClient) throws -> FieldValue? in try client.store.performSync { try $0.record(id)?.values["name"] } }
        try await poll("\(what): the account reaching the second device", timeout: .seconds(60), every: .milliseconds(50)) {
            try await b.sync()
            return try name(b) == .text("round 0")
        }
        let liveA = a.live(), liveB = b.live()
        var eventsA = liveA.events.makeAsyncIterator(), eventsB = liveB.events.makeAsyncIterator()
        for _ in 0..<2 { _ = await eventsA.next(); _ = await eventsB.next() }
        var timings: [Double] = []
        for round in 1...rounds {
            let expected = FieldValue.text("round \(round)")
            // Ends both sessions (and so their events) if a round hangs.
            let watchdog = Task {
                try await Task.sleep(for: .seconds(30))
                await liveA.stop()
                await liveB.stop()
            }
            defer { watchdog.cancel() }
            let sent = ContinuousClock.now
            try a.store.performSync { _ = try $0.update(id, ["name": expected]) }
            liveA.pushNow()
            arrival: while true {
                switch await eventsB.next() {
                case .synced(let result)? where result.pulled > 0:
                    if try name(b) == expected { break arrival }
                case .stopped?, nil:
                    throw ValidationError("\(what): round \(round) did not reach the second device within 30 s")
                default:
                    continue
                }
            }
            timings.append(seconds(ContinuousClock.now - sent) * 1000)
            pushed: while true {
                switch await eventsA.next() {
                case .synced(let result)? where result.pushed > 0: break pushed
                case .stopped?, nil: throw ValidationError("\(what): the first device's push of round \(round) did not finish")
                default: continue
                }
            }
        }
        await liveA.stop()
        await liveB.stop()
        timings.sort()
        return (timings[timings.count / 2], timings[min(timings.count - 1, timings.count * 99 / 100)])
    }

    /// A device's first sync through a branch: refused until the branch has adopted the centre's
    /// directory that lists the device (a second or so after its link is up), so retried.
    static func firstSync(_ client: RapportClient, _ what: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                try await client.sync()
                return
            } catch {
                guard ContinuousClock.now < deadline else { throw ValidationError("\(what): a device cannot sync: \(error)") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}

/// Waits until `done` holds, checking every `every`; fails after `timeout`.
func poll(_ what: String, timeout: Duration, every: Duration = .milliseconds(5), _ done: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !done() {
        guard ContinuousClock.now < deadline else { throw ValidationError("\(what): not done after \(timeout)") }
        try await Task.sleep(for: every)
    }
}

/// Reads a store file beside the process that writes it (read-only, in WAL mode, so it never
/// holds the writer up): a branch's checkpoint on the centre, its records. The file may not
/// exist yet, or not have its tables: that reads as nothing done.
final class StoreProbe {
    let path: String
    private var db: Database?

    init(path: String) { self.path = path }

    private func open() throws -> Database {
        if let db { return db }
        var options = Database.Options()
        options.readOnly = true
        let opened = try Database(path: path, options: options)
        db = opened
        return opened
    }

    func close() {
        db?.close()
        db = nil
    }

    /// The sequence of `peer` this store's pulls reached; 0 before the first batch.
    func checkpoint(peer: String) throws -> Int64 {
        guard FileManager.default.fileExists(atPath: path) else { return 0 }
        do {
            return try open().scalarInt("SELECT sequence FROM peer_checkpoints WHERE peer = ?", [peer]) ?? 0
        } catch {
            // Made a moment ago and not migrated yet, most likely; opened again at the next look.
            close()
            return 0
        }
    }

    func liveRecords(ofType type: String) throws -> Int {
        Int(try open().scalarInt("SELECT count(*) FROM records WHERE type = ? AND deleted = 0", [type]) ?? 0)
    }

    /// Records whose latest change comes after sequence `after`: what a pull from there brings.
    func records(after: Int64) throws -> Int {
        Int(try open().scalarInt("SELECT count(*) FROM records WHERE seq > ?", [after]) ?? 0)
    }

    /// Polls until `done` holds, failing early if `server` exited.
    func wait(for server: ServerProcess, _ what: String, timeout: Duration = .seconds(1_800),
              _ done: (StoreProbe) throws -> Bool) async throws {
        try await poll(what, timeout: timeout) {
            guard server.process.isRunning else { throw ValidationError("\(what): the rapportd process exited") }
            return try done(self)
        }
    }
}

extension ServerProcess {
    /// Bytes the process has written to files and sockets so far (`wchar` of /proc/PID/io); a
    /// server that writes little to its files, as a centre serving pulls, writes mostly its replies.
    func bytesWritten() -> Int64 {
        guard let io = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/io", encoding: .utf8),
              let line = io.split(separator: "\n").first(where: { $0.hasPrefix("wchar:") }),
              let value = line.split(separator: " ").last.flatMap({ Int64($0) }) else { return 0 }
        return value
    }
}
