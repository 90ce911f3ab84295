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

    /// A distinct bit per algorithm, for allow-list sets checked per request.
    var bit: UInt16 {
        switch self {
        case .HS256: 1 << 0
        case .HS384: 1 << 1
        case .HS512: 1 << 2
        case .RS256: 1 << 3
        case .RS384: 1 << 4
        case .RS512: 1 << 5
        case .PS256: 1 << 6
        case .PS384: 1 << 7
        case .PS512: 1 << 8
        case .ES256: 1 << 9
        case .ES384: 1 << 10
        case .EdDSA: 1 << 11
        }
    }

    static func mask(_ algorithms: Set<JWSAlgorithm>) -> UInt16 {
        algorithms.reduce(0) { $0 | $1.bit }
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
