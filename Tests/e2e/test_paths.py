"""Canonical path, routing and forwarding of exactly that path (DESIGN §4 routes, §5; security.md P-*).

/public is auth none, /private needs scope read; there is no catch-all route. Requests go over a raw socket so the
client never normalises anything.
"""
from __future__ import annotations

import json

import pytest

from harness import assert_gateway_error, percent_hex_upper


def send(env, target: str, token: str | None = None, method: str = "GET", host: str = "gateway.test",
         extra=None):
    headers = list(extra or [])
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request(method, target, headers, host=host)
    return r, mark


def assert_400_nothing_forwarded(env, r, mark):
    assert r.status == 400, f"expected 400, got {r}"
    if "json" in (r.header("Content-Type") or ""):
        body = json.loads(r.body)
        assert body.get("reason"), body
    env.assert_nothing_forwarded(mark)


REJECTED = [
    ("P-pct-dotdot", "/public/%2e%2e/private/secret"),
    ("P-pct-dotdot-upper", "/public/%2E%2E/private/secret"),
    ("P-pct-dotdot-mixed", "/public/.%2e/private/secret"),
    ("P-pct-dot-in-name", "/public/file%2Ejson"),
    ("P-enc-slash", "/public%2f..%2fprivate/secret"),
    ("P-enc-slash-2", "/public/..%2fprivate/secret"),
    ("P-enc-slash-upper", "/public/a%2Fb"),
    ("P-backslash", "/public\\..\\private/secret"),
    ("P-backslash-enc", "/public%5c..%5cprivate/secret"),
    ("P-matrix-dotdot", "/public/..;/private/secret"),
    ("P-matrix-dotdot-param", "/public/..;foo=bar/private/secret"),
    ("P-matrix-dot", "/public/.;/x"),
    ("P-fragment", "/private/secret#x"),
    ("P-fragment-2", "/public/#/../private/secret"),
    ("P-null-enc", "/private%00.png"),
    ("P-null-enc-2", "/public%00/../private"),
    ("P-null-raw", "/public/a\x00b"),
    ("P-non-ascii-raw", "/public/caf\xc3\xa9"),
]


@pytest.mark.parametrize("row,target", REJECTED, ids=[r[0] for r in REJECTED])
def test_ambiguous_paths_rejected(env, row, target):
    """P-pct-dotdot, P-enc-slash, P-backslash, P-matrix, P-fragment, P-null, raw non-ASCII (DESIGN §5): 400 even
    with a valid token; nothing reaches the upstream."""
    r, mark = send(env, target, token=env.keys.mint("ES256"))
    assert_400_nothing_forwarded(env, r, mark)


TO_PRIVATE = [
    ("P-dotdot", "/public/../private/secret", "/private/secret"),
    ("P-curl-dotsquash", "/public/./../private/secret", "/private/secret"),
    ("P-dotdot-above-root", "/../private/secret", "/private/secret"),
    ("P-dotdot-twice", "/public/x/../../private/secret", "/private/secret"),
    ("P-double-slash-lead", "//private/secret", "/private/secret"),
    ("P-double-slash-mid", "/private//secret", "/private/secret"),
    ("P-dot", "/private/./secret", "/private/secret"),
    ("P-unreserved-enc", "/%70rivate/secret", "/private/secret"),
    ("P-unreserved-enc-2", "/pr%69vate/s%65cret", "/private/secret"),
    ("P-trailing-slash", "/private/", "/private/"),
    ("P-dotdot-trailing", "/private/secret/..", "/private/"),
    ("P-query-kept", "/private/x?/public", "/private/x?/public"),
]


@pytest.mark.parametrize("row,target,canonical", TO_PRIVATE, ids=[r[0] for r in TO_PRIVATE])
def test_bypass_attempts_land_on_protected_route(env, row, target, canonical):
    """P-dotdot, P-curl-dotsquash, P-double-slash, unreserved escapes (DESIGN §5): routed on the canonical path,
    so 401 without a token (nothing forwarded); with a token the upstream receives exactly the canonical path."""
    r, mark = send(env, target)
    assert_gateway_error(r, 401, "token_missing")
    env.assert_nothing_forwarded(mark)
    r, mark = send(env, target, token=env.keys.mint("ES256"))
    assert r.status == 200, r
    assert env.one_forwarded(mark)["target"] == canonical


CANONICAL_PUBLIC = [
    ("dot-segments", "/public/./a/../b", "/public/b"),
    ("merge-slashes", "/public//a///b", "/public/a/b"),
    ("unreserved-decoded", "/public/%7Euser/%41%42c-%5F%2D", "/public/~user/ABc-_-"),
    ("P-double-enc", "/public/%252e%252e/private", "/public/%252e%252e/private"),
    ("reserved-kept", "/public/a%20b%3Bc", "/public/a%20b%3Bc"),
    ("query-unchanged", "/public/q?a=%2F..%2F&b=x%20y&c=/../&d=%2e&e=%7E&f=",
     "/public/q?a=%2F..%2F&b=x%20y&c=/../&d=%2e&e=%7E&f="),
    ("query-not-normalised", "/public/../public/./q?x=/private/../y&z=%2e%2e", "/public/q?x=/private/../y&z=%2e%2e"),
    ("P-query-confusion", "/public?x=/private/secret", "/public?x=/private/secret"),
    ("semicolon-plain", "/public/a;b=c", "/public/a;b=c"),
]


@pytest.mark.parametrize("row,target,canonical", CANONICAL_PUBLIC, ids=[r[0] for r in CANONICAL_PUBLIC])
def test_upstream_receives_exact_canonical_path(env, row, target, canonical):
    """DESIGN §5: dot-segments removed, // merged, unreserved escapes decoded, everything else byte-exact; the
    query string passes unchanged (P-query-confusion: the query never routes)."""
    r, mark = send(env, target)
    assert r.status == 200, r
    assert env.one_forwarded(mark)["target"] == canonical


def test_overlong_utf8_escape_is_literal_or_rejected(env):
    """P-overlong: %c0%ae is never decoded to '.'; either 400 or forwarded as the same escapes."""
    r, mark = send(env, "/public/%c0%ae%c0%ae/private")
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200
    assert percent_hex_upper(env.one_forwarded(mark)["target"]) == "/public/%C0%AE%C0%AE/private"


def test_double_slash_with_dotdot_is_consistent(env):
    """P-double-slash `/public//../private/secret`: the order of merge vs. dot removal is not pinned, but routing
    and forwarding must agree: either the protected route (401) or /public with /public/private/secret upstream."""
    r, mark = send(env, "/public//../private/secret")
    if r.status == 401:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200, r
    assert env.one_forwarded(mark)["target"] == "/public/private/secret"


@pytest.mark.parametrize("target", ["/PRIVATE/secret", "/Private/secret", "/private.", "/private%20",
                                    "/privatefoo", "/publicx", "/", "/nothing/here"])
def test_near_miss_paths_fail_closed(env, target):
    """P-case, P-trailing, P-matrix (`/private;x=1`), segment-boundary prefix match (DESIGN §4): never served by a
    route they do not match; no catch-all → 404 route_not_found (or 400), nothing forwarded."""
    r, mark = send(env, target, token=env.keys.mint("ES256"))
    assert r.status in (400, 404), r
    if r.status == 404:
        assert_gateway_error(r, 404, "route_not_found")
    env.assert_nothing_forwarded(mark)


def test_absolute_form_not_used_to_bypass(env):
    """P-absolute-form: `GET http://host/private/secret` → 400, or routed on its path (401 without a token);
    never forwarded."""
    r, mark = send(env, "http://upstream.internal/private/secret")
    assert r.status in (400, 401), r
    env.assert_nothing_forwarded(mark)
    r, mark = send(env, "http://gateway.test/public/abs")
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
    else:
        assert r.status == 200
        assert env.one_forwarded(mark)["target"] == "/public/abs"


def test_duplicate_host_rejected(env):
    """P-host-dup: two Host headers → 400, nothing forwarded."""
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(b"GET /public/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        r = c.read_response()
    assert_400_nothing_forwarded(env, r, mark)


def test_route_not_found(env):
    """DESIGN §4/§6: no route → 404 JSON reason route_not_found, nothing forwarded."""
    r, mark = send(env, "/no-such-route/x")
    assert_gateway_error(r, 404, "route_not_found")
    env.assert_nothing_forwarded(mark)


def test_host_route(env):
    """DESIGN §4 routes[].host: matches the request host (case-insensitive); other hosts fall through → 404."""
    r, mark = send(env, "/hosted/x", host="Only.Example.Test")
    assert r.status == 200, r
    assert env.one_forwarded(mark)["target"] == "/hosted/x"
    r, mark = send(env, "/hosted/x", host="other.example.test")
    assert_gateway_error(r, 404, "route_not_found")
    env.assert_nothing_forwarded(mark)


def test_methods_route(env):
    """DESIGN §4 routes[].methods: only listed methods match; others fall through → 404."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("POST", "/writes/x", body=b"abc")
    assert r.status == 200, r
    assert env.one_forwarded(mark)["method"] == "POST"
    r, mark = send(env, "/writes/x", method="GET")
    assert_gateway_error(r, 404, "route_not_found")
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("target,upstream_target", [
    ("/stripped/a/b?q=1", "/a/b?q=1"),
    ("/stripped", "/"),
    ("/stripped/", "/"),
])
def test_strip_prefix(env, target, upstream_target):
    """DESIGN §4 routes[].strip_prefix: the matched prefix is removed upstream; the query is kept."""
    r, mark = send(env, target)
    assert r.status == 200, r
    assert env.one_forwarded(mark)["target"] == upstream_target


def test_admin_endpoints_not_on_data_listener(env):
    """DESIGN §7: health/metrics/introspection live on admin_listen only; on the data listener they are just
    unrouted paths (404), nothing forwarded."""
    for target in ("/healthz", "/readyz", "/metrics"):
        r, mark = send(env, target)
        assert_gateway_error(r, 404, "route_not_found")
        env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("request_line", ["CONNECT gateway.test:443 HTTP/1.1", "CONNECT /public/x HTTP/1.1",
                                          "GET * HTTP/1.1", "OPTIONS * HTTP/1.1"])
def test_non_origin_form_targets_not_forwarded(env, request_line):
    """P-method / P-absolute-form: CONNECT and asterisk-form never tunnel or reach the upstream."""
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(request_line.encode() + b"\r\nHost: gateway.test\r\n\r\n")
        try:
            r = c.read_response()
        except (ConnectionError, Exception) as e:  # a plain close is acceptable
            r = e
    if not isinstance(r, Exception):
        assert r.status >= 400 and r.status != 101, r
    env.assert_nothing_forwarded(mark)


def test_path_parameters_do_not_dodge_protection(env):
    """P-matrix `/private;x=1/secret`: either refused/unrouted, or matched as the protected /private route (then
    401 without a token); with a token, if forwarded, the upstream gets the same canonical path."""
    r, mark = send(env, "/private;x=1/secret")
    assert r.status in (400, 401, 404), r
    env.assert_nothing_forwarded(mark)
    r, mark = send(env, "/private;x=1/secret", token=env.keys.mint("ES256"))
    if r.status == 200:
        assert env.one_forwarded(mark)["target"] == "/private;x=1/secret"
    else:
        assert r.status in (400, 404), r
        env.assert_nothing_forwarded(mark)


def test_encoded_crlf_in_path_never_splits_the_request(env):
    """U-path-inject: `%0d%0a` in the path is refused (control escape) or forwarded still encoded; never raw."""
    r, mark = send(env, "/public/a%0d%0aX-Injected:%20yes")
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200, r
    req = env.one_forwarded(mark)
    assert percent_hex_upper(req["target"]) == "/public/a%0D%0AX-Injected:%20yes"
    assert not [n for n, _ in req["headers"] if n.lower() == "x-injected"]
