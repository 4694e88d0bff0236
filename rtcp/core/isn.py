"""Initial sequence numbers and timestamp offsets (RFC 6528, RFC 7323 7.1).

ISN = M + F(local, remote, secret): M is a 4-microsecond clock and F a keyed
hash of the connection's addresses, so ISNs are unpredictable to off-path
attackers yet increase over time for the same address pair (which lets a new
connection safely reuse a 4-tuple still in TIME_WAIT).  The timestamp offset
is the other half of the same 64-bit keyed hash.
"""

from __future__ import annotations

import functools
import hashlib
import struct

from .seq import MASK


@functools.lru_cache(maxsize=64)
def _keyed(secret: bytes) -> hashlib._Hash:  # type: ignore[name-defined]
    """A keyed hash with the key block already absorbed; copies are cheap."""
    return hashlib.blake2b(key=secret, digest_size=8)


#: The 8-byte digest as an int (cheaper than int.from_bytes).
_U64 = struct.Struct(">Q").unpack


def _f(secret: bytes, local: tuple, remote: tuple) -> int:
    h = _keyed(secret).copy()
    if len(local) == 2 and len(remote) == 2:
        # IPv4's (host, port) pairs: a third of repr()'s cost, once per connection.
        text = f"{local[0]} {local[1]} {remote[0]} {remote[1]}"
    else:
        text = repr((local, remote))
    h.update(text.encode())
    return _U64(h.digest())[0]


def isn_and_ts_offset(secret: bytes, local: tuple, remote: tuple,
                      now: float) -> tuple[int, int]:
    """:func:`initial_sequence_number` and :func:`timestamp_offset` from one hash."""
    f = _f(secret, local, remote)
    return (int(now * 250_000) + (f >> 32)) & MASK, f & MASK


def initial_sequence_number(secret: bytes, local: tuple, remote: tuple, now: float) -> int:
    """RFC 6528's ISN for the connection ``local`` -> ``remote`` at time ``now``."""
    return isn_and_ts_offset(secret, local, remote, now)[0]


def timestamp_offset(secret: bytes, local: tuple, remote: tuple) -> int:
    """Per-address-pair timestamp offset, so TSval grows across connections."""
    return isn_and_ts_offset(secret, local, remote, 0.0)[1]
