import CCurl
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The shared epoll thread. curl's sockets are registered level-triggered with EPOLLONESHOT by the drivers (on
/// their own loops — `epoll_ctl` is safe concurrently with `epoll_wait`); this thread only waits and hands each
/// driver its batch of ready sockets through `eventLoop.execute`. It never touches curl.
public final class CurlReadinessWatcher: Sendable {
    /// A ready socket as reported by epoll.
    struct Ready {
        var tag: UInt64
        var events: UInt32
    }

    /// The watcher's view of one driver; `driver` is only read on `eventLoop`.
    final class Slot: @unchecked Sendable {
        let eventLoop: any EventLoop
        // Only accessed on `eventLoop`.
        weak var driver: CurlLoopDriver?

        init(eventLoop: any EventLoop, driver: CurlLoopDriver) {
            self.eventLoop = eventLoop
            self.driver = driver
        }
    }

    private struct State {
        /// Indices are never reused, so a late event for a shut-down driver cannot match a newer driver's socket.
        var slots: [Slot?] = []
        var running = true
    }

    private let epfd: Int32
    private let wakeFD: Int32
    private let state = NIOLockedValueBox(State())
    private let thread = NIOLockedValueBox<pthread_t?>(nil)

    public init() throws {
        CurlGlobal.initialize()
        let epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw CurlWatcherError(errno: errno, call: "epoll_create1") }
        let wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeFD >= 0 else {
            let e = errno
            close(epfd)
            throw CurlWatcherError(errno: e, call: "eventfd")
        }
        guard ccurl_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, ccurl_epollin(), CurlSocketTag.wakeUpRawValue) == 0 else {
            let e = errno
            close(epfd)
            close(wakeFD)
            throw CurlWatcherError(errno: e, call: "epoll_ctl")
        }
        self.epfd = epfd
        self.wakeFD = wakeFD

        let box = Unmanaged.passRetained(ThreadContext(watcher: self))
        var tid = pthread_t()
        let rc = pthread_create(
            &tid, nil,
            { raw in
                let context = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
                context.watcher.run()
                return nil
            }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            close(epfd)
            close(wakeFD)
            throw CurlWatcherError(errno: rc, call: "pthread_create")
        }
        self.thread.withLockedValue { $0 = tid }
    }

    private final class ThreadContext {
        let watcher: CurlReadinessWatcher
        init(watcher: CurlReadinessWatcher) { self.watcher = watcher }
    }

    /// Stops and joins the thread. Drivers must be shut down first. Idempotent. (The thread retains the watcher
    /// until it exits, so a watcher that is never shut down lives for the rest of the process.)
    public func shutdown() {
        let tid: pthread_t? = self.thread.withLockedValue { t in
            defer { t = nil }
            return t
        }
        guard let tid else { return }
        self.state.withLockedValue { $0.running = false }
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(self.wakeFD, $0.baseAddress, 8) }
        pthread_join(tid, nil)
        close(self.epfd)
        close(self.wakeFD)
    }

    // MARK: - driver registration

    func register(_ driver: CurlLoopDriver, eventLoop: any EventLoop) -> UInt16 {
        let slot = Slot(eventLoop: eventLoop, driver: driver)
        return self.state.withLockedValue { state in
            precondition(state.slots.count <= Int(CurlSocketTag.maxDriverIndex), "too many curl drivers")
            state.slots.append(slot)
            return UInt16(state.slots.count - 1)
        }
    }

    func unregister(_ index: UInt16) {
        self.state.withLockedValue { state in
            state.slots[Int(index)] = nil
        }
    }

    // MARK: - epoll_ctl (called on the drivers' loops)

    private static func events(for interest: CurlSocketInterest) -> UInt32 {
        var events = ccurl_epolloneshot()
        if interest.contains(.read) { events |= ccurl_epollin() }
        if interest.contains(.write) { events |= ccurl_epollout() }
        return events
    }

    /// Registers or re-arms (ONESHOT) `fd`. ADD falls back to MOD and vice versa, so a stale registration (fd closed
    /// and reused without a REMOVE) heals itself.
    func arm(fd: Int32, tag: UInt64, interest: CurlSocketInterest, isNew: Bool) {
        let events = Self.events(for: interest)
        if isNew {
            if ccurl_epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, events, tag) != 0 && errno == EEXIST {
                _ = ccurl_epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, events, tag)
            }
        } else {
            if ccurl_epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, events, tag) != 0 && errno == ENOENT {
                _ = ccurl_epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, events, tag)
            }
        }
    }

    func remove(fd: Int32) {
        // Fails harmlessly (EBADF/ENOENT) when curl already closed the socket.
        _ = ccurl_epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, 0, 0)
    }

    // MARK: - the thread

    private func run() {
        let capacity = 256
        let tags = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
        let events = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        defer {
            tags.deallocate()
            events.deallocate()
        }
        var batches: [UInt16: [Ready]] = [:]
        while true {
            let n = ccurl_epoll_wait(self.epfd, tags, events, Int32(capacity), -1)
            if n < 0 {
                if errno == EINTR { continue }
                break
            }
            var stop = false
            for i in 0..<Int(n) {
                let tag = tags[i]
                if tag == CurlSocketTag.wakeUpRawValue {
                    var value: UInt64 = 0
                    _ = withUnsafeMutableBytes(of: &value) { read(self.wakeFD, $0.baseAddress, 8) }
                    if !self.state.withLockedValue({ $0.running }) { stop = true }
                    continue
                }
                let index = CurlSocketTag(rawValue: tag).driverIndex
                batches[index, default: []].append(Ready(tag: tag, events: events[i]))
            }
            if stop { break }
            if batches.isEmpty { continue }
            let slots = self.state.withLockedValue { $0.slots }
            for (index, batch) in batches {
                guard Int(index) < slots.count, let slot = slots[Int(index)] else { continue }
                let sendable = UnsafeSendableBox(batch)
                slot.eventLoop.execute {
                    slot.driver?.handleReadiness(sendable.value)
                }
            }
            batches.removeAll(keepingCapacity: true)
        }
    }
}

/// A failed system call while setting up the watcher.
public struct CurlWatcherError: Error, Sendable, Hashable, CustomStringConvertible {
    public var errno: Int32
    public var call: String
    public var description: String { "\(self.call) failed: errno \(self.errno)" }
}

/// Carries a value across `execute` when we know it is only used on the target loop afterwards.
struct UnsafeSendableBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
