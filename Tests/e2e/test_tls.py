"""HTTPS upstreams through libcurl (security.md U-tls): a private CA is trusted only when configured as the
upstream's tls.ca_file; otherwise the handshake fails and the client gets 502, with nothing sent in clear."""
from __future__ import annotations

import datetime
import ipaddress
import os

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import Gateway, UpstreamProcess, free_port


def _write_pki(directory: str) -> tuple[str, str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis-e2e-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths[0], paths[1], paths[2]


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory, binary):
    work = str(tmp_path_factory.mktemp("tls"))
    ca, cert, key = _write_pki(work)
    port = free_port()
    upstream = UpstreamProcess(work, "tls", port=port, tls=(cert, key))
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {
            "trusted": {"url": f"https://127.0.0.1:{port}", "tls": {"ca_file": ca}},
            "untrusted": {"url": f"https://127.0.0.1:{port}"},
        },
        "routes": [
            {"path_prefix": "/trusted", "upstream": "trusted", "auth": "none"},
            {"path_prefix": "/untrusted", "upstream": "untrusted", "auth": "none"},
        ],
        "log": {"level": "warning", "format": "text"},
    }
    gateway = Gateway(binary, work, config)
    gateway.wait_healthy()
    yield gateway, upstream
    gateway.stop()
    upstream.stop()


def test_https_upstream_with_configured_ca(tls_env):
    gateway, upstream = tls_env
    mark = upstream.log.mark()
    r = requests.get(f"{gateway.base}/trusted/echo?x=1", timeout=10)
    assert r.status_code == 200, r.text
    assert [q["target"] for q in upstream.log.since(mark)] == ["/trusted/echo?x=1"]


def test_https_upstream_with_unknown_ca_is_refused(tls_env):
    gateway, upstream = tls_env
    mark = upstream.log.mark()
    r = requests.get(f"{gateway.base}/untrusted/echo", timeout=10)
    assert r.status_code == 502, r.text
    assert r.json()["reason"] == "upstream_unavailable"
    assert upstream.log.since(mark) == []
