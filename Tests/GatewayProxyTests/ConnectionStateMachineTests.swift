import CurlNIO
import NIOCore
import NIOHTTP1
import Testing

@testable import GatewayProxy

@Suite struct ConnectionStateMachineTests {
    @Test func forwardedRequestWithKeepAlive() {
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .startTransfer)
        #expect(m.requestEnd() == .finishUpload)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.upstreamHead() == .none)  // only once
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: false))
        #expect(m.isIdle)
    }

    @Test func rejectionWithoutBodyKeepsTheConnection() {
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: false) == .respond(.tokenMissing, close: false))
        #expect(m.requestBodyPart(ByteBuffer()) == .none)
        #expect(m.requestEnd() == .readyForNextRequest)
        #expect(m.isIdle)
    }

    @Test func rejectionWithBodyClosesAndDropsTheBody() {  // L-body-unauth, M-expect
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: true) == .respond(.tokenMissing, close: true))
        #expect(m.requestBodyPart(ByteBuffer()) == .none)
        #expect(m.requestEnd() == .none)
    }

    @Test func framingErrorsAlwaysClose() {
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: .requestMalformed, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }

    @Test func connectionCloseRequest() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: false, hasBody: false)
        _ = m.requestEnd()
        #expect(m.upstreamHead() == .writeResponseHead(close: true))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: true))
    }

    @Test func earlyUpstreamAnswerClosesBecauseTheBodyIsUnread() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyPart(ByteBuffer()) == .forwardBody)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: true))
    }

    @Test func upstreamFailureBeforeHeadAnswersItself() {  // U-down, U-timeout
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.requestEnd()
        #expect(m.upstreamFailed(.upstreamUnavailable) == .respond(.upstreamUnavailable, close: false))
        #expect(m.isIdle)
    }

    @Test func upstreamFailureAfterHeadAbortsTheConnection() {  // U-reset-mid-body
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.requestEnd()
        _ = m.upstreamHead()
        #expect(m.upstreamFailed(.upstreamUnavailable) == .abortConnection)
    }

    @Test func clientGoneCancelsTheTransfer() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.clientClosed() == .cancelTransfer)
        #expect(m.upstreamCompleted() == .none)
        #expect(m.upstreamHead() == .none)
    }

    @Test func bodyTooLargeWhileStreaming() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyTooLarge() == .respond(.bodyTooLarge, close: true))
        var n = ConnectionStateMachine()
        _ = n.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        _ = n.upstreamHead()
        #expect(n.requestBodyTooLarge() == .abortConnection)
    }

    @Test func malformedBodyBeforeTheResponseIsAnsweredAndCloses() {  // issue 10: bad chunk line mid-upload
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(m.requestBodyPart(ByteBuffer()) == .forwardBody)
        #expect(m.requestMalformed(.requestMalformed) == .respond(.requestMalformed, close: true))
        // Nothing more happens: the cancelled transfer's late events are ignored.
        #expect(m.upstreamHead() == .none)
        #expect(m.upstreamCompleted() == .none)
        #expect(m.requestEnd() == .none)
    }

    @Test func malformedBodyAfterTheResponseHeadAborts() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        _ = m.upstreamHead()
        #expect(m.requestMalformed(.requestMalformed) == .abortConnection)
    }

    @Test func malformedRequestBetweenRequestsIsAnswered() {
        var m = ConnectionStateMachine()
        #expect(m.requestMalformed(.headerTooLarge) == .respond(.headerTooLarge, close: true))
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }

    @Test func malformedBodyAfterALocalAnswerOnlyCloses() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: .tokenMissing, keepAlive: true, hasBody: true)
        #expect(m.requestMalformed(.requestMalformed) == .none)  // answered already: the handler just closes
    }

    // MARK: - Local answers

    @Test func localDocumentEndsWithTheRequest() {
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false, target: .localDocument) == .startTransfer)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.requestEnd() == .writeResponseEnd(close: false))
        #expect(m.isIdle)
    }

    @Test func localServiceIsAskedOnceTheBodyIsComplete() {
        var m = ConnectionStateMachine()
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: true, target: .localService) == .startTransfer)
        #expect(m.requestBodyPart(ByteBuffer(string: "a=b")) == .forwardBody)
        #expect(m.requestEnd() == .askLocalService)
        #expect(m.upstreamHead() == .writeResponseHead(close: false))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: false))
        #expect(m.isIdle)
    }

    @Test func localServiceAnswerAfterTheClientLeftIsDropped() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false, target: .localService)
        #expect(m.requestEnd() == .askLocalService)
        #expect(m.clientClosed() == .cancelTransfer)
        #expect(m.upstreamHead() == .none)
    }

    // MARK: - Pipelining

    static let getHead = HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/b"))

    @Test func aPipelinedRequestWaitsUntilTheAnswerBeforeItIsComplete() {
        var m = ConnectionStateMachine()
        #expect(m.admit(Self.getHead) == .now)
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        #expect(m.admit(.end(nil)) == .now)
        #expect(m.requestEnd() == .finishUpload)
        // The next request arrives while the first is answered.
        #expect(m.admit(Self.getHead) == .queued)
        #expect(m.admit(.end(nil)) == .queued)
        let read = m.readRequested()
        #expect(!read)  // nothing more is read meanwhile
        let early = m.nextPending()
        #expect(early == nil)
        _ = m.upstreamHead()
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: false))
        let drain = m.beginDrain()
        let nested = m.beginDrain()
        #expect(drain && !nested)  // an answer written while draining never starts a second drain
        guard case .part(.head)? = m.nextPending() else {
            Issue.record("the queued head")
            return
        }
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        guard case .part(.end)? = m.nextPending() else {
            Issue.record("the queued end")
            return
        }
        let done = m.nextPending()
        #expect(done == nil)
        m.endDrain()
        #expect(m.releaseReads() == .resumeReading)  // the read owed since the pipelined request was queued
    }

    @Test func aDecoderErrorBehindAnAnswerWaitsForIt() {
        var m = ConnectionStateMachine()
        _ = m.admit(Self.getHead)
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.admit(.end(nil))
        _ = m.requestEnd()
        #expect(m.admitError(.requestMalformed) == .queued)
        _ = m.upstreamHead()
        _ = m.upstreamCompleted()
        guard case .error(let error)? = m.nextPending() else {
            Issue.record("the queued error")
            return
        }
        #expect(error == .requestMalformed)
        // While a request is being read, its own errors are handled at once.
        var n = ConnectionStateMachine()
        _ = n.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        #expect(n.admitError(.requestMalformed) == .now)
    }

    @Test func quiescingClosesIdleConnectionsAndAnswersTheLastRequestWithClose() {
        var idle = ConnectionStateMachine()
        let closeNow = idle.quiesce()
        #expect(closeNow)
        #expect(idle.admit(Self.getHead) == .dropped)

        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        _ = m.requestEnd()
        #expect(m.admit(Self.getHead) == .queued)
        let closeBusy = m.quiesce()
        #expect(!closeBusy)
        #expect(m.upstreamHead() == .writeResponseHead(close: true))
        #expect(m.upstreamCompleted() == .writeResponseEnd(close: true))
        let queued = m.nextPending()
        #expect(queued == nil)  // the queued request is never answered
    }

    // MARK: - Read demand

    @Test func readsAreHeldWhileTheUploadQueueIsFullAndOwedOnceItDrains() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true)
        let free = m.readRequested()
        #expect(free)
        m.uploadQueueFull()
        let first = m.readRequested()
        let second = m.readRequested()
        #expect(!first && !second)  // held; owed once, however often asked
        #expect(m.releaseReads() == .resumeReading)
        #expect(m.releaseReads() == .none)
        let again = m.readRequested()
        #expect(again)
    }

    // MARK: - Waiting for keys

    static func held(_ method: HTTPMethod = .POST) -> HeldRequest {
        HeldRequest(head: HTTPRequestHead(version: .http1_1, method: method, uri: "/x"), body: .length(5), keepAlive: true)
    }

    @Test func aRequestWaitingForKeysKeepsItsBodyAndHoldsReading() {
        var m = ConnectionStateMachine()
        let generation = m.awaitKeys(Self.held())
        #expect(!m.isIdle && m.isReadingHeld)
        let read = m.readRequested()
        #expect(!read)
        #expect(m.requestBodyPart(ByteBuffer(string: "hel")) == .none)
        #expect(m.requestBodyPart(ByteBuffer(string: "lo")) == .none)
        #expect(m.requestEnd() == .none)
        let other = m.keysRefetched(generation: generation &+ 1)
        #expect(other == nil)  // someone else's refetch
        let request = m.keysRefetched(generation: generation)
        #expect(request?.parts == [ByteBuffer(string: "hel"), ByteBuffer(string: "lo")] && request?.ended == true)
        #expect(m.isIdle && !m.isReadingHeld)
        #expect(m.releaseReads() == .resumeReading)  // the read asked for during the wait
        let twice = m.keysRefetched(generation: generation)
        #expect(twice == nil)  // never decided twice
        // Decided again: an ordinary request from here on.
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: true) == .startTransfer)
        #expect(m.generation != generation)
    }

    @Test func clientGoneWhileWaitingForKeys() {
        var m = ConnectionStateMachine()
        let generation = m.awaitKeys(Self.held(.GET))
        #expect(m.clientClosed() == .cancelTransfer)  // logged as 499 client_closed
        let late = m.keysRefetched(generation: generation)
        #expect(late == nil)
    }

    @Test func malformedRequestWhileWaitingForKeysIsAnswered() {
        var m = ConnectionStateMachine()
        let generation = m.awaitKeys(Self.held())
        #expect(m.requestMalformed(.requestMalformed) == .respond(.requestMalformed, close: true))
        let late = m.keysRefetched(generation: generation)
        #expect(late == nil)
    }

    @Test func bodyLimitIsCountedAsPartsArrive() {  // chunked uploads: early 413, or abort once answering
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: true, bodyLimit: 10)
        #expect(m.requestBodyPart(ByteBuffer(string: "12345")) == .forwardBody)
        #expect(m.requestBodyPart(ByteBuffer(string: "67890")) == .forwardBody)  // exactly the limit
        #expect(m.requestBodyPart(ByteBuffer(string: "x")) == .respond(.bodyTooLarge, close: true))
        #expect(m.requestBodyPart(ByteBuffer(string: "y")) == .none)
        var n = ConnectionStateMachine()
        _ = n.requestHead(rejection: nil, keepAlive: true, hasBody: true, target: .localService, bodyLimit: 4)
        _ = n.upstreamHead()
        #expect(n.requestBodyPart(ByteBuffer(string: "12345")) == .abortConnection)
    }

    @Test func headWhileBusyIsRefused() {
        var m = ConnectionStateMachine()
        _ = m.requestHead(rejection: nil, keepAlive: true, hasBody: false)
        #expect(m.requestHead(rejection: nil, keepAlive: true, hasBody: false) == .respond(.requestMalformed, close: true))
    }
}
