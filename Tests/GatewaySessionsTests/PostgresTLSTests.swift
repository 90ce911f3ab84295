import Foundation
import Testing

@testable import GatewaySessions

/// `sslmode` against a server that accepts TCP only with TLS, its certificate issued by a test CA for 127.0.0.1.
@Suite struct PostgresTLSTests {
    func settings(_ tls: PostgresConnectionSettings.TLSMode) async throws -> PostgresConnectionSettings {
        let server = try PostgresTestServer.sharedTLS()
        return server.settings(database: try await server.createDatabase(), tls: tls)
    }

    @Test func verifyFullWithTheCAWorks() async throws {
        let server = try PostgresTestServer.sharedTLS()
        let store = try await PostgresSessionStore.open(try await settings(.verifyFull(caFile: server.caFile)))
        try await store.ping()
        await store.close()
    }

    @Test func requireWorksWithoutVerifying() async throws {
        let store = try await PostgresSessionStore.open(try await settings(.require))
        try await store.ping()
        await store.close()
    }

    @Test func verifyFullWithTheSystemRootsRefusesTheTestCertificate() async throws {
        await #expect(throws: SessionStoreError.self) {
            _ = try await PostgresSessionStore.open(try await settings(.verifyFull(caFile: nil)))
        }
    }

    @Test func theServerRefusesPlaintext() async throws {
        do {
            _ = try await PostgresSessionStore.open(try await settings(.disable))
            Issue.record("a plaintext connection was accepted")
        } catch let error as SessionStoreError {
            #expect(error.message.contains("no encryption"), "\(error)")
        }
    }

    @Test func anUnreadableCAFileIsATLSError() async throws {
        await #expect(throws: PostgresStoreError.self) {
            _ = try await PostgresSessionStore.open(try await settings(.verifyFull(caFile: "/nonexistent/ca.pem")))
        }
    }

    @Test func theListenerUsesTLSToo() async throws {
        let server = try PostgresTestServer.sharedTLS()
        let listener = PostgresRevocationListener(settings: try await settings(.verifyFull(caFile: server.caFile)))
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .connected)
        await listener.stop()
    }
}
