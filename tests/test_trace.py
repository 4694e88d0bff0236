"""Tests for rtcp.trace: the ladder diagram, the pcap writer and the small tracers.

Every test feeds synthetic events, so the exact picture is pinned down without
a network; the pcap files are checked with scapy as an independent TCP parser.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, IPv6, rdpcap

import rtcp
from rtcp.segment import Flags, Segment
from rtcp.trace import (
    LadderTracer,
    LoggingTracer,
    MultiTracer,
    PcapTracer,
    Tracer,
    format_segment,
)

A, S, F, R, P = Flags.ACK, Flags.SYN, Flags.FIN, Flags.RST, Flags.PSH
MOD = 1 << 32

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 7007)
CLIENT6 = ("2001:db8::1", 40000, 0, 0)
SERVER6 = ("2001:db8::2", 7007, 0, 0)
# The client's ISN wraps past 2**32 during the bulk run: relative numbers must not care.
ISN_C = MOD - 1000
ISN_S = 1_000_000_000
BULK = 200
BULK_SIZE = 1000

Event = tuple  # ("seg", now, "in"/"out", Segment) or ("state", now, old, new)


def client_view() -> list[Event]:
    """A whole connection as the client's endpoint reports it.

    Handshake, "hello" echoed, a bulk run of BULK segments each second one
    ACKed, then the client closes first (four-way close) and TIME_WAIT expires.
    """
    c, s = ISN_C, ISN_S
    cp, sp = CLIENT[1], SERVER[1]

    def out(
        t: float, seq: int, ack: int, flags: Flags, payload: bytes = b"", **kw: object
    ) -> Event:
        return (
            "seg",
            t,
            "out",
            Segment(cp, sp, seq % MOD, ack % MOD, flags, 65535, payload=payload, **kw),
        )

    def inc(
        t: float, seq: int, ack: int, flags: Flags, payload: bytes = b"", **kw: object
    ) -> Event:
        return (
            "seg",
            t,
            "in",
            Segment(sp, cp, seq % MOD, ack % MOD, flags, 65535, payload=payload, **kw),
        )

    syn_opts = ((2, 1460), (4, None), (8, (1, 0)), (3, 7))
    ev: list[Event] = [
        ("state", 0.0, "CLOSED", "SYN_SENT"),
        out(0.0, c, 0, S, options=syn_opts),
        inc(0.010, s, c + 1, S | A, options=syn_opts),
        ("state", 0.010, "SYN_SENT", "ESTABLISHED"),
        out(0.010, c + 1, s + 1, A),
        out(0.020, c + 1, s + 1, P | A, b"hello"),
        inc(0.030, s + 1, c + 6, P | A, b"hello"),
        out(0.030, c + 6, s + 6, A),
    ]
    t = 0.040
    seq = c + 6
    for i in range(BULK):
        ev.append(out(t, seq, s + 6, A, bytes(BULK_SIZE)))
        seq += BULK_SIZE
        t += 0.0005
        if i % 2:
            ev.append(inc(t, s + 6, seq, A))
    ev += [
        ("state", t, "ESTABLISHED", "FIN_WAIT_1"),
        out(t, seq, s + 6, F | A),
        inc(t + 0.01, s + 6, seq + 1, A),
        ("state", t + 0.01, "FIN_WAIT_1", "FIN_WAIT_2"),
        inc(t + 0.02, s + 6, seq + 1, F | A),
        ("state", t + 0.02, "FIN_WAIT_2", "TIME_WAIT"),
        out(t + 0.02, seq + 1, s + 7, A),
        ("state", t + 60.02, "TIME_WAIT", "CLOSED"),
    ]
    return ev


def server_view() -> list[Event]:
    """The same connection as the server's endpoint reports it: mirrored segments.

    States are inserted where an endpoint reports them: after the segment that
    causes them, before the segment they make it send.
    """
    state = "LISTEN"
    ev: list[Event] = [("state", -1.0, "CLOSED", state)]

    def move(t: float, new: str) -> None:
        nonlocal state
        ev.append(("state", t, state, new))
        state = new

    for e in client_view():
        if e[0] != "seg":
            continue
        t, direction, seg = e[1], "in" if e[2] == "out" else "out", e[3]
        if direction == "out" and seg.flags == S | A:
            move(t, "SYN_RECEIVED")
        if direction == "out" and seg.flags & F:
            move(t, "LAST_ACK")
        ev.append(("seg", t, direction, seg))
        if direction == "in" and seg.flags == A and state == "SYN_RECEIVED":
            move(t, "ESTABLISHED")
        if direction == "in" and seg.flags & F:
            move(t, "CLOSE_WAIT")
        if direction == "in" and seg.flags == A and state == "LAST_ACK":
            move(t, "CLOSED")
    return ev


def replay(
    tracer: Tracer, events: list[Event], local: tuple = CLIENT, remote: tuple = SERVER
) -> None:
    for e in events:
        if e[0] == "seg":
            tracer.on_segment(e[1], e[2], local, remote, e[3])
        else:
            tracer.on_state(e[1], local, remote, e[2], e[3])
    tracer.close()


def ladder(
    events: list[Event], local: tuple = CLIENT, remote: tuple = SERVER, **kw: object
) -> list[str]:
    buf = io.StringIO()
    replay(LadderTracer(buf, **kw), events, local, remote)  # type: ignore[arg-type]
    return buf.getvalue().splitlines()


def squeeze(line: str) -> str:
    """Collapse column padding so assertions state content and side, not exact spacing."""
    return " ".join(line.split())


# ----------------------------------------------------------------------------- ladder


def test_ladder_client_view_exact() -> None:
    lines = ladder(client_view())
    end = 6 + BULK * BULK_SIZE  # relative sequence number after the bulk run
    assert [squeeze(x) for x in lines] == [
        "[1] 10.0.0.1:40000 <-> 10.0.0.2:7007 left: this end, right: (peer state, inferred)",
        "SYN_SENT -- SYN seq=0 -->",
        "<-- SYN,ACK seq=0 ack=1 -- (SYN_RECEIVED)",
        "ESTABLISHED -- ACK ack=1 --> (ESTABLISHED)",
        "-- PSH,ACK seq=1 ack=1 len=5 -->",
        "<-- PSH,ACK seq=1 ack=6 len=5 --",
        "-- ACK ack=6 -->",
        "-- ACK seq=6 ack=6 len=1000 -->",
        "-- ACK seq=1006 ack=6 len=1000 -->",
        "<-- ACK ack=2006 --",
        # 6 plain lines are shown, the rest of the run collapses into one line
        f"... {BULK - 2} segments ({(BULK - 2) * BULK_SIZE:,} bytes) -->, {BULK // 2 - 1} ACKs <-- ...",
        f"FIN_WAIT_1 -- FIN,ACK seq={end} ack=6 --> (CLOSE_WAIT)",
        f"<-- ACK ack={end + 1} --",
        "FIN_WAIT_2",
        f"<-- FIN,ACK seq=6 ack={end + 1} -- (LAST_ACK)",
        "TIME_WAIT -- ACK ack=7 --> (CLOSED)",
        "CLOSED",
    ]


def test_ladder_header_shows_the_routed_address_of_a_wildcard_socket() -> None:
    """A client socket is bound to 0.0.0.0; the header shows what the packets
    carry (the route's source), as the pcap and stream.local_address do."""
    lines = ladder(client_view(), local=("0.0.0.0", 40000), remote=("127.0.0.1", 7007))
    assert lines[0].startswith("[1] 127.0.0.1:40000 <-> 127.0.0.1:7007")


def test_ladder_columns() -> None:
    """States sit in the left column, arrows start in the middle, peer states at the right."""
    lines = ladder(client_view(), width=40)
    assert lines[1] == "SYN_SENT      -- SYN seq=0 -->"
    assert lines[2].startswith(" " * 14 + "<-- SYN,ACK seq=0 ack=1 --")
    assert lines[2].index("(SYN_RECEIVED)") == 14 + 40 + 2
    assert lines[3].startswith("ESTABLISHED   -- ACK ack=1 -->")
    assert lines[3].index("(ESTABLISHED)") == 14 + 40 + 2
    assert lines[10].startswith(" " * 14 + "... ")
    assert lines[13] == "FIN_WAIT_2"


def test_ladder_server_view_infers_client_states() -> None:
    lines = [squeeze(x) for x in ladder(server_view(), SERVER, CLIENT)]
    end = 6 + BULK * BULK_SIZE
    assert lines[0].startswith("[1] 10.0.0.2:7007 <-> 10.0.0.1:40000 left: this end")
    assert lines[1:7] == [
        "LISTEN",
        "<-- SYN seq=0 -- (SYN_SENT)",
        "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
        "<-- ACK ack=1 --",
        "ESTABLISHED",
        "<-- PSH,ACK seq=1 ack=1 len=5 --",
    ]
    assert (
        f"... {BULK - 2} segments ({(BULK - 2) * BULK_SIZE:,} bytes) <--, {BULK // 2 - 1} ACKs --> ..."
        in lines
    )
    assert lines[-5:] == [
        f"<-- FIN,ACK seq={end} ack=6 -- (FIN_WAIT_1)",
        f"CLOSE_WAIT -- ACK ack={end + 1} --> (FIN_WAIT_2)",
        f"LAST_ACK -- FIN,ACK seq=6 ack={end + 1} --> (TIME_WAIT)",
        "<-- ACK ack=7 --",
        "CLOSED",
    ]


def endpoint_order(events: list[Event]) -> list[Event]:
    """Report state changes after the segment they make us send, as a batching endpoint does."""
    result: list[Event] = []
    states: list[Event] = []
    for e in events:
        if e[0] == "state":
            states.append(e)
        elif e[2] == "out" and states:
            result += [e, *states]
            states = []
        else:
            result += [*states, e]
            states = []
    return result + states


def test_ladder_same_picture_when_states_follow_segments() -> None:
    assert ladder(endpoint_order(client_view())) == ladder(client_view())
    # the server's endpoint reports CLOSED -> LISTEN -> SYN_RECEIVED together, after its SYN,ACK
    listen, syn, *rest = server_view()
    server = ladder(endpoint_order([syn, listen, *rest]), SERVER, CLIENT)
    assert [squeeze(x) for x in server[1:4]] == [
        "<-- SYN seq=0 -- (SYN_SENT)",
        "LISTEN",
        "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
    ]
    assert server[4:] == ladder(server_view(), SERVER, CLIENT)[4:]


@pytest.mark.parametrize("order", ["states first", "segments first"])
def test_ladder_fin_that_acks_a_fin_and_abort(order: str) -> None:
    cp, sp = SERVER[1], CLIENT[1]
    ev: list[Event] = [
        ("seg", 0.0, "in", Segment(sp, cp, 100, 0, S, 1000)),
        ("state", 0.0, "LISTEN", "SYN_RECEIVED"),
        ("seg", 0.0, "out", Segment(cp, sp, 500, 101, S | A, 1000)),
        ("seg", 0.1, "in", Segment(sp, cp, 101, 501, F | A, 1000)),
        ("state", 0.1, "SYN_RECEIVED", "CLOSE_WAIT"),
        ("state", 0.1, "CLOSE_WAIT", "LAST_ACK"),
        ("seg", 0.1, "out", Segment(cp, sp, 501, 102, F | A, 1000)),
        # a new connection on the same addresses, aborted by us
        ("seg", 1.0, "in", Segment(sp, cp, 9000, 0, S, 1000)),
        ("state", 1.0, "LISTEN", "SYN_RECEIVED"),
        ("seg", 1.0, "out", Segment(cp, sp, 7000, 9001, S | A, 1000)),
        ("state", 1.0, "SYN_RECEIVED", "CLOSED"),
        ("seg", 1.0, "out", Segment(cp, sp, 7001, 9001, R | A, 0)),
    ]
    if order == "segments first":
        ev = endpoint_order(ev)  # ... the RST, then CLOSED
    lines = [squeeze(x) for x in ladder(ev, SERVER, CLIENT)]
    assert lines[1:5] == [
        "<-- SYN seq=0 -- (SYN_SENT)",
        "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
        "<-- FIN,ACK seq=1 ack=1 -- (FIN_WAIT_1)",
        "CLOSE_WAIT",
    ]
    assert lines[5] == "LAST_ACK -- FIN,ACK seq=1 ack=2 --> (TIME_WAIT)"
    assert lines[6].startswith("[2] 10.0.0.2:7007 <-> 10.0.0.1:40000")
    assert lines[7:9] == [
        "<-- SYN seq=0 -- (SYN_SENT)",
        "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
    ]
    if order == "segments first":
        assert lines[9:] == ["CLOSED -- RST,ACK seq=1 ack=1 win=0 --> (CLOSED)"]
    else:
        assert lines[9:] == ["CLOSED", "-- RST,ACK seq=1 ack=1 win=0 --> (CLOSED)"]


def timed(lines: list[str]) -> list[tuple[float, str]]:
    """A ``timestamps=True`` ladder's lines after the header: (seconds, squeezed rest)."""
    out = []
    for line in lines[1:]:
        t, _, rest = line.strip().partition(" ")
        out.append((float(t), squeeze(rest)))
    return out


HELD_ACK_ENDINGS = {
    # The client's segments after ESTABLISHED, as its endpoint reports them: a
    # state a segment makes us send comes after that segment, timestamped before it.
    "close": (
        [
            ("seg", 0.020, "out", Segment(40000, 7007, 101, 901, F | A, 1000)),
            ("state", 0.019, "ESTABLISHED", "FIN_WAIT_1"),
            ("seg", 0.030, "in", Segment(7007, 40000, 901, 102, A, 1000)),
            ("state", 0.030, "FIN_WAIT_1", "FIN_WAIT_2"),
        ],
        [
            (0.010, "ESTABLISHED"),
            (0.020, "FIN_WAIT_1 -- FIN,ACK seq=1 ack=1 --> (CLOSE_WAIT)"),
            (0.030, "<-- ACK ack=2 --"),
            (0.030, "FIN_WAIT_2"),
        ],
    ),
    "data": (
        [
            ("seg", 0.020, "out", Segment(40000, 7007, 101, 901, P | A, 1000, payload=b"hi")),
            ("seg", 0.025, "out", Segment(40000, 7007, 103, 901, F | A, 1000)),
            ("state", 0.024, "ESTABLISHED", "FIN_WAIT_1"),
        ],
        [
            (0.020, "ESTABLISHED -- PSH,ACK seq=1 ack=1 len=2 --> (ESTABLISHED)"),
            (0.025, "FIN_WAIT_1 -- FIN,ACK seq=3 ack=1 --> (CLOSE_WAIT)"),
        ],
    ),
    "abort": (
        [
            ("seg", 0.020, "out", Segment(40000, 7007, 101, 0, R, 0)),
            ("state", 0.019, "ESTABLISHED", "CLOSED"),
        ],
        [
            (0.010, "ESTABLISHED"),
            (0.020, "CLOSED -- RST seq=1 win=0 --> (CLOSED)"),
        ],
    ),
}


@pytest.mark.parametrize("ending", list(HELD_ACK_ENDINGS))
def test_ladder_client_holding_the_handshake_ack(ending: str) -> None:
    """A client holds the handshake's last ACK for its first segment
    (Connection.connect(hold_ack=True)), so ESTABLISHED waits for an arrow.
    Data carries it; a FIN or RST sent at once shows the next state, so
    ESTABLISHED goes alone and the arrow gets its own state.  (ESTABLISHED was
    drawn on the FIN, sent in FIN_WAIT_1, and FIN_WAIT_1 followed alone with a
    time before the line above it.)"""
    events, expected = HELD_ACK_ENDINGS[ending]
    start: list[Event] = [
        ("seg", 0.0, "out", Segment(40000, 7007, 100, 0, S, 1000)),
        ("state", -0.0001, "CLOSED", "SYN_SENT"),
        ("seg", 0.010, "in", Segment(7007, 40000, 900, 101, S | A, 1000)),
        ("state", 0.010, "SYN_SENT", "ESTABLISHED"),
    ]
    lines = timed(ladder(start + events, timestamps=True))
    assert lines == [
        (0.0, "SYN_SENT -- SYN seq=0 -->"),
        (0.010, "<-- SYN,ACK seq=0 ack=1 -- (SYN_RECEIVED)"),
        *expected,
    ]
    times = [t for t, _ in lines]
    assert times == sorted(times)


def test_ladder_fin_sent_while_close_wait_waits_for_an_arrow() -> None:
    """The server closes as soon as the client's FIN arrives, before it ACKs
    it: its FIN,ACK is sent in LAST_ACK, which is reported after it; CLOSE_WAIT
    prints alone.  (CLOSE_WAIT went on the FIN and LAST_ACK followed alone,
    earlier than the FIN.)"""
    sp, cp = SERVER[1], CLIENT[1]
    ev: list[Event] = [
        ("state", 0.0, "CLOSED", "LISTEN"),
        ("seg", 0.0, "in", Segment(cp, sp, 100, 0, S, 1000)),
        ("seg", 0.001, "out", Segment(sp, cp, 900, 101, S | A, 1000)),
        ("state", 0.0, "LISTEN", "SYN_RECEIVED"),
        ("seg", 0.010, "in", Segment(cp, sp, 101, 901, F | A, 1000)),
        ("state", 0.010, "SYN_RECEIVED", "ESTABLISHED"),
        ("state", 0.010, "ESTABLISHED", "CLOSE_WAIT"),
        ("seg", 0.012, "out", Segment(sp, cp, 901, 102, F | A, 1000)),
        ("state", 0.011, "CLOSE_WAIT", "LAST_ACK"),
        ("seg", 0.020, "in", Segment(cp, sp, 102, 902, A, 1000)),
        ("state", 0.020, "LAST_ACK", "CLOSED"),
    ]
    lines = timed(ladder(ev, SERVER, CLIENT, timestamps=True))
    assert lines == [
        (0.0, "LISTEN"),
        (0.0, "<-- SYN seq=0 -- (SYN_SENT)"),
        (0.001, "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)"),
        (0.010, "<-- FIN,ACK seq=1 ack=1 -- (FIN_WAIT_1)"),
        (0.010, "ESTABLISHED"),
        (0.010, "CLOSE_WAIT"),
        (0.012, "LAST_ACK -- FIN,ACK seq=1 ack=2 --> (TIME_WAIT)"),
        (0.020, "<-- ACK ack=2 --"),
        (0.020, "CLOSED"),
    ]


@pytest.mark.parametrize("abort", [False, True], ids=["close", "abort"])
async def test_ladder_of_an_endpoint_that_connects_then_closes(
    autojump_clock: object, abort: bool
) -> None:
    """The same through a real endpoint (a MemoryNetwork, virtual time, so the
    held ACK's timer cannot fire first): connect, then close or abort at once."""
    from rtcp import Config
    from rtcp.endpoint import Endpoint
    from rtcp.stream import RtcpListener, connect_endpoint
    from rtcp.transport import MemoryNetwork

    net = MemoryNetwork(seed=1, delay=0.001)
    cfg = Config()
    buf = io.StringIO()
    tracer = LadderTracer(buf, timestamps=True)
    client = Endpoint(net.transport("127.0.0.1", 40000), cfg, tracer=tracer)
    server = Endpoint(net.transport("127.0.0.1", 7007), cfg, linger=True)
    listener = RtcpListener(server, cfg)
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            n.start_soon(listener.accept)  # returns only once the held ACK arrives
            stream = await connect_endpoint(client, ("127.0.0.1", 7007), cfg)
            if abort:
                stream.abort()
            else:
                await stream.aclose()
            n.cancel_scope.cancel()
    tracer.close()
    client.close()
    await listener.aclose()
    lines = timed(buf.getvalue().splitlines())
    times = [t for t, _ in lines]
    assert times == sorted(times), lines
    sign = "CLOSED -- RST seq=1 win=0 -->" if abort else "FIN_WAIT_1 -- FIN,ACK seq=1 ack=1 -->"
    assert [x for _, x in lines][:4] == [
        "SYN_SENT -- SYN seq=0 -->",
        "<-- SYN,ACK seq=0 ack=1 -- (SYN_RECEIVED)",
        "ESTABLISHED",
        sign + (" (CLOSED)" if abort else " (CLOSE_WAIT)"),
    ], lines


def test_ladder_absolute_numbers() -> None:
    lines = [squeeze(x) for x in ladder(client_view(), relative=False)]
    assert lines[1] == f"SYN_SENT -- SYN seq={ISN_C} -->"
    assert lines[2] == f"<-- SYN,ACK seq={ISN_S} ack={ISN_C + 1} -- (SYN_RECEIVED)"
    assert lines[3] == f"ESTABLISHED -- ACK ack={ISN_S + 1} --> (ESTABLISHED)"
    # past the 2**32 wrap, absolute numbers wrap too
    end = (ISN_C + 6 + BULK * BULK_SIZE) % MOD
    assert f"FIN_WAIT_1 -- FIN,ACK seq={end} ack={ISN_S + 6} --> (CLOSE_WAIT)" in lines


def test_ladder_counts_every_segment() -> None:
    """Shown lines plus summarised counts account for every segment of the run."""
    lines = ladder(client_view(), keep=3)
    shown_data = sum(1 for x in lines if "len=1000" in x)
    summary = [x for x in lines if "..." in x]
    assert len(summary) == 1
    data = int(summary[0].split("...")[1].split()[0])
    assert shown_data + data == BULK


def test_ladder_summary_breaks_when_the_other_side_sends_data() -> None:
    cp, sp = CLIENT[1], SERVER[1]
    ev: list[Event] = [("state", 0.0, "SYN_RECEIVED", "ESTABLISHED")]
    t = 0.0
    for i in range(10):
        t += 0.001
        ev.append(("seg", t, "out", Segment(cp, sp, 100 * i, 0, A, 1000, payload=bytes(100))))
    for i in range(10):
        t += 0.001
        ev.append(("seg", t, "in", Segment(sp, cp, 50 * i, 1000, A, 1000, payload=bytes(50))))
    lines = [squeeze(x) for x in ladder(ev, keep=2)]
    assert lines[1:] == [
        "ESTABLISHED -- ACK seq=0 ack=0 len=100 -->",
        "-- ACK seq=100 ack=0 len=100 -->",
        "-- ACK seq=200 ack=0 len=100 -->",
        "... 7 segments (700 bytes) --> ...",
        "<-- ACK seq=0 ack=1000 len=50 --",
        "<-- ACK seq=50 ack=1000 len=50 --",
        "... 8 segments (400 bytes) <-- ...",
    ]


def test_ladder_summary_counts_retransmissions_and_flushes_after_a_pause() -> None:
    cp, sp = CLIENT[1], SERVER[1]

    def data(t: float, seq: int) -> Event:
        return ("seg", t, "out", Segment(cp, sp, seq, 0, A, 1000, payload=bytes(10)))

    ev = [data(0.001 * i, 10 * i) for i in range(5)] + [data(0.006, 20)]  # seq 20 again
    ev.append(data(5.0, 50))  # after a pause: the run ends, this one is shown
    lines = [squeeze(x) for x in ladder(ev, keep=2)]
    assert "... 4 segments (40 bytes, 1 retransmitted) --> ..." in lines
    assert lines[-1] == "-- ACK seq=50 ack=0 len=10 -->"


def test_ladder_rst_and_zero_window() -> None:
    cp, sp = CLIENT[1], SERVER[1]
    ev: list[Event] = [
        ("state", 0.0, "CLOSED", "SYN_SENT"),
        ("seg", 0.0, "out", Segment(cp, sp, 7, 0, S, 65535)),
        ("seg", 0.1, "in", Segment(sp, cp, 0, 8, R | A, 0)),
        ("state", 0.1, "SYN_SENT", "CLOSED"),
    ]
    lines = [squeeze(x) for x in ladder(ev)]
    assert lines[1:] == [
        "SYN_SENT -- SYN seq=0 -->",
        "<-- RST,ACK seq=0 ack=1 win=0 -- (CLOSED)",
        "CLOSED",
    ]


def test_ladder_several_connections_and_reuse() -> None:
    other = ("10.0.0.3", 5555)
    buf = io.StringIO()
    tracer = LadderTracer(buf, timestamps=True)
    syn = Segment(CLIENT[1], SERVER[1], 1, 0, S, 100)
    tracer.on_state(0.0, CLIENT, SERVER, "CLOSED", "SYN_SENT")
    tracer.on_segment(0.0, "out", CLIENT, SERVER, syn)
    tracer.on_state(0.5, CLIENT, other, "CLOSED", "SYN_SENT")
    tracer.on_segment(0.5, "out", CLIENT, other, Segment(CLIENT[1], other[1], 9, 0, S, 100))
    tracer.on_segment(1.0, "in", CLIENT, SERVER, Segment(SERVER[1], CLIENT[1], 1, 0, R, 0))
    tracer.on_state(1.0, CLIENT, SERVER, "SYN_SENT", "CLOSED")
    # the same address pair again: a new connection with its own ISN and number
    tracer.on_state(2.0, CLIENT, SERVER, "CLOSED", "SYN_SENT")
    tracer.on_segment(2.0, "out", CLIENT, SERVER, Segment(CLIENT[1], SERVER[1], 500, 0, S, 100))
    tracer.close()
    lines = buf.getvalue().splitlines()
    headers = [x for x in lines if x.startswith("[")]
    assert [h.split()[0] for h in headers] == ["[1]", "[2]", "[1]", "[3]"]
    assert "10.0.0.3:5555" in headers[1]
    assert lines[1] == "  0.000000  SYN_SENT      -- SYN seq=0 -->"
    assert lines[-1] == "  2.000000  SYN_SENT      -- SYN seq=0 -->"


def incarnations(lines: list[str]) -> list[list[str]]:
    """A ladder cut at its ``[n]`` headers: each connection's lines, header first."""
    out: list[list[str]] = []
    for line in lines:
        if line.startswith("["):
            out.append([])
        out[-1].append(squeeze(line))
    return out


def test_ladder_time_wait_reuse_on_a_wildcard_socket() -> None:
    """A client socket (bound to 0.0.0.0) reconnects on the 4-tuple of its own
    connection in TIME_WAIT, reported as the endpoint does: the SYN, then
    CLOSED -> SYN_SENT.  The new connection gets its own header, SYN_SENT on its
    SYN and numbers relative to its own ISNs.  (The new incarnation was filed
    under the header's routed address, 127.0.0.1, so the events that followed,
    keyed by 0.0.0.0, went to the old connection: "[2]" had a bare SYN, a "[4]"
    the SYN-ACK with an absolute ack, "[1]" the rest, continuing its numbers.)"""
    local, remote = ("0.0.0.0", 40000), ("127.0.0.1", 7007)
    cp, sp = local[1], remote[1]

    def connection(t: float, c: int, s: int) -> list[Event]:
        return [
            ("seg", t, "out", Segment(cp, sp, c, 0, S, 65535)),
            ("state", t, "CLOSED", "SYN_SENT"),
            ("seg", t + 1, "in", Segment(sp, cp, s, c + 1, S | A, 65535)),
            ("state", t + 1, "SYN_SENT", "ESTABLISHED"),
            ("seg", t + 2, "out", Segment(cp, sp, c + 1, s + 1, F | A, 65535)),
            ("state", t + 2, "ESTABLISHED", "FIN_WAIT_1"),
            ("seg", t + 3, "in", Segment(sp, cp, s + 1, c + 2, F | A, 65535)),
            ("state", t + 3, "FIN_WAIT_1", "TIME_WAIT"),
            ("seg", t + 3, "out", Segment(cp, sp, c + 2, s + 2, A, 65535)),
        ]

    events = connection(0, 1000, 5000) + connection(10, 900_000, 7_000_000)
    parts = incarnations(ladder(events, local, remote))
    assert [p[0].split()[0] for p in parts] == ["[1]", "[2]"]
    assert parts[0][0] == parts[1][0].replace("[2]", "[1]")
    body = [
        "SYN_SENT -- SYN seq=0 -->",
        "<-- SYN,ACK seq=0 ack=1 -- (SYN_RECEIVED)",
        "ESTABLISHED",  # the handshake's ACK was held for the FIN, sent in FIN_WAIT_1
        "FIN_WAIT_1 -- FIN,ACK seq=1 ack=1 --> (CLOSE_WAIT)",
        "<-- FIN,ACK seq=1 ack=2 -- (LAST_ACK)",
        "TIME_WAIT -- ACK ack=2 --> (CLOSED)",
    ]
    assert parts[0][1:] == parts[1][1:] == body


def test_ladder_time_wait_reopen_and_a_syn_time_wait_answers() -> None:
    """The server closes first and is in TIME_WAIT when the client's next SYN comes.

    When the listener takes the SYN (a reopen) the endpoint reports CLOSED ->
    LISTEN first: a new connection, drawn like the first one.  A SYN it does not
    take (not newer, RFC 6191) is answered by the TIME_WAIT connection with its
    own ACK and the peer resets it: all of that belongs to the old connection
    and its numbers (it used to start a new "[n]" whose ACK looked absurd)."""
    sp, cp = SERVER[1], CLIENT[1]

    def connection(t: float, c: int, s: int) -> list[Event]:
        return [
            ("state", t, "CLOSED", "LISTEN"),
            ("seg", t, "in", Segment(cp, sp, c, 0, S, 65535)),
            ("state", t, "LISTEN", "SYN_RECEIVED"),
            ("seg", t, "out", Segment(sp, cp, s, c + 1, S | A, 65535)),
            ("seg", t + 1, "in", Segment(cp, sp, c + 1, s + 1, A, 65535)),
            ("state", t + 1, "SYN_RECEIVED", "ESTABLISHED"),
            ("state", t + 2, "ESTABLISHED", "FIN_WAIT_1"),
            ("seg", t + 2, "out", Segment(sp, cp, s + 1, c + 1, F | A, 65535)),
            ("seg", t + 3, "in", Segment(cp, sp, c + 1, s + 2, F | A, 65535)),
            ("state", t + 3, "FIN_WAIT_1", "TIME_WAIT"),
            ("seg", t + 3, "out", Segment(sp, cp, s + 2, c + 2, A, 65535)),
        ]

    c2, s2 = 2_000_000, 3_000_000
    refused = [
        ("seg", 20.0, "in", Segment(cp, sp, c2 + 5, 0, S, 65535)),
        ("seg", 20.0, "out", Segment(sp, cp, s2 + 2, c2 + 2, A, 65535)),
        ("seg", 20.0, "in", Segment(cp, sp, c2 + 2, 0, R, 0)),
        ("state", 20.0, "TIME_WAIT", "CLOSED"),
    ]
    events = connection(0, 1000, 5000) + connection(10, c2, s2) + refused
    events += connection(30, 77, 4_294_967_000)
    parts = incarnations(ladder(events, SERVER, CLIENT))
    assert [p[0].split()[0] for p in parts] == ["[1]", "[2]", "[3]"]
    body = [
        "LISTEN",
        "<-- SYN seq=0 -- (SYN_SENT)",
        "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
        "<-- ACK ack=1 --",
        "ESTABLISHED",
        "FIN_WAIT_1 -- FIN,ACK seq=1 ack=1 --> (CLOSE_WAIT)",
        "<-- FIN,ACK seq=1 ack=2 -- (LAST_ACK)",
        "TIME_WAIT -- ACK ack=2 --> (CLOSED)",
    ]
    assert parts[0][1:] == parts[2][1:] == body
    assert parts[1][1:] == body + [
        "<-- SYN seq=5 -- (SYN_SENT)",  # relative to the old connection's ISN
        "-- ACK ack=2 -->",  # a SYN_SENT peer refuses a bare ACK ...
        "<-- RST seq=2 win=0 -- (CLOSED)",  # ... with a RST
        "CLOSED",
    ]


def test_ladder_ipv6_header_and_sack() -> None:
    cp, sp = CLIENT6[1], SERVER6[1]
    buf = io.StringIO()
    tracer = LadderTracer(buf)
    tracer.on_segment(0.0, "out", CLIENT6, SERVER6, Segment(cp, sp, 100, 0, S, 100))
    tracer.on_segment(0.0, "in", CLIENT6, SERVER6, Segment(sp, cp, 900, 101, S | A, 100))
    tracer.on_segment(0.0, "out", CLIENT6, SERVER6, Segment(cp, sp, 101, 901, A, 100))
    sack = Segment(sp, cp, 901, 101, A, 100, options=((5, ((1101, 2101),)),))
    tracer.on_segment(0.0, "in", CLIENT6, SERVER6, sack)
    tracer.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[1] [2001:db8::1]:40000 <-> [2001:db8::2]:7007")
    assert squeeze(lines[-1]) == "<-- ACK ack=1 sack=1001-2001 --"


# ----------------------------------------------------------------------------- format


def test_format_segment() -> None:
    seg = Segment(
        1, 2, 1005, 2010, P | A, 100, options=((5, ((2100, 2200), (2300, 2400))),), payload=b"abc"
    )
    assert format_segment(seg) == "PSH,ACK seq=1005 ack=2010 len=3 sack=2100-2200,2300-2400"
    assert format_segment(seg, 1000, 2000) == "PSH,ACK seq=5 ack=10 len=3 sack=100-200,300-400"
    assert format_segment(seg, 1000, 2000, win_shift=2, show_window=True).split()[4] == "win=400"
    syn = Segment(1, 2, 7, 0, S, 65535, options=((2, 1460), (3, 7), (4, None), (8, (5, 0))))
    assert format_segment(syn, show_window=True, show_options=True, win_shift=7) == (
        "SYN seq=7 win=65535 mss=1460 wscale=7 sackOK ts=5/0"
    )
    assert format_segment(Segment(1, 2, 7, 9, A, 0)) == "ACK ack=9 win=0"
    assert format_segment(Segment(1, 2, 0, 0, Flags(0), 1)) == "<none>"


# ----------------------------------------------------------------------------- pcap


def packets(path: Path) -> list:
    return list(rdpcap(str(path)))


def check_checksums(pkt: object, ip_layer: type) -> None:
    """Rebuild with the checksums deleted; scapy's values must equal the file's."""
    rebuilt = pkt.copy()  # type: ignore[attr-defined]
    del rebuilt[TCP].chksum
    if ip_layer is IP:
        del rebuilt[IP].chksum
        assert ip_layer(bytes(rebuilt))[IP].chksum == pkt[IP].chksum  # type: ignore[index]
    assert ip_layer(bytes(rebuilt))[TCP].chksum == pkt[TCP].chksum  # type: ignore[index]


def expected_segments(events: list[Event]) -> Iterator[tuple[str, Segment]]:
    return ((e[2], e[3]) for e in events if e[0] == "seg")


@pytest.mark.parametrize(
    ("local", "remote", "ip_layer"),
    [(CLIENT, SERVER, IP), (CLIENT6, SERVER6, IPv6)],
    ids=["ipv4", "ipv6"],
)
def test_pcap_connection(tmp_path: Path, local: tuple, remote: tuple, ip_layer: type) -> None:
    events = client_view()
    path = tmp_path / "trace.pcap"
    before = time.time()
    replay(PcapTracer(path), events, local, remote)
    raw = path.read_bytes()
    assert raw[:4] == bytes.fromhex("d4c3b2a1")  # 0xa1b2c3d4 written little-endian
    assert int.from_bytes(raw[20:24], "little") == 101  # LINKTYPE_RAW
    pkts = packets(path)
    expected = list(expected_segments(events))
    assert len(pkts) == len(expected) == 3 + 3 + BULK + BULK // 2 + 4
    ids = []
    for pkt, (direction, seg) in zip(pkts, expected, strict=True):
        assert pkt.haslayer(ip_layer) and pkt.haslayer(TCP)
        ipl, tcp = pkt[ip_layer], pkt[TCP]
        src, dst = (local, remote) if direction == "out" else (remote, local)
        assert (ipl.src, ipl.dst) == (src[0], dst[0])
        assert (tcp.sport, tcp.dport) == (seg.src_port, seg.dst_port)
        assert (tcp.seq, tcp.ack, int(tcp.flags), tcp.window) == (
            seg.seq,
            seg.ack,
            int(seg.flags),
            seg.window,
        )
        assert bytes(tcp.payload) == seg.payload
        if ip_layer is IP:
            assert (ipl.proto, ipl.ttl, ipl.flags.DF) == (6, 64, True)
            ids.append(ipl.id)
        else:
            assert (ipl.nh, ipl.hlim, ipl.plen) == (6, 64, len(tcp))
        check_checksums(pkt, ip_layer)
    if ids:
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    flags = [str(p[TCP].flags) for p in pkts]
    assert flags[:3] == ["S", "SA", "A"]
    assert flags[-4:] == ["FA", "A", "FA", "A"]
    # seq/ack tie up: the handshake and the close as Wireshark would follow them
    syn, synack, ack = (p[TCP] for p in pkts[:3])
    assert (synack.ack, ack.seq, ack.ack) == ((syn.seq + 1) % MOD, synack.ack, synack.seq + 1)
    fin1, ack1, fin2, ack2 = (p[TCP] for p in pkts[-4:])
    assert ack1.ack == (fin1.seq + 1) % MOD and ack2.ack == fin2.seq + 1
    assert fin1.seq == (ISN_C + 6 + BULK * BULK_SIZE) % MOD  # wrapped past 2**32
    # options survive: scapy sees our MSS and window scale on the SYN
    assert ("MSS", 1460) in syn.options and ("WScale", 7) in syn.options
    # wall-clock timestamps, spaced as the trace clock was
    assert before - 1 <= float(pkts[0].time) <= time.time() + 1
    assert float(pkts[2].time - pkts[0].time) == pytest.approx(0.010, abs=2e-6)


def test_pcap_is_readable_before_close(tmp_path: Path) -> None:
    """A process killed mid-connection must leave a file of whole records."""
    path = tmp_path / "live.pcap"
    tracer = PcapTracer(path)
    events = [e for e in client_view() if e[0] == "seg"][:7]
    for e in events:
        tracer.on_segment(e[1], e[2], CLIENT, SERVER, e[3])
    assert len(packets(path)) == 7
    tracer.close()
    tracer.close()  # idempotent


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        (("0.0.0.0", 40000), ("127.0.0.1", 7007)),  # a client socket bound to the wildcard
        (("::", 40000, 0, 0), ("::ffff:127.0.0.1", 7007, 0, 0)),  # dual-stack, IPv4 peer
    ],
    ids=["wildcard", "v4-mapped"],
)
def test_pcap_real_addresses(local: tuple, remote: tuple) -> None:
    buf = io.BytesIO()
    tracer = PcapTracer(buf)
    tracer.on_segment(0.0, "out", local, remote, Segment(40000, 7007, 1, 0, S, 100))
    tracer.on_segment(0.0, "in", local, remote, Segment(7007, 40000, 5, 2, S | A, 100))
    buf.seek(0)
    out, back = rdpcap(buf)
    assert (out[IP].src, out[IP].dst) == ("127.0.0.1", "127.0.0.1")
    assert (back[TCP].sport, back[TCP].dport) == (7007, 40000)
    check_checksums(out, IP)


def test_pcap_file_object_is_left_open() -> None:
    buf = io.BytesIO()
    tracer = PcapTracer(buf)
    tracer.on_segment(0.0, "out", CLIENT, SERVER, Segment(1, 2, 3, 4, S, 5))
    tracer.close()
    assert not buf.closed
    assert len(buf.getvalue()) == 24 + 16 + 20 + 20


@settings(max_examples=40, deadline=None)
@given(
    seq=st.integers(0, MOD - 1),
    ack=st.integers(0, MOD - 1),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=300),
    v6=st.booleans(),
)
def test_pcap_checksums_property(
    seq: int, ack: int, flags: int, window: int, payload: bytes, v6: bool
) -> None:
    buf = io.BytesIO()
    tracer = PcapTracer(buf)
    local, remote = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    tracer.on_segment(
        1.0,
        "in",
        local,
        remote,
        Segment(7007, 40000, seq, ack, Flags(flags), window, payload=payload),
    )
    buf.seek(0)
    (pkt,) = rdpcap(buf)
    check_checksums(pkt, IPv6 if v6 else IP)
    assert bytes(pkt[TCP].payload) == payload


# ----------------------------------------------------------------------------- others


def test_multi_and_logging_tracers(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    buf = io.StringIO()
    logger = logging.getLogger("rtcp.test_trace")
    tracer = MultiTracer(LadderTracer(buf), PcapTracer(tmp_path / "m.pcap"), LoggingTracer(logger))
    with caplog.at_level(logging.DEBUG, logger="rtcp.test_trace"):
        replay(tracer, client_view()[:5])
    assert "SYN_SENT" in buf.getvalue()
    assert len(packets(tmp_path / "m.pcap")) == 3
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records[0] == (logging.INFO, "10.0.0.1:40000 <-> 10.0.0.2:7007: CLOSED -> SYN_SENT")
    assert records[1] == (
        logging.DEBUG,
        f"10.0.0.1:40000 -> 10.0.0.2:7007 SYN seq={ISN_C} win=65535 mss=1460 sackOK ts=1/0 wscale=7",
    )
    assert records[2][1].startswith(
        f"10.0.0.1:40000 <- 10.0.0.2:7007 SYN,ACK seq={ISN_S} ack={ISN_C + 1}"
    )


def test_logging_tracer_skips_formatting_when_debug_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = LoggingTracer(logging.getLogger("rtcp.test_trace_quiet"))
    with caplog.at_level(logging.INFO, logger="rtcp.test_trace_quiet"):
        replay(tracer, client_view()[:3])
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_base_tracer_is_a_null_tracer() -> None:
    with Tracer() as tracer:
        replay(tracer, client_view()[:3])
    with pytest.raises(ValueError):
        LadderTracer(io.StringIO()).on_segment(
            0.0, "sideways", CLIENT, SERVER, Segment(1, 2, 3, 4, A, 5)
        )


async def test_listener_trace_says_listen_before_the_first_syn() -> None:
    import trio

    import rtcp
    from rtcp.trace import Tracer

    class Recorder(Tracer):
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def on_state(self, now, local, remote, old, new) -> None:  # noqa: ANN001
            self.events.append(("state", old, new))

        def on_segment(self, now, direction, local, remote, seg) -> None:  # noqa: ANN001
            self.events.append(("seg", direction, int(seg.flags)))

    rec = Recorder()
    with trio.fail_after(10):
        [listener] = await rtcp.open_rtcp_listeners(0, host="127.0.0.1", tracer=rec)
        async with trio.open_nursery() as n:
            n.start_soon(listener.accept)
            client = await rtcp.open_rtcp_stream("127.0.0.1", listener.local_address[1])
        client.abort()
        await listener.aclose()
    assert rec.events[:2] == [("state", "CLOSED", "LISTEN"), ("seg", "in", int(Flags.SYN))]
    assert ("state", "LISTEN", "SYN_RECEIVED") in rec.events
    assert sum(e == ("state", "CLOSED", "LISTEN") for e in rec.events) == 1


def test_submodules_named_in_the_readme_work_after_a_plain_import() -> None:
    # README: "a rtcp.trace tracer", "rtcp.relay.open_relay" (a fresh
    # interpreter: in this one the tests have imported them already).
    code = ("import rtcp; rtcp.trace.LadderTracer; rtcp.relay.open_relay; rtcp.relay.Impairment\n"
            "try:\n    rtcp.no_such_name\nexcept AttributeError:\n    print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


async def test_pcap_of_a_wildcard_listener_shows_the_address_the_client_reached(
        tmp_path: Path) -> None:
    # The listener on 0.0.0.0 answers a client of 127.0.0.2 from 127.0.0.2
    # (IP_PKTINFO); its pcap must say so, not the route's 127.0.0.1.
    path = tmp_path / "wild.pcap"
    tracer = PcapTracer(path)
    [listener] = await rtcp.open_rtcp_listeners(0, host="0.0.0.0", tracer=tracer)
    port = listener.local_address[1]
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            async def serve() -> None:
                async with await listener.accept() as s:
                    await s.send_all(await s.receive_some())

            n.start_soon(serve)
            async with await rtcp.open_rtcp_stream("127.0.0.2", port) as c:
                await c.send_all(b"ping")
                assert await c.receive_some() == b"ping"
    await listener.aclose()
    tracer.close()
    ours = [p for p in packets(path) if p[TCP].sport == port]
    theirs = [p for p in packets(path) if p[TCP].dport == port]
    assert ours and theirs
    assert {p[IP].src for p in ours} == {"127.0.0.2"}
    assert {p[IP].dst for p in theirs} == {"127.0.0.2"}


async def _reconnects(client_closes_first: bool) -> tuple[list[str], list[str]]:
    """Three connections, one after another, on one 4-tuple of a MemoryNetwork,
    each opened while the one before is in TIME_WAIT on the side that closed
    first (reused: Endpoint.connect on the client, the listener's reopen on the
    server).  The client is bound to 0.0.0.0, as every client socket is; its
    header shows the routed 127.0.0.1.  Returns the client's and the server's
    ladders.  Runs on virtual time (``autojump_clock``)."""
    from rtcp import Config
    from rtcp.endpoint import Endpoint
    from rtcp.stream import RtcpListener, connect_endpoint
    from rtcp.transport import MemoryNetwork

    net = MemoryNetwork(seed=1, delay=0.001)
    cfg = Config()
    bufs = io.StringIO(), io.StringIO()
    tracers = LadderTracer(bufs[0]), LadderTracer(bufs[1])
    client = Endpoint(net.transport("0.0.0.0", 40000), cfg, linger=True, tracer=tracers[0])
    server = Endpoint(net.transport("127.0.0.1", 7007), cfg, linger=True, tracer=tracers[1])
    listener = RtcpListener(server, cfg)
    with trio.fail_after(30):  # virtual seconds: well within TIME_WAIT's 2 * msl = 60
        for _ in range(3):
            async with trio.open_nursery() as n:

                async def serve() -> None:
                    s = await listener.accept()
                    while client_closes_first and await s.receive_some():
                        pass
                    await s.aclose()

                n.start_soon(serve)
                c = await connect_endpoint(client, ("127.0.0.1", 7007), cfg)
                while not client_closes_first and await c.receive_some():
                    pass
                await c.aclose()
            await trio.sleep(1)
    waiting = client if client_closes_first else server
    assert waiting.stats.time_wait_reused == 2
    for ep, tracer in zip((client, server), tracers, strict=True):
        tracer.close()
        ep.tracer = None
        ep.close()
    await listener.aclose()
    return bufs[0].getvalue().splitlines(), bufs[1].getvalue().splitlines()


@pytest.mark.parametrize("client_closes_first", [True, False], ids=["client-tw", "server-tw"])
async def test_ladder_of_connections_reusing_a_time_wait_4_tuple(
    autojump_clock: object, client_closes_first: bool
) -> None:
    """Each connection on the reused 4-tuple is drawn like the first: its own
    header, SYN_SENT (client) or LISTEN (server) on the SYN and numbers
    relative to its own ISNs.  (The client's second connection was split over
    "[2]", a "[4]" and the old "[1]", with huge or continued numbers; the
    server's reopened connections lacked LISTEN.)"""
    client, server = await _reconnects(client_closes_first)
    starts = {
        "client": ["SYN_SENT -- SYN seq=0 -->", "<-- SYN,ACK seq=0 ack=1 -- (SYN_RECEIVED)"],
        "server": [
            "LISTEN",
            "<-- SYN seq=0 -- (SYN_SENT)",
            "SYN_RECEIVED -- SYN,ACK seq=0 ack=1 --> (ESTABLISHED)",
        ],
    }
    closes_first = "client" if client_closes_first else "server"
    for side, lines in (("client", client), ("server", server)):
        parts = incarnations(lines)
        assert [p[0].split()[0] for p in parts] == ["[1]", "[2]", "[3]"], lines
        assert len({tuple(p[0].split()[1:]) for p in parts}) == 1
        for part in parts:
            assert part[1 : 1 + len(starts[side])] == starts[side], lines
            numbers = [
                int(w.split("=")[1]) for x in part for w in x.split() if w[:4] in ("seq=", "ack=")
            ]
            assert max(numbers) <= 2, lines  # relative to this connection's ISNs
            ours = any(x.startswith("TIME_WAIT") for x in part)
            assert ours == (side == closes_first), lines
    assert client[0].startswith("[1] 127.0.0.1:40000 <-> 127.0.0.1:7007")
