import GatewayJSON
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// Seeded random inputs through every parser on the request path: none may crash, and each must give one of its
/// documented answers. Deterministic (fixed seed), bounded, and independent of timing.
@Suite struct RobustnessTests {
    /// SplitMix64: a tiny deterministic generator, so a failure reproduces.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Bytes biased towards the characters that matter to the parsers.
    static func randomText(_ rng: inout SeededGenerator, maxLength: Int) -> String {
        let interesting = Array("/.%;?#\\ \t\r\n\0aZ09-_~:,=\"{}[]eE+bB".utf8) + [0x7F, 0x80, 0xC3, 0xA9, 0xFF]
        let length = Int.random(in: 0...maxLength, using: &rng)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        for _ in 0..<length {
            bytes.append(Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng))
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func canonicalPathNeverCrashesAndIsIdempotent() {
        var rng = SeededGenerator(state: 42)
        var accepted = 0
        for _ in 0..<20000 {
            let target = "/" + Self.randomText(&rng, maxLength: 40)
            guard case .success(let c) = CanonicalPath.parse(target) else { continue }
            accepted += 1
            // What is forwarded is itself canonical: parsing it again changes nothing.
            #expect((try? CanonicalPath.parse(c.requestTarget).get()) == c, "\(target.debugDescription)")
            #expect(!c.path.contains("//") && !c.path.contains("/../") && !c.path.hasSuffix("/.."))
            #expect(c.path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\\") })
        }
        #expect(accepted > 100)  // the generator does reach the accepting paths
    }

    @Test func bearerParsingNeverCrashes() {
        var rng = SeededGenerator(state: 7)
        for _ in 0..<20000 {
            let value = (Bool.random(using: &rng) ? "Bearer " : "") + Self.randomText(&rng, maxLength: 30)
            switch BearerCredential.parse(value) {
            case .token(let t): #expect(!t.isEmpty && !t.contains(" ") && !t.contains(","))
            case .absent, .invalidRequest: break
            }
        }
    }

    @Test func jsonParserNeverCrashes() {
        var rng = SeededGenerator(state: 99)
        for _ in 0..<20000 {
            let text = Self.randomText(&rng, maxLength: 40)
            if let value = try? JSONParser.parse(text, limits: .token) {
                // Whatever parses must round-trip through the writer.
                #expect((try? JSONParser.parse(JSONWriter.string(value))) == value)
            }
        }
    }

    @Test func headerValueEncodingIsAlwaysPrintableASCII() {
        var rng = SeededGenerator(state: 1234)
        for _ in 0..<5000 {
            let encoded = HeaderPolicy.encodeValue(Self.randomText(&rng, maxLength: 40))
            #expect(encoded.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
        }
    }
}
