import GatewayProxy
import NIOCore

/// Every event loop's `LoopContext`, for the changes that must reach all of them: a new policy (reload, a refreshed
/// key set) or a revoked session. Each change is applied on the context's own loop, so the data path never locks.
package struct LoopContexts: Sendable {
    private let contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>]
    private let loops: [any EventLoop]

    package init(_ bound: [(any EventLoop, NIOLoopBound<LoopContext>)]) {
        var contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>] = [:]
        for (loop, context) in bound { contexts[ObjectIdentifier(loop)] = context }
        self.contexts = contexts
        self.loops = bound.map(\.0)
    }

    /// The context of `loop`; call on that loop.
    package func context(on loop: any EventLoop) -> LoopContext {
        contexts[ObjectIdentifier(loop)]!.value
    }

    /// `read` of every loop's context, each read on its own loop.
    package func collect<Value: Sendable>(_ read: @escaping @Sendable (LoopContext) -> Value) -> EventLoopFuture<[Value]> {
        let futures = loops.map { loop in
            let bound = contexts[ObjectIdentifier(loop)]!
            return loop.submit { read(bound.value) }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loops[0])
    }

    /// Runs `change` on every loop, each on its own loop; the future completes when all have run.
    @discardableResult
    package func apply(_ change: @escaping @Sendable (LoopContext) -> Void) -> EventLoopFuture<Void> {
        let futures = loops.map { loop in
            let bound = contexts[ObjectIdentifier(loop)]!
            return loop.submit { change(bound.value) }
        }
        return EventLoopFuture.andAllSucceed(futures, on: loops[0])
    }
}
