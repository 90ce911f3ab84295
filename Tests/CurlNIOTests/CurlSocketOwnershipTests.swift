import CCurl
import NIOCore
import NIOPosix
import Testing

@testable import CurlNIO

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 10: a transfer remembered only the last socket curl named for it, while the socket table stored the
/// transfer's *address* as every socket's owner and turned it back into an object when a socket became ready. With
/// two sockets for one transfer (happy eyeballs to `localhost`, a resolver pipe beside a connect), finishing the
/// transfer released only the last one: the other kept a dangling owner, dereferenced on its next readiness.
/// Owners are now serial ids resolved among live transfers, and every socket of a transfer is released.
extension CurlDriverIntegrationTests {
    /// Every owner left in the socket table is a live transfer (or none).
    func ownersAreLive(_ driver: CurlLoopDriver) -> Bool {
        driver.sockets.entries.values.allSatisfy { $0.owner == 0 || driver.owners[$0.owner] != nil }
    }

    @Test func everySocketOfAFinishedTransferIsReleased() async throws {
        try await withFixture { fixture, server in
            let loop = fixture.loop
            let curl = fixture.curl
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            defer {
                close(fds[0])
                close(fds[1])
            }
            let extra = fds[0]
            let delegate = RecordingDelegate(eventLoop: loop)
            try await loop.submit {
                let driver = curl.driver(for: loop)
                let transfer = driver.start(self.request(server, "/stall-head"), delegate: delegate)
                delegate.transfer = transfer
                // curl names a first socket for this transfer (as the losing family of a happy-eyeballs connect
                // would be); its connect socket comes later, in the same round.
                driver.onCurlSocket(easy: transfer.easy, fd: extra, what: 1)
            }.get()
            // The connect socket is there too; then the transfer ends while both are registered.
            try await Task.sleep(for: .milliseconds(200))
            try await loop.submit {
                #expect(delegate.transfer?.socketFDs.count ?? 0 >= 2)
                delegate.transfer?.cancel()
            }.get()
            let result = try await delegate.done.futureResult.get()
            #expect(result.errorCode == .cancelled)
            try await loop.submit {
                let driver = curl.driver(for: loop)
                #expect(driver.owners.isEmpty)
                #expect(driver.sockets.entries[extra]?.owner == 0)
                #expect(self.ownersAreLive(driver))
            }.get()
            // The extra socket becomes readable after its owner is gone: handled as unowned (re-armed), no crash.
            _ = write(fds[1], "x", 1)
            try await Task.sleep(for: .milliseconds(100))
            try await loop.submit {
                let driver = curl.driver(for: loop)
                driver.onCurlSocket(easy: nil, fd: extra, what: CurlSocketTable.curlPollRemove)
                #expect(self.ownersAreLive(driver))
            }.get()
        }
    }

    /// An upstream on `localhost` that listens on IPv4 only, so where `localhost` also resolves to `::1` that family
    /// refuses and curl falls back; many transfers at once: all succeed and no socket keeps a finished owner.
    @Test func localhostWithOneRefusingFamilyUnderManyTransfers() async throws {
        try await withFixture { fixture, server in
            let loop = fixture.loop
            let curl = fixture.curl
            let total = 300
            let concurrency = 24
            let origin = "http://localhost:\(server.port)"
            func runOne(_ i: Int) async throws -> Result<Void, CurlTransferError> {
                var request = self.request(server, i % 3 == 0 ? "/bytes/100000" : "/echo/\(i)")
                request.origin = origin
                let delegate = RecordingDelegate(eventLoop: loop)
                delegate.keepBody = false
                delegate.pauseEvery = i % 4 == 0 ? 2 : 0
                return try await fixture.run(request, delegate: delegate)
            }
            var failures = 0
            try await withThrowingTaskGroup(of: Result<Void, CurlTransferError>.self) { group in
                var next = 0
                while next < min(concurrency, total) {
                    let i = next
                    group.addTask { try await runOne(i) }
                    next += 1
                }
                while let result = try await group.next() {
                    if !result.isSuccess { failures += 1 }
                    if next < total {
                        let i = next
                        group.addTask { try await runOne(i) }
                        next += 1
                    }
                }
            }
            #expect(failures == 0)
            try await loop.submit {
                let driver = curl.driver(for: loop)
                #expect(driver.owners.isEmpty)
                #expect(self.ownersAreLive(driver))
            }.get()
        }
    }
}
