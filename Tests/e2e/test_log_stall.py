"""A stalled log output never stalls the proxy (issue 10): the access log and the JSON log handler used to call a
blocking write(2) on event-loop threads, so a gateway whose standard output and error are a pipe nobody reads
stopped answering once the pipe's buffer (64 KiB) was full. Log lines now go through a bounded queue emptied by a
writer thread of their own; when that queue is full, lines are dropped and counted."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import requests

from configs import small_config
from harness import stop_process

REQUESTS = 2500  # about 150 bytes of access log each: several times a pipe's 64 KiB buffer


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_pipe_nobody_reads_does_not_stall_requests(binary, workdir, keys, upstream, log_format):
    d = os.path.join(workdir, f"log-stall-{log_format}")
    os.makedirs(d, exist_ok=True)
    config = small_config(d, keys, upstream.port)
    config["log"] = {"level": "info", "format": log_format, "access_log": True}
    path = os.path.join(d, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    read_end, write_end = os.pipe()  # the read end stays open and unread: writes block, they never fail
    proc = subprocess.Popen([binary, "serve", "--config", path], stdout=write_end, stderr=write_end,
                            stdin=subprocess.DEVNULL, cwd=d, env={**os.environ, **keys.env()})
    os.close(write_end)
    try:
        host, port = config["listen"].rsplit(":", 1)
        base = f"http://{host}:{port}"
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:
            try:
                session.get(base + "/public/ready", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "the gateway did not start"
                time.sleep(0.05)
        started = time.monotonic()
        for i in range(REQUESTS):
            r = session.get(f"{base}/public/stall-{i}", timeout=5)
            assert r.status_code == 200, (i, r.status_code)
        # Comfortably more than the pipe holds has been logged meanwhile, and nothing waited for it.
        assert time.monotonic() - started < 60
        assert proc.poll() is None
    finally:
        # Unblock the writer thread so the gateway can log its shutdown and exit.
        os.set_blocking(read_end, False)
        drained = bytearray()

        def drain():
            try:
                while chunk := os.read(read_end, 1 << 16):
                    drained.extend(chunk)
            except BlockingIOError:
                pass

        proc.send_signal(15)
        for _ in range(200):
            drain()
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        drain()
        stop_process(proc)
        os.close(read_end)
    assert b"/public/stall-" in drained
