import Glibc

@testable import GatewayTokens

/// `--write-seeds=DIR`: the seeds that need the fixed keys (validly signed tokens, and requests carrying them), so
/// that the fuzzer starts behind the signature check. `Fuzz/make-corpus.py` writes the others and calls this.
enum SeedWriter {
    static func write(to directory: String) {
        var jws: [(String, [UInt8])] = []
        var heads: [(String, [UInt8])] = []
        func header(_ alg: JWSAlgorithm, _ kid: String) -> String { #"{"alg":"\#(alg.rawValue)","kid":"\#(kid)","typ":"at+jwt"}"# }
        let claims =
            #"{"iss":"https://issuer.fuzz","sub":"user-1","aud":"api","exp":1767229200,"nbf":1767225000,"iat":1767225000,"scope":"read admin","email":"u@example.test","jti":"j1","sid":"s1"}"#
        let signers: [(FuzzKeys.Signer, String)] = [(.hs256, "hs"), (.es256, "es"), (.rs256, "rs"), (.ps256, "ps"), (.eddsa, "ed")]
        for (signer, kid) in signers {
            let h = header(signer.algorithm, kid)
            let token = Self.token(header: h, payload: claims, signer: signer)
            // Raw mode (even selector): the token as it follows "Bearer ".
            jws.append(("valid-\(kid)", [0] + Array(token.utf8)))
            // Signing mode (odd selector, then the signer): header and payload JSON, signed by the harness.
            let index = UInt8(FuzzKeys.Signer.allCases.firstIndex(of: signer)!)
            jws.append(("signed-\(kid)", [1, index] + Array(h.utf8) + [0] + Array(claims.utf8)))
            heads.append(
                (
                    "get-token-\(kid)",
                    [0]
                        + Array(
                            "GET /api/items?x=1 HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer \(token)\r\nX-Auth-Subject: forged\r\n\r\n"
                                .utf8)
                ))
            heads.append(
                (
                    "post-admin-\(kid)",
                    [0]
                        + Array(
                            "POST /admin/users HTTP/1.1\r\nHost: gw.test\r\nAuthorization: bearer  \(token)\r\nContent-Length: 5\r\nConnection: keep-alive, X-Extra\r\nX-Extra: 1\r\n\r\nhello"
                                .utf8)
                ))
        }
        let single = Self.token(
            header: #"{"alg":"ES256"}"#, payload: #"{"iss":"single","sub":"s","exp":1767229200,"jti":"x","scp":["a","b"]}"#, signer: .es256)
        jws.append(("valid-single", [0] + Array(single.utf8)))
        // The attacks, in signing mode: each must be refused.
        for (i, signer) in FuzzKeys.Signer.allCases.enumerated() where !signer.trusted {
            let h = header(signer.algorithm, signer.algorithm == .HS256 ? "hs" : "es")
            jws.append(("attack-\(signer)", [1, UInt8(i)] + Array(h.utf8) + [0] + Array(claims.utf8)))
        }
        save(jws, to: "\(directory)/jws")
        save(heads, to: "\(directory)/request-head")
    }

    static func token(header: String, payload: String, signer: FuzzKeys.Signer) -> String {
        let input = "\(Base64URL.encode(Array(header.utf8))).\(Base64URL.encode(Array(payload.utf8)))"
        return "\(input).\(Base64URL.encode(signer.sign(Array(input.utf8))))"
    }

    static func save(_ seeds: [(String, [UInt8])], to directory: String) {
        mkdir(directory, 0o755)
        for (name, bytes) in seeds {
            guard let file = fopen("\(directory)/\(name)", "wb") else {
                printError("cannot write \(directory)/\(name)")
                exit(1)
            }
            _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
            fclose(file)
        }
    }
}
