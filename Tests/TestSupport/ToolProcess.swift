import Foundation

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
    public static func run(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ToolResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        // Standard error goes to a file: a tool that filled the pipe of one stream while this
        // read the other would never finish.
        let errorPath = NSTemporaryDirectory() + "rapport-tool-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errorPath) }
        let errorFile = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        defer { try? errorFile.close() }
        let out = Pipe()
        process.standardOutput = out
        process.standardError = errorFile
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
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
