#!/usr/bin/env python3
"""gRPC unary calls per second through Portcullis beside the same calls made directly, in one run (DESIGN §11).

The upstream is Tests/e2e/grpc_upstream.py (grpcio, generic handlers, `Unary` echoing the call's metadata) on a
cleartext port; Portcullis forwards to it over h2c (`http_version: "h2c"`, libcurl >= 8) on an `auth: none` route,
and, with --token, on a route that verifies one ES256 token reused by every call. Clients are grpcio channels over
cleartext HTTP/2, CLIENTS threads each with its own channel, for DURATION seconds per row; rows alternate for ROUNDS
rounds and the median is printed. Everything started here is stopped by pid on exit.

Usage: Benchmarks/grpc-bench.py [--duration 10] [--clients 8] [--rounds 3] [--bin .build/release/portcullis]
The upstream (a Python server) is the bottleneck on small machines; the ratio, not the absolute rate, is the result.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc

from benchlib import GatewayProcess, ROOT, free_port, stop_processes

E2E = os.path.join(ROOT, "Tests", "e2e")


def run_row(target: str, method: str, metadata, clients: int, duration: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + duration

    def worker(i: int):
        with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            call = channel.unary_unary(method)
            call(b"warm", metadata=metadata, timeout=10)
            while time.monotonic() < stop:
                call(b"x", metadata=metadata, timeout=10)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / duration


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin", default=os.environ.get("PORTCULLIS_BIN", os.path.join(ROOT, ".build", "release", "portcullis")))
    parser.add_argument("--token", action="store_true", help="add the row with a verified ES256 token")
    args = parser.parse_args()
    args.bin = os.path.abspath(args.bin)
    sys.path.insert(0, E2E)
    work = tempfile.mkdtemp(prefix="grpc-bench-")
    procs: list[subprocess.Popen] = []
    try:
        up_port = free_port()
        up = subprocess.Popen([sys.executable, os.path.join(E2E, "grpc_upstream.py"), "--h2c-port", str(up_port)],
                              stdout=subprocess.PIPE, cwd=E2E)
        procs.append(up)
        assert b"READY" in up.stdout.readline()
        config = {
            "listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}",
            "upstreams": {"grpc": {"url": f"http://127.0.0.1:{up_port}", "http_version": "h2c"}},
            "routes": [{"path_prefix": "/open.Echo", "upstream": "grpc", "auth": "none"},
                       {"path_prefix": "/auth.Echo", "upstream": "grpc"}],
            "log": {"level": "warning", "access_log": False},
        }
        metadata = None
        env = dict(os.environ)
        if args.token:
            import tokens as tokens_mod
            keys = tokens_mod.KeySet(os.path.join(work, "keys"))
            config["auth"] = {"audiences": [tokens_mod.AUD]}
            config["issuers"] = keys.issuers_config(work)
            env.update(keys.env())
            metadata = [("authorization", f"Bearer {keys.mint('ES256')}")]
        gw = GatewayProcess(args.bin, work, config, env=env)
        procs.append(gw.proc)
        gw.wait()
        rows = {"direct": (f"127.0.0.1:{up_port}", "/open.Echo/Unary", None),
                "portcullis": (config["listen"], "/open.Echo/Unary", None)}
        if args.token:
            rows["portcullis + token"] = (config["listen"], "/auth.Echo/Unary", metadata)
        results: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, (target, method, md) in rows.items():
                results[name].append(run_row(target, method, md, args.clients, args.duration))
        direct = statistics.median(results["direct"])
        print(f"gRPC unary calls/s, {args.clients} clients, {args.rounds} x {args.duration:g} s (median)")
        for name, values in results.items():
            median = statistics.median(values)
            print(f"  {name:20s} {median:10.0f}   {median / direct:6.2f} of direct   rounds: "
                  + ", ".join(f"{v:.0f}" for v in values))
    finally:
        stop_processes(procs)


if __name__ == "__main__":
    main()
