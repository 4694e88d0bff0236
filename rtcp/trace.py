"""Observing connections: ladder diagrams, pcap files and log lines.

The endpoint calls a :class:`Tracer` for every segment it sends, every segment
it receives (after it decoded cleanly) and every connection state change.  The
tracers here turn that stream into what a person debugging rtcp wants to look
at: a TCP-textbook ladder diagram on the terminal (``--trace``), a pcap file
that Wireshark/tshark read as ordinary TCP (``--pcap``) and ``logging`` records
(``--verbose``).  Nothing here depends on trio or sends anything, so the
tracers are tested by feeding them synthetic events.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import IO, BinaryIO, TextIO

from .segment import Segment, encode, internet_checksum
from .transport import route_source

__all__ = [
    "Tracer",
    "LadderTracer",
    "PcapTracer",
    "MultiTracer",
    "LoggingTracer",
    "format_segment",
    "format_address",
]

# Flag bits, in the order Wireshark prints them ("SYN,ACK", "FIN,PSH,ACK").
# Plain ints rather than segment.Flags so formatting stays a cheap bit test.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_FLAG_NAMES = (
    (FIN, "FIN"),
    (SYN, "SYN"),
    (RST, "RST"),
    (PSH, "PSH"),
    (ACK, "ACK"),
    (URG, "URG"),
    (ECE, "ECE"),
    (CWR, "CWR"),
)
_MOD = 1 << 32
_HALF = 1 << 31


def _seq_after(a: int, b: int) -> bool:
    """``a`` is later than ``b`` in 32-bit sequence space."""
    return 0 < (a - b) % _MOD < _HALF


def _seq_before(a: int, b: int) -> bool:
    return _seq_after(b, a)


def _seq_at_or_after(a: int, b: int) -> bool:
    return (a - b) % _MOD < _HALF


class Tracer:
    """What the endpoint reports to; the base class ignores everything.

    Subclasses override what they need, so the base doubles as a null tracer.
    ``direction`` is ``"out"`` for a segment we sent and ``"in"`` for one we
    received and decoded; ``local``/``remote`` are UDP socket addresses
    (``(host, port)`` or IPv6 4-tuples).  States are RFC 9293's names
    (``"SYN_SENT"``, ``"TIME_WAIT"``, ...).  Report a received segment before
    the state change it causes; a state change may be reported just before or
    just after the segment it makes us send (the ladder copes with both).
    Methods should be quick and not raise: they run on the endpoint's packet path.
    An outgoing segment's payload may be a memoryview of the send buffer (see
    ``Segment.payload``): copy it with ``bytes()`` to keep it.  A received
    segment's payload is ``bytes``.
    """

    def on_segment(
        self, now: float, direction: str, local: tuple, remote: tuple, seg: Segment
    ) -> None:
        """A segment was sent (``"out"``) or received (``"in"``) at time ``now``."""

    def on_state(self, now: float, local: tuple, remote: tuple, old: str, new: str) -> None:
        """Our end of the connection moved from state ``old`` to ``new``."""

    def close(self) -> None:
        """Flush what is buffered and release resources; events after this are undefined."""

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def format_address(addr: tuple) -> str:
    """``1.2.3.4:80`` or ``[::1]:80``: the unambiguous way to print a socket address."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def format_segment(
    seg: Segment,
    isn_out: int | None = None,
    isn_in: int | None = None,
    *,
    win_shift: int = 0,
    show_window: bool = False,
    show_options: bool = False,
) -> str:
    """One segment as ``SYN,ACK seq=0 ack=1 len=5``: the single formatter for all tracers.

    ``isn_out`` is the ISN of the segment's sender (``seq`` is shown relative to
    it) and ``isn_in`` the ISN of its receiver (``ack`` and SACK blocks are
    relative to it); ``None`` shows that number absolute.  ``seq`` appears only
    when the segment occupies sequence space (SYN, FIN, data) or is a RST, so a
    pure ACK reads ``ACK ack=N``; ``ack`` only with the ACK flag.  The window is
    shown when asked (scaled by ``win_shift``, never on a SYN) and always when
    it is zero, because a closed window is what stalls a transfer.
    """
    flags = int(seg.flags)
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    parts = [",".join(names) if names else "<none>"]
    n = len(seg.payload)
    if n or flags & (SYN | FIN | RST):
        seq = seg.seq if isn_out is None else (seg.seq - isn_out) % _MOD
        parts.append(f"seq={seq}")
    if flags & ACK:
        ack = seg.ack if isn_in is None else (seg.ack - isn_in) % _MOD
        parts.append(f"ack={ack}")
    if n:
        parts.append(f"len={n}")
    if show_window or seg.window == 0:
        window = seg.window if flags & SYN else seg.window << win_shift
        parts.append(f"win={window}")
    if flags & URG:
        parts.append(f"urp={seg.urgent}")
    for kind, value in seg.options:
        if kind == 5:
            off = 0 if isn_in is None else isn_in
            blocks = ",".join(
                f"{(left - off) % _MOD}-{(right - off) % _MOD}" for left, right in value
            )
            parts.append(f"sack={blocks}")
        elif show_options:
            parts.append(_format_option(kind, value))
    return " ".join(parts)


def _format_option(kind: int, value: object) -> str:
    if kind == 2:
        return f"mss={value}"
    if kind == 3:
        return f"wscale={value}"
    if kind == 4:
        return "sackOK"
    if kind == 8 and isinstance(value, tuple):
        return f"ts={value[0]}/{value[1]}"
    raw = value.hex() if isinstance(value, bytes | bytearray) else value
    return f"opt{kind}={raw}"


def _window_shift(seg: Segment) -> int | None:
    for kind, value in seg.options:
        if kind == 3:
            return int(value)  # type: ignore[call-overload]
    return None


# --------------------------------------------------------------------------- ladder

_LEFT = 14  # wide enough for "SYN_RECEIVED" plus a gap
_CONTROL = SYN | FIN | RST | URG | ECE | CWR  # flags that end a collapsed run


@dataclass(slots=True)
class _Run:
    """Counters for the segments folded into one summary line."""

    start: float
    data_out: int = 0
    bytes_out: int = 0
    retx_out: int = 0
    acks_out: int = 0
    data_in: int = 0
    bytes_in: int = 0
    retx_in: int = 0
    acks_in: int = 0

    def text(self) -> str:
        parts = []
        for count, nbytes, retx, arrow in (
            (self.data_out, self.bytes_out, self.retx_out, "-->"),
            (self.data_in, self.bytes_in, self.retx_in, "<--"),
        ):
            if count:
                extra = f", {retx:,} retransmitted" if retx else ""
                parts.append(
                    f"{count:,} {_plural(count, 'segment')} ({nbytes:,} bytes{extra}) {arrow}"
                )
        for count, arrow in ((self.acks_out, "-->"), (self.acks_in, "<--")):
            if count:
                parts.append(f"{count:,} {_plural(count, 'ACK')} {arrow}")
        return "... " + ", ".join(parts) + " ..."


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


@dataclass(slots=True)
class _Conn:
    """What the ladder remembers about one connection (one UDP address pair)."""

    ident: int
    key: tuple  # (local, remote) as the endpoint reports them: the table's key
    local: tuple  # ``key``'s local address with a wildcard host routed, for the header
    remote: tuple
    ports: tuple[int, int] | None = None  # (our header port, peer's header port)
    our_state: str | None = None
    pending: tuple[float, str] | None = None  # our new state, waiting for our next arrow
    peer_state: str | None = None  # inferred
    our_isn: int | None = None
    peer_isn: int | None = None
    our_fin_end: int | None = None  # sequence number just past our FIN
    peer_fin_end: int | None = None
    our_wscale: int | None = None
    peer_wscale: int | None = None
    max_out: int | None = None  # highest sequence end sent, to spot retransmissions
    max_in: int | None = None
    seen: bool = False  # any event printed yet
    last_time: float | None = None
    shown: int = 0  # eligible lines printed individually in the current run
    data_dirs: set[str] = field(default_factory=set)  # directions carrying data in the run
    run: _Run | None = None  # set once the run is being collapsed


@dataclass(slots=True)
class _Held:
    """An arrow we sent, kept back until we know whether a state change goes with it."""

    conn: _Conn
    now: float
    middle: str
    peer: str | None
    carries: frozenset[str]  # our states this segment is the visible sign of
    fin: bool
    label: str = ""


def _carries(flags: int, acks_peer_fin: bool) -> frozenset[str]:
    """Which of our state changes an outgoing segment can be the arrow of.

    Lets the ladder put a state on its arrow whichever order the endpoint
    reports them in (state then segment, or a batch of segments then states).
    """
    states = set()
    if flags & SYN:
        states.add("SYN_RECEIVED")
        if not flags & ACK:
            states.add("SYN_SENT")
    elif flags & ACK and not flags & (FIN | RST):
        states.add("ESTABLISHED")
    if flags & FIN:
        states.update(("FIN_WAIT_1", "LAST_ACK"))
    if acks_peer_fin:
        states.update(("CLOSE_WAIT", "CLOSING", "TIME_WAIT"))
    if flags & RST:
        states.add("CLOSED")
    return frozenset(states)


# Our states an outgoing SYN, FIN or RST shows we have left: sending one moves us
# on (RFC 9293 figure 5), so a state still waiting for an arrow is out of date.
_LEFT_BY_SYN = frozenset(("CLOSED", "LISTEN"))
_LEFT_BY_SYN_ACK = frozenset(("CLOSED", "LISTEN", "SYN_SENT"))
_LEFT_BY_FIN = frozenset(("SYN_RECEIVED", "ESTABLISHED", "CLOSE_WAIT"))
_LEFT_BY_RST = frozenset(
    ("SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK")
)


def _moves_on(flags: int, state: str) -> bool:
    """Whether we could have sent a segment with these flags only after leaving ``state``."""
    if flags & RST:
        return state in _LEFT_BY_RST
    if flags & FIN and state in _LEFT_BY_FIN:
        return True
    if flags & SYN:
        return state in (_LEFT_BY_SYN_ACK if flags & ACK else _LEFT_BY_SYN)
    return False


class LadderTracer(Tracer):
    """A ladder diagram on a text stream, the way TCP is drawn in textbooks.

    Left column: this end's states (from ``on_state``); middle: one arrow per
    segment (``-->`` we sent, ``<--`` we received); right column: the peer's
    states in parentheses, *inferred* from the segments by RFC 9293's
    transitions because the peer's real state is not observable.  Sequence
    numbers are relative to each side's ISN unless ``relative=False``.  Runs of
    plain data/ACK segments in a steady state show their first ``keep`` lines,
    then collapse into one summary line, written when a flag, a state change,
    data in a new direction, a pause longer than ``idle`` seconds or
    :meth:`close` ends the run, so a bulk transfer stays a few lines long.
    ``width`` is the width of the arrow column; ``timestamps`` prefixes lines
    with seconds since the first event; ``windows`` shows every window.
    Several connections share the stream: a ``[n] local <-> remote`` header
    line marks where the output switches to another connection.

    A state change goes on the arrow of the segment that shows it (our SYN for
    SYN_SENT, our FIN for FIN_WAIT_1, ...) whether it is reported just before
    that segment or just after it, so an outgoing SYN/FIN/RST line may appear
    one event late; other states print on the next arrow we send, or alone
    (also when that arrow is sent in a newer state: a client's ESTABLISHED,
    whose ACK it held for its first segment, when that segment is a FIN).
    """

    def __init__(
        self,
        file: TextIO | None = None,
        relative: bool = True,
        width: int = 44,
        *,
        keep: int = 6,
        idle: float = 1.0,
        timestamps: bool = False,
        windows: bool = False,
    ) -> None:
        self._file = file if file is not None else sys.stderr
        self.relative = relative
        self.width = width
        self.keep = keep
        self.idle = idle
        self.timestamps = timestamps
        self.windows = windows
        self._conns: dict[tuple, _Conn] = {}
        self._closed: collections.deque[tuple[tuple, _Conn]] = collections.deque()
        self._count = 0
        self._current: _Conn | None = None
        self._held: _Held | None = None
        self._t0: float | None = None

    # -- events

    def on_state(self, now: float, local: tuple, remote: tuple, old: str, new: str) -> None:
        conn = self._conn(local, remote)
        if conn.seen and (
            conn.our_state == "CLOSED"
            or (old in ("CLOSED", "LISTEN") and conn.our_state not in (None, old))
        ):
            # The endpoint reuses an address pair (TIME_WAIT reuse, reconnect).
            conn = self._new_incarnation(conn)
        conn.our_state = new
        conn.last_time = now
        held = self._held
        if held is not None and held.conn is conn:
            if new in held.carries:
                if (
                    held.label
                ):  # an earlier state of the same batch, e.g. CLOSE_WAIT before LAST_ACK
                    self._line(conn, held.now, held.label, "", None)
                held.label = new
                # A FIN also acking the peer's FIN shows two states; wait for the second.
                if not held.fin or new in ("FIN_WAIT_1", "LAST_ACK"):
                    self._release()
            elif not held.label:
                # Reported with the held segment but not shown by it (LISTEN on the
                # way to SYN_RECEIVED): it happened first, so print it first.
                self._line(conn, held.now, new, "", None)
            else:
                self._release()
                conn.pending = (now, new)
            if new == "CLOSED":
                self._retire(local, remote, conn)
            return
        self._release()
        self._end_run(conn)
        if conn.pending is not None:
            self._emit_pending(conn)
        if new == "CLOSED":
            # Nothing will follow to carry the label, and holding it until close()
            # would print it far from where it happened.
            self._line(conn, now, new, "", None)
            self._retire(local, remote, conn)
        else:
            conn.pending = (now, new)

    def on_segment(
        self, now: float, direction: str, local: tuple, remote: tuple, seg: Segment
    ) -> None:
        if direction not in ("out", "in"):
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        self._release()
        out = direction == "out"
        conn = self._conn(local, remote)
        flags = int(seg.flags)
        if flags & SYN:
            isn = conn.our_isn if out else conn.peer_isn
            if isn is None or isn == seg.seq:
                self._learn_syn(conn, out, seg)
            elif out or conn.our_state != "TIME_WAIT":
                conn = self._new_incarnation(conn)  # a new connection on the same addresses
                self._learn_syn(conn, out, seg)
            # else: a new SYN that our connection in TIME_WAIT answers itself: when
            # the listener takes it instead (a TIME_WAIT reopen), the endpoint says
            # CLOSED -> LISTEN first, which starts the new incarnation in on_state.
        if conn.ports is None:
            conn.ports = (seg.src_port, seg.dst_port) if out else (seg.dst_port, seg.src_port)
        if conn.last_time is not None and now - conn.last_time > self.idle:
            self._end_run(conn)
        conn.last_time = now
        if not out and conn.pending is not None:
            self._end_run(conn)
            self._emit_pending(conn)

        n = len(seg.payload)
        retx = self._track_sequence(conn, out, seg, n)
        old_peer = conn.peer_state
        new_peer = self._infer_peer(conn, out, seg, flags)
        conn.peer_state = new_peer
        plain = not flags & _CONTROL and flags & ACK and new_peer == old_peer
        if plain and conn.pending is None:
            if conn.run is not None and n and direction not in conn.data_dirs:
                self._end_run(conn)  # the other side starts talking: show it
            if conn.run is None and conn.shown >= self.keep:
                conn.run = _Run(now)
            if conn.run is not None:
                self._count_into(conn.run, out, n, retx)
                return
            conn.shown += 1
            if n:
                conn.data_dirs.add(direction)
        else:
            self._end_run(conn)
        middle = self._arrow(conn, out, seg)
        peer = new_peer if new_peer != old_peer else None
        if out and conn.pending is not None and _moves_on(flags, conn.pending[1]):
            # Sent after leaving the pending state (our FIN in ESTABLISHED, when the
            # handshake's ACK was held for it): the state it shows is reported next,
            # with a time before the segment's, so the pending state is overtaken and
            # prints alone, and the arrow is held for its own state.
            self._emit_pending(conn)
        if out and conn.pending is not None:
            label = conn.pending[1]
            conn.pending = None
            self._line(conn, now, label, middle, peer)
        elif out and not plain:
            acks_fin = bool(
                flags & ACK
                and conn.peer_fin_end is not None
                and _seq_at_or_after(seg.ack, conn.peer_fin_end)
            )
            carries = _carries(flags, acks_fin)
            self._held = _Held(conn, now, middle, peer, carries, bool(flags & FIN))
        else:
            self._line(conn, now, "", middle, peer)

    def close(self) -> None:
        self._release()
        for conn in list(self._conns.values()):
            self._end_run(conn)
            if conn.pending is not None:
                self._emit_pending(conn)
        self._file.flush()

    # -- connection table

    def _conn(self, local: tuple, remote: tuple) -> _Conn:
        key = (local, remote)
        conn = self._conns.get(key)
        if conn is None:
            self._count += 1
            # A wildcard-bound socket's real source address, as the pcap shows it.
            conn = self._conns[key] = _Conn(self._count, key, route_source(local, remote), remote)
        return conn

    def _new_incarnation(self, old: _Conn) -> _Conn:
        """A new connection reusing the address pair: fresh ISNs, states and numbering."""
        self._release()
        self._end_run(old)
        if old.pending is not None:
            self._emit_pending(old)
        self._count += 1
        # Under the key the events come with, not the header's routed address: a
        # wildcard-bound socket (every client) reports 0.0.0.0, and filing the new
        # incarnation under 127.0.0.1 sent its later events to the old one.
        conn = self._conns[old.key] = _Conn(self._count, old.key, old.local, old.remote)
        return conn

    def _retire(self, local: tuple, remote: tuple, conn: _Conn) -> None:
        """Forget closed connections eventually: thousands of short ones must not pile up.

        The last few stay, so a late RST or retransmission still prints with
        relative numbers against the right ISNs.
        """
        self._closed.append(((local, remote), conn))
        while len(self._closed) > 64:
            key, old = self._closed.popleft()
            if self._conns.get(key) is old and old.our_state == "CLOSED":
                del self._conns[key]

    # -- inference

    def _learn_syn(self, conn: _Conn, out: bool, seg: Segment) -> None:
        if out:
            conn.our_isn = seg.seq
            conn.our_wscale = _window_shift(seg)
        else:
            conn.peer_isn = seg.seq
            conn.peer_wscale = _window_shift(seg)

    def _track_sequence(self, conn: _Conn, out: bool, seg: Segment, n: int) -> bool:
        """Note the sequence range sent; True if data was sent before (a retransmission)."""
        flags = int(seg.flags)
        end = (seg.seq + n + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) % _MOD
        top = conn.max_out if out else conn.max_in
        retx = n > 0 and top is not None and _seq_before(seg.seq, top)
        if top is None or _seq_after(end, top):
            if out:
                conn.max_out = end
            else:
                conn.max_in = end
        if flags & FIN:
            if out:
                conn.our_fin_end = end
            else:
                conn.peer_fin_end = end
        return retx

    def _infer_peer(self, conn: _Conn, out: bool, seg: Segment, flags: int) -> str | None:
        """The peer's state after this segment, by RFC 9293's transitions.

        Segments we send change the peer's state when they arrive (assumed: the
        ladder shows intent, not loss); segments it sends show what it did.
        """
        state = conn.peer_state
        if flags & RST:
            return "CLOSED"
        if out:
            # The peer processes our ACK first, then our SYN/FIN (RFC 9293 3.10.7.4).
            if flags & ACK:
                # A peer in SYN_SENT takes only a SYN,ACK; a bare ACK (TIME_WAIT
                # answering its new SYN) it refuses with a RST (RFC 9293 3.10.7.3).
                if (
                    (state == "SYN_RECEIVED" or (state == "SYN_SENT" and flags & SYN))
                    and conn.peer_isn is not None
                    and _seq_after(seg.ack, conn.peer_isn)
                ):
                    state = "ESTABLISHED"
                if conn.peer_fin_end is not None and _seq_at_or_after(seg.ack, conn.peer_fin_end):
                    state = _ACKED_FIN.get(state, state)
            if flags & SYN and not flags & ACK and state == "SYN_SENT":
                state = "SYN_RECEIVED"  # simultaneous open
            if flags & FIN:
                state = _GETS_FIN.get(state, state)
            return state
        if flags & SYN:
            if flags & ACK:
                if state in (None, "LISTEN", "SYN_SENT", "CLOSED"):
                    state = "SYN_RECEIVED"
            elif state in (None, "LISTEN", "CLOSED"):
                state = "SYN_SENT"
        elif flags & ACK and state in ("SYN_SENT", "SYN_RECEIVED"):
            state = "ESTABLISHED"  # it only talks like this once established
        if flags & FIN:
            state = _SENDS_FIN.get(state, state)
        return state

    # -- output

    def _arrow(self, conn: _Conn, out: bool, seg: Segment) -> str:
        if self.relative:
            isn_out, isn_in = (
                (conn.our_isn, conn.peer_isn) if out else (conn.peer_isn, conn.our_isn)
            )
        else:
            isn_out = isn_in = None
        shift = 0
        if conn.our_wscale is not None and conn.peer_wscale is not None:
            shift = conn.our_wscale if out else conn.peer_wscale
        text = format_segment(seg, isn_out, isn_in, win_shift=shift, show_window=self.windows)
        return f"-- {text} -->" if out else f"<-- {text} --"

    def _count_into(self, run: _Run, out: bool, n: int, retx: bool) -> None:
        if out:
            if n:
                run.data_out += 1
                run.bytes_out += n
                run.retx_out += retx
            else:
                run.acks_out += 1
        elif n:
            run.data_in += 1
            run.bytes_in += n
            run.retx_in += retx
        else:
            run.acks_in += 1

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._line(held.conn, held.now, held.label, held.middle, held.peer)

    def _end_run(self, conn: _Conn) -> None:
        if conn.run is not None:
            run, conn.run = conn.run, None
            self._line(conn, run.start, "", run.text(), None)
        conn.shown = 0
        conn.data_dirs.clear()

    def _emit_pending(self, conn: _Conn) -> None:
        assert conn.pending is not None
        when, state = conn.pending
        conn.pending = None
        self._line(conn, when, state, "", None)

    def _line(self, conn: _Conn, now: float, left: str, middle: str, peer: str | None) -> None:
        if self._t0 is None:
            self._t0 = now
        write = self._file.write
        if self._current is not conn:
            self._current = conn
            write(self._header(conn) + "\n")
        conn.seen = True
        line = left.ljust(_LEFT) + middle
        if peer is not None:
            line = line.ljust(_LEFT + self.width) + f"  ({peer})"
        if self.timestamps:
            line = f"{now - self._t0:10.6f}  " + line
        write(line.rstrip() + "\n")

    def _header(self, conn: _Conn) -> str:
        text = f"[{conn.ident}] {format_address(conn.local)} <-> {format_address(conn.remote)}"
        if conn.ports is not None and conn.ports != (conn.local[1], conn.remote[1]):
            text += f" (rtcp ports {conn.ports[0]} <-> {conn.ports[1]})"
        if not conn.seen:
            text += "   left: this end, right: (peer state, inferred)"
        return text


# The peer's state transitions, keyed by its state before (RFC 9293 figure 5).
_ACKED_FIN: dict[str | None, str | None] = {
    "FIN_WAIT_1": "FIN_WAIT_2",
    "CLOSING": "TIME_WAIT",
    "LAST_ACK": "CLOSED",
}
_GETS_FIN: dict[str | None, str | None] = {
    "ESTABLISHED": "CLOSE_WAIT",
    "FIN_WAIT_1": "CLOSING",
    "FIN_WAIT_2": "TIME_WAIT",
}
_SENDS_FIN: dict[str | None, str | None] = {
    None: "FIN_WAIT_1",
    "SYN_RECEIVED": "FIN_WAIT_1",
    "ESTABLISHED": "FIN_WAIT_1",
    "CLOSE_WAIT": "LAST_ACK",
}


# --------------------------------------------------------------------------- pcap

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
LINKTYPE_RAW = 101
_SNAPLEN = 262144  # an IPv6 header plus a 65507-byte datagram exceeds 65535


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: object) -> _IP:
    """The IP of a socket address's host, IPv4-mapped IPv6 unwrapped to IPv4.

    A name or junk becomes the unspecified address (the endpoint's addresses
    are numeric anyway, and a tracer must never break a connection); a scoped
    IPv6 address (``fe80::1%eth0``) loses its scope.
    """
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return ipaddress.IPv4Address(0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _as_ipv6(ip: _IP) -> ipaddress.IPv6Address:
    return ip if isinstance(ip, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{ip}")


class PcapTracer(Tracer):
    """Every segment as a TCP/IP packet in a classic pcap file Wireshark reads.

    The datagram's UDP addresses become synthetic IPv4 or IPv6 headers
    (LINKTYPE_RAW, so both families fit one file) and our header becomes the
    TCP header, with its checksum recomputed over the TCP pseudo-header so tools
    see valid TCP.  Each record goes to the OS in one write as it happens, so a
    killed process leaves a file of whole records.  Timestamps map the first
    ``now`` to the wall clock.  A path is opened and closed by the tracer; a
    binary file object is flushed but left open for its owner.
    """

    def __init__(self, path_or_file: str | os.PathLike[str] | BinaryIO) -> None:
        self._file: IO[bytes]
        if isinstance(path_or_file, str | os.PathLike):
            self._file = open(path_or_file, "wb", buffering=0)
            self._owned = True
        else:
            self._file = path_or_file
            self._owned = False
        self._ip_id = 0
        self._offset: float | None = None  # wall clock minus trace clock
        self._hosts: dict[tuple[object, object], tuple[_IP, _IP]] = {}
        self._closed = False
        self._write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_RAW))

    def on_segment(
        self, now: float, direction: str, local: tuple, remote: tuple, seg: Segment
    ) -> None:
        if self._closed:
            return
        if direction not in ("out", "in"):
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        ours, theirs = self._ips(local[0], remote[0])
        src, dst = (ours, theirs) if direction == "out" else (theirs, ours)
        tcp = bytearray(encode(seg))
        length = len(tcp)
        tcp[16:18] = b"\0\0"
        if src.version == 4:
            pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, length)
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = bytearray(
                _IPV4_HEADER.pack(
                    0x45, 0, 20 + length, self._ip_id, 0x4000, 64, 6, 0, src.packed, dst.packed
                )
            )
            ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
        else:
            pseudo = src.packed + dst.packed + struct.pack("!IxxxB", length, 6)
            ip = bytearray(_IPV6_HEADER.pack(0x60000000, length, 6, 64, src.packed, dst.packed))
        tcp[16:18] = internet_checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
        if self._offset is None:
            self._offset = time.time() - now
        micros = round((now + self._offset) * 1_000_000)
        sec, usec = divmod(micros, 1_000_000)
        size = len(ip) + length
        self._write(_RECORD_HEADER.pack(sec, usec, size, size) + ip + tcp)

    def _ips(self, local: object, remote: object) -> tuple[_IP, _IP]:
        """Our IP and the peer's, cached per host pair.

        A socket bound to the wildcard (every client socket, ``host=None``
        listeners) reports ``0.0.0.0``/``::``; the route's source address is
        what the packets really carry and what Wireshark's conversations need.
        """
        key = (local, remote)
        ips = self._hosts.get(key)
        if ips is None:
            ours, theirs = _ip(local), _ip(remote)
            if ours.is_unspecified:
                wildcard = "0.0.0.0" if theirs.version == 4 else "::"  # theirs: v4-mapped unwrapped
                ours = _ip(route_source((wildcard, 0), (str(theirs), 9))[0])
            if ours.version != theirs.version:  # only a dual-stack oddity; keep the file valid
                ours, theirs = _as_ipv6(ours), _as_ipv6(theirs)
            if len(self._hosts) >= 4096:
                self._hosts.clear()
            ips = self._hosts[key] = (ours, theirs)
        return ips

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[len(view) if written is None else written :]
        if not self._owned:
            self._file.flush()


# --------------------------------------------------------------------------- others


class MultiTracer(Tracer):
    """Fan each event out to several tracers (``--trace`` with ``--pcap``)."""

    def __init__(self, *tracers: Tracer) -> None:
        self.tracers = tracers

    def on_segment(
        self, now: float, direction: str, local: tuple, remote: tuple, seg: Segment
    ) -> None:
        for tracer in self.tracers:
            tracer.on_segment(now, direction, local, remote, seg)

    def on_state(self, now: float, local: tuple, remote: tuple, old: str, new: str) -> None:
        for tracer in self.tracers:
            tracer.on_state(now, local, remote, old, new)

    def close(self) -> None:
        for tracer in self.tracers:
            tracer.close()


class LoggingTracer(Tracer):
    """Segments at DEBUG and state changes at INFO through ``logging`` (``--verbose``).

    Numbers are absolute, so log lines can be matched against a pcap. Segment
    lines are only formatted when DEBUG is enabled, since they come per packet.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("rtcp.trace")

    def on_segment(
        self, now: float, direction: str, local: tuple, remote: tuple, seg: Segment
    ) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            arrow = "->" if direction == "out" else "<-"
            self.logger.debug(
                "%s %s %s %s",
                format_address(local),
                arrow,
                format_address(remote),
                format_segment(seg, show_window=True, show_options=True),
            )

    def on_state(self, now: float, local: tuple, remote: tuple, old: str, new: str) -> None:
        self.logger.info(
            "%s <-> %s: %s -> %s", format_address(local), format_address(remote), old, new
        )
