"""A small blocking HTTP/2 client on the `h2` package, for tests that need one connection with many streams, raw
frames (floods) or a look at GOAWAY. Cleartext (prior knowledge) or TLS with ALPN `h2`."""
from __future__ import annotations

import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Stream:
    def __init__(self):
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name.lower():
                return v
        return None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                             normalize_outbound_headers=False))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
        self.conn.increment_flow_control_window((1 << 24))
        self.flush()
        self.streams: dict[int, Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.remote_settings: dict[int, int] = {}
        self.host = host
        self.port = port

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, authority: str | None = None, end_stream: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https" if isinstance(self.sock, ssl.SSLSocket) else "http"),
                (":authority", authority or f"{self.host}:{self.port}"), (":path", path)] + (headers or [])
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end_stream=end_stream)
        return sid

    def send_body(self, sid: int, body: bytes, end_stream: bool = True, timeout: float = 30.0):
        """Sends `body` as the peer's flow-control windows allow, reading (window updates) while they are shut."""
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        while True:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if len(view) == 0 or window > 0:
                chunk = view[:window]
                view = view[len(chunk):]
                self.conn.send_data(sid, bytes(chunk), end_stream=end_stream and len(view) == 0)
                self.flush()
                if len(view) == 0:
                    return
                continue
            before = self.conn.local_flow_control_window(sid)
            self.pump(lambda: self.closed or self.streams[sid].done or self.conn.local_flow_control_window(sid) > before,
                      max(0.1, deadline - time.monotonic()))
            if self.closed or self.streams[sid].done:
                return

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def pump(self, until, timeout: float = 15.0):
        """Reads and handles frames until `until()` is true; raises on timeout. Returns early if the peer closed."""
        deadline = time.monotonic() + timeout
        while not until():
            if self.closed:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("HTTP/2 peer did not answer in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                data = b""
            if not data:
                self.closed = True
                return
            if self.goaway is not None and self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                continue  # `h2` takes the first GOAWAY as the end: later frames (PING, the second GOAWAY) are dropped
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                if self.goaway is None:
                    raise
                continue
            for event in events:
                self._handle(event)
            try:
                self.flush()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.closed = True

    def _handle(self, event):
        if isinstance(event, h2.events.ResponseReceived):
            s = self.streams.setdefault(event.stream_id, Stream())
            s.headers = [(n, v) for n, v in event.headers]
            s.status = int(dict(event.headers)[":status"])
        elif isinstance(event, h2.events.DataReceived):
            s = self.streams.setdefault(event.stream_id, Stream())
            s.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams.setdefault(event.stream_id, Stream()).trailers = [(n, v) for n, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            self.streams.setdefault(event.stream_id, Stream()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.setdefault(event.stream_id, Stream()).reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value

    def response(self, sid: int, timeout: float = 15.0) -> Stream:
        self.pump(lambda: self.streams[sid].done, timeout)
        return self.streams[sid]

    def get(self, path: str, headers=None, timeout: float = 15.0) -> Stream:
        return self.response(self.request(path, headers=headers), timeout)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One raw HTTP/2 frame (RFC 9113 §4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
