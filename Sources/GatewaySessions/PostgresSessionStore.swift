import Logging
import NIOCore
import PostgresNIO

/// The fleet's store (`store.type: postgres`, DESIGN §9): sessions, refresh-token families, the revocation log,
/// failed logins and signing keys in one PostgreSQL database that every replica shares.
///
/// Same contract as `SQLiteSessionStore`, with PostgreSQL's concurrency:
/// - `rotate` is one statement whose conditional UPDATE (`state = 'active'`) decides a race: of several rotations
///   of one token, on any replicas, the first to lock the row wins, the others re-check the condition after its
///   commit (READ COMMITTED re-evaluation) and change nothing;
/// - revocation-log appenders serialise on an advisory lock held until commit, so sequence order is commit order,
///   and each notifies `portcullis_revocations` (payload: the sequence) in the same transaction;
/// - every call runs under the deadline `connect_timeout_ms` (see `PostgresPool`), throwing `SessionStoreError`
///   when the database is down or silent.
public final class PostgresSessionStore: SessionStore {
    /// The channel revocations are notified on (payload: the entry's sequence number, decimal).
    public static let revocationChannel = "portcullis_revocations"

    public let settings: PostgresConnectionSettings
    let pool: PostgresPool
    let logger: Logger

    private init(settings: PostgresConnectionSettings, pool: PostgresPool, logger: Logger) {
        self.settings = settings
        self.pool = pool
        self.logger = logger
    }

    /// Connects, creates or migrates the schema (under an advisory lock, so many replicas may start at once), and
    /// starts the pool. A first connection is made directly, so a wrong password, a missing database or a TLS
    /// problem is reported as such (`SessionStoreError(.unavailable)` carrying the server's message) instead of
    /// as a pool timeout. Throws `SessionStoreError(.timedOut)` when the database does not answer within the
    /// deadline, and `PostgresStoreError` for a newer schema or an unusable `ca_file`.
    public static func open(
        _ settings: PostgresConnectionSettings, logger: Logger = silentPostgresLogger
    ) async throws
        -> PostgresSessionStore
    {
        // Connecting gets the usual deadline; the migration more: it may wait for another replica's (index
        // builds, the schema lock), and it runs once per process start, not per request.
        let migrationDeadline = max(settings.deadline, .seconds(30))
        try await PostgresProbe.withConnection(settings, "opening the store", bodyDeadline: migrationDeadline, logger: logger) {
            connection in
            try await migrate(connection, logger: logger)
        }
        let pool = try PostgresPool(settings: settings, logger: logger)
        return PostgresSessionStore(settings: settings, pool: pool, logger: logger)
    }

    // MARK: - SessionStore

    public func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) async throws {
        let logger = self.logger
        try await pool.withConnection("create") { connection in
            // One statement, so one round trip and atomic without BEGIN/COMMIT.
            _ = try await connection.query(
                """
                WITH s AS (
                    INSERT INTO portcullis_sessions
                        (id, subject, scopes, client_id, claims, created_at, last_refreshed_at, revoked_at)
                    VALUES (\(session.id), \(session.subject), \(session.scopes.joined(separator: " ")), \(session.clientID),
                            \(session.claims), \(session.createdAt), \(session.lastRefreshedAt), \(session.revokedAt))
                    RETURNING id
                )
                INSERT INTO portcullis_refresh_tokens (hash, session_id) SELECT \(Bytes(refreshTokenHash)), id FROM s
                """, logger: logger)
        }
    }

    public func lookup(refreshTokenHash: [UInt8]) async throws -> (token: RefreshTokenRecord, session: SessionRecord)? {
        let logger = self.logger
        let found = try await pool.withConnection("lookup") { connection -> LookupRow? in
            var result: LookupRow?
            for try await row in try await connection.execute(LookupStatement(hash: refreshTokenHash), logger: logger) {
                result = LookupRow(row)
            }
            return result
        }
        guard let found else { return nil }
        let state: RefreshTokenRecord.State
        switch (found.state, found.retiredAt) {
        case ("active", _):
            state = .active
        case ("retired", let at?):
            state = .retired(at: at, successor: found.successor ?? [])
        default:
            throw PostgresStoreError(.malformed, "lookup: a refresh token has state \(found.state) without its time")
        }
        return (RefreshTokenRecord(hash: refreshTokenHash, sessionID: found.session.id, state: state), found.session)
    }

    public func rotate(
        oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord
    ) async throws -> Bool {
        let logger = self.logger
        let statement = RotateStatement(
            oldHash: oldHash, at: at, sealedSuccessor: sealedSuccessor, newHash: newHash, session: session)
        return try await pool.withConnection("rotate") { connection in
            // One statement (atomic, one round trip; `RotateStatement.sql`). Its `retired` part is the conditional
            // update that decides a race; the other two run only when it retired the token. The session's row is
            // updated only while it is not revoked, and its revoked_at is never written here: a revocation
            // committed meanwhile must stand.
            var count = 0
            for try await n in try await connection.execute(statement, logger: logger) { count = n }
            return count == 1
        }
    }

    public func revoke(sessionID: String, at: Double) async throws {
        let logger = self.logger
        try await pool.transaction("revoke") { connection in
            // The first revocation's time stands, and the log gets one entry per session.
            var revoked = false
            for try await _ in try await connection.query(
                "UPDATE portcullis_sessions SET revoked_at = \(at) WHERE id = \(sessionID) AND revoked_at IS NULL RETURNING 1",
                logger: logger
            ) { revoked = true }
            guard revoked else { return }
            try await Self.appendRevocation(sessionID: sessionID, at: at, on: connection, logger: logger)
        }
    }

    /// Appends to the revocation log inside the caller's transaction, and notifies. The advisory lock is held until
    /// the transaction ends: no other appender can take a sequence number before this one commits, so the log's
    /// sequence order is its commit order.
    static func appendRevocation(sessionID: String, at: Double, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.revocations))", logger: logger)
        // The notification is delivered at commit, after the row is visible.
        try await connection.query(
            """
            WITH entry AS (
                INSERT INTO portcullis_revocations (seq, session_id, revoked_at)
                VALUES (nextval('portcullis_revocations_seq'), \(sessionID), \(at))
                RETURNING seq
            )
            SELECT pg_notify(\(revocationChannel), seq::text) FROM entry
            """, logger: logger)
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [RevocationEntry] {
        let logger = self.logger
        let limit = Int64(max(0, limit))
        return try await pool.withConnection("revocations") { connection in
            var entries: [RevocationEntry] = []
            for try await (seq, id, revokedAt) in try await connection.query(
                "SELECT seq, session_id, revoked_at FROM portcullis_revocations WHERE seq > \(sequence) ORDER BY seq LIMIT \(limit)",
                logger: logger
            ).decode((Int64, String, Double).self) {
                entries.append(RevocationEntry(sequence: seq, sessionID: id, revokedAt: revokedAt))
            }
            return entries
        }
    }

    public func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) async throws -> Int {
        let logger = self.logger
        let absoluteCutoff = SQLiteSessionStore.cutoff(now: now, lifetime: policy.absoluteLifetime)
        let idleCutoff = SQLiteSessionStore.cutoff(now: now, lifetime: policy.idleLifetime)
        let graceCutoff = now - policy.reuseGrace
        return try await pool.transaction("purge") { connection in
            // One replica at a time: the others find the lock taken and skip this round (their next one will do).
            var locked = false
            for try await got in try await connection.query(
                "SELECT pg_try_advisory_xact_lock(\(LockKey.purge))", logger: logger
            ).decode(Bool.self) { locked = got }
            guard locked else { return 0 }
            // Exactly `SessionRecord.isPurgeable`, as in the SQLite store; tokens go by cascade.
            var removed = 0
            for statement: PostgresQuery in [
                "DELETE FROM portcullis_sessions WHERE created_at <= \(absoluteCutoff) RETURNING 1",
                "DELETE FROM portcullis_sessions WHERE revoked_at < \(revokedBefore) RETURNING 1",
                "DELETE FROM portcullis_sessions WHERE revoked_at IS NULL AND last_refreshed_at <= \(idleCutoff) RETURNING 1",
            ] {
                for try await _ in try await connection.query(statement, logger: logger) { removed += 1 }
            }
            try await connection.query("DELETE FROM portcullis_revocations WHERE revoked_at < \(revokedBefore)", logger: logger)
            // Past the grace a successor is never handed out again; the retired token stays for reuse detection.
            try await connection.query(
                "UPDATE portcullis_refresh_tokens SET successor = NULL WHERE successor IS NOT NULL AND retired_at < \(graceCutoff)",
                logger: logger)
            return removed
        }
    }

    public func ping() async throws {
        let logger = self.logger
        try await pool.withConnection("ping") { connection in
            _ = try await connection.query("SELECT 1", logger: logger)
        }
    }

    /// Stops the pool (its connections close). Later calls throw `PostgresStoreError(.closed)`.
    public func close() async {
        await pool.close()
    }
}

/// `lookup`'s row, decoded.
private struct LookupRow: Sendable {
    var state: String
    var retiredAt: Double?
    var successor: [UInt8]?
    var session: SessionRecord

    init(_ row: (String, Double?, ByteBuffer?, String, String, String, String, String, Double, Double, Double?)) {
        state = row.0
        retiredAt = row.1
        successor = row.2.map { Array($0.readableBytesView) }
        var session = SessionRecord(
            id: row.3, subject: row.4, scopes: row.5.split(separator: " ").map(String.init), clientID: row.6, claims: row.7,
            createdAt: row.8)
        session.lastRefreshedAt = row.9
        session.revokedAt = row.10
        self.session = session
    }
}

/// A `bytea` parameter. `[UInt8]` alone would be sent as an array of integers; postgres-nio encodes a `ByteBuffer` as
/// bytea.
struct Bytes: PostgresNonThrowingEncodable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static var psqlType: PostgresDataType { .bytea }
    static var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        buffer.writeBytes(bytes)
    }
}
