import Dispatch
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Where every log line of the process goes (standard error): a queue, bounded in bytes, that one dedicated thread
/// empties with blocking `write(2)` calls.
///
/// Log lines are produced on event-loop threads (the access log, warnings on the data path). Writing them there
/// meant a log pipe that nobody reads — a stalled log collector, a full container log buffer, a terminal on pause —
/// blocked the event loop in `write(2)`, and with it every connection of that loop. Now a producer only appends to
/// the queue under a short lock and never waits: when the queue is full the line is dropped and counted, and once
/// the output drains again the writer logs how many lines were lost (a `warning` from `portcullis.log`).
public final class LogOutput: Sendable {
    /// How the dropped-lines notice is written: like the other lines of the process.
    public enum Style: Sendable {
        case json
        case text
    }

    /// Standard error, for the whole process.
    public static let standardError = LogOutput(fd: 2)

    /// Bytes waiting to be written (and the batch being written) stay below this; past it, lines are dropped.
    public let capacity: Int
    private let fd: Int32
    private let state: NIOLockedValueBox<State>
    private let wakeup = DispatchSemaphore(value: 0)

    private struct State {
        var chunks: [[UInt8]] = []
        var queuedBytes = 0
        var droppedSinceNotice = 0
        var droppedTotal = 0
        /// The writer has found the queue empty and waits for a wakeup; the next producer gives one.
        var writerIdle = false
        var style = Style.json
    }

    /// A queue writing to `fd` on a thread of its own, started here and running for the life of the process.
    public init(fd: Int32, capacity: Int = 4 << 20) {
        self.fd = fd
        self.capacity = capacity
        self.state = NIOLockedValueBox(State())
        Self.startThread(self)
    }

    /// Lines dropped because the queue was full, since the start.
    public var droppedLines: Int { state.withLockedValue { $0.droppedTotal } }

    /// Sets how the dropped-lines notice is written (`log.format`).
    public func setStyle(_ style: Style) {
        state.withLockedValue { $0.style = style }
    }

    /// Queues `bytes` (`lines` complete lines) without ever blocking on the output; drops them if the queue is full.
    public func enqueue(_ bytes: [UInt8], lines: Int = 1) {
        guard !bytes.isEmpty else { return }
        let wake = state.withLockedValue { state -> Bool in
            guard state.queuedBytes + bytes.count <= capacity else {
                state.droppedSinceNotice += lines
                state.droppedTotal += lines
                // An idle writer (a single batch larger than the queue) still has a notice to write.
                guard state.writerIdle else { return false }
                state.writerIdle = false
                return true
            }
            state.chunks.append(bytes)
            state.queuedBytes += bytes.count
            guard state.writerIdle else { return false }
            state.writerIdle = false
            return true
        }
        if wake { wakeup.signal() }
    }

    /// A stream for swift-log's `StreamLogHandler` (text format): each line it writes is queued here.
    public var textStream: TextStream { TextStream(output: self) }

    /// Waits until everything queued has been written, for at most `timeout` (at exit; the output may be stalled).
    /// Returns whether the queue drained.
    @discardableResult
    public func drain(timeout: Duration) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if state.withLockedValue({ $0.chunks.isEmpty && $0.writerIdle }) { return true }
            usleep(2000)
        }
        return false
    }

    // MARK: - The writer thread

    private static func startThread(_ output: LogOutput) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(output).toOpaque()
        let created = pthread_create(
            &thread, nil,
            { context in
                let output = Unmanaged<LogOutput>.fromOpaque(context!).takeRetainedValue()
                output.runWriter()
                return nil
            }, context)
        if created == 0 {
            pthread_detach(thread)
        } else {
            // No thread, no log: never let producers queue forever. Lines are dropped and counted.
            Unmanaged<LogOutput>.fromOpaque(context).release()
            output.state.withLockedValue { $0.queuedBytes = Int.max / 2 }
        }
    }

    private func runWriter() {
        while true {
            let (chunks, dropped, style) = state.withLockedValue { state -> ([[UInt8]], Int, Style) in
                let chunks = state.chunks
                let dropped = state.droppedSinceNotice
                state.chunks = []
                state.droppedSinceNotice = 0
                if chunks.isEmpty && dropped == 0 {
                    state.queuedBytes = 0
                    state.writerIdle = true
                }
                return (chunks, dropped, state.style)
            }
            if chunks.isEmpty && dropped == 0 {
                wakeup.wait()
                continue
            }
            for chunk in chunks { writeAll(chunk) }
            // Written: the room they took is free again (counted until now, so memory stays within `capacity`).
            let written = chunks.reduce(0) { $0 + $1.count }
            state.withLockedValue { $0.queuedBytes -= written }
            if dropped > 0 { writeAll(Self.droppedNotice(dropped, style: style)) }
        }
    }

    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return  // a closed log is not a reason to stop; the next lines try again
                }
            }
        }
    }

    static func droppedNotice(_ count: Int, style: Style) -> [UInt8] {
        let message = "the log output was too slow: \(count) line(s) dropped"
        switch style {
        case .json:
            var line = Array(#"{"ts":""#.utf8)
            line += Array(LogTimestamp.now().utf8)
            line += Array(#"","level":"warning","logger":"portcullis.log","msg":""#.utf8)
            line += Array(message.utf8)
            line += Array(#"","dropped_lines":\#(count)}"#.utf8)
            line.append(UInt8(ascii: "\n"))
            return line
        case .text:
            return Array("\(LogTimestamp.now()) warning portcullis.log : \(message)\n".utf8)
        }
    }

    /// Hands each line swift-log's `StreamLogHandler` writes to a `LogOutput`.
    public struct TextStream: TextOutputStream, Sendable {
        let output: LogOutput

        public mutating func write(_ string: String) {
            output.enqueue(Array(string.utf8), lines: 1)
        }
    }
}
