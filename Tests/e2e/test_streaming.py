"""256 MiB uploads and downloads stream through with bounded gateway memory (DESIGN §5 "memory per request is
bounded regardless of body size", §8 "memory flat while streaming").

This is a memory-flatness check, not a timing check: the only bound is peak VmRSS growth of the gateway process
(PORTCULLIS_E2E_RSS_MIB, default 64 MiB) while the transfer runs.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os

import pytest

import payload
from harness import RssSampler, rss_kib

SIZE = 256 * 1024 * 1024
RSS_LIMIT_KIB = int(os.environ.get("PORTCULLIS_E2E_RSS_MIB", "64")) * 1024


@pytest.fixture
def conn(env):
    c = http.client.HTTPConnection(env.gw.host, env.gw.port, timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="module", autouse=True)
def warm_up(gateway):
    """One small transfer each way first, so one-time allocations do not count as growth."""
    c = http.client.HTTPConnection(gateway.host, gateway.port, timeout=60)
    c.request("POST", "/public/upload", body=payload.make(4 << 20))
    c.getresponse().read()
    c.request("GET", "/public/download?bytes=4194304")
    c.getresponse().read()
    c.close()


def _auth(env):
    return {"Authorization": f"Bearer {env.keys.mint('ES256')}"}


def _check_rss(env, sampler, before):
    growth = sampler.peak_kib - before
    assert growth < RSS_LIMIT_KIB, \
        f"gateway RSS grew {growth // 1024} MiB (peak {sampler.peak_kib // 1024} MiB) during a 256 MiB transfer"


@pytest.mark.rss_bound
@pytest.mark.parametrize("mode", ["content-length", "chunked"])
def test_upload_256mib(env, conn, mode):
    """Upload 256 MiB (Content-Length or chunked) to /private/upload: the upstream receives every byte
    (length + sha256 match, exactly one request) and the gateway's RSS stays flat."""
    mark = env.mark()
    headers = _auth(env)
    if mode == "content-length":
        headers["Content-Length"] = str(SIZE)
    body = payload.chunks(SIZE, 1 << 20)  # without Content-Length, http.client sends an iterable chunked
    before = rss_kib(env.gw.pid)
    with RssSampler(env.gw.pid) as s:
        conn.request("POST", "/private/upload", body=body, headers=headers,
                     encode_chunked=(mode == "chunked"))
        resp = conn.getresponse()
        data = resp.read()
    assert resp.status == 200, data[:500]
    got = json.loads(data)
    assert got["length"] == SIZE
    assert got["sha256"] == payload.sha256_of(SIZE)
    req = env.one_forwarded(mark)
    assert env.up.log.wait_body(req["seq"])["complete"]
    _check_rss(env, s, before)


@pytest.mark.rss_bound
@pytest.mark.parametrize("mode", ["cl", "chunked"])
def test_download_256mib(env, conn, mode):
    """Download 256 MiB (upstream Content-Length or chunked): every byte arrives (sha256 matches) and the
    gateway's RSS stays flat (back-pressure towards a client that reads at its own pace)."""
    before = rss_kib(env.gw.pid)
    h = hashlib.sha256()
    n = 0
    with RssSampler(env.gw.pid) as s:
        conn.request("GET", f"/private/download?bytes={SIZE}&mode={mode}", headers=_auth(env))
        resp = conn.getresponse()
        assert resp.status == 200
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    assert n == SIZE
    assert h.hexdigest() == payload.sha256_of(SIZE)
    _check_rss(env, s, before)
