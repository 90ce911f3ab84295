import Crypto
import GatewayJSON
import GatewayTokens
import Logging
import NIOCore
import PostgresNIO

/// The token service's signing keys in the shared database (DESIGN §9): every replica signs with the same current
/// key and publishes the same JWKS. Private keys are stored sealed (AES-256-GCM) under the key-encryption key
/// (`token_service.signing.key_encryption_key`), so a database dump alone signs nothing.
///
/// A key added with `add` is published at once but signs only from `activatesAt` (now + the activation delay), so
/// relying parties that cache the JWKS already hold it when tokens signed with it appear. A key stops signing when
/// a newer one activates (`supersededAt`); it stays published until its last token has expired.
public final class PostgresSigningKeyStore: Sendable {
    /// The channel a new key is notified on (payload: its kid), at the commit that adds it, so replicas re-read the
    /// keys at once instead of at their next periodic read.
    public static let keysChannel = "portcullis_keys"

    /// One key as stored.
    public struct StoredKey: Sendable {
        public let key: SigningKey
        public let createdAt: Double
        /// When it starts signing.
        public let activatesAt: Double
        /// When the next key took over (nil: none has yet, or this is the newest).
        public let supersededAt: Double?
    }

    /// The error for a key that cannot be opened (a wrong key-encryption key, a tampered row).
    public struct SealError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { "signing_key_sealed: \(message)" }
    }

    let pool: PostgresPool
    private let sealingKey: SymmetricKey

    /// `keyEncryptionKey`: at least 32 bytes (the configured string's UTF-8). The AES key is derived from it with
    /// HKDF, so any length of secret gives a uniform 256-bit key.
    init(pool: PostgresPool, keyEncryptionKey: [UInt8]) throws(SealError) {
        guard keyEncryptionKey.count >= 32 else {
            throw SealError(message: "the key-encryption key must be at least 32 bytes")
        }
        self.pool = pool
        self.sealingKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: keyEncryptionKey), salt: Array("portcullis signing key seal".utf8),
            info: Array("v1".utf8), outputByteCount: 32)
    }

    /// Every key, in activation order (oldest first).
    public func keys() async throws -> [StoredKey] {
        let logger = pool.logger
        let rows = try await pool.withConnection("signing keys") { connection in
            try await Self.rows(connection, logger: logger)
        }
        return try open(rows)
    }

    /// The keys, creating the first one (of `algorithm`, signing at once) when there is none. Race-safe: replicas
    /// starting together serialise on an advisory lock and re-check under it, so exactly one key is created.
    public func keysCreatingFirst(algorithm: JWSAlgorithm, now: Double) async throws -> [StoredKey] {
        let existing = try await keys()
        if !existing.isEmpty { return existing }
        let key = try SigningKey.generate(algorithm)
        let row = try seal(key, now: now, activatesAt: now)
        let logger = pool.logger
        let rows = try await pool.transaction("signing keys") { connection in
            try await connection.query(
                "SELECT pg_advisory_xact_lock(\(PostgresSessionStore.LockKey.signingKeys))", logger: logger)
            var rows = try await Self.rows(connection, logger: logger)
            if rows.isEmpty {
                try await Self.insert(row, connection, logger: logger)
                rows = [row]
            }
            return rows
        }
        return try open(rows)
    }

    /// Adds a new key of `algorithm` that signs from `now + activationDelay` (`portcullis keys generate`).
    @discardableResult
    public func add(algorithm: JWSAlgorithm, now: Double, activationDelay: Double) async throws -> StoredKey {
        let key = try SigningKey.generate(algorithm)
        let row = try seal(key, now: now, activatesAt: now + max(0, activationDelay))
        let logger = pool.logger
        try await pool.withConnection("signing keys") { connection in
            try await Self.insert(row, connection, logger: logger)
        }
        return StoredKey(key: key, createdAt: row.createdAt, activatesAt: row.activatesAt, supersededAt: nil)
    }

    /// The key that signs at `now`: the most recently activated one (nil before the first activates).
    public static func current(_ keys: [StoredKey], now: Double) -> StoredKey? {
        keys.last { $0.activatesAt <= now }
    }

    /// The keys to publish at `now`: every key not yet superseded (including ones still waiting to activate) and
    /// superseded ones until `retention` (access-token lifetime + leeway) after they stopped signing.
    public static func published(_ keys: [StoredKey], now: Double, retention: Double) -> [StoredKey] {
        keys.filter { key in
            guard let supersededAt = key.supersededAt, supersededAt <= now else { return true }
            return supersededAt + retention > now
        }
    }

    // MARK: - Rows

    struct Row: Sendable {
        var kid: String
        var algorithm: String
        var publicJWK: String
        var sealed: [UInt8]
        var createdAt: Double
        var activatesAt: Double
    }

    private static func rows(_ connection: PostgresConnection, logger: Logger) async throws -> [Row] {
        var rows: [Row] = []
        for try await (kid, alg, jwk, sealed, createdAt, activatesAt) in try await connection.query(
            """
            SELECT kid, alg, public_jwk, sealed_private_key, created_at, activates_at
            FROM portcullis_signing_keys ORDER BY activates_at, created_at, kid
            """, logger: logger
        ).decode((String, String, String, ByteBuffer, Double, Double).self) {
            rows.append(
                Row(
                    kid: kid, algorithm: alg, publicJWK: jwk, sealed: Array(sealed.readableBytesView), createdAt: createdAt,
                    activatesAt: activatesAt))
        }
        return rows
    }

    private static func insert(_ row: Row, _ connection: PostgresConnection, logger: Logger) async throws {
        // The notification is delivered at commit, after the row is visible.
        try await connection.query(
            """
            WITH k AS (
                INSERT INTO portcullis_signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at)
                VALUES (\(row.kid), \(row.algorithm), \(row.publicJWK), \(Bytes(row.sealed)), \(row.createdAt), \(row.activatesAt))
                RETURNING kid
            )
            SELECT pg_notify(\(keysChannel), kid) FROM k
            """, logger: logger)
    }

    /// The kid is authenticated with the sealed key, so a row's key cannot be swapped for another's.
    private func seal(_ key: SigningKey, now: Double, activatesAt: Double) throws -> Row {
        guard let combined = try AES.GCM.seal(Array(key.pem.utf8), using: sealingKey, authenticating: Array(key.kid.utf8)).combined
        else { throw SealError(message: "sealing failed") }
        let jwk = key.verificationKey.publicJWK.map { JSONWriter.string(.object($0)) } ?? "{}"
        return Row(
            kid: key.kid, algorithm: key.algorithm.rawValue, publicJWK: jwk, sealed: Array(combined), createdAt: now,
            activatesAt: activatesAt)
    }

    private func open(_ rows: [Row]) throws -> [StoredKey] {
        var keys: [StoredKey] = []
        for (index, row) in rows.enumerated() {
            guard let algorithm = JWSAlgorithm(rawValue: row.algorithm) else {
                throw SealError(message: "key \(row.kid) has an unknown algorithm \(row.algorithm)")
            }
            let pem: [UInt8]
            do {
                let box = try AES.GCM.SealedBox(combined: row.sealed)
                pem = Array(try AES.GCM.open(box, using: sealingKey, authenticating: Array(row.kid.utf8)))
            } catch {
                throw SealError(message: "key \(row.kid) cannot be opened: wrong key_encryption_key, or the row was altered")
            }
            let key = try SigningKey(pem: String(decoding: pem, as: UTF8.self), algorithm: algorithm)
            guard key.kid == row.kid else { throw SealError(message: "key \(row.kid) does not match its thumbprint") }
            let next = rows.dropFirst(index + 1).first
            keys.append(StoredKey(key: key, createdAt: row.createdAt, activatesAt: row.activatesAt, supersededAt: next?.activatesAt))
        }
        return keys
    }
}

extension PostgresSessionStore {
    /// The signing keys kept in this store's database, sealed under `keyEncryptionKey` (at least 32 bytes).
    public func signingKeys(keyEncryptionKey: [UInt8]) throws -> PostgresSigningKeyStore {
        try PostgresSigningKeyStore(pool: pool, keyEncryptionKey: keyEncryptionKey)
    }
}
