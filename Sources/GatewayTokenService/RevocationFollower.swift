import CurlNIO
import GatewayConfig
import GatewayControl
import GatewayJSON
import GatewayTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Follows one issuer's revocation feed (`revocations_uri`, DESIGN §9) so that this gateway's data path refuses the
/// issuer's revoked sessions within about a second, without a database: a long poll `GET …?after=N&wait=30`
/// through libcurl on the control loop (like `RemoteKeySet`), each answer applied to every event loop's
/// `RevokedSessions` under the issuer's name, then the next poll at once from `next`. A `reset` answer (the feed's
/// database was replaced) starts over from its `next`. Failures back off from 250 ms to 1 s (jittered); the
/// readiness condition `revocations:<issuer>` turns ready at the first answer.
final class RevocationFollower: Sendable {
    /// Where and how the feed is read, from the issuer's configuration entry.
    struct Source: Sendable, Hashable {
        var issuer: String
        /// The entry's JSON path (`issuers[1]`), for log lines.
        var path: String
        var url: RemoteURL
        /// The shared secret (`revocations_token`); never logged.
        var secret: String
        var tls: CurlTLSOptions

        init(_ issuer: Issuer, path: String) throws(ConfigError) {
            guard let text = issuer.revocationsURI, let secret = issuer.revocationsToken else {
                throw ConfigError(.invalidValue, path: path, "has no revocation feed")
            }
            guard let url = RemoteURL(text), url.isAllowedForKeys else {
                throw ConfigError(
                    .invalidValue, path: "\(path).revocations_uri", "must be an https:// URL (http:// only to a loopback address)")
            }
            self.issuer = issuer.issuer
            self.path = path
            self.url = url
            self.secret = secret
            self.tls = CurlTLSOptions(caFile: issuer.caFile)
        }

        var readinessName: String { "revocations:\(issuer)" }
    }

    struct Settings: Sendable {
        /// Seconds the feed may hold a poll (the feed caps it at 30).
        var wait: Int64 = 30
        var minBackoff = 0.25
        /// Low on purpose: a feed that comes back (a restarted replica) must be read again within about a second,
        /// or revocations made meanwhile would reach this data path late. A refused loopback or LB connection
        /// costs next to nothing; the jitter keeps a fleet of followers from retrying in step.
        var maxBackoff = 1.0
        /// A page holds at most 1000 entries of ~150 bytes.
        var maxAnswerBytes = 1 << 20
    }

    private struct State {
        var after: Int64 = 0
        var answered = false
        var failures = 0
        var timer: Scheduled<Void>?
        var stopped = false
    }

    /// Why a poll failed, for the log and `portcullis_revocation_feed_polls_total{result}`.
    struct PollError: Error, Sendable {
        enum Code: String, Sendable {
            case unreachable, timeout, unauthorized
            case httpStatus = "http_status"
            case invalidAnswer = "invalid_answer"
        }

        var code: Code
        var message: String
    }

    let source: Source
    private let settings: Settings
    private let loop: any EventLoop
    private let drivers: CurlDriverGroup
    private let readiness: Readiness
    private let metrics: MetricsRegistry
    private let logger: Logger
    private let loops: NIOLockedValueBox<LoopContexts?> = NIOLockedValueBox(nil)
    private let state = NIOLockedValueBox(State())

    init(
        source: Source, settings: Settings = Settings(), loop: any EventLoop, drivers: CurlDriverGroup, readiness: Readiness,
        metrics: MetricsRegistry, logger: Logger
    ) {
        self.source = source
        self.settings = settings
        self.loop = loop
        self.drivers = drivers
        self.readiness = readiness
        self.metrics = metrics
        self.logger = logger
        if !readiness.contains(source.readinessName) { readiness.register(source.readinessName) }
    }

    private var name: String { "\(source.path) \(JSONWriter.quoted(source.issuer))" }

    /// Starts following; entries are applied to `loops`.
    func start(applyingTo loops: LoopContexts) {
        self.loops.withLockedValue { $0 = loops }
        loop.execute { self.poll() }
    }

    /// No more polls; one in flight applies nothing.
    func stop() {
        state.withLockedValue { state in
            state.stopped = true
            state.timer?.cancel()
            state.timer = nil
        }
    }

    /// Drops this issuer's gauges (a reload removed the feed).
    func forgetMetrics() {
        metrics.removeGauge("portcullis_revocation_feed_up", [source.issuer])
        metrics.removeGauge("portcullis_revocations_sequence", [source.issuer])
    }

    /// The sequence to ask after next (for tests and diagnostics).
    var after: Int64 { state.withLockedValue { $0.after } }

    // MARK: - Polling (on the control loop)

    private func poll() {
        guard let (after, answered) = state.withLockedValue({ $0.stopped ? nil : ($0.after, $0.answered) }) else { return }
        let url = source.url
        // The first poll must not be held: readiness waits for its answer.
        let wait = answered ? settings.wait : 0
        let target = url.target + (url.target.contains("?") ? "&" : "?") + "after=\(after)&wait=\(wait)"
        // The feed holds the answer up to `wait`: allow that plus a margin before calling the server silent.
        let bound = TimeAmount.seconds(wait + 10)
        let request = CurlRequest(
            origin: url.origin, requestTarget: target, method: "GET",
            headers: [
                CurlHeader(name: "Accept", value: "application/json"), CurlHeader(name: "Authorization", value: "Bearer \(source.secret)"),
            ],
            tls: source.tls, connectTimeout: .seconds(5), responseTimeout: bound, idleTimeout: bound)
        drivers.driver(for: loop).fetch(request, maxResponseBytes: settings.maxAnswerBytes, timeout: bound + .seconds(5))
            .whenComplete { result in
                switch result {
                case .success(let response):
                    do throws(PollError) {
                        let page = try Self.parse(response, after: after)
                        self.succeeded(page, asked: after)
                    } catch {
                        self.failed(error)
                    }
                case .failure(let error):
                    self.failed(Self.pollError(error))
                }
            }
    }

    static func pollError(_ error: any Error) -> PollError {
        guard let error = error as? CurlFetchError else { return PollError(code: .unreachable, message: "\(error)") }
        switch error.code {
        case .timeout, .transfer(.responseTimeout), .transfer(.idleTimeout):
            return PollError(code: .timeout, message: "no answer within the poll's time bound")
        case .responseTooLarge:
            return PollError(code: .invalidAnswer, message: error.message)
        default:
            return PollError(code: .unreachable, message: error.message)
        }
    }

    /// A 200 answer in the feed's wire format; entries must come after `after` in order (unless `reset`).
    static func parse(_ response: CurlFetchResponse, after: Int64) throws(PollError) -> RevocationFeedPage {
        switch response.status {
        case 200: break
        case 401: throw PollError(code: .unauthorized, message: "the feed refused revocations_token (401)")
        default: throw PollError(code: .httpStatus, message: "the feed answered \(response.status)")
        }
        let object: JSONObject
        do {
            guard let parsed = try JSONParser.parse(response.body).objectValue else {
                throw PollError(code: .invalidAnswer, message: "the answer is not a JSON object")
            }
            object = parsed
        } catch let error as PollError {
            throw error
        } catch {
            throw PollError(code: .invalidAnswer, message: "the answer is not JSON")
        }
        let reset = object["reset"]?.boolValue ?? false
        guard let entries = object["revocations"]?.arrayValue, let nextNumber = object["next"]?.numberValue,
            let next = exactInteger(nextNumber)
        else {
            throw PollError(code: .invalidAnswer, message: "the answer lacks revocations or next")
        }
        var records: [RevocationRecord] = []
        records.reserveCapacity(entries.count)
        var previous = reset ? 0 : after
        for entry in entries {
            guard let fields = entry.objectValue, let seqNumber = fields["seq"]?.numberValue, let seq = exactInteger(seqNumber),
                let sid = fields["sid"]?.stringValue, !sid.isEmpty, let until = fields["until"]?.numberValue, until.isFinite
            else {
                throw PollError(code: .invalidAnswer, message: "an entry lacks seq, sid or until")
            }
            guard seq > previous else {
                throw PollError(code: .invalidAnswer, message: "entries are not after the sequence asked for, in order")
            }
            previous = seq
            let revokedAt = fields["revoked_at"]?.numberValue ?? until
            records.append(RevocationRecord(sequence: seq, sessionID: sid, revokedAt: revokedAt, until: until))
        }
        guard next >= previous, reset || next >= after else {
            throw PollError(code: .invalidAnswer, message: "next is before the entries or the sequence asked for")
        }
        return RevocationFeedPage(revocations: records, next: next, reset: reset)
    }

    private static func exactInteger(_ value: Double) -> Int64? {
        guard value.isFinite, value >= 0, value == value.rounded(), value <= 9_007_199_254_740_992 else { return nil }
        return Int64(value)
    }

    private func succeeded(_ page: RevocationFeedPage, asked: Int64) {
        let (first, recovered, stopped) = state.withLockedValue { state -> (Bool, Bool, Bool) in
            guard !state.stopped else { return (false, false, true) }
            let first = !state.answered
            let recovered = state.failures > 0
            state.answered = true
            state.failures = 0
            state.after = page.next
            return (first, recovered, false)
        }
        guard !stopped else { return }
        let issuer = source.issuer
        let now = WallClock.now()
        let live = page.revocations.filter { $0.until > now }
        var applied: EventLoopFuture<Void>? = nil
        if !live.isEmpty, let loops = loops.withLockedValue({ $0 }) {
            applied = RevocationFanout.apply(live.map { ($0.sessionID, issuer, $0.until) }, to: loops)
        }
        metrics.increment("portcullis_revocation_feed_polls_total", [issuer, "success"])
        metrics.setGauge("portcullis_revocation_feed_up", [issuer], 1)
        metrics.setGauge("portcullis_revocations_sequence", [issuer], Double(page.next))
        if page.reset {
            logger.warning("\(name): the revocation feed started over (its log was replaced); following it from \(page.next)")
        }
        if first {
            // Ready means applied: a request after /readyz said 200 finds the revocations known at that point.
            let readiness = self.readiness
            let name = source.readinessName
            if let applied {
                applied.whenComplete { _ in readiness.set(name, ready: true) }
            } else {
                readiness.set(name, ready: true)
            }
            logger.info("\(name): following the revocation feed \(source.url) from \(page.next)")
        } else if recovered {
            logger.info("\(name): the revocation feed answers again")
        }
        loop.execute { self.poll() }
    }

    private func failed(_ error: PollError) {
        let (failures, stopped) = state.withLockedValue { state -> (Int, Bool) in
            state.failures += 1
            return (state.failures, state.stopped)
        }
        guard !stopped else { return }
        let ceiling = min(settings.maxBackoff, settings.minBackoff * Double(1 << min(failures - 1, 16)))
        let delay = ceiling * Double.random(in: 0.5...1.0)
        metrics.increment("portcullis_revocation_feed_polls_total", [source.issuer, error.code.rawValue])
        metrics.setGauge("portcullis_revocation_feed_up", [source.issuer], 0)
        // Logged when following breaks and then every 60 failures (about once a minute), not on each retry.
        if failures == 1 || failures % 60 == 0 {
            logger.warning(
                "\(name): reading the revocation feed \(source.url) failed (\(error.code.rawValue)): \(error.message); retrying at least once a second"
            )
        }
        let timer = loop.scheduleTask(in: .milliseconds(Int64(delay * 1000))) { self.poll() }
        let cancel = state.withLockedValue { state -> Bool in
            if state.stopped { return true }
            state.timer = timer
            return false
        }
        if cancel { timer.cancel() }
    }
}
