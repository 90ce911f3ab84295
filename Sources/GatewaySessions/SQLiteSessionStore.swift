import Dispatch

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The embedded default store (`store.type: sqlite`, DESIGN §4): one SQLite file in WAL mode, safe to share between
/// processes on one host (replicas, `portcullis` CLI commands), each with its own `SQLiteSessionStore`.
///
/// All SQLite work runs on one serial queue that owns the only connection, so callers on event loops or in tasks
/// never block on disk I/O or on another process's lock; they `await` the queue. Every write is a `BEGIN IMMEDIATE`
/// transaction, so writers on the same file — in this process or another — serialise on SQLite's file lock, and
/// `rotate`'s conditional update decides a race for one token exactly once.
public final class SQLiteSessionStore: SessionStore {
    /// The database file.
    public let path: String
    private let queue: DispatchQueue
    private let box = ConnectionBox()

    /// How long a write waits for another connection's lock before failing with `SQLiteError.Code.busy`.
    static let busyTimeoutMilliseconds: Int32 = 5000

    private init(path: String) {
        self.path = path
        self.queue = DispatchQueue(label: "portcullis.sqlite-session-store")
    }

    /// Opens the store at `path`, creating missing parent directories (mode 0700) and the file (mode 0600) on first
    /// start and migrating its schema to `schemaVersion`. Throws `SQLiteError` when the file is not a SQLite database
    /// (`notADatabase`, naming the path), was written by a newer build (`schemaTooNew`), or cannot be created.
    public static func open(path: String) async throws -> SQLiteSessionStore {
        let store = SQLiteSessionStore(path: path)
        try await store.onQueue { box in
            try createFile(path)
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            do {
                try configure(connection)
                try migrate(connection)
            } catch {
                connection.close()
                throw error
            }
            box.connection = connection
        }
        return store
    }

    // MARK: - SessionStore

    public func create(_ session: SessionRecord, refreshTokenHash: [UInt8]) async throws {
        try await withConnection { db in
            try db.immediateTransaction {
                try db.run(
                    """
                    INSERT INTO sessions (id, subject, scopes, client_id, claims, created_at, last_refreshed_at, revoked_at)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                    """, Self.columns(of: session))
                try db.run("INSERT INTO refresh_tokens (hash, session_id) VALUES (?1, ?2)", [.blob(refreshTokenHash), .text(session.id)])
            }
        }
    }

    public func lookup(refreshTokenHash: [UInt8]) async throws -> (token: RefreshTokenRecord, session: SessionRecord)? {
        try await withConnection { db in
            let rows = try db.query(
                """
                SELECT t.state, t.retired_at, t.successor,
                       s.id, s.subject, s.scopes, s.client_id, s.claims, s.created_at, s.last_refreshed_at, s.revoked_at
                FROM refresh_tokens AS t JOIN sessions AS s ON s.id = t.session_id
                WHERE t.hash = ?1
                """, [.blob(refreshTokenHash)]
            ) { row -> (token: RefreshTokenRecord, session: SessionRecord) in
                let session = try Self.session(from: row, at: 3, path: db.path)
                let state = try Self.tokenState(from: row, path: db.path)
                return (RefreshTokenRecord(hash: refreshTokenHash, sessionID: session.id, state: state), session)
            }
            return rows.first
        }
    }

    public func rotate(
        oldHash: [UInt8], at: Double, sealedSuccessor: [UInt8], newHash: [UInt8], session: SessionRecord
    ) async throws -> Bool {
        try await withConnection { db in
            try db.immediateTransaction {
                // The one conditional update that decides a race: of several rotations of `oldHash` (from tasks here or
                // from another process on this file) only the first to take the write lock still finds it active.
                // The token must belong to `session`, which must not be revoked.
                let retired = try db.run(
                    """
                    UPDATE refresh_tokens SET state = 'retired', retired_at = ?1, successor = ?2
                    WHERE hash = ?3 AND state = 'active' AND session_id = ?4
                      AND EXISTS (SELECT 1 FROM sessions WHERE id = ?4 AND revoked_at IS NULL)
                    """, [.real(at), Self.successor(sealedSuccessor), .blob(oldHash), .text(session.id)])
                guard retired == 1 else { return false }
                try db.run("INSERT INTO refresh_tokens (hash, session_id) VALUES (?1, ?2)", [.blob(newHash), .text(session.id)])
                try db.run(
                    """
                    UPDATE sessions SET subject = ?2, scopes = ?3, client_id = ?4, claims = ?5, created_at = ?6,
                        last_refreshed_at = ?7, revoked_at = ?8
                    WHERE id = ?1
                    """, Self.columns(of: session))
                return true
            }
        }
    }

    public func revoke(sessionID: String, at: Double) async throws {
        try await withConnection { db in
            // The first revocation's time stands (the revocation set and purge count from it).
            try db.immediateTransaction {
                let revoked = try db.run(
                    "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL", [.real(at), .text(sessionID)])
                if revoked == 1 {
                    try db.run("INSERT INTO revocations (session_id, revoked_at) VALUES (?1, ?2)", [.text(sessionID), .real(at)])
                }
            }
        }
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [RevocationEntry] {
        try await withConnection { db in
            try db.query(
                "SELECT seq, session_id, revoked_at FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                [.integer(sequence), .integer(Int64(max(0, limit)))]
            ) { row in
                guard let seq = row.integer(0), let id = row.text(1), let revokedAt = row.double(2) else {
                    throw Self.malformed("revocations", db.path)
                }
                return RevocationEntry(sequence: seq, sessionID: id, revokedAt: revokedAt)
            }
        }
    }

    public func purge(now: Double, policy: RefreshPolicy, revokedBefore: Double) async throws -> Int {
        try await withConnection { db in
            try db.immediateTransaction {
                // Exactly `SessionRecord.isPurgeable`, written as three index range scans. Tokens go by cascade.
                var removed = try db.run(
                    "DELETE FROM sessions WHERE created_at <= ?1",
                    [.real(Self.cutoff(now: now, lifetime: policy.absoluteLifetime))])
                removed += try db.run("DELETE FROM sessions WHERE revoked_at < ?1", [.real(revokedBefore)])
                try db.run("DELETE FROM revocations WHERE revoked_at < ?1", [.real(revokedBefore)])
                removed += try db.run(
                    "DELETE FROM sessions WHERE revoked_at IS NULL AND last_refreshed_at <= ?1",
                    [.real(Self.cutoff(now: now, lifetime: policy.idleLifetime))])
                // Past the grace a successor is never handed out again; the retired token stays so that a late
                // replay is still recognised as reuse. Same arithmetic as the memory store.
                try db.run(
                    "UPDATE refresh_tokens SET successor = NULL WHERE successor IS NOT NULL AND retired_at < ?1",
                    [.real(now - policy.reuseGrace)])
                return removed
            }
        }
    }

    public func ping() async throws {
        try await withConnection { db in
            // Reads page 1 of the file, so a vanished or broken database shows.
            _ = try db.query("SELECT count(*) FROM sqlite_master") { $0.integer(0) }
        }
    }

    /// Finalizes the cached statements and closes the connection (checkpointing the WAL when this is the last
    /// connection on the file). Later calls throw `SQLiteError.Code.closed`.
    public func close() async {
        _ = try? await onQueue { box in
            box.connection?.close()
            box.connection = nil
        }
    }

    // MARK: - The queue

    /// Runs `body` on the store's queue with the open connection, suspending the caller meanwhile.
    private func withConnection<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        let path = self.path
        return try await onQueue { box in
            guard let connection = box.connection else {
                throw SQLiteError(code: .closed, message: "the session store \(path) is closed")
            }
            return try body(connection)
        }
    }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable (ConnectionBox) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [box] in
                continuation.resume(with: Result { try body(box) })
            }
        }
    }

    // MARK: - Rows

    /// `sessions`' columns in declaration order, `?1`…`?8`.
    private static func columns(of session: SessionRecord) -> [SQLiteValue] {
        [
            .text(session.id), .text(session.subject), .text(session.scopes.joined(separator: " ")), .text(session.clientID),
            .text(session.claims), .real(session.createdAt), .real(session.lastRefreshedAt),
            session.revokedAt.map { .real($0) } ?? .null,
        ]
    }

    /// An empty successor is stored as NULL, which is also what purge leaves; both read back as `[]`.
    private static func successor(_ sealed: [UInt8]) -> SQLiteValue {
        sealed.isEmpty ? .null : .blob(sealed)
    }

    private static func session(from row: SQLiteRow, at first: Int32, path: String) throws -> SessionRecord {
        guard let id = row.text(first), let subject = row.text(first + 1), let scopes = row.text(first + 2),
            let clientID = row.text(first + 3), let claims = row.text(first + 4), let createdAt = row.double(first + 5),
            let lastRefreshedAt = row.double(first + 6)
        else { throw malformed("sessions", path) }
        var session = SessionRecord(
            id: id, subject: subject, scopes: scopes.split(separator: " ").map(String.init), clientID: clientID,
            claims: claims, createdAt: createdAt)
        session.lastRefreshedAt = lastRefreshedAt
        if !row.isNull(first + 7) {
            guard let revokedAt = row.double(first + 7) else { throw malformed("sessions", path) }
            session.revokedAt = revokedAt
        }
        return session
    }

    /// Columns 0…2 of `lookup`: state, retired_at, successor.
    private static func tokenState(from row: SQLiteRow, path: String) throws -> RefreshTokenRecord.State {
        switch row.text(0) {
        case "active":
            return .active
        case "retired":
            guard let at = row.double(1) else { throw malformed("refresh_tokens", path) }
            if row.isNull(2) { return .retired(at: at, successor: []) }
            guard let successor = row.blob(2) else { throw malformed("refresh_tokens", path) }
            return .retired(at: at, successor: successor)
        default:
            throw malformed("refresh_tokens", path)
        }
    }

    private static func malformed(_ table: String, _ path: String) -> SQLiteError {
        SQLiteError(code: .corrupt, message: "\(path): a row of \(table) does not have the expected columns")
    }

    /// The largest `x` with `x + lifetime <= now` in Double arithmetic. `column <= cutoff` can use an index and
    /// selects exactly the rows for which `isPurgeable`'s `column + lifetime <= now` holds: rounded addition is
    /// monotonic, so those rows form a range, and this finds its end to the last bit (a naive `now - lifetime` can
    /// be off by one ulp at the boundary).
    static func cutoff(now: Double, lifetime: Double) -> Double {
        var x = now - lifetime
        guard x.isFinite else { return x }  // an infinite lifetime: nothing expires (or everything, if negative)
        while x + lifetime > now { x = x.nextDown }
        while x.nextUp + lifetime <= now { x = x.nextUp }
        return x
    }

    // MARK: - Files

    /// Creates missing parent directories (0700) and the file itself (0600) before SQLite opens it, so it never
    /// exists with the umask's wider mode. Existing directories and files are left as they are.
    static func createFile(_ path: String) throws {
        if let slash = path.lastIndex(of: "/"), let failed = SecretFiles.createFolders(path[..<slash]) {
            throw creationFailed(failed.folder, failed.errno)
        }
        let fd = createExclusively(path)
        if fd >= 0 {
            _ = fchmod(fd, 0o600)
            closeDescriptor(fd)
        } else if errno != EEXIST {
            throw creationFailed(path, errno)
        }
    }

    private static func creationFailed(_ path: String, _ code: Int32) -> SQLiteError {
        SQLiteError(code: .openFailed, message: "cannot create \(path): \(String(cString: strerror(code)))")
    }
}

// File scope, where `open` and `close` are the C functions rather than the store's methods.
private func createExclusively(_ path: String) -> Int32 {
    open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
}

private func closeDescriptor(_ fd: Int32) {
    _ = close(fd)
}

/// The store's connection. Only ever touched on the store's serial queue, which is what makes the unchecked
/// Sendable sound: the queue, not a lock, provides the mutual exclusion.
private final class ConnectionBox: @unchecked Sendable {
    var connection: SQLiteConnection?
}
