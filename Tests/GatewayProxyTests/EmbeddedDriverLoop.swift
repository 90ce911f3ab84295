import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The event loop a test gives a `CurlLoopDriver` that lives on an `EmbeddedChannel`'s loop.
///
/// `EmbeddedEventLoop` may only be used from the thread that made it, but the driver's `CurlReadinessWatcher` hands
/// ready sockets back with `execute` from its own epoll thread, which every real event loop allows. A handler test
/// that starts a real transfer (its upstream, 127.0.0.1:9, refuses the connection) got that readiness on the watcher
/// thread while the test thread ran the loop: a data race on the embedded loop's task queue (ThreadSanitizer:
/// `EmbeddedEventLoop.scheduleTask` from `CurlReadinessWatcher.run` against `advanceTime` on the test thread; NIO
/// printed "EmbeddedEventLoop is not thread-safe").
///
/// Here everything the test thread does goes straight to the embedded loop, and an `execute` from any other thread
/// is counted and dropped: these tests check what the gateway answers on its own, and a refused upstream's
/// readiness, arriving at a moment that depends on the machine, only made them nondeterministic.
final class EmbeddedDriverLoop: EventLoop, @unchecked Sendable {
    // @unchecked: `embedded` is only touched on `thread` (checked in every method that reaches it); `parked` is
    // behind its lock.
    let embedded: EmbeddedEventLoop
    private let thread = pthread_self()
    private let parked = NIOLockedValueBox<Int>(0)

    init(_ embedded: EmbeddedEventLoop) { self.embedded = embedded }

    private var onTestThread: Bool { pthread_equal(self.thread, pthread_self()) != 0 }

    /// How many `execute` calls came from another thread (and were dropped).
    var parkedCount: Int { self.parked.withLockedValue { $0 } }

    var inEventLoop: Bool { self.onTestThread }

    var now: NIODeadline { self.embedded.now }

    func execute(_ task: @escaping @Sendable () -> Void) {
        guard self.onTestThread else {
            self.parked.withLockedValue { $0 += 1 }
            return
        }
        self.embedded.execute(task)
    }

    @discardableResult
    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        precondition(self.onTestThread, "EmbeddedDriverLoop: scheduleTask off the test thread")
        return self.embedded.scheduleTask(deadline: deadline, task)
    }

    @discardableResult
    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        precondition(self.onTestThread, "EmbeddedDriverLoop: scheduleTask off the test thread")
        return self.embedded.scheduleTask(in: delay, task)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        self.embedded.shutdownGracefully(queue: queue, callback)
    }
}
