import CurlNIO
import NIOCore
import Testing

/// `CurlLoopDriver.fetch`: one buffered exchange with bounds on size and time (control-plane fetches).
@Suite(.serialized) struct CurlFetchTests {
    func fetch(
        _ fixture: CurlFixture, _ server: TestServer, _ target: String, method: String = "GET", body: [UInt8]? = nil,
        max: Int = 1 << 20, timeout: TimeAmount? = .seconds(10)
    ) async -> Result<CurlFetchResponse, CurlFetchError> {
        await fetch(
            fixture, origin: server.origin, unixPath: server.unixPath, target, method: method, body: body, max: max, timeout: timeout)
    }

    func fetch(
        _ fixture: CurlFixture, origin: String, unixPath: String? = nil, _ target: String, method: String = "GET",
        body: [UInt8]? = nil, max: Int = 1 << 20, timeout: TimeAmount? = .seconds(10)
    ) async -> Result<CurlFetchResponse, CurlFetchError> {
        let loop = fixture.loop
        let curl = fixture.curl
        let request = CurlRequest(
            origin: origin, requestTarget: target, method: method, headers: [CurlHeader(name: "X-Test", value: "1")],
            unixSocketPath: unixPath, connectTimeout: .seconds(2), responseTimeout: .seconds(30), idleTimeout: .seconds(30))
        do {
            return .success(
                try await loop.flatSubmit {
                    curl.driver(for: loop).fetch(request, requestBody: body, maxResponseBytes: max, timeout: timeout)
                }.get())
        } catch let error as CurlFetchError {
            return .failure(error)
        } catch {
            Issue.record("unexpected error \(error)")
            return .failure(CurlFetchError(code: .transfer(.other), message: "\(error)"))
        }
    }

    @Test func bufferedResponseWithHeaders() async throws {
        try await withFixture { fixture, server in
            let response = try await fetch(fixture, server, "/echo?a=b").get()
            #expect(response.status == 200)
            #expect(response.header("X-METHOD") == "GET")
            #expect(response.header("x-target") == "/echo?a=b")
            #expect(response.headers("x-method") == ["GET"])
            #expect(String(decoding: response.body, as: UTF8.self).contains("X-Test: 1"))
            #expect(response.body.count == Int(response.header("content-length") ?? ""))
        }
    }

    @Test func largeBodyWithinTheBound() async throws {
        try await withFixture { fixture, server in
            let response = try await fetch(fixture, server, "/bytes/300000", max: 300_000).get()
            #expect(response.body.count == 300_000)
            #expect(response.body.withUnsafeBytes { Pattern.matches($0, at: 0) })
        }
    }

    @Test func requestBodyIsSent() async throws {
        try await withFixture { fixture, server in
            let body = (0..<70_000).map { UInt8($0 % 251) }
            let response = try await fetch(fixture, server, "/echo", method: "POST", body: body).get()
            #expect(response.header("x-method") == "POST")
            #expect(response.header("x-body-count") == "70000")
            #expect(response.header("x-body-ok") == "1")
            let empty = try await fetch(fixture, server, "/echo", method: "POST", body: []).get()
            #expect(empty.header("x-body-count") == "0")
            #expect(String(decoding: empty.body, as: UTF8.self).lowercased().contains("content-length: 0"))
        }
    }

    @Test func announcedOrStreamedBodiesOverTheBoundAreRefused() async throws {  // W-jwks-huge
        try await withFixture { fixture, server in
            #expect(await fetch(fixture, server, "/bytes/300001", max: 300_000).error?.code == .responseTooLarge)
            // Chunked: no Content-Length, the count decides.
            #expect(await fetch(fixture, server, "/trailers", max: 2).error?.code == .responseTooLarge)
            let chunked = try await fetch(fixture, server, "/trailers", max: 3).get()
            #expect(chunked.body == Array("abc".utf8))
        }
    }

    @Test func theWholeExchangeIsTimeBounded() async throws {  // W-jwks-slow
        try await withFixture { fixture, server in
            let start = NIODeadline.now()
            #expect(await fetch(fixture, server, "/stall-head", timeout: .milliseconds(200)).error?.code == .timeout)
            // A body that starts but never finishes is cut too.
            #expect(await fetch(fixture, server, "/stall-body", timeout: .milliseconds(200)).error?.code == .timeout)
            #expect(NIODeadline.now() - start < .seconds(5))
            // Within the bound, a slow answer is fine.
            let slow = try await fetch(fixture, server, "/delay/50", timeout: .seconds(5)).get()
            #expect(slow.body == Array("hello".utf8))
        }
    }

    @Test func transportFailuresAndStatuses() async throws {
        try await withFixture { fixture, server in
            let missing = try await fetch(fixture, server, "/status/404").get()
            #expect(missing.status == 404)
            #expect(await fetch(fixture, server, "/close-head").error?.code == .transfer(.connectionReset))
        }
        let fixture = try CurlFixture()
        let closed = try await TestServer.start()
        let origin = closed.origin
        try await closed.stop()
        #expect(await fetch(fixture, origin: origin, "/x").error?.code == .transfer(.couldNotConnect))
        try await fixture.stop()
    }
}

extension Result where Failure == CurlFetchError {
    fileprivate var error: CurlFetchError? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
