import CurlNIO
import GatewayJSON
import NIOCore
import NIOHTTP1
import Testing

@testable import GatewayProxy

@Suite struct GatewayErrorTests {
    @Test func challenges() {
        #expect(GatewayError.tokenMissing.wwwAuthenticate(realm: "api") == #"Bearer realm="api""#)
        #expect(
            GatewayError.invalidAuthorization.wwwAuthenticate(realm: "api")?.hasPrefix(#"Bearer realm="api", error="invalid_request""#)
                == true)
        #expect(
            GatewayError.insufficientScope(["admin", "write"]).wwwAuthenticate(realm: "api")
                == #"Bearer realm="api", error="insufficient_scope", scope="admin write""#)
        #expect(GatewayError.routeNotFound.wwwAuthenticate(realm: "api") == nil)
    }

    @Test func bodyIsJSONWithStableReason() throws {
        let body = GatewayError.upstreamTimeout.body(requestID: "r\"1")
        let value = try JSONParser.parse(body)
        #expect(value["reason"] == .string("upstream_timeout"))
        #expect(value["error"] == .string("gateway_timeout"))
        #expect(value["request_id"] == .string("r\"1"))
        #expect(value["message"]?.stringValue?.isEmpty == false)
    }

    @Test func statuses() {
        #expect(GatewayError.tokenMissing.status.code == 401)
        #expect(GatewayError.invalidAuthorization.status.code == 400)
        #expect(GatewayError.insufficientScope([]).status.code == 403)
        #expect(GatewayError.routeNotFound.status.code == 404)
        #expect(GatewayError.requestTimeout.status.code == 408)
        #expect(GatewayError.bodyTooLarge.status.code == 413)
        #expect(GatewayError.headerTooLarge.status.code == 431)
        #expect(GatewayError.upstreamUnavailable.status.code == 502)
        #expect(GatewayError.upstreamTimeout.status.code == 504)
    }

    @Test func uploadBufferFillsAcrossParts() {
        var upload = UploadBuffer()
        upload.append(ByteBuffer(bytes: [1, 2, 3]))
        upload.append(ByteBuffer(bytes: [4, 5]))
        var target = [UInt8](repeating: 0, count: 4)
        let first = target.withUnsafeMutableBytes { upload.fill($0) }
        #expect(first == .bytes(4))
        #expect(target == [1, 2, 3, 4])
        #expect(upload.bufferedBytes == 1)
        let second = target.withUnsafeMutableBytes { upload.fill($0) }
        #expect(second == .bytes(1))
        #expect(target[0] == 5)
        let third = target.withUnsafeMutableBytes { upload.fill($0) }
        #expect(third == .pause)
        #expect(upload.curlWaiting)
        upload.finished = true
        let fourth = target.withUnsafeMutableBytes { upload.fill($0) }
        #expect(fourth == .end)
    }
}
