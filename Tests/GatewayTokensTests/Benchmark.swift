import Crypto
import Foundation
import GatewayJSON
import Testing

@testable import GatewayTokens

/// A micro-benchmark, not a test: off unless PORTCULLIS_BENCH=1, asserts nothing about time, prints per-op costs.
/// Run: PORTCULLIS_BENCH=1 swift test -c release --filter GatewayTokensTests.Benchmark
@Suite(.enabled(if: ProcessInfo.processInfo.environment["PORTCULLIS_BENCH"] == "1")) struct Benchmark {
    func measure(_ name: String, iterations: Int = 5000, _ body: () -> Bool) {
        var ok = 0
        for _ in 0..<(iterations / 10) where body() { ok += 1 }  // warm-up
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<iterations where body() { ok += 1 }
        let elapsed = clock.now - start
        let perOp =
            Double(elapsed.components.attoseconds) / 1e9 / Double(iterations) + Double(elapsed.components.seconds) * 1e9
            / Double(iterations)
        print("bench \(name): \(String(format: "%.2f", perOp / 1000)) µs/op (\(ok) ok)")
    }

    @Test func verifyCosts() {
        for alg in [JWSAlgorithm.ES256, .HS256, .RS256, .EdDSA, .PS256, .ES384] {
            let token = Array(T.ok(alg).utf8)
            let verifier = TokenVerifier(issuers: [T.policy()])
            measure("TokenVerifier.verify \(alg.rawValue) (\(token.count) B)") {
                token.withUnsafeBytes { (try? verifier.verify($0, now: T.now).get()) != nil }
            }
            // The raw signature check alone, for the DESIGN §8 ratio.
            let parts = T.ok(alg).split(separator: ".")
            let input = Array((parts[0] + "." + parts[1]).utf8)
            let signature = Base64URL.decode(String(parts[2]))!
            let key = TestKeys.verificationKeys.first { $0.algorithm == alg }!
            measure("raw signature check \(alg.rawValue)") { key.verify(message: input, signature: signature) }
        }
        let token = Array(T.ok(.ES256).utf8)
        let verified = try! token.withUnsafeBytes { T.verifier.verify($0, now: T.now) }.get()
        let cache = VerifiedTokenCache(capacity: 65536)
        token.withUnsafeBytes { cache.insert($0, verified, now: T.now) }
        measure("VerifiedTokenCache.lookup hit", iterations: 200_000) { token.withUnsafeBytes { cache.lookup($0, now: T.now) != nil } }
    }
}
