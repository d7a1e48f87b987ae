import SQLBackend

extension PostgresConnection {
    /// The version of `component`'s schema in this database (0: none yet).
    public func schemaVersion(of component: String) throws -> Int {
        try run("CREATE TABLE IF NOT EXISTS rapport_schema (component text PRIMARY KEY, version bigint NOT NULL)")
        return Int(try scalarInt("SELECT version FROM rapport_schema WHERE component = ?", [component]) ?? 0)
    }

    /// Brings `component`'s schema up to the last of `migrations` (numbered 1, 2, ...), each in
    /// its own transaction with the version it reaches, and returns the versions applied.
    ///
    /// Several nodes may start at once against one database: each migration takes an advisory
    /// lock on the component first and reads the version again under it, so it runs once.
    ///
    /// - Throws: `PostgresError` when the database holds a newer schema than `migrations` know
    ///   (written by a newer Rapport); nothing is changed then.
    @discardableResult
    public func migrate(_ component: String, _ migrations: [PostgresMigration]) throws -> [Int] {
        var applied: [Int] = []
        _ = try schemaVersion(of: component)
        for migration in migrations {
            let ran: Bool = try transaction {
                try run("SELECT pg_advisory_xact_lock(hashtext(?))", ["rapport_schema:" + component])
                let current = try schemaVersion(of: component)
                guard current < migration.version else { return false }
                guard current == migration.version - 1 else {
                    throw PostgresError(message: "the \(component) schema is at version \(current); migration \(migration.version) cannot follow it",
                                        server: server)
                }
                try execute(script: migration.sql)
                try run("""
                    INSERT INTO rapport_schema (component, version) VALUES (?, ?)
                    ON CONFLICT (component) DO UPDATE SET version = excluded.version
                    """, [component, migration.version])
                return true
            }
            if ran { applied.append(migration.version) }
        }
        let version = try schemaVersion(of: component)
        if version > migrations.count {
            throw PostgresError(message: "the \(component) schema is at version \(version), written by a newer Rapport (this one knows \(migrations.count))",
                                server: server)
        }
        return applied
    }
}
