import Testing
@testable import GatewayProxy

@Suite struct ProxyRequestStateMachineTests {
    @Test func forwardedRequestWithKeepAlive() {
        var m = ProxyRequestStateMachine()
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .startTransfer)
        #expect(m.requestEnd() == .finishUpload)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.upstreamHead() == .none)  // only once
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: false))
        #expect(m.isIdle)
    }

    @Test func rejectionWithoutBodyKeepsTheConnection() {
        var m = ProxyRequestStateMachine()
        #expect(m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: false) == .respond(.tokenMissing, close: false))
        #expect(m.requestBodyPart() == .none)
        #expect(m.requestEnd() == .readyForNextRequest)
        #expect(m.isIdle)
    }

    @Test func rejectionWithBodyClosesAndDropsTheBody() {  // L-body-unauth, M-expect
        var m = ProxyRequestStateMachine()
        #expect(m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: true) == .respond(.tokenMissing, close: true))
        #expect(m.requestBodyPart() == .none)
        #expect(m.requestEnd() == .none)
    }

    @Test func framingErrorsAlwaysClose() {
        var m = ProxyRequestStateMachine()
        #expect(m.requestHead(rejection: .requestMalformed, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }

    @Test func connectionCloseRequest() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: false, hasBody: false)
        _ = m.requestEnd()
        #expect(m.upstreamHead() == .writeResponseHead(close: true))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: true))
    }

    @Test func earlyUpstreamAnswerClosesBecauseTheBodyIsUnread() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyPart() == .forwardBody)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: true))
    }

    @Test func upstreamFailureBeforeHeadAnswersItself() {  // U-down, U-timeout
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.requestEnd()
        #expect(m.upstreamFailed(.upstreamUnavailable) == .respond(.upstreamUnavailable, close: false))
        #expect(m.isIdle)
    }

    @Test func upstreamFailureAfterHeadAbortsTheConnection() {  // U-reset-mid-body
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.requestEnd()
        _ = m.upstreamHead()
        #expect(m.upstreamFailed(.upstreamUnavailable) == .abortConnection)
    }

    @Test func clientGoneCancelsTheTransfer() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.clientClosed() == .cancelTransfer)
        #expect(m.upstreamCompleted() == .none)
        #expect(m.upstreamHead() == .none)
    }

    @Test func bodyTooLargeWhileStreaming() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyTooLarge() == .respond(.bodyTooLarge, close: true))
        var n = ProxyRequestStateMachine()
        _ = n.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        _ = n.upstreamHead()
        #expect(n.requestBodyTooLarge() == .abortConnection)
    }

    @Test func headWhileBusyIsRefused() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }
}
