"""`portcullis check` with a PostgreSQL store (DESIGN §9): it connects, so an unreachable database or a refused
password exits 1 naming `store`, before a deployment rolls out; a reachable one is ok. Against a real server."""
from __future__ import annotations

import json
import os
import subprocess

from harness import free_port
from postgres import pg, postgres_server  # noqa: F401 (fixtures)
from token_service import service_config


def _check(binary: str, directory: str, store: dict) -> subprocess.CompletedProcess:
    os.makedirs(directory, exist_ok=True)
    # A postgres store keeps the signing keys in the database, sealed under the key-encryption key.
    signing = {"algorithm": "ES256", "key_encryption_key": "k" * 32}
    config = service_config(directory, upstream_port=free_port(), store=store, signing=signing)
    path = os.path.join(directory, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return subprocess.run([binary, "check", "--config", path], capture_output=True, text=True, timeout=60)


def test_check_connects_to_the_database(binary, workdir, pg):
    run = _check(binary, os.path.join(workdir, "check-pg-ok"), pg.store_config())
    assert run.returncode == 0, run.stderr
    assert ": ok" in run.stdout


def test_check_names_store_for_a_wrong_password(binary, workdir, pg):
    run = _check(binary, os.path.join(workdir, "check-pg-password"), pg.store_config(password="not-the-password"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "store" in run.stderr
    assert "not-the-password" not in run.stderr + run.stdout


def test_check_names_store_for_an_unreachable_database(binary, workdir, pg):
    url = f"postgres://portcullis@127.0.0.1:{free_port()}/portcullis?sslmode=disable"
    store = {"type": "postgres", "url": url, "password": "secret-password-0", "connect_timeout_ms": 500}
    run = _check(binary, os.path.join(workdir, "check-pg-down"), store)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "store" in run.stderr
    assert "secret-password-0" not in run.stderr + run.stdout
