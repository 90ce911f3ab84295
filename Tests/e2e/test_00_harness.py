"""Self-tests of the harness itself (no gateway needed): the recording upstream, the raw client, payloads and
the minted tokens. If these fail, no gateway result can be trusted."""
from __future__ import annotations

import base64
import hashlib
import json
import socket

import jwt
import pytest

import payload
import tokens as T
from harness import ConnectionClosed, RawClient, header_values, raw_head


@pytest.fixture
def up(upstream):
    return upstream


def client(up, timeout=10.0):
    return RawClient("127.0.0.1", up.port, timeout=timeout)


def test_upstream_records_raw_headers_in_order(up):
    mark = up.log.mark()
    with client(up) as c:
        r = c.request("GET", "/a/echo?q=%2F..", [("X_Auth_Subject", "a"), ("x-auth-subject", "b"),
                                                 ("X.Auth.Subject", "c"), ("X-Dup", "1"), ("X-Dup", "2")])
    assert r.status == 200
    body = r.json()
    assert body["target"] == "/a/echo?q=%2F.."
    (req,) = up.log.since(mark)
    assert req["request_line"] == "GET /a/echo?q=%2F.. HTTP/1.1"
    assert [n for n, _ in req["headers"]] == ["Host", "X_Auth_Subject", "x-auth-subject", "X.Auth.Subject",
                                             "X-Dup", "X-Dup"]
    assert header_values(req, "x-dup") == ["1", "2"]
    assert raw_head(req).startswith(b"GET /a/echo?q=%2F.. HTTP/1.1\r\nHost: gateway.test\r\nX_Auth_Subject: a\r\n")
    assert r.header("X-Upstream-Seq") == str(req["seq"])


def test_upstream_keep_alive_head_204_304(up):
    mark = up.log.mark()
    with client(up) as c:
        assert c.request("HEAD", "/echo").body == b""
        assert c.request("GET", "/x/status/204").status == 204
        r = c.request("GET", "/x/status/304")
        assert r.status == 304 and r.header("ETag") == '"e2e-etag"'
        assert c.request("GET", "/x/status/404").body == b"status 404\n"
        assert c.request("GET", "/echo", [("Connection", "close")]).status == 200
        assert c.closed_by_peer(5)
    reqs = up.log.since(mark)
    assert len(reqs) == 5 and len({q["conn"] for q in reqs}) == 1
    assert [q["conn_req"] for q in reqs] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("chunked", [False, True])
def test_upstream_upload_hash(up, chunked):
    size = 3 * 1024 * 1024 + 7
    data = payload.make(size)
    mark = up.log.mark()
    with client(up) as c:
        if chunked:
            c.send(b"POST /u/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in payload.chunks(size, 100_000):
                c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            c.send(b"0\r\nX-Trailer: t\r\n\r\n")
            r = c.read_response()
        else:
            r = c.request("POST", "/u/upload", body=data)
    assert r.json()["length"] == size
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest() == payload.sha256_of(size)
    (req,) = up.log.since(mark)
    done = up.log.wait_body(req["seq"])
    assert done["complete"] and done["body_len"] == size and done["chunked"] == chunked
    if chunked:
        assert done["trailers"] == ["X-Trailer: t"]


def test_upstream_small_body_kept(up):
    mark = up.log.mark()
    with client(up) as c:
        c.request("POST", "/echo", body=b"hello\x00world")
    (req,) = up.log.since(mark)
    assert base64.b64decode(up.log.wait_body(req["seq"])["body_b64"]) == b"hello\x00world"


@pytest.mark.parametrize("mode", ["cl", "chunked"])
def test_upstream_download(up, mode):
    size = 5 * 1024 * 1024 + 3
    with client(up) as c:
        r = c.request("GET", f"/d/download?bytes={size}&mode={mode}")
    assert len(r.body) == size and hashlib.sha256(r.body).hexdigest() == payload.sha256_of(size)
    assert (r.header("Transfer-Encoding") == "chunked") == (mode == "chunked")


def test_upstream_hang_records_and_never_answers(up):
    mark = up.log.mark()
    with client(up, timeout=0.5) as c:
        c.send(b"GET /x/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(socket.timeout):
            c.read_response()
    assert [q["target"] for q in up.log.since(mark)] == ["/x/hang"]


def test_upstream_stall_and_reset_truncate(up):
    with client(up, timeout=0.5) as c:
        c.send(b"GET /x/stall-mid-body?half=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(socket.timeout):
            c.read_response()
        assert len(c.buf) >= 100
    with client(up) as c:
        c.send(b"GET /x/reset-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises((ConnectionClosed, ConnectionError)):
            c.read_response()


def test_unix_upstream(unix_upstream):
    mark = unix_upstream.log.mark()
    with RawClient("", 0, unix=unix_upstream.unix) as c:
        r = c.request("GET", "/unix/echo")
    assert r.status == 200 and r.json()["target"] == "/unix/echo"
    assert [q["target"] for q in unix_upstream.log.since(mark)] == ["/unix/echo"]


@pytest.mark.parametrize("alg", T.ALL_ALGORITHMS)
def test_tokens_verify_with_the_configured_key_material(keys, alg):
    """What the gateway is configured with (jwks.json, secrets, the HS384 file) verifies what we mint."""
    token = keys.mint(alg)
    header, _ = T.decode_unverified(token)
    assert header["typ"] == "at+jwt" and header["alg"] == alg
    if alg in T.HMAC:
        key = keys.hmac[alg]
        if alg == "HS384":
            key = open(keys.hs384_path, "rb").read()
    else:
        jwks = json.load(open(keys.jwks_path))
        (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
        assert jwk["alg"] == alg and jwk["use"] == "sig"
        key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, key, algorithms=[alg], audience=T.AUD, issuer=keys.issuer_for(alg))
    assert claims["sub"] == "user-123"


def test_pem_issuer_token_verifies(keys):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    pub = load_pem_public_key(open(keys.pem_path, "rb").read())
    claims = jwt.decode(keys.mint_pem_issuer(), pub, algorithms=["ES256"], audience=T.AUD_PARTNER)
    assert claims["iss"] == T.ISS_PEM


def test_negative_token_builders_are_what_they_claim(keys):
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(T.tamper_signature(keys.mint("ES256")), keys.private["ES256"].public_key(),
                   algorithms=["ES256"], audience=T.AUD)
    assert "typ" not in T.decode_unverified(keys.mint("ES256", header={"typ": None}))[0]
    assert "exp" not in T.decode_unverified(keys.mint("ES256", exp=T.DROP))[1]
