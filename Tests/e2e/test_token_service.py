"""Tokens the gateway issues itself (DESIGN §7, first part): signing keys created on first use with kid = RFC 7638
thumbprint, `portcullis keys generate` / `portcullis token issue`, the JWKS at /.well-known/jwks.json, and the gateway
trusting its own issuer. Every token is also verified by an independent JOSE library (PyJWT) against the JWKS."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import jwt
import pytest
import requests

from harness import Gateway, free_port
from users import write_users


@pytest.fixture(scope="module")
def service(tmp_path_factory, binary, upstream):
    work = str(tmp_path_factory.mktemp("token-service"))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream.port}"}},
        "routes": [
            {"path_prefix": "/admin", "upstream": "app", "scopes": ["admin"]},
            {"path_prefix": "/", "upstream": "app"},
        ],
        "token_service": {"issuer": issuer, "audience": "api", "signing": {"algorithm": "ES256", "key_dir": "keys"},
                          "users_file": "users.json"},
        "store": {"type": "memory"},
        "log": {"level": "info", "format": "json"},
    }
    write_users(work)
    config_path = os.path.join(work, "gateway.json")
    with open(config_path, "w") as f:
        json.dump(config, f)

    def cli(*args: str) -> str:
        p = subprocess.run([binary, *args, "--config", config_path], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    es256_token = cli("token", "issue", "--sub", "alice", "--scope", "read write", "--ttl", "600")
    # A second, EdDSA key becomes current; the ES256 one stays published so its tokens keep verifying.
    cli("keys", "generate", "--algorithm", "EdDSA")
    eddsa_token = cli("token", "issue", "--sub", "bob", "--scope", "admin")
    gateway = Gateway(binary, work, config)
    gateway.wait_healthy()
    yield {"gateway": gateway, "issuer": issuer, "work": work, "tokens": {"ES256": es256_token, "EdDSA": eddsa_token}}
    gateway.stop()


def test_key_files_are_private_and_named_by_thumbprint(service):
    keys = os.path.join(service["work"], "keys")
    pems = sorted(n for n in os.listdir(keys) if n.endswith(".pem"))
    assert len(pems) == 2
    for name in pems:
        mode = stat.S_IMODE(os.stat(os.path.join(keys, name)).st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    jwks = requests.get(service["gateway"].url("/.well-known/jwks.json"), timeout=10).json()
    assert sorted(f"{k['kid']}.{k['alg']}.pem" for k in jwks["keys"]) == pems


def test_jwks_is_public_only_and_cacheable(service):
    r = requests.get(service["gateway"].url("/.well-known/jwks.json"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/jwk-set+json"
    assert "max-age" in r.headers["Cache-Control"]
    for key in r.json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys()
        assert key["use"] == "sig"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_issued_tokens_verify_with_an_independent_library(service, alg):
    token = service["tokens"][alg]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == alg
    jwks = jwt.PyJWKSet.from_dict(requests.get(service["gateway"].url("/.well-known/jwks.json"), timeout=10).json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(token, key=key.key, algorithms=[alg], audience="api", issuer=service["issuer"])
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"} <= claims.keys()
    assert claims["client_id"] == "portcullis"
    assert claims["exp"] > time.time()


def test_gateway_trusts_its_own_tokens(service, upstream):
    gw = service["gateway"]
    mark = upstream.log.mark()
    r = requests.get(gw.url("/x"), headers={"Authorization": f"Bearer {service['tokens']['ES256']}"}, timeout=10)
    assert r.status_code == 200, r.text
    forwarded = upstream.log.since(mark)
    assert len(forwarded) == 1
    headers = {n.lower(): v for n, v in forwarded[0]["headers"]}
    assert headers["x-auth-subject"] == "alice"
    assert headers["x-auth-scopes"] == "read write"
    assert headers["x-auth-issuer"] == service["issuer"]
    # Scope enforcement with the EdDSA key's token (admin) and the ES256 one (no admin).
    assert requests.get(gw.url("/admin/x"), headers={"Authorization": f"Bearer {service['tokens']['EdDSA']}"},
                        timeout=10).status_code == 200
    assert requests.get(gw.url("/admin/x"), headers={"Authorization": f"Bearer {service['tokens']['ES256']}"},
                        timeout=10).status_code == 403


def test_foreign_key_with_same_issuer_is_refused(service, upstream):
    """A token claiming the gateway's issuer but signed by another key fails (key_unknown or signature_invalid)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    header = jwt.get_unverified_header(service["tokens"]["ES256"])
    forged = jwt.encode({"iss": service["issuer"], "sub": "mallory", "aud": "api", "exp": int(time.time()) + 600},
                        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"typ": "at+jwt", "kid": header["kid"]})
    mark = upstream.log.mark()
    r = requests.get(service["gateway"].url("/x"), headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert r.status_code == 401
    assert r.json()["reason"] == "signature_invalid"
    assert upstream.log.since(mark) == []


def test_hash_password_is_standard_bcrypt(binary):
    """`portcullis hash-password` prints a $2b$ hash that an independent bcrypt implementation accepts."""
    import bcrypt
    p = subprocess.run([binary, "hash-password", "--cost", "4"], input="correct horse\n", capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    hashed = p.stdout.strip()
    assert hashed.startswith("$2b$04$")
    assert bcrypt.checkpw(b"correct horse", hashed.encode())
    assert not bcrypt.checkpw(b"correct horsE", hashed.encode())


def test_check_reports_users_file_problems(binary, tmp_path):
    """A users file with a plaintext password is refused by `check`, naming token_service.users_file and the entry,
    without echoing the secret."""
    (tmp_path / "users.json").write_text(json.dumps({"users": [{"username": "a", "password_hash": "hunter2"}]}))
    (tmp_path / "gateway.json").write_text(json.dumps({
        "routes": [{"path_prefix": "/", "upstream": "demo"}],
        "token_service": {"users_file": "users.json", "signing": {"key_dir": "keys"}},
    }))
    p = subprocess.run([binary, "check", "--config", str(tmp_path / "gateway.json")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert "token_service.users_file" in p.stderr and "users[0].password_hash" in p.stderr, p.stderr
    assert "hunter2" not in p.stderr
