"""Reload (issue 5, DESIGN §3): SIGHUP and a change of the config file reload the configuration. A broken file is
refused with a log line and the running configuration keeps serving; a changed route takes effect without dropping a
request that is in flight; settings only a restart can change are refused; the token service's keys, users and
sessions follow a reload."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jwt
import requests

from configs import small_config
from harness import InFlight
from users import PASSWORDS


def rewrite(gw, config: dict | None = None, text: str | None = None):
    """Replaces the gateway's config file atomically (write + rename, as editors and ConfigMaps do)."""
    tmp = gw.config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text if text is not None else json.dumps(config, indent=2))
    os.replace(tmp, gw.config_path)
    if config is not None:
        gw.config = config


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


def log_lines(gw) -> list[str]:
    return gw.logs().decode(errors="replace").splitlines()


def status(gw, path: str, headers=None) -> int:
    return requests.get(gw.url(path), headers=headers, timeout=10).status_code


def test_sighup_with_a_broken_config_keeps_serving_the_old_one(make_gateway, keys, upstream):
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "reload-broken")
    assert status(gw, "/public/a") == 200
    for broken in ['{"routes": [', json.dumps({**gw.config, "routes": [{"path_prefix": "/", "upstream": "nope"}]}),
                   json.dumps({**gw.config, "surprise": 1})]:
        rewrite(gw, text=broken)
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: sum("refused" in l for l in log_lines(gw)) >= 1, what="a refusal log line")
        assert status(gw, "/public/a") == 200
        assert status(gw, "/private/a") == 401
        assert gw.alive()
    refusals = [l for l in log_lines(gw) if "reload" in l and "refused" in l]
    assert any("routes[0].upstream" in l for l in refusals), refusals
    assert any("surprise" in l for l in refusals), refusals


def test_sighup_with_a_changed_route_keeps_the_request_in_flight(make_gateway, keys, upstream):
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "reload-route")
    assert status(gw, "/open/x") == 404
    in_flight = InFlight(gw, upstream, "/public/slow?ms=1500").start()
    config = json.loads(json.dumps(gw.config))
    config["routes"].insert(0, {"path_prefix": "/open", "upstream": "app", "auth": "none"})
    config["routes"] = [r for r in config["routes"] if r["path_prefix"] != "/public"]
    rewrite(gw, config)
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: status(gw, "/open/x") == 200, what="the new route")
    # The old route is gone for new requests; the one in flight still finishes normally.
    assert status(gw, "/public/x") == 404
    r = in_flight.finish()
    assert r.status == 200 and r.body
    assert any("configuration reloaded (SIGHUP)" in l for l in log_lines(gw))


def test_a_changed_file_is_reloaded_without_a_signal(make_gateway, keys, upstream):
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "reload-watch")
    config = json.loads(json.dumps(gw.config))
    config["routes"].insert(0, {"path_prefix": "/watched", "upstream": "app", "auth": "none"})
    rewrite(gw, config)
    wait_for(lambda: status(gw, "/watched/x") == 200, timeout=20, what="the watched file's new route")
    assert any("configuration reloaded (file changed)" in l for l in log_lines(gw))


def test_restart_only_settings_are_refused(make_gateway, keys, upstream):
    gw = make_gateway(lambda d: small_config(d, keys, upstream.port), "reload-restart-only")
    config = json.loads(json.dumps(gw.config))
    host, port = config["listen"].rsplit(":", 1)
    config["listen"] = f"{host}:{int(port) + 1}"
    config["routes"].insert(0, {"path_prefix": "/never", "upstream": "app", "auth": "none"})
    rewrite(gw, config)
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("listen can only change with a restart" in l for l in log_lines(gw)), what="the refusal")
    assert status(gw, "/never/x") == 404
    assert status(gw, "/public/x") == 200


def test_token_service_follows_a_reload(binary, workdir, upstream, make_service):
    """Sessions carry over (same store) and so do failed-login counts; a new signing key from `keys generate` signs
    after SIGHUP while tokens of the old key still verify; a user added to the users file can log in."""
    svc = make_service("reload-tokens", store={"type": "sqlite", "path": "data/sessions.db"})
    gw = svc.gw
    before = svc.tokens()
    kid_before = requests.get(gw.url("/.well-known/jwks.json"), timeout=10).json()["keys"][0]["kid"]
    p = subprocess.run([binary, "keys", "generate", "--algorithm", "EdDSA", "--config", gw.config_path],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    users = json.load(open(os.path.join(gw.workdir, "users.json")))
    users["users"].append({**users["users"][1], "username": "carol", "subject": "carol"})
    with open(os.path.join(gw.workdir, "users.json"), "w") as f:
        json.dump(users, f)
    for _ in range(3):
        assert svc.login("bob", "wrong").status_code == 401
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(requests.get(gw.url("/.well-known/jwks.json"), timeout=10).json()["keys"]) == 2,
             what="the new key in the JWKS")
    # Failed logins counted before the reload still count (limit 5 per username).
    for _ in range(2):
        assert svc.login("bob", "wrong").status_code == 401
    assert svc.login("bob").status_code == 429
    after = svc.tokens()

    assert jwt.get_unverified_header(after["access_token"])["alg"] == "EdDSA"
    assert jwt.get_unverified_header(before["access_token"])["kid"] == kid_before
    # The old key's tokens still verify; the session from before the reload refreshes.
    assert svc.api(before["access_token"]).status_code == 200
    r = svc.refresh(before["refresh_token"])
    assert r.status_code == 200, r.text
    assert svc.api(r.json()["access_token"]).status_code == 200
    # carol has bob's password hash.
    assert svc.login("carol", PASSWORDS["bob"]).status_code == 200
