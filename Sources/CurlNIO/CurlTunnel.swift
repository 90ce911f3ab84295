import CCurl
import NIOCore

/// A raw byte connection to an upstream, opened by libcurl (`CURLOPT_CONNECT_ONLY`: TCP, and TLS for `https`, with
/// the same verification options as any transfer, HTTP/1.1 only so ALPN never offers h2) and then driven with
/// `curl_easy_send` / `curl_easy_recv` on the owning event loop. Used for WebSocket tunnels.
///
/// The easy handle stays in its multi handle until `close()`: removing it closes the connection, and send/recv stop
/// working. curl stops reporting the socket once the connect is done, so the driver watches it itself
/// (`CURLINFO_ACTIVESOCKET`, in the readiness watcher under the tunnel tag) and the delegate says what it waits for
/// with `watch(read:write:)`. Event-loop confined: every method must be called on `eventLoop`.
public final class CurlTunnel {
    /// The outcome of one `send` or `receive`.
    public enum IOResult: Equatable, Sendable {
        /// This many bytes went out or came in (a send may be partial; a receive is never 0 here).
        case bytes(Int)
        /// Nothing now: wait for `curlTunnelIsWritable` / `curlTunnelIsReadable` after `watch`. A send that gave this
        /// must be retried with the same bytes at the same address (TLS needs the identical buffer).
        case wouldBlock
        /// The upstream closed the connection (a receive of 0 bytes).
        case closed
        /// The connection failed (or the tunnel is closed or not connected yet).
        case failed(CurlTransferError)
    }

    enum Phase {
        case connecting
        case open
        case closed
    }

    let driver: CurlLoopDriver
    public let eventLoop: any EventLoop
    weak var delegate: (any CurlTunnelDelegate)?
    var phase: Phase = .connecting
    /// The transfer that connects; nil once connected or closed.
    var connector: CurlTransfer?
    var easy: UnsafeMutableRawPointer?
    var headerList: CurlHeaderList.Allocated?
    var fd: Int32 = -1
    var generation: UInt16 = 0
    var interest: CurlSocketInterest = []
    /// A ONESHOT registration is pending in epoll with `interest`.
    var armed = false
    var registered = false

    init(driver: CurlLoopDriver, delegate: any CurlTunnelDelegate) {
        self.driver = driver
        self.eventLoop = driver.eventLoop
        self.delegate = delegate
    }

    /// Whether the connection is up (and not closed).
    public var isOpen: Bool { self.phase == .open }

    /// Sends up to `bytes.count` bytes.
    public func send(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        self.eventLoop.preconditionInEventLoop()
        guard self.phase == .open, let easy = self.easy else { return .failed(Self.notOpen) }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return .bytes(0) }
        var sent = 0
        let code = curl_easy_send(easy, base, bytes.count, &sent)
        if code == CURLE_OK { return .bytes(sent) }
        if code == CURLE_AGAIN { return sent > 0 ? .bytes(sent) : .wouldBlock }
        return .failed(CurlErrorMapping.error(for: code, receivedHead: true))
    }

    /// Receives up to `buffer.count` bytes. Call again until `.wouldBlock`: curl or the TLS library may hold bytes
    /// the socket no longer signals.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        self.eventLoop.preconditionInEventLoop()
        guard self.phase == .open, let easy = self.easy else { return .failed(Self.notOpen) }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .bytes(0) }
        var received = 0
        let code = curl_easy_recv(easy, base, buffer.count, &received)
        if code == CURLE_OK { return received == 0 ? .closed : .bytes(received) }
        if code == CURLE_AGAIN { return .wouldBlock }
        return .failed(CurlErrorMapping.error(for: code, receivedHead: true))
    }

    /// What the delegate waits for. Level-triggered: a wanted readiness that holds is reported again after each
    /// callback, so ask only for what is needed (read only while there is room for the bytes, write only after a
    /// send gave `.wouldBlock` or was partial).
    public func watch(read: Bool, write: Bool) {
        self.eventLoop.preconditionInEventLoop()
        guard self.phase == .open else { return }
        var wanted: CurlSocketInterest = []
        if read { wanted.insert(.read) }
        if write { wanted.insert(.write) }
        if wanted == self.interest && (self.armed || wanted.isEmpty) { return }
        self.interest = wanted
        self.driver.armTunnel(self)
    }

    /// Closes the connection (idempotent). While connecting, the connect is cancelled and the delegate hears nothing
    /// more.
    public func close() {
        self.eventLoop.preconditionInEventLoop()
        self.driver.closeTunnel(self)
    }

    static let notOpen = CurlTransferError(code: .cancelled, curlCode: 0, message: "tunnel is not open", receivedHead: true)
}

@available(*, unavailable)
extension CurlTunnel: Sendable {}

/// Receives the events of one `CurlTunnel`, on its event loop, never from inside a curl callback.
public protocol CurlTunnelDelegate: AnyObject {
    /// The connection (and TLS) is up: write the first bytes now. An idle connect-only connection sits in curl's
    /// cache until its first send or receive, where a later transfer's dead-connection check may close it.
    func curlTunnelDidConnect(_ tunnel: CurlTunnel)
    /// The connection could not be made (or the driver shut down first). No further calls.
    func curlTunnel(_ tunnel: CurlTunnel, didFailToConnect error: CurlTransferError)
    /// The socket is readable (or hung up): call `receive` until it says `.wouldBlock`.
    func curlTunnelIsReadable(_ tunnel: CurlTunnel)
    /// The socket is writable: retry the pending send.
    func curlTunnelIsWritable(_ tunnel: CurlTunnel)
    /// The driver shut down and closed the connection. No further calls.
    func curlTunnelWasClosed(_ tunnel: CurlTunnel)
}

/// The connect phase's transfer delegate: a connect-only transfer has no head or body, only its completion.
final class CurlTunnelConnector: CurlTransferDelegate {
    weak var tunnel: CurlTunnel?

    init(tunnel: CurlTunnel) {
        self.tunnel = tunnel
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead) {}
    func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        .consumed
    }
    func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        .end
    }
    func curlTransferDidFinishBatch(_ transfer: CurlTransfer) {}

    /// Only failures arrive here: a successful connect is adopted by the driver instead of completed.
    func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        guard let tunnel, tunnel.phase == .connecting, tunnel.connector === transfer else { return }
        tunnel.connector = nil
        tunnel.phase = .closed
        let error: CurlTransferError
        switch result {
        case .success:
            error = CurlTransferError(code: .other, curlCode: 0, message: "connect finished without a socket", receivedHead: false)
        case .failure(let e): error = e
        }
        tunnel.delegate?.curlTunnel(tunnel, didFailToConnect: error)
    }
}
