import Foundation
import TestScheduling
import TestSupport
import Testing

/// The tests' own child processes (`ChildProcess`): a child has its three standard streams and
/// nothing else of this process, takes signals whatever thread started it, and is waited for
/// with a bound.
@Suite struct ChildProcessTests {
    /// What a shell child says about itself, read from `/proc/self`.
    func shell(_ script: String) throws -> String {
        let child = try ChildProcess("/bin/sh", ["-c", script], standardOutput: .pipe)
        let output = String(decoding: child.output!.readDataToEndOfFile(), as: UTF8.self)
        #expect(child.waitForExit(within: .seconds(60)))
        #expect(child.terminationStatus == 0 && !child.endedBySignal)
        return output
    }

    @Test(.blocking) func aChildHoldsItsThreeStreamsAndNothingElse() throws {
        // A descriptor of this process, not close-on-exec, as Foundation's Process leaves its own.
        let held = open("/dev/null", O_RDONLY)
        defer { close(held) }
        let pipe = Pipe()
        // `ls` opens the folder it lists (3): everything else it sees open is what it was given.
        let listed = try withExtendedLifetime(pipe) {
            try shell("ls /proc/self/fd").split(separator: "\n").compactMap { Int($0) }
        }
        #expect(listed.filter { $0 > 3 }.isEmpty, "descriptors a child was never given: \(listed)")
        #expect(Set(listed).isSuperset(of: [0, 1, 2]))
    }

    /// Started by a thread that blocks SIGTERM (as threads of dispatch and NIO may) in a
    /// process that ignores SIGPIPE: a rapportd that inherited either would not stop on
    /// SIGTERM, or would die on its first write to a closed connection.
    @Test func aChildTakesTheSignalsItsStarterBlocksOrIgnores() async throws {
        // From here on for the whole test process, which only turns a write to a closed pipe
        // into an error instead of an end.
        signal(SIGPIPE, SIG_IGN)
        let status = try await offThePool { [self] () throws -> String in
            var term = sigset_t()
            sigemptyset(&term)
            sigaddset(&term, SIGTERM)
            pthread_sigmask(SIG_BLOCK, &term, nil)
            return try shell("grep -E '^Sig(Blk|Ign)' /proc/self/status")
        }
        #expect(status.split(separator: "\n").count == 2, "\(status)")
        for line in status.split(separator: "\n") {
            let mask = line.split(separator: "\t").last.map(String.init) ?? ""
            // The standard signals (1-31); the C library keeps two real-time ones of its own.
            #expect(UInt64(mask, radix: 16).map { $0 & 0x7fff_ffff } == 0, "\(line)")
        }
    }

    @Test(.blocking) func anExitStatusASignalAndABoundedWait() throws {
        let exits = try ChildProcess("/bin/sh", ["-c", "exit 7"])
        #expect(exits.waitForExit(within: .seconds(60)))
        #expect(exits.terminationStatus == 7 && !exits.endedBySignal)

        let sleeper = try ChildProcess("/bin/sleep", ["600"])
        #expect(sleeper.isRunning)
        #expect(!sleeper.waitForExit(within: .milliseconds(100)))
        sleeper.send(SIGKILL)
        #expect(sleeper.waitForExit(within: .seconds(60)))
        #expect(sleeper.endedBySignal && sleeper.terminationStatus == SIGKILL)
        // Reaped: a signal now goes nowhere, whoever has the number since.
        sleeper.send(SIGKILL)
        #expect(!sleeper.isRunning)
    }

    @Test(.blocking) func aToolThatOutlivesItsLimitIsKilledAndSaysSo() throws {
        #expect {
            _ = try ToolProcess.run("/bin/sleep", ["600"], limit: .milliseconds(300))
        } throws: { "\($0)".contains("was still running after") }
        let printed = try ToolProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(printed.status == 3 && printed.output == "out\n" && printed.error == "err\n")
    }
}
