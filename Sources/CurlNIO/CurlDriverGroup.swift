import NIOCore

/// One `CurlLoopDriver` per event loop of a group, sharing one `CurlReadinessWatcher`.
public final class CurlDriverGroup: Sendable {
    public let watcher: CurlReadinessWatcher
    /// Immutable after init; each driver is only used on its own loop.
    private let drivers: UnsafeSendableBox<[ObjectIdentifier: CurlLoopDriver]>
    private let loops: [any EventLoop]

    public init(group: any EventLoopGroup, maxConnectionsPerLoop: Int = 256) throws {
        let watcher = try CurlReadinessWatcher()
        var drivers: [ObjectIdentifier: CurlLoopDriver] = [:]
        var loops: [any EventLoop] = []
        for loop in group.makeIterator() {
            drivers[ObjectIdentifier(loop)] = CurlLoopDriver(
                eventLoop: loop, watcher: watcher, maxConnections: maxConnectionsPerLoop)
            loops.append(loop)
        }
        self.watcher = watcher
        self.drivers = UnsafeSendableBox(drivers)
        self.loops = loops
    }

    /// The driver of `loop`. Must be called on that loop.
    public func driver(for loop: any EventLoop) -> CurlLoopDriver {
        loop.preconditionInEventLoop()
        guard let driver = self.drivers.value[ObjectIdentifier(loop)] else {
            preconditionFailure("event loop does not belong to this CurlDriverGroup")
        }
        return driver
    }

    /// Shuts every driver down on its loop (their transfers complete with `.cancelled`), then stops the watcher.
    public func shutdown() async {
        for loop in self.loops {
            let driver = UnsafeSendableBox(self.drivers.value[ObjectIdentifier(loop)]!)
            try? await loop.submit { driver.value.shutdown() }.get()
        }
        self.watcher.shutdown()
    }

    /// Blocking variant of `shutdown()`. Must not be called on one of the group's loops.
    public func syncShutdown() {
        for loop in self.loops {
            precondition(!loop.inEventLoop, "syncShutdown() must not be called on an event loop of the group")
            let driver = UnsafeSendableBox(self.drivers.value[ObjectIdentifier(loop)]!)
            try? loop.submit { driver.value.shutdown() }.wait()
        }
        self.watcher.shutdown()
    }
}
