import CurlNIO
import NIOCore

/// The upstream side of the request in flight: the transfer, the client's body queued for it, and whether the
/// response is held back for the client. One per connection, reused from request to request, so an exchange costs
/// no allocation beyond libcurl's own transfer.
///
/// Its mutating methods never call into the transfer: libcurl may call back at once from `resumeSending()` or
/// `resumeReceiving()` (into `fill`, or with body bytes), and that callback must find the exchange not in the middle
/// of a mutation (Swift's exclusivity rule). They say instead when the caller should wake the transfer, which it does
/// once the mutation is over, through its own copy of the `transfer` reference.
struct UpstreamExchange {
    private(set) var transfer: (any UpstreamTransfer)?
    private var upload = UploadBuffer()
    /// The client channel was not writable and the transfer holds response bytes for us.
    private(set) var receivePaused = false

    /// Forgets the previous request's transfer (without cancelling it: it ended or was cancelled) and empties the
    /// upload queue, keeping its storage.
    mutating func reset() {
        transfer = nil
        upload.reset()
        receivePaused = false
    }

    mutating func begin(_ transfer: any UpstreamTransfer) {
        self.transfer = transfer
    }

    /// Whether `other` is this exchange's transfer (events of one we let go of are ignored).
    func owns(_ other: any UpstreamTransfer) -> Bool {
        transfer === other
    }

    /// Queues client body bytes for the transfer. `full`: the queue is above its high watermark (stop reading);
    /// `wake`: the transfer was waiting for bytes (call its `resumeSending()`).
    mutating func send(_ buffer: ByteBuffer) -> (full: Bool, wake: Bool) {
        upload.append(buffer)
        return (upload.isAboveHighWatermark, takeSenderWaiting())
    }

    /// The client's body is complete; true when the transfer waits for it (call its `resumeSending()`).
    mutating func finishSending() -> Bool {
        upload.finished = true
        return takeSenderWaiting()
    }

    /// The transfer asks for body bytes. `drained` says the queue fell to its low watermark (read again).
    mutating func fill(_ target: UnsafeMutableRawBufferPointer) -> (chunk: CurlUploadChunk, drained: Bool) {
        let chunk = upload.fill(target)
        return (chunk, upload.isBelowLowWatermark)
    }

    /// Response bytes were refused because the client is not writable.
    mutating func pauseReceiving() {
        receivePaused = true
    }

    /// The client is writable again: true when the transfer was paused for it (call its `resumeReceiving()`).
    mutating func takeReceivePause() -> Bool {
        defer { receivePaused = false }
        return receivePaused && transfer != nil
    }

    /// Lets go of the transfer (it completed, or is being cancelled) and returns it.
    mutating func release() -> (any UpstreamTransfer)? {
        defer { transfer = nil }
        return transfer
    }

    private mutating func takeSenderWaiting() -> Bool {
        guard upload.curlWaiting else { return false }
        upload.curlWaiting = false
        return transfer != nil
    }
}
