import CCurl
import NIOCore
import Testing

@testable import CurlNIO

@Suite struct CurlSocketTagTests {
    @Test func roundTrips() {
        for (index, generation, fd) in [(UInt16(0), UInt16(0), Int32(0)), (7, 65535, 1023), (0xFFFE, 1, Int32.max)] {
            let tag = CurlSocketTag(driverIndex: index, generation: generation, fd: fd)
            let back = CurlSocketTag(rawValue: tag.rawValue)
            #expect(back == tag)
            #expect(tag.rawValue != CurlSocketTag.wakeUpRawValue)
        }
    }
}

@Suite struct CurlSocketTableTests {
    private func tag(_ table: CurlSocketTable, _ fd: Int32) -> UInt64 {
        CurlSocketTag(driverIndex: table.driverIndex, generation: table.entries[fd]!.generation, fd: fd).rawValue
    }

    @Test func addModifyRemove() {
        var table = CurlSocketTable(driverIndex: 3)
        let add = table.socketCallback(fd: 9, what: 1, owner: 100)
        guard case .add(fd: 9, let tag, interest: .read) = add else {
            Issue.record("expected add, got \(add)")
            return
        }
        #expect(CurlSocketTag(rawValue: tag).driverIndex == 3)
        #expect(table.socketCallback(fd: 9, what: 3, owner: 100) == .modify(fd: 9, tag: tag, interest: [.read, .write]))
        #expect(table.socketCallback(fd: 9, what: 4, owner: 100) == .delete(fd: 9))
        #expect(table.socketCallback(fd: 9, what: 4, owner: 100) == .none)
        #expect(table.entries.isEmpty)
    }

    @Test func staleGenerationIsDropped() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 5, what: 1, owner: 1)
        let oldTag = self.tag(table, 5)
        _ = table.socketCallback(fd: 5, what: 4, owner: 1)
        // fd number reused by a new connection
        _ = table.socketCallback(fd: 5, what: 2, owner: 2)
        let newTag = self.tag(table, 5)
        #expect(oldTag != newTag)
        #expect(table.readiness(tag: oldTag) == nil)
        #expect(table.readiness(tag: newTag) == 5)
        // wrong driver
        let foreign = CurlSocketTag(driverIndex: 1, generation: table.entries[5]!.generation, fd: 5).rawValue
        #expect(table.readiness(tag: foreign) == nil)
        // unknown fd
        #expect(table.readiness(tag: CurlSocketTag(driverIndex: 0, generation: 1, fd: 77).rawValue) == nil)
    }

    @Test func rearmOnlyWhenCurlDidNot() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 5, what: 1, owner: 1)
        let tag = self.tag(table, 5)
        let generation = table.entries[5]!.generation
        #expect(table.readiness(tag: tag) == 5)
        #expect(table.entries[5]!.armed == false)
        // curl did not call the socket callback during socket_action → we re-arm
        #expect(
            table.afterAction(fd: 5, generation: generation, isReceivePaused: { _ in false })
                == .modify(fd: 5, tag: tag, interest: .read))
        // next round: curl re-armed it itself (changed interest) → nothing more to do
        #expect(table.readiness(tag: tag) == 5)
        #expect(table.socketCallback(fd: 5, what: 2, owner: 1) == .modify(fd: 5, tag: tag, interest: .write))
        #expect(table.afterAction(fd: 5, generation: generation, isReceivePaused: { _ in false }) == .none)
        // curl removed it during the action → nothing
        #expect(table.readiness(tag: tag) == 5)
        _ = table.socketCallback(fd: 5, what: 4, owner: 1)
        #expect(table.afterAction(fd: 5, generation: generation, isReceivePaused: { _ in false }) == .none)
    }

    @Test func receivePausedOwnerIsNotRearmedUntilResumed() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 6, what: 1, owner: 42)
        let tag = self.tag(table, 6)
        let generation = table.entries[6]!.generation
        #expect(table.readiness(tag: tag) == 6)
        #expect(table.afterAction(fd: 6, generation: generation, isReceivePaused: { $0 == 42 }) == .none)
        #expect(table.entries[6]!.suppressed)
        // another owner's resume does nothing
        #expect(table.ownerResumed(fd: 6, owner: 43) == .none)
        #expect(table.ownerResumed(fd: 6, owner: 42) == .modify(fd: 6, tag: tag, interest: .read))
        #expect(table.ownerResumed(fd: 6, owner: 42) == .none)  // already armed
    }

    @Test func multiplexedSocketHasNoOwnerAndStaysReadWhileAStreamIsPaused() {
        #expect(CurlSocketTable.owner(transferID: 42, mayMultiplex: false) == 42)
        #expect(CurlSocketTable.owner(transferID: 42, mayMultiplex: true) == 0)
        // An HTTP/2 connection named by transfer 42, whose stream is receive-paused: the socket is re-armed anyway,
        // because the other streams on it must keep flowing.
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 7, what: 1, owner: CurlSocketTable.owner(transferID: 42, mayMultiplex: true))
        let tag = self.tag(table, 7)
        #expect(table.readiness(tag: tag) == 7)
        #expect(
            table.afterAction(fd: 7, generation: table.entries[7]!.generation, isReceivePaused: { $0 == 42 })
                == .modify(fd: 7, tag: tag, interest: .read))
        #expect(!table.entries[7]!.suppressed)
    }

    @Test func writeInterestIsRearmedEvenWhenPaused() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 6, what: 3, owner: 42)
        let tag = self.tag(table, 6)
        #expect(table.readiness(tag: tag) == 6)
        #expect(
            table.afterAction(fd: 6, generation: table.entries[6]!.generation, isReceivePaused: { _ in true })
                == .modify(fd: 6, tag: tag, interest: [.read, .write]))
    }

    @Test func finishedOwnerReleasesSuppressedSocket() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 6, what: 1, owner: 42)
        let tag = self.tag(table, 6)
        #expect(table.readiness(tag: tag) == 6)
        _ = table.afterAction(fd: 6, generation: table.entries[6]!.generation, isReceivePaused: { _ in true })
        #expect(table.clearOwner(fd: 6, owner: 7) == .none)
        #expect(table.clearOwner(fd: 6, owner: 42) == .modify(fd: 6, tag: tag, interest: .read))
        #expect(table.entries[6]!.owner == 0)
    }

    @Test func removeAllDeletesEverything() {
        var table = CurlSocketTable(driverIndex: 0)
        _ = table.socketCallback(fd: 8, what: 1, owner: 1)
        _ = table.socketCallback(fd: 3, what: 2, owner: 2)
        #expect(table.removeAll() == [.delete(fd: 3), .delete(fd: 8)])
        #expect(table.entries.isEmpty)
    }
}

@Suite struct CurlPauseStateTests {
    @Test func bitmaskAlwaysCarriesBothDirections() {
        #expect(CurlPauseState().curlBitmask == 0)  // CURLPAUSE_CONT
        #expect(CurlPauseState.receive.curlBitmask == ccurl_pause_recv())
        #expect(CurlPauseState.send.curlBitmask == ccurl_pause_send())
        #expect(CurlPauseState([.receive, .send]).curlBitmask == ccurl_pause_recv() | ccurl_pause_send())
        var state: CurlPauseState = [.receive, .send]
        state.remove(.send)  // un-pausing the upload keeps the download paused
        #expect(state.curlBitmask == ccurl_pause_recv())
    }
}

@Suite struct CurlTimerStateTests {
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func minusOneCancelsOnlyWhenScheduled() {
        var timer = CurlTimerState()
        #expect(timer.curlTimer(milliseconds: -1, now: self.now) == .none)
        #expect(timer.curlTimer(milliseconds: 10, now: self.now) == .schedule(self.now + .milliseconds(10)))
        #expect(timer.curlTimer(milliseconds: -1, now: self.now) == .cancel)
        #expect(timer.scheduledDeadline == nil)
    }

    @Test func zeroRunsSoonAndCoalesces() {
        var timer = CurlTimerState()
        #expect(timer.curlTimer(milliseconds: 0, now: self.now) == .runSoon)
        #expect(timer.curlTimer(milliseconds: 0, now: self.now) == .none)
        timer.immediateRan()
        #expect(timer.curlTimer(milliseconds: 0, now: self.now) == .runSoon)
    }

    @Test func reschedulesOnlyWhenEarlier() {
        var timer = CurlTimerState()
        #expect(timer.curlTimer(milliseconds: 100, now: self.now) == .schedule(self.now + .milliseconds(100)))
        #expect(timer.curlTimer(milliseconds: 200, now: self.now) == .none)
        #expect(timer.curlTimer(milliseconds: 100, now: self.now) == .none)
        #expect(timer.curlTimer(milliseconds: 50, now: self.now) == .schedule(self.now + .milliseconds(50)))
        timer.scheduledFired()
        #expect(timer.scheduledDeadline == nil)
        #expect(timer.curlTimer(milliseconds: 200, now: self.now) == .schedule(self.now + .milliseconds(200)))
    }
}

@Suite struct CurlHeaderParserTests {
    private func feed(_ parser: inout CurlHeaderParser, _ line: String) -> CurlHeaderParser.Event {
        var bytes = Array(line.utf8)
        return bytes.withUnsafeMutableBytes { parser.parse(line: UnsafeRawBufferPointer($0)) }
    }

    @Test func simpleHead() {
        var parser = CurlHeaderParser()
        #expect(self.feed(&parser, "HTTP/1.1 200 OK\r\n") == .none)
        #expect(self.feed(&parser, "Content-Length: 5\r\n") == .none)
        #expect(self.feed(&parser, "X-A:  spaced value \t\r\n") == .none)
        #expect(self.feed(&parser, "X-Empty:\r\n") == .none)
        #expect(!parser.isComplete)
        let head = CurlResponseHead(
            status: 200,
            headers: [
                .init(name: "Content-Length", value: "5"), .init(name: "X-A", value: "spaced value"),
                .init(name: "X-Empty", value: ""),
            ])
        #expect(self.feed(&parser, "\r\n") == .head(head))
        #expect(parser.isComplete)
        // trailers after the body are ignored
        #expect(self.feed(&parser, "X-Trailer: 1\r\n") == .none)
        #expect(self.feed(&parser, "\r\n") == .none)
    }

    @Test func informationalHeadsAreSkipped() {
        var parser = CurlHeaderParser()
        #expect(self.feed(&parser, "HTTP/1.1 100 Continue\r\n") == .none)
        #expect(self.feed(&parser, "\r\n") == .informational(status: 100))
        #expect(self.feed(&parser, "HTTP/1.1 103 Early Hints\r\n") == .none)
        #expect(self.feed(&parser, "Link: </a>; rel=preload\r\n") == .none)
        #expect(self.feed(&parser, "\r\n") == .informational(status: 103))
        #expect(self.feed(&parser, "HTTP/1.1 404 Not Found\r\n") == .none)
        #expect(self.feed(&parser, "A: b\r\n") == .none)
        #expect(self.feed(&parser, "\r\n") == .head(.init(status: 404, headers: [.init(name: "A", value: "b")])))
    }

    @Test func statusLines() {
        func status(_ s: String) -> Int? {
            var bytes = Array(s.utf8)
            return bytes.withUnsafeMutableBytes { CurlHeaderParser.parseStatusLine(UnsafeRawBufferPointer($0)) }
        }
        #expect(status("HTTP/1.1 200 OK") == 200)
        #expect(status("HTTP/1.0 204") == 204)
        #expect(status("HTTP/2 304 ") == 304)
        #expect(status("HTTP/1.1 20") == nil)
        #expect(status("HTTP/1.1 2000") == nil)
        #expect(status("HTTP/1.1 abc") == nil)
        #expect(status("ICY 200 OK") == nil)
        #expect(status("HTTP/1.1 099 x") == nil)
    }

    @Test func obsFoldIsJoinedWithOneSpace() {
        var parser = CurlHeaderParser()
        _ = self.feed(&parser, "HTTP/1.1 200 OK\n")
        _ = self.feed(&parser, "X-Long: first\n")
        _ = self.feed(&parser, " \t second \n")
        _ = self.feed(&parser, "\tthird\r\n")
        #expect(self.feed(&parser, "\n") == .head(.init(status: 200, headers: [.init(name: "X-Long", value: "first second third")])))
    }

    @Test func malformedLinesAreErrors() {
        for bad in ["NoColonHere\r\n", "Bad Name: x\r\n", ": x\r\n", "X: a\u{1}b\r\n", "X\t: y\r\n"] {
            var parser = CurlHeaderParser()
            _ = self.feed(&parser, "HTTP/1.1 200 OK\r\n")
            if case .error = self.feed(&parser, bad) {} else { Issue.record("accepted \(bad.debugDescription)") }
        }
        var parser = CurlHeaderParser()
        if case .error = self.feed(&parser, "garbage\r\n") {} else { Issue.record("accepted bad status line") }
        var folded = CurlHeaderParser()
        _ = self.feed(&folded, "HTTP/1.1 200 OK\r\n")
        if case .error = self.feed(&folded, " continuation first\r\n") {} else { Issue.record("accepted leading fold") }
    }
}

@Suite struct CurlErrorMappingTests {
    @Test func curlCodes() {
        let cases: [(CURLcode, Bool, CurlTransferError.Code)] = [
            (CURLE_COULDNT_CONNECT, false, .couldNotConnect),
            (CURLE_COULDNT_RESOLVE_HOST, false, .couldNotConnect),
            (CURLE_OPERATION_TIMEDOUT, false, .couldNotConnect),
            (CURLE_PEER_FAILED_VERIFICATION, false, .couldNotConnect),
            (CURLE_SSL_CACERT_BADFILE, false, .couldNotConnect),
            (CURLE_GOT_NOTHING, false, .connectionReset),
            (CURLE_RECV_ERROR, true, .connectionReset),
            (CURLE_SEND_ERROR, false, .connectionReset),
            (CURLE_PARTIAL_FILE, true, .connectionReset),
            (CURLE_WEIRD_SERVER_REPLY, false, .protocolError),
            (CURLE_OUT_OF_MEMORY, false, .other),
        ]
        for (code, head, expected) in cases {
            let error = CurlErrorMapping.error(for: code, receivedHead: head)
            #expect(error.code == expected, "\(code)")
            #expect(error.curlCode == Int32(code.rawValue))
            #expect(error.receivedHead == head)
            #expect(!error.message.isEmpty)
        }
        #expect(CurlTransferError.Code.couldNotConnect.description == "could_not_connect")
        #expect(CurlTransferError.Code.idleTimeout.description == "idle_timeout")
    }

    @Test func headerHelpers() {
        #expect(CurlEasyConfiguration.equalsIgnoringCase("AcCePt", "accept"))
        #expect(!CurlEasyConfiguration.equalsIgnoringCase("Accept-Encoding", "accept"))
        #expect(CurlEasyConfiguration.trimmedValue("  a b\t") == "a b")
        #expect(CurlEasyConfiguration.trimmedValue("ab") == "ab")
        #expect(CurlEasyConfiguration.trimmedValue(" \t ") == "")
    }
}
