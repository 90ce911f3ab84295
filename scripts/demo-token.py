#!/usr/bin/env python3
"""Mints a one-hour HS256 access token for the shipped gateway.json's demo issuer (stdlib only)."""
import base64, hashlib, hmac, json, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

secret = open(sys.argv[1], "rb").read().rstrip(b"\r\n")
now = int(time.time())
header = {"alg": "HS256", "typ": "at+jwt", "kid": "demo"}
claims = {"iss": "portcullis-demo", "sub": "demo-user", "aud": "api", "iat": now, "exp": now + 3600,
          "scope": "read write", "email": "demo@example.com"}
signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + b64(signature))
