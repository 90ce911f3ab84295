import GatewayControl
import Logging
import NIOConcurrencyHelpers

/// The session store's health as the revocation poll sees it (DESIGN §9 "Database down"): readiness condition
/// `store` turns ready at the first answer and stays so; while the store does not answer it is listed as degraded
/// and `portcullis_store_up` is 0. Transitions are logged once.
final class StoreHealth: Sendable {
    private let readiness: Readiness
    private let metrics: MetricsRegistry
    private let logger: Logger
    /// nil before the first outcome.
    private let up = NIOLockedValueBox<Bool?>(nil)

    init(readiness: Readiness, metrics: MetricsRegistry, logger: Logger) {
        self.readiness = readiness
        self.metrics = metrics
        self.logger = logger
    }

    func answered() {
        let was = up.withLockedValue { up in
            defer { up = true }
            return up
        }
        readiness.set("store", ready: true)
        readiness.setDegraded("store", false)
        metrics.setGauge("portcullis_store_up", [], 1)
        if was == false { logger.info("token service: the session store answers again") }
    }

    func failed(_ error: any Error) {
        let was = up.withLockedValue { up in
            defer { up = false }
            return up
        }
        // Once reached, the store's absence degrades the gateway but does not make it unready: verification is
        // local and known revocations stay in force.
        if !readiness.notReady.contains("store") { readiness.setDegraded("store", true) }
        metrics.setGauge("portcullis_store_up", [], 0)
        if was != false { logger.error("token service: the session store does not answer: \(error)") }
    }
}
