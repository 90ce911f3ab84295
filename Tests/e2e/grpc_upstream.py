"""A gRPC upstream for the end-to-end tests, run as its own process: grpcio with generic handlers (bytes in, bytes
out, no protoc), on a cleartext port (h2c by prior knowledge) and/or a TLS port. Prints READY once listening.

Methods, by the method name whatever the service (`/<any.Service>/<Method>`):
  Unary         answers JSON {"metadata": {...}, "request": <hex>} with the call's metadata (binary keys hex-encoded);
                sends initial metadata x-initial and trailing metadata x-trailer and x-trailer-bin
  ServerStream  the request is a count N: N messages b"msg-<i>", then the trailers
  ClientStream  joins every request message with b"|" and answers the result
  Bidi          answers each message as it arrives with b"echo:" + message (ping-pong shows full duplex)
  Slow          the request is a number of milliseconds: waits that long (or until cancelled), then answers b"late"
  Fail          aborts with NOT_FOUND and a message that needs percent-encoding (a Trailers-Only answer)
  Big           the request is a number of bytes: answers that many (flow control over many windows)
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

INITIAL = (("x-initial", "i-1"),)
TRAILING = (("x-trailer", "t-1"), ("x-trailer-bin", b"\x00\x01\xfe"))
FAIL_MESSAGE = "nope: caf\u00e9 100%"


def _metadata(context) -> dict:
    out: dict = {}
    for key, value in context.invocation_metadata():
        out.setdefault(key, []).append(value.hex() if isinstance(value, bytes) else value)
    return out


def unary(request: bytes, context) -> bytes:
    context.send_initial_metadata(INITIAL)
    context.set_trailing_metadata(TRAILING)
    return json.dumps({"metadata": _metadata(context), "request": request.hex()}).encode()


def server_stream(request: bytes, context):
    context.send_initial_metadata(INITIAL)
    context.set_trailing_metadata(TRAILING)
    for i in range(int(request or b"0")):
        yield f"msg-{i}".encode()


def client_stream(requests, context) -> bytes:
    context.set_trailing_metadata(TRAILING)
    return b"|".join(requests)


def bidi(requests, context):
    context.set_trailing_metadata(TRAILING)
    for message in requests:
        yield b"echo:" + message


def slow(request: bytes, context) -> bytes:
    deadline = time.monotonic() + int(request) / 1000
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.01)
    return b"late"


def fail(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, FAIL_MESSAGE)


def big(request: bytes, context) -> bytes:
    n = int(request)
    return bytes(i % 251 for i in range(n))


class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method.rsplit("/", 1)[-1]
        if method == "Unary":
            return grpc.unary_unary_rpc_method_handler(unary)
        if method == "ServerStream":
            return grpc.unary_stream_rpc_method_handler(server_stream)
        if method == "ClientStream":
            return grpc.stream_unary_rpc_method_handler(client_stream)
        if method == "Bidi":
            return grpc.stream_stream_rpc_method_handler(bidi)
        if method == "Slow":
            return grpc.unary_unary_rpc_method_handler(slow)
        if method == "Fail":
            return grpc.unary_unary_rpc_method_handler(fail)
        if method == "Big":
            return grpc.unary_unary_rpc_method_handler(big)
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--h2c-port", type=int)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((Handler(),))
    if args.h2c_port:
        server.add_insecure_port(f"127.0.0.1:{args.h2c_port}")
    if args.tls_port:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        server.add_secure_port(f"127.0.0.1:{args.tls_port}", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("READY", flush=True)
    stop.wait()
    server.stop(grace=0.5).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
