"""WebSocket tunnels (DESIGN §10, issue 11): a real `websockets` upstream and real clients through the gateway.

Covers: echo of text and binary, 1 MiB and fragmented messages both ways, ping/pong, subprotocol negotiation and
permessage-deflate passed through (a browser-like client with Origin, a subprotocol and the extension), identity
headers injected and spoofed X-Auth-* stripped at the handshake, 401/403 with no upstream contact, `websocket: false`
→ 400, the upstream's refusals (403, 404, 200) passed back, token expiry and logout ending a tunnel with 1008 and the
upstream getting a close frame, the upstream dying and the client vanishing, slow readers on either side with the
gateway's RSS bounded, 1,000 idle tunnels (RSS growth reported), SIGTERM closing tunnels with 1001, metrics and the
access-log line. Timing bounds are generous; the RSS bounds are 64 MiB unless named.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import signal
import socket
import threading
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import harness
import tokens as tokens_mod
from harness import Gateway, RssSampler, free_port, rss_kib
from token_service import Service, service_config
from ws_upstream import WsUpstream

LEEWAY = 1


@pytest.fixture(scope="module")
def ws_upstream():
    up = WsUpstream()
    yield up
    up.stop()


def ws_config(workdir: str, keys, ws_port: int, **limits) -> dict:
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "limits": {"drain_seconds": 3, **limits},
        "upstreams": {"ws": {"url": f"http://127.0.0.1:{ws_port}"}},
        "routes": [
            {"path_prefix": "/ws", "upstream": "ws", "scopes": ["read"]},
            {"path_prefix": "/wsadmin", "upstream": "ws", "scopes": ["admin"]},
            {"path_prefix": "/nows", "upstream": "ws", "auth": "none", "websocket": False},
        ],
        "auth": {"realm": "api", "audiences": [tokens_mod.AUD], "leeway_seconds": LEEWAY},
        "issuers": keys.issuers_config(workdir),
        "identity_headers": {"subject": "X-Auth-Subject", "scopes": "X-Auth-Scopes", "strip_prefix": "X-Auth-"},
        "log": {"level": "info", "format": "json", "access_log": True},
    }


def start_gateway(binary, workdir, keys, name, config) -> Gateway:
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    return Gateway.started(binary, d, config(d) if callable(config) else config, env=keys.env(), name=name)


@pytest.fixture(scope="module")
def wsgw(binary, workdir, keys, ws_upstream):
    gw = start_gateway(binary, workdir, keys, "ws", lambda d: ws_config(d, keys, ws_upstream.port))
    yield gw
    gw.stop()


def url(gw: Gateway, path: str) -> str:
    return f"ws://{gw.host}:{gw.port}{path}"


def token(keys, **claims) -> str:
    return keys.mint("ES256", **claims)


def open_ws(gw, path, tok, **kw):
    headers = kw.pop("additional_headers", [])
    if tok is not None:
        headers = [("Authorization", f"Bearer {tok}")] + list(headers)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("max_size", None)
    kw.setdefault("proxy", None)
    return connect(url(gw, path), additional_headers=headers, **kw)


def handshake_headers(headers=()) -> list:
    """An upgrade request's headers (a fresh key each time), then the given ones."""
    return [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode())] + list(headers)


def handshake_raw(gw, path, headers) -> harness.RawResponse:
    with gw.raw() as c:
        return c.request("GET", path, handshake_headers(headers))


def metrics(gw) -> str:
    host, port = gw.admin
    return requests.get(f"http://{host}:{port}/metrics", timeout=10).text


def metric_value(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return 0.0


def close_code_within(ws, seconds: float):
    """Reads until the connection closes; returns (code, reason, elapsed)."""
    start = time.monotonic()
    try:
        while True:
            ws.recv(timeout=seconds)
    except ConnectionClosed as e:
        rcvd = e.rcvd
        return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None), time.monotonic() - start
    except TimeoutError:
        return "timeout", None, time.monotonic() - start


# ------------------------------------------------------------------------------------------------------------------
# relaying


def test_echo_text_binary_large_and_fragmented(wsgw, keys, ws_upstream):
    with open_ws(wsgw, "/ws/echo/basic", token(keys)) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        big = os.urandom(1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=30) == big
        text = "x" * (1024 * 1024)
        ws.send(text)
        assert ws.recv(timeout=30) == text
        # Client → upstream fragmented (an iterable is sent as fragments), upstream → client fragmented (FRAG...).
        ws.send([b"part1-", b"part2-", b"part3"])
        assert ws.recv(timeout=10) == b"part1-part2-part3"
        frag = b"FRAG" + os.urandom(256 * 1024)
        ws.send(frag)
        assert ws.recv(timeout=30) == frag


def test_ping_pong_both_ways(wsgw, keys):
    with open_ws(wsgw, "/ws/echo/ping", token(keys)) as ws:
        ws.ping(b"abc").wait(10)
        ws.send("ping-me")  # the upstream pings the client and waits for its pong
        assert ws.recv(timeout=15) == "pong-ok"


def test_browser_like_subprotocol_and_permessage_deflate(wsgw, keys, ws_upstream):
    with open_ws(wsgw, "/ws/echo/browser", token(keys), subprotocols=["chat.v2", "chat.v1"], compression="deflate",
                 origin="http://app.example.test", user_agent_header="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                 additional_headers=[("Accept-Language", "en")]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        msg = "compressible " * 20000
        ws.send(msg)
        assert ws.recv(timeout=10) == msg
    hs = ws_upstream.handshakes_for("/ws/echo/browser")[-1]
    assert hs["subprotocol"] == "chat.v2"
    assert "permessage-deflate" in (hs["extensions"] or "")
    names = {n.lower(): v for n, v in hs["headers"]}
    assert names["origin"] == "http://app.example.test"
    assert "permessage-deflate" in names["sec-websocket-extensions"]


def test_identity_injected_and_spoofed_headers_stripped(wsgw, keys, ws_upstream):
    spoof = [("X-Auth-Subject", "admin"), ("X_Auth_Subject", "admin"), ("X-Auth-Scopes", "admin"),
             ("X-Auth-Anything", "evil")]
    with open_ws(wsgw, "/ws/echo/identity", token(keys, sub="alice-ws"), additional_headers=spoof) as ws:
        ws.send("x")
        ws.recv(timeout=10)
    hs = ws_upstream.handshakes_for("/ws/echo/identity")[-1]
    pairs = [(n.lower().replace("_", "-"), v) for n, v in hs["headers"]]
    assert ("x-auth-subject", "alice-ws") in pairs
    assert [v for n, v in pairs if n == "x-auth-subject"] == ["alice-ws"]
    assert [v for n, v in pairs if n == "x-auth-scopes"] == ["read"]
    assert not [n for n, _ in pairs if n == "x-auth-anything"]
    assert not [n for n, _ in pairs if n == "authorization"]


# ------------------------------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("case", ["missing", "expired", "bad_signature"])
def test_unauthorised_handshake_401_without_upstream_contact(wsgw, keys, ws_upstream, case):
    marker = f"/ws/echo/unauth-{case}"
    headers = []
    if case == "expired":
        headers = [("Authorization", f"Bearer {token(keys, exp=int(time.time()) - 120)}")]
    elif case == "bad_signature":
        headers = [("Authorization", f"Bearer {tokens_mod.tamper_signature(token(keys))}")]
    r = handshake_raw(wsgw, marker, headers)
    reason = {"missing": "token_missing", "expired": "token_expired", "bad_signature": "signature_invalid"}[case]
    harness.assert_gateway_error(r, 401, reason)
    harness.assert_challenge(r)
    assert not ws_upstream.handshakes_for(marker)


def test_missing_scope_403(wsgw, keys, ws_upstream):
    r = handshake_raw(wsgw, "/wsadmin/echo/scope", [("Authorization", f"Bearer {token(keys)}")])
    harness.assert_gateway_error(r, 403, "insufficient_scope")
    assert not ws_upstream.handshakes_for("/wsadmin/echo/scope")


def test_route_without_websocket_refuses_upgrade(wsgw, ws_upstream):
    r = handshake_raw(wsgw, "/nows/echo", [])
    harness.assert_gateway_error(r, 400, "websocket_not_allowed")
    assert not ws_upstream.handshakes_for("/nows/echo")


@pytest.mark.parametrize("framing", ["refuse", "refuse-chunked"])
@pytest.mark.parametrize("status", [403, 404, 200])
def test_upstream_refusal_reaches_the_client(wsgw, keys, status, framing):
    """A non-101 answer goes back as the upstream gave it (a chunked body de-chunked on the way and framed again by
    the gateway), and the connection closes after it."""
    with pytest.raises(InvalidStatus) as info:
        open_ws(wsgw, f"/ws/{framing}/{status}", token(keys))
    response = info.value.response
    assert response.status_code == status
    assert response.headers.get("X-Refused") == "yes"
    assert response.body == f"refused with {status}\n".encode()


def test_chunked_refusal_framing_on_the_wire(wsgw, keys):
    """A chunked refusal on the wire: one framing (the gateway's), the upstream's trailer not relayed, and the
    connection closed after the answer."""
    with wsgw.raw() as c:
        r = c.request("GET", "/ws/refuse-chunked/403", handshake_headers([("Authorization", f"Bearer {token(keys)}")]))
        assert r.status == 403 and r.body == b"refused with 403\n", (r.status, r.body)
        assert len(r.headers_all("Transfer-Encoding")) + len(r.headers_all("Content-Length")) == 1, r.raw_head
        assert r.header("Connection") == "close" and r.header("X-Trailer") is None, r.raw_head
        assert c.closed_by_peer(), "the connection stayed open after the refusal"


# ------------------------------------------------------------------------------------------------------------------
# ends


def test_token_expiry_closes_with_1008(wsgw, keys, ws_upstream):
    exp = int(time.time()) + 3
    with open_ws(wsgw, "/ws/echo/expiry", token(keys, exp=exp)) as ws:
        ws.send("still valid")
        assert ws.recv(timeout=5) == "still valid"
        code, reason, _ = close_code_within(ws, 3 + LEEWAY + 5)
    closed_at = time.time()
    assert code == 1008 and reason == "token_expired", (code, reason)
    assert closed_at <= exp + LEEWAY + 1 + 0.5, closed_at - exp
    end = ws_upstream.end_for("/ws/echo/expiry")
    assert end and end["code"] == 1001, end


def test_upstream_dies_mid_tunnel(wsgw, keys):
    with open_ws(wsgw, "/ws/die", token(keys)) as ws:
        ws.send("bye")
        code, _, elapsed = close_code_within(ws, 10)
    assert code in (1011, None), code  # 1011 when the stream sat at a frame boundary, else the TCP close (1006)
    assert elapsed < 10


def test_client_vanishing_closes_the_upstream(wsgw, keys, ws_upstream):
    ws = open_ws(wsgw, "/ws/echo/vanish", token(keys))
    ws.send("x")
    ws.recv(timeout=10)
    # No close frame: the socket just goes.
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()
    end = ws_upstream.end_for("/ws/echo/vanish", timeout=10)
    assert end is not None, "the upstream connection stayed open after the client vanished"


@pytest.mark.rss_bound
def test_slow_client_does_not_grow_gateway_memory(wsgw, keys):
    """The upstream floods 256 MiB; the client reads nothing for a while, then everything. RSS growth ≤ 64 MiB."""
    base = rss_kib(wsgw.pid)
    with RssSampler(wsgw.pid) as sampler:
        with open_ws(wsgw, "/ws/flood?mib=256", token(keys), max_queue=1, compression=None) as ws:
            time.sleep(3)
            got = 0
            while got < 256:
                m = ws.recv(timeout=30)
                got += 1
                assert len(m) == 1024 * 1024
    growth = (sampler.peak_kib - base) / 1024
    print(f"\n[ws] slow client: gateway RSS growth {growth:.1f} MiB while 256 MiB flowed")
    assert growth < 64, growth


@pytest.mark.rss_bound
def test_slow_upstream_does_not_grow_gateway_memory(wsgw, keys):
    """The client sends for 4 s to an upstream that never reads: the gateway must stop reading the client."""
    base = rss_kib(wsgw.pid)
    sent = 0
    with RssSampler(wsgw.pid) as sampler:
        ws = open_ws(wsgw, "/ws/noread", token(keys), compression=None)
        stop = time.monotonic() + 4
        chunk = os.urandom(1024 * 1024)

        def writer():
            nonlocal sent
            try:
                while time.monotonic() < stop:
                    ws.send(chunk)
                    sent += 1
            except Exception:  # noqa: BLE001
                pass

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        t.join(6)
        time.sleep(1)
        ws.socket.close()
        t.join(5)
    growth = (sampler.peak_kib - base) / 1024
    print(f"\n[ws] slow upstream: client got {sent} MiB into the socket, gateway RSS growth {growth:.1f} MiB")
    assert sent < 200, "nothing held the client back"
    assert growth < 64, growth


def test_metrics_and_access_log(wsgw, keys):
    before = metrics(wsgw)
    with open_ws(wsgw, "/ws/echo/metrics", token(keys)) as ws:
        ws.send(os.urandom(1000))
        ws.recv(timeout=10)
        assert metric_value(metrics(wsgw), "portcullis_websocket_tunnels") >= 1
    deadline = time.monotonic() + 5
    lines = []
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in wsgw.logs().splitlines()
                 if b'"/ws/echo/metrics"' in line and b"portcullis.access" in line]
        if lines:
            break
        time.sleep(0.1)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["status"] == 101
    assert line["websocket_bytes_from_client"] >= 1000 and line["websocket_bytes_from_upstream"] >= 1000
    assert "duration_ms" in line and line.get("reason")
    after = metrics(wsgw)
    assert "portcullis_websocket_closed_total" in after
    assert sum(metric_value(after, "portcullis_websocket_closed_total", f'{{reason="{r}"}}')
               for r in ("closed", "client_closed", "upstream_closed")) > \
        sum(metric_value(before, "portcullis_websocket_closed_total", f'{{reason="{r}"}}')
            for r in ("closed", "client_closed", "upstream_closed"))


# ------------------------------------------------------------------------------------------------------------------
# logout, many tunnels, SIGTERM


def test_logout_closes_tunnel_with_token_revoked(binary, workdir, ws_upstream):
    d = os.path.join(workdir, "ws-service")
    os.makedirs(d, exist_ok=True)
    config = service_config(d, ws_upstream.port)
    gw = Gateway(binary, d, config, name="ws-service")
    try:
        gw.wait_healthy()
        svc = Service(gw, None)
        t = svc.tokens("alice")
        with connect(f"ws://{gw.host}:{gw.port}/ws/echo/logout", proxy=None,
                     additional_headers=[("Authorization", f"Bearer {t['access_token']}")]) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
            assert r.status_code in (200, 204), r.text
            code, reason, elapsed = close_code_within(ws, 5)
        assert code == 1008 and reason == "token_revoked", (code, reason)
        assert elapsed <= 1.5, elapsed
        end = ws_upstream.end_for("/ws/echo/logout")
        assert end and end["code"] == 1001, end
    finally:
        gw.stop()


def _raise_nofile(n: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


@pytest.mark.rss_bound
def test_thousand_idle_tunnels_then_sigterm_closes_them_with_1001(binary, workdir, keys, ws_upstream):
    """1,000 concurrent idle tunnels hold; RSS growth per tunnel is printed (bound: 64 KiB each); SIGTERM then ends
    them with 1001 within the drain."""
    _raise_nofile(8192)
    gw = start_gateway(binary, workdir, keys, "ws-many", lambda d: ws_config(d, keys, ws_upstream.port))
    try:
        tok = token(keys, exp=int(time.time()) + 600)
        n = 1000
        results: dict = {}

        async def run():
            from websockets.asyncio.client import connect as aconnect
            base = rss_kib(gw.pid)
            conns = []
            for i in range(0, n, 50):
                batch = await asyncio.gather(*[
                    aconnect(url(gw, f"/ws/echo/many-{j}"), additional_headers=[("Authorization", f"Bearer {tok}")],
                             ping_interval=None, proxy=None, open_timeout=30)
                    for j in range(i, min(n, i + 50))])
                conns.extend(batch)
            # Every tunnel works.
            await asyncio.gather(*[c.send("hi") for c in conns])
            echoes = await asyncio.gather(*[asyncio.wait_for(c.recv(), 30) for c in conns])
            results["echoed"] = sum(1 for e in echoes if e == "hi")
            await asyncio.sleep(1)
            results["rss_growth_kib"] = rss_kib(gw.pid) - base
            results["tunnels_metric"] = metric_value(metrics(gw), "portcullis_websocket_tunnels")
            gw.proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*[asyncio.wait_for(c.wait_closed(), 15) for c in conns],
                                         return_exceptions=True)
            results["codes"] = [c.close_code for c in conns]
            results["close_errors"] = [e for e in codes if isinstance(e, Exception)]

        asyncio.run(run())
        per_tunnel = results["rss_growth_kib"] / n
        print(f"\n[ws] {n} idle tunnels: gateway RSS growth {results['rss_growth_kib'] / 1024:.1f} MiB "
              f"({per_tunnel:.1f} KiB per tunnel)")
        assert results["echoed"] == n
        assert results["tunnels_metric"] == n
        assert per_tunnel < 64 * harness.RSS_FACTOR, per_tunnel
        codes = results["codes"]
        assert codes.count(1001) == n, {c: codes.count(c) for c in set(codes)}
        assert gw.proc.wait(20) == 0
    finally:
        gw.stop()


# ------------------------------------------------------------------------------------------------------------------
# raw peers: protocol errors, leftover bytes, a bad 101, the idle timeout


def frame(opcode: int, payload: bytes, masked: bool, fin: bool = True, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def read_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    def need(k):
        while len(buf) < k:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf.extend(chunk)
    need(2)
    opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
    off = 2
    if n == 126:
        need(4)
        n, off = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        need(10)
        n, off = int.from_bytes(buf[2:10], "big"), 10
    need(off + n)
    payload = bytes(buf[off:off + n])
    del buf[:off + n]
    return opcode, payload


def raw_upgrade(gw, path, tok, extra: bytes = b"") -> tuple[socket.socket, bytes, bytearray]:
    """Opens a tunnel by hand; `extra` is sent in the same write as the request. Returns the socket, the response
    head and whatever followed it."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nAuthorization: Bearer {tok}\r\n\r\n").encode()
    s = socket.create_connection((gw.host, gw.port), timeout=10)
    s.sendall(req + extra)
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data.extend(chunk)
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return s, head, bytearray(rest)


def close_payload(payload: bytes) -> tuple[int, str]:
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def test_bytes_sent_right_behind_the_request_are_relayed(wsgw, keys):
    s, head, buf = raw_upgrade(wsgw, "/ws/echo/leftover", token(keys), extra=frame(1, b"early bird", masked=True))
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        assert read_frame(s, buf) == (1, b"early bird")
    finally:
        s.close()


def test_unmasked_client_frame_closes_both_ways_with_1002(wsgw, keys, ws_upstream):
    s, head, buf = raw_upgrade(wsgw, "/ws/echo/unmasked", token(keys))
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(frame(1, b"fine", masked=True))
        assert read_frame(s, buf) == (1, b"fine")
        s.sendall(frame(1, b"not masked", masked=False))
        opcode, payload = read_frame(s, buf)
        assert opcode == 8 and close_payload(payload) == (1002, "websocket_unmasked_client_frame")
    finally:
        s.close()
    end = ws_upstream.end_for("/ws/echo/unmasked")
    assert end and end["code"] == 1002, end


def test_oversize_control_frame_from_the_client_closes_with_1002(wsgw, keys):
    s, head, buf = raw_upgrade(wsgw, "/ws/echo/bigping", token(keys))
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(frame(9, b"p" * 200, masked=True))
        opcode, payload = read_frame(s, buf)
        assert opcode == 8 and close_payload(payload) == (1002, "websocket_control_frame_too_long")
    finally:
        s.close()


class RawUpstream:
    """A TCP server that answers every connection with `behaviour(conn, request_bytes)` in a thread."""

    def __init__(self, behaviour):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        try:
            self.behaviour(conn, data)
        finally:
            time.sleep(0.5)
            conn.close()

    def close(self):
        self.sock.close()


def _accept_for(request: bytes) -> str:
    import hashlib
    key = [ln.split(b":", 1)[1].strip() for ln in request.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key:")][0]
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()


@pytest.mark.parametrize("case", ["bad_accept", "masked_server_frame", "oversize_server_ping"])
def test_upstream_protocol_errors(binary, workdir, keys, case):
    def behaviour(conn, request):
        accept = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" if case == "bad_accept" else _accept_for(request)
        conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())
        if case == "masked_server_frame":
            conn.sendall(frame(1, b"hello", masked=True))
        elif case == "oversize_server_ping":
            conn.sendall(frame(9, b"x" * 130, masked=False))
        try:
            conn.settimeout(3)
            conn.recv(65536)
        except OSError:
            pass

    up = RawUpstream(behaviour)
    gw = start_gateway(binary, workdir, keys, f"ws-raw-{case}", lambda d: ws_config(d, keys, up.port))
    try:
        s, head, buf = raw_upgrade(gw, "/ws/raw", token(keys))
        try:
            if case == "bad_accept":
                assert head.startswith(b"HTTP/1.1 502"), head
                assert b"upstream_invalid_response" in bytes(buf) or b"upstream_invalid_response" in s.recv(4096)
            else:
                assert head.startswith(b"HTTP/1.1 101"), head
                opcode, payload = read_frame(s, buf)
                code, reason = close_payload(payload)
                assert opcode == 8 and code == 1002, (opcode, payload)
                assert reason in ("websocket_masked_server_frame", "websocket_control_frame_too_long")
        finally:
            s.close()
        assert gw.alive()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"/ws/raw" not in gw.logs():
            time.sleep(0.1)
        assert b"/ws/raw" in gw.logs()  # the access-log line of the failed handshake or tunnel
    finally:
        gw.stop()
        up.close()


def test_idle_tunnel_closes_with_1001(binary, workdir, keys, ws_upstream):
    gw = start_gateway(binary, workdir, keys, "ws-idle",
                       lambda d: ws_config(d, keys, ws_upstream.port, websocket_idle_timeout_ms=1000))
    try:
        with open_ws(gw, "/ws/echo/idle", token(keys), ping_interval=None) as ws:
            ws.send("x")
            ws.recv(timeout=5)
            code, reason, elapsed = close_code_within(ws, 10)
        assert (code, reason) == (1001, "idle_timeout")
        assert elapsed < 5, elapsed
        end = ws_upstream.end_for("/ws/echo/idle")
        assert end and end["code"] == 1001, end
    finally:
        gw.stop()


def test_https_upstream_tunnel_offers_only_http11(binary, workdir, keys):
    import ssl

    from test_tls import _write_pki
    d = os.path.join(workdir, "ws-tls-pki")
    os.makedirs(d, exist_ok=True)
    ca, cert, key = _write_pki(d)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])  # would pick h2 if the gateway offered it
    up = WsUpstream(ssl_context=context)

    def config(dd):
        c = ws_config(dd, keys, up.port)
        c["upstreams"] = {"ws": {"url": f"https://127.0.0.1:{up.port}", "tls": {"ca_file": ca}}}
        return c

    gw = start_gateway(binary, workdir, keys, "ws-tls", config)
    try:
        with open_ws(gw, "/ws/echo/tls", token(keys)) as ws:
            big = os.urandom(512 * 1024)
            ws.send(big)
            assert ws.recv(timeout=20) == big
            ws.send("small")
            assert ws.recv(timeout=10) == "small"
        hs = up.handshakes_for("/ws/echo/tls")[-1]
        assert hs["alpn"] in (None, "http/1.1"), hs["alpn"]
    finally:
        gw.stop()
        up.stop()


def test_logout_on_another_replica_closes_the_tunnel(binary, workdir, ws_upstream):
    """Gateway A issues tokens and serves the revocation feed; the tunnel goes through verify-only gateway B, which
    follows A's feed: a logout on A ends B's tunnel with 1008 token_revoked (DESIGN §9: within about a second)."""
    from test_revocation_feed import SECRET as FEED_SECRET
    from test_revocation_feed import follower_config, wait_ready

    da = os.path.join(workdir, "ws-feed-a")
    os.makedirs(da, exist_ok=True)
    a = Gateway(binary, da, service_config(da, ws_upstream.port, revocations_feed_token=FEED_SECRET), name="ws-feed-a")
    b = None
    try:
        a.wait_healthy()
        svc = Service(a, None)
        db = os.path.join(workdir, "ws-feed-b")
        os.makedirs(db, exist_ok=True)
        b = Gateway(binary, db, follower_config(ws_upstream.port, svc.issuer), name="ws-feed-b")
        b.wait_healthy()
        wait_ready(b)
        t = svc.tokens("alice")
        with connect(f"ws://{b.host}:{b.port}/ws/echo/replica", proxy=None,
                     additional_headers=[("Authorization", f"Bearer {t['access_token']}")]) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
            assert r.status_code in (200, 204), r.text
            code, reason, elapsed = close_code_within(ws, 10)
        assert code == 1008 and reason == "token_revoked", (code, reason)
        print(f"\n[ws] logout on replica A closed the tunnel on B after {elapsed:.2f} s")
        assert elapsed <= 3, elapsed
    finally:
        if b:
            b.stop()
        a.stop()


def test_tunnels_count_in_max_connections(binary, workdir, keys, ws_upstream):
    gw = start_gateway(binary, workdir, keys, "ws-maxconn",
                       lambda d: ws_config(d, keys, ws_upstream.port, max_connections=2))
    try:
        with open_ws(gw, "/ws/echo/max-1", token(keys)) as a, open_ws(gw, "/ws/echo/max-2", token(keys)) as b:
            for ws in (a, b):
                ws.send("x")
                assert ws.recv(timeout=5) == "x"
            with pytest.raises(Exception):  # the third connection is closed at once
                open_ws(gw, "/ws/echo/max-3", token(keys), open_timeout=5)
            assert not ws_upstream.handshakes_for("/ws/echo/max-3")
    finally:
        gw.stop()
