import Foundation

/// Runs `body` on a thread of its own and awaits its result.
///
/// For the blocking waits of tests (a child process to exit, a server to print its banner)
/// made from async code: such a wait holds a thread of Swift's shared pool, which has one
/// thread per core. On a 2-core machine two of them held the whole pool, and every other test
/// of the process stopped with it, in-process servers' sessions included, until handshakes
/// timed out and time limits ran out.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// `offThePool` for a body that cannot throw.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

extension ToolProcess {
    /// `run`, waited for off Swift's shared pool (see `offThePool`).
    public static func run(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> ToolResult {
        try await offThePool { try run(binary, arguments, environment: environment) as ToolResult }
    }
}

extension CLI {
    /// `run`, waited for off Swift's shared pool (see `offThePool`).
    public func run(_ arguments: [String]) async throws -> ToolResult {
        try await offThePool { try run(arguments) as ToolResult }
    }

    /// `create`, waited for off Swift's shared pool (see `offThePool`).
    public func create(_ type: String, _ assignments: [String]) async throws -> String {
        try await offThePool { try create(type, assignments) as String }
    }

    /// `list`, waited for off Swift's shared pool (see `offThePool`).
    public func list(_ type: String, _ options: [String] = []) async throws -> [String] {
        try await offThePool { try list(type, options) as [String] }
    }
}

extension ServerProcess {
    /// `start`, waited for off Swift's shared pool (see `offThePool`).
    public static func start(binary: String, data: String, arguments: [String] = [], logFile: String? = nil,
                             bannerLine: String? = nil) async throws -> ServerProcess {
        try await offThePool {
            try start(binary: binary, data: data, arguments: arguments, logFile: logFile, bannerLine: bannerLine) as ServerProcess
        }
    }

    /// `stop`, waited for off Swift's shared pool (see `offThePool`).
    public func stop() async {
        await offThePool { self.stop() as Void }
    }

    /// `kill`, waited for off Swift's shared pool (see `offThePool`).
    public func kill() async {
        await offThePool { self.kill() as Void }
    }
}
