"""Remote key sets end to end (GitHub issue 4; DESIGN §4 issuers `jwks_uri` / `discovery`, §7 `/readyz`;
security.md W-jwks-down-cold, W-jwks-500-warm, W-kid-storm, W-jwks-huge, W-jwks-slow, W-jwks-redirect, W-rotation,
K-kid-unknown, K-wrong-issuer-same-kid, S-rsa-weak1024, S-ed-small-order-key).

Every test runs its own gateway against key-set servers it controls (`jwks_server.py`: rotate keys, go down and come
back on the same port, count fetches, set Cache-Control). Tokens are minted with PyJWT, an implementation independent
of the gateway's. Timing assertions are bounds with slack, never exact."""
from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import tokens as T
from configs import IDENTITY_HEADERS
from harness import assert_gateway_error, free_port, header_values, unique_id
from jwks_server import JWKSServer


# ------------------------------------------------------------------------------------------------------------------
# keys and tokens

class Key:
    """A signing key of the test's identity provider, published as a JWK."""

    def __init__(self, alg: str, kid: str | None = None, private=None):
        self.alg = alg
        self.kid = kid or f"{alg.lower()}-{unique_id()}"
        self.private = private or T._new_private(alg)

    def jwk(self, **overrides) -> dict:
        j = T._public_jwk(self.alg, self.private.public_key())
        j.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        for k, v in overrides.items():
            if v is None:
                j.pop(k, None)
            else:
                j[k] = v
        return j

    def mint(self, iss: str, aud: str = T.AUD, typ: str = "at+jwt", kid: str | None = None, **claims) -> str:
        payload = T.KeySet.claims(iss=iss, aud=aud, **claims)
        token = jwt.encode(payload, self.private, algorithm=self.alg,
                           headers={"typ": typ, "kid": kid or self.kid})
        T.MINTED.append(token)
        return token


def jwks(*keys: Key, extra: list[dict] = ()) -> dict:
    return {"keys": [k.jwk() for k in keys] + list(extra)}


# ------------------------------------------------------------------------------------------------------------------
# gateway helpers

def gateway_config(upstream_port: int, issuers: list[dict]) -> dict:
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "routes": [{"path_prefix": "/public", "upstream": "app", "auth": "none"},
                   {"path_prefix": "/private", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": [T.AUD]},
        "issuers": issuers,
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "json", "access_log": False},
    }


def remote_issuer(server: JWKSServer, **settings) -> dict:
    """An issuer entry for `server`'s key set, with short test timings unless overridden."""
    entry = {"issuer": server.state["issuer"], "jwks_uri": server.jwks_url,
             "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
             "jwks_refetch_cooldown_seconds": 1, "jwks_fetch_timeout_ms": 2000}
    entry.update(settings)
    return entry


def readyz(gw) -> tuple[int, dict]:
    url = f"http://{gw.admin[0]}:{gw.admin[1]}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(gw, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    status, body = readyz(gw)
    while status != 200:
        assert time.monotonic() < deadline, f"gateway not ready within {timeout}s: {status} {body}"
        time.sleep(0.05)
        status, body = readyz(gw)
    assert body == {"status": "ready"}


def get(gw, token: str | None, path: str = "/private/remote"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(gw.url(path), headers=headers, timeout=30)


def assert_ok(gw, token: str, subject: str = "user-123"):
    r = get(gw, token)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    return r


def log_lines(gw) -> list[dict]:
    out = []
    for line in gw.logs().decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def wait_for_log(gw, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in log_lines(gw):
            if predicate(line.get("msg", "")):
                return line
        assert time.monotonic() < deadline, f"no matching log line within {timeout}s:\n" + \
            "\n".join(l.get("msg", "") for l in log_lines(gw)[-15:])
        time.sleep(0.05)


@pytest.fixture
def idp(workdir):
    """Factory for key-set servers (stopped at the end of the test). `issuer` defaults to the server's base URL."""
    started: list[JWKSServer] = []

    def make(name: str, start: bool = True, tls=None, issuer_path: str = "", **state) -> JWKSServer:
        port = free_port()
        scheme = "https" if tls else "http"
        state.setdefault("issuer", f"{scheme}://127.0.0.1:{port}{issuer_path}")
        server = JWKSServer(os.path.join(workdir, "idp"), f"{name}-{unique_id()}", port, tls=tls, **state)
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for s in started:
        s.stop()


# ------------------------------------------------------------------------------------------------------------------
# rotation

def test_rotation_without_restart(make_gateway, upstream, idp):
    """W-rotation: tokens signed with the first key pass; the identity provider rotates to a new key (the old one
    removed) and tokens signed with it pass without a restart (the unknown kid triggers one refetch, the request
    waits for it); tokens of the removed key are refused from then on, also ones verified (and cached) before;
    one log line names the added and removed kids."""
    k1, k2 = Key("ES256", "k1"), Key("ES256", "k2")
    server = idp("rotate", jwks=jwks(k1))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server)]), "remote-rotate")
    wait_ready(gw)
    old = k1.mint(server.state["issuer"])
    assert_ok(gw, old)
    assert_ok(gw, old)  # cached

    server.publish(jwks(k2))
    time.sleep(1.1)  # past the refetch cooldown counted from the prefetch
    before = server.fetches()
    r = assert_ok(gw, k2.mint(server.state["issuer"]))
    assert r.json()  # the echo upstream answered
    assert server.fetches() == before + 1, "exactly one refetch for the new kid"

    r = get(gw, old)
    assert_gateway_error(r, 401, "key_unknown", "invalid_token")
    line = wait_for_log(gw, lambda m: "key set changed" in m)
    assert '"k2"' in line["msg"] and '"k1"' in line["msg"] and "added" in line["msg"] and "removed" in line["msg"]
    # key material never reaches the log
    assert k2.jwk()["x"] not in gw.logs().decode()


def test_background_refresh_honours_cache_control_within_bounds(make_gateway, upstream, idp):
    """The key set is refreshed in the background at the response's max-age clamped to
    [jwks_min_refresh_seconds, jwks_max_refresh_seconds]: no-cache → every min (1 s), max-age=3600 → every max (2 s).
    A key added by the identity provider is picked up without any token asking for it."""
    k1, k2 = Key("ES256"), Key("RS256")
    server = idp("refresh", jwks=jwks(k1), cache_control="no-cache")
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(
        server, jwks_min_refresh_seconds=1, jwks_max_refresh_seconds=2)]), "remote-refresh")
    wait_ready(gw)
    time.sleep(3.3)
    times = server.fetch_times()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 3, times
    assert all(0.8 <= g <= 1.8 for g in gaps), f"no-cache should refresh every 1 s: {gaps}"

    server.publish(jwks(k1, k2), cache_control="public, max-age=3600")
    wait_for_log(gw, lambda m: "key set changed" in m and k2.kid in m, timeout=5)
    start = len(server.fetch_times())
    time.sleep(4.5)
    times = server.fetch_times()[start - 1:]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 1 <= len(gaps) <= 3, times
    assert all(1.7 <= g <= 2.8 for g in gaps), f"max-age=3600 should be clamped to 2 s: {gaps}"
    assert_ok(gw, k2.mint(server.state["issuer"]))


def test_random_kid_flood_costs_bounded_fetches(make_gateway, upstream, idp):
    """W-kid-storm, K-kid-unknown: 400 tokens with random kids over about 3 s cost at most one key-set fetch per
    cooldown (2 s) — single flight while a fetch runs, refused at once within the cooldown — every one is 401
    key_unknown and nothing reaches the upstream; valid tokens keep passing meanwhile."""
    good = Key("ES256")
    attacker = Key("ES256")
    server = idp("flood", jwks=jwks(good))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server, jwks_refetch_cooldown_seconds=2)]),
                      "remote-flood")
    wait_ready(gw)
    iss = server.state["issuer"]
    before = server.fetches()
    mark = upstream.log.mark()
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def attack(i: int):
        tok = attacker.mint(iss, kid=f"random-{secrets.token_hex(8)}")
        with requests.Session() as s:
            r = s.get(gw.url(f"/private/flood/{i}"), headers={"Authorization": f"Bearer {tok}"}, timeout=30)
        with lock:
            results.append((r.status_code, r.json().get("reason")))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for i in range(400):
            futures.append(pool.submit(attack, i))
            if i % 50 == 49:
                time.sleep(0.4)
        for f in futures:
            f.result()
    elapsed = time.monotonic() - started
    fetches = server.fetches() - before
    assert all(r == (401, "key_unknown") for r in results), set(results)
    assert 1 <= fetches <= int(elapsed / 2) + 2, f"{fetches} fetches in {elapsed:.1f}s with a 2 s cooldown"
    assert not [q for q in upstream.log.since(mark) if "/flood/" in (q["target"] or "")]
    assert_ok(gw, good.mint(iss))


# ------------------------------------------------------------------------------------------------------------------
# the identity provider down

def test_known_keys_keep_working_while_the_jwks_server_is_down(make_gateway, upstream, idp):
    """W-jwks-500-warm (stale-while-error): with the key-set server down, tokens of known keys still pass (also new,
    uncached ones), an unknown kid is refused after the one failed refetch, and the failures are logged."""
    k1 = Key("EdDSA")
    server = idp("down", jwks=jwks(k1))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server)]), "remote-down")
    wait_ready(gw)
    iss = server.state["issuer"]
    assert_ok(gw, k1.mint(iss))
    server.stop()
    time.sleep(1.1)
    t0 = time.monotonic()
    assert_gateway_error(get(gw, Key("EdDSA").mint(iss)), 401, "key_unknown")
    assert time.monotonic() - t0 < 5, "the waiting request is bounded by the fetch timeout"
    for _ in range(3):
        assert_ok(gw, k1.mint(iss))  # fresh tokens: not from the verified-token cache
    wait_for_log(gw, lambda m: "fetching the key set failed (unreachable)" in m and "keeping its 1 key" in m)
    assert readyz(gw)[0] == 200, "a key set loaded once stays ready"


def test_stale_keys_are_dropped_after_the_maximum_staleness(make_gateway, upstream, idp):
    """W-jwks-500-warm, second half: keys not refreshed for jwks_max_stale_seconds past their freshness are dropped
    (fail closed, logged as an error); when the server is back the keys return without a restart."""
    k1 = Key("ES256")
    server = idp("stale", jwks=jwks(k1))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(
        server, jwks_min_refresh_seconds=1, jwks_max_refresh_seconds=1, jwks_max_stale_seconds=1,
        jwks_refetch_cooldown_seconds=60)]), "remote-stale")
    wait_ready(gw)
    iss = server.state["issuer"]
    token = k1.mint(iss)
    assert_ok(gw, token)
    server.stop()
    wait_for_log(gw, lambda m: "keys are dropped" in m, timeout=10)
    assert_gateway_error(get(gw, token), 401, "key_unknown")  # also the cached token
    server.start()
    deadline = time.monotonic() + 15
    while get(gw, token).status_code != 200:
        assert time.monotonic() < deadline, "keys did not come back after the server returned"
        time.sleep(0.2)


def test_started_while_the_jwks_server_is_down(make_gateway, upstream, idp):
    """W-jwks-down-cold: listeners open at once and /healthz answers, /readyz is 503 naming the key set, tokens
    of that issuer are refused (never a default key); once the server comes up the key set loads, /readyz turns
    200 and the tokens pass."""
    k1 = Key("PS256")
    server = idp("cold", start=False, jwks=jwks(k1))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server, jwks_fetch_timeout_ms=1000)]),
                      "remote-cold")
    iss = server.state["issuer"]
    status, body = readyz(gw)
    assert status == 503 and body == {"status": "not_ready", "not_ready": [f"keys:{iss}"]}, body
    token = k1.mint(iss)
    assert_gateway_error(get(gw, token), 401, "key_unknown")
    server.start()
    wait_ready(gw, timeout=20)
    assert_ok(gw, token)


# ------------------------------------------------------------------------------------------------------------------
# discovery

def test_discovery_from_the_issuer_url(make_gateway, upstream, idp):
    """`discovery: true`: the key set is found from the issuer URL, via OpenID Connect discovery
    (<issuer>/.well-known/openid-configuration, issuer with a path) and via RFC 8414 when only
    /.well-known/oauth-authorization-server<path> exists. A metadata document naming another issuer is refused
    (the gateway stays not ready and logs why)."""
    k_oidc, k_oauth, k_bad = Key("ES256"), Key("RS256"), Key("ES256")
    oidc = idp("oidc", issuer_path="/realms/demo", jwks=jwks(k_oidc))
    oauth = idp("oauth", issuer_path="/tenant/a", jwks=jwks(k_oauth), openid=False, oauth=True)
    liar = idp("liar", jwks=jwks(k_bad))
    liar.update(meta_issuer="https://someone-else.test")
    issuers = [{"issuer": s.state["issuer"], "discovery": True, "algorithms": ["ES256", "RS256"],
                "jwks_refetch_cooldown_seconds": 1} for s in (oidc, oauth, liar)]
    gw = make_gateway(gateway_config(upstream.port, issuers), "remote-discovery")
    wait_for_log(gw, lambda m: "discovery failed" in m and "another issuer" in m)
    deadline = time.monotonic() + 10
    while True:
        status, body = readyz(gw)
        if body.get("not_ready") == [f"keys:{liar.state['issuer']}"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 503 and body["not_ready"] == [f"keys:{liar.state['issuer']}"], body
    assert_ok(gw, k_oidc.mint(oidc.state["issuer"]))
    assert_ok(gw, k_oauth.mint(oauth.state["issuer"]))
    assert oidc.fetches("/realms/demo/.well-known/openid-configuration") >= 1
    assert oauth.fetches("/.well-known/oauth-authorization-server/tenant/a") >= 1
    assert liar.fetches() == 0, "the key set of a mismatching issuer is never fetched"
    assert_gateway_error(get(gw, k_bad.mint(liar.state["issuer"])), 401, "key_unknown")


# ------------------------------------------------------------------------------------------------------------------
# independent library, several issuers

def test_pyjwt_tokens_for_every_key_type_in_one_jwks(make_gateway, upstream, idp):
    """Tokens minted by PyJWT for RS256, PS256, ES256 and EdDSA keys published in one remote JWKS all pass, with the
    subject injected; each key is pinned to its own algorithm (an RS256 header on the PS256 key is refused)."""
    keys = [Key(a) for a in ("RS256", "PS256", "ES256", "EdDSA")]
    server = idp("pyjwt", jwks=jwks(*keys))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server)]), "remote-pyjwt")
    wait_ready(gw)
    iss = server.state["issuer"]
    for key in keys:
        mark = upstream.log.mark()
        r = assert_ok(gw, key.mint(iss, sub=f"user-{key.alg}"))
        req = upstream.log.since(mark)[0]
        assert header_values(req, "X-Auth-Subject") == [f"user-{key.alg}"], key.alg
        assert header_values(req, "X-Auth-Issuer") == [iss]
    ps = keys[1]
    confused = jwt.encode(T.KeySet.claims(iss=iss), ps.private, algorithm="RS256",
                          headers={"typ": "at+jwt", "kid": ps.kid})
    T.MINTED.append(confused)
    assert_gateway_error(get(gw, confused), 401, "algorithm_not_allowed")


def test_several_issuers_each_with_its_own_rules(make_gateway, upstream, idp):
    """Two remote issuers at once, each with its own audiences, token types and required claims, even sharing a kid
    (K-wrong-issuer-same-kid: keys are looked up by issuer and kid, never by kid alone)."""
    ka, kb = Key("ES256", "shared-kid"), Key("ES256", "shared-kid")
    a = idp("issuer-a", jwks=jwks(ka))
    b = idp("issuer-b", jwks=jwks(kb))
    issuers = [remote_issuer(a, audiences=["aud-a"]),
               {"issuer": b.state["issuer"], "discovery": True, "algorithms": ["ES256"], "audiences": ["aud-b"],
                "token_types": ["JWT"], "required_claims": ["tenant"]}]
    gw = make_gateway(gateway_config(upstream.port, issuers), "remote-multi")
    wait_ready(gw)
    ia, ib = a.state["issuer"], b.state["issuer"]
    assert_ok(gw, ka.mint(ia, aud="aud-a"))
    assert_gateway_error(get(gw, ka.mint(ia, aud="aud-b")), 401, "audience_mismatch")
    assert_gateway_error(get(gw, ka.mint(ia, aud=T.AUD)), 401, "audience_mismatch")
    assert_ok(gw, kb.mint(ib, aud="aud-b", typ="JWT", tenant="t1"))
    assert_gateway_error(get(gw, kb.mint(ib, aud="aud-b", typ="JWT")), 401, "claims_invalid")
    assert_gateway_error(get(gw, kb.mint(ib, aud="aud-b", tenant="t1")), 401, "token_type_invalid")
    assert_gateway_error(get(gw, kb.mint(ia, aud="aud-a")), 401, "signature_invalid")


# ------------------------------------------------------------------------------------------------------------------
# hostile or broken key-set servers

def test_bad_keys_in_a_remote_set_are_skipped_with_a_warning(make_gateway, upstream, idp):
    """S-rsa-weak1024, S-ed-small-order-key, W-use-enc, W-mixed-symmetry: a 1024-bit RSA key, a small-order Ed25519
    key, a use=enc key and an oct key are skipped (each named in a warning); the good key in the same set works."""
    good = Key("ES256", "good")
    weak = Key("RS256", "weak-1024", private=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    small = {"kty": "OKP", "crv": "Ed25519", "kid": "small-order", "alg": "EdDSA", "use": "sig",
             "x": T.b64u(b"\x01" + b"\x00" * 31)}
    enc = Key("ES256", "enc-key")
    oct_key = {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": T.b64u(secrets.token_bytes(32))}
    server = idp("weak", jwks={"keys": [weak.jwk(), small, enc.jwk(use="enc"), oct_key, good.jwk()]})
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server)]), "remote-weak")
    wait_ready(gw)
    iss = server.state["issuer"]
    assert_ok(gw, good.mint(iss))
    for kid in ("weak-1024", "small-order", "enc-key", "hmac"):
        wait_for_log(gw, lambda m, kid=kid: f'key "{kid}" skipped' in m)
    time.sleep(1.1)
    assert_gateway_error(get(gw, weak.mint(iss)), 401, "key_unknown")
    assert_gateway_error(get(gw, enc.mint(iss)), 401, "key_unknown")


@pytest.mark.parametrize("mode", ["oversize", "slow", "redirect", "status", "garbage", "no_usable_keys"])
def test_broken_refetch_keeps_the_old_keys(make_gateway, upstream, idp, mode):
    """W-jwks-huge (2 MiB body, bound 1 MiB), W-jwks-slow (answer after the fetch timeout), W-jwks-redirect
    (302 to another host, not followed), W-jwks-content (500, not JSON, no usable key): the failed refetch is
    logged with its code, the waiting request gets key_unknown within the fetch timeout, and the known keys keep
    working."""
    k1 = Key("ES256")
    server = idp(f"broken-{mode}", jwks=jwks(k1))
    gw = make_gateway(gateway_config(upstream.port, [remote_issuer(server, jwks_fetch_timeout_ms=1000)]),
                      f"remote-broken-{mode}")
    wait_ready(gw)
    iss = server.state["issuer"]
    change, code = {
        "oversize": ({"oversize": 2 * 1024 * 1024}, "too_large"),
        "slow": ({"delay_ms": 3000}, "timeout"),
        "redirect": ({"redirect": "http://169.254.169.254/latest/meta-data/"}, "http_status"),
        "status": ({"status": 500}, "http_status"),
        "garbage": ({"jwks": "not a key set"}, "jwks_invalid"),
        "no_usable_keys": ({"jwks": {"keys": [{"kty": "RSA", "kid": "x"}]}}, "no_usable_keys"),
    }[mode]
    server.update(**change)
    time.sleep(1.1)
    t0 = time.monotonic()
    assert_gateway_error(get(gw, Key("ES256").mint(iss)), 401, "key_unknown")
    assert time.monotonic() - t0 < 4
    wait_for_log(gw, lambda m: f"fetching the key set failed ({code})" in m)
    assert_ok(gw, k1.mint(iss))


def test_https_key_set_with_a_private_ca(make_gateway, upstream, idp, tmp_path):
    """An https key set is trusted through the issuer's ca_file (peer and host verification stay on); without the
    CA the fetch fails and the issuer never becomes ready."""
    from test_tls import _write_pki
    ca, cert, key = _write_pki(str(tmp_path))
    k1 = Key("ES256")
    server = idp("tls", tls=(cert, key), jwks=jwks(k1))
    trusted = remote_issuer(server, ca_file=ca)
    gw = make_gateway(gateway_config(upstream.port, [trusted]), "remote-tls")
    wait_ready(gw)
    assert_ok(gw, k1.mint(server.state["issuer"]))

    gw2 = make_gateway(gateway_config(upstream.port, [remote_issuer(server)]), "remote-tls-untrusted")
    wait_for_log(gw2, lambda m: "fetching the key set failed (unreachable)" in m)
    assert readyz(gw2)[0] == 503
