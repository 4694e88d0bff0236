"""The rtcp segment codec: TCP's header layout carried as one UDP payload.

SPEC.md section 1 is the contract.  This module is the facade: the types, and
``encode``/``decode``/``internet_checksum`` (and ``decode_view``, the
endpoint's decode that lends large payloads) bound straight to one of two
interchangeable backends (no wrapper call in between, since the endpoint runs
them once per datagram):

* ``"c"``: ``rtcp._codec_c``, a cffi extension over csrc/codec.c, built by
  ``pip install`` when a C compiler is available;
* ``"python"``: :mod:`rtcp._codec_py`, always available.

``RTCP_PURE_PYTHON=1`` in the environment at import time forces the Python
backend (``0``, ``false``, ``no``, ``off`` or empty do not).  :data:`BACKEND`
says which one is in use; so does ``rtcp --version``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKEND",
    "HEADER_SIZE",
    "MAX_OPTION_BYTES",
    "OPT_EOL",
    "OPT_MSS",
    "OPT_NOP",
    "OPT_SACK",
    "OPT_SACK_PERMITTED",
    "OPT_TIMESTAMPS",
    "OPT_WSCALE",
    "ChecksumError",
    "Flags",
    "Segment",
    "SegmentError",
    "VIEW_MIN",
    "decode",
    "decode_view",
    "encode",
    "internet_checksum",
    "new_segment",
]

#: Bytes in a header without options.
HEADER_SIZE = 20
#: Most option bytes a header can carry (data offset is at most 15 words).
MAX_OPTION_BYTES = 40
#: Payloads larger than this may be memoryviews rather than copies: those
#: :func:`decode_view` lends from a datagram, and those the engine sends from
#: its send buffer.  Below it a copy costs less than a view.
VIEW_MIN = 4096

# Option kinds (RFC 9293, 7323, 2018).  EOL and NOP are padding: encode adds
# them, decode drops them, and they never appear in ``Segment.options``.
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2  # value: int, 0..65535
OPT_WSCALE = 3  # value: shift count, 0..255 on the wire (RFC 7323 caps use at 14)
OPT_SACK_PERMITTED = 4  # value: None
OPT_SACK = 5  # value: ((left, right), ...), 1..4 blocks of 32-bit edges
OPT_TIMESTAMPS = 8  # value: (tsval, tsecr)


class SegmentError(ValueError):
    """A datagram that is not a valid segment, or a Segment that cannot be encoded."""


class ChecksumError(SegmentError):
    """The datagram's checksum does not verify: corrupted in transit.

    A subclass so that a receiver can count corruption apart from malformed
    segments without computing the checksum a second time.
    """


class Flags(enum.IntFlag):
    """Header control bits.  Decoded segments carry plain ``int`` flags (cheaper
    than building an IntFlag per datagram); these compare and combine with them."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment.  Fields are not validated here but by :func:`encode`, so
    that building a Segment on the hot path costs nothing extra."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    #: ``(kind, value)`` pairs in wire order; see the ``OPT_*`` constants.
    options: tuple[tuple[int, Any], ...] = ()
    #: ``bytes`` when decoded; :func:`encode` accepts any bytes-like object.
    #: A large payload may be a read-only ``memoryview`` instead (no copy): of
    #: the send buffer in segments the engine sends (and tracers see), of the
    #: datagram in those :func:`decode_view` returns (the endpoint's own use;
    #: tracers get received segments with ``bytes``).  A tracer that keeps an
    #: outgoing payload should keep ``bytes(seg.payload)``.
    payload: bytes = b""

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload bytes, plus one each for SYN and FIN."""
        flags = self.flags
        return len(self.payload) + ((flags >> 1) & 1) + (flags & 1)


# Decoding builds one Segment per datagram, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (~1.2 us for nine fields on the
# project's machine).  Decoders instead instantiate a bare twin class with the
# same slots (no __init__: ~40 ns), store the fields as plain attributes and
# then retype the object: CPython allows __class__ assignment between
# layout-compatible heap types.  The result is an ordinary, frozen Segment.
class _SegmentBuilder:
    __slots__ = Segment.__slots__


def _new_segment(
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: tuple[tuple[int, Any], ...],
    payload: bytes,
) -> Segment:
    """Segment(...) for decoders, without the frozen dataclass's per-field cost."""
    seg: Any = _SegmentBuilder()
    seg.src_port = src_port
    seg.dst_port = dst_port
    seg.seq = seq
    seg.ack = ack
    seg.flags = flags
    seg.window = window
    seg.urgent = urgent
    seg.options = options
    seg.payload = payload
    seg.__class__ = Segment
    return seg  # type: ignore[no-any-return]


#: Public name for the fast constructor: all nine fields, positionally, no
#: defaults.  The protocol core builds every outgoing segment with it.
new_segment = _new_segment


def _lend_payload(seg: Segment, data: Any) -> Segment:
    """``seg`` decoded from ``data``, its payload swapped for a view of ``data``
    as decode_view promises: how backends without a lending decoder of their
    own (Python, cffi without the CPython fast path) provide one."""
    n = len(seg.payload)
    if n > VIEW_MIN and data.__class__ is bytes:
        object.__setattr__(seg, "payload", memoryview(data)[len(data) - n:])
    return seg


#: RTCP_PURE_PYTHON values that leave the choice alone (anything else forces Python).
_OFF = ("", "0", "false", "no", "off")


def _select_backend() -> tuple[str, Any]:
    """The C backend unless forced off or not built."""
    if os.environ.get("RTCP_PURE_PYTHON", "").strip().lower() not in _OFF:
        from . import _codec_py

        return "python", _codec_py
    try:
        from . import _codec_cbackend
    except ImportError:
        from . import _codec_py

        return "python", _codec_py
    return "c", _codec_cbackend


# Imported last: the backends import the types above from this module.
BACKEND: str
BACKEND, _backend = _select_backend()

#: ``encode(seg) -> bytes``: the datagram for ``seg``, checksum filled in.
#: Raises SegmentError for any field or option out of range.
encode: Callable[[Segment], bytes] = _backend.encode
#: ``decode(data) -> Segment`` for bytes, bytearray or memoryview; verifies the
#: checksum.  Raises ChecksumError (a SegmentError) for corruption, SegmentError
#: for a malformed datagram.
decode: Callable[[Any], Segment] = _backend.decode
#: ``internet_checksum(data) -> int``: RFC 1071 checksum, 0..0xFFFF; a segment
#: verifies when this is 0 over all of it.
internet_checksum: Callable[[Any], int] = _backend.internet_checksum


#: ``decode_view(data) -> Segment``: :func:`decode`, except that when ``data``
#: is ``bytes`` a payload over :data:`VIEW_MIN` bytes is a read-only memoryview
#: of it, not a copy.  The endpoint's receive path: the application's read
#: copies the payload anyway, and can then join several segments in one copy.
decode_view: Callable[[Any], Segment] = _backend.decode_view
