import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import CurlNIO

@Suite(.serialized) struct CurlDriverIntegrationTests {
    func request(
        _ server: TestServer, _ target: String, method: String = "GET", headers: [CurlHeader] = [],
        body: CurlRequestBody = .none
    ) -> CurlRequest {
        CurlRequest(
            origin: server.origin, requestTarget: target, method: method, headers: headers, body: body,
            unixSocketPath: server.unixPath, connectTimeout: .seconds(2), responseTimeout: .seconds(10),
            idleTimeout: .seconds(10))
    }

    @Test(arguments: [false, true]) func getSmallBody(unixSocket: Bool) async throws {
        try await withFixture(unixSocket: unixSocket) { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/hello?x=1"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.head?.status == 200)
            #expect(delegate.headCount == 1)
            #expect(delegate.header("x-method") == "GET")
            #expect(delegate.header("x-target") == "/hello?x=1")
            #expect(delegate.bodyString.lowercased().contains("host: "))
            #expect(delegate.received == Int(delegate.header("content-length") ?? "-1"))
            #expect(delegate.batches >= 1)
            #expect(!delegate.bodyBeforeHead)
            #expect(delegate.completions == 1)
        }
    }

    @Test func requestTargetPassesVerbatim() async throws {
        try await withFixture { fixture, server in
            for target in ["/a/../b//c?x=%2F", "/./%2e%2E/x;y?a=b&c=%20#frag", "/%7Euser/"] {
                let delegate = RecordingDelegate(eventLoop: fixture.loop)
                let result = try await fixture.run(self.request(server, target), delegate: delegate)
                #expect(result.isSuccess)
                #expect(delegate.header("x-target") == target)
            }
        }
    }

    @Test func headersInOrderAndNothingInvented() async throws {
        try await withFixture { fixture, server in
            let headers: [CurlHeader] = [
                .init(name: "X-A", value: "1"), .init(name: "X-B", value: "two words"),
                .init(name: "X-A", value: "3"), .init(name: "X-Empty", value: ""),
            ]
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            // > 1 MiB: curl 7.88 would add "Expect: 100-continue" from 1 MiB on unless suppressed.
            delegate.uploadTotal = 2_000_000
            let result = try await fixture.run(
                self.request(server, "/echo", method: "POST", headers: headers, body: .length(2_000_000)),
                delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            let lines = delegate.bodyString.split(separator: "\n").map(String.init)
            let names = lines.map { $0.split(separator: ":").first.map { $0.lowercased() } ?? "" }
            #expect(lines.filter { $0.hasPrefix("X-") } == ["X-A: 1", "X-B: two words", "X-A: 3", "X-Empty: "])
            #expect(!names.contains("expect"))
            #expect(!names.contains("accept"))
            #expect(!names.contains("transfer-encoding"))
            #expect(!names.contains { $0.hasPrefix("proxy") })
            #expect(!names.contains("user-agent"))
            #expect(names.contains("host"))
            #expect(lines.contains("Content-Length: 2000000"))
            #expect(delegate.header("x-method") == "POST")
            #expect(delegate.header("x-body-count") == "2000000")
            #expect(delegate.header("x-body-ok") == "1")

            // A caller-supplied Accept passes through once; a caller Host replaces curl's.
            let second = RecordingDelegate(eventLoop: fixture.loop)
            let r2 = try await fixture.run(
                self.request(
                    server, "/echo",
                    headers: [.init(name: "Accept", value: "text/plain"), .init(name: "Host", value: "example.test")]),
                delegate: second)
            #expect(r2.isSuccess)
            let lines2 = second.bodyString.split(separator: "\n").map(String.init)
            #expect(lines2.filter { $0.lowercased().hasPrefix("accept:") } == ["Accept: text/plain"])
            #expect(lines2.filter { $0.lowercased().hasPrefix("host:") } == ["Host: example.test"])
        }
    }

    @Test func invalidHeaderIsRefusedWithoutSending() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(
                self.request(server, "/echo", headers: [.init(name: "X-Bad", value: "a\r\nInjected: 1")]),
                delegate: delegate)
            #expect(result.errorCode == .protocolError)
            #expect(server.acceptedConnections.current == 0)
        }
    }

    @Test func invalidMethodOrTargetIsRefused() async throws {
        try await withFixture { fixture, server in
            for (method, target) in [("GET /x HTTP/1.1\r\nX:", "/"), ("", "/"), ("GET", "/a b"), ("GET", "/a\nb"), ("GET", "")] {
                let delegate = RecordingDelegate(eventLoop: fixture.loop)
                let result = try await fixture.run(self.request(server, target, method: method), delegate: delegate)
                #expect(result.errorCode == .protocolError)
            }
            #expect(server.acceptedConnections.current == 0)
        }
    }

    @Test func environmentProxyIsIgnored() async throws {
        try await withFixture { fixture, server in
            let names = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            for name in names { setenv(name, "http://127.0.0.1:9", 1) }
            defer { for name in names { unsetenv(name) } }
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/via-proxy?"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.header("x-target") == "/via-proxy?")
            #expect(!delegate.bodyString.lowercased().contains("proxy"))
        }
    }

    @Test func openSSLAtexitIsDisabled() {
        CurlGlobal.initialize()
        #expect(CurlGlobal.didDisableOpenSSLAtexit)
    }

    @Test func methodsWithoutBody() async throws {
        try await withFixture { fixture, server in
            for method in ["DELETE", "OPTIONS", "PATCH"] {
                let delegate = RecordingDelegate(eventLoop: fixture.loop)
                let result = try await fixture.run(self.request(server, "/m", method: method), delegate: delegate)
                #expect(result.isSuccess)
                #expect(delegate.header("x-method") == method)
                #expect(delegate.header("x-body-count") == "0")
            }
        }
    }

    @Test func postContentLengthStreamedWithPauses() async throws {
        try await withFixture { fixture, server in
            let size = 6 * 1024 * 1024 + 17
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.uploadTotal = size
            delegate.uploadMaxChunk = 40_000
            delegate.uploadPauseEvery = 4
            let result = try await fixture.run(
                self.request(server, "/upload", method: "POST", body: .length(Int64(size))), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.uploadPauses > 10)
            #expect(delegate.header("x-body-count") == String(size))
            #expect(delegate.header("x-body-ok") == "1")
        }
    }

    @Test func putUsesPlainUpload() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.uploadTotal = 1000
            let result = try await fixture.run(
                self.request(server, "/put", method: "PUT", body: .length(1000)), delegate: delegate)
            #expect(result.isSuccess)
            #expect(delegate.header("x-method") == "PUT")
            #expect(delegate.header("x-body-count") == "1000")
        }
    }

    @Test func chunkedUpload() async throws {
        try await withFixture { fixture, server in
            let size = 1024 * 1024 + 3
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.uploadTotal = size
            delegate.uploadMaxChunk = 10_000
            delegate.uploadPauseEvery = 3
            let result = try await fixture.run(
                self.request(server, "/chunked", method: "POST", body: .chunked), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            let lines = delegate.bodyString.split(separator: "\n").map(String.init)
            #expect(lines.contains("Transfer-Encoding: chunked"))
            #expect(!lines.contains { $0.lowercased().hasPrefix("content-length") })
            #expect(delegate.header("x-body-count") == String(size))
            #expect(delegate.header("x-body-ok") == "1")
        }
    }

    @Test(arguments: [false, true]) func largeDownloadWithPauses(unixSocket: Bool) async throws {
        try await withFixture(unixSocket: unixSocket) { fixture, server in
            let size = 64 * 1024 * 1024
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.keepBody = false
            delegate.verifyPattern = true
            delegate.pauseEvery = 3
            let result = try await fixture.run(self.request(server, "/bytes/\(size)"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.received == size)
            #expect(delegate.patternOK)
            #expect(delegate.pauses > 10)
            #expect(delegate.completions == 1)
        }
    }

    @Test func headRequestHasNoBody() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/head", method: "HEAD"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.head?.status == 200)
            #expect(delegate.header("content-length") == "1234")
            #expect(delegate.received == 0)
            // and the connection is still usable afterwards
            let next = RecordingDelegate(eventLoop: fixture.loop)
            #expect(try await fixture.run(self.request(server, "/head"), delegate: next).isSuccess)
            #expect(next.received == 1234)
        }
    }

    @Test(arguments: [204, 304]) func bodylessStatuses(status: Int) async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/status/\(status)"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.head?.status == status)
            #expect(delegate.received == 0)
        }
    }

    @Test func connectionRefused() async throws {
        // Find a port nobody listens on: bind, note, close.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        try await group.shutdownGracefully()

        let fixture = try CurlFixture()
        let delegate = RecordingDelegate(eventLoop: fixture.loop)
        let result = try await fixture.run(
            CurlRequest(origin: "http://127.0.0.1:\(port)", requestTarget: "/", method: "GET"), delegate: delegate)
        #expect(result.errorCode == .couldNotConnect, "\(result)")
        if case .failure(let error) = result { #expect(!error.receivedHead) }
        // missing unix socket too
        let unix = RecordingDelegate(eventLoop: fixture.loop)
        let r2 = try await fixture.run(
            CurlRequest(
                origin: "http://localhost", requestTarget: "/", method: "GET",
                unixSocketPath: "/nonexistent-\(port)/s.sock"), delegate: unix)
        #expect(r2.errorCode == .couldNotConnect, "\(r2)")
        try await fixture.stop()
    }

    @Test func connectTimeoutIsCouldNotConnect() async throws {
        let fixture = try CurlFixture()
        let delegate = RecordingDelegate(eventLoop: fixture.loop)
        // TEST-NET-1 is never routed: either the connect times out or the network is unreachable.
        let request = CurlRequest(
            origin: "http://192.0.2.1:81", requestTarget: "/", method: "GET", connectTimeout: .milliseconds(200),
            responseTimeout: .seconds(20), idleTimeout: .seconds(20))
        let start = ContinuousClock.now
        let result = try await fixture.run(request, delegate: delegate)
        #expect(result.errorCode == .couldNotConnect, "\(result)")
        #expect(ContinuousClock.now - start < .seconds(5))
        try await fixture.stop()
    }

    @Test func trailersAreIgnored() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/trailers"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.bodyString == "abc")
            #expect(delegate.headCount == 1)
            #expect(delegate.header("x-checksum") == nil)
        }
    }

    @Test func informationalHeadIsSwallowed() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/early-hints"), delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.headCount == 1)
            #expect(delegate.head?.status == 201)
            #expect(delegate.header("x-final") == "yes")
            #expect(delegate.header("link") == nil)
            #expect(delegate.bodyString == "done")
        }
    }

    @Test func cancelFromFillAndFromBatch() async throws {
        try await withFixture { fixture, server in
            let uploading = RecordingDelegate(eventLoop: fixture.loop)
            uploading.uploadTotal = 5_000_000
            uploading.onFill = { d in if d.uploaded > 1_000_000 { d.transfer?.cancel() } }
            let r1 = try await fixture.run(
                self.request(server, "/upload", method: "POST", body: .length(5_000_000)), delegate: uploading)
            #expect(r1.errorCode == .cancelled, "\(r1)")
            #expect(uploading.eventsAfterCompletion == 0)

            let batching = RecordingDelegate(eventLoop: fixture.loop)
            batching.keepBody = false
            batching.onBatch = { d in if d.received > 0 { d.transfer?.cancel() } }
            let r2 = try await fixture.run(self.request(server, "/bytes/50000000"), delegate: batching)
            #expect(r2.errorCode == .cancelled, "\(r2)")
            #expect(batching.completions == 1)
            #expect(batching.eventsAfterCompletion == 0)

            let after = RecordingDelegate(eventLoop: fixture.loop)
            #expect(try await fixture.run(self.request(server, "/ok"), delegate: after).isSuccess)
        }
    }

    @Test func responseTimeout() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/stall-head")
            request.responseTimeout = .milliseconds(300)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let start = ContinuousClock.now
            let result = try await fixture.run(request, delegate: delegate)
            let elapsed = ContinuousClock.now - start
            #expect(result.errorCode == .responseTimeout, "\(result)")
            #expect(elapsed >= .milliseconds(250))
            #expect(elapsed < .seconds(5))
            if case .failure(let error) = result { #expect(!error.receivedHead) }
        }
    }

    /// The response timeout starts when the body has been handed over: a slow (paused) upload is not cut by it.
    @Test func responseTimeoutStartsAfterUpload() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/stall-head", method: "POST", body: .length(100_000))
            request.responseTimeout = .milliseconds(300)
            request.idleTimeout = .seconds(5)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.uploadTotal = 100_000
            delegate.uploadMaxChunk = 20_000
            delegate.uploadPauseEvery = 2
            delegate.uploadResumeDelay = .milliseconds(150)
            let start = ContinuousClock.now
            let result = try await fixture.run(request, delegate: delegate)
            let elapsed = ContinuousClock.now - start
            #expect(result.errorCode == .responseTimeout, "\(result)")
            #expect(delegate.uploaded == 100_000)
            #expect(delegate.uploadPauses >= 4)
            // ≥ 4 pauses × 150 ms of upload, then 300 ms waiting for the head
            #expect(elapsed >= .milliseconds(850))
            #expect(elapsed < .seconds(8))
        }
    }

    @Test func idleTimeoutAfterHead() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/stall-body")
            request.idleTimeout = .milliseconds(300)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let start = ContinuousClock.now
            let result = try await fixture.run(request, delegate: delegate)
            let elapsed = ContinuousClock.now - start
            #expect(result.errorCode == .idleTimeout, "\(result)")
            #expect(elapsed >= .milliseconds(250))
            #expect(elapsed < .seconds(5))
            #expect(delegate.received == 10)
            if case .failure(let error) = result { #expect(error.receivedHead) }
        }
    }

    @Test func streamingLongerThanIdleTimeoutIsNotCut() async throws {
        try await withFixture { fixture, server in
            // The whole transfer takes longer than the idle timeout because we pause, but it never goes silent
            // while unpaused.
            var request = self.request(server, "/bytes/\(8 * 1024 * 1024)")
            request.idleTimeout = .milliseconds(200)
            request.responseTimeout = .milliseconds(2000)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.keepBody = false
            delegate.verifyPattern = true
            delegate.onBody = { d in
                // a slow consumer: block the loop a little now and then (we are "paused" from curl's view only
                // between deliveries, so this keeps bytes flowing)
                if d.received % (1024 * 1024) < 65536 { usleep(50_000) }
            }
            let result = try await fixture.run(request, delegate: delegate)
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.patternOK)
        }
    }

    @Test func pausedTransferIsNotIdle() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/bytes/1000000")
            request.idleTimeout = .milliseconds(150)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.keepBody = false
            let loop = delegate.eventLoop
            let curl = fixture.curl
            let frozen = request
            try await loop.submit {
                let holder = PauseOnceDelegate(inner: delegate, holdFor: .milliseconds(600))
                delegate.transfer = curl.driver(for: loop).start(frozen, delegate: holder)
            }.get()
            let result = try await delegate.done.futureResult.get()
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.received == 1_000_000)
        }
    }

    /// curl#6356: a receive-paused HTTP/1.1 transfer must not make the driver spin on its readable socket.
    @Test func pausedDownloadDoesNotSpin() async throws {
        try await withFixture { fixture, server in
            let request = self.request(server, "/bytes/\(4 * 1024 * 1024)")
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.keepBody = false
            delegate.verifyPattern = true
            let holder = PauseOnceDelegate(inner: delegate, holdFor: .milliseconds(700))
            let loop = delegate.eventLoop
            let curl = fixture.curl
            try await loop.submit {
                delegate.transfer = curl.driver(for: loop).start(request, delegate: holder)
            }.get()
            while try await !loop.submit({ holder.paused }).get() {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: .milliseconds(50))
            let before = try await loop.submit { curl.driver(for: loop).curlActionCount }.get()
            try await Task.sleep(for: .milliseconds(400))
            let after = try await loop.submit { curl.driver(for: loop).curlActionCount }.get()
            #expect(after - before < 20, "socket_action ran \(after - before) times while paused")
            let result = try await delegate.done.futureResult.get()
            #expect(result.isSuccess, "\(result)")
            #expect(delegate.received == 4 * 1024 * 1024)
            #expect(delegate.patternOK)
        }
    }

    @Test func waitingForHeadDoesNotSpin() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/stall-head")
            request.responseTimeout = .milliseconds(600)
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let loop = delegate.eventLoop
            let curl = fixture.curl
            let frozen = request
            try await loop.submit {
                delegate.transfer = curl.driver(for: loop).start(frozen, delegate: delegate)
            }.get()
            try await Task.sleep(for: .milliseconds(100))
            let before = try await loop.submit { curl.driver(for: loop).curlActionCount }.get()
            try await Task.sleep(for: .milliseconds(300))
            let after = try await loop.submit { curl.driver(for: loop).curlActionCount }.get()
            #expect(after - before < 20, "socket_action ran \(after - before) times while waiting")
            #expect(try await delegate.done.futureResult.get().errorCode == .responseTimeout)
        }
    }

    @Test func upstreamClosesMidBody() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(self.request(server, "/close-body"), delegate: delegate)
            #expect(result.errorCode == .connectionReset, "\(result)")
            if case .failure(let error) = result { #expect(error.receivedHead) }
            let second = RecordingDelegate(eventLoop: fixture.loop)
            let r2 = try await fixture.run(self.request(server, "/close-head"), delegate: second)
            #expect(r2.errorCode == .connectionReset, "\(r2)")
            if case .failure(let error) = r2 { #expect(!error.receivedHead) }
        }
    }

    @Test func cancelMidDownloadThenDriverStillWorks() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.keepBody = false
            delegate.onBody = { d in
                if d.received >= 1024 * 1024 {
                    d.transfer?.cancel()
                    d.transfer?.cancel()  // idempotent
                }
            }
            let result = try await fixture.run(self.request(server, "/bytes/\(1024 * 1024 * 1024)"), delegate: delegate)
            #expect(result.errorCode == .cancelled, "\(result)")
            #expect(delegate.completions == 1)
            #expect(delegate.eventsAfterCompletion == 0)
            #expect(delegate.received < 8 * 1024 * 1024)

            // cancel from outside any callback, while the transfer waits for its head
            let stalled = RecordingDelegate(eventLoop: fixture.loop)
            let loop = stalled.eventLoop
            let curl = fixture.curl
            let request = self.request(server, "/stall-head")
            try await loop.submit {
                stalled.transfer = curl.driver(for: loop).start(request, delegate: stalled)
            }.get()
            try await Task.sleep(for: .milliseconds(50))
            try await loop.submit { stalled.transfer?.cancel() }.get()
            #expect(try await stalled.done.futureResult.get().errorCode == .cancelled)

            // cancel immediately after start (before curl saw it)
            let early = RecordingDelegate(eventLoop: fixture.loop)
            try await loop.submit {
                early.transfer = curl.driver(for: loop).start(request, delegate: early)
                early.transfer?.cancel()
            }.get()
            #expect(try await early.done.futureResult.get().errorCode == .cancelled)

            let next = RecordingDelegate(eventLoop: fixture.loop)
            let r2 = try await fixture.run(self.request(server, "/bytes/100000"), delegate: next)
            #expect(r2.isSuccess, "\(r2)")
            #expect(next.received == 100_000)
            let count = try await loop.submit { curl.driver(for: loop).activeTransferCount }.get()
            #expect(count == 0)
        }
    }

    @Test func cancelFromHeadCallback() async throws {
        try await withFixture { fixture, server in
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            delegate.onHead = { d in d.transfer?.cancel() }
            let result = try await fixture.run(self.request(server, "/bytes/5000000"), delegate: delegate)
            #expect(result.errorCode == .cancelled)
            #expect(delegate.received == 0)
            #expect(delegate.completions == 1)
        }
    }

    @Test(arguments: [false, true]) func keepAliveReusesOneConnection(unixSocket: Bool) async throws {
        try await withFixture(unixSocket: unixSocket) { fixture, server in
            let loop = fixture.loop
            for i in 0..<50 {
                let delegate = RecordingDelegate(eventLoop: loop)
                let result = try await fixture.run(self.request(server, "/k/\(i)"), delegate: delegate)
                #expect(result.isSuccess)
                #expect(delegate.header("x-target") == "/k/\(i)")
            }
            #expect(server.acceptedConnections.current == 1)
        }
    }

    /// The server drops idle keep-alive connections; curl must notice and reconnect (the new socket often gets
    /// the old fd number, which exercises the generation tags).
    @Test func serverClosedKeepAliveConnectionIsReplaced() async throws {
        try await withFixture { fixture, server in
            for i in 0..<6 {
                let delegate = RecordingDelegate(eventLoop: fixture.loop)
                let post = i % 2 == 1
                delegate.uploadTotal = post ? 50_000 : 0
                let request = self.request(
                    server, "/then-close/\(i)", method: post ? "POST" : "GET", body: post ? .length(50_000) : .none)
                let result = try await fixture.run(request, delegate: delegate)
                #expect(result.isSuccess, "\(i): \(result)")
                #expect(delegate.bodyString == "ok")
                #expect(delegate.header("x-body-count") == (post ? "50000" : "0"))
                try await Task.sleep(for: .milliseconds(80))
            }
            #expect(server.acceptedConnections.current == 6)
        }
    }

    @Test func shutdownCancelsInFlightTransfers() async throws {
        let server = try await TestServer.start()
        let fixture = try CurlFixture()
        let loop = fixture.loop
        let curl = fixture.curl
        let delegates = (0..<3).map { _ in RecordingDelegate(eventLoop: loop) }
        let request = self.request(server, "/stall-head")
        try await loop.submit {
            for d in delegates { d.transfer = curl.driver(for: loop).start(request, delegate: d) }
        }.get()
        try await Task.sleep(for: .milliseconds(50))
        await curl.shutdown()
        for d in delegates {
            #expect(try await d.done.futureResult.get().errorCode == .cancelled)
        }
        // starting after shutdown fails cleanly
        let late = RecordingDelegate(eventLoop: loop)
        try await loop.submit { late.transfer = curl.driver(for: loop).start(request, delegate: late) }.get()
        #expect(try await late.done.futureResult.get().errorCode == .cancelled)
        try await fixture.group.shutdownGracefully()
        try await server.stop()
    }
}

/// Wraps a delegate and pauses the first body delivery for `holdFor` before resuming.
final class PauseOnceDelegate: CurlTransferDelegate, @unchecked Sendable {
    let inner: RecordingDelegate
    let holdFor: TimeAmount
    var paused = false

    init(inner: RecordingDelegate, holdFor: TimeAmount) {
        self.inner = inner
        self.holdFor = holdFor
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead) {
        self.inner.curlTransfer(transfer, didReceiveHead: head)
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        if !self.paused {
            self.paused = true
            transfer.eventLoop.assumeIsolated().scheduleTask(in: self.holdFor) { transfer.resumeReceiving() }
            return .pause
        }
        return self.inner.curlTransfer(transfer, didReceiveBodyBytes: bytes)
    }

    func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        self.inner.curlTransfer(transfer, fillRequestBody: buffer)
    }

    func curlTransferDidFinishBatch(_ transfer: CurlTransfer) {
        self.inner.curlTransferDidFinishBatch(transfer)
    }

    func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        self.inner.curlTransfer(transfer, didCompleteWith: result)
    }
}
