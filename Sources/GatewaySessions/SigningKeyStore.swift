import Foundation
import GatewayJSON
import GatewayTokens

/// The token service's signing keys in `signing.key_dir`: one PKCS #8 PEM file per key, `<kid>.<alg>.pem` (mode
/// 0600), and a `current` file naming the key that signs. The first key is created on first start with the
/// configured algorithm; `portcullis keys generate` adds a new current key (of any supported algorithm) and keeps
/// the earlier ones, whose public halves stay published so tokens they signed still verify.
///
/// Retirement: the first gateway start that finds a key no longer current writes `<kid>.retired` with that time
/// (the moment this gateway stops signing with it, which can be later than `keys generate` ran). The key stays
/// published until every token it signed has expired: `retiredAt + retention` (`access_token_ttl_seconds` + leeway).
public struct SigningKeyStore: Sendable {
    public let directory: String
    /// Every key in the directory, the current one first.
    public let keys: [SigningKey]
    /// When each non-current key stopped signing, from its `.retired` marker.
    public private(set) var retiredAt: [String: Double] = [:]

    init(directory: String, keys: [SigningKey], retiredAt: [String: Double] = [:]) {
        self.directory = directory
        self.keys = keys
        self.retiredAt = retiredAt
    }

    public var current: SigningKey { keys[0] }

    public struct StoreError: Error, CustomStringConvertible, Sendable {
        /// Stable codes, so callers and tests can tell kinds of failure apart.
        public struct Code: Sendable, Hashable, CustomStringConvertible {
            public let rawValue: String
            public init(_ rawValue: String) { self.rawValue = rawValue }
            /// A file or folder of the key directory could not be created, written or read.
            public static let io = Code("signing_key_io")
            /// A key file's name does not match its key.
            public static let mismatch = Code("signing_key_mismatch")
            public var description: String { rawValue }
        }

        public var code: Code
        public var message: String
        public var description: String { message }

        public init(_ code: Code = .io, message: String) {
            self.code = code
            self.message = message
        }
    }

    /// Loads the keys, generating a current key of `algorithm` if there is none yet.
    public static func open(directory: String, algorithm: JWSAlgorithm) throws -> SigningKeyStore {
        var store = try load(directory: directory)
        if store.keys.isEmpty {
            _ = try generate(directory: directory, algorithm: algorithm)
            store = try load(directory: directory)
        }
        return store
    }

    /// Adds a new key and makes it current. Returns it.
    @discardableResult
    public static func generate(directory: String, algorithm: JWSAlgorithm) throws -> SigningKey {
        let key = try SigningKey.generate(algorithm)
        try SecretFiles.createDirectory(directory)
        try SecretFiles.writeNew("\(directory)/\(key.kid).\(algorithm.rawValue).pem", Array(key.pem.utf8))
        // Write-then-rename, so a crash never leaves a `current` naming a half-written key.
        try SecretFiles.replace("\(directory)/current", Array((key.kid + "\n").utf8))
        return key
    }

    /// Loads the keys that exist; empty when the directory does not.
    public static func load(directory: String) throws -> SigningKeyStore {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else {
            return SigningKeyStore(directory: directory, keys: [])
        }
        var keys: [SigningKey] = []
        for name in names.sorted() where name.hasSuffix(".pem") {
            let parts = name.dropLast(4).split(separator: ".")
            guard parts.count == 2, let algorithm = JWSAlgorithm(rawValue: String(parts[1])) else { continue }
            guard let data = fm.contents(atPath: "\(directory)/\(name)") else {
                throw StoreError(message: "cannot read \(directory)/\(name)")
            }
            let key = try SigningKey(pem: String(decoding: data, as: UTF8.self), algorithm: algorithm)
            guard key.kid == parts[0] else {
                throw StoreError(.mismatch, message: "\(directory)/\(name): the file name does not match the key's thumbprint \(key.kid)")
            }
            keys.append(key)
        }
        let currentKid = fm.contents(atPath: "\(directory)/current")
            .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        if let index = keys.firstIndex(where: { $0.kid == currentKid }) {
            keys.insert(keys.remove(at: index), at: 0)
            var retiredAt: [String: Double] = [:]
            for key in keys.dropFirst() {
                if let data = fm.contents(atPath: "\(directory)/\(key.kid).retired"),
                    let seconds = Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                {
                    retiredAt[key.kid] = seconds
                }
            }
            return SigningKeyStore(directory: directory, keys: keys, retiredAt: retiredAt)
        }
        // No usable `current`: report no keys, so `open` generates a current one (the files stay, and are listed
        // again by the load that follows).
        return SigningKeyStore(directory: directory, keys: [])
    }

    /// Writes a `.retired` marker at `now` for every non-current key that has none yet.
    public mutating func markRetired(now: Double) throws {
        for key in keys.dropFirst() where retiredAt[key.kid] == nil {
            try SecretFiles.replace("\(directory)/\(key.kid).retired", Array("\(Int64(now))\n".utf8))
            retiredAt[key.kid] = now
        }
    }

    /// The keys whose tokens may still be live at `now`: the current one, and retired ones until `retention` after
    /// their retirement (a key without a marker counts as just retired).
    public func published(now: Double, retention: Double) -> [SigningKey] {
        keys.enumerated().filter { index, key in
            index == 0 || (retiredAt[key.kid] ?? now) + retention > now
        }.map(\.element)
    }

    /// A JWKS document (`{"keys": [...]}`) of `keys` (every key of the store when nil).
    public func jwks(_ keys: [SigningKey]? = nil) -> String {
        Self.jwks(of: keys ?? self.keys)
    }

    /// The JWKS document (RFC 7517) of `keys`' public halves, wherever the keys are kept.
    public static func jwks(of keys: [SigningKey]) -> String {
        let entries = keys.compactMap { $0.verificationKey.publicJWK }.map { JSONValue.object($0) }
        return JSONWriter.string(.object(JSONObject([("keys", .array(entries))])))
    }
}
