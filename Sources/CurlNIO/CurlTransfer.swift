import CCurl
import NIOCore

/// One in-flight transfer. Event-loop confined: every method must be called on `eventLoop`.
public final class CurlTransfer {
    enum Phase {
        /// Created; waiting to be added to the multi handle (or to fail before it is).
        case pending
        /// In the multi handle.
        case running
        /// Completed; the delegate has been told.
        case finished
    }

    let driver: CurlLoopDriver
    /// The loop that owns this transfer (and its driver).
    public let eventLoop: any EventLoop
    var delegate: (any CurlTransferDelegate)?
    var easy: UnsafeMutableRawPointer?
    var headerList: CurlHeaderList.Allocated?

    var phase: Phase = .pending
    /// A tunnel's connect (`CURLOPT_CONNECT_ONLY`): its CURLE_OK completion hands the handle to the tunnel.
    var connectOnly = false
    var pause: CurlPauseState = []
    var cancelRequested = false
    /// A failure decided by the driver (bad header line, refused request) that wins over curl's result code.
    var failure: CurlTransferError?
    var headerParser = CurlHeaderParser()
    var headDelivered = false
    /// Every socket curl has associated with this transfer and not removed yet. Usually one, but a connect with
    /// happy eyeballs (`localhost` → `::1` and `127.0.0.1`), or the threaded resolver's wake-up pipe next to a
    /// connect, gives a transfer several at once; each of them names this transfer as owner in the socket table and
    /// must be released when it finishes.
    var socketFDs: [Int32] = []
    /// Position in the driver's `live` array (-1: not in it).
    var liveIndex = -1
    /// Already in the driver's "touched this round" list.
    var touched = false

    // Timeouts (checked by the driver's sweep).
    let responseTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let bodyLength: Int64?
    let hasBody: Bool
    /// May share its connection with other transfers (HTTP/2 streams): its pause must never hold the socket.
    let mayMultiplex: Bool
    /// `CurlRequest.deadline` from the start: past it the transfer fails, paused or not.
    let deadline: NIODeadline?
    var startTime: NIODeadline
    var requestSentTime: NIODeadline?
    var lastActivity: NIODeadline
    var bytesSent: Int64 = 0

    init(driver: CurlLoopDriver, request: CurlRequest, delegate: any CurlTransferDelegate, now: NIODeadline) {
        self.driver = driver
        self.eventLoop = driver.eventLoop
        self.delegate = delegate
        self.ownerID = driver.nextOwnerID()
        self.responseTimeout = request.responseTimeout
        self.idleTimeout = request.idleTimeout
        let isHead = request.method == "HEAD"
        switch request.body {
        case .none:
            self.bodyLength = nil
            self.hasBody = false
        case .length(let n):
            self.bodyLength = isHead ? nil : n
            self.hasBody = !isHead
        case .chunked:
            self.bodyLength = nil
            self.hasBody = !isHead
        }
        self.mayMultiplex = request.httpVersion != .http1_1
        self.startTime = now
        self.deadline = request.deadline.map { now + $0 }
        self.lastActivity = now
        self.requestSentTime = self.hasBody ? nil : now
    }

    /// Identity used in the socket table: a serial number of the driver, never an address. An address would be
    /// turned back into an object when the socket becomes ready, after the transfer may be gone (and its address
    /// reused); a serial is only ever looked up among the driver's live transfers.
    let ownerID: UInt

    /// After the delegate returned `.pause` from `didReceiveBodyBytes`. Un-pausing may deliver body bytes (call the
    /// delegate) before this returns when called outside a delegate callback. No-op if not paused.
    public func resumeReceiving() {
        self.eventLoop.preconditionInEventLoop()
        self.driver.requestResume(self, direction: .receive)
    }

    /// After `fillRequestBody` returned `.pause` and more body is available. No-op if not paused.
    public func resumeSending() {
        self.eventLoop.preconditionInEventLoop()
        self.driver.requestResume(self, direction: .send)
    }

    /// Aborts the transfer: the delegate gets no further events except `didComplete(.failure(.cancelled))`, which
    /// is delivered later (never from inside `cancel()` itself). Idempotent; a no-op once completion was delivered
    /// (including from inside `didComplete`).
    public func cancel() {
        self.eventLoop.preconditionInEventLoop()
        guard self.phase != .finished, !self.cancelRequested else { return }
        self.cancelRequested = true
        self.driver.requestCancel(self)
    }

    /// When the driver gives up on this transfer on its own, if it is still running at `now`: the earlier of its
    /// deadline and the response or idle timeout that applies now.
    func expiry() -> (NIODeadline, CurlTransferError.Code)? {
        guard self.phase == .running, !self.cancelRequested else { return nil }
        let timeout = self.timeoutExpiry()
        guard let deadline = self.deadline else { return timeout }
        if let timeout, timeout.0 < deadline { return timeout }
        return (deadline, .deadlineExceeded)
    }

    private func timeoutExpiry() -> (NIODeadline, CurlTransferError.Code)? {
        if !self.headDelivered {
            if let sent = self.requestSentTime {
                return (sent + self.responseTimeout, .responseTimeout)
            }
            if self.pause.contains(.send) { return nil }
            return (self.lastActivity + self.idleTimeout, .idleTimeout)
        }
        if !self.pause.isEmpty { return nil }
        return (self.lastActivity + self.idleTimeout, .idleTimeout)
    }

    // MARK: - curl callbacks (on the loop, inside curl)

    func onHeaderLine(_ buffer: UnsafeRawBufferPointer) -> Int {
        guard !self.cancelRequested, self.failure == nil, self.phase == .running else { return 0 }
        let now = self.driver.roundTime
        self.lastActivity = now
        switch self.headerParser.parse(line: buffer) {
        case .none, .informational:
            return buffer.count
        case .error(let message):
            self.failure = CurlTransferError(
                code: .protocolError, curlCode: 0, message: "invalid response head: \(message)",
                receivedHead: self.headDelivered)
            return 0
        case .head(let head):
            self.headDelivered = true
            self.driver.markTouched(self)
            self.driver.ensureSweep(at: now + self.idleTimeout)
            self.delegate?.curlTransfer(self, didReceiveHead: head)
            return self.cancelRequested ? 0 : buffer.count
        }
    }

    func onBody(_ buffer: UnsafeRawBufferPointer) -> Int {
        guard !self.cancelRequested, self.failure == nil, self.phase == .running else { return 0 }
        guard self.headDelivered else {
            self.failure = CurlTransferError(
                code: .protocolError, curlCode: 0, message: "body before response head", receivedHead: false)
            return 0
        }
        if buffer.isEmpty { return 0 }
        self.lastActivity = self.driver.roundTime
        self.driver.markTouched(self)
        guard let delegate = self.delegate else { return 0 }
        switch delegate.curlTransfer(self, didReceiveBodyBytes: buffer) {
        case .consumed:
            return self.cancelRequested ? 0 : buffer.count
        case .pause:
            if self.cancelRequested { return 0 }
            self.pause.insert(.receive)
            return ccurl_writefunc_pause()
        }
    }

    func onReadBody(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard !self.cancelRequested, self.failure == nil, self.phase == .running else { return ccurl_readfunc_abort() }
        let now = self.driver.roundTime
        var buffer = buffer
        if let length = self.bodyLength {
            let remaining = length - self.bytesSent
            if remaining <= 0 {
                self.requestSentTime = self.requestSentTime ?? now
                return 0
            }
            if Int64(buffer.count) > remaining {
                buffer = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(remaining)])
            }
        }
        guard let delegate = self.delegate else { return ccurl_readfunc_abort() }
        let answer = delegate.curlTransfer(self, fillRequestBody: buffer)
        if self.cancelRequested { return ccurl_readfunc_abort() }
        switch answer {
        case .bytes(let n) where n > 0:
            precondition(n <= buffer.count, "fillRequestBody returned more bytes than the buffer holds")
            self.bytesSent += Int64(n)
            self.lastActivity = now
            if let length = self.bodyLength, self.bytesSent >= length {
                self.requestSentTime = now
                self.driver.ensureSweep(at: now + self.responseTimeout)
            }
            return n
        case .bytes, .pause:
            self.pause.insert(.send)
            return ccurl_readfunc_pause()
        case .end:
            self.lastActivity = now
            if self.requestSentTime == nil {
                self.requestSentTime = now
                self.driver.ensureSweep(at: now + self.responseTimeout)
            }
            return 0
        }
    }
}

@available(*, unavailable)
extension CurlTransfer: Sendable {}

// MARK: - C trampolines

let curlWriteTrampoline: curl_write_callback = { ptr, size, count, userdata in
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    return transfer.onBody(UnsafeRawBufferPointer(start: ptr, count: size * count))
}

let curlHeaderTrampoline: curl_write_callback = { ptr, size, count, userdata in
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    return transfer.onHeaderLine(UnsafeRawBufferPointer(start: ptr, count: size * count))
}

let curlReadTrampoline: curl_read_callback = { ptr, size, count, userdata in
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    return transfer.onReadBody(UnsafeMutableRawBufferPointer(start: ptr, count: size * count))
}
