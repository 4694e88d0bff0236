"""Stateless SYN cookies (RFC 4987 3.6).

When a listener's half-open queue is full, its SYN-ACK carries all the state
it needs in the initial sequence number, so spoofed SYNs cost no memory:

    bits 31..27  t mod 32, where t counts 64-second periods
    bits 26..24  index of the peer's MSS in :data:`MSS_TABLE`
    bits 23..0   keyed MAC of (addresses, ports, peer ISN, t)

The final ACK of the handshake (ACK = cookie + 1) proves the peer received the
SYN-ACK at its claimed address; only then is a connection created.  Window
scaling, SACK and timestamps are not encoded, so cookie connections run without
them (as kernel TCP does without timestamps).
"""

from __future__ import annotations

import hashlib

from .seq import MASK

MSS_TABLE = (536, 1220, 1380, 1440, 1452, 4036, 8940, 65467)
PERIOD = 64.0


def _mac(secret: bytes, peer: tuple, ports: tuple[int, int], peer_isn: int, t: int) -> int:
    msg = repr((peer[0], peer[1], ports, peer_isn, t)).encode()
    return int.from_bytes(hashlib.blake2b(msg, key=secret, digest_size=3).digest(), "big")


def make_cookie(secret: bytes, peer: tuple, ports: tuple[int, int], peer_isn: int,
                peer_mss: int, now: float) -> tuple[int, int]:
    """The cookie ISN for a SYN, and the MSS it encodes."""
    idx = max(i for i, m in enumerate(MSS_TABLE) if m <= max(peer_mss, MSS_TABLE[0]))
    t = int(now // PERIOD)
    isn = ((t % 32) << 27) | (idx << 24) | _mac(secret, peer, ports, peer_isn, t)
    return isn & MASK, MSS_TABLE[idx]


def check_cookie(secret: bytes, peer: tuple, ports: tuple[int, int], peer_isn: int,
                 cookie: int, now: float) -> int | None:
    """The MSS a valid cookie encodes (issued in the last two periods), else None."""
    t_now = int(now // PERIOD)
    for t in (t_now, t_now - 1):
        if (cookie >> 27) == t % 32 and (cookie & 0xFFFFFF) == _mac(secret, peer, ports,
                                                                     peer_isn, t):
            return MSS_TABLE[(cookie >> 24) & 7]
    return None


def may_be_cookie(cookie: int, now: float) -> bool:
    """Whether an ISN carries the time bits of a cookie issued in the last two
    periods (a cheap filter: 2 in 32 random ISNs pass it)."""
    t = int(now // PERIOD)
    return (cookie >> 27) in (t % 32, (t - 1) % 32)
