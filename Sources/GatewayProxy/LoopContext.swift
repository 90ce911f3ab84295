import CurlNIO
import GatewayTokens
import NIOCore

/// What each event loop owns for the data path: the current policy, its libcurl driver, its verified-token cache, the
/// revoked sessions and its request-id sequence. Confined to the loop, so none of it needs a lock: changes (a new
/// policy after a reload or a key-set refresh, a revocation) arrive through `EventLoop.execute`.
public final class LoopContext {
    public let driver: CurlLoopDriver
    /// Replaced as a whole; a request keeps the policy it started with.
    public var policy: ProxyPolicy
    public let tokenCache: VerifiedTokenCache
    public let revocations = RevokedSessions()
    public let metrics = LoopMetrics()
    public let accessLogWriter: AccessLogWriter
    private let idPrefix: UInt64
    private var counter: UInt64 = 0

    /// - Parameter leeway: the verifier's leeway: a cached entry lives exactly as long as the verifier would accept it.
    public init(driver: CurlLoopDriver, policy: ProxyPolicy, tokenCacheEntries: Int, leeway: Double) {
        self.driver = driver
        self.accessLogWriter = AccessLogWriter(eventLoop: driver.eventLoop)
        self.policy = policy
        self.tokenCache = VerifiedTokenCache(capacity: tokenCacheEntries, leeway: leeway)
        self.idPrefix = UInt64.random(in: .min ... .max)
    }

    /// A new request id: a random per-loop prefix and a counter, unique without a random draw per request.
    public func nextRequestID() -> String {
        counter &+= 1
        // 32 hex digits written straight into one string allocation (this runs for every request).
        let prefix = idPrefix
        let value = counter
        return String(unsafeUninitializedCapacity: 32) { out in
            writeHex(prefix, into: out, at: 0)
            writeHex(value, into: out, at: 16)
            return 32
        }
    }
}

@available(*, unavailable)
extension LoopContext: Sendable {}

/// 16 lower-case hex digits of `value` at `out[offset...]`.
private func writeHex(_ value: UInt64, into out: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
    var v = value
    for i in stride(from: offset + 15, through: offset, by: -1) {
        let nibble = UInt8(truncatingIfNeeded: v & 0xF)
        out[i] = nibble < 10 ? 0x30 + nibble : 0x57 + nibble
        v >>= 4
    }
}

/// A client-supplied `X-Request-Id` is kept only if it is short and plain, so it is safe in logs and headers.
func isAcceptableRequestID(_ id: Substring) -> Bool {
    (1...128).contains(id.utf8.count)
        && id.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                true
            default:
                false
            }
        }
}
