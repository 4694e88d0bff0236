"""Unit tests of the core's parts: sequence arithmetic, RangeSet, the RTO estimator,
reset_for, and connection behaviours driven by crafted segments (reassembly,
receive window and window scaling, MSS, Nagle, PAWS)."""

from __future__ import annotations

import array
import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.config import Config
from rtcp.core import events as ev
from rtcp.core.connection import (
    ACK,
    FIN,
    HANDSHAKE_ACK_HOLD,
    PSH,
    RST,
    SYN,
    Connection,
    reset_for,
)
from rtcp.core.ranges import RangeSet
from rtcp.core.rto import CLOCK_GRANULARITY, RttEstimator
from rtcp.core.seq import HALF, MASK, MOD, seq_diff, seq_ge, seq_gt, seq_le, seq_lt, unwrap
from rtcp.segment import VIEW_MIN, Segment, decode_view, encode

FAST = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------- helpers
def deliver(src: Connection, dst: Connection, now: float) -> list[Segment]:
    segs = src.segments_to_send(now)
    for s in segs:
        dst.handle_segment(s, now)
    return segs


def connect(cfg_a: Config | None = None, cfg_b: Config | None = None, *, iss_a: int = 1000,
            iss_b: int = 5000, ts_a: int = 0, ts_b: int = 0,
            max_a: int | None = None, max_b: int | None = None,
            ) -> tuple[Connection, Connection, list[Segment]]:
    """A (port 1000) actively opens to B (port 2000); returns both and the handshake."""
    a = Connection(cfg_a or Config(), 1000, 2000, iss=iss_a, now=0.0, ts_offset=ts_a,
                   max_datagram=max_a)
    b = Connection(cfg_b or Config(), 2000, 1000, iss=iss_b, now=0.0, ts_offset=ts_b,
                   max_datagram=max_b)
    b.listen()
    a.connect(0.0)
    shake = deliver(a, b, 0.0) + deliver(b, a, 0.0) + deliver(a, b, 0.0)
    assert a.state == b.state == "ESTABLISHED"
    a.events()
    b.events()
    return a, b, shake


def from_peer(dst: Connection, seq: int, payload: bytes = b"", flags: int = ACK | PSH, *,
              ack: int | None = None, window: int = 65535, options: tuple = ()) -> Segment:
    """A segment that ``dst``'s peer could have sent; seq/ack are unwrapped ints."""
    a = dst.snd_nxt if ack is None else ack
    return Segment(dst.remote_port, dst.local_port, seq & MASK, a & MASK, flags, window, 0,
                   options, payload)


def wire_size(seg: Segment) -> int:
    """Bytes of the UDP payload this segment becomes (header, options, data)."""
    return len(encode(seg))


def ts_of(seg: Segment) -> tuple[int, int]:
    return dict(seg.options)[8]


# ============================================================== seq.py
@pytest.mark.parametrize(("a", "b", "diff"), [
    (0, 0, 0),
    (0, 0xFFFFFFFF, 1),
    (0xFFFFFFFF, 0, -1),
    (5, 0xFFFFFFFB, 10),
    (0xFFFFFFF0, 0x10, -0x20),
    (0x7FFFFFFF, 0, 0x7FFFFFFF),
    (0x80000001, 0, -0x7FFFFFFF),
])
def test_seq_diff_examples(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff
    assert seq_lt(a, b) == (diff < 0) and seq_gt(a, b) == (diff > 0)
    assert seq_le(a, b) == (diff <= 0) and seq_ge(a, b) == (diff >= 0)


def test_seq_comparisons_across_the_wrap() -> None:
    assert seq_lt(0xFFFFFFFF, 0) and seq_gt(0, 0xFFFFFFFF)
    assert seq_lt(0xFFFFFF00, 0x100) and not seq_lt(0x100, 0xFFFFFF00)
    assert seq_le(7, 7) and seq_ge(7, 7) and not seq_lt(7, 7) and not seq_gt(7, 7)
    # Distance exactly 2**31 is the one ambiguous point; it is at least consistent.
    assert seq_diff(0, HALF) == -HALF


@FAST
@given(a=st.integers(0, MASK), d=st.integers(-HALF + 1, HALF - 1))
def test_seq_order_is_modular_and_antisymmetric(a: int, d: int) -> None:
    b = (a + d) & MASK
    assert seq_diff(b, a) == d and seq_diff(a, b) == -d
    assert seq_lt(a, b) == (d > 0) == seq_gt(b, a)
    assert seq_le(a, b) == (d >= 0) == seq_ge(b, a)
    assert not (seq_lt(a, b) and seq_lt(b, a))


@pytest.mark.parametrize(("wire", "ref", "expect"), [
    (0xFFFFFFFF, MOD + 5, MOD - 1),  # just behind ref, across the wrap
    (3, MOD - 2, MOD + 3),  # just ahead of ref, across the wrap
    (0xFFFFFFFE, 1, -2),  # behind a ref near 0: below zero, low bits still right
    (10, 0, 10),
    (0, MOD, MOD),
    (5, 7 * MOD + 0xFFFFFFF0, 8 * MOD + 5),  # many wraps in
])
def test_unwrap_near_zero_and_two_to_the_32(wire: int, ref: int, expect: int) -> None:
    assert unwrap(wire, ref) == expect
    assert unwrap(wire, ref) & MASK == wire


@FAST
@given(ref=st.integers(0, 1 << 40), d=st.integers(-HALF, HALF - 1))
def test_unwrap_recovers_anything_within_half_the_space(ref: int, d: int) -> None:
    assert unwrap((ref + d) & MASK, ref) == ref + d


# ============================================================ RangeSet
def model_runs(model: set[int], lo: int, hi: int, present: bool) -> list[tuple[int, int]]:
    """Maximal runs of integers in [lo, hi) that are (or are not) in ``model``."""
    runs: list[tuple[int, int]] = []
    start = None
    for x in range(lo, hi + 1):
        inside = x < hi and ((x in model) == present)
        if inside and start is None:
            start = x
        elif not inside and start is not None:
            runs.append((start, x))
            start = None
    return runs


def check_against(rs: RangeSet, model: set[int]) -> None:
    ranges = list(rs)
    assert ranges == model_runs(model, 0, 100, True)  # sorted, disjoint, coalesced
    for (_, e1), (s2, _) in zip(ranges, ranges[1:], strict=False):
        assert e1 < s2  # touching ranges were merged
    assert rs.total == len(model)
    assert len(rs) == len(ranges) and bool(rs) == bool(model)
    assert rs.first == (ranges[0] if ranges else None)
    assert rs.last_end == (ranges[-1][1] if ranges else None)


interval = st.tuples(st.integers(0, 70), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1]))
op = st.one_of(
    st.tuples(st.just("add"), interval),
    st.tuples(st.just("remove"), interval),
    st.tuples(st.just("remove_below"), st.integers(0, 80)),
    st.tuples(st.just("clear"), st.none()),
)


@FAST
@given(ops=st.lists(op, max_size=40), probes=st.lists(interval, min_size=1, max_size=8))
def test_rangeset_matches_a_set_of_ints(ops: list, probes: list) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for name, arg in ops:
        if name == "add":
            s, e = arg
            new = set(range(s, e)) - model
            assert rs.add(s, e) == len(new)
            model |= new
        elif name == "remove":
            rs.remove(*arg)
            model -= set(range(*arg))
        elif name == "remove_below":
            rs.remove_below(arg)
            model = {x for x in model if x >= arg}
        else:
            rs.clear()
            model.clear()
        check_against(rs, model)
    for s, e in probes:
        if e > s:
            assert rs.contains(s, e) == all(x in model for x in range(s, e))
        assert rs.covered_above(s) == sum(1 for x in model if x >= s)
        assert list(rs.holes(s, e)) == model_runs(model, s, e, False)


def test_rangeset_merge_overlap_and_touching() -> None:
    rs = RangeSet()
    assert rs.add(10, 20) == 10
    assert rs.add(30, 40) == 10
    assert rs.add(20, 30) == 10  # touches both: one range
    assert list(rs) == [(10, 40)]
    assert rs.add(5, 45) == 10  # covers it: only the ends are new
    assert rs.add(12, 18) == 0  # duplicate
    assert rs.add(7, 7) == 0  # empty
    assert list(rs) == [(5, 45)] and rs.total == 40
    rs.remove_below(20)
    assert list(rs) == [(20, 45)] and rs.total == 25
    rs.remove(30, 35)
    assert list(rs) == [(20, 30), (35, 45)] and rs.total == 20
    assert list(rs.holes(0, 50)) == [(0, 20), (30, 35), (45, 50)]
    assert rs.covered_above(33) == 10 and rs.covered_above(25) == 15
    assert rs.contains(36, 45) and not rs.contains(29, 36)


# ================================================================= RTO
def test_rto_before_any_sample_is_initial_and_clamped() -> None:
    assert RttEstimator(1.0, 0.2, 60.0).rto == 1.0
    assert RttEstimator(0.1, 0.2, 60.0).rto == 0.2
    assert RttEstimator(100.0, 0.2, 60.0).rto == 60.0
    assert not RttEstimator(1.0, 0.2, 60.0).has_sample


@pytest.mark.parametrize(("r", "min_rto", "rto"), [
    (0.1, 0.2, 0.1 + 4 * 0.05),  # SRTT + 4*RTTVAR = 0.3
    (0.02, 0.2, 0.2),  # 0.06 clamped up to min_rto
    (1.0, 0.2, 3.0),
    (30.0, 0.2, 60.0),  # 90 clamped down to max_rto
])
def test_rto_first_sample(r: float, min_rto: float, rto: float) -> None:
    e = RttEstimator(1.0, min_rto, 60.0)
    e.sample(r)
    assert e.srtt == pytest.approx(r) and e.rttvar == pytest.approx(r / 2)
    assert e.rto == pytest.approx(rto) and e.has_sample


@FAST
@given(samples=st.lists(st.floats(0.001, 5.0), min_size=1, max_size=30),
       min_rto=st.sampled_from([0.0001, 0.2, 1.0]))
def test_rto_follows_rfc6298_formulas(samples: list[float], min_rto: float) -> None:
    e = RttEstimator(1.0, min_rto, 60.0)
    srtt = rttvar = None
    for r in samples:
        e.sample(r)
        if srtt is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = (1 - 1 / 4) * rttvar + 1 / 4 * abs(srtt - r)  # uses the old SRTT
            srtt = (1 - 1 / 8) * srtt + 1 / 8 * r
        expect = min(max(srtt + max(CLOCK_GRANULARITY, 4 * rttvar), min_rto), 60.0)
        assert e.srtt == pytest.approx(srtt, rel=1e-9)
        assert e.rttvar == pytest.approx(rttvar, rel=1e-9, abs=1e-12)
        assert e.rto == pytest.approx(expect, rel=1e-9)


def test_rto_clock_granularity_floor() -> None:
    """RTO = SRTT + max(G, 4*RTTVAR): with a steady RTT, RTTVAR decays below G/4."""
    e = RttEstimator(1.0, 0.0001, 60.0)
    for _ in range(100):
        e.sample(0.05)
    assert 4 * e.rttvar < CLOCK_GRANULARITY
    assert e.rto == pytest.approx(0.05 + CLOCK_GRANULARITY)


def test_rto_backoff_doubles_caps_and_resets() -> None:
    e = RttEstimator(1.0, 0.2, 10.0)
    seen = []
    for _ in range(6):
        seen.append(e.rto)
        e.on_timeout()
    assert seen == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert e.rto == 10.0
    e.reset_backoff()
    assert e.rto == 1.0
    for _ in range(3):
        e.on_timeout()
    e.sample(0.1)  # a fresh sample recomputes the RTO (RFC 6298 5.7)
    assert e.rto == pytest.approx(0.3)


# ============================================================ reset_for
@pytest.mark.parametrize(("flags", "payload", "seq", "ack", "expect"), [
    (SYN, b"", 100, 0, (RST | ACK, 0, 101)),
    (SYN, b"abc", 100, 0, (RST | ACK, 0, 104)),  # SYN and data both count
    (FIN, b"ab", 100, 0, (RST | ACK, 0, 103)),
    (SYN | FIN, b"", 0xFFFFFFFF, 0, (RST | ACK, 0, 1)),  # wraps
    (PSH, b"x" * 10, 0xFFFFFFFA, 0, (RST | ACK, 0, 4)),
    (ACK, b"", 100, 777, (RST, 777, None)),
    (SYN | ACK, b"", 100, 0xFFFFFFFF, (RST, 0xFFFFFFFF, None)),
    (FIN | ACK | PSH, b"zz", 100, 55, (RST, 55, None)),
])
def test_reset_for(flags: int, payload: bytes, seq: int, ack: int, expect: tuple) -> None:
    s = Segment(1234, 80, seq, ack, flags, 100, 0, (), payload)
    r = reset_for(s)
    assert r is not None
    assert (r.src_port, r.dst_port) == (80, 1234)
    assert r.flags == expect[0] and r.seq == expect[1] and r.payload == b""
    if expect[2] is not None:
        assert r.ack == expect[2]


@pytest.mark.parametrize("flags", [RST, RST | ACK, RST | SYN, RST | FIN | ACK])
def test_reset_for_never_answers_a_reset(flags: int) -> None:
    assert reset_for(Segment(1, 2, 10, 20, flags, 0)) is None


# ============================================================ reassembly
def read_all(c: Connection, now: float) -> bytes:
    out = bytearray()
    while c.readable:
        out += c.receive(1 << 20, now)
    return bytes(out)


def test_receive_joins_large_segments_in_one_read() -> None:
    """Queued large segments come out of one receive() as one bytes object:
    their payloads are views of the datagrams (decode_view), so the join is
    their only copy, and the reader wakes once for them, not once each."""
    big = Config(max_datagram=65507, receive_buffer=1 << 20)
    a, b, _ = connect(big, big, max_a=65507, max_b=65507)
    seq = b.rcv_nxt
    pieces = [b"s" * 244] + [bytes([i]) * 20000 for i in range(1, 4)]  # in the first window
    for piece in pieces:
        seg = decode_view(encode(from_peer(b, seq, piece)))
        assert isinstance(seg.payload, memoryview) == (len(piece) > VIEW_MIN)
        b.handle_segment(seg, 1.0)
        seq += len(piece)
    got = b.receive(30_000, 1.0)  # a read that ends inside the second segment
    assert type(got) is bytes and got == b"".join(pieces)[:30_000]
    rest = b.receive(1 << 20, 1.0)
    assert type(rest) is bytes and got + rest == b"".join(pieces)
    assert b.readable == 0


def _held(conn: Connection) -> int:
    """Bytes the receive buffers keep alive: a view holds its whole datagram."""
    chunks = [*conn._rcvbuf, *conn._ooo.values()]
    return sum(len(c.obj) if isinstance(c, memoryview) else len(c) for c in chunks)


def test_a_trimmed_view_does_not_pin_its_datagram() -> None:
    """A peer resending 60,000 old bytes plus one new byte, again and again: each
    new byte is a piece of a 64 KiB datagram's view, and must not keep it alive
    (the buffers count the piece, not the datagram)."""
    big = Config(max_datagram=65507)
    a, b, _ = connect(big, big, max_a=65507, max_b=65507)
    old = b"o" * 60000
    b.handle_segment(decode_view(encode(from_peer(b, b.rcv_nxt, old))), 1.0)
    assert b.receive(1 << 20, 1.0) == old
    for i in range(200):
        seg = decode_view(encode(from_peer(b, b.rcv_nxt - len(old), old + b"N")))
        b.handle_segment(seg, 1.0 + i)
    assert b.readable == 200
    assert _held(b) == 200


def test_out_of_order_pieces_of_views_do_not_pin_their_datagrams() -> None:
    """Segments overlapping earlier out-of-order data leave one-byte pieces in
    the reassembly queue: copies, not views of 64 KiB datagrams."""
    big = Config(max_datagram=65507)
    a, b, _ = connect(big, big, max_a=65507, max_b=65507)
    base = b.rcv_nxt
    b.handle_segment(decode_view(encode(from_peer(b, base + 3, b"x" * 20000))), 1.0)
    for i in range(2):  # each adds one new byte ahead of the first segment
        seg = decode_view(encode(from_peer(b, base + 2 - i, b"x" * 20000)))
        b.handle_segment(seg, 1.0)
    pieces = sorted(len(c) for c in b._ooo.values())
    assert pieces == [1, 1, 20000]
    assert _held(b) <= 20000 + 64 + 2  # the first segment's datagram, and two bytes


def test_window_closes_on_a_peer_writing_bytes_to_a_reader_that_does_not_read() -> None:
    """The advertised edge, rounded up to the window-scale grid, must not creep:
    with each ACK of a byte rounding up from the last rounded edge, the window
    never closed and the buffers took whatever a chatty peer sent."""
    cfg = Config(max_datagram=65507, delayed_ack=0)
    a, b, _ = connect(cfg, cfg, max_a=65507, max_b=65507)
    shift, capacity = b._rcv_wscale, cfg.receive_buffer
    assert shift >= 4
    right = b.rcv_nxt

    def ack() -> None:  # the window the peer is told
        nonlocal right
        for seg in b.segments_to_send(1.0):
            right = unwrap(seg.ack, b.rcv_nxt) + (seg.window << shift)

    b._ack_now = True
    ack()
    while b.readable < capacity - 1000:  # fill most of it at once
        n = min(60000, right - b.rcv_nxt, capacity - 1000 - b.readable)
        b.handle_segment(from_peer(b, b.rcv_nxt, b"x" * n), 1.0)
        ack()
    trickled = 0
    while right > b.rcv_nxt and trickled < 5000:  # then a byte per segment
        b.handle_segment(from_peer(b, b.rcv_nxt, b"y"), 1.0)
        ack()
        trickled += 1
    assert right <= b.rcv_nxt  # the window closed
    assert b.readable < capacity + (1 << shift)


def test_tiny_segments_cost_about_their_bytes_of_memory() -> None:
    """A peer writing two bytes per segment to a reader that does not read: the
    short payloads are gathered, not kept as one object each (~25x the bytes)."""
    import tracemalloc

    cfg = Config(receive_buffer=32768)
    a, b, _ = connect(cfg, cfg)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while b.readable < cfg.receive_buffer:
            b.handle_segment(from_peer(b, b.rcv_nxt, b"ab"), 1.0)
            b.segments_to_send(1.0)
            b.events()
        grew = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grew < 2 * cfg.receive_buffer
    data = b.receive(1 << 20, 1.0)
    assert type(data) is bytes and data == b"ab" * (cfg.receive_buffer // 2)


def test_gathering_does_not_keep_what_the_reader_took() -> None:
    """A reader that keeps up but leaves a byte each time: short payloads must not
    be gathered into the head chunk it has begun, which would keep every byte
    already read (up to GATHER_MAX) while readable stays at one."""
    import hashlib
    import tracemalloc

    cfg = Config(receive_buffer=4096)
    a, b, _ = connect(cfg, cfg)
    sent, got = hashlib.sha256(), hashlib.sha256()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(600):
            piece = bytes([i % 256]) * 100
            sent.update(piece)
            b.handle_segment(from_peer(b, b.rcv_nxt, piece), 1.0)
            b.segments_to_send(1.0)
            b.events()
            got.update(b.receive(b.readable - 1, 1.0))
        grew = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert b.readable == 1
    assert grew < 4 * cfg.receive_buffer  # the kept prefix was ~64 KiB
    got.update(b.receive(10, 1.0))
    assert got.digest() == sent.digest()


@pytest.mark.parametrize("size", [100, 1000])
def test_receive_hands_over_a_whole_bytes_segment_as_is(size: int) -> None:
    """A read of exactly one queued bytes payload returns that very object
    (short ones too: they are gathered only behind other queued data)."""
    a, b, _ = connect()
    piece = b"x" * size
    b.handle_segment(from_peer(b, b.rcv_nxt, piece), 1.0)
    assert b.receive(1 << 20, 1.0) is piece


def test_receive_gives_bytes_even_from_a_sender_in_memory() -> None:
    """Connections wired in memory pass segments as built: a large one carries a
    view of the sender's buffer; the receiving application still gets bytes."""
    big = Config(max_datagram=65507)
    a, b, _ = connect(big, big, max_a=65507, max_b=65507)
    data = bytes(range(256)) * 1024  # 256 KiB: sent as views into one chunk
    assert a.send(data, 1.0) == len(data)
    segs = deliver(a, b, 1.0)
    assert any(isinstance(s.payload, memoryview) for s in segs)
    got = b""
    while b.readable:
        chunk = b.receive(1 << 20, 1.0)
        assert type(chunk) is bytes
        got += chunk
    assert got == data[:len(got)] and got


@pytest.mark.parametrize("iss_a", [1000, 0xFFFFFFFF - 700], ids=["plain", "across-wrap"])
def test_overlapping_duplicate_reordered_segments(iss_a: int) -> None:
    a, b, _ = connect(Config(timestamps=False), Config(timestamps=False), iss_a=iss_a)
    base = b.rcv_nxt
    data = bytes(random.Random(1).randbytes(1500))
    pieces = [(100, 200), (150, 300), (0, 50), (100, 200), (250, 400), (600, 900),
              (40, 120), (0, 10), (400, 600), (899, 1500), (1400, 1500)]
    got = bytearray()
    for i, (lo, hi) in enumerate(pieces):
        b.handle_segment(from_peer(b, base + lo, data[lo:hi]), 1.0 + i * 0.01)
        got += read_all(b, 1.0)
        assert data.startswith(got)
    assert bytes(got) == data
    assert b.rcv_nxt == base + len(data)
    assert b.stats.bytes_received == len(data)
    assert sum(e.nbytes for e in b.events() if isinstance(e, ev.DataReceived)) == len(data)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4000), extra=st.lists(st.tuples(st.integers(0, 3999),
                                                        st.integers(1, 1400)), max_size=12),
       cuts=st.lists(st.integers(1, 3999), max_size=10), seed=st.integers(0, 1 << 30),
       wrap=st.booleans())
def test_any_arrival_order_delivers_each_byte_once_in_order(n: int, extra: list, cuts: list,
                                                            seed: int, wrap: bool) -> None:
    """Reordered, duplicated and overlapping segments, with a FIN on the last byte:
    the application sees every byte exactly once, in order, then EOF; every ACK is
    RCV.NXT and every SACK block is a run of bytes really held above it."""
    cfg = Config(timestamps=False)
    a, b, _ = connect(cfg, cfg, iss_a=(MASK - 2000) if wrap else 1000)
    base = b.rcv_nxt
    data = random.Random(seed).randbytes(n)
    points = sorted({0, n, *(c for c in cuts if c < n)})
    segs = [(lo, hi) for lo, hi in zip(points, points[1:], strict=False)]
    segs += [(s, min(n, s + ln)) for s, ln in extra if s < n]
    rng = random.Random(seed)
    rng.shuffle(segs)
    held: set[int] = set()
    got = bytearray()
    for i, (lo, hi) in enumerate(segs):
        fin = FIN if hi == n else 0
        t = 1.0 + i * 0.001
        b.handle_segment(from_peer(b, base + lo, data[lo:hi], ACK | PSH | fin), t)
        held |= set(range(lo, hi))
        got += read_all(b, t)
        assert data.startswith(got)
        prefix = len(got)
        for r in b.segments_to_send(t):
            fin_done = 1 if b.eof_received else 0
            assert r.ack == (base + prefix + fin_done) & MASK
            for left, right in dict(r.options).get(5, ()):
                lo_b, hi_b = unwrap(left, base) - base, unwrap(right, base) - base
                assert prefix < lo_b < hi_b <= n
                assert set(range(lo_b, hi_b)) <= held
    assert bytes(got) == data
    assert b.eof_received and b.state == "CLOSE_WAIT"
    assert b.rcv_nxt == base + n + 1
    events = b.events()
    assert sum(e.nbytes for e in events if isinstance(e, ev.DataReceived)) == n
    assert sum(isinstance(e, ev.EofReceived) for e in events) == 1
    assert b.stats.bytes_received == n


def test_fin_before_missing_data_waits_for_the_data() -> None:
    cfg = Config(timestamps=False)
    a, b, _ = connect(cfg, cfg)
    base = b.rcv_nxt
    b.handle_segment(from_peer(b, base + 5, b"world", ACK | FIN), 1.0)
    assert b.state == "ESTABLISHED" and not b.eof_received
    [dup] = b.segments_to_send(1.0)  # immediate duplicate ACK with SACK
    assert dup.ack == base & MASK
    assert dict(dup.options)[5] == (((base + 5) & MASK, (base + 10) & MASK),)
    b.handle_segment(from_peer(b, base, b"hello"), 1.1)
    assert b.state == "CLOSE_WAIT" and read_all(b, 1.1) == b"helloworld"
    [r] = b.segments_to_send(1.1)
    assert r.ack == (base + 11) & MASK and 5 not in dict(r.options)


def test_bare_fin_before_missing_data_is_consumed_with_the_data() -> None:
    """A FIN with no data ahead of a hole leaves nothing in reassembly: the
    in-order segment that fills the hole must still take the FIN with it (the
    header-prediction path once skipped it, and EOF waited for the peer's
    retransmitted FIN)."""
    cfg = Config(timestamps=False)
    a, b, _ = connect(cfg, cfg)
    base = b.rcv_nxt
    b.handle_segment(from_peer(b, base + 5, b"", ACK | FIN), 1.0)
    assert b.state == "ESTABLISHED" and not b.eof_received
    b.segments_to_send(1.0)
    b.handle_segment(from_peer(b, base, b"hello"), 1.1)
    assert b.state == "CLOSE_WAIT" and b.eof_received
    assert read_all(b, 1.1) == b"hello"
    [r] = b.segments_to_send(1.1)
    assert r.ack == (base + 6) & MASK


def test_sack_blocks_first_is_most_recent_rfc2018() -> None:
    cfg = Config(timestamps=False)
    a, b, _ = connect(cfg, cfg)
    base = b.rcv_nxt
    blocks = []
    for i, lo in enumerate((100, 300, 200, 500)):
        b.handle_segment(from_peer(b, base + lo, b"x" * 50), 1.0 + i)
        [r] = b.segments_to_send(1.0 + i)
        assert r.ack == base & MASK
        blocks.append([(unwrap(x, base) - base, unwrap(y, base) - base)
                       for x, y in dict(r.options)[5]])
    assert blocks[0] == [(100, 150)]
    assert blocks[1][0] == (300, 350) and (100, 150) in blocks[1]
    assert blocks[2][0] == (200, 250)
    assert blocks[3][0] == (500, 550) and len(blocks[3]) == 4


def test_out_of_order_queue_is_bounded() -> None:
    cfg = Config(timestamps=False, max_ooo_segments=2)
    a, b, _ = connect(cfg, cfg)
    base = b.rcv_nxt
    data = bytes(range(200))
    for lo in (50, 100, 150):  # the third cannot be held
        b.handle_segment(from_peer(b, base + lo, data[lo:lo + 50]), 1.0)
    assert b.stats.dropped_segments >= 1
    b.handle_segment(from_peer(b, base, data[:50]), 1.1)
    assert read_all(b, 1.1) == data[:150]
    b.handle_segment(from_peer(b, base + 150, data[150:]), 1.2)  # retransmitted
    assert read_all(b, 1.2) == data[150:]


# =========================================================== windows
def expected_shift(buffer: int) -> int:
    s = 0
    while (buffer >> s) > 0xFFFF:
        s += 1
    return min(s, 14)


@pytest.mark.parametrize("buffer", [8192, 0xFFFF, 0x10000, 1 << 20, 0xFFFF << 14])
def test_syn_offers_window_scale_from_buffer_and_unscaled_window(buffer: int) -> None:
    a = Connection(Config(receive_buffer=buffer), 1000, 2000, iss=1, now=0.0)
    a.connect(0.0)
    [syn] = a.segments_to_send(0.0)
    opts = dict(syn.options)
    assert opts[3] == expected_shift(buffer)
    assert syn.window == min(buffer, 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)


@pytest.mark.parametrize("buffer", [1 << 18, 1 << 20, 3_000_000])
def test_advertised_window_is_free_space_scaled_by_negotiated_shift(buffer: int) -> None:
    a, b, shake = connect(Config(), Config(receive_buffer=buffer))
    shift = expected_shift(buffer)
    synack = shake[1]
    assert dict(synack.options)[3] == shift
    assert synack.window == min(buffer, 0xFFFF)
    assert a.snd_wnd == synack.window  # from the SYN-ACK: unscaled
    a.send(b"d" * 40_000, 1.0)
    unread = 0
    t = 1.0
    edge = 0
    for _ in range(30):
        deliver(a, b, t)
        t += 0.05
        a.handle_timer(t)
        b.handle_timer(t)
        for r in deliver(b, a, t):
            unread = b.readable
            # Rounded up to the 2**shift grid, but an edge already past the
            # free space is rounded down, not up again from each new RCV.NXT
            # (which crept a grid step per ACK): within a step of the free
            # space, and moving left by less than a step (RFC 7323 appendix F).
            step = 1 << shift
            assert -step < (r.window << shift) - (buffer - unread) < step
            assert a.snd_wnd == r.window << shift  # the peer scales it back
            assert r.ack + (r.window << shift) > edge - step
            edge = r.ack + (r.window << shift)
    assert unread == 40_000


def test_window_is_free_space_and_reopens_when_read() -> None:
    cfg_b = Config(receive_buffer=8192, delayed_ack=0.0)
    a, b, _ = connect(Config(autocork=0.0), cfg_b)  # all 3000 bytes at once
    a.send(b"x" * 3000, 1.0)
    deliver(a, b, 1.0)
    acks = deliver(b, a, 1.0)
    assert acks[-1].window == 8192 - 3000
    a.send(b"y" * 5192, 1.1)  # exactly the window that is left
    deliver(a, b, 1.1)
    acks = deliver(b, a, 1.1)
    assert acks[-1].window == 0 and b.readable == 8192
    assert a.snd_wnd == 0
    a.send(b"z" * 100, 1.1)
    assert a.segments_to_send(1.1) == []  # nothing beyond a zero window
    assert read_all(b, 1.2) == b"x" * 3000 + b"y" * 5192
    [update] = b.segments_to_send(1.2)  # window update, no data needed
    assert update.window == 8192 and update.payload == b""


def test_a_reader_that_keeps_up_sends_no_window_updates() -> None:
    """A window update only when it at least doubles what the peer may still
    send (Linux's tcp_cleanup_rbuf); a reader that keeps up leaves the window
    to the next ACK.  An update per read doubled the ACKs of a bulk transfer."""
    cfg_b = Config(receive_buffer=64 * 1024, delayed_ack=0.0)
    a, b, _ = connect(Config(autocork=0.0, initial_window=100), cfg_b)
    room = a.mss - 12
    a.send(b"x" * (4 * room), 1.0)
    deliver(a, b, 1.0)
    deliver(b, a, 1.0)  # the ACKs
    read_all(b, 1.0)  # 4 segments read; the peer may still send 60 KiB of 64
    assert not b.ack_due and b.segments_to_send(1.0) == []
    a.send(b"y" * (64 * 1024), 1.1)  # fill the window: the peer may send nothing more
    deliver(a, b, 1.1)
    deliver(b, a, 1.1)
    assert a.snd_wnd < 8 * 1024  # under an eighth of the buffer left
    b.receive(3 * room, 1.2)  # that would not double it
    assert not b.ack_due
    read_all(b, 1.2)  # this does
    assert b.ack_due
    [update] = b.segments_to_send(1.2)
    a.handle_segment(update, 1.2)
    assert a.snd_wnd >= 56 * 1024


def test_a_window_grown_by_a_quarter_of_the_buffer_is_advertised() -> None:
    """After a burst the ACKs advertise a window cut by unread data; reading
    it reopens a quarter of a small buffer, short of doubling what the peer
    may still send.  Without an update the sender's next flight is the cut
    window (a 32 KiB buffer over 20 ms ramped up 10-26 % slower)."""
    cfg_b = Config(receive_buffer=32 * 1024)
    a, b, _ = connect(Config(autocork=0.0), cfg_b)
    a.send(b"x" * 14400, 1.0)  # the initial window: ten segments
    deliver(a, b, 1.0)
    [ack] = deliver(b, a, 1.0)[-1:]
    usable = ack.window << b._rcv_wscale
    assert usable < 32 * 1024 - 14000  # cut by what is not read yet
    assert read_all(b, 1.001) == b"x" * 14400
    assert 14400 < usable and b.ack_due  # no doubling, but a quarter of the buffer


def test_a_window_update_opens_the_senders_window_and_is_no_duplicate_ack() -> None:
    """Window updates take the fast path (they are every other ACK when
    segments are large); one with an unchanged window still counts as a
    duplicate ACK, which only the full path counts."""
    cfg_b = Config(receive_buffer=8192, delayed_ack=0.0)
    a, b, _ = connect(Config(autocork=0.0), cfg_b)
    a.send(b"x" * 8192, 1.0)
    deliver(a, b, 1.0)
    deliver(b, a, 1.0)
    assert a.snd_wnd == 0
    a.send(b"z" * 100, 1.0)
    assert read_all(b, 1.1) == b"x" * 8192
    full_path = a._on_synchronized
    slow: list[Segment] = []
    a._on_synchronized = lambda seg, now: (slow.append(seg), full_path(seg, now))
    [update] = deliver(b, a, 1.1)
    assert update.ack == a.snd_una & MASK and update.window == 8192
    assert a.snd_wnd == 8192 and a._dupacks == 0 and slow == []
    [more] = a.segments_to_send(1.1)
    assert more.payload == b"z" * 100
    a.handle_segment(update, 1.2)  # the same ACK again, window unchanged: a duplicate
    assert a._dupacks == 1 and slow == [update]


def test_no_scaling_unless_both_offer() -> None:
    a, b, shake = connect(Config(receive_buffer=1 << 20), Config(window_scale=False))
    syn, synack, _ = shake
    assert 3 in dict(syn.options) and 3 not in dict(synack.options)
    a.send(b"x" * 100, 1.0)
    [d] = a.segments_to_send(1.0)
    assert d.window == 0xFFFF  # capped, unscaled
    b.handle_segment(d, 1.0)
    b.handle_timer(2.0)
    [r] = b.segments_to_send(2.0)
    a.handle_segment(r, 2.0)
    assert a.snd_wnd == r.window  # B's window is not shifted either


def test_window_scale_option_above_14_is_treated_as_14() -> None:
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    b.listen()
    b.handle_segment(Segment(1000, 2000, 77, 0, SYN, 100, 0, ((2, 1452), (3, 15))), 0.0)
    b.segments_to_send(0.0)
    b.handle_segment(Segment(1000, 2000, 78, 5001, ACK, 3), 0.1)
    assert b.state == "ESTABLISHED"
    assert b.snd_wnd == 3 << 14


def test_advertised_right_edge_retracts_by_less_than_a_scale_step() -> None:
    """RFC 9293 3.8.6.2.2 / SHLD-14: do not shrink the window; but on the 2**shift
    grid an edge that never moves left creeps up to a step per ACK (RFC 7323 2.4,
    appendix F), so an edge past the free space is rounded down instead, as
    Linux does with tcp_shrink_window: it moves left by less than one step."""
    a, b, _ = connect(Config(nodelay=True), Config(receive_buffer=1 << 20, delayed_ack=0.0))
    shift = expected_shift(1 << 20)
    assert shift > 0
    edges = []
    t = 1.0
    for _ in range(12):
        a.send(b"x" * 7, t)  # odd sizes: RCV.NXT leaves the 2**shift grid
        deliver(a, b, t)
        for r in deliver(b, a, t):
            edges.append(r.ack + (r.window << shift))
        t += 0.1
    assert len(edges) == 12
    assert all(later > earlier - (1 << shift) for earlier, later in zip(edges, edges[1:], strict=False))
    assert max(edges) - min(edges) < 1 << shift  # no creep: b never read anything


# =============================================================== MSS
def test_mss_negotiated_from_both_max_datagrams() -> None:
    a, b, shake = connect(Config(max_datagram=1472), Config(max_datagram=600))
    syn, synack, _ = shake
    assert dict(syn.options)[2] == 1452 and dict(synack.options)[2] == 580
    assert a.mss == b.mss == 580
    a.send(b"a" * 5000, 1.0)
    b.send(b"b" * 5000, 1.0)
    for sender in (a, b):
        segs = [s for s in sender.segments_to_send(1.0) if s.payload]
        sender.handle_timer(1.001)  # the autocorked tail
        segs += [s for s in sender.segments_to_send(1.001) if s.payload]
        sizes = [len(s.payload) for s in segs]
        assert max(sizes) == 580 - 12  # room left by the timestamp option
        assert all(wire_size(s) <= 600 for s in segs)
        assert sum(sizes) == 5000


def test_full_segments_fill_the_datagram_exactly() -> None:
    for ts in (True, False):
        cfg = Config(timestamps=ts)
        a, _, _ = connect(cfg, cfg)
        a.send(b"z" * 10_000, 1.0)
        segs = a.segments_to_send(1.0)
        assert wire_size(segs[0]) == 1472
        assert all(wire_size(s) <= 1472 for s in segs)


def test_mss_from_max_datagram_argument() -> None:
    a = Connection(Config(), 1000, 2000, iss=1, now=0.0, max_datagram=1452)  # IPv6 path
    a.connect(0.0)
    [syn] = a.segments_to_send(0.0)
    assert dict(syn.options)[2] == 1432


def test_mss_defaults_to_536_without_option() -> None:
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    b.listen()
    b.handle_segment(Segment(1000, 2000, 77, 0, SYN, 65535), 0.0)
    [synack] = b.segments_to_send(0.0)
    # Nothing offered that was not asked for, and no larger than the 20-byte
    # SYN from an unvalidated address (no amplification): no options at all.
    assert synack.options == ()
    b.handle_segment(Segment(1000, 2000, 78, 5001, ACK, 65535), 0.1)
    b.send(b"q" * 3000, 0.2)
    sizes = [len(s.payload) for s in b.segments_to_send(0.2)]
    b.handle_timer(0.201)  # the autocorked tail
    sizes += [len(s.payload) for s in b.segments_to_send(0.201)]
    assert max(sizes) == 536 and sum(sizes) == 3000


@pytest.mark.parametrize("ts", [True, False], ids=["timestamps", "no-timestamps"])
def test_data_with_sack_blocks_still_fits_max_datagram(ts: bool) -> None:
    cfg = Config(timestamps=ts)
    a, b, _ = connect(cfg, cfg)
    base = b.rcv_nxt
    opts = ((8, (1000, 0)),) if ts else ()  # A's TSval at t=1.0 (ts_offset=0)
    for lo in (1000, 3000, 5000):  # B holds three out-of-order ranges from A
        b.handle_segment(from_peer(b, base + lo, b"h" * 100, options=opts), 1.0)
    b.segments_to_send(1.0)
    b.send(b"r" * 20_000, 1.1)
    segs = [s for s in b.segments_to_send(1.1) if s.payload]
    assert segs and all(5 in dict(s.options) for s in segs)
    assert max(wire_size(s) for s in segs) <= cfg.max_datagram


# ============================================================== Nagle
def test_nagle_holds_small_segment_until_ack() -> None:
    cfg = Config(nodelay=False, delayed_ack=0.04)
    a, b, _ = connect(cfg, cfg)
    a.send(b"first", 1.0)
    [s1] = a.segments_to_send(1.0)
    assert s1.payload == b"first"
    a.send(b"second", 1.01)
    a.send(b"third", 1.02)
    assert a.segments_to_send(1.02) == []  # small data waits while "first" is unacked
    b.handle_segment(s1, 1.05)
    b.handle_timer(1.09)
    [ack] = deliver(b, a, 1.09)
    assert ack.ack == s1.seq + len(s1.payload)
    [s2] = a.segments_to_send(1.09)
    assert s2.payload == b"secondthird"  # coalesced into one segment


def test_nagle_lets_full_segments_through() -> None:
    cfg = Config(nodelay=False)
    a, _, _ = connect(cfg, cfg)
    room = a.mss - 12
    a.send(b"s", 1.0)
    assert len(a.segments_to_send(1.0)) == 1
    a.send(b"F" * room + b"tail", 1.0)
    segs = a.segments_to_send(1.0)
    assert [len(s.payload) for s in segs] == [room]  # the full one goes, the tail waits


def test_nodelay_sends_small_segments_at_once() -> None:
    a, _, _ = connect(Config(nodelay=True), Config())
    a.send(b"first", 1.0)
    a.send(b"second", 1.0)
    assert [s.payload for s in a.segments_to_send(1.0)] == [b"firstsecond"]
    a.send(b"third", 1.01)
    assert [s.payload for s in a.segments_to_send(1.01)] == [b"third"]


# ============================================================== autocork
def test_autocork_holds_runt_behind_two_full_segments_until_deadline() -> None:
    a, _, _ = connect(Config(autocork=0.0002), Config())
    room = a.mss - 12
    a.send(b"F" * (2 * room) + b"tail", 1.0)
    assert [len(s.payload) for s in a.segments_to_send(1.0)] == [room, room]
    assert a.timer() == pytest.approx(1.0002)
    a.handle_timer(1.0001)
    assert a.segments_to_send(1.0001) == []  # not yet
    a.handle_timer(1.0002)
    assert [s.payload for s in a.segments_to_send(1.0002)] == [b"tail"]
    assert a.timer() is not None and a.timer() > 1.0002  # the RTO, no cork timer left


def test_autocork_next_write_fills_the_held_runt() -> None:
    a, _, _ = connect(Config(autocork=0.0002), Config())
    room = a.mss - 12
    a.send(b"F" * (2 * room) + b"x" * 100, 1.0)
    assert len(a.segments_to_send(1.0)) == 2
    a.send(b"y" * (room - 100), 1.0001)
    [seg] = a.segments_to_send(1.0001)
    assert seg.payload == b"x" * 100 + b"y" * (room - 100)  # one full segment, no runt


def test_autocork_never_delays_a_lone_small_write_or_a_fin() -> None:
    a, _, _ = connect(Config(autocork=0.0002), Config())
    room = a.mss - 12
    a.send(b"ping", 1.0)
    assert [s.payload for s in a.segments_to_send(1.0)] == [b"ping"]  # nothing in flight
    a.send(b"F" * room + b"tail", 1.0)  # one full segment in flight: the tail goes too
    assert [len(s.payload) for s in a.segments_to_send(1.0)] == [room, 4]
    a.send(b"F" * (2 * room) + b"last", 1.0)
    a.shutdown(1.0)  # the FIN follows the tail at once
    segs = a.segments_to_send(1.0)
    assert [len(s.payload) for s in segs if s.payload] == [room, room, 4]
    assert segs[-1].flags & FIN


def test_autocork_a_writer_with_more_holds_the_runt_without_a_timer() -> None:
    """send(more=True): the writer is blocked on buffer space with more to
    write, so with many segments out the runt waits for it, not for a timer
    (which, in bulk transfers, woke the endpoint to send a runt per few writes)."""
    a, _, _ = connect(Config(autocork=0.0002), Config())
    room = a.mss - 12
    a.send(b"F" * (8 * room) + b"x" * 100, 1.0, more=True)
    assert [len(s.payload) for s in a.segments_to_send(1.0)] == [room] * 8
    assert a.timer() is not None and a.timer() >= 1.002  # the tail-loss probe: no cork timer
    a.handle_timer(1.001)
    assert a.segments_to_send(1.001) == []  # still held
    a.send(b"", 1.001)  # the writer gave up (cancelled): the autocork timer applies
    assert a.segments_to_send(1.001) == []
    assert a.timer() == pytest.approx(1.0012)
    a.handle_timer(1.0012)
    assert [s.payload for s in a.segments_to_send(1.0012)] == [b"x" * 100]


def test_autocork_more_with_few_segments_out_keeps_the_timer() -> None:
    """With a small send buffer (two segments out) holding the runt for an
    ACK would idle a third of the path for a round trip: the timer applies."""
    a, _, _ = connect(Config(autocork=0.0002, send_buffer=4096), Config())
    room = a.mss - 12
    a.send(b"F" * (2 * room) + b"x" * 100, 1.0, more=True)
    assert len(a.segments_to_send(1.0)) == 2
    assert a.timer() == pytest.approx(1.0002)
    a.handle_timer(1.0002)
    assert [s.payload for s in a.segments_to_send(1.0002)] == [b"x" * 100]


def test_autocork_a_writer_that_blocks_later_holds_the_runt_past_its_timer() -> None:
    """The write ended on a runt (timer armed); the next write finds no room
    and says more is coming with nothing: the runt waits for it even when
    the timer fires."""
    a, _, _ = connect(Config(autocork=0.0002), Config())
    room = a.mss - 12
    a.send(b"F" * (8 * room) + b"x" * 100, 1.0)
    assert len(a.segments_to_send(1.0)) == 8
    assert a.timer() == pytest.approx(1.0002)
    a.send(b"", 1.0001, more=True)
    a.handle_timer(1.0003)
    assert a.segments_to_send(1.0003) == []
    assert a.timer() is not None and a.timer() >= 1.002  # the cork timer is gone


def test_autocork_zero_sends_runts_at_once() -> None:
    a, _, _ = connect(Config(autocork=0.0), Config())
    room = a.mss - 12
    a.send(b"F" * (2 * room) + b"tail", 1.0)
    assert [len(s.payload) for s in a.segments_to_send(1.0)] == [room, room, 4]


# ============================================================== FIN on data
def test_fin_rides_on_the_last_data_segment_and_is_resent_with_it() -> None:
    a, b, _ = connect(Config(timestamps=False), Config(timestamps=False))
    a.send(b"request", 1.0)
    a.shutdown(1.0)  # before the data went out: one segment carries both
    [seg] = a.segments_to_send(1.0)
    assert seg.payload == b"request" and seg.flags & FIN
    assert a.state == "FIN_WAIT_1"
    # lost: the retransmission carries the FIN again
    t = a.timer()
    assert t is not None
    a.handle_timer(t)
    [again] = a.segments_to_send(t)
    assert again.payload == b"request" and again.flags & FIN and again.seq == seg.seq
    b.handle_segment(again, 3.0)
    assert b.eof_received and b.state == "CLOSE_WAIT" and read_all(b, 3.0) == b"request"
    [ack] = b.segments_to_send(3.0)
    assert ack.ack == (seg.seq + len(b"request") + 1) & MASK
    a.handle_segment(ack, 3.0)
    assert a.state == "FIN_WAIT_2"


def test_fin_only_on_the_last_of_several_segments_even_when_the_tail_waits() -> None:
    cfg = Config(timestamps=False, receive_buffer=4096, delayed_ack=0.0)
    a, b, _ = connect(Config(timestamps=False, autocork=0.0), cfg)
    a.send(b"w" * 6000, 1.0)  # more than the peer's window: the tail waits
    a.shutdown(1.0)
    sent: list[Segment] = []
    got = b""
    t = 1.0
    while not b.eof_received and t < 2.0:
        out = a.segments_to_send(t)
        sent += out
        for s in out:
            b.handle_segment(s, t)
        got += read_all(b, t)
        deliver(b, a, t)  # ACKs and window updates
        t += 0.01
    assert got == b"w" * 6000 and b.eof_received
    assert len(sent) > 3 and sum(len(s.payload) for s in sent) == 6000  # nothing resent
    assert [bool(s.flags & FIN) for s in sent] == [False] * (len(sent) - 1) + [True]
    assert sent[-1].payload  # the FIN came on the data, not alone


def test_full_segment_with_fin_is_probed_and_resent_whole() -> None:
    """A FIN on a segment whose payload fills the room: the tail loss probe and
    the retransmission after a timeout both carry all of it, FIN included (the
    FIN takes a sequence number but no room)."""
    a, b, _ = connect(Config(timestamps=False), Config(timestamps=False))
    room = a.mss
    a.send(b"z" * room, 1.0)
    a.shutdown(1.0)
    [seg] = a.segments_to_send(1.0)  # lost
    assert len(seg.payload) == room and seg.flags & FIN
    for kind in ("probe", "timeout"):
        out: list[Segment] = []
        while not out:  # (a RACK timer in between sends nothing)
            t = a.timer()
            assert t is not None and t < 3.0
            a.handle_timer(t)
            out = a.segments_to_send(t)
        [again] = out  # lost too, the first time
        assert (again.seq, len(again.payload)) == (seg.seq, room) and again.flags & FIN, kind
    assert a.stats.tail_loss_probes == 1 and a.stats.timeouts == 1
    b.handle_segment(again, 5.0)
    assert b.eof_received and read_all(b, 5.0) == b"z" * room


@pytest.mark.parametrize("ts", [True, False], ids=["timestamps", "no-timestamps"])
def test_tail_loss_probe_leaves_room_for_sack_blocks(ts: bool) -> None:
    a, b, _ = connect(Config(timestamps=ts), Config(timestamps=ts))
    opts = ((8, (b._ts_now(0.5), a._ts_now(0.5))),) if ts else ()
    # A hole in what a receives: its segments carry a SACK block from now on.
    a.handle_segment(from_peer(a, a.rcv_nxt + 100, b"y" * 10, options=opts), 0.5)
    a.segments_to_send(0.5)
    a.send(b"x" * 5000, 1.0)
    a.shutdown(1.0)
    segs = a.segments_to_send(1.0)
    assert all(wire_size(s) <= 1472 for s in segs)
    t = a.timer()
    assert t is not None
    a.handle_timer(t)
    [probe] = a.segments_to_send(t)
    assert 5 in dict(probe.options) and probe.flags & FIN
    assert wire_size(probe) <= 1472


def test_fin_is_taken_at_a_zero_window() -> None:
    """The reader has not read and the window is 0: a FIN at RCV.NXT needs no
    buffer space, so it is accepted and acknowledged at once instead of waiting
    for the peer's backed-off retransmissions until the reader drains."""
    cfg = Config(timestamps=False, receive_buffer=4096, delayed_ack=0.0)
    a, b, _ = connect(Config(timestamps=False, autocork=0.0), cfg)
    a.send(b"f" * 4096, 1.0)
    deliver(a, b, 1.0)
    [ack] = deliver(b, a, 1.0)
    assert ack.window == 0 and b.readable == 4096
    a.shutdown(1.1)
    [fin] = deliver(a, b, 1.1)
    assert fin.flags & FIN and not fin.payload
    assert b.eof_received and b.state == "CLOSE_WAIT"
    [fin_ack] = b.segments_to_send(1.1)
    assert fin_ack.ack == (fin.seq + 1) & MASK and fin_ack.window == 0
    assert read_all(b, 1.2) == b"f" * 4096


def test_reordered_duplicate_acks_pass_paws_for_their_sack_blocks() -> None:
    """Dup ACKs overtaken by later ones carry older timestamps: PAWS must not
    drop them as old duplicates (Linux's tcp_disordered_ack), or their SACK
    information is lost and each draws a rate-limited challenge ACK."""
    a, b, _ = connect(Config(autocork=0.0), Config())
    room = a.mss - 12
    a.send(b"r" * (5 * room), 1.0)
    segs = a.segments_to_send(1.0)
    assert len(segs) == 5
    acks = []
    for i, seg in enumerate(segs[1:]):  # the first is lost
        t = 1.0 + 0.005 * (i + 1)  # later ACKs, later timestamps
        b.handle_segment(seg, t)
        acks += b.segments_to_send(t)
    assert len(acks) == 4 and all(5 in dict(ack.options) for ack in acks)
    t = 1.03
    for ack in reversed(acks):  # the newest first: the rest arrive "old"
        a.handle_segment(ack, t)
    assert a.stats.dropped_segments == 0 and a.stats.challenge_acks_sent == 0
    [rtx] = [s for s in a.segments_to_send(t) if s.payload]
    assert rtx.seq == segs[0].seq  # the hole, found from the SACK blocks


# ============================================================== PAWS
def _paws_pair() -> tuple[Connection, Connection, int]:
    """Established with timestamps; returns B's TS.Recent (A's last TSval)."""
    a, b, _ = connect(Config(), Config(delayed_ack=0.0))
    a.send(b"fresh", 2.0)
    [s] = deliver(a, b, 2.0)
    b.segments_to_send(2.0)
    assert read_all(b, 2.0) == b"fresh"
    return a, b, ts_of(s)[0]


def test_paws_drops_old_timestamp_and_acks() -> None:
    a, b, recent = _paws_pair()
    rcv_nxt = b.rcv_nxt
    dropped = b.stats.dropped_segments
    old = from_peer(b, rcv_nxt, b"stale", options=((8, ((recent - 1) & MASK, 0)),))
    b.handle_segment(old, 2.5)
    assert b.readable == 0 and b.rcv_nxt == rcv_nxt
    assert b.stats.dropped_segments == dropped + 1
    [r] = b.segments_to_send(2.5)
    assert (r.flags & (SYN | FIN | RST), r.ack, r.seq) == (0, rcv_nxt & MASK, b.snd_nxt & MASK)
    assert ts_of(r)[1] == recent  # TS.Recent was not moved back


def test_paws_accepts_equal_and_wrapped_timestamps() -> None:
    # A's timestamp clock starts 100 ms before the 2**32 wrap.
    a, b, _ = connect(Config(), Config(delayed_ack=0.0), ts_a=MOD - 100)
    a.send(b"before", 0.05)
    [s] = deliver(a, b, 0.05)
    assert ts_of(s)[0] > 0xFFFFFF00
    b.segments_to_send(0.05)
    a.send(b"after", 0.3)
    [s] = deliver(a, b, 0.3)
    assert ts_of(s)[0] < 1000  # wrapped: still newer, modulo 2**32
    assert read_all(b, 0.3) == b"beforeafter"
    # The same TSval again is not "older" either.
    again = from_peer(b, b.rcv_nxt, b"same", options=((8, (ts_of(s)[0], 0)),))
    b.handle_segment(again, 0.31)
    assert read_all(b, 0.31) == b"same"


def test_paws_does_not_apply_to_rst() -> None:
    a, b, recent = _paws_pair()
    rst = from_peer(b, b.rcv_nxt, b"", RST, ack=0, options=((8, ((recent - 5) & MASK, 0)),))
    b.handle_segment(rst, 2.5)
    assert b.state == "CLOSED"
    assert any(isinstance(e, ev.ConnectionReset) for e in b.events())


# ====================================================== ISN (RFC 6528)
SECRET = b"k" * 16
L4, R4 = ("10.0.0.1", 1000), ("10.0.0.2", 2000)


def test_isn_is_clock_plus_keyed_hash() -> None:
    from rtcp.core.isn import initial_sequence_number as isn

    base = isn(SECRET, L4, R4, 1.0)
    assert 0 <= base <= MASK
    assert isn(SECRET, L4, R4, 1.0) == base  # F is a function of the 4-tuple and key
    # M ticks every 4 microseconds: 250 000 per second, modulo 2**32.
    assert (isn(SECRET, L4, R4, 2.0) - base) & MASK == 250_000
    assert (isn(SECRET, L4, R4, 1.5) - base) & MASK == 125_000
    # After ~4.77 hours M wraps, and so does the ISN (no overflow past 32 bits).
    later = isn(SECRET, L4, R4, 1.0 + MOD / 250_000)
    assert later == base


def test_isn_unpredictable_across_tuples_and_keys() -> None:
    from rtcp.core.isn import initial_sequence_number as isn

    values = {
        isn(SECRET, L4, R4, 1.0),
        isn(SECRET, L4, ("10.0.0.2", 2001), 1.0),
        isn(SECRET, ("10.0.0.1", 1001), R4, 1.0),
        isn(SECRET, R4, L4, 1.0),  # the reverse direction is a different connection
        isn(b"other-key" * 2, L4, R4, 1.0),
    }
    assert len(values) == 5


def test_timestamp_offset_per_address_pair() -> None:
    from rtcp.core.isn import timestamp_offset

    off = timestamp_offset(SECRET, L4, R4)
    assert 0 <= off <= MASK
    assert timestamp_offset(SECRET, L4, R4) == off
    assert timestamp_offset(SECRET, L4, ("10.0.0.2", 2001)) != off
    assert timestamp_offset(b"x" * 16, L4, R4) != off


# ======================================================= ICMP unreachable
def test_unreachable_refuses_only_a_syn_sent_connection() -> None:
    a = Connection(Config(), 1000, 2000, iss=1, now=0.0)
    a.connect(0.0)
    a.on_unreachable(0.1)
    assert a.state == "CLOSED"
    assert any(isinstance(e, ev.ConnectionReset) and e.refused for e in a.events())
    a, b, _ = connect()
    a.on_unreachable(1.0)  # a soft error once synchronized
    assert a.state == "ESTABLISHED" and a.segments_to_send(1.0) == []


def test_unreachable_must_quote_a_sequence_number_we_sent_lately() -> None:
    """RFC 5927 4.1: a report naming a segment we never sent (or long ago) is
    ignored: a blind forger must guess the window as well as the ports."""
    a = Connection(Config(), 1000, 2000, iss=0xFFFFFFFF, now=0.0)  # SND.NXT wraps
    a.connect(0.0)
    for seq in (0x7FFFFFFF, 5, 0xFFFFFFF0):
        a.on_unreachable(0.1, seq)
        assert a.state == "SYN_SENT", seq
    a.on_unreachable(0.1, 0xFFFFFFFF)  # our SYN
    assert a.state == "CLOSED"
    def sending() -> Connection:
        conn, _, _ = connect(iss_a=1000)
        conn.send(b"x" * 3000, 1.0)
        assert conn.segments_to_send(1.0) and conn.snd_una == 1001 < conn.snd_nxt
        return conn

    a = sending()
    for seq in (900, 999, a.snd_nxt + 1, a.snd_nxt + 100_000):  # before SND.UNA - 1, beyond SND.NXT
        a.on_unreachable(1.0, seq)
        assert a._icmp_probe_deadline is None, seq
    for seq in (1000, 1001, a.snd_nxt):  # a probe, the first byte, SND.NXT (a bare ACK)
        fresh = sending()
        fresh.on_unreachable(1.0, seq)
        assert fresh._icmp_probe_deadline is not None, seq


def test_unreachable_drops_a_half_open_entry_that_quotes_our_isn() -> None:
    """A SYN-ACK answered by "port unreachable" (the client is gone, or the SYN's
    source was spoofed) frees its syn_backlog place at once, as Linux does; only
    a report that quotes the SYN-ACK (our unguessable ISN) does."""
    for seq, dropped in ((None, False), (5000 - 1, False), (5000 + 1, False), (5000, True)):
        a = Connection(Config(), 1000, 2000, iss=1000, now=0.0)
        b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
        b.listen()
        a.connect(0.0)
        deliver(a, b, 0.0)
        assert b.segments_to_send(0.0)[0].seq == 5000 and b.state == "SYN_RECEIVED"
        b.on_unreachable(0.1, seq)
        assert (b.state == "CLOSED") == dropped, seq


def _probe_round(a: Connection, now: float) -> Segment:
    """Fire A's ICMP probe timer; return the probe (a keepalive-style ACK)."""
    t = a.timer()
    assert t is not None and now <= t <= now + 1.0
    a.handle_timer(t)
    [probe] = a.segments_to_send(t)
    assert probe.flags == ACK and not probe.payload and probe.seq == (a.snd_una - 1) & MASK
    return probe


def test_repeated_unreachable_with_a_silent_peer_resets() -> None:
    """The peer's process is gone: each probe draws another report, none an answer."""
    a, _b, _ = connect()
    now = 1.0
    for _ in range(5):
        a.on_unreachable(now)  # a burst of reports counts as one round
    probe = _probe_round(a, now)
    a.on_unreachable(now + 0.3)  # the probe's own report
    assert a.state == "ESTABLISHED"
    _probe_round(a, now + 0.3)
    a.on_unreachable(now + 0.6)
    assert a.state == "CLOSED"
    assert isinstance(a.error, ev.ConnectionReset) and a.error.refused
    assert probe.ack == a.rcv_nxt & MASK


def test_forged_unreachable_cannot_reset_a_live_peer() -> None:
    """Reports between the peer's answers never add up: each answer clears them."""
    a, b, _ = connect()
    now = 1.0
    for _ in range(10):
        for _ in range(3):
            a.on_unreachable(now)
        probe = _probe_round(a, now)
        b.handle_segment(probe, now)
        [answer] = b.segments_to_send(now)  # the live peer answers the probe
        a.handle_segment(answer, now + 0.01)
        now += 0.5
    assert a.state == "ESTABLISHED" and a.error is None
    t = a.timer()  # the episode's check: the peer answered, so no probe and it ends
    assert t is not None
    a.handle_timer(t)
    assert a.segments_to_send(t) == [] and a.timer() is None


def test_a_lost_report_does_not_stop_the_probing() -> None:
    a, _b, _ = connect()
    a.on_unreachable(1.0)
    _probe_round(a, 1.0)  # its report is lost (ICMP is rate-limited, or dropped)
    probe = _probe_round(a, 1.2)  # probing goes on, RTO-doubled
    a.on_unreachable(2.0)
    _probe_round(a, 2.0)
    assert a.state == "ESTABLISHED"
    a.on_unreachable(3.0)  # three rounds with a report, none answered
    assert a.state == "CLOSED" and probe.flags == ACK


def test_an_inconclusive_episode_ends_and_old_reports_expire() -> None:
    """Two reported rounds, then silence: after its probes the episode ends, and a
    report an hour later starts afresh instead of completing the old count."""
    a, _b, _ = connect()
    a.on_unreachable(1.0)
    _probe_round(a, 1.0)
    a.on_unreachable(1.3)
    probes = 1
    while (t := a.timer()) is not None:
        a.handle_timer(t)
        probes += len(a.segments_to_send(t))
    assert probes == 6 and a.state == "ESTABLISHED"
    a.on_unreachable(3600.0)
    assert a.state == "ESTABLISHED" and a.timer() is not None



def test_delayed_ack_echoes_the_earliest_unacknowledged_timestamp() -> None:
    """RFC 7323 4.3 (2)/5.3 R3: an ACK covering several segments echoes the TSval of the
    first, so the measured RTT includes the time the ACK was held back."""
    a, b, _ = connect(Config(), Config(delayed_ack=0.2))
    room = a.mss - 12
    a.send(b"1" * room, 1.0)
    [s1] = a.segments_to_send(1.0)
    a.send(b"2" * room, 1.01)
    [s2] = a.segments_to_send(1.01)
    assert (ts_of(s1)[0], ts_of(s2)[0]) == (1000, 1010)
    b.handle_segment(s1, 1.05)
    assert b.segments_to_send(1.05) == []  # held back: first full segment
    b.handle_segment(s2, 1.06)
    [r] = b.segments_to_send(1.06)  # the second full segment is acked at once
    assert r.ack == (s2.seq + room) & MASK
    assert ts_of(r)[1] == 1000


def test_data_beyond_the_right_window_edge_is_trimmed() -> None:
    cfg = Config(receive_buffer=8192, timestamps=False)
    a, b, _ = connect(Config(timestamps=False), cfg)
    base = b.rcv_nxt
    data = bytes(random.Random(3).randbytes(10_000))
    b.handle_segment(from_peer(b, base, data), 1.0)
    assert read_all(b, 1.0) == data[:8192]
    assert b.rcv_nxt == base + 8192


# ============================================================== SYN cookies
def test_syn_cookie_round_trip_expiry_and_time_filter() -> None:
    from rtcp.core.cookies import PERIOD, check_cookie, make_cookie, may_be_cookie

    secret, peer, ports = b"k" * 16, ("10.0.0.1", 4000), (7, 4000)
    isn, mss = make_cookie(secret, peer, ports, 1234, 1460, now=100.0)
    assert mss == 1452  # the largest table entry not above the peer's MSS
    assert check_cookie(secret, peer, ports, 1234, isn, now=100.0 + PERIOD) == mss
    assert check_cookie(secret, peer, ports, 1234, isn, now=100.0 + 2 * PERIOD) is None  # expired
    assert check_cookie(secret, peer, ports, 1235, isn, now=100.0) is None  # other peer ISN
    assert check_cookie(secret, ("10.0.0.2", 4000), ports, 1234, isn, now=100.0) is None
    assert check_cookie(b"j" * 16, peer, ports, 1234, isn, now=100.0) is None
    assert may_be_cookie(isn, 100.0) and may_be_cookie(isn, 100.0 + PERIOD)
    assert not may_be_cookie(isn, 100.0 + 2 * PERIOD)
    passing = sum(may_be_cookie(v << 27, 100.0) for v in range(32))
    assert passing == 2  # the filter lets 2 of the 32 time values through


def test_send_counts_the_bytes_of_any_view_not_its_items() -> None:
    # len() of a 2-D or "i" memoryview counts rows or ints: sending such a view
    # must still queue (and deliver) exactly its bytes, in order.
    a, b, _ = connect()
    data = bytes(range(256)) * 40  # 10,240 bytes
    views = [memoryview(data).cast("B", (40, 256)),  # 2-D, C-contiguous
             memoryview(bytearray(data[:4000])).cast("i"),
             memoryview(data).cast("B", (80, 128))[::2],  # not contiguous
             array.array("i", data[:400])]
    expected = data + data[:4000] + b"".join(data[i * 128:(i + 1) * 128] for i in range(0, 80, 2)) \
        + data[:400]
    for v in views:
        assert a.send(v, 1.0) == memoryview(v).nbytes
    got = bytearray()
    now = 1.0
    for _ in range(200):
        deliver(a, b, now)
        deliver(b, a, now)
        got += b.receive(1 << 20, now)
        now += 0.05
        a.handle_timer(now)
        b.handle_timer(now)
        if len(got) >= len(expected):
            break
    assert bytes(got) == expected


def test_idle_longer_than_the_user_timeout_then_a_write_is_no_timeout() -> None:
    """The user timeout counted from the last ACK that moved SND.UNA: after
    99 s idle the first write's deadline was already past, and the live
    connection died at once (found by a cold review)."""
    a, b, _ = connect(Config(user_timeout=10.0), Config())
    a.send(b"x" * 100, 1.0)
    deliver(a, b, 1.0)
    b.handle_timer(1.1)
    deliver(b, a, 1.1)
    assert a.snd_una == a.snd_nxt
    a.send(b"y" * 100, 100.0)
    deliver(a, b, 100.0)
    assert a.timer() is not None and a.timer() > 100.0
    a.handle_timer(a.timer())
    assert a.state == "ESTABLISHED"


def test_a_zero_window_longer_than_the_user_timeout_then_reopened_is_no_timeout() -> None:
    """RFC 9293 3.8.6.1: a peer that answers every probe keeps the connection;
    the data sent once it reopens gets a fresh user timeout."""
    a, b, _ = connect(Config(user_timeout=10.0, autocork=0.0), Config(receive_buffer=8192))
    a.send(b"x" * 20000, 1.0)
    now = _fill_zero_window(a, b, 1.0)
    while now < 30.0:  # probes, each answered
        now = a.timer()
        a.handle_timer(now)
        deliver(a, b, now)
        b.handle_timer(now)
        deliver(b, a, now)
    assert a.state == "ESTABLISHED" and a.stats.window_probes > 3
    while b.readable:
        b.receive(1 << 20, now)
    deliver(b, a, now)  # the window reopens
    assert a.segments_to_send(now) and a.snd_nxt > a.snd_una
    a.handle_timer(max(now, a.timer()))
    assert a.state == "ESTABLISHED"


# ============================================ timers (a cold review)
def _fill_zero_window(a: Connection, b: Connection, now: float) -> float:
    for _ in range(20):
        deliver(a, b, now)
        b.handle_timer(now + 0.05)
        deliver(b, a, now + 0.05)
        now += 0.05
    assert a.snd_wnd == 0 and a.snd_una == a.snd_nxt and a.send_space < a.config.send_buffer
    return now


def test_zero_window_peer_that_vanishes_is_given_up() -> None:
    """A: data queued behind a zero window; B vanishes (no ACK, no ICMP).
    Persist probes go unanswered forever: no user timeout (SND.NXT == SND.UNA),
    no probe limit, so send_all() blocks for ever."""
    a, b, _ = connect(Config(user_timeout=10.0, autocork=0.0), Config(receive_buffer=8192))
    a.send(b"x" * 20000, 1.0)
    now = _fill_zero_window(a, b, 1.0)
    while now < 3600.0:  # B is gone: what A sends is lost
        now = a.timer()
        a.handle_timer(now)
        a.segments_to_send(now)
        if a.state == "CLOSED":
            break
    assert a.state == "CLOSED", (now, a.state, a.stats.window_probes)
    assert any(isinstance(e, ev.ConnectionTimedOut) for e in a.events())


def test_write_into_a_zero_window_after_long_idle_is_no_timeout() -> None:
    """The fix for the vanished zero-window peer must count from when probing
    started, not from the peer's last segment before an idle spell."""
    a, b, _ = connect(Config(user_timeout=10.0, autocork=0.0), Config(receive_buffer=8192))
    a.send(b"x" * 8192, 1.0)
    now = 1.0
    for _ in range(20):
        deliver(a, b, now)
        b.handle_timer(now + 0.05)
        deliver(b, a, now + 0.05)
        now += 0.05
    assert a.snd_wnd == 0 and a.snd_una == a.snd_nxt and a.send_space == a.config.send_buffer
    a.send(b"y" * 1000, 200.0)  # long after B's last segment
    assert not [s for s in a.segments_to_send(200.0) if s.payload]
    now = 200.0
    while now < 260.0:  # every probe answered
        now = a.timer()
        a.handle_timer(now)
        deliver(a, b, now)
        deliver(b, a, now)
        assert a.state == "ESTABLISHED", now


def test_orphan_with_a_slow_but_steady_reader_is_not_reset() -> None:
    """close() with data queued; the peer reads slowly but steadily (every ACK
    moves SND.UNA).  README: after aclose() gives up, "the endpoint keeps
    retransmitting until the user timeout, so the data still arrives".
    The orphan deadline is close() + 2 MSL + user_timeout regardless of progress."""
    a, b, _ = connect(Config(user_timeout=5.0, msl=1.0, autocork=0.0),
                      Config(receive_buffer=8192))
    data = bytes(range(256)) * 160  # 40 KiB
    assert a.send(data, 1.0) == len(data)
    a.close(1.0)  # orphaned: nobody will see an error
    got = bytearray()
    now, next_read = 1.0, 1.0
    while now < 100.0 and not b.eof_received and b.state != "CLOSED":
        for c in (a, b):
            t = c.timer()
            if t is not None and t <= now:
                c.handle_timer(now)
        deliver(a, b, now)
        if now >= next_read:  # 2 KB/s reader
            got += b.receive(1000, now)
            next_read = now + 0.5
        deliver(b, a, now)
        now = round(now + 0.01, 6)
    while b.readable:
        got += b.receive(1 << 20, now)
    assert b.error is None, (now, b.error, len(got))
    assert bytes(got) == data and b.eof_received


def test_keepalive_does_not_run_in_time_wait() -> None:
    """A retransmitted FIN reaching TIME_WAIT re-arms keepalive (_on_synchronized
    arms it for every SYNCHRONIZED state); the probe draws an RST from the peer,
    which has closed, and the RST ends TIME_WAIT early."""
    cfg = Config(keepalive_idle=5.0, keepalive_interval=1.0, msl=30.0)
    a, b, _ = connect(cfg, Config())
    a.shutdown(1.0)
    deliver(a, b, 1.0)            # A's FIN
    b.shutdown(1.0)
    deliver(b, a, 1.0)            # B's ACK + FIN -> A in TIME_WAIT
    assert a.state == "TIME_WAIT" and b.state == "LAST_ACK"
    a.segments_to_send(1.0)       # A's last ACK is lost
    b.handle_timer(b.timer())     # B retransmits its FIN
    deliver(b, a, 2.0)
    deliver(a, b, 2.0)            # A ACKs it again; B closes
    assert b.state == "CLOSED"
    now = 2.0
    while a.state == "TIME_WAIT":
        now = a.timer()
        a.handle_timer(now)
        for s in a.segments_to_send(now):
            b.handle_segment(s, now)     # B (closed) answers with RST
        deliver(b, a, now)
    assert a.stats.keepalives_sent == 0, (now, a.stats.keepalives_sent)
    assert now >= 2.0 + 2 * cfg.msl


def test_keepalive_after_a_slow_handshake_is_not_due_at_once() -> None:
    """The active opener's _last_recv_time is never set by the SYN-ACK, so the
    keepalive deadline is creation + idle: a handshake slower than the idle
    time sends a probe the moment it completes."""
    cfg = Config(keepalive_idle=2.0)
    a = Connection(cfg, 1000, 2000, iss=1000, now=0.0, ts_offset=0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0, ts_offset=0)
    b.listen()
    a.connect(0.0)
    a.segments_to_send(0.0)       # SYN lost
    a.handle_timer(1.0)
    a.segments_to_send(1.0)       # lost again
    a.handle_timer(3.0)           # third SYN gets through
    deliver(a, b, 3.0)
    deliver(b, a, 3.0)
    deliver(a, b, 3.0)
    assert a.state == "ESTABLISHED"
    assert a.timer() is None or a.timer() >= 3.0 + cfg.keepalive_idle, a.timer()


# ------------------------------------------------- the handshake's held ACK
def _synack_for(a: Connection, b: Connection, now: float) -> None:
    """A has sent its SYN (connect); B answers it; A takes the SYN-ACK at ``now``."""
    b.listen()
    deliver(a, b, 0.0)
    [synack] = b.segments_to_send(0.0)
    a.handle_segment(synack, now)
    assert a.state == "ESTABLISHED"


def test_held_handshake_ack_rides_on_the_first_data() -> None:
    a = Connection(Config(), 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    a.connect(0.0, hold_ack=True)
    _synack_for(a, b, 0.01)
    assert a.segments_to_send(0.01) == []  # held, not sent
    assert a.timer() == pytest.approx(0.01 + HANDSHAKE_ACK_HOLD)
    a.send(b"GET /", 0.0105)
    [seg] = deliver(a, b, 0.0105)
    assert seg.flags & ACK and seg.ack == 5001 and seg.payload == b"GET /"
    assert b.state == "ESTABLISHED" and b.readable == 5
    assert a.timer() != pytest.approx(0.01 + HANDSHAKE_ACK_HOLD)  # nothing held any more


def test_held_handshake_ack_goes_alone_when_the_hold_ends() -> None:
    a = Connection(Config(), 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    a.connect(0.0, hold_ack=True)
    _synack_for(a, b, 0.01)
    a.handle_timer(0.01 + HANDSHAKE_ACK_HOLD)
    [ack] = deliver(a, b, 0.01 + HANDSHAKE_ACK_HOLD)
    assert ack.flags == ACK and not ack.payload and b.state == "ESTABLISHED"


def test_release_held_ack_sends_it_at_once() -> None:
    # The application waits for the peer to speak first: nothing will carry it.
    a = Connection(Config(), 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    a.connect(0.0, hold_ack=True)
    _synack_for(a, b, 0.01)
    assert a.ack_held and a.release_held_ack() and not a.ack_held
    [ack] = deliver(a, b, 0.01)
    assert ack.flags == ACK and b.state == "ESTABLISHED"
    assert not a.release_held_ack()  # only once


@pytest.mark.parametrize("case", ["no-hold", "delayed_ack=0", "data-on-syn-ack"])
def test_handshake_ack_is_not_held(case: str) -> None:
    cfg = Config(delayed_ack=0) if case == "delayed_ack=0" else Config()
    a = Connection(cfg, 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    a.connect(0.0, hold_ack=case != "no-hold")
    if case == "data-on-syn-ack":
        b.listen()
        deliver(a, b, 0.0)
        [synack] = b.segments_to_send(0.0)
        a.handle_segment(dataclasses.replace(synack, payload=b"hi"), 0.01)
        assert a.readable == 2
    else:
        _synack_for(a, b, 0.01)
    [ack] = a.segments_to_send(0.01)
    assert ack.flags == ACK and ack.ack == (5003 if case == "data-on-syn-ack" else 5001)
    assert not a.release_held_ack()


def test_a_keepalive_probe_does_not_swallow_the_held_handshake_ack() -> None:
    """A keepalive probe (seq = SND.UNA - 1) due during the hold goes out and
    clears the held ACK, but the server in SYN_RECEIVED finds the probe
    unacceptable and ignores its ACK field: the handshake's ACK is never sent,
    and the server stays half-open until its SYN-ACK retransmission (1 s)."""
    a = Connection(Config(keepalive_idle=0.001), 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    b.listen()
    a.connect(0.0, hold_ack=True)
    deliver(a, b, 0.0)
    [synack] = b.segments_to_send(0.0)
    a.handle_segment(synack, 0.01)
    assert a.state == "ESTABLISHED"
    t = 0.01
    # Run A's timers for 50 ms (well past the 2 ms hold), delivering what it sends.
    while t < 0.06:
        nxt = a.timer()
        if nxt is None or nxt > 0.06:
            break
        t = max(t, nxt)
        a.handle_timer(t)
        deliver(a, b, t)
        deliver(b, a, t)
    assert b.state == "ESTABLISHED", (b.state, t)


def test_data_on_a_syn_ack_is_taken() -> None:
    """Unusual but legal: it lies in the window our SYN offered, so it is
    delivered and acknowledged, not trimmed away and sent again."""
    a = Connection(Config(), 1000, 2000, iss=1000, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=5000, now=0.0)
    b.listen()
    a.connect(0.0)
    deliver(a, b, 0.0)
    [synack] = b.segments_to_send(0.0)
    a.handle_segment(dataclasses.replace(synack, payload=b"hi"), 0.01)
    assert a.state == "ESTABLISHED" and a.receive(10, 0.01) == b"hi"
    [ack] = a.segments_to_send(0.01)
    assert ack.flags == ACK and ack.ack == 5003
