import CSQLite

/// Why a SQLite operation failed. Messages name the database file and SQLite's own reason, never a bound value
/// (hashes, sealed successors, claims).
public struct SQLiteError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }

        /// The file or its directory could not be created or opened (permissions, path is a directory, ...).
        public static let openFailed = Code("sqlite_open_failed")
        /// The file exists but is not a SQLite database.
        public static let notADatabase = Code("sqlite_not_a_database")
        /// The database was written by a newer Portcullis (`PRAGMA user_version` above what this build knows).
        public static let schemaTooNew = Code("sqlite_schema_too_new")
        /// The file system refused write-ahead logging.
        public static let walUnavailable = Code("sqlite_wal_unavailable")
        /// Another connection held the lock for longer than the busy timeout.
        public static let busy = Code("sqlite_busy")
        /// A uniqueness, foreign-key or check constraint refused the write (e.g. a duplicate session id or hash).
        public static let constraint = Code("sqlite_constraint")
        /// The file is damaged, or a row does not have the shape this schema writes.
        public static let corrupt = Code("sqlite_corrupt")
        /// The store was closed.
        public static let closed = Code("sqlite_closed")
        /// Anything else (I/O error, disk full, ...).
        public static let other = Code("sqlite_error")

        public var description: String { raw }
    }

    /// What went wrong, stable for callers and logs.
    public var code: Code
    /// For people: the file concerned and SQLite's reason.
    public var message: String
    /// SQLite's extended result code, 0 when the store itself decided.
    public var resultCode: Int32

    /// An error with `code`; `message` must not contain secrets.
    public init(code: Code, message: String, resultCode: Int32 = 0) {
        self.code = code
        self.message = message
        self.resultCode = resultCode
    }

    public var description: String { "\(code): \(message)" }
}

/// A value to bind to a statement parameter.
enum SQLiteValue {
    case text(String)
    case real(Double)
    case integer(Int64)
    /// An empty array binds a zero-length blob, not NULL.
    case blob([UInt8])
    case null
}

/// One SQLite connection with a cache of prepared statements. Not thread-safe on purpose (opened with
/// SQLITE_OPEN_NOMUTEX): its owner confines it to one serial queue.
final class SQLiteConnection {
    let path: String
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    /// Opens (creating if needed) the database at `path`. Nothing is read yet: a file that is not a database is only
    /// detected by the first statement.
    init(path: String, busyTimeoutMilliseconds: Int32) throws {
        self.path = path
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw SQLiteError(code: .openFailed, message: "cannot open \(path): \(reason)", resultCode: rc)
        }
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, busyTimeoutMilliseconds)
        db = handle
    }

    deinit { close() }

    /// Finalizes every cached statement and closes the database. Idempotent.
    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements = [:]
        if let db { sqlite3_close_v2(db) }
        db = nil
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE (not counting foreign-key cascades).
    var changes: Int {
        guard let db else { return 0 }
        return Int(sqlite3_changes(db))
    }

    /// Runs `sql` (one or more statements, no parameters, no rows wanted) without caching it: schema and pragmas.
    func execute(_ sql: String) throws {
        let db = try handle()
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, "executing schema statement") }
    }

    /// Runs a statement that returns no rows; returns `changes`.
    @discardableResult
    func run(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> Int {
        try withStatement(sql, bindings) { statement in
            while try step(statement) {}
        }
        return changes
    }

    /// Runs a query, mapping each row.
    func query<T>(_ sql: String, _ bindings: [SQLiteValue] = [], row: (SQLiteRow) throws -> T) throws -> [T] {
        try withStatement(sql, bindings) { statement in
            var rows: [T] = []
            while try step(statement) { rows.append(try row(SQLiteRow(statement: statement))) }
            return rows
        }
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back when it throws. IMMEDIATE takes the write lock up
    /// front (waiting up to the busy timeout), so a read inside the transaction can never go stale before the write
    /// (SQLITE_BUSY_SNAPSHOT in WAL mode) — two connections on one file serialise cleanly.
    func immediateTransaction<T>(_ body: () throws -> T) throws -> T {
        try run("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try run("COMMIT")
            return result
        } catch {
            if let db, sqlite3_get_autocommit(db) == 0 { _ = try? run("ROLLBACK") }
            throw error
        }
    }

    // MARK: - Statements

    private func handle() throws -> OpaquePointer {
        guard let db else { throw SQLiteError(code: .closed, message: "the session store \(path) is closed") }
        return db
    }

    /// The cached prepared statement for `sql`, bound, handed to `body`, then reset for the next use.
    private func withStatement<T>(_ sql: String, _ bindings: [SQLiteValue], _ body: (OpaquePointer) throws -> T) throws -> T {
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        for (offset, value) in bindings.enumerated() {
            try bind(value, at: Int32(offset + 1), in: statement)
        }
        return try body(statement)
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        let db = try handle()
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc, "preparing a statement") }
        statements[sql] = statement
        return statement
    }

    private func bind(_ value: SQLiteValue, at index: Int32, in statement: OpaquePointer) throws {
        let rc: Int32
        switch value {
        case .text(let text):
            var text = text
            rc = text.withUTF8 { bytes in
                guard let base = bytes.baseAddress, let count = Int32(exactly: bytes.count) else {
                    return bytes.isEmpty ? csqlite_bind_text(statement, index, "", 0) : SQLITE_TOOBIG
                }
                return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                    csqlite_bind_text(statement, index, $0, count)
                }
            }
        case .blob(let bytes):
            // A NULL pointer would bind SQL NULL; an empty value must stay a (zero-length) blob.
            rc = bytes.withUnsafeBytes { raw in
                guard let base = raw.baseAddress, let count = Int32(exactly: raw.count) else {
                    return raw.isEmpty ? sqlite3_bind_zeroblob(statement, index, 0) : SQLITE_TOOBIG
                }
                return csqlite_bind_blob(statement, index, base, count)
            }
        case .real(let number):
            rc = sqlite3_bind_double(statement, index, number)
        case .integer(let number):
            rc = sqlite3_bind_int64(statement, index, number)
        case .null:
            rc = sqlite3_bind_null(statement, index)
        }
        guard rc == SQLITE_OK else { throw error(rc, "binding parameter \(index)") }
    }

    /// Advances `statement`: true when a row is ready, false when done.
    private func step(_ statement: OpaquePointer) throws -> Bool {
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let rc: throw error(rc, "running a statement")
        }
    }

    /// Maps a result code to a stable `SQLiteError`. SQLite's message names tables and constraints, never values.
    func error(_ rc: Int32, _ doing: String) -> SQLiteError {
        let reason = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
        let code: SQLiteError.Code
        switch rc & 0xff {
        case SQLITE_NOTADB:
            return SQLiteError(code: .notADatabase, message: "\(path) is not a SQLite database (\(reason))", resultCode: rc)
        case SQLITE_CORRUPT: code = .corrupt
        case SQLITE_BUSY, SQLITE_LOCKED: code = .busy
        case SQLITE_CONSTRAINT: code = .constraint
        case SQLITE_CANTOPEN, SQLITE_PERM: code = .openFailed
        default: code = .other
        }
        return SQLiteError(code: code, message: "\(doing) on \(path): \(reason)", resultCode: rc)
    }
}

/// The current row of a stepping statement. Accessors return nil for NULL or a value of the wrong storage class,
/// so that data read from disk is checked rather than trusted.
struct SQLiteRow {
    fileprivate let statement: OpaquePointer

    func text(_ column: Int32) -> String? {
        guard sqlite3_column_type(statement, column) == SQLITE_TEXT, let bytes = sqlite3_column_text(statement, column) else {
            return nil
        }
        // Length after the pointer, as SQLite's documentation asks; text may legally contain NUL bytes.
        let count = Int(sqlite3_column_bytes(statement, column))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }

    func double(_ column: Int32) -> Double? {
        switch sqlite3_column_type(statement, column) {
        case SQLITE_FLOAT, SQLITE_INTEGER: sqlite3_column_double(statement, column)
        default: nil
        }
    }

    func integer(_ column: Int32) -> Int64? {
        sqlite3_column_type(statement, column) == SQLITE_INTEGER ? sqlite3_column_int64(statement, column) : nil
    }

    func blob(_ column: Int32) -> [UInt8]? {
        guard sqlite3_column_type(statement, column) == SQLITE_BLOB else { return nil }
        // A zero-length blob comes back as a NULL pointer.
        guard let bytes = sqlite3_column_blob(statement, column) else { return [] }
        let count = Int(sqlite3_column_bytes(statement, column))
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(statement, column) == SQLITE_NULL
    }
}
