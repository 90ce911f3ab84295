"""Deterministic pseudo-random payloads shared by the tests and upstream.py.

Byte i of a payload of any length is BLOCK[i % len(BLOCK)], where BLOCK is 1 MiB + 13 bytes from a
seeded PRNG (the odd length keeps chunk boundaries from lining up with the period). Nothing here
holds more than two copies of BLOCK in memory, whatever the payload size.
"""
from __future__ import annotations

import hashlib
import random

BLOCK_LEN = (1 << 20) + 13
_BLOCK = random.Random(0x5EED).randbytes(BLOCK_LEN)
_DOUBLE = _BLOCK + _BLOCK

_sha_cache: dict[int, str] = {}


def chunks(total: int, chunk: int = 1 << 20):
    """Yield `total` payload bytes in pieces of at most `chunk` (≤ BLOCK_LEN) bytes."""
    chunk = min(chunk, BLOCK_LEN)
    pos = 0
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield _DOUBLE[pos:pos + n]
        pos = (pos + n) % BLOCK_LEN
        sent += n


def sha256_of(total: int) -> str:
    """sha256 hex of the first `total` payload bytes (cached)."""
    if total not in _sha_cache:
        h = hashlib.sha256()
        for c in chunks(total):
            h.update(c)
        _sha_cache[total] = h.hexdigest()
    return _sha_cache[total]


def make(total: int) -> bytes:
    """The whole payload as bytes; for small sizes only."""
    return b"".join(chunks(total))
