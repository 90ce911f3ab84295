"""TLS on the data listener and HTTP/2 in (DESIGN §11), with real clients: curl over TLS with ALPN and with prior
knowledge on cleartext, Python `ssl` and `h2` for what curl cannot do (many streams on one connection, raw frame
floods, GOAWAY), h2load for many streams at once. Certificates come from `openssl` in a temporary directory: a
private CA, a server certificate, a client certificate, a rotated server certificate and a stranger's CA."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.errors
import pytest

import payload
import tokens as tokens_mod
from configs import IDENTITY_HEADERS, REALM
from h2client import (CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE, RST_STREAM, SETTINGS,
                      H2Client, frame)
from harness import RSS_FACTOR, SANITIZER, SLOWDOWN, Gateway, RssSampler, free_port, header_values, rss_kib, tail

SUBJECT_HEADER = "X-Auth-Client-Cert-Subject"


# ------------------------------------------------------------------------------------------------------------------
# certificates

def _openssl(cwd: str, *args: str):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(cwd: str, name: str, subject: str, extensions: str, ca: str = "ca"):
    _openssl(cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject)
    with open(os.path.join(cwd, f"{name}.ext"), "w") as f:
        f.write(extensions)
    _openssl(cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


def _ca(cwd: str, name: str, subject: str):
    _openssl(cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", subject)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    server = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    client = "extendedKeyUsage=clientAuth\n"
    _ca(d, "ca", "/CN=portcullis-h2-test-ca")
    _leaf(d, "server", "/CN=server-one", server)
    _leaf(d, "rotated", "/CN=server-two", server)
    _leaf(d, "client", "/O=Portcullis Tests/CN=client-one", client)
    _ca(d, "stranger-ca", "/CN=stranger-ca")
    _leaf(d, "stranger", "/CN=client-one", client, ca="stranger-ca")
    return d


def _pem_to_der(path: str) -> bytes:
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def _client_context(pki: str, alpn=("h2", "http/1.1"), cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
    ctx.set_alpn_protocols(list(alpn))
    if cert:
        ctx.load_cert_chain(os.path.join(pki, f"{cert}.pem"), os.path.join(pki, f"{cert}.key"))
    return ctx


# ------------------------------------------------------------------------------------------------------------------
# gateways

def _config(directory: str, keys, app_port: int, tls: dict | None, **limits) -> dict:
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "limits": {"max_header_bytes": 16384, "header_timeout_ms": 10000, "idle_timeout_ms": 60000, **limits},
        "upstreams": {"app": {"url": f"http://127.0.0.1:{app_port}"}},
        "routes": [
            {"path_prefix": "/public", "upstream": "app", "auth": "none"},
            {"path_prefix": "/private", "upstream": "app", "scopes": ["read"]},
        ],
        "auth": {"realm": REALM, "audiences": [tokens_mod.AUD]},
        "issuers": keys.issuers_config(directory),
        "identity_headers": {**IDENTITY_HEADERS, "client_cert_subject": SUBJECT_HEADER},
        "log": {"level": "info", "format": "json", "access_log": True},
    }
    if tls is not None:
        config["tls"] = tls
    return config


def _tls_dir(pki: str, directory: str) -> str:
    """The gateway's own copies of the certificate files (rotation replaces them)."""
    d = os.path.join(directory, "tls")
    os.makedirs(d, exist_ok=True)
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(os.path.join(pki, name), os.path.join(d, name))
    return d


def _start(binary, directory, config, keys) -> Gateway:
    return Gateway.started(binary, directory, config, env=keys.env())


@pytest.fixture(scope="module")
def tls_gateway(binary, workdir, keys, upstream, pki):
    d = os.path.join(workdir, "h2-tls")
    os.makedirs(d, exist_ok=True)
    _tls_dir(pki, d)
    gw = _start(binary, d, _config(d, keys, upstream.port, {"cert_file": "tls/server.pem", "key_file": "tls/server.key"}),
                keys)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def mtls_gateway(binary, workdir, keys, upstream, pki):
    d = os.path.join(workdir, "h2-mtls")
    os.makedirs(d, exist_ok=True)
    _tls_dir(pki, d)
    tls = {"cert_file": "tls/server.pem", "key_file": "tls/server.key", "client_ca_file": "tls/ca.pem",
           "min_version": "1.3"}
    gw = _start(binary, d, _config(d, keys, upstream.port, tls), keys)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def plain_gateway(binary, workdir, keys, upstream):
    d = os.path.join(workdir, "h2-plain")
    os.makedirs(d, exist_ok=True)
    gw = _start(binary, d, _config(d, keys, upstream.port, None), keys)
    yield gw
    gw.stop()


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)


def _status_and_version(*args: str) -> tuple[str, str]:
    r = _curl("-o", "/dev/null", "-w", "%{http_code} %{http_version}", *args)
    assert r.returncode == 0, r.stderr
    code, version = r.stdout.split()
    return code, version


def _https(gw: Gateway, path: str) -> str:
    return f"https://127.0.0.1:{gw.port}{path}"


# ------------------------------------------------------------------------------------------------------------------
# ALPN, prior knowledge, one port for both

def test_http2_over_tls_by_alpn(tls_gateway, upstream, pki, keys):
    mark = upstream.log.mark()
    ca = os.path.join(pki, "ca.pem")
    assert _status_and_version("--http2", "--cacert", ca, _https(tls_gateway, "/public/echo?a=1")) == ("200", "2")
    assert _status_and_version("--http1.1", "--cacert", ca, _https(tls_gateway, "/public/echo?a=2")) == ("200", "1.1")
    token = keys.mint("ES256")
    assert _status_and_version("--http2", "--cacert", ca, "-H", f"Authorization: Bearer {token}",
                               _https(tls_gateway, "/private/echo")) == ("200", "2")
    seen = upstream.log.since(mark)
    assert [r["target"] for r in seen] == ["/public/echo?a=1", "/public/echo?a=2", "/private/echo"]
    # The upstream hop stays HTTP/1.1; the client's TLS shows in X-Forwarded-Proto.
    assert all(r["version"] == "HTTP/1.1" for r in seen)
    assert all(header_values(r, "X-Forwarded-Proto") == ["https"] for r in seen)
    assert header_values(seen[2], "X-Auth-Subject") == ["user-123"]


def test_http2_prior_knowledge_and_http1_on_one_port(plain_gateway, upstream):
    mark = upstream.log.mark()
    base = f"http://127.0.0.1:{plain_gateway.port}"
    assert _status_and_version("--http2-prior-knowledge", f"{base}/public/echo?v=2") == ("200", "2")
    assert _status_and_version("--http1.1", f"{base}/public/echo?v=1") == ("200", "1.1")
    # A head shorter than the preface is answered at once (the sniffer never waits for 24 bytes).
    with socket.create_connection(("127.0.0.1", plain_gateway.port), timeout=10) as s:
        s.sendall(b"GET /public/echo?v=s HTTP/1.1\r\nHost: a\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    seen = upstream.log.since(mark)
    assert [r["target"] for r in seen] == ["/public/echo?v=2", "/public/echo?v=1", "/public/echo?v=s"]
    assert all(header_values(r, "X-Forwarded-Proto") == ["http"] for r in seen)


def test_http2_errors_are_the_gateway_errors(plain_gateway, upstream, keys):
    mark = upstream.log.mark()
    with H2Client("127.0.0.1", plain_gateway.port) as c:
        r = c.get("/private/echo")
        assert r.status == 401
        body = json.loads(r.body)
        assert body["reason"] == "token_missing"
        assert r.header("www-authenticate") == f'Bearer realm="{REALM}"'
        assert r.header("connection") is None
        r = c.get("/nowhere")
        assert r.status == 404 and json.loads(r.body)["reason"] == "route_not_found"
        r = c.get("/public/../%2e%2e/x")
        assert r.status == 400
        # Identity headers from the client are dropped, the verified ones injected.
        token = keys.mint("ES256")
        r = c.get("/private/echo", headers=[("authorization", f"Bearer {token}"), ("x-auth-subject", "admin"),
                                           ("x-auth_scopes", "admin"), (SUBJECT_HEADER.lower(), "CN=root")])
        assert r.status == 200
    seen = upstream.log.since(mark)
    assert len(seen) == 1
    assert header_values(seen[0], "X-Auth-Subject") == ["user-123"]
    assert header_values(seen[0], SUBJECT_HEADER) == []
    assert not any(n.lower() == "x-auth_scopes" for n, _ in seen[0]["headers"])


def test_http2_request_bodies_with_and_without_length(plain_gateway, upstream):
    """The codec synthesizes `transfer-encoding: chunked` for a body without content-length (and keeps a client's
    content-length): the framing checks take both, and the upstream gets the body framed by libcurl."""
    mark = upstream.log.mark()
    data = payload.make(300_000)
    with H2Client("127.0.0.1", plain_gateway.port) as c:
        a = c.request("/public/upload", method="POST", body=data)
        b = c.request("/public/upload", method="POST", body=data, headers=[("content-length", str(len(data)))])
        e = c.request("/public/upload", method="POST")
        for sid in (a, b, e):
            assert c.response(sid).status == 200
    seen = upstream.log.since(mark)
    assert len(seen) == 3
    for r in seen:
        full = upstream.log.wait_body(r["seq"])
        assert full["body_len"] in (len(data), 0)
    lengths = sorted(upstream.log.wait_body(r["seq"])["body_len"] for r in seen)
    assert lengths == [0, len(data), len(data)]
    assert all(upstream.log.wait_body(r["seq"])["body_sha256"] == payload.sha256_of(len(data))
               for r in seen if upstream.log.wait_body(r["seq"])["body_len"])


# ------------------------------------------------------------------------------------------------------------------
# mTLS, versions

def test_mtls_requires_a_client_certificate(mtls_gateway, upstream, pki):
    ca = os.path.join(pki, "ca.pem")
    mark = upstream.log.mark()
    refused = _curl("-o", "/dev/null", "--cacert", ca, _https(mtls_gateway, "/public/echo"))
    assert refused.returncode != 0
    stranger = _curl("-o", "/dev/null", "--cacert", ca, "--cert", os.path.join(pki, "stranger.pem"), "--key",
                     os.path.join(pki, "stranger.key"), _https(mtls_gateway, "/public/echo"))
    assert stranger.returncode != 0
    assert upstream.log.since(mark) == []


@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
def test_mtls_subject_is_injected_and_spoofs_stripped(mtls_gateway, upstream, pki, version):
    mark = upstream.log.mark()
    r = _curl("-o", "/dev/null", "-w", "%{http_code}", version, "--cacert", os.path.join(pki, "ca.pem"), "--cert",
              os.path.join(pki, "client.pem"), "--key", os.path.join(pki, "client.key"),
              "-H", f"{SUBJECT_HEADER}: CN=admin", "-H", "X-Auth-Client_Cert.Subject: CN=admin",
              _https(mtls_gateway, "/public/echo"))
    assert r.returncode == 0 and r.stdout == "200", r.stderr
    (seen,) = upstream.log.since(mark)
    assert header_values(seen, SUBJECT_HEADER) == ["CN=client-one,O=Portcullis Tests"]
    assert not any(n.lower().replace("_", "-").replace(".", "-") == SUBJECT_HEADER.lower() and v == "CN=admin"
                   for n, v in seen["headers"])


def _handshake(port: int, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            return s.version()


def test_old_tls_versions_are_refused(tls_gateway, mtls_gateway):
    assert _handshake(tls_gateway.port, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for maximum in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError) as refused:
            _handshake(tls_gateway.port, ssl.TLSVersion.TLSv1, maximum)
        # The server's answer, not a client that could not even offer the version.
        assert "PROTOCOL_VERSION" in str(refused.value).upper() or "WRONG_VERSION" in str(refused.value).upper(), refused.value
    # min_version "1.3": a TLS 1.2 client is refused too.
    with pytest.raises(ssl.SSLError):
        _handshake(mtls_gateway.port, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)


# ------------------------------------------------------------------------------------------------------------------
# many streams, per-stream answers, floods

def test_100_concurrent_streams_each_authorised_alone(tls_gateway, upstream, keys, pki):
    good = keys.mint("ES256")
    bad = tokens_mod.tamper_signature(keys.mint("ES256"))
    mark = upstream.log.mark()
    with H2Client("127.0.0.1", tls_gateway.port, tls=_client_context(pki, alpn=("h2",))) as c:
        c.pump(lambda: 3 in c.remote_settings)  # the server's SETTINGS: MAX_CONCURRENT_STREAMS
        assert c.remote_settings[3] == 100
        ids = []
        for i in range(100):
            token = bad if i == 37 else good
            ids.append(c.request(f"/private/slow?ms=300&i={i}", headers=[("authorization", f"Bearer {token}")]))
        c.pump(lambda: all(c.streams[s].done for s in ids), timeout=60)
        statuses = [c.streams[s].status for s in ids]
        assert statuses[37] == 401
        assert json.loads(c.streams[ids[37]].body)["reason"] == "signature_invalid"
        assert statuses[:37] + statuses[38:] == [200] * 99
        assert c.goaway is None
    seen = upstream.log.since(mark)
    assert len(seen) == 99
    assert "i=37" not in {r["target"].split("&")[-1] for r in seen}


def test_h2load_many_streams(plain_gateway):
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is not installed")
    r = subprocess.run(["h2load", "-n", "2000", "-c", "2", "-m", "50", f"http://127.0.0.1:{plain_gateway.port}/public/echo"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2000 succeeded" in r.stdout and "status codes: 2000 2xx" in r.stdout, r.stdout


def test_oversized_header_block_gets_its_own_431(plain_gateway, upstream):
    mark = upstream.log.mark()
    with H2Client("127.0.0.1", plain_gateway.port) as c:
        c.pump(lambda: 6 in c.remote_settings)
        # Advertised: more than max_header_bytes, so the block is decoded and answered on its stream.
        assert c.remote_settings[6] > 16384
        r = c.get("/public/echo", headers=[("x-big", "a" * 20000)])
        assert r.status == 431
        assert json.loads(r.body)["reason"] == "header_too_large"
        r = c.get("/public/echo?after=431")
        assert r.status == 200
        assert c.goaway is None
    assert [r["target"] for r in upstream.log.since(mark)] == ["/public/echo?after=431"]


def _frames(data: bytes, with_flags: bool = False):
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + length > len(data):
            return
        body = data[i + 9:i + 9 + length]
        yield (data[i + 3], data[i + 4], body) if with_flags else (data[i + 3], body)
        i += 9 + length


def _read_until_closed(sock: socket.socket, timeout: float = 10.0, ack_pings: bool = False) -> bytes:
    """Everything the gateway sends until it closes the connection; the tests then assert it did close. With
    `ack_pings`, every PING is acknowledged, as a live client would."""
    sock.settimeout(timeout)
    data = b""
    acked = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            break
        if not chunk:
            return data
        data += chunk
        pings = [body for kind, flags, body in _frames(data, with_flags=True) if kind == PING and not flags & 1]
        if ack_pings:
            for body in pings[acked:]:
                sock.sendall(frame(PING, 1, 0, body))
            acked = len(pings)
    raise AssertionError(f"the gateway kept the connection open ({len(data)} bytes so far)")


def _goaway_code(data: bytes) -> int | None:
    for kind, body in _frames(data):
        if kind == GOAWAY:
            return int.from_bytes(body[4:8], "big")
    return None


def _still_serving(gw: Gateway):
    assert gw.alive()
    with H2Client("127.0.0.1", gw.port) as c:
        assert c.get("/public/echo?still=1").status == 200


def test_client_reset_cancels_the_upstream_transfer(plain_gateway, upstream):
    """RST_STREAM from the client closes the stream channel, and with it the gateway's upstream transfer: the
    upstream sees its connection go (else a rapid reset would be amplified upstream)."""
    mark = upstream.log.mark()
    with H2Client("127.0.0.1", plain_gateway.port) as c:
        sid = c.request("/public/hang?reset=1")
        deadline = time.monotonic() + 10
        while not upstream.log.since(mark):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        c.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        c.flush()
        (seen,) = upstream.log.since(mark)
        deadline = time.monotonic() + 10
        while not any(q.get("peer_closed") for q in upstream.log.since(mark)):
            assert time.monotonic() < deadline, "the upstream transfer outlived the client's reset"
            time.sleep(0.05)
        # The connection itself carries on.
        assert c.get("/public/echo?after=reset").status == 200


def test_stream_error_resets_only_its_stream(plain_gateway, upstream):
    """A stream error (here an upper-case header name, RFC 9113 §8.2.1) resets that stream alone: the connection and
    the next streams on it go on, and so do frames that arrive for a stream already finished (a WINDOW_UPDATE and a
    RST_STREAM after the answer). Before, every error swift-nio-http2 reported closed the whole connection."""
    def frames_by_stream(data: bytes) -> list[tuple[int, int]]:
        out, i = [], 0
        while i + 9 <= len(data):
            length = int.from_bytes(data[i:i + 3], "big")
            out.append((data[i + 3], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF))
            i += 9 + length
        return out

    def read_until(s: socket.socket, done, timeout: float = 10) -> bytes:
        data, deadline = b"", time.monotonic() + timeout
        s.settimeout(0.2)
        while not done(frames_by_stream(data)):
            assert time.monotonic() < deadline, frames_by_stream(data)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            assert chunk, f"the gateway closed the connection: {frames_by_stream(data)}"
            data += chunk
        return data

    mark = upstream.log.mark()
    good = b"\x82\x86\x04\x0c/public/echo\x41\x01a"  # GET, http, :path /public/echo, :authority a
    bad = b"\x82\x86\x04\x0c/public/echo\x41\x01a\x00\x03X-A\x01b"  # the same with a field named "X-A"
    window_update = 0x8
    with socket.create_connection(("127.0.0.1", plain_gateway.port), timeout=10) as s:
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, bad))
        read_until(s, lambda fs: (RST_STREAM, 1) in fs)
        s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 3, good))
        data = read_until(s, lambda fs: (HEADERS, 3) in fs and any(k == DATA and sid == 3 for k, sid in fs))
        s.sendall(frame(window_update, 0, 3, (1000).to_bytes(4, "big")) + frame(RST_STREAM, 0, 3, (8).to_bytes(4, "big"))
                  + frame(HEADERS, END_STREAM | END_HEADERS, 5, good))
        data += read_until(s, lambda fs: (HEADERS, 5) in fs)
        assert GOAWAY not in [kind for kind, _ in frames_by_stream(data)]
    # The reset stream never reached the upstream; the two good ones did.
    assert len(upstream.log.since(mark)) == 2
    _still_serving(plain_gateway)


def _rapid_reset(port: int, streams: int = 600, timeout: float = 15) -> int | None:
    """Opens and at once resets `streams` streams on one connection; returns the GOAWAY's error code (None: none)."""
    with H2Client("127.0.0.1", port) as c:
        c.pump(lambda: 3 in c.remote_settings)
        for _ in range(streams):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                                      (":path", "/public/slow?ms=2000&rr=1")], end_stream=True)
            c.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        try:
            c.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.pump(lambda: c.goaway is not None, timeout=timeout)
        return None if c.goaway is None else c.goaway.error_code


def _continuation_flood(port: int, frames: int = 2000, field_bytes: int = 4, timeout: float = 10) -> int | None:
    """One HEADERS frame followed by `frames` CONTINUATION frames (none ending the block), each carrying one literal
    field with a `field_bytes` value; returns the GOAWAY's error code (None: none)."""
    value = b"a" * field_bytes
    field = b"\x00\x03x-a" + bytes([0x7F, field_bytes - 127]) + value if field_bytes >= 127 else \
        b"\x00\x03x-a" + bytes([field_bytes]) + value  # literal field without indexing, new name
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        block = b"\x82\x86\x84\x41\x01a"  # :method GET, :scheme http, :path /, :authority a
        data = PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM, 1, block)
        data += b"".join(frame(CONTINUATION, 0, 1, field) for _ in range(frames))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _goaway_code(_read_until_closed(s, timeout))


def test_rapid_reset_flood_is_cut_off(plain_gateway, upstream):
    assert _rapid_reset(plain_gateway.port) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    _still_serving(plain_gateway)


def test_continuation_flood_is_cut_off(plain_gateway):
    assert _continuation_flood(plain_gateway.port) is not None
    _still_serving(plain_gateway)


@pytest.mark.rss_bound
def test_floods_keep_memory_bounded(plain_gateway, upstream):
    """Rounds of 40 flooding connections at once (30 rapid resets, 10 CONTINUATION floods whose frames carry 120-byte
    fields): every one is cut off with a GOAWAY, and what a round leaves behind does not add up. The first round
    warms the allocator; after it, RSS may not keep growing without bound (see the bound's comment). A memory
    bound, not a timing one: under ThreadSanitizer, whose gateway is several times slower, each flood gets
    SLOWDOWN times as long to be cut off, and there are 2 rounds, not 8 (the races TSan looks for are in every round;
    the 8 are for the allocator's drift, which the plain run measures)."""
    _still_serving(plain_gateway)
    pid = plain_gateway.pid
    before = rss_kib(pid)
    codes: list[int | None] = []
    lock = threading.Lock()
    rounds = 2 if SANITIZER == "thread" else 8

    def flood(kind: int):
        if kind % 4:
            code = _rapid_reset(plain_gateway.port, 400, timeout=15 * SLOWDOWN)
        else:
            code = _continuation_flood(plain_gateway.port, 3000, 120, timeout=10 * SLOWDOWN)
        with lock:
            codes.append(code)

    after: list[int] = []
    with RssSampler(pid) as sampler:
        for _ in range(rounds):
            threads = [threading.Thread(target=flood, args=(i,)) for i in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60 * SLOWDOWN)
            time.sleep(1)
            after.append(rss_kib(pid))
    assert len(codes) == 40 * rounds and all(code is not None for code in codes), codes
    mib = [round(kib / 1024, 1) for kib in [before, *after]]
    print(f"floods: RSS before and after each round {mib} MiB, peak {sampler.peak_kib / 1024:.1f} MiB")
    # RSS is the allocator's view: after the first round it drifts by up to about 30 MiB with the machine's load
    # (fragmentation), so this bound only catches a leak larger than the one fixed in HTTP2ConnectionGuard (7-10
    # MiB per round); that one was found with heaptrack, and HTTP2ConnectionGuardTests checks its fix object by
    # object (no stream channel of a cut-off connection stays allocated; 201 of 201 did without the fix).
    assert (after[-1] - after[0]) / 1024 < 64 * RSS_FACTOR, f"RSS kept growing with each round of floods: {mib} MiB"
    # The working set of 40 flooding connections at once (their streams, buffers and upstream transfers).
    assert (sampler.peak_kib - before) / 1024 < 96 * RSS_FACTOR, \
        f"peak RSS {sampler.peak_kib / 1024:.1f} MiB, from {mib[0]}"
    _still_serving(plain_gateway)


def test_partial_preface_and_garbage_do_not_hurt(plain_gateway):
    with socket.create_connection(("127.0.0.1", plain_gateway.port), timeout=10) as s:
        s.sendall(PREFACE[:10] + b"XXXX\r\n\r\n")  # not the preface after all: read as HTTP/1
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", plain_gateway.port), timeout=10) as s:
        s.sendall(PREFACE + b"\x00\x00\x00garbage-frames" * 10)
        assert _goaway_code(_read_until_closed(s)) is not None
    _still_serving(plain_gateway)


# ------------------------------------------------------------------------------------------------------------------
# certificate rotation, bad files, drain

def _served_certificate(port: int) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)


def _replace(src: str, dst: str):
    tmp = dst + ".new"
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def test_tls_clocks(binary, workdir, keys, upstream, pki):
    """A TLS handshake that never comes is closed after header_timeout_ms (the 408 clock cannot answer before a
    handshake); after the handshake a slow HTTP/1.1 head gets its 408 over TLS; HTTP/2 is not held to the header
    clock (its streams have no 408) and is answered normally, and closed once idle for idle_timeout_ms."""
    d = os.path.join(workdir, "h2-clocks")
    os.makedirs(d, exist_ok=True)
    _tls_dir(pki, d)
    config = _config(d, keys, upstream.port, {"cert_file": "tls/server.pem", "key_file": "tls/server.key"},
                     header_timeout_ms=500, idle_timeout_ms=1500, drain_seconds=1)
    gw = _start(binary, d, config, keys)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            started = time.monotonic()
            assert _read_until_closed(s, timeout=5) == b""
            assert time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
            with _client_context(pki, alpn=("http/1.1",)).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /public/echo HTTP/1.1\r\n")
                answer = s.recv(4096)
                assert answer.startswith(b"HTTP/1.1 408"), answer
        with H2Client("127.0.0.1", gw.port, tls=_client_context(pki, alpn=("h2",))) as c:
            time.sleep(1.0)  # longer than the header timeout
            assert c.get("/public/echo?late=1").status == 200
            # Without open streams for idle_timeout_ms: GOAWAY, then the connection closes — this client never
            # answers the PING after the GOAWAY, so only the gateway's own bound (drain_seconds) closes it.
            started = time.monotonic()
            c.pump(lambda: c.closed, timeout=10)
            assert c.goaway is not None and c.closed
            assert time.monotonic() - started < 6
    finally:
        gw.stop()


def test_unfinished_header_block_is_closed_by_the_idle_clock(binary, workdir, keys, upstream):
    """A client that stops in the middle of a header block (HEADERS without END_HEADERS, then nothing), or after
    its preface, holds no stream, so the idle clock runs: GOAWAY after idle_timeout_ms, closed within drain_seconds
    after it. The header clock does not apply to HTTP/2 (see test_tls_clocks); this is the bound such a connection
    has. Before the fix in `DataListenerPipeline.configureHTTP2` the idle clock only started once a stream had
    finished, and both connections were held for as long as the client liked."""
    d = os.path.join(workdir, "h2-unfinished")
    os.makedirs(d, exist_ok=True)
    gw = _start(binary, d, _config(d, keys, upstream.port, None, idle_timeout_ms=1500, drain_seconds=1), keys)
    try:
        block = b"\x82\x86\x84\x41\x01a"  # :method GET, :scheme http, :path /, :authority a
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as unfinished, \
                socket.create_connection(("127.0.0.1", gw.port), timeout=10) as preface_only:
            unfinished.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM, 1, block))
            preface_only.sendall(PREFACE + frame(SETTINGS, 0, 0))
            started = time.monotonic()
            for s in (unfinished, preface_only):
                answer = _read_until_closed(s, timeout=15)
                assert time.monotonic() - started < 10, "a connection outlived idle_timeout_ms + drain_seconds"
                assert _goaway_code(answer) is not None
        assert gw.alive()
    finally:
        gw.stop()


def test_certificate_rotation_keeps_a_long_download(binary, workdir, keys, upstream, pki):
    d = os.path.join(workdir, "h2-rotate")
    os.makedirs(d, exist_ok=True)
    tls_dir = _tls_dir(pki, d)
    gw = _start(binary, d, _config(d, keys, upstream.port, {"cert_file": "tls/server.pem", "key_file": "tls/server.key"}),
                keys)
    try:
        assert _served_certificate(gw.port) == _pem_to_der(os.path.join(pki, "server.pem"))
        total = 48 << 20
        with H2Client("127.0.0.1", gw.port, tls=_client_context(pki, alpn=("h2",))) as c:
            sid = c.request(f"/public/download?bytes={total}&mode=cl")
            c.pump(lambda: len(c.streams[sid].body) >= 1 << 20)
            _replace(os.path.join(pki, "rotated.pem"), os.path.join(tls_dir, "server.pem"))
            _replace(os.path.join(pki, "rotated.key"), os.path.join(tls_dir, "server.key"))
            deadline = time.monotonic() + 20
            while _served_certificate(gw.port) != _pem_to_der(os.path.join(pki, "rotated.pem")):
                assert time.monotonic() < deadline, tail(gw.err_path)
                time.sleep(0.2)
            # New connections get the new certificate; the open one carries on with its download.
            r = c.response(sid, timeout=120)
            assert r.status == 200 and r.reset is None
            assert len(r.body) == total
            import hashlib
            assert hashlib.sha256(r.body).hexdigest() == payload.sha256_of(total)
        # A broken certificate file is refused at reload: the running context keeps serving.
        with open(os.path.join(tls_dir, "server.pem"), "w") as f:
            f.write("not a certificate\n")
        deadline = time.monotonic() + 20
        while b"tls.cert_file" not in gw.logs():
            assert time.monotonic() < deadline, tail(gw.err_path)
            time.sleep(0.2)
        assert _served_certificate(gw.port) == _pem_to_der(os.path.join(pki, "rotated.pem"))
    finally:
        gw.stop()


@pytest.mark.parametrize("broken,path", [
    ({"cert_file": "missing.pem", "key_file": "tls/server.key"}, "tls.cert_file"),
    ({"cert_file": "tls/server.pem", "key_file": "tls/rotated.key"}, "tls.key_file"),
    ({"cert_file": "tls/server.pem", "key_file": "tls/server.key", "client_ca_file": "tls/server.key"},
     "tls.client_ca_file"),
])
def test_bad_tls_files_refuse_the_start(binary, workdir, keys, upstream, pki, broken, path):
    d = os.path.join(workdir, f"h2-bad-{path}")
    os.makedirs(d, exist_ok=True)
    tls_dir = _tls_dir(pki, d)
    shutil.copy(os.path.join(pki, "rotated.key"), os.path.join(tls_dir, "rotated.key"))
    gw = Gateway(binary, d, _config(d, keys, upstream.port, broken), env=keys.env())
    try:
        assert gw.proc.wait(timeout=30) == 1
        assert path in tail(gw.err_path) + tail(gw.out_path)
    finally:
        gw.stop()
    check = subprocess.run([binary, "check", "--config", gw.config_path], capture_output=True, text=True, timeout=30,
                           env={**os.environ, **keys.env()})
    assert check.returncode == 1 and path in check.stderr, check.stderr


def test_drain_sends_goaway_and_finishes_streams(binary, workdir, keys, upstream):
    """SIGTERM: GOAWAY (NO_ERROR) on an HTTP/2 connection, and its stream in flight still gets its whole answer.
    Raw frames, since the `h2` package treats the first GOAWAY as the end of the connection."""
    d = os.path.join(workdir, "h2-drain")
    os.makedirs(d, exist_ok=True)
    gw = _start(binary, d, _config(d, keys, upstream.port, None, drain_seconds=10), keys)
    try:
        mark = upstream.log.mark()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            # :method GET, :scheme http, :authority a, :path (literal, without indexing)
            path = b"/public/slow?ms=1500&drain=1"
            block = b"\x82\x86\x41\x01a\x04" + bytes([len(path)]) + path
            s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
            deadline = time.monotonic() + 10
            while not upstream.log.since(mark):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.kill(gw.pid, signal.SIGTERM)
            started = time.monotonic()
            answer = _read_until_closed(s, timeout=20, ack_pings=True)
            # Closed once the stream finished and the PING that confirms the GOAWAY was answered, not at the end of
            # drain_seconds.
            assert time.monotonic() - started < 8
        frames = list(_frames(answer))
        assert _goaway_code(answer) == 0
        # The stream's response: HEADERS with :status 200 (HPACK static index 8), then DATA ending the stream.
        headers = [i for i, (kind, body) in enumerate(frames) if kind == HEADERS]
        assert headers and frames[headers[0]][1][:1] == b"\x88", frames
        assert any(kind == 0 and b"drain=1" in body for kind, body in frames), frames
        assert gw.proc.wait(timeout=20) == 0
    finally:
        gw.stop()
