import CurlNIO
import GatewayConfig
import GatewayControl
import GatewayKeySets
import GatewayProxy
import GatewayTokenService
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway as a service of the process's `ServiceGroup`. `start` opens everything — event loops, libcurl
/// drivers, the first configuration generation, the data-path and admin listeners (before remote keys have loaded;
/// `/readyz` says when they have) — and `run` serves until the group shuts down gracefully (SIGTERM, SIGINT). Then
/// it drains: the data-path listener closes, idle keep-alive connections close at once and busy ones after their
/// current response, for up to `limits.drain_seconds` of the configuration running then; then everything stops.
final class GatewayService: Service {
    /// The running configuration and its reloads; the reload service drives it.
    let reloader: ConfigReloader
    private let group: MultiThreadedEventLoopGroup
    private let drivers: CurlDriverGroup
    private let readiness: Readiness
    private let loopContexts: LoopContexts
    private let connections: ConnectionRegistry
    private let server: any Channel
    private let admin: (any Channel)?
    private let demoChannel: (any Channel)?
    private let demoSocket: String?
    private let logger: Logger

    private init(
        reloader: ConfigReloader, group: MultiThreadedEventLoopGroup, drivers: CurlDriverGroup, readiness: Readiness,
        loopContexts: LoopContexts, connections: ConnectionRegistry, server: any Channel, admin: (any Channel)?,
        demoChannel: (any Channel)?, demoSocket: String?, logger: Logger
    ) {
        self.reloader = reloader
        self.group = group
        self.drivers = drivers
        self.readiness = readiness
        self.loopContexts = loopContexts
        self.connections = connections
        self.server = server
        self.admin = admin
        self.demoChannel = demoChannel
        self.demoSocket = demoSocket
        self.logger = logger
    }

    /// Builds the first generation and opens the listeners. Throws `ConfigErrors` for problems in the
    /// configuration's referenced files and other errors for runtime failures (ports in use).
    static func start(
        configuration: GatewayConfiguration, configPath: String, environment: [String: String], logger: Logger
    ) async throws -> GatewayService {
        CurlGlobal.initialize()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: GatewayServer.eventLoopCount())
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
        let libcurl = CurlLibraryVersion.running
        logger.info("libcurl \(libcurl)\(libcurl.supportsHTTP2 ? "" : " (without HTTP/2)")")
        let shared = GatewayGeneration.Shared(
            group: group, drivers: drivers, readiness: Readiness(), metrics: metrics, demoSocket: demoSocket,
            listenerTLS: ListenerTLSContext(), logger: logger, libcurl: libcurl,
            allowHTTP2OnOldLibcurl: LibcurlHTTP2Gate.allowsOld(environment: environment))
        let readiness = shared.readiness
        let first = try await GatewayGeneration.build(configuration, shared: shared, previous: nil)

        // One LoopContext per loop, created on its loop and reached through NIOLoopBound from channels on it.
        var bound: [(any EventLoop, NIOLoopBound<LoopContext>)] = []
        for loop in group.makeIterator() {
            let context = try await loop.submit {
                NIOLoopBound(
                    LoopContext(
                        driver: drivers.driver(for: loop), policy: first.policy, tokenCacheEntries: configuration.auth.tokenCacheEntries,
                        leeway: Double(configuration.auth.leewaySeconds)), eventLoop: loop)
            }.get()
            bound.append((loop, context))
        }
        let loopContexts = LoopContexts(bound)
        // Listeners open before remote keys have loaded; /readyz says when they have.
        try await first.activate(on: loopContexts, shared: shared, previous: nil)
        let reloader = ConfigReloader(
            path: configPath, environment: environment, shared: shared, loops: loopContexts, current: first)

        let connections = ConnectionRegistry()
        let accessLog: AccessLogSink =
            !configuration.log.accessLog ? .off : configuration.log.format == .json ? .json : .logger(Logger(label: "portcullis.access"))
        let limits = configuration.limits
        let pipeline = DataListenerPipeline(
            connections: connections, loopContexts: loopContexts, accessLog: accessLog, limits: limits,
            tls: configuration.tls == nil ? nil : shared.listenerTLS)

        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 64 * 1024, high: 256 * 1024))
            // NIO keeps each channel's last receive buffer for reuse, so its size is memory every idle keep-alive
            // connection holds. 1 KiB (nginx's `client_header_buffer_size`) takes a typical request head in one read;
            // a read that fills the buffer doubles the next one (up to 64 KiB), so bodies and larger heads still
            // get large reads after the first. NIO's default of 2 KiB was a quarter of the per-connection RSS.
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try pipeline.initialize(channel) }
            }
            .bind(host: configuration.listen.host, port: configuration.listen.port)
            .get()
        logger.info(
            "listening on \(GatewayServer.describe(server.localAddress, fallback: configuration.listen))\(configuration.tls == nil ? "" : " (TLS)")"
        )

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
                        try GatewayServer.addBoundaries(of: clocks, to: channel.pipeline.syncOperations)
                        try channel.pipeline.syncOperations.addHandler(
                            SimpleResponder(respondAsync: { head, body, loop in
                                let promise = loop.makePromise(of: SimpleResponder.Response.self)
                                promise.completeWithTask {
                                    let generation = await reloader.current
                                    // The secret follows reloads; the listener's address cannot change without a restart.
                                    let introspection = AdminEndpoints.IntrospectionAccess(
                                        token: generation.configuration.tokenService?.introspectionToken, adminListen: adminListen)
                                    return try await AdminEndpoints.answer(
                                        head, body, readiness: readiness, sessions: generation.tokenService?.sessions,
                                        introspection: introspection, metrics: scrape, on: loop
                                    ).get()
                                }
                                return promise.futureResult
                            }))
                    }
                }
                .bind(host: adminListen.host, port: adminListen.port)
                .get()
            logger.info("admin listening on \(GatewayServer.describe(admin?.localAddress, fallback: adminListen))")
            if let service = configuration.tokenService, service.introspectionToken == nil, !adminListen.isLoopback {
                logger.warning(
                    "POST /introspect is off: the admin listener \(adminListen) is not a loopback address and token_service.introspection_token is not set"
                )
            }
        }

        return GatewayService(
            reloader: reloader, group: group, drivers: drivers, readiness: readiness, loopContexts: loopContexts,
            connections: connections, server: server, admin: admin, demoChannel: demoChannel, demoSocket: demoSocket,
            logger: logger)
    }

    /// Serves until graceful shutdown, then drains and stops. The reload service has stopped by then (it comes
    /// after this one in the group), so the generation read here is the last.
    func run() async throws {
        // Throws only when the group is cancelled instead; the drain below runs either way.
        try? await gracefulShutdown()
        await drain()
    }

    private func drain() async {
        let generation = await reloader.current
        let drainSeconds = generation.configuration.limits.drainSeconds
        logger.info("shutting down, draining for up to \(drainSeconds) s")
        try? await server.close()
        // Revocation-feed readers held in a long poll are answered now (nothing new), or they would hold the drain
        // for up to 30 s; their followers reconnect to another replica or to this one when it is back.
        generation.tokenService?.sync.stop()
        connections.quiesceAll()
        let deadline = NIODeadline.now() + .seconds(Int64(drainSeconds))
        // A cancelled group (it has no cancellation signal; only a failing service cancels it) stops waiting.
        while connections.count > 0 && NIODeadline.now() < deadline && !Task.isCancelled {
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
}
