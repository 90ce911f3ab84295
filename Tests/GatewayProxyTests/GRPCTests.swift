import GatewayTokens
import NIOCore
import NIOHTTP1
import Testing

@testable import GatewayProxy

/// gRPC's pieces (DESIGN §11): which content types are gRPC, `grpc-timeout`, the status of each gateway refusal and
/// the `grpc-message` encoding.
@Suite struct GRPCTests {
    @Test func contentTypes() {
        for yes in [
            "application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc;charset=utf-8",
            "Application/GRPC", "APPLICATION/GRPC+PROTO",
        ] {
            #expect(GRPC.isGRPC(contentType: yes), "\(yes)")
        }
        for no in [
            "application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text", "application/grpcx",
            "application/grp", "application/json", "", "text/grpc", " application/grpc", "application/grpc ",
        ] {
            #expect(!GRPC.isGRPC(contentType: no), "\(no)")
        }
    }

    @Test func aRequestIsGRPCByItsOneContentType() {
        #expect(GRPC.isGRPC(HTTPHeaders([("content-type", "application/grpc")])))
        #expect(GRPC.isGRPC(HTTPHeaders([("Content-Type", "application/grpc+proto"), ("te", "trailers")])))
        #expect(!GRPC.isGRPC(HTTPHeaders([("te", "trailers")])))
        #expect(!GRPC.isGRPC(HTTPHeaders([("content-type", "application/grpc"), ("content-type", "application/grpc")])))
        #expect(!GRPC.isGRPC(HTTPHeaders([("content-type", "application/grpc-web")])))
    }

    @Test func timeouts() {
        #expect(GRPC.parseTimeout("1H") == .hours(1))
        #expect(GRPC.parseTimeout("2M") == .minutes(2))
        #expect(GRPC.parseTimeout("30S") == .seconds(30))
        #expect(GRPC.parseTimeout("250m") == .milliseconds(250))
        #expect(GRPC.parseTimeout("99999999u") == .microseconds(99_999_999))
        #expect(GRPC.parseTimeout("5n") == .nanoseconds(5))
        #expect(GRPC.parseTimeout("0m") == .nanoseconds(0))
        #expect(GRPC.parseTimeout("00000001S") == .seconds(1))
        // More than 8 digits, no digits, no or an unknown unit, signs, spaces: no deadline from it.
        for bad in ["123456789m", "m", "", "10", "10s", "10h", "10x", "-1S", "+1S", " 1S", "1S ", "1.5S", "1 S", "１S"] {
            #expect(GRPC.parseTimeout(bad) == nil, "\(bad)")
        }
        // 99999999 hours does not fit in nanoseconds: no deadline rather than a wrapped one.
        #expect(GRPC.parseTimeout("99999999H") == nil)
        #expect(GRPC.parseTimeout("99999999M") == .minutes(99_999_999))
    }

    @Test func aRequestsDeadlineIsItsOneWellFormedTimeout() {
        #expect(GRPC.timeout(HTTPHeaders([("grpc-timeout", "100m")])) == .milliseconds(100))
        #expect(GRPC.timeout(HTTPHeaders([("Grpc-Timeout", "3S")])) == .seconds(3))
        #expect(GRPC.timeout(HTTPHeaders([("grpc-timeout", "100m"), ("grpc-timeout", "1m")])) == nil)
        #expect(GRPC.timeout(HTTPHeaders([("grpc-timeout", "soon")])) == nil)
        #expect(GRPC.timeout(HTTPHeaders()) == nil)
    }

    @Test func refusalStatuses() {
        #expect(GRPC.status(for: .tokenMissing) == .unauthenticated)
        #expect(GRPC.status(for: .invalidToken(.init(.signatureInvalid))) == .unauthenticated)
        #expect(GRPC.status(for: .invalidToken(.init(.tokenExpired))) == .unauthenticated)
        #expect(GRPC.status(for: .invalidAuthorization) == .unauthenticated)
        #expect(GRPC.status(for: .insufficientScope(["admin"])) == .permissionDenied)
        #expect(GRPC.status(for: .upstreamUnavailable) == .unavailable)
        #expect(GRPC.status(for: .upstreamInvalidResponse) == .unavailable)
        #expect(GRPC.status(for: .upstreamNotHTTP2) == .unavailable)
        #expect(GRPC.status(for: .upstreamTimeout) == .deadlineExceeded)
        #expect(GRPC.status(for: .deadlineExceeded) == .deadlineExceeded)
        #expect(GRPC.status(for: .routeNotFound) == .unimplemented)
        #expect(GRPC.status(for: .methodNotAllowed) == .unimplemented)
        #expect(GRPC.status(for: .bodyTooLarge) == .resourceExhausted)
        #expect(GRPC.status(for: .headerTooLarge) == .resourceExhausted)
        #expect(GRPC.status(for: .requestMalformed) == .internal)
        #expect(GRPC.status(for: .invalidPath) == .internal)
    }

    @Test func messagesArePercentEncoded() {
        #expect(GRPC.encodeMessage("token_missing") == "token_missing")
        #expect(GRPC.encodeMessage("a b~!") == "a b~!")
        #expect(GRPC.encodeMessage("100%") == "100%25")
        #expect(GRPC.encodeMessage("line\r\nnext\t") == "line%0D%0Anext%09")
        #expect(GRPC.encodeMessage("caf\u{E9} \u{1F600}") == "caf%C3%A9 %F0%9F%98%80")
        #expect(GRPC.encodeMessage("\u{7F}") == "%7F")
    }

    @Test func trailersCarryStatusAndMessage() {
        let trailers = GRPC.trailers(GRPC.status(for: .tokenMissing), message: GatewayError.tokenMissing.reason)
        #expect(Array(trailers.map { "\($0.name): \($0.value)" }) == ["grpc-status: 16", "grpc-message: token_missing"])
    }
}
