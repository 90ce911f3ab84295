"""Process management, a raw HTTP/1.1 client, the upstream log reader and contract assertions."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


# ------------------------------------------------------------------------------------------------------------------
# ports and processes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


# `scripts/test --sanitize KIND` sets PORTCULLIS_SANITIZE to the sanitizer the gateway binary was built with.
SANITIZER = os.environ.get("PORTCULLIS_SANITIZE", "")
# ThreadSanitizer (x86_64) gives every 8 bytes of application memory 16 bytes of shadow (4 cells of 4 bytes) and
# 4 bytes of metadata, mapped as the process touches that memory: the same work shows about 3.5 times a plain
# build's RSS (seen: 67.6 KiB per idle WebSocket tunnel, where the plain debug build shows 18.3). RSS bounds are
# scaled by this, so under TSan they still catch a leak of the size they were written for, not TSan's shadow.
RSS_FACTOR = 3.5 if SANITIZER == "thread" else 1.0
# TSan also runs the gateway several times slower (every memory access is checked): timeouts that measure how long
# the gateway takes for a CPU-bound load, and only those, are scaled by this.
SLOWDOWN = 5.0 if SANITIZER == "thread" else 1.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's VmRSS in the background; .peak_kib is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.peak_kib = rss_kib(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        try:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
        except (OSError, RuntimeError):
            pass


# ------------------------------------------------------------------------------------------------------------------
# upstream

def read_json_lines(path: str) -> list[dict]:
    """The complete JSON lines of a log another process appends to (a line being written right now is skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


class InFlight:
    """A request sent on its own thread and held by the upstream (`/public/slow?ms=N`): `start()` returns once its
    head reached the upstream, `finish()` waits for the answer and returns it (or raises what the client raised)."""

    def __init__(self, gateway: "Gateway", upstream: "UpstreamProcess", target: str):
        self.gateway, self.upstream, self.target = gateway, upstream, target
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            with self.gateway.raw(timeout=30) as c:
                self.result["response"] = c.request("GET", self.target)
        except Exception as e:  # noqa: BLE001
            self.result["error"] = e

    def start(self) -> "InFlight":
        mark = self.upstream.log.mark()
        self.thread.start()
        deadline = time.monotonic() + 20
        while not [q for q in self.upstream.log.since(mark) if q["target"] == self.target]:
            assert time.monotonic() < deadline, f"{self.target} never reached the upstream"
            time.sleep(0.02)
        return self

    def finish(self) -> "RawResponse":
        self.thread.join(30)
        if "error" in self.result:
            raise AssertionError(f"the in-flight request failed: {self.result['error']!r}")
        assert "response" in self.result, "the in-flight request did not finish"
        return self.result["response"]


class UpstreamLog:
    """Reads the JSON-lines log written by upstream.py. Requests are merged from their head + body events."""

    def __init__(self, path: str):
        self.path = path

    def _events(self) -> list[dict]:
        return read_json_lines(self.path)

    def requests(self) -> list[dict]:
        reqs: dict[int, dict] = {}
        for ev in self._events():
            if ev["event"] == "head":
                reqs[ev["seq"]] = dict(ev)
            elif ev["event"] == "body" and ev["seq"] in reqs:
                reqs[ev["seq"]].update({k: v for k, v in ev.items() if k not in ("event", "seq")})
                reqs[ev["seq"]]["body_seen"] = True
            elif ev["event"] == "peer_closed" and ev["seq"] in reqs:
                reqs[ev["seq"]]["peer_closed"] = True
        return [reqs[k] for k in sorted(reqs)]

    def count(self) -> int:
        return sum(1 for ev in self._events() if ev["event"] == "head")

    def mark(self) -> int:
        """Highest sequence number so far; pass it to since()."""
        seqs = [ev["seq"] for ev in self._events() if ev["event"] == "head"]
        return max(seqs, default=0)

    def since(self, mark: int) -> list[dict]:
        return [r for r in self.requests() if r["seq"] > mark]

    def wait_body(self, seq: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.requests():
                if r["seq"] == seq and r.get("body_seen"):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"upstream never finished reading the body of request {seq}")
            time.sleep(0.02)


def header_values(req: dict, name: str) -> list[str]:
    """All values of a header in an upstream record; the name is compared exactly case-insensitively."""
    return [v for n, v in req["headers"] if n.lower() == name.lower()]


def header_names(req: dict) -> list[str]:
    return [n for n, _ in req["headers"]]


def raw_head(req: dict) -> bytes:
    return base64.b64decode(req["raw_head_b64"])


def norm_name(name: str) -> str:
    """How DESIGN §5 compares header names: lower-case, `_` and `.` read as `-`."""
    return name.lower().replace("_", "-").replace(".", "-")


class UpstreamProcess:
    def __init__(self, workdir: str, name: str, port: int | None = None, unix: str | None = None,
                 tls: tuple[str, str] | None = None):
        self.name = name
        self.port = port
        self.unix = unix
        self.log_path = os.path.join(workdir, f"upstream-{name}.jsonl")
        self.out_path = os.path.join(workdir, f"upstream-{name}.out")
        self.log = UpstreamLog(self.log_path)
        cmd = [sys.executable, os.path.join(HERE, "upstream.py"), "--log", self.log_path]
        cmd += ["--unix", unix] if unix else ["--port", str(port)]
        if tls:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._out, cwd=HERE)
        line = self.proc.stdout.readline()
        if b"READY" not in line:
            stop_process(self.proc)
            raise RuntimeError(f"upstream {name} did not start: {line!r} {tail(self.out_path)}")

    def stop(self):
        stop_process(self.proc, timeout=5)
        self._out.close()


# ------------------------------------------------------------------------------------------------------------------
# gateway

def find_binary() -> str:
    env = os.environ.get("PORTCULLIS_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise RuntimeError(f"PORTCULLIS_BIN={env} is not an executable")
        return env
    path = os.path.join(REPO, ".build", "debug", "portcullis")
    if not os.access(path, os.X_OK):
        subprocess.run(["swift", "build", "--product", "portcullis"], cwd=REPO, check=True)
    return path


class Gateway:
    """One `portcullis serve --config` process with its own gateway.json in `workdir`."""

    def __init__(self, binary: str, workdir: str, config: dict, env: dict | None = None,
                 args: list[str] | None = None, name: str = "gateway"):
        self.binary = binary
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.config = config
        self.config_path = os.path.join(workdir, "gateway.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.host, port = config["listen"].rsplit(":", 1)
        self.port = int(port)
        ahost, aport = config["admin_listen"].rsplit(":", 1)
        self.admin = (ahost, int(aport))
        self.base = f"http://{self.host}:{self.port}"
        self.out_path = os.path.join(workdir, f"{name}.stdout")
        self.err_path = os.path.join(workdir, f"{name}.stderr")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        cmd = [binary] + (args if args is not None else ["serve", "--config", self.config_path])
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=workdir, env=full_env)
        self.pid = self.proc.pid

    @classmethod
    def started(cls, *args, **kwargs) -> "Gateway":
        """A new gateway that answers /healthz; stopped again (its logs kept) if it does not within the timeout."""
        gw = cls(*args, **kwargs)
        try:
            gw.wait_healthy()
        except Exception:
            gw.stop()
            raise
        return gw

    def wait_healthy(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} before /healthz answered\n"
                                   f"--- stderr ---\n{tail(self.err_path)}\n--- stdout ---\n{tail(self.out_path)}")
            try:
                with urllib.request.urlopen(f"http://{self.admin[0]}:{self.admin[1]}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
                    last = r.status
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"gateway /healthz not 200 within {timeout}s (last: {last})\n{tail(self.err_path)}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        rc = stop_process(self.proc)
        self._out.close()
        self._err.close()
        return rc

    def logs(self) -> bytes:
        data = b""
        for p in (self.out_path, self.err_path):
            try:
                with open(p, "rb") as f:
                    data += f.read()
            except OSError:
                pass
        return data

    def url(self, path: str) -> str:
        return self.base + path

    def raw(self, timeout: float = 10.0) -> "RawClient":
        return RawClient(self.host, self.port, timeout=timeout)


# ------------------------------------------------------------------------------------------------------------------
# raw HTTP/1.1 client

class RawResponse:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, raw_head: bytes):
        self.status = status
        self.status_code = status
        self.reason = reason
        self.header_list = headers
        self.body = body
        self.content = body
        self.raw_head = raw_head

    def header(self, name: str) -> str | None:
        vals = self.headers_all(name)
        return vals[0] if vals else None

    def headers_all(self, name: str) -> list[str]:
        return [v for n, v in self.header_list if n.lower() == name.lower()]

    @property
    def headers(self):
        return _CIDict(self.header_list)

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<RawResponse {self.status} {self.header_list} {self.body[:300]!r}>"


class _CIDict:
    def __init__(self, items):
        self._items = items

    def get(self, name, default=None):
        for n, v in self._items:
            if n.lower() == name.lower():
                return v
        return default

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __contains__(self, name):
        return self.get(name) is not None


class ConnectionClosed(Exception):
    pass


class RawClient:
    """A socket client that sends exactly the bytes given and parses responses itself."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, unix: str | None = None):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.host, self.port = host, port
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise ConnectionClosed(f"connection closed while waiting for {marker!r}; have {self.buf[:200]!r}")
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed(f"connection closed with {n - len(self.buf)} body bytes missing")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method: str = "GET", skip_1xx: bool = True) -> RawResponse:
        while True:
            head = self._read_until(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for line in lines[1:]:
                n, _, v = line.partition(":")
                headers.append((n, v.strip()))
            if 100 <= status < 200 and skip_1xx and status != 101:
                continue
            break
        resp = RawResponse(status, reason, headers, b"", head)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te and "chunked" in te.lower():
            body = bytearray()
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            resp.body = resp.content = bytes(body)
        elif cl is not None:
            resp.body = resp.content = self._read_exact(int(cl))
        else:
            while self._fill():
                pass
            resp.body = resp.content = self.buf
            self.buf = b""
        return resp

    def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", host: str | None = "gateway.test") -> RawResponse:
        self.send(build_request(method, target, headers, body, host))
        return self.read_response(method)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (EOF or reset) within `timeout` without sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return False
        except ConnectionError:
            return True
        if data:
            self.buf += data
            return False
        return True


def build_request(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                  host: str | None = "gateway.test") -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    hs = list(headers or [])
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    lines += [f"{n}: {v}" for n, v in hs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------------------------------------------
# contract assertions (DESIGN §6, security.md §2)

# RFC 6750 §3: error_description uses %x20-21 / %x23-5B / %x5D-7E.
_DESC_OK = re.compile(r'^[\x20\x21\x23-\x5b\x5d-\x7e]*$')


def parse_www_authenticate(value: str) -> tuple[str, dict]:
    scheme, _, rest = value.partition(" ")
    params = {}
    for m in re.finditer(r'\s*([A-Za-z_][A-Za-z0-9_-]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)', rest):
        params[m.group(1)] = m.group(2)
    return scheme, params


def assert_gateway_error(resp, status: int, reason: str | set | None = None, error: str | None = None,
                         secrets: tuple[str, ...] = ()):
    """DESIGN §6 body shape: JSON {"error","reason","message","request_id"}; no secrets echoed."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.content[:500]!r}"
    ctype = resp.headers.get("Content-Type", "")
    assert "json" in ctype.lower(), f"error response Content-Type {ctype!r} is not JSON"
    body = json.loads(resp.content)
    for key in ("error", "reason", "message", "request_id"):
        assert key in body, f"error body lacks {key!r}: {body}"
        assert isinstance(body[key], str), f"{key} is not a string: {body}"
    if reason is not None:
        allowed = {reason} if isinstance(reason, str) else set(reason)
        assert body["reason"] in allowed, f"reason {body['reason']!r} not in {allowed}"
    if error is not None:
        assert body["error"] == error, f"error {body['error']!r} != {error!r}"
    for s in secrets:
        if s:
            assert s.encode() not in resp.content, "response echoes secret/token bytes"
            for part in s.split(".")[1:]:
                if len(part) > 16:
                    assert part.encode() not in resp.content, "response echoes a token segment"
    return body


def assert_challenge(resp, expected_exact: str | None = None, error: str | None = None, **params):
    """Checks WWW-Authenticate: exact value if given, else scheme Bearer + realm + the given params."""
    values = resp.headers_all("WWW-Authenticate") if hasattr(resp, "headers_all") else \
        [resp.headers.get("WWW-Authenticate")] if resp.headers.get("WWW-Authenticate") else []
    assert len(values) == 1, f"expected exactly one WWW-Authenticate, got {values}"
    value = values[0]
    if expected_exact is not None:
        assert value == expected_exact, f"WWW-Authenticate {value!r} != {expected_exact!r}"
    scheme, p = parse_www_authenticate(value)
    assert scheme == "Bearer", value
    assert p.get("realm") == "api", value
    if error is not None:
        assert p.get("error") == error, value
    for k, v in params.items():
        assert p.get(k) == v, f"{k}={p.get(k)!r}, expected {v!r} in {value!r}"
    if "error_description" in p:
        assert _DESC_OK.match(p["error_description"]), f"error_description has bad characters: {value!r}"
    return p


def percent_hex_upper(s: str) -> str:
    """Normalise the case of %xx escapes (the contract does not pin hex case)."""
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), s)


def unique_id() -> str:
    return uuid.uuid4().hex[:12]
