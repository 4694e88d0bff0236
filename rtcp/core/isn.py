"""Initial sequence numbers and timestamp offsets (RFC 6528, RFC 7323 7.1).

ISN = M + F(local, remote, secret): M is a 4-microsecond clock and F a keyed
hash of the connection's addresses, so ISNs are unpredictable to off-path
attackers yet increase over time for the same address pair (which lets a new
connection safely reuse a 4-tuple still in TIME_WAIT).
"""

from __future__ import annotations

import hashlib

from .seq import MASK


def _f(secret: bytes, local: tuple, remote: tuple, label: bytes) -> int:
    h = hashlib.blake2b(repr((local, remote)).encode() + label, key=secret, digest_size=4)
    return int.from_bytes(h.digest(), "big")


def initial_sequence_number(secret: bytes, local: tuple, remote: tuple, now: float) -> int:
    """RFC 6528's ISN for the connection ``local`` -> ``remote`` at time ``now``."""
    return (int(now * 250_000) + _f(secret, local, remote, b"isn")) & MASK


def timestamp_offset(secret: bytes, local: tuple, remote: tuple) -> int:
    """Per-address-pair timestamp offset, so TSval grows across connections."""
    return _f(secret, local, remote, b"ts")
