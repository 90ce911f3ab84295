#!/usr/bin/env python3
"""Token-service benchmarks (issue 3): refreshes per second on the SQLite store (beside the memory store, in one
run), and login latency at bcrypt cost 12 (beside the raw bcrypt check of the same hash in this process).

Not a test: it prints numbers and ratios and never fails on timing. The gateway is pinned to CPU 0, the clients to
CPU 1 (like peerbench), so client and server do not share a core.

Usage: Benchmarks/token-bench.py [--build] [--binary PATH] [--seconds 10] [--clients 8] [--logins 20]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

import bcrypt

from benchlib import Connection, GatewayProcess, free_port, release_binary

PASSWORD = "bench-password-1234"


def start_gateway(binary: str, work: str, store: dict, password_hash: str) -> tuple[GatewayProcess, int]:
    port = free_port()
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "users.json"), "w") as f:
        json.dump({"users": [{"username": f"user{i}", "password_hash": password_hash, "scopes": ["read"]}
                             for i in range(64)]}, f)
    config = {
        "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{free_port()}",
        "routes": [{"path_prefix": "/", "upstream": "demo"}],
        "token_service": {"issuer": f"http://127.0.0.1:{port}", "users_file": "users.json",
                          "signing": {"key_dir": "keys"},
                          "login_limits": {"per_username": 1000000, "per_address": 1000000}},
        "store": store,
        "log": {"level": "warning", "access_log": False},
    }
    return GatewayProcess(binary, work, config, cpus="0").wait(), port


def post(conn: Connection, path: str, form: dict) -> tuple[int, dict]:
    return conn.form(path, form)


def refresh_worker(args) -> tuple[int, list[float], int]:
    port, index, seconds = args
    os.sched_setaffinity(0, {1})
    conn = Connection(port)
    status, tokens = post(conn, "/auth/login", {"username": f"user{index}", "password": PASSWORD})
    assert status == 200, tokens
    refresh = tokens["refresh_token"]
    latencies, errors = [], 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        status, body = post(conn, "/auth/token", {"grant_type": "refresh_token", "refresh_token": refresh})
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            errors += 1
            break
        refresh = body["refresh_token"]
    return len(latencies), latencies, errors


def refresh_run(port: int, clients: int, seconds: float) -> dict:
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(refresh_worker, [(port, i, seconds) for i in range(clients)])
    count = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    return {"per_second": count / seconds, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "errors": sum(r[2] for r in results)}


def login_run(port: int, n: int) -> list[float]:
    conn = Connection(port)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        status, body = post(conn, "/auth/login", {"username": f"user{i % 64}", "password": PASSWORD})
        times.append(time.perf_counter() - t0)
        assert status == 200, body
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", help="gateway binary (default: the release build, built when missing)")
    parser.add_argument("--build", action="store_true", help="run swift build -c release first")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--cost", type=int, default=12)
    args = parser.parse_args()
    args.binary = release_binary(args.binary, args.build)
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=args.cost)).decode()

    results = {}
    for name, store in [("sqlite", {"type": "sqlite", "path": "data/portcullis.db"}), ("memory", {"type": "memory"})]:
        work = tempfile.mkdtemp(prefix=f"portcullis-token-bench-{name}-")
        proc, port = start_gateway(args.binary, work, store, password_hash)
        try:
            refresh_run(port, args.clients, 1)  # warm-up
            results[name] = refresh_run(port, args.clients, args.seconds)
            if name == "sqlite":
                results["login"] = login_run(port, args.logins)
        finally:
            proc.stop()
            shutil.rmtree(work, ignore_errors=True)

    os.sched_setaffinity(0, {0})
    raw = []
    for _ in range(args.logins):
        t0 = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), password_hash.encode())
        raw.append(time.perf_counter() - t0)

    sqlite, memory = results["sqlite"], results["memory"]
    print(f"refresh_token grant, {args.clients} clients, {args.seconds:.0f} s, gateway on CPU 0, clients on CPU 1")
    for name in ("sqlite", "memory"):
        r = results[name]
        print(f"  {name:7} {r['per_second']:8.0f} refreshes/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
              f"   errors {r['errors']}")
    print(f"  sqlite / memory: {sqlite['per_second'] / memory['per_second']:.2f}x")
    login = results["login"]
    print(f"login at bcrypt cost {args.cost}, {args.logins} sequential logins")
    print(f"  gateway /auth/login  p50 {1000 * statistics.median(login):7.1f} ms   max {1000 * max(login):7.1f} ms")
    print(f"  raw bcrypt.checkpw   p50 {1000 * statistics.median(raw):7.1f} ms   (python bcrypt, same hash, CPU 0)")
    print(f"  login / raw check: {statistics.median(login) / statistics.median(raw):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
