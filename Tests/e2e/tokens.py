"""Test keys and JWT minting for the Portcullis end-to-end tests (PyJWT + cryptography).

`KeySet(dir)` generates a fresh key per algorithm for the session and writes what the gateway config needs:
  jwks.json            public JWKs (kid, alg, use=sig) for every asymmetric algorithm (issuer ISS_MAIN)
  pem-es256.pub.pem    SPKI PEM of a separate ES256 key (issuer ISS_PEM, loaded with public_key_file)
  hs384.key            raw HMAC secret for HS384 (issuer ISS_HS384, hmac_secret_file; no trailing newline)
HS256 / HS512 secrets are ASCII strings placed inline (hmac_secret; HS512 through ${ENV} substitution).
Attacker keys (never configured) sign the bad-signature cases.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISS_MAIN = "https://issuer.test"
ISS_HS256 = "https://hs256.test"
ISS_HS384 = "https://hs384.test"
ISS_HS512 = "https://hs512.test"
ISS_PEM = "https://pem.test"
AUD = "https://api.test"
AUD_PARTNER = "https://partner.test"
HS512_ENV = "PORTCULLIS_E2E_HS512_SECRET"

ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
HMAC = ["HS256", "HS384", "HS512"]
ALL_ALGORITHMS = HMAC + ASYMMETRIC

# Every token minted in this process, so the logs can be scanned for leaks at the end (DESIGN §6, N7).
MINTED: list[str] = []


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def _new_private(alg: str):
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


def _public_jwk(alg: str, public_key) -> dict:
    if alg.startswith(("RS", "PS")):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif alg.startswith("ES"):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    jwk = dict(jwk)
    jwk.pop("key_ops", None)  # RFC 7517 §4.3: use and key_ops SHOULD NOT both be present; we set use=sig
    return jwk


def _binary_secret(n: int) -> bytes:
    """Random raw bytes without leading/trailing whitespace (whether a secret file is trimmed is not in the
    contract, so avoid depending on it)."""
    while True:
        s = secrets.token_bytes(n)
        if s[0] not in b" \t\r\n" and s[-1] not in b" \t\r\n":
            return s


def kid_for(alg: str) -> str:
    return {"EdDSA": "ed-1"}.get(alg, alg.lower() + "-1")


class KeySet:
    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.private: dict[str, object] = {}
        self.hmac: dict[str, bytes] = {
            # Inline secrets must survive JSON and env substitution: use ASCII hex (64 chars = 64 bytes).
            "HS256": secrets.token_hex(32).encode(),
            "HS384": _binary_secret(48),
            "HS512": secrets.token_hex(32).encode(),
        }
        jwks = {"keys": []}
        for alg in ASYMMETRIC:
            key = _new_private(alg)
            self.private[alg] = key
            jwk = _public_jwk(alg, key.public_key())
            jwk.update({"kid": kid_for(alg), "alg": alg, "use": "sig"})
            jwks["keys"].append(jwk)
        self.jwks_path = os.path.join(directory, "jwks.json")
        with open(self.jwks_path, "w") as f:
            json.dump(jwks, f, indent=1)
        # Separate issuer with a PEM public key.
        self.pem_private = ec.generate_private_key(ec.SECP256R1())
        self.pem_path = os.path.join(directory, "pem-es256.pub.pem")
        with open(self.pem_path, "wb") as f:
            f.write(self.pem_private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.hs384_path = os.path.join(directory, "hs384.key")
        with open(self.hs384_path, "wb") as f:
            f.write(self.hmac["HS384"])
        # Attacker-owned keys: never configured anywhere.
        self.attacker = {alg: _new_private(alg) for alg in ("RS256", "ES256", "EdDSA")}
        self.rs256_public_pem = self.private["RS256"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- issuer config for gateway.json ------------------------------------------------------------------------
    def issuers_config(self, config_dir: str) -> list[dict]:
        """Issuer entries; file paths relative to `config_dir` (the gateway resolves them against it)."""
        rel = lambda p: os.path.relpath(p, config_dir)  # noqa: E731
        return [
            {"issuer": ISS_MAIN, "jwks_file": rel(self.jwks_path),
             "algorithms": list(ASYMMETRIC)},
            {"issuer": ISS_HS256, "hmac_secret": self.hmac["HS256"].decode(), "algorithms": ["HS256"]},
            {"issuer": ISS_HS384, "hmac_secret_file": rel(self.hs384_path),
             "algorithms": ["HS384"]},
            {"issuer": ISS_HS512, "hmac_secret": "${" + HS512_ENV + "}", "algorithms": ["HS512"]},
            {"issuer": ISS_PEM, "public_key_file": rel(self.pem_path),
             "algorithms": ["ES256"], "audiences": [AUD_PARTNER], "token_types": ["at+jwt", "JWT"],
             "required_claims": ["jti"]},
        ]

    def env(self) -> dict[str, str]:
        return {HS512_ENV: self.hmac["HS512"].decode()}

    # -- minting -----------------------------------------------------------------------------------------------
    @staticmethod
    def claims(**overrides) -> dict:
        now = int(time.time())
        c = {"iss": ISS_MAIN, "sub": "user-123", "aud": AUD, "exp": now + 300, "iat": now, "nbf": now - 10,
             "jti": str(uuid.uuid4()), "client_id": "client-1", "scope": "read"}
        for k, v in overrides.items():
            if v is DROP:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def issuer_for(self, alg: str) -> str:
        return {"HS256": ISS_HS256, "HS384": ISS_HS384, "HS512": ISS_HS512}.get(alg, ISS_MAIN)

    def signing_key(self, alg: str):
        if alg in HMAC:
            return self.hmac[alg]
        return self.private[alg]

    def mint(self, alg: str = "ES256", header: dict | None = None, key=None, **claim_overrides) -> str:
        """A token signed by the trusted key for `alg` (issuer chosen to match), with claim overrides.
        Pass DROP as a value to remove a claim. `header` entries override the JOSE header (None removes)."""
        claim_overrides.setdefault("iss", self.issuer_for(alg))
        payload = self.claims(**claim_overrides)
        hdr = {"typ": "at+jwt"}
        if alg not in HMAC:
            hdr["kid"] = kid_for(alg)
        for k, v in (header or {}).items():
            hdr[k] = v
        # PyJWT adds typ "JWT" unless typ is present and falsy (then it removes it): None means "no typ".
        hdr = {k: ("" if v is None else v) for k, v in hdr.items() if v is not None or k == "typ"}
        token = jwt.encode(payload, key if key is not None else self.signing_key(alg), algorithm=alg, headers=hdr)
        MINTED.append(token)
        return token

    def mint_pem_issuer(self, **claim_overrides) -> str:
        claim_overrides.setdefault("iss", ISS_PEM)
        claim_overrides.setdefault("aud", AUD_PARTNER)
        token = jwt.encode(self.claims(**claim_overrides), self.pem_private, algorithm="ES256",
                           headers={"typ": "at+jwt"})
        MINTED.append(token)
        return token

    def raw(self, header: dict, payload: dict | bytes, signature: bytes | str = b"") -> str:
        """Hand-built token (no signing): b64u(header).b64u(payload).b64u(signature)."""
        p = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        sig = signature if isinstance(signature, str) else b64u(signature)
        token = f"{b64u_json(header)}.{b64u(p)}.{sig}"
        MINTED.append(token)
        return token

    def sign_raw(self, alg: str, header: bytes | dict, payload: bytes | dict, key=None) -> str:
        """Sign arbitrary header/payload bytes (duplicate members, odd JSON) with the trusted key for `alg`."""
        from jwt.algorithms import get_default_algorithms
        h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
        p = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        algo = get_default_algorithms()[alg]
        k = algo.prepare_key(key if key is not None else self.signing_key(alg))
        signing_input = f"{b64u(h)}.{b64u(p)}"
        token = f"{signing_input}.{b64u(algo.sign(signing_input.encode(), k))}"
        MINTED.append(token)
        return token

    def hmac_with(self, header: dict, payload: dict, secret: bytes, alg: str = "HS256") -> str:
        """Sign header.payload with an arbitrary HMAC secret (algorithm-confusion attacks)."""
        import hashlib
        import hmac as _hmac
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signing_input = f"{b64u_json(header)}.{b64u_json(payload)}"
        sig = _hmac.new(secret, signing_input.encode(), digest).digest()
        token = f"{signing_input}.{b64u(sig)}"
        MINTED.append(token)
        return token


class _Drop:
    def __repr__(self):
        return "DROP"


DROP = _Drop()


def tamper_signature(token: str) -> str:
    """Flip bits in the middle of the signature (keeps canonical base64url)."""
    h, p, s = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[len(raw) // 2] ^= 0x55
    out = f"{h}.{p}.{b64u(bytes(raw))}"
    MINTED.append(out)
    return out


def decode_unverified(token: str) -> tuple[dict, dict]:
    h, p, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(p)))
