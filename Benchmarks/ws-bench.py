#!/usr/bin/env python3
"""WebSocket relaying: Portcullis against nginx's WebSocket proxying, in the same run, with the same echo server.

    python3 Benchmarks/ws-bench.py [--seconds 10] [--connections 16] [--window 8] [--size 128] [--idle 1000]

Measures, for the echo server direct, through nginx and through Portcullis:
  * latency: one connection, one message in flight, `--size` bytes: p50 / p99 of the round trip, and what the proxy
    adds to the direct p50 / p99;
  * throughput: `--connections` connections with `--window` messages in flight each, for `--seconds`: echoed
    messages per second;
  * memory per idle tunnel: RSS of the proxy before and after `--idle` idle tunnels are open, divided by their count.

Placement (2-core machine): each proxy runs on CPU 0 alone (nginx: one worker, no master; Portcullis: its event-loop
count follows the affinity mask, so one loop); the echo server and the client share CPU 1. Both are Python
(`websockets`, compression off), so the client side bounds the throughput; the numbers compare the proxies under the
same load rather than measure their ceilings. Portcullis checks a real token (HS256) on every handshake; nginx checks
nothing. The binary is `$PORTCULLIS_BIN`, else `.build/release/portcullis`, else `.build/debug/portcullis` (named in
the output). Every process started here is stopped by its pid.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import GatewayProcess, ROOT, free_port, rss_kib, stop_processes

SECRET = "ws-bench-secret-0123456789abcdef0123456789abcdef"


def wait_port(port: int, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


ECHO_SERVER = r'''
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None, ping_interval=None):
        print("READY", flush=True)
        await asyncio.Future()
asyncio.run(main())
'''

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{echo};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def mint_token() -> str:
    import jwt
    now = int(time.time())
    return jwt.encode({"iss": "bench", "sub": "bench-user", "aud": "api", "exp": now + 3600, "iat": now,
                       "scope": "read"}, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


def portcullis_binary() -> str:
    if os.environ.get("PORTCULLIS_BIN"):
        return os.environ["PORTCULLIS_BIN"]
    for kind in ("release", "debug"):
        path = os.path.join(ROOT, ".build", kind, "portcullis")
        if os.path.exists(path):
            return path
    sys.exit("no portcullis binary: swift build -c release --product portcullis")


async def latency(url: str, headers, size: int, count: int) -> list[float]:
    from websockets.asyncio.client import connect
    payload = os.urandom(size)
    samples = []
    async with connect(url, additional_headers=headers, compression=None, max_size=None, ping_interval=None,
                       proxy=None) as ws:
        for _ in range(200):  # warm-up
            await ws.send(payload)
            await ws.recv()
        for _ in range(count):
            t = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            samples.append((time.perf_counter() - t) * 1e6)
    return samples


async def throughput(url: str, headers, size: int, connections: int, window: int, seconds: float) -> float:
    from websockets.asyncio.client import connect
    payload = os.urandom(size)
    conns = [await connect(url, additional_headers=headers, compression=None, max_size=None, ping_interval=None,
                           proxy=None) for _ in range(connections)]
    counts = [0] * connections
    stop = time.monotonic() + seconds

    async def run(i, ws):
        from websockets.exceptions import ConnectionClosed
        try:
            for _ in range(window):
                await ws.send(payload)
            while time.monotonic() < stop:
                await ws.recv()
                counts[i] += 1
                await ws.send(payload)
        except ConnectionClosed:
            pass

    start = time.monotonic()
    await asyncio.gather(*[run(i, ws) for i, ws in enumerate(conns)])
    elapsed = time.monotonic() - start
    for ws in conns:
        await ws.close()
    return sum(counts) / elapsed


async def idle_memory(url: str, headers, pid: int, count: int) -> float:
    from websockets.asyncio.client import connect
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    conns = []
    for i in range(0, count, 50):
        conns += await asyncio.gather(*[connect(url, additional_headers=headers, compression=None, ping_interval=None,
                                                proxy=None, open_timeout=30) for _ in range(min(50, count - i))])
    await asyncio.sleep(1)
    after = rss_kib(pid)
    await asyncio.gather(*[ws.close() for ws in conns])
    return (after - before) / count


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--latency-count", type=int, default=5000)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    work = tempfile.mkdtemp(prefix="ws-bench-")
    os.makedirs(os.path.join(work, "tmp"))
    procs: list[subprocess.Popen] = []
    try:
        echo_port, nginx_port, gw_port = free_port(), free_port(), free_port()
        with open(os.path.join(work, "echo.py"), "w") as f:
            f.write(ECHO_SERVER)
        echo = subprocess.Popen(["taskset", "-c", "1", sys.executable, os.path.join(work, "echo.py"), str(echo_port)],
                                stdout=subprocess.PIPE)
        procs.append(echo)
        echo.stdout.readline()

        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=work, port=nginx_port, echo=echo_port))
        nginx = subprocess.Popen(["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-p", work, "-c",
                                  os.path.join(work, "nginx.conf")], stderr=subprocess.DEVNULL)
        procs.append(nginx)

        binary = portcullis_binary()
        config = {
            "listen": f"127.0.0.1:{gw_port}", "admin_listen": f"127.0.0.1:{free_port()}",
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{echo_port}"}},
            "routes": [{"path_prefix": "/", "upstream": "echo"}],
            "auth": {"audiences": ["api"]},
            "issuers": [{"issuer": "bench", "hmac_secret": SECRET, "algorithms": ["HS256"]}],
            "identity_headers": {"subject": "X-Auth-Subject"},
            "log": {"level": "warning", "format": "json", "access_log": False},
        }
        gw = GatewayProcess(binary, os.path.join(work, "gateway"), config, cpus="0")
        procs.append(gw.proc)
        gw.wait()
        wait_port(nginx_port)

        auth = [("Authorization", f"Bearer {mint_token()}")]
        targets = [("direct", f"ws://127.0.0.1:{echo_port}/", [], None),
                   ("nginx", f"ws://127.0.0.1:{nginx_port}/", [], nginx.pid),
                   ("portcullis", f"ws://127.0.0.1:{gw_port}/", auth, gw.pid)]
        os.sched_setaffinity(0, {1})
        results = {}
        for name, url, headers, pid in targets:
            lat = asyncio.run(latency(url, headers, args.size, args.latency_count))
            mps = asyncio.run(throughput(url, headers, args.size, args.connections, args.window, args.seconds))
            idle = asyncio.run(idle_memory(url, headers, pid, args.idle)) if pid else None
            results[name] = {"p50_us": percentile(lat, 0.5), "p99_us": percentile(lat, 0.99), "mean_us": statistics.mean(lat),
                             "messages_per_second": mps, "idle_kib_per_tunnel": idle}
        base = results["direct"]
        print(f"portcullis binary: {binary}")
        print(f"{args.size}-byte messages; latency: 1 connection, {args.latency_count} round trips; throughput: "
              f"{args.connections} connections × {args.window} in flight, {args.seconds:.0f} s\n")
        print("| target | p50 µs | p99 µs | added p50 µs | added p99 µs | messages/s | KiB per idle tunnel |")
        print("|---|---|---|---|---|---|---|")
        for name, r in results.items():
            idle = f"{r['idle_kib_per_tunnel']:.1f}" if r["idle_kib_per_tunnel"] is not None else "–"
            print(f"| {name} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['p50_us'] - base['p50_us']:.0f} | "
                  f"{r['p99_us'] - base['p99_us']:.0f} | {r['messages_per_second']:.0f} | {idle} |")
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    finally:
        stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
