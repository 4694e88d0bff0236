"""A seeded UDP impairment relay: rtcp's own netem.

This kernel has no ``tc netem``, yet rtcp has to be shown to survive loss, bursts of loss,
duplication, reordering, corruption, delay and a slow bottleneck link. The relay sits between
a client and a server, forwards datagrams in both directions and damages them on the way.

Every random decision is drawn, at the moment a datagram arrives, from a ``random.Random``
owned by its direction and seeded from one relay seed. The same seed and the same sequence of
arriving datagrams therefore give the same drops, copies, flipped bits, delays and holds,
whatever the timing of the rest of the run, so a failing transfer test can be replayed.

Pipeline of one direction (the order netem uses)::

    receive -> burst loss (Gilbert-Elliott) -> random loss -> duplication -> per copy:
        corruption -> delay + jitter -> reorder hold -> rate-limited link (bounded queue) -> send

The relay behaves like a NAT: each client address gets its own upstream UDP socket, connected
to the server, so the server sees one distinct source port per client and replies find their
way back. The mapping table is bounded and idle mappings expire.

Typical use in a test::

    async with open_relay(("127.0.0.1", server_port), forward=Impairment(loss=0.05),
                          backward=Impairment(delay=0.02), seed=1) as relay:
        stream = await rtcp.open_rtcp_stream(*relay.listen_address[:2])
        ...
    print(relay.stats.summary())

and on the command line: ``rtcp relay --listen 9000 --to 127.0.0.1:7007 --loss 0.05``.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

__all__ = [
    "DirectionStats",
    "Impairment",
    "Relay",
    "RelayStats",
    "add_relay_arguments",
    "format_address",
    "open_relay",
    "parse_address",
    "relay_from_args",
    "run_relay_from_args",
]

#: Largest UDP payload we read; anything IPv4 or IPv6 can carry without jumbograms.
_RECV_SIZE = 65535
#: Datagrams handled per batch before yielding to the trio scheduler.
_BATCH = 64
#: Socket buffers we ask the kernel for, so bursts are absorbed by the relay's own queues
#: (where they are counted) rather than dropped silently by the kernel.
_SOCKET_BUFFER = 4 << 20

# Heap actions of a direction's scheduler.
_DELAY_DONE = 0  # the datagram's delay (and jitter) has elapsed
_HOLD_TIMEOUT = 1  # a reordered datagram waited long enough for later ones to overtake it
_DEPART = 2  # the datagram has been serialised onto the rate-limited link

_JITTER_DISTRIBUTIONS = ("uniform", "normal")


def _check_probability(owner: str, name: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}: {name} must be a probability between 0 and 1, got {value!r}")


def _check_seconds(owner: str, name: str, value: object, *, positive: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{owner}: {name} must be a finite number of seconds {bound}, "
                         f"got {value!r}")


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of the relay does to the datagrams it carries.

    Frozen so that one value can be shared by both directions and by several relays without
    one test's tweak leaking into another; to change a running relay's behaviour, assign a
    new value to ``Relay.forward`` or ``Relay.backward`` (e.g. ``Impairment(loss=1.0)`` to
    cut the path and make the peer "vanish").

    The default value forwards everything unchanged and at once.
    """

    #: Probability that a datagram is dropped, independently of every other (Bernoulli loss).
    loss: float = 0.0
    #: Gilbert-Elliott burst loss: per datagram, the probability of moving from the good
    #: state to the bad state. 0 disables burst loss.
    burst_enter: float = 0.0
    #: Per datagram, the probability of leaving the bad state; the mean burst length is
    #: ``1 / burst_exit`` datagrams.  The state moves per datagram, not per unit of
    #: time: a sender down to one retransmission per RTO stays in a burst for as many
    #: RTOs as the burst has datagrams, which is harsher than a radio fade (a newcomer
    #: saw 20 % burst loss drive the RTO to 25.6 s and a default connection into its
    #: user timeout).
    burst_exit: float = 0.5
    #: Probability that a datagram is dropped while in the bad state (1.0 = classic
    #: Gilbert model). The long-run fraction of datagrams in the bad state is
    #: ``burst_enter / (burst_enter + burst_exit)``.
    burst_loss: float = 1.0
    #: Probability that a datagram is sent twice (the copy is an independent datagram for
    #: corruption, delay and reordering).
    duplicate: float = 0.0
    #: Probability that a datagram is held back so that later ones overtake it.
    reorder: float = 0.0
    #: How many later datagrams must overtake a held datagram before it is released.
    reorder_gap: int = 1
    #: Longest a held datagram waits for those later datagrams (seconds), so that the last
    #: datagram of a burst is not held forever when nothing follows it.
    reorder_timeout: float = 0.02
    #: Probability that a datagram has bits flipped (empty datagrams are never corrupted).
    corrupt: float = 0.0
    #: How many distinct, random bits a corrupted datagram has flipped.
    corrupt_bits: int = 1
    #: Fixed one-way delay added to every datagram (seconds).
    delay: float = 0.0
    #: Random variation of the delay (seconds): ``uniform`` adds U(-jitter, +jitter),
    #: ``normal`` adds N(0, jitter). The total delay is clamped at zero, never negative.
    #: Jitter larger than the gap between datagrams reorders them, as on a real path.
    jitter: float = 0.0
    #: ``"uniform"`` or ``"normal"``, see ``jitter``.
    jitter_distribution: str = "uniform"
    #: Bottleneck link rate in bits per second of UDP payload; ``None`` is unlimited.
    rate: float | None = None
    #: Bytes the bottleneck link may queue (including the datagram being serialised);
    #: a datagram that does not fit is tail-dropped and counted as ``dropped_queue``.
    #: Only meaningful with ``rate``.  The default holds 44 datagrams of 1472 bytes
    #: but one of 65507: raise it with large datagrams, or most are dropped.
    queue_limit: int = 64 * 1024

    def __post_init__(self) -> None:
        """Reject nonsense early, with a message naming the field, rather than misbehave."""
        owner = "Impairment"
        for name in ("loss", "burst_enter", "burst_exit", "burst_loss", "duplicate", "reorder",
                     "corrupt"):
            _check_probability(owner, name, getattr(self, name))
        _check_int(owner, "reorder_gap", self.reorder_gap, 1)
        _check_seconds(owner, "reorder_timeout", self.reorder_timeout, positive=True)
        _check_int(owner, "corrupt_bits", self.corrupt_bits, 1)
        _check_seconds(owner, "delay", self.delay)
        _check_seconds(owner, "jitter", self.jitter)
        if self.jitter_distribution not in _JITTER_DISTRIBUTIONS:
            raise ValueError(f"{owner}: jitter_distribution must be one of "
                             f"{', '.join(_JITTER_DISTRIBUTIONS)}, "
                             f"got {self.jitter_distribution!r}")
        if self.rate is not None:
            r = self.rate
            if (isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r)
                    or r <= 0):
                raise ValueError(f"{owner}: rate must be None or a positive number of bits "
                                 f"per second, got {r!r}")
        _check_int(owner, "queue_limit", self.queue_limit, 1)

    @classmethod
    def bursty(cls, loss_rate: float, mean_burst: float, **fields: Any) -> Impairment:
        """Build Gilbert burst loss from the two numbers people actually think in.

        ``loss_rate`` is the long-run fraction of datagrams lost and ``mean_burst`` the
        average number of consecutive losses; other fields pass through.
        """
        if not 0.0 < loss_rate < 1.0:
            raise ValueError(f"Impairment.bursty: loss_rate must be in (0, 1), got {loss_rate!r}")
        if not (math.isfinite(mean_burst) and mean_burst >= 1.0):
            raise ValueError(f"Impairment.bursty: mean_burst must be >= 1, got {mean_burst!r}")
        exit_p = 1.0 / mean_burst
        enter_p = loss_rate * exit_p / (1.0 - loss_rate)
        if enter_p > 1.0:
            raise ValueError("Impairment.bursty: loss_rate too high for that mean_burst")
        return cls(burst_enter=enter_p, burst_exit=exit_p, burst_loss=1.0, **fields)

    def replace(self, **changes: Any) -> Impairment:
        """Return a copy with some fields changed (validated again), for tweaking presets."""
        return dataclasses.replace(self, **changes)


@dataclass(slots=True)
class DirectionStats:
    """Counters for one direction, so tests can prove what the network did to a transfer.

    Every received datagram ends up in exactly one of ``forwarded``, a ``dropped_*``
    counter or ``send_errors`` (or is still in flight), after adding one per ``duplicated``.
    """

    #: Datagrams that arrived at the relay in this direction.
    received: int = 0
    #: Datagrams the relay sent on (copies and corrupted ones included).
    forwarded: int = 0
    #: Dropped by random (Bernoulli) loss.
    dropped_loss: int = 0
    #: Dropped in the bad state of the Gilbert-Elliott model.
    dropped_burst: int = 0
    #: Tail-dropped because the rate-limited link's queue (or the relay's bound on datagrams
    #: waiting out their delay) was full.
    dropped_queue: int = 0
    #: Dropped because no client mapping could be made (table full or no socket available).
    dropped_mapping: int = 0
    #: Sends that failed (kernel buffer full, a pending ICMP error, socket closed by
    #: expiry); the datagram is lost.
    send_errors: int = 0
    #: Errors the kernel reported later for datagrams already forwarded, such as ICMP port
    #: unreachable when nothing listens at the server address (forward direction only).
    icmp_errors: int = 0
    #: Datagrams sent twice.
    duplicated: int = 0
    #: Datagrams held back for reordering.
    reordered: int = 0
    #: Datagrams whose bits were flipped.
    corrupted: int = 0
    #: Datagrams given a non-zero delay.
    delayed: int = 0
    #: Payload bytes received.
    bytes_in: int = 0
    #: Payload bytes sent on.
    bytes_out: int = 0

    @property
    def dropped(self) -> int:
        """All datagrams the relay chose (or was forced) to drop, for quick assertions."""
        return self.dropped_loss + self.dropped_burst + self.dropped_queue + self.dropped_mapping

    def summary(self) -> str:
        """One human-readable line, for logs and the CLI's exit report."""
        return (f"{self.received} in, {self.forwarded} out, {self.dropped} dropped "
                f"(loss {self.dropped_loss}, burst {self.dropped_burst}, "
                f"queue {self.dropped_queue}, mapping {self.dropped_mapping}), "
                f"{self.send_errors} send errors, {self.icmp_errors} ICMP errors, "
                f"{self.duplicated} duplicated, "
                f"{self.reordered} reordered, {self.corrupted} corrupted, "
                f"{self.delayed} delayed; {self.bytes_in} bytes in, {self.bytes_out} bytes out")


@dataclass(slots=True)
class RelayStats:
    """Counters of a whole relay: both directions and the NAT-like client table."""

    #: Client -> server.
    forward: DirectionStats = dataclasses.field(default_factory=DirectionStats)
    #: Server -> client.
    backward: DirectionStats = dataclasses.field(default_factory=DirectionStats)
    #: Client mappings currently open.
    clients: int = 0
    #: Client mappings ever created.
    clients_total: int = 0
    #: Client mappings closed for idleness.
    clients_expired: int = 0

    def summary(self) -> str:
        """A few lines saying what the relay did, for humans at the end of a run."""
        return (f"forward:  {self.forward.summary()}\n"
                f"backward: {self.backward.summary()}\n"
                f"clients:  {self.clients} open, {self.clients_total} total, "
                f"{self.clients_expired} expired")


class _Packet:
    """One datagram (or copy) in flight through a direction's pipeline."""

    __slots__ = ("seq", "data", "sock", "addr", "hold", "remaining")

    def __init__(self, seq: int, data: bytes, sock: socket.socket, addr: Any, hold: bool):
        self.seq = seq
        self.data = data
        self.sock = sock
        self.addr = addr  # None: the socket is connected
        self.hold = hold  # True while it still has to be (or is being) held for reordering
        self.remaining = 0  # later datagrams that must still overtake it


class _Mapping:
    """A client's NAT entry: its upstream socket, connected to the server."""

    __slots__ = ("client", "sock", "last_active", "closed")

    def __init__(self, client: Any, sock: socket.socket, now: float):
        self.client = client
        self.sock = sock
        self.last_active = now
        self.closed = False


def _flip_bits(data: bytes, nbits: int, rng: random.Random) -> bytes:
    buf = bytearray(data)
    total = len(buf) * 8
    for pos in rng.sample(range(total), min(nbits, total)):
        buf[pos >> 3] ^= 1 << (pos & 7)
    return bytes(buf)


class _Pipeline:
    """The impairment machinery of one direction: decisions, delay heap, holds, link queue.

    ``admit`` makes every random decision synchronously when a datagram arrives; ``run`` is
    the direction's single scheduler task, releasing heap entries when trio's clock reaches
    them. Entries are ``(time, tiebreak, action, packet)``.
    """

    def __init__(self, impairment: Impairment, rng: random.Random, stats: DirectionStats,
                 max_pending: int):
        self.impairment = impairment
        self.rng = rng
        self.stats = stats
        self.max_pending = max_pending
        self.heap: list[tuple[float, int, int, _Packet]] = []
        self.tiebreak = 0
        self.seq = 0
        self.held: list[_Packet] = []
        self.pending = 0  # datagrams waiting out a delay or held for reordering
        self.queued_bytes = 0  # bytes in the rate-limited link's queue
        self.link_free = -math.inf  # when the link finishes serialising its queue
        self.bad = False  # Gilbert-Elliott state
        self.wake = trio.Event()

    def _push(self, when: float, action: int, pkt: _Packet) -> None:
        self.tiebreak += 1
        heapq.heappush(self.heap, (when, self.tiebreak, action, pkt))
        if self.heap[0][1] == self.tiebreak:
            self.wake.set()

    def admit(self, data: bytes, sock: socket.socket, addr: Any, now: float) -> None:
        imp = self.impairment
        st = self.stats
        rng = self.rng
        st.received += 1
        st.bytes_in += len(data)
        if imp.burst_enter or self.bad:
            if self.bad:
                if rng.random() < imp.burst_exit:
                    self.bad = False
            elif rng.random() < imp.burst_enter:
                self.bad = True
            if self.bad and rng.random() < imp.burst_loss:
                st.dropped_burst += 1
                return
        if imp.loss and rng.random() < imp.loss:
            st.dropped_loss += 1
            return
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            copies = 2
            st.duplicated += 1
        for _ in range(copies):
            payload = data
            if imp.corrupt and data and rng.random() < imp.corrupt:
                payload = _flip_bits(data, imp.corrupt_bits, rng)
                st.corrupted += 1
            wait = imp.delay
            if imp.jitter:
                if imp.jitter_distribution == "normal":
                    wait += rng.gauss(0.0, imp.jitter)
                else:
                    wait += rng.uniform(-imp.jitter, imp.jitter)
                wait = max(0.0, wait)
            hold = bool(imp.reorder) and rng.random() < imp.reorder
            if self.pending >= self.max_pending and (wait > 0 or hold):
                st.dropped_queue += 1
                continue
            self.seq += 1
            pkt = _Packet(self.seq, payload, sock, addr, hold)
            if hold:
                st.reordered += 1
            if wait > 0:
                st.delayed += 1
                self.pending += 1
                self._push(now + wait, _DELAY_DONE, pkt)
            elif self.heap and self.heap[0][0] <= now:
                # Due entries are still waiting for the scheduler: queue behind them
                # so that a zero-delay datagram cannot overtake them.
                self.pending += 1
                self._push(now, _DELAY_DONE, pkt)
            else:
                self._after_delay(pkt, now)

    def _after_delay(self, pkt: _Packet, now: float) -> None:
        if pkt.hold:
            pkt.remaining = self.impairment.reorder_gap
            self.held.append(pkt)
            self.pending += 1
            self._push(now + self.impairment.reorder_timeout, _HOLD_TIMEOUT, pkt)
            return
        self._to_link(pkt, now)
        if self.held:
            released = []
            for h in self.held:
                if h.seq < pkt.seq:
                    h.remaining -= 1
                    if h.remaining <= 0:
                        released.append(h)
            for h in released:
                self._release(h, now)

    def _release(self, pkt: _Packet, now: float) -> None:
        self.held.remove(pkt)
        self.pending -= 1
        pkt.hold = False
        self._to_link(pkt, now)

    def _to_link(self, pkt: _Packet, now: float) -> None:
        rate = self.impairment.rate
        if rate is None:
            self._send(pkt)
            return
        size = len(pkt.data)
        if self.queued_bytes + size > self.impairment.queue_limit:
            self.stats.dropped_queue += 1
            return
        self.queued_bytes += size
        self.link_free = max(now, self.link_free) + size * 8.0 / rate
        self._push(self.link_free, _DEPART, pkt)

    def _send(self, pkt: _Packet) -> None:
        try:
            if pkt.addr is None:
                pkt.sock.send(pkt.data)
            else:
                pkt.sock.sendto(pkt.data, pkt.addr)
        except OSError:
            self.stats.send_errors += 1
            return
        self.stats.forwarded += 1
        self.stats.bytes_out += len(pkt.data)

    def _fire(self, when: float, action: int, pkt: _Packet) -> None:
        if action == _DELAY_DONE:
            self.pending -= 1
            self._after_delay(pkt, when)
        elif action == _HOLD_TIMEOUT:
            if pkt.hold:  # not yet released by later datagrams
                self._release(pkt, when)
        else:  # _DEPART
            self.queued_bytes -= len(pkt.data)
            self._send(pkt)

    async def run(self) -> None:
        heap = self.heap
        while True:
            now = trio.current_time()
            batch = 0
            while heap and heap[0][0] <= now:
                when, _, action, pkt = heapq.heappop(heap)
                # Use the scheduled time, not the wake-up time, so that scheduling
                # latency does not accumulate into the link's timing.
                self._fire(when, action, pkt)
                batch += 1
                if batch >= _BATCH:
                    await trio.lowlevel.checkpoint()
                    batch = 0
                    now = trio.current_time()
            self.wake = trio.Event()
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self.wake.wait()
            else:
                await self.wake.wait()


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
        except OSError:
            pass


def _close(sock: socket.socket) -> None:
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


def _derive_seed(seed: int, direction: str) -> int:
    # Seeding Random with a str hashes it with SHA-512: stable across runs and versions.
    return random.Random(f"rtcp-relay:{seed}:{direction}").getrandbits(64)


class Relay:
    """A UDP relay between clients and one server that impairs traffic in each direction.

    ``to`` is the server, as ``(host, port)``. ``listen`` is where clients send: ``None``
    (default) binds an ephemeral port on the loopback address of ``to``'s family, which is
    what tests want; ``(host, port)`` binds there, and a host of ``None`` or ``""`` binds
    every interface (IPv6 dual-stack where available, like ``trio.open_tcp_listeners``).

    ``seed`` makes every decision reproducible; ``None`` picks one at random and stores it in
    ``seed`` so a run can still be replayed. ``max_clients`` bounds the NAT table (each
    mapping costs one file descriptor); mappings idle for ``idle_timeout`` seconds (``None``:
    never) are closed. ``max_pending`` bounds the datagrams per direction waiting out a delay
    or a reorder hold, so a huge delay cannot eat unbounded memory.

    ``listen_address`` and ``to_address`` are the resolved socket addresses, set once
    ``serve`` has bound (``listen_address`` carries the real port when 0 was asked for).
    """

    def __init__(self, to: tuple[str, int], *, listen: tuple[str | None, int] | None = None,
                 forward: Impairment | None = None, backward: Impairment | None = None,
                 seed: int | None = None, max_clients: int = 1024,
                 idle_timeout: float | None = 60.0, max_pending: int = 100_000):
        if not (isinstance(to, tuple) and len(to) >= 2 and isinstance(to[0], str)):
            raise ValueError(f"Relay: to must be a (host, port) tuple, got {to!r}")
        _check_int("Relay", "to port", to[1], 1)
        if to[1] > 65535:
            raise ValueError(f"Relay: to port must be in 1..65535, got {to[1]!r}")
        if listen is not None:
            if not (isinstance(listen, tuple) and len(listen) >= 2
                    and (listen[0] is None or isinstance(listen[0], str))):
                raise ValueError(f"Relay: listen must be None or a (host, port) tuple, "
                                 f"got {listen!r}")
            _check_int("Relay", "listen port", listen[1], 0)
            if listen[1] > 65535:
                raise ValueError(f"Relay: listen port must be in 0..65535, got {listen[1]!r}")
        forward = Impairment() if forward is None else forward
        backward = Impairment() if backward is None else backward
        for name, imp in (("forward", forward), ("backward", backward)):
            if not isinstance(imp, Impairment):
                raise ValueError(f"Relay: {name} must be an Impairment, got {imp!r}")
        if seed is None:
            seed = random.SystemRandom().getrandbits(32)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Relay: seed must be an integer, got {seed!r}")
        _check_int("Relay", "max_clients", max_clients, 1)
        _check_int("Relay", "max_pending", max_pending, 1)
        if idle_timeout is not None:
            _check_seconds("Relay", "idle_timeout", idle_timeout, positive=True)

        #: The seed every decision derives from (print it to replay a run).
        self.seed: int = seed
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        #: Counters; read them at any time.
        self.stats = RelayStats()
        #: Resolved server address; ``None`` until bound.
        self.to_address: tuple[Any, ...] | None = None
        #: Bound listening address (real port); ``None`` until bound.
        self.listen_address: tuple[Any, ...] | None = None
        self._to_request = (to[0], to[1])
        self._listen_request = listen
        self._to_family = socket.AF_INET
        self._forward = _Pipeline(forward, random.Random(_derive_seed(seed, "forward")),
                                  self.stats.forward, max_pending)
        self._backward = _Pipeline(backward, random.Random(_derive_seed(seed, "backward")),
                                   self.stats.backward, max_pending)
        self._sock: socket.socket | None = None
        self._mappings: dict[Any, _Mapping] = {}
        self._nursery: trio.Nursery | None = None
        self._started = False

    @property
    def forward(self) -> Impairment:
        """Client -> server impairment; assign to change it while running."""
        return self._forward.impairment

    @forward.setter
    def forward(self, value: Impairment) -> None:
        if not isinstance(value, Impairment):
            raise ValueError(f"Relay: forward must be an Impairment, got {value!r}")
        self._forward.impairment = value

    @property
    def backward(self) -> Impairment:
        """Server -> client impairment; assign to change it while running."""
        return self._backward.impairment

    @backward.setter
    def backward(self, value: Impairment) -> None:
        if not isinstance(value, Impairment):
            raise ValueError(f"Relay: backward must be an Impairment, got {value!r}")
        self._backward.impairment = value

    async def _bind(self) -> None:
        """Resolve and bind, separately from serving, so bind errors surface unwrapped."""
        if self._sock is not None:
            return
        host, port = self._to_request
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host!r}: {exc.strerror}") from None
        family, _, _, _, to_address = infos[0]
        self._to_family = family
        self.to_address = tuple(to_address)

        listen = self._listen_request
        if listen is None:
            loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            listen = (loopback, 0)
        lhost, lport = listen[0], listen[1]
        if lhost in (None, ""):
            sock = None
            if socket.has_ipv6:
                try:
                    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    sock.bind(("::", lport))
                except OSError:
                    if sock is not None:
                        sock.close()
                    sock = None
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind(("0.0.0.0", lport))
                except OSError as exc:
                    sock.close()
                    raise OSError(exc.errno, f"cannot listen on *:{lport}: "
                                             f"{exc.strerror or exc}") from None
                except BaseException:
                    sock.close()
                    raise
        else:
            try:
                linfos = await trio.socket.getaddrinfo(lhost, lport, type=socket.SOCK_DGRAM,
                                                       flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                raise OSError(f"cannot resolve {lhost!r}: {exc.strerror}") from None
            lfamily, _, _, _, laddr = linfos[0]
            sock = socket.socket(lfamily, socket.SOCK_DGRAM)
            try:
                sock.bind(laddr)
            except OSError as exc:
                sock.close()
                where = f"[{lhost}]:{lport}" if ":" in str(lhost) else f"{lhost}:{lport}"
                raise OSError(exc.errno, f"cannot listen on {where}: "
                                         f"{exc.strerror or exc}") from None
            except BaseException:
                sock.close()
                raise
        _tune(sock)
        self._sock = sock
        self.listen_address = tuple(sock.getsockname())

    async def serve(self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Bind, report ``self`` through ``task_status``, then relay until cancelled.

        Shaped like ``trio.serve_tcp`` so ``await nursery.start(relay.serve)`` returns the
        relay with ``listen_address`` ready. Network errors are counted, never raised.
        """
        if self._started:
            raise RuntimeError("Relay.serve() can only be called once")
        self._started = True
        try:
            await self._bind()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_clients)
                nursery.start_soon(self._forward.run)
                nursery.start_soon(self._backward.run)
                if self.idle_timeout is not None:
                    nursery.start_soon(self._expire_loop)
                task_status.started(self)
        finally:
            for mapping in list(self._mappings.values()):
                self._close_mapping(mapping)
            self._mappings.clear()
            self.stats.clients = 0
            if self._sock is not None:
                _close(self._sock)

    def _mapping_for(self, client: Any, now: float) -> _Mapping | None:
        mapping = self._mappings.get(client)
        if mapping is not None:
            return mapping
        if len(self._mappings) >= self.max_clients:
            self._expire(now)
            if len(self._mappings) >= self.max_clients:
                return None
        assert self.to_address is not None and self._nursery is not None
        try:
            sock = socket.socket(self._to_family, socket.SOCK_DGRAM)
        except OSError:
            return None
        try:
            _tune(sock)
            sock.connect(self.to_address)
        except OSError:
            sock.close()
            return None
        mapping = _Mapping(client, sock, now)
        self._mappings[client] = mapping
        self.stats.clients += 1
        self.stats.clients_total += 1
        self._nursery.start_soon(self._read_server, mapping)
        return mapping

    def _close_mapping(self, mapping: _Mapping) -> None:
        if not mapping.closed:
            mapping.closed = True
            _close(mapping.sock)

    def _expire(self, now: float) -> None:
        if self.idle_timeout is None:
            return
        for client, mapping in list(self._mappings.items()):
            if now - mapping.last_active >= self.idle_timeout:
                self._close_mapping(mapping)
                del self._mappings[client]
                self.stats.clients -= 1
                self.stats.clients_expired += 1

    async def _expire_loop(self) -> None:
        assert self.idle_timeout is not None
        interval = min(max(self.idle_timeout / 4, 0.01), 5.0)
        while True:
            await trio.sleep(interval)
            self._expire(trio.current_time())

    async def _read_clients(self) -> None:
        sock = self._sock
        assert sock is not None
        stats = self.stats.forward
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                now = trio.current_time()
                drained = False
                for _ in range(_BATCH):
                    try:
                        data, client = sock.recvfrom(_RECV_SIZE)
                    except BlockingIOError:
                        drained = True
                        break
                    except OSError:
                        continue  # e.g. a queued ICMP error; the next datagram is fine
                    mapping = self._mapping_for(client, now)
                    if mapping is None:
                        stats.received += 1
                        stats.bytes_in += len(data)
                        stats.dropped_mapping += 1
                        continue
                    mapping.last_active = now
                    self._forward.admit(data, mapping.sock, None, now)
                if drained:
                    break
                await trio.lowlevel.checkpoint()

    async def _read_server(self, mapping: _Mapping) -> None:
        sock = mapping.sock
        listen = self._sock
        assert listen is not None
        errors = self.stats.forward  # ICMP errors concern datagrams sent forward
        while not mapping.closed:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError):
                return
            while not mapping.closed:
                now = trio.current_time()
                drained = False
                for _ in range(_BATCH):
                    try:
                        data = sock.recv(_RECV_SIZE)
                    except BlockingIOError:
                        drained = True
                        break
                    except OSError:
                        errors.icmp_errors += 1  # e.g. ECONNREFUSED: server port closed
                        continue
                    mapping.last_active = now
                    self._backward.admit(data, listen, mapping.client, now)
                if drained:
                    break
                await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_relay(to: tuple[str, int], *, listen: tuple[str | None, int] | None = None,
                     forward: Impairment | None = None, backward: Impairment | None = None,
                     seed: int | None = None, **options: Any) -> AsyncIterator[Relay]:
    """Run a ``Relay`` for the duration of a block, already bound when the block starts.

    Saves every test the nursery-and-cancel boilerplate; ``options`` are the remaining
    ``Relay`` keyword arguments (``max_clients``, ``idle_timeout``, ``max_pending``).
    The relay stops, and its sockets close, when the block exits. An exception raised in
    the block comes out as itself, not wrapped in the nursery's ``ExceptionGroup``, so
    ``pytest.raises`` and ``except`` around the block work as they would without a relay.
    """
    relay = Relay(to, listen=listen, forward=forward, backward=backward, seed=seed, **options)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            try:
                yield relay
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # serve() never raises, so a lone exception here is the block's own.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


# ---------------------------------------------------------------------------------------------
# Command line


def parse_address(text: str, *, host_required: bool = True, what: str = "address"
                  ) -> tuple[str | None, int]:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT`` or (when ``host_required`` is false) ``PORT``.

    Bare IPv6 literals are refused because ``::1:7`` is ambiguous; ``None`` as host means
    "not given" (``PORT`` or ``:PORT``). Raises ``ValueError`` with a one-line message that
    starts with ``what``, so the CLI can print it as is.
    """
    s = text.strip()
    host: str | None
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":" or end == 1:
            raise ValueError(f"{what}: expected [IPV6]:PORT, got {text!r}")
        host, port_text = s[1:end], s[end + 2:]
    elif ":" in s:
        host, _, port_text = s.rpartition(":")
        if ":" in host:
            raise ValueError(f"{what}: put an IPv6 address in brackets, e.g. [::1]:PORT, "
                             f"got {text!r}")
        if not host:
            host = None
    else:
        host, port_text = None, s
    if host is None and host_required:
        raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{what}: port must be a number, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535 or (host_required and port == 0):
        low = 1 if host_required else 0
        raise ValueError(f"{what}: port must be in {low}..65535, got {port}")
    return host, port


def format_address(address: tuple[Any, ...]) -> str:
    """Render a socket address as users type it: ``host:port`` or ``[v6host]:port``."""
    host, port = address[0], address[1]
    if ":" in str(host):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def add_relay_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``rtcp relay`` options to ``parser``; values are checked by ``relay_from_args``.

    The options take strings on purpose: every value error is then raised as one
    ``ValueError`` by ``relay_from_args``, which the CLI maps to exit status 2. Every
    impairment applies to both directions, each with its own random stream.
    """
    parser.add_argument("--listen", required=True, metavar="[HOST:]PORT",
                        help="where clients send; HOST defaults to every interface "
                             "(use [ADDR]:PORT for IPv6)")
    parser.add_argument("--to", required=True, metavar="HOST:PORT",
                        help="the server datagrams are relayed to")
    parser.add_argument("--loss", metavar="P", help="probability a datagram is dropped")
    parser.add_argument("--dup", metavar="P", help="probability a datagram is duplicated")
    parser.add_argument("--reorder", metavar="P",
                        help="probability a datagram is held back until the next one passes "
                             "(at most 20 ms)")
    parser.add_argument("--corrupt", metavar="P",
                        help="probability a datagram has one random bit flipped")
    parser.add_argument("--delay", metavar="MS",
                        help="one-way delay in milliseconds (each direction, so the round "
                             "trip grows by twice MS)")
    parser.add_argument("--jitter", metavar="MS",
                        help="uniform random variation of the delay, +/- milliseconds")
    parser.add_argument("--rate", metavar="MBIT",
                        help="bottleneck rate in megabits per second (64 KiB queue, tail drop)")
    parser.add_argument("--seed", metavar="N",
                        help="random seed; the same seed replays the same decisions "
                             "(default: random, printed at start)")


def _number(option: str, text: str | None, *, kind: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{option}: expected a finite number, got {text!r}")
    if kind == "probability" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{option}: expected a probability between 0 and 1, got {text!r}")
    if kind == "nonnegative" and value < 0:
        raise ValueError(f"{option}: must not be negative, got {text!r}")
    if kind == "positive" and value <= 0:
        raise ValueError(f"{option}: must be positive, got {text!r}")
    return value


def relay_from_args(args: argparse.Namespace) -> Relay:
    """Build (but do not start) the ``Relay`` that ``add_relay_arguments`` options describe.

    Kept separate from running so option handling can be tested without sockets; raises
    ``ValueError`` with a one-line message for any bad value.
    """
    listen_host, listen_port = parse_address(args.listen, host_required=False, what="--listen")
    to_host, to_port = parse_address(args.to, what="--to")
    assert to_host is not None
    loss = _number("--loss", args.loss, kind="probability")
    dup = _number("--dup", args.dup, kind="probability")
    reorder = _number("--reorder", args.reorder, kind="probability")
    corrupt = _number("--corrupt", args.corrupt, kind="probability")
    delay = _number("--delay", args.delay, kind="nonnegative")
    jitter = _number("--jitter", args.jitter, kind="nonnegative")
    rate = _number("--rate", args.rate, kind="positive")
    seed: int | None = None
    if args.seed is not None:
        try:
            seed = int(args.seed)
        except ValueError:
            raise ValueError(f"--seed: expected an integer, got {args.seed!r}") from None
    impairment = Impairment(
        loss=loss or 0.0,
        duplicate=dup or 0.0,
        reorder=reorder or 0.0,
        corrupt=corrupt or 0.0,
        delay=(delay or 0.0) / 1000.0,
        jitter=(jitter or 0.0) / 1000.0,
        rate=None if rate is None else rate * 1e6,
    )
    return Relay((to_host, to_port), listen=(listen_host, listen_port), forward=impairment,
                 backward=impairment, seed=seed)


async def run_relay_from_args(args: argparse.Namespace) -> None:
    """``rtcp relay``: run until Ctrl-C or cancellation, then print what the relay did.

    Prints one line with the bound address (the real port when 0 was given) and the seed, so
    scripts can find the relay and a run can be replayed. Ctrl-C is how a relay is meant to
    stop, so it returns normally after printing the summary; cancellation propagates.
    Value errors raise ``ValueError``; bind and resolution failures raise ``OSError``, both
    before anything is printed.
    """
    relay = relay_from_args(args)
    await relay._bind()
    assert relay.listen_address is not None and relay.to_address is not None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            print(f"rtcp relay: listening on {format_address(relay.listen_address)}, "
                  f"relaying to {format_address(relay.to_address)} (seed {relay.seed})",
                  flush=True)
    except* KeyboardInterrupt:
        pass
    finally:
        print(relay.stats.summary(), flush=True)
