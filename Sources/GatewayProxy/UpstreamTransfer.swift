import CurlNIO

/// The handle the gateway keeps on one upstream transfer: libcurl's `CurlTransfer` in the gateway, a fake in tests
/// (so the connection handler's back-pressure and failure paths run on an `EmbeddedChannel` without a network).
public protocol UpstreamTransfer: AnyObject {
    /// More request body is queued (after the transfer was told to wait).
    func resumeSending()
    /// The client can take response bytes again (after they were refused).
    func resumeReceiving()
    /// Abort; the transfer's completion still arrives later, and is ignored.
    func cancel()
}

extension CurlTransfer: UpstreamTransfer {}

/// Starts the upstream transfer of a forwarded request. The gateway uses its loop's libcurl driver; tests inject a
/// fake. Events come back through the `CurlTransferDelegate` calls (or, from a fake, `GatewayHandler`'s
/// `upstream…` methods).
public typealias UpstreamStarter = (CurlRequest, GatewayHandler) -> any UpstreamTransfer
