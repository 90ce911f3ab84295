import GatewayTokens
import Testing

@Suite struct ConstantTimeTests {
    @Test func secretCompare() {
        let secret = Array("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".utf8)
        #expect(ConstantTime.equals(secret, secret))
        #expect(!ConstantTime.equals(Array(secret.dropLast()), secret))
        #expect(!ConstantTime.equals(secret + [0], secret))
        #expect(!ConstantTime.equals([], secret))
        var flipped = secret
        flipped[10] ^= 1
        #expect(!ConstantTime.equals(flipped, secret))
        // Slices and string views compare by their bytes, as the callers hand them over.
        #expect(ConstantTime.equals(("Bearer " + String(decoding: secret, as: UTF8.self)).utf8.dropFirst(7), secret))
        #expect(ConstantTime.equals([UInt8](), []))
    }
}
