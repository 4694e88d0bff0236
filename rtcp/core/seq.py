"""32-bit sequence-number arithmetic (RFC 9293 section 3.4).

On the wire, sequence numbers live modulo 2**32.  Inside the core every number
is *unwrapped* to an unbounded Python int as it arrives (relative to a nearby
reference such as SND.UNA or RCV.NXT), so comparisons are plain integer
comparisons and wraparound is handled in exactly one place: :func:`unwrap`.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` modulo 2**32, in ``[-2**31, 2**31)``."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """``a`` precedes ``b`` in sequence space (modulo 2**32)."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def unwrap(wire: int, ref: int) -> int:
    """The unbounded number closest to ``ref`` whose low 32 bits are ``wire``.

    ``ref`` is an unwrapped number we already track (e.g. RCV.NXT); anything
    within 2**31 of it maps back unambiguously, which RFC 9293's window limits
    guarantee for every acceptable segment.
    """
    return ref + seq_diff(wire, ref & MASK)
