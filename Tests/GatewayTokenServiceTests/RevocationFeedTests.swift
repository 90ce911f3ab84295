import CurlNIO
import GatewayControl
import GatewayJSON
import GatewayProxy
import GatewaySessions
import Testing

@testable import GatewayTokenService

/// The feed's wire format on both sides: query parsing, the secret compare, the answer body, and the follower's
/// checks of what it reads.
@Suite struct RevocationFeedTests {
    @Test func queryParsing() throws {
        #expect(try RevocationFeed.parseQuery("after=12") == (12, 30))
        #expect(try RevocationFeed.parseQuery("after=0&wait=5") == (0, 5))
        #expect(try RevocationFeed.parseQuery("wait=600&after=3&x=y") == (3, 30))
        for bad in [
            nil, "", "after=", "after=-1", "after=1.5", "after=%31", "after=1&after=2", "after=abc", "after=1&wait=x",
            "after=1&wait=-3", "after=99999999999999999999", "after= 1",
        ] {
            #expect(throws: TokenServiceError.self) { _ = try RevocationFeed.parseQuery(bad) }
        }
    }

    @Test func bodyAndFollowerParseAgree() throws {
        let page = RevocationFeedPage(
            revocations: [RevocationRecord(sequence: 12, sessionID: "abc", revokedAt: 1_767_225_600.5, until: 1_767_226_530.5)], next: 12)
        let body = RevocationFeed.body(page)
        #expect(
            String(decoding: body, as: UTF8.self)
                == #"{"revocations":[{"seq":12,"sid":"abc","revoked_at":1767225600.5,"until":1767226530.5}],"next":12}"# + "\n")
        let parsed = try RevocationFollower.parse(CurlFetchResponse(status: 200, headers: [], body: body), after: 11)
        #expect(parsed == page)
        var reset = page
        reset.reset = true
        #expect(
            try RevocationFollower.parse(CurlFetchResponse(status: 200, headers: [], body: RevocationFeed.body(reset)), after: 99) == reset)
    }

    @Test func followerRefusesAnswersThatBreakTheContract() {
        func parse(_ text: String, status: Int = 200, after: Int64 = 5) -> RevocationFollower.PollError.Code? {
            do {
                _ = try RevocationFollower.parse(CurlFetchResponse(status: status, headers: [], body: Array(text.utf8)), after: after)
                return nil
            } catch {
                return error.code
            }
        }
        #expect(parse(#"{"revocations":[],"next":5}"#) == nil)
        #expect(parse("", status: 401) == .unauthorized)
        #expect(parse("", status: 503) == .httpStatus)
        #expect(parse("not json") == .invalidAnswer)
        #expect(parse(#"{"next":5}"#) == .invalidAnswer)
        #expect(parse(#"{"revocations":[{"seq":5,"sid":"a","until":1}],"next":5}"#) == .invalidAnswer)  // not after 5
        #expect(parse(#"{"revocations":[{"seq":7,"sid":"a","until":1},{"seq":6,"sid":"b","until":1}],"next":7}"#) == .invalidAnswer)
        #expect(parse(#"{"revocations":[{"seq":7,"until":1}],"next":7}"#) == .invalidAnswer)
        #expect(parse(#"{"revocations":[{"seq":7,"sid":"a","until":1}],"next":6}"#) == .invalidAnswer)
        #expect(parse(#"{"revocations":[],"next":4}"#) == .invalidAnswer)
        #expect(parse(#"{"revocations":[],"next":1.5}"#) == .invalidAnswer)
    }

    @Test func revokedSessionsAreScopedByIssuer() {
        let set = RevokedSessions()
        set.insert("sid-1", issuer: "https://a", until: 200, now: 100)
        #expect(set.contains("sid-1", issuer: "https://a", now: 150))
        #expect(!set.contains("sid-1", issuer: "https://b", now: 150))
        #expect(!set.contains("sid-1", issuer: "https://a", now: 200))
        set.insert("sid-1", issuer: "https://b", until: 300, now: 100)
        #expect(set.count == 2)
        // Pruned once a minute: both gone after their time.
        set.insert("sid-2", issuer: "https://a", until: 1000, now: 400)
        #expect(set.count == 1)
    }

    @Test func readinessListsDegradedConditionsWithoutBecomingUnready() throws {
        let readiness = Readiness()
        readiness.register("store", ready: true)
        #expect(String(decoding: readiness.body().json, as: UTF8.self) == #"{"status":"ready"}"#)
        readiness.setDegraded("store", true)
        let (ready, json) = readiness.body()
        #expect(ready)
        #expect(String(decoding: json, as: UTF8.self) == #"{"status":"ready","degraded":["store"]}"#)
        readiness.setDegraded("store", false)
        #expect(String(decoding: readiness.body().json, as: UTF8.self) == #"{"status":"ready"}"#)
    }
}
