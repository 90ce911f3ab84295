#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension PostgresStore {
    /// A URI that `parse` refused, with the reason (never the URI's secret parts: a password in it is refused
    /// without being echoed).
    public struct URLError: Error, Sendable, Hashable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    /// Parses a libpq connection URI strictly (libpq's "Connection URIs"):
    /// `postgres[ql]://user@host[:port][/database][?sslmode=disable|require|verify-full]`.
    ///
    /// - user and host are required (no guessing from the OS user or a default socket); the database defaults to
    ///   the user name and the port to 5432, as in libpq;
    /// - components are percent-decoded (`%40` in a user name); a host in brackets is an IPv6 literal (`[::1]`);
    ///   a percent-encoded host starting with `/` is a unix socket directory (`%2Frun%2Fpostgresql`);
    /// - a password in the URI is refused (it belongs in `store.password` / `store.password_file`), and so are
    ///   several hosts, fragments and every query parameter but `sslmode`: an option silently ignored could be a
    ///   security setting the operator believes is in force;
    /// - `sslmode` defaults to `verify-full` over TCP (never plaintext unless asked) and is `disable` on a socket.
    public static func parse(_ url: String) throws(URLError) -> PostgresStore {
        let rest: Substring
        if url.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else if url.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else {
            throw URLError("must start with postgres:// or postgresql://")
        }
        if rest.contains("#") { throw URLError("a fragment (#…) has no meaning in a connection URI") }
        for scalar in rest.unicodeScalars where scalar.value <= 0x20 || scalar.value >= 0x7F {
            throw URLError("contains a space, a control or a non-ASCII character; percent-encode it")
        }

        // Split off the query, then the path (database), then the authority.
        let (beforeQuery, query) = split(rest, at: "?")
        let (authority, path) = split(beforeQuery, at: "/")

        // userinfo@hostport. The last '@' separates them (an unencoded '@' cannot be in a host).
        guard let at = authority.lastIndex(of: "@") else {
            throw URLError("needs a user name: postgres://USER@HOST/DATABASE")
        }
        let userinfo = authority[..<at]
        let hostport = authority[authority.index(after: at)...]
        if userinfo.contains(":") {
            throw URLError("must not contain a password; put it in store.password or store.password_file")
        }
        let user = try decode(userinfo, what: "the user name")
        guard !user.isEmpty else { throw URLError("needs a user name: postgres://USER@HOST/DATABASE") }

        var host: String
        var portText: Substring?
        if hostport.hasPrefix("[") {
            guard let close = hostport.firstIndex(of: "]") else { throw URLError("an IPv6 address needs a closing ]") }
            host = String(hostport[hostport.index(after: hostport.startIndex)..<close])
            var address = in6_addr()
            guard inet_pton(AF_INET6, host, &address) == 1 else {
                throw URLError("\(quoted(host)) in brackets is not an IPv6 address")
            }
            let after = hostport[hostport.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw URLError("unexpected characters after the IPv6 address") }
                portText = after.dropFirst()
            }
        } else {
            let (name, port) = split(hostport, at: ":")
            if name.contains(",") { throw URLError("names several hosts; give exactly one") }
            host = try decode(name, what: "the host")
            portText = port
            if !host.hasPrefix("/") {
                let allowed = host.utf8.allSatisfy { c in
                    (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c)
                        || c == 0x2D || c == 0x2E || c == 0x5F
                }
                guard allowed else { throw URLError("\(quoted(host)) is not a host name or an IPv4 address") }
            }
        }
        guard !host.isEmpty else { throw URLError("needs a host: postgres://USER@HOST/DATABASE") }

        var port = 5432
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy(\.isASCIIDigit), let number = Int(portText),
                (1...65535).contains(number)
            else { throw URLError("the port must be a number from 1 to 65535") }
            port = number
        }

        var database = user
        if let path {
            if path.contains("/") { throw URLError("the path must be only the database name") }
            if !path.isEmpty { database = try decode(path, what: "the database name") }
        }

        var sslMode: SSLMode?
        if let query, !query.isEmpty {
            for parameter in query.split(separator: "&", omittingEmptySubsequences: false) {
                let (rawName, rawValue) = split(parameter, at: "=")
                let name = try decode(rawName, what: "a parameter name")
                guard name == "sslmode" else {
                    throw URLError("unknown parameter \(quoted(name)); only sslmode is understood")
                }
                guard sslMode == nil else { throw URLError("sslmode is given twice") }
                let value = try decode(rawValue ?? "", what: "sslmode")
                guard let mode = SSLMode(rawValue: value) else {
                    throw URLError(
                        "sslmode must be one of \(SSLMode.allCases.map { quoted($0.rawValue) }.joined(separator: ", ")), found \(quoted(value))"
                    )
                }
                sslMode = mode
            }
        }
        if host.hasPrefix("/") {
            // libpq never uses TLS on a unix socket; asking for it is a misunderstanding worth reporting.
            if let sslMode, sslMode != .disable { throw URLError("a unix socket does not use TLS; use sslmode=disable") }
            sslMode = .disable
        }
        return PostgresStore(url: url, user: user, host: host, port: port, database: database, sslMode: sslMode ?? .verifyFull)
    }

    /// `text` before and after the first `separator`; nil after when there is none.
    private static func split(_ text: Substring, at separator: Character) -> (Substring, Substring?) {
        guard let index = text.firstIndex(of: separator) else { return (text, nil) }
        return (text[..<index], text[text.index(after: index)...])
    }

    /// Percent-decoding; a malformed escape, invalid UTF-8 or a NUL is an error.
    private static func decode(_ text: Substring, what: String) throws(URLError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw URLError("\(what) has a malformed percent escape")
            }
            bytes.append(high << 4 | low)
        }
        guard !bytes.contains(0), let decoded = String(validating: bytes, as: UTF8.self) else {
            throw URLError("\(what) is not valid UTF-8 once percent-decoded")
        }
        return decoded
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }

    private static func quoted(_ s: String) -> String { "\"\(s)\"" }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
