import Access
import CSQLite
import Foundation
import SQLite
import SyncModel

/// Where a batch of remote record states comes from, which decides what stays dirty.
public enum ApplyOrigin: Sendable {
    /// From the replica this one syncs up to (a device's server, a branch's centre). A record
    /// whose merged state equals what upstream sent has nothing left to push.
    case upstream
    /// From a replica that syncs up to this one (a device pushing to its server).
    case downstream
}

/// What applying a batch did.
public struct ApplyReport: Sendable {
    /// One outcome per incoming state, in order.
    public var outcomes: [MergeOutcome]
    /// Conflicts found while merging; also written to the conflict log.
    public var conflicts: [Conflict]
    /// The store's change sequence after the batch.
    public var sequence: Int64

    public init(outcomes: [MergeOutcome], conflicts: [Conflict], sequence: Int64) {
        self.outcomes = outcomes
        self.conflicts = conflicts
        self.sequence = sequence
    }
}

/// One entry of the change sequence.
public struct Change: Sendable, Hashable {
    /// The sequence number of the record's latest change.
    public var sequence: Int64
    public var state: RecordState
}

/// One entry of the change sequence, as the row holds it: what a replica sends a peer.
public struct EncodedChange: Sendable, Hashable {
    /// The sequence number of the record's latest change.
    public var sequence: Int64
    public var record: EncodedRecord
}

/// The persistent replica of a set of records: the same code on a device, a branch and the server.
///
/// Every local write and every applied batch runs in one SQLite transaction, so a failure
/// half-way leaves no trace. A `ReplicaStore` belongs to one thread at a time (it is not
/// `Sendable`); a server puts each tenant's store behind a serial executor.
///
/// Several handles may write one file at once, in one process or several (a server and an
/// admin command, later several server nodes): each write transaction takes SQLite's write lock
/// first (`BEGIN IMMEDIATE`) and then reads the replica header (counter, sequence, clock) as
/// committed, so no handle works from its memory of them and no dot or sequence number is ever
/// issued twice. Sequence numbers therefore also follow commit order across handles, which is
/// what lets a peer's checkpoint ("everything after N") skip nothing.
public final class ReplicaStore {
    /// How a store is opened.
    public struct Options: Sendable {
        /// The record types this store accepts.
        public var schema: Schema
        /// The id a new store takes; `nil` makes a random one. An existing store keeps its own.
        public var replicaID: ReplicaID?
        /// Milliseconds since 1970; injectable so tests can skew the clock.
        public var wallClock: @Sendable () -> UInt64 = HybridLogicalClock.systemMilliseconds
        /// `.full` also survives power loss, at a cost per commit.
        public var synchronous: Database.Synchronous = .normal
        /// Whether changes pushed from downstream replicas are themselves queued for upstream
        /// (a branch office that forwards its devices' changes to the centre).
        public var forwardsDownstreamChanges = false
        /// The checks that need the store's data (references, a tenant's configuration); see
        /// `RecordRules`. `nil` checks the schema alone.
        public var rules: (any RecordRules)?
        /// Text fields kept in a lookup table next to the records, in the same transaction, so
        /// that `records(ofType:where:equals:)` on them reads an index instead of every record
        /// of the type. Any type that has a field of that name is indexed on it.
        public var indexedFields: Set<String> = []
        /// Text fields whose words are indexed for `search(_:ofType:)`, such as names.
        public var searchFields: Set<String> = []
        /// What follows from changes (see `ChangeEffects`); `nil` for none.
        public var effects: (any ChangeEffects)?

        public init(schema: Schema, replicaID: ReplicaID? = nil) {
            self.schema = schema
            self.replicaID = replicaID
        }
    }

    /// Where the store is, for errors and logs: its file, or the database server and tenant.
    public let path: String
    /// The id stamped on this replica's writes.
    public let replicaID: ReplicaID
    public let schema: Schema
    let db: any SQLDatabase
    /// How this store's rows are told apart in a database shared by tenants (see `TenantRows`).
    let tenant: TenantRows
    let options: Options

    /// The PostgreSQL channel on which every committed write transaction of a store in a shared
    /// database announces `"<tenant> <sequence>"`.
    public static let changesChannel = "rapport_changes"

    /// The store's SQLite file; `nil` for a store in a database shared by tenants (PostgreSQL),
    /// whose file-level upkeep (page cache, checkpoints, vacuum) is the database's own.
    var sqliteFile: Database? { db as? Database }

    /// Whether this store passes what its downstream replicas push on upstream: a branch
    /// office's store (`Options.forwardsDownstreamChanges`).
    public var relaysDownstream: Bool { options.forwardsDownstreamChanges }
    private var counter: UInt64
    private var sequence: Int64
    private var clock: HybridLogicalClock
    /// Whether upstream announced a retention (it purges tombstones), read once (`upstreamPurges`).
    var upstreamPurgesCache: Bool?
    /// The statements run once per record of a batch, held here so that a batch does not look
    /// them up by their SQL text (hashing it) for every record.
    private var presenceStatement: (any SQLStatement)?
    private var insertStatement: (any SQLStatement)?
    private var insertIfNewStatement: (any SQLStatement)?
    var indexInsertStatement: (any SQLStatement)?
    /// The types whose index entries are deferred (`deferFieldIndex(of:)`), read from the file
    /// at the start of every write transaction, since another handle may have built them.
    var deferredIndexTypes: Set<String> = []
    /// While a pull gathers index entries (`gatherFieldIndex()`): the live records this handle
    /// stored as they came, per deferred type. `nil` otherwise, and once any other write made
    /// the gather incomplete.
    var gatheredIndexWrites: [String: Int]?
    /// What `RecordRules` derived from the store's configuration records (`RecordLookup.cached`).
    var rulesCache: [String: Any] = [:]
    /// The connection's page cache and checkpoint interval from before `beginBulkWrite()`,
    /// while a bulk write runs.
    var settingsBeforeBulkWrite: (cacheSize: Int64, autocheckpoint: Int64)?
    private let configurationTypes: Set<String>
    /// See `FieldIndex.swift`.
    let indexedFieldsByType: [String: IndexedFields]
    private let feed = ChangeFeed()
    /// The open write transaction, if any: nested writes join the outermost one.
    private var transactionState: TransactionState?
    /// How many records the last write transaction wrote: the next one makes room for as many
    /// in its maps at once. An import writes batch after batch of the same size, and each
    /// batch's maps, grown a record at a time, were rehashed over and over.
    private var lastTransactionRecords = 0
    /// Whether the innermost `write` running is the transaction's outermost, whose own
    /// rollback undoes all it writes: `atomically(if:_:)` then needs no savepoint.
    private var innermostWriteIsOutermost = false
    /// Whether a write transaction of this handle is open.
    var isWriting: Bool { transactionState != nil }

    /// Forgets what the open transaction found of records (`TransactionState.found`), for
    /// code that removes rows from `records`.
    func forgetFoundRecords() {
        transactionState?.found = [:]
    }

    /// The rights this replica's own writes are checked against before they are kept (see
    /// `LocalWriteCheck`); `nil` checks none. A device sets it when it learns its user's rights
    /// (connecting, or opening with the rights it last received), so it can change at any time
    /// between transactions; one set inside a transaction applies when that transaction ends.
    public var localWriteCheck: (any LocalWriteCheck)?

    /// What a transaction found of a record's row: none, or its type and whether it is live.
    private enum FoundRecord {
        case absent
        case present(type: String, live: Bool)
    }

    /// What the outermost write transaction collects until it commits.
    private struct TransactionState {
        /// Identifies the records one local transaction wrote, so a push keeps them together.
        var id: Int64
        var origin: StoreChanges.Origin = .local
        /// Records written locally or taken from downstream, in order, with their latest
        /// states: checked when the transaction ends, for required fields and the store's rules.
        var toCheck: [UUID: RecordState] = [:]
        var toCheckOrder: [UUID] = []
        /// Records this replica wrote itself, with their state before the transaction first
        /// wrote them (`nil`: created by it), for `localWriteCheck`.
        var localBefore: [UUID: RecordState?] = [:]
        var localOrder: [UUID] = []
        /// A nested write rolled back to its savepoint, so some states in `toCheck` may be
        /// gone: the checks read the records again instead.
        var reloadToCheck = false
        /// Records written locally or taken from downstream since the last round of effects,
        /// with their state before (`nil`: new) and where the change came from; collected only
        /// when the store has effects.
        var effectsBefore: [UUID: (state: RecordState?, origin: StoreChanges.Origin, byEffects: Bool)] = [:]
        var effectsOrder: [UUID] = []
        /// The latest state of each of those records, when the write had it at hand.
        var effectsAfter: [UUID: RecordState] = [:]
        /// Whether the effects are writing now: their changes are marked as theirs.
        var runningEffects = false
        /// Records changed by anything, for observers; collected only when there are some.
        var tracksChanges: Bool
        var changed: [UUID: String] = [:]
        var changedOrder: [UUID] = []
        /// What `load` and `recordType(of:live:)` found of records, kept up to date by this
        /// transaction's writes, so it is not searched for again: one reference is looked up
        /// several times (an import finds a row's account, then the rules check it), and an id
        /// found absent is then created (`create` need not search for it a second time).
        /// Emptied when a savepoint rolls back or a row is removed.
        var found: [UUID: FoundRecord] = [:]

        init(id: Int64, tracksChanges: Bool, expectedRecords: Int) {
            self.id = id
            self.tracksChanges = tracksChanges
            guard expectedRecords > 16 else { return }
            toCheck.reserveCapacity(expectedRecords)
            localBefore.reserveCapacity(expectedRecords)
            effectsBefore.reserveCapacity(expectedRecords)
            effectsAfter.reserveCapacity(expectedRecords)
            found.reserveCapacity(expectedRecords)
        }

        mutating func noteChange(_ id: UUID, type: String) {
            guard tracksChanges else { return }
            if changed.updateValue(type, forKey: id) == nil { changedOrder.append(id) }
        }
    }

    /// Opens the store at `path`, creating it when the file does not exist.
    ///
    /// - Throws: `ReplicaStoreError.notAStore` for a foreign or non-SQLite file,
    ///   `.corrupt` for a damaged one, `.newerSchema` for one written by a newer program;
    ///   in each case the file is left as it was.
    public convenience init(path: String, options: Options) throws {
        let db = try Self.openFile(path, synchronous: options.synchronous)
        try self.init(opened: db, tenant: .ownFile, path: path, options: options)
    }

    /// The store file at `path` as a database brought to this program's schema, and nothing
    /// else of opening a store: its field index, built for whichever fields the handles that
    /// serve it index, is left as it is. What copying a store (`copyStore`) reads and writes;
    /// `init(path:options:)` is this, then the replica and its index.
    ///
    /// - Throws: as `init(path:options:)`.
    public static func openFile(_ path: String, synchronous: Database.Synchronous = .normal) throws -> Database {
        var dbOptions = Database.Options()
        dbOptions.walMode = false  // not before we know the file is ours: switching modes writes to it
        dbOptions.synchronous = synchronous
        let db: Database
        do {
            db = try Database(path: path, options: dbOptions)
            let applicationID = try db.fetchInt("PRAGMA application_id") ?? 0
            let objects = try db.fetchInt("SELECT count(*) FROM sqlite_master") ?? 0
            if applicationID != StoreSchema.applicationID && !(applicationID == 0 && objects == 0) {
                throw ReplicaStoreError.notAStore(path: path, reason: "the SQLite file belongs to another application (id \(applicationID))")
            }
            let version = try db.userVersion
            guard version <= StoreSchema.migrations.count else {
                throw ReplicaStoreError.newerSchema(path: path, found: version, supported: StoreSchema.migrations.count)
            }
            // Before the first table: a file takes its vacuum mode when it is created
            // (Retention.swift gives free pages back with it).
            if objects == 0 { try db.execute("PRAGMA auto_vacuum = INCREMENTAL") }
            try db.execute("PRAGMA journal_mode=WAL")
            if objects == 0 { try db.execute("PRAGMA application_id = \(StoreSchema.applicationID)") }
            try db.migrate(StoreSchema.migrations)
        } catch let error as SQLiteError where error.code == SQLITE_NOTADB {
            throw ReplicaStoreError.notAStore(path: path, reason: error.message)
        } catch let error as SQLiteError where error.isCorruption {
            throw ReplicaStoreError.corrupt(path: path, reason: error.description)
        }
        return db
    }

    /// Opens tenant `tenant`'s store in a PostgreSQL database shared by tenants, creating its
    /// replica when the tenant has none yet. The database holds the store's tables already
    /// (`postgresMigrations`, run by whoever connects first: `migrate("store", ...)`).
    ///
    /// Several connections, in one process or on several nodes, may hold the same tenant's
    /// store: each write transaction takes a row lock on the tenant's replica header before it
    /// reads it, so the tenant's writers queue there and no dot or sequence number is issued
    /// twice (see `write`).
    ///
    /// - Throws: `ReplicaStoreError.notAStore` for a tenant id that is not a slug, a database
    ///   that is not PostgreSQL or has no store tables; `.newerSchema` for tables of a newer
    ///   program.
    public convenience init(database: any SQLDatabase, tenant slug: String, options: Options) throws {
        let path = "\(database.location) tenant \(TenantID.quoted(slug))"
        guard database.dialect == .postgres, let tenant = TenantRows.shared(slug) else {
            throw ReplicaStoreError.notAStore(path: path, reason: TenantID.problem(with: slug) ?? "tenant stores share a PostgreSQL database, not \(database.dialect)")
        }
        let hasSchemaTable = try database.fetchInt("SELECT to_regclass('rapport_schema') IS NOT NULL") == 1
        let version = hasSchemaTable ? Int(try database.fetchInt("SELECT version FROM rapport_schema WHERE component = 'store'") ?? 0) : 0
        guard version > 0 else { throw ReplicaStoreError.notAStore(path: path, reason: "the database has no store tables (run the store's migrations first)") }
        guard version <= Self.postgresMigrations.count else {
            throw ReplicaStoreError.newerSchema(path: path, found: version, supported: Self.postgresMigrations.count)
        }
        try self.init(opened: database, tenant: tenant, path: path, options: options)
    }

    /// The rest of opening, on a database whose tables are in place.
    private init(opened db: any SQLDatabase, tenant: TenantRows, path: String, options: Options) throws {
        self.path = path
        self.db = db
        self.tenant = tenant
        self.options = options
        self.schema = options.schema
        self.configurationTypes = options.rules?.configurationTypes ?? []
        self.indexedFieldsByType = Self.indexedFields(of: options.schema, options: options)

        let identity = try db.fetch("SELECT replica_id, counter, sequence, clock FROM replica\(tenant.only)") {
            (try $0.string(0), try $0.int64(1), try $0.int64(2), try $0.int64(3))
        }.first
        if let (id, counter, sequence, clock) = identity {
            do {
                replicaID = try ReplicaID(id)
                guard counter >= 0, sequence >= 0 else { throw ModelError.malformedEncoding("negative counter or sequence") }
                self.counter = UInt64(counter)
                self.sequence = sequence
                self.clock = HybridLogicalClock(last: try HLCTimestamp(signed: clock), wallClock: options.wallClock)
            } catch {
                throw ReplicaStoreError.corrupt(path: path, reason: "replica identity row: \(error)")
            }
        } else {
            counter = 0
            sequence = 0
            clock = HybridLogicalClock(wallClock: options.wallClock)
            // Another process may create the same new file at the same moment: the first row wins.
            try db.run("""
                INSERT INTO replica (\(tenant.column)singleton, replica_id, counter, sequence, clock) VALUES (\(tenant.value)1, ?, 0, 0, 0)
                ON CONFLICT DO NOTHING
                """, [(options.replicaID ?? ReplicaID.random()).rawValue])
            replicaID = try ReplicaID(try db.fetch("SELECT replica_id FROM replica\(tenant.only)", row: { try $0.string(0) }).first ?? "")
        }
        try ensureFieldIndex()
    }

    /// Closes the file. The store must not be used afterwards.
    public func close() {
        feed.finish()
        presenceStatement = nil
        insertStatement = nil
        insertIfNewStatement = nil
        indexInsertStatement = nil
        db.close()
    }

    /// The sequence number of the latest change committed to this store, by this handle or any
    /// other (inside a write transaction: including that transaction's own changes).
    public var lastSequence: Int64 {
        get throws { transactionState == nil ? try committedHeader().sequence : sequence }
    }

    /// The last timestamp this replica's clock issued or adopted, as committed by any handle
    /// (inside a write transaction: including that transaction's own).
    public var lastTimestamp: HLCTimestamp {
        get throws { transactionState == nil ? max(clock.last, try committedHeader().clock) : clock.last }
    }

    /// Whether the store this handle was opened on has another replica id now: a restore
    /// replaced it (its file's pages, or a tenant's rows in PostgreSQL) while the handle was
    /// open. Such a handle takes no more writes (`ReplicaStoreError.replaced`) and would answer
    /// reads under its old identity; open the store again.
    public func isReplaced() throws -> Bool {
        try db.fetch("SELECT replica_id FROM replica\(tenant.only)") { try $0.string(0) }.first != replicaID.rawValue
    }

    /// The replica header as the file holds it: what other handles have committed.
    ///
    /// - Parameter lock: in a write transaction: refuses a store whose tenant moved away
    ///   (`ReplicaStoreError.moved`) or that a restore replaced under this handle (`.replaced`),
    ///   and on PostgreSQL locks the header row until the
    ///   transaction ends, so the tenant's writers on every connection and node queue here, as
    ///   SQLite's write lock (`BEGIN IMMEDIATE`) makes them queue for a file; each then reads
    ///   the header as the one before it committed it.
    private func committedHeader(lock: Bool = false) throws -> (counter: UInt64, sequence: Int64, clock: HLCTimestamp) {
        let forUpdate = lock && db.dialect == .postgres ? " FOR UPDATE" : ""
        let statement = try db.statement("SELECT counter, sequence, clock, moved_to, replica_id FROM replica WHERE \(tenant.and)singleton = 1\(forUpdate)")
        statement.reset()
        defer { statement.reset() }
        guard try statement.step() else { throw ReplicaStoreError.corrupt(path: path, reason: "the replica identity row is missing") }
        if lock {
            if let movedTo = try statement.optionalString(3) { throw ReplicaStoreError.moved(path: path, to: movedTo) }
            // A restore gave the store another identity under this handle: writing on with this
            // one's counter would issue its dots again.
            let identity = try statement.string(4)
            guard identity == replicaID.rawValue else { throw ReplicaStoreError.replaced(path: path, by: identity) }
        }
        let (counter, sequence) = (try statement.int64(0), try statement.int64(1))
        guard counter >= 0, sequence >= 0, let clock = try? HLCTimestamp(signed: statement.int64(2)) else {
            throw ReplicaStoreError.corrupt(path: path, reason: "replica identity row: negative counter, sequence or clock")
        }
        return (UInt64(counter), sequence, clock)
    }

    /// Takes the header as committed, under the write lock, at the start of every write
    /// transaction. Another handle's commits move it; what the rules derived from configuration
    /// records may then be stale too, since that handle may have changed one.
    private func adoptCommittedHeader() throws {
        let committed = try committedHeader(lock: true)
        if committed.sequence != sequence {
            rulesCache = [:]
            gatheredIndexWrites = nil  // another handle wrote: records no gather saw
        }
        counter = committed.counter
        sequence = committed.sequence
        clock.adopt(issued: committed.clock)
    }

    // MARK: Transactions

    /// Runs `body`, the SQL writes of a `write(savepoint: false)`, in a savepoint when it makes
    /// more than one (`needed`), so that they stand or fall together. One statement is atomic
    /// on SQLite by itself; on PostgreSQL a failed statement aborts the whole transaction
    /// unless a savepoint holds it, so there `body` always gets one. A write that is its
    /// transaction's outermost needs none: the transaction stands or falls with it.
    func atomically<T>(if needed: Bool, _ body: () throws -> T) throws -> T {
        (needed || sqliteFile == nil) && !innermostWriteIsOutermost ? try db.transaction(.immediate, body) : try body()
    }

    /// Runs `body` in one write transaction, rolling back the in-memory counters with SQLite's
    /// rollback so that memory and file never disagree.
    ///
    /// The outermost write also checks what local writes left (required fields, `RecordRules`)
    /// before it commits, and tells observers what changed once it has committed.
    ///
    /// - Parameter savepoint: whether a write nested in a transaction runs in a savepoint of its
    ///   own, so that a failure undoes its SQL writes. `false` for a `body` that keeps them
    ///   atomic itself (`atomically(if:_:)`): on SQLite a savepoint copies every page it then
    ///   writes into a statement journal first, and a store write per record, each in its own
    ///   savepoint, copied some 4 KB pages per record (an import of 62,500 rows wrote about
    ///   800 MB into temporary files that way).
    func write<T>(savepoint: Bool = true, _ body: () throws -> T) throws -> T {
        var saved = (counter, sequence, clock)
        let outermost = transactionState == nil
        func written() throws -> T {
            let enclosing = innermostWriteIsOutermost
            innermostWriteIsOutermost = outermost
            defer { innermostWriteIsOutermost = enclosing }
            if outermost {
                try adoptCommittedHeader()
                deferredIndexTypes = try committedDeferredIndexTypes()
                saved = (counter, sequence, clock)
                transactionState = TransactionState(id: sequence + 1, tracksChanges: feed.hasObservers,
                                                    expectedRecords: min(lastTransactionRecords, 4_096))
            }
            let result = try body()
            if outermost {
                // Rights first: a write the user may not make at all is refused as such,
                // whatever its effects; then the effects' own writes are checked too.
                try checkLocalWrites()
                let checked = transactionState?.localOrder.count ?? 0
                try runEffects()
                try checkLocalWrites(from: checked)
                try checkWrittenRecords()
            }
            // Once, by the outermost write: a savepoint rolled back restores the counters in
            // memory, so they hold what the transaction commits. On PostgreSQL each update of
            // the one header row in a transaction leaves a version the next must step over: a
            // header written per record made an import of n rows cost n² of them.
            if outermost, counter != saved.0 || sequence != saved.1 || clock.last != saved.2.last {
                try db.run("UPDATE replica SET counter = ?, sequence = ?, clock = ? WHERE \(tenant.and)singleton = 1",
                           [Int64(counter), sequence, clock.last.signedValue])
            }
            if outermost, sequence != saved.1, let slug = tenant.slug {
                // Delivered when the transaction commits, to every node listening: one per
                // transaction, so a node's live devices hear of another node's commits at once.
                try db.run("SELECT pg_notify('\(Self.changesChannel)', ?)", ["\(slug) \(sequence)"])
            }
            return result
        }
        let committed: TransactionState?
        let result: T
        do {
            result = try savepoint || outermost ? db.transaction(.immediate, written) : written()
            committed = outermost ? transactionState : nil
            if outermost {
                lastTransactionRecords = transactionState?.toCheckOrder.count ?? 0
                transactionState = nil
            }
        } catch {
            (counter, sequence, clock) = saved
            rulesCache = [:]  // it may hold what the rolled back records configured
            gatheredIndexWrites = nil  // it counted rolled back records
            if outermost {
                transactionState = nil
            } else {
                transactionState?.reloadToCheck = true
                transactionState?.found = [:]  // it may have found what the savepoint wrote or removed
                // A deferral the savepoint undid must not keep this transaction from indexing.
                if let committed = try? committedDeferredIndexTypes() { deferredIndexTypes = committed }
            }
            if let error = error as? ModelError { throw ReplicaStoreError.invalidRecord(error) }
            throw error
        }
        if let committed, !committed.changedOrder.isEmpty {
            feed.publish(StoreChanges(origin: committed.origin, records: committed.changedOrder.map {
                ChangedRecord(id: $0, type: committed.changed[$0]!)
            }))
        }
        return result
    }

    /// The end of a transaction: every live record it wrote locally or took from downstream
    /// must hold its required fields and pass the store's rules, as it is now. So a record may
    /// be completed, or the record it references created, later in the same transaction or
    /// batch than the write that made it; and records that reference each other (a lead and
    /// the opportunity converted from it) can be written at all.
    private func checkWrittenRecords() throws {
        guard let state = transactionState else { return }
        for id in state.toCheckOrder {
            guard let record = state.reloadToCheck ? try self.record(id) : state.toCheck[id], !record.isDeleted else { continue }
            try schema.checkRequired(record)
            try options.rules?.check(record, in: RecordLookup(self))
        }
    }

    /// The end of a transaction, before the rules: every record this replica wrote must be a
    /// change `localWriteCheck` allows, judged as the transaction leaves it and against the
    /// store as the transaction leaves it, so a record may be given to its owner, or the record
    /// it hangs off created, later in the same transaction. A refusal by rights comes first:
    /// when a write is not allowed at all, whether it is complete does not matter.
    private func checkLocalWrites(from start: Int = 0) throws {
        guard let check = localWriteCheck, let state = transactionState, start < state.localOrder.count else { return }
        let lookup = RecordLookup(self)
        for id in state.localOrder[start...] {
            // States are read again: `toCheck` holds live records only, and a nested write
            // rolled back to its savepoint may have undone what was noted.
            guard let after = try record(id) else { continue }  // its creation was rolled back
            let before = state.localBefore[id] ?? nil
            if after == before { continue }  // every write to it was rolled back
            do {
                try check.check(before: before, after: after, in: lookup)
            } catch let denied as AccessDenied {
                throw ReplicaStoreError.accessDenied(denied)
            }
        }
    }

    /// Notes that this replica writes the record `id`, which stood as `before` until now.
    /// Only the first write of a transaction counts: the check judges the transaction whole.
    private func noteLocalWrite(_ id: UUID, before: RecordState?) {
        guard transactionState != nil, transactionState?.localBefore[id] == nil else { return }
        transactionState?.localBefore[id] = .some(before)
        transactionState?.localOrder.append(id)
    }

    /// Notes that a record changes, locally or from downstream, for the next round of effects.
    /// Only the first change since the last round counts: effects see each record's change
    /// whole.
    private func noteForEffects(_ id: UUID, before: RecordState?, after: RecordState?, origin: StoreChanges.Origin) {
        guard options.effects != nil, transactionState != nil else { return }
        transactionState?.effectsAfter[id] = after
        guard transactionState?.effectsBefore[id] == nil else { return }
        let byEffects = transactionState?.runningEffects == true
        transactionState?.effectsBefore[id] = (before, origin, byEffects)
        transactionState?.effectsOrder.append(id)
    }

    /// Runs the store's effects on what the open write transaction changed so far, so that its
    /// caller reads what follows from its writes before the transaction ends (a typed API that
    /// returns the record it wrote). What it changes afterwards has its effects when the
    /// transaction ends, as usual. Outside a transaction, or without effects, does nothing.
    ///
    /// Effects that throw (a refusal) leave what they wrote before it in the transaction, as
    /// they do when it ends: its caller rolls back the transaction, or a savepoint of its own
    /// around the writes the effects follow from. No savepoint here: the effects of an
    /// import's batch touch pages all over the file, and a savepoint copies each first.
    public func settleEffects() throws {
        guard transactionState != nil else { return }
        try write(savepoint: false) { try runEffects() }
    }

    /// The end of a transaction, before its checks: runs the store's effects on what the
    /// transaction changed, then on what they changed, round by round.
    private func runEffects() throws {
        guard let effects = options.effects, transactionState?.runningEffects == false else { return }
        transactionState?.runningEffects = true
        defer { transactionState?.runningEffects = false }
        for _ in 0..<Self.maxEffectRounds {
            guard let state = transactionState, !state.effectsOrder.isEmpty else { return }
            // Emptied keeping their room: the next round of an import's batch is as large.
            transactionState?.effectsBefore.removeAll(keepingCapacity: true)
            transactionState?.effectsOrder.removeAll(keepingCapacity: true)
            transactionState?.effectsAfter.removeAll(keepingCapacity: true)
            var changes: [RecordChange] = []
            changes.reserveCapacity(state.effectsOrder.count)
            for id in state.effectsOrder {
                // Read again where the write did not keep the state, or where a nested write
                // rolled back to its savepoint may have undone it.
                let kept = state.reloadToCheck ? nil : state.effectsAfter[id]
                guard let noted = state.effectsBefore[id], let after = try kept ?? record(id), after != noted.state else { continue }
                changes.append(RecordChange(before: noted.state, after: after, origin: noted.origin, isEffect: noted.byEffects))
            }
            if !changes.isEmpty { try effects.apply(changes, in: self) }
        }
    }

    /// Notes a record's state for `checkWrittenRecords`.
    private func noteForChecks(_ state: RecordState) {
        if transactionState?.toCheck.updateValue(state, forKey: state.id) == nil {
            transactionState?.toCheckOrder.append(state.id)
        }
    }

    /// Checks the values of one local write to a record of `type`: against the schema, or, for
    /// a field the schema does not declare, whether the store's rules declare it (a tenant's
    /// custom field; its value is checked with the record when the transaction ends). The type
    /// is found once for all the fields: an import writes every field of every row through here.
    private func checkLocalValues(type: String, record: UUID, _ values: [String: FieldValue]) throws {
        guard let recordType = schema.types[type] else { throw ModelError.unknownRecordType(type) }
        var extraFields: Set<String>?
        for (field, value) in values {
            guard let kind = recordType.fields[field] else {
                if extraFields == nil { extraFields = try options.rules?.extraFields(ofType: type, in: RecordLookup(self)) ?? [] }
                guard extraFields!.contains(field) else { throw ModelError.invalidFieldName(record: record.uuidString, field: field) }
                continue
            }
            try Schema.checkWrite(value, of: recordType, field: field, kind: kind, record: record.uuidString)
        }
    }

    /// A stream of the records each committed transaction changed: local writes and batches
    /// from sync alike, so a screen showing them refreshes when a sync brings new data. The
    /// stream ends when the store closes or the observer stops iterating. It buffers without
    /// bound (a screen must not miss a change), so an observer keeps reading or lets it go.
    public func observeChanges() -> AsyncStream<StoreChanges> {
        feed.subscribe()
    }

    /// Takes the next change sequence number for a change no record carries (a resync that
    /// dropped records, SPEC 1.8), so peers whose checkpoint is below it can be told.
    func takeSequenceNumber() -> Int64 {
        sequence += 1
        return sequence
    }

    /// A fresh dot and timestamp for one local write.
    func nextWrite() throws -> (Dot, HLCTimestamp) {
        counter += 1
        return (try Dot(replica: replicaID, counter: counter), clock.now())
    }

    // MARK: Rows

    struct StoredRecord {
        var sequence: Int64
        var type: String
        var isDirty: Bool
        var vector: VersionVector
    }

    /// Reads the row of `id`: the header always, the full state only when `decodeState` is set.
    func load(_ id: UUID, decodeState: Bool) throws -> (StoredRecord, RecordState?)? {
        let statement = try db.statement("SELECT seq, type, dirty, vector, state FROM records WHERE \(tenant.and)id = ?")
        statement.reset()
        try statement.bind(uuid: id, at: 1)
        defer { statement.reset() }
        guard try statement.step() else {
            transactionState?.found[id] = .absent
            return nil
        }
        return try decoding(record: id) {
            let type = try statement.string(1)
            let vector = try statement.withBytes(3) { try RecordCodec.decodeVector($0) }
            let stored = StoredRecord(sequence: try statement.int64(0), type: type, isDirty: try statement.int64(2) != 0, vector: vector)
            guard decodeState else { return (stored, nil) }
            let state = try statement.withBytes(4) { try RecordCodec.decodeState(id: id, type: type, vector: vector, $0) }
            return (stored, state)
        }
    }

    /// What `apply` needs to know about the local copy of an incoming record.
    struct Presence {
        var sequence: Int64
        var type: String
        var isDirty: Bool
        /// `nil` when the stored vector is byte for byte the incoming one, which is the common
        /// case for duplicates and is decided without decoding anything.
        var vector: VersionVector?
    }

    func presence(of id: UUID, encodedVector: [UInt8]) throws -> Presence? {
        if presenceStatement == nil { presenceStatement = try db.statement("SELECT seq, type, dirty, vector FROM records WHERE \(tenant.and)id = ?") }
        let statement = presenceStatement!
        statement.reset()
        try statement.bind(uuid: id, at: 1)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return try decoding(record: id) {
            let same = try statement.withBytes(3) { stored in
                encodedVector.withUnsafeBytes { stored.elementsEqual($0) }
            }
            return Presence(
                sequence: try statement.int64(0), type: try statement.string(1), isDirty: try statement.int64(2) != 0,
                vector: same ? nil : try statement.withBytes(3) { try RecordCodec.decodeVector($0) })
        }
    }

    /// Rows are written only by this code, so one that does not decode means the file was
    /// damaged or edited behind the store's back: reported as corruption, never trusted.
    private func decoding<T>(record: UUID?, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as ModelError {
            throw ReplicaStoreError.corrupt(path: path, reason: "record \(record?.uuidString ?? "with an unreadable id"): \(error)")
        }
    }

    /// Writes `state` as the record's latest change, giving it the next sequence number.
    ///
    /// - Parameter encodedVector: the state's vector already encoded, when the caller has it.
    /// - Parameter old: the state the row held, whose field index entries are replaced.
    @discardableResult
    func save(_ state: RecordState, replacing previous: Int64?, old: RecordState?, dirty: Bool,
              encodedVector: [UInt8]? = nil) throws -> Int64 {
        let sequence = try saveRow(id: state.id, type: state.type, isDeleted: state.isDeleted, dirty: dirty,
                                   vector: encodedVector ?? RecordCodec.encode(state.vector), state: RecordCodec.encodeState(state),
                                   replacing: previous)
        try updateFieldIndex(state, old: old)
        return sequence
    }

    /// Writes a record's encoded vector and state (canonical: `RecordCodec`'s own bytes) as its
    /// latest change, giving it the next sequence number.
    @discardableResult
    func saveRow(id: UUID, type: String, isDeleted: Bool, dirty: Bool, vector: [UInt8], state: [UInt8],
                 replacing previous: Int64?) throws -> Int64 {
        gatheredIndexWrites = nil  // a write a gather did not see
        if transactionState?.found.isEmpty == false, transactionState?.found[id] != nil {
            transactionState?.found[id] = .present(type: type, live: !isDeleted)
        }
        sequence += 1
        noteChange(id, type: type)
        let statement: any SQLStatement
        if let previous {
            statement = try db.statement("UPDATE records SET seq = ?, deleted = ?, dirty = ?, vector = ?, state = ?, txn = ? WHERE \(tenant.and)seq = ?")
            statement.reset()
            try statement.bind(integer: previous, at: 7)
        } else {
            if insertStatement == nil {
                insertStatement = try db.statement("INSERT INTO records (\(tenant.column)seq, deleted, dirty, vector, state, txn, id, type) VALUES (\(tenant.value)?, ?, ?, ?, ?, ?, ?, ?)")
            }
            statement = insertStatement!
            statement.reset()
            try statement.bind(uuid: id, at: 7)
            try statement.bind(text: type, at: 8)
        }
        try statement.bind(integer: transactionState?.id ?? sequence, at: 6)
        try statement.bind(integer: sequence, at: 1)
        try statement.bind(integer: isDeleted ? 1 : 0, at: 2)
        try statement.bind(integer: dirty ? 1 : 0, at: 3)
        try statement.bind(bytes: vector, at: 4)
        try statement.bind(bytes: state, at: 5)
        try statement.step()
        return sequence
    }

    /// Tells observers about the record when the transaction commits, and drops what the rules
    /// derived from configuration records when one of those changes.
    private func noteChange(_ id: UUID, type: String) {
        transactionState?.noteChange(id, type: type)
        if configurationTypes.contains(type) { rulesCache = [:] }
    }

    /// The id of the row at `column`; the type, vector and state follow it.
    private func rowID(_ statement: some SQLRow, at column: Int32) throws -> UUID {
        guard let id = try statement.withBytes(column, { UUID(bytes: $0) }) else {
            throw ReplicaStoreError.corrupt(path: path, reason: "a record id is not 16 bytes")
        }
        return id
    }

    func decodeRow(_ statement: some SQLRow, from column: Int32 = 0) throws -> RecordState {
        let id = try rowID(statement, at: column)
        return try decoding(record: id) {
            try statement.withBytes(column + 2) { vector in
                try statement.withBytes(column + 3) { state in
                    try RecordCodec.decode(id: id, type: statement.string(column + 1), vector: vector, state: state)
                }
            }
        }
    }

    // MARK: Reading

    /// The record with `id`, deleted or not.
    public func record(_ id: UUID) throws -> RecordState? {
        try load(id, decodeState: true)?.1
    }

    /// The type of the record with `id` without decoding it; with `live`, `nil` for a deleted one.
    public func recordType(of id: UUID, live: Bool = false) throws -> String? {
        // From the row's columns, without decoding the record: code that checks many references
        // (an import resolving every row's account and contact) calls this once per reference.
        guard isWriting else {
            let statement = try db.statement(live ? "SELECT type FROM records WHERE \(tenant.and)id = ? AND deleted = 0" : "SELECT type FROM records WHERE \(tenant.and)id = ?")
            statement.reset()
            try statement.bind(uuid: id, at: 1)
            defer { statement.reset() }
            return try statement.step() ? statement.string(0) : nil
        }
        switch transactionState?.found[id] {
        case .absent: return nil
        case .present(let type, let isLive): return live && !isLive ? nil : type
        case nil: break
        }
        let statement = try db.statement("SELECT type, deleted FROM records WHERE \(tenant.and)id = ?")
        statement.reset()
        try statement.bind(uuid: id, at: 1)
        defer { statement.reset() }
        guard try statement.step() else {
            transactionState?.found[id] = .absent
            return nil
        }
        let type = try statement.string(0), isLive = try statement.int64(1) == 0
        transactionState?.found[id] = .present(type: type, live: isLive)
        return live && !isLive ? nil : type
    }

    /// Every record of `type`, in change order.
    public func records(ofType type: String, includeDeleted: Bool = false) throws -> [RecordState] {
        let sql = includeDeleted
            ? "SELECT id, type, vector, state FROM records WHERE \(tenant.and)type = ? ORDER BY seq"
            : "SELECT id, type, vector, state FROM records WHERE \(tenant.and)type = ? AND deleted = 0 ORDER BY seq"
        return try db.fetch(sql, [type]) { try decodeRow($0) }
    }

    /// The number of live records of `type`.
    public func count(ofType type: String) throws -> Int {
        Int(try db.fetchInt("SELECT count(*) FROM records WHERE \(tenant.and)type = ? AND deleted = 0", [type]) ?? 0)
    }

    /// Records changed after sequence number `after`, oldest change first: how a peer pulls.
    /// A record changed several times appears once, at its latest change.
    public func changes(after: Int64, limit: Int) throws -> [Change] {
        try db.fetchFirst(limit, of: "SELECT seq, id, type, vector, state FROM records WHERE \(tenant.and)seq > ? ORDER BY seq", [after]) {
            Change(sequence: try $0.int64(0), state: try decodeRow($0, from: 1))
        }
    }

    /// The live records changed after sequence number `after` that a write of this replica
    /// later than `timestamp` created (or restored): what the local writes since that point
    /// made, each once. Only each row's vector and liveness are decoded, not its fields, so a
    /// journal of a large import asks this of every batch at little cost; asked inside a write
    /// transaction of the point where it began, the store answers from what the transaction
    /// noted of its writes, reading no row.
    public func recordsMadeLocally(after: Int64, since timestamp: HLCTimestamp) throws -> [UUID] {
        // Unless a savepoint rolled back, the transaction's notes say which records its local
        // writes found absent or deleted and how each stands now.
        if let state = transactionState, !state.reloadToCheck, after == state.id - 1 {
            return state.localOrder.filter { id in
                guard let now = state.toCheck[id], !now.isDeleted else { return false }
                return (state.localBefore[id] ?? nil)?.isDeleted ?? true
            }
        }
        let statement = try db.statement("SELECT id, vector, state FROM records WHERE \(tenant.and)seq > ? AND deleted = 0 ORDER BY seq")
        statement.reset()
        defer { statement.reset() }
        try statement.bind(integer: after, at: 1)
        var made: [UUID] = []
        while try statement.step() {
            let id = try rowID(statement, at: 0)
            let liveness = try decoding(record: id) {
                try statement.withBytes(2) { state in
                    try RecordCodec.decodeLivenessWrite(vector: try statement.withBytes(1) { try RecordCodec.decodeVector($0) }, state)
                }
            }
            if !liveness.isDeleted, liveness.dot.replica == replicaID, liveness.timestamp > timestamp { made.append(id) }
        }
        return made
    }

    /// `changes(after:limit:)` as the rows hold them, for sending to a peer: nothing is decoded,
    /// so a damaged row is not noticed here but by the receiver, which validates every record.
    public func encodedChanges(after: Int64, limit: Int) throws -> [EncodedChange] {
        var changes: [EncodedChange] = []
        try forEachEncodedChange(after: after, limit: limit) { sequence, id, type, vector, state in
            changes.append(EncodedChange(sequence: sequence, record: EncodedRecord(id: id, type: type, vector: Array(vector), state: Array(state))))
        }
        return changes
    }

    /// `encodedChanges(after:limit:)` row by row, each row's vector and state lent for the call
    /// only: a server writes a pull batch from them without a copy per record (`PullBatchWriter`).
    public func forEachEncodedChange(
        after: Int64, limit: Int,
        _ body: (_ sequence: Int64, _ id: UUID, _ type: String, _ vector: UnsafeRawBufferPointer, _ state: UnsafeRawBufferPointer) throws -> Void
    ) throws {
        _ = try db.fetchFirst(limit, of: "SELECT seq, id, type, vector, state FROM records WHERE \(tenant.and)seq > ? ORDER BY seq", [after]) { row in
            let (sequence, id, type) = (try row.int64(0), try rowID(row, at: 1), try row.string(2))
            try row.withBytes(3) { vector in try row.withBytes(4) { state in try body(sequence, id, type, vector, state) } }
        }
    }

    /// How many records changed after `after`, and their encoded size: the size of a pull.
    public func pendingChanges(after: Int64) throws -> (records: Int, bytes: Int) {
        try db.fetch("SELECT count(*), coalesce(sum(length(vector) + length(state)), 0) FROM records WHERE \(tenant.and)seq > ?", [after]) {
            (Int(try $0.int64(0)), Int(try $0.int64(1)))
        }.first ?? (0, 0)
    }

    // MARK: Local writes

    /// Runs several local writes as one transaction: all of them are kept, or none.
    ///
    /// For changes that belong together (converting a lead into an account, a contact and an
    /// opportunity) and for bulk loads, which are much faster in one transaction.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try write(body)
    }

    /// Creates a record. Every field is checked against the schema first.
    @discardableResult
    public func create(_ type: String, id: UUID = .newRecordID(), _ values: [String: FieldValue] = [:]) throws -> RecordState {
        try create(type, id: id, values, looksFirst: true)
    }

    /// `create(_:id:_:)` of a record whose id the caller knows no record has: one derived from
    /// a write this transaction made (what an effect makes of a new record). It is not looked
    /// for first; should a record have it after all, the write still fails, on the table's
    /// unique id.
    @discardableResult
    public func createNew(_ type: String, id: UUID, _ values: [String: FieldValue]) throws -> RecordState {
        try create(type, id: id, values, looksFirst: false)
    }

    private func create(_ type: String, id: UUID, _ values: [String: FieldValue], looksFirst: Bool) throws -> RecordState {
        try write(savepoint: false) {
            try checkLocalValues(type: type, record: id, values)
            if !looksFirst {
                // The caller knows it is new.
            } else if case .absent? = transactionState?.found[id] {
                // This transaction found no row of it, and none was written since.
            } else if try load(id, decodeState: false) != nil {
                throw ReplicaStoreError.recordExists(id)
            }
            let (dot, timestamp) = try nextWrite()
            let state = RecordState.created(id: id, type: type, fields: values, dot: dot, timestamp: timestamp)
            // One INSERT, unless the record's index entries go in with it.
            try atomically(if: maintainsIndex(of: type)) { _ = try save(state, replacing: nil, old: nil, dirty: true) }
            noteForChecks(state)
            noteLocalWrite(id, before: nil)
            noteForEffects(id, before: nil, after: state, origin: .local)
            return state
        }
    }

    /// Sets fields of a live record, as one write.
    @discardableResult
    public func update(_ id: UUID, _ values: [String: FieldValue]) throws -> RecordState {
        try mutate(id) { state, dot, timestamp in
            guard !state.isDeleted else { throw ReplicaStoreError.recordDeleted(id) }
            if !values.isEmpty { try checkLocalValues(type: state.type, record: id, values) }
            state.write(values, dot: dot, timestamp: timestamp)
        }
    }

    /// Adds `amount` (negative to subtract) to a counter field of a live record.
    @discardableResult
    public func increment(_ id: UUID, field: String, by amount: Int64) throws -> RecordState {
        try mutate(id) { state, dot, timestamp in
            guard !state.isDeleted else { throw ReplicaStoreError.recordDeleted(id) }
            guard schema.types[state.type]?.fields[field] == .counter else {
                throw ModelError.wrongFieldType(record: id.uuidString, field: field, expected: "a counter field", found: "\(schema.types[state.type]?.fields[field]?.rawValue ?? "no such field")")
            }
            guard amount != Int64.min else {
                throw ModelError.invalidFieldValue(record: id.uuidString, field: field, reason: "increment out of range")
            }
            state.increment(field, by: amount, dot: dot, timestamp: timestamp)
        }
    }

    /// Deletes a record. It stays as a tombstone so the deletion syncs and can be undone.
    @discardableResult
    public func delete(_ id: UUID) throws -> RecordState {
        try mutate(id) { state, dot, timestamp in
            guard !state.isDeleted else { throw ReplicaStoreError.recordDeleted(id) }
            state.delete(dot: dot, timestamp: timestamp)
        }
    }

    /// Brings a deleted record back with the values it holds, including concurrent updates.
    @discardableResult
    public func restore(_ id: UUID) throws -> RecordState {
        try mutate(id) { state, dot, timestamp in
            guard state.isDeleted else { throw ReplicaStoreError.recordNotDeleted(id) }
            state.restore(dot: dot, timestamp: timestamp)
        }
    }

    /// Loads a record, applies one local write to it and saves it, all in one transaction.
    func mutate(_ id: UUID, _ change: (inout RecordState, Dot, HLCTimestamp) throws -> Void) throws -> RecordState {
        try write(savepoint: false) {
            guard let (stored, loaded) = try load(id, decodeState: true), var state = loaded else {
                throw ReplicaStoreError.recordNotFound(id)
            }
            let before = state
            let (dot, timestamp) = try nextWrite()
            try change(&state, dot, timestamp)
            // One UPDATE, unless index entries or conflicts the write supersedes change with it.
            let superseded = try conflictsSuperseded(by: state)
            try atomically(if: maintainsIndex(of: state.type) || !superseded.isEmpty) {
                _ = try save(state, replacing: stored.sequence, old: loaded, dirty: true)
                try closeSuperseded(superseded)
            }
            noteForChecks(state)
            noteLocalWrite(id, before: before)
            noteForEffects(id, before: before, after: state, origin: .local)
            return state
        }
    }

    // MARK: Remote states

    /// Merges a batch of record states from a peer, atomically: every state is validated, and if
    /// any is invalid or anything fails, nothing of the batch is kept.
    ///
    /// Idempotent and order-independent: applying a batch twice, or batches in another order,
    /// ends in the same state and the same conflict log.
    ///
    /// - Parameter progress: called after each record with its index. Throwing from it aborts
    ///   the batch and rolls it back, which is how a caller cancels.
    /// - Parameter checkpoint: a peer's change sequence number to save in the same transaction,
    ///   so that the checkpoint moves exactly when the batch it ends is stored.
    @discardableResult
    public func apply(
        _ states: [RecordState], from origin: ApplyOrigin = .upstream,
        checkpoint: (peer: String, sequence: Int64)? = nil,
        progress: ((Int) throws -> Void)? = nil
    ) throws -> ApplyReport {
        try applyBatch(states.count, from: origin, checkpoint: checkpoint, progress: progress) { index in
            let remote = states[index]
            let encodedVector = RecordCodec.encode(remote.vector)
            guard case .news(let existing) = try arrival(
                of: remote.id, type: remote.type, encodedVector: encodedVector, vector: { remote.vector }, from: origin
            ) else { return .unchanged }
            return try integrate(remote, existing: existing, encodedVector: encodedVector, from: origin)
        }
    }

    /// `apply(_:from:checkpoint:progress:)` for records in the form they travel and are stored
    /// in, with the same atomicity, idempotence, outcomes, conflicts, dirty set and checkpoint.
    ///
    /// The form saves the work that dominated applying new records: a record this store does not
    /// have is validated on its bytes (`Schema.validate(_: EncodedRecord)`) and stored as it came,
    /// never decoded nor encoded again. A record whose vector this store already covers is
    /// recognised from its vector alone, as in `apply`, and, as there, not validated: nothing of
    /// it is read or kept. A record that brings news to a local copy is decoded and merged as in
    /// `apply`.
    ///
    /// Whether a record is new is found out in one of two ways, whichever the previous record of
    /// the batch suggests, because batches tend to be all new (an initial sync) or all known (a
    /// pull repeated after an interruption): by storing it outright, which does nothing when a
    /// row has its id (and costs a new record no separate lookup), or by looking its id up first
    /// (which costs a known record no failed insert). Both end the same way.
    @discardableResult
    public func apply(
        encoded records: [EncodedRecord], from origin: ApplyOrigin = .upstream,
        checkpoint: (peer: String, sequence: Int64)? = nil,
        progress: ((Int) throws -> Void)? = nil
    ) throws -> ApplyReport {
        try apply(records, checks: nil, from: origin, checkpoint: checkpoint, progress: progress)
    }

    /// `apply(encoded:from:checkpoint:progress:)` for records from upstream whose bytes were
    /// checked on another thread (`CheckedRecords`), with the same outcomes and errors: a
    /// record new to this store is kept on the strength of that check, and one whose check
    /// failed is refused here as it would have been. Records checked against another schema
    /// than this store's are checked again.
    @discardableResult
    public func apply(
        checked batch: CheckedRecords, checkpoint: (peer: String, sequence: Int64)? = nil,
        progress: ((Int) throws -> Void)? = nil
    ) throws -> ApplyReport {
        try apply(batch.records, checks: batch.schema == schema ? batch.outcomes : nil, from: .upstream,
                  checkpoint: checkpoint, progress: progress)
    }

    private func apply(
        _ records: [EncodedRecord], checks: [Result<EncodedRecord.Validation, ModelError>]?, from origin: ApplyOrigin,
        checkpoint: (peer: String, sequence: Int64)?, progress: ((Int) throws -> Void)?
    ) throws -> ApplyReport {
        let newDirty = staysDirty(from: origin, existing: nil, holdsRemoteVector: true)
        var expectNew = true
        return try applyBatch(records.count, from: origin, checkpoint: checkpoint, progress: progress) { index in
            let record = records[index]
            let check = checks?[index]
            guard schema.types[record.type] != nil else { throw ModelError.unknownRecordType(record.type) }
            if expectNew, try store(new: record, check: check, dirty: newDirty, from: origin) { return .applied }
            switch try arrival(
                of: record.id, type: record.type, encodedVector: record.vector,
                vector: { try record.vector.withUnsafeBytes { try RecordCodec.decodeVector($0) } }, from: origin
            ) {
            case .known:
                expectNew = false
                return .unchanged
            case .news(let existing?):
                expectNew = false
                return try integrate(try record.decoded(), existing: existing, encodedVector: nil, from: origin)
            case .news(nil):
                expectNew = true
                guard try store(new: record, check: check, dirty: newDirty, from: origin) else { throw ReplicaStoreError.recordExists(record.id) }
                return .applied
            }
        }
    }

    /// Stores a record new to this store as it came, and validates it; `false` when a row with
    /// its id exists, and nothing was done.
    ///
    /// The row is written before the bytes are checked: if they are invalid, the error rolls the
    /// batch back, row included, exactly as if they had been checked first. Valid bytes in a form
    /// `RecordCodec` never writes are replaced by the canonical ones, under the same sequence
    /// number, so that every stored row is canonical.
    ///
    /// - Parameter check: the outcome of checking the bytes with this store's schema, rules off,
    ///   made elsewhere (`CheckedRecords`); only for a record from upstream, whose rules are not checked.
    private func store(new record: EncodedRecord, check: Result<EncodedRecord.Validation, ModelError>?, dirty: Bool,
                       from origin: ApplyOrigin) throws -> Bool {
        if insertIfNewStatement == nil {
            insertIfNewStatement = try db.statement("""
                INSERT INTO records (\(tenant.column)seq, deleted, dirty, vector, state, id, type, txn)
                VALUES (\(tenant.value)?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (\(tenant.column)id) DO NOTHING
                """)
        }
        // Inserted unless there is a row already: whether there is one now, only a search says.
        if transactionState?.found.isEmpty == false { transactionState?.found[record.id] = nil }
        let statement = insertIfNewStatement!
        statement.reset()
        try statement.bind(integer: sequence + 1, at: 1)
        try statement.bind(integer: transactionState?.id ?? sequence + 1, at: 8)
        // The deletion flag is the state's second byte; if it is anything but 0 or 1 the
        // validation below refuses the record.
        try statement.bind(integer: record.state.count > 1 && record.state[1] == 1 ? 1 : 0, at: 2)
        try statement.bind(integer: dirty ? 1 : 0, at: 3)
        try statement.bind(bytes: record.vector, at: 4)
        try statement.bind(bytes: record.state, at: 5)
        try statement.bind(uuid: record.id, at: 6)
        try statement.bind(text: record.type, at: 7)
        try statement.step()
        guard statement.changedRows == 1 else { return false }  // a row had its id
        sequence += 1
        let validation = try check.map { try $0.get() } ?? schema.validate(record, rules: origin != .upstream)
        var decoded = validation.decodedState
        if let state = decoded {
            sequence -= 1  // `save` takes the next number again: the one the row has
            try save(state, replacing: sequence + 1, old: nil, dirty: dirty)
            try checkRules(state, from: origin)
        } else {
            noteChange(record.id, type: record.type)
            if !validation.isDeleted { noteGatherableWrite(of: record.type) }
            // Decoding is needed only for what the bytes cannot answer in place: index entries
            // and the rules of a batch from downstream.
            if !validation.isDeleted && (maintainsIndex(of: record.type) || (origin == .downstream && options.rules != nil)) {
                let state = try record.decoded()
                try updateFieldIndex(state, old: nil)
                try checkRules(state, from: origin)
                decoded = state
            }
        }
        if origin == .downstream { noteForEffects(record.id, before: nil, after: decoded, origin: .downstream) }
        clock.observe(validation.latestTimestamp)
        return true
    }

    /// What applying one incoming record did.
    private struct Applied {
        var outcome: MergeOutcome
        var conflicts: [Conflict] = []
        static let unchanged = Applied(outcome: .unchanged)
        static let applied = Applied(outcome: .applied)
    }

    /// The frame of both `apply` forms: one transaction with the checkpoint, outcomes in order,
    /// progress after each record.
    private func applyBatch(
        _ count: Int, from origin: ApplyOrigin, checkpoint: (peer: String, sequence: Int64)?, progress: ((Int) throws -> Void)?,
        _ applyOne: (Int) throws -> Applied
    ) throws -> ApplyReport {
        try write {
            transactionState?.origin = origin == .upstream ? .upstream : .downstream
            if let checkpoint {
                try db.run("""
                    INSERT INTO peer_checkpoints (\(tenant.column)peer, sequence) VALUES (\(tenant.value)?, ?)
                    ON CONFLICT (\(tenant.column)peer) DO UPDATE SET sequence = excluded.sequence
                    """,
                           [checkpoint.peer, checkpoint.sequence])
            }
            var outcomes: [MergeOutcome] = []
            outcomes.reserveCapacity(count)
            var conflicts: [Conflict] = []
            for index in 0..<count {
                let applied = try applyOne(index)
                outcomes.append(applied.outcome)
                conflicts += applied.conflicts
                try progress?(index)
            }
            return ApplyReport(outcomes: outcomes, conflicts: conflicts, sequence: sequence)
        }
    }

    private enum Arrival {
        /// The local copy has seen everything the incoming record holds.
        case known
        /// The incoming record brings news: to this local copy, or it is new here (`nil`).
        case news(Presence?)
    }

    /// Sorts an incoming record out by its id, type and vector alone. A known record needs no
    /// validation (nothing of it is read or kept); if upstream holds exactly our state, it
    /// leaves the dirty set here.
    ///
    /// - Parameter vector: the decoded vector, asked for only when the stored one differs.
    private func arrival(
        of id: UUID, type: String, encodedVector: [UInt8], vector: () throws -> VersionVector, from origin: ApplyOrigin
    ) throws -> Arrival {
        guard schema.types[type] != nil else { throw ModelError.unknownRecordType(type) }
        guard let existing = try presence(of: id, encodedVector: encodedVector) else { return .news(nil) }
        guard existing.type == type else {
            throw ModelError.recordTypeMismatch(record: id.uuidString, local: existing.type, remote: type)
        }
        if let stored = existing.vector, !stored.covers(try vector()) { return .news(existing) }
        if origin == .upstream && existing.vector == nil && existing.isDirty {
            try db.run("UPDATE records SET dirty = 0 WHERE \(tenant.and)seq = ?", [existing.sequence])
        }
        return .known
    }

    /// Validates a state that brings news, merges it into the local copy and saves the result.
    private func integrate(_ remote: RecordState, existing: Presence?, encodedVector: [UInt8]?, from origin: ApplyOrigin) throws -> Applied {
        try schema.validate(remote, rules: origin != .upstream)
        clock.observe(remote.latestTimestamp)
        let local = existing == nil ? nil : try record(remote.id)
        // An upstream that purges (it announced its retention) had every write of a copy with nothing to push (it sent or acknowledged
        // them), and its states only grow: one that lacks some forgot them, with the tombstone
        // it purged past the horizon (SPEC 1.8). What it has now is the record; merging would
        // bring back history that it can no longer take (its authorship check cannot prove it).
        // Only a tombstone: upstream forgets nothing of live records, and a copy whose change
        // upstream refused (kept here, in the log as `rejected`) is not a forgotten one.
        let forgets = origin == .upstream && existing?.isDirty == false && local?.isDeleted == true ? try upstreamPurges : false
        let refusedHere = forgets ? try db.fetchInt("SELECT EXISTS (SELECT 1 FROM conflicts WHERE \(tenant.and)record = ? AND kind = 'rejected')",
                                                     [SQLValue.blob(Data(remote.id.bytes))]) == 1 : false
        let forgotten = forgets && !refusedHere && local.map { !remote.vector.covers($0.vector) } == true
        let result = try Merge.merge(local: forgotten ? nil : local, remote: remote)
        try save(result.state, replacing: existing?.sequence, old: local,
                 dirty: staysDirty(from: origin, existing: existing, holdsRemoteVector: result.state.vector == remote.vector),
                 encodedVector: result.outcome == .applied ? encodedVector : nil)
        if local != nil { try supersedeConflicts(of: result.state) }
        if origin == .downstream { noteForEffects(remote.id, before: local, after: result.state, origin: .downstream) }
        for conflict in result.conflicts { try log(conflict) }
        try checkRules(result.state, from: origin)
        return Applied(outcome: result.outcome, conflicts: result.conflicts)
    }

    /// Has the store's rules run on a live record a batch from downstream brought when the
    /// transaction ends, so that it may reference any record of the batch. See `RecordRules`
    /// for why batches from upstream are not checked.
    private func checkRules(_ state: RecordState, from origin: ApplyOrigin) throws {
        guard origin == .downstream, !state.isDeleted, options.rules != nil else { return }
        noteForChecks(state)
    }

    /// Whether a record waits to be pushed after taking in a remote state. From upstream: only
    /// if the merged state holds writes upstream's did not. From downstream: if it did before,
    /// or if this replica forwards what it receives.
    private func staysDirty(from origin: ApplyOrigin, existing: Presence?, holdsRemoteVector: Bool) -> Bool {
        switch origin {
        case .upstream: !holdsRemoteVector
        case .downstream: existing?.isDirty == true || options.forwardsDownstreamChanges
        }
    }

    /// The last change sequence number applied from `peer` (0 when nothing was).
    public func checkpoint(for peer: String) throws -> Int64 {
        try db.fetchInt("SELECT sequence FROM peer_checkpoints WHERE \(tenant.and)peer = ?", [peer]) ?? 0
    }

    /// Forgets the checkpoint of `peer`, so the next pull starts from the beginning.
    public func resetCheckpoint(for peer: String) throws {
        try write { _ = try db.run("DELETE FROM peer_checkpoints WHERE \(tenant.and)peer = ?", [peer]) }
    }

    /// Checks a state as `apply` would, without writing anything: for answering a peer per record.
    public func validate(_ state: RecordState) throws {
        do {
            try schema.validate(state)
            if let existing = try load(state.id, decodeState: false)?.0, existing.type != state.type {
                throw ModelError.recordTypeMismatch(record: state.id.uuidString, local: existing.type, remote: state.type)
            }
        } catch let error as ModelError {
            throw ReplicaStoreError.invalidRecord(error)
        }
    }

    // MARK: Dirty set

    /// Records with local changes that upstream has not acknowledged, oldest change first.
    public func dirtyRecords(limit: Int = Int.max) throws -> [RecordState] {
        try db.fetch("""
            SELECT id, type, vector, state FROM records WHERE \(tenant.and)dirty = 1 ORDER BY seq LIMIT ?
            """, [Int64(clamping: limit)]) { try decodeRow($0) }
    }

    /// The number of records waiting to be pushed.
    public func dirtyCount() throws -> Int {
        Int(try db.fetchInt("SELECT count(*) FROM records WHERE \(tenant.and)dirty = 1") ?? 0)
    }

    /// Upstream has integrated the record up to `vector`. The record leaves the dirty set unless
    /// it changed again after that state was sent.
    public func acknowledge(_ id: UUID, upTo vector: VersionVector) throws {
        try write {
            guard let (stored, _) = try load(id, decodeState: false), stored.isDirty, vector.covers(stored.vector) else { return }
            try db.run("UPDATE records SET dirty = 0 WHERE \(tenant.and)seq = ?", [stored.sequence])
        }
    }
}
