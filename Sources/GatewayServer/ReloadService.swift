import ServiceLifecycle
import UnixSignals

/// Reloads the configuration on SIGHUP and when its file changes, as a service of the process's
/// `ServiceGroup`; `ConfigReloader` does the reloading. It comes after the gateway in the group, so at shutdown it
/// stops first: no reload starts while the gateway drains, and one under way finishes before the drain begins.
struct ReloadService: Service {
    let reloader: ConfigReloader
    /// Trapped before the group starts, so a SIGHUP that arrives meanwhile is kept, not lost.
    let hangups: UnixSignalsSequence

    func run() async throws {
        await reloader.watchFile()
        // Every SIGHUP asks for a reload at once and this loop goes on listening: `ConfigReloader` runs reloads one at
        // a time and serves those asked for during a reload with one more reload of the newest file after it.
        await withDiscardingTaskGroup { group in
            for await _ in hangups.cancelOnGracefulShutdown() {
                group.addTask { await reloader.reload(reason: "SIGHUP") }
            }
        }
        await reloader.stop()
    }
}
