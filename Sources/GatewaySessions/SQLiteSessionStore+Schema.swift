extension SQLiteSessionStore {
    /// The schema version this build writes and understands, kept in `PRAGMA user_version`.
    public static let schemaVersion: Int32 = 2

    /// The statements that take a database from version `n` to `n + 1`, at index `n`. Append; never edit a shipped
    /// step. Each step is written to be harmless when re-run (`IF NOT EXISTS`).
    static let migrations: [String] = [
        // 1: sessions and their refresh tokens (hashes only).
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id TEXT PRIMARY KEY NOT NULL,
            subject TEXT NOT NULL,
            scopes TEXT NOT NULL,              -- space-joined (RFC 6749 scope tokens never contain a space)
            client_id TEXT NOT NULL,
            claims TEXT NOT NULL,              -- compact JSON object
            created_at REAL NOT NULL,          -- seconds since 1970; start of the absolute lifetime
            last_refreshed_at REAL NOT NULL,   -- start of the idle lifetime
            revoked_at REAL
        );
        -- Partial indexes: most sessions are never revoked, and only live ones can go idle.
        CREATE INDEX IF NOT EXISTS sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS sessions_created_at ON sessions (created_at);
        CREATE INDEX IF NOT EXISTS sessions_idle ON sessions (last_refreshed_at) WHERE revoked_at IS NULL;
        CREATE TABLE IF NOT EXISTS refresh_tokens (
            hash BLOB PRIMARY KEY NOT NULL,    -- SHA-256 of the token; the token itself is never stored
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired')),
            retired_at REAL,
            successor BLOB,                    -- sealed successor pair, kept for the reuse grace only
            CHECK ((state = 'active') = (retired_at IS NULL))
        );
        CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens (session_id);
        -- Only tokens still holding a successor, so purge finds the ones past the grace without a scan.
        CREATE INDEX IF NOT EXISTS refresh_tokens_successor ON refresh_tokens (retired_at) WHERE successor IS NOT NULL;
        """,
        // 2: the revocation log (DESIGN §9), which revocation-feed followers catch up from. Every write holds
        // SQLite's single write lock, so sequence order is commit order. AUTOINCREMENT: a purged number is never
        // handed out again, or a follower past it would skip the new entry. Revocations made before this version
        // join the log in the order they happened.
        """
        CREATE TABLE IF NOT EXISTS revocations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            revoked_at REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS revocations_revoked_at ON revocations (revoked_at);
        INSERT INTO revocations (session_id, revoked_at)
            SELECT id, revoked_at FROM sessions
            WHERE revoked_at IS NOT NULL AND id NOT IN (SELECT session_id FROM revocations)
            ORDER BY revoked_at, id;
        """,
    ]

    /// Connection settings, and a refusal of databases this build must not touch. Runs before `migrate`.
    static func configure(_ db: SQLiteConnection) throws {
        // Read the version first: it is the first read of the file (so a non-database fails here, naming the path),
        // and a newer schema is refused before anything is written to it.
        let version = try userVersion(db)
        guard version <= schemaVersion else { throw tooNew(db, version) }
        // WAL: readers never block the writer and a commit is one append. It is a property of the file, so every
        // connection (and process) on it agrees; NORMAL sync is durable across application crashes and loses at most
        // the last commits on power loss, which for sessions means a re-login.
        let mode = try db.query("PRAGMA journal_mode = WAL") { $0.text(0) }.first ?? nil
        guard mode?.lowercased() == "wal" else {
            throw SQLiteError(code: .walUnavailable, message: "\(db.path): the file system does not allow WAL journaling")
        }
        try db.execute("PRAGMA synchronous = NORMAL")
        // Per connection, and a no-op inside a transaction: set here, once, before any.
        try db.execute("PRAGMA foreign_keys = ON")
    }

    /// Brings the schema to `schemaVersion` in one transaction. Idempotent, and safe when several processes start on
    /// one file at once: the version is re-read under the write lock, so only the first one migrates.
    static func migrate(_ db: SQLiteConnection) throws {
        if try userVersion(db) == schemaVersion { return }
        try db.immediateTransaction {
            let current = try userVersion(db)
            guard current <= schemaVersion else { throw tooNew(db, current) }
            guard current < schemaVersion else { return }
            for step in migrations[Int(current)..<Int(schemaVersion)] {
                try db.execute(step)
            }
            try db.execute("PRAGMA user_version = \(schemaVersion)")
        }
    }

    static func userVersion(_ db: SQLiteConnection) throws -> Int32 {
        guard let version = try db.query("PRAGMA user_version", row: { $0.integer(0) }).first ?? nil,
            let narrow = Int32(exactly: version), narrow >= 0
        else {
            throw SQLiteError(code: .corrupt, message: "\(db.path): unreadable or negative user_version")
        }
        return narrow
    }

    private static func tooNew(_ db: SQLiteConnection, _ version: Int32) -> SQLiteError {
        SQLiteError(
            code: .schemaTooNew,
            message: "\(db.path) has schema version \(version), newer than the \(schemaVersion) this Portcullis knows; "
                + "upgrade Portcullis or point store.path at another file")
    }
}
