import Testing

@testable import GatewayProxy

@Suite struct CanonicalPathTests {
    private func canonical(_ target: String) -> String? {
        try? CanonicalPath.parse(target).get().requestTarget
    }

    private func rejected(_ target: String) -> Bool {
        if case .failure = CanonicalPath.parse(target) { return true }
        return false
    }

    @Test(arguments: [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/public/../private/secret", "/private/secret"),  // P-dotdot
        ("/public/./x", "/public/x"),
        ("//private/secret", "/private/secret"),  // P-double-slash
        ("/public//../private/secret", "/private/secret"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/%41%7e%2d", "/a/A~-"),  // unreserved escapes decoded
        ("/a/%3f%3a", "/a/%3F%3A"),  // others upper-cased, kept
        ("/public/%252e%252e/private", "/public/%252e%252e/private"),  // P-double-enc: never decoded twice
        ("/public/%c0%ae%c0%ae/private", "/public/%C0%AE%C0%AE/private"),  // P-overlong: literal
        ("/public?x=/private/secret", "/public?x=/private/secret"),  // P-query-confusion
        ("/a?b=%2F..&c", "/a?b=%2F..&c"),  // query unchanged
        ("/private;x=1/secret", "/private;x=1/secret"),
    ])
    func canonicalises(input: String, expected: String) {
        #expect(canonical(input) == expected)
    }

    @Test(arguments: [
        "/public/%2e%2e/private/secret", "/public/%2E%2E/private/secret", "/public/.%2e/private/secret",  // P-pct-dotdot
        "/public%2f..%2fprivate/secret", "/public/..%2Fprivate/secret",  // P-enc-slash
        "/public\\..\\private/secret", "/public%5c..%5cprivate/secret",  // P-backslash
        "/public/..;/private/secret", "/public/..;foo=bar/private/secret", "/public/.;/x",  // P-matrix
        "/private/secret#x", "/public/#/../private/secret",  // P-fragment
        "/private%00.png", "/a%0d%0aX", "/a%7f",  // P-null, control bytes
        "/a b", "/é", "/a\u{7F}",
        "http://upstream.internal/private/secret", "*", "private",  // P-absolute-form
        "/a%", "/a%4", "/a%zz",
        "/a?b c", "/a?b#c",
    ])
    func rejects(input: String) {
        #expect(rejected(input), "\(input)")
    }

    @Test func matchPathDropsSegmentParameters() throws {
        let c = try CanonicalPath.parse("/admin;jsessionid=1/users;v=2?q").get()
        #expect(c.matchPath == "/admin/users")
        #expect(c.path == "/admin;jsessionid=1/users;v=2")
        #expect(c.query == "q")
    }

    /// Found by the `path` fuzz target: a segment of parameters only (`/;x/admin`) left an empty segment in the
    /// match path (`//admin`), so a rule for `/admin` did not match while a parameter-dropping upstream served
    /// `/admin`. Such segments do not count for matching (a last one leaves a directory: `/admin/;x` matches as
    /// `/admin/`); the forwarded path keeps them.
    @Test(arguments: [
        ("/;x/admin/users", "/admin/users", "/;x/admin/users"),
        ("/;a//=", "/=", "/;a/="),
        ("/admin/;x/users;v=1/", "/admin/users/", "/admin/;x/users;v=1/"),
        ("/;x", "/", "/;x"),
        ("/;x/", "/", "/;x/"),
        ("/;", "/", "/;"),
        ("/admin/;x", "/admin/", "/admin/;x"),
        ("/api;/;", "/api/", "/api;/;"),
    ])
    func parameterOnlySegmentsDoNotCountForMatching(input: String, matchPath: String, path: String) throws {
        let c = try CanonicalPath.parse(input).get()
        #expect(c.matchPath == matchPath)
        #expect(c.path == path)
        #expect(try CanonicalPath.parse(c.requestTarget).get() == c)
        #expect(RouteTable.prefixMatches("/admin", try CanonicalPath.parse("/;x/admin/users").get().matchPath))
    }

    @Test func boundsLength() {
        #expect(rejected("/" + String(repeating: "a", count: 9000)))
    }

    /// The shortcut for already-canonical paths answers exactly like the full parse wherever it answers at all.
    @Test func plainShortcutAgreesWithFullParse() {
        let pieces = ["a", "b1", ".", "..", "...", ".x", "x.", "a;b", "%41", "%2F", "", "~-_", "A", "!$&'()*+,=:@", "é", " "]
        var targets = ["/", "/?", "/?q=1", "/a?b?c", "/a?x y", "/a?#", "/a/?q", "//", "/a//b", "/a/.", "/a/..?x"]
        for a in pieces {
            for b in pieces {
                targets.append("/\(a)/\(b)")
                targets.append("/\(a)/\(b)/")
                targets.append("/\(a)/\(b)?k=\(a)")
            }
        }
        targets.append("/" + String(repeating: "a", count: 100))
        var shortcuts = 0
        for target in targets {
            let full = CanonicalPath.parseFull(target, maxLength: 64)
            if let plain = CanonicalPath.parsePlain(target, maxLength: 64) {
                shortcuts += 1
                #expect(plain == full, "\(target)")
            }
        }
        #expect(shortcuts > 50)
    }
}
