"""Message framing and request smuggling (DESIGN §5; security.md M-*, H-obs-fold-auth, H-ws-before-colon)."""
from __future__ import annotations

import pytest

from harness import ConnectionClosed


def _raw(env, data: bytes, method="POST"):
    mark = env.mark()
    c = env.gw.raw()
    try:
        c.send(data)
        r = c.read_response(method)
        closed = c.closed_by_peer(5.0)
    finally:
        c.close()
    return r, closed, mark


SMUGGLE = b"0\r\n\r\nGET /private/secret HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


def test_cl_and_te_rejected_and_closed(env):
    """M-cl-te: Content-Length + Transfer-Encoding → 400, connection closed, nothing (and no smuggled request)
    reaches the upstream."""
    req = (b"POST /public/x HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" % len(SMUGGLE)) + SMUGGLE
    r, closed, mark = _raw(env, req)
    assert r.status == 400, r
    assert closed, "connection must be closed after a framing error"
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("cls", [["4", "40"], ["4, 40"], ["+4"], ["0x4"], ["-1"], ["4 4"]],
                         ids=["M-dup-cl", "M-cl-list", "M-cl-plus", "M-cl-hex", "M-cl-negative", "M-cl-space"])
def test_bad_content_length_rejected(env, cls):
    """M-dup-cl / M-cl-list: differing or malformed Content-Length → 400, nothing forwarded."""
    head = b"POST /public/x HTTP/1.1\r\nHost: gateway.test\r\n" + \
        b"".join(b"Content-Length: %s\r\n" % v.encode() for v in cls) + b"\r\n"
    r, closed, mark = _raw(env, head + b"abcd" + b"x" * 36)
    assert r.status == 400, r
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("te", [[b"xchunked"], [b"chunked, identity"], [b"chunked", b"chunked"],
                                [b"chunked\x0b"], [b"identity"]],
                         ids=["xchunked", "not-final", "two-lines", "vtab", "identity"])
def test_obfuscated_transfer_encoding_rejected(env, te):
    """M-te-not-final / M-te-obfuscated: anything but a single final `chunked` → 400 (or 501), or (DESIGN does not
    pin these) the connection closed without an answer; never forwarded."""
    head = b"POST /public/x HTTP/1.1\r\nHost: gateway.test\r\n" + \
        b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in te) + b"\r\n"
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(head + b"4\r\nabcd\r\n0\r\n\r\n")
        try:
            r = c.read_response("POST")
        except (ConnectionClosed, ConnectionError):
            r = None
    assert r is None or r.status in (400, 501), r
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("head", [
    b"GET /private/x HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer\r\n {token}\r\n\r\n",
    b"GET /private/x HTTP/1.1\r\nHost: gateway.test\r\nAuthorization : Bearer {token}\r\n\r\n",
    b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Auth-Subject : admin\r\n\r\n",
    b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nFoo bar: x\r\n\r\n",
    b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-A: a\x00b\r\n\r\n",
    b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-A: a\rb\r\n\r\n",
], ids=["H-obs-fold-auth", "H-ws-before-colon", "M-header-space-name", "space-in-name",
        "M-nul-header", "bare-CR"])
def test_malformed_header_lines_rejected(env, head):
    """H-obs-fold-auth, H-ws-before-colon, M-header-space-name, M-nul-header: 400, nothing forwarded."""
    token = env.keys.mint("ES256").encode()
    r, closed, mark = _raw(env, head.replace(b"{token}", token), method="GET")
    assert r.status == 400, r
    env.assert_nothing_forwarded(mark)


def test_obs_fold_cannot_smuggle_identity(env):
    """obs-fold (RFC 9112 §5.2): 400, or the fold is replaced by SP; never a separate X-Auth-Subject line."""
    r, closed, mark = _raw(env, b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Benign: a\r\n"
                                b"\tX-Auth-Subject: admin\r\n\r\n", method="GET")
    if r.status == 400:
        env.assert_nothing_forwarded(mark)
        return
    assert r.status == 200
    req = env.one_forwarded(mark)
    assert not [n for n, _ in req["headers"] if n.strip().lower() == "x-auth-subject"]


def test_pipelined_public_then_private(env):
    """M-pipeline: `GET /public` + `GET /private` (no token) in one write → 200 then 401; the upstream sees only
    the first request."""
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(b"GET /public/pipe-1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
               b"GET /private/pipe-2 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.status == 200 and r1.json()["target"] == "/public/pipe-1"
    assert r2.status == 401 and r2.json()["reason"] == "token_missing"
    assert [q["target"] for q in env.forwarded_since(mark)] == ["/public/pipe-1"]


def test_pipelined_requests_answered_in_order(env):
    """M-pipeline, RFC 9112 §9.3.2: five pipelined requests (mixed routes, one POST with a body) are answered in
    order and each reaches the upstream exactly once."""
    token = env.keys.mint("ES256")
    reqs = [
        b"GET /public/p1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        b"POST /public/p2 HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /private/p3 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n",
        b"GET /public/p4?x=1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        b"GET /public/status/204 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    ]
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(b"".join(reqs))
        rs = [c.read_response() for _ in reqs]
    assert [r.status for r in rs] == [200, 200, 200, 200, 204]
    assert [r.json()["target"] for r in rs[:4]] == ["/public/p1", "/public/p2", "/private/p3", "/public/p4?x=1"]
    assert [q["target"] for q in env.forwarded_since(mark)] == \
        ["/public/p1", "/public/p2", "/private/p3", "/public/p4?x=1", "/public/status/204"]


def test_bad_chunk_size_never_completes_upstream(env):
    """M-chunk-ext: an overflowing chunk size → 400 or the connection is closed; if the head was already
    streamed upstream, that upstream request is aborted (its body never completes)."""
    mark = env.mark()
    c = env.gw.raw()
    try:
        c.send(b"POST /public/chunky HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n")
        try:
            r = c.read_response()
            assert r.status == 400, r
        except (ConnectionClosed, ConnectionError):
            pass
    finally:
        c.close()
    with env.gw.raw() as b:  # barrier: anything forwarded before it is in the upstream log after it
        assert b.request("GET", "/public/__barrier__/chunky").status == 200
    for q in env.forwarded_since(mark):
        if "__barrier__" in q["target"]:
            continue
        done = env.up.log.wait_body(q["seq"])
        assert not done.get("complete"), "a request with a broken chunked body completed upstream"
