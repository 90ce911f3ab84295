/// A request target reduced to the one canonical form that the gateway both authorises and forwards
/// (DESIGN §5), so that the route decision and the upstream can never disagree about which resource was meant.
public struct CanonicalPath: Sendable, Hashable {
    /// The canonical path: dot-segments removed, `//` merged, unreserved percent-escapes decoded, other escapes
    /// upper-cased. This is what is forwarded.
    public var path: String
    /// The path with `;parameters` removed from every segment, used only for route matching, so that
    /// `/admin;x=1/users` cannot slip past a rule for `/admin` on its way to a Tomcat-style upstream.
    public var matchPath: String
    /// The query string without its `?`, byte-for-byte as received, or nil when there was none.
    public var query: String?

    /// The origin-form target to send upstream.
    public var requestTarget: String {
        query.map { "\(path)?\($0)" } ?? path
    }

    /// Why a target was refused. Each maps to 400 with reason `invalid_path`.
    public enum Rejection: Error, Sendable, Hashable {
        case notOriginForm
        case forbiddenCharacter
        case malformedEscape
        case encodedSeparator
        case controlCharacter
        case dotSegmentWithParameters
        case tooLong
    }

    /// Canonicalises an origin-form request target (`/a/b?c`).
    public static func parse(_ target: String, maxLength: Int = 8192) -> Result<CanonicalPath, Rejection> {
        parsePlain(target, maxLength: maxLength) ?? parseFull(target, maxLength: maxLength)
    }

    /// Every rule, step by step (`parsePlain` answers the common case without building anything).
    static func parseFull(_ target: String, maxLength: Int) -> Result<CanonicalPath, Rejection> {
        var utf8 = Array(target.utf8)
        guard utf8.count <= maxLength else { return .failure(.tooLong) }
        guard utf8.first == UInt8(ascii: "/") else { return .failure(.notOriginForm) }
        var query: String? = nil
        if let q = utf8.firstIndex(of: UInt8(ascii: "?")) {
            let queryBytes = utf8[(q + 1)...]
            // The query passes unchanged, but must still be a valid request-target: no raw CTL, SP, non-ASCII, '#'.
            for byte in queryBytes where byte <= 0x20 || byte >= 0x7F || byte == UInt8(ascii: "#") {
                return .failure(.forbiddenCharacter)
            }
            query = String(decoding: queryBytes, as: UTF8.self)
            utf8.removeSubrange(q...)
        }

        // Decode what may be decoded, refuse what must never be ambiguous.
        var decoded: [UInt8] = []
        decoded.reserveCapacity(utf8.count)
        var i = 0
        while i < utf8.count {
            let byte = utf8[i]
            switch byte {
            case UInt8(ascii: "%"):
                guard i + 2 < utf8.count, let hi = hexValue(utf8[i + 1]), let lo = hexValue(utf8[i + 2]) else {
                    return .failure(.malformedEscape)
                }
                let value = hi << 4 | lo
                switch value {
                case UInt8(ascii: "/"), UInt8(ascii: "\\"), UInt8(ascii: "."):
                    return .failure(.encodedSeparator)
                case 0..<0x20, 0x7F:
                    return .failure(.controlCharacter)
                default:
                    if isUnreserved(value) {
                        decoded.append(value)
                    } else {
                        decoded.append(UInt8(ascii: "%"))
                        decoded.append(upperHex(hi))
                        decoded.append(upperHex(lo))
                    }
                }
                i += 3
            case UInt8(ascii: "\\"), UInt8(ascii: "#"):
                return .failure(.forbiddenCharacter)
            case 0...0x20, 0x7F...0xFF:
                return .failure(.forbiddenCharacter)
            default:
                decoded.append(byte)
                i += 1
            }
        }

        // Split into segments, drop empty ones (merges "//"), resolve "." and "..".
        var segments: [ArraySlice<UInt8>] = []
        let trailingSlash = decoded.count > 1 && decoded.last == UInt8(ascii: "/")
        var endsInDirectory = trailingSlash
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            let name = segment.prefix { $0 != UInt8(ascii: ";") }
            if name.elementsEqual(".".utf8) || name.elementsEqual("..".utf8) {
                // "..;x" is ".." to Tomcat and a plain name to everyone else: refuse the ambiguity.
                if name.count != segment.count { return .failure(.dotSegmentWithParameters) }
                if name.count == 2, !segments.isEmpty { segments.removeLast() }
                endsInDirectory = true
                continue
            }
            endsInDirectory = trailingSlash
            segments.append(segment)
        }

        var path = "/"
        for (n, segment) in segments.enumerated() {
            if n > 0 { path += "/" }
            path += String(decoding: segment, as: UTF8.self)
        }
        if endsInDirectory && !segments.isEmpty { path += "/" }
        // A segment that is only parameters (`/;x/admin`) is empty once they are removed, and an upstream that drops
        // parameters (Tomcat) then merges the slashes and serves `/admin`. Leaving it out of the match path makes
        // the route decision see `/admin` too; keeping it gave `//admin`, which slipped past a rule for `/admin`.
        // A last segment of parameters only (`/admin/;x`) is `/admin/` to such an upstream: a directory.
        let names = segments.map { $0.prefix { $0 != UInt8(ascii: ";") } }.filter { !$0.isEmpty }
        var matchPath = "/"
        for (n, name) in names.enumerated() {
            if n > 0 { matchPath += "/" }
            matchPath += String(decoding: name, as: UTF8.self)
        }
        if (endsInDirectory || segments.last?.first == UInt8(ascii: ";")) && !names.isEmpty { matchPath += "/" }
        return .success(CanonicalPath(path: path, matchPath: matchPath, query: query))
    }
}

extension CanonicalPath {
    /// The common case without building anything: a path that is already canonical (no escapes, no `;`, no empty,
    /// `.` or `..` segments, nothing forbidden) is its own canonical and match path. Returns nil when the full parse
    /// is needed, and the full parse's answer for everything it does return.
    static func parsePlain(_ target: String, maxLength: Int) -> Result<CanonicalPath, Rejection>? {
        var target = target
        let scan: (pathEnd: Int, plain: Bool)? = target.withUTF8 { utf8 in
            guard utf8.count <= maxLength, utf8.first == UInt8(ascii: "/") else { return nil }
            var i = 1
            var segmentLength = 0
            var segmentDots = 0
            while i < utf8.count {
                let byte = utf8[i]
                switch byte {
                case UInt8(ascii: "?"):
                    if segmentLength > 0 && segmentLength <= 2 && segmentDots == segmentLength { return nil }
                    // The query: what the full parse accepts unchanged.
                    for q in utf8[(i + 1)...] where q <= 0x20 || q >= 0x7F || q == UInt8(ascii: "#") { return nil }
                    return (i, true)
                case UInt8(ascii: "/"):
                    // "//" is merged, "." and ".." segments are resolved: not plain.
                    if segmentLength == 0 || (segmentLength <= 2 && segmentDots == segmentLength) { return nil }
                    segmentLength = 0
                    segmentDots = 0
                case UInt8(ascii: "."):
                    segmentLength += 1
                    segmentDots += 1
                case UInt8(ascii: "%"), UInt8(ascii: ";"), UInt8(ascii: "\\"), UInt8(ascii: "#"), 0...0x20, 0x7F...0xFF:
                    return nil
                default:
                    segmentLength += 1
                }
                i += 1
            }
            if segmentLength > 0 && segmentLength <= 2 && segmentDots == segmentLength { return nil }
            return (utf8.count, true)
        }
        guard let scan, scan.plain else { return nil }
        let utf8 = target.utf8
        if scan.pathEnd == utf8.count {
            return .success(CanonicalPath(path: target, matchPath: target, query: nil))
        }
        let queryMark = utf8.index(utf8.startIndex, offsetBy: scan.pathEnd)
        let path = String(target[..<queryMark])
        let query = String(target[utf8.index(after: queryMark)...])
        return .success(CanonicalPath(path: path, matchPath: path, query: query))
    }
}

@inline(__always)
private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

@inline(__always)
private func upperHex(_ nibble: UInt8) -> UInt8 {
    nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "A") + nibble - 10
}

/// RFC 3986 unreserved characters: decoding them never changes what a URI means.
@inline(__always)
private func isUnreserved(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "~"):
        true
    default:
        false
    }
}
