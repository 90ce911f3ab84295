import CPlatform
import GatewayConfig
import GatewayControl
import GatewayProxy
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import UnixSignals

/// Assembles the gateway from a validated configuration: event loops, one libcurl driver and one token cache per
/// loop, the data-path listener, the admin listener and (when no upstream is configured) the demo upstream. Runs
/// until SIGTERM or SIGINT, then drains.
public enum GatewayServer {
    /// Runs the gateway until a termination signal. Throws `ConfigErrors` for problems in the configuration's
    /// referenced files (keys, secrets) and other errors for runtime failures (ports in use). With `configPath`, SIGHUP
    /// and changes of that file reload the configuration.
    ///
    /// Startup happens before the services run, so that a configuration or port problem ends the process with its
    /// error before any signal handling is set up; then the gateway and the reloader run as services of one
    /// `ServiceGroup`, which turns SIGTERM and SIGINT into a graceful shutdown of each.
    public static func run(
        configuration: GatewayConfiguration, configPath: String? = nil, environment: [String: String] = [:], logger: Logger
    ) async throws {
        let gateway = try await GatewayService.start(
            configuration: configuration, configPath: configPath ?? "", environment: environment, logger: logger)
        // The group shuts its services down one at a time in reverse order, each after the one before it returned:
        // the reloader stops first (no reload starts during the drain, and one under way finishes before it), then
        // the gateway drains. A service that must outlive the drain goes in front of the gateway: a PostgreSQL
        // store's `PostgresClient` is a `Service` that cancels its connection pool at graceful shutdown, so when it
        // is added it must be first in this list, or requests still draining lose the store.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: gateway, serviceName: "gateway")
        ]
        if let configPath, !configPath.isEmpty {
            // Trapped here, once the listeners are open, like SIGTERM and SIGINT when the group starts.
            let hangups = await UnixSignalsSequence(trapping: .sighup)
            services.append(.init(service: ReloadService(reloader: gateway.reloader, hangups: hangups), serviceName: "reload"))
        }
        // SIGINT drains like SIGTERM (DESIGN §3); no signal cancels without a drain. Only the first signal counts.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
        try await group.run()
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
}

/// Open client connections: counted for `limits.max_connections`, and kept so that shutdown can ask each one to
/// finish its current request and close (`ChannelShouldQuiesceEvent`, handled by `GatewayHandler`). The
/// lock is taken once per connection, never per request.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var quiescing = false
    }

    private let state = NIOLockedValueBox(State())

    var count: Int { state.withLockedValue { $0.channels.count } }

    /// Registers a new connection; false when over `limit` or shutting down (the caller closes it).
    func open(_ channel: any Channel, limit: Int) -> Bool {
        state.withLockedValue { state in
            guard !state.quiescing, state.channels.count < limit else { return false }
            state.channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func close(_ channel: any Channel) {
        _ = state.withLockedValue { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Idle keep-alive connections close now; busy ones after their current response.
    func quiesceAll() {
        let channels = state.withLockedValue { state in
            state.quiescing = true
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }
}
