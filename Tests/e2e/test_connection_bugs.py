"""Issue 10, connection handler: the connection clocks per request head (pipelining), the admin listener's clocks,
an empty body's `Content-Length: 0`, and hop-by-hop response fields ending at the gateway."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from configs import small_config
from harness import ConnectionClosed, RawClient, header_values


@pytest.fixture
def clocks_gw(make_gateway, keys, upstream):
    """A gateway with 1 s header and idle clocks (the issue's reproductions)."""
    def build(d):
        cfg = small_config(d, keys, upstream.port)
        cfg["limits"].update({"header_timeout_ms": 1000, "idle_timeout_ms": 1000})
        cfg["log"]["format"] = "json"
        return cfg
    return make_gateway(build, "clocks")


def _access_lines(gw) -> list[dict]:
    out = []
    for line in gw.logs().decode(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "status" in obj and "request_id" in obj:
            out.append(obj)
    return out


def test_pipelined_slow_second_answer_outlives_idle_clock(clocks_gw, upstream):
    """Two pipelined GETs, the second answered after 2 s, idle_timeout_ms 1000: both answers arrive (the idle clock
    never runs while a pipelined request is outstanding), none is logged 499."""
    mark = upstream.log.mark()
    with clocks_gw.raw(timeout=15) as c:
        c.send(b"GET /public/first HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
               b"GET /public/slow?ms=2000 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        r1 = c.read_response()
        t = time.monotonic()
        r2 = c.read_response()
        assert time.monotonic() - t > 1.5
    assert r1.status == 200 and r1.json()["target"] == "/public/first"
    assert r2.status == 200 and r2.json()["target"] == "/public/slow?ms=2000"
    assert [q["target"] for q in upstream.log.since(mark)] == ["/public/first", "/public/slow?ms=2000"]
    time.sleep(0.3)  # access lines are written once per loop turn
    assert not [a for a in _access_lines(clocks_gw) if a.get("status") == 499], _access_lines(clocks_gw)


def test_pipelined_late_body_gets_no_408(clocks_gw, upstream):
    """A pipelined POST whose body arrives 1.2 s after its head (header_timeout_ms 1000): both answers are right,
    and nothing follows them — no 408 — until the idle clock closes the connection silently."""
    with clocks_gw.raw(timeout=15) as c:
        c.send(b"GET /public/a HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
               b"POST /public/b HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\n")
        time.sleep(1.2)
        c.send(b"hello")
        r1 = c.read_response()
        r2 = c.read_response("POST")
        assert r1.status == 200 and r1.json()["target"] == "/public/a"
        assert r2.status == 200 and r2.json()["target"] == "/public/b" and r2.json()["body_len"] == 5
        assert c.closed_by_peer(5.0), f"something followed the answers: {c.buf[:200]!r}"


def test_slow_head_after_a_response_still_408(clocks_gw):
    """The header clock still runs for the next head on a kept-alive connection."""
    with clocks_gw.raw(timeout=15) as c:
        assert c.request("GET", "/public/one").status == 200
        c.send(b"GET /public/two HTTP/1.1\r\nHost: gatew")
        r = c.read_response()
        assert r.status == 408 and r.json()["reason"] == "request_timeout"
        assert c.closed_by_peer(5.0)


def test_idle_keepalive_closed(clocks_gw):
    """idle_timeout_ms 1000: a kept-alive connection with no request is closed silently."""
    with clocks_gw.raw(timeout=15) as c:
        assert c.request("GET", "/public/one").status == 200
        t = time.monotonic()
        assert c.closed_by_peer(5.0)
        assert time.monotonic() - t >= 0.8


def test_admin_listener_has_clocks(clocks_gw):
    """200 connections to the admin listener sending one header byte a second (the issue's reproduction) all get
    408 (or are closed) within the header clock; a silent one is closed by the idle clock."""
    host, port = clocks_gw.admin
    conns = [RawClient(host, port, timeout=10) for _ in range(200)]
    silent = RawClient(host, port, timeout=10)
    closed = [False] * len(conns)
    stop = threading.Event()

    def trickle():
        data = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: " + b"a" * 100
        for b in data:
            if stop.is_set():
                return
            for c in conns:
                try:
                    c.sock.send(bytes([b]))
                except OSError:
                    pass
            time.sleep(1.0)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        start = time.monotonic()
        for i, c in enumerate(conns):
            try:
                r = c.read_response()
                assert r.status == 408, r
                closed[i] = c.closed_by_peer(5.0)
            except (ConnectionClosed, ConnectionError):
                closed[i] = True
        assert all(closed), closed
        assert time.monotonic() - start < 8
        assert silent.closed_by_peer(5.0), "a silent admin connection was never closed"
    finally:
        stop.set()
        t.join()
        for c in conns + [silent]:
            c.close()
    # The admin listener still answers.
    with RawClient(host, port) as c:
        assert c.request("GET", "/healthz").status == 200


@pytest.mark.parametrize("method,headers", [
    ("POST", [("Content-Length", "0")]), ("POST", []), ("PUT", [("Content-Length", "0")]), ("PATCH", []),
], ids=["post-cl0", "post-none", "put-cl0", "patch-none"])
def test_empty_body_forwarded_with_content_length_0(env, method, headers):
    """Issue 10: an empty POST/PUT/PATCH reaches the upstream with `Content-Length: 0` (servers that require a
    length answer 411 without it), and no Transfer-Encoding."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request(method, "/public/empty", headers)
    assert r.status == 200, r
    req = env.one_forwarded(mark)
    assert header_values(req, "Content-Length") == ["0"], req["headers"]
    assert header_values(req, "Transfer-Encoding") == []
    assert env.up.log.wait_body(req["seq"])["body_len"] == 0


def test_get_without_body_gets_no_length(env):
    mark = env.mark()
    with env.gw.raw() as c:
        assert c.request("GET", "/public/plain-get").status == 200
    req = env.one_forwarded(mark)
    assert header_values(req, "Content-Length") == [] and header_values(req, "Transfer-Encoding") == []


def test_hop_by_hop_response_headers_not_passed_to_client(env):
    """Issue 10, RFC 9110 §7.6.1: fields the upstream names in `Connection`, and Keep-Alive, Proxy-Authenticate,
    Upgrade, Trailer, end at the gateway; end-to-end fields pass; the connection stays usable."""
    with env.gw.raw() as c:
        r = c.request("GET", "/public/hop-headers")
        assert r.status == 200 and r.body == b"ok"
        names = {n.lower() for n, _ in r.header_list}
        for dropped in ("x-hop", "keep-alive", "proxy-authenticate", "upgrade", "trailer"):
            assert dropped not in names, f"{dropped} reached the client: {r.header_list}"
        for v in r.headers_all("Connection"):
            assert "x-hop" not in v.lower()
        assert r.header("X-Kept") == "yes"
        assert c.request("GET", "/public/after-hop").status == 200
