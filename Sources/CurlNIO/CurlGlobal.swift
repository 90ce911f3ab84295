import CCurl

/// One-time libcurl global initialisation.
///
/// OpenSSL is first told not to register its `atexit` clean-up (`OPENSSL_INIT_NO_ATEXIT`): that handler races with
/// threads still using curl at process exit and double-frees (swift-corelibs-foundation#5469). Then
/// `curl_global_init(CURL_GLOBAL_DEFAULT)`. curl is never torn down.
public enum CurlGlobal {
    private static let once: Bool = {
        let disabled = ccurl_openssl_init_no_atexit() != 0
        // 3 is CURL_GLOBAL_DEFAULT (SSL | WIN32), a macro Swift cannot import.
        let rc = curl_global_init(3)
        precondition(rc == CURLE_OK, "curl_global_init failed: \(rc.rawValue)")
        return disabled
    }()

    /// Whether `OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT)` was found and called (initialises curl if needed).
    static var didDisableOpenSSLAtexit: Bool {
        Self.once
    }

    /// Idempotent and thread-safe (Swift lazy static initialisation).
    public static func initialize() {
        _ = Self.once
    }
}
