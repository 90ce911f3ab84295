import CPlatform
import CurlNIO
import Dispatch
import GatewayConfig
import GatewayControl
import GatewayKeySets
import GatewayProxy
import GatewaySessions
import GatewayTokenService
import GatewayTokens
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Assembles the gateway from a validated configuration: event loops, one libcurl driver and one token cache per
/// loop, the data-path listener, the admin listener and (when no upstream is configured) the demo upstream. Runs
/// until SIGTERM or SIGINT, then drains.
public enum GatewayServer {
    /// Runs the gateway until a termination signal. Throws `ConfigErrors` for problems in the configuration's
    /// referenced files (keys, secrets) and other errors for runtime failures (ports in use). With `configPath`, SIGHUP
    /// and changes of that file reload the configuration.
    public static func run(
        configuration: GatewayConfiguration, configPath: String? = nil, environment: [String: String] = [:], logger: Logger
    ) async throws {
        CurlGlobal.initialize()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoopCount())
        let drivers = try CurlDriverGroup(group: group)
        var demoChannel: (any Channel)? = nil
        var demoSocket: String? = nil
        if configuration.upstreams.contains(where: \.isEmbeddedDemo) {
            let path = "/tmp/portcullis-demo-\(getpid()).sock"
            demoChannel = try await DemoUpstream.start(group: group, socketPath: path)
            demoSocket = path
            logger.info("no upstream configured: serving the embedded demo upstream")
        }
        let metrics = MetricsRegistry()
        let shared = GatewayGeneration.Shared(
            group: group, drivers: drivers, readiness: Readiness(), metrics: metrics, demoSocket: demoSocket, logger: logger)
        let readiness = shared.readiness
        let first = try await GatewayGeneration.build(configuration, shared: shared, previous: nil)

        // One LoopContext per loop, created on its loop and reached through NIOLoopBound from channels on it.
        var bound: [(any EventLoop, NIOLoopBound<LoopContext>)] = []
        for loop in group.makeIterator() {
            let context = try await loop.submit {
                NIOLoopBound(LoopContext(
                    driver: drivers.driver(for: loop), policy: first.policy, tokenCacheEntries: configuration.auth.tokenCacheEntries,
                    leeway: Double(configuration.auth.leewaySeconds)), eventLoop: loop)
            }.get()
            bound.append((loop, context))
        }
        let loopContexts = LoopContexts(bound)
        // Listeners open before remote keys have loaded; /readyz says when they have.
        try await first.activate(on: loopContexts, shared: shared, previous: nil)
        let reloader = ConfigReloader(
            path: configPath ?? "", environment: environment, shared: shared, loops: loopContexts, current: first)

        let connections = ConnectionRegistry()
        let accessLog: AccessLogSink =
            !configuration.log.accessLog ? .off : configuration.log.format == .json ? .json : .logger(Logger(label: "portcullis.access"))
        let limits = configuration.limits
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        let decoderLimitsFinal = decoderLimits

        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 64 * 1024, high: 256 * 1024))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard connections.open(channel, limit: limits.maxConnections) else {
                        channel.close(promise: nil)
                        return
                    }
                    let loop = loopContexts.context(on: channel.eventLoop)
                    loop.metrics.connectionOpened()
                    let bound = NIOLoopBound(loop, eventLoop: channel.eventLoop)
                    channel.closeFuture.whenComplete { _ in
                        connections.close(channel)
                        bound.value.metrics.connectionClosed()
                    }
                    let sync = channel.pipeline.syncOperations
                    let clocks = IdleConnectionHandler(
                        headerTimeout: .milliseconds(Int64(limits.headerTimeoutMs)), idleTimeout: .milliseconds(Int64(limits.idleTimeoutMs)),
                        loop: loop, accessLog: accessLog)
                    try sync.addHandler(clocks)
                    // No HTTPServerPipelineHandler: the gateway handler's state machine orders pipelined requests.
                    try sync.configureHTTPServerPipeline(
                        withPipeliningAssistance: false, withErrorHandling: false,
                        withOutboundHeaderValidation: true, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimitsFinal)
                    try addBoundaries(of: clocks, to: sync)
                    try sync.addHandler(GatewayHandler(loop: loop, accessLog: accessLog, clock: wallClock))
                }
            }
            .bind(host: configuration.listen.host, port: configuration.listen.port)
            .get()
        logger.info("listening on \(describe(server.localAddress, fallback: configuration.listen))")

        // A scrape reads every loop's counters on its own loop and adds them up.
        let scrape: @Sendable () -> EventLoopFuture<String> = {
            let loop = group.next()
            let promise = loop.makePromise(of: String.self)
            promise.completeWithTask {
                let generation = await reloader.current
                if let service = generation.tokenService, service.configuration.revocationsFeedToken != nil {
                    metrics.setGauge("portcullis_revocation_feed_waiters", [], Double(service.sync.waiterCount))
                }
                let loops = try await loopContexts.collect { ($0.metrics.snapshot, $0.revocations.count) }.get()
                var total = LoopMetrics.Snapshot()
                for (snapshot, _) in loops { total.merge(snapshot) }
                return metrics.render(
                    data: total, keySets: generation.remoteKeys?.status() ?? [],
                    revokedSessions: generation.tokenService == nil && generation.followers == nil ? nil : loops.first?.1)
            }
            return promise.futureResult
        }

        var admin: (any Channel)? = nil
        if let adminListen = configuration.adminListen {
            admin = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // The same header and idle clocks as the data path (a slow client must not hold an admin
                        // connection forever); its 408s are not data-path requests, so they are not counted.
                        let clocks = IdleConnectionHandler(
                            headerTimeout: .milliseconds(Int64(limits.headerTimeoutMs)),
                            idleTimeout: .milliseconds(Int64(limits.idleTimeoutMs)),
                            loop: loopContexts.context(on: channel.eventLoop), accessLog: nil, guardsChunkedBodies: false)
                        try channel.pipeline.syncOperations.addHandler(clocks)
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try addBoundaries(of: clocks, to: channel.pipeline.syncOperations)
                        try channel.pipeline.syncOperations.addHandler(SimpleResponder(respondAsync: { head, body, loop in
                            let promise = loop.makePromise(of: SimpleResponder.Response.self)
                            promise.completeWithTask {
                                let generation = await reloader.current
                                // The secret follows reloads; the listener's address cannot change without a restart.
                                let introspection = AdminEndpoints.IntrospectionAccess(
                                    token: generation.configuration.tokenService?.introspectionToken, adminListen: adminListen)
                                return try await AdminEndpoints.answer(
                                    head, body, readiness: readiness, sessions: generation.tokenService?.sessions,
                                    introspection: introspection, metrics: scrape, on: loop).get()
                            }
                            return promise.futureResult
                        }))
                    }
                }
                .bind(host: adminListen.host, port: adminListen.port)
                .get()
            logger.info("admin listening on \(describe(admin?.localAddress, fallback: adminListen))")
            if let service = configuration.tokenService, service.introspectionToken == nil, !adminListen.isLoopback {
                logger.warning(
                    "POST /introspect is off: the admin listener \(adminListen) is not a loopback address and token_service.introspection_token is not set")
            }
        }

        if let configPath, !configPath.isEmpty {
            await reloader.watchFile()
            onHangup { Task { await reloader.reload(reason: "SIGHUP") } }
        }

        let signal = await waitForTerminationSignal()
        await reloader.stop()
        let generation = await reloader.current
        let drainSeconds = generation.configuration.limits.drainSeconds
        logger.info("received \(signal), draining for up to \(drainSeconds) s")
        try? await server.close()
        // Revocation-feed readers held in a long poll are answered now (nothing new), or they would hold the drain
        // for up to 30 s; their followers reconnect to another replica or to this one when it is back.
        generation.tokenService?.sync.stop()
        connections.quiesceAll()
        let deadline = NIODeadline.now() + .seconds(Int64(drainSeconds))
        while connections.count > 0 && NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        try? await admin?.close()
        try? await demoChannel?.close()
        if let demoSocket { unlink(demoSocket) }
        try? await loopContexts.apply { $0.accessLogWriter.flush() }.get()
        await generation.retire(replacedBy: nil, readiness: readiness, grace: .zero)
        // Drivers first: the watcher thread must stop handing readiness to loops before they go away.
        await drivers.shutdown()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }

    /// Puts the clocks' `RequestBoundaryHandler` right after the HTTP decoder (in front of anything that holds
    /// pipelined requests back): the clocks must see every head as it is decoded.
    static func addBoundaries(of clocks: IdleConnectionHandler, to sync: ChannelPipeline.SynchronousOperations) throws {
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        try sync.addHandler(clocks.boundaries(), position: .after(decoder))
    }

    static func describe(_ address: SocketAddress?, fallback: ListenAddress) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return fallback.description }
        return ListenAddress(host: ip, port: port).description
    }

    /// One event loop per CPU this process may run on: the cgroup limit NIO reads, narrowed by the affinity mask
    /// (`taskset`, a pinned sidecar), so two loops never time-slice one core.
    static func eventLoopCount() -> Int {
        let allowed = Int(cplatform_affinity_cpu_count())
        return allowed > 0 ? max(1, min(System.coreCount, allowed)) : System.coreCount
    }

    /// Seconds since the epoch, with sub-second precision (vDSO, no syscall).
    @Sendable public static func wallClock() -> Double {
        WallClock.now()
    }

    /// Calls `handler` on every SIGHUP (on a dispatch queue).
    static func onHangup(_ handler: @escaping @Sendable () -> Void) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "portcullis.sighup"))
        source.setEventHandler(handler: handler)
        source.resume()
        SignalSources.keep([source])
    }

    /// Suspends until SIGTERM or SIGINT and returns its name.
    static func waitForTerminationSignal() async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            let once = Mutex(false)
            let queue = DispatchQueue(label: "portcullis.signals")
            var sources: [any DispatchSourceSignal] = []
            for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler {
                    let first = once.withLock { fired in
                        defer { fired = true }
                        return !fired
                    }
                    if first { continuation.resume(returning: name) }
                }
                source.resume()
                sources.append(source)
            }
            // The sources must outlive this scope; they live until the process exits.
            SignalSources.keep(sources)
        }
    }
}

/// Keeps signal sources alive for the life of the process.
private enum SignalSources {
    nonisolated(unsafe) static var kept: [any DispatchSourceSignal] = []
    static func keep(_ sources: [any DispatchSourceSignal]) { kept.append(contentsOf: sources) }
}

/// Open client connections: counted for `limits.max_connections`, and kept so that shutdown can ask each one to
/// finish its current request and close (`ChannelShouldQuiesceEvent`, handled by `GatewayHandler`). The
/// lock is taken once per connection, never per request.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var quiescing = false
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.channels.count } }

    /// Registers a new connection; false when over `limit` or shutting down (the caller closes it).
    func open(_ channel: any Channel, limit: Int) -> Bool {
        state.withLock { state in
            guard !state.quiescing, state.channels.count < limit else { return false }
            state.channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func close(_ channel: any Channel) {
        _ = state.withLock { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Idle keep-alive connections close now; busy ones after their current response.
    func quiesceAll() {
        let channels = state.withLock { state in
            state.quiescing = true
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }
}
