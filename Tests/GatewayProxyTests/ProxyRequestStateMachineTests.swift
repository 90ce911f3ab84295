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

    @Test func malformedBodyBeforeTheResponseIsAnsweredAndCloses() {  // issue 10: bad chunk line mid-upload
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyPart() == .forwardBody)
        #expect(m.requestMalformed(.requestMalformed) == .respond(.requestMalformed, close: true))
        // Nothing more happens: the cancelled transfer's late events are ignored.
        #expect(m.upstreamHead() == .none)
        #expect(m.upstreamCompleted() == .none)
        #expect(m.requestEnd() == .none)
    }

    @Test func malformedBodyAfterTheResponseHeadAborts() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        _ = m.upstreamHead()
        #expect(m.requestMalformed(.requestMalformed) == .abortConnection)
    }

    @Test func malformedRequestBetweenRequestsIsAnswered() {
        var m = ProxyRequestStateMachine()
        #expect(m.requestMalformed(.headerTooLarge) == .respond(.headerTooLarge, close: true))
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }

    @Test func malformedBodyAfterALocalAnswerOnlyCloses() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: true)
        #expect(m.requestMalformed(.requestMalformed) == .none)  // answered already: the handler just closes
    }

    @Test func headWhileBusyIsRefused() {
        var m = ProxyRequestStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }
}
