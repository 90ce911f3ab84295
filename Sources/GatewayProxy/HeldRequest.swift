import CurlNIO
import NIOCore
import NIOHTTP1

/// A request head kept while its keys are refetched, with what the client sent after it meanwhile.
public struct HeldRequest: Sendable, Equatable {
    public var head: HTTPRequestHead
    public var body: CurlRequestBody
    public var keepAlive: Bool
    public var parts: [ByteBuffer] = []
    public var ended = false

    public init(head: HTTPRequestHead, body: CurlRequestBody, keepAlive: Bool) {
        self.head = head
        self.body = body
        self.keepAlive = keepAlive
    }
}
