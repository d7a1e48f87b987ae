import Foundation
import Synchronization
import Postgres
import SQLite
import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// What only a store in a database shared by tenants must show: tenants that never see each
/// other's rows, and writers of one tenant on several connections at once (several nodes) that
/// queue for the tenant's header instead of issuing a dot or a sequence number twice.
@Suite struct PostgresStoreTests {
    @Test(.blocking) func tenantsSharingADatabaseSeeOnlyTheirOwnRows() throws {
        let database = try PostgresServer.database()
        var options = ReplicaStore.Options(schema: testSchema)
        options.indexedFields = ["city"]
        options.searchFields = ["name"]
        let north = try StorePlace.open(tenant: "north", in: database, options: options)
        let south = try StorePlace.open(tenant: "south", in: database, options: options)
        #expect(north.replicaID != south.replicaID)
        let mine = try north.create("contact", ["name": .text("Anna Berg"), "city": .text("Oslo")])
        let theirs = try south.create("contact", ["name": .text("Anna Lind"), "city": .text("Oslo")])
        try south.update(theirs.id, ["city": .text("Oslo")])
        try south.setLocalSetting("k", Data("south".utf8))
        try south.resetCheckpoint(for: "peer")

        // Every way of reading a store finds its own record only.
        #expect(try north.changes(after: 0, limit: 10).map(\.state.id) == [mine.id])
        #expect(try north.records(ofType: "contact").map(\.id) == [mine.id])
        #expect(try north.records(ofType: "contact", where: "city", equals: "Oslo").map(\.id) == [mine.id])
        #expect(try north.search("anna", ofType: "contact").map(\.id) == [mine.id])
        #expect(try north.record(theirs.id) == nil)
        #expect(try north.dirtyCount() == 1)
        #expect(try north.lastSequence == 1)
        #expect(try south.lastSequence == 2)
        #expect(try north.localSetting("k") == nil)

        // The same record id in two tenants is two records.
        let copy = try north.create("contact", id: theirs.id, ["name": .text("North's own")])
        #expect(try south.record(theirs.id)?.values["name"] == .text("Anna Lind"))
        #expect(try north.record(theirs.id) == copy)

        // A conflict, a purge and an eviction in one tenant leave the other alone.
        let bob = try StorePlace.open(tenant: "bob", in: database, options: ReplicaStore.Options(schema: testSchema))
        try bob.apply(try north.changes(after: 0, limit: 10).map(\.state))
        try bob.update(mine.id, ["city": .text("Bergen")])
        try north.update(mine.id, ["city": .text("Tromsø")])
        try north.apply(try bob.changes(after: 0, limit: 10).map(\.state))
        #expect(try north.conflicts().count == 1)
        #expect(try south.conflicts().isEmpty)
        #expect(try north.conflicts().first?.id == 1, "conflict entries are numbered per tenant")
        try north.evict([theirs.id], reason: "left the scope")  // upstream (bob) holds it: it goes
        #expect(try north.record(theirs.id) == nil)
        #expect(try south.record(theirs.id) != nil)
        let northTombstone = try north.create("contact", ["name": .text("gone")]).id
        try north.delete(northTombstone)
        try south.delete(theirs.id)
        try south.purgeExpired(RetentionPolicy(tombstoneHorizon: 0, conflictHorizon: 0), now: Int64.max / 2)
        #expect(try south.record(theirs.id) == nil)
        #expect(try north.record(northTombstone)?.isDeleted == true)
        #expect(try north.tombstoneCount() == 1)
    }

    @Test(.blocking) func severalConnectionsWritingOneTenantAtOnceNeverIssueADotOrASequenceNumberTwice() throws {
        let database = try PostgresServer.database()
        let options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("server"))
        let shared = try StorePlace.open(tenant: "acme", in: database, options: options)
        let counterRecord = try shared.create("contact", ["name": .text("shared")]).id
        let writers = 4, rounds = 40
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            do {
                let store = try StorePlace.open(tenant: "acme", in: database, options: options)
                defer { store.close() }
                for round in 0..<rounds {
                    try store.transaction {
                        try store.create("contact", ["name": .text("w\(writer)-\(round)")])
                        try store.increment(counterRecord, field: "points", by: 1)
                    }
                }
            } catch {
                failures.withLock { $0.append("writer \(writer): \(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])

        let changes = try shared.changes(after: 0, limit: .max)
        let writes = 1 + 2 * writers * rounds
        // Every write took the next dot of the one replica, whichever connection made it: each
        // creation has a dot of its own, and the last write holds the count of them all.
        let dots = changes.filter { $0.state.id != counterRecord }.map(\.state.liveness.dot.counter)
        #expect(try shared.record(counterRecord)?.values["points"] == .integer(Int64(writers * rounds)))
        #expect(changes.count == 1 + writers * rounds)
        #expect(changes.map(\.sequence) == changes.map(\.sequence).sorted())
        #expect(try shared.lastSequence == Int64(writes))
        #expect(Set(dots).count == dots.count, "no dot issued twice")
        #expect(try shared.record(counterRecord)?.vector[shared.replicaID] == UInt64(writes))
    }

    /// A transaction of many writes (an import: a savepoint per row) writes the header row once,
    /// at its end: each update of one row in a PostgreSQL transaction leaves a version the next
    /// must step over, so a header written per write made such a transaction quadratic (27 ms a
    /// row at 15,000 rows). What it commits is still the header of every write, those rolled
    /// back to their savepoint left out.
    @Test(.blocking) func aTransactionOfManyWritesUpdatesTheHeaderOnceAndCommitsItWhole() throws {
        struct RowRefused: Error {}
        let database = try PostgresServer.database()
        let options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("server"))
        let store = try StorePlace.open(tenant: "acme", in: database, options: options)
        let watcher = try PostgresConnection(url: database.url)
        try watcher.execute(script: """
            CREATE TABLE header_updates (n bigint NOT NULL);
            INSERT INTO header_updates VALUES (0);
            CREATE FUNCTION count_header_update() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN UPDATE header_updates SET n = n + 1; RETURN NEW; END $$;
            CREATE TRIGGER count_header AFTER UPDATE ON replica FOR EACH ROW EXECUTE FUNCTION count_header_update();
            """)
        func headerUpdates() throws -> Int64? { try watcher.scalarInt("SELECT n FROM header_updates") }

        let rows = 60
        try store.transaction {
            for row in 0..<rows {
                if row % 10 == 9 {
                    // A refused row, as an import's: its savepoint and its dot are given back.
                    #expect(throws: RowRefused.self) {
                        try store.transaction {
                            try store.create("contact", ["name": .text("refused \(row)")])
                            throw RowRefused()
                        }
                    }
                } else {
                    try store.transaction { try store.create("contact", ["name": .text("row \(row)")]) }
                }
            }
        }
        #expect(try headerUpdates() == 1)
        let kept = rows - rows / 10
        #expect(try store.records(ofType: "contact").count == kept)

        // Another connection (another node) goes on from the header committed: no sequence
        // number or dot issued twice.
        let other = try StorePlace.open(tenant: "acme", in: database, options: options)
        #expect(try other.lastSequence == Int64(kept))
        let next = try other.create("contact", ["name": .text("after")])
        #expect(next.liveness.dot.counter == UInt64(kept + 1))
        #expect(try other.lastSequence == Int64(kept + 1))
        #expect(try headerUpdates() == 2)
        let dots = try other.changes(after: 0, limit: .max).map(\.state.liveness.dot.counter)
        #expect(dots == Array(1...UInt64(kept + 1)))
    }

    @Test(.blocking) func aStoreFileCopiedIntoTheDatabaseIsTheSameReplicaRowForRow() throws {
        let place = try StorePlace(.sqlite)
        let database = try PostgresServer.database()
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("server"))
        options.indexedFields = ["city"]
        options.searchFields = ["name"]
        let file = try place.open("server", options: options)
        let peer = try place.open("peer", options: .init(schema: testSchema, replicaID: try ReplicaID("peer")))
        var ids: [UUID] = []
        for i in 0..<700 { ids.append(try file.create("contact", ["name": .text("Name \(i) ✓"), "city": .text(i % 2 == 0 ? "Oslo" : "Bergen")]).id) }
        try file.delete(ids[3])
        try peer.apply(try file.changes(after: 0, limit: .max).map(\.state), checkpoint: (peer: "server", sequence: try file.lastSequence))
        try peer.update(ids[0], ["city": .text("Trondheim")])
        try file.update(ids[0], ["city": .text("Tromsø")])
        try file.apply(try peer.changes(after: 0, limit: .max).map(\.state), from: .downstream)
        try file.setLocalSetting("k", Data("v".utf8))
        let before = try StoreSnapshot(file)
        let lastCounter = try #require(try file.record(ids[0])?.vector[file.replicaID])
        file.close()

        let connection = try PostgresConnection(url: database.url)
        try connection.migrate("store", ReplicaStore.postgresMigrations)
        let indexRows = try Database(path: place.dir.path("server.sqlite"), options: .init()).scalarInt("SELECT count(*) FROM field_index")
        #expect(indexRows ?? 0 > 0)
        #expect(try ReplicaStore.copyFile(place.dir.path("server.sqlite"), into: connection, tenant: "acme") == 700)
        // The index is copied as built, not dropped by the copy and built again by the next open.
        #expect(try connection.scalarInt("SELECT count(*) FROM field_index WHERE tenant_id = 'acme'") == indexRows)
        #expect(try Database(path: place.dir.path("server.sqlite"), options: .init()).scalarInt("SELECT count(*) FROM field_index") == indexRows)
        let copy = try StorePlace.open(tenant: "acme", in: database, options: options)
        #expect(copy.replicaID.rawValue == "server")
        #expect(try StoreSnapshot(copy) == before)
        #expect(try copy.conflicts().count == 1)
        #expect(try copy.localSetting("k") == Data("v".utf8))
        #expect(try copy.records(ofType: "contact", where: "city", equals: "Oslo").count == 349)
        // It continues the file's history: the next write takes the next dot and sequence number.
        let next = try copy.update(ids[1], ["city": .text("Bodø")])
        #expect(next.vector[copy.replicaID] == lastCounter + 1)
        #expect(try copy.lastSequence == before.sequence + 1)
        #expect(throws: ReplicaStoreError.self, "a tenant with a store is not overwritten") {
            try ReplicaStore.copyFile(place.dir.path("server.sqlite"), into: connection, tenant: "acme")
        }
    }

    /// What `rapportctl tenant move` does to a store, both ways: the copy is the same replica,
    /// row for row, and a handle that stayed open on the source (a server still serving it) is
    /// refused every write after the copy, so nothing lands where no one reads it again.
    @Test(.blocking) func aStoreMovedIntoTheDatabaseAndBackIsTheSameReplicaAndItsSourceTakesNoMoreWrites() throws {
        let place = try StorePlace(.sqlite)
        let database = try PostgresServer.database()
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID("server"))
        options.indexedFields = ["city"]
        let file = try place.open("server", options: options)
        var ids: [UUID] = []
        for i in 0..<300 { ids.append(try file.create("contact", ["name": .text("Name \(i)"), "city": .text(i % 3 == 0 ? "Oslo" : "Bergen")]).id) }
        try file.delete(ids[7])
        try file.setLocalSetting("k", Data("v".utf8))
        let before = try StoreSnapshot(file)
        func isMoved(_ error: any Error) -> Bool {
            if case .moved? = error as? ReplicaStoreError { return true }
            return false
        }

        let connection = try PostgresConnection(url: database.url)
        defer { connection.close() }
        try connection.migrate("store", ReplicaStore.postgresMigrations)
        let source = try Database(path: place.dir.path("server.sqlite"), options: .init())
        let there = try ReplicaStore.copyStore(from: source, tenant: nil, into: connection, tenant: "acme", markingSourceMovedTo: "the test's database")
        source.close()
        #expect(there.records == 300 && there.replicaID == "server" && there.sequence == before.sequence)
        #expect(performing: { try file.update(ids[0], ["city": .text("Tromsø")]) }, throws: isMoved)
        #expect(try file.record(ids[0])?.values["city"] == .text("Oslo"), "reads still work, the refused write left nothing")
        file.close()
        let marked = try Database(path: place.dir.path("server.sqlite"), options: .init())
        #expect(try ReplicaStore.movedTo(tenant: nil, in: marked) == "the test's database")
        marked.close()

        let copy = try StorePlace.open(tenant: "acme", in: database, options: options)
        #expect(try StoreSnapshot(copy) == before)
        #expect(try ReplicaStore.movedTo(tenant: "acme", in: connection) == nil, "the copy takes writes")
        let next = try copy.update(ids[1], ["city": .text("Bodø")])
        let after = try StoreSnapshot(copy)

        let back = place.dir.path("back.sqlite")
        try ReplicaStore(path: back, options: .init(schema: testSchema)).close()
        let file2 = try Database(path: back, options: .init())
        let digest = try ReplicaStore.copyStore(from: connection, tenant: "acme", into: file2, tenant: nil, markingSourceMovedTo: "a file")
        file2.close()
        #expect(digest == (try ReplicaStore.digest(tenant: "acme", in: connection)))
        #expect(performing: { try copy.update(ids[2], ["city": .text("Oslo")]) }, throws: isMoved)
        copy.close()
        let returned = try ReplicaStore(path: back, options: options)
        defer { returned.close() }
        #expect(try StoreSnapshot(returned) == after)
        #expect(try returned.records(ofType: "contact", where: "city", equals: "Bodø").map(\.id) == [ids[1]])
        #expect(try returned.update(ids[2], ["city": .text("Oslo")]).vector[returned.replicaID] == (next.vector[returned.replicaID] ?? 0) + 1)
    }

    @Test(.blocking) func aTenantIdThatIsNotASlugOrADatabaseWithoutStoreTablesIsRefused() throws {
        let database = try PostgresServer.database()
        let options = ReplicaStore.Options(schema: testSchema)
        let bare = try PostgresConnection(url: database.url)
        #expect(throws: ReplicaStoreError.self) { try ReplicaStore(database: bare, tenant: "acme", options: options) }
        try bare.migrate("store", ReplicaStore.postgresMigrations)
        #expect(throws: ReplicaStoreError.self) { try ReplicaStore(database: bare, tenant: "x'; DROP TABLE records; --", options: options) }
        #expect(throws: ReplicaStoreError.self) { try ReplicaStore(database: bare, tenant: "Acme", options: options) }
        #expect(try ReplicaStore(database: bare, tenant: "acme", options: options).lastSequence == 0)
    }
}
