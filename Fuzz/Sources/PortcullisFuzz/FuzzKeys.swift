import Crypto
import _CryptoExtras

@testable import GatewayTokens

/// Fixed keys, so that seeds signed once stay valid across runs. They exist only to fuzz: nothing trusts them.
enum FuzzKeys {
    static let hs256Secret: [UInt8] = Array("portcullis-fuzz-hs256-secret-32b".utf8)
    static let p256 = try! P256.Signing.PrivateKey(rawRepresentation: (1...32).map { UInt8($0) })
    static let p256Other = try! P256.Signing.PrivateKey(rawRepresentation: (33...64).map { UInt8($0) })
    static let ed25519 = try! Curve25519.Signing.PrivateKey(rawRepresentation: (65...96).map { UInt8($0) })
    static let rsa = try! _RSA.Signing.PrivateKey(pemRepresentation: rsaPEM)

    static let issuer = "https://issuer.fuzz"
    /// An issuer with one key and no kid, no audience and no `typ` rule: the other branch of key selection.
    static let singleKeyIssuer = "single"
    static let audience = "api"
    static let now: Double = 1_767_225_600

    /// The trusted verification keys (each pinned to one algorithm, as the gateway loads them).
    static let verifier: TokenVerifier = {
        let keys: [VerificationKey] = [
            try! VerificationKey.hmac(secret: hs256Secret, algorithm: .HS256, kid: "hs"),
            VerificationKey.ec256(p256.publicKey, kid: "es"),
            try! VerificationKey.publicKeyPEM(rsa.publicKey.pemRepresentation, algorithm: .RS256, kid: "rs"),
            try! VerificationKey.publicKeyPEM(rsa.publicKey.pemRepresentation, algorithm: .PS256, kid: "ps"),
            try! VerificationKey.ed25519(raw: Array(ed25519.publicKey.rawRepresentation), kid: "ed"),
        ]
        return TokenVerifier(
            issuers: [
                IssuerPolicy(issuer: issuer, keys: keys, algorithms: [.HS256, .ES256, .RS256, .PS256, .EdDSA], audiences: [audience]),
                IssuerPolicy(
                    issuer: singleKeyIssuer, keys: [VerificationKey.ec256(p256.publicKey, kid: nil)], algorithms: [.ES256],
                    tokenTypes: [], requiredClaims: ["jti"]),
            ],
            leeway: 30)
    }()

    enum Signer: CaseIterable {
        case hs256, es256, rs256, ps256, eddsa
        /// Attacks that must never verify: the RSA public key as an HMAC secret (algorithm confusion), a foreign
        /// P-256 key, a wrong HMAC secret.
        case hs256WithPublicKey, es256Other, hs256Wrong

        var trusted: Bool {
            switch self {
            case .hs256, .es256, .rs256, .ps256, .eddsa: true
            case .hs256WithPublicKey, .es256Other, .hs256Wrong: false
            }
        }

        var algorithm: JWSAlgorithm {
            switch self {
            case .hs256, .hs256WithPublicKey, .hs256Wrong: .HS256
            case .es256, .es256Other: .ES256
            case .rs256: .RS256
            case .ps256: .PS256
            case .eddsa: .EdDSA
            }
        }

        func sign(_ input: [UInt8]) -> [UInt8] {
            switch self {
            case .hs256: hmac(FuzzKeys.hs256Secret, input)
            case .hs256WithPublicKey: hmac(Array(FuzzKeys.rsa.publicKey.pemRepresentation.utf8), input)
            case .hs256Wrong: hmac(Array("portcullis-fuzz-not-the-secret!!".utf8), input)
            case .es256: Array(try! FuzzKeys.p256.signature(for: input).rawRepresentation)
            case .es256Other: Array(try! FuzzKeys.p256Other.signature(for: input).rawRepresentation)
            case .rs256: Array(try! FuzzKeys.rsa.signature(for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5).rawRepresentation)
            case .ps256: Array(try! FuzzKeys.rsa.signature(for: SHA256.hash(data: input), padding: .PSS).rawRepresentation)
            case .eddsa: Array(try! FuzzKeys.ed25519.signature(for: input))
            }
        }

        private func hmac(_ secret: [UInt8], _ input: [UInt8]) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: secret)))
        }
    }

    /// Whether one of the trusted keys signed `signingInput` with `algorithm` (swift-crypto directly, not the
    /// verifier's code path): the oracle for "nothing verifies that our keys did not sign".
    static func trustedSignatureIsValid(algorithm: String, signingInput: [UInt8], signature: [UInt8]) -> Bool {
        switch algorithm {
        case "HS256":
            return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: SymmetricKey(data: hs256Secret))
        case "ES256":
            guard let s = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return p256.publicKey.isValidSignature(s, for: signingInput)
        case "RS256", "PS256":
            let padding: _RSA.Signing.Padding = algorithm == "PS256" ? .PSS : .insecurePKCS1v1_5
            return rsa.publicKey.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: signingInput), padding: padding)
        case "EdDSA":
            return ed25519.publicKey.isValidSignature(signature, for: signingInput)
        default:
            return false
        }
    }

    /// A 2048-bit RSA key made for this harness with `openssl genpkey` (RSA key generation at start would give
    /// each run another key and invalidate the signed seeds).
    static let rsaPEM = """
        -----BEGIN PRIVATE KEY-----
        MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCxtQOKDGcorYnm
        sFxqzRTN2JWnu4aUH7+hobnsk6fciU+T1BVQkpc7xA5UsOiN2lZXbuumxbCqQ28T
        gX+Z7YAs9va8Qfr8j50xATtVVD9TFaPI8/Fuwzmtj9ms57XECfib/frx+LvRQ2qg
        N4NZ44Ei80vuZtUJnBdVTsMxACKBCeWbUHB0PXa/kuITw3cQYEZzu9G7jIc65WvH
        YXzIOoMRa1R9Juru/J5aGCP8jjf3EYbuRm+u8gzbK/RLbnBdMgoYaDmdiYqelyuH
        GJBSP4sSy+odQHo8VEXi4hluSkW1z06YMGgpnF7fzPqWRJNuelEF03vpn0C+VWCq
        4aSjEtoRAgMBAAECggEAHm19oSYVhcgNHDRnZpwd608h9NntpbA3+j98W88+h0r1
        lrzSN30aKxAbWhH+h8dyUD88V05zPPwV6VObmyoo78oLnll31cXrZugsliQ6QYor
        hK2MUehYmGjQn0P/ggUpDeCzlrn9wsuV1sAanAoR4v+gqT3vTVluP1ugnWPGBKz5
        e37XNkhxm6/YctqTUm+U2uxmNZAeNXEazq3Qqqosmjy2FtT7PkdXAmPeKMAit2br
        CwzaJ7jlwmhi7E6vJJUpBIHdZc7YXXFT6R0BSrtGeGoB4zbW4Tp3kIsnPqYYNmoS
        UPhrXacnXuxFSCkaigeoJU590eva+dOpUIzTmfjR3wKBgQDh5QmdcVpaSCdEQedj
        ZfeawMIfJUjI/1l4INj706K1FOgO4cO5tuxHyYpos782xzfh5jcJehhtRq9DCyru
        WUfet/NG58Bj6nDhT3sBnB3kg4p41rtnlyFkfbZcYk7s1ysdCqemVoPzlmWRyuzX
        y0zw76o7x5Hu0XtPJNC9prkQ8wKBgQDJY++XulwmYDtOXiNu1sWJhk0Q4wYp5hqB
        ttSfvhWIyLsQ33joqqdDwt8Mc5xzdUePhOuFQ98ZVt1p10BcWxPetW2GRjkRzNRH
        fg24sat+5O6CUsnI1MeMYYnfBTipQ4P50aNZjfWGiRh4ciI7KTZtoIs1SYm2T6or
        KTw7l/lJ6wKBgQCPzhgN49CKMu7UdEQSsiIroVSzMTAhzPUvFXIs9rDZKIMGnlDU
        lI/cr3/uYadz/uUjaURWQyTzxBDk1GIzNCEdtusnk3eV4/SSat+6yaD6DYeEn+bT
        7pEygRkrvOXTvrLSnSrXKLJ9ypvEcXPPeLv1kg1EWysa5r7iRmSgp1efYwKBgHzV
        pb63lkdzf0+kqvIZz3jf9wVwtHFkYSnm2wXqHg8b3lknLRuMLQKj2P8u6tvm5uTf
        z95bo/9hCP6CnzKggkCa1blV7ipKfYuTZ44FE/kkj3PZPZtvygIKtBu6cNT7NOO2
        PztT883hTXnbxbxGX6a0zZXKb8LCvwjiFqQaIDzhAoGBAIXRO/DnEVixVNuH6UtJ
        GA7mTAsukmRM4xeVLQGEV4kU4+GFyjJubKBkjIZdBnX9u3B31/XbeAFaiwV0yh+q
        5nCmA5+nLBvMTFD8bMC5R6eCxvUgGdFcDW/yoNXenCZhVIcoCHAUXTRZkxSDsPmd
        euUrqT+Mn3IfOMIuL4LTQvnE
        -----END PRIVATE KEY-----
        """
}
