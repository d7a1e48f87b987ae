import Foundation
import Synchronization
import TestScheduling
import Testing

/// The trait that keeps long synchronous tests off Swift's shared pool does what it says.
@Suite struct OwnThreadTests {
    /// How many bodies under the trait run at this moment, and the most there ever were.
    static let running = Mutex((now: 0, most: 0))

    /// The name the kernel has for the calling thread, as `ps` and a debugger show it.
    /// (Foundation's `Thread.current.name` can still give the name of the pool thread that made it.)
    static func threadName() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
    }

    @Test(.blocking) func aSynchronousTestRunsOnAThreadMadeForIt() {
        #expect(OneThreadExecutor.isRunningOnOne, "on \(Self.threadName())")
    }

    @Test(.ownThread) func anAsyncTestRunsItsCodeAndItsChildTasksThere() async {
        #expect(OneThreadExecutor.isRunningOnOne, "on \(Self.threadName())")
        await Task.yield()
        #expect(OneThreadExecutor.isRunningOnOne, "on \(Self.threadName())")
        async let child = OneThreadExecutor.isRunningOnOne
        #expect(await child)
    }

    @Test func aTestWithoutTheTraitRunsOnTheSharedPool() {
        #expect(!OneThreadExecutor.isRunningOnOne)
    }

    /// Six cases that each hold their place for a while, started together: at most two run at once.
    @Test(.blocking, arguments: 0..<6) func atMostTwoRunAtOnce(_ index: Int) {
        Self.running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
        usleep(100_000)
        Self.running.withLock { $0.now -= 1 }
        #expect(Self.running.withLock { $0.most } <= 2)
    }
}

/// The trait given to a whole suite, as the suites that run child processes carry it.
@Suite(.serialized, .ownThread) struct OwnThreadSuiteTests {
    @Test func anAsyncTestOfTheSuiteRunsOnAThreadOfItsOwn() async {
        #expect(OneThreadExecutor.isRunningOnOne, "on \(OwnThreadTests.threadName())")
    }

    @Test func aSynchronousTestOfTheSuiteRunsOnAThreadOfItsOwn() {
        #expect(OneThreadExecutor.isRunningOnOne, "on \(OwnThreadTests.threadName())")
    }
}
