"""A fleet of gateways on one PostgreSQL database (issue 9, DESIGN §9): three replicas of one token service (same
issuer, same `store`, same key-encryption key, each with its own folder as three pods have) behave as one gateway.

Everything is real: a PostgreSQL server started for the suite (`postgres.py`), the gateway binary, an upstream
process, authlib's OAuth2Session and `requests` as clients, loopback only. Where a test cuts one replica off the
database it does so with a small TCP proxy in front of PostgreSQL for that replica alone (`DbProxy`), which also
sees when the replica's listener is back (its `LISTEN` goes through the proxy).

Propagation delays are measured, printed and appended to /tmp/portcullis-fleet-results.txt; the only timing assertion
is the contract's: a revocation reaches every replica's data path within 1 s."""
from __future__ import annotations

import concurrent.futures
import os
import re
import select
import socket
import statistics
import subprocess
import threading
import time

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from harness import Gateway, free_port
from postgres import pg, postgres_server  # noqa: F401  (fixtures)
from revocation_checks import api, readyz, refused_within
from token_service import Service, assert_error
from users import PASSWORDS, write_users

KEK = "fleet-key-encryption-key-" + "e" * 40
FEED_SECRET = "fleet-feed-secret-" + "f" * 40
DEADLINE = 1.0  # DESIGN §9: a revocation reaches every replica's data path within 1 s
GRACE = 2  # refresh_reuse_grace_seconds
ACTIVATION = 3  # signing.activation_delay_seconds
RESULTS = "/tmp/portcullis-fleet-results.txt"


def record(line: str):
    """Measured figures: printed (shown with -s) and appended to RESULTS (always)."""
    stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
    print("\n[fleet] " + line)
    with open(RESULTS, "a") as f:
        f.write(stamped + "\n")


def summary(name: str, delays: list[float]) -> str:
    delays = sorted(delays)
    return (f"{name}: p50 {statistics.median(delays) * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms "
            f"over {len(delays)} samples")


# ------------------------------------------------------------------------------------------------------------------
# a TCP proxy that can cut one replica off the database


class DbProxy:
    """Forwards 127.0.0.1:port to PostgreSQL. `cut()` drops every connection and refuses new ones (accepted and
    closed at once) until `restore()`; `listen_times` records when a client sent `LISTEN` (plain protocol, sslmode
    disable), i.e. when the replica's revocation listener is in force again."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.is_cut = False
        self.listen_times: list[float] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                cut = self.is_cut
            if cut:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket):
        sockets = [client, server]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 0.5)
                if self.closed:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client and b"LISTEN " in data:
                        with self.lock:
                            self.listen_times.append(time.monotonic())
                    (server if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            for s in sockets:
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        with self.lock:
            self.is_cut = True
            pairs, self.pairs = self.pairs, []
        for client, server in pairs:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def restore(self):
        with self.lock:
            self.is_cut = False

    def close(self):
        self.closed = True
        self.cut()
        self.sock.close()


# ------------------------------------------------------------------------------------------------------------------
# the fleet


class Fleet:
    """Three (or more) replicas of one token service on one database."""

    def __init__(self, binary: str, workdir: str, upstream, database, name: str, count: int = 3,
                 proxied: set[int] | None = None):
        self.binary, self.upstream, self.database = binary, upstream, database
        self.root = os.path.join(workdir, name)
        self.ports = [free_port() for _ in range(count)]
        self.issuer = f"http://127.0.0.1:{self.ports[0]}"
        self.proxies: dict[int, DbProxy] = {i: DbProxy(database.server.port) for i in (proxied or set())}
        self.replicas: list[Service] = []
        self.extra: list[Gateway] = []
        for i in range(count):
            self.replicas.append(self.start(i))
        for svc in self.replicas:
            wait_ready(svc.gw)

    def config(self, i: int) -> dict:
        directory = os.path.join(self.root, f"r{i + 1}")
        os.makedirs(directory, exist_ok=True)
        write_users(directory)
        store = self.database.store_config(connect_timeout_ms=1000)
        if i in self.proxies:
            store["url"] = store["url"].replace(f":{self.database.server.port}/", f":{self.proxies[i].port}/")
        return {
            "listen": f"127.0.0.1:{self.ports[i]}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "upstreams": {"app": {"url": f"http://127.0.0.1:{self.upstream.port}"}},
            "routes": [{"path_prefix": "/", "upstream": "app"}],
            "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
            "token_service": {
                "issuer": self.issuer, "audience": "api",
                "access_token_ttl_seconds": 900, "refresh_reuse_grace_seconds": GRACE,
                "signing": {"algorithm": "ES256", "key_encryption_key": KEK, "activation_delay_seconds": ACTIVATION},
                "users_file": "users.json",
                "revocations_feed_token": FEED_SECRET,
            },
            "store": store,
            "log": {"level": "info", "format": "json"},
        }

    def start(self, i: int, name: str | None = None) -> Service:
        directory = os.path.join(self.root, f"r{i + 1}")
        return Service(Gateway.started(self.binary, directory, self.config(i), name=name or f"r{i + 1}"), self.upstream)

    def restart(self, i: int) -> Service:
        stop_cleanly(self.replicas[i].gw)
        self.replicas[i] = self.start(i, name=f"r{i + 1}-again-{time.monotonic_ns()}")
        wait_ready(self.replicas[i].gw)
        return self.replicas[i]

    def follower(self, name: str, follow: int = 0) -> Gateway:
        """A verify-only gateway (no token service, no store) following replica `follow`'s keys and feed."""
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        base = f"http://127.0.0.1:{self.ports[follow]}"
        config = {
            "listen": f"127.0.0.1:{free_port()}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "upstreams": {"app": {"url": f"http://127.0.0.1:{self.upstream.port}"}},
            "routes": [{"path_prefix": "/", "upstream": "app"}],
            "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
            "issuers": [{"issuer": self.issuer, "jwks_uri": base + "/.well-known/jwks.json",
                         "revocations_uri": base + "/auth/revocations", "revocations_token": FEED_SECRET}],
            "log": {"level": "info", "format": "json"},
        }
        gw = Gateway(self.binary, directory, config, name=name)
        self.extra.append(gw)
        gw.wait_healthy()
        wait_ready(gw)
        return gw

    def stop(self):
        for svc in self.replicas:
            svc.gw.stop()
        for gw in self.extra:
            gw.stop()
        for proxy in self.proxies.values():
            proxy.close()

    @property
    def gateways(self) -> list[Gateway]:
        return [svc.gw for svc in self.replicas]


@pytest.fixture
def make_fleet(binary, workdir, upstream, pg):  # noqa: F811
    fleets: list[Fleet] = []

    def make(name: str, **kwargs) -> Fleet:
        fleet = Fleet(binary, workdir, upstream, pg, name, **kwargs)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()
    if not pg.server.running:
        pg.server.start()


# ------------------------------------------------------------------------------------------------------------------
# helpers


def stop_cleanly(gw: Gateway):
    """SIGTERM: the gateway drains, stops its listener and closes its pool, and exits 0 without hanging."""
    started = time.monotonic()
    rc = gw.stop()
    took = time.monotonic() - started
    assert rc == 0 and took < 5, f"exit {rc} after {took:.1f} s\n{gw.logs()[-2000:]!r}"


def admin_get(gw: Gateway, path: str) -> requests.Response:
    return requests.get(f"http://{gw.admin[0]}:{gw.admin[1]}{path}", timeout=10)


def wait_ready(gw: Gateway, timeout: float = 20.0, degraded: bool = False) -> dict:
    """Waits until /readyz is 200 and lists the store as degraded (or not, per `degraded`)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = readyz(gw)
        if status == 200 and ("store" in body.get("degraded", [])) == degraded:
            return body
        assert time.monotonic() < deadline, f"/readyz {status} {body}"
        time.sleep(0.05)


def store_up(gw: Gateway) -> str:
    m = re.search(r"^portcullis_store_up (\S+)$", admin_get(gw, "/metrics").text, re.M)
    return m.group(1) if m else "absent"


def assert_revoked(gw: Gateway, access_token: str):
    r = api(gw, access_token)
    assert r.status_code == 401 and r.json()["reason"] == "token_revoked", (gw.base, r.status_code, r.text)


def refused_everywhere(gateways: list[Gateway], access_token: str, since: float) -> list[float]:
    """The delay (from `since`) after which each gateway refused the token, polled in parallel."""
    with concurrent.futures.ThreadPoolExecutor(len(gateways)) as pool:
        return list(pool.map(lambda gw: refused_within(gw, access_token, DEADLINE, since=since), gateways))


def logout(svc: Service, access_token: str) -> float:
    """Logs out; returns the moment the 204 arrived (monotonic)."""
    r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {access_token}"})
    assert r.status_code == 204, r.text
    return time.monotonic()


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def jwks_kids(gw: Gateway) -> set[str]:
    r = requests.get(gw.url("/.well-known/jwks.json"), timeout=10)
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


# ------------------------------------------------------------------------------------------------------------------
# one gateway made of three processes


def test_login_refresh_and_api_on_different_replicas_with_replay_and_reuse(make_fleet):
    fleet = make_fleet("fleet-flow")
    r1, r2, r3 = fleet.replicas

    # Log in on replica 1 with an independent OAuth 2.0 client.
    token_url = r1.gw.url("/auth/token")
    session = OAuth2Session(client_id="web-app", token_endpoint=token_url, scope="read write", leeway=0)
    session.token_endpoint_auth_method = "none"
    first = session.fetch_token(token_url, username="alice", password=PASSWORDS["alice"], grant_type="password")
    assert first["refresh_token"].startswith("prt_")
    # Every replica signs with the same key and trusts it.
    for gw in fleet.gateways:
        assert api(gw, first["access_token"]).status_code == 200

    # Refresh on replica 2 (authlib, against replica 2's token endpoint).
    second = session.refresh_token(r2.gw.url("/auth/token"), refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert kid_of(second["access_token"]) == kid_of(first["access_token"])
    # Call the API on replica 3.
    r = session.get(r3.gw.url("/api/items"), timeout=30)
    assert r.status_code == 200, r.text

    # A replay of the retired token within the grace, on replica 3: the same pair.
    replay = r3.refresh(first["refresh_token"])
    assert replay.status_code == 200, replay.text
    assert replay.json()["access_token"] == second["access_token"]
    assert replay.json()["refresh_token"] == second["refresh_token"]

    # After the grace, a replay on replica 1 is reuse: the session is revoked for the whole fleet.
    time.sleep(GRACE + 0.3)
    reuse = r1.refresh(first["refresh_token"])
    assert_error(reuse, 400, "invalid_grant", "refresh_token_reused")
    revoked_at = time.monotonic()
    delays = []
    for token in (first["access_token"], second["access_token"]):
        delays += refused_everywhere(fleet.gateways, token, since=revoked_at)
    record(summary("reuse detected on replica 1 → access tokens refused on all three", delays))
    # The successor's refresh token is dead everywhere too.
    for svc in fleet.replicas:
        assert_error(svc.refresh(second["refresh_token"]), 400, "invalid_grant", "session_revoked")


def test_twenty_concurrent_refreshes_over_three_replicas_rotate_once(make_fleet):
    fleet = make_fleet("fleet-concurrent")
    t0 = fleet.replicas[0].tokens()
    barrier = threading.Barrier(20)

    def refresh(i):
        barrier.wait()
        return fleet.replicas[i % 3].refresh(t0["refresh_token"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(refresh, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    pairs = {(r.json()["access_token"], r.json()["refresh_token"]) for r in answers}
    assert len(pairs) == 1, f"{len(pairs)} different pairs"
    access, refresh_token = pairs.pop()
    for gw in fleet.gateways:
        assert api(gw, access).status_code == 200
    assert fleet.replicas[2].refresh(refresh_token).status_code == 200


def test_logout_reaches_every_replica_and_survives_a_database_restart(make_fleet, pg):  # noqa: F811
    fleet = make_fleet("fleet-logout")
    r1, r2, r3 = fleet.replicas
    delays = []
    ended = []
    for _ in range(10):
        t = r1.tokens()
        for gw in (r1.gw, r3.gw):
            assert api(gw, t["access_token"]).status_code == 200  # also in each replica's verified-token cache
        at = logout(r2, t["access_token"])
        delays += refused_everywhere([r1.gw, r3.gw], t["access_token"], since=at)
        ended.append(t)
    record(summary("logout on replica 2 → refused on replicas 1 and 3", delays))
    live = r3.tokens()

    # The database restarts: nothing revoked comes back, nothing live is lost.
    pg.server.stop()
    pg.server.start()
    for gw in fleet.gateways:
        wait_ready(gw, degraded=False)
    for t in ended:
        for gw in fleet.gateways:
            assert_revoked(gw, t["access_token"])
    for svc in fleet.replicas:
        assert_error(svc.refresh(ended[0]["refresh_token"]), 400, "invalid_grant", "session_revoked")
    # A replica that starts afresh rebuilds its revoked set from the log in the database.
    fresh = fleet.restart(0)
    for t in ended:
        assert_revoked(fresh.gw, t["access_token"])
    assert api(fresh.gw, live["access_token"]).status_code == 200
    r = fresh.refresh(live["refresh_token"])
    assert r.status_code == 200, r.text


def test_a_replica_cut_off_during_a_revocation_catches_up_when_it_reconnects(make_fleet):
    fleet = make_fleet("fleet-cutoff", proxied={2})
    r1, r2, r3 = fleet.replicas
    proxy = fleet.proxies[2]
    catch_up = []
    for round_ in range(3):
        t = r1.tokens()
        for gw in fleet.gateways:
            assert api(gw, t["access_token"]).status_code == 200
        proxy.cut()
        wait_ready(r3.gw, degraded=True)  # replica 3 noticed it lost the database
        assert store_up(r3.gw) == "0"
        at = logout(r1, t["access_token"])
        refused_everywhere([r1.gw, r2.gw], t["access_token"], since=at)
        # Replica 3 cannot know yet: it hears nothing and cannot read the log.
        time.sleep(1.5)
        assert api(r3.gw, t["access_token"]).status_code == 200
        listens_before = len(proxy.listen_times)
        proxy.restore()
        deadline = time.monotonic() + 15
        while len(proxy.listen_times) == listens_before:
            assert time.monotonic() < deadline, "replica 3's listener did not come back"
            time.sleep(0.002)
        reconnected = proxy.listen_times[listens_before]
        catch_up.append(refused_within(r3.gw, t["access_token"], DEADLINE, since=reconnected))
        wait_ready(r3.gw, degraded=False)
        assert store_up(r3.gw) == "1"
    record(summary("revocation made while replica 3 was cut off → refused after its LISTEN was back", catch_up))
    # Live again: the next revocation reaches replica 3 the usual way.
    t = r2.tokens()
    assert api(r3.gw, t["access_token"]).status_code == 200
    at = logout(r2, t["access_token"])
    refused_within(r3.gw, t["access_token"], DEADLINE, since=at)


def test_a_verify_only_gateway_follows_a_replica_s_feed(make_fleet):
    fleet = make_fleet("fleet-follower")
    follower = fleet.follower("fleet-follower-v", follow=0)
    delays = []
    for i in range(10):
        t = fleet.replicas[i % 3].tokens()
        assert api(follower, t["access_token"]).status_code == 200
        # Logged out on a replica other than the one the follower reads: it learns through the database.
        at = logout(fleet.replicas[(i + 1) % 3], t["access_token"])
        delays.append(refused_within(follower, t["access_token"], DEADLINE, since=at))
    record(summary("logout on a replica → refused on a verify-only gateway following replica 1's feed", delays))
    assert api(follower, fleet.replicas[1].tokens()["access_token"]).status_code == 200


def test_failed_logins_are_counted_across_replicas(make_fleet):
    fleet = make_fleet("fleet-limits")
    for i in range(5):
        r = fleet.replicas[i % 3].login("bob", password="wrong")
        assert_error(r, 401, "invalid_grant", "invalid_credentials")
    # The sixth attempt is refused everywhere, even with the right password.
    for svc in fleet.replicas:
        r = svc.login("bob")
        assert_error(r, 429, "too_many_requests", "login_rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    # Another user is not affected.
    assert fleet.replicas[1].login("alice").status_code == 200


def test_key_rotation_across_the_fleet_fails_no_request(make_fleet, binary):
    fleet = make_fleet("fleet-keys")
    old_kid = kid_of(fleet.replicas[0].tokens()["access_token"])
    assert all(jwks_kids(gw) == {old_kid} for gw in fleet.gateways)

    # A client loop over every replica throughout the rotation: log in on one, call the API on each, refresh on
    # another. Nothing may fail.
    failures: list[str] = []
    counts = {"requests": 0}
    stop = threading.Event()

    def client(offset: int):
        i = offset
        while not stop.is_set():
            a, b = fleet.replicas[i % 3], fleet.replicas[(i + 1) % 3]
            i += 1
            try:
                r = a.login("alice")
                if r.status_code != 200:
                    failures.append(f"login {r.status_code} {r.text}")
                    continue
                t = r.json()
                for gw in fleet.gateways:
                    r = api(gw, t["access_token"])
                    if r.status_code != 200:
                        failures.append(f"api {gw.base} {r.status_code} {r.text} kid={kid_of(t['access_token'])}")
                r = b.refresh(t["refresh_token"])
                if r.status_code != 200:
                    failures.append(f"refresh {r.status_code} {r.text}")
                counts["requests"] += 5
            except requests.RequestException as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    try:
        time.sleep(1)
        started = time.monotonic()
        p = subprocess.run([binary, "keys", "generate", "--config", fleet.replicas[1].gw.config_path],
                           capture_output=True, text=True, timeout=60)
        generated = time.monotonic()
        assert p.returncode == 0, p.stdout + p.stderr
        new_kid = p.stdout.split()[0]
        assert new_kid != old_kid and f"signs in {ACTIVATION} s" in p.stdout, p.stdout
        assert KEK not in p.stdout + p.stderr

        # Published by every replica (within a key refresh), while the old key still signs.
        published = {}
        while len(published) < 3:
            for i, gw in enumerate(fleet.gateways):
                if i not in published and jwks_kids(gw) == {old_kid, new_kid}:
                    published[i] = time.monotonic() - generated
            assert time.monotonic() - generated < ACTIVATION, f"not published everywhere before activation: {published}"
            time.sleep(0.02)
        # The key was added between `started` and `generated`: it may not sign before started + the delay.
        while time.monotonic() - started < ACTIVATION - 0.2:
            for svc in fleet.replicas:
                assert kid_of(svc.tokens()["access_token"]) == old_kid, "signed with the new key before its activation"
            time.sleep(0.1)
        # After the delay every replica signs with the new key (allowing for the time `keys generate` took).
        time.sleep(max(0.0, ACTIVATION + 0.5 - (time.monotonic() - generated)))
        switched = {}
        while len(switched) < 3:
            for i, svc in enumerate(fleet.replicas):
                if i not in switched and kid_of(svc.tokens()["access_token"]) == new_kid:
                    switched[i] = time.monotonic() - generated
            assert time.monotonic() - generated < ACTIVATION + 3, f"not signing with the new key: {switched}"
        time.sleep(1)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    record(f"keys generate ({(generated - started) * 1000:.0f} ms): new key published on all three at most "
           f"{max(published.values()) * 1000:.0f} ms after it returned (activation delay {ACTIVATION} s), old key "
           f"signing until the delay, new key signing on all three {max(switched.values()):.2f} s after it returned; "
           f"{counts['requests']} requests during the rotation, {len(failures)} failed")
    assert not failures, failures[:5]
    # Both keys stay published; tokens of both verify everywhere.
    for gw in fleet.gateways:
        assert jwks_kids(gw) == {old_kid, new_kid}


def test_database_down_the_data_path_serves_and_the_fleet_recovers(make_fleet, pg):  # noqa: F811
    fleet = make_fleet("fleet-outage")
    tokens = [svc.tokens() for svc in fleet.replicas]
    ended = fleet.replicas[0].tokens()
    logout(fleet.replicas[0], ended["access_token"])
    for gw in fleet.gateways:
        refused_within(gw, ended["access_token"], DEADLINE)

    pg.server.stop()
    down_at = time.monotonic()
    try:
        for gw in fleet.gateways:
            body = wait_ready(gw, degraded=True)
            assert body["status"] == "ready"
            assert store_up(gw) == "0"
        record(f"database stopped → every replica lists the store as degraded after {time.monotonic() - down_at:.2f} s")
        for svc in fleet.replicas:
            # Valid tokens still reach the upstream; known revocations stay in force.
            mark = svc.up.log.mark()
            for t in tokens:
                assert api(svc.gw, t["access_token"]).status_code == 200
            assert len(svc.up.log.since(mark)) == 3
            assert_revoked(svc.gw, ended["access_token"])
            # Token endpoints: 503 with Retry-After.
            for r in (svc.login("alice"), svc.refresh(tokens[0]["refresh_token"]),
                      svc.post("/auth/logout", headers={"Authorization": f"Bearer {tokens[1]['access_token']}"})):
                assert_error(r, 503, "temporarily_unavailable", "store_unavailable")
                assert int(r.headers["Retry-After"]) >= 1
    finally:
        pg.server.start()
    up_at = time.monotonic()
    for gw in fleet.gateways:
        wait_ready(gw, degraded=False, timeout=30)
        assert store_up(gw) == "1"
    record(f"database back → every replica healthy again after {time.monotonic() - up_at:.2f} s")
    # The fleet works again by itself: log in, refresh and revoke across replicas.
    t = fleet.replicas[2].tokens()
    t = fleet.replicas[0].refresh(t["refresh_token"]).json()
    at = logout(fleet.replicas[1], t["access_token"])
    refused_everywhere(fleet.gateways, t["access_token"], since=at)
    # The logout answered 503 during the outage is retried, as the client was told: now it reaches the fleet.
    at = logout(fleet.replicas[1], tokens[1]["access_token"])
    refused_everywhere(fleet.gateways, tokens[1]["access_token"], since=at)
    assert_error(fleet.replicas[2].refresh(tokens[1]["refresh_token"]), 400, "invalid_grant", "session_revoked")
    # A replica stopped while the database is away (its listener reconnecting) still exits at once and cleanly.
    pg.server.stop()
    wait_ready(fleet.replicas[2].gw, degraded=True)
    stop_cleanly(fleet.replicas[2].gw)


def test_a_reload_keeps_the_fleet_keys_and_limits_running(make_fleet, binary):
    """A reload builds a new token service: it keeps the database's keys (and their refresh), the shared login
    counts and the revocation listener."""
    import json
    import signal

    fleet = make_fleet("fleet-reload", count=2)
    r1, r2 = fleet.replicas
    old_kid = kid_of(r1.tokens()["access_token"])
    for _ in range(2):
        assert_error(r1.login("bob", password="wrong"), 401, "invalid_grant")
    config = dict(r1.gw.config)
    config["routes"] = [{"path_prefix": "/api", "upstream": "app"}, {"path_prefix": "/", "upstream": "app"}]
    with open(r1.gw.config_path + ".tmp", "w") as f:
        json.dump(config, f)
    os.replace(r1.gw.config_path + ".tmp", r1.gw.config_path)
    r1.gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while b"configuration reloaded" not in r1.gw.logs():
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.05)
    # Counted before the reload and on the other replica: the sixth attempt is refused.
    for _ in range(3):
        assert_error(r2.login("bob", password="wrong"), 401, "invalid_grant")
    assert_error(r1.login("bob"), 429, "too_many_requests", "login_rate_limited")
    # Revocations still arrive.
    t = r1.tokens()
    assert kid_of(t["access_token"]) == old_kid
    at = logout(r2, t["access_token"])
    refused_within(r1.gw, t["access_token"], DEADLINE, since=at)
    # A new key is still picked up, published and then signed with.
    p = subprocess.run([binary, "keys", "generate", "--config", r2.gw.config_path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    new_kid = p.stdout.split()[0]
    deadline = time.monotonic() + ACTIVATION
    while jwks_kids(r1.gw) != {old_kid, new_kid}:
        assert time.monotonic() < deadline, jwks_kids(r1.gw)
        time.sleep(0.05)
    time.sleep(ACTIVATION + 0.2)
    t = r1.tokens()
    assert kid_of(t["access_token"]) == new_kid
    assert api(r1.gw, t["access_token"]).status_code == 200 and api(r2.gw, t["access_token"]).status_code == 200
    # The reloaded token service's own logout/introspection trust the new key too.
    logout(r1, t["access_token"])


def test_a_postgres_store_needs_the_key_encryption_key(binary, workdir, upstream, pg):  # noqa: F811
    fleet_dir = os.path.join(workdir, "fleet-nokek")
    os.makedirs(fleet_dir, exist_ok=True)
    write_users(fleet_dir)
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream.port}"}},
        "routes": [{"path_prefix": "/", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": ["api"]},
        "token_service": {"issuer": f"http://127.0.0.1:{port}", "audience": "api", "users_file": "users.json"},
        "store": pg.store_config(),
    }
    import json
    path = os.path.join(fleet_dir, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    for command in (["check"], ["serve"]):
        p = subprocess.run([binary, *command, "--config", path], capture_output=True, text=True, timeout=60, cwd=fleet_dir)
        assert p.returncode == 1, (command, p.stdout, p.stderr)
        assert "token_service.signing.key_encryption_key" in p.stdout + p.stderr, p.stdout + p.stderr
        assert pg.password not in p.stdout + p.stderr
