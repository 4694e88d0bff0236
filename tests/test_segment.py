"""Segment codec: both backends against each other, the wire format and known answers.

Both backend modules are imported directly, whatever ``rtcp.segment.BACKEND``
says, so every property is checked on each and their outputs compared.  CI
sets RTCP_REQUIRE_C=1 so that a missing C build fails test_c_backend_built
instead of quietly comparing Python with itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rtcp import _codec_py, segment
from rtcp.segment import ChecksumError, Flags, Segment, SegmentError

try:
    from rtcp import _codec_cbackend
except ImportError:
    _codec_cbackend = None  # type: ignore[assignment]

BACKENDS = [pytest.param(_codec_py, id="python")]
if _codec_cbackend is not None:
    # "c" is what rtcp uses: on CPython, csrc/fastpath.c with the cffi
    # functions behind it for odd input and errors.  "c-cffi" is the cffi layer
    # alone, as other interpreters run it.
    BACKENDS.append(pytest.param(_codec_cbackend, id="c"))
    _cffi_only = types.SimpleNamespace(
        encode=_codec_cbackend.cffi_encode,
        decode=_codec_cbackend.cffi_decode,
        internet_checksum=_codec_cbackend.cffi_internet_checksum,
        decode_view=_codec_cbackend.cffi_decode_view,
    )
    BACKENDS.append(pytest.param(_cffi_only, id="c-cffi"))
ALL = [b.values[0] for b in BACKENDS]
needs_c = pytest.mark.skipif(_codec_cbackend is None, reason="C codec not built")

# No deadline: CI shares two cores with other suites, and 65,000-byte payloads
# take the Python backend a few hundred microseconds.
codec_settings = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------- helpers
def ref_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: 16-bit words, end-around carry each step."""
    if len(data) & 1:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_segment(
    options: bytes = b"",
    payload: bytes = b"",
    *,
    offset_words: int | None = None,
    flags: int = 0x10,
    fix_checksum: bool = True,
) -> bytes:
    """A datagram built by hand (options as raw bytes), with a valid checksum."""
    hl = 20 + len(options)
    words = hl // 4 if offset_words is None else offset_words
    head = struct.pack("!HHIIBBHHH", 1111, 2222, 7, 9, words << 4, flags, 100, 0, 0)
    data = head + options + payload
    if fix_checksum:
        data = data[:16] + struct.pack("!H", ref_checksum(data)) + data[18:]
    return data


def with_valid_checksum(data: bytes) -> bytes:
    """``data`` with bytes 16-17 set so that its checksum verifies."""
    data = data[:16] + b"\0\0" + data[18:]
    return data[:16] + struct.pack("!H", ref_checksum(data)) + data[18:]


def decode_outcome(backend: Any, data: bytes) -> tuple[str, Any]:
    """("ok", segment) or (exception class name, message): comparable across backends."""
    try:
        return "ok", backend.decode(data)
    except SegmentError as exc:
        return type(exc).__name__, str(exc)


# ------------------------------------------------------------ strategies
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
KNOWN_KINDS = (0, 1, 2, 3, 4, 5, 8)
unknown_kind = st.integers(6, 255).filter(lambda k: k not in KNOWN_KINDS)


def option_size(opt: tuple[int, Any]) -> int:
    kind, value = opt
    return {2: 4, 3: 3, 4: 2, 8: 10}.get(kind) or (
        2 + 8 * len(value) if kind == 5 else 2 + len(value)
    )


single_option = st.one_of(
    st.tuples(st.just(2), u16),
    st.tuples(st.just(3), st.integers(0, 255)),
    st.tuples(st.just(4), st.none()),
    st.tuples(st.just(5), st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(tuple)),
    st.tuples(st.just(8), st.tuples(u32, u32)),
    st.tuples(unknown_kind, st.binary(max_size=38)),
)


@st.composite
def option_lists(draw: st.DrawFn) -> tuple[tuple[int, Any], ...]:
    """Any options that fit in the 40-byte option area, in any order."""
    budget, out = 40, []
    for _ in range(draw(st.integers(0, 8))):
        opt = draw(single_option)
        if option_size(opt) <= budget:
            budget -= option_size(opt)
            out.append(opt)
    return tuple(out)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Empty to 65,000 bytes, odd lengths too; big ones made from a seed (st.binary
    seldom draws long values), some all-0xFF or all-zero for extreme sums."""
    size = draw(st.one_of(st.integers(0, 64), st.integers(0, 2000), st.integers(0, 65000)))
    kind = draw(st.sampled_from(["random", "random", "random", "ff", "zero"]))
    if kind == "ff":
        return b"\xff" * size
    if kind == "zero":
        return bytes(size)
    return random.Random(draw(st.integers(0, 2**32))).randbytes(size)


segments = st.builds(
    Segment,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=st.integers(0, 255),
    window=u16,
    urgent=u16,
    options=option_lists(),
    payload=payloads(),
)


# ------------------------------------------------------------- backends
def test_c_backend_built() -> None:
    """CI (RTCP_REQUIRE_C=1) must have the C codec; otherwise BACKEND must say what loaded."""
    try:
        from rtcp import _codec_c  # noqa: F401

        c_importable = True
    except ImportError:
        c_importable = False
    forced_python = os.environ.get("RTCP_PURE_PYTHON", "").strip().lower() not in segment._OFF
    if os.environ.get("RTCP_REQUIRE_C") == "1":
        assert c_importable, "RTCP_REQUIRE_C=1 but rtcp._codec_c does not import"
        assert _codec_cbackend is not None
        assert not forced_python, "RTCP_REQUIRE_C=1 contradicts RTCP_PURE_PYTHON"
        assert segment.BACKEND == "c"
        if sys.implementation.name == "cpython":
            assert _codec_cbackend.FASTPATH, "csrc/fastpath.c did not install"
            assert segment.encode is _codec_cbackend.fast_encode
            assert segment.decode is _codec_cbackend.fast_decode
            assert segment.decode_view is _codec_cbackend.fast_decode_view
    else:
        assert segment.BACKEND == ("c" if c_importable and not forced_python else "python")
    assert (segment.encode is _codec_py.encode) == (segment.BACKEND == "python")


@pytest.mark.parametrize("value, expected", [("1", "python"), ("yes", "python"), ("", None),
                                             ("0", None), ("false", None), ("No", None)])
def test_pure_python_env_var(value: str, expected: str | None) -> None:
    """RTCP_PURE_PYTHON=1 at import time forces the Python codec; unset, 0, false,
    no or off leave it to the build (C if built)."""
    env = dict(os.environ, RTCP_PURE_PYTHON=value)
    out = subprocess.run(
        [sys.executable, "-c", "import rtcp.segment as s; print(s.BACKEND)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout.strip()
    assert out == (expected or ("c" if _codec_cbackend is not None else "python"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [0, 100, segment.VIEW_MIN, segment.VIEW_MIN + 1, 65_000])
def test_decode_view_lends_large_payloads_of_bytes(backend: Any, size: int) -> None:
    """decode_view: decode's segment, but a payload over VIEW_MIN bytes of a bytes
    datagram is a read-only view of it; mutable input is always copied."""
    seg = Segment(1, 2, 3, 4, Flags.ACK, 5, 0, ((8, (6, 7)),), (bytes(range(256)) * 300)[:size])
    data = backend.encode(seg)
    got = backend.decode_view(data)
    assert got == backend.decode(data) == seg
    if size > segment.VIEW_MIN:
        assert isinstance(got.payload, memoryview)
        assert got.payload.readonly and got.payload.obj is data
    else:
        assert type(got.payload) is bytes
    for mutable in (bytearray(data), memoryview(bytearray(data))):
        lent = backend.decode_view(mutable)
        assert type(lent.payload) is bytes and lent == seg
    corrupt = bytearray(data)
    corrupt[-1 if size else 0] ^= 0x40
    with pytest.raises(ChecksumError):
        backend.decode_view(bytes(corrupt))
    with pytest.raises(SegmentError, match="shorter than"):
        backend.decode_view(data[:19])


# ---------------------------------------------------------- round trips
@codec_settings
@given(seg=segments)
def test_backends_agree_and_round_trip(seg: Segment) -> None:
    encoded = [b.encode(seg) for b in ALL]
    assert all(e == encoded[0] for e in encoded), "backends encode differently"
    data = encoded[0]
    assert (data[12] >> 4) * 4 == 20 + (sum(map(option_size, seg.options)) + 3) // 4 * 4
    assert ref_checksum(data) == 0
    for backend in ALL:
        assert backend.internet_checksum(data) == 0
        decoded = backend.decode(data)
        assert decoded == seg
        assert type(decoded) is Segment and type(decoded.payload) is bytes
    for view in (bytearray(data), memoryview(data)):
        assert all(b.decode(view) == seg for b in ALL)


@codec_settings
@given(seg=segments)
def test_encode_accepts_bytes_like_payloads(seg: Segment) -> None:
    expected = _codec_py.encode(seg)
    for payload in (bytearray(seg.payload), memoryview(seg.payload)):
        alt = dataclasses.replace(seg, payload=payload)
        assert all(b.encode(alt) == expected for b in ALL)


@codec_settings
@given(seg=segments, nops=st.lists(st.integers(0, 3), min_size=8, max_size=8), eol=st.booleans())
def test_foreign_option_layouts(seg: Segment, nops: list[int], eol: bool) -> None:
    """Other stacks pad with NOPs anywhere and may end with EOL and junk after it."""
    area = b""
    for i, opt in enumerate(seg.options):
        area += b"\x01" * nops[i % 8]
        area += _codec_py.encode_options((opt,))
    if eol:
        area += b"\x00\x07\x07"  # EOL, then bytes decoding must ignore
    area += b"\x01" * (-len(area) % 4)
    assume(len(area) <= 40)
    data = raw_segment(area, seg.payload[:300])
    expected = ("ok", dataclasses.replace(
        _codec_py.decode(data), options=seg.options
    ))  # fmt: skip
    assert all(decode_outcome(b, data) == expected for b in ALL)


def test_many_layouts_beyond_the_parser_cache() -> None:
    """The C backend compiles a parser per option layout, up to a bound: past it, still right."""
    count = 0
    for before in range(27):
        for between in range(27 - before):
            area = b"\x01" * before + b"\x02\x04\x05\xb4" + b"\x01" * between
            area += b"\x08\x0a" + struct.pack("!II", before, between)
            area += b"\x00" * (-len(area) % 4)
            data = raw_segment(area, b"x" * (before + between))
            for backend in ALL:
                seg = backend.decode(data)
                assert seg.options == ((2, 1460), (8, (before, between)))
                assert seg.payload == b"x" * (before + between)
            count += 1
    assert count > 300
    if _codec_cbackend is not None:
        assert len(_codec_cbackend._PARSERS) <= _codec_cbackend._MAX_PARSERS


# -------------------------------------------------------------- checksum
@codec_settings
@given(data=payloads())
def test_checksum_backends_agree(data: bytes) -> None:
    results = {b.internet_checksum(data) for b in ALL}
    if _codec_cbackend is not None:
        lib = _codec_cbackend.lib
        results.add(lib.rtcp_checksum_portable(data, len(data)))
        results.add(_codec_cbackend.internet_checksum(bytearray(data)))
    if len(data) <= 4096:
        results.add(ref_checksum(data))
    assert len(results) == 1


@codec_settings
@given(data=st.binary(max_size=300), offset=st.integers(0, 7))
def test_checksum_small_and_unaligned(data: bytes, offset: int) -> None:
    """Short tails and buffers that do not start on an 8-byte boundary."""
    view = memoryview(b"\x55" * offset + data)[offset:]
    assert all(b.internet_checksum(view) == ref_checksum(data) for b in ALL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checksum_known_answers(backend: Any) -> None:
    ck = backend.internet_checksum
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    assert ck(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2 == 0x220D
    # A captured IPv4 header (the textbook one: 192.168.0.1 -> 192.168.0.199,
    # UDP, total length 0x73).  By hand: 4500+0073+0000+4000+4011+c0a8+0001
    # +c0a8+00c7 = 0x2479c; folded 0x479c + 0x2 = 0x479e; complement 0xb861,
    # the checksum the capture carries.  With it in place the header verifies.
    header = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")
    assert ck(header[:10] + b"\0\0" + header[12:]) == 0xB861
    assert ck(header) == 0
    # RFC 1624 section 4: other words summing to 0xcd7a, a field m = 0x5555
    # gives 0xdd2f; changing m to 0x3285 makes the sum 0xffff, whose
    # checksum is 0x0000 (a "% 0xffff" shortcut gives 0xffff here).
    assert ck(bytes.fromhex("cd7a5555")) == 0xDD2F
    assert ck(bytes.fromhex("cd7a3285")) == 0x0000
    # Sums that fold to 0xffff, against the all-zero sum (+0, checksum 0xffff).
    assert ck(b"\xff\xff") == 0 and ck(b"\xff\xff" * 40000) == 0
    assert ck(b"\x80\x00\x7f\xff") == 0
    assert ck(b"") == 0xFFFF and ck(bytes(65536)) == 0xFFFF
    # An odd final byte is padded with zero: it is the high byte of a word.
    assert ck(b"\x01") == ck(b"\x01\x00") == 0xFEFF


@codec_settings
@given(seg=segments)
def test_checksum_field_zero_when_sum_is_ffff(seg: Segment) -> None:
    """Craft the payload's last word so the rest sums to 0xffff: the checksum field is 0x0000."""
    payload = bytes(seg.payload[: len(seg.payload) & ~1]) or b"\0\0"
    seg = dataclasses.replace(seg, payload=payload[:-2] + b"\0\0")
    fix = _codec_py.encode(seg)[16:18]  # ~sum of the rest: that word makes it 0xffff
    seg = dataclasses.replace(seg, payload=payload[:-2] + fix)
    encoded = [b.encode(seg) for b in ALL]
    assert all(e == encoded[0] for e in encoded)
    assert encoded[0][16:18] == b"\0\0"
    assert all(b.decode(encoded[0]) == seg for b in ALL)


@codec_settings
@given(seg=segments, data=st.data())
def test_any_single_bit_flip_is_detected(seg: Segment, data: st.DataObject) -> None:
    encoded = bytearray(_codec_py.encode(seg))
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    for backend in ALL:
        assert backend.internet_checksum(encoded) != 0
        with pytest.raises(ChecksumError):
            backend.decode(encoded)


# ------------------------------------------------------ malformed input
@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=120))
def test_garbage_raises_only_segment_error(data: bytes) -> None:
    outcomes = [decode_outcome(b, data) for b in ALL]
    assert all(o == outcomes[0] for o in outcomes)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(min_size=20, max_size=120))
def test_garbage_with_valid_checksum(data: bytes) -> None:
    """Past the checksum, the structural checks: both backends agree on every verdict."""
    data = with_valid_checksum(data)
    outcomes = [decode_outcome(b, data) for b in ALL]
    assert all(o == outcomes[0] for o in outcomes)
    assert outcomes[0][0] in ("ok", "SegmentError")


MALFORMED = {
    "empty": b"",
    "19 bytes": raw_segment()[:19],
    "offset 0": raw_segment(offset_words=0),
    "offset 4": raw_segment(offset_words=4),
    "offset past datagram": raw_segment(b"\x01" * 4, offset_words=7),
    "offset past datagram, no options": raw_segment(offset_words=6),
    "option length 0": raw_segment(b"\x02\x00\x00\x00"),
    "option length 1": raw_segment(b"\x63\x01\x00\x00"),
    "option length past header": raw_segment(b"\x08\x0a\x00\x00"),
    "unknown option past header": raw_segment(b"\x01\x63\x04\x00"),
    "kind without length byte": raw_segment(b"\x01\x01\x01\x08"),
    "MSS length 3": raw_segment(b"\x02\x03\x05\x00"),
    "MSS length 5": raw_segment(b"\x02\x05\x05\xb4\x00\x00\x00\x00"),
    "window scale length 4": raw_segment(b"\x03\x04\x07\x00"),
    "SACK-permitted length 3": raw_segment(b"\x04\x03\x00\x00"),
    "SACK length 2": raw_segment(b"\x05\x02\x00\x00"),
    "SACK length 9": raw_segment(b"\x05\x09" + bytes(10)),
    "SACK length 11": raw_segment(b"\x05\x0b" + bytes(10)),
    "SACK five blocks": raw_segment(b"\x05\x2a" + bytes(38)),
    "timestamps length 8": raw_segment(b"\x08\x08" + bytes(6)),
    "timestamps length 12": raw_segment(b"\x08\x0c" + bytes(10) + b"\x00\x00"),
    "bad checksum": raw_segment(fix_checksum=False, payload=b"data"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_rejected_alike(name: str) -> None:
    data = MALFORMED[name]
    outcomes = [decode_outcome(b, data) for b in ALL]
    assert outcomes[0][0] == ("ChecksumError" if name == "bad checksum" else "SegmentError")
    assert all(o == outcomes[0] for o in outcomes), outcomes


def test_malformed_messages_say_what() -> None:
    assert "20-byte" in decode_outcome(_codec_py, MALFORMED["19 bytes"])[1]
    assert "data offset" in decode_outcome(_codec_py, MALFORMED["offset 4"])[1]
    msg = decode_outcome(_codec_py, MALFORMED["MSS length 3"])[1]
    assert "kind 2" in msg and "byte 20" in msg


def test_eol_stops_decoding() -> None:
    data = raw_segment(b"\x02\x04\x05\xb4\x00\x02\x01\x00", b"payload")
    for backend in ALL:
        assert backend.decode(data).options == ((2, 1460),)


# ------------------------------------------------------ encode rejects
VALID = Segment(1, 2, 3, 4, 0x10, 5, 0, ((8, (1, 2)),), b"x")
BAD_SEGMENTS = {
    "src_port 65536": dataclasses.replace(VALID, src_port=65536),
    "dst_port -1": dataclasses.replace(VALID, dst_port=-1),
    "seq 2**32": dataclasses.replace(VALID, seq=2**32),
    "ack -1": dataclasses.replace(VALID, ack=-1),
    "flags 256": dataclasses.replace(VALID, flags=256),
    "window 65536": dataclasses.replace(VALID, window=65536),
    "urgent 70000": dataclasses.replace(VALID, urgent=70000),
    "float seq": dataclasses.replace(VALID, seq=1.0),
    "None window": dataclasses.replace(VALID, window=None),
    "str payload": dataclasses.replace(VALID, payload="text"),
    "int payload": dataclasses.replace(VALID, payload=5),
    "MSS 65536": dataclasses.replace(VALID, options=((2, 65536),)),
    "window scale 256": dataclasses.replace(VALID, options=((3, 256),)),
    "SACK-permitted value": dataclasses.replace(VALID, options=((4, 1),)),
    "SACK no blocks": dataclasses.replace(VALID, options=((5, ()),)),
    "SACK five blocks": dataclasses.replace(VALID, options=((5, ((1, 2),) * 5),)),
    "SACK edge 2**32": dataclasses.replace(VALID, options=((5, ((1, 2**32),)),)),
    "SACK block of 3": dataclasses.replace(VALID, options=((5, ((1, 2, 3),)),)),
    "timestamps one value": dataclasses.replace(VALID, options=((8, (1,)),)),
    "timestamps -1": dataclasses.replace(VALID, options=((8, (-1, 0)),)),
    "EOL as option": dataclasses.replace(VALID, options=((0, b""),)),
    "NOP as option": dataclasses.replace(VALID, options=((1, b""),)),
    "kind 256": dataclasses.replace(VALID, options=((256, b""),)),
    "kind as str": dataclasses.replace(VALID, options=(("8", (1, 2)),)),
    "unknown value 39 bytes": dataclasses.replace(VALID, options=((99, bytes(39)),)),
    "unknown value int": dataclasses.replace(VALID, options=((99, 7),)),
    "options 42 bytes": dataclasses.replace(VALID, options=((8, (1, 2)),) * 4 + ((4, None),)),
    "option not a pair": dataclasses.replace(VALID, options=((8, (1, 2), 3),)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(BAD_SEGMENTS))
def test_encode_rejects_out_of_range(backend: Any, name: str) -> None:
    with pytest.raises(SegmentError):
        backend.encode(BAD_SEGMENTS[name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_limits_exactly(backend: Any) -> None:
    """The largest legal values encode, and 40 option bytes is allowed."""
    top = Segment(65535, 65535, 2**32 - 1, 2**32 - 1, 255, 65535, 65535,
                  ((5, ((2**32 - 1, 0),) * 4), (99, b"ab")), b"")  # fmt: skip
    data = backend.encode(top)
    assert len(data) == 60 and data[12] == 0xF0
    assert backend.decode(data) == top
    assert backend.encode(dataclasses.replace(VALID, options=((99, bytes(38)),)))


# --------------------------------------------------------- known answers
HAND_BUILT = {
    # SYN: MSS 1432, window scale 7, SACK-permitted, timestamps (1, 0): 19
    # option bytes padded to 20, so data offset 10 words (0xa0).
    "SYN": (
        Segment(40000, 7007, 0x01020304, 0, Flags.SYN, 65535, 0,
                ((2, 1432), (3, 7), (4, None), (8, (1, 0)))),
        "9c40 1b5f 01020304 00000000 a002 ffff 85ac 0000"
        " 02040598 030307 0402 080a0000000100000000 00",
    ),
    "SYN-ACK": (
        Segment(7007, 40000, 0xA0B0C0D0, 0x01020305, Flags.SYN | Flags.ACK, 65535, 0,
                ((2, 1432), (4, None), (8, (5000, 1)), (3, 7))),
        "1b5f 9c40 a0b0c0d0 01020305 a012 ffff 1191 0000"
        " 02040598 0402 080a0000138800000001 030307 00",
    ),
    "ACK": (
        Segment(40000, 7007, 0x01020305, 0xA0B0C0D1, Flags.ACK, 512, 0, ((8, (2, 5000)),)),
        "9c40 1b5f 01020305 a0b0c0d1 8010 0200 4532 0000 080a0000000200001388 0000",
    ),
    "data": (
        Segment(40000, 7007, 0x01020305, 0xA0B0C0D1, Flags.ACK | Flags.PSH, 512, 0, (),
                b"hello"),
        "9c40 1b5f 01020305 a0b0c0d1 5018 0200 4cec 0000 68656c6c6f",
    ),
    # FIN by hand: 9c40+1b5f+0102+030a+a0b0+c0d1+5011+0200 = 0x26f3d,
    # folded 0x6f3f, complement 0x90c0.
    "FIN": (
        Segment(40000, 7007, 0x0102030A, 0xA0B0C0D1, Flags.FIN | Flags.ACK, 512),
        "9c40 1b5f 0102030a a0b0c0d1 5011 0200 90c0 0000",
    ),
    "RST": (
        Segment(7007, 40000, 0xA0B0C0D1, 0, Flags.RST, 0),
        "1b5f 9c40 a0b0c0d1 00000000 5004 0000 96d9 0000",
    ),
}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_hand_built_segments(backend: Any, name: str) -> None:
    seg, hex_bytes = HAND_BUILT[name]
    expected = bytes.fromhex(hex_bytes.replace(" ", ""))
    assert ref_checksum(expected) == 0
    assert backend.encode(seg) == expected
    assert backend.decode(expected) == seg


# ------------------------------------------------------- Segment object
def test_segment_type() -> None:
    seg = Segment(1, 2, 3, 4, Flags.SYN | Flags.FIN, 5, payload=b"abc")
    assert seg.seg_len == 5
    assert Segment(1, 2, 3, 4, Flags.ACK, 5).seg_len == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.seq = 9  # type: ignore[misc]
    assert not hasattr(seg, "__dict__")
    assert issubclass(SegmentError, ValueError) and issubclass(ChecksumError, SegmentError)
    from rtcp import SegmentError as exported

    assert exported is SegmentError
    assert [f.value for f in Flags] == [1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80]


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoded_segment_is_a_real_segment(backend: Any) -> None:
    """Decoders build Segments by a shortcut; the result must behave like Segment(...)."""
    seg = HAND_BUILT["SYN-ACK"][0]
    decoded = backend.decode(backend.encode(seg))
    assert type(decoded) is Segment and decoded == seg and hash(decoded) == hash(seg)
    assert repr(decoded) == repr(dataclasses.replace(seg, flags=int(seg.flags)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.ack = 1  # type: ignore[misc]
    assert dataclasses.replace(decoded, seq=1).seq == 1
    assert dataclasses.astuple(decoded)[:2] == (7007, 40000)
    assert decoded.seg_len == 1


@needs_c
def test_c_encode_large_and_threaded() -> None:
    """Beyond the per-thread scratch buffer, and two threads encoding at once."""
    big = Segment(1, 2, 3, 4, 0x10, 5, 0, (), random.Random(3).randbytes(70001))
    assert _codec_cbackend.encode(big) == _codec_py.encode(big)
    segs = [dataclasses.replace(big, seq=i, payload=big.payload[: 1000 + i]) for i in range(40)]
    expected = [_codec_py.encode(s) for s in segs]
    failures = []

    def worker() -> None:
        for _ in range(50):
            for seg, exp in zip(segs, expected, strict=True):
                if _codec_cbackend.encode(seg) != exp:
                    failures.append(seg.seq)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# ------------------------------------------------- CPython fast path
class _SubSegment(Segment):
    """A subclass may override fields with properties: the fast path declines it."""

    __slots__ = ()


class _Kind(enum.IntEnum):
    TS = 8


class _Index:
    """An integer only through __index__ (as numpy's are): struct takes it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


# Inputs the fast path does not take by its quick checks: it must hand them to
# the cffi layer, and the outcome must be the Python backend's.
ODD_SEGMENTS = {
    "IntFlag flags": dataclasses.replace(VALID, flags=Flags.ACK | Flags.PSH),
    "bool window": dataclasses.replace(VALID, window=True),
    "list options": dataclasses.replace(VALID, options=[(8, (1, 2))]),
    "list option pair": dataclasses.replace(VALID, options=([8, (1, 2)],)),
    "list timestamps": dataclasses.replace(VALID, options=((8, [1, 2]),)),
    "IntEnum kind": dataclasses.replace(VALID, options=((_Kind.TS, (1, 2)),)),
    "list SACK blocks": dataclasses.replace(VALID, options=((5, [(1, 2), (3, 4)]),)),
    "bytearray option": dataclasses.replace(VALID, options=((99, bytearray(b"ab")),)),
    "strided payload": dataclasses.replace(VALID, payload=memoryview(b"abcdef")[::2]),
    "array payload": dataclasses.replace(VALID, payload=memoryview(bytes(8)).cast("I")),
    "subclass": _SubSegment(1, 2, 3, 4, 0x10, 5, 0, ((8, (1, 2)),), b"x"),
    "unset field": Segment.__new__(Segment),
    "41 option bytes": dataclasses.replace(VALID, options=((99, bytes(38)), (4, None))),
    "bool kind": dataclasses.replace(VALID, options=((True, b""),)),
    "__index__ port": dataclasses.replace(VALID, src_port=_Index(7)),
    "__index__ window 65536": dataclasses.replace(VALID, window=_Index(65536)),
}


def encode_outcome(backend: Any, seg: Any) -> tuple[str, Any]:
    try:
        return "ok", backend.encode(seg)
    except Exception as exc:  # the class and message are what we compare
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("name", list(ODD_SEGMENTS))
def test_odd_inputs_encode_as_python_does(name: str) -> None:
    seg = ODD_SEGMENTS[name]
    expected = encode_outcome(_codec_py, seg)
    for backend in ALL:
        outcome = encode_outcome(backend, seg)
        assert outcome[0] == expected[0], (backend, outcome)
        if expected[0] == "ok":
            assert outcome == expected


@needs_c
def test_fast_path_errors_are_the_cffi_layers() -> None:
    """Errors come from the cffi functions, so their messages are the same."""
    for seg in BAD_SEGMENTS.values():
        assert encode_outcome(_codec_cbackend, seg) == encode_outcome(_cffi_only, seg)
    for name in MALFORMED:
        data = MALFORMED[name]
        assert decode_outcome(_codec_cbackend, data) == decode_outcome(_cffi_only, data)
    for bad in ("text", 5, None, memoryview(b"abcdefgh")[::2]):
        for fn in ("decode", "internet_checksum"):
            try:
                getattr(_cffi_only, fn)(bad)
                expected: Any = "ok"
            except Exception as exc:
                expected = type(exc)
            with pytest.raises(expected) if expected != "ok" else contextlib.nullcontext():
                getattr(_codec_cbackend, fn)(bad)


@needs_c
def test_fast_decode_copies_and_builds_real_objects() -> None:
    seg = HAND_BUILT["SYN"][0]
    buf = bytearray(_codec_py.encode(dataclasses.replace(seg, payload=b"data")))
    decoded = _codec_cbackend.decode(buf)
    buf[-4:] = b"XXXX"  # the payload is a copy, not a view of the buffer
    assert decoded.payload == b"data" and type(decoded.payload) is bytes
    assert gc.is_tracked(decoded)  # the C-built object is known to the collector
    assert decoded.options == seg.options and type(decoded.options[3][1]) is tuple


@needs_c
def test_fast_path_does_not_leak() -> None:
    """Reference counting in C: thousands of round trips leave no memory behind."""
    seg = Segment(1, 2, 3, 4, 0x10, 5, 0,
                  ((8, (1, 2)), (5, ((1, 2), (3, 4))), (2, 1460), (3, 7), (4, None), (99, b"z")),
                  b"p" * 100)  # fmt: skip
    data = _codec_cbackend.encode(seg)
    bad = data[:-1] + bytes([data[-1] ^ 1])

    def rounds(n: int) -> None:
        for _ in range(n):
            _codec_cbackend.decode(_codec_cbackend.encode(seg))
            _codec_cbackend.decode(bytearray(data))
            _codec_cbackend.internet_checksum(memoryview(data))
            with contextlib.suppress(ChecksumError):
                _codec_cbackend.decode(bad)

    rounds(2000)  # warm caches and free lists
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rounds(20000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes still held after 20,000 rounds"


def test_strided_buffers_checksum_alike() -> None:
    data = bytes(range(256)) * 3
    for view in (memoryview(data)[::2], memoryview(data)[::-1], memoryview(data)[1::3]):
        expected = _codec_py.internet_checksum(view)
        assert expected == ref_checksum(view.tobytes())
        assert all(b.internet_checksum(view) == expected for b in ALL)


SUBINTERPRETER_CHECK = """
import _xxsubinterpreters as interpreters
from rtcp import segment, _codec_cbackend
seg = segment.Segment(1, 2, 3, 4, 0x10, 5, 0, ((8, (1, 2)),), b"x")
data = segment.encode(seg)
interp = interpreters.create(isolated=False)  # like mod_wsgi's
import sys
interpreters.run_string(interp, f"import sys; sys.path[:0] = {sys.path!r}; import rtcp.segment")
interpreters.destroy(interp)
decoded = segment.decode(data)
assert type(decoded) is segment.Segment, type(decoded)
assert decoded == seg and segment.encode(seg) == data
assert segment.decode is _codec_cbackend.fast_decode
print("ok")
"""


@needs_c
def test_a_subinterpreter_import_leaves_the_fast_path_alone() -> None:
    """The fast path's state is process-wide C statics: only the main
    interpreter installs it, so a subinterpreter's import cannot point it at
    that interpreter's Segment class (which dies with it)."""
    pytest.importorskip("_xxsubinterpreters")
    env = {k: v for k, v in os.environ.items() if k != "RTCP_PURE_PYTHON"}  # the C backend
    out = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER_CHECK],
        capture_output=True, text=True, timeout=60, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_build_without_a_working_compiler_still_succeeds(tmp_path: Path) -> None:
    """What `pip install -e .` runs, with a compiler that fails: the build must
    warn and succeed (rtcp then uses the Python codec), not fail the install."""
    repo = Path(__file__).resolve().parent.parent
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(repo / name, tmp_path / name)
    shutil.copytree(repo / "csrc", tmp_path / "csrc")
    shutil.copytree(repo / "rtcp", tmp_path / "rtcp",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ, CC="/bin/false")
    out = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "will use its pure-Python codec" in out.stderr
    assert not list((tmp_path / "rtcp").glob("_codec_c*.so"))
