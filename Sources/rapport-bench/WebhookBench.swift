import ArgumentParser
import CRM
import Foundation
import RapportClient
import Registry
import SyncModel
import TestSupport

/// Webhook delivery latency after a device's push: from an edit at a live device until a
/// receiver on loopback (HTTPS, the project's TLS) has the event, next to the same edit
/// reaching another live device of the same server (the sync path the push takes anyway).
struct WebhookBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks",
        abstract: "Benchmark webhook delivery latency after a device push, against live device-to-device latency.")

    @Option(help: "Edits timed.")
    var rounds = 200

    @Option(help: "The rapportd binary (by default the one next to this program).")
    var rapportd: String?

    @Option(help: "Directory for the files (a temporary one by default).")
    var directory: String?

    func validate() throws {
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
    }

    mutating func run() async throws {
        let dir = try BenchDirectory(directory)
        let report = Reporter(bench: "webhooks")
        let data = dir.path("data")
        // One tenant with a webhook on its accounts, one without for the floor.
        let devices = try ServerProcess.prepare(data: data, tenants: ["hooks", "floor"], devicesPerTenant: 2, schema: CRMSchema.current)
        let receiver = try await WebhookReceiver(directory: dir.path("receiver"))
        do {
            let registry = try DataDirectory(data).openRegistry()
            defer { registry.close() }
            _ = try registry.createWebhook(tenant: "hooks", url: receiver.url, events: ["account"], role: "admin",
                                           caFile: receiver.caFile, cursor: 0)
        }
        let server = try await ServerProcess.start(binary: rapportd ?? ServerProcess.defaultBinary(), data: data, arguments: ["--rules-interval", "0"])
        defer { server.stop() }

        let a = try benchDevice(devices["floor"]![0], store: dir.path("floor-a.sqlite"), port: server.port, data: data)
        let b = try benchDevice(devices["floor"]![1], store: dir.path("floor-b.sqlite"), port: server.port, data: data)
        let floor = try await BranchBench.latencies(from: a, to: b, rounds: rounds, "device to device")

        let device = try benchDevice(devices["hooks"]![0], store: dir.path("hooks.sqlite"), port: server.port, data: data)
        try await device.sync()
        let id = try device.store.performSync { try $0.create("account", ["name": .text("round 0")]).id }
        try await device.sync()
        try await poll("the first webhook", timeout: .seconds(60)) { receiver.requests.count >= 1 }
        let live = device.live()
        var events = live.events.makeAsyncIterator()
        for _ in 0..<2 { _ = await events.next() }
        var timings: [Double] = []
        for round in 1...rounds {
            let sent = ContinuousClock.now
            try device.store.performSync { _ = try $0.update(id, ["name": .text("round \(round)")]) }
            live.pushNow()
            try await poll("round \(round)'s webhook", timeout: .seconds(30), every: .milliseconds(1)) { receiver.requests.count > round }
            let arrived = try receiver.requests.last.require("a request of round \(round)").at
            timings.append(seconds(arrived - sent) * 1000)
            // The push's own session round ends before the next edit.
            pushed: while true {
                switch await events.next() {
                case .synced(let result)? where result.pushed > 0: break pushed
                case .stopped?, nil: throw ValidationError("the device's push of round \(round) did not finish")
                default: continue
                }
            }
        }
        await live.stop()
        await receiver.stop()
        timings.sort()
        let median = timings[timings.count / 2], p99 = timings[min(timings.count - 1, timings.count * 99 / 100)]
        report.line("webhook_latency_after_push", [
            "rounds": rounds, "median_ms": median, "p99_ms": p99,
            "floor_median_ms": floor.median, "floor_p99_ms": floor.p99, "ratio_to_floor": median / floor.median,
            "floor": "the same edits between two live devices of another tenant of the same server",
            "note": "rapportd is a child process on 127.0.0.1; the receiver is HTTPS on 127.0.0.1 in this process, answering 200 at once",
        ])
    }
}

extension Optional {
    /// The value, or a failure naming what is missing.
    fileprivate func require(_ what: String) throws -> Wrapped {
        guard let self else { throw ValidationError(what) }
        return self
    }
}
