#!/usr/bin/env python3
"""Soak: one gateway under a mixed, checked load with faults, for a bounded time (issue 13).

    Benchmarks/soak [--minutes 30 | --seconds 120] [--binary PATH] [--workers 6] [--report FILE]

Starts one gateway (the release build by default; `--binary` or `$PORTCULLIS_BIN`), the end-to-end suite's
recording upstream (`Tests/e2e/upstream.py`, its own process) and its WebSocket echo upstream (`ws_upstream.py`, in a
process of its own too), with keys from `Tests/e2e/tokens.py`. Routes: `/public` (auth none), `/private` (scope
`read`), `/ws` (WebSocket, scope `read`).

Workers (threads) run a weighted mix until the deadline, every request with a unique id in its path:
  valid tokens (HS256/384/512, RS256, PS256, ES256, EdDSA) → 200 and the upstream saw exactly the token's subject;
  no token / expired / bad signature / wrong scope → 401 token_missing / 401 token_expired / 401 signature_invalid /
  403 insufficient_scope with the README's `WWW-Authenticate`, never forwarded; an invalid token with a body still
  coming → the early 401; public requests with spoofed `X-Auth-*` → forwarded without any identity header;
  uploads (Content-Length or chunked, some trickled slowly) → the upstream's length and sha256 match; downloads
  (Content-Length or chunked) → length and sha256 match; keep-alive runs of several requests on one connection;
  pipelined triples (valid, rejected, public) answered in order; client aborts mid-upload (FIN or RST) and
  mid-download; slow readers of a 2 MiB download; WebSocket sessions (echo of text, binary and fragmented
  messages, close) and refused WebSocket handshakes.
Faults on a schedule: the upstream is SIGKILLed every `--kill-every` s and restarted on the same port after
`--down-seconds`; the config is rewritten (alternating between two equivalent files) every `--reload-every` s, every
other time followed by SIGHUP, else left to the gateway's file watcher.

Wrong answers (counted by kind, the first examples kept): any answer other than the README's contract. To a
request that meets an upstream outage (kill → restarted, plus `--grace` s, default 0) a 502
`upstream_unavailable`, or a connection cut after the answer's head (a download or upload in flight), is the
contract's answer and counted as such, not as wrong. The upstream's
log is read as it grows: a rejected request ever reaching it, a request id reaching it twice, a private request
without exactly its token's subject, an identity header or `Authorization` on a public request, or an aborted
upload whose body the upstream saw complete, are wrong answers too; so is a refused WebSocket handshake that reached
the WebSocket upstream, or an accepted one without its subject.

Sampled every `--sample-seconds`: the gateway's VmRSS and its open descriptors (by kind: listeners, client
connections, upstream keep-alive pool, WebSocket upstream connections, other). Warm-up is the first 10 % (at least
30 s). At the end the load stops, the gateway gets a few seconds to go idle, and its descriptors are compared with
the idle baseline taken before the load (the upstream keep-alive pool, idle connections libcurl keeps for reuse, is
shown apart and bounded by the number of workers × 2). The report (stdout, and `--report FILE`) is markdown
without plots. Exit status 1 if there was a wrong answer, the gateway died, descriptors did not return to the
baseline, or RSS grew more than `--rss-limit` % (default 10) over the warm-up's peak. Every process started here is
stopped by its pid on any exit; everything listens on 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "Tests", "e2e")
sys.path.insert(0, HERE)
sys.path.insert(0, E2E)

import benchlib  # noqa: E402
import harness  # noqa: E402
import payload  # noqa: E402
import tokens as tokens_mod  # noqa: E402
from benchlib import GatewayProcess, free_port, release_binary  # noqa: E402
from configs import IDENTITY_HEADERS, REALM  # noqa: E402
from harness import ConnectionClosed, RawClient, UpstreamProcess, build_request, rss_kib, stop_process  # noqa: E402

UPLOAD_SIZES = [65536 + 3, 200_000, 300 * 1024, 512 * 1024 - 1]
DOWNLOAD_SIZES = [1, 100_000, 1 << 20, (2 << 20) + 5]
SLOW_DOWNLOAD = 2 << 20
ALGS = ["ES256", "EdDSA", "HS256", "HS384", "HS512", "RS256", "PS256"]
WS_SIZES = [1, 125, 126, 4000, 65536, 70000]

# Scenario weights (relative).
MIX = {
    "valid_get": 30, "reject": 15, "reject_body": 2, "public_spoof": 6, "upload": 9, "slow_upload": 2,
    "download": 9, "slow_download": 2, "keepalive": 7, "pipeline": 7, "abort_upload": 3, "abort_download": 2,
    "websocket": 8, "ws_reject": 2,
}

# The scenarios whose requests reach the recording upstream (only they may meet its outages).
UPSTREAM_KINDS = {"valid_get", "public_spoof", "upload", "slow_upload", "download", "slow_download", "keepalive",
                  "pipeline", "abort_upload", "abort_download"}

# The contract's answers to the rejections (README "Error responses").
REJECTIONS = {
    "no_token": (401, "token_missing", None),
    "expired": (401, "token_expired", "invalid_token"),
    "bad_signature": (401, "signature_invalid", "invalid_token"),
    "wrong_scope": (403, "insufficient_scope", "insufficient_scope"),
}

WS_WRAPPER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from ws_upstream import WsUpstream
up = WsUpstream()
print(up.port, flush=True)
sys.stdin.read()          # until the soak closes our stdin (or dies)
with up.lock:
    out = [[h["path"], [v for n, v in h["headers"] if n.lower() == "x-auth-subject"]] for h in up.handshakes]
print(json.dumps(out), flush=True)
up.stop()
"""


class Wrong(Exception):
    """A deviation from the contract."""


class UpstreamDown(Exception):
    """The contract's answer while the upstream is down (a 502 upstream_unavailable): fine in a fault window only."""


# ----------------------------------------------------------------------------------------------------------------
# shared state

class Soak:
    def __init__(self, args, workdir: str):
        self.args = args
        self.workdir = workdir
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.runs = collections.Counter()          # scenario runs per kind
        self.requests = collections.Counter()      # HTTP requests / WebSocket sessions per kind
        self.fault_answers = collections.Counter()  # the contract's outage answers, per kind
        self.wrong = collections.Counter()         # wrong answers per kind:what
        self.examples: list[str] = []
        self.examples_per_kind = collections.Counter()
        self.windows: list[list[float | None]] = []  # [kill time, restarted time or None]
        self.after_restart = 0
        self.kills = 0
        self.reloads = collections.Counter()
        self.samples: list[dict] = []
        self.gateway_died = False
        self.mix = dict(MIX)
        if args.mix:
            self.mix = {}
            for item in args.mix.split(","):
                name, _, weight = item.partition("=")
                if name not in MIX:
                    raise SystemExit(f"--mix: no scenario {name!r} (known: {', '.join(MIX)})")
                self.mix[name] = float(weight or 1)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add_wrong(self, kind: str, what: str, detail: str):
        key = f"{kind}: {what}"
        with self.lock:
            self.wrong[key] += 1
            if len(self.examples) < 20 and self.examples_per_kind[key] < 3:
                self.examples_per_kind[key] += 1
                self.examples.append(f"t={self.now():.1f}s {key}: {detail[:600]}")

    def in_fault(self, start: float, end: float) -> bool:
        """Whether [start, end] meets an outage (kill → restarted + grace). One that started only after the
        upstream was back, within the grace, is counted apart (`after_restart`)."""
        grace = self.args.grace
        with self.lock:
            for kill, back in self.windows:
                back = back if back is not None else float("inf")
                if start <= back + grace and end >= kill:
                    if start > back:
                        self.after_restart += 1
                    return True
        return False

    def total_wrong(self) -> int:
        with self.lock:
            return sum(self.wrong.values())


# ----------------------------------------------------------------------------------------------------------------
# processes

class WsUpstreamProcess:
    """ws_upstream.WsUpstream in a process of its own (not behind the load's GIL); its handshakes at the end."""

    def __init__(self, workdir: str):
        self.err = open(os.path.join(workdir, "ws-upstream.stderr"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", WS_WRAPPER, E2E], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, cwd=E2E)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            stop_process(self.proc, 5)
            raise SystemExit(f"WebSocket upstream did not start: {line!r}")
        self.port = int(line)

    def finish(self) -> list:
        """Stops it; its handshakes as [path, [X-Auth-Subject values]]."""
        try:
            self.proc.stdin.close()
            out = self.proc.stdout.readline()
            self.proc.wait(10)
            return json.loads(out)
        except Exception:  # noqa: BLE001
            return []
        finally:
            self.stop()

    def stop(self):
        stop_process(self.proc, 5)
        self.err.close()


def gateway_config(gw_dir: str, keys, listen: str, admin: str, app_port: int, ws_port: int, variant: int,
                   access_log: bool, token_cache: int) -> dict:
    """Two equivalent configurations: variant 1 has one more route nobody asks for."""
    routes = [
        {"path_prefix": "/public", "upstream": "app", "auth": "none"},
        {"path_prefix": "/private", "upstream": "app", "scopes": ["read"]},
        {"path_prefix": "/ws", "upstream": "ws", "scopes": ["read"]},
    ]
    if variant:
        routes.append({"path_prefix": "/reload-b", "upstream": "app", "auth": "none"})
    return {
        "listen": listen,
        "admin_listen": admin,
        "limits": {"max_header_bytes": 16384, "max_body_bytes": 16 << 20, "header_timeout_ms": 10000,
                   "idle_timeout_ms": 60000, "drain_seconds": 3},
        "upstreams": {
            "app": {"url": f"http://127.0.0.1:{app_port}", "connect_timeout_ms": 2000, "timeout_ms": 30000},
            "ws": {"url": f"http://127.0.0.1:{ws_port}"},
        },
        "routes": routes,
        "auth": {"realm": REALM, "audiences": [tokens_mod.AUD], "leeway_seconds": 30, "forward_token": False,
                 "token_cache_entries": token_cache},
        "issuers": keys.issuers_config(gw_dir),
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "json", "access_log": access_log},
    }


# ----------------------------------------------------------------------------------------------------------------
# descriptors

def tcp_table(pid: int) -> dict[str, tuple[int, int, str]]:
    """socket inode → (local port, remote port, state) from the process's network namespace."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            p = line.split()
            table[p[9]] = (int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16), p[3])
    return table


def fd_census(pid: int, client_ports: tuple[int, ...], app_port: int, ws_port: int) -> dict[str, int]:
    table = tcp_table(pid)
    c = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        c["total"] += 1
        if not target.startswith("socket:["):
            c["other"] += 1
            c["other: " + target] += 1
            continue
        entry = table.get(target[8:-1])
        if entry is None:
            c["other"] += 1  # unix sockets, or a socket newer than the table
            c["other: socket (not TCP)"] += 1
        elif entry[2] == "0A":
            c["listeners"] += 1
        elif entry[0] in client_ports:
            c["clients"] += 1
        elif entry[1] == app_port:
            c["upstream pool"] += 1
            if entry[2] == "08":
                c["upstream pool, closed by peer"] += 1
        elif entry[1] == ws_port:
            c["ws upstream"] += 1
        else:
            c["other"] += 1
            c["other: TCP socket"] += 1
    return dict(c)


# ----------------------------------------------------------------------------------------------------------------
# the upstream's log, read as it grows

class LogReader(threading.Thread):
    """Reads every recording upstream's JSON-lines log (one per upstream process) and checks what was forwarded."""

    def __init__(self, soak: Soak):
        super().__init__(daemon=True)
        self.soak = soak
        self.files: list[dict] = []
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.heads = 0
        self.aborted: dict[tuple[str, int], str] = {}
        self.done = threading.Event()

    def add(self, path: str):
        with self.lock:
            self.files.append({"path": path, "offset": 0, "rest": b"", "final": False})

    def finalise(self, path: str):
        with self.lock:
            for f in self.files:
                if f["path"] == path:
                    f["final"] = True

    def run(self):
        while not self.done.is_set():
            self.poll()
            self.done.wait(0.5)

    def poll(self):
        with self.lock:
            files = list(self.files)
        for f in files:
            try:
                with open(f["path"], "rb") as fh:
                    fh.seek(f["offset"])
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            f["offset"] += len(data)
            lines = (f["rest"] + data).split(b"\n")
            f["rest"] = lines.pop()
            for line in lines:
                if line.strip():
                    try:
                        self.check(f["path"], json.loads(line))
                    except Exception as e:  # noqa: BLE001
                        self.soak.add_wrong("upstream-log", "unreadable line", f"{e!r} {line[:200]!r}")
            if f["final"] and not data:
                with self.lock:
                    self.files.remove(f)
                if not self.soak.args.keep:
                    try:
                        os.unlink(f["path"])
                    except OSError:
                        pass

    def check(self, path: str, ev: dict):
        s = self.soak
        if ev["event"] == "head":
            self.heads += 1
            target = ev.get("target") or ""
            segs = target.split("?")[0].split("/")
            if len(segs) < 4:
                s.add_wrong("forwarded", "unexpected target", target)
                return
            route, tag = segs[1], segs[2].split("_")
            if len(tag) != 3:
                s.add_wrong("forwarded", "unexpected target", target)
                return
            kind, rid, sub = tag
            if kind == "deny":
                s.add_wrong("forwarded", "a rejected request reached the upstream", target)
            if rid in self.seen:
                s.add_wrong("forwarded", "a request id reached the upstream twice", target)
            self.seen.add(rid)
            headers = ev["headers"]
            subjects = [v for n, v in headers if n.lower() == "x-auth-subject"]
            if any(n.lower() == "authorization" for n, _ in headers):
                s.add_wrong("forwarded", "Authorization forwarded (forward_token is false)", target)
            if route == "private":
                if subjects != [sub]:
                    s.add_wrong("forwarded", "private request without exactly its token's subject",
                                f"{target} X-Auth-Subject={subjects}")
            elif route == "public":
                idents = [n for n, _ in headers if n.lower().startswith("x-auth-") or n.lower() == "x-client-id"]
                if idents:
                    s.add_wrong("forwarded", "identity header on a public request", f"{target} {idents}")
            if kind == "abort":
                self.aborted[(path, ev["seq"])] = target
        elif ev["event"] == "body":
            target = self.aborted.pop((path, ev["seq"]), None)
            if target is not None and ev.get("complete"):
                s.add_wrong("forwarded", "an aborted upload reached the upstream complete",
                            f"{target} body_len={ev.get('body_len')}")


# ----------------------------------------------------------------------------------------------------------------
# clients

class SlowClient(RawClient):
    """Reads 16 KiB at a time with a pause between reads."""

    delay = 0.01

    def _fill(self) -> bool:
        time.sleep(self.delay)
        data = self.sock.recv(16384)
        if not data:
            return False
        self.buf += data
        return True


def gateway_error(resp, status: int, reason: str, challenge_error: str | None, scope: str | None = None):
    """The README's error answer (raises Wrong otherwise)."""
    try:
        harness.assert_gateway_error(resp, status, reason)
        if status == 401 and challenge_error is None:
            harness.assert_challenge(resp, expected_exact=f'Bearer realm="{REALM}"')
        elif challenge_error is not None:
            extra = {"scope": scope} if scope and status == 403 else {}
            harness.assert_challenge(resp, error=challenge_error, **extra)
    except (AssertionError, ValueError, KeyError) as e:
        raise Wrong(f"expected {status} {reason}, got {resp.status} {resp.body[:300]!r} ({e})")


def early_answer(c: RawClient, path: str, error: OSError) -> Exception:
    """The gateway closed the connection while a body was being sent: what it answered first, if anything (a 502
    `upstream_unavailable` becomes UpstreamDown, the contract's answer during an outage)."""
    try:
        c.sock.settimeout(2)
        resp = c.read_response("POST")
    except Exception as e:  # noqa: BLE001
        return ConnectionClosed(f"{path}: {error!r} while sending the body, no answer read ({e!r})")
    if upstream_down(resp):
        return UpstreamDown(f"{path}: answered while the body was being sent: {resp.status} {resp.body[:200]!r}")
    return ConnectionClosed(f"{path}: {error!r} while sending the body, after the answer {resp.status} "
                            f"{resp.header_list} {resp.body[:300]!r}")


def upstream_down(resp) -> bool:
    if resp.status != 502:
        return False
    try:
        return json.loads(resp.body).get("reason") == "upstream_unavailable"
    except ValueError:
        return False


class Worker(threading.Thread):
    def __init__(self, soak: Soak, wid: int, port: int, keys, seed: int):
        super().__init__(daemon=True, name=f"worker-{wid}")
        self.soak, self.wid, self.port, self.keys = soak, wid, port, keys
        self.rng = random.Random(seed)
        self.n = 0
        self.conn: RawClient | None = None
        self.tokens: dict[str, tuple[str, str, float]] = {}
        self.kinds = list(soak.mix)
        self.weights = [soak.mix[k] for k in self.kinds]
        self.uploads = {n: payload.make(n) for n in UPLOAD_SIZES}

    # -- ids and tokens -------------------------------------------------------------------------------------------
    def rid(self) -> str:
        self.n += 1
        self.cur = f"w{self.wid}n{self.n}"
        return self.cur

    def token(self, fresh: bool = False, **claims) -> tuple[str, str]:
        """(token, subject): one kept per algorithm for a minute (the gateway's cache), or a fresh one."""
        alg = self.rng.choice(ALGS)
        now = time.monotonic()
        kept = self.tokens.get(alg)
        if fresh or claims or kept is None or now - kept[2] > 60:
            self.n += 1
            sub = f"s{self.wid}t{self.n}"
            tok = self.keys.mint(alg, sub=sub, **claims)
            tokens_mod.MINTED.clear()  # the e2e suite keeps every token for its leak scan; a soak must not
            if fresh or claims:
                return tok, sub
            kept = self.tokens[alg] = (tok, sub, now)
        return kept[0], kept[1]

    def bad_token(self, which: str) -> tuple[list[tuple[str, str]], str]:
        if which == "no_token":
            return [], "x"
        if which == "expired":
            now = int(time.time())
            tok, sub = self.token(exp=now - 3600, iat=now - 7200, nbf=now - 7200)
        elif which == "bad_signature":
            tok, sub = self.token()
            tok = tokens_mod.tamper_signature(tok)
            tokens_mod.MINTED.clear()
        else:
            tok, sub = self.token(scope="write")
        return [("Authorization", f"Bearer {tok}")], sub

    def client(self, timeout: float = 30, cls=RawClient) -> RawClient:
        c = cls("127.0.0.1", self.port, timeout=timeout)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    # -- one request on the worker's keep-alive connection ----------------------------------------------------------
    def ka(self, method: str, target: str, headers: list, body: bytes = b""):
        self.target = target
        if self.conn is None:
            self.conn = self.client()
        self.conn.send(build_request(method, target, headers, body))
        resp = self.conn.read_response(method)
        if (resp.header("Connection") or "").lower() == "close":
            self.drop()
        return resp

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- checks ----------------------------------------------------------------------------------------------------
    @staticmethod
    def check_echo(resp, path: str, sub: str | None):
        if upstream_down(resp):
            raise UpstreamDown(resp.body[:200])
        if resp.status != 200:
            raise Wrong(f"{path}: expected 200, got {resp.status} {resp.body[:300]!r}")
        try:
            j = json.loads(resp.body)
        except ValueError:
            raise Wrong(f"{path}: 200 with a body that is not the echo: {resp.body[:200]!r}")
        if j.get("path") != path:
            raise Wrong(f"answer for {j.get('path')!r} on a request for {path!r}")
        subjects = [v for n, v in j["headers"] if n.lower() == "x-auth-subject"]
        if sub is not None and subjects != [sub]:
            raise Wrong(f"{path}: upstream saw X-Auth-Subject {subjects}, token's subject {sub!r}")
        if sub is None and any(n.lower().startswith("x-auth-") for n, _ in j["headers"]):
            raise Wrong(f"{path}: identity headers on a public request: {j['headers']}")

    @staticmethod
    def check_digest(resp, what: str, length: int, sha: str, body: bytes | None = None):
        if upstream_down(resp):
            raise UpstreamDown(resp.body[:200])
        if resp.status != 200:
            raise Wrong(f"{what}: expected 200, got {resp.status} {resp.body[:300]!r}")
        if body is None:
            try:
                j = json.loads(resp.body)
            except ValueError:
                raise Wrong(f"{what}: answer is not the upload summary: {resp.body[:200]!r}")
            got = (j.get("length"), j.get("sha256"))
        else:
            got = (len(body), payload.hashlib.sha256(body).hexdigest())
        if got != (length, sha):
            raise Wrong(f"{what}: got length {got[0]} sha {str(got[1])[:16]}, expected {length} {sha[:16]}")

    # -- scenarios -------------------------------------------------------------------------------------------------
    def s_valid_get(self):
        tok, sub = self.token(fresh=self.rng.random() < 0.2)
        path = f"/private/ok_{self.rid()}_{sub}/echo"
        self.count()
        self.check_echo(self.ka("GET", path, [("Authorization", f"Bearer {tok}")]), path, sub)

    def s_reject(self):
        which = self.rng.choice(list(REJECTIONS))
        headers, sub = self.bad_token(which)
        status, reason, err = REJECTIONS[which]
        path = f"/private/deny_{self.rid()}_{sub}/echo"
        self.count()
        gateway_error(self.ka("GET", path, headers), status, reason, err, scope="read")

    def s_reject_body(self):
        """An invalid token with a chunked body still coming: 401 at once, the body never awaited."""
        which = self.rng.choice(["expired", "bad_signature"])
        headers, sub = self.bad_token(which)
        status, reason, err = REJECTIONS[which]
        path = f"/private/deny_{self.rid()}_{sub}/upload"
        self.count()
        with self.client(timeout=15) as c:
            c.send(build_request("POST", path, headers + [("Transfer-Encoding", "chunked")]) +
                   b"%x\r\n" % 65536 + b"z" * 65536 + b"\r\n")
            try:
                resp = c.read_response("POST")
            except TimeoutError:
                raise Wrong("the gateway waited for the rest of an unauthenticated body")
        gateway_error(resp, status, reason, err)

    def s_public_spoof(self):
        path = f"/public/ok_{self.rid()}_x/echo"
        self.count()
        spoof = [("X-Auth-Subject", "admin"), ("X-Auth-Scopes", "admin"), ("x_auth_subject", "root"),
                 ("X-Client-Id", "spoofed")]
        self.check_echo(self.ka("GET", path, spoof[: self.rng.randint(0, len(spoof))]), path, None)

    def upload_request(self, path: str, tok: str, body: bytes, chunked: bool) -> bytes:
        headers = [("Authorization", f"Bearer {tok}")]
        if chunked:
            out = build_request("POST", path, headers + [("Transfer-Encoding", "chunked")])
            step = 65536
            for i in range(0, len(body), step):
                piece = body[i:i + step]
                out += b"%x\r\n" % len(piece) + piece + b"\r\n"
            return out + b"0\r\n\r\n"
        return build_request("POST", path, headers + [("Content-Length", str(len(body)))]) + body

    def s_upload(self):
        size = self.rng.choice(UPLOAD_SIZES)
        tok, sub = self.token()
        path = f"/private/ok_{self.rid()}_{sub}/upload"
        self.count()
        if self.conn is None:
            self.conn = self.client()
        try:
            self.conn.send(self.upload_request(path, tok, self.uploads[size], self.rng.random() < 0.5))
        except OSError as e:
            raise early_answer(self.conn, path, e)
        resp = self.conn.read_response("POST")
        if (resp.header("Connection") or "").lower() == "close":
            self.drop()
        self.check_digest(resp, path, size, payload.sha256_of(size))

    def s_slow_upload(self):
        size = self.rng.choice(UPLOAD_SIZES[:3])
        tok, sub = self.token()
        path = f"/private/ok_{self.rid()}_{sub}/upload"
        data = self.upload_request(path, tok, self.uploads[size], self.rng.random() < 0.5)
        self.count()
        with self.client() as c:
            try:
                for i in range(0, len(data), 8192):
                    c.send(data[i:i + 8192])
                    time.sleep(0.02)
            except OSError as e:
                raise early_answer(c, path, e)
            resp = c.read_response("POST")
        self.check_digest(resp, path, size, payload.sha256_of(size))

    def s_download(self):
        size = self.rng.choice(DOWNLOAD_SIZES)
        mode = self.rng.choice(["cl", "chunked"])
        tok, sub = self.token()
        path = f"/private/ok_{self.rid()}_{sub}/download"
        self.count()
        resp = self.ka("GET", f"{path}?bytes={size}&mode={mode}", [("Authorization", f"Bearer {tok}")])
        self.check_digest(resp, path, size, payload.sha256_of(size), resp.body)

    def s_slow_download(self):
        tok, sub = self.token()
        path = f"/private/ok_{self.rid()}_{sub}/download"
        self.count()
        with self.client(cls=SlowClient) as c:
            resp = c.request("GET", f"{path}?bytes={SLOW_DOWNLOAD}&mode=cl", [("Authorization", f"Bearer {tok}")])
        self.check_digest(resp, path, SLOW_DOWNLOAD, payload.sha256_of(SLOW_DOWNLOAD), resp.body)

    def s_keepalive(self):
        with self.client() as c:
            for _ in range(self.rng.randint(3, 6)):
                if self.rng.random() < 0.7:
                    tok, sub = self.token()
                    path = f"/private/ok_{self.rid()}_{sub}/echo"
                    headers = [("Authorization", f"Bearer {tok}")]
                else:
                    path, sub, headers = f"/public/ok_{self.rid()}_x/echo", None, []
                self.count()
                resp = c.request("GET", path, headers)
                self.check_echo(resp, path, sub)
                if (resp.header("Connection") or "").lower() == "close":
                    raise Wrong(f"{path}: keep-alive connection closed after a 200")

    def s_pipeline(self):
        tok, sub = self.token()
        which = self.rng.choice(list(REJECTIONS))
        bad, bad_sub = self.bad_token(which)
        p1 = f"/private/ok_{self.rid()}_{sub}/echo"
        p2 = f"/private/deny_{self.rid()}_{bad_sub}/echo"
        p3 = f"/public/ok_{self.rid()}_x/echo"
        self.count(3)
        with self.client() as c:
            c.send(build_request("GET", p1, [("Authorization", f"Bearer {tok}")]) + build_request("GET", p2, bad) +
                   build_request("GET", p3, [("X-Auth-Subject", "admin")]))
            self.check_echo(c.read_response(), p1, sub)
            status, reason, err = REJECTIONS[which]
            gateway_error(c.read_response(), status, reason, err, scope="read")
            self.check_echo(c.read_response(), p3, None)

    def s_abort_upload(self):
        size = UPLOAD_SIZES[-1]
        tok, sub = self.token()
        path = f"/private/abort_{self.rid()}_{sub}/upload"
        data = self.upload_request(path, tok, self.uploads[size], self.rng.random() < 0.5)
        self.count()
        c = self.client()
        try:
            c.send(data[: len(data) // 2])
            time.sleep(self.rng.choice([0, 0.05, 0.2]))
            self.maybe_reset(c)
        finally:
            c.close()

    def maybe_reset(self, c):
        """Half the time the abort is a RST (SO_LINGER 0) instead of a FIN."""
        if self.rng.random() < 0.5:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def s_abort_download(self):
        tok, sub = self.token()
        path = f"/private/ok_{self.rid()}_{sub}/download"
        self.count()
        c = self.client()
        try:
            c.send(build_request("GET", f"{path}?bytes={SLOW_DOWNLOAD}&mode={self.rng.choice(['cl', 'chunked'])}",
                                 [("Authorization", f"Bearer {tok}")]))
            head = c._read_until(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                c.buf = head + c.buf
                resp = c.read_response()
                if upstream_down(resp):
                    raise UpstreamDown(resp.body[:200])
                raise Wrong(f"{path}: expected 200, got {status} {resp.body[:200]!r}")
            got = len(c.buf)
            while got < 300_000:
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionClosed(f"{path}: closed after {got} bytes")
                got += len(data)
            self.maybe_reset(c)
        finally:
            c.close()

    def s_websocket(self):
        from websockets.sync.client import connect
        tok, sub = self.token()
        path = f"/ws/ok_{self.rid()}_{sub}/echo"
        self.count()
        with connect(f"ws://127.0.0.1:{self.port}{path}", additional_headers=[("Authorization", f"Bearer {tok}")],
                     open_timeout=15, close_timeout=10, max_size=None, proxy=None) as ws:
            for i in range(self.rng.randint(2, 6)):
                size = self.rng.choice(WS_SIZES)
                if self.rng.random() < 0.5:
                    msg = ("FRAG" if i == 0 else "t") + "x" * size
                else:
                    msg = (b"FRAG" if i == 1 else b"b") + self.rng.randbytes(size)
                ws.send(msg)
                got = ws.recv(timeout=15)
                if got != msg:
                    raise Wrong(f"{path}: echo differs ({type(got).__name__} {len(got)} for "
                                f"{type(msg).__name__} {len(msg)})")

    def s_ws_reject(self):
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect
        which = self.rng.choice(list(REJECTIONS))
        headers, sub = self.bad_token(which)
        path = f"/ws/deny_{self.rid()}_{sub}/echo"
        status, reason, err = REJECTIONS[which]
        self.count()
        try:
            with connect(f"ws://127.0.0.1:{self.port}{path}", additional_headers=headers, open_timeout=15,
                         proxy=None):
                pass
        except InvalidStatus as e:
            r = e.response
            if r.status_code != status or json.loads(r.body or b"{}").get("reason") != reason:
                raise Wrong(f"{path}: expected {status} {reason}, got {r.status_code} {r.body[:200]!r}")
            return
        raise Wrong(f"{path}: a {which} WebSocket handshake was accepted")

    # -- loop ------------------------------------------------------------------------------------------------------
    def count(self, n: int = 1):
        self.target = None
        with self.soak.lock:
            self.soak.requests[self.kind] += n

    def last_target(self) -> str:
        return self.target or getattr(self, "cur", "?")

    def run(self):
        pause = self.soak.args.pause_ms / 1000.0
        while not self.soak.stop.is_set():
            self.kind = kind = self.rng.choices(self.kinds, self.weights)[0]
            start = self.soak.now()
            try:
                getattr(self, "s_" + kind)()
            except Wrong as e:
                self.drop()
                self.soak.add_wrong(kind, "wrong answer", str(e))
            except (UpstreamDown, ConnectionClosed, OSError, EOFError) as e:
                # Includes socket timeouts (TimeoutError is an OSError): never the contract's answer.
                self.drop()
                end = self.soak.now()
                timeout = isinstance(e, TimeoutError)
                if not timeout and kind in UPSTREAM_KINDS and self.soak.in_fault(start, end):
                    with self.soak.lock:
                        self.soak.fault_answers[kind] += 1
                    time.sleep(0.05)  # do not spin on the outage's quick answers
                else:
                    what = "502 upstream_unavailable outside an outage" if isinstance(e, UpstreamDown) else \
                        f"{type(e).__name__}" + (" outside an outage" if not timeout else "")
                    self.soak.add_wrong(kind, what, f"{e!r} on {self.last_target()} "
                                                    f"(started t={start:.2f}s, ended t={end:.2f}s)")
            except Exception as e:  # noqa: BLE001 - websockets' errors, JSON, anything: a deviation
                self.drop()
                end = self.soak.now()
                if kind not in UPSTREAM_KINDS or not self.soak.in_fault(start, end):
                    self.soak.add_wrong(kind, type(e).__name__,
                                        f"{e!r} on {self.last_target()} (t={start:.2f}-{end:.2f}s) "
                                        f"{traceback.format_exc(limit=3)[-400:]}")
                else:
                    with self.soak.lock:
                        self.soak.fault_answers[kind] += 1
            with self.soak.lock:
                self.soak.runs[kind] += 1
            if pause:
                time.sleep(pause)
        self.drop()


def prime(soak: Soak, port: int, keys):
    """One request of each kind (WebSockets twice per CPU, so every event loop has had one) before the baseline."""
    w = Worker(soak, 99, port, keys, 99)
    w.kind = "priming"
    try:
        for name in ["valid_get", "reject", "public_spoof", "upload", "download", "pipeline", "keepalive",
                     "ws_reject"] + ["websocket"] * (2 * (os.cpu_count() or 1)):
            getattr(w, "s_" + name)()
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"priming request {name} failed: {e!r}")
    finally:
        w.drop()
    with soak.lock:
        soak.requests.clear()


# ----------------------------------------------------------------------------------------------------------------
# faults and sampling

class Faults(threading.Thread):
    """Kills the upstream (SIGKILL) and restarts it on the same port; rewrites the config (SIGHUP or the watcher)."""

    def __init__(self, soak: Soak, gw: GatewayProcess, configs: list[dict], app: dict, reader: LogReader):
        super().__init__(daemon=True, name="faults")
        self.soak, self.gw, self.configs, self.app, self.reader = soak, gw, configs, app, reader
        self.variant = 0
        self.error: str | None = None

    def reload(self):
        self.variant ^= 1
        path = os.path.join(self.gw.work, "gateway.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.configs[self.variant], f, indent=1)
        os.replace(path + ".tmp", path)
        if self.soak.reloads["requested"] % 2 == 0:
            self.gw.proc.send_signal(signal.SIGHUP)
            self.soak.reloads["SIGHUP"] += 1
        else:
            self.soak.reloads["file change only"] += 1
        self.soak.reloads["requested"] += 1

    def kill_and_restart(self):
        s = self.soak
        old = self.app["up"]
        with s.lock:
            s.windows.append([s.now(), None])
            s.kills += 1
        old.proc.kill()
        old.proc.wait()
        old._out.close()
        self.reader.finalise(old.log_path)
        s.stop.wait(self.soak.args.down_seconds)
        for attempt in range(20):
            try:
                up = UpstreamProcess(s.workdir, f"app-{s.kills}-{attempt}", port=self.app["port"])
                break
            except RuntimeError as e:
                if attempt == 19:
                    raise
                self.error = str(e)
                time.sleep(0.25)
        self.reader.add(up.log_path)
        self.app["up"] = up
        with s.lock:
            s.windows[-1][1] = s.now()

    def run(self):
        a = self.soak.args
        next_reload = self.soak.now() + a.reload_every
        next_kill = self.soak.now() + a.kill_every
        try:
            while not self.soak.stop.is_set():
                now = self.soak.now()
                if a.reload_every and now >= next_reload:
                    self.reload()
                    next_reload += a.reload_every
                if a.kill_every and now >= next_kill:
                    self.kill_and_restart()
                    next_kill = self.soak.now() + a.kill_every
                self.soak.stop.wait(0.1)
        except Exception as e:  # noqa: BLE001
            self.error = f"fault thread failed: {e!r}"
            self.soak.add_wrong("soak", "fault injection failed", traceback.format_exc())
            self.soak.stop.set()


class Sampler(threading.Thread):
    def __init__(self, soak: Soak, gw: GatewayProcess, census):
        super().__init__(daemon=True, name="sampler")
        self.soak, self.gw, self.census = soak, gw, census

    def sample(self) -> dict | None:
        s = self.soak
        if self.gw.proc.poll() is not None:
            if not s.gateway_died:
                s.gateway_died = True
                s.add_wrong("gateway", "died", f"exit status {self.gw.proc.returncode}; "
                                                f"stderr tail: {self.gw.stderr()[-400:]}")
            s.stop.set()
            return None
        try:
            row = {"t": s.now(), "rss_kib": rss_kib(self.gw.pid), "fds": self.census()}
        except (OSError, RuntimeError):
            return None
        with s.lock:
            row["requests"] = sum(s.requests.values())
            row["wrong"] = sum(s.wrong.values())
            s.samples.append(row)
        return row

    def run(self):
        while not self.soak.stop.is_set():
            self.sample()
            self.soak.stop.wait(self.soak.args.sample_seconds)


# ----------------------------------------------------------------------------------------------------------------
# report

def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def build_report(s: Soak, info: dict) -> tuple[str, list[str]]:
    a = s.args
    failures = []
    lines = [f"## Soak {info['date']}: {info['duration']:.0f} s of load, {a.workers} workers",
             "",
             f"Binary `{info['binary']}`; {os.cpu_count()} CPUs; upstream killed every {a.kill_every:g} s "
             f"(down {a.down_seconds:g} s), config rewritten every {a.reload_every:g} s; samples every "
             f"{a.sample_seconds:g} s; warm-up {info['warmup']:.0f} s; token cache {a.token_cache} entries per "
             f"event loop.",
             "",
             "| kind | runs | requests | outage answers | wrong |",
             "|---|---:|---:|---:|---:|"]
    wrong_by_kind = collections.Counter()
    for key, n in s.wrong.items():
        wrong_by_kind[key.split(":", 1)[0]] += n
    kinds = list(MIX) + sorted(k for k in wrong_by_kind if k not in MIX)
    for k in kinds:
        lines.append(f"| {k} | {s.runs[k]:,} | {s.requests[k]:,} | {s.fault_answers[k]:,} | {wrong_by_kind[k]} |")
    total_req = sum(s.requests.values())
    lines.append(f"| **total** | {sum(s.runs.values()):,} | {total_req:,} | {sum(s.fault_answers.values()):,} | "
                 f"**{sum(s.wrong.values())}** |")
    lines.append("")
    lines.append(f"Outage answers: a 502 `upstream_unavailable`, or the connection cut after the answer's head, to a "
                 f"request that met an upstream outage; {s.after_restart} of them came to requests that started "
                 f"after the upstream was listening again (within the {a.grace:g} s grace).")
    lines.append("")
    lines.append(f"{total_req / max(info['duration'], 1):.0f} requests/s; the upstream logged "
                 f"{info['upstream_heads']:,} forwarded requests; the WebSocket upstream {info['ws_handshakes']:,} "
                 f"handshakes; the gateway used {info['cpu']:.0f} CPU seconds "
                 f"({100 * info['cpu'] / max(info['duration'], 1):.0f} % of one core).")
    if s.wrong:
        failures.append(f"{sum(s.wrong.values())} wrong answers")
        lines += ["", "Wrong answers by kind:", ""]
        lines += [f"- {k}: {n}" for k, n in sorted(s.wrong.items())]
        lines += ["", "First examples:", ""] + [f"- {e}" for e in s.examples]
    # Memory and descriptors.
    warm = [r for r in s.samples if r["t"] <= info["load_start"] + info["warmup"]]
    after = [r for r in s.samples if r["t"] > info["load_start"] + info["warmup"]]
    base_fds = info["fds_baseline"]
    end_fds = info["fds_end"]
    lines += ["",
              "| resource | idle baseline | warm-up peak | max after warm-up | end of load | idle at end | growth |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    if warm and after:
        ref = max(r["rss_kib"] for r in warm)
        peak = max(r["rss_kib"] for r in after)
        growth = 100.0 * (peak - ref) / ref
        lines.append(f"| RSS (MiB) | {mib(info['rss_baseline'])} | {mib(ref)} | {mib(peak)} | "
                     f"{mib(after[-1]['rss_kib'])} | {mib(info['rss_end'])} | {growth:+.1f} % |")
        if growth > a.rss_limit:
            failures.append(f"RSS grew {growth:.1f} % after warm-up (limit {a.rss_limit:g} %)")
    else:
        lines.append("| RSS (MiB) | – | – | – | – | – | run too short |")
        failures.append("no samples after warm-up")
    fmax = max((r["fds"]["total"] for r in s.samples), default=0)
    unpooled = (end_fds["total"] - end_fds.get("upstream pool", 0)) - \
        (base_fds["total"] - base_fds.get("upstream pool", 0))
    lines.append(f"| open descriptors | {base_fds['total']} | – | {fmax} | "
                 f"{s.samples[-1]['fds']['total'] if s.samples else '–'} | {end_fds['total']} | {unpooled:+d} |")
    pool = end_fds.get("upstream pool", 0)
    base_pool = base_fds.get("upstream pool", 0)
    other_diff = ", ".join(f"{k[7:]} {base_fds.get(k, 0)} → {end_fds.get(k, 0)}" for k in sorted(
        set(base_fds) | set(end_fds)) if k.startswith("other: ") and base_fds.get(k, 0) != end_fds.get(k, 0))
    start_fds = info["fds_start"]
    start_diff = ", ".join(f"{k[7:]} {start_fds.get(k, 0)} → {base_fds.get(k, 0)}" for k in sorted(
        set(base_fds) | set(start_fds)) if k.startswith("other: ") and start_fds.get(k, 0) != base_fds.get(k, 0))
    lines += ["", "Descriptors by kind, idle baseline → idle at end: " + ", ".join(
        f"{k} {base_fds.get(k, 0)} → {end_fds.get(k, 0)}"
        for k in ("listeners", "clients", "upstream pool", "upstream pool, closed by peer", "ws upstream", "other"))
        + (f" ({other_diff})" if other_diff else "") +
        f". The upstream pool is libcurl's idle keep-alive connections to the upstream, kept for reuse: the growth "
        f"column and the check leave it out, and it must stay within 2 × workers = {2 * a.workers}. The idle "
        f"baseline is taken after one priming request of each kind (right after the start: {start_fds['total']}"
        + (f"; {start_diff}" if start_diff else "") +
        f"); idle at end is counted {info['idle_wait']:.1f} s after the load stopped."]
    if end_fds["total"] - pool > base_fds["total"] - base_pool:
        failures.append(f"descriptors at end {end_fds['total']} (minus {pool} pooled) > baseline "
                        f"{base_fds['total']} (minus {base_pool} pooled)")
    if pool > 2 * a.workers:
        failures.append(f"{pool} upstream pool connections at end (> {2 * a.workers})")
    if end_fds.get("clients", 0) or end_fds.get("ws upstream", 0):
        failures.append("client or WebSocket-upstream connections still open at end")
    lines += ["", f"Faults: upstream SIGKILLed and restarted {s.kills} times; config rewritten "
                  f"{s.reloads['requested']} times ({s.reloads['SIGHUP']} with SIGHUP, "
                  f"{s.reloads['file change only']} left to the file watcher); the gateway logged "
                  f"{info['reloaded']} reloads and {info['refused']} refused ones."]
    if info["refused"]:
        failures.append(f"{info['refused']} reloads refused")
    if s.gateway_died:
        failures.append("the gateway died")
    # A few samples over time.
    if s.samples:
        lines += ["", "| t (s) | RSS (MiB) | descriptors | upstream pool | requests so far | wrong so far |",
                  "|---:|---:|---:|---:|---:|---:|"]
        step = max(1, len(s.samples) // 12)
        picked = s.samples[::step]
        if picked[-1] is not s.samples[-1]:
            picked.append(s.samples[-1])
        for r in picked:
            lines.append(f"| {r['t']:.0f} | {mib(r['rss_kib'])} | {r['fds']['total']} | "
                         f"{r['fds'].get('upstream pool', 0)} | {r['requests']:,} | {r['wrong']} |")
    lines += ["", "Result: " + ("**PASS**" if not failures else "**FAIL** — " + "; ".join(failures))]
    return "\n".join(lines) + "\n", failures


# ----------------------------------------------------------------------------------------------------------------
# main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seconds", type=float, help="duration in seconds (instead of --minutes)")
    ap.add_argument("--binary", default=os.environ.get("PORTCULLIS_BIN"),
                    help="gateway binary (default $PORTCULLIS_BIN, else .build/release/portcullis)")
    ap.add_argument("--build", action="store_true", help="build the release binary first")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--pause-ms", type=float, default=0, help="pause of each worker between scenarios")
    ap.add_argument("--kill-every", type=float, default=30, help="seconds between upstream kills (0: never)")
    ap.add_argument("--down-seconds", type=float, default=1.5, help="how long the upstream stays down")
    ap.add_argument("--grace", type=float, default=0.0,
                    help="seconds after the upstream is back during which outage answers to new requests still count "
                         "as such (default 0: once it listens again, a new request must be served)")
    ap.add_argument("--reload-every", type=float, default=5, help="seconds between config rewrites (0: never)")
    ap.add_argument("--sample-seconds", type=float, default=2)
    ap.add_argument("--rss-limit", type=float, default=10, help="allowed RSS growth after warm-up, %%")
    ap.add_argument("--token-cache", type=int, default=256,
                    help="auth.token_cache_entries (per event loop); small, so the cache is full within the warm-up "
                         "and its filling is not mistaken for growth (the gateway's default is 65536)")
    ap.add_argument("--access-log", action="store_true", help="turn the gateway's access log on")
    ap.add_argument("--mix", help="scenarios and weights instead of the default mix, e.g. download=1,upload=2")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", help="also write the markdown report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args()
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    binary = release_binary(args.binary, args.build)

    workdir = tempfile.mkdtemp(prefix="portcullis-soak-")
    started: list = []
    soak = Soak(args, workdir)

    def on_signal(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    failures = ["did not finish"]
    gw = None
    faults = None
    try:
        keys = tokens_mod.KeySet(os.path.join(workdir, "keys"))
        os.environ.update(keys.env())  # the HS512 issuer's secret comes from the environment
        ws = WsUpstreamProcess(workdir)
        started.append(ws)
        app_port = free_port()
        app = {"port": app_port, "up": UpstreamProcess(workdir, "app-0", port=app_port)}
        reader = LogReader(soak)
        reader.add(app["up"].log_path)
        gw_dir = os.path.join(workdir, "gateway")
        os.makedirs(gw_dir)
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        configs = [gateway_config(gw_dir, keys, listen, admin, app_port, ws.port, v, args.access_log, args.token_cache)
                   for v in (0, 1)]
        gw = GatewayProcess(binary, gw_dir, configs[0])
        started.append(gw)
        gw.wait()
        client_ports = (gw.port, int(admin.rsplit(":", 1)[1]))

        def census():
            return fd_census(gw.pid, client_ports, app_port, ws.port)

        # Idle baseline: right after the start, and again after one priming pass of every kind of request (what the
        # gateway creates once, lazily, is not a leak: e.g. the connect-only libcurl multi handle per event loop
        # that the first WebSocket on that loop creates). The pass/fail check uses the primed baseline.
        time.sleep(1.0)
        fds_start = min((census() for _ in range(3)), key=lambda c: c["total"])
        prime(soak, gw.port, keys)
        time.sleep(1.0)
        fds_baseline = min((census() for _ in range(3)), key=lambda c: c["total"])
        rss_baseline = rss_kib(gw.pid)
        print(f"[soak] gateway pid {gw.pid} on {listen}, upstream :{app_port}, WebSocket upstream :{ws.port}; "
              f"{duration:.0f} s; idle baseline {fds_baseline['total']} descriptors, RSS {mib(rss_baseline)} MiB; "
              f"work directory {workdir}", flush=True)

        warmup = max(30.0, duration * 0.1)
        soak.t0 = time.monotonic()  # times in the report count from the start of the load
        load_start = soak.now()
        cpu_start = benchlib.cpu_seconds(gw.pid)
        reader.start()
        sampler = Sampler(soak, gw, census)
        faults = Faults(soak, gw, configs, app, reader)
        workers = [Worker(soak, i, gw.port, keys, args.seed * 1000 + i) for i in range(args.workers)]
        for t in [sampler, faults] + workers:
            t.start()
        deadline = load_start + duration
        last_print = load_start
        while not soak.stop.is_set() and soak.now() < deadline:
            soak.stop.wait(min(1.0, max(0.0, deadline - soak.now())))
            if soak.now() - last_print >= 30:
                last_print = soak.now()
                r = soak.samples[-1] if soak.samples else None
                if r:
                    print(f"[soak] t={r['t']:.0f}s requests {r['requests']:,} wrong {r['wrong']} "
                          f"RSS {mib(r['rss_kib'])} MiB descriptors {r['fds']['total']}", flush=True)
        load_end = soak.now()
        soak.stop.set()
        for t in workers:
            t.join(60)
            if t.is_alive():
                soak.add_wrong("soak", "worker stuck", t.name)
        faults.join(30)
        sampler.join(10)
        sampler.sample()  # the last sample under load
        cpu_load = benchlib.cpu_seconds(gw.pid) - cpu_start if gw.proc.poll() is None else 0.0

        # Idle: wait until the non-pool descriptors are back to the baseline (at most 15 s), then count them.
        idle_start = time.monotonic()
        fds_end = fds_baseline
        rss_end = 0
        if gw.proc.poll() is None:
            while True:
                time.sleep(1.0)
                fds_end = census()
                if fds_end["total"] - fds_end.get("upstream pool", 0) <= \
                        fds_baseline["total"] - fds_baseline.get("upstream pool", 0) or \
                        time.monotonic() - idle_start > 15:
                    break
            rss_end = rss_kib(gw.pid)
        else:
            soak.gateway_died = True
        idle_wait = time.monotonic() - idle_start

        # The WebSocket upstream's handshakes: refused ones must never have reached it.
        handshakes = ws.finish()
        if not handshakes and soak.requests["websocket"]:
            soak.add_wrong("soak", "the WebSocket upstream's handshakes could not be read", "")
        for path, subjects in handshakes:
            segs = path.split("?")[0].split("/")
            tag = segs[2].split("_") if len(segs) > 2 else []
            if len(tag) != 3:
                soak.add_wrong("ws-forwarded", "unexpected handshake", path)
            elif tag[0] == "deny":
                soak.add_wrong("ws-forwarded", "a refused handshake reached the WebSocket upstream", path)
            elif subjects != [tag[2]]:
                soak.add_wrong("ws-forwarded", "handshake without exactly its token's subject", f"{path} {subjects}")
        time.sleep(0.6)
        reader.done.set()
        reader.join(10)
        reader.poll()
        if faults.error and "fault" in faults.error:
            soak.add_wrong("soak", "fault thread", faults.error)

        log_text = gw.stderr()
        info = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "duration": load_end - load_start, "binary": binary, "warmup": warmup, "load_start": load_start,
            "fds_baseline": fds_baseline, "fds_start": fds_start, "fds_end": fds_end,
            "rss_baseline": rss_baseline, "rss_end": rss_end,
            "idle_wait": idle_wait, "cpu": cpu_load, "upstream_heads": reader.heads, "ws_handshakes": len(handshakes),
            "reloaded": log_text.count("configuration reloaded"),
            "refused": sum(1 for line in log_text.splitlines() if "reload" in line and "refused" in line),
        }
        report, failures = build_report(soak, info)
        print(report, flush=True)
        if args.report:
            with open(args.report, "w") as f:
                f.write(report)
        return 1 if failures else 0
    finally:
        soak.stop.set()
        if faults is not None:
            faults.join(15)  # a restart under way finishes before the upstream is stopped below
        for p in reversed(started):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        try:
            up = app["up"]  # noqa: F821 - defined once started
            up.stop()
        except Exception:  # noqa: BLE001
            pass
        if args.keep or failures:
            print(f"[soak] work directory kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
