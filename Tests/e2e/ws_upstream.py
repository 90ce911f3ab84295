"""A WebSocket upstream for the end-to-end tests (the `websockets` package), run in a thread of the test process.

It records every handshake (path, headers, negotiated subprotocol and extensions) and every connection's end
(close code and reason the upstream received, or that the connection was lost). Behaviour by path:
  /ws/echo (default)   echo every message; a message starting with b"FRAG" or "FRAG" comes back in 4 fragments;
                       "ping-me" makes the upstream ping the client and answer "pong-ok" once the pong came
  /ws/die              after the first message, abort the TCP connection (no close frame)
  /ws/flood?mib=N      send N binary messages of 1 MiB as fast as the gateway takes them, then wait
  /ws/noread           never read (its receive queue holds one message, so TCP back-pressure builds)
  /ws/refuse/NNN       answer the handshake with status NNN and a small body
  /ws/refuse-chunked/NNN  the same body with Transfer-Encoding: chunked (three chunks, an extension, a trailer)
"""
from __future__ import annotations

import asyncio
import http
import os
import threading
import time
import urllib.parse

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from harness import free_port


class WsUpstream:
    def __init__(self, ssl_context=None):
        self.port = free_port()
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.handshakes: list[dict] = []
        self.ends: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("ws upstream did not start")

    # ----------------------------------------------------------------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        self._stop = asyncio.Event()

        def select(connection, offered):
            for p in ("chat.v2", "chat.v1"):
                if p in offered:
                    return p
            return None

        async with serve(self._handler, "127.0.0.1", self.port, process_request=self._process_request,
                         select_subprotocol=select, max_size=None, max_queue=1, ping_interval=None,
                         compression="deflate", ssl=self.ssl_context):
            self._ready.set()
            await self._stop.wait()

    def stop(self):
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # ----------------------------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request):
        path = urllib.parse.urlsplit(request.path).path
        with self.lock:
            self.handshakes.append({"path": request.path, "headers": list(request.headers.raw_items()),
                                    "time": time.monotonic()})
        if path.startswith("/ws/refuse/"):
            status = int(path.rsplit("/", 1)[1])
            body = f"refused with {status}\n".encode()
            headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                               ("X-Refused", "yes")])
            return Response(status, http.HTTPStatus(status).phrase, headers, body)
        if path.startswith("/ws/refuse-chunked/"):
            status = int(path.rsplit("/", 1)[1])
            body = f"refused with {status}\n".encode()
            framed = (b"5\r\n" + body[:5] + b"\r\n" + b"3;note=x\r\n" + body[5:8] + b"\r\n"
                      + f"{len(body) - 8:x}\r\n".encode() + body[8:] + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
            headers = Headers([("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"), ("X-Refused", "yes")])
            return Response(status, http.HTTPStatus(status).phrase, headers, framed)
        return None

    async def _handler(self, ws: ServerConnection):
        path = urllib.parse.urlsplit(ws.request.path).path
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ws.request.path).query))
        with self.lock:
            for h in reversed(self.handshakes):
                if h["path"] == ws.request.path and "subprotocol" not in h:
                    h["subprotocol"] = ws.subprotocol
                    h["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
                    ssl_object = ws.transport.get_extra_info("ssl_object")
                    h["alpn"] = ssl_object.selected_alpn_protocol() if ssl_object else None
                    break
        end = {"path": ws.request.path, "code": None, "reason": None, "lost": False}
        try:
            if path.startswith("/ws/die"):
                await ws.recv()
                ws.transport.abort()
                end["lost"] = True
                return
            if path.startswith("/ws/flood"):
                chunk = os.urandom(1024 * 1024)  # incompressible: permessage-deflate must not shrink it
                for _ in range(int(query.get("mib", "64"))):
                    await ws.send(chunk)
                await ws.wait_closed()
                return
            if path.startswith("/ws/noread"):
                await ws.wait_closed()
                return
            async for message in ws:
                if message == "ping-me":
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, 10)
                    await ws.send("pong-ok")
                elif (isinstance(message, bytes) and message.startswith(b"FRAG")) or \
                        (isinstance(message, str) and message.startswith("FRAG")):
                    step = max(1, len(message) // 4)
                    await ws.send([message[i:i + step] for i in range(0, len(message), step)])
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            if rcvd is not None:
                end["code"], end["reason"] = rcvd.code, rcvd.reason
            else:
                end["lost"] = True
            end["time"] = time.monotonic()
            with self.lock:
                self.ends.append(end)

    # ----------------------------------------------------------------------------------------------------------
    def handshakes_for(self, marker: str) -> list[dict]:
        with self.lock:
            return [h for h in self.handshakes if marker in h["path"]]

    def end_for(self, marker: str, timeout: float = 10.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.ends if marker in e["path"]]
            if found:
                return found[-1]
            time.sleep(0.02)
        return None
