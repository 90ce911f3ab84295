"""The token-service gateway used by several end-to-end files: its config, a client with the endpoint helpers, and
the RFC 6749 error assertion."""
from __future__ import annotations

import requests

from harness import Gateway, free_port
from users import PASSWORDS, write_users

STORES = [{"type": "memory"}, {"type": "sqlite", "path": "data/sessions.db"}]


def service_config(directory: str, upstream_port: int, port: int | None = None, store: dict | None = None,
                   **overrides) -> dict:
    port = port or free_port()
    write_users(directory)
    service = {
        "issuer": f"http://127.0.0.1:{port}", "audience": "api",
        "access_token_ttl_seconds": 900, "refresh_reuse_grace_seconds": 5,
        "signing": {"algorithm": "ES256", "key_dir": "keys"}, "users_file": "users.json",
    }
    service.update(overrides)
    return {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream_port}"}},
        "routes": [
            {"path_prefix": "/admin", "upstream": "app", "scopes": ["admin"]},
            {"path_prefix": "/", "upstream": "app"},
        ],
        "auth": {"realm": "api", "audiences": ["api"], "leeway_seconds": 0},
        "identity_headers": {"subject": "X-Auth-Subject", "scopes": "X-Auth-Scopes",
                             "claims": {"email": "X-Auth-Email"}},
        "token_service": service,
        "store": store or {"type": "memory"},
        "log": {"level": "info", "format": "json"},
    }


class Service:
    """A gateway with its token service, plus small helpers for the endpoints."""

    def __init__(self, gateway: Gateway, upstream):
        self.gw = gateway
        self.up = upstream
        self.issuer = gateway.config["token_service"]["issuer"]

    def post(self, path: str, data=None, json_body=None, headers=None) -> requests.Response:
        return requests.post(self.gw.url(path), data=data, json=json_body, headers=headers, timeout=30)

    def login(self, user="alice", password=None, **extra) -> requests.Response:
        return self.post("/auth/login", data={"username": user, "password": password or PASSWORDS[user], **extra})

    def tokens(self, user="alice", **extra) -> dict:
        r = self.login(user, **extra)
        assert r.status_code == 200, r.text
        return r.json()

    def refresh(self, refresh_token: str, **extra) -> requests.Response:
        return self.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})

    def api(self, access_token: str, path="/api/items") -> requests.Response:
        return requests.get(self.gw.url(path), headers={"Authorization": f"Bearer {access_token}"}, timeout=30)

    def admin(self, path: str, data=None) -> requests.Response:
        host, port = self.gw.admin
        return requests.post(f"http://{host}:{port}{path}", data=data, timeout=30)


def assert_error(r: requests.Response, status: int, error: str, reason: str | None = None):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    if reason:
        assert body["reason"] == reason, body
    assert body["error_description"] and body["request_id"]
    assert r.headers["Cache-Control"] == "no-store"
