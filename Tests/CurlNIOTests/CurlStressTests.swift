import CurlNIO
import NIOCore
import NIOPosix
import Testing

// Part of the serialized integration suite (environment-variable tests must not overlap other transfers).
extension CurlDriverIntegrationTests {
    /// 500 short transfers, 32 at a time over two loops, some cancelled at random points: every transfer completes
    /// exactly once and nothing is delivered after completion.
    @Test func manyTransfersWithRandomCancels() async throws {
        try await withFixture(threads: 2) { fixture, server in
            let total = 500
            let concurrency = 32
            let curl = fixture.curl
            var generator = SystemRandomNumberGenerator()
            struct Plan: Sendable {
                var target: String
                var expectedBytes: Int?
                var cancel: Int  // 0 none, 1 right after start, 2 on head, 3 on first body, 4 after a delay
            }
            let plans: [Plan] = (0..<total).map { i in
                let kind = Int.random(in: 0..<3, using: &generator)
                let cancel = Int.random(in: 0..<10, using: &generator) < 3 ? Int.random(in: 1...4, using: &generator) : 0
                switch kind {
                case 0: return Plan(target: "/echo/\(i)", expectedBytes: nil, cancel: cancel)
                case 1:
                    let n = Int.random(in: 0...300_000, using: &generator)
                    return Plan(target: "/bytes/\(n)", expectedBytes: n, cancel: cancel)
                default: return Plan(target: "/delay/\(Int.random(in: 1...5, using: &generator))", expectedBytes: 5, cancel: cancel)
                }
            }
            let loops = [fixture.group.next(), fixture.group.next()]

            func runOne(_ index: Int) async throws -> (Result<Void, CurlTransferError>, RecordingDelegate, Plan) {
                let plan = plans[index]
                let loop = loops[index % 2]
                let delegate = RecordingDelegate(eventLoop: loop)
                delegate.keepBody = false
                delegate.verifyPattern = plan.target.hasPrefix("/bytes")
                delegate.pauseEvery = index % 3 == 0 ? 2 : 0
                switch plan.cancel {
                case 2: delegate.onHead = { $0.transfer?.cancel() }
                case 3: delegate.onBody = { $0.transfer?.cancel() }
                default: break
                }
                let request = CurlRequest(
                    origin: server.origin, requestTarget: plan.target, method: "GET", connectTimeout: .seconds(5),
                    responseTimeout: .seconds(20), idleTimeout: .seconds(20))
                try await loop.submit {
                    let transfer = curl.driver(for: loop).start(request, delegate: delegate)
                    delegate.transfer = transfer
                    if plan.cancel == 1 { transfer.cancel() }
                    if plan.cancel == 4 {
                        loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(index % 4))) { transfer.cancel() }
                    }
                }.get()
                let result = try await delegate.done.futureResult.get()
                // let any stray late event show up before we look
                try await loop.submit {}.get()
                return (result, delegate, plan)
            }

            var completed = 0
            var cancelled = 0
            try await withThrowingTaskGroup(of: (Result<Void, CurlTransferError>, RecordingDelegate, Plan).self) { group in
                var next = 0
                while next < min(concurrency, total) {
                    let i = next
                    group.addTask { try await runOne(i) }
                    next += 1
                }
                while let (result, delegate, plan) = try await group.next() {
                    completed += 1
                    #expect(delegate.completions == 1)
                    #expect(delegate.eventsAfterCompletion == 0)
                    switch result {
                    case .success:
                        #expect(delegate.head?.status == 200)
                        if let expected = plan.expectedBytes { #expect(delegate.received == expected, "\(plan.target)") }
                        #expect(delegate.patternOK)
                    case .failure(let error):
                        #expect(error.code == .cancelled, "\(plan.target): \(error)")
                        #expect(plan.cancel != 0)
                        cancelled += 1
                    }
                    if next < total {
                        let i = next
                        group.addTask { try await runOne(i) }
                        next += 1
                    }
                }
            }
            #expect(completed == total)
            #expect(cancelled > 0)
            for loop in loops {
                let active = try await loop.submit { curl.driver(for: loop).activeTransferCount }.get()
                #expect(active == 0)
            }
        }
    }
}
