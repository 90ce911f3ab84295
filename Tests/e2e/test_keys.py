"""Key loading robustness end to end (DESIGN §4 issuers: "Keys that are malformed, of an unknown type or use,
RSA under 2048 bits ... are skipped with a warning, never failing the whole set"; security.md W-use-enc,
W-invalid-point, W-dup-kid class). Runs its own gateway so a failure here cannot take the main suite down."""
from __future__ import annotations

import json
import os

import jwt
import jwt.algorithms
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import tokens as T
from configs import IDENTITY_HEADERS
from harness import assert_gateway_error, free_port

ISS = "https://weird-keys.test"


@pytest.fixture(scope="module")
def weird(workdir, upstream):
    d = os.path.join(workdir, "weird-keys")
    os.makedirs(d, exist_ok=True)
    good = ec.generate_private_key(ec.SECP256R1())
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    enc = ec.generate_private_key(ec.SECP256R1())

    def jwk(key, kid, alg, use="sig"):
        alg_cls = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        j = dict(alg_cls.to_jwk(key.public_key(), as_dict=True))
        j.pop("key_ops", None)
        j.update({"kid": kid, "alg": alg, "use": use})
        return j

    broken = jwk(good, "broken-1", "ES256")
    broken["y"] = broken["x"]  # not on the curve
    keys = [jwk(weak, "weak-rsa-1", "RS256"), jwk(enc, "enc-1", "ES256", use="enc"), broken,
            {"kty": "XYZ", "kid": "unknown-kty", "alg": "ES256"},
            jwk(good, "good-1", "ES256")]
    with open(os.path.join(d, "jwks.json"), "w") as f:
        json.dump({"keys": keys}, f)
    cfg = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstreams": {"app": {"url": f"http://127.0.0.1:{upstream.port}"}},
        "routes": [{"path_prefix": "/public", "upstream": "app", "auth": "none"},
                   {"path_prefix": "/private", "upstream": "app"}],
        "auth": {"realm": "api", "audiences": [T.AUD]},
        "issuers": [{"issuer": ISS, "jwks_file": "jwks.json", "algorithms": ["ES256", "RS256"]}],
        "identity_headers": IDENTITY_HEADERS,
        "log": {"level": "info", "format": "json", "access_log": True},
    }
    return d, cfg, {"good": good, "weak": weak, "enc": enc}


def _token(key, kid, alg):
    tok = jwt.encode(T.KeySet.claims(iss=ISS), key, algorithm=alg, headers={"typ": "at+jwt", "kid": kid})
    T.MINTED.append(tok)
    return tok


def test_bad_keys_skipped_good_key_still_works(make_gateway, weird, upstream):
    """A key set with a 1024-bit RSA key, a use=enc key, an off-curve EC point and an unknown kty still loads:
    the good key verifies (200), tokens naming the skipped keys are 401 invalid_token, nothing forwarded."""
    d, cfg, keys = weird
    gw = make_gateway(cfg, "weird-keys")
    mark = upstream.log.mark()
    with gw.raw() as c:
        r = c.request("GET", "/private/k", [("Authorization", f"Bearer {_token(keys['good'], 'good-1', 'ES256')}")])
    assert r.status == 200, r
    assert len(upstream.log.since(mark)) == 1
    for key, kid, alg in ((keys["weak"], "weak-rsa-1", "RS256"), (keys["enc"], "enc-1", "ES256"),
                          (keys["good"], "broken-1", "ES256"), (keys["good"], "unknown-kty", "ES256")):
        mark = upstream.log.mark()
        with gw.raw() as c:
            r = c.request("GET", "/private/k", [("Authorization", f"Bearer {_token(key, kid, alg)}")])
        assert_gateway_error(r, 401, {"key_unknown", "signature_invalid", "algorithm_not_allowed"},
                             "invalid_token")
        with gw.raw() as c:
            assert c.request("GET", "/public/__barrier__/weird").status == 200
        assert [q["target"] for q in upstream.log.since(mark)] == ["/public/__barrier__/weird"], kid
    assert gw.alive()
