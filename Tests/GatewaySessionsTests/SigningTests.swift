import Foundation
import GatewayJSON
import GatewayTokens
import Testing

@testable import GatewaySessions

@Suite struct SigningTests {
    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "portcullis-keys-\(UUID().uuidString)"
        return path
    }

    @Test(arguments: SigningKey.supportedAlgorithms)
    func issuedTokensVerify(algorithm: JWSAlgorithm) throws {
        let key = try SigningKey.generate(algorithm)
        #expect(key.kid == key.verificationKey.thumbprint)
        let issuer = AccessTokenIssuer(issuer: "https://gw.test", audience: "api", key: key)
        let now = 1_767_225_600.0
        let token = try issuer.issue(
            subject: "user-1", scopes: ["read", "write"], lifetime: 900, now: now, sessionID: "s1",
            claims: JSONObject([("email", .string("a@b.test")), ("sub", .string("forged"))]))
        let verifier = TokenVerifier(issuers: [
            IssuerPolicy(issuer: "https://gw.test", keys: [key.verificationKey], algorithms: [algorithm], audiences: ["api"])
        ])
        let verified = try verifier.verify(token, now: now + 1).get()
        #expect(verified.subject == "user-1")  // extra claims never override registered ones
        #expect(verified.scopes == ["read", "write"])
        #expect(verified.sessionID == "s1")
        #expect(verified.expiresAt == now + 900)
        #expect(verified.claims["email"] == .string("a@b.test"))
        #expect(verified.claims["client_id"] == .string("portcullis"))
        #expect(verified.tokenID?.isEmpty == false)
        // Expired after its lifetime (+ the default leeway).
        #expect((try? verifier.verify(token, now: now + 900 + 31).get()) == nil)
    }

    @Test func pemRoundTripKeepsTheKid() throws {
        for algorithm in SigningKey.supportedAlgorithms {
            let key = try SigningKey.generate(algorithm)
            let again = try SigningKey(pem: key.pem, algorithm: algorithm)
            #expect(again.kid == key.kid)
        }
    }

    @Test func storeGeneratesOnceAndReloads() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        #expect(first.keys.count == 1)
        let again = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        #expect(again.current.kid == first.current.kid)
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(directory)/\(first.current.kid).ES256.pem")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)

        // The configured algorithm only shapes the first key; a later one comes from `generate` (keys generate).
        #expect(try SigningKeyStore.open(directory: directory, algorithm: .EdDSA).current.kid == first.current.kid)
        // A generated key becomes current and the old one stays published.
        try SigningKeyStore.generate(directory: directory, algorithm: .EdDSA)
        let rotated = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        #expect(rotated.current.algorithm == .EdDSA)
        #expect(rotated.keys.count == 2)
        let jwks = try JSONParser.parse(rotated.jwks())
        let kids = jwks["keys"]?.arrayValue?.compactMap { $0["kid"]?.stringValue }
        #expect(Set(kids ?? []) == Set([first.current.kid, rotated.current.kid]))
        for entry in jwks["keys"]?.arrayValue ?? [] {
            #expect(entry["d"] == nil)  // never a private member
            #expect(entry["use"] == .string("sig"))
        }
        // The published set loads back into the verifier with the same kids.
        let loaded = try VerificationKey.jwks(Array(rotated.jwks().utf8), allowedAlgorithms: [.ES256, .EdDSA])
        #expect(loaded.keys.count == 2 && loaded.skipped.isEmpty)
    }

    @Test func retiredKeysStayPublishedForTheRetentionOnly() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SigningKeyStore.open(directory: directory, algorithm: .ES256).current
        try SigningKeyStore.generate(directory: directory, algorithm: .ES256)
        var store = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        #expect(store.retiredAt.isEmpty)
        // Without a marker the old key counts as just retired.
        #expect(store.published(now: 1000, retention: 930).count == 2)
        try store.markRetired(now: 1000)
        #expect(store.retiredAt[first.kid] == 1000)
        // The marker is written once: a later start keeps the first retirement time.
        var reopened = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        try reopened.markRetired(now: 5000)
        #expect(reopened.retiredAt[first.kid] == 1000)
        #expect(reopened.published(now: 1929, retention: 930).map(\.kid) == [reopened.current.kid, first.kid])
        #expect(reopened.published(now: 1930, retention: 930).map(\.kid) == [reopened.current.kid])
    }

    @Test func tamperedKeyFileIsRefused() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SigningKeyStore.open(directory: directory, algorithm: .ES256)
        let other = try SigningKey.generate(.ES256)
        try Data(other.pem.utf8).write(to: URL(fileURLWithPath: "\(directory)/\(store.current.kid).ES256.pem"))
        #expect(throws: SigningKeyStore.StoreError.self) { try SigningKeyStore.load(directory: directory) }
    }

    /// Issue 10: keys were written through `FileManager` (a 0644 temporary file, renamed, then chmod 0600), so the
    /// private key was readable by others for a moment. Now the file is 0600 before a byte of it exists.
    @Test func keyFilesAreOwnerOnlyFromTheirCreation() throws {
        let directory = Self.temporaryDirectory() + "/nested/keys"
        defer { try? FileManager.default.removeItem(atPath: String(directory.dropLast("/nested/keys".count))) }
        try SecretFiles.createDirectory(directory)
        var modeAtCreation: mode_t = 0
        try SecretFiles.writeNew("\(directory)/k.pem", Array("secret".utf8)) { fd in
            var info = stat()
            _ = fstat(fd, &info)
            modeAtCreation = info.st_mode & 0o777
        }
        #expect(modeAtCreation == 0o600)
        #expect(try String(contentsOfFile: "\(directory)/k.pem", encoding: .utf8) == "secret")
        // Never replaces a file, never follows a symlink planted at the key's name.
        #expect(throws: SigningKeyStore.StoreError.self) { try SecretFiles.writeNew("\(directory)/k.pem", []) }
        _ = symlink("\(directory)/elsewhere", "\(directory)/planted.pem")
        #expect(throws: SigningKeyStore.StoreError.self) { try SecretFiles.writeNew("\(directory)/planted.pem", []) }
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/elsewhere"))

        // The store's own files: keys, `current` and markers, in a 0700 folder.
        let store = try SigningKeyStore.open(directory: directory + "/store", algorithm: .ES256)
        try SigningKeyStore.generate(directory: directory + "/store", algorithm: .ES256)
        var reopened = try SigningKeyStore.open(directory: directory + "/store", algorithm: .ES256)
        try reopened.markRetired(now: 1000)
        func mode(_ path: String) throws -> Int? {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
        }
        #expect(try mode(directory + "/store") == 0o700)
        #expect(try mode(directory) == 0o700)
        for name in try FileManager.default.contentsOfDirectory(atPath: directory + "/store") {
            #expect(try mode("\(directory)/store/\(name)") == 0o600, "\(name)")
        }
        #expect(reopened.current.kid != store.current.kid)
        // A `current.tmp` left by a crash does not stop the next rotation.
        FileManager.default.createFile(atPath: directory + "/store/current.tmp", contents: Data("junk".utf8))
        let next = try SigningKeyStore.generate(directory: directory + "/store", algorithm: .ES256)
        #expect(try SigningKeyStore.load(directory: directory + "/store").current.kid == next.kid)
    }
}
