import Testing

@testable import GatewayProxy

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 10: log lines produced on event loops must never wait for the output. `LogOutput` queues them for a
/// writer thread of its own and drops (and counts) what does not fit while the output is stalled.
@Suite struct LogOutputTests {
    /// A pipe whose read end nobody reads until `readAll`: writes to it block once its buffer is full.
    final class StalledPipe {
        let readEnd: Int32
        let writeEnd: Int32

        init() {
            var fds: [Int32] = [0, 0]
            precondition(pipe(&fds) == 0)
            readEnd = fds[0]
            writeEnd = fds[1]
        }

        /// Reads what arrives until nothing has come for `quiet`.
        func readAll(quiet: Duration = .milliseconds(300)) -> String {
            _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
            var out: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let clock = ContinuousClock()
            var last = clock.now
            while clock.now - last < quiet {
                let n = read(readEnd, &buffer, buffer.count)
                if n > 0 {
                    out += buffer[0..<n]
                    last = clock.now
                } else {
                    usleep(5000)
                }
            }
            return String(decoding: out, as: UTF8.self)
        }

        deinit {
            close(readEnd)
            close(writeEnd)
        }
    }

    @Test func producersNeverWaitAndDroppedLinesAreCountedAndReported() throws {
        let pipe = StalledPipe()
        let output = LogOutput(fd: pipe.writeEnd, capacity: 256 * 1024)
        let line = Array(String(repeating: "x", count: 199).utf8) + [0x0A]
        let clock = ContinuousClock()
        // 4 MiB into a 64 KiB pipe nobody reads and a 256 KiB queue: the writer blocks, producers must not.
        let elapsed = clock.measure {
            for _ in 0..<20_000 { output.enqueue(line) }
        }
        #expect(elapsed < .seconds(2))
        let dropped = output.droppedLines
        #expect(dropped > 15_000)

        // Once the output drains, every line that was queued arrives whole, and notices (after the lines queued
        // before the drops they report) account for every dropped line.
        let text = pipe.readAll()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        let notices = lines.filter { $0.hasPrefix("{") }
        #expect(!notices.isEmpty)
        var reported = 0
        for notice in notices {
            #expect(notice.contains(#""level":"warning","logger":"portcullis.log""#))
            // The count is the last member: `…,"dropped_lines":N}`.
            #expect(notice.contains(#""dropped_lines":"#))
            reported += notice.split(separator: ":").last.flatMap { Int($0.dropLast()) } ?? 0
        }
        #expect(reported == dropped)
        #expect(lines.last?.hasPrefix("{") == true)
        let written = lines.filter { !$0.hasPrefix("{") }
        #expect(written.allSatisfy { $0.count == 199 })
        #expect(written.count + dropped == 20_000)
    }

    @Test func linesKeepTheirOrderAndDrainWaitsForThem() {
        let pipe = StalledPipe()
        let output = LogOutput(fd: pipe.writeEnd)
        output.setStyle(.text)
        // About 9 KiB: the pipe's buffer holds it all, so the writer finishes without a reader.
        for i in 0..<1000 { output.enqueue(Array("line \(i)\n".utf8)) }
        #expect(output.drain(timeout: .seconds(10)))
        let text = pipe.readAll()
        #expect(text == (0..<1000).map { "line \($0)\n" }.joined())
        #expect(output.droppedLines == 0)
    }
}
