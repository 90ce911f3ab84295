"""gateway.json builders for the end-to-end suite (DESIGN §4)."""
from __future__ import annotations

import tokens as tokens_mod
from harness import free_port

REALM = "api"

IDENTITY_HEADERS = {
    "subject": "X-Auth-Subject",
    "scopes": "X-Auth-Scopes",
    "issuer": "X-Auth-Issuer",
    "claims": {
        "email": "X-Auth-Email",        # string
        "tenant": "X-Auth-Tenant",      # number
        "verified": "X-Auth-Verified",  # bool
        "roles": "X-Auth-Roles",        # array
        "meta": "X-Auth-Meta",          # object
        "name": "X-Auth-Name",          # string with CR/LF/non-ASCII
        "client_id": "X-Client-Id",     # identity header outside the strip prefix
    },
    "strip_prefix": "X-Auth-",
}


def main_config(workdir: str, keys: tokens_mod.KeySet, app_port: int, unix_path: str, down_port: int) -> dict:
    app = f"http://127.0.0.1:{app_port}"
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "limits": {"max_header_bytes": 16384, "max_body_bytes": 300 * 1024 * 1024,
                   "header_timeout_ms": 10000, "idle_timeout_ms": 60000},
        "upstreams": {
            "app": {"url": app},
            "limited": {"url": app, "timeout_ms": 500, "idle_timeout_ms": 1000},
            "down": {"url": f"http://127.0.0.1:{down_port}", "connect_timeout_ms": 1000},
            "sock": {"url": "http://localhost", "unix_socket": unix_path},
        },
        "routes": [
            {"path_prefix": "/public", "upstream": "app", "auth": "none"},
            {"path_prefix": "/optional", "upstream": "app", "auth": "optional"},
            {"path_prefix": "/private", "upstream": "app", "scopes": ["read"]},
            {"path_prefix": "/admin", "upstream": "app", "scopes": ["admin"]},
            {"path_prefix": "/limited", "upstream": "limited", "auth": "none"},
            {"path_prefix": "/down", "upstream": "down", "auth": "none"},
            {"path_prefix": "/unix", "upstream": "sock", "auth": "none"},
            {"path_prefix": "/stripped", "upstream": "app", "auth": "none", "strip_prefix": True},
            {"path_prefix": "/hosted", "upstream": "app", "auth": "none", "host": "only.example.test"},
            {"path_prefix": "/writes", "methods": ["POST"], "upstream": "app", "auth": "none"},
            # No catch-all: everything else is 404 route_not_found (fail closed).
        ],
        "auth": {"realm": REALM, "audiences": [tokens_mod.AUD], "leeway_seconds": 30, "forward_token": False},
        "issuers": keys.issuers_config(workdir),
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "json", "access_log": True},
    }


def small_config(workdir: str, keys: tokens_mod.KeySet, app_port: int) -> dict:
    """Second gateway: forward_token on, small limits, short header timeout."""
    app = f"http://127.0.0.1:{app_port}"
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "limits": {"max_header_bytes": 8192, "max_body_bytes": 1024 * 1024, "header_timeout_ms": 500,
                   "idle_timeout_ms": 60000},
        "upstreams": {"app": {"url": app}},
        "routes": [
            {"path_prefix": "/public", "upstream": "app", "auth": "none"},
            {"path_prefix": "/private", "upstream": "app", "scopes": ["read"]},
        ],
        "auth": {"realm": REALM, "audiences": [tokens_mod.AUD], "forward_token": True},
        "issuers": keys.issuers_config(workdir),
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "text", "access_log": True},
    }
