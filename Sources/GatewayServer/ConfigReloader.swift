import Dispatch
import GatewayConfig
import GatewayControl
import GatewayProxy
import GatewayTokens
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Reloads the configuration on SIGHUP and when the file changes (DESIGN §3): the new file is validated and its
/// generation built first; only then is its policy installed on every event loop. An invalid file, or one that
/// changes a setting only a restart can change, is refused with a log line and the running configuration stays.
/// Requests in flight finish with the policy they started with; nothing is dropped. Reloads run one at a time
/// (`ReloadQueue`): a SIGHUP or file change during a reload is served by one more reload of the newest file after
/// it, so a slow older reload can never install over a newer one.
actor ConfigReloader {
    private let path: String
    private let environment: [String: String]
    private let shared: GatewayGeneration.Shared
    private let loops: LoopContexts
    private(set) var current: GatewayGeneration
    private var fileSignature: FileSignature?
    /// The files the running configuration reads at each reload and that are watched too (the listener's
    /// certificate, key and client CAs): rotating them reloads without a SIGHUP.
    private var referencedSignatures: [FileSignature?]
    private var watcher: Task<Void, Never>?
    private let queue = ReloadQueue<Outcome>()

    init(path: String, environment: [String: String], shared: GatewayGeneration.Shared, loops: LoopContexts, current: GatewayGeneration) {
        self.path = path
        self.environment = environment
        self.shared = shared
        self.loops = loops
        self.current = current
        self.fileSignature = FileSignature(path: path)
        self.referencedSignatures = Self.signatures(referencedBy: current.configuration)
    }

    private static func signatures(referencedBy configuration: GatewayConfiguration) -> [FileSignature?] {
        (configuration.tls?.files ?? []).map { FileSignature(path: $0) }
    }

    /// Outcome of one reload, for logs and tests.
    enum Outcome: Equatable, Sendable {
        case reloaded
        case refused
        case unchanged
    }

    /// Reloads now, or after the reload in progress (coalesced with other requests that arrive meanwhile).
    @discardableResult
    func reload(reason: String) async -> Outcome {
        await queue.run(reason: reason) { reason in await self.reloadOnce(reason: reason) }
    }

    /// One reload: read, validate, build, install. Only ever one at a time (see `reload`), because it suspends
    /// between reading the file and installing what it built.
    private func reloadOnce(reason: String) async -> Outcome {
        let logger = shared.logger
        fileSignature = FileSignature(path: path)
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration.load(path: path, environment: environment)
        } catch {
            for e in error.errors { logger.error("reload (\(reason)) refused, keeping the running configuration: \(path): \(e)") }
            return .refused
        }
        let restartOnly = GatewayGeneration.restartOnlyDifferences(current.configuration, configuration)
        guard restartOnly.isEmpty else {
            logger.error(
                "reload (\(reason)) refused, keeping the running configuration: \(restartOnly.joined(separator: ", ")) can only change with a restart"
            )
            return .refused
        }
        let next: GatewayGeneration
        do {
            next = try await GatewayGeneration.build(configuration, shared: shared, previous: current)
        } catch let errors as ConfigErrors {
            for e in errors.errors { logger.error("reload (\(reason)) refused, keeping the running configuration: \(path): \(e)") }
            return .refused
        } catch {
            logger.error("reload (\(reason)) refused, keeping the running configuration: \(error)")
            return .refused
        }
        // Installed loop by loop; a request keeps the policy it started with. Cached verifications are dropped:
        // issuers, audiences or keys may have changed.
        let policy = next.policy
        try? await loops.apply { context in
            context.policy = policy
            context.tokenCache.removeAll()
        }.get()
        let previous = current
        current = next
        referencedSignatures = Self.signatures(referencedBy: configuration)
        do {
            try await next.activate(on: loops, shared: shared, previous: previous)
        } catch {
            logger.warning("reload (\(reason)): the token service's background work did not start: \(error)")
        }
        let grace = Duration.seconds(configuration.limits.drainSeconds)
        let readiness = shared.readiness
        Task { await previous.retire(replacedBy: next, readiness: readiness, grace: grace) }
        logger.info("configuration reloaded (\(reason)): \(configuration.routes.count) route(s), \(configuration.issuers.count) issuer(s)")
        return .reloaded
    }

    /// Polls the file every `interval` and reloads when it changed (mtime, size or inode — also a symlink swap, as
    /// Kubernetes does for ConfigMap volumes).
    func watchFile(every interval: Duration = .seconds(2)) {
        watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await self.checkFile()
            }
        }
    }

    private func checkFile() async {
        let now = FileSignature(path: path)
        let referenced = Self.signatures(referencedBy: current.configuration)
        let configChanged = now != fileSignature && now != nil
        // Each change counts once: a certificate and key written one after the other may reload twice, the first
        // time refused (a mismatched pair) with the running context kept.
        guard configChanged || referenced != referencedSignatures else { return }
        fileSignature = now
        referencedSignatures = referenced
        await reload(reason: configChanged ? "file changed" : "TLS files changed")
    }

    /// Stops watching the file; returns once a reload the watcher started has finished.
    func stop() async {
        watcher?.cancel()
        await watcher?.value
        watcher = nil
    }
}

/// What tells a changed file: its inode, size and modification time (followed through symlinks).
struct FileSignature: Equatable {
    var inode: UInt64
    var size: Int64
    var seconds: Int
    var nanoseconds: Int

    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        seconds = info.st_mtim.tv_sec
        nanoseconds = info.st_mtim.tv_nsec
    }
}
