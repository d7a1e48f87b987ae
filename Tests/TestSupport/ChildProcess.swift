import Foundation
import Synchronization

/// A child process of the tests (`rapportd`, `rapport`, `rapportctl`, `curl`, PostgreSQL's
/// programs), started with `posix_spawn` and waited for with `waitpid`.
///
/// Not Foundation's `Process`, for two reasons met in CI. Its `run()` in Swift 6.3 reads past
/// the end of a directory entry while it lists `/proc/self/fd` (swift-corelibs-foundation
/// #5472), and crashed the test process about one full run in five. And its children keep
/// descriptors they were never given: after that crash, the `rapportd` processes of the dead
/// test process held the pipe `swift test` reads the tests' output from, so `swift test` waited
/// for its end until CI's limit. Here a child gets its three standard streams and nothing else
/// (every other descriptor is closed in it), never this process's own output, and its signal
/// mask and dispositions are the defaults, whatever thread starts it.
public final class ChildProcess: Sendable {
    /// Where one of the child's output streams goes.
    public enum Destination: Sendable {
        /// `/dev/null`.
        case null
        /// A file, created or emptied, readable by its owner only.
        case file(String)
        /// A pipe, read through `output` (standard output only).
        case pipe
        /// Where standard output goes (standard error only).
        case output
        /// This process's own: for the workers of a benchmark run at a terminal, never for a
        /// child of the tests (see above).
        case inherited
    }

    public let processIdentifier: Int32
    /// What the child is, for messages: its executable and arguments.
    public let command: String
    /// The read end of standard output's pipe, with `.pipe`; `nil` otherwise.
    public let output: FileHandle?
    /// The write end of standard input's pipe, with `pipedInput`; `nil` otherwise (the child
    /// reads `/dev/null`).
    public let input: FileHandle?
    /// The wait status once the child has been reaped. `processIdentifier` names the child until then, and
    /// only then can the system give it to another process: a signal is sent under this lock,
    /// and only while it is `nil`.
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` (a path) with `arguments` and the environment given, or this
    /// process's; standard input is a pipe written through `input` with `pipedInput`, else
    /// `/dev/null`.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, pipedInput: Bool = false,
                standardOutput: Destination = .null, standardError: Destination = .null) throws {
        command = ([executable] + arguments).joined(separator: " ")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        /// A pipe whose ends are close-on-exec, so that nothing this process runs keeps one but
        /// this child (whose copy is one of its standard streams); children started here close
        /// the rest in any case.
        func makePipe() throws -> [Int32] {
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else {
                throw ChildProcessError("cannot make a pipe for \(executable): \(String(cString: strerror(errno)))")
            }
            for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            return ends
        }
        var inputEnds: [Int32] = [-1, -1], pipeEnds: [Int32] = [-1, -1]
        if pipedInput {
            inputEnds = try makePipe()
            posix_spawn_file_actions_adddup2(&actions, inputEnds[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if case .pipe = standardOutput {
            pipeEnds = try makePipe()
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        }
        for (descriptor, destination) in [(Int32(1), standardOutput), (2, standardError)] {
            switch destination {
            case .null: posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", O_WRONLY, 0)
            case .file(let path): posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            case .pipe:
                guard descriptor == 1 else { throw ChildProcessError("only standard output goes to a pipe (\(executable))") }
            case .output:
                guard descriptor == 2 else { throw ChildProcessError("standard output cannot go where it goes (\(executable))") }
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            case .inherited: break
            }
        }
        try Self.closeTheRest(&actions, what: executable)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A dispatch or NIO thread blocks signals; a child inherits its mask, and a rapportd that
        // never sees SIGTERM cannot be stopped.
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { envp?.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = envp.map { posix_spawn(&pid, executable, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        // The child's ends are the child's alone.
        for end in [pipeEnds[1], inputEnds[0]] where end >= 0 { close(end) }
        guard spawned == 0 else {
            for end in [pipeEnds[0], inputEnds[1]] where end >= 0 { close(end) }
            throw ChildProcessError("cannot start \(executable): \(String(cString: strerror(spawned)))")
        }
        processIdentifier = pid
        output = pipeEnds[0] >= 0 ? FileHandle(fileDescriptor: pipeEnds[0], closeOnDealloc: true) : nil
        input = inputEnds[1] >= 0 ? FileHandle(fileDescriptor: inputEnds[1], closeOnDealloc: true) : nil
    }

    /// Adds glibc's action that closes every descriptor from 3 on in the child, which Swift's
    /// Glibc module does not declare (glibc 2.34 and later have it).
    static func closeTheRest(_ actions: inout posix_spawn_file_actions_t, what: String) throws {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
            throw ChildProcessError("\(what): this C library cannot close inherited descriptors (posix_spawn_file_actions_addclosefrom_np, glibc 2.34)")
        }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
    }

    /// The wait status, reaping the child if it has exited; `nil` while it runs.
    private func status() -> Int32? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            var result: pid_t
            repeat { result = waitpid(processIdentifier, &status, WNOHANG) } while result < 0 && errno == EINTR
            // ECHILD: someone else reaped it (nothing in this process should); it is gone all the same.
            if result == processIdentifier || (result < 0 && errno == ECHILD) {
                reaped = result == processIdentifier ? status : 0x7f00
                return reaped
            }
            return nil
        }
    }

    public var isRunning: Bool { status() == nil }

    /// Waits for the child to exit, at most `limit`; whether it did.
    public func waitForExit(within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while status() == nil {
            if ContinuousClock.now >= deadline { return false }
            usleep(2_000)
        }
        return true
    }

    /// Sends `signal`, unless the child has already been reaped.
    public func send(_ signal: Int32) {
        reaped.withLock { reaped in
            if reaped == nil { _ = kill(processIdentifier, signal) }
        }
    }

    /// Asks the child to end, with SIGTERM.
    public func terminate() { send(SIGTERM) }

    /// Whether the child ended by a signal rather than by exiting (while it runs, `false`).
    public var endedBySignal: Bool {
        guard let status = status() else { return false }
        return status & 0x7f != 0 && status & 0x7f != 0x7f
    }

    /// The exit status, or the signal that ended it (as Foundation's `Process` has it); -1
    /// while it runs.
    public var terminationStatus: Int32 {
        guard let status = status() else { return -1 }
        return endedBySignal ? status & 0x7f : (status >> 8) & 0xff
    }
}

/// Why a child process could not be started.
public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
