import CCurl

/// The libcurl the process runs with (`curl_version_info`), which is not necessarily the one it was built against:
/// the shared library can be upgraded under the binary.
public struct CurlLibraryVersion: Sendable, Hashable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int
    /// Whether the library was built with HTTP/2 (nghttp2).
    public var supportsHTTP2: Bool

    public init(major: Int, minor: Int, patch: Int, supportsHTTP2: Bool) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.supportsHTTP2 = supportsHTTP2
    }

    /// The running library's version (initialises libcurl if needed).
    public static var running: CurlLibraryVersion {
        CurlGlobal.initialize()
        let number = Int(ccurl_version_num())
        return CurlLibraryVersion(
            major: number >> 16, minor: (number >> 8) & 0xFF, patch: number & 0xFF, supportsHTTP2: ccurl_version_has_http2() != 0)
    }

    /// Whether this is at least `major.minor`.
    public func isAtLeast(_ major: Int, _ minor: Int) -> Bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }

    /// "8.14.1".
    public var description: String { "\(major).\(minor).\(patch)" }
}
