"""Revocations across processes through the revocation feed (issue 9, DESIGN §9 "Verify-only sidecars at scale").

Gateway A runs the token service on SQLite with the feed on (`token_service.revocations_feed_token`); gateway B is
verify-only: its issuer entry for A names A's JWKS (`jwks_uri`) and A's feed (`revocations_uri` +
`revocations_token`), and it has no store. A logout on A must make B refuse the session (`token_revoked`) within
about a second, however B and A come and go. Real processes, real HTTP, loopback only."""
from __future__ import annotations

import concurrent.futures
import copy
import os
import statistics
import time

import jwt
import pytest
import requests

from harness import Gateway, free_port
from revocation_checks import api, readyz, refused_within
from token_service import Service

SECRET = "feed-secret-" + "k" * 40
SQLITE = {"type": "sqlite", "path": "data/sessions.db"}
DEADLINE = 1.0  # DESIGN §9: revocations reach every data path within 1 s


# ------------------------------------------------------------------------------------------------------------------
# helpers


def follower_config(upstream_port: int, issuer: str, token: str = SECRET, prefix: str = "/auth",
                    extra_issuers: list[dict] | None = None) -> dict:
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "routes": [{"path_prefix": "/", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
        "issuers": [{
            "issuer": issuer, "jwks_uri": issuer + "/.well-known/jwks.json",
            "revocations_uri": issuer + prefix + "/revocations", "revocations_token": token,
        }] + (extra_issuers or []),
        "log": {"level": "info", "format": "json"},
    }


@pytest.fixture
def make_follower(binary, workdir, upstream):
    """Factory for verify-only gateways following a token service's feed (stopped at the end of the test)."""
    started: list[Gateway] = []

    def make(name: str, issuer: str, ready: bool = True, **kwargs) -> Gateway:
        d = os.path.join(workdir, name)
        os.makedirs(d, exist_ok=True)
        gw = Gateway(binary, d, follower_config(upstream.port, issuer, **kwargs), name=name)
        started.append(gw)
        gw.wait_healthy()
        if ready:
            wait_ready(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def wait_ready(gw: Gateway, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        status, body = readyz(gw)
        if status == 200:
            return body
        assert time.monotonic() < deadline, f"not ready: {body}"
        time.sleep(0.05)


def feed(svc: Service, query: str, token: str | None = SECRET, timeout: float = 40) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(svc.gw.url("/auth/revocations?" + query), headers=headers, timeout=timeout)


def logout(svc: Service, access_token: str):
    r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {access_token}"})
    assert r.status_code == 204, r.text


def service(make_service, name: str, **overrides) -> Service:
    return make_service(name, store=SQLITE, revocations_feed_token=SECRET, **overrides)


# ------------------------------------------------------------------------------------------------------------------
# a follower refuses what the token service revoked


def test_logout_on_a_is_refused_by_b_within_a_second(make_service, make_follower):
    a = service(make_service, "feed-delay-a")
    b = make_follower("feed-delay-b", a.issuer)
    body = wait_ready(b)
    assert body == {"status": "ready"}
    delays = []
    for _ in range(10):
        t = a.tokens()
        assert api(b, t["access_token"]).status_code == 200  # also puts it in B's verified-token cache
        logout(a, t["access_token"])
        delays.append(refused_within(b, t["access_token"], DEADLINE))
    delays.sort()
    print(f"\n[feed] logout on A → refused on B: p50 {statistics.median(delays) * 1000:.1f} ms, "
          f"max {delays[-1] * 1000:.1f} ms over {len(delays)} samples")
    # Sessions not revoked are untouched.
    other = a.tokens()
    assert api(b, other["access_token"]).status_code == 200
    # B says what it follows.
    metrics = requests.get(f"http://{b.admin[0]}:{b.admin[1]}/metrics", timeout=10).text
    assert f'portcullis_revocation_feed_up{{issuer="{a.issuer}"}} 1' in metrics
    assert f'portcullis_revocation_feed_polls_total{{issuer="{a.issuer}",result="success"}}' in metrics


def test_refresh_token_revocation_and_reuse_reach_b(make_service, make_follower):
    a = service(make_service, "feed-causes-a", refresh_reuse_grace_seconds=0)
    b = make_follower("feed-causes-b", a.issuer)
    # RFC 7009 revoke with the refresh token.
    t = a.tokens()
    assert api(b, t["access_token"]).status_code == 200
    assert a.post("/auth/revoke", data={"token": t["refresh_token"]}).status_code == 200
    refused_within(b, t["access_token"], DEADLINE)
    # Reuse of a rotated refresh token revokes the session everywhere.
    t0 = a.tokens()
    t1 = a.refresh(t0["refresh_token"]).json()
    assert api(b, t1["access_token"]).status_code == 200
    time.sleep(0.1)
    assert a.refresh(t0["refresh_token"]).status_code == 400
    refused_within(b, t1["access_token"], DEADLINE)


def test_b_started_after_the_revocation_catches_up(make_service, make_follower):
    a = service(make_service, "feed-late-a")
    ended, live = a.tokens(), a.tokens()
    logout(a, ended["access_token"])
    b = make_follower("feed-late-b", a.issuer)
    # Ready means the feed has been read and applied: the first request is already refused.
    r = api(b, ended["access_token"])
    assert r.status_code == 401 and r.json()["reason"] == "token_revoked"
    assert api(b, live["access_token"]).status_code == 200


def test_b_is_not_ready_until_the_feed_answers(make_service, make_follower, binary, workdir):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    b = make_follower("feed-notready-b", issuer, ready=False)
    time.sleep(0.5)
    status, body = readyz(b)
    assert status == 503 and f"revocations:{issuer}" in body["not_ready"]
    a = service(make_service, "feed-notready-a", port=port)
    body = wait_ready(b)
    assert body == {"status": "ready"}
    t = a.tokens()
    logout(a, t["access_token"])
    refused_within(b, t["access_token"], DEADLINE)


def test_a_restarted_while_b_follows(make_service, make_follower, binary):
    """A goes away; another token-service process on the same database (a second replica) revokes a session while
    B is cut off from any feed; A comes back: B catches up from where it was, within about a second."""
    a = service(make_service, "feed-restart-a")
    b = make_follower("feed-restart-b", a.issuer)
    first, second, third = a.tokens(), a.tokens(), a.tokens()
    for t in (first, second, third):
        assert api(b, t["access_token"]).status_code == 200
    logout(a, first["access_token"])
    refused_within(b, first["access_token"], DEADLINE)

    started = time.monotonic()
    a.gw.stop()
    # B's poll held in A is answered at shutdown; it does not hold A's drain.
    assert time.monotonic() - started < 5
    # B keeps serving: verification is local, known revocations stay in force.
    assert api(b, first["access_token"]).json()["reason"] == "token_revoked"
    assert api(b, second["access_token"]).status_code == 200

    # A second replica on the same SQLite file (same issuer, keys and users) revokes `second` meanwhile.
    replica_dir = a.gw.workdir + "-replica"
    config = copy.deepcopy(a.gw.config)
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["admin_listen"] = f"127.0.0.1:{free_port()}"
    config["token_service"]["signing"]["key_dir"] = os.path.join(a.gw.workdir, "keys")
    config["token_service"]["users_file"] = os.path.join(a.gw.workdir, "users.json")
    config["store"] = {"type": "sqlite", "path": os.path.join(a.gw.workdir, "data", "sessions.db")}
    replica = Gateway(binary, replica_dir, config, name="replica")
    try:
        replica.wait_healthy()
        logout(Service(replica, a.up), second["access_token"])
    finally:
        replica.stop()
    time.sleep(1.5)  # B retries meanwhile and fails
    assert api(b, second["access_token"]).status_code == 200  # B cannot know yet

    again = Gateway(binary, a.gw.workdir, a.gw.config, name="feed-restart-a-2")
    try:
        again.wait_healthy()
        delay = refused_within(b, second["access_token"], 1.5)
        print(f"\n[feed] revocation made while B was cut off: refused on B {delay * 1000:.0f} ms after A returned")
        # And B follows the restarted A live.
        logout(Service(again, a.up), third["access_token"])
        refused_within(b, third["access_token"], DEADLINE)
    finally:
        again.stop()
    logs = b.logs().decode("utf-8", "replace")
    assert SECRET not in logs


OTHER_ISSUER = "https://other.test"
OTHER_SECRET = "other-issuer-hmac-secret-" + "h" * 20


def test_revocations_are_scoped_to_their_issuer(make_service, make_follower):
    """A session id is only unique within its issuer: another issuer's token carrying the same sid still passes."""
    a = service(make_service, "feed-scope-a")
    b = make_follower("feed-scope-b", a.issuer, extra_issuers=[
        {"issuer": OTHER_ISSUER, "hmac_secret": OTHER_SECRET, "algorithms": ["HS256"]}])
    t = a.tokens()
    sid = jwt.decode(t["access_token"], options={"verify_signature": False})["sid"]
    logout(a, t["access_token"])
    refused_within(b, t["access_token"], DEADLINE)
    now = int(time.time())
    other = jwt.encode({"iss": OTHER_ISSUER, "sub": "someone", "aud": "api", "exp": now + 300, "iat": now, "sid": sid},
                       OTHER_SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    assert api(b, other).status_code == 200


def test_a_follower_with_the_wrong_secret_stays_unready(make_service, make_follower):
    a = service(make_service, "feed-wrong-a")
    wrong = "wrong-secret-" + "w" * 40
    b = make_follower("feed-wrong-b", a.issuer, ready=False, token=wrong)
    time.sleep(2)
    status, body = readyz(b)
    assert status == 503 and body["not_ready"] == [f"revocations:{a.issuer}"]
    metrics = requests.get(f"http://{b.admin[0]}:{b.admin[1]}/metrics", timeout=10).text
    assert f'portcullis_revocation_feed_polls_total{{issuer="{a.issuer}",result="unauthorized"}}' in metrics
    assert f'portcullis_revocation_feed_up{{issuer="{a.issuer}"}} 0' in metrics
    logs = b.logs().decode("utf-8", "replace")
    assert wrong not in logs
    # Logged when following breaks, not at every retry.
    assert logs.count("reading the revocation feed") == 1, logs


def test_b_starts_over_when_a_s_log_is_replaced(make_service, make_follower, binary):
    """A on the memory store restarts with an empty log: B, ahead of it, is told to start over (`reset`) and then
    follows the new log from its beginning."""
    a = make_service("feed-replaced-a", store={"type": "memory"}, revocations_feed_token=SECRET)
    b = make_follower("feed-replaced-b", a.issuer)
    for _ in range(2):
        t = a.tokens()
        logout(a, t["access_token"])
        refused_within(b, t["access_token"], DEADLINE)
    a.gw.stop()
    again = Gateway(binary, a.gw.workdir, a.gw.config, name="feed-replaced-a-2")
    try:
        again.wait_healthy()
        svc = Service(again, a.up)
        t = svc.tokens()  # same signing key (key_dir), new session store
        assert api(b, t["access_token"]).status_code == 200
        logout(svc, t["access_token"])
        refused_within(b, t["access_token"], 1.5)
        logs = b.logs().decode("utf-8", "replace")
        assert "started over" in logs
    finally:
        again.stop()


# ------------------------------------------------------------------------------------------------------------------
# the feed itself


def test_feed_entries_carry_sid_and_until(make_service):
    a = service(make_service, "feed-entries")
    t = a.tokens()
    sid = jwt.decode(t["access_token"], options={"verify_signature": False})["sid"]
    before = time.time()
    logout(a, t["access_token"])
    r = feed(a, "after=0&wait=0")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json" and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    entries = body["revocations"]
    assert [e["sid"] for e in entries] == [sid]
    entry = entries[0]
    assert set(entry) == {"seq", "sid", "revoked_at", "until"}
    assert before - 1 <= entry["revoked_at"] <= time.time() + 1
    # until = revoked_at + access-token lifetime (900) + leeway (0): when its last access token has expired.
    assert entry["until"] == pytest.approx(entry["revoked_at"] + 900, abs=1e-3)
    assert body["next"] == entry["seq"] and "reset" not in body
    # Nothing after it: an empty answer, next unchanged.
    r = feed(a, f"after={entry['seq']}&wait=0")
    assert r.json() == {"revocations": [], "next": entry["seq"]}


def test_feed_long_poll_answers_when_a_revocation_arrives_and_bounds_the_wait(make_service):
    a = service(make_service, "feed-wait")
    last = feed(a, "after=0&wait=0").json()["next"]
    # Nothing arrives: held for `wait`, then an empty answer.
    start = time.monotonic()
    r = feed(a, f"after={last}&wait=1")
    held = time.monotonic() - start
    assert r.status_code == 200 and r.json() == {"revocations": [], "next": last}
    assert 0.9 <= held < 3, held
    # A revocation arrives while a reader waits: it is answered at once.
    t = a.tokens()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(feed, a, f"after={last}&wait=30")
        time.sleep(0.5)
        assert not waiting.done()
        logout(a, t["access_token"])
        revoked_at = time.monotonic()
        r = waiting.result(timeout=10)
        answered = time.monotonic() - revoked_at
    assert r.status_code == 200 and len(r.json()["revocations"]) == 1
    assert answered < 0.5, answered
    print(f"\n[feed] waiting reader answered {answered * 1000:.1f} ms after the logout")


def test_two_hundred_concurrent_waiters(make_service):
    a = service(make_service, "feed-waiters")
    last = feed(a, "after=0&wait=0").json()["next"]
    t = a.tokens()
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        waiting = [pool.submit(feed, a, f"after={last}&wait=20") for _ in range(200)]
        time.sleep(2)
        assert not any(w.done() for w in waiting)
        metrics = requests.get(f"http://{a.gw.admin[0]}:{a.gw.admin[1]}/metrics", timeout=10).text
        assert "portcullis_revocation_feed_waiters 200\n" in metrics
        logout(a, t["access_token"])
        revoked_at = time.monotonic()
        answers = [w.result(timeout=20) for w in waiting]
        elapsed = time.monotonic() - revoked_at
    assert all(r.status_code == 200 for r in answers)
    assert all(len(r.json()["revocations"]) == 1 for r in answers)
    assert len({r.text for r in answers}) == 1
    assert elapsed < 3, elapsed
    print(f"\n[feed] 200 waiting readers all answered {elapsed * 1000:.0f} ms after the logout")
    # The gateway still serves normally.
    assert a.api(a.tokens()["access_token"]).status_code == 200


@pytest.mark.parametrize("token", [None, "", "wrong-" + "x" * 40, SECRET[:-1], SECRET + "x"], ids=["missing", "empty", "wrong", "prefix", "longer"])
def test_feed_refuses_a_missing_or_wrong_secret(make_service, token):
    a = service(make_service, "feed-secret")
    r = feed(a, "after=0&wait=0", token=token)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert SECRET not in r.text


@pytest.mark.parametrize("query", ["", "after=", "after=-1", "after=abc", "after=1.5", "after=1&after=2", "after=0&wait=x"])
def test_feed_refuses_a_malformed_query(make_service, query):
    a = service(make_service, "feed-malformed")
    r = feed(a, query)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_feed_is_off_without_its_secret_and_takes_only_get(make_service):
    off = make_service("feed-off", store=SQLITE)
    r = requests.get(off.gw.url("/auth/revocations?after=0"), headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert r.status_code == 404
    on = service(make_service, "feed-post")
    r = requests.post(on.gw.url("/auth/revocations?after=0"), headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


def test_reader_ahead_of_the_log_is_told_to_start_over(make_service):
    a = service(make_service, "feed-reset")
    t = a.tokens()
    logout(a, t["access_token"])
    start = time.monotonic()
    r = feed(a, "after=1000&wait=30")
    assert time.monotonic() - start < 2
    body = r.json()
    assert body["reset"] is True and len(body["revocations"]) == 1 and body["next"] == body["revocations"][0]["seq"]


# ------------------------------------------------------------------------------------------------------------------
# configuration


def _check(binary, directory, config) -> "subprocess.CompletedProcess":
    import json
    import subprocess
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return subprocess.run([binary, "check", "--config", path], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mutate,path", [
    (lambda c: c["issuers"][0].update(revocations_token="short"), "issuers[0].revocations_token"),
    (lambda c: c["issuers"][0].pop("revocations_token"), "issuers[0].revocations_token"),
    (lambda c: c["issuers"][0].update(revocations_uri="http://feed.example.com/auth/revocations"), "issuers[0].revocations_uri"),
], ids=["short-token", "no-token", "plain-http"])
def test_follower_config_errors_name_the_key(binary, workdir, upstream, mutate, path):
    config = follower_config(upstream.port, "http://127.0.0.1:9")
    mutate(config)
    p = _check(binary, os.path.join(workdir, "feed-check-" + path.replace("[", "").replace("]", "").replace(".", "-")), config)
    assert p.returncode == 1, p.stdout + p.stderr
    assert path in p.stdout + p.stderr
    assert "k" * 40 not in p.stdout + p.stderr


def test_short_feed_secret_is_a_config_error(binary, workdir, upstream):
    from token_service import service_config
    d = os.path.join(workdir, "feed-check-short-secret")
    os.makedirs(d, exist_ok=True)
    config = service_config(d, upstream.port, revocations_feed_token="too-short")
    p = _check(binary, d, config)
    assert p.returncode == 1 and "token_service.revocations_feed_token" in p.stdout + p.stderr


# ------------------------------------------------------------------------------------------------------------------
# reload


def test_a_reload_starts_stops_and_keeps_following(make_service, make_follower):
    """Adding `revocations_uri` by a reload starts following (it catches up on what was revoked before); a reload
    that changes something else keeps the follower where it is; removing it stops following."""
    import json
    import signal

    a = service(make_service, "feed-reload-a")
    b = make_follower("feed-reload-b", a.issuer)
    without = copy.deepcopy(b.config)
    for key in ("revocations_uri", "revocations_token"):
        without["issuers"][0].pop(key)

    def reloads() -> int:
        return b.logs().decode("utf-8", "replace").count("configuration reloaded")

    def rewrite(config):
        """Replaces B's config (write + rename) and waits for a reload (SIGHUP; the file watcher may reload too)."""
        before = reloads()
        tmp = b.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.replace(tmp, b.config_path)
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while reloads() <= before:
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.05)

    with_feed = copy.deepcopy(b.config)
    # Off: B no longer learns of A's revocations.
    rewrite(without)
    status, body = readyz(b)
    assert status == 200 and body == {"status": "ready"}
    t = a.tokens()
    logout(a, t["access_token"])
    time.sleep(1.5)
    assert api(b, t["access_token"]).status_code == 200
    # On again: it catches up with what it missed.
    rewrite(with_feed)
    refused_within(b, t["access_token"], 5)
    # Another change (a route) keeps the running follower: still live within a second.
    changed = copy.deepcopy(with_feed)
    changed["routes"] = [{"path_prefix": "/api", "upstream": "app"}, {"path_prefix": "/", "upstream": "app"}]
    rewrite(changed)
    u = a.tokens()
    assert api(b, u["access_token"]).status_code == 200
    logout(a, u["access_token"])
    refused_within(b, u["access_token"], DEADLINE)
    assert wait_ready(b) == {"status": "ready"}
    # The issuer's key set was fetched once: changing the feed's settings does not refetch the keys.
    assert b.logs().decode("utf-8", "replace").count("key set loaded") == 1
