import CCurl
import NIOCore

/// Sets every easy option of one transfer.
///
/// Every `curl_easy_setopt` result is checked: an option curl refuses (an unknown option in an older libcurl, a
/// string over `CURL_MAX_INPUT_LENGTH`, out of memory) fails the transfer before it starts, with the option's name,
/// rather than letting it run without it — without `CURLOPT_CAINFO` it would trust the system store instead of the
/// configured CA, without `CURLOPT_PROTOCOLS_STR` or `CURLOPT_REQUEST_TARGET` it would speak another protocol or
/// send another path than the one authorised.
enum CurlEasyConfiguration {
    /// Returns a log-safe error when the request cannot be sent as given or curl refuses one of its options.
    static func apply(_ request: CurlRequest, to easy: UnsafeMutableRawPointer, transfer: CurlTransfer) -> CurlTransferError? {
        func refused(_ problem: String) -> CurlTransferError {
            CurlTransferError(code: .protocolError, curlCode: 0, message: problem, receivedHead: false)
        }
        // Refuse anything curl would put on the wire verbatim and that could split the request.
        guard !request.method.isEmpty, request.method.utf8.allSatisfy(CurlHeaderParser.isTokenByte) else {
            return refused("invalid request method")
        }
        guard !request.requestTarget.isEmpty, request.requestTarget.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return refused("invalid request target")
        }
        // Check the headers first: they are the only part that can be refused.
        var hasAccept = false
        var hasExpect = false
        for header in request.headers {
            guard !header.name.isEmpty, header.name.utf8.allSatisfy(CurlHeaderParser.isTokenByte) else {
                return refused("invalid request header name")
            }
            guard header.value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return refused("invalid request header value")
            }
            if Self.equalsIgnoringCase(header.name, "accept") { hasAccept = true }
            if Self.equalsIgnoringCase(header.name, "expect") { hasExpect = true }
        }

        let isHead = request.method == "HEAD"
        var upload = false
        switch request.body {
        case .none:
            break
        case .length, .chunked:
            upload = !isHead
        }
        var list = CurlHeaderList(capacity: request.headers.count + 3)
        for header in request.headers {
            list.append(name: header.name, value: CurlEasyConfiguration.trimmedValue(header.value))
        }
        // Suppress curl's own inventions.
        if !hasExpect { list.append(line: "Expect:") }
        if !hasAccept { list.append(line: "Accept:") }
        if upload, case .chunked = request.body {
            list.append(line: "Transfer-Encoding: chunked")
        }
        transfer.headerList = list.finish()

        let me = Unmanaged.passUnretained(transfer).toOpaque()
        // The first option curl refused, if any; checked once at the end (every later option is still tried, so
        // the error names the first one that failed).
        var firstRefusal: (option: String, code: CURLcode)?
        func check(_ option: String, _ code: CURLcode) {
            if code != CURLE_OK && firstRefusal == nil { firstRefusal = (option, code) }
        }
        check("CURLOPT_PRIVATE", ccurl_easy_setopt_ptr(easy, CURLOPT_PRIVATE, me))
        check("CURLOPT_WRITEFUNCTION", ccurl_easy_setopt_write_cb(easy, CURLOPT_WRITEFUNCTION, curlWriteTrampoline))
        check("CURLOPT_WRITEDATA", ccurl_easy_setopt_ptr(easy, CURLOPT_WRITEDATA, me))
        check("CURLOPT_HEADERFUNCTION", ccurl_easy_setopt_header_cb(easy, curlHeaderTrampoline))
        check("CURLOPT_HEADERDATA", ccurl_easy_setopt_ptr(easy, CURLOPT_HEADERDATA, me))

        check("CURLOPT_URL", ccurl_easy_setopt_str(easy, CURLOPT_URL, request.origin))
        check("CURLOPT_REQUEST_TARGET", ccurl_easy_setopt_str(easy, CURLOPT_REQUEST_TARGET, request.requestTarget))
        check("CURLOPT_PATH_AS_IS", ccurl_easy_setopt_long(easy, CURLOPT_PATH_AS_IS, 1))
        check("CURLOPT_PROTOCOLS_STR", ccurl_easy_setopt_str(easy, CURLOPT_PROTOCOLS_STR, "http,https"))
        // Environment proxy variables must never apply.
        check("CURLOPT_PROXY", ccurl_easy_setopt_str(easy, CURLOPT_PROXY, ""))
        check("CURLOPT_NOPROXY", ccurl_easy_setopt_str(easy, CURLOPT_NOPROXY, "*"))
        switch request.httpVersion {
        case .http1_1:
            check("CURLOPT_HTTP_VERSION", ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1))
        case .http2, .http2PriorKnowledge:
            let version = request.httpVersion == .http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
            check("CURLOPT_HTTP_VERSION", ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, version))
            // Streams to one upstream share a connection (the multi handle multiplexes): a transfer that starts
            // while the first connection is still being set up waits to learn whether it multiplexes instead of
            // opening a connection of its own.
            check("CURLOPT_PIPEWAIT", ccurl_easy_setopt_long(easy, CURLOPT_PIPEWAIT, 1))
        }
        check("CURLOPT_FOLLOWLOCATION", ccurl_easy_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0))
        check("CURLOPT_HTTP_CONTENT_DECODING", ccurl_easy_setopt_long(easy, CURLOPT_HTTP_CONTENT_DECODING, 0))
        check("CURLOPT_NOSIGNAL", ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1))
        check("CURLOPT_TCP_NODELAY", ccurl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1))
        check("CURLOPT_DISALLOW_USERNAME_IN_URL", ccurl_easy_setopt_long(easy, CURLOPT_DISALLOW_USERNAME_IN_URL, 1))
        check("CURLOPT_TIMEOUT_MS", ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, 0))  // the driver owns response/idle timeouts
        let connectTimeoutMs = Int(max(1, request.connectTimeout.nanoseconds / 1_000_000))
        check("CURLOPT_CONNECTTIMEOUT_MS", ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, connectTimeoutMs))
        check("CURLOPT_BUFFERSIZE", ccurl_easy_setopt_long(easy, CURLOPT_BUFFERSIZE, 64 * 1024))
        check("CURLOPT_UPLOAD_BUFFERSIZE", ccurl_easy_setopt_long(easy, CURLOPT_UPLOAD_BUFFERSIZE, 64 * 1024))
        if let path = request.unixSocketPath {
            check("CURLOPT_UNIX_SOCKET_PATH", ccurl_easy_setopt_str(easy, CURLOPT_UNIX_SOCKET_PATH, path))
        }
        // Verification stays at libcurl's strict defaults (VERIFYPEER 1, VERIFYHOST 2); these only say whom to trust
        // and who we are.
        check("CURLOPT_SSL_VERIFYPEER", ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1))
        check("CURLOPT_SSL_VERIFYHOST", ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2))
        if let caFile = request.tls.caFile {
            check("CURLOPT_CAINFO", ccurl_easy_setopt_str(easy, CURLOPT_CAINFO, caFile))
        }
        if let cert = request.tls.clientCertificateFile, let key = request.tls.clientKeyFile {
            check("CURLOPT_SSLCERT", ccurl_easy_setopt_str(easy, CURLOPT_SSLCERT, cert))
            check("CURLOPT_SSLKEY", ccurl_easy_setopt_str(easy, CURLOPT_SSLKEY, key))
        }

        if isHead {
            check("CURLOPT_NOBODY", ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1))
        } else if upload {
            check("CURLOPT_UPLOAD", ccurl_easy_setopt_long(easy, CURLOPT_UPLOAD, 1))
            check("CURLOPT_READFUNCTION", ccurl_easy_setopt_read_cb(easy, CURLOPT_READFUNCTION, curlReadTrampoline))
            check("CURLOPT_READDATA", ccurl_easy_setopt_ptr(easy, CURLOPT_READDATA, me))
            if case .length(let n) = request.body {
                check("CURLOPT_INFILESIZE_LARGE", ccurl_easy_setopt_off(easy, CURLOPT_INFILESIZE_LARGE, curl_off_t(n)))
            }
            if request.method != "PUT" {
                check("CURLOPT_CUSTOMREQUEST", ccurl_easy_setopt_str(easy, CURLOPT_CUSTOMREQUEST, request.method))
            }
        } else if request.method != "GET" {
            check("CURLOPT_CUSTOMREQUEST", ccurl_easy_setopt_str(easy, CURLOPT_CUSTOMREQUEST, request.method))
        }
        check("CURLOPT_HTTPHEADER", ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, transfer.headerList?.first))
        if let (option, code) = firstRefusal {
            return CurlTransferError(
                code: .optionRefused, curlCode: Int32(code.rawValue),
                message: "libcurl refused \(option): \(String(cString: curl_easy_strerror(code)))", receivedHead: false)
        }
        return nil
    }

    static func equalsIgnoringCase(_ a: String, _ lowercaseB: String) -> Bool {
        let a = a.utf8
        let b = lowercaseB.utf8
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            (x >= 0x41 && x <= 0x5A ? x | 0x20 : x) == y
        }
    }

    static func trimmedValue(_ value: String) -> String {
        let utf8 = value.utf8
        guard let first = utf8.first, let last = utf8.last else { return value }
        if first != 0x20 && first != 0x09 && last != 0x20 && last != 0x09 { return value }
        var start = utf8.startIndex
        var end = utf8.endIndex
        while start < end, utf8[start] == 0x20 || utf8[start] == 0x09 { start = utf8.index(after: start) }
        while end > start {
            let before = utf8.index(before: end)
            guard utf8[before] == 0x20 || utf8[before] == 0x09 else { break }
            end = before
        }
        return String(value[start..<end])
    }
}

/// A request's header lines as a `curl_slist` that lives in one allocation: `curl_slist_append` would make two
/// allocations per line (node and copy) and `curl_slist_free_all` free them all again, for every request. curl only
/// reads the list (CURLOPT_HTTPHEADER), so it may be laid out by us; it must outlive the transfer and is released
/// with `deallocate()`, never `curl_slist_free_all`.
struct CurlHeaderList {
    /// The lines, each written as it will be sent, NUL-terminated.
    private var bytes: [UInt8] = []
    /// Where each line starts in `bytes`.
    private var starts: [Int] = []

    init(capacity: Int) {
        self.bytes.reserveCapacity(capacity * 48)
        self.starts.reserveCapacity(capacity)
    }

    /// "Name: value"; "Name;" for an empty value ("Name:" would make curl *remove* the header).
    mutating func append(name: String, value: String) {
        self.starts.append(self.bytes.count)
        self.bytes.append(contentsOf: name.utf8)
        if value.isEmpty {
            self.bytes.append(UInt8(ascii: ";"))
        } else {
            self.bytes.append(UInt8(ascii: ":"))
            self.bytes.append(UInt8(ascii: " "))
            self.bytes.append(contentsOf: value.utf8)
        }
        self.bytes.append(0)
    }

    mutating func append(line: StaticString) {
        self.starts.append(self.bytes.count)
        line.withUTF8Buffer { self.bytes.append(contentsOf: $0) }
        self.bytes.append(0)
    }

    /// The list in its own allocation (nodes first, then the text), or nil when it is empty.
    func finish() -> Allocated? {
        guard !self.starts.isEmpty else { return nil }
        let nodeBytes = self.starts.count * MemoryLayout<curl_slist>.stride
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: nodeBytes + self.bytes.count, alignment: MemoryLayout<curl_slist>.alignment)
        let text = (raw + nodeBytes).assumingMemoryBound(to: CChar.self)
        self.bytes.withUnsafeBytes { (raw + nodeBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let nodes = raw.bindMemory(to: curl_slist.self, capacity: self.starts.count)
        for (i, start) in self.starts.enumerated() {
            let next = i + 1 < self.starts.count ? nodes + (i + 1) : nil
            (nodes + i).initialize(to: curl_slist(data: text + start, next: next))
        }
        return Allocated(first: nodes, raw: raw)
    }

    struct Allocated {
        let first: UnsafeMutablePointer<curl_slist>
        fileprivate let raw: UnsafeMutableRawPointer

        func deallocate() {
            self.raw.deallocate()
        }
    }
}

/// CURLcode → `CurlTransferError`.
enum CurlErrorMapping {
    static func result(for code: CURLcode, transfer: CurlTransfer) -> Result<Void, CurlTransferError> {
        let head = transfer.headDelivered
        if transfer.cancelRequested {
            return .failure(
                CurlTransferError(code: .cancelled, curlCode: Int32(code.rawValue), message: "transfer cancelled", receivedHead: head))
        }
        if var failure = transfer.failure {
            failure.curlCode = Int32(code.rawValue)
            failure.receivedHead = head
            return .failure(failure)
        }
        if code == CURLE_OK {
            if head { return .success(()) }
            return .failure(
                CurlTransferError(code: .protocolError, curlCode: 0, message: "no response head", receivedHead: false))
        }
        return .failure(Self.error(for: code, receivedHead: head))
    }

    static func error(for code: CURLcode, receivedHead: Bool) -> CurlTransferError {
        let mapped: CurlTransferError.Code
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_SSL_CONNECT_ERROR,
            // A TLS handshake that fails verification or cannot load its files never reached the upstream's HTTP.
            CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS:
            mapped = .couldNotConnect
        case CURLE_OPERATION_TIMEDOUT:
            // CURLOPT_TIMEOUT is never set, so this is the connect timeout.
            mapped = receivedHead ? .other : .couldNotConnect
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_SEND_FAIL_REWIND:
            // SEND_FAIL_REWIND: a reused keep-alive connection died under a streamed upload curl cannot replay.
            mapped = .connectionReset
        case CURLE_WEIRD_SERVER_REPLY, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_BAD_CONTENT_ENCODING:
            mapped = .protocolError
        case CURLE_ABORTED_BY_CALLBACK:
            mapped = .cancelled
        default:
            mapped = .other
        }
        let message = String(cString: curl_easy_strerror(code))
        return CurlTransferError(code: mapped, curlCode: Int32(code.rawValue), message: message, receivedHead: receivedHead)
    }
}
