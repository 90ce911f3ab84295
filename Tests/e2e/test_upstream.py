"""Upstream behaviour through libcurl (DESIGN §5 upstream failures, keep-alive, unix sockets; security.md U-*)."""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

import payload
from harness import ConnectionClosed, assert_gateway_error, header_values


def test_upstream_down_502(env):
    """U-down: connection refused → 502 reason upstream_unavailable (JSON, §6)."""
    r = requests.get(env.gw.url("/down/x"), timeout=30)
    assert_gateway_error(r, 502, "upstream_unavailable")
    r = requests.post(env.gw.url("/down/x"), data=b"x" * 1000, timeout=30)
    assert_gateway_error(r, 502, "upstream_unavailable")


def test_upstream_hang_504_without_retry(env):
    """U-timeout: no response head within timeout_ms (500) → 504 upstream_timeout; the request was sent exactly
    once (no retry) and the client gets its answer well inside a generous bound."""
    mark = env.mark()
    t0 = time.monotonic()
    r = requests.get(env.gw.url("/limited/hang"), timeout=60)
    elapsed = time.monotonic() - t0
    assert_gateway_error(r, 504, "upstream_timeout")
    assert elapsed < 20, f"504 took {elapsed:.1f}s with timeout_ms 500"
    assert [q["target"] for q in env.forwarded_since(mark)] == ["/limited/hang"]


def test_client_disconnect_aborts_upstream_transfer(env):
    """DESIGN issue 2: a client that goes away mid-request makes the gateway abort the upstream transfer (the
    upstream sees its connection close long before the route's 30 s timeout could)."""
    mark = env.mark()
    c = env.gw.raw(timeout=10)
    try:
        c.send(b"GET /public/hang HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        deadline = time.monotonic() + 10
        while not [q for q in env.up.log.since(mark) if q["target"] == "/public/hang"]:
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
    finally:
        c.close()
    seq = [q for q in env.up.log.since(mark) if q["target"] == "/public/hang"][0]["seq"]
    deadline = time.monotonic() + 10
    while not any(q.get("peer_closed") for q in env.up.log.since(mark) if q["seq"] == seq):
        assert time.monotonic() < deadline, "the upstream transfer was not aborted after the client left"
        time.sleep(0.05)


def test_streaming_response_not_cut_by_timeout(env):
    """DESIGN §5: a response that keeps streaming is not cut by timeout_ms (500) as long as it is never silent
    longer than idle_timeout_ms (1000): 20 KiB, one KiB every 100 ms."""
    r = requests.get(env.gw.url("/limited/trickle?n=20&ms=100"), timeout=60)
    assert r.status_code == 200
    assert r.content == payload.make(1024) * 20


def test_silence_mid_body_aborts_transfer(env):
    """DESIGN §5 / U-reset-mid-body: silence mid-body longer than the upstream idle_timeout_ms aborts the
    transfer: the client never gets a complete-looking response (connection closed short of Content-Length)."""
    with env.gw.raw(timeout=30) as c:
        c.send(b"GET /limited/stall-mid-body?half=1024 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        try:
            r = c.read_response()
        except ConnectionClosed:
            return  # aborted mid-body: correct
        except socket.timeout:
            pytest.fail("gateway kept the client waiting on a silent upstream beyond idle_timeout_ms")
        # The head might also have been replaced by an error if nothing was sent to the client yet.
        assert r.status in (502, 504), f"stalled upstream produced a complete response: {r.status}"


def test_upstream_reset_mid_body(env):
    """U-reset-mid-body: upstream RST after half the body → 502 (nothing sent yet) or the client connection is
    aborted; never a complete 200."""
    with env.gw.raw(timeout=30) as c:
        c.send(b"GET /public/reset-mid-body HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        try:
            r = c.read_response()
        except (ConnectionClosed, ConnectionError):
            return
        assert r.status == 502, f"truncated upstream response delivered as complete {r.status}"


def test_upstream_response_with_cl_and_te_is_502(env):
    """M-upstream-desync (RFC 9112 §6.1/§6.3): an upstream response with both Content-Length and
    Transfer-Encoding is replaced by 502 (security.md; DESIGN §5 is silent)."""
    with env.gw.raw(timeout=15) as c:
        c.send(b"GET /public/bad-response HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        try:
            r = c.read_response()
        except socket.timeout:
            pytest.fail("no answer within 15 s to a request whose upstream response had both CL and TE")
        except (ConnectionClosed, ConnectionError) as e:
            pytest.fail(f"connection closed instead of a 502: {e}")
    assert r.status == 502, r


def test_upstream_header_with_control_byte_is_502(env):
    """U-response-headers: an upstream header value with a control byte is never relayed; the client gets a 502
    with reason upstream_invalid_response (not a dropped connection)."""
    with env.gw.raw(timeout=15) as c:
        c.send(b"GET /public/bad-header HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 502, r
    assert json.loads(r.body)["reason"] == "upstream_invalid_response"


def test_redirect_passed_through_not_followed(env):
    """U-redirect: the upstream's 302 goes to the client; libcurl does not follow it."""
    mark = env.mark()
    r = requests.get(env.gw.url("/public/redirect"), allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"] == "http://evil.invalid/stolen"
    assert [q["target"] for q in env.forwarded_since(mark)] == ["/public/redirect"]


def test_unix_socket_upstream(env):
    """DESIGN §4 upstreams[].unix_socket: requests reach the unix-socket upstream (and not the TCP one)."""
    tcp_mark = env.mark()
    unix_mark = env.unix_up.log.mark()
    r = requests.post(env.gw.url("/unix/echo?x=1"), data=b"over-unix", timeout=30)
    assert r.status_code == 200, r.text
    reqs = env.unix_up.log.since(unix_mark)
    assert len(reqs) == 1 and reqs[0]["target"] == "/unix/echo?x=1" and reqs[0]["method"] == "POST"
    assert env.unix_up.log.wait_body(reqs[0]["seq"])["body_len"] == len(b"over-unix")
    assert env.forwarded_since(tcp_mark) == []


def test_head_request(env):
    """HEAD: answered without a body; the connection stays usable (framing intact)."""
    mark = env.mark()
    with env.gw.raw() as c:
        r = c.request("HEAD", "/public/download?bytes=1000")
        assert r.status == 200
        assert r.header("Content-Length") in (None, "1000")
        r2 = c.request("GET", "/public/after-head")
        assert r2.status == 200 and r2.json()["target"] == "/public/after-head"
    reqs = env.forwarded_since(mark)
    assert [q["method"] for q in reqs] == ["HEAD", "GET"]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(env, status):
    """204 / 304 pass through without a body or chunked framing; the connection stays usable."""
    with env.gw.raw() as c:
        r = c.request("GET", f"/public/status/{status}", [("If-None-Match", '"e2e-etag"')])
        assert r.status == status
        assert r.header("Transfer-Encoding") is None
        if status == 304:
            assert r.header("ETag") == '"e2e-etag"'
        r2 = c.request("GET", "/public/after")
        assert r2.status == 200 and r2.json()["target"] == "/public/after"


def test_other_status_passthrough(env):
    """Upstream 404/500 are passed through as the upstream's, not turned into gateway errors."""
    r = requests.get(env.gw.url("/public/status/404"), timeout=30)
    assert r.status_code == 404 and r.text == "status 404\n"
    r = requests.get(env.gw.url("/public/status/500"), timeout=30)
    assert r.status_code == 500 and r.text == "status 500\n"


def test_keep_alive_many_requests_one_connection(env):
    """Keep-alive: 50 requests on one client connection, all answered; upstream connections are pooled."""
    mark = env.mark()
    with env.gw.raw() as c:
        for i in range(50):
            r = c.request("GET", f"/public/ka/{i}")
            assert r.status == 200 and r.json()["target"] == f"/public/ka/{i}"
            assert (r.header("Connection") or "").lower() != "close"
    reqs = env.forwarded_since(mark)
    assert [q["target"] for q in reqs] == [f"/public/ka/{i}" for i in range(50)]
    conns = {q["conn"] for q in reqs}
    assert len(conns) <= 5, f"upstream keep-alive pool not reused: {len(conns)} connections for 50 requests"


def test_keep_alive_survives_auth_errors(env):
    """A 401/403/404 on a keep-alive connection does not break the next request on it (or closes cleanly)."""
    token = env.keys.mint("ES256")
    with env.gw.raw() as c:
        assert c.request("GET", "/private/a").status == 401
        try:
            r = c.request("GET", "/private/b", [("Authorization", f"Bearer {token}")])
        except (ConnectionClosed, ConnectionError):
            return
        assert r.status == 200
        assert c.request("GET", "/nowhere").status == 404
        assert c.request("GET", "/public/c").status == 200


def test_pool_isolation_between_users(env):
    """U-pool-isolation: alternating users over pooled upstream connections; each upstream request carries only
    its own identity."""
    alice = env.keys.mint("ES256", sub="alice", scope="read")
    bob = env.keys.mint("RS256", sub="bob", scope="read admin")
    mark = env.mark()
    expected = []
    with env.gw.raw() as c:
        for i in range(10):
            who, tok = ("alice", alice) if i % 2 == 0 else ("bob", bob)
            h = [("Authorization", f"Bearer {tok}")] if i % 3 else [("Authorization", f"Bearer {tok}"),
                                                                  ("Cookie", f"session={who}")]
            assert c.request("GET", f"/private/pool/{i}", h).status == 200
            expected.append(who)
    reqs = env.forwarded_since(mark)
    assert [header_values(q, "X-Auth-Subject") for q in reqs] == [[w] for w in expected]
    for i, (q, who) in enumerate(zip(reqs, expected)):
        want = [f"session={who}"] if i % 3 == 0 else []
        assert header_values(q, "Cookie") == want, f"cookie state leaked across requests: {q['headers']}"


def test_uploads_recover_after_the_upstream_died_mid_upload(make_gateway, workdir):
    """The upstream is SIGKILLed while 300 KB uploads stream into it, then restarted on the same port: once it is
    back, uploads reach it again. Before, the libcurl handles whose uploads had failed went back to the driver's
    pool, and libcurl (8.14) failed every later upload on such a handle at once, with no connection attempted, until
    a request without a body ran on it: 502 `upstream_unavailable` while the upstream was up (found by
    Benchmarks/soak)."""
    import threading

    from harness import RawClient, UpstreamProcess, free_port

    port = free_port()
    up = UpstreamProcess(workdir, "dies-mid-upload-0", port=port)
    gw = make_gateway({
        "listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{port}"}},
        "routes": [{"path_prefix": "/public", "upstream": "app", "auth": "none"}],
    }, "dies-mid-upload")

    def upload() -> int | str:
        with RawClient("127.0.0.1", gw.port, timeout=10) as c:
            try:
                return c.request("POST", "/public/upload", [("Content-Length", "300000")], b"x" * 300_000).status
            except (ConnectionClosed, OSError) as e:
                return type(e).__name__

    stop = threading.Event()

    def load():
        while not stop.is_set():
            upload()

    t = threading.Thread(target=load)
    t.start()
    try:
        for i in range(3):
            time.sleep(1.5)
            up.proc.kill()
            up.proc.wait()
            time.sleep(0.3)
            up.stop()
            up = UpstreamProcess(workdir, f"dies-mid-upload-{i + 1}", port=port)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(30)
    try:
        statuses = [upload() for _ in range(10)]
        assert statuses == [200] * 10, statuses
    finally:
        up.stop()
