"""The sans-I/O TCP connection: RFC 9293's state machine with reliable delivery.

A :class:`Connection` never touches a socket or a clock.  The driver feeds it
decoded segments (:meth:`Connection.handle_segment`), fires its timer
(:meth:`Connection.handle_timer` at :meth:`Connection.timer`), makes user calls
(:meth:`send`, :meth:`receive`, :meth:`shutdown`, :meth:`close`, :meth:`abort`),
and collects what to transmit (:meth:`segments_to_send`) and what happened
(:meth:`events`).  Every call takes ``now`` in seconds, so tests run on virtual
time.

Sequence numbers are unwrapped to unbounded ints on arrival (``seq.unwrap``)
and wrapped to 32 bits only when a segment is built, so no comparison in this
file has to think about wraparound.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections import deque

from ..config import HEADER_SIZE, Config
from ..segment import Segment, new_segment
from . import events as ev
from .model import PathModel
from .ranges import RangeSet
from .rto import RttEstimator
from .sendbuf import SendBuffer
from .seq import HALF, MASK, seq_diff, unwrap
from .stats import ConnectionStats

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
OPT_MSS, OPT_WSCALE, OPT_SACK_OK, OPT_SACK, OPT_TS = 2, 3, 4, 5, 8
#: Bytes the timestamp option costs on every segment (10 + 2 padding).
TS_OPTION_SPACE = 12
#: TCP's default MSS when the peer sends no MSS option (RFC 9293 3.7.1).
DEFAULT_MSS = 536
DUP_THRESH = 3
MAX_WSCALE = 14
#: Most separate SACKed ranges the sender tracks; blocks that would add more are
#: ignored (SACK is advisory, RFC 2018), which bounds memory and the work per ACK.
MAX_SACK_RANGES = 64
#: RTO for the first data when a SYN timed out and the handshake gave no RTT
#: sample (RFC 6298 5.7): the path may be far slower than the 1 s guess.
SYN_TIMEOUT_RTO = 3.0
#: In-order payloads shorter than this are gathered into one bytearray in the
#: receive queue rather than queued each as its own object: a peer writing a
#: byte per segment to a reader that does not read would otherwise cost ~50
#: bytes of memory per byte the receive buffer counts.  (Longer ones are
#: queued as they arrived: gathering would copy them once more.)
GATHER_BELOW = 512
#: A gathering bytearray is closed at this size (a new one starts).
GATHER_MAX = 65536
#: ICMP "port unreachable" while synchronized starts an episode of probes (RTO
#: apart, doubling); when this many rounds (the first report's included) drew a
#: report and the peer answered none, the peer's process is gone (a killed
#: process sends no FIN and no RST) and the connection gives up.
UNREACHABLE_STRIKES = 3
#: Probes an episode sends at most; then, inconclusive, it ends quietly.
UNREACHABLE_PROBES = 6
#: A writer blocked with more to send (send(more=True)) holds a runt without
#: the autocork timer only while this many full segments are in flight.
MORE_HOLD_SEGMENTS = 8


class State(enum.StrEnum):
    """RFC 9293's connection states; the value is the name users see."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"


class S:
    """The :class:`State` members as plain class attributes, for the hot paths.

    On Python 3.11 ``State.X`` goes through ``EnumType.__getattr__`` (a Python
    call: about 860 instructions, some 80 times per connection); ``S.X`` is an
    ordinary class attribute.
    """

    CLOSED = State.CLOSED
    LISTEN = State.LISTEN
    SYN_SENT = State.SYN_SENT
    SYN_RECEIVED = State.SYN_RECEIVED
    ESTABLISHED = State.ESTABLISHED
    FIN_WAIT_1 = State.FIN_WAIT_1
    FIN_WAIT_2 = State.FIN_WAIT_2
    CLOSE_WAIT = State.CLOSE_WAIT
    CLOSING = State.CLOSING
    LAST_ACK = State.LAST_ACK
    TIME_WAIT = State.TIME_WAIT


SYNCHRONIZED = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
                          S.CLOSING, S.LAST_ACK, S.TIME_WAIT})
#: States in which we may still send data we have queued.
SENDING = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
#: States in which the peer may still send us data.
RECEIVING = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
#: States in which our FIN has been queued or sent.
FIN_STATES = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})

#: Events are immutable: the field-less ones, and every state change, are made
#: once here rather than per connection (a frozen dataclass's __init__ is slow).
_CONNECTED = ev.Connected()
_CONNECTION_CLOSED = ev.ConnectionClosed()
_EOF_RECEIVED = ev.EofReceived()
_SEND_SPACE = ev.SendSpaceAvailable()
_STATE_CHANGED = {(old, new): ev.StateChanged(old.value, new.value)
                  for old in State for new in State if old is not new}


#: Longest an active opener holds the handshake's final ACK for its first
#: segment (seconds; at most ``Config.delayed_ack``), see Connection.connect.
HANDSHAKE_ACK_HOLD = 0.002


class ConnectionStateError(Exception):
    """A user call that the connection's state does not allow."""


def reset_for(seg: Segment) -> Segment | None:
    """The RST that answers ``seg`` when no connection wants it (RFC 9293 3.10.7.1).

    Never answers an RST, so two stacks cannot ping-pong resets.
    """
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    seg_len = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
    return Segment(seg.dst_port, seg.src_port, 0, (seg.seq + seg_len) & MASK, RST | ACK, 0)


def _wscale_for(buffer: int) -> int:
    """The smallest shift with ``buffer >> shift <= 0xFFFF`` (at most MAX_WSCALE)."""
    shift = buffer.bit_length() - 16  # computed, not looked for: once per connection
    return 0 if shift < 0 else shift if shift < MAX_WSCALE else MAX_WSCALE


class Connection:
    """One TCP connection's protocol state.  See the module docstring."""

    # Slots: with ~100 attributes an instance dict outgrows CPython's shared-key
    # dicts, so every attribute access took the slow path and __init__ resized
    # the dict several times.  "__dict__" keeps arbitrary attributes working
    # (tests patch methods on instances).
    __slots__ = (
        "_ack_now", "_ack_pending", "_bw_bytes", "_bw_t0", "_bwe", "_ca_acc",
        "_chack_count", "_chack_window", "_connect_deadline", "_cork_deadline",
        "_cork_spent", "_created", "_delack_deadline", "_dupacks", "_events", "_fin_queued",
        "_fin_seq", "_icmp_counted", "_icmp_probe_deadline", "_icmp_rounds", "_icmp_since",
        "_icmp_strikes", "_in_recovery", "_ka_deadline", "_ka_probes", "_last_ack_sent",
        "_last_ooo", "_last_recv_time", "_last_xmit", "_lost", "_max_datagram",
        "_max_snd_wnd", "_min_rtt", "_model", "_model_round_end", "_more_coming", "_ooo", "_ooo_ranges",
        "_orphan_deadline", "_out", "_passive", "_peer_fin_seq", "_peer_mss",
        "_peer_sent_options", "_persist_backoff", "_persist_deadline", "_progress_time",
        "_rack_deadline", "_rack_end", "_rack_rtt", "_rack_xmit", "_rcv_adv", "_rcv_bytes",
        "_rcv_off", "_rcv_wscale", "_rcvbuf", "_reader_closed", "_recover",
        "_reordering_seen", "_round_app_limited", "_round_bytes", "_round_end",
        "_round_rtt", "_round_rtx", "_round_t0", "_rto_deadline", "_rtt", "_rtt_seq",
        "_rtt_time", "_rtx_done", "_rtx_ever", "_rtx_force", "_rtx_starts", "_rtx_times",
        "_sack_news", "_sack_ok", "_sack_sent", "_sacked", "_snd_wl1", "_snd_wl2",
        "_snd_wscale", "_snd_wscale_offered", "_sndbuf", "_timewait_deadline",
        "_tlp_deadline", "_tlp_fired", "_ts_offset", "_ts_ok", "_ts_recent",
        "_ts_recent_valid", "_unacked_segments", "_veno_rtt", "_wnd_field", "_wnd_key",
        "_xmit_head", "_xmit_starts", "_xmit_times", "ack_held", "config", "cwnd", "eof_received",
        "error", "irs", "iss", "local_port", "mss", "rcv_nxt", "remote_port", "snd_nxt",
        "snd_una", "snd_wnd", "ssthresh", "state", "stats", "__dict__", "__weakref__",
    )

    def __init__(
        self,
        config: Config,
        local_port: int,
        remote_port: int,
        *,
        iss: int,
        now: float,
        max_datagram: int | None = None,
        ts_offset: int | None = None,
    ) -> None:
        self.config = config
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = S.CLOSED
        self.stats = ConnectionStats()
        self.stats.congestion_control = config.congestion_control
        self._events: list[ev.Event] = []
        self._out: list[Segment] = []
        self._max_datagram = max_datagram or config.max_datagram
        self._created = now

        # --- send side (all sequence numbers unwrapped) ---
        self.iss = iss & MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss  # one past the highest sequence number sent
        # Queued, unacknowledged data: sequence numbers [_sndbuf.start,
        # _sndbuf.end) (data starts after the SYN).
        self._sndbuf = SendBuffer(self.iss + 1)
        self._fin_queued = False
        self._fin_seq: int | None = None  # set when the FIN is first sent
        self.snd_wnd = 0
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._max_snd_wnd = 0
        self._snd_wscale = 0
        self._rcv_wscale = _wscale_for(config.receive_buffer) if config.window_scale else 0
        self._sack_ok = False
        self._ts_ok = False
        self._peer_mss = DEFAULT_MSS
        self._passive = False  # SYN_RECEIVED reached from LISTEN, not simultaneous open
        self._snd_wscale_offered = False
        self._peer_sent_options = False
        self.mss = self._max_datagram - HEADER_SIZE  # payload per segment, set at handshake
        self.cwnd = 0
        self.ssthresh = 1 << 62
        self._ca_acc = 0
        self._in_recovery = False
        self._recover = 0
        self._dupacks = 0
        self._sacked = RangeSet()
        self._lost = RangeSet()
        self._rtx_done = RangeSet()
        self._rtx_force = False
        # Send times, for time-based loss detection (RACK-like, RFC 8985):
        # new data in sequence order, and the latest retransmission per range.
        self._xmit_starts: list[int] = []
        self._xmit_times: list[float] = []
        self._xmit_head = 0
        # When each retransmitted range was last sent: an interval map, the
        # entry at _rtx_starts[i] covering up to the next start (within
        # _rtx_done), so a range later split by SACKs keeps its time.
        self._rtx_starts: list[int] = []
        self._rtx_times: list[float] = []
        self._tlp_deadline: float | None = None
        self._tlp_fired = False
        self._rack_deadline: float | None = None
        # RACK.xmit_ts and RACK.end_seq (RFC 8985): when the latest-sent
        # segment known to be delivered was sent, and where it ended.
        self._rack_xmit = 0.0
        self._rack_end = 0
        self._rack_rtt = 0.0  # RACK.rtt: how long the latest delivery took
        self._last_xmit = now  # when data was last sent, first or again
        # RFC 8985's RACK.reordering_seen: an original transmission was
        # delivered after data sent later.  From then on loss is declared by
        # time only, not by DupThresh segments above a hole.
        self._reordering_seen = False
        # Every byte ever retransmitted (until ACKed): unlike _rtx_done, not
        # cleared by an RTO or by marking a retransmission lost again, so a
        # late retransmission is never taken for an overtaken original.
        self._rtx_ever = RangeSet()
        # Westwood+ delivery-rate estimate (bytes/s) and minimum RTT.
        self._bwe = 0.0
        self._bw_bytes = 0
        self._bw_t0 = now
        self._min_rtt = 0.0
        # TCP Veno's RTT: the smallest sample of the last round trip, so that one
        # delayed sample does not make a random loss look like congestion.
        self._round_end = 0
        self._round_rtt = 0.0
        self._veno_rtt = 0.0
        # congestion_control="bbr": the path model, and this round's deliveries.
        self._model = PathModel() if config.congestion_control == "bbr" else None
        self._model_round_end = 0
        self._round_rtx = 0  # stats.bytes_retransmitted when the model round began
        self._round_app_limited = False  # the application left the window unfilled
        self._round_bytes = 0
        self._round_t0 = now
        self._rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self._rtt_seq: int | None = None  # Karn timing when timestamps are off
        self._rtt_time = 0.0
        self._rto_deadline: float | None = None
        self._progress_time = now  # for the user timeout
        self._persist_deadline: float | None = None
        self._persist_backoff = 0

        # --- receive side ---
        self.irs = 0
        self.rcv_nxt = 0
        # In-order data for the application: the segments' payloads as they
        # arrived (no copy on arrival: large ones are views of their datagrams,
        # see segment.decode_view), short ones gathered into bytearrays
        # (_enqueue); _rcv_off bytes of the first are read.
        self._rcvbuf: deque[bytes | bytearray | memoryview] = deque()
        self._rcv_off = 0
        self._rcv_bytes = 0
        self._ooo: dict[int, bytes | memoryview] = {}
        self._ooo_ranges = RangeSet()
        self._last_ooo: tuple[int, int] | None = None
        # A point in each block that out-of-order data joined since our last
        # ACK (oldest first): those blocks lead the next ACK's SACK option.
        self._sack_news: list[int] = []
        # A point in each block our last SACK option reported: repeated next.
        self._sack_sent: list[int] = []
        self._peer_fin_seq: int | None = None
        self._rcv_adv = 0  # right edge of the window we last advertised
        self._wnd_key: tuple = ()
        self._wnd_field = 0
        self.eof_received = False
        self._reader_closed = False
        self._ack_pending = False
        self._ack_now = False
        #: The handshake's final ACK waits for our first segment (see connect).
        self.ack_held = False
        self._unacked_segments = 0
        self._delack_deadline: float | None = None
        # Autocork: when the held runt must go, and whether it has been held
        # already (once it has waited its time it is not held again).
        self._cork_deadline: float | None = None
        self._cork_spent = False
        # The writer has more for as soon as buffer space opens (send(more=True)).
        self._more_coming = False

        # --- timestamps (RFC 7323), 1 ms ticks ---
        self._ts_offset = random.getrandbits(32) if ts_offset is None else ts_offset
        self._ts_recent = 0
        self._ts_recent_valid = False
        self._last_ack_sent = 0  # RCV.NXT in the last ACK we sent (RFC 7323 4.3)

        # --- other timers ---
        self._connect_deadline: float | None = None
        self._timewait_deadline: float | None = None
        self._orphan_deadline: float | None = None
        self._last_recv_time = now
        self._ka_probes = 0
        self._ka_deadline: float | None = None
        # ICMP unreachable while synchronized: probed, not trusted (see on_unreachable).
        self._icmp_since = -1.0  # when the current episode started
        self._icmp_rounds = 0  # probes sent in it
        self._icmp_strikes = 0  # rounds that drew a report
        self._icmp_counted = False  # the current round drew one already
        self._icmp_probe_deadline: float | None = None  # set while an episode runs
        self._chack_window = now
        self._chack_count = 0
        self.error: ev.Event | None = None

    @classmethod
    def from_cookie(cls, config: Config, local_port: int, remote_port: int, *, iss: int,
                    irs: int, mss: int, now: float, max_datagram: int | None = None,
                    ts_offset: int | None = None) -> Connection:
        """A passive connection rebuilt from a valid SYN cookie (see ``cookies``).

        It starts in SYN_RECEIVED as if our SYN-ACK had been sent with no
        options; the caller then feeds it the handshake's final ACK.
        """
        conn = cls(config, local_port, remote_port, iss=iss, now=now,
                   max_datagram=max_datagram, ts_offset=ts_offset)
        conn._passive = True
        conn.irs = irs & MASK
        conn.rcv_nxt = conn.irs + 1
        conn._rcv_wscale = conn._snd_wscale = 0
        conn._rcv_adv = conn.rcv_nxt + min(conn._free_space(), 0xFFFF)
        conn._peer_mss = mss
        conn.mss = max(64, min(mss, conn._max_datagram - HEADER_SIZE))
        conn.snd_nxt = conn.iss + 1
        conn._last_ack_sent = conn.rcv_nxt
        conn._connect_deadline = now + config.connect_timeout
        conn._set_state(S.SYN_RECEIVED)
        return conn

    # ------------------------------------------------------------------ API
    def connect(self, now: float, hold_ack: bool = False) -> None:
        """Active open: send a SYN and enter SYN_SENT.

        ``hold_ack``: an application will use the connection at once, so hold
        the handshake's final ACK (for up to ``HANDSHAKE_ACK_HOLD``, never with
        ``delayed_ack=0``) for its first segment to carry, as Linux does for a
        write that waits on the connection; :meth:`release_held_ack` sends it
        when the application waits for the peer instead."""
        if self.state is not S.CLOSED:
            raise ConnectionStateError(f"connect() in state {self.state}")
        self.ack_held = hold_ack and self.config.delayed_ack > 0
        self._connect_deadline = now + self.config.connect_timeout
        self._set_state(S.SYN_SENT)
        self._send_syn(now)

    def listen(self) -> None:
        """Passive open: wait for a SYN (the endpoint's listener does this per SYN)."""
        if self.state is not S.CLOSED:
            raise ConnectionStateError(f"listen() in state {self.state}")
        self._set_state(S.LISTEN)

    @property
    def send_space(self) -> int:
        """Bytes :meth:`send` would accept now."""
        return max(0, self.config.send_buffer - len(self._sndbuf))

    @property
    def can_send(self) -> bool:
        return not self._fin_queued and self.state in (
            S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT)

    def send(self, data: bytes | bytearray | memoryview, now: float, *,
             more: bool = False) -> int:
        """Queue up to :attr:`send_space` bytes of ``data``; return how many.

        ``data`` may be any buffer; a view of other items than bytes (say a
        2-D or ``"i"`` view) counts its bytes, not its items.  ``more`` (as
        MSG_MORE): the writer has more data and will send it as soon as space
        opens, so a runt at the end of the queue, behind MORE_HOLD_SEGMENTS
        full segments in flight, waits for it without the autocork timer.  It
        holds until the next ``send``: a writer that gives up says so with
        ``send(b"", now)`` (else the runt waits until the data ahead of it is
        acknowledged)."""
        self._more_coming = more
        if not self.can_send:
            raise ConnectionStateError(f"send() in state {self.state}")
        if data.__class__ is not bytes and data.__class__ is not bytearray:
            view = data if data.__class__ is memoryview else memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
            data = view
        n = min(len(data), self.send_space)
        if n:
            self._sndbuf.append(data[:n] if n < len(data) else data)
        return n

    @property
    def readable(self) -> int:
        """Bytes :meth:`receive` can return now."""
        return self._rcv_bytes

    def release_held_ack(self) -> bool:
        """Send the held handshake ACK now (the application waits to receive,
        so no segment of ours will carry it soon); True if one is to be sent."""
        self.ack_held = False
        if self._ack_pending and self.state in SYNCHRONIZED:
            self._ack_now = True
            self._delack_deadline = None
            return True
        return False

    @property
    def ack_due(self) -> bool:
        """An ACK is due at once: :meth:`segments_to_send` has something.

        After :meth:`receive` this is the only output it can have queued (a
        window update), so a driver may skip the call when it is false."""
        return self._ack_now

    def receive(self, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` of in-order data; may queue a window
        update (then :attr:`ack_due` is true)."""
        n = min(max_bytes, self._rcv_bytes)
        if n <= 0:
            return b""
        buf = self._rcvbuf
        off = self._rcv_off
        first = buf[0]
        if off == 0 and len(first) == n:
            data = buf.popleft()  # one whole segment: no join
        else:
            # One copy however many segments: large payloads are views of
            # their datagrams, so joining several 64 KiB segments costs no
            # more than copying each, and saves the application (and trio) a
            # receive_some call per segment.
            parts = []
            need = n
            while need:
                chunk = buf[0]
                take = min(need, len(chunk) - off)
                parts.append(chunk[off:off + take] if (off or take < len(chunk)) else chunk)
                need -= take
                off += take
                if off == len(chunk):
                    buf.popleft()
                    off = 0
            self._rcv_off = off
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._rcv_bytes -= n
        if data.__class__ is not bytes:
            # A view of a datagram (or, wired in memory, of the peer's send
            # buffer): the application gets bytes of its own.
            data = bytes(data)
        if self.state in RECEIVING:
            # Tell the peer about the opened window once it grew enough (no
            # SWS) and at least doubles what the peer may still send (Linux's
            # tcp_cleanup_rbuf), or by a quarter of the buffer: a reader that
            # keeps up leaves smaller steps to the next ACK, where an update
            # per read doubled the ACKs of 64 KiB segments.  (Doubling means
            # growing by what the peer may still send, so a peer down to less
            # than the SWS step, say a lone segment that only a delayed ACK
            # would answer, is always told.  The quarter: after a burst the
            # ACKs advertised a window cut by unread data, and small buffers
            # ramped up a round trip or two later without it.)
            edge = self.rcv_nxt + self._free_space()
            grow = edge - self._rcv_adv
            buffer = self.config.receive_buffer
            if grow >= min(buffer // 2, 2 * self.mss) \
                    and (grow >= self._rcv_adv - self.rcv_nxt or 4 * grow >= buffer):
                self._ack_now = True
        return data

    def shutdown(self, now: float) -> None:
        """Send a FIN once queued data is out (half-close, ``send_eof``)."""
        st = self.state
        if st in (S.CLOSED, S.LISTEN, S.SYN_SENT):
            self._close_now()
            return
        if self._fin_queued:
            return
        self._fin_queued = True
        # In SYN_RECEIVED the FIN waits for the handshake's ACK (RFC 9293 3.10.4);
        # processing that ACK enters FIN_WAIT_1 after _establish().
        if st is S.ESTABLISHED:
            self._set_state(S.FIN_WAIT_1)
        elif st is S.CLOSE_WAIT:
            self._set_state(S.LAST_ACK)

    def close(self, now: float) -> None:
        """The user is done with both directions.

        Queued data and a FIN still go out.  Unread data, or data arriving from
        now on, means the peer's bytes would be lost silently, so it is answered
        with RST instead (as kernel TCP does).
        """
        self._reader_closed = True
        if self.state in SYNCHRONIZED and (self.readable or self._ooo):
            self.abort(now)
            return
        self.shutdown(now)
        self._orphan_deadline = now + 2 * self.config.msl + self.config.user_timeout

    def abort(self, now: float) -> None:
        """Send RST (if the peer knows us) and drop all state at once."""
        if self.state in SYNCHRONIZED or self.state is S.SYN_RECEIVED:
            if self.state is not S.TIME_WAIT:
                self._emit_segment(self.snd_nxt, RST, b"", options=())
                self.stats.resets_sent += 1
        self._close_now()

    def on_unreachable(self, now: float, seq: int | None = None) -> None:
        """ICMP said nobody listens at the peer's address.

        A connection in SYN_SENT gives up at once (refused).  A synchronized
        one probes the peer and gives up (refused) after UNREACHABLE_STRIKES
        probe rounds drew reports and none an answer: an idle receiver would
        otherwise wait forever for a peer whose process was killed.
        ``seq``, the sequence number of the segment the report quotes, must be
        one we could have sent lately (RFC 5927 4.1): SND.UNA - 1 (a probe) to
        SND.NXT; a report that fails the check is ignored.
        """
        st = self.state
        if seq is not None and not (0 <= seq_diff(seq, (self.snd_una - 1) & MASK)
                                    <= self.snd_nxt - self.snd_una + 1):
            return
        if st is S.SYN_SENT:
            self._fail(ev.ConnectionReset(refused=True))
            return
        if st is S.SYN_RECEIVED and self._passive and seq == self.iss & MASK:
            # Our SYN-ACK found nobody (a client gone, or a spoofed SYN's
            # source): drop the half-open entry now, as Linux's tcp_req_err,
            # rather than hold a syn_backlog place through every retransmission.
            # The quoted ISN is unguessable off path.
            self._fail(ev.ConnectionReset(refused=True))
            return
        if st not in SYNCHRONIZED or st is S.TIME_WAIT:
            return
        # Later it is a soft error (RFC 1122 4.2.3.9; ICMP is easily forged,
        # RFC 5927), so it only starts a check: probe the peer, as keepalive
        # does.  A live peer answers and clears the count; a gone one draws a
        # report per probe.  A burst of reports counts once per probe round.
        if self._icmp_probe_deadline is None or self._last_recv_time > self._icmp_since:
            self._icmp_since = now  # a new episode
            self._icmp_rounds = self._icmp_strikes = 0
            self._icmp_counted = False
            self._icmp_probe_deadline = now + self._rtt.rto
        if not self._icmp_counted:
            self._icmp_counted = True
            self._icmp_strikes += 1
            if self._icmp_strikes >= UNREACHABLE_STRIKES:
                self._fail(ev.ConnectionReset(refused=True))

    def syn_may_reopen(self, seg: Segment) -> bool:
        """Whether a new SYN may replace this TIME_WAIT connection (RFC 6191).

        Yes when its timestamp is newer than anything seen, or (without
        timestamps) its sequence number is beyond the old connection's.
        """
        if self.state is not S.TIME_WAIT or not seg.flags & SYN or seg.flags & (ACK | RST):
            return False
        newer_seq = seq_diff(seg.seq, self.rcv_nxt & MASK) > 0
        if self._ts_ok:
            ts = _find_option(seg.options, OPT_TS)
            if ts is not None:
                # 1 ms ticks: within the same tick the sequence number decides.
                d = seq_diff(ts[0], self._ts_recent)
                return d > 0 or (d == 0 and newer_seq)
        return newer_seq

    # -------------------------------------------------------------- driving
    def events(self) -> list[ev.Event]:
        """Drain the events produced since the last call."""
        out, self._events = self._events, []
        return out

    def segments_to_send(self, now: float) -> list[Segment]:
        """Drain the segments to transmit, generating data/ACKs as allowed."""
        if self.state in SENDING or (
                (self.state in SYNCHRONIZED or self.state is S.SYN_RECEIVED)
                and (self._ack_now or self._ack_pending)):
            self._push(now)
        out, self._out = self._out, []
        return out

    def timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must be called."""
        # Unrolled, without a tuple and a loop: the endpoint asks after every
        # wake-up of the connection, and this costs a third less.
        best = self._user_deadline()
        t = self._rto_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._tlp_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._rack_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._delack_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._cork_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._persist_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._ka_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._timewait_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._connect_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._orphan_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = self._icmp_probe_deadline
        if t is not None and (best is None or t < best):
            best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        if self.state is S.CLOSED:
            return
        if self._timewait_deadline is not None and now >= self._timewait_deadline:
            self._timewait_deadline = None
            self._close_now()
            return
        if self._connect_deadline is not None and now >= self._connect_deadline:
            self._time_out("connect timeout")
            return
        if self._orphan_deadline is not None and now >= self._orphan_deadline:
            self.abort(now)
            return
        ud = self._user_deadline()
        if ud is not None and now >= ud:
            self._time_out("user timeout")
            return
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._on_rto(now)
        elif self._tlp_deadline is not None and now >= self._tlp_deadline:
            self._on_tlp(now)
        if self._rack_deadline is not None and now >= self._rack_deadline:
            # RACK's reorder timer: holes become lost by time alone, with no
            # further ACK needed (RFC 8985 6.3).
            self._rack_deadline = None
            if self.snd_nxt > self.snd_una and self.state in SENDING:
                self._detect_loss(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._on_persist(now)
        if self._ka_deadline is not None and now >= self._ka_deadline:
            self._on_keepalive(now)
            if self.state is S.CLOSED:
                return
        if self._icmp_probe_deadline is not None and now >= self._icmp_probe_deadline:
            self._icmp_probe_deadline = None  # the episode ends: the peer answered,
            if (self._last_recv_time <= self._icmp_since  # or probing is inconclusive
                    and self._icmp_rounds < UNREACHABLE_PROBES):
                self._icmp_rounds += 1
                self._icmp_counted = False
                self._send_probe(now)
                self._icmp_probe_deadline = now + min(
                    self._rtt.rto * (1 << self._icmp_rounds), self.config.max_rto)
        if self._delack_deadline is not None and now >= self._delack_deadline:
            self._delack_deadline = None
            self._ack_now = True
        if self._cork_deadline is not None and now >= self._cork_deadline:
            self._cork_deadline = None
            self._cork_spent = True  # the next push sends the runt

    # ------------------------------------------------------------- segments
    def handle_segment(self, seg: Segment, now: float) -> None:
        """Process one segment that arrived for this connection."""
        st = self.state
        self.stats.segments_received += 1
        if st is S.ESTABLISHED and self._fast_path(seg, now):
            return
        if st is S.CLOSED:
            self._reply_reset(seg)
            return
        if st is S.LISTEN:
            self._on_listen(seg, now)
            return
        if st is S.SYN_SENT:
            self._on_syn_sent(seg, now)
            return
        self._on_synchronized(seg, now)

    def _fast_path(self, seg: Segment, now: float) -> bool:
        """Header prediction (Van Jacobson): the common in-order cases, cheaply.

        An in-order data segment (that may also advance SND.UNA), a pure ACK
        that advances SND.UNA, or a pure window update, during a quiet
        ESTABLISHED phase.  Anything else returns False and takes the full
        RFC 9293 path.
        """
        flags = seg.flags
        if flags & ~PSH != ACK or seg.seq != self.rcv_nxt & MASK:
            return False
        opts = seg.options
        tsval = None
        if self._ts_ok:
            if len(opts) != 1 or opts[0][0] != OPT_TS:
                return False
            tsval = opts[0][1][0]
            if self._ts_recent_valid and ((tsval - self._ts_recent) & MASK) >= HALF:
                return False  # PAWS has something to say
        elif opts:
            return False
        payload = seg.payload
        plen = len(payload)
        snd_una = self.snd_una
        ack = snd_una + (((seg.ack - snd_una) + HALF) & MASK) - HALF
        rcv_nxt = self.rcv_nxt
        wnd = seg.window << self._snd_wscale
        if plen and (self._ooo or self._reader_closed or plen > self._rcv_adv - rcv_nxt
                     or self._peer_fin_seq is not None):  # a FIN waits past a hole
            return False
        if ack == snd_una:
            if plen:
                if wnd != self.snd_wnd:
                    return False
            elif wnd == self.snd_wnd or self._in_recovery or self._sacked or self._lost:
                # A pure window update (the reader took data; every other ACK
                # when segments are large) comes this way.  Unchanged, the
                # window makes it a possible duplicate ACK: the full path counts those.
                return False
        elif not (snd_una < ack <= self.snd_nxt) or self._in_recovery or self._sacked \
                or self._lost:
            return False
        if tsval is not None and rcv_nxt <= self._last_ack_sent:
            self._ts_recent = tsval
        if ack != snd_una:  # (with data: request/response traffic)
            self._sample_rtt_from(seg, ack, now)
            self._ack_advance(ack, now)
        if ack != snd_una or not plen:
            self._update_send_window(wnd, rcv_nxt, ack)
        if plen:
            if plen < GATHER_BELOW and self._rcvbuf:
                self._enqueue(payload)
            else:
                self._rcvbuf.append(payload)  # _enqueue's common cases, without the call
            self._rcv_bytes += plen
            self.rcv_nxt = rcv_nxt + plen
            self.stats.bytes_received += plen
            self._events.append(ev.DataReceived(plen))
            self._schedule_ack(now)
        self._last_recv_time = now
        if self.config.keepalive_idle is not None:
            self._ka_probes = 0
            self._ka_deadline = now + self.config.keepalive_idle
        return True

    def _on_listen(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            self._reply_reset(seg)
            return
        if not flags & SYN:
            return
        self._accept_syn_options(seg)
        self.irs = seg.seq
        self.rcv_nxt = self.irs + 1
        self._rcv_adv = self.rcv_nxt
        self._passive = True
        self._update_send_window(seg.window, seg.seq, self.iss)  # unscaled in SYN
        self._set_state(S.SYN_RECEIVED)
        self._connect_deadline = now + self.config.connect_timeout
        self._send_syn(now)

    def _on_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        ack = unwrap(seg.ack, self.snd_una)
        if flags & ACK and not (self.iss < ack <= self.snd_nxt):
            if not flags & RST:
                self._reply_reset(seg)
            return
        if flags & RST:
            if flags & ACK:
                self.stats.resets_received += 1
                self._fail(ev.ConnectionReset(refused=True))
            return
        if not flags & SYN:
            return
        self._last_recv_time = now
        self._accept_syn_options(seg)
        self.irs = seg.seq
        self.rcv_nxt = self.irs + 1
        # The window our SYN offered (unscaled): data on the SYN-ACK may fill it.
        self._rcv_adv = self.rcv_nxt + min(self._free_space(), 0xFFFF)
        if flags & ACK:
            self._sample_rtt_from(seg, ack, now)
            self._ack_advance(ack, now)
            self._update_send_window(seg.window, seg.seq, ack)
            self._establish()
            # Data piggybacked on the SYN-ACK is unusual but legal.
            if seg.payload or flags & FIN:
                self._ack_now = True
                self._process_text(seg, self.irs + 1, now)
            elif self.ack_held:
                # The application's first segment (a request, or a FIN)
                # usually follows at once and carries the ACK: one datagram
                # fewer for both ends (see connect).
                self._ack_pending = True
                self._delack_deadline = now + min(self.config.delayed_ack, HANDSHAKE_ACK_HOLD)
            else:
                self._ack_now = True
        else:
            # Simultaneous open: both sides sent SYNs.
            self._update_send_window(seg.window, seg.seq, self.iss)
            self._set_state(S.SYN_RECEIVED)
            self._send_syn(now)

    def _on_synchronized(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        st = self.state
        seq = unwrap(seg.seq, self.rcv_nxt)
        plen = len(seg.payload)
        self._last_recv_time = now
        self._ka_probes = 0
        if self.config.keepalive_idle is not None and st in SYNCHRONIZED \
                and st is not S.TIME_WAIT:
            self._ka_deadline = now + self.config.keepalive_idle

        # Duplicate SYN (or SYN-ACK in simultaneous open) for the SYN we know.
        if flags & SYN and seq == self.irs and st is S.SYN_RECEIVED:
            if flags & ACK and not flags & RST:
                seq += 1
                flags &= ~SYN
                plen = len(seg.payload)
            else:
                self._send_syn(now)  # our SYN-ACK was probably lost
                return

        # PAWS (RFC 7323 5): drop old duplicates by their timestamp.
        tsval = None
        if self._ts_ok:
            tsopt = _find_option(seg.options, OPT_TS)
            if tsopt is not None:
                tsval = tsopt[0]
                if (self._ts_recent_valid and not flags & RST
                        and seq_diff(tsval, self._ts_recent) < 0
                        and not self._disordered_ack(seg, seq, plen, tsval)):
                    self.stats.dropped_segments += 1
                    self._answer_unacceptable(plen, flags, now)
                    return

        # 1. sequence acceptability (RFC 9293 3.10.7.4)
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = self._rcv_adv - self.rcv_nxt
        if wnd <= 0:
            # Nothing new fits, but a FIN right at RCV.NXT takes no buffer
            # space (its payload, if any, is old): take it, or the peer's
            # close waits on backed-off retransmissions until we read.
            ok = seq == self.rcv_nxt if seg_len == 0 else (
                flags & (FIN | SYN) == FIN and seq + plen == self.rcv_nxt)
        elif seg_len == 0:
            ok = self.rcv_nxt <= seq < self.rcv_nxt + wnd
        else:
            end = seq + seg_len - 1
            ok = (self.rcv_nxt <= seq < self.rcv_nxt + wnd
                  or self.rcv_nxt <= end < self.rcv_nxt + wnd)
        if not ok:
            if flags & RST:
                return
            if flags & SYN and st in SYNCHRONIZED:
                # RFC 5961 4.2: any SYN, whatever its sequence number, gets a
                # (throttled) challenge ACK.
                self._challenge_ack(now)
                return
            if st is S.TIME_WAIT and flags & FIN and seq + seg_len == self.rcv_nxt:
                # The peer retransmitted its FIN: our last ACK was lost.  ACK it
                # again and restart the 2 MSL timeout (RFC 9293 3.10.7.4).
                self._timewait_deadline = now + 2 * self.config.msl
            if seq + seg_len <= self.rcv_nxt and seg_len:
                self.stats.duplicate_segments += 1
            else:
                self.stats.dropped_segments += 1
            self._answer_unacceptable(plen, flags, now)
            # With a zero window the peer's ACKs still matter (RFC 9293 3.10.7.4).
            if wnd <= 0 and flags & ACK and not flags & SYN:
                self._on_ack(seg, unwrap(seg.ack, self.snd_una), seq, now, plen)
            return

        # 2. RST (RFC 5961 3): only an exact match resets; else a challenge ACK.
        if flags & RST:
            if seq == self.rcv_nxt:
                self.stats.resets_received += 1
                if st is S.SYN_RECEIVED and self._passive:
                    self._close_now()
                elif st is S.TIME_WAIT:
                    self._close_now()
                else:
                    self._fail(ev.ConnectionReset(refused=st is S.SYN_RECEIVED))
            else:
                self._challenge_ack(now)
            return

        # 3. SYN in a synchronized state (RFC 5961 4): challenge ACK.
        if flags & SYN:
            self._challenge_ack(now)
            return

        if not flags & ACK:
            return

        ack = unwrap(seg.ack, self.snd_una)
        # TS.Recent (RFC 7323 R3) only from a segment whose ACK is acceptable: one
        # that RFC 5961 5.2 discards must not make PAWS drop the real peer's segments.
        if (tsval is not None and seq <= self._last_ack_sent
                and (not self._ts_recent_valid or seq_diff(tsval, self._ts_recent) >= 0)
                and self.snd_una - (self._max_snd_wnd or 1) <= ack <= self.snd_nxt):
            self._ts_recent = tsval
            self._ts_recent_valid = True
        # 4. ACK processing
        if st is S.SYN_RECEIVED:
            if self.snd_una < ack <= self.snd_nxt:
                self._sample_rtt_from(seg, ack, now)
                self._ack_advance(ack, now)
                self._update_send_window(seg.window << self._snd_wscale, seq, ack)
                self._establish()
                if self._fin_queued:
                    self._set_state(S.FIN_WAIT_1)
            else:
                self._reply_reset(seg)
                return
        if not self._on_ack(seg, ack, seq, now, plen):
            return
        if self.state is S.CLOSED:
            return

        # 5. text and FIN
        if plen or flags & FIN:
            self._process_text(seg, seq, now)

    def _on_ack(self, seg: Segment, ack: int, seq: int, now: float, plen: int) -> bool:
        """ACK field processing; False when the segment must be dropped."""
        if ack > self.snd_nxt or ack < self.snd_una - (self._max_snd_wnd or 1):
            # Acks something never sent, or far too old (RFC 5961 5.2): discard.
            self._answer_unacceptable(plen, seg.flags, now)
            return False
        st = self.state
        if ack > self.snd_una:
            self._sample_rtt_from(seg, ack, now)
            self._ack_advance(ack, now)
        elif (ack == self.snd_una and plen == 0 and not seg.flags & (SYN | FIN)
              and self.snd_nxt > self.snd_una
              and (seg.window << self._snd_wscale) == self.snd_wnd):
            self._dupacks += 1
        if ack >= self.snd_una:
            self._update_send_window(seg.window << self._snd_wscale, seq, ack)
        if self._sack_ok and self.snd_nxt > self.snd_una:
            blocks = _find_option(seg.options, OPT_SACK)
            if blocks:
                # The highest SACKed byte before this ACK: its blocks come
                # newest first, so a lower one in the same ACK is no reordering.
                top = self._sacked.last_end
                for left, right in blocks:
                    lo = unwrap(left, self.snd_una)
                    hi = unwrap(right, self.snd_una)
                    lo = max(lo, self.snd_una)
                    hi = min(hi, self.snd_nxt)
                    if lo < hi and (len(self._sacked) < MAX_SACK_RANGES
                                    or self._sacked.touches(lo, hi)):
                        newly = self._sacked.add(lo, hi)
                        if newly:
                            self._rack_update(hi, now)
                            if not self._reordering_seen and top is not None and hi <= top:
                                self._check_reordering(lo, hi)
                        self._count_delivered(newly, hi, now)
        if self.snd_nxt > self.snd_una:
            self._detect_loss(now)

        # Our FIN acknowledged?
        fin_acked = self._fin_seq is not None and self.snd_una > self._fin_seq
        if fin_acked:
            if st is S.FIN_WAIT_1:
                self._set_state(S.FIN_WAIT_2)
                if self._reader_closed:
                    self._orphan_deadline = now + 2 * self.config.msl
            elif st is S.CLOSING:
                self._enter_time_wait(now)
            elif st is S.LAST_ACK:
                self._close_now()
                return False
        if st is S.TIME_WAIT and seg.flags & FIN:
            self._ack_now = True
            self._timewait_deadline = now + 2 * self.config.msl
        return True

    def _process_text(self, seg: Segment, seq: int, now: float) -> None:
        st = self.state
        payload = seg.payload
        flags = seg.flags
        if payload and st not in RECEIVING:
            # Data after the peer's FIN: a protocol violation; ignore it.
            return
        end = seq + len(payload)
        if payload and self._reader_closed:
            if end > self.rcv_nxt:
                # Nobody will ever read this: tell the peer at once (SPEC.md).
                self.stats.resets_sent += 1
                self._emit_segment(self.snd_nxt, RST, b"", options=())
                self._fail(ev.ConnectionReset())
                return
            # Only bytes already taken (our ACK was lost): acknowledge them,
            # and a FIN on them, as usual; only new data earns the RST.
            payload = b""
            self._ack_now = True
        if flags & FIN and self._peer_fin_seq is None:
            self._peer_fin_seq = end
        if payload:
            self._accept_data(seq, payload, now)
        if (self._peer_fin_seq is not None and self.rcv_nxt == self._peer_fin_seq
                and not self.eof_received):
            self.rcv_nxt += 1
            self._rcv_adv = max(self._rcv_adv, self.rcv_nxt)
            self.eof_received = True
            self._ack_now = True
            self._events.append(_EOF_RECEIVED)
            if st is S.ESTABLISHED:
                self._set_state(S.CLOSE_WAIT)
            elif st is S.FIN_WAIT_1:
                if self._fin_seq is not None and self.snd_una > self._fin_seq:
                    self._enter_time_wait(now)
                else:
                    self._set_state(S.CLOSING)
            elif st is S.FIN_WAIT_2:
                self._enter_time_wait(now)

    def _accept_data(self, seq: int, payload: bytes | memoryview, now: float) -> None:
        end = seq + len(payload)
        edge = self._rcv_adv
        whole = True
        if end > edge:
            payload = payload[: max(0, edge - seq)]
            end = seq + len(payload)
            whole = False
        if seq < self.rcv_nxt:
            payload = payload[self.rcv_nxt - seq:]
            seq = self.rcv_nxt
            whole = False
        if not payload:
            self._ack_now = True
            return
        in_order = seq == self.rcv_nxt
        if not in_order and self._sack_ok:
            self._ack_before_sack_overflow(seq, end, now)
        delivered = 0
        for lo, hi in list(self._ooo_ranges.holes(seq, end)):
            if whole and lo == seq and hi == end:
                piece = payload
            else:
                piece = payload[lo - seq: hi - seq]
                if piece.__class__ is memoryview:
                    # Part of a view of a datagram (segment.decode_view): the
                    # buffers count what they hold, so a part must not pin a
                    # whole 64 KiB datagram (a peer resending old data plus
                    # one new byte would pin 64 KiB per byte).
                    piece = bytes(piece)
            if lo == self.rcv_nxt:
                self._enqueue(piece)
                self._rcv_bytes += len(piece)
                self.rcv_nxt = hi
                delivered += hi - lo
                while self.rcv_nxt in self._ooo:
                    chunk = self._ooo.pop(self.rcv_nxt)
                    self._enqueue(chunk)
                    self._rcv_bytes += len(chunk)
                    self.rcv_nxt += len(chunk)
                    delivered += len(chunk)
                self._ooo_ranges.remove_below(self.rcv_nxt)
            elif len(self._ooo) < self.config.max_ooo_segments:
                self._ooo[lo] = piece
                self._ooo_ranges.add(lo, hi)
            else:
                self.stats.dropped_segments += 1
        if not in_order:
            self.stats.out_of_order_segments += 1
            self._last_ooo = (seq, end)
            self._ack_now = True  # dup ACK with SACK at once (RFC 5681 4.2)
        elif self._ooo or delivered > end - seq:
            self._ack_now = True  # filled (part of) a hole
        if delivered:
            self.stats.bytes_received += delivered
            self._events.append(ev.DataReceived(delivered))
        if not self._ack_now:
            self._schedule_ack(now)

    def _enqueue(self, data: bytes | bytearray | memoryview) -> None:
        """Queue in-order data for the reader; a short payload is gathered
        with the short ones before it.

        Alone in the queue it stays as it came (a reader that keeps up gets
        the very object).  A head chunk the reader has begun is not grown:
        it would keep the bytes already read until GATHER_MAX."""
        buf = self._rcvbuf
        if len(data) >= GATHER_BELOW or not buf:
            buf.append(data)
            return
        last = buf[-1]
        if last.__class__ is bytearray and len(last) < GATHER_MAX \
                and (len(buf) > 1 or not self._rcv_off):
            last += data
        else:
            buf.append(bytearray(data))

    def _ack_before_sack_overflow(self, seq: int, end: int, now: float) -> None:
        """ACK now if this segment would start one SACK block more than an ACK holds.

        The receiver ACKs once per batch of arriving datagrams; at 5 % loss a
        batch of 40 segments opens several holes, and blocks no ACK ever
        reported look lost to the sender, which then resends data we hold.
        """
        # One entry per block (the newest segment's start stands for the block
        # it joins), so this costs O(blocks per ACK), not O(segments).
        at = self._ooo_ranges.range_at
        kept = []
        for s in self._sack_news:
            r = at(s)
            if r is not None and not (r[0] <= end and seq <= r[1]):
                kept.append(s)
        if len(kept) == len(self._sack_news) and len(self._news_blocks()) >= (
                3 if self._ts_ok else 4):
            self._emit_segment(self.snd_nxt, ACK, b"", options=self._options(now))
            kept = []
        kept.append(seq)
        self._sack_news = kept

    def _news_blocks(self) -> list[tuple[int, int]]:
        """The blocks holding out-of-order data since our last ACK, newest first."""
        out: list[tuple[int, int]] = []
        at = self._ooo_ranges.range_at
        for s in reversed(self._sack_news):
            r = at(s)
            if r is not None and r not in out:
                out.append(r)
        return out

    def _schedule_ack(self, now: float) -> None:
        """Delayed ACK: every second segment at once, else within ``delayed_ack``."""
        self._unacked_segments += 1
        if self._unacked_segments >= 2 or self.config.delayed_ack == 0:
            self._ack_now = True
        else:
            self._ack_pending = True
            if self._delack_deadline is None:
                self._delack_deadline = now + self.config.delayed_ack

    # --------------------------------------------------------- send machinery
    def _payload_room(self) -> int:
        return self.mss - (TS_OPTION_SPACE if self._ts_ok else 0)

    def _pipe(self) -> int:
        return (self.snd_nxt - self.snd_una) - self._sacked.total - self._lost.total

    def _push(self, now: float) -> None:
        sent_any = False
        room = self._payload_room() - self._sack_space()
        st = self.state
        if st in SENDING:
            # 1. retransmit what is marked lost, within cwnd (one forced).
            while self._lost.total:
                lo, hi = self._lost.first  # type: ignore[misc]
                # A whole segment from the hole's start (SACKed bytes inside it
                # are resent too): tiny SACK islands must not each become a tiny
                # datagram.
                hi = min(lo + room, self.snd_nxt)
                if hi == self._fin_seq and hi < self.snd_nxt:
                    hi += 1  # the FIN takes no payload room: it goes along
                if not self._rtx_force and self._pipe() + (hi - lo) > self.cwnd:
                    break
                self._rtx_force = False
                self._lost.remove(lo, hi)
                self._rtx_done.add(lo, hi)
                self._send_range(lo, hi, now, retransmit=True)
                sent_any = True
            # 2. new data within the peer's window and cwnd
            opts = None
            data_end = self._sndbuf.end
            if (self.snd_nxt == self.snd_una < data_end
                    and now - self._last_xmit > self._rtt.rto):
                # Restart after idle (RFC 5681 4.1): the window measured the
                # path an idle period ago; do not burst all of it into the
                # path as it is now.
                iw = self.config.initial_window * self._payload_room()
                if self.cwnd > iw:
                    self.cwnd = self.stats.cwnd = iw
            wnd_edge = self.snd_una + self.snd_wnd
            while self.snd_nxt < data_end:
                avail = data_end - self.snd_nxt
                n = min(room, avail, wnd_edge - self.snd_nxt, self.cwnd - self._pipe())
                if n <= 0:
                    break
                if n < room and n < avail:
                    # Window- or cwnd-limited runt: wait for more room (sender
                    # SWS avoidance) unless half the peer's largest window is
                    # open or nothing is in flight (no ACK would ever come).
                    if not (self.snd_nxt == self.snd_una
                            or (n >= self._max_snd_wnd // 2 and wnd_edge - self.snd_nxt == n)):
                        break
                elif n < room and not self.config.nodelay and self.snd_nxt > self.snd_una \
                        and not self._fin_queued:
                    break  # Nagle
                elif n < room and self._cork(room, now):
                    break
                if opts is None:
                    opts = self._options(now)  # same for the whole burst
                hi = self.snd_nxt + n
                if hi == data_end and self._fin_queued and self._fin_seq is None:
                    self._fin_seq = hi  # the FIN rides on the last data, as in TCP
                    hi += 1
                self._send_range(self.snd_nxt, hi, now, retransmit=False, options=opts)
                sent_any = True
            if self._model is not None and self.snd_nxt == data_end \
                    and self._pipe() + room <= self.cwnd:
                self._round_app_limited = True
            # 3. FIN once all data is out (alone: no data was left to carry it)
            if (self._fin_queued and self._fin_seq is None
                    and self.snd_nxt == self._sndbuf.end):
                self._fin_seq = self.snd_nxt
                self._send_range(self.snd_nxt, self.snd_nxt + 1, now, retransmit=False)
                sent_any = True
            # zero-window: probe until the peer opens it again
            if (self.snd_wnd == 0 and self.snd_nxt < data_end and self.snd_nxt == self.snd_una
                    and self._persist_deadline is None):
                self._persist_deadline = now + self._rtt.rto * (1 << self._persist_backoff)
                self._progress_time = now  # nothing outstanding: free for the persist phase
        if not sent_any and (self._ack_now or (self._ack_pending and self._delack_deadline is None)):
            self._emit_segment(self.snd_nxt, ACK, b"", options=self._options(now))
        if self.snd_nxt > self.snd_una:
            if self._rto_deadline is None:
                self._rto_deadline = now + self._rtt.rto
            if (self._tlp_deadline is None and not self._tlp_fired and not self._in_recovery
                    and self._rtt.has_sample and st in SENDING):
                # Tail loss probe (RFC 8985 7.2): far sooner than an RTO, but
                # after the peer's delayed ACK for a lone segment.
                pto = max(2 * self._rtt.srtt, 0.002)
                if self.snd_nxt - self.snd_una <= self.mss:
                    pto += self.config.delayed_ack + 0.01
                self._tlp_deadline = now + min(pto, self._rtt.rto)

    def _cork(self, room: int, now: float) -> bool:
        """Hold a data-limited runt for the next write (Config.autocork)?"""
        if self._fin_queued or not self.config.autocork or self.snd_nxt - self.snd_una < 2 * room:
            return False
        if self._more_coming and self.snd_nxt - self.snd_una >= MORE_HOLD_SEGMENTS * room:
            # The blocked writer fills the runt once an ACK opens space: no
            # timer, and no wake-up to send a runt.  Only with many segments
            # out, where ACKs come often and the runt is a small part of the
            # window; with a small send buffer the hold would idle the path.
            self._cork_deadline = None
            return True
        if self._cork_spent:
            return False
        if self._cork_deadline is None:
            self._cork_deadline = now + self.config.autocork
        return True

    def _send_range(self, lo: int, hi: int, now: float, *, retransmit: bool,
                    options: tuple | None = None) -> None:
        data_end = self._sndbuf.end
        d_hi = min(hi, data_end)
        payload = self._sndbuf.slice(lo, d_hi) if d_hi > lo else b""
        flags = ACK
        if self._fin_seq is not None and hi > self._fin_seq:
            flags |= FIN
        if payload and (d_hi == data_end):
            flags |= PSH
        self._emit_segment(lo, flags, payload,
                           options=self._options(now) if options is None else options)
        if hi > self.snd_nxt:
            if self.snd_nxt == self.snd_una:
                # Data outstanding again: the user timeout counts from now,
                # not from the last ACK before an idle (or zero-window) spell.
                self._progress_time = now
            self.snd_nxt = hi
            self._cork_deadline = None
            self._cork_spent = False
            if self._rtt_seq is None:
                self._rtt_seq, self._rtt_time = hi, now
        stats = self.stats
        self._last_xmit = now
        if not retransmit:
            self._xmit_starts.append(lo)
            self._xmit_times.append(now)
        else:
            self._rtx_ever.add(lo, hi)
            starts, times = self._rtx_starts, self._rtx_times
            i = bisect.bisect_left(starts, lo)
            j = bisect.bisect_left(starts, hi, i)
            starts[i:j] = [lo]
            times[i:j] = [now]
            if self._rack_deadline is None:  # time this retransmission too
                self._rack_deadline = now + self._reorder_time()
        if retransmit:
            stats.segments_retransmitted += 1
            stats.bytes_retransmitted += len(payload)
            if self._rtt_seq is not None and lo < self._rtt_seq:
                self._rtt_seq = None  # Karn: this sample is ambiguous now
        else:
            stats.bytes_sent += len(payload)

    def _sack_space(self) -> int:
        """Option bytes the SACK blocks on our next segments take (RFC 2018)."""
        if not (self._sack_ok and self._ooo_ranges.total):
            return 0
        n = min(len(self._ooo_ranges), 3 if self._ts_ok else 4)
        # With timestamps: 10 + 2 + 8n bytes, of which TS_OPTION_SPACE is already
        # counted; without: 2 + 8n padded to a multiple of 4.
        return 8 * n if self._ts_ok else 8 * n + 4

    def _options(self, now: float) -> tuple:
        opts: list = []
        if self._ts_ok:
            opts.append((OPT_TS, (self._ts_now(now), self._ts_recent)))
        if self._sack_ok and self._ooo_ranges.total:
            opts.append((OPT_SACK, self._sack_blocks(3 if self._ts_ok else 4)))
        return tuple(opts)

    def _sack_blocks(self, limit: int) -> tuple:
        # RFC 2018 4: the block of the newest segment first, then every block
        # that changed since the last ACK (_ack_before_sack_overflow keeps them
        # within the limit), then those the last ACK reported (so one lost ACK
        # does not hide a block for good), then the highest others.
        at = self._ooo_ranges.range_at
        ordered = self._news_blocks()
        if not ordered and self._last_ooo is not None:
            last = at(self._last_ooo[0])
            if last is not None:
                ordered.append(last)
        for s in self._sack_sent:
            r = at(s)
            if r is not None and r not in ordered:
                ordered.append(r)
        if len(ordered) < limit:
            ordered += [r for r in reversed(list(self._ooo_ranges)) if r not in ordered]
        del ordered[limit:]
        self._sack_sent = [lo for lo, _hi in ordered]
        return tuple((lo & MASK, hi & MASK) for lo, hi in ordered)

    def _emit_segment(self, seq: int, flags: int, payload: bytes, options: tuple) -> None:
        """Build one segment; every non-RST segment carries our current ACK."""
        if flags & RST:
            seg = new_segment(self.local_port, self.remote_port, seq & MASK, 0, RST, 0, 0, (),
                              b"")
        else:
            flags |= ACK
            seg = new_segment(self.local_port, self.remote_port, seq & MASK,
                              self.rcv_nxt & MASK, flags, self._window_field(), 0, options,
                              payload)
            self._last_ack_sent = self.rcv_nxt
            if self._sack_news:
                self._sack_news.clear()
            self._ack_now = False
            self._ack_pending = False
            self.ack_held = False
            self._unacked_segments = 0
            self._delack_deadline = None
        self.stats.segments_sent += 1
        self._out.append(seg)

    def _free_space(self) -> int:
        free = self.config.receive_buffer - self._rcv_bytes
        return free if free > 0 else 0

    def _window_field(self) -> int:
        key = (self.rcv_nxt, self._rcv_bytes, self._rcv_adv)
        if key == self._wnd_key:
            return self._wnd_field
        field = self._compute_window_field()
        self._wnd_key = key
        self._wnd_field = field
        return field

    def _compute_window_field(self) -> int:
        edge = self.rcv_nxt + self._free_space()
        # No silly windows: grow the advertised edge only by a useful amount,
        # and do not move it left (RFC 9293 3.8.6.2.2; but see the rounding below).
        # (Comparisons, not min()/max(): those cost ~700 instructions a call on 3.11.)
        adv = self._rcv_adv
        half = self.config.receive_buffer // 2
        room = edge
        if edge - adv < (half if half < self.mss else self.mss) or edge < adv:
            edge = adv
        # Round up, not down: rounding down would move the right edge left
        # whenever RCV.NXT is off the 2**shift grid (RFC 7323 2.4, appendix F).
        # But not past an edge already beyond our room (the last round-up):
        # rounded up from there, every ACK of a few bytes could push the edge
        # up to 2**shift - 1 further, and a peer writing small pieces to a
        # reader that does not read would never see the window close.  So the
        # window may retract by less than 2**shift bytes instead (appendix F),
        # and what we take stays within receive_buffer + 2**shift - 1.
        shift = self._rcv_wscale
        if edge > room:
            field = (edge - self.rcv_nxt) >> shift
        else:
            field = (edge - self.rcv_nxt + (1 << shift) - 1) >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        right = self.rcv_nxt + (field << shift)
        if right > adv:
            self._rcv_adv = right
        self.stats.receive_window = field << self._rcv_wscale
        return field

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    # -------------------------------------------------------------- handshake
    def _send_syn(self, now: float) -> None:
        cfg = self.config
        syn_ack = self.state is S.SYN_RECEIVED
        opts: list = []
        if not syn_ack or self._peer_sent_options:
            # A SYN-ACK to an option-less SYN stays as small as that SYN (no
            # amplification budget to spare); the peer then assumes 536.
            opts.append((OPT_MSS, min(self._max_datagram - HEADER_SIZE, 0xFFFF)))
        if cfg.window_scale and (not syn_ack or self._snd_wscale_offered):
            opts.append((OPT_WSCALE, self._rcv_wscale))
        if cfg.sack and (not syn_ack or self._sack_ok):
            opts.append((OPT_SACK_OK, None))
        if cfg.timestamps and (not syn_ack or self._ts_ok):
            opts.append((OPT_TS, (self._ts_now(now), self._ts_recent if syn_ack else 0)))
        flags = SYN | (ACK if syn_ack else 0)
        wnd = min(self._free_space(), 0xFFFF)
        seg = Segment(self.local_port, self.remote_port, self.iss, self.rcv_nxt & MASK if syn_ack
                      else 0, flags, wnd, 0, tuple(opts), b"")
        if syn_ack:
            self._last_ack_sent = self.rcv_nxt
            self._rcv_adv = max(self._rcv_adv, self.rcv_nxt + wnd)
            self._ack_now = False
        retransmit = self.snd_nxt > self.iss
        self.snd_nxt = max(self.snd_nxt, self.iss + 1)
        if retransmit:
            self.stats.segments_retransmitted += 1
            self._rtt_seq = None
        else:
            self._rtt_seq, self._rtt_time = self.iss + 1, now
        self.stats.segments_sent += 1
        self._out.append(seg)
        self._rto_deadline = now + self._rtt.rto

    def _accept_syn_options(self, seg: Segment) -> None:
        cfg = self.config
        mss = _find_option(seg.options, OPT_MSS)
        self._peer_mss = mss if mss else DEFAULT_MSS
        self._peer_sent_options = bool(seg.options)
        ws = _find_option(seg.options, OPT_WSCALE)
        if ws is not None and cfg.window_scale:
            self._snd_wscale = min(ws, MAX_WSCALE)
            self._snd_wscale_offered = True
        else:
            self._snd_wscale = 0
            self._rcv_wscale = 0
        self._sack_ok = cfg.sack and _has_option(seg.options, OPT_SACK_OK)
        ts = _find_option(seg.options, OPT_TS)
        if ts is not None and cfg.timestamps:
            self._ts_ok = True
            self._ts_recent = ts[0]
            self._ts_recent_valid = True
        else:
            self._ts_ok = False
        self.mss = max(64, min(self._peer_mss, self._max_datagram - HEADER_SIZE))

    def _establish(self) -> None:
        self._connect_deadline = None
        if self.stats.timeouts and not self._rtt.has_sample:
            self._rtt.restart(max(SYN_TIMEOUT_RTO, self.config.initial_rto))
            self.stats.rto = self._rtt.rto
        self.cwnd = self.config.initial_window * self._payload_room()
        self.stats.mss = self._payload_room()
        if not self._sack_ok and self._model is not None:
            # The model's rounds and loss repair need SACK: without it one hole
            # stretches a round over many RTTs and an RTO resends 2 x BDP.
            self._model = None
            self.stats.congestion_control = "westwood"
        self._set_state(S.ESTABLISHED)
        self._events.append(_CONNECTED)
        if self.config.keepalive_idle is not None:
            self._ka_deadline = self._last_recv_time + self.config.keepalive_idle

    # ------------------------------------------------------ ACKs and recovery
    def _sample_rtt_from(self, seg: Segment, ack: int, now: float) -> None:
        # Prefer the timed segment (microsecond clock, Karn's rule); the
        # timestamp echo (1 ms ticks) covers what Karn must skip, such as
        # ACKs of retransmissions (RFC 7323 4).
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            self._rtt.sample(now - self._rtt_time)
            self._rtt_seq = None
            self._sync_rtt_stats(precise=True)
            if self._model is not None:
                self._model.on_rtt(self._rtt.latest, now)
            return
        if self._ts_ok and self._rtt_seq is None:
            ts = _find_option(seg.options, OPT_TS)
            if ts is not None and ts[1]:
                delta = (self._ts_now(now) - ts[1]) & MASK
                if delta < 60_000:
                    self._rtt.sample(delta / 1000.0)
                    self._sync_rtt_stats(precise=False)

    def _sync_rtt_stats(self, *, precise: bool) -> None:
        # The path-model RTTs (minimum, per round) take only the timed
        # segment's microsecond samples: the timestamp echo ticks in
        # milliseconds, so on a sub-millisecond path it reads 0 (clamped to
        # 0.5 ms) or 1 ms, and a 1 ms sample would look like a standing queue.
        latest = self._rtt.latest
        if precise and (not self._min_rtt or latest < self._min_rtt):
            self._min_rtt = latest
        if precise and (not self._round_rtt or latest < self._round_rtt):
            self._round_rtt = latest
        st = self.stats
        st.srtt, st.rttvar, st.rto = self._rtt.srtt, self._rtt.rttvar, self._rtt.rto

    def _ack_advance(self, ack: int, now: float) -> None:
        # Emptiness by RangeSet.total, here and in _push: bool() of a RangeSet
        # is a Python-level call, and every ACK comes this way.
        sacked_before = self._sacked.total
        if sacked_before or self._rtx_done.total:  # RACK's clock matters only with holes
            # What this ACK newly delivered ends at the first SACKed byte: the
            # bytes above were delivered (and timed) when they were SACKed.
            end = ack
            if sacked_before:
                first = self._sacked.first[0]  # type: ignore[index]
                if first < end:
                    end = first
            if end > self.snd_una:
                self._rack_update(end, now)
                if sacked_before and not self._reordering_seen:
                    self._check_reordering(self.snd_una, end)
        acked = ack - self.snd_una
        self.snd_una = ack
        sndbuf = self._sndbuf
        if ack > sndbuf.start and sndbuf.end > sndbuf.start:
            sndbuf.release(ack)
            self._events.append(_SEND_SPACE)
        if sacked_before:
            self._sacked.remove_below(ack)
        # Bytes this ACK delivered: those SACKed earlier were counted then.
        delivered = acked - (sacked_before - self._sacked.total)
        self._count_delivered(delivered, ack, now)
        if ack >= self._round_end:
            if self._round_rtt:
                self._veno_rtt = self._round_rtt
            self._round_rtt = 0.0
            self._round_end = self.snd_nxt
        if self._lost.total:
            self._lost.remove_below(ack)
        if self._rtx_done.total:
            self._rtx_done.remove_below(ack)
        if self._rtx_ever.total:
            self._rtx_ever.remove_below(ack)
        if self._rtx_starts:
            j = bisect.bisect_right(self._rtx_starts, ack) - 1
            if j > 0:
                del self._rtx_starts[:j], self._rtx_times[:j]
        self._dupacks = 0
        self._tlp_deadline = None
        self._tlp_fired = False
        if not self._sacked.total:
            self._rack_deadline = None
        starts = self._xmit_starts
        head = self._xmit_head
        while head + 1 < len(starts) and starts[head + 1] <= ack:
            head += 1
        if head >= 1024 and 2 * head >= len(starts):
            del starts[:head], self._xmit_times[:head]
            head = 0
        self._xmit_head = head
        self._progress_time = now
        self._persist_backoff = 0
        if self._orphan_deadline is not None and self.state in SENDING:
            self._orphan_deadline = now + 2 * self.config.msl + self.config.user_timeout
        if self._rtt.backoff and self._rtt.has_sample:
            self._rtt.reset_backoff()
        if self.cwnd:
            self._grow_cwnd(acked, delivered)
        self._rto_deadline = None if self.snd_nxt == self.snd_una else now + self._rtt.rto
        ssthresh = self.ssthresh
        self.stats.cwnd, self.stats.ssthresh = self.cwnd, ssthresh if ssthresh < 1 << 31 else 1 << 31

    def _grow_cwnd(self, acked: int, delivered: int) -> None:
        mss = self._payload_room()
        if self._in_recovery:
            if self.snd_una < self._recover:
                if self._sack_ok:
                    return  # the scoreboard and RACK decide (RFC 6675), not the ACK alone
                # NewReno partial ACK (RFC 6582): the next hole is lost too.
                nxt = self._sacked.first[0] if self._sacked else self.snd_nxt
                hi = min(self.snd_una + mss, nxt)
                if hi > self.snd_una and not self._rtx_done.contains(self.snd_una, hi):
                    self._lost.add(self.snd_una, hi)
                return
            self._in_recovery = False
            # Retransmissions still in flight stay recorded (and timed): the
            # next round's SACKs would otherwise find their holes and send them
            # a third time.  RACK's xmit_ts test re-marks the ones really lost.
            if self._model is not None:
                return  # the model sets the window (_count_delivered), not a loss
            self.cwnd = max(self.ssthresh, 2 * mss)
            # The ACK that ends recovery grows the window by what it newly
            # delivered, as Linux does once the state is back to Open; what
            # was SACKed during recovery does not count.
            acked = delivered
        if self._model is not None:
            return
        cap = self._cwnd_cap(mss)
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * mss)
        else:
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += mss
        self.cwnd = min(self.cwnd, cap)

    def _cwnd_cap(self, mss: int) -> int:
        """No window beyond what the buffers could ever fill (no growth while
        application- or receiver-limited runs it up unboundedly)."""
        return 2 * max(self.config.send_buffer, self._max_snd_wnd) + 4 * mss

    def _count_delivered(self, nbytes: int, upto: int, now: float) -> None:
        """Westwood+: one delivery-rate sample per RTT, low-pass filtered.

        With the path model (BBR), every delivered byte -- cumulatively ACKed
        or SACKed below ``upto`` -- also grows the window, as BBR does: by what
        it delivered until the pipe is full, then up to 2 x BDP and no further.
        The model's round trip ends when something sent after it began is
        delivered, SACKed included: a hole that holds up the cumulative ACK
        must not stretch one round over many.
        """
        model = self._model
        if model is not None and nbytes > 0:
            self._round_bytes += nbytes
            if upto > self._model_round_end:
                rtx = self.stats.bytes_retransmitted
                model.on_round(self._round_bytes, now - self._round_t0, rtx - self._round_rtx,
                               self.cwnd, self._payload_room(), self._round_app_limited, now)
                self._round_app_limited = False
                self._round_bytes, self._round_t0, self._round_rtx = 0, now, rtx
                self._model_round_end = self.snd_nxt
            if self.cwnd:
                mss = self._payload_room()
                cwnd = min(self.cwnd + nbytes, self._cwnd_cap(mss))
                target = model.window(mss)
                if target is not None:
                    self.cwnd = min(cwnd, target)
                elif model.growing:
                    self.cwnd = cwnd
        self._bw_bytes += nbytes
        dt = now - self._bw_t0
        srtt = self._rtt.srtt
        if dt >= (srtt if srtt > 0.002 else 0.002):
            sample = self._bw_bytes / dt
            self._bwe = sample if not self._bwe else 0.875 * self._bwe + 0.125 * sample
            self._bw_bytes = 0
            self._bw_t0 = now

    def _loss_ssthresh(self) -> int:
        """ssthresh after a loss, from RFC 5681's FlightSize (SACKed bytes too)."""
        flight = self.snd_nxt - self.snd_una
        mss = self._payload_room()
        cwnd = self.cwnd
        if self._model is not None:
            return max(cwnd, 2 * mss)  # BBR: a loss is repaired, not obeyed
        if self.config.congestion_control != "newreno" and self._bwe and self._min_rtt:
            # TCP Veno's test: with (almost) no standing queue -- the last
            # round's RTT near the minimum -- a loss is random, not congestion,
            # and costs at most 10%.  Less if Westwood+'s pipe estimate (the
            # delivery rate times the minimum RTT) covers the window: the path
            # delivered it.  No allowance above the pipe: a link whose queue is
            # too short to show in the RTT would overflow on every round.
            rtt = self._veno_rtt or self._rtt.latest or self._rtt.srtt
            backlog = cwnd * (1 - self._min_rtt / rtt) if rtt > self._min_rtt else 0.0
            pipe = int(self._bwe * self._min_rtt)
            if backlog < 3 * mss:
                return max((9 * cwnd) // 10, min(cwnd, pipe), 2 * mss)
            # Congestion: Westwood+, never below CUBIC's 0.7 of the window
            # (Linux's CUBIC scales cwnd, not the flight, which is momentarily
            # small when the ACK that reveals the loss has not been refilled).
            return max(pipe, (7 * cwnd) // 10, 2 * mss)
        return max(flight // 2, 2 * mss)

    def _reorder_time(self) -> float:
        """How long past its send time an unacknowledged segment is lost (RACK)."""
        if not self._rtt.has_sample:
            return self._rtt.rto
        srtt = self._rtt.srtt
        # RACK.rtt, the round trip of the latest delivery, when it exceeds
        # SRTT: while a queue builds (slow start), SRTT lags the path and data
        # still queued would be declared lost.
        rtt = self._rack_rtt if self._rack_rtt > srtt else srtt
        return rtt + max(srtt / 4, 0.001)

    def _check_reordering(self, lo: int, hi: int) -> None:
        """``[lo, hi)``, below data SACKed earlier, was just delivered: if it was
        never retransmitted, later data overtook it (reordering, not loss)."""
        if lo < hi and not self._rtx_ever.overlaps(lo, hi):
            self._reordering_seen = self.stats.reordering_seen = True

    def _rtx_lost_at(self, sent: float, end: int, reo: float) -> float:
        """When a retransmission sent at ``sent`` (ending at ``end``) counts as lost.

        RACK's time if something sent after it has been delivered (RFC 8985's
        xmit_ts test: behind a growing queue it is late, not lost); otherwise
        once nothing at all has been sent for two reorder windows -- a lost
        one at the tail of a recovery would else wait for the RTO, and the RTO
        collapses the window.
        """
        if self._rack_before(sent, end):
            return sent + reo
        return self._last_xmit + 2 * reo

    def _rack_before(self, sent: float, end: int) -> bool:
        """Was data sent at ``sent`` and ending at ``end`` sent before the latest
        delivered segment (RFC 8985's RACK_sent_after, end sequence breaking ties)?"""
        return sent < self._rack_xmit or (sent == self._rack_xmit and end <= self._rack_end)

    def _rack_update(self, end: int, now: float) -> None:
        """Data up to ``end`` was just delivered: advance RACK.xmit_ts / end_seq.

        A retransmitted segment counts by its retransmission, unless the ACK
        came sooner than the minimum RTT after it: then it acknowledges the
        original (RFC 8985 6.2).
        """
        t = self._sent_time(end - 1)
        if self._rtx_done.contains(end - 1, end):
            tr = self._rtx_sent(end - 1)
            if tr is not None and now - tr >= self._min_rtt:
                t = max(t, tr)
        if not self._rack_before(t, end):
            self._rack_xmit, self._rack_end = t, end
            self._rack_rtt = now - t

    def _rtx_sent(self, seq: int) -> float | None:
        """When the retransmission holding ``seq`` was sent (None: not found)."""
        i = bisect.bisect_right(self._rtx_starts, seq) - 1
        return self._rtx_times[i] if i >= 0 else None

    def _sent_time(self, seq: int) -> float:
        starts = self._xmit_starts
        i = bisect.bisect_right(starts, seq, self._xmit_head) - 1
        return self._xmit_times[i] if i >= self._xmit_head else self._created

    def _detect_loss(self, now: float) -> None:
        mss = self._payload_room()
        sacked = self._sacked
        reo = self._reorder_time()
        deadline = now - reo
        by_count_ok = not self._reordering_seen
        if not self._in_recovery:
            if not ((by_count_ok and (self._dupacks >= DUP_THRESH
                                      or sacked.covered_above(self.snd_una) >= DUP_THRESH * mss))
                    or (sacked and self._sent_time(self.snd_una) <= deadline)):
                if sacked:
                    self._arm_rack(now)
                return
            self._in_recovery = True
            self._recover = self.snd_nxt
            self.ssthresh = self._loss_ssthresh()
            self.cwnd = min(self.cwnd, self.ssthresh)
            self._ca_acc = 0
            self._rtx_force = True
            self._tlp_deadline = None
            self.stats.fast_retransmits += 1
            if sacked:
                self.stats.sack_recoveries += 1
            else:
                hi = min(self.snd_una + mss, self.snd_nxt)
                self._lost.add(self.snd_una, hi)
            self.stats.cwnd, self.stats.ssthresh = self.cwnd, self.ssthresh
        if not sacked:
            return
        # RFC 6675 IsLost (DupThresh segments SACKed above a hole), or RACK's
        # rule: sent more than an RTT plus a reordering allowance ago (for a
        # retransmission, see _rtx_lost_at).
        lost, rtx_done = self._lost, self._rtx_done
        rtx_starts, rtx_times = self._rtx_starts, self._rtx_times
        top = sacked.last_end or self.snd_una
        holes = list(sacked.holes(self.snd_una, top))
        # SACKed bytes above each hole, in one pass from the top (not per hole).
        above: list[int] = []
        ranges = list(sacked)
        j, acc = len(ranges), 0
        for _lo, hi in reversed(holes):
            while j and ranges[j - 1][0] >= hi:
                j -= 1
                acc += ranges[j][1] - ranges[j][0]
            above.append(acc)
        above.reverse()
        for (lo, hi), sacked_above in zip(holes, above, strict=True):
            by_count = by_count_ok and (lo == self.snd_una or sacked_above >= DUP_THRESH * mss)
            for a, b in list(rtx_done.holes(lo, hi)):
                if by_count or self._sent_time(a) <= deadline:
                    for c, d in list(lost.holes(a, b)):
                        lost.add(c, d)
            # A retransmission that should have been acknowledged by now was
            # lost too: send it again instead of waiting for the RTO.
            for s, e in list(rtx_done):
                if e <= lo:
                    continue
                if s >= hi:
                    break
                a, b = max(s, lo), min(e, hi)
                i = max(bisect.bisect_right(rtx_starts, a) - 1, 0)
                while i < len(rtx_starts) and rtx_starts[i] < b:
                    c = max(rtx_starts[i], a)
                    d = min(rtx_starts[i + 1], b) if i + 1 < len(rtx_starts) else b
                    t = rtx_times[i]
                    i += 1
                    if c < d and self._rtx_lost_at(t, d, reo) <= now:
                        rtx_done.remove(c, d)
                        for x, y in list(lost.holes(c, d)):
                            lost.add(x, y)
        self._arm_rack(now)

    def _arm_rack(self, now: float) -> None:
        """Time the earliest hole that is not yet lost but will be if no ACK comes."""
        earliest: float | None = None
        sacked, lost, rtx_done = self._sacked, self._lost, self._rtx_done
        reo = self._reorder_time()
        for lo, hi in sacked.holes(self.snd_una, sacked.last_end or self.snd_una):
            for a, b in lost.holes(lo, hi):
                if rtx_done.contains(a, a + 1):
                    t = self._rtx_sent(a)
                    if t is not None:
                        t = self._rtx_lost_at(t, b, reo)
                else:
                    t = self._sent_time(a) + reo
                if t is not None and (earliest is None or t < earliest):
                    earliest = t
        self._rack_deadline = None if earliest is None else max(earliest, now + 0.0005)

    def _on_tlp(self, now: float) -> None:
        """Tail loss probe: resend the last segment so its SACK reveals holes."""
        self._tlp_deadline = None
        if (self.snd_nxt == self.snd_una or self._in_recovery or self.state not in SENDING
                or self._tlp_fired):
            return
        self._tlp_fired = True
        self.stats.tail_loss_probes += 1
        # The last segment's worth, within the room SACK blocks leave, and
        # with a FIN on top of it (the FIN takes a sequence number, no byte).
        span = self._payload_room() - self._sack_space()
        if self._fin_seq is not None and self._fin_seq + 1 == self.snd_nxt:
            span += 1
        lo = max(self.snd_una, self.snd_nxt - span)
        if self._sacked.contains(lo, self.snd_nxt):
            return
        self._rtx_done.add(lo, self.snd_nxt)
        self._send_range(lo, self.snd_nxt, now, retransmit=True)
        self._rto_deadline = now + self._rtt.rto  # RFC 8985 7.3

    def _on_rto(self, now: float) -> None:
        self._rto_deadline = None
        if self.snd_nxt == self.snd_una:
            return
        self.stats.timeouts += 1
        self._rtt.on_timeout()
        self.stats.rto = self._rtt.rto
        if self.state in (S.SYN_SENT, S.SYN_RECEIVED):
            self._send_syn(now)
            return
        mss = self._payload_room()
        self.ssthresh = self._loss_ssthresh()
        self.cwnd = mss
        self._rtx_starts.clear()
        self._rtx_times.clear()
        self._tlp_deadline = None
        self._ca_acc = 0
        self._in_recovery = False
        self._dupacks = 0
        self._rtx_done.clear()
        self._lost.clear()
        for lo, hi in list(self._sacked.holes(self.snd_una, self.snd_nxt)):
            self._lost.add(lo, hi)
        self._rtx_force = True
        self._rtt_seq = None
        self.stats.cwnd, self.stats.ssthresh = self.cwnd, self.ssthresh
        self._push(now)
        self._rto_deadline = now + self._rtt.rto

    def _on_persist(self, now: float) -> None:
        self._persist_deadline = None
        data_end = self._sndbuf.end
        if self.snd_wnd > 0 or self.snd_nxt >= data_end or self.state not in SENDING:
            self._persist_backoff = 0
            return
        # A probe below the window elicits an ACK carrying the current window.
        self.stats.window_probes += 1
        if self._last_recv_time >= self._progress_time:  # the last probe was answered
            self._progress_time = now
        self._emit_segment(self.snd_una - 1, ACK, b"", options=self._options(now))
        self._persist_backoff = min(self._persist_backoff + 1, 6)
        self._persist_deadline = now + min(self._rtt.rto * (1 << self._persist_backoff),
                                           self.config.max_rto)

    def _on_keepalive(self, now: float) -> None:
        cfg = self.config
        self._ka_deadline = None
        if cfg.keepalive_idle is None or self.state not in SYNCHRONIZED:
            return
        if self._ka_probes >= cfg.keepalive_count:
            self._time_out("keepalive")
            return
        self._ka_probes += 1
        self._send_probe(now)
        self._ka_deadline = now + cfg.keepalive_interval

    def _send_probe(self, now: float) -> None:
        """A liveness probe: an old sequence number, which a live peer must ACK."""
        if self._ack_now or self._ack_pending:
            # The peer drops the unacceptable probe, ACK field and all: an ACK
            # we owe (delayed, or the handshake's held one) must go on its own.
            self._emit_segment(self.snd_nxt, ACK, b"", options=self._options(now))
        self.stats.keepalives_sent += 1
        self._emit_segment(self.snd_una - 1, ACK, b"", options=self._options(now))

    def _user_deadline(self) -> float | None:
        if self.state in SYNCHRONIZED:
            if self.snd_nxt > self.snd_una:
                return self._progress_time + self.config.user_timeout
            if self._persist_deadline is not None and self._last_recv_time < self._progress_time:
                # Zero-window probing, and the peer has not answered since the
                # first unanswered probe (_progress_time, see _on_persist).
                return self._progress_time + self.config.user_timeout
        return None

    def _update_send_window(self, window: int, seq: int, ack: int) -> None:
        if (self._snd_wl1 == 0 and self._snd_wl2 == 0) or self._snd_wl1 < seq or (
                self._snd_wl1 == seq and self._snd_wl2 <= ack):
            self.snd_wnd = window
            self._snd_wl1 = seq
            self._snd_wl2 = ack
            if window > self._max_snd_wnd:
                self._max_snd_wnd = window
            self.stats.send_window = window
            if window > 0:
                self._persist_deadline = None
                self._persist_backoff = 0

    def _disordered_ack(self, seg: Segment, seq: int, plen: int, tsval: int) -> bool:
        """A pure duplicate ACK overtaken by a later one (reordering), not an old
        duplicate: PAWS lets it through for its SACK blocks, as Linux's
        tcp_disordered_ack does.  It must ACK nothing new, change no window and
        be at most an RTO's worth of timestamp ticks older than TS.Recent."""
        return (plen == 0 and seg.flags & (SYN | FIN | RST | ACK) == ACK
                and seq == self.rcv_nxt
                and unwrap(seg.ack, self.snd_una) == self.snd_una
                and (seg.window << self._snd_wscale) == self.snd_wnd
                and seq_diff(self._ts_recent, tsval) <= self._rtt.rto * 1000)

    def _answer_unacceptable(self, plen: int, flags: int, now: float) -> None:
        """ACK a segment that failed the sequence, PAWS or ACK checks.

        Data (or SYN/FIN) is answered at once, as RFC 9293 says.  A bare ACK is
        answered within the challenge-ACK budget (RFC 5961 7): otherwise two
        desynchronised ends ACK each other forever (an ACK storm; Linux rate-limits
        the same replies with tcp_invalid_ratelimit).
        """
        if plen or flags & (SYN | FIN):
            self._ack_now = True
        else:
            self._challenge_ack(now)

    def _challenge_ack(self, now: float) -> None:
        if now - self._chack_window >= 1.0:
            self._chack_window = now
            self._chack_count = 0
        if self._chack_count >= self.config.challenge_ack_limit:
            return
        self._chack_count += 1
        self.stats.challenge_acks_sent += 1
        self._emit_segment(self.snd_nxt, ACK, b"", options=self._options(now))

    def _reply_reset(self, seg: Segment) -> None:
        rst = reset_for(seg)
        if rst is not None:
            self.stats.resets_sent += 1
            self.stats.segments_sent += 1
            self._out.append(rst)

    # ------------------------------------------------------------ lifecycle
    def _set_state(self, new: State) -> None:
        old = self.state
        if old is not new:
            self.state = new
            self._events.append(_STATE_CHANGED[old, new])

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(S.TIME_WAIT)
        self._timewait_deadline = now + 2 * self.config.msl
        self._rto_deadline = None
        self._tlp_deadline = None
        self._persist_deadline = None
        self._ka_deadline = None
        self._orphan_deadline = None
        self._icmp_probe_deadline = None

    def _close_now(self) -> None:
        for name in ("_rto_deadline", "_tlp_deadline", "_rack_deadline", "_delack_deadline",
                     "_cork_deadline", "_persist_deadline", "_ka_deadline",
                     "_timewait_deadline", "_connect_deadline", "_orphan_deadline",
                     "_icmp_probe_deadline"):
            setattr(self, name, None)
        self.snd_una = self.snd_nxt  # nothing outstanding any more
        if self.state is not S.CLOSED:
            self._set_state(S.CLOSED)
            self._events.append(_CONNECTION_CLOSED)

    def _fail(self, event: ev.Event) -> None:
        self.error = event
        self._events.append(event)
        self._close_now()

    def _time_out(self, reason: str) -> None:
        if self.state in SYNCHRONIZED and self.state is not S.TIME_WAIT:
            self._emit_segment(self.snd_nxt, RST, b"", options=())
            self.stats.resets_sent += 1
        self._fail(ev.ConnectionTimedOut(reason))


def _find_option(options: tuple, kind: int):  # noqa: ANN202
    for k, v in options:
        if k == kind:
            return v
    return None


def _has_option(options: tuple, kind: int) -> bool:
    for k, _ in options:  # a loop: any() and a generator cost 4x as much here
        if k == kind:
            return True
    return False
