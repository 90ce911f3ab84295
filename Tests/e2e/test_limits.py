"""Limits and slow clients (DESIGN §4 limits, §5; security.md L-*, M-expect).

Main gateway: max_header_bytes 16384, max_body_bytes 300 MiB. Second gateway (env2): max_header_bytes 8192,
max_body_bytes 1 MiB, header_timeout_ms 500.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import payload
from harness import ConnectionClosed, assert_gateway_error


def _json_error(r, status):
    assert r.status == status, r
    body = json.loads(r.body)
    for k in ("error", "reason", "message", "request_id"):
        assert k in body, body
    return body


@pytest.mark.parametrize("target,headers", [
    ("/private/x", [("Authorization", "Bearer " + "a" * 65536)]),
    ("/public/x", [("X-Big", "b" * 65536)]),
    ("/public/x", [(f"X-H{i}", "c" * 1024) for i in range(100)]),
], ids=["L-header-size-auth", "L-header-size", "L-header-total"])
def test_header_too_large_431(env, target, headers):
    """L-header-size / L-header-total: 64 KiB header or 100 × 1 KiB headers → 431 before any JWT parsing;
    nothing forwarded."""
    mark = env.mark()
    with env.gw.raw() as c:
        c.send(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: gateway.test\r\n" +
               b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + b"\r\n")
        r = c.read_response()
    _json_error(r, 431)
    env.assert_nothing_forwarded(mark)


@pytest.mark.parametrize("target,auth", [("/private/upload", True), ("/public/upload", False)])
def test_content_length_over_limit_413(env, target, auth):
    """L-body-size: Content-Length 10 GiB (> max_body_bytes) → 413 at once, before any body byte is sent;
    nothing forwarded."""
    mark = env.mark()
    h = f"POST {target} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 10737418240\r\n"
    if auth:
        h += f"Authorization: Bearer {env.keys.mint('ES256')}\r\n"
    with env.gw.raw(timeout=15) as c:
        c.send((h + "\r\n").encode())
        r = c.read_response()
    _json_error(r, 413)
    env.assert_nothing_forwarded(mark)


def test_body_limit_boundary(env2):
    """DESIGN §4 limits.max_body_bytes (1 MiB here): exactly the limit passes, one byte more is 413 and never
    reaches the upstream."""
    limit = 1024 * 1024
    mark = env2.mark()
    with env2.gw.raw(timeout=30) as c:
        r = c.request("POST", "/public/upload", body=payload.make(limit))
    assert r.status == 200, r
    assert r.json()["length"] == limit and r.json()["sha256"] == payload.sha256_of(limit)
    env2.one_forwarded(mark)
    mark = env2.mark()
    with env2.gw.raw(timeout=30) as c:
        c.send(f"POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {limit + 1}\r\n\r\n"
               .encode())
        r = c.read_response()
    _json_error(r, 413)
    env2.assert_nothing_forwarded(mark)


def test_chunked_body_over_limit(env2):
    """DESIGN §5 limits: a chunked body that grows past max_body_bytes → 413 (or the connection is closed); if
    the head was already streamed upstream, that upstream request never completes."""
    mark = env2.mark()
    c = env2.gw.raw(timeout=30)
    got = None
    try:
        c.send(b"POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for piece in payload.chunks(3 * 1024 * 1024, 64 * 1024):
                c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            got = c.read_response()
        except (ConnectionClosed, ConnectionError):
            got = None
    finally:
        c.close()
    if got is not None:
        assert got.status == 413, got
    with env2.gw.raw() as b:
        assert b.request("GET", "/public/__barrier__/chunked-limit").status == 200
    for q in env2.forwarded_since(mark):
        if "__barrier__" in q["target"]:
            continue
        assert not env2.up.log.wait_body(q["seq"])["complete"], "an over-limit body completed upstream"


def test_slow_header_408_and_close(env2):
    """L-slowloris (partial head, then silence past header_timeout_ms 500) → 408 and the connection closed;
    nothing forwarded."""
    mark = env2.mark()
    with env2.gw.raw(timeout=15) as c:
        c.send(b"GET /public/slow-head HTTP/1.1\r\nHost: gateway.test\r\nX-Partial: ")
        try:
            r = c.read_response()
        except socket.timeout:
            pytest.fail("no 408 within 15 s with header_timeout_ms 500")
        assert r.status == 408, r
        assert c.closed_by_peer(5.0), "connection not closed after 408"
    env2.assert_nothing_forwarded(mark)
    # Like every answer, the 408 has a request id, and an access-log line with its reason.
    request_id = r.header("X-Request-Id")
    assert request_id and r.json()["request_id"] == request_id
    lines = [line for line in env2.gw.logs().decode(errors="replace").splitlines() if request_id in line]
    assert len(lines) == 1 and "request_timeout" in lines[0] and "408" in lines[0], lines


def test_slowloris_trickle_408_other_clients_unaffected(env2):
    """L-slowloris: one header byte every 100 ms never completes the head → 408 after header_timeout_ms
    (a total, not an idle, timer); meanwhile other clients are served."""
    mark = env2.mark()
    stop = threading.Event()
    c = env2.gw.raw(timeout=20)

    def trickle():
        for b in b"GET /public/trickle HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: " + b"a" * 400:
            if stop.is_set():
                return
            try:
                c.sock.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.1)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        with env2.gw.raw() as other:
            assert other.request("GET", "/public/other-client").status == 200
        try:
            r = c.read_response()
        except socket.timeout:
            pytest.fail("trickling client never timed out")
        except (ConnectionClosed, ConnectionError):
            r = None  # silent close is acceptable for a trickle (security.md L-slowloris: "408 or silent close")
        assert r is None or r.status == 408, r
    finally:
        stop.set()
        t.join()
        c.close()
    reqs = [q["target"] for q in env2.forwarded_since(mark)]
    assert reqs == ["/public/other-client"], reqs


def test_unauthenticated_body_not_awaited(env):
    """L-body-unauth: invalid token + a chunked body that is still coming → 401 as soon as the head is
    processed (the gateway does not wait for, or buffer, the body); nothing forwarded."""
    mark = env.mark()
    with env.gw.raw(timeout=15) as c:
        c.send(b"POST /private/upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n"
               b"Authorization: Bearer not.a.token\r\n\r\n" + b"%x\r\n" % 65536 + b"z" * 65536 + b"\r\n")
        try:
            r = c.read_response()
        except socket.timeout:
            pytest.fail("gateway waited for the rest of an unauthenticated body")
    assert_gateway_error(r, 401, "token_malformed", "invalid_token")
    env.assert_nothing_forwarded(mark)


def test_expect_continue_not_sent_for_rejected_request(env):
    """M-expect: Expect: 100-continue + bad token + large Content-Length (under max_body_bytes) → 401 without a
    100 Continue first."""
    mark = env.mark()
    with env.gw.raw(timeout=15) as c:
        c.send(b"POST /private/upload HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: 100000000\r\nAuthorization: Bearer not.a.token\r\n\r\n")
        r = c.read_response("POST", skip_1xx=False)
    assert r.status == 401, f"first response was {r.status}"
    env.assert_nothing_forwarded(mark)


def test_expect_continue_sent_for_authorised_request(env):
    """An authorised request with `Expect: 100-continue` gets `100 Continue` before it sends its body (no client
    stall), and then the upstream's answer; the upstream receives the whole body."""
    token = env.keys.mint("ES256")
    body = b"x" * 200000
    mark = env.mark()
    with env.gw.raw(timeout=15) as c:
        c.send(b"POST /private/upload HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\nAuthorization: Bearer %s\r\n\r\n" % (len(body), token.encode()))
        interim = c.read_response("POST", skip_1xx=False)
        assert interim.status == 100, f"expected 100 Continue first, got {interim.status}"
        c.send(body)
        r = c.read_response("POST")
    assert r.status == 200, r
    forwarded = [q for q in env.forwarded_since(mark) if "__barrier__" not in q["target"]]
    assert len(forwarded) == 1
    assert not any(n.lower() == "expect" for n, _ in forwarded[0]["headers"])
