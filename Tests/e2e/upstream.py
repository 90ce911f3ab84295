#!/usr/bin/env python3
"""Raw recording HTTP/1.1 upstream for the Portcullis end-to-end tests.

Runs as a separate process:

    python3 upstream.py --port P [--host 127.0.0.1] --log FILE
    python3 upstream.py --unix PATH --log FILE

and prints "READY" on stdout once it listens. It is deliberately a raw asyncio server, not a framework: it keeps the
request exactly as it arrived (request line, header lines in order and spelling, body bytes) so that tests can assert
on what the gateway really sent.

Log (one JSON object per line, appended and flushed at once):
  {"event": "head", "seq", "conn", "conn_req", "peer", "request_line", "method", "target", "version",
   "headers": [[name, value], ...], "raw_head_b64"}              -- written as soon as a request head is parsed
  {"event": "body", "seq", "body_len", "body_sha256", "body_b64" (only if body_len <= 65536), "complete",
   "chunked", "trailers"}                                          -- written when the body is read (or aborted)
Header names/values are decoded as latin-1 so every byte survives.

Behaviour is chosen by the path's last segment (so it works under any gateway route prefix, e.g. /private/upload):
  echo (and anything not listed)  200, JSON summary of what arrived (also answers HEAD: same head, no body)
  slow?ms=N                       sleep N ms, then echo
  hang                            never answer (keeps the connection until the peer closes it, then logs
                                  {"event": "peer_closed", "seq"})
  stall-mid-body                  head with Content-Length 2*half, `half` bytes (?half=N, default 1024), then silence
  trickle?n=N&ms=M                N KiB, one KiB every M ms (Content-Length N*1024)
  reset-mid-body                  head with Content-Length 1000, 500 bytes, then TCP RST
  download?bytes=N&mode=cl|chunked  N deterministic bytes (payload.py), streamed with back-pressure
  upload                          reads the body streaming; answers {"length", "sha256"}
  status/NNN                      answer status NNN (204 and 304 without a body, 304 with an ETag)
  bad-response                    answer with both Content-Length and Transfer-Encoding (response smuggling)
  bad-header                      answer with a control byte (0x01) inside a header value
  redirect                        302 to http://evil.invalid/stolen
  hop-headers                     200 with hop-by-hop fields (`Connection: X-Hop, keep-alive`, X-Hop, Keep-Alive,
                                  Proxy-Authenticate, Upgrade, Trailer) beside an end-to-end `X-Kept`
  trailers                        200 chunked `abc` with trailers `X-Trailer: t-1`, `X-Other: o-1` and a framing
                                  field that must not be relayed (`Content-Length: 99`)
Keep-alive is supported; `Connection: close` from the client closes after the response.
Every response carries `X-Upstream-Seq: <seq>`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import os
import socket
import struct
import sys
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import payload  # noqa: E402

MAX_HEAD = 1 << 20
KEEP_BODY = 65536

_seq = itertools.count(1)
_conn = itertools.count(1)
_log_file = None


def log(obj: dict) -> None:
    if _log_file is None:
        return
    _log_file.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _log_file.flush()


class BadRequest(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip(b"\r\n"):
            raise BadRequest("truncated head")
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("head too large")
    # Tolerate empty lines before a request line (RFC 9112 §2.2).
    return data.lstrip(b"\r\n") if data.strip(b"\r\n") else await read_head(reader)


def parse_head(raw: bytes):
    lines = raw[:-4].split(b"\r\n")
    request_line = lines[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise BadRequest("bad request line")
    method, target, version = parts
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest("bad header line")
        headers.append([name.decode("latin-1"), value.strip(b" \t").decode("latin-1")])
    return request_line, method, target, version, headers


def hget(headers, name):
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


class Body:
    def __init__(self):
        self.len = 0
        self.sha = hashlib.sha256()
        self.kept = bytearray()
        self.complete = False
        self.chunked = False
        self.trailers = []

    def feed(self, data: bytes):
        self.len += len(data)
        self.sha.update(data)
        if len(self.kept) <= KEEP_BODY:
            self.kept += data[: KEEP_BODY + 1 - len(self.kept)]


async def read_body(reader, headers, body: Body):
    te = hget(headers, "transfer-encoding")
    cl = hget(headers, "content-length")
    if te:
        if te[-1].strip().lower().split(",")[-1].strip() != "chunked":
            raise BadRequest("unsupported transfer-encoding")
        body.chunked = True
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = await reader.readuntil(b"\r\n")
                    if t == b"\r\n":
                        break
                    body.trailers.append(t[:-2].decode("latin-1"))
                break
            remaining = size
            while remaining:
                data = await reader.read(min(remaining, 1 << 18))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                body.feed(data)
                remaining -= len(data)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest("bad chunk terminator")
    elif cl:
        remaining = int(cl[0])
        while remaining:
            data = await reader.read(min(remaining, 1 << 18))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            body.feed(data)
            remaining -= len(data)
    body.complete = True


def head_bytes(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    out = [f"HTTP/1.1 {status} {reason}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


REASONS = {200: "OK", 204: "No Content", 302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           500: "Internal Server Error"}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    conn_id = next(_conn)
    peer = writer.get_extra_info("peername")
    peer = peer if isinstance(peer, str) else (f"{peer[0]}:{peer[1]}" if peer else "unix")
    conn_req = 0
    try:
        while True:
            try:
                raw = await read_head(reader)
            except BadRequest as e:
                writer.write(head_bytes(400, "Bad Request", [("Content-Length", "0"), ("Connection", "close"),
                                                             ("X-Upstream-Error", str(e))]))
                break
            if raw is None:
                break
            seq = next(_seq)
            conn_req += 1
            try:
                request_line, method, target, version, headers = parse_head(raw)
            except BadRequest as e:
                log({"event": "head", "seq": seq, "conn": conn_id, "conn_req": conn_req, "peer": peer,
                     "request_line": raw.split(b"\r\n")[0].decode("latin-1"), "method": None, "target": None,
                     "version": None, "headers": [], "raw_head_b64": base64.b64encode(raw).decode(),
                     "parse_error": str(e)})
                writer.write(head_bytes(400, "Bad Request", [("Content-Length", "0"), ("Connection", "close")]))
                break
            log({"event": "head", "seq": seq, "conn": conn_id, "conn_req": conn_req, "peer": peer,
                 "request_line": request_line, "method": method, "target": target, "version": version,
                 "headers": headers, "raw_head_b64": base64.b64encode(raw).decode()})
            if any(v.lower() == "100-continue" for v in hget(headers, "expect")):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = Body()
            try:
                await read_body(reader, headers, body)
            except (BadRequest, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ConnectionError):
                pass
            finally:
                ev = {"event": "body", "seq": seq, "body_len": body.len, "body_sha256": body.sha.hexdigest(),
                      "complete": body.complete, "chunked": body.chunked, "trailers": body.trailers}
                if body.len <= KEEP_BODY:
                    ev["body_b64"] = base64.b64encode(bytes(body.kept)).decode()
                log(ev)
            if not body.complete:
                break
            close = any("close" in [t.strip().lower() for t in v.split(",")] for v in hget(headers, "connection"))
            keep = await respond(reader, writer, seq, method, target, version, headers, body, close)
            if not keep or close or version == "HTTP/1.0":
                break
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def respond(reader, writer, seq, method, target, version, headers, body: Body, close: bool) -> bool:
    """Write the response; returns False when the connection must be closed afterwards."""
    split = urlsplit(target) if target.startswith("/") else urlsplit(target)
    path = split.path or "/"
    query = parse_qs(split.query)
    segs = [s for s in path.split("/")]
    last = segs[-1] if segs else ""
    prev = segs[-2] if len(segs) >= 2 else ""
    base = [("X-Upstream-Seq", str(seq))]
    if close:
        base.append(("Connection", "close"))
    is_head = method == "HEAD"

    def q(name, default):
        try:
            return int(query.get(name, [default])[0])
        except ValueError:
            return default

    if prev == "status" and last.isdigit():
        status = int(last)
        if status in (204, 304) or 100 <= status < 200:
            extra = [("ETag", '"e2e-etag"')] if status == 304 else []
            writer.write(head_bytes(status, REASONS.get(status, "Status"), base + extra))
        else:
            text = f"status {status}\n".encode()
            writer.write(head_bytes(status, REASONS.get(status, "Status"),
                                    base + [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))]))
            if not is_head:
                writer.write(text)
        await writer.drain()
        return True

    if last == "hang":
        # Never answer. Wait until the peer goes away, and say when it did.
        try:
            while await reader.read(65536):
                pass
        finally:
            log({"event": "peer_closed", "seq": seq})
        return False

    if last == "stall-mid-body":
        half = q("half", 1024)
        writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/octet-stream"),
                                                   ("Content-Length", str(2 * half))]))
        writer.write(payload.make(half))
        await writer.drain()
        while await reader.read(65536):
            pass
        return False

    if last == "trickle":
        n, ms = q("n", 20), q("ms", 100)
        writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/octet-stream"),
                                                   ("Content-Length", str(n * 1024))]))
        for i in range(n):
            writer.write(payload.make(1024))
            await writer.drain()
            if i + 1 < n:
                await asyncio.sleep(ms / 1000.0)
        return True

    if last == "reset-mid-body":
        writer.write(head_bytes(200, "OK", base + [("Content-Length", "1000")]))
        writer.write(b"x" * 500)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False

    if last == "bad-response":
        writer.write(head_bytes(200, "OK", base + [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return False

    if last == "bad-header":
        # A control byte inside a header value: a gateway must not relay it.
        writer.write(b"HTTP/1.1 200 OK\r\nX-Upstream-Seq: %d\r\nX-Evil: a\x01b\r\nContent-Length: 2\r\n\r\nok" % seq)
        await writer.drain()
        return False

    if last == "hop-headers":
        writer.write(head_bytes(200, "OK", base + [
            ("Connection", "X-Hop, keep-alive"), ("X-Hop", "hop-secret"), ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", 'Basic realm="upstream"'), ("Upgrade", "h2c"), ("Trailer", "X-Trailer"),
            ("X-Kept", "yes"), ("Content-Length", "2")]))
        if not is_head:
            writer.write(b"ok")
        await writer.drain()
        return True

    if last == "trailers":
        writer.write(head_bytes(200, "OK", base + [("Transfer-Encoding", "chunked"), ("Trailer", "X-Trailer, X-Other")]))
        if not is_head:
            writer.write(b"3\r\nabc\r\n0\r\nX-Trailer: t-1\r\nContent-Length: 99\r\nX-Other: o-1\r\n\r\n")
        await writer.drain()
        return True

    if last == "redirect":
        writer.write(head_bytes(302, "Found", base + [("Location", "http://evil.invalid/stolen"),
                                                      ("Content-Length", "0")]))
        await writer.drain()
        return True

    if last == "download":
        total = q("bytes", 0)
        mode = query.get("mode", ["cl"])[0]
        if mode == "chunked":
            writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/octet-stream"),
                                                       ("Transfer-Encoding", "chunked")]))
            if not is_head:
                for c in payload.chunks(total, 1 << 18):
                    writer.write(b"%x\r\n" % len(c) + c + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
        else:
            writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/octet-stream"),
                                                       ("Content-Length", str(total))]))
            if not is_head:
                for c in payload.chunks(total, 1 << 18):
                    writer.write(c)
                    await writer.drain()
        await writer.drain()
        return True

    if last == "upload":
        out = json.dumps({"seq": seq, "length": body.len, "sha256": body.sha.hexdigest()}).encode()
        writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(out)))]))
        if not is_head:
            writer.write(out)
        await writer.drain()
        return True

    if last == "slow":
        await asyncio.sleep(q("ms", 0) / 1000.0)

    summary = {"seq": seq, "method": method, "target": target, "path": path, "query": split.query,
               "version": version, "headers": headers, "body_len": body.len, "body_sha256": body.sha.hexdigest()}
    out = json.dumps(summary).encode()
    writer.write(head_bytes(200, "OK", base + [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(out)))]))
    if not is_head:
        writer.write(out)
    await writer.drain()
    return True


async def main_async(args):
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(handle, path=args.unix, limit=MAX_HEAD)
    else:
        tls = None
        if args.tls_cert:
            import ssl
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        server = await asyncio.start_server(handle, host=args.host, port=args.port, limit=MAX_HEAD,
                                            reuse_address=True, ssl=tls)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def main():
    global _log_file
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--unix")
    ap.add_argument("--log")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    ap.add_argument("--tls-key", help="the certificate's PEM private key")
    args = ap.parse_args()
    if args.log:
        _log_file = open(args.log, "a", encoding="utf-8")
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
