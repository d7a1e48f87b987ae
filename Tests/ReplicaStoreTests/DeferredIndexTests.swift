import Foundation
@testable import ReplicaStore
import SyncModel
import TestSupport
import Testing
import TestScheduling

/// A pull from the start defers the field index of the types it brings and builds it at its end
/// (`deferFieldIndex(of:)`, `completeFieldIndex()`): queries answer exactly what reading every
/// record answers before, during (through another handle, as another process reads) and after,
/// also when the deferring handle is gone half-way, as after a crash.
///
/// On SQLite and PostgreSQL: a whole-org import defers a server tenant's index the same way.
@Suite struct DeferredIndexTests {

    static let cities = ["Lyon", "Oslo", "Porto", "Quito", "Lima", "Riga", "Bern"]
    static let words = ["anna", "an", "smith", "ber", "zed", "zo", "zoë", "o", "holm", "å", "ångs", "x"]

    func open(_ place: StorePlace, _ name: String) throws -> ReplicaStore {
        var options = ReplicaStore.Options(schema: testSchema, replicaID: try ReplicaID(name))
        options.indexedFields = ["city"]
        options.searchFields = ["name"]
        return try place.open(name, options: options)
    }

    /// A source with contacts in seven cities, some renamed, moved or deleted after their
    /// creation, and accounts, as a server would send them.
    func source(_ place: StorePlace, contacts: Int = 1_200, name: String = "source") throws -> [EncodedRecord] {
        let source = try open(place, name)
        defer { source.close() }
        let given = ["Anna", "Annabel", "Bert", "Berta", "Zed", "Zoë"], family = ["Smith", "Holm", "Smithers", "Ångström"]
        try source.transaction {
            var ids: [UUID] = []
            for i in 0..<contacts {
                ids.append(try source.create("contact", ["name": .text("\(given[i % 6]) \(family[i % 4])-\(i)"),
                                                         "city": .text(Self.cities[i % 7])]).id)
                if i % 10 == 0 { try source.create("account", ["name": .text("Account \(i)")]) }
            }
            for (n, id) in ids.enumerated() where n % 9 == 0 { try source.update(id, ["city": .text(Self.cities[(n + 3) % 7])]) }
            for (n, id) in ids.enumerated() where n % 13 == 0 { try source.delete(id) }
            for (n, id) in ids.enumerated() where n % 17 == 0 && n % 13 != 0 { try source.update(id, ["city": .null, "name": .text("Olga Nobody \(n)")]) }
        }
        return try source.encodedChanges(after: 0, limit: .max).map(\.record)
    }

    /// What the queries must answer: read from every record, never from the index.
    func expectExact(_ store: ReplicaStore, _ comment: Comment? = nil) throws {
        let contacts = try store.records(ofType: "contact")
        for city in Self.cities {
            let truth = contacts.filter { $0.fields["city"]?.value == .text(city) }.map(\.id)
            #expect(try store.records(ofType: "contact", where: "city", equals: city).map(\.id) == truth, "\(city) \(comment ?? "")")
        }
        for word in Self.words {
            let truth = contacts.filter { state in
                guard case .text(let name)? = state.fields["name"]?.value else { return false }
                return name.lowercased().split { !$0.isLetter && !$0.isNumber }.contains { $0.hasPrefix(word) }
            }.map(\.id)
            #expect(try store.search(word, ofType: "contact", limit: .max).map(\.id) == truth, "'\(word)' \(comment ?? "")")
        }
    }

    /// Applies `records` in batches the way a pull from the start does, checking the answers of
    /// a second handle on the file after every batch.
    func pull(_ records: [EncodedRecord], into store: ReplicaStore, batch: Int = 250, reader: ReplicaStore? = nil,
              stopAfter: Int = .max) throws {
        for (n, start) in stride(from: 0, to: records.count, by: batch).enumerated() where n < stopAfter {
            let slice = Array(records[start..<min(start + batch, records.count)])
            try store.beginBulkWrite()  // as RapportClient's pull from the start
            try store.transaction {
                try store.deferFieldIndex(of: slice.map(\.type))
                try store.apply(encoded: slice, checkpoint: ("server", Int64(start + slice.count)))
            }
            if let reader {
                #expect(try reader.deferredFieldIndexTypes() == ["contact", "account"])
                try expectExact(reader, "after batch \(n)")
            }
        }
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func queriesAreExactDuringAndAfterADeferredPull(_ backend: DatabaseBackend) throws {
        let place = try StorePlace(backend)
        let records = try source(place)
        let device = try open(place, "device"), reader = try open(place, "device")
        try pull(records, into: device, reader: reader, stopAfter: 2)
        // The app writes while the sync runs: those records are indexed with the rest.
        let contacts = try device.records(ofType: "contact")
        try device.update(contacts[0].id, ["city": .text("Oslo"), "name": .text("Anna Moved")])
        try device.delete(contacts[1].id)
        try device.create("contact", ["name": .text("Zed Local"), "city": .text("Bern")])
        try expectExact(reader, "after local writes")
        let applied = 2 * 250
        try pull(Array(records[applied...]), into: device, reader: reader)

        #expect(try device.deferredFieldIndexTypes() == ["contact", "account"])
        try device.completeFieldIndex()
        #expect(try device.deferredFieldIndexTypes().isEmpty)
        #expect(try reader.deferredFieldIndexTypes().isEmpty)
        try expectExact(device, "built")
        try expectExact(reader, "built, other handle")

        // The built index is kept by every later write, as before.
        let kept = try device.records(ofType: "contact")
        try device.update(kept[5].id, ["city": .text("Riga")])
        try device.delete(kept[6].id)
        try device.create("contact", ["name": .text("Anna After"), "city": .text("Lyon")])
        try expectExact(device, "after the build")
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aSyncCutShortLeavesTheTypesDeferredAndTheNextPullBuildsThem(_ backend: DatabaseBackend) throws {
        let place = try StorePlace(backend)
        let records = try source(place)
        do {
            let device = try open(place, "device")
            try pull(records, into: device, stopAfter: 3)
            device.close()  // committed batches are all a killed process leaves, too
        }
        let reopened = try open(place, "device")
        #expect(try reopened.deferredFieldIndexTypes() == ["contact", "account"])
        #expect(try reopened.checkpoint(for: "server") == 750)
        try expectExact(reopened, "reopened, deferred")
        // The pull that resumes is not from the start: it keeps what is indexed indexed, and
        // builds what the cut one deferred when it ends.
        for start in stride(from: 750, to: records.count, by: 250) {
            try reopened.apply(encoded: Array(records[start..<min(start + 250, records.count)]))
        }
        try expectExact(reopened, "resumed, deferred")
        try reopened.completeFieldIndex()
        #expect(try reopened.deferredFieldIndexTypes().isEmpty)
        try expectExact(reopened, "resumed, built")
        #expect(try reopened.count(ofType: "contact") == (try open(place, "source").count(ofType: "contact")))
    }

    /// The connection settings of this handle: page cache and checkpoint interval.
    func settings(_ store: ReplicaStore) throws -> [Int64?] {
        [try store.sqliteFile!.scalarInt("PRAGMA cache_size"), try store.sqliteFile!.scalarInt("PRAGMA wal_autocheckpoint")]
    }

    @Test(.blocking) func aBulkWriteTakesALargerCacheAndGivesBackWhatItFound() throws {
        let place = try StorePlace(.sqlite)  // SQLite's page cache and checkpoints
        let device = try open(place, "device")
        try device.sqliteFile!.execute("PRAGMA cache_size = -3000")
        let before = try settings(device)
        try device.endBulkWrite()  // none begun: nothing to give back
        #expect(try settings(device) == before)
        try device.beginBulkWrite()
        try device.beginBulkWrite()  // every batch of a pull asks again
        // SQLite's own checkpoint is off: the log is copied on a thread of its own.
        let bulk: [Int64?] = [-Int64(ReplicaStore.bulkWriteCacheKiB), 0]
        #expect(try settings(device) == bulk)
        #expect(device.sqliteFile!.checkpointsLogInBackground)
        try pull(try source(place, contacts: 300), into: device)
        try device.completeFieldIndex()
        try device.endBulkWrite()
        #expect(try settings(device) == before)
        #expect(!device.sqliteFile!.checkpointsLogInBackground)
        try device.waitForLogCheckpoint()
        try expectExact(device)
    }

    /// `bulkWrite` begins a bulk write unless one is under way, and the one that began it ends
    /// it, whether its work returns or throws: an import of a whole export is one, and each of
    /// its files' imports too.
    @Test(.blocking) func aBulkWriteIsEndedByWhatBeganItEvenWhenItFails() throws {
        struct Failed: Error {}
        let place = try StorePlace(.sqlite)
        let store = try open(place, "device")
        try store.sqliteFile!.execute("PRAGMA cache_size = -3000")
        let before = try settings(store)
        let bulk: [Int64?] = [-Int64(ReplicaStore.bulkWriteCacheKiB), 0]
        try store.bulkWrite {
            #expect(store.isInBulkWrite)
            try store.bulkWrite { try store.create("contact", ["name": .text("first file")]) }
            #expect(try settings(store) == bulk, "the inner one did not end the outer one")
            #expect(throws: Failed.self) { try store.bulkWrite { throw Failed() } }
            #expect(store.isInBulkWrite)
            try store.create("contact", ["name": .text("second file")])
        }
        #expect(!store.isInBulkWrite)
        #expect(try settings(store) == before)
        #expect(throws: Failed.self) { try store.bulkWrite { throw Failed() } }
        #expect(!store.isInBulkWrite)
        #expect(try settings(store) == before)
        #expect(try store.count(ofType: "contact") == 2)
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aDeferralInABatchThatFailsIsUndoneWithIt(_ backend: DatabaseBackend) throws {
        let place = try StorePlace(backend)
        let records = try source(place, contacts: 100)
        let device = try open(place, "device")
        var broken = records[3]
        broken.state = [0xFF, 0xFF]
        #expect(throws: ReplicaStoreError.self) {
            try device.transaction {
                try device.deferFieldIndex(of: ["contact"])
                try device.apply(encoded: Array(records[0..<3]) + [broken])
            }
        }
        #expect(try device.deferredFieldIndexTypes().isEmpty)
        #expect(try device.count(ofType: "contact") == 0)
        try device.apply(encoded: records)
        #expect(try device.deferredFieldIndexTypes().isEmpty)
        try expectExact(device)
        // A type without indexed fields is never deferred.
        try device.deferFieldIndex(of: ["nothing"])
        #expect(try device.deferredFieldIndexTypes().isEmpty)
    }

    // MARK: Entries gathered beside the pull (`gatherFieldIndex()`)

    /// `pull` as RapportClient's pull from the start does it into an empty store: each batch
    /// checked apart from the store (`CheckedRecords`) and added to the gather, then applied.
    /// With `notingTexts` the check notes where the indexed texts lie, as the client asks it
    /// to; without, the gather reads them from the states itself.
    func pullGathering(_ records: [EncodedRecord], into store: ReplicaStore, gather: inout FieldIndexGather?,
                       gathering others: [EncodedRecord]? = nil, notingTexts: Bool = true, batch: Int = 250) throws {
        let texts = notingTexts ? gather?.textFields ?? [:] : [:]
        for start in stride(from: 0, to: records.count, by: batch) {
            let slice = Array(records[start..<min(start + batch, records.count)])
            let checked = CheckedRecords(slice, against: store.schema, texts: texts)
            try gather?.add(others.map { CheckedRecords(Array($0[start..<min(start + batch, $0.count)]), against: store.schema, texts: texts) } ?? checked)
            try store.transaction {
                try store.deferFieldIndex(of: slice.map(\.type))
                try store.apply(checked: checked, checkpoint: ("server", Int64(start + slice.count)))
            }
        }
        gather?.sort()
    }

    /// Every row of the index, in key order.
    func indexRows(_ store: ReplicaStore) throws -> [String] {
        try store.db.fetch("SELECT type, field, value, id FROM field_index ORDER BY type, field, value, id") { row in
            "\(try row.string(0)) \(try row.string(1)) \(try row.string(2)) \(try row.withBytes(3) { UUID(bytes: $0)! })"
        }
    }

    /// A type whose entries outgrow the memory a build may take has them set aside in sorted
    /// runs and merged: the index holds exactly what the writes kept in it, a word twice in one
    /// record once, as a build in memory makes it.
    @Test(.blocking) func anIndexLargerThanABuildsMemoryIsBuiltTheSame() throws {
        let place = try StorePlace(.sqlite)  // PostgreSQL reads a type's rows whole, and builds in memory
        let store = try open(place, "store")
        try store.apply(encoded: try source(place))
        try store.create("contact", ["name": .text("Anna anna ANNA-Smith smith"), "city": .text("Oslo")])
        let maintained = try indexRows(store)
        #expect(maintained.count > 3_000)
        for limit in [1 << 10, 64 << 10, ReplicaStore.fieldIndexBuildLimit] {
            let runs = try store.transaction { try store.buildFieldIndex(of: "contact", limit: limit) }
            #expect(limit < ReplicaStore.fieldIndexBuildLimit ? runs > 1 : runs == 0, "limit \(limit): \(runs) runs")
            #expect(try indexRows(store) == maintained, "limit \(limit)")
            try expectExact(store, "limit \(limit)")
        }
        // The runs' file is unlinked as soon as it is made: nothing is left beside the store.
        #expect(try FileManager.default.contentsOfDirectory(atPath: place.dir.url.path).filter { $0.hasPrefix(".index-runs") } == [])
    }

    @Test(.blocking, arguments: DatabaseBackend.allCases) func aGatheredIndexHoldsExactlyWhatReadingTheRecordsBackBuilds(_ backend: DatabaseBackend) throws {
        let place = try StorePlace(backend)
        let records = try source(place)
        let readBack = try open(place, "read-back")
        try pull(records, into: readBack)
        try readBack.completeFieldIndex()
        for notingTexts in [true, false] {
            let gathered = try open(place, "gathered-\(notingTexts)")
            var gather = try gathered.gatherFieldIndex()
            #expect(gather != nil)
            try pullGathering(records, into: gathered, gather: &gather, notingTexts: notingTexts)
            try gathered.completeFieldIndex(gathered: gather)
            try expectExact(gathered)
            #expect(try indexRows(gathered) == (try indexRows(readBack)), "noting texts: \(notingTexts)")
            #expect(try indexRows(gathered).count > records.count)
        }
    }

    /// The gather is taken only when every live record was stored as it came since the store
    /// was empty: here it is made from other records than those applied (as many, of the same
    /// types), so whether the store took it shows in the index.
    @Test(.blocking, arguments: DatabaseBackend.allCases) func aGatherIsTakenOnlyWhenNothingElseWroteTheStore(_ backend: DatabaseBackend) throws {
        let place = try StorePlace(backend)
        let records = try source(place)
        // As many records of the same types, under other ids.
        let others = try source(place, name: "other-source")
        #expect(others.count == records.count && Set(others.map(\.id)).isDisjoint(with: records.map(\.id)))

        // Nothing else wrote: the store takes the gather, wrong as it is made here.
        let taken = try open(place, "taken")
        var gather = try taken.gatherFieldIndex()
        try pullGathering(records, into: taken, gather: &gather, gathering: others)
        try taken.completeFieldIndex(gathered: gather)
        #expect(try taken.records(ofType: "contact", where: "city", equals: "Lyon").isEmpty)  // ids it does not hold
        #expect(try taken.deferredFieldIndexTypes().isEmpty)

        // Each of these writes makes the gather incomplete: the index is read back, exact.
        let writes: [(String, (ReplicaStore) throws -> Void)] = [
            ("a local edit", { store in try store.update(try store.records(ofType: "contact")[0].id, ["city": .text("Oslo")]) }),
            ("another handle's write", { _ in
                let other = try open(place, "edited-elsewhere")
                try other.create("contact", ["name": .text("Zed Other"), "city": .text("Bern")])
                other.close()
            }),
            ("a batch rolled back", { store in
                var broken = records[3]
                broken.id = UUID.newRecordID()
                broken.state = [0xFF, 0xFF]
                #expect(throws: ReplicaStoreError.self) { try store.apply(encoded: [broken]) }
            }),
        ]
        for (index, (name, write)) in writes.enumerated() {
            let label = index == 1 ? "edited-elsewhere" : "store-\(index)"
            let store = try open(place, label)
            var gather = try store.gatherFieldIndex()
            try pullGathering(Array(records[..<500]), into: store, gather: &gather, gathering: Array(others[..<500]))
            try write(store)
            try pullGathering(Array(records[500...]), into: store, gather: &gather, gathering: Array(others[500...]))
            try store.completeFieldIndex(gathered: gather)
            try expectExact(store, "after \(name)")
        }

        // A store that holds records already (a resync) gathers nothing.
        let holding = try open(place, "holding")
        try holding.create("account", ["name": .text("Mine")])
        #expect(try holding.gatherFieldIndex() == nil)
    }

    /// Entries read beside the store while it inserts another type's (`FieldIndexPrebuild`)
    /// are taken only when no record changed since the read began: by this handle, by another
    /// one, or by a purge, which moves no change sequence. Taken, they build the index the
    /// store's own read builds, in memory or from runs set aside.
    @Test(.blocking) func entriesReadBesideTheStoreAreTakenOnlyWhenNoRecordChangedSince() throws {
        let place = try StorePlace(.sqlite)  // only a store file of its own is read beside
        let store = try open(place, "store")
        try store.apply(encoded: try source(place))
        let maintained = try indexRows(store)
        let fields = try #require(store.indexedFieldsByType["contact"])
        func prebuild(limit: Int = ReplicaStore.fieldIndexBuildLimit) throws -> FieldIndexPrebuild {
            FieldIndexPrebuild(type: "contact", fields: fields, path: store.path, tenant: store.tenant, store: try store.prebuildMark(), limit: limit)
        }
        for limit in [1 << 10, ReplicaStore.fieldIndexBuildLimit] {
            let read = try prebuild(limit: limit)
            guard let taken = read.take(ifStoreIsStill: try store.prebuildMark()) else {
                Issue.record("nothing changed, yet the entries were not taken")
                return
            }
            try store.db.run("DELETE FROM field_index WHERE type = 'contact'")
            let runs = try store.insert(taken, type: "contact")
            #expect(limit < ReplicaStore.fieldIndexBuildLimit ? runs > 1 : runs == 0, "limit \(limit): \(runs) runs")
            #expect(try indexRows(store) == maintained, "limit \(limit)")
        }

        let contacts = try store.records(ofType: "contact").map(\.id)
        let (contact, upstreamOnly) = (contacts[0], contacts[3])
        func takes(_ read: FieldIndexPrebuild) throws -> Bool {
            switch read.take(ifStoreIsStill: try store.prebuildMark()) {
            case .some: true
            case .none: false
            }
        }
        #expect(try takes(try prebuild()), "nothing changed")
        let changes: [(String, () throws -> Void)] = [
            ("a write of this handle", { try store.update(contact, ["city": .text("Riga")]) }),
            ("a write of another handle", {
                let other = try open(place, "store")
                try other.create("contact", ["name": .text("Zed Other"), "city": .text("Bern")])
                other.close()
            }),
            ("a purge by another handle", {
                let other = try open(place, "store")
                #expect(try other.evict([upstreamOnly], reason: "left the scope").isEmpty, "taken from upstream: purged at once")
                other.close()
            }),
        ]
        for (name, change) in changes {
            let read = try prebuild()
            try change()
            #expect(try !takes(read), "after \(name)")
        }
    }
}
