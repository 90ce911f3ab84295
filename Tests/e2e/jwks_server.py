"""A key-set (JWKS) and issuer-metadata server that the tests control, run as its own process.

    python3 jwks_server.py --port P --state STATE.json --log LOG.jsonl [--tls-cert C --tls-key K]

prints READY once listening. Every request re-reads the state file (written atomically by the test), so the test
changes what is served without talking to the process, and can stop it (the identity provider goes down) and start
it again on the same port with the same state (it comes back). Every request is appended to the log as a JSON line
(`path`, `t`), so fetches are counted across restarts.

State (all optional):
  jwks            the key set document served at `jwks_path` (default "/jwks.json")
  cache_control   Cache-Control value of the key set response (absent: no header)
  status          status of the key set response (default 200)
  delay_ms        wait this long before answering the key set (a slow identity provider)
  oversize        serve this many bytes of JSON-ish filler instead of the key set
  redirect        answer the key set with 302 and this Location
  issuer          the issuer identifier; its path decides where the metadata documents are
  openid          serve `<issuer path>/.well-known/openid-configuration` (default true)
  oauth           serve `/.well-known/oauth-authorization-server<issuer path>` (default false)
  meta_issuer     the `issuer` the metadata documents claim (default: `issuer`)
  meta_jwks_uri   the `jwks_uri` the metadata documents announce (default: this server's key set URL)

`JWKSServer` (imported by the tests) manages the process and the state file.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------------------------------------------------------
# the server process

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jwks-test"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    def _state(self) -> dict:
        try:
            with open(self.server.state_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return {}

    def _log(self):
        line = json.dumps({"path": self.path, "t": time.time()}) + "\n"
        with self.server.log_lock, open(self.server.log_path, "a", encoding="utf-8") as f:
            f.write(line)

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._log()
        state = self._state()
        scheme = "https" if self.server.tls else "http"
        base = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        jwks_path = state.get("jwks_path", "/jwks.json")
        issuer = state.get("issuer", base)
        issuer_path = urlsplit(issuer).path.rstrip("/")
        path = self.path.split("?", 1)[0]

        if path == jwks_path:
            if state.get("delay_ms"):
                time.sleep(state["delay_ms"] / 1000)
            if state.get("redirect"):
                return self._send(302, b"{}", [("Location", state["redirect"])])
            if state.get("oversize"):
                n = int(state["oversize"])
                body = b'{"keys":[' + b" " * max(0, n - 11) + b"]}"
                return self._send(200, body)
            headers = []
            if state.get("cache_control") is not None:
                headers.append(("Cache-Control", state["cache_control"]))
            body = json.dumps(state.get("jwks", {"keys": []})).encode()
            return self._send(int(state.get("status", 200)), body, headers)

        metadata = {
            "issuer": state.get("meta_issuer", issuer),
            "jwks_uri": state.get("meta_jwks_uri", base + jwks_path),
            "token_endpoint": base + "/token",
        }
        if state.get("openid", True) and path == issuer_path + "/.well-known/openid-configuration":
            return self._send(200, json.dumps(metadata).encode())
        if state.get("oauth", False) and path == "/.well-known/oauth-authorization-server" + issuer_path:
            return self._send(200, json.dumps(metadata).encode())
        self._send(404, b'{"error":"not_found"}')


def _serve(args):
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.state_path = args.state
    server.log_path = args.log
    server.log_lock = threading.Lock()
    server.tls = bool(args.tls_cert)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


# ------------------------------------------------------------------------------------------------------------------
# the tests' handle on it

class JWKSServer:
    """One controllable key-set server on a fixed port (so it can go down and come back on the same address)."""

    def __init__(self, workdir: str, name: str, port: int, tls: tuple[str, str] | None = None, **state):
        os.makedirs(workdir, exist_ok=True)
        self.port = port
        self.tls = tls
        self.state_path = os.path.join(workdir, f"jwks-{name}.state.json")
        self.log_path = os.path.join(workdir, f"jwks-{name}.log.jsonl")
        self.err_path = os.path.join(workdir, f"jwks-{name}.stderr")
        self.state: dict = dict(state)
        self._write()
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.base + self.state.get("jwks_path", "/jwks.json")

    def _write(self):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.state_path)

    def update(self, **changes):
        """Changes what is served from the next request on; a value of None removes the entry."""
        for k, v in changes.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        self._write()

    def publish(self, jwks: dict, **changes):
        self.update(jwks=jwks, **changes)

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [sys.executable, os.path.join(HERE, "jwks_server.py"), "--port", str(self.port),
               "--state", self.state_path, "--log", self.log_path]
        if self.tls:
            cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        err = open(self.err_path, "ab")
        deadline = time.monotonic() + 10
        while True:  # the port may still be in TIME_WAIT-free limbo right after a stop; retry briefly
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=HERE)
            line = self.proc.stdout.readline()
            if b"READY" in line:
                break
            self.proc.wait(timeout=5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"jwks server did not start on port {self.port}")
            time.sleep(0.1)
        err.close()
        return self

    def stop(self):
        """The identity provider goes down: the process is stopped (by pid) and the port refuses connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def requests(self) -> list[dict]:
        from harness import read_json_lines  # the server half of this file runs without the test harness
        return read_json_lines(self.log_path)

    def fetch_times(self, path: str | None = None) -> list[float]:
        """Times of the requests for `path` (default: the key set)."""
        path = path or self.state.get("jwks_path", "/jwks.json")
        return [r["t"] for r in self.requests() if r["path"].split("?", 1)[0] == path]

    def fetches(self, path: str | None = None) -> int:
        return len(self.fetch_times(path))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    _serve(p.parse_args())
