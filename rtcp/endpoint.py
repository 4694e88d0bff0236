"""One datagram socket, many connections: demultiplexing, timers, TIME_WAIT.

An :class:`Endpoint` owns a :class:`~rtcp.transport.DatagramTransport` and runs
one trio system task that reads datagrams in batches, hands each segment to its
connection's sans-I/O core, fires due timers and sends what the cores want to
send.  Connections outlive the stream objects that use them: TIME_WAIT and the
tail of a graceful close are finished here, without a file descriptor each.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import os
import socket
import struct
from collections import deque
from dataclasses import dataclass, fields

import trio

from . import segment as codec
from .config import DEFAULT_CONFIG, Config
from .core import events as ev
from .core.connection import ACK, FIN, RST, SYN, Connection, S, reset_for
from .core.cookies import PERIOD as COOKIE_PERIOD
from .core.cookies import check_cookie, make_cookie, may_be_cookie
from .core.isn import isn_and_ts_offset, timestamp_offset
from .segment import ChecksumError, Segment, SegmentError
from .transport import DatagramTransport

log = logging.getLogger("rtcp")

#: Datagrams read per wake-up before other tasks get a turn.
RECV_BATCH = 256
#: Until an address completes the handshake we send it at most this many
#: times the bytes it sent us.  1 would stop reflection cold, but also every
#: SYN-ACK retransmission: a lost third ACK then left a client that waits for
#: the server to speak first hanging (found by lossy stress runs).  QUIC's 3x
#: (RFC 9000 8.1) relies on clients that keep probing until the handshake is
#: confirmed, which TCP clients do not; 6 allows what kernel TCP sends, the
#: SYN-ACK and Linux's default 5 retransmissions (tcp_synack_retries).
AMPLIFICATION_FACTOR = 6

#: A wait's deadline is moved later along with the timer that set it only when
#: that timer was due within this many seconds (see Endpoint._after).
RAISE_HORIZON = 0.01

#: Stale timer-heap entries (a timer since moved, a connection gone) are swept
#: out when the heap holds this many more than twice the connections.
HEAP_SLACK = 64


@dataclass(slots=True)
class EndpointStats:
    """What one endpoint (UDP socket) has seen; ``listener.stats`` shows it."""

    #: Datagrams read from / written to the socket.
    datagrams_received: int = 0
    datagrams_sent: int = 0
    #: Datagrams dropped: checksum did not verify / not a well-formed segment.
    checksum_failures: int = 0
    malformed: int = 0
    #: RSTs sent, by connections and for segments that matched none.
    resets_sent: int = 0
    #: SYNs to the listener; of those, answered with a SYN cookie (half-open
    #: queue full); cookies that came back valid; SYNs dropped, or cookie ACKs
    #: refused, because the accept queue was full.
    syn_received: int = 0
    syn_cookies_sent: int = 0
    syn_cookies_accepted: int = 0
    syn_dropped: int = 0
    #: ICMP "unreachable" reports read from the socket's error queue.
    unreachable: int = 0
    #: Replies held back so that an unvalidated address never gets more than
    #: AMPLIFICATION_FACTOR times the bytes it sent.
    amplification_limited: int = 0
    #: Connections handed to accept().
    connections_accepted: int = 0
    #: New connections that took over a 4-tuple still in TIME_WAIT.
    time_wait_reused: int = 0
    #: Times the socket's send buffer was full (the rest waited for writability).
    send_blocked: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for JSON and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Waiters:
    """The tasks waiting for news of one connection (or listener).

    trio's ``ParkingLot`` cut down to what the endpoint needs, park and wake
    all, at a fraction of its cost: a handshake parks and wakes a few times,
    and ParkingLot's construction, bookkeeping and wake-up were ~5 % of it.
    """

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        #: The parked tasks, in parking order.
        self.tasks: list[trio.lowlevel.Task] = []

    def __len__(self) -> int:
        return len(self.tasks)

    async def park(self) -> None:
        """Wait until :func:`wake_all`; cancellable."""
        task = trio.lowlevel.current_task()
        tasks = self.tasks
        tasks.append(task)

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            tasks.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


def wake_all(lot: Waiters) -> None:
    """Wake every task parked in ``lot`` (often none)."""
    tasks = lot.tasks
    if tasks:
        lot.tasks = []
        for task in tasks:
            trio.lowlevel.reschedule(task)


class Slot:
    """An endpoint's record of one connection (lives until CLOSED)."""

    __slots__ = ("conn", "key", "addr", "lot", "timer_at", "alarm_at", "from_listener", "queued",
                 "stream_open", "budget", "local_host", "__weakref__")

    def __init__(self, conn: Connection, key: tuple, addr: tuple, from_listener: bool) -> None:
        self.conn = conn
        self.key = key
        self.addr = addr
        #: Woken whenever anything about the connection changes.
        self.lot = Waiters()
        self.timer_at: float | None = None
        #: When the endpoint wakes the lot's waiters although nothing changed
        #: (see Endpoint.wake_at); None: no such alarm.
        self.alarm_at: float | None = None
        self.from_listener = from_listener
        self.queued = False
        self.stream_open = False
        #: Bytes we may still send to a peer whose address is not validated yet
        #: (AMPLIFICATION_FACTOR times what it sent us).
        self.budget = 0
        #: The address of ours the peer reached, for a wildcard listener's
        #: connection (its key's fifth part; the source of our replies); None:
        #: the kernel's choice is right.
        self.local_host: str | None = key[4] if len(key) > 4 else None


class _ListenState:
    __slots__ = ("config", "queue", "lot", "closed")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue: deque[Slot] = deque()
        self.lot = Waiters()
        self.closed = False


#: States whose 4-tuple a new connect may take over: TIME_WAIT (tcp_tw_reuse)
#: and a reset connection whose stream is not closed yet.
_REUSABLE = frozenset({S.TIME_WAIT, S.CLOSED})
#: States that owe a peer nothing when the socket closes under them.
_QUIET = _REUSABLE | {S.LISTEN}

#: The ports and sequence number at the start of a (quoted) segment.
_PORTS_SEQ = struct.Struct(">HHI").unpack_from


def _addr_key(addr: tuple) -> tuple:
    return (addr[0], addr[1])


class Endpoint:
    """Drives every connection on one transport.  See the module docstring."""

    def __init__(self, transport: DatagramTransport, config: Config | None = None, *,
                 tracer: object | None = None, linger: bool = False) -> None:
        self.transport = transport
        self.config = config or DEFAULT_CONFIG
        self.tracer = tracer
        self.stats = EndpointStats()
        self.local_address = transport.local_address
        self.local_port: int = transport.local_address[1]
        self._slots: dict[tuple, Slot] = {}
        self._listen: _ListenState | None = None
        self._heap: list[tuple[float, int, Slot]] = []
        self._heap_n = 0
        #: (when, n, slot): wake slot.lot at ``when`` (Endpoint.wake_at).
        self._alarms: list[tuple[float, int, Slot]] = []
        self._dirty: list[Slot] = []
        self._outbox: deque[tuple[bytes, tuple, str | None]] = deque()
        #: While a datagram from a wildcard socket is handled: the address of
        #: ours it was sent to, for new connections and for stateless replies.
        self._dst_host: str | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._secret = os.urandom(16)
        self._closed = False
        self._done = trio.Event()
        #: Keep running with no connections (a bound client or a listener).
        self._linger = linger
        self._half_open = 0
        self._batch_full = False
        #: Until when an ACK to the listener that fails the cookie check may still
        #: belong to a cookie connection.
        self._cookies_until = -math.inf
        trio.lowlevel.spawn_system_task(self._run, name=f"rtcp-endpoint-{self.local_port}")

    # ----------------------------------------------------------- user side
    @property
    def connection_count(self) -> int:
        """Connections this endpoint still drives, TIME_WAIT included."""
        return len(self._slots)

    def max_datagram_for(self, addr: tuple, config: Config) -> int:
        """Largest datagram towards ``addr``: IPv6 paths leave room for a larger IP header."""
        if self.transport.family == socket.AF_INET6 and not _is_v4_mapped(addr[0]):
            return min(config.max_datagram, config.max_datagram_ipv6)
        return config.max_datagram

    def has_connection(self, addr: tuple, remote_port: int) -> bool:
        """Whether a live (not TIME_WAIT, not CLOSED) connection to ``addr`` uses this socket."""
        slot = self._slots.get((addr[0], addr[1], self.local_port, remote_port))
        return slot is not None and slot.conn.state not in _REUSABLE

    def connect(self, addr: tuple, config: Config) -> Slot:
        """Start an active open to ``addr`` (port in the header = UDP port)."""
        if self._closed:
            raise trio.ClosedResourceError("endpoint is closed")
        remote_port = addr[1]
        key = (*_addr_key(addr), self.local_port, remote_port)
        old = self._slots.get(key)
        if old is not None:
            state = old.conn.state
            if state not in _REUSABLE:
                raise OSError(f"a connection to {addr} from this port already exists")
            # A reset connection whose stream is not closed yet, or TIME_WAIT's
            # 4-tuple reused (tcp_tw_reuse); release() then leaves the new slot.
            self._forget(old, close_idle=False)
            if state is S.TIME_WAIT:
                self.stats.time_wait_reused += 1
        now = trio.current_time()
        conn = self._new_connection(config, addr, self.local_port, remote_port, now)
        slot = Slot(conn, key, addr, from_listener=False)
        slot.stream_open = True
        self._slots[key] = slot
        conn.connect(now, hold_ack=True)  # a stream's task takes it at once
        self.kick(slot)
        return slot

    def _new_connection(self, config: Config, addr: tuple, local_port: int, remote_port: int,
                        now: float) -> Connection:
        # Header ports are the ones the peer knows: behind a NAT or a relay
        # our header port is the port it sends to, not our socket's.
        local = (self.local_address[0], local_port)
        remote = (addr[0], remote_port)
        iss, ts_offset = isn_and_ts_offset(self._secret, local, remote, now)
        return Connection(config, local_port, remote_port, iss=iss, now=now,
                          max_datagram=self.max_datagram_for(addr, config), ts_offset=ts_offset)

    def listen(self, config: Config) -> None:
        """Start accepting SYNs on this socket (one listener per endpoint)."""
        if self._listen is not None and not self._listen.closed:
            raise OSError("endpoint already has a listener")
        self._listen = _ListenState(config)
        self._linger = True
        enable = getattr(self.transport, "enable_pktinfo", None)
        if enable is not None:
            enable()

    def stop_listening(self) -> None:
        """Stop accepting; connections not yet accepted are reset."""
        ls = self._listen
        if ls is None or ls.closed:
            return
        ls.closed = True
        wake_all(ls.lot)
        now = trio.current_time()
        while ls.queue:
            slot = ls.queue.popleft()
            if not slot.stream_open:
                slot.conn.abort(now)
                self.kick(slot)
        for slot in list(self._slots.values()):
            if slot.from_listener and not slot.queued and slot.conn.state is S.SYN_RECEIVED:
                slot.conn.abort(now)
                self.kick(slot)
            elif slot.conn.state is S.TIME_WAIT and not slot.stream_open:
                # Like SO_REUSEADDR: a closed listener's port is free at once,
                # not after 2 MSL of TIME_WAIT.
                self._forget(slot, close_idle=False)
        self._linger = False
        self._maybe_close()

    async def accept(self) -> Slot:
        """Wait for the next established connection from the accept queue."""
        ls = self._listen
        assert ls is not None
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            if ls.closed:
                raise trio.ClosedResourceError("listener is closed")
            if ls.queue:
                slot = ls.queue.popleft()
                slot.stream_open = True
                self.stats.connections_accepted += 1
                # Past this point cancellation must not lose the connection.
                # Parking was this call's schedule point already; another
                # would cost the accepting task a trip through the run queue.
                if not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return slot
            await ls.lot.park()
            parked = True

    def kick(self, slot: Slot) -> None:
        """Run the bookkeeping after the user changed a connection."""
        self._after(slot, trio.current_time())

    def wake_at(self, slot: Slot, when: float | None) -> None:
        """Wake the tasks parked in ``slot.lot`` at ``when`` (None: cancel).

        A bounded wait without a cancel scope of its own (entering and leaving
        one cost 17 us, a few percent of a whole connect+close cycle): the
        waiter parks, and checks the clock when it wakes."""
        slot.alarm_at = when
        if when is None:
            return
        self._heap_n += 1
        heapq.heappush(self._alarms, (when, self._heap_n, slot))
        if len(self._alarms) > HEAP_SLACK + 2 * len(self._slots):
            self._sweep_heaps()
        scope = self._wait_scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    def release(self, slot: Slot) -> None:
        """The stream object is done with ``slot``; the endpoint finishes it."""
        slot.stream_open = False
        if slot.conn.state is S.CLOSED:
            self._forget(slot)

    def close(self) -> None:
        """Abort every connection and close the transport."""
        self._end_all(trio.current_time(), graceful=False)
        self._linger = False
        self._closed = True
        self._wake()

    async def wait_closed(self) -> None:
        """Wait until the endpoint's task has ended and its socket is closed."""
        await self._done.wait()

    # ------------------------------------------------------------ internals
    def _trace(self, method: str, *args: object) -> None:
        """Call the tracer; a failing tracer (say, a full disk) is dropped, not fatal."""
        try:
            getattr(self.tracer, method)(*args)
        except Exception:
            log.exception("rtcp tracer %r failed; tracing stops", self.tracer)
            self.tracer = None

    def local_address_for(self, host: str | None) -> tuple:
        """Our address as a peer sees it: the socket's, or, given ``host`` (a
        wildcard listener's connection), the address the peer reached."""
        local = self.local_address
        return local if host is None else (host, *local[1:])

    def _wake(self) -> None:
        if self._wait_scope is not None:
            self._wait_scope.deadline = -math.inf

    def _after(self, slot: Slot, now: float) -> None:
        conn = slot.conn
        segs = conn.segments_to_send(now)
        events = conn.events()
        if segs:
            self._send_segments(segs, slot.addr, slot)
        if events:
            self._on_events(slot, events, now)
            wake_all(slot.lot)
        t = conn.timer()
        old = slot.timer_at
        if t != old:
            slot.timer_at = t
            if t is not None:
                self._heap_n += 1
                heap = self._heap
                heapq.heappush(heap, (t, self._heap_n, slot))
                if len(heap) > HEAP_SLACK + 2 * len(self._slots):
                    self._sweep_heaps()
            scope = self._wait_scope
            if scope is not None:
                if t is not None and t < scope.deadline:
                    scope.deadline = t
                elif old == scope.deadline and old - now < RAISE_HORIZON:
                    # This timer set the wake-up and moved later (a tail-loss
                    # probe re-armed by each ACK): move the wake-up too, or
                    # the endpoint wakes for nothing every PTO.  A far one is
                    # left alone: the deadline setter costs more than one
                    # wake-up much later (handshakes move timers ~1 s out).
                    scope.deadline = self._next_deadline()

    def _on_events(self, slot: Slot, events: list[ev.Event], now: float) -> None:
        for e in events:
            if isinstance(e, ev.StateChanged):
                if self.tracer is not None and not (slot.from_listener and e.new == "LISTEN"):
                    local = self.local_address_for(slot.local_host)
                    self._trace("on_state", now, local, slot.addr, e.old, e.new)
                if slot.from_listener:
                    if e.old == "SYN_RECEIVED":
                        self._half_open -= 1
                    elif e.new == "SYN_RECEIVED":
                        self._half_open += 1
            elif isinstance(e, ev.Connected):
                ls = self._listen
                if slot.from_listener and not slot.queued:
                    if ls is None or ls.closed:
                        slot.conn.abort(now)
                    else:
                        slot.queued = True
                        ls.queue.append(slot)
                        wake_all(ls.lot)
            elif isinstance(e, (ev.ConnectionReset, ev.ConnectionTimedOut)):
                log.info("%s <-> %s: %s", self.local_address, slot.addr, e)
            elif isinstance(e, ev.ConnectionClosed):
                if not slot.stream_open:
                    self._forget(slot)
        if slot.conn.state is S.CLOSED and not slot.stream_open:
            self._forget(slot)

    def _forget(self, slot: Slot, close_idle: bool = True) -> None:
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
            if slot.from_listener and slot.conn.state is S.SYN_RECEIVED:
                self._half_open -= 1
            if close_idle:
                self._maybe_close()

    def _maybe_close(self) -> None:
        if not self._slots and not self._linger and not self._closed:
            self._closed = True
            self._wake()

    def _send_segments(self, segs: list[Segment], addr: tuple, slot: Slot | None = None) -> None:
        source = slot.local_host if slot is not None else self._dst_host
        tracer = self.tracer
        encode = codec.encode
        limited = slot is not None and slot.from_listener and \
            slot.conn.state is S.SYN_RECEIVED
        out: list[bytes] = []
        stats = self.stats
        for seg in segs:
            data = encode(seg)
            if limited:
                if len(data) > slot.budget:  # type: ignore[union-attr]
                    stats.amplification_limited += 1
                    continue
                slot.budget -= len(data)  # type: ignore[union-attr]
            if tracer is not None:
                self._trace("on_segment", trio.current_time(), "out",
                            self.local_address_for(source), addr, seg)
            if seg.flags & RST:
                stats.resets_sent += 1
            out.append(data)
        stats.datagrams_sent += len(out)
        if self._outbox:
            self._outbox.extend((d, addr, source) for d in out)
            return
        if source is None:  # the common case: the kernel picks the source
            sent = self.transport.send_many(out, addr) if len(out) > 1 else (
                1 if out and self.transport.send(out[0], addr) else 0)
        else:
            sent = self.transport.send_many(out, addr, source)
        if sent < len(out):
            self._outbox.extend((d, addr, source) for d in out[sent:])
            stats.send_blocked += 1
            self._wake()

    def _flush_outbox(self) -> None:
        send = self.transport.send
        while self._outbox:
            data, addr, source = self._outbox[0]
            # A transport written before ``source`` existed takes two arguments.
            if not (send(data, addr) if source is None else send(data, addr, source)):
                return
            self._outbox.popleft()

    # -------------------------------------------------------- the datagram path
    def _on_datagram(self, data: bytes, addr: tuple, now: float) -> Slot | None:
        self.stats.datagrams_received += 1
        try:
            seg = codec.decode_view(data)
        except ChecksumError:
            self.stats.checksum_failures += 1
            return None
        except SegmentError:
            self.stats.malformed += 1
            return None
        key = (addr[0], addr[1], seg.dst_port, seg.src_port)
        slot = self._slots.get(key)
        if self._dst_host is not None:
            # A wildcard listener's connections are also told apart by which
            # of our addresses the peer reached (a 5-tuple, as in kernel TCP);
            # those we opened by connect() keep the 4-tuple.
            local_key = (*key, self._dst_host)
            local_slot = self._slots.get(local_key)
            if local_slot is not None or slot is None:
                slot, key = local_slot, local_key
        if self.tracer is not None:
            local = self.local_address_for(slot.local_host if slot is not None else self._dst_host)
            if seg.flags & (SYN | ACK | RST) == SYN and \
                    self._listen is not None and not self._listen.closed and (
                        slot is None or slot.conn.state is S.CLOSED
                        or slot.conn.syn_may_reopen(seg)):
                # The listener was there before the SYN: say so first (the new
                # connection's own CLOSED -> LISTEN step is not traced).  Also
                # when the SYN replaces a finished or TIME_WAIT connection below:
                # that is how a tracer tells the new connection from the old.
                self._trace("on_state", now, local, addr, "CLOSED", "LISTEN")
            # A decoded segment's payload is bytes (SPEC.md); the view that
            # decode_view lends is the receive path's business, not a tracer's.
            self._trace("on_segment", now, "in", local, addr, seg if seg.payload.__class__
                        is bytes else dataclasses.replace(seg, payload=bytes(seg.payload)))
        if slot is not None:
            state = slot.conn.state
            if state is S.CLOSED:
                self._forget(slot)  # finished; its stream object may linger
            elif state is S.TIME_WAIT and self._listen is not None \
                    and not self._listen.closed and slot.conn.syn_may_reopen(seg):
                self._forget(slot)
                self.stats.time_wait_reused += 1
            else:
                if slot.from_listener and state is S.SYN_RECEIVED:
                    adopted = self._cookie_supersedes(slot, seg, addr, key, now)
                    if adopted is not None:
                        return adopted
                    slot.budget += AMPLIFICATION_FACTOR * len(data)
                slot.conn.handle_segment(seg, now)
                return slot
        return self._no_connection(seg, len(data), addr, key, now)

    def _cookie_supersedes(self, slot: Slot, seg: Segment, addr: tuple, key: tuple,
                           now: float) -> Slot | None:
        """The client's connection, if ``seg`` answers a cookie SYN-ACK rather than
        the half-open ``slot``'s.

        We answered a SYN with a cookie (the half-open queue was full); a copy of
        that SYN (retransmitted, or duplicated by the network) then found room
        and made ``slot``.  The client took the cookie SYN-ACK, so its ACK names
        the cookie: without this, ``slot`` would find it unacceptable and reset a
        client that rightly believes it is connected (seen in stress runs).
        """
        ls = self._listen
        if ls is None or ls.closed or seg.flags & (SYN | RST | ACK) != ACK \
                or seg.ack == (slot.conn.iss + 1) & 0xFFFFFFFF:
            return None
        mss = self._cookie_mss(seg, addr, now)
        if mss is None or not self._admit_cookie(ls):
            return None
        return self._open_from_cookie(ls, seg, addr, key, now, mss, replacing=slot)

    def _no_connection(self, seg: Segment, size: int, addr: tuple, key: tuple,
                       now: float) -> Slot | None:
        flags = seg.flags & (SYN | ACK | RST)
        ls = self._listen
        if ls is not None and not ls.closed:
            if flags == SYN:
                return self._on_syn(ls, seg, size, addr, key, now)
            if flags == ACK:
                mss = self._cookie_mss(seg, addr, now)
                if mss is not None and self._admit_cookie(ls):
                    return self._open_from_cookie(ls, seg, addr, key, now, mss)
                if (now < self._cookies_until
                        and may_be_cookie((seg.ack - 1) & 0xFFFFFFFF, now)
                        and (mss is None or seg.payload or seg.flags & FIN)):
                    # Perhaps a cookie connection's later segment whose handshake
                    # ACK (and first segment) was lost: its sequence number no
                    # longer names the cookie.  Data, a FIN, or a bare ACK: the
                    # client answers a copy of the cookie SYN-ACK (duplicated, or
                    # drawn by a retransmitted SYN) with an ACK at SND.NXT.  Drop
                    # it: the client retransmits from its first byte, which does
                    # name the cookie; a reset would break a client that believes
                    # it is connected.  (A refused valid cookie's bare ACK still
                    # gets its RST, see _admit_cookie.)  The price, where Linux
                    # resets: for up to two cookie periods (128 s) after a cookie
                    # went out, a stale peer whose ACK happens to carry the time
                    # bits (2 in 32 ACK values, or any former cookie connection's)
                    # learns of its dead connection by its own timeouts, not a RST.
                    return None
        rst = reset_for(seg)
        if rst is not None:
            self._send_segments([rst], addr)
        return None

    def _on_syn(self, ls: _ListenState, seg: Segment, size: int, addr: tuple, key: tuple,
                now: float) -> Slot | None:
        self.stats.syn_received += 1
        if len(ls.queue) >= ls.config.backlog:
            # Like a kernel with a full accept queue: drop; the client retries.
            self.stats.syn_dropped += 1
            return None
        if self._half_open >= ls.config.syn_backlog:
            self._send_cookie(ls, seg, size, addr, now)
            return None
        conn = self._new_connection(ls.config, addr, seg.dst_port, seg.src_port, now)
        slot = Slot(conn, key, addr, from_listener=True)
        slot.budget = AMPLIFICATION_FACTOR * size
        self._slots[key] = slot
        conn.listen()
        conn.handle_segment(seg, now)
        # Count it as half-open (and send the SYN-ACK) now, not after the whole
        # receive batch: the next SYN of this batch must see the new count.
        self._after(slot, now)
        return None

    def _send_cookie(self, ls: _ListenState, seg: Segment, size: int, addr: tuple,
                     now: float) -> None:
        """Answer a SYN statelessly (RFC 4987), never with more bytes than it had."""
        mss_opt = next((v for k, v in seg.options if k == 2), 536)
        isn, _ = make_cookie(self._secret, addr, (seg.dst_port, seg.src_port), seg.seq,
                             mss_opt, now)
        our_mss = min(self.max_datagram_for(addr, ls.config) - 20, 0xFFFF)
        options = ((2, our_mss),) if size >= 24 else ()
        synack = Segment(seg.dst_port, seg.src_port, isn, (seg.seq + 1) & 0xFFFFFFFF,
                         SYN | ACK, min(ls.config.receive_buffer, 0xFFFF), 0, options)
        self.stats.syn_cookies_sent += 1
        self._cookies_until = now + 2 * COOKIE_PERIOD  # check_cookie's validity
        self._send_segments([synack], addr)

    def _cookie_mss(self, seg: Segment, addr: tuple, now: float) -> int | None:
        """The MSS a valid SYN cookie in ``seg`` (an ACK) carries; None: no cookie."""
        return check_cookie(self._secret, addr, (seg.dst_port, seg.src_port),
                            (seg.seq - 1) & 0xFFFFFFFF, (seg.ack - 1) & 0xFFFFFFFF, now)

    def _admit_cookie(self, ls: _ListenState) -> bool:
        """Whether a valid cookie's connection may join the accept queue.

        A full accept queue (up to backlog) does not turn a valid cookie away:
        the client already believes it is connected, and neither a RST (it
        breaks) nor a silent drop (a client waiting for the server to speak
        would wait forever: nobody retransmits) would do.  The cookie proved a
        real round trip, so these connections may overflow the queue by up to
        syn_backlog, the half-open ones they stand for.  Beyond that: refused
        (the caller drops data or a FIN, which come again, and resets a bare ACK).
        """
        if len(ls.queue) >= ls.config.backlog + ls.config.syn_backlog:
            self.stats.syn_dropped += 1
            return False
        return True

    def _open_from_cookie(self, ls: _ListenState, seg: Segment, addr: tuple, key: tuple,
                          now: float, mss: int, replacing: Slot | None = None) -> Slot:
        """The connection a valid, admitted cookie ACK opens (in place of
        ``replacing``, a half-open connection of the same key)."""
        irs = (seg.seq - 1) & 0xFFFFFFFF
        iss = (seg.ack - 1) & 0xFFFFFFFF
        if replacing is not None:
            self._forget(replacing, close_idle=False)
        conn = Connection.from_cookie(
            ls.config, seg.dst_port, seg.src_port, iss=iss, irs=irs, mss=mss, now=now,
            max_datagram=self.max_datagram_for(addr, ls.config),
            ts_offset=timestamp_offset(self._secret, (self.local_address[0], seg.dst_port),
                                       (addr[0], seg.src_port)))
        slot = Slot(conn, key, addr, from_listener=True)
        self._slots[key] = slot
        self.stats.syn_cookies_accepted += 1
        conn.handle_segment(seg, now)
        return slot

    def _on_unreachable(self, now: float) -> None:
        for report in self.transport.unreachable():
            addr, data = report[0], report[1]
            self.stats.unreachable += 1
            # Only the ports and sequence number: ICMP quotes the start of our
            # datagram (Linux: 520 bytes), so a full-size segment's quote fails
            # any checksum.  The report is only a reason to probe, and only
            # with a sequence number we sent lately (Connection.on_unreachable).
            if len(data) < 8:
                continue
            src_port, dst_port, seq = _PORTS_SEQ(data)
            key = (addr[0], addr[1], src_port, dst_port)
            slot = None
            if len(report) > 2 and report[2] is not None:  # see _on_datagram
                slot = self._slots.get((*key, report[2]))
            if slot is None:
                slot = self._slots.get(key)
            if slot is not None:
                slot.conn.on_unreachable(now, seq)
                self._mark(slot)

    def _mark(self, slot: Slot) -> None:
        self._dirty.append(slot)

    def _process(self, now: float) -> None:
        """Send what waits, read one batch, fire due timers, then send replies."""
        transport = self.transport
        self._flush_outbox()
        batch = transport.receive_batch(RECV_BATCH)
        self._batch_full = len(batch) == RECV_BATCH
        dirty = self._dirty
        pktinfo = getattr(transport, "pktinfo", False)
        for entry in batch:
            if pktinfo:
                data, addr, self._dst_host = entry
            else:
                data, addr = entry
            slot = self._on_datagram(data, addr, now)
            if slot is not None:
                dirty.append(slot)
                # Events (state changes, accepts) at once, in datagram
                # order; the replies go out after the batch, coalesced.
                events = slot.conn.events()
                if events:
                    self._on_events(slot, events, now)
                    wake_all(slot.lot)
        self._dst_host = None
        self._on_unreachable(now)
        self._fire_timers(now)
        self._dirty = []
        if len(dirty) == 1:
            self._after(dirty[0], now)
            return
        seen: set[int] = set()
        for slot in dirty:
            if id(slot) not in seen:
                seen.add(id(slot))
                self._after(slot, now)

    def _fire_timers(self, now: float) -> None:
        alarms = self._alarms
        while alarms and alarms[0][0] <= now:
            t, _, slot = heapq.heappop(alarms)
            if slot.alarm_at == t:
                slot.alarm_at = None
                wake_all(slot.lot)
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, _, slot = heapq.heappop(heap)
            if slot.timer_at != t or self._slots.get(slot.key) is not slot:
                continue
            slot.timer_at = None
            slot.conn.handle_timer(now)
            self._dirty.append(slot)

    def _sweep_heaps(self) -> None:
        """Drop the entries of timers that moved and of connections gone.

        Each timer change pushes an entry and leaves the old one for
        _next_deadline to pop when it comes due, but one due far ahead (2 MSL,
        a keepalive) would sit there that long, holding its closed connection
        in memory and deepening the heap for every push and pop.  Sweeping
        when stale entries outnumber the connections keeps the cost amortized
        O(1) per push."""
        slots = self._slots
        heap = [e for e in self._heap if e[2].timer_at == e[0] and slots.get(e[2].key) is e[2]]
        heapq.heapify(heap)
        self._heap = heap
        alarms = [e for e in self._alarms if e[2].alarm_at == e[0]]
        heapq.heapify(alarms)
        self._alarms = alarms

    def _next_deadline(self) -> float:
        alarms = self._alarms
        while alarms and alarms[0][2].alarm_at != alarms[0][0]:
            heapq.heappop(alarms)
        first = alarms[0][0] if alarms else math.inf
        heap = self._heap
        while heap:
            t, _, slot = heap[0]
            if slot.timer_at == t and self._slots.get(slot.key) is slot:
                return min(t, first)
            heapq.heappop(heap)
        return first

    async def _run(self) -> None:
        transport = self.transport
        try:
            while not self._closed:
                # One cancel scope serves every wake-up until a timer is due (or
                # _wake() cuts the wait short): entering and leaving a scope per
                # datagram costs more than the protocol work of a small segment.
                scope = trio.CancelScope(deadline=self._next_deadline())
                self._wait_scope = scope
                with scope:
                    while not self._closed:
                        if self._outbox:
                            await transport.wait_writable()
                        else:
                            await transport.wait_readable()
                        # _after() lowered the deadline for any earlier timer; a
                        # later one (a timer pushed back) waits for the next scope.
                        self._process(trio.current_time())
                        if self._batch_full:
                            await trio.lowlevel.checkpoint()  # a flood must not starve others
                self._wait_scope = None
                self._process(trio.current_time())
        except Exception as exc:  # never raise from a system task
            log.exception("rtcp endpoint %s failed", self.local_address)
            for slot in list(self._slots.values()):
                slot.conn._fail(ev.EndpointFailed(exc))
                wake_all(slot.lot)
        finally:
            self._closed = True
            self._wait_scope = None
            self._reset_live()
            sock = getattr(transport, "sock", None)
            if sock is not None:
                trio.lowlevel.notify_closing(sock)
            transport.close()
            if self._listen is not None:
                self._listen.closed = True
                wake_all(self._listen.lot)
            self._done.set()


    def _reset_live(self) -> None:
        """End the connections still open as the socket closes (trio.run
        ending cancels this task), as a cancelled aclose() does: queued data
        and a FIN as far as the window allows, then RST.  As when a process's
        TCP sockets close at exit, the peers hear of it now (one that has all
        the data reads EOF), not after their user timeout or, idle, never."""
        try:
            now = trio.current_time()
        except RuntimeError:
            return
        self._flush_outbox()
        self._end_all(now, graceful=True)
        self._flush_outbox()  # what a full socket held back, the RSTs last

    def _end_all(self, now: float, graceful: bool) -> None:
        """Abort every connection (RST where one is owed); ``graceful``: those
        not finished first send queued data and a FIN as far as the windows
        allow, as a cancelled aclose() does."""
        for slot in list(self._slots.values()):
            try:
                if graceful:
                    if slot.conn.state in _QUIET:
                        continue
                    slot.conn.close(now)
                    self._after(slot, now)
                slot.conn.abort(now)
                self._after(slot, now)
            except Exception:
                log.exception("rtcp endpoint %s: ending %s failed", self.local_address,
                              slot.addr)


def _is_v4_mapped(host: str) -> bool:
    return host.startswith("::ffff:")
