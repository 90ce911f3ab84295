import GatewaySessions
import NIOPosix
import Synchronization

/// Checks passwords against the users file on a small pool of threads of its own: `crypt_r` takes a quarter of a
/// second at bcrypt cost 12, which must never run on an event loop. The queue is bounded: past `maxPending` checks
/// waiting, a login is answered 503 at once instead of queueing without limit (a login flood cannot grow memory or
/// latency for everyone).
final class UsersFileVerifier: CredentialVerifier {
    let users: UsersFile
    private let pool: NIOThreadPool
    private let maxPending: Int
    private let pending = Atomic<Int>(0)

    init(users: UsersFile, threads: Int, maxPending: Int = 64) {
        self.users = users
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.maxPending = maxPending
        pool.start()
    }

    func authenticate(username: String, password: String) async throws(TokenServiceError) -> AuthenticatedUser? {
        guard pending.wrappingAdd(1, ordering: .relaxed).newValue <= maxPending else {
            pending.wrappingSubtract(1, ordering: .relaxed)
            throw .busy
        }
        defer { pending.wrappingSubtract(1, ordering: .relaxed) }
        let users = self.users
        let record: UserRecord?
        do {
            record = try await pool.runIfActive { users.authenticate(username: username, password: password) }
        } catch {
            throw .serverError
        }
        return record.map { AuthenticatedUser(subject: $0.subject, scopes: $0.scopes, claims: $0.claims) }
    }

    func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
