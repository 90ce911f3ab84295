import Logging
import PostgresNIO

extension PostgresSessionStore {
    /// The schema version this build writes and understands, kept in `portcullis_schema`.
    public static let schemaVersion = 2

    /// Advisory lock keys (`pg_advisory_xact_lock(bigint)`), one per purpose. The high bytes spell "portcul" so they
    /// do not collide with another application's locks in a shared database.
    enum LockKey {
        /// Held while the schema is created or migrated: ten replicas starting at once migrate once.
        static let schema: Int64 = 0x706F_7274_6375_6C01
        /// Held by every revocation-log appender from before `nextval` until commit, so sequence order is commit
        /// order (sequence values alone can commit out of order): a reader that has seen seq n can never later find
        /// a smaller one committed.
        static let revocations: Int64 = 0x706F_7274_6375_6C02
        /// Taken with `pg_try_advisory_xact_lock` by purge: one replica cleans up at a time, the others skip.
        static let purge: Int64 = 0x706F_7274_6375_6C03
        /// Held while the first signing key is created, so the fleet agrees on one.
        static let signingKeys: Int64 = 0x706F_7274_6375_6C04
    }

    /// The statements that take a database from version `n` to `n + 1`, at index `n`. Append; never edit a shipped
    /// step. Names carry a `portcullis_` prefix: the database may be shared with other applications.
    static let migrations: [[String]] = [
        // 1: sessions, refresh tokens (hashes only), the revocation log, failed logins, signing keys.
        [
            """
            CREATE TABLE portcullis_sessions (
                id text PRIMARY KEY,
                subject text NOT NULL,
                scopes text NOT NULL,
                client_id text NOT NULL,
                claims text NOT NULL,
                created_at double precision NOT NULL,
                last_refreshed_at double precision NOT NULL,
                revoked_at double precision
            )
            """,
            "CREATE INDEX portcullis_sessions_revoked_at ON portcullis_sessions (revoked_at) WHERE revoked_at IS NOT NULL",
            "CREATE INDEX portcullis_sessions_created_at ON portcullis_sessions (created_at)",
            "CREATE INDEX portcullis_sessions_idle ON portcullis_sessions (last_refreshed_at) WHERE revoked_at IS NULL",
            """
            CREATE TABLE portcullis_refresh_tokens (
                hash bytea PRIMARY KEY,
                session_id text NOT NULL REFERENCES portcullis_sessions (id) ON DELETE CASCADE,
                state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired')),
                retired_at double precision,
                successor bytea,
                CHECK ((state = 'active') = (retired_at IS NULL))
            )
            """,
            "CREATE INDEX portcullis_refresh_tokens_session_id ON portcullis_refresh_tokens (session_id)",
            """
            CREATE INDEX portcullis_refresh_tokens_successor ON portcullis_refresh_tokens (retired_at)
                WHERE successor IS NOT NULL
            """,
            // A sequence never hands out a number twice, even after the rows are purged, so a follower past a
            // purged entry cannot skip a new one.
            "CREATE SEQUENCE portcullis_revocations_seq",
            """
            CREATE TABLE portcullis_revocations (
                seq bigint PRIMARY KEY,
                session_id text NOT NULL,
                revoked_at double precision NOT NULL
            )
            """,
            "CREATE INDEX portcullis_revocations_revoked_at ON portcullis_revocations (revoked_at)",
            // One row per failed login and key (`u:<username>`, `a:<address>`), counted within the window by every
            // replica.
            "CREATE TABLE portcullis_login_failures (key text NOT NULL, at double precision NOT NULL)",
            "CREATE INDEX portcullis_login_failures_key_at ON portcullis_login_failures (key, at)",
            "CREATE INDEX portcullis_login_failures_at ON portcullis_login_failures (at)",
            """
            CREATE TABLE portcullis_signing_keys (
                kid text PRIMARY KEY,
                alg text NOT NULL,
                public_jwk text NOT NULL,
                sealed_private_key bytea NOT NULL,
                created_at double precision NOT NULL,
                activates_at double precision NOT NULL,
                retired_at double precision
            )
            """,
        ],
        // 2: the idle index goes. Every refresh changes `last_refreshed_at`, so with it indexed no session update
        // could be HOT and the index grew by an entry per refresh; worse, its predicate (`revoked_at IS NULL`) made
        // it a candidate for the rotation's `id = $4 AND revoked_at IS NULL`, and plans made while the table was
        // small scanned it whole (measured: 13,000 index entries read per refresh after 25,000 refreshes of 128
        // sessions, 0.94 ms per rotation against 0.18 ms without it). Only purge's idle sweep used it; that sweep
        // now reads the table, once per purge round on one replica. Free space on each page lets the update stay
        // on its page (HOT).
        [
            "DROP INDEX IF EXISTS portcullis_sessions_idle",
            "ALTER TABLE portcullis_sessions SET (fillfactor = 80)",
        ],
    ]

    /// Creates or migrates the schema in one transaction under the schema lock. Safe when many processes open the
    /// same database at once: the version is read under the lock, so only the first migrates and the others find
    /// it done. Refuses a database of a newer version.
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.schema))", logger: logger)
            // Under the lock: concurrent CREATE TABLE IF NOT EXISTS can otherwise fail on the catalog's unique index.
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS portcullis_schema (version integer NOT NULL)", logger: logger)
            var current = 0
            for try await version in try await connection.query("SELECT max(version) FROM portcullis_schema", logger: logger)
                .decode(Int?.self)
            {
                current = version ?? 0
            }
            guard current <= schemaVersion else {
                throw PostgresStoreError(
                    .schemaTooNew,
                    "the database has schema version \(current), newer than the \(schemaVersion) this Portcullis knows; upgrade Portcullis")
            }
            if current < schemaVersion {
                for step in migrations[current..<schemaVersion] {
                    for statement in step {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                }
                try await connection.query("DELETE FROM portcullis_schema", logger: logger)
                try await connection.query("INSERT INTO portcullis_schema (version) VALUES (\(schemaVersion))", logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
