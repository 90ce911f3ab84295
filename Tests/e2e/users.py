"""Users files for the token-service tests."""
from __future__ import annotations

import json
import os

import bcrypt

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


def write_users(directory: str) -> str:
    """A users file with low-cost bcrypt hashes (cost 4 keeps the suite fast; the cost is read from the hash)."""
    def hashed(password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()

    users = {"users": [
        {"username": "alice", "password_hash": hashed(PASSWORDS["alice"]), "subject": "user-alice",
         "scopes": ["read", "write", "admin"], "claims": {"email": "alice@example.com", "roles": ["ops", "dev"]}},
        {"username": "bob", "password_hash": hashed(PASSWORDS["bob"]), "scopes": ["read"]},
    ]}
    path = os.path.join(directory, "users.json")
    with open(path, "w") as f:
        json.dump(users, f)
    return path
