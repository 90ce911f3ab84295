"""Runs last (file order): positive control after all the negative tests, and the log-hygiene scan.
(security.md §2 N5, N7; DESIGN §6 "No token bytes, claim values or secrets appear in the response or the logs".)"""
from __future__ import annotations

import requests

import tokens as T


def test_gateway_still_alive_and_serving(env):
    """N5: the process survived everything before and still answers the positive control (OK-ES256)."""
    assert env.gw.alive(), f"gateway exited with {env.gw.proc.returncode}"
    mark = env.mark()
    r = requests.get(env.gw.url("/private/final"), headers={"Authorization": f"Bearer {env.keys.mint('ES256')}"},
                     timeout=15)
    assert r.status_code == 200
    req = env.one_forwarded(mark)
    assert [v for n, v in req["headers"] if n.lower() == "x-auth-subject"] == ["user-123"]
    r = requests.get(env.gw.url("/private/final"), timeout=15)
    assert r.status_code == 401


def test_logs_carry_no_tokens_or_secrets(env):
    """N7: neither a token nor its signature, nor an HMAC secret, appears in the gateway's output; access-log
    lines carry no raw CR/LF injected from claims."""
    logs = env.gw.logs()
    leaked = []
    for tok in T.MINTED:
        parts = tok.split(".")
        sig = parts[-1] if len(parts) >= 3 else ""
        if tok.encode() in logs or (len(sig) >= 20 and sig.encode() in logs):
            leaked.append(tok[:40] + "…")
    assert not leaked, f"{len(leaked)} tokens appear in the gateway logs, e.g. {leaked[:3]}"
    for alg, secret in env.keys.hmac.items():
        assert secret not in logs, f"{alg} secret appears in the gateway logs"
    assert b"\nX-Injected" not in logs and b"\rX-Injected" not in logs, "claim CR/LF reached the logs raw"
