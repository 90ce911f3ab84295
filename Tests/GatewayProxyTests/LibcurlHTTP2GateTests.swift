import CurlNIO
import GatewayConfig
import Testing

@testable import GatewayProxy

/// HTTP/2 upstreams need libcurl 8.0 (DESIGN §11): older ones are refused per upstream, naming its `http_version`.
@Suite struct LibcurlHTTP2GateTests {
    static func configuration() throws -> GatewayConfiguration {
        let json = """
            {"upstreams": {"plain": {"url": "http://127.0.0.1:1"},
                           "tls2": {"url": "https://127.0.0.1:2", "http_version": "2"},
                           "clear": {"url": "http://127.0.0.1:3", "http_version": "h2c"}},
             "routes": [{"path_prefix": "/", "upstream": "plain", "auth": "none"}]}
            """
        return try GatewayConfiguration.parse(Array(json.utf8), baseDirectory: "/", environment: [:])
    }

    @Test func libcurl8CarriesEveryUpstream() throws {
        let c = try Self.configuration()
        #expect(LibcurlHTTP2Gate.problems(c, libcurl: .init(major: 8, minor: 0, patch: 0, supportsHTTP2: true), allowOld: false).isEmpty)
        #expect(LibcurlHTTP2Gate.problems(c, libcurl: .init(major: 8, minor: 14, patch: 1, supportsHTTP2: true), allowOld: false).isEmpty)
    }

    @Test func libcurl7RefusesEachHTTP2Upstream() throws {
        let c = try Self.configuration()
        let old = CurlLibraryVersion(major: 7, minor: 88, patch: 1, supportsHTTP2: true)
        let problems = LibcurlHTTP2Gate.problems(c, libcurl: old, allowOld: false)
        #expect(problems.map(\.path) == ["upstreams.tls2.http_version", "upstreams.clear.http_version"])
        #expect(problems.allSatisfy { $0.code == .invalidValue && $0.message.contains("needs libcurl 8.0 or newer") })
        #expect(problems.allSatisfy { $0.message.contains("7.88.1") })
        #expect(LibcurlHTTP2Gate.problems(c, libcurl: old, allowOld: true).isEmpty)
    }

    @Test func aLibcurlWithoutHTTP2RefusesThemEvenWhenAllowed() throws {
        let c = try Self.configuration()
        let noH2 = CurlLibraryVersion(major: 8, minor: 14, patch: 1, supportsHTTP2: false)
        #expect(LibcurlHTTP2Gate.problems(c, libcurl: noH2, allowOld: true).count == 2)
    }

    @Test func theOverrideIsExactlyOne() {
        #expect(LibcurlHTTP2Gate.allowsOld(environment: [LibcurlHTTP2Gate.overrideVariable: "1"]))
        #expect(!LibcurlHTTP2Gate.allowsOld(environment: [LibcurlHTTP2Gate.overrideVariable: "yes"]))
        #expect(!LibcurlHTTP2Gate.allowsOld(environment: [:]))
    }

    @Test func theRunningVersionIsReadable() {
        let running = CurlLibraryVersion.running
        #expect(running.major >= 7)
        #expect(running.description == "\(running.major).\(running.minor).\(running.patch)")
    }
}
