"""C segment codec backend: adapts the cffi module ``rtcp._codec_c`` to the
interface of :mod:`rtcp._codec_py`.

Importing this raises ImportError when the extension was not built.  The C
work per datagram (checksum, validation) takes tens of nanoseconds; what
costs is the Python around it.  So there are two layers:

* On CPython, ``encode``, ``decode`` and ``internet_checksum`` are
  csrc/fastpath.c's functions, which read and build the Python objects
  themselves (no per-argument cffi conversion, no Python frame).  They handle
  well-formed, plainly typed input and hand everything else, errors
  included, to the functions below.
* ``cffi_encode``, ``cffi_decode`` and ``cffi_internet_checksum`` work
  through plain cffi calls, on any interpreter: each operation is one C call
  and as little Python as we can manage: bytes go to ``const char *`` parameters without a copy, cffi's
  argument conversion does the header range checks, encode writes into a
  per-thread buffer, and decode uses a parser compiled for the datagram's
  option layout (see _PARSERS).  They raise the same errors as _codec_py.
"""

from __future__ import annotations

import operator
import struct
import threading
from collections.abc import Callable
from typing import Any

from ._codec_c import ffi, lib  # ImportError when the extension is absent
from ._codec_py import ERR_OFFSET_PAST, _pack_ts, decode_error, encode_options
from .segment import (  # noqa: F401 (VIEW_MIN: read by csrc/fastpath.c)
    VIEW_MIN,
    Segment,
    SegmentError,
    _lend_payload,
    _new_segment,
    _SegmentBuilder,
)

_checksum = lib.rtcp_checksum
_decode = lib.rtcp_decode
_decode_info = lib.rtcp_decode_info
_encode = lib.rtcp_encode
_from_buffer = ffi.from_buffer

# rtcp_segment_info: 10 header words, then 20 options of 5 words each.
_INFO_HEAD = struct.Struct("=9I").unpack_from  # src .. urgent, header_len, n_options
_OPTS_AT = 10 * 4
_OPT_WORDS = {n: struct.Struct(f"={5 * n}I").unpack_from for n in range(1, 21)}
_SACK_UNPACK = {n: struct.Struct(f"!{2 * n}I").unpack_from for n in range(1, 5)}

#: Room for the largest header plus a maximal UDP payload; bigger segments
#: get a buffer of their own.
_MAX_SCRATCH_PAYLOAD = 65535
_OUT_CAP = 60 + _MAX_SCRATCH_PAYLOAD
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


class _Scratch(threading.local):
    """Per-thread output buffer: another thread may run between the C call and
    the copy-out (the GIL can switch threads there, and free-threaded builds
    have none), so a module-global buffer could be overwritten in between.
    Slicing the ffi.buffer view copies out the result faster than ffi.unpack."""

    def __init__(self) -> None:
        out = _alloc("char[]", _OUT_CAP)
        self.bufs = (out, ffi.buffer(out))


_scratch = _Scratch()


def cffi_internet_checksum(data: Any) -> int:
    """RFC 1071 checksum of a bytes-like object (odd length: zero-padded)."""
    if data.__class__ is bytes:
        return _checksum(data, len(data))
    try:
        buf = _from_buffer(data)
    except (ValueError, BufferError):  # e.g. a strided memoryview: checksum a copy
        buf = memoryview(data).tobytes()
    return _checksum(buf, len(buf))


def _sack_blocks(count: int, data: bytes, offset: int) -> tuple[tuple[int, int], ...]:
    edges = _SACK_UNPACK[count](data, offset)
    return tuple(zip(edges[::2], edges[1::2], strict=True))


def _options(data: bytes, count: int, info_buf: Any) -> tuple[tuple[int, Any], ...]:
    """Option values from the C option records (kind, offset, length, a, b)."""
    words = _OPT_WORDS[count](info_buf, _OPTS_AT)
    out = []
    for i in range(0, 5 * count, 5):
        kind = words[i]
        if kind == 8:
            out.append((8, (words[i + 3], words[i + 4])))
        elif kind == 2 or kind == 3:
            out.append((kind, words[i + 3]))
        elif kind == 4:
            out.append((4, None))
        elif kind == 5:
            out.append((5, _sack_blocks(words[i + 3], data, words[i + 1])))
        else:
            start = words[i + 1]
            out.append((kind, data[start : start + words[i + 2]]))
    return tuple(out)


def _decode_generic(data: bytes, hl: int) -> Segment:
    """Layouts without a compiled parser (unknown kinds, five or more options), and
    option errors (for their offset): decode again, walking the C option records."""
    info = ffi.new("rtcp_segment_info *")
    r = _decode_info(data, len(data), info)
    if r < 0:
        raise decode_error(r, data, info.error_offset)
    info_buf = ffi.buffer(info)
    sp, dp, seq, ack, flags, window, urgent, _hl, count = _INFO_HEAD(info_buf)
    opts = _options(data, count, info_buf) if count else ()
    return _new_segment(sp, dp, seq, ack, flags, window, urgent, opts, data[hl:])


# A connection's segments repeat a few layouts (no options; timestamps;
# timestamps and SACK; its SYN's set), and rtcp_decode returns the layout of
# each datagram it validates (kinds and offsets of the options, data offset).
# For each layout met we compile a parser that reads every header field and
# option value straight from the datagram with one struct.unpack_from and
# writes the options tuple as a literal: a third of the Python-side cost of
# walking option records, and it needs no C output buffer.
_PARSERS: dict[int, Callable[[bytes], Segment]] = {}
_MAX_PARSERS = 256  # bounds what a peer can make us compile and keep
_LAYOUT_GENERIC = 1 << 62  # RTCP_LAYOUT_GENERIC
_PARSER_TEMPLATE = """\
def parse(data):
    src_port, dst_port, seq, ack, flags, window, urgent{values} = unpack(data)
    seg = SegmentBuilder()
    seg.src_port = src_port
    seg.dst_port = dst_port
    seg.seq = seq
    seg.ack = ack
    seg.flags = flags
    seg.window = window
    seg.urgent = urgent
    seg.options = ({options})
    seg.payload = data[{hl}:]
    seg.__class__ = Segment
    return seg
"""


def _compile_parser(layout: int) -> Callable[[bytes], Segment]:
    """The parser for one layout (bit layout: rtcp_decode in csrc/codec.h)."""
    hl = (layout & 0xF) * 4
    fmt = "!HHIIxBH2xH"  # ports, seq, ack, (offset), flags, window, (checksum), urgent
    names: list[str] = []  # option values, in unpack order
    options = []
    pos = 20
    layout >>= 4
    i = 0
    while layout:
        code, start = layout & 0xF, 20 + ((layout >> 4) & 0x3F)
        layout >>= 10
        fmt += f"{start - pos + 2}x"  # up to the value, past kind and length
        if code == 1:
            fmt += "H"
            names.append(f"v{i}")
            options.append(f"(2, v{i})")
            pos = start + 4
        elif code == 2:
            fmt += "B"
            names.append(f"v{i}")
            options.append(f"(3, v{i})")
            pos = start + 3
        elif code == 3:
            options.append("(4, None)")
            pos = start + 2
        elif code == 4:
            fmt += "II"
            names += [f"v{i}", f"w{i}"]
            options.append(f"(8, (v{i}, w{i}))")
            pos = start + 10
        else:  # SACK with code - 4 blocks
            count = code - 4
            edges = [f"e{i}_{k}" for k in range(2 * count)]
            fmt += f"{2 * count}I"
            names += edges
            blocks = ", ".join(f"({edges[2 * k]}, {edges[2 * k + 1]})" for k in range(count))
            options.append(f"(5, ({blocks},))")
            pos = start + 2 + 8 * count
        i += 1
    source = _PARSER_TEMPLATE.format(
        values="".join(", " + name for name in names),
        options="".join(opt + ", " for opt in options),
        hl=hl,
    )
    namespace = {
        "unpack": struct.Struct(fmt).unpack_from,
        "SegmentBuilder": _SegmentBuilder,
        "Segment": Segment,
    }
    exec(source, namespace)
    return namespace["parse"]  # type: ignore[no-any-return]


def cffi_decode(data: Any) -> Segment:
    """Parse and verify one datagram (bytes, bytearray or memoryview)."""
    if data.__class__ is not bytes:
        data = memoryview(data).tobytes()
    layout = _decode(data, len(data))
    parse = _PARSERS.get(layout)
    if parse is not None:
        return parse(data)
    if layout < 0:
        if layout >= ERR_OFFSET_PAST:  # no fault location to report
            raise decode_error(layout, data, 0)
        return _decode_generic(data, 0)  # raises, with the bad option's offset
    if layout & _LAYOUT_GENERIC:
        return _decode_generic(data, (layout & 0xF) * 4)
    parse = _compile_parser(layout)
    if len(_PARSERS) < _MAX_PARSERS:
        _PARSERS[layout] = parse
    return parse(data)


def cffi_decode_view(data: Any) -> Segment:
    """decode, with a large payload lent from ``data`` (see rtcp.segment.decode_view)."""
    return _lend_payload(cffi_decode(data), data)


def _payload_buffer(payload: Any) -> Any:
    """A char[] view of a bytes-like payload other than bytes (no copy if contiguous)."""
    try:
        return _from_buffer(payload)
    except TypeError as exc:
        raise SegmentError(f"payload must be bytes-like: {exc}") from None
    except (ValueError, BufferError):  # e.g. a non-contiguous memoryview
        return memoryview(payload).tobytes()


def _encode_large(seg: Segment, ob: bytes, payload: Any) -> bytes:
    """Segments too big for the scratch buffer get one of their own."""
    cap = len(payload) + 60
    out = _alloc("char[]", cap)
    try:
        n = _encode(
            out, cap, seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window,
            seg.urgent, ob, len(ob), payload, len(payload),
        )  # fmt: skip
    except (OverflowError, TypeError) as exc:
        return cffi_encode(_index_fields(seg, exc))
    return ffi.buffer(out, n)[:]


_HEADER_FIELDS = ("src_port", "dst_port", "seq", "ack", "flags", "window", "urgent")


def _index_fields(seg: Segment, exc: Exception) -> Segment:
    """``seg`` with its header fields made plain ints by ``operator.index``, as
    struct (so _codec_py) accepts them, e.g. numpy integers, where cffi takes
    only ints; SegmentError if a field is not an integer at all, or already a
    plain int (then it was out of range)."""
    values = [getattr(seg, name) for name in _HEADER_FIELDS]
    if all(v.__class__ is int for v in values):
        raise SegmentError(f"header field out of range in {seg!r:.300}: {exc}") from None
    try:
        ints = [operator.index(v) for v in values]
    except TypeError:
        raise SegmentError(f"header field out of range in {seg!r:.300}: {exc}") from None
    return _new_segment(*ints, seg.options, seg.payload)  # type: ignore[arg-type]


def cffi_encode(seg: Segment) -> bytes:
    """The datagram for ``seg`` with its checksum; SegmentError if anything is out of range."""
    opts = seg.options
    if not opts:
        ob = b""
    elif len(opts) == 1 and len(opts[0]) == 2 and opts[0][0] == 8:  # data path: TS only
        try:
            ob = _pack_ts(8, 10, *opts[0][1])
        except (struct.error, TypeError) as exc:
            raise SegmentError(f"bad timestamps option {opts[0]!r:.100}: {exc}") from None
    else:
        ob = encode_options(opts)
    payload = seg.payload
    if payload.__class__ is not bytes:
        payload = _payload_buffer(payload)
    plen = len(payload)
    if plen > _MAX_SCRATCH_PAYLOAD:
        return _encode_large(seg, ob, payload)
    out, out_buf = _scratch.bufs
    try:
        n = _encode(
            out, _OUT_CAP, seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window,
            seg.urgent, ob, len(ob), payload, plen,
        )  # fmt: skip
    except (OverflowError, TypeError) as exc:
        return cffi_encode(_index_fields(seg, exc))
    # n < 0 cannot happen: encode_options bounds the options to 40 bytes and
    # the scratch buffer holds 60 header bytes plus _MAX_SCRATCH_PAYLOAD.
    return out_buf[:n]


#: Set by ``rtcp_fastpath_install`` when the CPython fast path is available.
fast_encode: Callable[[Segment], bytes] | None = None
fast_decode: Callable[[Any], Segment] | None = None
fast_internet_checksum: Callable[[Any], int] | None = None
fast_decode_view: Callable[[Any], Segment] | None = None


def _install_fastpath() -> bool:
    install = getattr(lib, "rtcp_fastpath_install", None)  # absent off CPython
    return install is not None and install(__name__.encode()) == 0


#: Whether ``encode``/``decode`` are the CPython fast path (else the cffi ones).
FASTPATH = _install_fastpath()
encode: Callable[[Segment], bytes] = fast_encode or cffi_encode
decode: Callable[[Any], Segment] = fast_decode or cffi_decode
internet_checksum: Callable[[Any], int] = fast_internet_checksum or cffi_internet_checksum
decode_view: Callable[[Any], Segment] = fast_decode_view or cffi_decode_view
