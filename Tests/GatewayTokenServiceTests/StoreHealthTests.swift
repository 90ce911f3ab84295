import GatewayControl
import GatewayProxy
import GatewaySessions
import Logging
import Testing

@testable import GatewayTokenService

/// DESIGN §9 "Database down" as `/readyz` and `/metrics` show it.
@Suite struct StoreHealthTests {
    @Test func readyOnceReachedThenDegradedWhileDown() {
        let readiness = Readiness()
        let metrics = MetricsRegistry()
        readiness.register("store", ready: false)
        let health = StoreHealth(readiness: readiness, metrics: metrics, logger: Logger(label: "test"))
        let down = SessionStoreError(.unavailable, "test")

        // Never reached: not ready, not "degraded".
        health.failed(down)
        #expect(readiness.notReady == ["store"] && readiness.degraded.isEmpty)
        #expect(metrics.render(data: .init(), keySets: [], revokedSessions: nil).contains("portcullis_store_up 0\n"))

        health.answered()
        #expect(readiness.isReady && readiness.degraded.isEmpty)
        #expect(metrics.render(data: .init(), keySets: [], revokedSessions: nil).contains("portcullis_store_up 1\n"))

        // Lost later: still ready, listed as degraded, store_up 0.
        health.failed(down)
        #expect(readiness.isReady && readiness.degraded == ["store"])
        #expect(String(decoding: readiness.body().json, as: UTF8.self) == #"{"status":"ready","degraded":["store"]}"#)
        #expect(metrics.render(data: .init(), keySets: [], revokedSessions: nil).contains("portcullis_store_up 0\n"))

        health.answered()
        #expect(readiness.degraded.isEmpty)
    }
}
