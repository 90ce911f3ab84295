"""What the Python benchmarks share: the release binary, gateway processes, a lean keep-alive HTTP/1.1 client and
CPU accounting. Benchmarks print numbers; nothing here asserts on timing."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_BINARY = os.path.join(ROOT, ".build/release/portcullis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_binary(path: str | None, build: bool) -> str:
    """The gateway binary to measure: `path`, else the release build (built first when `build` or when missing)."""
    if path:
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise SystemExit(f"{path} missing")
        return path
    if build or not os.path.exists(RELEASE_BINARY):
        subprocess.run(["swift", "build", "-c", "release", "--product", "portcullis"], cwd=ROOT, check=True)
    return RELEASE_BINARY


class GatewayProcess:
    """One gateway started from a config dict in `work` (gateway.json, stderr there), optionally pinned to CPUs."""

    def __init__(self, binary: str, work: str, config: dict, cpus: str | None = None, env: dict | None = None):
        self.work = work
        os.makedirs(work, exist_ok=True)
        with open(os.path.join(work, "gateway.json"), "w") as f:
            json.dump(config, f)
        self.port = int(config["listen"].rsplit(":", 1)[1])
        self.admin = config["admin_listen"]
        pin = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen(pin + [binary, "serve", "--config", "gateway.json"], cwd=work, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "stderr"), "wb"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(os.path.join(self.work, "stderr"), errors="replace") as f:
            return f.read()

    def wait(self, path: str = "/healthz", timeout: float = 30):
        """Until the admin listener answers 200 on `path` (/readyz waits for the store and revocation sources)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://{self.admin}{path}", timeout=1)
                return self
            except Exception:  # noqa: BLE001
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"gateway in {self.work} did not become ready ({path}):\n{self.stderr()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Connection:
    """A keep-alive HTTP/1.1 client on a raw socket: cheap enough per request (tens of µs of Python) that the
    client is not what a benchmark measures. Expects Content-Length framing, which the gateway's own answers use."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(head + body)
                return self._response()
            except (ConnectionError, EOFError):
                # The server closed an idle keep-alive connection: once more on a new one.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        head = self.buffer[:end].decode("latin-1")
        self.buffer = self.buffer[end + 4:]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and "close" in value.lower():
                close = True
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            self.close()
        return status, body

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buffer += data

    def form(self, path: str, fields: dict, headers: str = "") -> tuple[int, dict]:
        """POST an urlencoded form; the JSON answer (or {})."""
        status, body = self.request("POST", path, urllib.parse.urlencode(fields).encode(),
                                    "Content-Type: application/x-www-form-urlencoded\r\n" + headers)
        return status, json.loads(body) if body else {}


def stop_processes(procs: list[subprocess.Popen]):
    """Stops what a benchmark started, newest first: SIGTERM, then SIGKILL after 10 s."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_kib(pid: int) -> int:
    """Resident memory of one process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(parent: int) -> float:
    """CPU time of `parent` and its live direct children (PostgreSQL's backends are the postmaster's children)."""
    total = cpu_seconds(parent)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total
