/// An absolute `http(s)` URL of a remote key set or metadata document, split the way libcurl is driven: the origin
/// (`scheme://host:port`) and the origin-form request target, kept byte for byte. Only what such a URL needs is
/// accepted: no user info, no fragment, printable ASCII without spaces.
public struct RemoteURL: Sendable, Hashable, CustomStringConvertible {
    /// `http` or `https`.
    public let scheme: String
    /// Lower-cased host; an IPv6 address without brackets.
    public let host: String
    public let port: Int
    /// Origin-form target: the path (at least "/") and the query, as written.
    public let target: String

    public init?(_ text: String) {
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }), !text.contains("#") else { return nil }
        let lower = text.lowercased()
        let scheme: String
        if lower.hasPrefix("https://") {
            scheme = "https"
        } else if lower.hasPrefix("http://") {
            scheme = "http"
        } else {
            return nil
        }
        let rest = text.dropFirst(scheme.count + 3)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        var target = String(rest[authorityEnd...])
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }

        let defaultPort = scheme == "https" ? 443 : 80
        var host: Substring
        var portText: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
            guard host.contains(":") else { return nil }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = authority
            }
            guard !host.contains(":") else { return nil }
        }
        guard !host.isEmpty else { return nil }
        var port = defaultPort
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy(\.isASCIIDigit), let p = Int(portText),
                (1...65535).contains(p)
            else { return nil }
            port = p
        }
        self.scheme = scheme
        self.host = host.lowercased()
        self.port = port
        self.target = target
    }

    /// `scheme://host:port`, as `CurlRequest.origin` wants it.
    public var origin: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h):\(port)"
    }

    /// The full URL (normalised scheme, host and port).
    public var description: String { origin + target }

    /// 127.0.0.0/8 (as a dotted quad, so `127.example.com` is not one), ::1 and `localhost`: the only places a plain
    /// `http` key set may come from.
    public var isLoopback: Bool {
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4, octets[0] == "127" else { return false }
        return octets.allSatisfy { $0.count <= 3 && !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) && Int($0)! <= 255 }
    }

    /// DESIGN §4: remote URLs must be `https`, except to loopback addresses.
    public var isAllowedForKeys: Bool { scheme == "https" || isLoopback }

    /// Another document on the same server: `path` replaces the target (it must start with "/").
    public func replacingTarget(_ path: String) -> RemoteURL {
        RemoteURL(scheme: scheme, host: host, port: port, target: path)
    }

    private init(scheme: String, host: String, port: Int, target: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = target
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
