"""Request header policy towards the upstream (DESIGN §5; security.md X-*, HOP-*, U-framing-copy)."""
from __future__ import annotations

import socket

import pytest

from harness import ConnectionClosed, header_names, header_values, norm_name, unique_id
from test_auth import assert_identity, assert_no_identity

SPOOFS = [
    ("X-Auth-Subject", "admin"),
    ("x-auth-subject", "admin"),
    ("X-AUTH-SUBJECT", "admin"),
    ("X_Auth_Subject", "admin"),
    ("X-Auth_Subject", "admin"),
    ("X.Auth.Subject", "admin"),
    ("X-Auth-Subject", "admin, user-123"),
    ("X-Auth-Scopes", "admin"),
    ("X-Auth-Issuer", "https://evil.test"),
    ("X-Auth-Email", "root@example.test"),
    ("X-Auth-Roles", "admin"),
    ("X-Auth-Anything", "x"),
    ("x_auth_anything_else", "x"),
    ("X-Client-Id", "evil-client"),
    ("x_client.id", "evil-client"),
]


def _spoofed(req: dict) -> list[str]:
    """Client-sent identity values that made it upstream."""
    bad = []
    for n, v in req["headers"]:
        nn = norm_name(n)
        if (nn.startswith("x-auth-") or nn == "x-client-id") and v in {s[1] for s in SPOOFS}:
            bad.append(f"{n}: {v}")
    return bad


def test_spoofed_identity_headers_stripped_on_authenticated_route(env):
    """X-spoof-exact/-case/-underscore/-dot/-dup/-prefix-family: every client copy is dropped; the upstream
    sees exactly the gateway's single values."""
    token = env.keys.mint("ES256")
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/private/spoof", SPOOFS + [("Authorization", f"Bearer {token}")])
    assert r.status == 200, r
    req = env.one_forwarded(mark)
    assert not _spoofed(req), f"spoofed headers reached the upstream: {_spoofed(req)}"
    assert_identity(req, {"X-Auth-Subject": "user-123", "X-Auth-Scopes": "read", "X-Client-Id": "client-1"})


@pytest.mark.parametrize("path", ["/public/spoof", "/optional/spoof", "/unix/spoof"])
def test_spoofed_identity_headers_stripped_on_anonymous_routes(env, path):
    """X-spoof-exact (c)/(d): stripping also happens on auth none / optional-without-token routes (CVE-2017-6059)."""
    up = env.unix_up if path.startswith("/unix") else env.up
    mark = up.log.mark()
    with env.gw.raw() as c:
        r = c.request("GET", path, SPOOFS)
    assert r.status == 200, r
    reqs = up.log.since(mark)
    assert len(reqs) == 1
    assert_no_identity(reqs[0])


@pytest.mark.parametrize("conn", ["close, X-Auth-Subject", "keep-alive, x-auth-subject",
                                  "X-AUTH-SUBJECT, X-Client-Id, X-Auth-Scopes"])
def test_connection_cannot_remove_injected_identity(env, conn):
    """HOP-identity / HOP-lowercase: naming identity headers in Connection never removes the injected ones
    (or the request is refused with 400)."""
    token = env.keys.mint("ES256")
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/private/hop", [("Connection", conn), ("Authorization", f"Bearer {token}")])
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200, r
    assert_identity(env.one_forwarded(mark),
                    {"X-Auth-Subject": "user-123", "X-Auth-Scopes": "read", "X-Client-Id": "client-1"})


def test_connection_cannot_remove_forwarding_headers(env):
    """HOP-xff: `Connection: X-Forwarded-For, X-Forwarded-Proto` leaves the gateway-generated values in place."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/public/hop",
                      [("Connection", "X-Forwarded-For, X-Forwarded-Proto, X-Request-Id"),
                       ("X-Forwarded-For", "10.0.0.1")])
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200
    req = env.one_forwarded(mark)
    assert header_values(req, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(req, "X-Forwarded-Proto") == ["http"]
    assert len(header_values(req, "X-Request-Id")) == 1


def test_connection_authorization_still_validated(env):
    """HOP-authorization: the token is checked on the inbound request before hop-by-hop processing."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/private/x", [("Connection", "Authorization"),
                                           ("Authorization", f"Bearer {env.keys.mint('ES256')}")])
    assert r.status in (200, 400), r
    if r.status == 200:
        req = env.one_forwarded(mark)
        assert_identity(req, {"X-Auth-Subject": "user-123"})
        assert header_values(req, "Authorization") == []
    else:
        env.assert_nothing_forwarded(mark)


def test_hop_by_hop_and_connection_listed_headers_not_forwarded(env):
    """HOP-te-upgrade, RFC 9110 §7.6.1, DESIGN §5: TE, Upgrade, Keep-Alive, Proxy-Connection, Proxy-Authorization,
    Proxy-* and headers named in Connection never reach the upstream; ordinary headers do, unchanged."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/public/hop", [
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "secret-hop"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("Proxy-Anything", "x"),
            ("X-Benign", "kept as is"),
            ("Accept", "application/json"),
        ])
    assert r.status == 200, r
    req = env.one_forwarded(mark)
    names = {n.lower() for n in header_names(req)}
    for dropped in ("x-custom-hop", "te", "upgrade", "keep-alive", "proxy-connection", "proxy-authorization",
                    "proxy-anything"):
        assert dropped not in names, f"{dropped} forwarded upstream: {req['headers']}"
    for v in header_values(req, "Connection"):
        assert "x-custom-hop" not in v.lower() and "upgrade" not in v.lower()
    assert header_values(req, "X-Benign") == ["kept as is"]
    assert header_values(req, "Accept") == ["application/json"]


def test_upgrade_h2c_does_not_tunnel(env):
    """HOP-te-upgrade (h2c smuggling): no 101, and a follow-up request on the same connection never reaches the
    upstream unchecked: it is answered 401, or the connection is closed (or no longer read: DESIGN does not pin
    what happens to bytes after an Upgrade request, only that no tunnel skips auth)."""
    mark = env.mark()
    with env.gw.raw(timeout=3) as c:
        r = c.request("GET", "/public/up", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                           ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
        assert r.status != 101
        try:
            r2 = c.request("GET", "/private/secret")
        except (ConnectionClosed, ConnectionError, socket.timeout):
            r2 = None
        assert r2 is None or r2.status == 401
    with env.gw.raw() as b:
        assert b.request("GET", "/public/__barrier__/h2c").status == 200
    reqs = [q["target"] for q in env.forwarded_since(mark)]
    assert reqs in (["/public/up", "/public/__barrier__/h2c"], ["/public/__barrier__/h2c"]), reqs


def test_forwarded_headers_replaced(env):
    """X-xff, DESIGN §5: X-Forwarded-For/Proto/Host and Forwarded from the client are replaced, never passed."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/public/xff", [
            ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.test"),
            ("Forwarded", "for=10.0.0.3;proto=https;host=evil.test"),
        ], host="front.example.test")
    assert r.status == 200
    req = env.one_forwarded(mark)
    assert header_values(req, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(req, "X-Forwarded-Proto") == ["http"]
    assert header_values(req, "X-Forwarded-Host") == ["front.example.test"]
    for v in header_values(req, "Forwarded"):
        assert "10.0.0.3" not in v and "evil.test" not in v, f"client Forwarded passed through: {v}"


def test_framing_and_host_headers_not_copied(env, upstream):
    """U-framing-copy, DESIGN §5: client Host/Content-Length/Expect/TE are never copied; the upstream sees one
    Host (the upstream's own authority, libcurl sets it) and one framing header matching the real body."""
    body = b"hello=world"
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("POST", "/public/echo", [("Content-Length", str(len(body)))], body,
                      host="client-side.example.test")
    assert r.status == 200
    req = env.one_forwarded(mark)
    hosts = header_values(req, "Host")
    assert hosts == [f"127.0.0.1:{upstream.port}"], f"upstream Host: {hosts}"
    cls, tes = header_values(req, "Content-Length"), header_values(req, "Transfer-Encoding")
    assert len(cls) + len(tes) == 1, f"framing headers upstream: CL={cls} TE={tes}"
    assert env.up.log.wait_body(req["seq"])["body_len"] == len(body)


def test_request_id(env):
    """DESIGN §5: X-Request-Id added when absent (exactly one); a client value is kept, never duplicated."""
    mark = env.mark()
    with env.gw.raw() as c:
        assert c.request("GET", "/public/rid").status == 200
        rid = unique_id()
        assert c.request("GET", "/public/rid2", [("X-Request-Id", rid)]).status == 200
    first, second = env.forwarded_since(mark)
    ids = header_values(first, "X-Request-Id")
    assert len(ids) == 1 and ids[0].strip()
    assert header_values(second, "X-Request-Id") == [rid]


def test_error_response_request_id_is_set(env):
    """DESIGN §6: every gateway error carries a request_id."""
    with env.gw.raw() as c:
        r = c.request("GET", "/private/x")
    assert r.status == 401 and r.json()["request_id"]


def test_authorization_forwarded_when_configured(env2):
    """X-authz-forward: with auth.forward_token true the Authorization header reaches the upstream exactly once,
    unchanged, alongside the identity headers."""
    token = env2.keys.mint("ES256")
    mark = env2.mark()
    with env2.gw.raw() as c:
        r = c.request("GET", "/private/fwd", [("Authorization", f"Bearer {token}")])
    assert r.status == 200
    req = env2.one_forwarded(mark)
    assert header_values(req, "Authorization") == [f"Bearer {token}"]
    assert_identity(req, {"X-Auth-Subject": "user-123"})


def test_authorization_dropped_by_default_even_on_public_routes(env):
    """DESIGN §5: Authorization is dropped unless forward_token, also on auth none routes."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/public/x", [("Authorization", "Basic dXNlcjpwYXNz")])
    assert r.status == 200
    assert header_values(env.one_forwarded(mark), "Authorization") == []


def test_internal_control_headers_do_not_affect_routing(env):
    """X-spoof-internal: X-Original-URL / X-Rewrite-URL / X-Forwarded-Uri / X-Forwarded-Prefix never change the
    route or the upstream path."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/public/innocent", [("X-Original-URL", "/private/secret"),
                                                 ("X-Rewrite-URL", "/admin/secret"),
                                                 ("X-Forwarded-Uri", "/admin/secret"),
                                                 ("X-Forwarded-Prefix", "/admin")])
        assert r.status == 200
        r = c.request("GET", "/private/secret", [("X-Original-URL", "/public/x"),
                                                ("X-Forwarded-Uri", "/public/x")])
        assert r.status == 401
    reqs = env.forwarded_since(mark)
    assert [q["target"] for q in reqs] == ["/public/innocent"]


@pytest.mark.parametrize("tenant, expected", [
    (9007199254740993, "9007199254740993"),        # 2^53 + 1: a Double would round it to ...992
    (-9007199254740993, "-9007199254740993"),
    (123456789012345678901234567890, "123456789012345678901234567890"),
    (42, "42"),
])
def test_big_integer_claims_reach_the_upstream_as_written(env, tenant, expected):
    """Issue 10: a number claim mapped to an identity header is copied as the token wrote it, not through a Double."""
    token = env.keys.mint("ES256", tenant=tenant)
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("GET", "/private/big-number", [("Authorization", f"Bearer {token}")])
    assert r.status == 200, r
    assert_identity(env.one_forwarded(mark), {"X-Auth-Tenant": expected})
