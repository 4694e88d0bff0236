"""Every state against every segment kind, as RFC 9293 section 3.10.7 says.

Each row of ``TABLE`` builds a :class:`Connection` in one state by driving it
against a real peer, feeds it one crafted segment, and checks the state it ends
in and exactly what it answers (flags, SEQ and ACK of the reply).  The row ids
read like the RFC: ``ESTABLISHED | RST in-window inexact -> challenge ACK``.

Notation of the replies (RFC 9293 3.10.7):
  RST<SEQ=SEG.ACK>              <SEQ=SEG.ACK><CTL=RST>
  RST,ACK<ACK=SEG.SEQ+SEG.LEN>  <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
  SYN,ACK                       <SEQ=ISS><ACK=SEG.SEQ+1><CTL=SYN,ACK>
  ACK(+n)                       <SEQ=SND.NXT><ACK=RCV.NXT+n><CTL=ACK>, at once
  delayed ACK(+n)               the same, but only when the delayed-ACK timer fires
  challenge ACK                 RFC 5961's <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, counted
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from rtcp.config import Config
from rtcp.core import events as ev
from rtcp.core.connection import ACK, FIN, PSH, RST, SYN, Connection
from rtcp.core.seq import MASK
from rtcp.segment import Segment

J, K = 1000, 5000  # ISS of A (port 1000) and of B (port 2000)
PEER_ISS = 9000  # ISN of a stranger's SYN to a CLOSED or LISTEN connection
T = 1.0  # every state is built by T; the segment under test arrives at T
CFG = Config(timestamps=False, msl=5.0, delayed_ack=0.04)
BUF = CFG.receive_buffer
DATA = b"hello"


# --------------------------------------------------------------------- driving
def deliver(src: Connection, dst: Connection, now: float) -> list[Segment]:
    segs = src.segments_to_send(now)
    for s in segs:
        dst.handle_segment(s, now)
    return segs


def pair(config: Config = CFG) -> tuple[Connection, Connection]:
    return (Connection(config, 1000, 2000, iss=J, now=0.0),
            Connection(config, 2000, 1000, iss=K, now=0.0))


def established(config: Config = CFG) -> tuple[Connection, Connection]:
    a, b = pair(config)
    b.listen()
    a.connect(0.0)
    deliver(a, b, 0.1)
    deliver(b, a, 0.2)
    deliver(a, b, 0.3)
    assert a.state == b.state == "ESTABLISHED"
    return a, b


@dataclass
class Ctx:
    """A connection in some state plus the numbers its peer would use."""

    conn: Connection
    seq: int  # the peer's next sequence number (RCV.NXT in synchronized states)
    ack: int  # what the peer acknowledges now (acks nothing still outstanding)
    snd_nxt: int  # the connection's SND.NXT
    syn_seq: int  # the ISN a SYN or SYN-ACK from the peer would carry
    fin_seq: int  # where the peer's FIN sits (already received in CLOSE_WAIT etc.)


def _drain(*conns: Connection) -> None:
    for c in conns:
        c.segments_to_send(T)
        c.events()


def st_closed() -> Ctx:
    a, _ = pair()
    return Ctx(a, PEER_ISS, 4242, J, PEER_ISS, PEER_ISS)


def st_listen() -> Ctx:
    _, b = pair()
    b.listen()
    return Ctx(b, PEER_ISS, 4242, K, PEER_ISS, PEER_ISS)


def st_syn_sent() -> Ctx:
    a, _ = pair()
    a.connect(T)
    _drain(a)
    return Ctx(a, K, J + 1, J + 1, K, K + 1)


def st_syn_received() -> Ctx:
    """Passive: B got A's SYN and sent its SYN-ACK (not yet acknowledged)."""
    a, b = pair()
    b.listen()
    a.connect(0.0)
    deliver(a, b, T)
    _drain(b)
    return Ctx(b, J + 1, K + 1, K + 1, J, J + 1)


def st_syn_received_active() -> Ctx:
    """Simultaneous open: A sent a SYN, then got B's SYN."""
    a, b = pair()
    a.connect(0.0)
    b.connect(0.0)
    a.segments_to_send(0.0)
    deliver(b, a, T)
    _drain(a)
    assert a.state == "SYN_RECEIVED"
    return Ctx(a, K + 1, J + 1, J + 1, K, K + 1)


def st_established() -> Ctx:
    """A has 100 bytes in flight, so an acceptable ACK has something to ack."""
    a, _ = established()
    a.send(b"x" * 100, T)
    _drain(a)
    return Ctx(a, K + 1, J + 1, J + 101, K, K + 1)


def st_fin_wait_1() -> Ctx:
    a, _ = established()
    a.shutdown(T)
    _drain(a)  # the FIN is in flight
    return Ctx(a, K + 1, J + 1, J + 2, K, K + 1)


def st_fin_wait_2() -> Ctx:
    a, b = established()
    a.shutdown(T)
    deliver(a, b, T)
    deliver(b, a, T)
    _drain(a)
    return Ctx(a, K + 1, J + 2, J + 2, K, K + 1)


def st_close_wait() -> Ctx:
    a, b = established()
    b.shutdown(T)
    deliver(b, a, T)
    _drain(a)
    a.send(b"x" * 100, T)
    _drain(a)
    return Ctx(a, K + 2, J + 1, J + 101, K, K + 1)


def st_closing() -> Ctx:
    a, b = established()
    a.shutdown(T)
    b.shutdown(T)
    a.segments_to_send(T)  # A's FIN crosses B's
    deliver(b, a, T)
    _drain(a)
    return Ctx(a, K + 2, J + 1, J + 2, K, K + 1)


def st_last_ack() -> Ctx:
    a, b = established()
    b.shutdown(T)
    deliver(b, a, T)
    a.segments_to_send(T)
    a.shutdown(T)
    _drain(a)
    return Ctx(a, K + 2, J + 1, J + 2, K, K + 1)


def st_time_wait() -> Ctx:
    a, b = established()
    a.shutdown(T)
    deliver(a, b, T)
    deliver(b, a, T)
    b.shutdown(T)
    deliver(b, a, T)
    _drain(a)
    return Ctx(a, K + 2, J + 2, J + 2, K, K + 1)


STATES: dict[str, Callable[[], Ctx]] = {
    "CLOSED": st_closed,
    "LISTEN": st_listen,
    "SYN_SENT": st_syn_sent,
    "SYN_RECEIVED": st_syn_received,
    "SYN_RECEIVED(active)": st_syn_received_active,
    "ESTABLISHED": st_established,
    "FIN_WAIT_1": st_fin_wait_1,
    "FIN_WAIT_2": st_fin_wait_2,
    "CLOSE_WAIT": st_close_wait,
    "CLOSING": st_closing,
    "LAST_ACK": st_last_ack,
    "TIME_WAIT": st_time_wait,
}


@pytest.mark.parametrize("name", list(STATES))
def test_state_builders_reach_their_state(name: str) -> None:
    ctx = STATES[name]()
    assert ctx.conn.state == name.split("(")[0]
    if ctx.conn.state not in ("CLOSED", "LISTEN"):
        assert ctx.conn.snd_nxt & MASK == ctx.snd_nxt
    if ctx.conn.state not in ("CLOSED", "LISTEN", "SYN_SENT"):
        assert ctx.conn.rcv_nxt & MASK == ctx.seq


# ------------------------------------------------------------- segment kinds
def seg(ctx: Ctx, seq: int, ack: int, flags: int, payload: bytes = b"",
        options: tuple = ()) -> Segment:
    c = ctx.conn
    return Segment(c.remote_port, c.local_port, seq & MASK, ack & MASK, flags, 65535, 0,
                   options, payload)


SYN_OPTS = ((2, 1452),)
KINDS: dict[str, Callable[[Ctx], Segment]] = {
    "SYN": lambda c: seg(c, c.syn_seq, 0, SYN, options=SYN_OPTS),
    "SYN in window": lambda c: seg(c, c.seq, 0, SYN, options=SYN_OPTS),
    "SYN-ACK": lambda c: seg(c, c.syn_seq, c.snd_nxt, SYN | ACK, options=SYN_OPTS),
    "SYN-ACK acking ISS": lambda c: seg(c, c.syn_seq, c.snd_nxt - 1, SYN | ACK),
    "SYN-ACK acking unsent": lambda c: seg(c, c.syn_seq, c.snd_nxt + 1, SYN | ACK),
    "ACK": lambda c: seg(c, c.seq, c.snd_nxt, ACK),
    "ACK of ISS": lambda c: seg(c, c.seq, c.snd_nxt - 1, ACK),
    "data": lambda c: seg(c, c.seq, c.ack, ACK | PSH, DATA),
    "data without ACK": lambda c: seg(c, c.seq, 0, PSH, DATA),
    "FIN": lambda c: seg(c, c.fin_seq, c.ack, FIN | ACK),
    "FIN without ACK": lambda c: seg(c, c.fin_seq, 0, FIN),
    "FIN acking our FIN": lambda c: seg(c, c.fin_seq, c.snd_nxt, FIN | ACK),
    "retransmitted FIN": lambda c: seg(c, c.fin_seq, c.ack, FIN | ACK),
    "RST": lambda c: seg(c, c.seq, 0, RST),
    "RST exact": lambda c: seg(c, c.seq, 0, RST),
    "RST,ACK acceptable": lambda c: seg(c, 0, c.snd_nxt, RST | ACK),
    "RST,ACK unacceptable": lambda c: seg(c, 0, c.snd_nxt + 7, RST | ACK),
    "RST in-window inexact": lambda c: seg(c, c.seq + 1, 0, RST),
    "RST out-of-window": lambda c: seg(c, c.seq + 2 * BUF, 0, RST),
    "data out-of-window": lambda c: seg(c, c.seq + 2 * BUF, c.ack, ACK, DATA),
    "old duplicate data": lambda c: seg(c, c.seq - len(DATA), c.ack, ACK, DATA),
    "ACK of unsent data": lambda c: seg(c, c.seq, c.snd_nxt + 1, ACK, DATA),
    "ACK too old": lambda c: seg(c, c.seq, c.snd_nxt - 4 * BUF, ACK, DATA),
}


# ------------------------------------------------------------------ replies
@dataclass(frozen=True)
class Reply:
    name: str
    check: Callable[[Ctx, Segment, list[Segment], list[Segment]], None]

    def __str__(self) -> str:
        return self.name


def _seg_len(s: Segment) -> int:
    return len(s.payload) + bool(s.flags & SYN) + bool(s.flags & FIN)


def _nothing(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
    assert now == [] and later == []


def _rst_from_ack(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
    [r] = now
    assert (r.flags, r.seq) == (RST, s.ack)
    assert (r.src_port, r.dst_port) == (s.dst_port, s.src_port)
    assert later == []


def _rst_ack(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
    [r] = now
    assert (r.flags, r.seq, r.ack) == (RST | ACK, 0, (s.seq + _seg_len(s)) & MASK)
    assert (r.src_port, r.dst_port) == (s.dst_port, s.src_port)
    assert later == []


def _syn_ack(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
    [r] = now
    assert r.flags == SYN | ACK
    assert (r.seq, r.ack) == (ctx.conn.iss, (s.seq + 1) & MASK)
    assert dict(r.options).get(2) == CFG.max_datagram - 20  # MSS offered
    assert later == []


def _is_ack(r: Segment, ctx: Ctx, ackno: int) -> None:
    assert r.flags & (SYN | FIN | RST) == 0 and r.flags & ACK, r
    assert r.payload == b""
    assert (r.seq, r.ack) == (ctx.snd_nxt & MASK, ackno & MASK)


def ack(delta: int) -> Reply:
    def check(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
        [r] = now
        _is_ack(r, ctx, ctx.seq + delta)
        assert later == []

    return Reply(f"ACK(+{delta})" if delta else "ACK", check)


def delayed_ack(delta: int) -> Reply:
    def check(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
        assert now == []
        [r] = later
        _is_ack(r, ctx, ctx.seq + delta)

    return Reply(f"delayed ACK(+{delta})", check)


def _challenge(ctx: Ctx, s: Segment, now: list[Segment], later: list[Segment]) -> None:
    [r] = now
    _is_ack(r, ctx, ctx.seq)
    assert ctx.conn.stats.challenge_acks_sent == 1
    assert later == []


NOTHING = Reply("nothing", _nothing)
RST_SEQ_ACK = Reply("RST<SEQ=SEG.ACK>", _rst_from_ack)
RST_ACK = Reply("RST,ACK<ACK=SEG.SEQ+SEG.LEN>", _rst_ack)
SYN_ACK = Reply("SYN,ACK", _syn_ack)
ACK0 = ack(0)
CHALLENGE = Reply("challenge ACK", _challenge)


# -------------------------------------------------------------------- table
@dataclass(frozen=True)
class Row:
    state: str
    kind: str
    new_state: str
    reply: Reply
    delivered: bytes = b""
    event: type | None = None  # an event that must be reported
    refused: bool | None = None  # ConnectionReset.refused, when event is ConnectionReset
    no_event: type | None = None  # an event that must not be reported
    check: Callable[[Ctx], None] | None = None
    why: str = ""  # the RFC text the row mirrors


def una_is_nxt(ctx: Ctx) -> None:
    assert ctx.conn.snd_una & MASK == ctx.snd_nxt


def una_unmoved(ctx: Ctx) -> None:
    assert ctx.conn.snd_una & MASK == ctx.ack


def time_wait_timer(ctx: Ctx) -> None:
    assert ctx.conn.timer() == pytest.approx(T + 2 * CFG.msl)


R = Row
SYNC_RESET_STATES = ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING",
                     "LAST_ACK")
ALL_SYNC = (*SYNC_RESET_STATES, "TIME_WAIT")
PEER_FIN_SEEN = ("CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

TABLE: list[Row] = [
    # 3.10.7.1 CLOSED: an RST is discarded; anything else is answered with RST.
    R("CLOSED", "SYN", "CLOSED", RST_ACK),
    R("CLOSED", "SYN-ACK", "CLOSED", RST_SEQ_ACK),
    R("CLOSED", "ACK", "CLOSED", RST_SEQ_ACK),
    R("CLOSED", "data", "CLOSED", RST_SEQ_ACK),
    R("CLOSED", "data without ACK", "CLOSED", RST_ACK),
    R("CLOSED", "FIN", "CLOSED", RST_SEQ_ACK),
    R("CLOSED", "FIN without ACK", "CLOSED", RST_ACK),
    R("CLOSED", "RST", "CLOSED", NOTHING),
    R("CLOSED", "RST,ACK acceptable", "CLOSED", NOTHING),
    # 3.10.7.2 LISTEN: RST ignored; any ACK -> RST<SEQ=SEG.ACK>; SYN -> SYN_RECEIVED.
    R("LISTEN", "RST", "LISTEN", NOTHING),
    R("LISTEN", "ACK", "LISTEN", RST_SEQ_ACK),
    R("LISTEN", "SYN-ACK", "LISTEN", RST_SEQ_ACK),
    R("LISTEN", "data", "LISTEN", RST_SEQ_ACK),
    R("LISTEN", "FIN", "LISTEN", RST_SEQ_ACK),
    R("LISTEN", "FIN without ACK", "LISTEN", NOTHING),
    R("LISTEN", "data without ACK", "LISTEN", NOTHING),
    R("LISTEN", "SYN", "SYN_RECEIVED", SYN_ACK),
    # 3.10.7.3 SYN_SENT
    R("SYN_SENT", "SYN-ACK", "ESTABLISHED", ack(1), event=ev.Connected),
    R("SYN_SENT", "SYN-ACK acking ISS", "SYN_SENT", RST_SEQ_ACK, why="SEG.ACK =< ISS"),
    R("SYN_SENT", "SYN-ACK acking unsent", "SYN_SENT", RST_SEQ_ACK, why="SEG.ACK > SND.NXT"),
    R("SYN_SENT", "ACK of ISS", "SYN_SENT", RST_SEQ_ACK),
    R("SYN_SENT", "ACK", "SYN_SENT", NOTHING, why="neither SYN nor RST: drop"),
    R("SYN_SENT", "data", "SYN_SENT", NOTHING, why="neither SYN nor RST: drop"),
    R("SYN_SENT", "FIN", "SYN_SENT", NOTHING, why="FIN not processed: SEG.SEQ unvalidated"),
    R("SYN_SENT", "RST,ACK acceptable", "CLOSED", NOTHING, event=ev.ConnectionReset,
      refused=True, why="connection refused"),
    R("SYN_SENT", "RST", "SYN_SENT", NOTHING, why="RST without ACK: drop"),
    R("SYN_SENT", "RST,ACK unacceptable", "SYN_SENT", NOTHING, why="never RST an RST"),
    R("SYN_SENT", "SYN", "SYN_RECEIVED", SYN_ACK, why="simultaneous open"),
    # 3.10.7.4 SYN_RECEIVED (passive)
    R("SYN_RECEIVED", "ACK", "ESTABLISHED", NOTHING, event=ev.Connected, check=una_is_nxt),
    R("SYN_RECEIVED", "ACK of unsent data", "SYN_RECEIVED", RST_SEQ_ACK),
    R("SYN_RECEIVED", "ACK of ISS", "SYN_RECEIVED", RST_SEQ_ACK),
    R("SYN_RECEIVED", "data", "ESTABLISHED", delayed_ack(len(DATA)), delivered=DATA,
      event=ev.Connected),
    R("SYN_RECEIVED", "FIN", "CLOSE_WAIT", ack(1), event=ev.EofReceived),
    R("SYN_RECEIVED", "SYN", "SYN_RECEIVED", SYN_ACK, why="retransmitted SYN: SYN-ACK again"),
    R("SYN_RECEIVED", "SYN in window", "SYN_RECEIVED", CHALLENGE, why="RFC 5961 4.2"),
    R("SYN_RECEIVED", "RST exact", "CLOSED", NOTHING, no_event=ev.ConnectionReset,
      why="passive: back to LISTEN, the user need not be informed"),
    R("SYN_RECEIVED", "RST in-window inexact", "SYN_RECEIVED", CHALLENGE),
    R("SYN_RECEIVED", "RST out-of-window", "SYN_RECEIVED", NOTHING),
    R("SYN_RECEIVED", "data out-of-window", "SYN_RECEIVED", ACK0),
    R("SYN_RECEIVED", "old duplicate data", "SYN_RECEIVED", ACK0),
    R("SYN_RECEIVED(active)", "SYN-ACK", "ESTABLISHED", NOTHING, event=ev.Connected,
      why="simultaneous open completes"),
    R("SYN_RECEIVED(active)", "RST exact", "CLOSED", NOTHING, event=ev.ConnectionReset,
      refused=True, why="active: connection refused"),
    # 3.10.7.4 synchronized states: data, FIN and ACK
    R("ESTABLISHED", "ACK", "ESTABLISHED", NOTHING, check=una_is_nxt),
    R("ESTABLISHED", "data", "ESTABLISHED", delayed_ack(len(DATA)), delivered=DATA),
    R("ESTABLISHED", "FIN", "CLOSE_WAIT", ack(1), event=ev.EofReceived),
    R("FIN_WAIT_1", "ACK", "FIN_WAIT_2", NOTHING, check=una_is_nxt),
    R("FIN_WAIT_1", "data", "FIN_WAIT_1", delayed_ack(len(DATA)), delivered=DATA),
    R("FIN_WAIT_1", "FIN", "CLOSING", ack(1), event=ev.EofReceived),
    R("FIN_WAIT_1", "FIN acking our FIN", "TIME_WAIT", ack(1), event=ev.EofReceived,
      check=time_wait_timer),
    R("FIN_WAIT_2", "ACK", "FIN_WAIT_2", NOTHING),
    R("FIN_WAIT_2", "data", "FIN_WAIT_2", delayed_ack(len(DATA)), delivered=DATA),
    R("FIN_WAIT_2", "FIN", "TIME_WAIT", ack(1), event=ev.EofReceived, check=time_wait_timer),
    R("CLOSE_WAIT", "ACK", "CLOSE_WAIT", NOTHING, check=una_is_nxt),
    R("CLOSE_WAIT", "data", "CLOSE_WAIT", NOTHING, why="text after FIN is ignored"),
    R("CLOSE_WAIT", "retransmitted FIN", "CLOSE_WAIT", ACK0),
    R("CLOSING", "ACK", "TIME_WAIT", NOTHING, check=time_wait_timer),
    R("CLOSING", "data", "CLOSING", NOTHING, why="text after FIN is ignored"),
    R("CLOSING", "retransmitted FIN", "CLOSING", ACK0),
    R("LAST_ACK", "ACK", "CLOSED", NOTHING, event=ev.ConnectionClosed,
      no_event=ev.ConnectionReset),
    R("LAST_ACK", "data", "LAST_ACK", NOTHING, why="text after FIN is ignored"),
    R("LAST_ACK", "retransmitted FIN", "LAST_ACK", ACK0),
    R("TIME_WAIT", "ACK", "TIME_WAIT", NOTHING),
    R("TIME_WAIT", "data", "TIME_WAIT", NOTHING, why="text after FIN is ignored"),
    R("TIME_WAIT", "retransmitted FIN", "TIME_WAIT", ACK0, why="acknowledge it"),
    # 3.10.7.4 + RFC 5961, every synchronized state: RST, SYN, unacceptable segments
    *[R(s, "RST exact", "CLOSED", NOTHING, event=ev.ConnectionReset, refused=False)
      for s in SYNC_RESET_STATES],
    R("TIME_WAIT", "RST exact", "CLOSED", NOTHING, event=ev.ConnectionClosed),
    *[R(s, "RST in-window inexact", s, CHALLENGE, why="RFC 5961 3.2") for s in ALL_SYNC],
    *[R(s, "RST out-of-window", s, NOTHING) for s in ALL_SYNC],
    *[R(s, "SYN in window", s, CHALLENGE, why="RFC 5961 4.2") for s in ALL_SYNC],
    *[R(s, "SYN-ACK", s, ACK0, why="old duplicate: unacceptable") for s in ALL_SYNC],
    *[R(s, "data out-of-window", s, ACK0, check=una_unmoved) for s in ALL_SYNC],
    *[R(s, "old duplicate data", s, ACK0) for s in ALL_SYNC],
    *[R(s, "ACK of unsent data", s, ACK0, check=una_unmoved, why="send an ACK, drop")
      for s in ALL_SYNC],
    *[R(s, "ACK too old", s, ACK0, check=una_unmoved, why="RFC 5961 5.2")
      for s in ALL_SYNC],
]



def _params() -> list:
    out = []
    for r in TABLE:
        rid = f"{r.state} | {r.kind} -> {r.new_state}, {r.reply}"
        out.append(pytest.param(r, id=rid))
    return out


def test_table_covers_every_state_and_kind() -> None:
    seen = {(r.state, r.kind) for r in TABLE}
    assert len(seen) == len(TABLE), "duplicate rows"
    for state in STATES:
        assert any(r.state == state for r in TABLE), state
    required = {"ACK", "data", "RST exact", "RST in-window inexact", "RST out-of-window",
                "SYN in window", "SYN-ACK", "data out-of-window", "ACK of unsent data"}
    for state in ALL_SYNC:
        kinds = {r.kind for r in TABLE if r.state == state}
        fin = "retransmitted FIN" if state in PEER_FIN_SEEN else "FIN"
        assert required | {fin} <= kinds, (state, (required | {fin}) - kinds)


@pytest.mark.parametrize("row", _params())
def test_state_handles_segment(row: Row) -> None:
    ctx = STATES[row.state]()
    conn = ctx.conn
    base_challenges = conn.stats.challenge_acks_sent
    assert base_challenges == 0
    s = KINDS[row.kind](ctx)
    conn.handle_segment(s, T)
    assert conn.state == row.new_state
    now = conn.segments_to_send(T)
    # Whatever the delayed-ACK timer adds (and nothing else fires that soon).
    later_t = T + CFG.delayed_ack
    if conn.timer() is not None and conn.timer() <= later_t:
        conn.handle_timer(later_t)
    later = conn.segments_to_send(later_t)
    row.reply.check(ctx, s, now, later)
    assert conn.state == row.new_state
    # Exactly the right bytes reached the application.
    assert conn.receive(1 << 20, later_t) == row.delivered
    events = conn.events()
    if row.event is not None:
        found = [e for e in events if isinstance(e, row.event)]
        assert found, events
        if row.refused is not None:
            assert found[0].refused is row.refused
    if row.no_event is not None:
        assert not any(isinstance(e, row.no_event) for e in events), events
    if row.new_state == "CLOSED" and row.state != "CLOSED":
        assert any(isinstance(e, ev.ConnectionClosed) for e in events)
        assert conn.timer() is None  # no TCB left to time anything
    if row.check is not None:
        row.check(ctx)


# ----------------------------------------------------- challenge-ACK limits
def _sync_ctx(config: Config) -> Ctx:
    a, _ = established(config)
    _drain(a)
    return Ctx(a, K + 1, J + 1, J + 1, K, K + 1)


def test_challenge_acks_rate_limited_per_connection_per_second() -> None:
    cfg = CFG.replace(challenge_ack_limit=3)
    ctx = _sync_ctx(cfg)
    other = _sync_ctx(cfg)
    conn = ctx.conn
    t0 = 5.0
    for i in range(6):  # RSTs and SYNs share one budget
        kind = "RST in-window inexact" if i % 2 else "SYN in window"
        conn.handle_segment(KINDS[kind](ctx), t0 + i * 0.1)
    acks = conn.segments_to_send(t0 + 0.5)
    assert len(acks) == 3
    for r in acks:
        _is_ack(r, ctx, ctx.seq)
    assert conn.stats.challenge_acks_sent == 3
    # Still within the same second: suppressed.
    conn.handle_segment(KINDS["RST in-window inexact"](ctx), t0 + 0.99)
    assert conn.segments_to_send(t0 + 0.99) == []
    # Another connection has its own budget.
    other.conn.handle_segment(KINDS["SYN in window"](other), t0 + 0.5)
    assert len(other.conn.segments_to_send(t0 + 0.5)) == 1
    # A second later the budget is back.
    for _ in range(5):
        conn.handle_segment(KINDS["RST in-window inexact"](ctx), t0 + 1.0)
    assert len(conn.segments_to_send(t0 + 1.0)) == 3
    assert conn.state == "ESTABLISHED"
    # The suppressed segments did not reset anything either.
    assert not any(isinstance(e, ev.ConnectionReset) for e in conn.events())


def test_unacceptable_segments_still_acked_after_challenge_budget_is_spent() -> None:
    """The limit is on challenge ACKs only; the ordinary duplicate-ACK reply remains."""
    ctx = _sync_ctx(CFG.replace(challenge_ack_limit=1))
    conn = ctx.conn
    conn.handle_segment(KINDS["SYN in window"](ctx), 5.0)
    conn.handle_segment(KINDS["SYN in window"](ctx), 5.0)
    assert len(conn.segments_to_send(5.0)) == 1
    conn.handle_segment(KINDS["old duplicate data"](ctx), 5.0)
    [r] = conn.segments_to_send(5.0)
    _is_ack(r, ctx, ctx.seq)


def test_rst_exact_after_challenge_still_resets() -> None:
    """RFC 5961 3.2: the attacker's guess gets a challenge; the real peer's RST works."""
    ctx = _sync_ctx(CFG)
    conn = ctx.conn
    conn.handle_segment(KINDS["RST in-window inexact"](ctx), 5.0)
    [chal] = conn.segments_to_send(5.0)
    assert conn.state == "ESTABLISHED"
    # The peer answers the challenge with an RST at exactly the ACK it carried.
    conn.handle_segment(seg(ctx, chal.ack, 0, RST), 5.1)
    assert conn.state == "CLOSED"
    assert any(isinstance(e, ev.ConnectionReset) for e in conn.events())


# --------------------------------------------------------------- TIME_WAIT
def test_time_wait_reacks_retransmitted_fin() -> None:
    ctx = st_time_wait()
    conn = ctx.conn
    for t in (2.0, 3.0):
        conn.handle_segment(KINDS["retransmitted FIN"](ctx), t)
        [r] = conn.segments_to_send(t)
        _is_ack(r, ctx, ctx.seq)
        assert conn.state == "TIME_WAIT"


def test_time_wait_restarts_2msl_on_retransmitted_fin() -> None:
    ctx = st_time_wait()
    conn = ctx.conn
    assert conn.timer() == pytest.approx(T + 2 * CFG.msl)
    conn.handle_segment(KINDS["retransmitted FIN"](ctx), 8.0)
    conn.segments_to_send(8.0)
    assert conn.timer() == pytest.approx(8.0 + 2 * CFG.msl)
    conn.handle_timer(T + 2 * CFG.msl)
    assert conn.state == "TIME_WAIT"
    conn.handle_timer(8.0 + 2 * CFG.msl)
    assert conn.state == "CLOSED"


def test_time_wait_lasts_exactly_2msl_and_then_answers_rst() -> None:
    ctx = st_time_wait()
    conn = ctx.conn
    conn.handle_timer(T + 2 * CFG.msl - 0.001)
    assert conn.state == "TIME_WAIT"
    conn.handle_timer(T + 2 * CFG.msl)
    assert conn.state == "CLOSED"
    # Now CLOSED: a late retransmitted FIN gets RST<SEQ=SEG.ACK> (3.10.7.1).
    s = KINDS["retransmitted FIN"](ctx)
    conn.handle_segment(s, 20.0)
    [r] = conn.segments_to_send(20.0)
    assert (r.flags, r.seq) == (RST, s.ack)


# ------------------------------------------------- close in SYN_RECEIVED
def _simultaneous_open(config: Config) -> tuple[Connection, Connection]:
    a, b = pair(config)
    a.connect(0.0)
    b.connect(0.0)
    [sa] = a.segments_to_send(0.0)
    [sb] = b.segments_to_send(0.0)
    a.handle_segment(sb, 0.01)
    b.handle_segment(sa, 0.01)
    assert a.state == b.state == "SYN_RECEIVED"
    return a, b


def _run(a: Connection, b: Connection, until: float) -> float:
    t = 0.02
    while t < until:
        deliver(a, b, t)
        deliver(b, a, t)
        if b.state == "CLOSE_WAIT":
            b.receive(1 << 20, t)
            b.shutdown(t)
        t = round(t + 0.01, 2)
        for c in (a, b):
            if c.timer() is not None and c.timer() <= t:
                c.handle_timer(t)
    return t


@pytest.mark.parametrize("data", [b"", b"queued before the handshake completed"],
                         ids=["no-data", "with-data"])
def test_close_in_syn_received_completes_cleanly(data: bytes) -> None:
    """RFC 9293 3.10.4 CLOSE in SYN-RECEIVED: FIN now if nothing is queued, else after
    ESTABLISHED.  Either way the connection must report Connected, deliver the data
    promptly, and pass through TIME_WAIT without a spurious connect timeout."""
    cfg = CFG.replace(msl=30.0, connect_timeout=20.0)  # TIME_WAIT outlives the handshake timer
    a, b = _simultaneous_open(cfg)
    if data:
        a.send(data, 0.01)
    a.shutdown(0.01)
    _run(a, b, 0.5)
    assert b.state == "CLOSED"
    assert a.state == "TIME_WAIT"
    assert any(isinstance(e, ev.Connected) for e in a.events())
    assert a.stats.timeouts == 0  # the data went out without waiting for an RTO
    a.handle_timer(cfg.connect_timeout + 1.0)
    assert a.state == "TIME_WAIT"
    assert not any(isinstance(e, ev.ConnectionTimedOut) for e in a.events())


# ------------------------------------------- TIME_WAIT reuse (RFC 6191)
def _time_wait(config: Config) -> Connection:
    a, b = established(config)
    a.shutdown(T)
    deliver(a, b, T)
    deliver(b, a, T)
    b.shutdown(T)
    deliver(b, a, T)
    assert a.state == "TIME_WAIT"
    return a


def _syn(seq: int, flags: int = SYN, tsval: int | None = None) -> Segment:
    opts = ((8, (tsval, 0)),) if tsval is not None else ()
    return Segment(2000, 1000, seq & MASK, 0, flags, 65535, 0, opts)


@pytest.mark.parametrize(("seq", "flags", "ok"), [
    (K + 2 + 1, SYN, True),  # beyond RCV.NXT: a new incarnation
    (K + 2 + 1_000_000, SYN, True),
    (K + 2, SYN, False),  # at RCV.NXT: not beyond
    (K, SYN, False),  # an old duplicate
    (K + 100, SYN | ACK, False),
    (K + 100, SYN | RST, False),
], ids=["next", "far-ahead", "at-rcv-nxt", "old", "syn-ack", "syn-rst"])
def test_time_wait_reopen_by_sequence_without_timestamps(seq: int, flags: int,
                                                         ok: bool) -> None:
    tw = _time_wait(CFG)
    assert tw.syn_may_reopen(_syn(seq, flags)) is ok


def test_time_wait_reopen_by_timestamp_when_negotiated() -> None:
    cfg = CFG.replace(timestamps=True)
    a, b = (Connection(cfg, 1000, 2000, iss=J, now=0.0, ts_offset=0),
            Connection(cfg, 2000, 1000, iss=K, now=0.0, ts_offset=0))
    b.listen()
    a.connect(0.0)
    for t in (0.1, 0.2, 0.3):
        deliver(a, b, t)
        deliver(b, a, t)
    a.shutdown(T)
    deliver(a, b, T)
    deliver(b, a, T)
    b.shutdown(T)
    [fin] = deliver(b, a, T)
    assert a.state == "TIME_WAIT"
    recent = dict(fin.options)[8][0]
    # The timestamp decides (RFC 6191 2); within one 1 ms tick (equal
    # timestamps) a new incarnation is told apart by its higher sequence number.
    assert a.syn_may_reopen(_syn(K, tsval=recent + 1))
    assert a.syn_may_reopen(_syn(K + 10_000, tsval=recent))
    assert not a.syn_may_reopen(_syn(K, tsval=recent))
    assert not a.syn_may_reopen(_syn(K + 10_000, tsval=recent - 1))
    # A SYN without a timestamp falls back to the sequence-number rule.
    assert a.syn_may_reopen(_syn(K + 10_000))


def test_only_time_wait_may_be_reopened() -> None:
    ctx = st_established()
    assert not ctx.conn.syn_may_reopen(_syn(ctx.seq + 1000))


def test_closed_reader_acks_a_retransmission_of_data_it_already_read() -> None:
    """RST answers only *new* data once the reader is closed (nobody would read
    it); old bytes resent because our ACK was lost, with the peer's FIN on them,
    are acknowledged and the FIN taken, as Linux does (it resets only when the
    segment ends after RCV.NXT)."""
    a, b = established()
    a.send(b"hello", 1.0)
    [data] = a.segments_to_send(1.0)
    b.handle_segment(data, 1.0)
    assert b.receive(100, 1.0) == b"hello"
    b.segments_to_send(1.05)  # its ACK is lost
    b.close(1.1)  # reader closed, FIN out: FIN_WAIT_1
    [fin] = b.segments_to_send(1.1)
    assert fin.flags & FIN and b.state == "FIN_WAIT_1"
    a.handle_segment(fin, 1.1)  # a now acks b's FIN; a closes too
    a.close(1.2)
    a.segments_to_send(1.2)
    # a retransmits "hello" with its FIN (the old bytes and the FIN in one segment)
    again = Segment(data.src_port, data.dst_port, data.seq, (fin.seq + 1) & MASK,
                    ACK | FIN, data.window, 0, (), b"hello")
    b.handle_segment(again, 1.5)
    out = b.segments_to_send(1.5)
    assert not any(s.flags & RST for s in out) and b.error is None
    assert b.eof_received and b.state == "TIME_WAIT"
    assert out and out[-1].ack == (data.seq + 6) & MASK


def test_closed_reader_still_resets_new_data() -> None:
    a, b = established()
    b.close(1.0)
    b.segments_to_send(1.0)
    a.send(b"late", 1.1)
    deliver(a, b, 1.1)
    assert any(s.flags & RST for s in b.segments_to_send(1.1))
    assert isinstance(b.error, ev.ConnectionReset)
