import CCurl
import NIOCore

/// Drives one libcurl multi handle on one NIO event loop (README "How a request goes through").
///
/// * curl is only ever called on `eventLoop`.
/// * curl's sockets are watched by the shared `CurlReadinessWatcher` (level-triggered, EPOLLONESHOT, tagged with
///   (driver index, generation, fd)); ready batches come back through `eventLoop.execute`.
/// * curl's timer is one `Scheduled` task (or an `execute` for 0 ms).
/// * Nothing calls `curl_multi_*` from inside a curl callback: while the driver is running curl ("busy") every
///   add / resume / cancel is queued and applied after curl returned.
///
/// Every method must be called on `eventLoop`. Owns one CURLM (its own keep-alive connection cache).
public final class CurlLoopDriver {
    enum Intent {
        case add(CurlTransfer)
        case resume(CurlTransfer, CurlPauseState)
        case cancel(CurlTransfer)
        /// A closed tunnel's handle, removed from the multi handle (which closes its connection) once curl returned.
        case releaseTunnel(UnsafeMutableRawPointer, CurlHeaderList.Allocated?)
    }

    public let eventLoop: any EventLoop
    let watcher: CurlReadinessWatcher
    private(set) var index: UInt16 = 0
    private var multi: UnsafeMutableRawPointer?
    private(set) var sockets: CurlSocketTable
    private var timer = CurlTimerState()
    private var timerTask: Scheduled<Void>?
    private var sweepTask: Scheduled<Void>?
    private var sweepDeadline: NIODeadline?
    /// Transfers in the multi handle (swap-remove; `CurlTransfer.liveIndex`).
    private var live: [CurlTransfer] = []
    /// The same transfers by `ownerID`: how the socket table's owners are resolved, so a socket whose owner has
    /// finished resolves to nothing instead of to freed memory.
    private(set) var owners: [UInt: CurlTransfer] = [:]
    private var lastOwnerID: UInt = 0
    private var busy = false
    private var intents: [Intent] = []
    private var intentsScratch: [Intent] = []
    private var touchedList: [CurlTransfer] = []
    private var touchedScratch: [CurlTransfer] = []
    private var easyPool: [UnsafeMutableRawPointer] = []
    private var isShutdown = false
    /// The driver that opens this loop's tunnels (`openTunnel`), created on first use: tunnels get their own multi
    /// handle, because a connect-only connection occupies a slot of its multi's connection cache until it closes and
    /// would shrink the keep-alive pool of ordinary transfers.
    private var tunnelHost: CurlLoopDriver?
    /// Set on a tunnel host: the watcher index its tunnels' sockets are registered under (curl's own sockets use
    /// `index`).
    private var tunnelIndex: UInt16?
    /// Open tunnels by socket.
    private var tunnels: [Int32: CurlTunnel] = [:]
    private var lastTunnelGeneration: UInt16 = 0
    private var shutdownRequested = false
    /// Number of `curl_multi_socket_action` calls so far (diagnostics; lets tests detect busy loops).
    private(set) var socketActionCount = 0
    /// Clock reading for the current round of curl work (one `now()` per round, not per callback).
    private(set) var roundTime: NIODeadline

    /// Sweep granularity: timeouts fire at most this late (and sweeps run at most this often).
    static let sweepSlack: TimeAmount = .milliseconds(10)
    static let easyPoolLimit = 64

    /// - Parameters:
    ///   - maxConnections: CURLMOPT_MAXCONNECTS, the size of this loop's keep-alive cache.
    public init(eventLoop: any EventLoop, watcher: CurlReadinessWatcher, maxConnections: Int = 256) {
        CurlGlobal.initialize()
        self.eventLoop = eventLoop
        self.watcher = watcher
        self.sockets = CurlSocketTable(driverIndex: 0)
        self.roundTime = .now()
        self.index = watcher.register(self, eventLoop: eventLoop)
        self.sockets = CurlSocketTable(driverIndex: self.index)

        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed") }
        self.multi = multi
        let me = Unmanaged.passUnretained(self).toOpaque()
        // Without its socket and timer callbacks the driver could never run a transfer: as fatal as a failed
        // curl_multi_init. (The keep-alive cache size is a tuning; curl keeps its default if it refuses.)
        let required: [(String, CURLMcode)] = [
            ("CURLMOPT_SOCKETFUNCTION", ccurl_multi_setopt_socket_cb(multi, CURLMOPT_SOCKETFUNCTION, curlSocketTrampoline)),
            ("CURLMOPT_SOCKETDATA", ccurl_multi_setopt_ptr(multi, CURLMOPT_SOCKETDATA, me)),
            ("CURLMOPT_TIMERFUNCTION", ccurl_multi_setopt_timer_cb(multi, CURLMOPT_TIMERFUNCTION, curlTimerTrampoline)),
            ("CURLMOPT_TIMERDATA", ccurl_multi_setopt_ptr(multi, CURLMOPT_TIMERDATA, me)),
        ]
        for (option, code) in required where code != CURLM_OK {
            fatalError("curl_multi_setopt(\(option)) failed: \(String(cString: curl_multi_strerror(code)))")
        }
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, max(1, maxConnections))
    }

    deinit {
        if !self.isShutdown {
            // Nothing can be in flight (transfers retain the driver); just release curl and the slot.
            self.releaseResources()
        }
    }

    /// Number of `curl_multi_socket_action` calls made so far (diagnostics: a paused or idle driver should not
    /// spin).
    public var curlActionCount: Int {
        self.socketActionCount
    }

    /// Number of transfers currently in the multi handle.
    public var activeTransferCount: Int {
        self.live.count
    }

    // MARK: - public API

    /// Starts a transfer. The delegate's calls begin after this returns. If the request is invalid (e.g. CR/LF in a
    /// header) or the driver is shut down, the transfer fails asynchronously.
    public func start(_ request: CurlRequest, delegate: any CurlTransferDelegate) -> CurlTransfer {
        self.start(request, delegate: delegate, connectOnly: false)
    }

    private func start(_ request: CurlRequest, delegate: any CurlTransferDelegate, connectOnly: Bool) -> CurlTransfer {
        self.eventLoop.preconditionInEventLoop()
        let now = NIODeadline.now()
        let transfer = CurlTransfer(driver: self, request: request, delegate: delegate, now: now)
        transfer.connectOnly = connectOnly
        if self.isShutdown || self.shutdownRequested {
            transfer.failure = CurlTransferError(
                code: .cancelled, curlCode: 0, message: "curl driver is shut down", receivedHead: false)
            self.failLater(transfer)
            return transfer
        }
        let easy = self.easyPool.popLast() ?? curl_easy_init()
        guard let easy else {
            transfer.failure = CurlTransferError(
                code: .other, curlCode: 0, message: "curl_easy_init failed", receivedHead: false)
            self.failLater(transfer)
            return transfer
        }
        transfer.easy = easy
        if let error = CurlEasyConfiguration.apply(request, to: easy, transfer: transfer) {
            transfer.failure = error
            self.failLater(transfer)
            return transfer
        }
        // HTTP/1.1 is already forced for every transfer (`apply`); on a tunnel it also keeps h2 out of TLS's ALPN.
        if connectOnly, ccurl_easy_setopt_long(easy, CURLOPT_CONNECT_ONLY, 1) != CURLE_OK {
            transfer.failure = CurlTransferError(
                code: .optionRefused, curlCode: 0, message: "libcurl refused CURLOPT_CONNECT_ONLY", receivedHead: false)
            self.failLater(transfer)
            return transfer
        }
        if self.busy {
            self.intents.append(.add(transfer))
        } else {
            self.enter { self.apply(.add(transfer)) }
        }
        return transfer
    }

    /// Cancels all transfers (their delegates get `.cancelled`), stops timers and cleans up the multi handle.
    /// Idempotent. Called from inside a delegate callback it takes effect when the callback returns.
    public func shutdown() {
        self.eventLoop.preconditionInEventLoop()
        if self.isShutdown { return }
        if self.busy {
            self.shutdownRequested = true
            return
        }
        self.busy = true
        self.performShutdown()
        self.busy = false
    }

    /// A fresh owner id for a new transfer (0 means "no transfer" in the socket table).
    func nextOwnerID() -> UInt {
        self.lastOwnerID &+= 1
        if self.lastOwnerID == 0 { self.lastOwnerID = 1 }
        return self.lastOwnerID
    }

    // MARK: - intents from CurlTransfer

    func requestResume(_ transfer: CurlTransfer, direction: CurlPauseState) {
        guard transfer.phase != .finished, !transfer.cancelRequested else { return }
        if self.busy {
            self.intents.append(.resume(transfer, direction))
        } else {
            self.enter { self.apply(.resume(transfer, direction)) }
        }
    }

    func requestCancel(_ transfer: CurlTransfer) {
        if self.busy {
            self.intents.append(.cancel(transfer))
        } else {
            // Never complete from inside cancel(); curl callbacks already stop delivering (cancelRequested).
            self.eventLoop.assumeIsolated().execute {
                self.enter { self.apply(.cancel(transfer)) }
            }
        }
    }

    func markTouched(_ transfer: CurlTransfer) {
        if !transfer.touched {
            transfer.touched = true
            self.touchedList.append(transfer)
        }
    }

    // MARK: - rounds

    /// Runs `body` as one round of driver work, then settles: batch flushes, completions, queued intents.
    private func enter(_ body: () -> Void) {
        if self.busy {
            body()
            return
        }
        if self.isShutdown { return }
        self.busy = true
        self.roundTime = .now()
        body()
        self.settle()
        self.busy = false
    }

    private func settle() {
        while true {
            if !self.touchedList.isEmpty {
                swap(&self.touchedList, &self.touchedScratch)
                // Bytes moved until the end of this round, not only at its start (`roundTime`): libcurl 8 delivers
                // many buffers in one call, and a round that took long must not leave its transfers looking idle.
                let roundEnd = NIODeadline.now()
                for transfer in self.touchedScratch {
                    transfer.touched = false
                    transfer.lastActivity = max(transfer.lastActivity, roundEnd)
                    if transfer.phase == .running, !transfer.cancelRequested, let delegate = transfer.delegate {
                        delegate.curlTransferDidFinishBatch(transfer)
                    }
                }
                self.touchedScratch.removeAll(keepingCapacity: true)
                continue
            }
            if self.drainCompletions() { continue }
            if !self.intents.isEmpty {
                swap(&self.intents, &self.intentsScratch)
                for intent in self.intentsScratch {
                    self.apply(intent)
                }
                self.intentsScratch.removeAll(keepingCapacity: true)
                continue
            }
            if self.shutdownRequested {
                self.performShutdown()
            }
            return
        }
    }

    private func apply(_ intent: Intent) {
        guard !self.isShutdown, let multi = self.multi else { return }
        switch intent {
        case .add(let transfer):
            guard transfer.phase == .pending else { return }
            if transfer.cancelRequested {
                self.finish(transfer, .failure(self.cancelledError(transfer)))
                return
            }
            transfer.phase = .running
            transfer.liveIndex = self.live.count
            self.live.append(transfer)
            self.owners[transfer.ownerID] = transfer
            let rc = curl_multi_add_handle(multi, transfer.easy)
            if rc != CURLM_OK {
                self.finish(
                    transfer,
                    .failure(
                        CurlTransferError(
                            code: .other, curlCode: Int32(rc.rawValue), message: "curl_multi_add_handle failed",
                            receivedHead: false)))
                return
            }
            if let (deadline, _) = transfer.expiry() { self.ensureSweep(at: deadline) }
        case .resume(let transfer, let direction):
            guard transfer.phase == .running, !transfer.cancelRequested, transfer.pause.contains(direction) else {
                return
            }
            transfer.pause.remove(direction)
            transfer.lastActivity = self.roundTime
            // Both directions together: `curl_easy_pause` sets the whole state, so un-pausing one must restate the
            // other (`CurlPauseState`).
            _ = curl_easy_pause(transfer.easy, transfer.pause.curlBitmask)
            if direction == .receive, !transfer.pause.contains(.receive) {
                for fd in transfer.socketFDs {
                    self.perform(self.sockets.ownerResumed(fd: fd, owner: transfer.ownerID))
                }
            }
            if transfer.phase == .running, transfer.pause.isEmpty {
                self.ensureSweep(at: self.roundTime + transfer.idleTimeout)
            }
        case .cancel(let transfer):
            guard transfer.phase != .finished else { return }
            self.abort(transfer, self.cancelledError(transfer))
        case .releaseTunnel(let easy, let list):
            self.releaseTunnelHandle(easy, list)
        }
    }

    private func cancelledError(_ transfer: CurlTransfer) -> CurlTransferError {
        CurlTransferError(code: .cancelled, curlCode: 0, message: "transfer cancelled", receivedHead: transfer.headDelivered)
    }

    /// Removes a running transfer from curl (closing its connection) and completes it.
    private func abort(_ transfer: CurlTransfer, _ error: CurlTransferError) {
        if transfer.phase == .running, let multi = self.multi {
            _ = curl_multi_remove_handle(multi, transfer.easy)
        }
        self.finish(transfer, .failure(error))
    }

    /// Takes a transfer out of the driver's bookkeeping (the live list the sweeps walk, the owner ids, the socket
    /// table) without touching its easy handle: for a finished transfer and for a tunnel's connector alike.
    private func leaveBookkeeping(_ transfer: CurlTransfer) {
        if transfer.liveIndex >= 0 {
            let i = transfer.liveIndex
            let last = self.live.removeLast()
            if last !== transfer {
                self.live[i] = last
                last.liveIndex = i
            }
            transfer.liveIndex = -1
        }
        self.owners.removeValue(forKey: transfer.ownerID)
        // Every socket it owned, not only the last one curl named: a stale owner must never stay in the table.
        for fd in transfer.socketFDs {
            self.perform(self.sockets.clearOwner(fd: fd, owner: transfer.ownerID))
        }
        transfer.socketFDs.removeAll()
    }

    /// Completes a transfer exactly once: frees curl resources, then tells the delegate and drops it.
    private func finish(_ transfer: CurlTransfer, _ result: Result<Void, CurlTransferError>) {
        guard transfer.phase != .finished else { return }
        transfer.phase = .finished
        self.leaveBookkeeping(transfer)
        if let easy = transfer.easy {
            transfer.easy = nil
            curl_easy_reset(easy)
            // Only a handle whose transfer succeeded goes back to the pool: one whose upload failed mid-body keeps
            // state `curl_easy_reset` does not clear (libcurl 8.14: every later upload on it failed at once, with
            // no connection attempted, until a request without a body ran on it; found by Benchmarks/soak).
            if case .success = result, self.easyPool.count < Self.easyPoolLimit && !self.isShutdown {
                self.easyPool.append(easy)
            } else {
                curl_easy_cleanup(easy)
            }
        }
        if let list = transfer.headerList {
            transfer.headerList = nil
            list.deallocate()
        }
        let delegate = transfer.delegate
        transfer.delegate = nil
        if case .success = result, !transfer.headerParser.trailers.isEmpty {
            delegate?.curlTransfer(transfer, didReceiveTrailers: transfer.headerParser.trailers)
        }
        delegate?.curlTransfer(transfer, didCompleteWith: result)
    }

    /// Delivers `transfer.failure` (set by `start`) on a later tick.
    private func failLater(_ transfer: CurlTransfer) {
        self.eventLoop.assumeIsolated().execute {
            let error = transfer.failure!
            if self.isShutdown {
                self.finish(transfer, .failure(error))
            } else {
                self.enter { self.finish(transfer, .failure(error)) }
            }
        }
    }

    /// Reads CURLMSG_DONE messages. Returns whether any transfer completed.
    private func drainCompletions() -> Bool {
        guard let multi = self.multi else { return false }
        var any = false
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard ccurl_msg_is_done(message) != 0, let easy = ccurl_msg_easy(message) else { continue }
            let code = ccurl_msg_result(message)
            var raw: UnsafeMutableRawPointer?
            _ = ccurl_easy_getinfo_ptr(easy, CURLINFO_PRIVATE, &raw)
            if let raw, code == CURLE_OK {
                let transfer = Unmanaged<CurlTransfer>.fromOpaque(raw).takeUnretainedValue()
                // A connected tunnel stays in the multi handle: removing it would close the connection.
                if transfer.connectOnly, self.adoptTunnel(transfer) {
                    any = true
                    continue
                }
            }
            _ = curl_multi_remove_handle(multi, easy)  // `message` is invalid from here on
            guard let raw else { continue }
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(raw).takeUnretainedValue()
            any = true
            self.finish(transfer, CurlErrorMapping.result(for: code, transfer: transfer))
        }
        return any
    }

    // MARK: - readiness and timers

    /// A batch of ready sockets from the watcher.
    func handleReadiness(_ batch: [CurlReadinessWatcher.Ready]) {
        if let tunnelIndex = self.tunnelIndex, let first = batch.first,
            CurlSocketTag(rawValue: first.tag).driverIndex == tunnelIndex
        {
            // The watcher batches by index, so a batch is either all tunnels or all of curl's own sockets.
            for ready in batch { self.tunnelReady(ready) }
            return
        }
        self.enter {
            for ready in batch {
                guard let fd = self.sockets.readiness(tag: ready.tag) else { continue }  // stale generation
                var bits: Int32 = 0
                if ready.events & ccurl_epollin() != 0 { bits |= CURL_CSELECT_IN }
                if ready.events & ccurl_epollout() != 0 { bits |= CURL_CSELECT_OUT }
                if ready.events & ccurl_epollerr() != 0 { bits |= CURL_CSELECT_ERR }
                if ready.events & ccurl_epollhup() != 0 { bits |= CURL_CSELECT_IN }
                self.socketAction(fd, bits)
                let generation = CurlSocketTag(rawValue: ready.tag).generation
                let action = self.sockets.afterAction(fd: fd, generation: generation) { owner in
                    // An owner that is no longer live is not paused: its socket is re-armed like an unowned one.
                    self.owners[owner]?.pause.contains(.receive) ?? false
                }
                self.perform(action)
            }
        }
    }

    private func socketAction(_ fd: Int32, _ bits: Int32) {
        guard let multi = self.multi else { return }
        self.socketActionCount &+= 1
        var running: Int32 = 0
        _ = curl_multi_socket_action(multi, fd, bits, &running)
    }

    private func perform(_ action: CurlSocketTable.Action) {
        switch action {
        case .none:
            break
        case .add(let fd, let tag, let interest):
            self.watcher.arm(fd: fd, tag: tag, interest: interest, isNew: true)
        case .modify(let fd, let tag, let interest):
            self.watcher.arm(fd: fd, tag: tag, interest: interest, isNew: false)
        case .delete(let fd):
            self.watcher.remove(fd: fd)
        }
    }

    /// CURLMOPT_SOCKETFUNCTION (inside curl).
    func onCurlSocket(easy: UnsafeMutableRawPointer?, fd: Int32, what: Int32) {
        var transfer: CurlTransfer?
        if let easy {
            var raw: UnsafeMutableRawPointer?
            _ = ccurl_easy_getinfo_ptr(easy, CURLINFO_PRIVATE, &raw)
            if let raw {
                transfer = Unmanaged<CurlTransfer>.fromOpaque(raw).takeUnretainedValue()
            }
        }
        if let transfer {
            if what == CurlSocketTable.curlPollRemove {
                if let i = transfer.socketFDs.firstIndex(of: fd) { transfer.socketFDs.remove(at: i) }
            } else if !transfer.socketFDs.contains(fd) {
                transfer.socketFDs.append(fd)
            }
        }
        let owner = transfer.map { CurlSocketTable.owner(transferID: $0.ownerID, mayMultiplex: $0.mayMultiplex) } ?? 0
        self.perform(self.sockets.socketCallback(fd: fd, what: what, owner: owner))
    }

    /// CURLMOPT_TIMERFUNCTION (inside curl, or from `rereadTimeout`).
    fileprivate func onCurlTimer(milliseconds: Int) {
        switch self.timer.curlTimer(milliseconds: milliseconds, now: .now()) {
        case .none:
            break
        case .cancel:
            self.timerTask?.cancel()
            self.timerTask = nil
        case .runSoon:
            self.eventLoop.assumeIsolated().execute {
                self.timer.immediateRan()
                self.enter {
                    self.socketAction(ccurl_socket_timeout(), 0)
                    self.rereadTimeout()
                }
            }
        case .schedule(let deadline):
            self.timerTask?.cancel()
            self.timerTask = self.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                self.timer.scheduledFired()
                self.timerTask = nil
                self.enter {
                    self.socketAction(ccurl_socket_timeout(), 0)
                    self.rereadTimeout()
                }
            }
        }
    }

    /// After a timer fired: curl only reports changes of its deadline, and we may have kept an earlier task than
    /// curl asked for, so ask curl what it wants now.
    private func rereadTimeout() {
        guard let multi = self.multi else { return }
        var ms = -1
        _ = curl_multi_timeout(multi, &ms)
        self.onCurlTimer(milliseconds: ms)
    }

    // MARK: - our own timeouts

    /// Makes sure a sweep runs no later than `deadline` (plus slack).
    func ensureSweep(at deadline: NIODeadline) {
        if let existing = self.sweepDeadline, existing <= deadline + Self.sweepSlack { return }
        self.sweepTask?.cancel()
        self.sweepDeadline = deadline
        self.sweepTask = self.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.sweepTask = nil
            self.sweepDeadline = nil
            self.enter { self.sweep() }
        }
    }

    private func sweep() {
        let now = self.roundTime
        var next: NIODeadline?
        var i = 0
        while i < self.live.count {
            let transfer = self.live[i]
            if let (deadline, code) = transfer.expiry() {
                if deadline <= now {
                    let message =
                        switch code {
                        case .responseTimeout: "no response head in time"
                        case .deadlineExceeded: "deadline exceeded"
                        default: "transfer idle for too long"
                        }
                    self.abort(
                        transfer,
                        CurlTransferError(code: code, curlCode: 0, message: message, receivedHead: transfer.headDelivered))
                    continue  // swap-remove put another transfer at `i`
                }
                next = next.map { min($0, deadline) } ?? deadline
            }
            i += 1
        }
        if let next {
            self.ensureSweep(at: max(next, now + Self.sweepSlack))
        }
    }

    // MARK: - shutdown

    private func performShutdown() {
        self.shutdownRequested = false
        // From here on `start` fails asynchronously, so completions below cannot add work we would miss.
        self.isShutdown = true
        self.tunnelHost?.shutdown()
        for tunnel in self.tunnels.values {
            if tunnel.phase == .open { self.releaseTunnel(tunnel) }
            tunnel.delegate?.curlTunnelWasClosed(tunnel)
        }
        self.tunnels.removeAll()
        var pendingAdds: [CurlTransfer] = []
        for case .add(let transfer) in self.intents {
            pendingAdds.append(transfer)
        }
        self.intents.removeAll()
        while let transfer = self.live.last {
            self.abort(transfer, self.cancelledError(transfer))
        }
        for transfer in pendingAdds {
            self.finish(transfer, .failure(self.cancelledError(transfer)))
        }
        self.releaseResources()
    }

    private func releaseResources() {
        self.timerTask?.cancel()
        self.timerTask = nil
        self.sweepTask?.cancel()
        self.sweepTask = nil
        for action in self.sockets.removeAll() {
            self.perform(action)
        }
        if let multi = self.multi {
            self.multi = nil
            // No callbacks into a driver that is going away (cleanup closes the cached connections).
            _ = ccurl_multi_setopt_socket_cb(multi, CURLMOPT_SOCKETFUNCTION, nil)
            _ = ccurl_multi_setopt_timer_cb(multi, CURLMOPT_TIMERFUNCTION, nil)
            curl_multi_cleanup(multi)
        }
        for easy in self.easyPool {
            curl_easy_cleanup(easy)
        }
        self.easyPool.removeAll()
        self.watcher.unregister(self.index)
        if let tunnelIndex = self.tunnelIndex { self.watcher.unregister(tunnelIndex) }
    }
}

@available(*, unavailable)
extension CurlLoopDriver: Sendable {}

// MARK: - tunnels

extension CurlLoopDriver {
    /// Opens a raw connection to `request.origin` (`CurlTunnel`); `request.method`, target and headers are not sent
    /// (the caller writes its own bytes once `curlTunnelDidConnect` came). Connect failures arrive through the
    /// delegate, never from inside this call.
    public func openTunnel(_ request: CurlRequest, delegate: any CurlTunnelDelegate) -> CurlTunnel {
        self.eventLoop.preconditionInEventLoop()
        let host: CurlLoopDriver
        if let existing = self.tunnelHost {
            host = existing
        } else {
            // Connect-only connections are never evicted from their cache, so its size must not bound them.
            host = CurlLoopDriver(eventLoop: self.eventLoop, watcher: self.watcher, maxConnections: 1 << 20)
            host.tunnelIndex = self.watcher.register(host, eventLoop: self.eventLoop)
            if self.isShutdown || self.shutdownRequested { host.shutdown() }
            self.tunnelHost = host
        }
        let tunnel = CurlTunnel(driver: host, delegate: delegate)
        let connector = CurlTunnelConnector(tunnel: tunnel)
        tunnel.connector = host.start(request, delegate: connector, connectOnly: true)
        return tunnel
    }

    /// Number of open tunnels of this loop (diagnostics).
    public var openTunnelCount: Int {
        self.tunnelHost?.tunnels.count ?? 0
    }

    /// A connect-only transfer finished its connect: takes its handle over as the tunnel's, still in the multi
    /// handle. Returns false when nobody wants the tunnel any more (the transfer then completes normally, which
    /// removes the handle and closes the connection).
    private func adoptTunnel(_ transfer: CurlTransfer) -> Bool {
        guard let connector = transfer.delegate as? CurlTunnelConnector, let tunnel = connector.tunnel,
            tunnel.phase == .connecting, tunnel.connector === transfer, !transfer.cancelRequested, transfer.failure == nil,
            let easy = transfer.easy, self.tunnelIndex != nil
        else { return false }
        var fd: curl_socket_t = -1
        guard ccurl_easy_getinfo_socket(easy, &fd) == CURLE_OK, fd >= 0 else { return false }
        // Out of the transfer bookkeeping (sweeps, owners, the socket table) without touching the handle.
        transfer.phase = .finished
        self.leaveBookkeeping(transfer)
        // curl normally said REMOVE before DONE; if it did not, its registration would fight ours for the fd.
        self.perform(self.sockets.socketCallback(fd: fd, what: CurlSocketTable.curlPollRemove, owner: 0))
        transfer.easy = nil
        transfer.delegate = nil
        // No callback of this handle may reach the transfer object, which is going away.
        _ = ccurl_easy_setopt_ptr(easy, CURLOPT_PRIVATE, nil)
        tunnel.easy = easy
        tunnel.headerList = transfer.headerList
        transfer.headerList = nil
        tunnel.connector = nil
        tunnel.fd = fd
        self.lastTunnelGeneration &+= 1
        tunnel.generation = self.lastTunnelGeneration
        tunnel.phase = .open
        self.tunnels[fd] = tunnel
        tunnel.delegate?.curlTunnelDidConnect(tunnel)
        return true
    }

    func armTunnel(_ tunnel: CurlTunnel) {
        guard tunnel.phase == .open, let tunnelIndex = self.tunnelIndex else { return }
        let tag = CurlSocketTag(driverIndex: tunnelIndex, generation: tunnel.generation, fd: tunnel.fd).rawValue
        self.watcher.arm(fd: tunnel.fd, tag: tag, interest: tunnel.interest, isNew: !tunnel.registered)
        tunnel.registered = true
        tunnel.armed = !tunnel.interest.isEmpty
    }

    private func tunnelReady(_ ready: CurlReadinessWatcher.Ready) {
        let tag = CurlSocketTag(rawValue: ready.tag)
        guard let tunnel = self.tunnels[tag.fd], tunnel.generation == tag.generation, tunnel.phase == .open else { return }
        tunnel.armed = false
        let failed = ready.events & (ccurl_epollerr() | ccurl_epollhup()) != 0
        let interest = tunnel.interest
        if interest.contains(.write), failed || ready.events & ccurl_epollout() != 0 {
            tunnel.delegate?.curlTunnelIsWritable(tunnel)
        }
        if tunnel.phase == .open, interest.contains(.read), failed || ready.events & ccurl_epollin() != 0 {
            tunnel.delegate?.curlTunnelIsReadable(tunnel)
        }
        // Level-triggered: what is still wanted is reported again.
        if tunnel.phase == .open, !tunnel.armed, !tunnel.interest.isEmpty {
            self.armTunnel(tunnel)
        }
    }

    func closeTunnel(_ tunnel: CurlTunnel) {
        switch tunnel.phase {
        case .closed:
            return
        case .connecting:
            tunnel.phase = .closed
            let connector = tunnel.connector
            tunnel.connector = nil
            connector?.cancel()
        case .open:
            self.releaseTunnel(tunnel)
        }
    }

    /// Stops watching the socket, then removes the handle (which closes the fd, so the watcher must forget it first).
    private func releaseTunnel(_ tunnel: CurlTunnel) {
        tunnel.phase = .closed
        if self.tunnels[tunnel.fd] === tunnel { self.tunnels.removeValue(forKey: tunnel.fd) }
        if tunnel.registered { self.watcher.remove(fd: tunnel.fd) }
        tunnel.registered = false
        tunnel.armed = false
        guard let easy = tunnel.easy else { return }
        tunnel.easy = nil
        let list = tunnel.headerList
        tunnel.headerList = nil
        if self.busy && !self.isShutdown {
            self.intents.append(.releaseTunnel(easy, list))
        } else {
            self.releaseTunnelHandle(easy, list)
        }
    }

    private func releaseTunnelHandle(_ easy: UnsafeMutableRawPointer, _ list: CurlHeaderList.Allocated?) {
        if let multi = self.multi { _ = curl_multi_remove_handle(multi, easy) }
        curl_easy_cleanup(easy)
        list?.deallocate()
    }
}

// MARK: - C trampolines

private let curlSocketTrampoline: curl_socket_callback = { easy, fd, what, userp, _ in
    let driver = Unmanaged<CurlLoopDriver>.fromOpaque(userp!).takeUnretainedValue()
    driver.onCurlSocket(easy: easy, fd: fd, what: what)
    return 0
}

private let curlTimerTrampoline: curl_multi_timer_callback = { _, ms, userp in
    let driver = Unmanaged<CurlLoopDriver>.fromOpaque(userp!).takeUnretainedValue()
    driver.onCurlTimer(milliseconds: ms)
    return 0
}
