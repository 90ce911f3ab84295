"""Who may introspect (issue 10): the container config binds the admin listener to 0.0.0.0 for its probes, and
`POST /introspect` took no authentication, so anyone who could reach the port learned whether a token was live and
whose it was. Now introspection requires `token_service.introspection_token` as a bearer secret when one is set, is
served without one only on a loopback admin listener, and is off (404) otherwise; the probes keep working."""
from __future__ import annotations

import os

import requests

from harness import Gateway, free_port
from token_service import Service, service_config

SECRET = "s3cret-introspection-token-0123456789abcdef"


def start(binary, workdir, upstream, name: str, admin_host: str, **overrides) -> Service:
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    config = service_config(d, upstream.port, **overrides)
    config["admin_listen"] = f"{admin_host}:{free_port()}"
    gw = Gateway(binary, d, config, name=name)
    gw.admin = ("127.0.0.1", gw.admin[1])  # a 0.0.0.0 listener is reached over loopback here
    gw.wait_healthy()
    return Service(gw, upstream)


def introspect(svc: Service, token: str, authorization: str | None = None) -> requests.Response:
    host, port = svc.gw.admin
    headers = {"Authorization": authorization} if authorization else {}
    return requests.post(f"http://{host}:{port}/introspect", data={"token": token}, headers=headers, timeout=30)


def probe(svc: Service, path: str) -> int:
    host, port = svc.gw.admin
    return requests.get(f"http://{host}:{port}{path}", timeout=10).status_code


def test_a_public_admin_listener_without_a_secret_does_not_serve_introspection(binary, workdir, upstream):
    svc = start(binary, workdir, upstream, "introspect-public-off", "0.0.0.0")
    try:
        t = svc.tokens("alice")
        r = introspect(svc, t["access_token"])
        assert r.status_code == 404, r.text
        assert "sub" not in r.text
        assert probe(svc, "/healthz") == 200 and probe(svc, "/readyz") == 200
        assert any(b"POST /introspect is off" in line for line in svc.gw.logs().splitlines())
    finally:
        svc.gw.stop()


def test_with_a_secret_introspection_requires_it(binary, workdir, upstream):
    svc = start(binary, workdir, upstream, "introspect-secret", "0.0.0.0", introspection_token=SECRET)
    try:
        t = svc.tokens("alice")
        for authorization in (None, "Bearer wrong", f"Bearer {SECRET}x", f"Basic {SECRET}", f"Bearer {SECRET[:-1]}"):
            r = introspect(svc, t["access_token"], authorization)
            assert r.status_code == 401, (authorization, r.text)
            assert r.json()["reason"] == "introspection_unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer ")
            assert "user-alice" not in r.text
        r = introspect(svc, t["access_token"], f"bearer {SECRET}")
        assert r.status_code == 200 and r.json()["active"] is True and r.json()["sub"] == "user-alice"
        assert probe(svc, "/healthz") == 200
    finally:
        svc.gw.stop()


def test_a_loopback_admin_listener_keeps_serving_introspection_without_a_secret(binary, workdir, upstream):
    svc = start(binary, workdir, upstream, "introspect-loopback", "127.0.0.1")
    try:
        t = svc.tokens("alice")
        assert introspect(svc, t["access_token"]).json()["active"] is True
    finally:
        svc.gw.stop()


def test_a_short_secret_is_refused(binary, workdir, upstream):
    d = os.path.join(workdir, "introspect-short")
    os.makedirs(d, exist_ok=True)
    config = service_config(d, upstream.port, introspection_token="short")
    gw = Gateway(binary, d, config, name="introspect-short")
    try:
        assert gw.proc.wait(timeout=30) == 1
        assert b"token_service.introspection_token: must be at least 32 bytes long" in gw.logs()
    finally:
        gw.stop()
