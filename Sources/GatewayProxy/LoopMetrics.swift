/// The data path's metrics on one event loop: plain counters and histogram buckets, touched only by that loop, so
/// counting costs no lock and no atomic. `/metrics` takes a `Snapshot` of every loop (on the loop, through
/// `EventLoop.submit`) and adds them up.
public final class LoopMetrics {
    /// Request outcome by route and status (`portcullis_requests_total`).
    public struct RequestKey: Hashable, Sendable {
        /// The route's `path_prefix`, the token service's prefix, a served document's path, or `-` (no route).
        public var route: String
        public var status: Int
    }

    /// `portcullis_auth_decisions_total{result,reason}`.
    public struct DecisionKey: Hashable, Sendable {
        /// `allow` or `deny`.
        public var result: String
        /// For `deny` the §6 reason; for `allow` `verified`, `cached`, `anonymous` or `public`.
        public var reason: String
    }

    /// `portcullis_upstream_errors_total{route,reason}`.
    public struct UpstreamErrorKey: Hashable, Sendable {
        public var route: String
        public var reason: String
    }

    /// Everything counted so far, as a value.
    public struct Snapshot: Sendable {
        public var requests: [RequestKey: Int] = [:]
        public var decisions: [DecisionKey: Int] = [:]
        public var upstreamErrors: [UpstreamErrorKey: Int] = [:]
        /// Time the gateway added: the whole request minus the upstream's part.
        public var gatewayDuration = Histogram()
        /// From starting the upstream transfer to its response head.
        public var upstreamDuration = Histogram()
        public var connectionsOpened = 0
        public var connectionsOpen = 0
        /// WebSocket tunnels open now (`portcullis_websocket_tunnels`).
        public var websocketTunnels = 0
        /// Tunnels ended, by reason (`portcullis_websocket_closed_total{reason}`).
        public var websocketClosed: [String: Int] = [:]

        public init() {}

        public mutating func merge(_ other: Snapshot) {
            requests.merge(other.requests, uniquingKeysWith: +)
            decisions.merge(other.decisions, uniquingKeysWith: +)
            upstreamErrors.merge(other.upstreamErrors, uniquingKeysWith: +)
            gatewayDuration.merge(other.gatewayDuration)
            upstreamDuration.merge(other.upstreamDuration)
            connectionsOpened += other.connectionsOpened
            connectionsOpen += other.connectionsOpen
            websocketTunnels += other.websocketTunnels
            websocketClosed.merge(other.websocketClosed, uniquingKeysWith: +)
        }
    }

    /// A Prometheus histogram with fixed bucket bounds in seconds, from 100 µs to 10 s.
    public struct Histogram: Sendable {
        public static let bounds: [Double] = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
        ]
        /// Per bucket (not cumulative); the last one is +Inf.
        public private(set) var counts = [Int](repeating: 0, count: Histogram.bounds.count + 1)
        public private(set) var sum = 0.0
        public private(set) var count = 0

        public init() {}

        public mutating func record(_ seconds: Double) {
            var index = 0
            while index < Self.bounds.count && seconds > Self.bounds[index] { index += 1 }
            counts[index] += 1
            sum += seconds
            count += 1
        }

        public mutating func merge(_ other: Histogram) {
            for i in counts.indices { counts[i] += other.counts[i] }
            sum += other.sum
            count += other.count
        }
    }

    /// Everything counted so far.
    public var snapshot: Snapshot {
        var snapshot = counted
        requests.addPending(to: &snapshot.requests)
        decisions.addPending(to: &snapshot.decisions)
        return snapshot
    }

    private var counted = Snapshot()
    /// The two counters bumped on every request; see `Tally`.
    private var requests = Tally<RequestKey>()
    private var decisions = Tally<DecisionKey>()

    public init() {}

    public func request(route: String, status: Int) {
        requests.add(RequestKey(route: route, status: status), into: &counted.requests)
    }

    public func decision(allowed: Bool, reason: String) {
        decisions.add(DecisionKey(result: allowed ? "allow" : "deny", reason: reason), into: &counted.decisions)
    }

    public func upstreamError(route: String, reason: String) {
        counted.upstreamErrors[UpstreamErrorKey(route: route, reason: reason), default: 0] += 1
    }

    public func durations(total: Double, upstream: Double?) {
        if let upstream {
            counted.upstreamDuration.record(upstream)
            counted.gatewayDuration.record(max(0, total - upstream))
        } else {
            counted.gatewayDuration.record(total)
        }
    }

    public func connectionOpened() {
        counted.connectionsOpened += 1
        counted.connectionsOpen += 1
    }

    public func connectionClosed() {
        counted.connectionsOpen -= 1
    }

    public func websocketOpened() {
        counted.websocketTunnels += 1
    }

    public func websocketClosed(reason: String) {
        counted.websocketTunnels -= 1
        counted.websocketClosed[reason, default: 0] += 1
    }
}

/// A counter by key that keeps a run of the same key aside and adds it to the dictionary only when another key
/// comes: under load most requests repeat the previous one's route and status, and comparing with the last key
/// (usually the very same strings) is much cheaper than hashing two strings for every request.
struct Tally<Key: Hashable> {
    private var last: Key?
    private var pending = 0

    mutating func add(_ key: Key, into counts: inout [Key: Int]) {
        if pending > 0, key == last {
            pending += 1
            return
        }
        addPending(to: &counts)
        last = key
        pending = 1
    }

    func addPending(to counts: inout [Key: Int]) {
        if pending > 0, let last { counts[last, default: 0] += pending }
    }
}

@available(*, unavailable)
extension LoopMetrics: Sendable {}
