import CurlNIO
import GatewayConfig
import GatewayJSON
import GatewayTokens
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// An unknown kid from a remote issuer: the policy answers `.awaitKeys` once, and the handler keeps the request
/// undecided until the refetch completes, then decides it again with the loop's new policy — never waiting twice.
@Suite(.serialized) struct KeyRefetchWaitTests {
    static let issuer = "https://idp.test"

    /// Counts calls; hands out `future` (or nil: refused).
    final class FakeRefetcher: KeyRefetcher {
        let calls = NIOLockedValueBox<[String]>([])
        let future: EventLoopFuture<Void>?

        init(future: EventLoopFuture<Void>?) { self.future = future }

        func refetchKeys(issuer: String) -> EventLoopFuture<Void>? {
            calls.withLockedValue { $0.append(issuer) }
            return future
        }

        var count: Int { calls.withLockedValue { $0.count } }
    }

    static func configuration() throws -> GatewayConfiguration {
        let json = """
            {"upstreams": {"app": {"url": "http://127.0.0.1:9"}}, "routes": [{"path_prefix": "/", "upstream": "app"}],
             "auth": {"audiences": ["api"]},
             "issuers": [{"issuer": "\(issuer)", "jwks_uri": "https://idp.test/keys", "algorithms": ["ES256"]}]}
            """
        return try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
    }

    /// The remote issuer with `keys` (none: the rotated key is not known yet).
    static func verifier(keys: [VerificationKey] = []) -> TokenVerifier {
        TokenVerifier(issuers: [IssuerPolicy(issuer: issuer, keys: keys, algorithms: [.ES256], audiences: ["api"])])
    }

    static func policy(_ refetcher: (any KeyRefetcher)?) throws -> ProxyPolicy {
        let configuration = try configuration()
        return ProxyPolicy(
            configuration: configuration, verifier: verifier(),
            targets: ["app": UpstreamTarget(upstream: configuration.upstreams[0])], keyRefetcher: refetcher)
    }

    /// A token of the remote issuer naming kid "rotated" (the signature is never reached while the key is unknown).
    static let token: String = {
        func b64u(_ s: String) -> String { Base64URL.encode(Array(s.utf8)) }
        let header = b64u(#"{"alg":"ES256","kid":"rotated","typ":"at+jwt"}"#)
        let payload = b64u(#"{"iss":"\#(issuer)","sub":"u","aud":"api","exp":9999999999}"#)
        return "\(header).\(payload).\(Base64URL.encode([UInt8](repeating: 1, count: 64)))"
    }()

    /// A key for kid "rotated" (a fixed valid P-256 point), as the refetch would bring it.
    static func rotatedKey() throws -> VerificationKey {
        let jwk =
            #"{"keys":[{"kty":"EC","crv":"P-256","kid":"rotated","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#
        return try #require(try VerificationKey.jwks(Array(jwk.utf8), allowedAlgorithms: [.ES256]).keys.first)
    }

    static func head(_ token: String? = Self.token, contentLength: Int? = nil) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/x")
        head.headers.add(name: "Host", value: "gw.test")
        if let token { head.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentLength {
            head.method = .POST
            head.headers.add(name: "Content-Length", value: String(contentLength))
        }
        return head
    }

    // MARK: - ProxyPolicy

    func decide(_ policy: ProxyPolicy, mayAwaitKeys: Bool = true, token: String? = Self.token) -> ProxyPolicy.Decision {
        var route: Int? = nil
        return policy.decide(
            head: Self.head(token), body: .none, requestID: "r", clientAddress: nil, cache: VerifiedTokenCache(capacity: 16),
            revocations: RevokedSessions(), now: 1000, mayAwaitKeys: mayAwaitKeys, matchedRoute: &route)
    }

    func rejection(_ decision: ProxyPolicy.Decision) -> String? {
        if case .reject(let error) = decision { return error.reason }
        return nil
    }

    @Test func unknownKeyOfARemoteIssuerWaitsOnce() throws {
        let loop = EmbeddedEventLoop()
        let refetcher = FakeRefetcher(future: loop.makeSucceededVoidFuture())
        let policy = try Self.policy(refetcher)
        guard case .awaitKeys = decide(policy) else {
            Issue.record("expected awaitKeys")
            return
        }
        #expect(refetcher.calls.withLockedValue { $0 } == [Self.issuer])
        // Deciding again after the wait never waits a second time.
        #expect(rejection(decide(policy, mayAwaitKeys: false)) == "key_unknown")
        #expect(refetcher.count == 1)
    }

    @Test func refusedRefetchRejectsAtOnce() throws {
        let refetcher = FakeRefetcher(future: nil)  // cooldown
        #expect(rejection(decide(try Self.policy(refetcher))) == "key_unknown")
        #expect(refetcher.count == 1)
        #expect(rejection(decide(try Self.policy(nil))) == "key_unknown")  // no remote key sets at all
    }

    @Test func otherFailuresNeverAskForKeys() throws {
        let loop = EmbeddedEventLoop()
        let refetcher = FakeRefetcher(future: loop.makeSucceededVoidFuture())
        let policy = try Self.policy(refetcher)
        func b64u(_ s: String) -> String { Base64URL.encode(Array(s.utf8)) }
        let otherIssuer =
            "\(b64u(#"{"alg":"ES256","kid":"k","typ":"at+jwt"}"#)).\(b64u(#"{"iss":"https://else.test","sub":"u","exp":9999999999}"#)).AAAA"
        #expect(rejection(decide(policy, token: otherIssuer)) == "issuer_unknown")
        #expect(rejection(decide(policy, token: "garbage")) == "token_malformed")
        // The key is known now: a bad signature is a bad signature, not a reason to refetch.
        let withKey = policy.replacing(verifier: Self.verifier(keys: [try Self.rotatedKey()]))
        #expect(rejection(decide(withKey)) == "signature_invalid")
        #expect(refetcher.count == 0)
    }

    @Test func replacingTheVerifierKeepsEverythingElse() throws {
        let refetcher = FakeRefetcher(future: nil)
        let policy = try Self.policy(refetcher)
        let copy = policy.replacing(verifier: Self.verifier(keys: [try Self.rotatedKey()]))
        #expect(copy !== policy)
        #expect(copy.routes.routes == policy.routes.routes)
        #expect(copy.realm == policy.realm && copy.limits == policy.limits && copy.tokenCacheEntries == policy.tokenCacheEntries)
        #expect(copy.targets.map(\.origin) == policy.targets.map(\.origin))
        #expect(copy.keyRefetcher as? FakeRefetcher === refetcher)
        #expect(copy.ownIssuer == policy.ownIssuer)
    }

    // MARK: - GatewayHandler

    /// A handler on an embedded channel whose loop context holds `policy`. Its curl driver is on the channel's loop
    /// through `EmbeddedDriverLoop`, so the readiness watcher's thread never touches the embedded loop.
    final class Harness {
        let channel = EmbeddedChannel()
        let watcher: CurlReadinessWatcher
        let context: LoopContext

        init(policy: ProxyPolicy) throws {
            watcher = try CurlReadinessWatcher()
            let driver = CurlLoopDriver(eventLoop: EmbeddedDriverLoop(channel.embeddedEventLoop), watcher: watcher)
            context = LoopContext(driver: driver, policy: policy, tokenCacheEntries: 16, leeway: 30)
            try channel.pipeline.syncOperations.addHandler(GatewayHandler(loop: context, clock: { 1000 }))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func send(_ part: HTTPServerRequestPart) throws { try channel.writeInbound(part) }

        /// Every response part written so far.
        func written() throws -> [HTTPServerResponsePart] {
            var parts: [HTTPServerResponsePart] = []
            while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) { parts.append(part) }
            return parts
        }

        func finish() {
            _ = try? channel.finish()
            watcher.shutdown()
        }
    }

    static func summary(_ parts: [HTTPServerResponsePart]) -> (status: Int?, reason: String?, closes: Bool, ended: Bool) {
        var status: Int? = nil
        var reason: String? = nil
        var closes = false
        var ended = false
        for part in parts {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                closes = head.headers["connection"].contains("close")
            case .body(.byteBuffer(let buffer)):
                if case .object(let o)? = try? JSONParser.parse(
                    Array(buffer.readableBytesView), limits: JSONLimits(maxDepth: 4, maxBytes: 4096))
                {
                    reason = o["reason"]?.stringValue
                }
            case .body:
                break
            case .end:
                ended = true
            }
        }
        return (status, reason, closes, ended)
    }

    /// A connection whose policy's refetcher hands out `refetched`, a promise on the channel's loop that the test
    /// completes when the "fetch" is done.
    static func awaitingRefetch() throws -> (harness: Harness, refetched: EventLoopPromise<Void>, refetcher: FakeRefetcher) {
        let harness = try Harness(policy: try policy(nil))
        let refetched = harness.channel.embeddedEventLoop.makePromise(of: Void.self)
        let refetcher = FakeRefetcher(future: refetched.futureResult)
        do {
            harness.context.policy = try policy(refetcher)
        } catch {
            harness.finish()
            throw error
        }
        return (harness, refetched, refetcher)
    }

    @Test func heldRequestIsDecidedAgainWithTheRefetchedKeys() throws {
        let (harness, refetched, refetcher) = try Self.awaitingRefetch()
        defer { harness.finish() }

        try harness.send(.head(Self.head()))
        try harness.send(.end(nil))
        #expect(try harness.written().isEmpty, "nothing is answered while the keys are refetched")
        #expect(refetcher.count == 1)

        // The refetch installs a table with the rotated key on the loop, then completes.
        harness.context.policy = harness.context.policy.replacing(verifier: Self.verifier(keys: [try Self.rotatedKey()]))
        refetched.succeed(())
        harness.channel.embeddedEventLoop.run()
        let answer = Self.summary(try harness.written())
        // Decided with the new table: the key is found and the (fake) signature checked.
        #expect(answer.status == 401 && answer.reason == "signature_invalid" && answer.ended && !answer.closes)
        #expect(refetcher.count == 1)

        // The connection carries on with the next request.
        try harness.send(.head(Self.head(nil)))
        try harness.send(.end(nil))
        #expect(Self.summary(try harness.written()).reason == "token_missing")
    }

    @Test func heldRequestNeverWaitsTwice() throws {
        let (harness, refetched, refetcher) = try Self.awaitingRefetch()
        defer { harness.finish() }

        try harness.send(.head(Self.head()))
        try harness.send(.end(nil))
        refetched.succeed(())  // the refetch brought nothing new
        harness.channel.embeddedEventLoop.run()
        let answer = Self.summary(try harness.written())
        #expect(answer.status == 401 && answer.reason == "key_unknown")
        #expect(refetcher.count == 1)
    }

    @Test func bodyThatArrivedWhileWaitingIsReplayed() throws {
        let (harness, refetched, _) = try Self.awaitingRefetch()
        defer { harness.finish() }

        try harness.send(.head(Self.head(contentLength: 5)))
        try harness.send(.body(ByteBuffer(string: "hello")))
        try harness.send(.end(nil))
        #expect(try harness.written().isEmpty)
        refetched.succeed(())
        harness.channel.embeddedEventLoop.run()
        // Refused with a body on the wire: answered, and the connection closes (DESIGN §5 early rejection).
        let answer = Self.summary(try harness.written())
        #expect(answer.status == 401 && answer.reason == "key_unknown" && answer.closes)
    }

    @Test func clientGoneWhileWaiting() throws {
        let (harness, refetched, _) = try Self.awaitingRefetch()
        defer { harness.finish() }

        try harness.send(.head(Self.head()))
        try harness.channel.close().wait()
        refetched.succeed(())
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written().isEmpty)
    }
}
