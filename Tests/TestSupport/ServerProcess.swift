import Foundation
import Synchronization
import Registry
import SyncModel
import TLS

/// What an enrolled device holds: its tenant, its replica id and its secret.
public struct DeviceCredential: Sendable, Hashable {
    public let tenant: String
    public let deviceID: String
    public let secret: [UInt8]

    public init(tenant: String, deviceID: String, secret: [UInt8]) {
        self.tenant = tenant
        self.deviceID = deviceID
        self.secret = secret
    }

    /// The device id as a replica id, for creating the device's store.
    public var replicaID: ReplicaID { get throws { try ReplicaID(deviceID) } }
}

/// A `rapportd` child process, for tests whose behaviour crosses a process boundary (a server
/// killed mid-sync) and for benchmarks that read the server's own CPU time and memory.
public final class ServerProcess: Sendable {
    public let process: ChildProcess
    public let port: Int
    /// What the server printed to standard output up to the line with its port (or a little more).
    public let banner: String
    private let output: FileHandle
    /// Where its log goes when `start` was given no file: a file of ours, copied to this
    /// process's standard error when the server ends. (Never this process's standard error
    /// itself: a server left running by a test process that crashed held it, and `swift test`,
    /// which reads it, waited for its end until CI gave up.)
    private let ownLog: String?

    private init(process: ChildProcess, port: Int, banner: String, output: FileHandle, ownLog: String?) {
        self.process = process
        self.port = port
        self.banner = banner
        self.output = output
        self.ownLog = ownLog
    }

    /// Everything the server printed to standard output after `banner`, once it has exited.
    public func remainingOutput() -> String {
        String(decoding: output.readDataToEndOfFile(), as: UTF8.self)
    }

    /// `rapportd` (or another of our executables) from the same build as this program (a test
    /// bundle sits in the same folder).
    public static func defaultBinary(named name: String = "rapportd") -> String {
        var here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while here.path != "/" {
            let candidate = here.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            here = here.deletingLastPathComponent()
        }
        return name
    }

    /// Registers `tenants` in the data directory's registry (each with its store file and a
    /// user `owner@<tenant>.example`) and enrolls `devicesPerTenant` devices in each, the way
    /// `rapportctl` and the Enroll message would, without a server.
    public static func prepare(data: String, tenants: [String], devicesPerTenant: Int = 1,
                               schema: Schema, database: String? = nil) throws -> [String: [DeviceCredential]] {
        let directory = DataDirectory(data, database: database)
        let registry = try directory.openRegistry()
        defer { registry.close() }
        var credentials: [String: [DeviceCredential]] = [:]
        for tenant in tenants {
            let user = "owner@\(tenant).example"
            if try registry.tenant(tenant) == nil {
                _ = try directory.createTenant(tenant, name: tenant, schema: schema, in: registry)
                try registry.addUser(tenant: tenant, email: user, name: "Owner of \(tenant)", role: .admin)
            }
            credentials[tenant] = try (0..<devicesPerTenant).map { index in
                let ticket = try registry.issueEnrollmentCode(tenant: tenant, user: user)
                let enrollment = try registry.enroll(tenant: tenant, code: ticket.code, deviceName: "test device \(index)")
                return DeviceCredential(tenant: tenant, deviceID: enrollment.device.id, secret: enrollment.secret)
            }
        }
        return credentials
    }

    /// Starts the server on a free port and waits until it listens.
    ///
    /// - Parameter logFile: where its standard error (its log) goes; by default this process's.
    ///   `arguments` come last, so a `--log-level` there wins over the default `warning`.
    /// - Parameter bannerLine: a text the banner must have printed before this returns (a
    ///   line written after the first, such as where the integration API listens).
    public static func start(binary: String, data: String, arguments: [String] = [], logFile: String? = nil,
                             bannerLine: String? = nil) throws -> ServerProcess {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("no rapportd at \(binary); build it first: swift build -c release --product rapportd")
        }
        let ownLog = logFile == nil ? NSTemporaryDirectory() + "rapportd-\(UUID().uuidString).log" : nil
        let process = try ChildProcess(binary, ["--port", "0", "--data", data, "--log-level", "warning"] + arguments,
                                       standardOutput: .pipe, standardError: .file(logFile ?? ownLog!))
        let output = process.output!
        // The first line says where it listens: "rapportd serving DIR on HOST:PORT".
        var buffer = Data()
        func complete() -> Bool {
            guard buffer.contains(UInt8(ascii: "\n")) else { return false }
            guard let bannerLine else { return true }
            let text = String(decoding: buffer, as: UTF8.self)
            guard let range = text.range(of: bannerLine) else { return false }
            return text[range.upperBound...].contains("\n")
        }
        // Ended by a kill rather than left running when it never says where it listens: a
        // server that did not start is not waited for by anything after this.
        func fail(_ message: String) -> BenchError {
            process.send(SIGKILL)
            _ = process.waitForExit(within: .seconds(60))
            let log = (try? String(contentsOfFile: logFile ?? ownLog!, encoding: .utf8)) ?? ""
            if let ownLog { try? FileManager.default.removeItem(atPath: ownLog) }
            return BenchError(message + (log.isEmpty ? "" : "; its log:\n" + log))
        }
        while !complete() {
            let chunk = output.availableData
            guard !chunk.isEmpty else { throw fail("rapportd exited before listening") }
            buffer.append(chunk)
        }
        let line = String(decoding: buffer, as: UTF8.self).split(separator: "\n")[0]
        guard let port = line.split(separator: ":").last.flatMap({ Int($0) }) else {
            throw fail("cannot read the port from rapportd's first line: \(line)")
        }
        if let bannerLine, !String(decoding: buffer, as: UTF8.self).contains(bannerLine) {
            throw fail("rapportd did not print '\(bannerLine)'")
        }
        return ServerProcess(process: process, port: port, banner: String(decoding: buffer, as: UTF8.self),
                             output: output, ownLog: ownLog)
    }

    /// Copies the log of a server that has ended to this process's standard error, when
    /// `start` kept it in a file of its own, and removes that file.
    private func passOnOwnLog() {
        guard let ownLog, !process.isRunning else { return }
        if let log = FileManager.default.contents(atPath: ownLog), !log.isEmpty {
            FileHandle.standardError.write(Data("rapportd \(process.processIdentifier) logged:\n".utf8) + log)
        }
        try? FileManager.default.removeItem(atPath: ownLog)
    }

    deinit { passOnOwnLog() }

    /// The integration API's port, from the banner line `integration API at https://HOST:PORT/v1`
    /// (started with `bannerLine: "integration API at"`); `nil` when it printed none.
    public var apiPort: Int? {
        let line = banner.split(separator: "\n").first { $0.contains("integration API at") } ?? ""
        return line.split(separator: ":").dropFirst(2).first.flatMap { Int($0.prefix { $0.isNumber }) }
    }

    /// Stops the server as an operator or a supervisor would, with SIGTERM, and waits for it.
    /// A server still running a minute later is a defect to find, not one to wait on: its
    /// threads go to standard error (with gdb on the machine), and SIGKILL ends it.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        if process.waitForExit(within: .seconds(60)) { return passOnOwnLog() }
        let pid = process.processIdentifier
        var report = "rapportd \(pid) is still running 60 s after SIGTERM; killing it\n"
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb"),
           let stacks = try? ToolProcess.run("/usr/bin/gdb", ["-p", "\(pid)", "-batch", "-ex", "thread apply all bt 30"],
                                             limit: .seconds(120)) {
            report += "its threads:\n" + stacks.output
        }
        FileHandle.standardError.write(Data(report.utf8))
        kill()
    }

    /// User plus system CPU time the server has used so far.
    public func cpuSeconds() -> Double {
        Self.cpuSeconds(of: process.processIdentifier)
    }

    public static func cpuSeconds(of pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        // Fields after the command name: state is 3rd; utime and stime are the 14th and 15th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The server's peak resident memory (VmHWM).
    public func peakResidentMiB() -> Double {
        memoryMiB("VmHWM")
    }

    /// The server's resident memory now (VmRSS).
    public func residentMiB() -> Double {
        memoryMiB("VmRSS")
    }

    private func memoryMiB(_ field: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kib = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return kib / 1024
    }
}

/// Ends the server at once, as a crash or an OOM kill would: no shutdown, no last words.
extension ServerProcess {
    /// How many file descriptors the server holds now.
    public func openFileDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? -1
    }

    public func kill() {
        guard process.isRunning else { return }
        process.send(SIGKILL)
        if !process.waitForExit(within: .seconds(60)) {
            FileHandle.standardError.write(Data("rapportd \(process.processIdentifier) did not exit 60 s after SIGKILL\n".utf8))
        }
        passOnOwnLog()
    }
}

/// The floor for handshake cost: OpenSSL's own `s_server`, driven by `s_time`, with the same
/// certificate and key.
public enum OpenSSLFloor {
    public static func handshakesPerServerCPUSecond(certificate: String, key: String, ca: String, connections: Int) throws -> Double {
        let port = try LoopbackPort.free()
        let server = try ChildProcess("/usr/bin/openssl", ["s_server", "-cert", certificate, "-key", key,
                                                           "-accept", "127.0.0.1:\(port)", "-www", "-quiet"])
        // s_server ignores SIGTERM while it waits in accept: only SIGKILL ends it reliably.
        defer { server.send(SIGKILL); _ = server.waitForExit(within: .seconds(60)) }
        Thread.sleep(forTimeInterval: 0.3)
        let before = ServerProcess.cpuSeconds(of: server.processIdentifier)
        let outputPath = NSTemporaryDirectory() + "rapport-s_time-\(UUID().uuidString).txt"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let client = try ChildProcess("/usr/bin/openssl", ["s_time", "-connect", "127.0.0.1:\(port)", "-new", "-time", "3", "-CAfile", ca],
                                      standardOutput: .file(outputPath))
        guard client.waitForExit(within: .seconds(600)) else { throw BenchError("openssl s_time did not end") }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let used = ServerProcess.cpuSeconds(of: server.processIdentifier) - before
        // "N connections in T real seconds, ..." for the -new run.
        guard let line = text.split(separator: "\n").first(where: { $0.contains("connections in") }),
              let count = line.split(separator: " ").first.flatMap({ Double($0) }) else {
            throw BenchError("cannot read openssl s_time output: \(text.prefix(200))")
        }
        return count / max(used, 0.001)
    }
}

/// A loopback port nothing listens on now, for a server that must be told its port.
public enum LoopbackPort {
    /// A free loopback port below the kernel's ephemeral range, for a server that must get the
    /// same port back after a restart: a port the kernel picked (`free()`, `--port 0`, the source
    /// port of any connection) may be handed to another test's server or client while this one
    /// is down; one outside that range never is. Never the same port twice in a process.
    public static func stable() throws -> Int {
        let lowestEphemeral = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        let range = 10_000..<max(10_001, min(lowestEphemeral, 65_536))
        for _ in 0..<200 {
            let port = Int.random(in: range)
            guard stableTaken.withLock({ $0.insert(port).inserted }) else { continue }
            if (try? bindable(port)) == true { return port }
        }
        throw BenchError("cannot find a free loopback port in \(range)")
    }

    private static let stableTaken = Mutex<Set<Int>>([])

    private static func bindable(_ port: Int) throws -> Bool {
        try bind(port: port) != nil
    }

    public static func free() throws -> Int {
        guard let port = try bind(port: 0) else {
            throw BenchError("cannot find a free loopback port: \(String(cString: strerror(errno)))")
        }
        return port
    }

    /// Binds a socket to `port` (0: the kernel picks) on 127.0.0.1 and closes it; the port it
    /// got, or `nil` when the bind failed.
    private static func bind(port: Int) throws -> Int? {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard Foundation.bind(socket, pointer, length) == 0 else { return -1 }
                return getsockname(socket, pointer, &length)
            }
        }
        guard bound == 0 else { return nil }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
