"""gRPC through the gateway (DESIGN §11) with real gRPC peers: a grpcio server as the upstream (generic handlers,
bytes in and out: grpc_upstream.py) over TLS with `http_version: "2"` (ALPN) and over cleartext with `"h2c"`, and
a grpcio client through the gateway over cleartext HTTP/2 (prior knowledge) and over TLS (the h2tls test PKI).
Unary, server-, client- and bidirectional streaming with metadata, trailers (custom trailing metadata, binary ones
too) and the identity headers seen by the server; the gateway's own refusals as grpcio sees them (UNAUTHENTICATED,
PERMISSION_DENIED, UNAVAILABLE, DEADLINE_EXCEEDED); `grpc-timeout` enforced by the gateway (a raw HTTP/2 client that
does not enforce it itself); the `http_version` gate on libcurl < 8.

The gateway refuses `"2"` and `"h2c"` upstreams on libcurl < 8 (Debian 12's 7.88); there the gateways here start
with the override (`PORTCULLIS_ALLOW_HTTP2_ON_OLD_LIBCURL=1`) and only the tests that forward nothing to an HTTP/2
upstream run (the refusals, the gate, HTTP/1.1 trailers): every forwarded call is skipped with the reason (7.88's
HTTP/2 mixes up multiplexed streams' trailers and fails h2c on reuse). CI installs 8.14 from bookworm-backports."""
from __future__ import annotations

import ctypes
import json
import os
import queue
import re
import struct
import subprocess
import sys
import time

import pytest

grpc = pytest.importorskip("grpc")

import tokens as tokens_mod  # noqa: E402
from configs import IDENTITY_HEADERS, REALM  # noqa: E402
from h2client import H2Client  # noqa: E402
from harness import Gateway, free_port, stop_process, tail  # noqa: E402
from test_http2_tls import _tls_dir, pki  # noqa: E402,F401  (the h2tls test PKI: CA, server certificate)

HERE = os.path.dirname(os.path.abspath(__file__))


def _libcurl_version() -> tuple[int, int, int]:
    """The libcurl the gateway loads (the system's libcurl.so.4)."""
    lib = ctypes.CDLL("libcurl.so.4")
    lib.curl_version.restype = ctypes.c_char_p
    m = re.match(rb"libcurl/(\d+)\.(\d+)\.(\d+)", lib.curl_version())
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


LIBCURL = _libcurl_version()
LIBCURL8 = LIBCURL >= (8, 0, 0)
# On 7.88 the TLS "2" upstream runs with the override; the gate itself is tested below.
OLD_LIBCURL_ENV = {} if LIBCURL8 else {"PORTCULLIS_ALLOW_HTTP2_ON_OLD_LIBCURL": "1"}

UPSTREAMS = ["tls", "h2c"]
CLIENTS = ["h2c", "tls"]


# ------------------------------------------------------------------------------------------------------------------
# processes

class GrpcUpstream:
    def __init__(self, workdir: str, cert: str, key: str):
        self.h2c_port = free_port()
        self.tls_port = free_port()
        self.err_path = os.path.join(workdir, "grpc-upstream.err")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "grpc_upstream.py"), "--h2c-port", str(self.h2c_port),
             "--tls-port", str(self.tls_port), "--tls-cert", cert, "--tls-key", key],
            stdout=subprocess.PIPE, stderr=self._err, cwd=HERE)
        line = self.proc.stdout.readline()
        if b"READY" not in line:
            stop_process(self.proc)
            raise RuntimeError(f"gRPC upstream did not start: {line!r} {tail(self.err_path)}")

    def stop(self):
        stop_process(self.proc, timeout=5)
        self._err.close()


@pytest.fixture(scope="module")
def grpc_upstream(workdir, pki):  # noqa: F811
    up = GrpcUpstream(workdir, os.path.join(pki, "server.pem"), os.path.join(pki, "server.key"))
    yield up
    up.stop()


def _config(directory: str, keys, pki: str, up: GrpcUpstream, app_port: int, down_port: int,  # noqa: F811
            tls: dict | None) -> dict:
    ca = os.path.join(pki, "ca.pem")
    upstreams = {
        "grpc_tls": {"url": f"https://127.0.0.1:{up.tls_port}", "http_version": "2", "tls": {"ca_file": ca}},
        "quick": {"url": f"https://127.0.0.1:{up.tls_port}", "http_version": "2", "tls": {"ca_file": ca},
                  "timeout_ms": 300},
        "h1": {"url": f"http://127.0.0.1:{app_port}"},
        "down": {"url": f"https://127.0.0.1:{down_port}", "http_version": "2", "connect_timeout_ms": 1000},
    }
    routes = [
        {"path_prefix": "/tls.Echo", "upstream": "grpc_tls"},
        {"path_prefix": "/scoped.Echo", "upstream": "grpc_tls", "scopes": ["admin"]},
        {"path_prefix": "/quick.Echo", "upstream": "quick", "auth": "none"},
        {"path_prefix": "/h1.Echo", "upstream": "h1", "auth": "none"},
        {"path_prefix": "/down.Echo", "upstream": "down", "auth": "none"},
    ]
    if LIBCURL8:
        upstreams["grpc_h2c"] = {"url": f"http://127.0.0.1:{up.h2c_port}", "http_version": "h2c"}
        routes.append({"path_prefix": "/h2c.Echo", "upstream": "grpc_h2c"})
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": upstreams,
        "routes": routes,
        "auth": {"realm": REALM, "audiences": [tokens_mod.AUD]},
        "issuers": keys.issuers_config(directory),
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "json", "access_log": True},
    }
    if tls is not None:
        config["tls"] = tls
    return config


def _start(binary, directory: str, config: dict, keys) -> Gateway:
    return Gateway.started(binary, directory, config, env={**keys.env(), **OLD_LIBCURL_ENV})


@pytest.fixture(scope="module")
def gateways(binary, workdir, keys, upstream, down_port, pki, grpc_upstream):  # noqa: F811
    started = {}
    try:
        d = os.path.join(workdir, "grpc-plain")
        os.makedirs(d, exist_ok=True)
        started["h2c"] = _start(binary, d, _config(d, keys, pki, grpc_upstream, upstream.port, down_port, None), keys)
        d = os.path.join(workdir, "grpc-tls")
        os.makedirs(d, exist_ok=True)
        _tls_dir(pki, d)
        tls = {"cert_file": "tls/server.pem", "key_file": "tls/server.key"}
        started["tls"] = _start(binary, d, _config(d, keys, pki, grpc_upstream, upstream.port, down_port, tls), keys)
        yield started
    finally:
        for gw in started.values():
            gw.stop()


@pytest.fixture(scope="module")
def channels(gateways, pki):  # noqa: F811
    with open(os.path.join(pki, "ca.pem"), "rb") as f:
        ca = f.read()
    options = [("grpc.enable_http_proxy", 0)]
    made = {
        "h2c": grpc.insecure_channel(f"127.0.0.1:{gateways['h2c'].port}", options=options),
        "tls": grpc.secure_channel(f"127.0.0.1:{gateways['tls'].port}", grpc.ssl_channel_credentials(root_certificates=ca),
                                   options=options),
    }
    yield made
    for channel in made.values():
        channel.close()


def _skip_old(upstream_kind: str):
    """Calls forwarded to an HTTP/2 upstream need libcurl 8: on 7.88 h2c fails on connection reuse, and over TLS
    (ALPN) multiplexed streams get another stream's trailers in their header callback (`grpc-status: 0` before
    their status line: a 502 upstream_invalid_response) and uploads fail with CURLE_SEND_FAIL_REWIND."""
    if not LIBCURL8:
        pytest.skip(f"HTTP/2 upstreams need libcurl >= 8.0 (running {'.'.join(map(str, LIBCURL))}: h2c fails on "
                    "reuse, multiplexed streams get each other's trailers); scripts/install-deps installs 8.14")


def _auth(keys, **claims) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {keys.mint('ES256', **claims)}")]


def _dict(metadata) -> dict:
    out: dict = {}
    for key, value in metadata or ():
        out.setdefault(key, []).append(value)
    return out


# ------------------------------------------------------------------------------------------------------------------
# the four kinds of call

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", UPSTREAMS)
def test_unary_with_metadata_trailers_and_identity(channels, keys, kind, client):
    _skip_old(kind)
    call = channels[client].unary_unary(f"/{kind}.Echo/Unary")
    metadata = _auth(keys) + [("x-custom", "v-1"), ("x-auth-subject", "spoofed"), ("x-custom-bin", b"\x00\xff")]
    response, rpc = call.with_call(b"\x01\x02hello", metadata=metadata, timeout=20)
    seen = json.loads(response)
    assert seen["request"] == "01026865" + "6c6c6f"
    got = seen["metadata"]
    assert got["x-custom"] == ["v-1"]
    assert got["x-custom-bin"] == ["00ff"]
    assert got["x-auth-subject"] == ["user-123"], "the verified identity replaces the client's spoof"
    assert got["x-auth-scopes"] == ["read"]
    assert "authorization" not in got, "the token is not forwarded (forward_token is off)"
    assert got["x-forwarded-proto"] == ["https" if client == "tls" else "http"]
    assert _dict(rpc.initial_metadata())["x-initial"] == ["i-1"]
    trailers = _dict(rpc.trailing_metadata())
    assert trailers["x-trailer"] == ["t-1"]
    assert trailers["x-trailer-bin"] == [b"\x00\x01\xfe"]
    assert rpc.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", UPSTREAMS)
def test_server_streaming(channels, keys, kind, client):
    _skip_old(kind)
    call = channels[client].unary_stream(f"/{kind}.Echo/ServerStream")
    responses = call(b"25", metadata=_auth(keys), timeout=20)
    assert [m for m in responses] == [f"msg-{i}".encode() for i in range(25)]
    assert _dict(responses.trailing_metadata())["x-trailer"] == ["t-1"]
    assert responses.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", UPSTREAMS)
def test_client_streaming(channels, keys, kind, client):
    _skip_old(kind)
    call = channels[client].stream_unary(f"/{kind}.Echo/ClientStream")
    parts = [f"part-{i}".encode() * 100 for i in range(40)]
    response, rpc = call.with_call(iter(parts), metadata=_auth(keys), timeout=20)
    assert response == b"|".join(parts)
    assert _dict(rpc.trailing_metadata())["x-trailer"] == ["t-1"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", UPSTREAMS)
def test_bidi_streaming_is_full_duplex(channels, keys, kind, client):
    """Each message is sent only after the answer to the one before came back: the request body is still open
    while response messages flow, through the gateway and through libcurl."""
    _skip_old(kind)
    answers: queue.Queue = queue.Queue()

    def requests():
        for i in range(8):
            yield f"ping-{i}".encode()
            answers.get(timeout=15)  # the echo of this message, before the next is sent

    call = channels[client].stream_stream(f"/{kind}.Echo/Bidi")
    responses = call(requests(), metadata=_auth(keys), timeout=30)
    got = []
    for message in responses:
        got.append(message)
        answers.put(message)
    assert got == [f"echo:ping-{i}".encode() for i in range(8)]
    assert _dict(responses.trailing_metadata())["x-trailer"] == ["t-1"]
    assert responses.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_large_messages_both_ways(channels, keys, kind):
    _skip_old(kind)
    big = channels["h2c"].unary_unary(f"/{kind}.Echo/Big")
    assert big(b"%d" % (3 << 20), metadata=_auth(keys), timeout=30) == bytes(i % 251 for i in range(3 << 20))
    upload = channels["h2c"].stream_unary(f"/{kind}.Echo/ClientStream")
    chunk = os.urandom(256 * 1024)
    assert upload(iter([chunk] * 8), metadata=_auth(keys), timeout=30) == b"|".join([chunk] * 8)


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_many_concurrent_calls_on_one_connection(channels, keys, kind):
    _skip_old(kind)
    call = channels["h2c"].unary_unary(f"/{kind}.Echo/Unary")
    metadata = _auth(keys)
    pending = [call.future(b"%d" % i, metadata=metadata, timeout=30) for i in range(60)]
    for i, f in enumerate(pending):
        assert json.loads(f.result())["request"] == (b"%d" % i).hex()


@pytest.mark.parametrize("client", CLIENTS)
def test_an_upstream_status_and_message_are_relayed(channels, keys, client):
    """A Trailers-Only answer (an immediate error) keeps its code and its percent-encoded message."""
    _skip_old("tls")
    with pytest.raises(grpc.RpcError) as e:
        channels[client].unary_unary("/tls.Echo/Fail")(b"", metadata=_auth(keys), timeout=20)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "nope: caf\u00e9 100%"


# ------------------------------------------------------------------------------------------------------------------
# the gateway's own answers, as grpcio sees them

@pytest.mark.parametrize("client", CLIENTS)
def test_no_token_is_unauthenticated(channels, client):
    with pytest.raises(grpc.RpcError) as e:
        channels[client].unary_unary("/tls.Echo/Unary")(b"x", timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() == "token_missing"
    assert _dict(e.value.initial_metadata())["www-authenticate"] == [f'Bearer realm="{REALM}"']


@pytest.mark.parametrize("client", CLIENTS)
def test_a_bad_token_is_unauthenticated(channels, keys, client):
    with pytest.raises(grpc.RpcError) as e:
        channels[client].unary_unary("/tls.Echo/Unary")(
            b"x", metadata=_auth(keys, exp=int(time.time()) - 3600), timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() == "token_expired"
    assert 'error="invalid_token"' in _dict(e.value.initial_metadata())["www-authenticate"][0]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_missing_scope_is_permission_denied(channels, keys, client):
    with pytest.raises(grpc.RpcError) as e:
        channels[client].unary_unary("/scoped.Echo/Unary")(b"x", metadata=_auth(keys), timeout=20)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "insufficient_scope"
    # With the scope, the same call goes through.
    _skip_old("tls")
    response = channels[client].unary_unary("/scoped.Echo/Unary")(b"x", metadata=_auth(keys, scope="read admin"),
                                                                    timeout=20)
    assert json.loads(response)["metadata"]["x-auth-scopes"] == ["read admin"]


@pytest.mark.parametrize("client", CLIENTS)
def test_an_upstream_that_is_down_is_unavailable(channels, client):
    with pytest.raises(grpc.RpcError) as e:
        channels[client].unary_unary("/down.Echo/Unary")(b"x", timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert e.value.details() == "upstream_unavailable"


@pytest.mark.parametrize("client", CLIENTS)
def test_an_http1_upstream_is_unavailable_with_a_reason(channels, upstream, client):
    mark = upstream.log.mark()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        channels[client].stream_stream("/h1.Echo/Bidi")(iter([b"a", b"b"]), timeout=20).next()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert e.value.details() == "upstream_not_http2"
    assert time.monotonic() - started < 5, "answered at once, not after a hang"
    assert upstream.log.since(mark) == [], "nothing was sent to the HTTP/1.1 upstream"


def test_the_clients_deadline_is_deadline_exceeded(channels, keys):
    _skip_old("tls")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        channels["h2c"].unary_unary("/tls.Echo/Slow")(b"5000", metadata=_auth(keys), timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4


def test_the_route_timeout_is_deadline_exceeded(channels):
    """The upstream's timeout_ms (300 ms) is shorter than the client's deadline (20 s): the gateway's own 504 is
    status 4 with the reason upstream_timeout."""
    _skip_old("tls")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        channels["h2c"].unary_unary("/quick.Echo/Slow")(b"5000", timeout=20)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert e.value.details() == "upstream_timeout"
    assert time.monotonic() - started < 4


def _grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


@pytest.mark.parametrize("timeout_header,bound", [("400m", 3.0), ("1S", 4.0)])
def test_grpc_timeout_is_enforced_by_the_gateway(gateways, keys, timeout_header, bound):
    """A raw HTTP/2 client that sends `grpc-timeout` but never enforces it: the gateway ends the call with
    grpc-status 4 (trailers after a 200 head) once the deadline passed, and the upstream call is cancelled."""
    _skip_old("tls")
    gw = gateways["h2c"]
    with H2Client("127.0.0.1", gw.port) as c:
        started = time.monotonic()
        sid = c.request("/tls.Echo/Slow", method="POST", headers=[
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", timeout_header),
            ("authorization", f"Bearer {keys.mint('ES256')}")], body=_grpc_frame(b"10000"))
        s = c.response(sid, timeout=15)
        elapsed = time.monotonic() - started
    assert s.status == 200
    assert s.header("content-type") == "application/grpc"
    assert dict(s.trailers).get("grpc-status") == "4"
    assert dict(s.trailers).get("grpc-message") == "deadline_exceeded"
    assert elapsed < bound


def test_grpc_web_is_ordinary_http(gateways):
    """`application/grpc-web` is not gRPC: a refusal is the usual JSON 401."""
    with H2Client("127.0.0.1", gateways["h2c"].port) as c:
        s = c.response(c.request("/tls.Echo/Unary", method="POST", headers=[
            ("content-type", "application/grpc-web+proto")], body=b"\x00\x00\x00\x00\x00"))
    assert s.status == 401
    assert s.header("content-type") == "application/json"
    assert json.loads(bytes(s.body))["reason"] == "token_missing"


def test_a_grpc_refusal_on_http1_has_chunked_trailers(gateways):
    """Over HTTP/1.1 the gRPC-form answer is chunked so that its trailers go out."""
    import socket
    with socket.create_connection(("127.0.0.1", gateways["h2c"].port), timeout=10) as s:
        s.sendall(b"POST /tls.Echo/Unary HTTP/1.1\r\nHost: a\r\ncontent-type: application/grpc\r\nte: trailers\r\n"
                  b"content-length: 5\r\nconnection: close\r\n\r\n\x00\x00\x00\x00\x00")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"grpc-status: 16" in rest
    assert b"grpc-message: token_missing" in rest


# ------------------------------------------------------------------------------------------------------------------
# the libcurl gate

def test_http2_upstreams_and_the_libcurl_version(binary, workdir, keys, pki, grpc_upstream, upstream, down_port):  # noqa: F811
    """The gateway logs the libcurl it runs with; on libcurl < 8 a "2" or "h2c" upstream refuses `check` and the start,
    naming upstreams.<name>.http_version (unless PORTCULLIS_ALLOW_HTTP2_ON_OLD_LIBCURL=1); on 8.x it is accepted."""
    d = os.path.join(workdir, "grpc-gate")
    os.makedirs(d, exist_ok=True)
    config = _config(d, keys, pki, grpc_upstream, upstream.port, down_port, None)
    config["upstreams"]["clear"] = {"url": f"http://127.0.0.1:{grpc_upstream.h2c_port}", "http_version": "h2c"}
    path = os.path.join(d, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_ALLOW_HTTP2_ON_OLD_LIBCURL"}
    env.update(keys.env())
    check = subprocess.run([binary, "check", "--config", path], capture_output=True, text=True, env=env, timeout=60)
    serve = subprocess.run([binary, "serve", "--config", path], capture_output=True, text=True, env=env, timeout=60) \
        if not LIBCURL8 else None
    if LIBCURL8:
        assert check.returncode == 0, check.stderr
        gw = Gateway(binary, d, config, env=env)
        try:
            gw.wait_healthy()
            logs = gw.logs().decode()
        finally:
            gw.stop()
        assert "libcurl 8." in logs
    else:
        assert check.returncode == 1
        for name in ("grpc_tls", "clear"):
            assert f"upstreams.{name}.http_version" in check.stderr
        assert "needs libcurl 8.0 or newer" in check.stderr
        assert serve.returncode != 0
        assert "upstreams.clear.http_version" in serve.stderr + serve.stdout
        assert "libcurl 7.88" in serve.stderr + serve.stdout


# ------------------------------------------------------------------------------------------------------------------
# trailers of plain HTTP

def test_http1_upstream_trailers_reach_both_kinds_of_client(gateways):
    """An HTTP/1.1 upstream's chunked trailers are relayed: as chunked trailers to an HTTP/1.1 client, as a trailing
    HEADERS frame to an HTTP/2 client; a framing field among them is dropped."""
    import socket
    gw = gateways["h2c"]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /h1.Echo/trailers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest.endswith(b"0\r\nX-Trailer: t-1\r\nX-Other: o-1\r\n\r\n"), rest
    with H2Client("127.0.0.1", gw.port) as c:
        st = c.get("/h1.Echo/trailers")
    assert st.status == 200 and bytes(st.body) == b"abc"
    assert st.trailers == [("x-trailer", "t-1"), ("x-other", "o-1")]
