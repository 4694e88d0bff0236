"""Pure-Python segment codec: the fallback backend, and the reference the C one
is tested against.

Kept honest-fast rather than naive: the checksum converts the whole buffer to
one integer with ``int.from_bytes`` and folds it (no per-word loop), and
header fields go through precompiled ``struct.Struct`` objects.  The option
serialiser here is shared with the C backend, which has to walk the same
Python tuples anyway.
"""

from __future__ import annotations

import struct
from typing import Any

from .segment import ChecksumError, Segment, SegmentError, _lend_payload, _new_segment

# Error codes: the same numbers as RTCP_ERR_* in csrc/codec.h.
ERR_SHORT = -1
ERR_CHECKSUM = -2
ERR_OFFSET_SMALL = -3
ERR_OFFSET_PAST = -4
ERR_OPTION_SHORT = -5
ERR_OPTION_PAST = -6
ERR_OPTION_SIZE = -7

_MESSAGES = {
    ERR_SHORT: "datagram shorter than the 20-byte header",
    ERR_CHECKSUM: "checksum does not verify",
    ERR_OFFSET_SMALL: "data offset below 5 words",
    ERR_OFFSET_PAST: "data offset past the end of the datagram",
    ERR_OPTION_SHORT: "option length below 2",
    ERR_OPTION_PAST: "option runs past the end of the header",
    ERR_OPTION_SIZE: "wrong length for this option kind",
}

_HDR = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, window, checksum, urgent
_pack_hdr = _HDR.pack
_unpack_hdr = _HDR.unpack_from
_pack_mss = struct.Struct("!BBH").pack
_pack_wscale = struct.Struct("!BBB").pack
_pack_ts = struct.Struct("!BBII").pack
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_ts = struct.Struct("!II").unpack_from  # -> (tsval, tsecr), the option's value as is
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # by option length % 4
# SACK with n blocks: kind, length and 2n edges.
_SACK_PACK = {n: struct.Struct(f"!BB{2 * n}I").pack for n in range(1, 5)}
_SACK_UNPACK = {n: struct.Struct(f"!{2 * n}I").unpack_from for n in range(1, 5)}


def decode_error(code: int, data: bytes, offset: int) -> SegmentError:
    """The exception for a decode error code; both backends raise these."""
    msg = _MESSAGES[code]
    if code == ERR_CHECKSUM:
        return ChecksumError(msg)
    if code == ERR_SHORT:
        return SegmentError(f"{msg} ({len(data)} bytes)")
    if code in (ERR_OFFSET_SMALL, ERR_OFFSET_PAST):
        return SegmentError(f"{msg} (offset {data[12] >> 4} words, {len(data)} bytes)")
    return SegmentError(f"option kind {data[offset]} at byte {offset}: {msg}")


def _fold(n: int) -> int:
    """Checksum from the big-endian integer of an even-length buffer.

    Every 16-bit word's weight 2**(16*k) is 1 modulo 0xFFFF, so adding the two
    halves of n split at a multiple of 16 bits keeps the ones' complement sum;
    halving reduces a datagram to a few hundred bits in a handful of steps.
    The last step may use ``%``: an end-around-carry sum is 0 only when every
    word is 0, so a nonzero n with ``n % 0xFFFF == 0`` sums to 0xFFFF, and its
    checksum is 0x0000 (the case a bare ``% 0xFFFF`` gets wrong).
    """
    bits = n.bit_length()
    while bits > 512:
        half = ((bits + 31) >> 5) << 4
        n = (n >> half) + (n & ((1 << half) - 1))
        bits = n.bit_length()
    s = n % 0xFFFF
    if s == 0 and n:
        return 0
    return 0xFFFF - s


def internet_checksum(data: Any) -> int:
    """RFC 1071 checksum of a bytes-like object (odd length: zero-padded)."""
    if data.__class__ is not bytes:
        data = memoryview(data).tobytes()
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return _fold(n)


def encode_options(options: Any) -> bytes:
    """Serialise ``(kind, value)`` pairs, unpadded, validating every value."""
    out = b""
    try:
        for kind, value in options:
            if kind == 8:
                tsval, tsecr = value
                out += _pack_ts(8, 10, tsval, tsecr)
            elif kind == 2:
                out += _pack_mss(2, 4, value)
            elif kind == 3:
                out += _pack_wscale(3, 3, value)
            elif kind == 4:
                if value is not None:
                    raise SegmentError("SACK-permitted option takes no value (None)")
                out += b"\x04\x02"
            elif kind == 5:
                count = len(value)
                if not 1 <= count <= 4:
                    raise SegmentError(f"SACK option needs 1 to 4 blocks, got {count}")
                edges = []
                for left, right in value:
                    edges.append(left)
                    edges.append(right)
                out += _SACK_PACK[count](5, 2 + 8 * count, *edges)
            else:
                out += _encode_other_option(kind, value)
    except SegmentError:
        raise
    except (struct.error, TypeError, ValueError, OverflowError) as exc:
        raise SegmentError(f"bad option in {options!r:.200}: {exc}") from exc
    if len(out) > 40:
        raise SegmentError(f"options take {len(out)} bytes, more than 40")
    return out


def _encode_other_option(kind: Any, value: Any) -> bytes:
    """An option of a kind this codec does not interpret: value is raw bytes."""
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise SegmentError(f"option kind must be an int, not {kind!r}")
    if kind < 0 or kind > 255:
        raise SegmentError(f"option kind {kind} out of range 0..255")
    if kind <= 1:
        raise SegmentError("EOL/NOP are padding, not options; leave them out")
    if value is None or isinstance(value, str | int):
        raise SegmentError(f"option kind {kind} needs a bytes-like value, not {value!r:.50}")
    raw = memoryview(value).tobytes()
    if len(raw) > 38:
        raise SegmentError(f"option kind {kind}: {len(raw)}-byte value too long (max 38)")
    return bytes((kind, len(raw) + 2)) + raw


def _bad_field(seg: Segment, exc: Exception) -> SegmentError:
    return SegmentError(f"header field out of range in {seg!r:.300}: {exc}")


def encode(seg: Segment) -> bytes:
    """The datagram for ``seg`` with its checksum; SegmentError if anything is out of range."""
    opts = seg.options
    if opts:
        ob = encode_options(opts)
        ob += _PAD[len(ob) & 3]
    else:
        ob = b""
    payload = seg.payload
    if payload.__class__ is not bytes:
        try:
            payload = memoryview(payload).tobytes()
        except TypeError as exc:
            raise SegmentError(f"payload must be bytes-like: {exc}") from None
    sp, dp, seq, ack, flags = seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags
    window, urgent = seg.window, seg.urgent
    off = (20 + len(ob)) << 2
    try:
        head = _pack_hdr(sp, dp, seq, ack, off, flags, window, 0, urgent)
    except struct.error as exc:
        raise _bad_field(seg, exc) from None
    if ob:
        head += ob
    # The header is an even number of bytes, so the payload's words line up
    # and the two sums simply add: no copy of header + payload to checksum.
    n = int.from_bytes(payload, "big")
    if len(payload) & 1:
        n <<= 8
    ck = _fold(int.from_bytes(head, "big") + n)
    return b"".join((_pack_hdr(sp, dp, seq, ack, off, flags, window, ck, urgent), ob, payload))


def _parse_options(data: bytes, hl: int) -> tuple[tuple[int, Any], ...]:
    """Options between byte 20 and the data offset; EOL ends them, NOPs are dropped."""
    out = []
    i = 20
    while i < hl:
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= hl:
            raise decode_error(ERR_OPTION_PAST, data, i)
        olen = data[i + 1]
        if olen < 2:
            raise decode_error(ERR_OPTION_SHORT, data, i)
        end = i + olen
        if end > hl:
            raise decode_error(ERR_OPTION_PAST, data, i)
        if kind == 8:
            if olen != 10:
                raise decode_error(ERR_OPTION_SIZE, data, i)
            out.append((8, _unpack_ts(data, i + 2)))
        elif kind == 2:
            if olen != 4:
                raise decode_error(ERR_OPTION_SIZE, data, i)
            out.append((2, _unpack_u16(data, i + 2)[0]))
        elif kind == 3:
            if olen != 3:
                raise decode_error(ERR_OPTION_SIZE, data, i)
            out.append((3, data[i + 2]))
        elif kind == 4:
            if olen != 2:
                raise decode_error(ERR_OPTION_SIZE, data, i)
            out.append((4, None))
        elif kind == 5:
            if olen < 10 or olen > 34 or (olen - 2) & 7:
                raise decode_error(ERR_OPTION_SIZE, data, i)
            edges = _SACK_UNPACK[(olen - 2) >> 3](data, i + 2)
            out.append((5, tuple(zip(edges[::2], edges[1::2], strict=True))))
        else:
            out.append((kind, data[i + 2 : end]))
        i = end
    return tuple(out)


def decode(data: Any) -> Segment:
    """Parse and verify one datagram (bytes, bytearray or memoryview)."""
    if data.__class__ is not bytes:
        data = memoryview(data).tobytes()
    size = len(data)
    if size < 20:
        raise decode_error(ERR_SHORT, data, 0)
    n = int.from_bytes(data, "big")
    if size & 1:
        n <<= 8
    if _fold(n):
        raise decode_error(ERR_CHECKSUM, data, 0)
    sp, dp, seq, ack, off, flags, window, _ck, urgent = _unpack_hdr(data)
    hl = (off >> 4) << 2
    if hl < 20:
        raise decode_error(ERR_OFFSET_SMALL, data, 12)
    if hl > size:
        raise decode_error(ERR_OFFSET_PAST, data, 12)
    opts = _parse_options(data, hl) if hl > 20 else ()
    return _new_segment(sp, dp, seq, ack, flags, window, urgent, opts, data[hl:])


def decode_view(data: Any) -> Segment:
    """decode, with a large payload lent from ``data`` (see rtcp.segment.decode_view)."""
    return _lend_payload(decode(data), data)
