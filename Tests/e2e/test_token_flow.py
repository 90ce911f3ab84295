"""The token service end to end (issue 3, DESIGN §7): login, the password and refresh_token grants, rotation with
replay and reuse detection, logout, RFC 7009 revocation, RFC 8414 metadata, RFC 7662 introspection, login rate
limits, idle and absolute session lifetimes, and sessions surviving a restart on the SQLite store.

Everything runs against the real binary, a real upstream process and real HTTP clients: `requests`, and authlib's
OAuth2Session as an independent OAuth 2.0 client. Issued tokens are checked with PyJWT against the published JWKS."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from harness import Gateway, free_port, stop_process
from token_service import STORES, Service, assert_error, service_config
from users import PASSWORDS

# ------------------------------------------------------------------------------------------------------------------
# the whole flow with an independent OAuth 2.0 client


def test_whole_flow_with_authlib_oauth2session(make_service):
    """Log in (password grant) → call the API → the access token expires → 401 → automatic refresh → call again →
    log out → the session's tokens stop working."""
    svc = make_service("flow-authlib", access_token_ttl_seconds=2)
    token_url = svc.gw.url("/auth/token")
    updates: list[dict] = []
    session = OAuth2Session(client_id="web-app", token_endpoint=token_url, scope="read write",
                            update_token=lambda token, refresh_token=None, access_token=None: updates.append(token),
                            leeway=0)
    session.token_endpoint_auth_method = "none"
    first = session.fetch_token(token_url, username="alice", password=PASSWORDS["alice"], grant_type="password")
    assert first["token_type"] == "Bearer" and first["scope"] == "read write"
    assert first["refresh_token"].startswith("prt_")

    mark = svc.up.log.mark()
    r = session.get(svc.gw.url("/api/items"), timeout=30)
    assert r.status_code == 200
    forwarded = svc.up.log.since(mark)[-1]
    names = {k.lower(): v for k, v in forwarded["headers"]}
    assert names["x-auth-subject"] == "user-alice"
    assert names["x-auth-email"] == "alice@example.com"
    assert "authorization" not in names

    # The access token expires: the gateway says so with an RFC 6750 challenge.
    time.sleep(3.2)
    expired = svc.api(first["access_token"])
    assert expired.status_code == 401
    assert expired.json()["reason"] == "token_expired"
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]

    # authlib sees the token expired, refreshes it with the refresh_token grant, and retries with the new one.
    r = session.get(svc.gw.url("/api/items"), timeout=30)
    assert r.status_code == 200, r.text
    assert len(updates) == 1
    second = session.token
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    claims = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "web-app" and claims["sub"] == "user-alice"

    # Log out with the current access token: 204, then everything of the session is refused.
    r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert r.status_code == 204 and r.content == b""
    r = session.get(svc.gw.url("/api/items"), timeout=30)
    assert r.status_code == 401 and r.json()["reason"] == "token_revoked"
    assert_error(svc.refresh(second["refresh_token"]), 400, "invalid_grant", "session_revoked")


# ------------------------------------------------------------------------------------------------------------------
# tokens verified by an independent JOSE library


def test_issued_tokens_verify_with_pyjwt_against_the_jwks(make_service):
    svc = make_service("flow-pyjwt")
    t = svc.tokens("alice", client_id="mobile")
    header = jwt.get_unverified_header(t["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    jwks = jwt.PyJWKSet.from_dict(requests.get(svc.gw.url("/.well-known/jwks.json"), timeout=10).json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(t["access_token"], key=key.key, algorithms=["ES256"], audience="api", issuer=svc.issuer,
                        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]})
    assert claims["sub"] == "user-alice"
    assert claims["scope"] == "read write admin"
    assert claims["client_id"] == "mobile"
    assert claims["sid"] and claims["jti"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["email"] == "alice@example.com" and claims["roles"] == ["ops", "dev"]
    assert t["expires_in"] == 900 and t["token_type"] == "Bearer"
    assert 0 < t["refresh_token_expires_in"] <= 86400


def test_token_responses_are_not_cacheable_and_nothing_reaches_the_upstream(make_service):
    svc = make_service("flow-nostore")
    mark = svc.up.log.mark()
    r = svc.login()
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    assert r.headers["Content-Type"] == "application/json"
    svc.refresh(r.json()["refresh_token"])
    svc.post("/auth/revoke", data={"token": "nope"})
    # A barrier through the gateway: once it is logged upstream, anything forwarded before it would be too.
    assert svc.api(r.json()["access_token"], "/barrier").status_code == 200
    assert [q["target"] for q in svc.up.log.since(mark)] == ["/barrier"]


# ------------------------------------------------------------------------------------------------------------------
# rotation, replay, reuse


def test_refresh_rotates_and_a_replay_within_grace_returns_the_same_pair(make_service):
    svc = make_service("flow-rotate")
    t0 = svc.tokens()
    r1 = svc.refresh(t0["refresh_token"])
    assert r1.status_code == 200
    t1 = r1.json()
    assert t1["refresh_token"] != t0["refresh_token"] and t1["access_token"] != t0["access_token"]
    # A retry of the same refresh (lost response, a second tab) within the grace window: the same answer.
    again = svc.refresh(t0["refresh_token"])
    assert again.status_code == 200
    assert again.json() == t1
    # The successor works, and rotates in turn.
    t2 = svc.refresh(t1["refresh_token"]).json()
    assert t2["refresh_token"] not in (t0["refresh_token"], t1["refresh_token"])
    assert svc.api(t2["access_token"]).status_code == 200


@pytest.mark.parametrize("store", STORES, ids=["memory", "sqlite"])
def test_replay_after_grace_revokes_the_whole_session(make_service, store):
    svc = make_service(f"flow-reuse-{store['type']}", refresh_reuse_grace_seconds=1, store=store)
    t0 = svc.tokens()
    t1 = svc.refresh(t0["refresh_token"]).json()
    t2 = svc.refresh(t1["refresh_token"]).json()
    assert svc.api(t2["access_token"]).status_code == 200
    time.sleep(1.5)
    # The retired token again, after the grace: reuse. The session is revoked...
    assert_error(svc.refresh(t0["refresh_token"]), 400, "invalid_grant", "refresh_token_reused")
    # ...so the newest refresh token is refused too, and so are the session's access tokens, at once.
    assert_error(svc.refresh(t2["refresh_token"]), 400, "invalid_grant", "session_revoked")
    for access in (t1["access_token"], t2["access_token"]):
        r = svc.api(access)
        assert r.status_code == 401 and r.json()["reason"] == "token_revoked"
    # Another session of the same user is untouched.
    other = svc.tokens()
    assert svc.api(other["access_token"]).status_code == 200


@pytest.mark.parametrize("store", STORES, ids=["memory", "sqlite"])
def test_twenty_concurrent_refreshes_rotate_exactly_once(make_service, store):
    svc = make_service(f"flow-concurrent-{store['type']}", store=store)
    t0 = svc.tokens()
    barrier = threading.Barrier(20)

    def refresh(_):
        barrier.wait()
        return svc.refresh(t0["refresh_token"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(refresh, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    # Nothing lost: every caller got the one successor pair.
    bodies = {r.text for r in answers}
    assert len(bodies) == 1
    successor = answers[0].json()
    assert svc.api(successor["access_token"]).status_code == 200
    assert svc.refresh(successor["refresh_token"]).status_code == 200


def test_sessions_and_revocations_survive_a_restart_on_sqlite(make_service, binary):
    svc = make_service("flow-restart", store={"type": "sqlite", "path": "data/sessions.db"})
    live = svc.tokens()
    live = svc.refresh(live["refresh_token"]).json()
    ended = svc.tokens()
    assert svc.post("/auth/logout", headers={"Authorization": f"Bearer {ended['access_token']}"}).status_code == 204
    db = os.path.join(svc.gw.workdir, "data", "sessions.db")
    assert os.stat(db).st_mode & 0o777 == 0o600
    svc.gw.stop()

    again = Gateway(binary, svc.gw.workdir, svc.gw.config, name="flow-restart-2")
    try:
        again.wait_healthy()
        svc2 = Service(again, svc.up)
        # The live session goes on: its access token (same signing key) and its refresh token still work.
        assert svc2.api(live["access_token"]).status_code == 200
        r = svc2.refresh(live["refresh_token"])
        assert r.status_code == 200, r.text
        assert svc2.api(r.json()["access_token"]).status_code == 200
        # The logged-out session stays revoked: in the store, and on the data path from the first request.
        r = svc2.api(ended["access_token"])
        assert r.status_code == 401 and r.json()["reason"] == "token_revoked"
        assert_error(svc2.refresh(ended["refresh_token"]), 400, "invalid_grant", "session_revoked")
    finally:
        again.stop()


# ------------------------------------------------------------------------------------------------------------------
# logout and revocation


def test_logout(make_service):
    svc = make_service("flow-logout")
    t = svc.tokens()
    other = svc.tokens()
    r = svc.post("/auth/logout")
    assert r.status_code == 401 and r.json()["reason"] == "token_missing"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    r = svc.post("/auth/logout", headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401 and r.json()["reason"] == "token_malformed"
    r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
    assert r.status_code == 204
    assert svc.api(t["access_token"]).json()["reason"] == "token_revoked"
    assert_error(svc.refresh(t["refresh_token"]), 400, "invalid_grant", "session_revoked")
    # Logging out twice: the token is already revoked.
    r = svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
    assert r.status_code == 401 and r.json()["reason"] == "token_revoked"
    # Only that session ended.
    assert svc.api(other["access_token"]).status_code == 200


def test_revoke_unknown_tokens_answers_200(make_service):
    svc = make_service("flow-revoke-unknown")
    for token in ["prt_" + "A" * 43, "prt_short", "eyJhbGciOiJub25lIn0.e30.", "anything at all"]:
        r = svc.post("/auth/revoke", data={"token": token})
        assert r.status_code == 200 and r.content == b""
    assert_error(svc.post("/auth/revoke", data={}), 400, "invalid_request")


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revoke_ends_the_session(make_service, which):
    svc = make_service(f"flow-revoke-{which}")
    t = svc.tokens()
    r = svc.post("/auth/revoke", data={"token": t[which], "token_type_hint": which})
    assert r.status_code == 200
    assert svc.api(t["access_token"]).json()["reason"] == "token_revoked"
    assert_error(svc.refresh(t["refresh_token"]), 400, "invalid_grant", "session_revoked")


# ------------------------------------------------------------------------------------------------------------------
# lifetimes


def test_absolute_lifetime_is_not_extended_by_refreshing(make_service):
    svc = make_service("flow-absolute", refresh_token_ttl_seconds=3, refresh_token_idle_ttl_seconds=100)
    t = svc.tokens()
    assert t["refresh_token_expires_in"] <= 3
    deadline = time.time() + 3
    while time.time() < deadline - 1:
        r = svc.refresh(t["refresh_token"])
        assert r.status_code == 200
        t = r.json()
        time.sleep(0.5)
    time.sleep(max(0, deadline - time.time()) + 0.3)
    assert_error(svc.refresh(t["refresh_token"]), 400, "invalid_grant", "session_expired")


def test_idle_lifetime_restarts_at_each_refresh(make_service):
    svc = make_service("flow-idle", refresh_token_ttl_seconds=100, refresh_token_idle_ttl_seconds=2)
    t = svc.tokens()
    for _ in range(3):  # 3 × 1.2 s > the idle lifetime: only refreshing keeps it alive
        time.sleep(1.2)
        r = svc.refresh(t["refresh_token"])
        assert r.status_code == 200, r.text
        t = r.json()
    time.sleep(2.3)
    assert_error(svc.refresh(t["refresh_token"]), 400, "invalid_grant", "session_idle_expired")


# ------------------------------------------------------------------------------------------------------------------
# login and grant errors


def test_wrong_password_and_unknown_user_get_the_same_answer(make_service):
    svc = make_service("flow-badlogin")
    wrong = svc.login("alice", "not-her-password")
    unknown = svc.login("mallory", "whatever")
    for r in (wrong, unknown):
        assert_error(r, 401, "invalid_grant")
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
    assert strip(wrong) == strip(unknown)
    # The password grant answers 400 (RFC 6749 §5.2), with the same body.
    r = svc.post("/auth/token", data={"grant_type": "password", "username": "mallory", "password": "x"})
    assert_error(r, 400, "invalid_grant")
    assert strip(r) == strip(unknown)


def test_login_accepts_json_and_form(make_service):
    svc = make_service("flow-json")
    r = svc.post("/auth/login", json_body={"username": "bob", "password": PASSWORDS["bob"], "scope": "read"})
    assert r.status_code == 200 and r.json()["scope"] == "read"
    r = svc.post("/auth/token", data={"grant_type": "password", "username": "bob", "password": PASSWORDS["bob"]})
    assert r.status_code == 200
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "bob" and claims["client_id"] == "portcullis"


@pytest.mark.parametrize("body,content_type,error", [
    (b"username=alice&username=bob&password=x", "application/x-www-form-urlencoded", "invalid_request"),
    (b"username=alice&password=%zz", "application/x-www-form-urlencoded", "invalid_request"),
    (b"username=al%00ice&password=x", "application/x-www-form-urlencoded", "invalid_request"),
    (b"username=%ff%fe&password=x", "application/x-www-form-urlencoded", "invalid_request"),
    (b'{"username": "alice", "password": 5}', "application/json", "invalid_request"),
    (b'{"username": "alice", "username": "bob", "password": "x"}', "application/json", "invalid_request"),
    (b'["alice"]', "application/json", "invalid_request"),
    (b"{", "application/json", "invalid_request"),
    (b"username=alice&password=x", "text/plain", "invalid_request"),
    (b"password=x", "application/x-www-form-urlencoded", "invalid_request"),
    (b"username=alice", "application/x-www-form-urlencoded", "invalid_request"),
])
def test_malformed_login_bodies_are_invalid_request(make_service, body, content_type, error):
    svc = make_service("flow-malformed")
    r = svc.post("/auth/login", data=body, headers={"Content-Type": content_type})
    assert_error(r, 400, error)


def test_token_endpoint_grant_errors(make_service):
    svc = make_service("flow-grants")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_error(svc.post("/auth/token", data={}), 400, "invalid_request")
    assert_error(svc.post("/auth/token", data={"grant_type": "client_credentials"}), 400, "unsupported_grant_type")
    assert_error(svc.post("/auth/token", data={"grant_type": "authorization_code", "code": "x"}), 400,
                 "unsupported_grant_type")
    assert_error(svc.post("/auth/token", data={"grant_type": "refresh_token"}), 400, "invalid_request")
    assert_error(svc.refresh("prt_" + "A" * 43), 400, "invalid_grant", "refresh_token_unknown")
    assert_error(svc.refresh("not-ours"), 400, "invalid_grant", "refresh_token_unknown")
    r = svc.post("/auth/token", data=b"grant_type=refresh_token&refresh_token=a&refresh_token=b", headers=form)
    assert_error(r, 400, "invalid_request")


def test_scopes_may_only_narrow(make_service):
    svc = make_service("flow-scopes")
    assert_error(svc.login("bob", scope="read admin"), 400, "invalid_scope")
    t = svc.tokens("alice", scope="read write")
    assert t["scope"] == "read write"
    assert_error(svc.refresh(t["refresh_token"], scope="read admin"), 400, "invalid_scope")
    narrowed = svc.refresh(t["refresh_token"], scope="read")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "read"
    # Narrowing one response does not shrink the session: the next refresh may ask for the grant again.
    r = svc.refresh(narrowed.json()["refresh_token"])
    assert r.json()["scope"] == "read write"
    # The route scope check sees the token's scopes: admin was not granted to this session.
    assert svc.api(r.json()["access_token"], "/admin/x").status_code == 403


def test_refresh_with_another_client_id_is_refused(make_service):
    svc = make_service("flow-client")
    t = svc.tokens("alice", client_id="app-one")
    assert_error(svc.refresh(t["refresh_token"], client_id="app-two"), 400, "invalid_grant", "client_mismatch")
    assert svc.refresh(t["refresh_token"], client_id="app-one").status_code == 200


def test_failed_logins_are_rate_limited(make_service):
    svc = make_service("flow-ratelimit", login_limits={"per_username": 3, "per_address": 6, "window_seconds": 60})
    for _ in range(3):
        assert svc.login("alice", "wrong").status_code == 401
    # The limit is checked before the password: even the right one is refused now.
    r = svc.login("alice")
    assert_error(r, 429, "too_many_requests", "login_rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # Per username: bob is still fine (a success clears nothing of alice's).
    assert svc.login("bob").status_code == 200
    # Per address: three more failures under other names reach the address limit of 6.
    for name in ("carol", "dave", "erin"):
        assert svc.login(name, "wrong").status_code == 401
    assert_error(svc.login("bob"), 429, "too_many_requests")


def test_endpoint_methods_paths_and_sizes(make_service):
    svc = make_service("flow-http")
    r = requests.get(svc.gw.url("/auth/token"), timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    r = svc.post("/auth/unknown", data={"a": "b"})
    assert r.status_code == 404 and r.json()["reason"] == "route_not_found"
    r = svc.post("/auth/token", data=b"grant_type=password&username=" + b"a" * 20000,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


# ------------------------------------------------------------------------------------------------------------------
# metadata, introspection


def test_authorization_server_metadata(make_service):
    svc = make_service("flow-metadata")
    r = requests.get(svc.gw.url("/.well-known/oauth-authorization-server"), timeout=10)
    assert r.status_code == 200
    meta = r.json()
    assert meta["issuer"] == svc.issuer
    assert meta["token_endpoint"] == svc.issuer + "/auth/token"
    assert meta["revocation_endpoint"] == svc.issuer + "/auth/revoke"
    assert meta["jwks_uri"] == svc.issuer + "/.well-known/jwks.json"
    assert set(meta["grant_types_supported"]) == {"password", "refresh_token"}
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]
    assert meta["scopes_supported"] == ["admin", "read", "write"]
    # The jwks_uri it names serves the keys tokens are signed with.
    assert requests.get(meta["jwks_uri"], timeout=10).json()["keys"]


def test_introspection_on_the_admin_listener(make_service):
    svc = make_service("flow-introspect")
    t = svc.tokens("alice", scope="read")
    access = svc.admin("/introspect", {"token": t["access_token"]}).json()
    assert access["active"] is True and access["sub"] == "user-alice" and access["scope"] == "read"
    assert access["iss"] == svc.issuer and access["client_id"] == "portcullis"
    refresh = svc.admin("/introspect", {"token": t["refresh_token"]}).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token" and refresh["sub"] == "user-alice"
    assert svc.admin("/introspect", {"token": "garbage"}).json() == {"active": False}
    # The data listener does not serve it.
    assert requests.post(svc.gw.url("/introspect"), data={"token": "x"}, timeout=10).status_code == 401
    svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
    assert svc.admin("/introspect", {"token": t["access_token"]}).json() == {"active": False}
    assert svc.admin("/introspect", {"token": t["refresh_token"]}).json() == {"active": False}
    r = svc.admin("/introspect", {})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_no_secret_reaches_the_logs(make_service):
    svc = make_service("flow-logs")
    t = svc.tokens()
    svc.refresh(t["refresh_token"])
    svc.login("alice", "a-wrong-password")
    svc.post("/auth/logout", headers={"Authorization": f"Bearer {t['access_token']}"})
    logs = svc.gw.logs()
    for secret in (t["access_token"], t["refresh_token"], PASSWORDS["alice"], "a-wrong-password"):
        assert secret.encode() not in logs
    # The signature part alone must not appear either.
    assert t["access_token"].rsplit(".", 1)[1].encode() not in logs
    lines = [json.loads(l) for l in logs.splitlines() if l.startswith(b"{") and b'"request_id"' in l]
    reasons = {l.get("reason") for l in lines if l.get("path") == "/auth/login"}
    assert "invalid_credentials" in reasons


# ------------------------------------------------------------------------------------------------------------------
# login_upstream


@pytest.fixture
def login_upstream(workdir):
    port = free_port()
    log = os.path.join(workdir, f"login-upstream-{port}.jsonl")
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "login_upstream.py"),
                             "--port", str(port), "--log", log], stdout=subprocess.PIPE)
    assert b"READY" in proc.stdout.readline()
    yield port, log
    stop_process(proc, timeout=5)


def test_login_upstream_checks_the_credentials(binary, workdir, upstream, login_upstream):
    port, log = login_upstream
    d = os.path.join(workdir, "flow-login-upstream")
    os.makedirs(d, exist_ok=True)
    config = service_config(d, upstream.port)
    del config["token_service"]["users_file"]
    config["upstreams"]["auth"] = {"url": f"http://127.0.0.1:{port}", "timeout_ms": 1500}
    config["token_service"]["login_upstream"] = {"upstream": "auth", "path": "/login"}
    config["token_service"]["login_limits"] = {"per_username": 2, "per_address": 100}
    gw = Gateway(binary, d, config, name="flow-login-upstream")
    try:
        gw.wait_healthy()
        svc = Service(gw, upstream)
        r = svc.post("/auth/login", data={"username": "ext-alice", "password": "right", "scope": "read"})
        assert r.status_code == 200, r.text
        claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "ext-alice-id" and claims["scope"] == "read" and claims["department"] == "research"
        assert svc.refresh(r.json()["refresh_token"]).status_code == 200
        # The upstream got JSON with both fields, and nothing of the client's request.
        seen = [json.loads(line) for line in open(log)]
        assert seen[0] == {"path": "/login", "content_type": "application/json", "authorization": None,
                           "username": "ext-alice", "has_password": True}
        # A 401 from the upstream is a wrong password, counted against the limit.
        assert_error(svc.post("/auth/login", data={"username": "ext-alice", "password": "wrong"}), 401, "invalid_grant")
        # An upstream that fails, answers garbage, or is too slow: 503, never "wrong password", never counted.
        for user in ("broken", "garbage", "no-subject", "slow", "broken", "broken"):
            r = svc.post("/auth/login", data={"username": user, "password": "x"})
            assert_error(r, 503, "temporarily_unavailable", "login_upstream_unavailable")
            assert r.headers["Retry-After"] == "1"
        assert b"right" not in gw.logs()
    finally:
        gw.stop()
