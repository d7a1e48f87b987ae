/// One numbered schema change.
public struct Migration: Sendable {
    /// The `user_version` the database has once this migration ran. Versions start at 1.
    public let version: Int
    /// What the migration does, for logs and errors.
    public let summary: String
    let apply: @Sendable (Database) throws -> Void

    /// A migration made of SQL statements.
    public init(version: Int, _ summary: String, sql: String) {
        self.init(version: version, summary) { try $0.execute(sql) }
    }

    /// A migration that needs code (moving data, for example).
    public init(version: Int, _ summary: String, apply: @escaping @Sendable (Database) throws -> Void) {
        self.version = version
        self.summary = summary
        self.apply = apply
    }
}

/// Why a database cannot be migrated.
public enum MigrationError: Error, Equatable, CustomStringConvertible {
    /// The file was written by a newer version of the program, which knows migrations this one
    /// does not. Opening it would risk writing data the newer schema does not expect.
    case databaseIsNewer(path: String, found: Int, supported: Int)
    /// The list of migrations is not numbered 1, 2, 3, ...: a programming error, reported as a value
    /// so that tests can check it.
    case invalidNumbering(String)

    public var description: String {
        switch self {
        case let .databaseIsNewer(path, found, supported):
            return "\(path) has schema version \(found), newer than the \(supported) this program supports; upgrade the program"
        case let .invalidNumbering(message):
            return "invalid migration list: \(message)"
        }
    }
}

extension Database {
    /// The schema version stored in the file header (`PRAGMA user_version`).
    public var userVersion: Int {
        get throws { Int(try scalarInt("PRAGMA user_version") ?? 0) }
    }

    /// Runs every migration newer than the file's `user_version`, each in its own transaction
    /// together with the version bump, so a crash leaves the file at a whole version.
    ///
    /// - Returns: the versions that ran, in order.
    @discardableResult
    public func migrate(_ migrations: [Migration]) throws -> [Int] {
        for (offset, migration) in migrations.enumerated() where migration.version != offset + 1 {
            throw MigrationError.invalidNumbering("migration at position \(offset + 1) has version \(migration.version)")
        }
        let current = try userVersion
        guard current <= migrations.count else {
            throw MigrationError.databaseIsNewer(path: path, found: current, supported: migrations.count)
        }
        var ran: [Int] = []
        for migration in migrations.dropFirst(current) {
            try transaction {
                try migration.apply(self)
                try execute("PRAGMA user_version = \(migration.version)")
            }
            ran.append(migration.version)
        }
        return ran
    }
}
