import Testing

@testable import GatewayTokens

@Suite struct KeySetRefreshStateTests {
    let settings = KeySetRefreshState.Settings(minRefresh: 60, maxRefresh: 900, refetchCooldown: 10, maxStale: 3600)

    /// Started at t=0 and loaded with `lifetime` at t=1.
    func loaded(lifetime: Double? = nil) -> KeySetRefreshState {
        var s = KeySetRefreshState(settings: settings)
        #expect(s.start(now: 0) == .fetch)
        s.fetchSucceeded(now: 1, lifetime: lifetime)
        return s
    }

    @Test func prefetchAtStartThenReady() {
        var s = KeySetRefreshState(settings: settings)
        #expect(!s.loadedOnce)
        #expect(s.start(now: 100) == .fetch)
        #expect(s.fetching)
        #expect(s.nextWakeup == nil)  // nothing to do until the fetch completes
        s.fetchSucceeded(now: 101, lifetime: nil)
        #expect(s.loadedOnce && s.hasKeys && !s.fetching)
    }

    @Test func refreshFollowsMaxAgeWithinTheBounds() {
        #expect(loaded(lifetime: 300).nextFetch == 301)  // within bounds: as the server says
        #expect(loaded(lifetime: 5).nextFetch == 61)  // below the minimum
        #expect(loaded(lifetime: 0).nextFetch == 61)  // no-cache
        #expect(loaded(lifetime: 86400).nextFetch == 901)  // above the maximum
        #expect(loaded(lifetime: nil).nextFetch == 901)  // no max-age: the maximum
    }

    @Test func timerStartsTheDueFetchOnce() {
        var s = loaded(lifetime: 300)
        #expect(s.nextWakeup == 301)
        #expect(s.tick(now: 300) == [])
        #expect(s.tick(now: 301) == .fetch)
        #expect(s.tick(now: 302) == [])  // single flight
        s.fetchSucceeded(now: 303, lifetime: 300)
        #expect(s.nextFetch == 603)
    }

    @Test func unknownKidFetchesAtMostOncePerCooldown() {  // W-kid-storm
        var s = loaded()
        // The prefetch started at t=0: within its cooldown a random kid is refused at once.
        #expect(s.unknownKey(now: 5) == .refuse)
        #expect(s.unknownKey(now: 10) == .fetch)
        #expect(s.unknownKey(now: 10.5) == .join)  // single flight: wait for the running fetch
        s.fetchSucceeded(now: 11, lifetime: nil)
        #expect(s.unknownKey(now: 12) == .refuse)
        #expect(s.unknownKey(now: 19.9) == .refuse)
        #expect(s.unknownKey(now: 20) == .fetch)
        // A flood over 100 s: fetches ≤ 100 / cooldown + 1.
        var fetches = 0
        var t = 20.0
        while t < 120 {
            switch s.unknownKey(now: t) {
            case .fetch: fetches += 1
            case .join: s.fetchSucceeded(now: t, lifetime: nil)
            case .refuse: break
            }
            t += 0.01
        }
        #expect(fetches <= 11)
    }

    @Test func aBackgroundFetchAlsoCountsForTheCooldown() {
        var s = loaded(lifetime: 60)
        #expect(s.tick(now: 61) == .fetch)
        s.fetchSucceeded(now: 62, lifetime: 60)
        #expect(s.unknownKey(now: 65) == .refuse)
        #expect(s.unknownKey(now: 71) == .fetch)
    }

    @Test func failuresBackOffAndKeepTheKeys() {  // stale-while-error
        var s = loaded(lifetime: 100)
        #expect(s.tick(now: 101) == .fetch)
        #expect(s.fetchFailed(now: 102) == [])
        #expect(s.hasKeys)
        #expect(s.nextFetch == 103)
        #expect(s.tick(now: 103) == .fetch)
        #expect(s.fetchFailed(now: 104) == [])
        #expect(s.nextFetch == 106)
        #expect(s.retryDelay(afterFailures: 3) == 4)
        #expect(s.retryDelay(afterFailures: 7) == 60)  // capped
        #expect(s.retryDelay(afterFailures: 500) == 60)
        s.fetchSucceeded(now: 107, lifetime: 100)
        #expect(s.consecutiveFailures == 0)
        #expect(s.nextFetch == 207)
    }

    @Test func retriesNeverWaitLongerThanTheMaximumRefresh() {
        let quick = KeySetRefreshState.Settings(minRefresh: 1, maxRefresh: 2, refetchCooldown: 1, maxStale: 10)
        let s = KeySetRefreshState(settings: quick)
        #expect(s.retryDelay(afterFailures: 10) == 2)
    }

    @Test func keysAreDroppedOnceTooStale() {
        var s = loaded(lifetime: 100)  // fresh until 101, dropped at 101 + 3600
        #expect(s.dropDeadline == 3701)
        #expect(s.tick(now: 101) == .fetch)
        var t = 101.0
        while t < 3600 {
            #expect(s.fetchFailed(now: t + 1) == [])
            t = s.nextFetch
            #expect(s.tick(now: t) == .fetch)
        }
        #expect(s.nextWakeup == nil)  // fetching: its outcome decides
        // The failure that lands past the deadline drops the keys.
        #expect(s.fetchFailed(now: 3701) == .dropKeys)
        #expect(!s.hasKeys)
        #expect(s.loadedOnce)  // readiness: loaded at least once
        #expect(s.dropDeadline == nil)
        s.fetchSucceeded(now: 3702, lifetime: nil)
        #expect(s.hasKeys)
    }

    @Test func theTimerDropsStaleKeysWhenNoRetryIsDueBefore() {
        let slow = KeySetRefreshState.Settings(
            minRefresh: 60, maxRefresh: 900, refetchCooldown: 10, maxStale: 10, initialRetry: 30, maxRetry: 60)
        var s = KeySetRefreshState(settings: slow)
        _ = s.start(now: 0)
        s.fetchSucceeded(now: 1, lifetime: 100)  // fresh until 101, dropped at 111
        #expect(s.tick(now: 101) == .fetch)
        #expect(s.fetchFailed(now: 102) == [])  // next attempt at 132
        #expect(s.nextWakeup == 111)
        #expect(s.tick(now: 111) == .dropKeys)
        #expect(!s.hasKeys && s.nextWakeup == 132)
        #expect(s.tick(now: 132) == .fetch)
    }

    @Test func aRefreshThatSucceedsNeverDropsKeys() {
        let strict = KeySetRefreshState.Settings(minRefresh: 60, maxRefresh: 900, refetchCooldown: 10, maxStale: 0)
        var s = KeySetRefreshState(settings: strict)
        _ = s.start(now: 0)
        s.fetchSucceeded(now: 0, lifetime: 100)
        #expect(s.nextWakeup == 100)
        #expect(s.tick(now: 100) == .fetch)  // the deadline is now too, but the fetch gets to finish first
        #expect(s.hasKeys)
        #expect(s.tick(now: 100.5) == [])
        s.fetchSucceeded(now: 101, lifetime: 100)
        #expect(s.hasKeys)
        #expect(s.tick(now: 201) == .fetch)
        #expect(s.fetchFailed(now: 202) == .dropKeys)  // with no staleness allowed, a failed refresh drops them
    }

    @Test func settingsAreSane() {
        let odd = KeySetRefreshState.Settings(minRefresh: 50, maxRefresh: 10, refetchCooldown: -1, maxStale: -5)
        #expect(odd.maxRefresh == 50)
        #expect(odd.refetchCooldown == 0)
        #expect(odd.maxStale == 0)
        #expect(odd.maxRetry == 50)
    }
}
