import CurlNIO
import NIOCore
import Testing

// Part of the serialized integration suite (environment-variable tests must not overlap other transfers).
extension CurlDriverIntegrationTests {
    /// Issue 10: every `curl_easy_setopt` result was ignored, so a refused option (here `CURLOPT_CAINFO`, a string
    /// over curl's input limit) left the transfer running without it — trusting the system store instead of the
    /// configured CA. Now the transfer fails before it starts and names the option.
    @Test func aRefusedOptionFailsTheTransferBeforeItStarts() async throws {
        try await withFixture { fixture, server in
            var request = self.request(server, "/echo")
            request.tls = CurlTLSOptions(caFile: "/" + String(repeating: "a", count: 9 * 1024 * 1024))
            let delegate = RecordingDelegate(eventLoop: fixture.loop)
            let result = try await fixture.run(request, delegate: delegate)
            #expect(result.errorCode == .optionRefused)
            if case .failure(let error) = result {
                #expect(error.message.contains("CURLOPT_CAINFO"))
                #expect(!error.message.contains("aaaa"))  // the value itself is never in the message
            }
            #expect(server.acceptedConnections.current == 0)
            // The driver stays usable.
            let again = try await fixture.run(self.request(server, "/echo"), delegate: RecordingDelegate(eventLoop: fixture.loop))
            #expect(again.isSuccess)
        }
    }
}
