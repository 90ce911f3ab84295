import Testing

@testable import GatewaySessions

@Suite struct CallOutcomeTests {
    struct Failure: Error, Equatable {}

    @Test func theFirstFinishWinsWhetherAwaitedBeforeOrAfter() async throws {
        let early = CallOutcome<Int>()
        early.finish(.success(1))
        early.finish(.success(2))
        #expect(try await early.value == 1)

        let late = CallOutcome<Int>()
        let waiter = Task { try await late.value }
        try await Task.sleep(for: .milliseconds(20))
        late.finish(.failure(Failure()))
        late.finish(.success(3))
        await #expect(throws: Failure.self) { try await waiter.value }
    }

    @Test func racingFinishesDeliverExactlyOne() async throws {
        for _ in 0..<200 {
            let outcome = CallOutcome<Int>()
            let waiter = Task { try await outcome.value }
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<8 { group.addTask { outcome.finish(.success(i)) } }
            }
            let value = try await waiter.value
            #expect((0..<8).contains(value))
        }
    }
}
