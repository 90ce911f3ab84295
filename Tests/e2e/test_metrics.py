"""Prometheus metrics on the admin listener (issue 5, DESIGN §7): the exposition parses with the reference client
library's parser, and the counters move with traffic — requests by route and status, auth decisions by reason,
upstream errors, connections, the duration histograms, and the token service's logins, refreshes and revocations."""
from __future__ import annotations

import os

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import Gateway, free_port
from token_service import Service, service_config
from users import PASSWORDS


def scrape(gw: Gateway) -> dict[tuple[str, tuple], float]:
    host, port = gw.admin
    r = requests.get(f"http://{host}:{port}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metered(binary, workdir, upstream):
    d = os.path.join(workdir, "metrics")
    os.makedirs(d, exist_ok=True)
    config = service_config(d, upstream.port)
    config["upstreams"]["down"] = {"url": f"http://127.0.0.1:{free_port()}", "connect_timeout_ms": 500}
    config["routes"].insert(0, {"path_prefix": "/broken", "upstream": "down", "auth": "none"})
    config["routes"].insert(0, {"path_prefix": "/public", "upstream": "app", "auth": "none"})
    gw = Gateway(binary, d, config, name="metrics")
    gw.wait_healthy()
    yield Service(gw, upstream)
    gw.stop()


def test_metrics_move_with_traffic(metered):
    svc = metered
    before = scrape(svc.gw)
    t = svc.tokens()
    assert svc.api(t["access_token"], "/api/x").status_code == 200
    assert svc.api(t["access_token"], "/admin/x").status_code == 200
    assert requests.get(svc.gw.url("/api/x"), timeout=10).status_code == 401
    assert svc.api("a.b.c").status_code == 401
    assert requests.get(svc.gw.url("/public/x"), timeout=10).status_code == 200
    assert requests.get(svc.gw.url("/broken/x"), timeout=10).status_code == 502
    assert svc.login("alice", "wrong").status_code == 401
    t2 = svc.refresh(t["refresh_token"]).json()
    svc.post("/auth/logout", headers={"Authorization": f"Bearer {t2['access_token']}"})
    assert svc.api(t2["access_token"]).status_code == 401
    after = scrape(svc.gw)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("portcullis_requests_total", route="/", status="200") == 1
    assert delta("portcullis_requests_total", route="/admin", status="200") == 1
    assert delta("portcullis_requests_total", route="/public", status="200") == 1
    assert delta("portcullis_requests_total", route="/broken", status="502") == 1
    assert delta("portcullis_requests_total", route="/", status="401") == 3  # missing, malformed, revoked
    assert delta("portcullis_requests_total", route="/auth", status="200") == 2  # login + refresh
    assert delta("portcullis_requests_total", route="/auth", status="401") == 1
    assert delta("portcullis_requests_total", route="/auth", status="204") == 1
    assert delta("portcullis_auth_decisions_total", result="allow", reason="verified") == 2
    assert delta("portcullis_auth_decisions_total", result="allow", reason="public") == 2
    assert delta("portcullis_auth_decisions_total", result="deny", reason="token_missing") == 1
    assert delta("portcullis_auth_decisions_total", result="deny", reason="token_malformed") == 1
    assert delta("portcullis_auth_decisions_total", result="deny", reason="token_revoked") == 1
    assert delta("portcullis_upstream_errors_total", route="/broken", reason="upstream_unavailable") == 1
    assert delta("portcullis_logins_total", result="success") == 1
    assert delta("portcullis_logins_total", result="invalid_credentials") == 1
    assert delta("portcullis_refreshes_total", result="rotated") == 1
    assert delta("portcullis_revocations_total", cause="logout") == 1
    assert value(after, "portcullis_revoked_sessions") >= 1
    assert delta("portcullis_connections_total") >= 10
    # Histograms: every answered request is in the gateway phase; the forwarded ones also in the upstream phase.
    answered = sum(v - before.get(k, 0) for k, v in after.items() if k[0] == "portcullis_requests_total")
    assert delta("portcullis_request_duration_seconds_count", phase="gateway") == answered
    assert delta("portcullis_request_duration_seconds_count", phase="upstream") >= 4
    assert value(after, "portcullis_request_duration_seconds_bucket", phase="gateway", le="+Inf") == \
        value(after, "portcullis_request_duration_seconds_count", phase="gateway")


def test_metrics_hold_no_secrets(metered):
    svc = metered
    t = svc.tokens()
    svc.api(t["access_token"])
    host, port = svc.gw.admin
    text = requests.get(f"http://{host}:{port}/metrics", timeout=10).text
    for secret in (t["access_token"], t["refresh_token"], PASSWORDS["alice"], "user-alice"):
        assert secret not in text
    # The data listener does not serve metrics.
    assert requests.get(svc.gw.url("/metrics"), timeout=10).status_code == 401
