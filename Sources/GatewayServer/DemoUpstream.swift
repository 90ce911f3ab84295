import GatewayJSON
import NIOCore
import NIOHTTP1
import NIOPosix

/// The embedded demo upstream, started when `gateway.json` configures none: it answers every request with a JSON
/// summary of what reached it — method, path, and the identity headers the gateway injected — so a first run shows
/// the whole flow without another server.
enum DemoUpstream {
    /// Starts the demo server on a unix socket at `path` and returns its channel.
    static func start(group: any EventLoopGroup, socketPath: String) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(SimpleResponder(respond: answer))
                }
            }
            .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true)
            .get()
    }

    static func answer(_ head: HTTPRequestHead, _ body: [UInt8]) -> SimpleResponder.Response {
        var headers = JSONObject()
        for (name, value) in head.headers {
            let lower = name.lowercased()
            if lower.hasPrefix("x-auth-") || lower.hasPrefix("x-forwarded-") || lower == "x-request-id" {
                headers[lower] = .string(value)
            }
        }
        let summary: JSONValue = .object(
            JSONObject([
                ("upstream", .string("portcullis demo upstream")),
                ("method", .string(head.method.rawValue)),
                ("path", .string(head.uri)),
                ("body_bytes", .number(Double(body.count))),
                ("headers", .object(headers)),
            ]))
        return .init(status: .ok, headers: [("Content-Type", "application/json")], body: Array((JSONWriter.string(summary) + "\n").utf8))
    }
}
