"""Command line and process lifecycle (DESIGN §3, §4 validation, §7 admin listener)."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from configs import main_config, small_config
from harness import InFlight, free_port


def _write(dirpath: str, config, raw: str | None = None) -> str:
    os.makedirs(dirpath, exist_ok=True)
    path = os.path.join(dirpath, "gateway.json")
    with open(path, "w") as f:
        f.write(raw if raw is not None else json.dumps(config, indent=2))
    return path


def _check(binary, path, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([binary, "check", "--config", path], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def base(workdir, keys, upstream):
    d = os.path.join(workdir, "check")
    os.makedirs(d, exist_ok=True)
    return d, small_config(d, keys, upstream.port)


def test_check_valid_config(binary, base, keys):
    """DESIGN §3: `portcullis check` on a valid config (keys, ${ENV}, relative paths) exits 0."""
    d, cfg = base
    p = _check(binary, _write(d, cfg), keys.env())
    assert p.returncode == 0, f"stdout={p.stdout}\nstderr={p.stderr}"


def _broken(cfg, mutate):
    c = copy.deepcopy(cfg)
    mutate(c)
    return c


BROKEN = [
    ("routes[0].upstream", lambda c: c["routes"][0].__setitem__("upstream", "nope")),
    ("limits.max_header_byte", lambda c: c["limits"].__setitem__("max_header_byte", 1)),
    ("routes[1].auth", lambda c: c["routes"][1].__setitem__("auth", "sometimes")),
    ("issuers[1].hmac_secret", lambda c: c["issuers"][1].__setitem__("hmac_secret", "short")),
    ("issuers[0].algorithms", lambda c: c["issuers"][0].__setitem__("algorithms", ["none"])),
    # One HMAC secret is pinned to one algorithm (RFC 8725 §3.1), never shared between HS256 and HS384.
    ("issuers[1].algorithms", lambda c: c["issuers"][1].__setitem__("algorithms", ["HS256", "HS384"])),
    ("listen", lambda c: c.__setitem__("listen", "not-an-address")),
    ("upstreams.app.url", lambda c: c["upstreams"]["app"].__setitem__("url", 42)),
]


@pytest.mark.parametrize("json_path,mutate", BROKEN, ids=[b[0] for b in BROKEN])
def test_check_broken_config_names_json_path(binary, base, keys, json_path, mutate):
    """DESIGN §3/§4: invalid config → exit 1, stderr has a `json.path: message` line naming the path (unknown keys
    are errors)."""
    d, cfg = base
    p = _check(binary, _write(d, _broken(cfg, mutate)), keys.env())
    assert p.returncode == 1, f"exit {p.returncode}\nstderr={p.stderr}"
    assert json_path in p.stderr, f"stderr does not name {json_path}:\n{p.stderr}"


def test_check_unset_env_variable(binary, base):
    """DESIGN §4: "${NAME}" with NAME unset is an error naming the path (issuers[3].hmac_secret)."""
    d, cfg = base
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_E2E_HS512_SECRET"}
    path = _write(d, cfg)
    p = subprocess.run([binary, "check", "--config", path], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1
    assert "issuers[3].hmac_secret" in p.stderr, p.stderr


def test_check_missing_key_file(binary, base, keys):
    """DESIGN §3: check validates files too: a missing jwks_file → exit 1 naming issuers[0].jwks_file."""
    d, cfg = base
    cfg = _broken(cfg, lambda c: c["issuers"][0].__setitem__("jwks_file", "no/such/jwks.json"))
    p = _check(binary, _write(d, cfg), keys.env())
    assert p.returncode == 1
    assert "issuers[0].jwks_file" in p.stderr, p.stderr


def test_check_invalid_json(binary, base, keys):
    """Malformed JSON → exit 1 with a message on stderr."""
    d, _ = base
    p = _check(binary, _write(d, None, raw='{"listen": "127.0.0.1:1", }'), keys.env())
    assert p.returncode == 1 and p.stderr.strip()


def test_default_command_serves(make_gateway, keys, upstream):
    """DESIGN §3: `portcullis --config PATH` (no subcommand) serves; /healthz and /readyz answer 200."""
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "default-cmd", args=["--config", "{config}"])
    for ep in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://{gw.admin[0]}:{gw.admin[1]}{ep}", timeout=5) as r:
            assert r.status == 200
    with gw.raw() as c:
        assert c.request("GET", "/public/default-cmd").status == 200


def test_sigterm_drains_in_flight_and_exits_0(make_gateway, keys, upstream):
    """DESIGN §3: SIGTERM stops accepting, lets the in-flight request finish, exits 0."""
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "sigterm")
    in_flight = InFlight(gw, upstream, "/public/slow?ms=1500").start()
    gw.proc.send_signal(signal.SIGTERM)
    assert in_flight.finish().status == 200
    assert gw.proc.wait(timeout=30) == 0


def test_sigterm_closes_idle_keepalive_connections_promptly(make_gateway, keys, upstream):
    """DESIGN §3: on SIGTERM idle keep-alive connections are closed at once, so the drain does not wait for them
    (drain_seconds is 60 here; the bound below is far from it and is about behaviour, not speed)."""
    def cfg(d):
        c = small_config(d, keys, upstream.port)
        c["limits"]["drain_seconds"] = 60
        return c
    gw = make_gateway(cfg, "sigterm-idle")
    c = gw.raw(timeout=30)
    try:
        assert c.request("GET", "/public/keepalive").status == 200  # connection stays open, idle
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 20, "the drain waited for an idle keep-alive connection"
    finally:
        c.close()


def test_two_gateways_do_not_share_state(make_gateway, keys, upstream, workdir, unix_upstream):
    """A fresh gateway from the main config starts and serves (config reproducible; ports are its own)."""
    def cfg(d):
        return main_config(d, keys, upstream.port, unix_upstream.unix, free_port())
    gw = make_gateway(cfg, "second-main")
    with gw.raw() as c:
        assert c.request("GET", "/private/x").status == 401
        assert c.request("GET", "/private/x", [("Authorization", f"Bearer {keys.mint('EdDSA')}")]).status == 200


def test_json_log_format(make_gateway, keys, upstream):
    """log.format json: every line the gateway writes to stderr is one JSON object with ts, level and msg; the
    access log has one line per request with its reason and never a token or a query string (DESIGN §7)."""
    def cfg(d):
        c = small_config(d, keys, upstream.port)
        c["log"] = {"level": "info", "format": "json"}
        return c
    gw = make_gateway(cfg, "json-log")
    bad_token = keys.mint("ES256")[:-8] + "AAAAAAAA"  # valid shape, wrong signature
    with gw.raw() as c:
        assert c.request("GET", "/public/x?access_token=query-secret").status == 200
        assert c.request("GET", "/private/y", [("Authorization", f"Bearer {bad_token}")]).status == 401
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=30) == 0
    with open(gw.err_path, encoding="utf-8") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines"
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert {"ts", "level", "msg"} <= entry.keys(), entry
    # One access line per request, with its reason; never the token or the query string.
    access = [e for e in entries if e.get("logger") == "portcullis.access"]
    assert [(e["path"], e["status"], e.get("reason")) for e in access] == [
        ("/public/x", 200, None), ("/private/y", 401, "signature_invalid")]
    assert all({"request_id", "method", "duration_ms"} <= e.keys() for e in access)
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in access)
    assert isinstance(access[0]["upstream_ms"], float) and "upstream_ms" not in access[1]
    assert bad_token.split(".")[1] not in text and "query-secret" not in text
