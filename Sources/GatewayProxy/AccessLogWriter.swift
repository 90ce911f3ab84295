import GatewayJSON
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// The JSON access log of one event loop (`log.format: json`): each line is formatted straight into the loop's
/// buffer, and the buffer is handed to `LogOutput` (standard error's queue and writer thread) at the end of the
/// loop's current turn (or sooner past 64 KiB), so a busy loop takes the queue's lock once per batch of requests and
/// never waits for the output itself. The line has
/// the shape `JSONLogHandler` gives every other line (`ts`, `level`, `logger`, `msg`, then the fields in name order),
/// with `status`, `duration_ms` and `upstream_ms` as numbers.
public final class AccessLogWriter {
    private let eventLoop: any EventLoop
    private let output: LogOutput
    private var buffer: [UInt8] = []
    private var bufferedLines = 0
    private var flushScheduled = false
    /// `"YYYY-MM-DDTHH:MM:SS` of `cachedSecond`, so the date is formatted once per second, not per line.
    private var cachedSecond = -1
    private var cachedPrefix: [UInt8] = []
    static let flushThreshold = 64 * 1024

    public init(eventLoop: any EventLoop, output: LogOutput = .standardError) {
        self.eventLoop = eventLoop
        self.output = output
        buffer.reserveCapacity(Self.flushThreshold)
    }

    /// Appends one access line. Strings go through `JSONWriter`, so control characters are escaped.
    func write(_ record: AccessRecord, requestID: String, durationMs: Double, upstreamMs: Double?) {
        appendTimestamp()
        buffer.append(contentsOf: #","level":"info","logger":"portcullis.access","msg":"request","duration_ms":"#.utf8)
        appendMilliseconds(durationMs)
        buffer.append(contentsOf: #","method":"#.utf8)
        JSONWriter.appendString(record.method, to: &buffer)
        buffer.append(contentsOf: #","path":"#.utf8)
        JSONWriter.appendString(record.path, to: &buffer)
        if let reason = record.reason {
            buffer.append(contentsOf: #","reason":"#.utf8)
            JSONWriter.appendString(reason, to: &buffer)
        }
        buffer.append(contentsOf: #","request_id":"#.utf8)
        JSONWriter.appendString(requestID, to: &buffer)
        if let route = record.route {
            buffer.append(contentsOf: #","route":"#.utf8)
            JSONWriter.appendString(route, to: &buffer)
        }
        buffer.append(contentsOf: #","status":"#.utf8)
        buffer.append(contentsOf: String(record.status).utf8)
        if let subject = record.subject {
            buffer.append(contentsOf: #","subject":"#.utf8)
            JSONWriter.appendString(subject, to: &buffer)
        }
        if let upstreamMs {
            buffer.append(contentsOf: #","upstream_ms":"#.utf8)
            appendMilliseconds(upstreamMs)
        }
        if let websocket = record.websocket {
            buffer.append(contentsOf: #","websocket_bytes_from_client":"#.utf8)
            buffer.append(contentsOf: String(websocket.fromClient).utf8)
            buffer.append(contentsOf: #","websocket_bytes_from_upstream":"#.utf8)
            buffer.append(contentsOf: String(websocket.fromUpstream).utf8)
        }
        buffer.append(contentsOf: "}\n".utf8)
        bufferedLines += 1

        if buffer.count >= Self.flushThreshold {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            // Runs after the I/O of this loop turn: every line of the turn goes out together.
            eventLoop.assumeIsolated().execute { self.flush() }
        }
    }

    /// Hands what is buffered to the output queue (never blocks; a full queue drops the batch and counts its lines).
    public func flush() {
        flushScheduled = false
        guard !buffer.isEmpty else { return }
        output.enqueue(buffer, lines: bufferedLines)
        buffer.removeAll(keepingCapacity: true)
        bufferedLines = 0
    }

    private func appendTimestamp() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        if ts.tv_sec != cachedSecond {
            cachedSecond = ts.tv_sec
            var seconds = ts.tv_sec
            var parts = tm()
            gmtime_r(&seconds, &parts)
            cachedPrefix = Array(#"{"ts":""#.utf8)
            appendPadded(Int(parts.tm_year) + 1900, 4, to: &cachedPrefix)
            cachedPrefix.append(UInt8(ascii: "-"))
            appendPadded(Int(parts.tm_mon) + 1, 2, to: &cachedPrefix)
            cachedPrefix.append(UInt8(ascii: "-"))
            appendPadded(Int(parts.tm_mday), 2, to: &cachedPrefix)
            cachedPrefix.append(UInt8(ascii: "T"))
            appendPadded(Int(parts.tm_hour), 2, to: &cachedPrefix)
            cachedPrefix.append(UInt8(ascii: ":"))
            appendPadded(Int(parts.tm_min), 2, to: &cachedPrefix)
            cachedPrefix.append(UInt8(ascii: ":"))
            appendPadded(Int(parts.tm_sec), 2, to: &cachedPrefix)
        }
        buffer.append(contentsOf: cachedPrefix)
        buffer.append(UInt8(ascii: "."))
        appendPadded(ts.tv_nsec / 1_000_000, 3, to: &buffer)
        buffer.append(contentsOf: #"Z""#.utf8)
    }

    /// Milliseconds with three decimals (microsecond resolution).
    private func appendMilliseconds(_ ms: Double) {
        let micros = Int((max(0, ms) * 1000).rounded())
        buffer.append(contentsOf: String(micros / 1000).utf8)
        buffer.append(UInt8(ascii: "."))
        appendPadded(micros % 1000, 3, to: &buffer)
    }

    private func appendPadded(_ value: Int, _ width: Int, to out: inout [UInt8]) {
        var digits: [UInt8] = []
        var v = value
        repeat {
            digits.append(UInt8(ascii: "0") + UInt8(v % 10))
            v /= 10
        } while v > 0
        for _ in digits.count..<max(width, digits.count) { out.append(UInt8(ascii: "0")) }
        out.append(contentsOf: digits.reversed())
    }
}

@available(*, unavailable)
extension AccessLogWriter: Sendable {}

/// Where access-log lines go (`log.access_log`, `log.format`).
public enum AccessLogSink: Sendable {
    case off
    /// Text format: through swift-log.
    case logger(Logger)
    /// JSON format: the loop's `AccessLogWriter`.
    case json
}
