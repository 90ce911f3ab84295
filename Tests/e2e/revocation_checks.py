"""What the revocation tests (one token service and its feed followers; a fleet of replicas) ask of a gateway: the
API with a token, its readiness, and how long until it refuses a revoked session."""
from __future__ import annotations

import time

import requests

from harness import Gateway


def api(gw: Gateway, access_token: str) -> requests.Response:
    return requests.get(gw.url("/api/items"), headers={"Authorization": f"Bearer {access_token}"}, timeout=30)


def readyz(gw: Gateway) -> tuple[int, dict]:
    r = requests.get(f"http://{gw.admin[0]}:{gw.admin[1]}/readyz", timeout=10)
    return r.status_code, r.json()


def refused_within(gw: Gateway, access_token: str, limit: float, since: float | None = None) -> float:
    """Polls `gw` until it refuses the token (`token_revoked`); returns the time since `since` (default: now).
    Fails when it is still accepted `limit` seconds after `since`."""
    start = since if since is not None else time.monotonic()
    while True:
        r = api(gw, access_token)
        elapsed = time.monotonic() - start
        if r.status_code == 401:
            assert r.json()["reason"] == "token_revoked", r.text
            return elapsed
        assert r.status_code == 200, r.text
        assert elapsed < limit, f"{gw.base} still accepted the token {elapsed:.3f} s after the revocation"
        time.sleep(0.005)
