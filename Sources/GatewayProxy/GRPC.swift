import NIOCore
import NIOHTTP1

/// What the data path needs to know about gRPC (DESIGN §11): which requests are gRPC calls, their deadline
/// (`grpc-timeout`), and how the gateway's own refusals are said in gRPC's terms (a `grpc-status` and a
/// percent-encoded `grpc-message` in the trailers of an HTTP 200 answer).
public enum GRPC {
    /// `application/grpc`, alone or followed by `+codec` or `;parameters` (ASCII case-insensitive). gRPC-Web's
    /// `application/grpc-web*` is another protocol (HTTP/1-capable, trailers in the body): ordinary HTTP here.
    public static func isGRPC(contentType: some StringProtocol) -> Bool {
        let prefix: StaticString = "application/grpc"
        let utf8 = contentType.utf8
        guard utf8.count >= prefix.utf8CodeUnitCount else { return false }
        var index = utf8.startIndex
        let matches = prefix.withUTF8Buffer { expected in
            for byte in expected {
                let b = utf8[index]
                if (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) != byte { return false }
                index = utf8.index(after: index)
            }
            return true
        }
        guard matches else { return false }
        guard index != utf8.endIndex else { return true }
        return utf8[index] == UInt8(ascii: "+") || utf8[index] == UInt8(ascii: ";")
    }

    /// Whether a request head is a gRPC call: its one `content-type` is gRPC's.
    static func isGRPC(_ headers: HTTPHeaders) -> Bool {
        var found: String? = nil
        for (name, value) in headers where name.equalsIgnoringASCIICase("content-type") {
            if found != nil { return false }
            found = value
        }
        guard let found else { return false }
        return isGRPC(contentType: found)
    }

    /// `grpc-timeout`: 1 to 8 ASCII digits and a unit (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u`
    /// microseconds, `n` nanoseconds). nil for anything else, and for a value too large to count in nanoseconds
    /// (over 292 years, i.e. no deadline at all in practice).
    public static func parseTimeout(_ value: String) -> TimeAmount? {
        let utf8 = value.utf8
        guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
        var amount: Int64 = 0
        for byte in utf8.dropLast() {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            amount = amount * 10 + Int64(byte - 0x30)
        }
        let nanosecondsPerUnit: Int64
        switch unit {
        case UInt8(ascii: "H"): nanosecondsPerUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): nanosecondsPerUnit = 60_000_000_000
        case UInt8(ascii: "S"): nanosecondsPerUnit = 1_000_000_000
        case UInt8(ascii: "m"): nanosecondsPerUnit = 1_000_000
        case UInt8(ascii: "u"): nanosecondsPerUnit = 1_000
        case UInt8(ascii: "n"): nanosecondsPerUnit = 1
        default: return nil
        }
        let (nanoseconds, overflow) = amount.multipliedReportingOverflow(by: nanosecondsPerUnit)
        return overflow ? nil : .nanoseconds(nanoseconds)
    }

    /// The request's deadline from its one well-formed `grpc-timeout`, if it has one.
    static func timeout(_ headers: HTTPHeaders) -> TimeAmount? {
        var found: String? = nil
        for (name, value) in headers where name.equalsIgnoringASCIICase("grpc-timeout") {
            if found != nil { return nil }
            found = value
        }
        return found.flatMap(parseTimeout)
    }

    /// gRPC status codes the gateway answers with.
    public enum Status: Int, Sendable {
        case ok = 0
        case deadlineExceeded = 4
        case permissionDenied = 7
        case resourceExhausted = 8
        case unimplemented = 12
        case `internal` = 13
        case unavailable = 14
        case unauthenticated = 16
    }

    /// The gRPC status of one of the gateway's own answers: 16 for a missing, invalid or malformed credential (401,
    /// and the 400 for a bad `Authorization`), 7 for a missing scope, 14 when the upstream cannot be reached or
    /// answered wrongly, 4 when it did not answer in time or the call's deadline passed; otherwise what gRPC's HTTP
    /// status mapping gives (404 and 405 → 12, 413 and 431 → 8, anything else → 13).
    public static func status(for error: GatewayError) -> Status {
        if error.challenge != nil {
            return error.status == .forbidden ? .permissionDenied : .unauthenticated
        }
        switch error.status {
        case .unauthorized: return .unauthenticated
        case .forbidden: return .permissionDenied
        case .gatewayTimeout, .requestTimeout: return .deadlineExceeded
        case .badGateway, .serviceUnavailable, .tooManyRequests: return .unavailable
        case .notFound, .methodNotAllowed: return .unimplemented
        case .payloadTooLarge, .requestHeaderFieldsTooLarge: return .resourceExhausted
        default: return .internal
        }
    }

    /// `grpc-message`: UTF-8, then every byte outside 0x20–0x7E, and `%`, percent-encoded.
    public static func encodeMessage(_ message: String) -> String {
        // The same rule as the identity headers' values (`HeaderPolicy.encodeValue`).
        HeaderPolicy.encodeValue(message)
    }

    /// The trailers that end a call with `status` and `message`.
    static func trailers(_ status: Status, message: String) -> HTTPHeaders {
        var trailers = HTTPHeaders()
        trailers.reserveCapacity(2)
        trailers.add(name: "grpc-status", value: String(status.rawValue))
        trailers.add(name: "grpc-message", value: encodeMessage(message))
        return trailers
    }
}
