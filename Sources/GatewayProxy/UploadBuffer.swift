import CurlNIO
import NIOCore

/// The upload side of one forwarded request: client body parts queued until libcurl asks for them. Bounded by a
/// high watermark, above which the handler stops reading from the client.
struct UploadBuffer {
    private var parts = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private(set) var bufferedBytes = 0
    /// The client's body is complete.
    var finished = false
    /// libcurl asked for bytes while none were queued: resume it when some arrive.
    var curlWaiting = false

    static let highWatermark = 256 * 1024
    static let lowWatermark = 64 * 1024

    var isAboveHighWatermark: Bool { bufferedBytes >= Self.highWatermark }
    var isBelowLowWatermark: Bool { bufferedBytes <= Self.lowWatermark }

    /// Empties the buffer for the next request, keeping its storage (a new one would allocate for every request).
    mutating func reset() {
        parts.removeAll(keepingCapacity: true)
        bufferedBytes = 0
        finished = false
        curlWaiting = false
    }

    mutating func append(_ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        bufferedBytes += buffer.readableBytes
        parts.append(buffer)
    }

    /// Copies queued bytes into curl's buffer.
    mutating func fill(_ target: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        var written = 0
        while written < target.count, var part = parts.first {
            let n = min(part.readableBytes, target.count - written)
            part.withUnsafeReadableBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: target[written..<(written + n)]).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: source[0..<n]))
            }
            part.moveReaderIndex(forwardBy: n)
            written += n
            if part.readableBytes == 0 {
                parts.removeFirst()
            } else {
                parts[parts.startIndex] = part
            }
        }
        bufferedBytes -= written
        if written > 0 { return .bytes(written) }
        if finished { return .end }
        curlWaiting = true
        return .pause
    }
}
