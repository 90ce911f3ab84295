import NIOConcurrencyHelpers
import Testing

@testable import GatewayConfig

/// A fake configuration file and gateway: `version` is what the file holds now, `installed` what the gateway
/// serves. A reload reads the version when it starts and installs it when it ends, like `ConfigReloader`.
private final class FakeGateway: Sendable {
    let version = NIOLockedValueBox(0)
    let installed = NIOLockedValueBox<[Int]>([])
    let runs = NIOLockedValueBox(0)
    let concurrent = NIOLockedValueBox((now: 0, most: 0))

    func reload() async -> Int {
        let read = self.version.withLockedValue { $0 }
        let run = runs.withLockedValue {
            $0 += 1
            return $0
        }
        concurrent.withLockedValue {
            $0.now += 1
            $0.most = max($0.most, $0.now)
        }
        // The first reload is slow to build (a large users file), the later ones are quick.
        try? await Task.sleep(for: run == 1 ? .seconds(1) : .milliseconds(5))
        concurrent.withLockedValue { $0.now -= 1 }
        installed.withLockedValue { $0.append(read) }
        return read
    }
}

@Suite struct ReloadQueueTests {
    /// Issue 10: three edits 25 ms apart, each followed by a reload request, the first slow to build. Run
    /// concurrently, the slow first reload installed last and the gateway served edit 1. Serialised and coalesced,
    /// the newest edit is installed last, and the burst costs two runs.
    @Test func theNewestEditWinsOverASlowOlderReload() async throws {
        let gateway = FakeGateway()
        let queue = ReloadQueue<Int>()
        var requests: [Task<Int, Never>] = []
        for edit in 1...3 {
            gateway.version.withLockedValue { $0 = edit }
            requests.append(Task { await queue.run(reason: "SIGHUP") { _ in await gateway.reload() } })
            // The first reload has read edit 1 before the next edit is written.
            while gateway.runs.withLockedValue({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
            try await Task.sleep(for: .milliseconds(25))
        }
        var outcomes: [Int] = []
        for request in requests { outcomes.append(await request.value) }

        #expect(gateway.installed.withLockedValue { $0.last } == 3)
        #expect(gateway.concurrent.withLockedValue { $0.most } == 1)
        #expect(gateway.runs.withLockedValue { $0 } == 2)
        // The first request gets its own run's outcome; the coalesced ones the run that read the newest edit.
        #expect(outcomes == [1, 3, 3])
    }

    @Test func aRequestAfterARunFinishedStartsAFreshRun() async {
        let queue = ReloadQueue<String>()
        let first = await queue.run(reason: "SIGHUP") { reason in reason }
        let second = await queue.run(reason: "file changed") { reason in reason }
        #expect(first == "SIGHUP" && second == "file changed")
    }

    @Test func coalescedReasonsAreNamedOnce() async throws {
        let queue = ReloadQueue<String>()
        let gate = NIOLockedValueBox(false)
        let slow = Task {
            await queue.run(reason: "first") { reason in
                while !gate.withLockedValue({ $0 }) { try? await Task.sleep(for: .milliseconds(2)) }
                return reason
            }
        }
        try await Task.sleep(for: .milliseconds(20))
        let waiting = (0..<3).map { i in
            Task { await queue.run(reason: i == 1 ? "file changed" : "SIGHUP") { reason in reason } }
        }
        try await Task.sleep(for: .milliseconds(20))
        gate.withLockedValue { $0 = true }
        #expect(await slow.value == "first")
        for task in waiting {
            let reason = await task.value
            #expect(reason == "SIGHUP, file changed" || reason == "file changed, SIGHUP")
        }
    }
}
