import GatewayProxy
import NIOConcurrencyHelpers
import NIOCore

/// Prometheus metrics (DESIGN §7) in the text exposition format, version 0.0.4. The data path counts into each event
/// loop's `LoopMetrics` without locks; the control plane (token service, key-set fetches) counts here under a mutex
/// it takes a few times per login or fetch. A scrape adds the loops' snapshots to these.
///
/// Own code rather than swift-metrics + swift-prometheus: their counters and histograms synchronise on every update
/// (atomics, and a lock per histogram observation), which the per-request path must not pay; per-loop counters
/// summed at scrape time need no synchronisation at all.
package final class MetricsRegistry: Sendable {
    /// A labelled counter family of the control plane.
    struct Counter: Sendable {
        var values: [[String]: Int] = [:]
    }

    private struct State {
        var counters: [String: Counter] = [:]
        var gauges: [String: [[String]: Double]] = [:]
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// name → (help, label names), for the control-plane families.
    static let controlFamilies: [(name: String, help: String, labels: [String])] = [
        ("portcullis_logins_total", "Password logins (/auth/login and the password grant) by result", ["result"]),
        ("portcullis_refreshes_total", "Refresh-token grants by result", ["result"]),
        ("portcullis_revocations_total", "Sessions revoked, by cause (logout, revoke, reuse)", ["cause"]),
        (
            "portcullis_revocation_feed_polls_total",
            "Answers of followed revocation feeds, by issuer and result (success or the error code)", ["issuer", "result"]
        ),
    ]

    /// name → (help, label names), for the control-plane gauges; a family is rendered once some value is set.
    static let gaugeFamilies: [(name: String, help: String, labels: [String])] = [
        ("portcullis_store_up", "1 while the session store answers, 0 while it does not (DESIGN §9)", []),
        (
            "portcullis_revocations_sequence",
            "The last revocation-log sequence applied: the own store's (issuer of the token service) or a followed feed's", ["issuer"]
        ),
        ("portcullis_revocation_feed_up", "1 while the issuer's revocation feed answers, 0 while following it fails", ["issuer"]),
        ("portcullis_revocation_feed_waiters", "Readers of this gateway's revocation feed waiting in a long poll now (at most 10,000)", []),
    ]

    package func increment(_ name: String, _ labels: [String]) {
        state.withLockedValue { $0.counters[name, default: Counter()].values[labels, default: 0] += 1 }
    }

    package func setGauge(_ name: String, _ labels: [String], _ value: Double) {
        state.withLockedValue { $0.gauges[name, default: [:]][labels] = value }
    }

    /// Forgets a gauge's sample (a followed feed that a reload removed).
    package func removeGauge(_ name: String, _ labels: [String]) {
        state.withLockedValue { _ = $0.gauges[name]?.removeValue(forKey: labels) }
    }

    /// The exposition of `data` (the summed loop snapshots), the remote key sets, the revoked-session count and the
    /// control-plane families.
    package func render(data: LoopMetrics.Snapshot, keySets: [KeySetStatus], revokedSessions: Int?) -> String {
        var out = ""
        family(&out, "portcullis_requests_total", "Requests answered, by route and status", "counter")
        for (key, value) in data.requests.sorted(by: { ($0.key.route, $0.key.status) < ($1.key.route, $1.key.status) }) {
            sample(&out, "portcullis_requests_total", [("route", key.route), ("status", String(key.status))], Double(value))
        }
        family(&out, "portcullis_auth_decisions_total", "Authorisation decisions on the data path, by result and reason", "counter")
        for (key, value) in data.decisions.sorted(by: { ($0.key.result, $0.key.reason) < ($1.key.result, $1.key.reason) }) {
            sample(&out, "portcullis_auth_decisions_total", [("result", key.result), ("reason", key.reason)], Double(value))
        }
        family(&out, "portcullis_upstream_errors_total", "Upstream failures answered 502/504 or aborted, by route and reason", "counter")
        for (key, value) in data.upstreamErrors.sorted(by: { ($0.key.route, $0.key.reason) < ($1.key.route, $1.key.reason) }) {
            sample(&out, "portcullis_upstream_errors_total", [("route", key.route), ("reason", key.reason)], Double(value))
        }
        family(
            &out, "portcullis_request_duration_seconds",
            "Request duration: phase=gateway is the time the gateway added, phase=upstream the upstream's time to its response head",
            "histogram")
        histogram(&out, "portcullis_request_duration_seconds", [("phase", "gateway")], data.gatewayDuration)
        histogram(&out, "portcullis_request_duration_seconds", [("phase", "upstream")], data.upstreamDuration)
        family(&out, "portcullis_connections_total", "Client connections accepted", "counter")
        sample(&out, "portcullis_connections_total", [], Double(data.connectionsOpened))
        family(&out, "portcullis_connections_open", "Client connections open now", "gauge")
        sample(&out, "portcullis_connections_open", [], Double(data.connectionsOpen))
        family(&out, "portcullis_websocket_tunnels", "WebSocket tunnels open now", "gauge")
        sample(&out, "portcullis_websocket_tunnels", [], Double(data.websocketTunnels))
        family(&out, "portcullis_websocket_closed_total", "WebSocket tunnels ended, by reason", "counter")
        for (reason, value) in data.websocketClosed.sorted(by: { $0.key < $1.key }) {
            sample(&out, "portcullis_websocket_closed_total", [("reason", reason)], Double(value))
        }

        if !keySets.isEmpty {
            family(
                &out, "portcullis_jwks_fetches_total", "Remote key-set fetches by issuer and result (success or the error code)", "counter")
            for set in keySets {
                sample(
                    &out, "portcullis_jwks_fetches_total", [("issuer", set.issuer), ("result", "success")], Double(set.fetchesSucceeded))
                for (code, count) in set.fetchesFailed.sorted(by: { $0.key < $1.key }) {
                    sample(&out, "portcullis_jwks_fetches_total", [("issuer", set.issuer), ("result", code)], Double(count))
                }
            }
            family(&out, "portcullis_jwks_keys", "Usable keys in each remote key set", "gauge")
            for set in keySets { sample(&out, "portcullis_jwks_keys", [("issuer", set.issuer)], Double(set.keyCount)) }
            family(&out, "portcullis_jwks_age_seconds", "Seconds since each remote key set was last fetched successfully", "gauge")
            for set in keySets {
                if let age = set.ageSeconds { sample(&out, "portcullis_jwks_age_seconds", [("issuer", set.issuer)], age) }
            }
        }

        let (counters, gauges) = state.withLockedValue { ($0.counters, $0.gauges) }
        for (name, help, labels) in Self.controlFamilies {
            family(&out, name, help, "counter")
            for (values, count) in (counters[name]?.values ?? [:]).sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                sample(&out, name, Array(zip(labels, values)), Double(count))
            }
        }
        for (name, help, labels) in Self.gaugeFamilies {
            guard let values = gauges[name], !values.isEmpty else { continue }
            family(&out, name, help, "gauge")
            for (labelValues, value) in values.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                sample(&out, name, Array(zip(labels, labelValues)), value)
            }
        }
        if let revokedSessions {
            family(&out, "portcullis_revoked_sessions", "Revoked sessions whose access tokens the data path still refuses", "gauge")
            sample(&out, "portcullis_revoked_sessions", [], Double(revokedSessions))
        }
        return out
    }

    private func family(_ out: inout String, _ name: String, _ help: String, _ type: String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private func histogram(_ out: inout String, _ name: String, _ labels: [(String, String)], _ h: LoopMetrics.Histogram) {
        var cumulative = 0
        for (i, bound) in LoopMetrics.Histogram.bounds.enumerated() {
            cumulative += h.counts[i]
            sample(&out, name + "_bucket", labels + [("le", Self.number(bound))], Double(cumulative))
        }
        sample(&out, name + "_bucket", labels + [("le", "+Inf")], Double(h.count))
        sample(&out, name + "_sum", labels, h.sum)
        sample(&out, name + "_count", labels, Double(h.count))
    }

    private func sample(_ out: inout String, _ name: String, _ labels: [(String, String)], _ value: Double) {
        out += name
        if !labels.isEmpty {
            out += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        out += " " + Self.number(value) + "\n"
    }

    /// Label values escape `\`, `"` and newlines (exposition format); other control bytes cannot occur in what we
    /// label with, but are dropped to be sure a line can never break.
    static func escape(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: continue
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
