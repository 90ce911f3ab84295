import Logging
import NIOCore

/// What the access log says about one request (DESIGN §7): id, method, path (never the query, which may carry
/// secrets), route, status, reason, subject, total and upstream durations. Filled in as the request goes; written once.
struct AccessRecord {
    var start: NIODeadline = .now()
    var method = "-"
    /// The request target as received; only the log needs `path`, so it is cut from this only when a line is written.
    var uri = "-"
    var route: String?
    var subject: String?
    var status = 0
    var reason: String?
    var upstreamStart: NIODeadline?
    var upstreamHead: NIODeadline?
    /// A WebSocket tunnel's bytes each way (its line is written when it ends; `status` is 101).
    var websocket: (fromClient: Int64, fromUpstream: Int64)?
    var written = true

    init() {}

    init(method: String, uri: String) {
        self.method = method
        self.uri = uri
        self.written = false
    }

    /// The path only: a query string may hold tokens (`?access_token=`) and must never reach the log.
    var path: String {
        let path = uri[..<(uri.utf8.firstIndex(of: UInt8(ascii: "?")) ?? uri.endIndex)]
        return path.count > 512 ? String(path.prefix(512)) + "…" : String(path)
    }

    /// Counts the request in the loop's metrics and writes its log line, once; later calls do nothing.
    mutating func write(to sink: AccessLogSink, requestID: String, loop: LoopContext) {
        guard !written else { return }
        written = true
        let end = NIODeadline.now()
        let total = Self.seconds(end - start)
        let upstream = upstreamStart.map { Self.seconds((upstreamHead ?? end) - $0) }
        loop.metrics.request(route: route ?? "-", status: status)
        loop.metrics.durations(total: total, upstream: upstream)
        let logger: Logger
        switch sink {
        case .off:
            return
        case .json:
            loop.accessLogWriter.write(self, requestID: requestID, durationMs: total * 1000, upstreamMs: upstream.map { $0 * 1000 })
            return
        case .logger(let l):
            logger = l
        }
        var metadata: Logger.Metadata = [
            "request_id": .string(requestID),
            "method": .string(method),
            "path": .string(path),
            "status": .stringConvertible(status),
            "duration_ms": .string(Self.milliseconds(end - start)),
        ]
        if let route { metadata["route"] = .string(route) }
        if let reason { metadata["reason"] = .string(reason) }
        if let subject { metadata["subject"] = .string(subject) }
        if let upstreamStart { metadata["upstream_ms"] = .string(Self.milliseconds((upstreamHead ?? end) - upstreamStart)) }
        if let websocket {
            metadata["websocket_bytes_from_client"] = .stringConvertible(websocket.fromClient)
            metadata["websocket_bytes_from_upstream"] = .stringConvertible(websocket.fromUpstream)
        }
        logger.info("request", metadata: metadata)
    }

    static func seconds(_ amount: TimeAmount) -> Double {
        Double(amount.nanoseconds) / 1e9
    }

    static func milliseconds(_ amount: TimeAmount) -> String {
        let micros = amount.nanoseconds / 1000
        let whole = micros / 1000
        let fraction = micros % 1000
        return "\(whole).\(fraction < 10 ? "00" : fraction < 100 ? "0" : "")\(fraction)"
    }
}

extension LoopContext {
    /// A request head that did not arrive within `header_timeout_ms` (answered 408 before any handler saw a request):
    /// counted and logged like every other request. Returns the request id to answer with.
    public func recordHeadTimeout(accessLog: AccessLogSink) -> String {
        let requestID = nextRequestID()
        var record = AccessRecord(method: "-", uri: "-")
        record.status = 408
        record.reason = GatewayError.requestTimeout.reason
        record.write(to: accessLog, requestID: requestID, loop: self)
        return requestID
    }
}
