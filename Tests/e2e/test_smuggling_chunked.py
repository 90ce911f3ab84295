"""Issue 10, request smuggling: malformed chunked bodies and framing-lookalike header names (DESIGN §12 Smuggling).

Every case is sent on a raw socket followed by a second request on the same connection. The recording upstream must
never see that second request, nor a complete body for the broken one; the client gets 400 `request_malformed` (or,
where it says so, another refusal) and the connection is closed.
"""
from __future__ import annotations

import socket

import pytest

from harness import ConnectionClosed
from harness import unique_id


def _smuggled(tag: str) -> bytes:
    return b"GET /public/smuggled-" + tag.encode() + b" HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


CHUNKED_HEAD = b"POST /public/chunky-%s HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"

# (id, body after the head). Each is malformed per RFC 9112 §7.1; the smuggled request follows it.
MALFORMED_CHUNKS = [
    ("plus-size", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("space-before-size", b" 5\r\nhello\r\n0\r\n\r\n"),
    ("space-after-size", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("tab-before-size", b"\t5\r\nhello\r\n0\r\n\r\n"),
    ("tab-after-size", b"5\t\r\nhello\r\n0\r\n\r\n"),
    ("negative-size", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("bare-lf", b"5\nhello\n0\n\n"),
    ("bare-cr", b"5\rhello\r0\r\r"),
    ("no-crlf-after-data", b"5\r\nhelloXX0\r\n\r\n"),
    ("empty-size-line", b"\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("quoted-crlf-in-extension", b'5;a="x\r\ny"\r\nhello\r\n0\r\n\r\n'),
    ("content-length-in-trailers", b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
    ("transfer-encoding-in-trailers", b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("folded-trailer", b"5\r\nhello\r\n0\r\nX-Trailer: a\r\n folded\r\n\r\n"),
    ("overflowing-size", b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n"),
]


def _send_and_read(gw, data: bytes, timeout: float = 5.0):
    c = gw.raw(timeout=timeout)
    try:
        c.send(data)
        try:
            r = c.read_response("POST")
        except (ConnectionClosed, ConnectionError, socket.timeout):
            r = None
        try:
            closed = r is None or c.closed_by_peer(5.0)
        except (ConnectionError, OSError):
            closed = True
    finally:
        c.close()
    return r, closed


def _assert_upstream_safe(env, mark, tag: str):
    """A barrier makes the log complete; then no smuggled request, and no broken body that completed."""
    with env.gw.raw() as b:
        assert b.request("GET", f"/public/__barrier__/{tag}").status == 200
    for q in env.forwarded_since(mark):
        target = q["target"] or ""
        if "__barrier__" in target:
            continue
        assert "smuggled" not in target, f"the second request reached the upstream: {q['request_line']}"
        assert target.startswith("/public/chunky-"), q["request_line"]
        done = env.up.log.wait_body(q["seq"])
        assert not done.get("complete"), f"a broken chunked body completed upstream: {done}"
        assert b"smuggled" not in (done.get("body_b64") or "").encode()


@pytest.mark.parametrize("body", [b for _, b in MALFORMED_CHUNKS], ids=[i for i, _ in MALFORMED_CHUNKS])
def test_malformed_chunked_body_refused(env, body):
    """Issue 10: each malformed chunk line → 400 request_malformed and the connection closed; the upstream
    transfer (if it started) is aborted, and the request after it never reaches the upstream."""
    tag = unique_id()
    mark = env.mark()
    r, closed = _send_and_read(env.gw, CHUNKED_HEAD % tag.encode() + body + _smuggled(tag))
    assert r is not None, "no answer to a malformed chunked body"
    assert r.status == 400 and r.json()["reason"] == "request_malformed", r
    assert closed, "connection not closed after a malformed chunked body"
    _assert_upstream_safe(env, mark, tag)


def test_huge_chunk_size_refused_413(env2):
    """Issue 10: a chunk size of 2^64-1 with max_body_bytes 1 MiB → 413 body_too_large before the decoder reads
    the size line, the connection closed; the request after it is never read, and never reaches the upstream (not
    even as body bytes)."""
    tag = unique_id()
    mark = env2.mark()
    r, closed = _send_and_read(env2.gw, CHUNKED_HEAD % tag.encode() + b"ffffffffffffffff\r\nabc" + _smuggled(tag))
    assert r is not None and r.status == 413 and r.json()["reason"] == "body_too_large", r
    assert closed
    _assert_upstream_safe(env2, mark, tag)


def test_chunk_sizes_add_up_to_the_limit(env2):
    """Two chunks that each fit but together declare more than max_body_bytes (1 MiB): 413 at the second size
    line; the upstream never gets a complete body."""
    tag = unique_id()
    mark = env2.mark()
    first = b"80000\r\n" + b"a" * 0x80000 + b"\r\n"
    r, closed = _send_and_read(env2.gw, CHUNKED_HEAD % tag.encode() + first + b"80001\r\n" + b"b" * 64 + _smuggled(tag),
                               timeout=15)
    assert r is not None and r.status == 413 and r.json()["reason"] == "body_too_large", r
    assert closed
    _assert_upstream_safe(env2, mark, tag)


def test_pipelined_huge_chunk_waits_for_the_first_answer(env2):
    """A huge chunk in a pipelined second request: the first request is answered normally, then the second is
    refused; nothing after it reaches the upstream."""
    tag = unique_id()
    mark = env2.mark()
    with env2.gw.raw(timeout=10) as c:
        c.send(b"GET /public/slow?ms=300 HTTP/1.1\r\nHost: gateway.test\r\n\r\n" + CHUNKED_HEAD % tag.encode()
               + b"ffffffffffffffff\r\nabc" + _smuggled(tag))
        r1 = c.read_response()
        assert r1.status == 200 and r1.json()["target"] == "/public/slow?ms=300", r1
        try:
            r2 = c.read_response("POST")
        except (ConnectionClosed, ConnectionError):
            r2 = None
        assert r2 is None or r2.status in (400, 413), r2
    with env2.gw.raw() as b:
        assert b.request("GET", f"/public/__barrier__/{tag}").status == 200
    for q in env2.forwarded_since(mark):
        assert "smuggled" not in (q["target"] or ""), q["request_line"]
        assert not (q["target"] or "").startswith("/public/chunky-") or not env2.up.log.wait_body(q["seq"]).get("complete")


LOOKALIKES = [
    ("Transfer_Encoding", "chunked"), ("Transfer.Encoding", "chunked"), ("transfer_encoding", "chunked"),
    ("Content_Length", "5"), ("Content.Length", "5"), ("Keep_Alive", "timeout=5"),
    ("Proxy_Connection", "keep-alive"), ("Proxy.Authorization", "Basic eDp5"),
]


@pytest.mark.parametrize("name,value", LOOKALIKES, ids=[n for n, _ in LOOKALIKES])
def test_framing_lookalike_header_refused(env, name, value):
    """Issue 10: a header whose name reads as a framing or hop-by-hop field once `_` / `.` are taken as `-` is
    refused with 400 and never forwarded; a second request on the connection never reaches the upstream."""
    tag = unique_id()
    mark = env.mark()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    req = (b"POST /public/chunky-%s HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n%s: %s\r\n\r\n"
           % (tag.encode(), len(body), name.encode(), value.encode())) + body + _smuggled(tag)
    r, closed = _send_and_read(env.gw, req)
    assert r is not None and r.status == 400 and r.json()["reason"] == "request_malformed", r
    assert closed
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("name", ["Transfer_Encoding", "Transfer.Encoding"])
def test_underscore_transfer_encoding_alone_refused(env, name):
    """Issue 10: `Transfer_Encoding: chunked` without any other framing: refused, not forwarded beside libcurl's
    own Content-Length."""
    tag = unique_id()
    mark = env.mark()
    req = (b"POST /public/chunky-%s HTTP/1.1\r\nHost: gateway.test\r\n%s: chunked\r\n\r\n"
           % (tag.encode(), name.encode())) + b"5\r\nhello\r\n0\r\n\r\n" + _smuggled(tag)
    r, closed = _send_and_read(env.gw, req)
    assert r is not None and r.status == 400 and r.json()["reason"] == "request_malformed", r
    assert closed
    env.assert_nothing_forwarded(mark)
