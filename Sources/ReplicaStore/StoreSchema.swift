import SQLBackend
import SQLite

/// The store's own tables, as numbered migrations.
enum StoreSchema {
    /// Marks a file as a Rapport replica store ('RPRS'), so a foreign SQLite file is refused
    /// before anything is written to it.
    static let applicationID: Int64 = 0x5250_5253

    static let migrations: [Migration] = [
        Migration(version: 1, "records, change sequence, dirty set, conflict log", sql: """
            -- One row: this replica's identity and the counters that must survive restarts.
            CREATE TABLE replica (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                replica_id TEXT NOT NULL,
                counter INTEGER NOT NULL,     -- the last dot counter this replica used
                sequence INTEGER NOT NULL,    -- the last change sequence number given out
                clock INTEGER NOT NULL        -- the last hybrid logical clock timestamp
            );
            -- A record's seq is the sequence number of its latest change, and the rowid, so
            -- "everything after N" is a range scan of the table itself.
            -- dirty: the record has changes upstream has not acknowledged yet. A column rather
            -- than a table, so that applying a batch never needs a second statement per record.
            CREATE TABLE records (
                seq INTEGER PRIMARY KEY,
                id BLOB NOT NULL UNIQUE,
                type TEXT NOT NULL,
                deleted INTEGER NOT NULL,
                dirty INTEGER NOT NULL,
                vector BLOB NOT NULL,
                state BLOB NOT NULL
            );
            CREATE INDEX records_dirty ON records (seq) WHERE dirty = 1;
            CREATE TABLE conflicts (
                id INTEGER PRIMARY KEY,
                record BLOB NOT NULL,
                type TEXT NOT NULL,
                field TEXT NOT NULL,          -- '' for the record's existence
                kind TEXT NOT NULL,
                winner_value BLOB, winner_replica TEXT NOT NULL, winner_counter INTEGER NOT NULL,
                winner_clock INTEGER NOT NULL, winner_deleted INTEGER NOT NULL,
                loser_value BLOB, loser_replica TEXT NOT NULL, loser_counter INTEGER NOT NULL,
                loser_clock INTEGER NOT NULL, loser_deleted INTEGER NOT NULL,
                detected_at INTEGER NOT NULL,
                status TEXT NOT NULL DEFAULT 'open',
                resolution TEXT,
                closed_at INTEGER,
                UNIQUE (record, field, loser_replica, loser_counter)
            );
            CREATE INDEX conflicts_by_record ON conflicts (record, status);
            CREATE INDEX conflicts_by_status ON conflicts (status, id);
            """),
        Migration(version: 2, "sync checkpoints per peer, reasons for rejected changes", sql: """
            -- The last change sequence number applied from each peer, saved in the same
            -- transaction as the batch it ends, so an interrupted sync resumes exactly there.
            CREATE TABLE peer_checkpoints (
                peer TEXT PRIMARY KEY,
                sequence INTEGER NOT NULL
            );
            ALTER TABLE conflicts ADD COLUMN reason TEXT;
            -- A server tells each device about the conflicts its own writes lost.
            CREATE INDEX conflicts_by_loser ON conflicts (loser_replica, record);
            """),
        Migration(version: 3, "local transactions of records, field index", sql: """
            -- The local transaction that last wrote the record (its first sequence number), so
            -- that a push keeps the records of one transaction in one batch, which the server
            -- applies atomically. NULL for rows written before this column existed.
            ALTER TABLE records ADD COLUMN txn INTEGER;
            CREATE INDEX records_dirty_txn ON records (txn) WHERE dirty = 1;
            -- Text values of the indexed fields of live records (ReplicaStore.Options
            -- .indexedFields), and the lower-cased words of their search fields under the
            -- field name '' (.searchFields), written in the transaction that writes the record.
            CREATE TABLE field_index (
                type TEXT NOT NULL,
                field TEXT NOT NULL,
                value TEXT NOT NULL,
                id BLOB NOT NULL,
                PRIMARY KEY (type, field, value, id)
            ) WITHOUT ROWID;
            -- The indexed and search fields the index was built for: when the options name
            -- others, the store rebuilds it on opening.
            CREATE TABLE field_index_config (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                fields TEXT NOT NULL
            );
            """),
        Migration(version: 4, "settings of this replica", sql: """
            -- What this replica keeps about itself and never syncs (the rights its user was last
            -- given, on a device), by key; written with the store's transactions, so a copy or a
            -- restore of the file keeps them with the records they apply to.
            CREATE TABLE local_settings (
                key TEXT PRIMARY KEY,
                value BLOB NOT NULL
            ) WITHOUT ROWID;
            """),
        Migration(version: 5, "scopes: what each downstream peer holds; evictions waiting for a push", sql: """
            -- On a server: the records each device was sent and still holds, so a record that
            -- leaves a device's scope is evicted from it, and only from a device that has it.
            CREATE TABLE peer_records (
                peer TEXT NOT NULL,
                id BLOB NOT NULL,
                PRIMARY KEY (peer, id)
            ) WITHOUT ROWID;
            -- On a server: the access a device's scope was last computed for (ScopeState JSON).
            CREATE TABLE peer_scopes (
                peer TEXT PRIMARY KEY,
                state TEXT NOT NULL
            ) WITHOUT ROWID;
            -- On a device: records upstream evicted while they had unsynced changes; purged once
            -- those are pushed and answered.
            CREATE TABLE pending_evictions (
                id BLOB PRIMARY KEY,
                reason TEXT NOT NULL
            ) WITHOUT ROWID;
            """),
        Migration(version: 6, "a branch: evictions from upstream to pass on to the devices that hold the records", sql: """
            -- On a branch office: records its upstream took out of its scope that a device of
            -- the branch holds, to evict from that device at its next pull (SPEC.md 6.1).
            CREATE TABLE peer_evictions (
                peer TEXT NOT NULL,
                id BLOB NOT NULL,
                type TEXT NOT NULL,
                reason TEXT NOT NULL,
                PRIMARY KEY (peer, id)
            ) WITHOUT ROWID;
            """),
        Migration(version: 7, "field index entries deferred during a pull from the start", sql: """
            -- Types whose field_index entries are not kept up to date: a pull from the start
            -- (an initial sync) stores their records without entries and builds the entries in
            -- one sorted pass when it ends (ReplicaStore.completeFieldIndex). While a type is
            -- listed here, queries on it read its records instead of the index, so a reader
            -- never sees a partial index, and a sync killed half-way leaves a store that answers
            -- right and builds the entries at the end of its next pull.
            CREATE TABLE field_index_deferred (
                type TEXT PRIMARY KEY
            ) WITHOUT ROWID;
            """),
        Migration(version: 8, "retention: when each sequence was reached, a resync's records not seen again", sql: """
            -- The store's change sequence as it stood at moments of its wall clock, noted by each
            -- purge: a tombstone whose sequence is at or below a mark older than the horizon has
            -- been deleted for longer than that (SPEC.md 1.8). Sparse, and pruned by the purge.
            CREATE TABLE sequence_marks (
                seq INTEGER PRIMARY KEY,
                at INTEGER NOT NULL
            );
            -- Tombstones in sequence order: what a purge may take.
            CREATE INDEX records_tombstones ON records (seq) WHERE deleted = 1;
            -- On a device during a resync (upstream purged past its checkpoint): the records it
            -- held when the resync began that the fresh copy has not brought yet. Those left
            -- when the pull from 0 ends, and without changes to push, are dropped.
            CREATE TABLE resync_unseen (
                id BLOB PRIMARY KEY
            ) WITHOUT ROWID;
            """),
        Migration(version: 9, "when each local setting was written, for settings that expire", sql: """
            -- Wall-clock milliseconds of the setting's last write; NULL for one written before
            -- this migration, which the first purge of its kind stamps, so it is never purged early.
            ALTER TABLE local_settings ADD COLUMN kept_at INTEGER;
            """),
        Migration(version: 10, "a store whose tenant moved to another database takes no more writes", sql: """
            -- Set by `rapportctl tenant move` once the tenant's rows are copied, in the
            -- transaction that held the write lock for the copy: a server that still has this
            -- store open is refused every later write (ReplicaStoreError.moved), so nothing is
            -- written where no one will read it again. Where the tenant went, for the message.
            ALTER TABLE replica ADD COLUMN moved_to TEXT;
            """),
    ]
}

extension ReplicaStore {
    /// The store's tables in a PostgreSQL database shared by tenants: those of `StoreSchema`'s
    /// migrations as they stand at version 10, in PostgreSQL's types, every table keyed by
    /// `tenant_id` first. Run by whoever connects first (`PostgresConnection.migrate("store",
    /// ...)`, under an advisory lock, so nodes starting together run it once); a tenant's store
    /// is then opened with `init(database:tenant:options:)`. A new store migration adds an
    /// entry here too.
    ///
    /// Every primary key and unique constraint starts with `tenant_id` and every statement of
    /// the store names its tenant as a constant (`TenantRows`), so on Citus each table is
    /// distributed by `tenant_id`, all of them co-located with `records`, and every statement
    /// of a tenant runs on one shard (see README, "PostgreSQL").
    ///
    /// Text compared by ranges of bytes (index values and words, setting keys) uses the "C"
    /// collation, so ranges and order are SQLite's byte order whatever the database's locale.
    public static let postgresMigrations: [PostgresMigration] = [
        PostgresMigration(version: 1, "tenant stores as of SQLite store schema 9", sql: """
            CREATE TABLE replica (
                tenant_id text NOT NULL,
                singleton integer NOT NULL CHECK (singleton = 1),
                replica_id text NOT NULL,
                counter bigint NOT NULL,
                sequence bigint NOT NULL,
                clock bigint NOT NULL,
                PRIMARY KEY (tenant_id, singleton)
            );
            CREATE TABLE records (
                tenant_id text NOT NULL,
                seq bigint NOT NULL,
                id bytea NOT NULL,
                type text NOT NULL,
                deleted bigint NOT NULL,
                dirty bigint NOT NULL,
                vector bytea NOT NULL,
                state bytea NOT NULL,
                txn bigint,
                PRIMARY KEY (tenant_id, seq),
                UNIQUE (tenant_id, id)
            );
            CREATE INDEX records_dirty ON records (tenant_id, seq) WHERE dirty = 1;
            CREATE INDEX records_dirty_txn ON records (tenant_id, txn) WHERE dirty = 1;
            CREATE INDEX records_tombstones ON records (tenant_id, seq) WHERE deleted = 1;
            CREATE TABLE conflicts (
                tenant_id text NOT NULL,
                id bigint NOT NULL,           -- numbered per tenant (ReplicaStore.log)
                record bytea NOT NULL,
                type text NOT NULL,
                field text NOT NULL,
                kind text NOT NULL,
                winner_value bytea, winner_replica text NOT NULL, winner_counter bigint NOT NULL,
                winner_clock bigint NOT NULL, winner_deleted bigint NOT NULL,
                loser_value bytea, loser_replica text NOT NULL, loser_counter bigint NOT NULL,
                loser_clock bigint NOT NULL, loser_deleted bigint NOT NULL,
                detected_at bigint NOT NULL,
                status text NOT NULL DEFAULT 'open',
                resolution text,
                closed_at bigint,
                reason text,
                PRIMARY KEY (tenant_id, id),
                UNIQUE (tenant_id, record, field, loser_replica, loser_counter)
            );
            CREATE INDEX conflicts_by_record ON conflicts (tenant_id, record, status);
            CREATE INDEX conflicts_by_status ON conflicts (tenant_id, status, id);
            CREATE INDEX conflicts_by_loser ON conflicts (tenant_id, loser_replica, record);
            CREATE TABLE peer_checkpoints (
                tenant_id text NOT NULL,
                peer text NOT NULL,
                sequence bigint NOT NULL,
                PRIMARY KEY (tenant_id, peer)
            );
            CREATE TABLE field_index (
                tenant_id text NOT NULL,
                type text NOT NULL,
                field text NOT NULL,
                value text COLLATE "C" NOT NULL,
                id bytea NOT NULL,
                PRIMARY KEY (tenant_id, type, field, value, id)
            );
            CREATE TABLE field_index_config (
                tenant_id text NOT NULL,
                singleton integer NOT NULL CHECK (singleton = 1),
                fields text NOT NULL,
                PRIMARY KEY (tenant_id, singleton)
            );
            CREATE TABLE local_settings (
                tenant_id text NOT NULL,
                key text COLLATE "C" NOT NULL,
                value bytea NOT NULL,
                kept_at bigint,
                PRIMARY KEY (tenant_id, key)
            );
            CREATE TABLE peer_records (
                tenant_id text NOT NULL,
                peer text NOT NULL,
                id bytea NOT NULL,
                PRIMARY KEY (tenant_id, peer, id)
            );
            CREATE TABLE peer_scopes (
                tenant_id text NOT NULL,
                peer text NOT NULL,
                state text NOT NULL,
                PRIMARY KEY (tenant_id, peer)
            );
            CREATE TABLE pending_evictions (
                tenant_id text NOT NULL,
                id bytea NOT NULL,
                reason text NOT NULL,
                PRIMARY KEY (tenant_id, id)
            );
            CREATE TABLE peer_evictions (
                tenant_id text NOT NULL,
                peer text NOT NULL,
                id bytea NOT NULL,
                type text NOT NULL,
                reason text NOT NULL,
                PRIMARY KEY (tenant_id, peer, id)
            );
            CREATE TABLE field_index_deferred (
                tenant_id text NOT NULL,
                type text NOT NULL,
                PRIMARY KEY (tenant_id, type)
            );
            CREATE TABLE sequence_marks (
                tenant_id text NOT NULL,
                seq bigint NOT NULL,
                at bigint NOT NULL,
                PRIMARY KEY (tenant_id, seq)
            );
            CREATE TABLE resync_unseen (
                tenant_id text NOT NULL,
                id bytea NOT NULL,
                PRIMARY KEY (tenant_id, id)
            );
            """),
        PostgresMigration(version: 2, "as SQLite store schema 10: a moved tenant's store takes no more writes", sql: """
            ALTER TABLE replica ADD COLUMN moved_to text;
            """),
    ]
}
