/// The JWS algorithms the gateway can verify (RFC 7518 §3, RFC 8037). `none` is deliberately absent.
public enum JWSAlgorithm: String, Sendable, Hashable, CaseIterable {
    case HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA

    public var isSymmetric: Bool {
        switch self {
        case .HS256, .HS384, .HS512: true
        default: false
        }
    }

    /// Exact signature (or MAC) length in bytes for fixed-size algorithms; nil for RSA (modulus length).
    var fixedSignatureLength: Int? {
        switch self {
        case .HS256: 32
        case .HS384: 48
        case .HS512: 64
        case .ES256: 64
        case .ES384: 96
        case .EdDSA: 64
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: nil
        }
    }

    /// Minimum HMAC key length (RFC 7518 §3.2: at least the hash output size).
    var minimumHMACKeyLength: Int? {
        switch self {
        case .HS256: 32
        case .HS384: 48
        case .HS512: 64
        default: nil
        }
    }

    var isRSA: Bool {
        switch self {
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: true
        default: false
        }
    }

    /// Parses the header `alg` from its raw UTF-8 bytes, case-sensitively.
    init?(headerValue: String) {
        self.init(rawValue: headerValue)
    }
}

/// Why a key could not be loaded. Messages name the problem, never key or secret bytes.
public struct KeyLoadError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    static func invalid(_ message: String) -> KeyLoadError { KeyLoadError(code: "key_invalid", message: message) }
    static func weak(_ message: String) -> KeyLoadError { KeyLoadError(code: "key_weak", message: message) }
    static func mismatch(_ message: String) -> KeyLoadError { KeyLoadError(code: "key_algorithm_mismatch", message: message) }
    static func unsupported(_ message: String) -> KeyLoadError { KeyLoadError(code: "key_unsupported", message: message) }
    static func privateKey(_ message: String) -> KeyLoadError { KeyLoadError(code: "key_private", message: message) }
    static func document(_ message: String) -> KeyLoadError { KeyLoadError(code: "jwks_invalid", message: message) }
}
