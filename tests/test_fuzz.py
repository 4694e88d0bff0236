"""Hypothesis fuzzing of everything that reads the network, bounded for CI.

* ``decode``, in both codec backends: arbitrary bytes and mutated valid segments (with
  the checksum repaired, so the option parser is reached) never raise anything but
  ``SegmentError``, and the C and Python backends agree on every input.
* The endpoint's datagram handler (``Endpoint._on_datagram`` and the bookkeeping after
  it), on a MemoryNetwork with a listener and an established connection: arbitrary
  bytes and segments aimed at that connection (right ports, sequence and ACK numbers
  just inside, at or just outside its windows, any flags and options) never raise,
  leave the endpoint running (timers included), and a new connection still works.

Every test has ``max_examples`` set and ``deadline=None``; no example database is
written.  Run time: a few seconds.
"""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtcp import Config, _codec_py
from rtcp.endpoint import Endpoint
from rtcp.segment import ChecksumError, Segment, SegmentError, decode, encode, internet_checksum
from rtcp.stream import RtcpListener, connect_endpoint
from rtcp.transport import MemoryNetwork

try:
    from rtcp import _codec_cbackend
except ImportError:  # pragma: no cover - the C codec is optional
    _codec_cbackend = None  # type: ignore[assignment]

BACKENDS = [_codec_py] + ([_codec_cbackend] if _codec_cbackend is not None else [])
MASK = 0xFFFFFFFF
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

FUZZ = settings(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, MASK)
option = st.one_of(
    st.tuples(st.just(2), u16),
    st.tuples(st.just(3), st.integers(0, 255)),
    st.tuples(st.just(4), st.none()),
    st.tuples(st.just(5), st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(tuple)),
    st.tuples(st.just(8), st.tuples(u32, u32)),
    st.tuples(st.sampled_from((6, 7, 9, 30, 99, 200, 253, 254)), st.binary(max_size=8)),
)
options = st.lists(option, max_size=5).map(tuple)


@st.composite
def valid_segments(draw: st.DrawFn) -> bytes:
    opts = draw(options)
    seg = Segment(draw(u16), draw(u16), draw(u32), draw(u32), draw(st.integers(0, 255)),
                  draw(u16), draw(u16), opts, draw(st.binary(max_size=64)))
    try:
        return encode(seg)
    except SegmentError:  # options too long for the header: drop them
        return encode(Segment(seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags,
                              seg.window, seg.urgent, (), seg.payload))


def repair_checksum(data: bytes | bytearray) -> bytes:
    """Recompute the checksum so that decode gets past it to the parser."""
    buf = bytearray(data)
    if len(buf) >= 20:
        buf[16:18] = b"\0\0"
        buf[16:18] = internet_checksum(buf).to_bytes(2, "big")
    return bytes(buf)


@st.composite
def mutated_segments(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(valid_segments()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "truncate", "insert", "offset", "optlen")))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))):]
        elif op == "insert":
            i = draw(st.integers(0, len(buf)))
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "offset" and len(buf) > 12:  # any data offset, 0..15 words
            buf[12] = (draw(st.integers(0, 15)) << 4) | (buf[12] & 0x0F)
        elif op == "optlen" and len(buf) > 21:  # an option length byte, any value
            buf[21] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        return repair_checksum(buf)
    return bytes(buf)


datagrams = st.one_of(st.binary(max_size=120), valid_segments(), mutated_segments())


def outcome(backend, data) -> tuple:
    try:
        return ("ok", backend.decode(data))
    except ChecksumError:
        return ("checksum",)
    except SegmentError:
        return ("malformed",)


@settings(FUZZ, max_examples=3000)
@given(data=datagrams, view=st.sampled_from((bytes, bytearray, memoryview)))
def test_decode_raises_only_segment_error_and_backends_agree(data: bytes, view) -> None:
    results = [outcome(backend, view(data)) for backend in BACKENDS]
    # The public decode is one of these; it too raises nothing else.
    try:
        decode(view(data))
    except SegmentError:
        pass
    assert all(r == results[0] for r in results), results
    if results[0][0] == "ok":
        seg = results[0][1]
        # A decoded segment is well-formed: it encodes again and decodes to itself.
        assert decode(encode(seg)) == seg


# ------------------------------------------------------------- endpoint handler fuzz
SEQ_AIMS = ("rcv_nxt", "rcv_nxt+1", "rcv_nxt-1", "in_window", "window_edge", "old", "far")
ACK_AIMS = ("snd_una", "snd_nxt", "snd_nxt+1", "snd_una-1", "ancient", "far", "zero")


def _aim(name: str | int, conn, draw_int: int) -> int:
    if isinstance(name, int):
        return name
    wnd = max(1, conn.stats.receive_window)
    return {
        "rcv_nxt": conn.rcv_nxt, "rcv_nxt+1": conn.rcv_nxt + 1, "rcv_nxt-1": conn.rcv_nxt - 1,
        "in_window": conn.rcv_nxt + draw_int % wnd, "window_edge": conn.rcv_nxt + wnd,
        "old": conn.rcv_nxt - 1 - draw_int, "far": conn.rcv_nxt + (1 << 31) - 1,
        "snd_una": conn.snd_una, "snd_nxt": conn.snd_nxt, "snd_nxt+1": conn.snd_nxt + 1,
        "snd_una-1": conn.snd_una - 1, "ancient": conn.snd_una - (1 << 30), "zero": 0,
    }[name] & MASK


aimed = st.fixed_dictionaries({
    "target": st.sampled_from(("server", "client")),
    "flags": st.one_of(st.sampled_from((ACK, ACK | PSH, RST, RST | ACK, SYN, SYN | ACK,
                                        FIN | ACK, FIN, 0)), st.integers(0, 255)),
    "seq": st.one_of(st.sampled_from(SEQ_AIMS), u32),
    "ack": st.one_of(st.sampled_from(ACK_AIMS), u32),
    "n": st.integers(0, 1 << 20),
    "window": st.one_of(st.sampled_from((0, 1, 0xFFFF)), u16),
    "options": options,
    "payload": st.binary(max_size=48),
    "ports": st.sampled_from(("right", "right", "right", "swapped", "wrong")),
    "source": st.sampled_from(("peer", "peer", "stranger")),
    "mutate": st.one_of(st.none(), st.tuples(st.integers(0, 200), st.integers(1, 255))),
})
raw = st.fixed_dictionaries({
    "target": st.sampled_from(("server", "client")),
    "raw": datagrams,
    "source": st.sampled_from(("peer", "stranger")),
})


class World:
    """A listener with one established connection, all on a MemoryNetwork."""

    S_ADDR = ("10.0.0.2", 7)
    C_ADDR = ("10.0.0.1", 5000)

    async def start(self) -> None:
        # 1 ms of delay: virtual time moves even while two endpoints ping-pong ACKs
        # (see test_hostile.py::test_desynchronised_pair_does_not_ack_storm).
        self.net = MemoryNetwork(seed=1, delay=0.001)
        self.cfg = Config(min_rto=0.05, initial_rto=0.2, user_timeout=30)
        self.server = Endpoint(self.net.transport(*self.S_ADDR), self.cfg, linger=True)
        self.listener = RtcpListener(self.server, self.cfg)
        self.client = Endpoint(self.net.transport(*self.C_ADDR), self.cfg)
        async with trio.open_nursery() as n:
            got: list = []

            async def accept() -> None:
                got.append(await self.listener.accept())

            n.start_soon(accept)
            self.c = await connect_endpoint(self.client, self.S_ADDR, self.cfg)
        self.s = got[0]
        # Some data in flight both ways, so every window and queue is non-trivial.
        await self.c.send_all(b"a" * 5000)
        await self.s.send_all(b"b" * 3000)

    def build(self, spec: dict) -> tuple[Endpoint, bytes, tuple]:
        target = spec["target"]
        ep = self.server if target == "server" else self.client
        stream = self.s if target == "server" else self.c
        peer_addr = self.C_ADDR if target == "server" else self.S_ADDR
        src = peer_addr if spec["source"] == "peer" else ("10.6.6.6", 6666)
        if "raw" in spec:
            return ep, spec["raw"], src
        conn = stream._conn
        sport, dport = conn.remote_port, conn.local_port
        if spec["ports"] == "swapped":
            sport, dport = dport, sport
        elif spec["ports"] == "wrong":
            sport = (sport + 1) & 0xFFFF
        seg = Segment(sport, dport, _aim(spec["seq"], conn, spec["n"]),
                      _aim(spec["ack"], conn, spec["n"]), spec["flags"], spec["window"], 0,
                      spec["options"], spec["payload"])
        try:
            data = encode(seg)
        except SegmentError:
            data = encode(Segment(seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags,
                                  seg.window, 0, (), seg.payload))
        if spec["mutate"] is not None:
            i, x = spec["mutate"]
            buf = bytearray(data)
            buf[i % len(buf)] ^= x
            data = repair_checksum(buf)
        return ep, data, src

    async def check_alive(self) -> None:
        assert not self.server._done.is_set(), "the listening endpoint stopped"
        # The listener still accepts, and a fresh connection carries data both ways.
        other = Endpoint(self.net.transport("10.0.0.3", 6000), self.cfg)
        async with trio.open_nursery() as n:
            got: list = []

            async def accept() -> None:
                got.append(await self.listener.accept())

            n.start_soon(accept)
            c2 = await connect_endpoint(other, self.S_ADDR, self.cfg)
        s2 = got[0]
        msg = random.Random(1).randbytes(20_000)
        await c2.send_all(msg)
        buf = bytearray()
        while len(buf) < len(msg):
            buf += await s2.receive_some()
        assert bytes(buf) == msg
        await s2.send_all(b"pong")
        assert await c2.receive_some() == b"pong"


class _Errors(logging.Handler):
    """Collects ERROR records of the ``rtcp`` logger: an endpoint task that failed
    logs "rtcp endpoint ... failed" (and fails all its connections) rather than raise."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_world(specs: list[dict]) -> None:
    errors = _Errors()
    logger = logging.getLogger("rtcp")
    logger.addHandler(errors)
    try:
        trio.run(_world_main, specs, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


async def _world_main(specs: list[dict]) -> None:
    with trio.fail_after(600):  # virtual seconds (autojump clock)
        w = World()
        await w.start()
        for spec in specs:
            ep, data, src = w.build(spec)
            now = trio.current_time()
            # The handler itself, called directly so that any exception reaches
            # hypothesis (inside the endpoint task it would be logged and would
            # fail every connection of the endpoint).
            slot = ep._on_datagram(data, src, now)
            if slot is not None:
                ep._after(slot, now)
            await trio.sleep(0.001)
        await trio.sleep(1.5)  # timers fire: RTO, delayed ACK, challenge budget...
        await w.check_alive()
        for ep in (w.server, w.client):
            ep.close()


@settings(FUZZ, max_examples=250)
@given(specs=st.lists(st.one_of(aimed, aimed, raw), min_size=1, max_size=25))
def test_endpoint_datagram_handler_survives_anything(specs: list[dict]) -> None:
    run_world(specs)


@pytest.mark.parametrize("seed", range(3))
def test_endpoint_survives_long_random_sequences(seed: int) -> None:
    # Longer sequences than hypothesis builds, from a plain seeded RNG.
    rng = random.Random(seed)
    specs = []
    for _ in range(400):
        spec = {
            "target": rng.choice(("server", "client")),
            "flags": rng.choice((ACK, ACK | PSH, RST, SYN, FIN | ACK, rng.randrange(256))),
            "seq": rng.choice(SEQ_AIMS), "ack": rng.choice(ACK_AIMS),
            "n": rng.randrange(1 << 20), "window": rng.randrange(65536),
            "options": rng.choice(((), ((5, ((1, 2),)),), ((8, (rng.getrandbits(32), 0)),),
                                   ((2, 0), (3, 255)))),
            "payload": rng.randbytes(rng.choice((0, 1, 40))),
            "ports": rng.choice(("right", "right", "wrong")),
            "source": rng.choice(("peer", "peer", "stranger")),
            "mutate": None,
        }
        specs.append(spec)
    run_world(specs)
