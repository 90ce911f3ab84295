import NIOCore

/// A complete, buffered response of `CurlLoopDriver.fetch`.
public struct CurlFetchResponse: Sendable {
    public var status: Int
    public var headers: [CurlHeader]
    public var body: [UInt8]

    public init(status: Int, headers: [CurlHeader], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { CurlEasyConfiguration.equalsIgnoringCase($0.name, name.lowercased()) }?.value
    }

    /// Every value of header `name` (case-insensitive), in order.
    public func headers(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { CurlEasyConfiguration.equalsIgnoringCase($0.name, lower) }.map(\.value)
    }
}

/// Why a fetch failed.
public struct CurlFetchError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable, CustomStringConvertible {
        /// The transfer failed (could not connect, reset, response timeout, ...).
        case transfer(CurlTransferError.Code)
        /// The response body (or its announced `Content-Length`) exceeded `maxResponseBytes`.
        case responseTooLarge
        /// The whole exchange took longer than `timeout`.
        case timeout

        public var description: String {
            switch self {
            case .transfer(let code): "transfer_\(code)"
            case .responseTooLarge: "response_too_large"
            case .timeout: "timeout"
            }
        }
    }

    public var code: Code
    /// Safe to log: never contains URLs, header values or body bytes.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "CurlFetchError(\(code)): \(message)" }
}

extension CurlLoopDriver {
    /// One small request whose response is buffered whole: for control-plane exchanges (key sets, metadata, a
    /// credential check), never for proxied traffic. Must be called on `eventLoop`; the future completes there.
    ///
    /// - Parameters:
    ///   - request: as for `start`. When `requestBody` is given, `request.body` is replaced by its length.
    ///   - requestBody: bytes to send (POST/PUT), or nil for none.
    ///   - maxResponseBytes: a larger body (or `Content-Length`) aborts the transfer with `.responseTooLarge`.
    ///   - timeout: bound on the whole exchange, connect to last byte (`.timeout`); nil for only the request's own
    ///     connect / response / idle timeouts.
    public func fetch(
        _ request: CurlRequest, requestBody: [UInt8]? = nil, maxResponseBytes: Int, timeout: TimeAmount? = nil
    ) -> EventLoopFuture<CurlFetchResponse> {
        eventLoop.preconditionInEventLoop()
        var request = request
        if let requestBody { request.body = .length(Int64(requestBody.count)) }
        let delegate = CurlFetchDelegate(
            promise: eventLoop.makePromise(), requestBody: requestBody ?? [], maxResponseBytes: max(0, maxResponseBytes))
        let transfer = start(request, delegate: delegate)
        if let timeout {
            delegate.deadline = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                delegate.expire(transfer)
            }
        }
        return delegate.promise.futureResult
    }
}

/// Collects one response for `fetch`. Confined to the driver's loop.
final class CurlFetchDelegate: CurlTransferDelegate {
    let promise: EventLoopPromise<CurlFetchResponse>
    private let requestBody: [UInt8]
    private var sent = 0
    private let maxResponseBytes: Int
    private var head: CurlResponseHead?
    private var body: [UInt8] = []
    /// Set when we cancelled the transfer ourselves; becomes the result.
    private var failure: CurlFetchError?
    var deadline: Scheduled<Void>?

    init(promise: EventLoopPromise<CurlFetchResponse>, requestBody: [UInt8], maxResponseBytes: Int) {
        self.promise = promise
        self.requestBody = requestBody
        self.maxResponseBytes = maxResponseBytes
    }

    func expire(_ transfer: CurlTransfer) {
        guard failure == nil else { return }
        failure = CurlFetchError(code: .timeout, message: "no complete response within the fetch timeout")
        transfer.cancel()
    }

    private func refuse(_ transfer: CurlTransfer) {
        failure = CurlFetchError(code: .responseTooLarge, message: "the response is larger than \(maxResponseBytes) bytes")
        transfer.cancel()
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveHead head: CurlResponseHead) {
        self.head = head
        let announced = head.headers.first { CurlEasyConfiguration.equalsIgnoringCase($0.name, "content-length") }
        if let announced, let length = Int(announced.value), length > maxResponseBytes {
            refuse(transfer)
        }
    }

    func curlTransfer(_ transfer: CurlTransfer, didReceiveBodyBytes bytes: UnsafeRawBufferPointer) -> CurlBodyDisposition {
        guard failure == nil else { return .consumed }
        guard body.count + bytes.count <= maxResponseBytes else {
            refuse(transfer)
            return .consumed
        }
        body.append(contentsOf: bytes)
        return .consumed
    }

    func curlTransfer(_ transfer: CurlTransfer, fillRequestBody buffer: UnsafeMutableRawBufferPointer) -> CurlUploadChunk {
        let n = min(buffer.count, requestBody.count - sent)
        guard n > 0 else { return .end }
        requestBody.withUnsafeBytes { source in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[sent..<(sent + n)]))
        }
        sent += n
        return .bytes(n)
    }

    func curlTransferDidFinishBatch(_ transfer: CurlTransfer) {}

    func curlTransfer(_ transfer: CurlTransfer, didCompleteWith result: Result<Void, CurlTransferError>) {
        deadline?.cancel()
        deadline = nil
        if let failure {
            promise.fail(failure)
            return
        }
        switch result {
        case .success:
            guard let head else {
                promise.fail(CurlFetchError(code: .transfer(.protocolError), message: "no response head"))
                return
            }
            promise.succeed(CurlFetchResponse(status: head.status, headers: head.headers, body: body))
        case .failure(let error):
            promise.fail(CurlFetchError(code: .transfer(error.code), message: error.message))
        }
    }
}

@available(*, unavailable)
extension CurlFetchDelegate: Sendable {}
