import Foundation
import Synchronization
import Testing

/// Runs a test's body on a thread of its own instead of Swift's shared pool.
///
/// The shared pool has one thread per core: two on the machines the tests run on. A test that
/// blocks a pool thread, running for long without a suspension or waiting for a child process,
/// holds it for as long as that lasts. Two property runs side by side held the whole pool for a
/// minute, and every in-process client and server of every other test stood still with them
/// until their handshakes timed out. Under this trait the test's own code runs on a thread
/// made for it (a task executor preference), and its child tasks run there too.
///
/// - `blocking`: for a synchronous test, which blocks its thread from start to end while it
///   computes, writes stores or waits for PostgreSQL. At most two run at a time, the number the
///   pool ran before, which keeps their memory and their share of the two cores where it was.
/// - `ownThread`: for an async test that waits for child processes in synchronous calls; any
///   number at once, as such a test spends its time waiting.
///
/// An async test under either runs all of its code on one thread: it must not block that
/// thread waiting for work of its own child tasks.
public struct OwnThreadTrait: TestTrait, SuiteTrait, TestScoping {
    /// Whether the test waits for one of the places that `blocking` tests share.
    let takesAPlace: Bool

    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        if takesAPlace { await OwnThreadTrait.places.acquire() }
        defer { if takesAPlace { OwnThreadTrait.places.release() } }
        let executor = OneThreadExecutor()
        defer { executor.finish() }
        // A child task made with the preference is enqueued on the executor from its start, so
        // even a synchronous body never begins on the pool thread that runs this scope. The
        // child ends before this scope does, so `function` never outlives it.
        try await withoutActuallyEscaping(function) { function in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask(executorPreference: executor) { try await function() }
                try await group.next()
            }
        }
    }

    /// How many `blocking` tests run at once.
    static let places = AsyncSemaphore(count: 2)
}

extension Trait where Self == OwnThreadTrait {
    /// A thread of the test's own; see `OwnThreadTrait`.
    public static var ownThread: OwnThreadTrait { OwnThreadTrait(takesAPlace: false) }

    /// A thread of the test's own, at most two such tests at a time; see `OwnThreadTrait`.
    public static var blocking: OwnThreadTrait { OwnThreadTrait(takesAPlace: true) }
}

/// A counting semaphore whose waiters suspend instead of blocking a thread.
final class AsyncSemaphore: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(count: Int) { state = Mutex(State(free: count)) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state -> Bool in
                if state.free > 0 { state.free -= 1; return true }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Hands the place to the longest waiter, if any.
    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty { state.free += 1; return nil }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// A task executor with one thread, which ends when the executor is finished and its last job
/// has run. A job that arrives after that goes to Swift's shared pool, so no job is ever lost.
public final class OneThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `jobs`, `finished` and `running` are read and written only with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finished = false
    private var running = true

    /// The name of the executor's thread, as `ps` and a debugger show it.
    public static let threadName = "own-thread-test"

    /// Marks the threads of these executors, for `isRunningOnOne`.
    private static let marker: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Whether the caller runs on the thread of one of these executors. (A thread's name is no
    /// proof: Foundation does not always give it to the system.)
    public static var isRunningOnOne: Bool { pthread_getspecific(marker) != nil }

    init() {
        Thread { [self] in work() }.start()
    }

    public func enqueue(_ job: UnownedJob) {
        condition.lock()
        if running {
            jobs.append(job)
            condition.signal()
            condition.unlock()
        } else {
            condition.unlock()
            globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Lets the thread end once it has run every job it was given.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func work() {
        // Named from the thread itself: on Linux a name given before the start is not applied,
        // and the thread keeps the name of the pool thread that made it.
        Thread.current.name = Self.threadName
        pthread_setspecific(Self.marker, UnsafeRawPointer(bitPattern: 1))
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            if jobs.isEmpty {
                running = false
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
