import Foundation
import GatewayTokens
import Testing

@testable import GatewaySessions

@Suite struct PostgresSigningKeyStoreTests {
    let kek = Array(String(repeating: "k", count: 32).utf8)

    @Test func theFirstKeyIsCreatedOnceByReplicasStartingTogether() async throws {
        let server = try PostgresTestServer.shared()
        let settings = server.settings(database: try await server.createDatabase())
        var stores: [PostgresSessionStore] = []
        for _ in 0..<5 { stores.append(try await PostgresSessionStore.open(settings)) }
        let kek = self.kek
        let replicas = stores
        let kids = try await withThrowingTaskGroup(of: [String].self) { group in
            for store in replicas {
                group.addTask {
                    try await store.signingKeys(keyEncryptionKey: kek).keysCreatingFirst(algorithm: .ES256, now: 1000).map(\.key.kid)
                }
            }
            return try await group.reduce(into: Set<[String]>()) { $0.insert($1) }
        }
        #expect(kids.count == 1 && kids.first?.count == 1)
        let keys = try await stores[0].signingKeys(keyEncryptionKey: kek).keys()
        #expect(keys.count == 1 && keys[0].activatesAt == 1000)
        #expect(PostgresSigningKeyStore.current(keys, now: 1000)?.key.kid == keys[0].key.kid)
        for store in stores { await store.close() }
    }

    @Test func anAddedKeyIsPublishedAtOnceAndSignsAfterTheDelay() async throws {
        let server = try PostgresTestServer.shared()
        let store = try await PostgresSessionStore.open(server.settings(database: try await server.createDatabase()))
        let keyStore = try store.signingKeys(keyEncryptionKey: kek)
        let first = try #require(try await keyStore.keysCreatingFirst(algorithm: .ES256, now: 1000).first)
        let second = try await keyStore.add(algorithm: .EdDSA, now: 2000, activationDelay: 60)
        let keys = try await keyStore.keys()
        #expect(keys.map(\.key.kid) == [first.key.kid, second.key.kid])
        #expect(PostgresSigningKeyStore.current(keys, now: 2059)?.key.kid == first.key.kid)
        #expect(PostgresSigningKeyStore.current(keys, now: 2060)?.key.kid == second.key.kid)
        #expect(PostgresSigningKeyStore.published(keys, now: 2000, retention: 930).count == 2)
        #expect(PostgresSigningKeyStore.published(keys, now: 2060 + 929, retention: 930).count == 2)
        #expect(PostgresSigningKeyStore.published(keys, now: 2060 + 930, retention: 930).map(\.key.kid) == [second.key.kid])
        // The private key survives the round trip: it signs what the public key verifies.
        #expect(keys[1].key.algorithm == .EdDSA && keys[1].key.pem == second.key.pem)
        // Another key-encryption key opens nothing.
        let wrong = try store.signingKeys(keyEncryptionKey: Array(String(repeating: "x", count: 40).utf8))
        await #expect(throws: PostgresSigningKeyStore.SealError.self) { _ = try await wrong.keys() }
        #expect(throws: PostgresSigningKeyStore.SealError.self) { _ = try store.signingKeys(keyEncryptionKey: Array("short".utf8)) }
        await store.close()
    }
}
