import CurlNIO
import GatewayControl
import GatewayJSON
import GatewayTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One issuer's key set fetched over the network: the schedule (`KeySetRefreshState`), the current keys, and the
/// fetches themselves, which run through libcurl on the control loop — never on a request's path. A request whose
/// token names an unknown key may wait for the one fetch that `refetch()` starts or joins.
///
/// The state sits behind a mutex because `refetch()` is called from the event loop of the request that needs it;
/// that happens only after a token failed with `key_unknown`, never for a valid token.
final class RemoteKeySet: Sendable {
    let source: RemoteKeySource
    /// Fetches, their callbacks and the refresh timer run here.
    private let loop: any EventLoop
    private let drivers: CurlDriverGroup
    private let publisher: VerifierPublisher
    private let readiness: Readiness
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var refresh: KeySetRefreshState
        var keys: [VerificationKey] = []
        /// The key set's URL: configured, or found through discovery (forgotten after a failure, so that a moved
        /// `jwks_uri` is found again).
        var jwksURL: RemoteURL?
        /// Completed once the running fetch's outcome is installed on every loop; what waiting requests wait for.
        var done: EventLoopPromise<Void>?
        var timer: Scheduled<Void>?
        /// The skipped-key warnings of the last document, so an unchanged document does not repeat them.
        var lastSkipped: [String] = []
        var stopped = false
        var succeeded = 0
        var failed: [String: Int] = [:]
    }

    /// A usable key set as fetched.
    private struct Fetched: Sendable {
        var url: RemoteURL
        var keys: [VerificationKey]
        var skipped: [String]
        var lifetime: Double?
    }

    init(
        source: RemoteKeySource, loop: any EventLoop, drivers: CurlDriverGroup, publisher: VerifierPublisher,
        readiness: Readiness, logger: Logger
    ) {
        self.source = source
        self.loop = loop
        self.drivers = drivers
        self.publisher = publisher
        self.readiness = readiness
        self.logger = logger
        var initial = State(refresh: KeySetRefreshState(settings: source.refresh))
        if case .jwks(let url) = source.location { initial.jwksURL = url }
        self.state = NIOLockedValueBox(initial)
        readiness.register(source.readinessName)
    }

    /// Seconds on the monotonic clock the refresh state works with.
    private static func now() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

    private var name: String { "\(source.path) \(JSONWriter.quoted(source.issuer))" }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    private static func keys(_ count: Int) -> String { count == 1 ? "1 key" : "\(count) keys" }

    // MARK: - Events

    /// Prefetch: the first fetch starts now; readiness follows its success.
    func start() {
        let begin = state.withLockedValue { state -> Bool in
            let actions = state.refresh.start(now: Self.now())
            return prepareFetch(actions, &state)
        }
        if begin { loop.execute { self.fetch() } }
    }

    /// No more fetches or timers (shutdown); a fetch in flight completes without installing anything.
    func stop() {
        state.withLockedValue { state in
            state.stopped = true
            state.timer?.cancel()
            state.timer = nil
        }
    }

    /// A token of this issuer named an unknown key: start a fetch (cooldown permitting) or join the running one;
    /// nil when the token is to be refused at once.
    func refetch() -> EventLoopFuture<Void>? {
        let now = Self.now()
        let (future, begin) = state.withLockedValue { state -> (EventLoopFuture<Void>?, Bool) in
            guard !state.stopped else { return (nil, false) }
            switch state.refresh.unknownKey(now: now) {
            case .refuse:
                return (nil, false)
            case .join:
                return (state.done?.futureResult, false)
            case .fetch:
                state.timer?.cancel()
                state.timer = nil
                let done = loop.makePromise(of: Void.self)
                state.done = done
                return (done.futureResult, true)
            }
        }
        if begin {
            logger.info("\(name): a token names a key that is not in the key set; fetching it again")
            loop.execute { self.fetch() }
        }
        return future
    }

    /// The refresh timer fired.
    private func tick() {
        var drop = false
        let begin = state.withLockedValue { state -> Bool in
            guard !state.stopped else { return false }
            state.timer = nil
            let actions = state.refresh.tick(now: Self.now())
            if actions.contains(.dropKeys) && !state.keys.isEmpty {
                state.keys = []
                drop = true
            }
            let begin = prepareFetch(actions, &state)
            if !begin { reschedule(&state) }
            return begin
        }
        if drop { _ = dropKeys() }
        if begin { fetch() }
    }

    /// Called with the lock held: a fetch was decided, so make the promise waiting requests will get.
    private func prepareFetch(_ actions: KeySetRefreshState.Actions, _ state: inout State) -> Bool {
        guard actions.contains(.fetch), !state.stopped else { return false }
        state.done = loop.makePromise(of: Void.self)
        return true
    }

    /// Called with the lock held: arm the timer for the next refresh or staleness deadline.
    private func reschedule(_ state: inout State) {
        state.timer?.cancel()
        state.timer = nil
        guard !state.stopped, let wake = state.refresh.nextWakeup else { return }
        let deadline = NIODeadline.uptimeNanoseconds(UInt64(max(0, wake) * 1e9))
        state.timer = loop.scheduleTask(deadline: deadline) { self.tick() }
    }

    private func dropKeys() -> EventLoopFuture<Void>? {
        logger.error(
            "\(name): the key set could not be refreshed for \(Self.seconds(source.refresh.maxStale)) s past its freshness (jwks_max_stale_seconds); its keys are dropped and its tokens refused until a fetch succeeds"
        )
        return publisher.update(issuer: source.issuer, keys: [], keysRemoved: true)
    }

    // MARK: - Fetching (on the control loop)

    private func fetch() {
        loop.preconditionInEventLoop()
        let deadline = NIODeadline.now() + source.fetchTimeout
        let url: EventLoopFuture<RemoteURL>
        if let known = state.withLockedValue({ $0.jwksURL }) {
            url = loop.makeSucceededFuture(known)
        } else if case .discovery(let candidates) = source.location {
            url = discover(candidates, index: 0, failures: [], deadline: deadline)
        } else {
            url = loop.makeFailedFuture(KeySetFetchError(.discoveryInvalid, "no key set URL"))
        }
        url.flatMap { url in
            self.get(url, accept: "application/jwk-set+json, application/json", deadline: deadline).map { (url, $0) }
        }.flatMapThrowing { url, response in
            try self.parse(response, from: url)
        }.whenComplete { result in
            self.finish(result.mapError(Self.fetchError))
        }
    }

    /// Tries each metadata location in turn; the first usable document names the key set.
    private func discover(
        _ candidates: [RemoteURL], index: Int, failures: [KeySetFetchError], deadline: NIODeadline
    ) -> EventLoopFuture<RemoteURL> {
        let issuer = source.issuer
        let url = candidates[index]
        return get(url, accept: "application/json", deadline: deadline).flatMapThrowing { response in
            do throws(KeySetFetchError) {
                return try IssuerMetadata.jwksURI(from: response.body, issuer: issuer)
            } catch {
                throw KeySetFetchError(error.code, "\(url): \(error.message)")
            }
        }.flatMapError { error in
            let failures = failures + [Self.fetchError(error)]
            if index + 1 < candidates.count, failures.last?.code != .timeout {
                return self.discover(candidates, index: index + 1, failures: failures, deadline: deadline)
            }
            let first = failures[0]
            let message = failures.map(\.message).joined(separator: "; ")
            return self.loop.makeFailedFuture(KeySetFetchError(first.code, "discovery failed: \(message)"))
        }
    }

    /// One GET within the fetch's deadline; anything but a complete 200 within the size bound is an error.
    private func get(_ url: RemoteURL, accept: String, deadline: NIODeadline) -> EventLoopFuture<CurlFetchResponse> {
        let remaining = deadline - .now()
        guard remaining > .zero else {
            return loop.makeFailedFuture(KeySetFetchError(.timeout, "\(url): no time left within the fetch timeout"))
        }
        let request = CurlRequest(
            origin: url.origin, requestTarget: url.target, method: "GET", headers: [CurlHeader(name: "Accept", value: accept)],
            tls: source.tls, connectTimeout: remaining, responseTimeout: remaining, idleTimeout: remaining)
        let limit = source.maxDocumentBytes
        return drivers.driver(for: loop).fetch(request, maxResponseBytes: limit, timeout: remaining)
            .flatMapErrorThrowing { error in
                guard let error = error as? CurlFetchError else { throw error }
                switch error.code {
                case .timeout, .transfer(.responseTimeout), .transfer(.idleTimeout):
                    throw KeySetFetchError(.timeout, "\(url): no complete answer within the fetch timeout")
                case .responseTooLarge:
                    throw KeySetFetchError(.tooLarge, "\(url): the document is larger than \(limit) bytes")
                default:
                    throw KeySetFetchError(.unreachable, "\(url): \(error.message)")
                }
            }
            .flatMapThrowing { response in
                // Redirects are not followed (a key set must come from where it is configured or announced).
                guard response.status == 200 else { throw KeySetFetchError(.httpStatus, "\(url) answered \(response.status)") }
                return response
            }
    }

    private func parse(_ response: CurlFetchResponse, from url: RemoteURL) throws(KeySetFetchError) -> Fetched {
        let loaded: JWKSLoadResult
        do {
            loaded = try VerificationKey.jwks(response.body, allowedAlgorithms: source.algorithms)
        } catch {
            throw KeySetFetchError(.jwksInvalid, "\(url): \(error.message)")
        }
        let skipped = loaded.skipped.map { "key \($0.kid.map(JSONWriter.quoted) ?? "without kid") skipped: \($0.reason)" }
        guard !loaded.keys.isEmpty else {
            let reasons = skipped.isEmpty ? "it holds no keys" : skipped.joined(separator: "; ")
            throw KeySetFetchError(.noUsableKeys, "\(url): no usable key (\(reasons))")
        }
        let lifetime = CacheControl.freshnessLifetime(cacheControl: response.headers("cache-control"), age: response.header("age"))
        return Fetched(url: url, keys: loaded.keys, skipped: skipped, lifetime: lifetime)
    }

    private static func fetchError(_ error: any Error) -> KeySetFetchError {
        if let error = error as? KeySetFetchError { return error }
        return KeySetFetchError(.unreachable, "\(error)")
    }

    // MARK: - Outcome

    private func finish(_ result: Result<Fetched, KeySetFetchError>) {
        switch result {
        case .success(let fetched): succeeded(fetched)
        case .failure(let error): failed(error)
        }
    }

    private func succeeded(_ fetched: Fetched) {
        let (old, warnSkipped, stopped) = state.withLockedValue { state in
            let old = state.keys
            if !state.stopped { state.keys = fetched.keys }
            state.jwksURL = fetched.url
            state.succeeded += 1
            let warn = fetched.skipped != state.lastSkipped
            state.lastSkipped = fetched.skipped
            return (old, warn, state.stopped)
        }
        if warnSkipped {
            for line in fetched.skipped { logger.warning("\(name): \(fetched.url): \(line)") }
        }
        let change = KeySetChange(old: old, new: fetched.keys)
        var installed: EventLoopFuture<Void>? = nil
        if !change.isEmpty && !stopped {
            logger.info(
                "\(name): key set \(old.isEmpty ? "loaded" : "changed") from \(fetched.url) (\(Self.keys(fetched.keys.count)))\(change.summary)"
            )
            installed = publisher.update(issuer: source.issuer, keys: fetched.keys, keysRemoved: !change.removed.isEmpty)
        }
        // The fetch counts as running until its keys are installed, so a request that meets the unknown key in
        // between joins it instead of being refused.
        let complete: @Sendable () -> Void = {
            let (done, first) = self.state.withLockedValue { state -> (EventLoopPromise<Void>?, Bool) in
                let first = !state.refresh.loadedOnce
                state.refresh.fetchSucceeded(now: Self.now(), lifetime: fetched.lifetime)
                self.reschedule(&state)
                defer { state.done = nil }
                return (state.done, first)
            }
            if first { self.readiness.set(self.source.readinessName, ready: true) }
            done?.succeed(())
        }
        if let installed {
            installed.whenComplete { _ in complete() }
        } else {
            complete()
        }
    }

    private func failed(_ error: KeySetFetchError) {
        var drop = false
        let (done, keyCount, retry, stopped) = state.withLockedValue { state -> (EventLoopPromise<Void>?, Int, Double, Bool) in
            let actions = state.refresh.fetchFailed(now: Self.now())
            if case .discovery = source.location { state.jwksURL = nil }
            if actions.contains(.dropKeys) && !state.keys.isEmpty && !state.stopped {
                state.keys = []
                drop = true
            }
            state.failed[error.code.rawValue, default: 0] += 1
            reschedule(&state)
            defer { state.done = nil }
            let retry = state.refresh.retryDelay(afterFailures: state.refresh.consecutiveFailures)
            return (state.done, state.keys.count, retry, state.stopped)
        }
        if !stopped {  // a fetch cut short by shutdown is not news
            let kept = keyCount > 0 ? "keeping its \(Self.keys(keyCount))" : "no keys yet"
            logger.warning(
                "\(name): fetching the key set failed (\(error.code)): \(error.message); \(kept), next attempt in \(Self.seconds(retry)) s")
        }
        if drop, let dropped = dropKeys() {
            dropped.whenComplete { _ in done?.succeed(()) }
        } else {
            done?.succeed(())
        }
    }

    // MARK: - Status

    /// For metrics and diagnostics.
    func status() -> KeySetStatus {
        let now = Self.now()
        return state.withLockedValue { state in
            KeySetStatus(
                issuer: source.issuer, loaded: state.refresh.loadedOnce, keyCount: state.keys.count,
                fetchesSucceeded: state.succeeded, fetchesFailed: state.failed,
                ageSeconds: state.refresh.lastSuccess.map { now - $0 })
        }
    }
}
