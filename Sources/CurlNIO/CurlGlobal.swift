import CCurl

/// One-time libcurl global initialisation.
///
/// OpenSSL is first told not to register its `atexit` clean-up (`OPENSSL_INIT_NO_ATEXIT`): that handler races with
/// threads still using curl at process exit and double-frees (swift-corelibs-foundation#5469). Then
/// `curl_global_init(CURL_GLOBAL_DEFAULT)`. curl is never torn down.
public enum CurlGlobal {
    private static let once: Bool = {
        _ = ccurl_openssl_init_no_atexit()
        let rc = curl_global_init(3 /* CURL_GLOBAL_DEFAULT = SSL | WIN32 */)
        precondition(rc == CURLE_OK, "curl_global_init failed: \(rc.rawValue)")
        return true
    }()

    /// Idempotent and thread-safe (Swift lazy static initialisation).
    public static func initialize() {
        _ = Self.once
    }
}
