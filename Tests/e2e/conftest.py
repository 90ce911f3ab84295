"""Session fixtures for the Portcullis end-to-end suite.

Processes started here (upstreams, gateways) are stopped by pid at teardown, always.
Environment:
  PORTCULLIS_BIN         gateway binary (default: <repo>/.build/debug/portcullis, built if missing)
  PORTCULLIS_E2E_KEEP    keep the temporary work directory (configs, logs) and print its path
  PORTCULLIS_E2E_RSS_MIB allowed RSS growth during 256 MiB transfers (default 64)
  PORTCULLIS_SANITIZER_REPORTS  the directory sanitized binaries write their reports to (`scripts/test --sanitize`):
                         a report that appears during a test fails that test
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import harness
import tokens as tokens_mod
from configs import main_config, small_config
from harness import Gateway, UpstreamProcess, free_port
from token_service import Service, service_config

_session_gateways: list[Gateway] = []


# ------------------------------------------------------------------------------------------------------------------
# session fixtures

@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="portcullis-e2e-")
    yield d
    if os.environ.get("PORTCULLIS_E2E_KEEP"):
        print(f"\n[e2e] work directory kept: {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def keys(workdir):
    return tokens_mod.KeySet(os.path.join(workdir, "keys"))


@pytest.fixture(scope="session")
def binary():
    return harness.find_binary()


@pytest.fixture(scope="session")
def upstream(workdir):
    up = UpstreamProcess(workdir, "app", port=free_port())
    yield up
    up.stop()


@pytest.fixture(scope="session")
def unix_upstream(workdir):
    up = UpstreamProcess(workdir, "unix", unix=os.path.join(workdir, "upstream.sock"))
    yield up
    up.stop()


@pytest.fixture(scope="session")
def down_port():
    return free_port()  # nothing ever listens here


def _start(binary, workdir, name, config, keys, args=None) -> Gateway:
    return Gateway.started(binary, os.path.join(workdir, name), config, env=keys.env(), args=args, name=name)


@pytest.fixture(scope="session")
def gateway(binary, workdir, keys, upstream, unix_upstream, down_port):
    d = os.path.join(workdir, "main")
    os.makedirs(d, exist_ok=True)
    cfg = main_config(d, keys, upstream.port, unix_upstream.unix, down_port)
    gw = _start(binary, workdir, "main", cfg, keys)
    _session_gateways.append(gw)
    yield gw
    _session_gateways.remove(gw)
    gw.stop()


@pytest.fixture(scope="session")
def gw2(binary, workdir, keys, upstream):
    d = os.path.join(workdir, "small")
    os.makedirs(d, exist_ok=True)
    gw = _start(binary, workdir, "small", small_config(d, keys, upstream.port), keys)
    _session_gateways.append(gw)
    yield gw
    _session_gateways.remove(gw)
    gw.stop()


@pytest.fixture
def make_gateway(binary, workdir, keys):
    """Factory for throw-away gateways (stopped at the end of the test)."""
    started: list[Gateway] = []

    def make(config, name: str, args=None, wait=True) -> Gateway:
        """`config` is a dict or a callable taking the gateway's directory (for relative key paths)."""
        d = os.path.join(workdir, name)
        os.makedirs(d, exist_ok=True)
        if callable(config):
            config = config(d)
        if args is not None:
            args = [a.replace("{config}", os.path.join(d, "gateway.json")) for a in args]
        gw = Gateway(binary, d, config, env=keys.env(), args=args, name=name)
        started.append(gw)
        if wait:
            gw.wait_healthy()
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture(autouse=True)
def _gateway_survives_each_test(request):
    """N5: a session gateway that dies during a test fails that test (crash attribution)."""
    yield
    for gw in list(_session_gateways):
        if not gw.alive():
            pytest.fail(f"gateway {gw.config_path} died during {request.node.nodeid} "
                        f"(exit {gw.proc.returncode})\n{harness.tail(gw.err_path)}", pytrace=False)


_SANITIZER_REPORTS = os.environ.get("PORTCULLIS_SANITIZER_REPORTS")


def _sanitizer_reports() -> set[str]:
    try:
        return set(os.listdir(_SANITIZER_REPORTS))
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def _no_sanitizer_report(request):
    """`scripts/test --sanitize`: a report that a sanitized process (a gateway, `portcullis check`) writes during a
    test, or while the test's own gateways stop, fails that test and shows the report. Reports of the session
    gateways at their exit come after the last test; scripts/test prints those."""
    if not _SANITIZER_REPORTS:
        yield
        return
    before = _sanitizer_reports()
    yield
    new = sorted(_sanitizer_reports() - before)
    if new:
        shown = []
        for name in new:
            with open(os.path.join(_SANITIZER_REPORTS, name), errors="replace") as f:
                shown.append(f"=== {name}\n{f.read()[:20000]}")
        pytest.fail(f"sanitizer report(s) during {request.node.nodeid}:\n" + "\n".join(shown), pytrace=False)


# ------------------------------------------------------------------------------------------------------------------
# per-test helpers

class Env:
    """The main gateway + upstreams + keys, with the 'what reached the upstream' assertions."""

    def __init__(self, gateway: Gateway, upstream: UpstreamProcess, unix_upstream: UpstreamProcess, keys):
        self.gw = gateway
        self.up = upstream
        self.unix_up = unix_upstream
        self.keys = keys

    def mark(self) -> int:
        return self.up.log.mark()

    def forwarded_since(self, mark: int) -> list[dict]:
        return self.up.log.since(mark)

    def one_forwarded(self, mark: int) -> dict:
        reqs = self.up.log.since(mark)
        assert len(reqs) == 1, f"expected exactly one upstream request, got {len(reqs)}: " \
                               f"{[r['request_line'] for r in reqs]}"
        return reqs[0]

    def assert_nothing_forwarded(self, mark: int, gw: Gateway | None = None):
        """N3: no request reached the upstream since `mark`. A barrier request through the gateway makes this
        order-safe: once its head is logged, anything the gateway forwarded earlier is logged too."""
        gw = gw or self.gw
        bid = harness.unique_id()
        with gw.raw() as c:
            r = c.request("GET", f"/public/__barrier__/{bid}", [("Connection", "close")])
        assert r.status == 200, f"barrier request failed: {r}"
        reqs = self.up.log.since(mark)
        others = [q["request_line"] for q in reqs if f"/__barrier__/{bid}" not in (q["target"] or "")]
        assert not others, f"requests reached the upstream although they must not: {others}"
        assert len(reqs) == 1, f"barrier not seen exactly once upstream: {[q['request_line'] for q in reqs]}"

    def bearer(self, token: str) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {token}")]


@pytest.fixture
def env(gateway, upstream, unix_upstream, keys) -> Env:
    return Env(gateway, upstream, unix_upstream, keys)


@pytest.fixture
def env2(gw2, upstream, unix_upstream, keys) -> Env:
    return Env(gw2, upstream, unix_upstream, keys)


@pytest.fixture
def make_service(binary, workdir, upstream):
    """Factory for gateways with the token service on (users alice and bob), stopped at the end of the test."""
    started: list[Gateway] = []

    def make(name: str, port: int | None = None, **overrides) -> Service:
        d = os.path.join(workdir, name)
        os.makedirs(d, exist_ok=True)
        config = service_config(d, upstream.port, port=port, **overrides)
        gw = Gateway(binary, d, config, name=name)
        started.append(gw)
        gw.wait_healthy()
        return Service(gw, upstream)

    yield make
    for gw in started:
        gw.stop()
