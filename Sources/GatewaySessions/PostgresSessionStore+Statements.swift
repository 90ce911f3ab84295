import NIOCore
import PostgresNIO

// The refresh path's two statements (lookup, then rotate) as prepared statements: postgres-nio prepares each once
// per connection, so a refresh costs no parse or plan on the server.

extension PostgresSessionStore {
    /// The token and its session, by hash.
    struct LookupStatement: PostgresPreparedStatement {
        typealias Row = (String, Double?, ByteBuffer?, String, String, String, String, String, Double, Double, Double?)

        static let name = "portcullis_lookup_v1"
        static let sql = """
            SELECT t.state, t.retired_at, t.successor,
                   s.id, s.subject, s.scopes, s.client_id, s.claims, s.created_at, s.last_refreshed_at, s.revoked_at
            FROM portcullis_refresh_tokens AS t JOIN portcullis_sessions AS s ON s.id = t.session_id
            WHERE t.hash = $1
            """
        static let bindingDataTypes: [PostgresDataType] = [.bytea]

        var hash: [UInt8]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(Bytes(hash))
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {
            try row.decode(Row.self)
        }
    }

    /// `rotate`'s one statement (see there): 1 when this call retired the token, else 0.
    struct RotateStatement: PostgresPreparedStatement {
        typealias Row = Int

        static let name = "portcullis_rotate_v1"
        static let sql = """
            WITH retired AS (
                UPDATE portcullis_refresh_tokens SET state = 'retired', retired_at = $1, successor = $2
                WHERE hash = $3 AND state = 'active' AND session_id = $4
                  AND EXISTS (SELECT 1 FROM portcullis_sessions WHERE id = $4 AND revoked_at IS NULL)
                RETURNING session_id
            ), added AS (
                INSERT INTO portcullis_refresh_tokens (hash, session_id) SELECT $5, session_id FROM retired
                RETURNING 1
            ), refreshed AS (
                UPDATE portcullis_sessions SET subject = $6, scopes = $7, client_id = $8, claims = $9, created_at = $10,
                    last_refreshed_at = $11
                WHERE id IN (SELECT session_id FROM retired) AND revoked_at IS NULL
                RETURNING 1
            )
            SELECT count(*) FROM retired
            """
        static let bindingDataTypes: [PostgresDataType] = [
            .float8, .bytea, .bytea, .text, .bytea, .text, .text, .text, .text, .float8, .float8,
        ]

        var oldHash: [UInt8]
        var at: Double
        var sealedSuccessor: [UInt8]
        var newHash: [UInt8]
        var session: SessionRecord

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 11)
            bindings.append(at)
            // An empty successor is stored as NULL, which is also what purge leaves; both read back as [].
            bindings.append(sealedSuccessor.isEmpty ? nil : Bytes(sealedSuccessor))
            bindings.append(Bytes(oldHash))
            bindings.append(session.id)
            bindings.append(Bytes(newHash))
            bindings.append(session.subject)
            bindings.append(session.scopes.joined(separator: " "))
            bindings.append(session.clientID)
            bindings.append(session.claims)
            bindings.append(session.createdAt)
            bindings.append(session.lastRefreshedAt)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {
            try row.decode(Int.self)
        }
    }
}
