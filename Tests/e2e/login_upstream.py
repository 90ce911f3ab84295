"""A login upstream for the `token_service.login_upstream` tests: answers POST /login with JSON {"username",
"password"} the way DESIGN §4 describes, and some users the ways a broken one would. Prints READY, logs each request
as one JSON line (never the password) to --log."""
from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            form = json.loads(raw)
        except ValueError:
            form = {}
        with open(self.server.log_path, "a") as f:
            f.write(json.dumps({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                "authorization": self.headers.get("Authorization"),
                                "username": form.get("username"), "has_password": "password" in form}) + "\n")
        user, password = form.get("username"), form.get("password")
        if self.path != "/login":
            return self.answer(404, b"{}")
        if user == "ext-alice" and password == "right":
            return self.answer(200, json.dumps({"subject": "ext-alice-id", "scopes": ["read", "write"],
                                                "claims": {"department": "research"}}).encode())
        if user == "broken":
            return self.answer(500, b'{"error": "boom"}')
        if user == "garbage":
            return self.answer(200, b"<html>not json</html>", "text/html")
        if user == "no-subject":
            return self.answer(200, b'{"scopes": ["read"]}')
        if user == "slow":
            time.sleep(3)
            return self.answer(200, b'{"subject": "slow"}')
        return self.answer(401, b'{"error": "invalid_credentials"}')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.log_path = args.log
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
