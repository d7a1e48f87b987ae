import Foundation
import Synchronization

/// What one run of one of our executables (`rapport`, `rapportctl`) as a process left: its exit
/// status and what it wrote on each stream.
public struct ToolResult: Sendable {
    public var status: Int32
    public var output: String
    public var error: String

    public init(status: Int32, output: String, error: String) {
        self.status = status
        self.output = output
        self.error = error
    }

    /// The output parsed as JSON (for --json), `nil` when it is not JSON.
    public var json: Any? { try? JSONSerialization.jsonObject(with: Data(output.utf8)) }
}

/// Runs our executables as processes, as an operator or a script would.
public enum ToolProcess {
    /// Runs `binary` with `arguments` and this process's environment plus `environment`, and
    /// waits for it.
    ///
    /// A tool still running after `limit` is killed, and the run throws: a test waits for a
    /// tool that hangs as long as its time limit, not until CI gives up on the whole run.
    public static func run(_ binary: String, _ arguments: [String], environment: [String: String] = [:],
                           limit: Duration = .seconds(600)) throws -> ToolResult {
        // Standard error goes to a file: a tool that filled the pipe of one stream while this
        // read the other would never finish.
        let errorPath = NSTemporaryDirectory() + "rapport-tool-\(UUID().uuidString).err"
        defer { try? FileManager.default.removeItem(atPath: errorPath) }
        let process = try ChildProcess(binary, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                                       standardOutput: .pipe, standardError: .file(errorPath))
        let overdue = ChildDeadline(process, after: limit)
        let output = process.output!.readDataToEndOfFile()
        let killed = overdue.cancel()
        guard process.waitForExit(within: .seconds(60)) else {
            throw BenchError("\(process.command) closed its output and did not exit within 60 s")
        }
        if killed {
            throw BenchError("\(process.command) was still running after \(limit) and was killed")
        }
        let error = FileManager.default.contents(atPath: errorPath) ?? Data()
        return ToolResult(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self),
                          error: String(decoding: error, as: UTF8.self))
    }
}

/// `rapport` (or another of our executables) run with some arguments always given (the
/// device's home).
public struct CLI: Sendable {
    public let binary: String
    public var fixed: [String]

    public init(binary: String, fixed: [String] = []) {
        self.binary = binary
        self.fixed = fixed
    }

    public func run(_ arguments: [String]) throws -> ToolResult {
        // A wide terminal, so texts asserted on are never cut.
        try ToolProcess.run(binary, arguments + fixed, environment: ["COLUMNS": "400"])
    }

    /// Creates a record with `put --json` and returns its id.
    public func create(_ type: String, _ assignments: [String]) throws -> String {
        let result = try run(["put", type] + assignments + ["--json"])
        guard result.status == 0, let id = (result.json as? [String: Any])?["id"] as? String else {
            throw BenchError("put \(type) \(assignments) failed (\(result.status)): \(result.error)")
        }
        return id
    }

    /// The ids `list TYPE --json` prints, in its order.
    public func list(_ type: String, _ options: [String] = []) throws -> [String] {
        let result = try run(["list", type] + options + ["--json"])
        guard result.status == 0, let records = result.json as? [[String: Any]] else {
            throw BenchError("list \(type) \(options) failed (\(result.status)): \(result.error)")
        }
        return records.compactMap { $0["id"] as? String }
    }
}

/// Kills a child process with SIGKILL once `after` has passed, unless cancelled first.
final class ChildDeadline: Sendable {
    private let state = Mutex<(fired: Bool, cancelled: Bool)>((false, false))

    init(_ child: ChildProcess, after limit: Duration) {
        let seconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            self.state.withLock { state in
                guard !state.cancelled else { return }
                state.fired = true
                child.send(SIGKILL)
            }
        }
    }

    /// Stops the deadline; whether it had already killed the child.
    func cancel() -> Bool {
        state.withLock { state in
            state.cancelled = true
            return state.fired
        }
    }
}
