import NIOCore
import Testing

@testable import GatewayProxy

/// The header and idle clocks, per request head (issue 10: they counted one request per socket read).
@Suite struct ConnectionClocksTests {
    static func at(_ ms: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(ms) * 1_000_000) }

    static func clocks() -> ConnectionClocks {
        ConnectionClocks(headerTimeout: .milliseconds(1000), idleTimeout: .milliseconds(1000))
    }

    @Test func aWholeHeadInOneReadArmsNoHeaderClock() {
        var c = Self.clocks()
        #expect(c.connectionStarted(now: Self.at(0)) == .scheduleIdleTimer(Self.at(1000)))
        c.bytesArrived()
        #expect(c.headDecoded() == .none)
        c.messageDecoded()
        #expect(c.readDecoded(now: Self.at(10)) == .none)
        // The upstream takes long: no clock while the request is outstanding.
        #expect(c.idleTimerFired(now: Self.at(1000)) == .none)
        #expect(c.responseEnded(now: Self.at(5000)) == .scheduleIdleTimer(Self.at(6000)))
        #expect(c.idleTimerFired(now: Self.at(6000)) == .closeIdle)
    }

    @Test func pipelinedRequestsEachCount() {  // two GETs in one read, the second answered after 2 s
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        _ = c.headDecoded()
        c.messageDecoded()
        _ = c.headDecoded()
        c.messageDecoded()
        #expect(c.readDecoded(now: Self.at(0)) == .none)
        #expect(c.responseEnded(now: Self.at(10)) == .none)  // one still outstanding: no idle clock
        #expect(c.idleTimerFired(now: Self.at(1000)) == .none)
        #expect(c.responseEnded(now: Self.at(2000)) == .scheduleIdleTimer(Self.at(3000)))
    }

    @Test func aLatePipelinedBodyIsNoSlowHead() {  // GET + POST head, body 1.2 s later
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        _ = c.headDecoded()
        c.messageDecoded()
        _ = c.headDecoded()  // the POST's head; its body is still to come
        _ = c.readDecoded(now: Self.at(0))
        #expect(c.responseEnded(now: Self.at(10)) == .none)
        c.bytesArrived()  // the body, 1.2 s later
        c.messageDecoded()
        #expect(c.readDecoded(now: Self.at(1200)) == .none)
        #expect(c.headerTimerFired(now: Self.at(2200)) == .none)
        #expect(c.responseEnded(now: Self.at(1300)) == .scheduleIdleTimer(Self.at(2300)))
    }

    @Test func aSlowHeadTimesOutFromItsFirstRead() {
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        #expect(c.readDecoded(now: Self.at(100)) == .scheduleHeaderTimer(Self.at(1100)))
        #expect(c.idleTimerFired(now: Self.at(1000)) == .none)  // a head started: not idle
        c.bytesArrived()
        #expect(c.readDecoded(now: Self.at(600)) == .none)  // a total for the head, not per read
        #expect(c.headerTimerFired(now: Self.at(1100)) == .timeOutHead)
    }

    @Test func aHeadArrivingInTimeCancelsTheHeaderClock() {
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        _ = c.readDecoded(now: Self.at(0))
        #expect(c.headDecoded() == .cancelHeaderTimer)
        #expect(c.headerTimerFired(now: Self.at(1000)) == .none)
    }

    @Test func aPipelinedPartialHeadGetsItsClockWhenTheAnswersAreDone() {
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        _ = c.headDecoded()
        c.messageDecoded()
        #expect(c.readDecoded(now: Self.at(0)) == .none)
        c.bytesArrived()  // part of the next head, while the first is being answered
        #expect(c.readDecoded(now: Self.at(50)) == .none)  // no 408 may land inside an answer
        #expect(c.responseEnded(now: Self.at(3000)) == .scheduleHeaderTimer(Self.at(4000)))
        #expect(c.headerTimerFired(now: Self.at(4000)) == .timeOutHead)
    }

    @Test func aTimerFiringEarlyIsScheduledAgain() {
        var c = Self.clocks()
        _ = c.connectionStarted(now: Self.at(0))
        c.bytesArrived()
        _ = c.headDecoded()
        c.messageDecoded()
        #expect(c.responseEnded(now: Self.at(500)) == .scheduleIdleTimer(Self.at(1500)))
        // The task scheduled at connection start (1000) fires first and learns the new deadline.
        #expect(c.idleTimerFired(now: Self.at(1000)) == .scheduleIdleTimer(Self.at(1500)))
        #expect(c.idleTimerFired(now: Self.at(1500)) == .closeIdle)
    }
}
