import CSQLite
import Dispatch
import Synchronization

/// Copies a database's write-ahead log into its file on a thread and a connection of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that takes the log past its limit, on
/// the writer's thread: the writer then waits while the log's pages are copied and both files
/// are synced to disk. For a writer that commits batch after batch (a device's initial sync),
/// those waits added up to a fifth of the sync, with the other core idle. Here the copy runs
/// beside the writer instead: a passive checkpoint never takes the write lock, so the writer's
/// next transaction goes on meanwhile (see `Database.checkpointLogInBackground`).
final class LogCheckpointer: @unchecked Sendable {
    // Safe to share: `connection` is used only on `queue`, which is serial, and `state` only
    // under its mutex; the writer's thread touches neither directly.
    private let queue: DispatchQueue
    private var connection: Database?
    private let state = Mutex(State())

    private struct State {
        /// A checkpoint is queued and has not started: another request needs no second one.
        var queued = false
        /// The log is long enough that the writer's next transaction waits for the checkpoint
        /// queued after the commit that made it so (`requestBeforeNextWrite()`).
        var due = false
        /// The last checkpoint's failure (a full disk, an I/O error), kept for whoever asks;
        /// what the log holds stays committed, and a later checkpoint copies it.
        var failure: SQLiteError?
    }

    /// Opens a second connection to the file `writer` has open, with its `synchronous`
    /// setting, since that decides whether a checkpoint syncs the file.
    init(for writer: Database) throws {
        var options = Database.Options()
        options.create = false
        let connection = try Database(path: writer.path, options: options)
        let synchronous = try writer.scalarInt("PRAGMA synchronous") ?? 1
        try connection.execute("PRAGMA synchronous = \(synchronous)")
        // Opened, it never waits for a lock: a passive checkpoint that finds one taken skips,
        // and the next request tries again.
        try connection.execute("PRAGMA busy_timeout = 0")
        self.connection = connection
        queue = DispatchQueue(label: "rapport.sqlite.checkpoint")
    }

    /// Queues a passive checkpoint, unless one is queued already; returns at once.
    func request() {
        let first = state.withLock { state -> Bool in
            defer { state.queued = true }
            return !state.queued
        }
        guard first else { return }
        queue.async { self.checkpoint() }
    }

    /// Queues a checkpoint, like `request()`, that the writer's next transaction waits for
    /// (`waitIfDue()`): a log that long must be copied before more is written to it, but the
    /// commit that made it so need not wait, and the last commit of a run (an initial sync's
    /// field index) then ends without waiting at all.
    func requestBeforeNextWrite() {
        state.withLock { $0.due = true }
        request()
    }

    /// Waits for the checkpoint `requestBeforeNextWrite()` queued, if one is due; the next
    /// transaction then writes the log from its beginning again.
    func waitIfDue() {
        guard state.withLock({ state -> Bool in
            defer { state.due = false }
            return state.due
        }) else { return }
        wait()
    }

    /// Whether the writer's next transaction waits for a checkpoint.
    var isDue: Bool { state.withLock { $0.due } }

    /// Runs a passive checkpoint after whatever is queued, and waits for it: the writer's
    /// next transaction then starts the log over from its beginning, unless a reader still
    /// reads an older snapshot.
    func checkpointAndWait() {
        queue.sync { self.checkpoint() }
    }

    /// Queues a last checkpoint, after which the connection is closed; with `wait`, returns
    /// only once both are done.
    func finish(wait: Bool) {
        // Writes from here on are checkpointed by SQLite itself: none waits for this one.
        state.withLock { $0.due = false }
        let work: @Sendable () -> Void = {
            self.checkpoint()
            self.connection?.close()
            self.connection = nil
        }
        if wait { queue.sync(execute: work) } else { queue.async(execute: work) }
    }

    /// Waits for whatever is queued.
    func wait() {
        queue.sync {}
    }

    /// The last checkpoint's failure, if it failed.
    var lastFailure: SQLiteError? { state.withLock { $0.failure } }

    private func checkpoint() {
        state.withLock { $0.queued = false }
        guard let connection else { return }
        do {
            _ = try connection.query("PRAGMA wal_checkpoint(PASSIVE)") { _ in () }
            state.withLock { $0.failure = nil }
        } catch let error as SQLiteError {
            state.withLock { $0.failure = error }
        } catch {
            state.withLock { $0.failure = SQLiteError(code: SQLITE_ERROR, message: "\(error)", sql: "PRAGMA wal_checkpoint(PASSIVE)", path: connection.path) }
        }
    }
}

/// Holds the closure `sqlite3_wal_hook` calls, for as long as the hook is set.
final class LogCommitHook {
    let handler: (Int) -> Void
    init(_ handler: @escaping (Int) -> Void) { self.handler = handler }
}

extension Database {
    /// Moves this connection's log checkpoints to a thread of their own, for a run of large
    /// write transactions (a pull from the start): after each commit that leaves the log
    /// `everyPages` pages long or longer, a passive checkpoint is queued there, and this
    /// thread goes on. So that the log does not grow for as long as the run, the transaction
    /// after a commit that finds it twice that long waits for a checkpoint of everything
    /// committed, which lets it write the log from its beginning again. Calling it twice is
    /// harmless.
    ///
    /// `checkpointLogInForeground` ends it; so does `close()`, which waits for the last checkpoint.
    public func checkpointLogInBackground(everyPages: Int) throws {
        guard logCommitHook == nil, let db = handle.pointer else { return }
        let checkpointer = try LogCheckpointer(for: self)
        let limit = max(1, everyPages)
        let hook = LogCommitHook { frames in
            if frames >= 2 * limit {
                checkpointer.requestBeforeNextWrite()
            } else if frames >= limit {
                checkpointer.request()
            }
        }
        // Replaces SQLite's automatic checkpoint, which is a hook of the same kind.
        sqlite3_wal_hook(db, { context, _, _, frames in
            guard let context else { return SQLITE_OK }
            Unmanaged<LogCommitHook>.fromOpaque(context).takeUnretainedValue().handler(Int(frames))
            return SQLITE_OK
        }, Unmanaged.passUnretained(hook).toOpaque())
        logCommitHook = hook
        logCheckpointer = checkpointer
    }

    /// Ends `checkpointLogInBackground`: the log is copied once more on the checkpoint's own
    /// thread, which this one does not wait for, and SQLite's automatic checkpoint resumes
    /// with `autocheckpointPages`. Does nothing when checkpoints are not in the background.
    public func checkpointLogInForeground(autocheckpointPages: Int) throws {
        guard logCommitHook != nil, let checkpointer = logCheckpointer else { return }
        // The pragma installs SQLite's own hook in place of this one.
        try execute("PRAGMA wal_autocheckpoint = \(autocheckpointPages)")
        logCommitHook = nil
        // Kept until it is done, so that `close()` can wait for it.
        checkpointer.finish(wait: false)
    }

    /// Whether checkpoints run in the background (`checkpointLogInBackground`).
    public var checkpointsLogInBackground: Bool { logCommitHook != nil }

    /// Waits until the background checkpoint has copied what was committed before this call
    /// (see `checkpointLogInBackground`), and throws the error it failed with, if it did;
    /// returns at once when there is none.
    public func waitForBackgroundCheckpoint() throws {
        guard let checkpointer = logCheckpointer else { return }
        if logCommitHook != nil { checkpointer.checkpointAndWait() } else { checkpointer.wait() }
        if let failure = checkpointer.lastFailure { throw failure }
    }
}
