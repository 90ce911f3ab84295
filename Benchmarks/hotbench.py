#!/usr/bin/env python3
"""The parts of Benchmarks/peerbench.sh that peerbench itself does not do (stdlib only):

  paced   fixed-rate latency: paced_client.c (open loop, evenly spaced requests, latency from each request's due
          time) against several targets at the same rate, in alternating rounds; p50/p99 over every request of all
          rounds, the achieved rate
  idle    memory per idle keep-alive connection: RSS of a process group before and after N connections, each
          after one request, are open and idle; (after - before) / N in KiB
  cpu     CPU time per request: wrk (peerbench's bearer.lua) against one URL while the user + system time of the
          given process groups (the gateway, the upstream) is read from /proc; µs per request for each
  cpu-curl  the same for the floor's libcurl half: peerbench's curl_client.c, its own CPU time per request
  report  one table and DESIGN §8's ratio lines (PASS/MISS) from the floor, hot, cold, paced and idle results of one
          run; printed, and written as markdown

Benchmarks print numbers; nothing here asserts on timing."""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.parse


# ------------------------------------------------------------------------------------------------------------- paced
def percentile(sorted_values: list[int], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def cmd_paced(a) -> int:
    targets = []
    for spec in a.target:
        name, url = spec.split("=", 1)
        u = urllib.parse.urlsplit(url)
        targets.append((name, u.hostname, u.port, u.path or "/"))
    token = open(a.token_file).read().strip() if a.token_file else ""
    os.makedirs(a.out, exist_ok=True)
    lat: dict[str, list[int]] = {n: [] for n, *_ in targets}
    runs: dict[str, list[dict]] = {n: [] for n, *_ in targets}
    for r in range(1, a.rounds + 1):
        order = targets[(r - 1) % len(targets):] + targets[:(r - 1) % len(targets)]
        for name, host, port, path in order:
            latfile = os.path.join(a.out, f"round{r}-{name}.lat")
            cmd = [a.client, host, str(port), path, str(a.rate), str(a.connections), str(a.duration), str(a.warmup),
                   token, latfile]
            if a.cpus:
                cmd = ["taskset", "-c", a.cpus] + cmd
            out = subprocess.run(cmd, capture_output=True, text=True)
            open(os.path.join(a.out, f"round{r}-{name}.out"), "w").write(out.stdout + out.stderr)
            if out.returncode != 0:
                sys.exit(f"paced: the client failed against {name}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["round"] = r
            runs[name].append(res)
            lat[name] += [int(x) for x in open(latfile) if x.strip()]
            print(f"{time.strftime('%H:%M:%S')} [paced round {r}/{a.rounds}] {name:<12} {res['achieved_rps']:9.0f} req/s "
                  f"(asked {a.rate:.0f})  p50 {res['p50_us'] / 1000:6.2f} ms  p99 {res['p99_us'] / 1000:7.2f} ms  "
                  f"non-2xx {res['non2xx']}  errors {res['errors']}  unanswered {res['unfinished']}", flush=True)
            time.sleep(a.cooldown)
    result = {"rate": a.rate, "connections": a.connections, "duration": a.duration, "warmup": a.warmup,
              "rounds": a.rounds, "targets": {}}
    for name, *_ in targets:
        xs = sorted(lat[name])
        rs = runs[name]
        result["targets"][name] = {
            "requests": len(xs), "achieved_rps": min(x["achieved_rps"] for x in rs),
            "non2xx": sum(x["non2xx"] for x in rs), "errors": sum(x["errors"] for x in rs),
            "unfinished": sum(x["unfinished"] for x in rs),
            "p50_us": percentile(xs, 50), "p90_us": percentile(xs, 90), "p99_us": percentile(xs, 99),
            "p999_us": percentile(xs, 99.9), "max_us": xs[-1] if xs else None,
            "service_p99_us_max": max(x["service_p99_us"] for x in rs), "runs": rs}
    json.dump(result, open(os.path.join(a.out, "paced.json"), "w"), indent=1)
    return 0


# -------------------------------------------------------------------------------------------------------------- idle
def group_rss_kib(pgid: int) -> tuple[int, list[int]]:
    """Sum of VmRSS over every process whose process group is pgid."""
    total, pids = 0, []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:  # state ppid pgrp
                continue
            for line in open(f"/proc/{d}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    pids.append(int(d))
        except (OSError, ValueError):
            continue
    return total, pids


def one_request(sock: socket.socket, req: bytes):
    """Sends req and reads one whole response (Content-Length or chunked); returns the status code."""
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
    return status


def cmd_idle(a) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
        except (ValueError, OSError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        sys.exit(f"idle: RLIMIT_NOFILE is {soft}, {want} needed for {a.count} connections (raise ulimit -n)")
    host, port = a.host, a.port
    token = open(a.token_file).read().strip() if a.token_file else ""
    req = (f"GET {a.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
           + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode()
    # one request on a throw-away connection first: lazily built state (route tables, the first upstream
    # connection, the token cache entry) is not counted as per-connection memory
    with socket.create_connection((host, port)) as s:
        one_request(s, req)
    time.sleep(a.settle)
    rss0, pids = group_rss_kib(a.pgid)
    if not pids:
        sys.exit(f"idle: no process in process group {a.pgid}")
    socks, bad, failed, t0 = [], 0, 0, time.time()
    for _ in range(a.count):
        try:
            s = socket.create_connection((host, port), timeout=10)
            status = one_request(s, req)
        except OSError:  # refused, reset or closed: counted, not kept
            failed += 1
            continue
        if status // 100 != 2:
            bad += 1
        socks.append(s)
    opened_s = time.time() - t0
    time.sleep(a.settle)
    rss1, _ = group_rss_kib(a.pgid)
    alive = 0
    for s in socks:  # an idle connection the server kept: nothing to read, no EOF
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                alive += 1  # unexpected bytes, but still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    time.sleep(a.settle)
    rss2, _ = group_rss_kib(a.pgid)
    result = {"label": a.label, "connections": a.count, "failed": failed, "non2xx": bad, "still_open": alive,
              "open_seconds": opened_s,
              "rss_before_kib": rss0, "rss_idle_kib": rss1, "rss_after_close_kib": rss2, "processes": len(pids),
              "kib_per_connection": (rss1 - rss0) / a.count}
    json.dump(result, open(a.out, "w"), indent=1)
    print(f"{time.strftime('%H:%M:%S')} [idle] {a.label}: {a.count} connections ({failed} failed, {alive} still open, "
          f"{bad} non-2xx), "
          f"RSS {rss0} -> {rss1} KiB ({result['kib_per_connection']:.2f} KiB each), {rss2} KiB after closing them",
          flush=True)
    return 0


# --------------------------------------------------------------------------------------------------------------- cpu
def group_cpu_ticks(pgid: int) -> int:
    """utime + stime, in clock ticks, of every process in process group `pgid` (threads included)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


def cmd_cpu(a) -> int:
    groups = {}
    for spec in a.group:
        name, pgid = spec.split("=", 1)
        groups[name] = int(pgid)
    tick = os.sysconf("SC_CLK_TCK")
    env = dict(os.environ, PB_TOKEN=open(a.token_file).read().strip() if a.token_file else "")
    wrk = ["wrk", "-t1", f"-c{a.connections}", "--latency", "-s", a.lua, a.url]
    if a.cpus:
        wrk = ["taskset", "-c", a.cpus] + wrk
    subprocess.run(wrk[:-1] + [f"-d{a.warmup}s", a.url], env=env, capture_output=True, check=True)
    runs = []
    for r in range(1, a.rounds + 1):
        before = {n: group_cpu_ticks(g) for n, g in groups.items()}
        out = subprocess.run(wrk[:-1] + [f"-d{a.duration}s", a.url], env=env, capture_output=True, text=True)
        after = {n: group_cpu_ticks(g) for n, g in groups.items()}
        line = next((x for x in out.stdout.splitlines() if x.startswith("PB_RESULT ")), None)
        if out.returncode != 0 or line is None:
            sys.exit(f"cpu: wrk failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        res = json.loads(line[len("PB_RESULT "):])
        bad = res["err_status"] + res["err_connect"] + res["err_read"] + res["err_write"] + res["err_timeout"]
        run = {"round": r, "requests": res["requests"], "rps": res["rps"], "errors": bad,
               "us_per_request": {n: (after[n] - before[n]) / tick * 1e6 / max(1, res["requests"]) for n in groups}}
        runs.append(run)
        print(f"{time.strftime('%H:%M:%S')} [cpu round {r}/{a.rounds}] {res['rps']:,.0f} req/s, errors {bad}, CPU µs per "
              f"request: " + ", ".join(f"{n} {v:.1f}" for n, v in run["us_per_request"].items()), flush=True)
    med = {n: sorted(x["us_per_request"][n] for x in runs)[len(runs) // 2] for n in groups}
    result = {"url": a.url, "rounds": runs, "us_per_request_med": med, "errors": sum(x["errors"] for x in runs)}
    json.dump(result, open(a.out, "w"), indent=1)
    return 0


def cmd_cpu_curl(a) -> int:
    """The libcurl half of the floor in CPU time: peerbench's curl_client.c (reset + setopt per transfer, as floor.sh
    runs it) for `duration` seconds; its own user + system time over its requests."""
    runs = []
    for r in range(1, a.rounds + 1):
        cmd = [a.client, a.url, str(a.connections), str(a.duration), "1"]
        if a.cpus:
            cmd = ["taskset", "-c", a.cpus] + cmd
        t0 = os.times()
        out = subprocess.run(cmd, capture_output=True, text=True)
        t1 = os.times()
        if out.returncode != 0 or "requests in" not in out.stdout:
            sys.exit(f"cpu-curl: the client failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        requests = int(out.stdout.split()[0])
        cpu = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
        runs.append({"round": r, "requests": requests, "us_per_request": cpu * 1e6 / max(1, requests)})
        print(f"{time.strftime('%H:%M:%S')} [cpu-curl round {r}/{a.rounds}] {out.stdout.strip()}; CPU µs per request "
              f"{runs[-1]['us_per_request']:.1f}", flush=True)
    med = sorted(x["us_per_request"] for x in runs)[len(runs) // 2]
    json.dump({"url": a.url, "rounds": runs, "us_per_request_med": med}, open(a.out, "w"), indent=1)
    return 0


# ------------------------------------------------------------------------------------------------------------ report
def load(path):
    if path and os.path.exists(path):
        return json.load(open(path))
    return None


def targets_of(summary):
    if not summary:
        return {}
    return {t["name"]: t for t in summary["targets"] if t.get("runs")}


def cmd_report(a) -> int:
    floor, hot, cold = load(a.floor), targets_of(load(a.hot)), targets_of(load(a.cold))
    paced, idle_p, idle_n, cpu = load(a.paced), load(a.idle_portcullis), load(a.idle_nginx), load(a.cpu)
    cpu_front, cpu_curl, ecdsa = load(a.cpu_front), load(a.cpu_curl), load(a.ecdsa)
    ms = lambda us: "–" if us is None else f"{us / 1000:.2f}"  # noqa: E731
    L = [f"# Portcullis beside its peers: one run ({a.label})", ""]
    L.append("| run | target | req/s | p50 ms | p99 ms | non-2xx / sock err |")
    L.append("|---|---|---:|---:|---:|---:|")
    if floor:
        L.append(f"| floor | front (Portcullis answering its JWKS, no upstream) | {floor['front']:,.0f} | – | – | – |")
        L.append(f"| floor | libcurl multi client alone | {floor['libcurl']:,.0f} | – | – | – |")
        L.append(f"| floor | **floor** = 1 / (1/front + 1/libcurl) | **{floor['floor']:,.0f}** | – | – | – |")
    invalid = []
    names = [("nginx", "nginx, plain proxy"), ("haproxy", "HAProxy, plain proxy"),
             ("haproxy-es256", "HAProxy ES256 (static PEM)"), ("oidc-es256-jwks", "mod_auth_openidc ES256 (JWKS)"),
             ("portcullis", "**Portcullis**")]
    for run, ts, what in (("hot", hot, "one token reused, cache on"), ("cold", cold, "256 tokens, cache off")):
        for key, desc in names:
            t = ts.get(key)
            if not t:
                continue
            bad = t["non2xx"] + t["socket_errors"]
            if bad:
                invalid.append(f"{run}/{key}")
            d = f"{desc}, {what}" if key == "portcullis" else desc
            L.append(f"| {run} | {d} | {t['rps_med']:,.0f} | {ms(t['p50_med_us'])} | {ms(t['p99_med_us'])} | "
                     f"{t['non2xx']} / {t['socket_errors']}{' **INVALID**' if bad else ''} |")
    L.append("")
    L.append("| DESIGN §8 target | measured | target | verdict |")
    L.append("|---|---|---|---|")

    def line(what, value, text, target, ok):
        verdict = "n/a (not run)" if value is None else ("PASS" if ok else "MISS")
        L.append(f"| {what} | {text} | {target} | {verdict} |")

    ph, nh = hot.get("portcullis"), hot.get("nginx")
    r = ph["rps_med"] / floor["floor"] if (ph and floor) else None
    line("hot path vs the libcurl floor", r,
         f"{ph['rps_med']:,.0f} / {floor['floor']:,.0f} = {r:.3f}×" if r is not None else "–", "≥ 0.9×",
         r is not None and r >= a.floor_target)
    r = ph["p99_med_us"] / nh["p99_med_us"] if (ph and nh) else None
    line("hot path p99 vs nginx", r,
         f"{ms(ph['p99_med_us'])} / {ms(nh['p99_med_us'])} ms = {r:.2f}×" if r is not None else "–", "≤ 1.5×",
         r is not None and r <= a.p99_target)
    pc, hc = cold.get("portcullis"), cold.get("haproxy-es256")
    r = pc["rps_med"] / hc["rps_med"] if (pc and hc) else None
    line("cache off vs haproxy-es256 (same cold run)", r,
         f"{pc['rps_med']:,.0f} / {hc['rps_med']:,.0f} = {r:.2f}×" if r is not None else "–", "≥ 1.5×",
         r is not None and r >= a.cold_target)
    if paced:
        pp, pn = paced["targets"].get("portcullis"), paced["targets"].get("nginx")
        diff = (pp["p99_us"] - pn["p99_us"]) / 1000 if (pp and pn and pp["p99_us"] and pn["p99_us"]) else None
        failed = (pp["non2xx"] + pp["errors"]) if pp else 0
        kept = pp and pp["achieved_rps"] >= 0.95 * paced["rate"] and pp["unfinished"] == 0 and failed == 0
        text = (f"at {paced['rate']:,.0f} req/s: p99 {ms(pp['p99_us'])} vs {ms(pn['p99_us'])} ms, "
                f"{diff:+.2f} ms" if diff is not None else "–")
        if diff is not None and not kept:
            if failed:
                text += f" ({pp['non2xx']} non-2xx, {pp['errors']} connection errors)"
            else:
                text += f" (Portcullis sustained only {pp['achieved_rps']:,.0f} req/s"
                text += f"; {pp['unfinished']:,} requests still unanswered 10 s after the end)" if pp["unfinished"] else ")"
        line("paced at half nginx's peak: p99 − nginx's p99", diff, text, "≤ +1 ms",
             diff is not None and diff <= a.paced_target_ms and kept)
    else:
        line("paced at half nginx's peak: p99 − nginx's p99", None, "–", "≤ +1 ms", False)
    if idle_p:
        k = idle_p["kib_per_connection"]
        ok = k <= a.idle_target_kib and idle_p["still_open"] == idle_p["connections"] and idle_p["non2xx"] == 0
        text = f"{k:.2f} KiB ({idle_p['connections']:,} connections, {idle_p['still_open']:,} still open)"
        if idle_n:
            text += f"; nginx {idle_n['kib_per_connection']:.2f} KiB ({idle_n['still_open']:,} open)"
        line("memory per idle keep-alive connection (RSS)", k, text, "≤ 8 KiB", ok)
    else:
        line("memory per idle keep-alive connection (RSS)", None, "–", "≤ 8 KiB", False)
    if ecdsa and floor and hc:
        # Cache off, every request verifies one ES256 signature: no gateway that forwards through libcurl on one core
        # can beat 1 / (1/floor + 1/verify), whatever its own code costs.
        bound = 1 / (1 / floor["floor"] + 1 / ecdsa["verify_per_s"])
        L.append("")
        L.append(f"Cache-off bound: the floor ({floor['floor']:,.0f} req/s) with one P-256 verification per request "
                 f"(OpenSSL {ecdsa['verify_per_s']:,.0f} verifications/s on the servers' core) allows at most "
                 f"{bound:,.0f} req/s = **{bound / hc['rps_med']:.2f}× haproxy-es256**, against the target's "
                 f"{a.cold_target}×.")
    if cpu:
        # The floor's halves each run with the upstream on the other core; in the hot run the upstream shares the
        # servers' core, so req/s against the floor also charges the gateway with the upstream's work. CPU time per
        # request compares like with like, and does not move with the machine's other load the way req/s does.
        own, up = cpu["us_per_request_med"]["portcullis"], cpu["us_per_request_med"].get("upstream")
        front_us = cpu_front["us_per_request_med"]["front"] if cpu_front else None
        curl_us = cpu_curl["us_per_request_med"] if cpu_curl else None
        L.append("")
        L.append("| CPU time per request (user + system, `/proc`; median of the rounds) | µs |")
        L.append("|---|---:|")
        if front_us is not None and curl_us is not None:
            L.append(f"| floor, front: Portcullis answering its JWKS | {front_us:.1f} |")
            L.append(f"| floor, libcurl: curl_client.c (reset + setopt per transfer) | {curl_us:.1f} |")
            L.append(f"| **floor** = front + libcurl | **{front_us + curl_us:.1f}** |")
        L.append(f"| Portcullis proxying (hot config, one ES256 token) | {own:.1f} |")
        if up is not None:
            L.append(f"| the upstream (nginx; on the servers' core in the hot run) | {up:.1f} |")
        if front_us is not None and curl_us is not None:
            L.append("")
            L.append(f"Hot path against the floor in CPU per request: {front_us + curl_us:.1f} / {own:.1f} µs = "
                     f"**{(front_us + curl_us) / own:.3f}×** (the req/s ratio above also charges Portcullis with the "
                     f"upstream's work on its core, which the floor's halves do not carry; {cpu['errors']} errors in the "
                     f"CPU rounds).")
    if paced:
        L.append("")
        L.append(f"Paced: Benchmarks/paced_client.c, open loop, one request every {1e6 / paced['rate']:.1f} µs "
                 f"({paced['rate']:,.0f} req/s, half of nginx's hot-run median) over {paced['connections']} keep-alive "
                 f"connections, {paced['rounds']} alternating rounds × {paced['duration']} s after {paced['warmup']} s "
                 f"unrecorded; latency from each request's due time to the end of its response (a target that falls "
                 f"behind shows it); percentiles over every request of all rounds.")
        L.append("")
        L.append("| target | asked req/s | achieved req/s (worst round) | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 from send ms (worst round) | non-2xx / errors / unanswered |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, t in paced["targets"].items():
            L.append(f"| {name} | {paced['rate']:,.0f} | {t['achieved_rps']:,.0f} | {ms(t['p50_us'])} | "
                     f"{ms(t['p90_us'])} | {ms(t['p99_us'])} | {ms(t['p999_us'])} | {ms(t['service_p99_us_max'])} | "
                     f"{t['non2xx']} / {t['errors']} / {t['unfinished']} |")
    if idle_p or idle_n:
        L.append("")
        L.append("| idle connections | count | still open | RSS before KiB | RSS idle KiB | KiB per connection | RSS after closing KiB |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for x in (idle_p, idle_n):
            if x:
                L.append(f"| {x['label']} | {x['connections']:,} | {x['still_open']:,} | {x['rss_before_kib']:,} | "
                         f"{x['rss_idle_kib']:,} | {x['kib_per_connection']:.2f} | {x['rss_after_close_kib']:,} |")
    if invalid:
        L.append("")
        L.append(f"**INVALID**: non-2xx responses or socket errors in {', '.join(invalid)}; those rows are not measurements.")
    md = "\n".join(L) + "\n"
    print(md)
    if a.out:
        open(a.out, "w").write(md)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("paced")
    s.add_argument("--target", action="append", required=True, help="name=url, repeatable; alternated each round")
    s.add_argument("--rate", type=float, required=True, help="total requests per second, for each target")
    s.add_argument("--connections", type=int, default=64)
    s.add_argument("--duration", type=int, default=10)
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--cooldown", type=float, default=1)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--token-file")
    s.add_argument("--cpus", help="taskset CPU list for the client")
    s.add_argument("--client", required=True, help="the built paced_client.c")
    s.add_argument("--out", required=True, help="folder for the logs and paced.json")
    s = sub.add_parser("idle")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--path", default="/api/bench")
    s.add_argument("--pgid", type=int, required=True, help="process group of the server whose RSS is measured")
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--settle", type=float, default=2)
    s.add_argument("--token-file")
    s.add_argument("--label", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("cpu")
    s.add_argument("--url", required=True)
    s.add_argument("--group", action="append", required=True, help="name=pgid, repeatable: process groups to meter")
    s.add_argument("--lua", required=True, help="peerbench's lua/bearer.lua")
    s.add_argument("--token-file")
    s.add_argument("--connections", type=int, default=64)
    s.add_argument("--duration", type=int, default=10)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--cpus", help="taskset CPU list for wrk")
    s.add_argument("--out", required=True)
    s = sub.add_parser("cpu-curl")
    s.add_argument("--client", required=True, help="the built peerbench curl_client.c")
    s.add_argument("--url", required=True)
    s.add_argument("--connections", type=int, default=64)
    s.add_argument("--duration", type=int, default=10)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--cpus", help="taskset CPU list for the client")
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    for f in ("floor", "hot", "cold", "paced", "idle-portcullis", "idle-nginx", "cpu", "cpu-front", "cpu-curl", "ecdsa", "out"):
        s.add_argument(f"--{f}")
    s.add_argument("--label", default="")
    s.add_argument("--floor-target", type=float, default=0.9)
    s.add_argument("--p99-target", type=float, default=1.5)
    s.add_argument("--cold-target", type=float, default=1.5)
    s.add_argument("--paced-target-ms", type=float, default=1.0)
    s.add_argument("--idle-target-kib", type=float, default=8.0)
    a = p.parse_args()
    return {"paced": cmd_paced, "idle": cmd_idle, "cpu": cmd_cpu, "cpu-curl": cmd_cpu_curl, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
