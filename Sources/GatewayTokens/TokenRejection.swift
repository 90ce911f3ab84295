/// Why a token was refused. `reason` is the stable code of DESIGN §6; `errorDescription` is a fixed sentence per
/// reason, safe for an RFC 6750 `error_description` (only %x20-21 / %x23-5B / %x5D-7E; never token bytes, kid or
/// claim values).
public struct TokenRejection: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Reason: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let tokenMalformed = Reason(rawValue: "token_malformed")
        public static let signatureInvalid = Reason(rawValue: "signature_invalid")
        public static let algorithmNotAllowed = Reason(rawValue: "algorithm_not_allowed")
        public static let keyUnknown = Reason(rawValue: "key_unknown")
        public static let issuerUnknown = Reason(rawValue: "issuer_unknown")
        public static let audienceMismatch = Reason(rawValue: "audience_mismatch")
        public static let tokenTypeInvalid = Reason(rawValue: "token_type_invalid")
        public static let claimsInvalid = Reason(rawValue: "claims_invalid")
        public static let tokenNotYetValid = Reason(rawValue: "token_not_yet_valid")
        public static let tokenExpired = Reason(rawValue: "token_expired")
        public static let tokenRevoked = Reason(rawValue: "token_revoked")

        /// Every reason this module defines (for metrics pre-registration).
        public static let allReasons: [Reason] = [
            .tokenMalformed, .signatureInvalid, .algorithmNotAllowed, .keyUnknown, .issuerUnknown, .audienceMismatch,
            .tokenTypeInvalid, .claimsInvalid, .tokenNotYetValid, .tokenExpired, .tokenRevoked,
        ]

        /// The fixed human sentence for this reason.
        public var errorDescription: String {
            switch rawValue {
            case "token_malformed": "The access token is malformed"
            case "signature_invalid": "The access token signature is invalid"
            case "algorithm_not_allowed": "The access token signing algorithm is not allowed"
            case "key_unknown": "The access token signing key is unknown"
            case "issuer_unknown": "The access token issuer is not trusted"
            case "audience_mismatch": "The access token audience is not accepted"
            case "token_type_invalid": "The access token type is not accepted"
            case "claims_invalid": "The access token claims are invalid"
            case "token_not_yet_valid": "The access token is not yet valid"
            case "token_expired": "The access token expired"
            case "token_revoked": "The access token has been revoked"
            default: "The access token is invalid"
            }
        }

        public var description: String { rawValue }
    }

    public var reason: Reason
    public var errorDescription: String

    public init(_ reason: Reason) {
        self.reason = reason
        self.errorDescription = reason.errorDescription
    }

    public var description: String { "\(reason.rawValue): \(errorDescription)" }

    static let malformed = TokenRejection(.tokenMalformed)
}
