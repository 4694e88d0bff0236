"""Tunables for rtcp connections and endpoints.

One frozen dataclass, shared by the sans-I/O core and the trio layer, so that a
test can build a connection with exactly the knobs a user would set.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from dataclasses import dataclass

#: Fixed TCP header size; every segment carries at least this much.
HEADER_SIZE = 20
#: The largest UDP payload an IPv4 datagram can carry.
MAX_UDP_PAYLOAD = 65507


#: Smallest send or receive buffer a Config accepts (bytes).
MIN_BUFFER = 2048


def _is_boolean(v: object) -> bool:
    t = type(v)
    return isinstance(v, bool) or (t.__module__ == "numpy" and t.__name__ in ("bool", "bool_"))


def _as_int(v: object) -> int | None:
    """Any integer type (int, IntEnum, numpy's) as a plain int; bool is not one."""
    if _is_boolean(v):
        return None
    try:
        return operator.index(v)  # type: ignore[arg-type]
    except TypeError:
        return None


def _as_float(v: object) -> float | None:
    """Any real number as a float (a bool is not one; NaN fails the range checks)."""
    if _is_boolean(v) or not isinstance(v, numbers.Real):
        return None
    try:
        return float(v)
    except OverflowError:  # an int too large for a float: as good as infinite
        return math.inf if v > 0 else -math.inf  # type: ignore[operator]


def _as_bool(v: object) -> bool | None:
    return bool(v) if _is_boolean(v) else None


def _as_str(v: object) -> str | None:
    return str(v) if isinstance(v, str) else None


_NONE = object()  # a converter's answer for a legitimate None

#: Field annotation -> converter to the plain type (None: the value is wrong).
#: Annotations are strings here; a subclass may use real types.
_CONVERT = {
    "int": _as_int, int: _as_int,
    "float": _as_float, float: _as_float,
    "float | None": lambda v: _NONE if v is None else _as_float(v),
    "bool": _as_bool, bool: _as_bool,
    "str": _as_str, str: _as_str,
}


@dataclass(frozen=True, slots=True)
class Config:
    """Connection and endpoint tunables; defaults follow Linux and SPEC.md."""

    #: Bytes of UDP payload per datagram (header + options + data) towards IPv4
    #: peers. 1472 fits a 1500-byte MTU without fragmentation; up to 65507 for
    #: loopback.  IPv6 peers use ``max_datagram_ipv6``: raise both for ``::1``.
    max_datagram: int = 1472
    #: Largest datagram used towards IPv6 peers (40-byte IPv6 header, not 20):
    #: 1452 for a 1500-byte MTU, up to 65487 on loopback.
    max_datagram_ipv6: int = 1452
    #: Bytes the application may queue for sending (unsent + unacknowledged)
    #: before ``send_all`` blocks.  Twice the default receive window, as
    #: Linux sizes its send buffer at twice the congestion window: with a
    #: full window in flight there is still data queued, so an ACK is
    #: answered with new segments without waiting for the application.
    send_buffer: int = 2 << 20
    #: Bytes of received data held for the application; the advertised window
    #: is the free part of this buffer.
    receive_buffer: int = 1 << 20
    #: Seconds a handshake may take before ``TimeoutError``.
    connect_timeout: float = 20.0
    #: Seconds data may stay unacknowledged before the connection is abandoned
    #: (RFC 5482's user timeout); ``send_all``/``receive_some`` then raise
    #: ``trio.BrokenResourceError``.
    user_timeout: float = 60.0
    #: RFC 6298 retransmission timeout before any RTT sample (seconds); used
    #: within ``min_rto..max_rto`` (clamped), so either bound may be moved alone.
    initial_rto: float = 1.0
    #: Lower bound on the RTO; RFC 6298 says 1 s, Linux uses 0.2 s.  Keep it
    #: above the peer's delayed ACK (``delayed_ack``, 40 ms by default): below,
    #: a lone segment's ACK comes after the RTO, so every small write is sent
    #: twice and the window falls to one segment.
    min_rto: float = 0.2
    #: Upper bound on the RTO after exponential backoff.
    max_rto: float = 60.0
    #: Maximum segment lifetime; TIME_WAIT lasts ``2 * msl``.
    msl: float = 30.0
    #: Send small segments at once (no Nagle), as trio sets TCP_NODELAY.
    nodelay: bool = True
    #: Autocorking (as Linux's tcp_autocorking, which applies with
    #: TCP_NODELAY too): seconds a small segment at the end of the queued data
    #: may wait for the next write to fill it, and only while at least two
    #: full segments are unacknowledged, which the small one could not
    #: overtake anyway.  Spares a runt datagram per write that does not end on
    #: a segment boundary; ``0`` sends such runts at once.  While ``send_all``
    #: is blocked on a full buffer with more to write and eight full segments
    #: are out, the runt waits for that data instead of the timer.
    autocork: float = 0.0002
    #: Longest an ACK may be delayed (seconds); every second full-sized
    #: segment is acknowledged at once regardless.
    delayed_ack: float = 0.04
    #: Seconds of idleness before keepalive probes start; ``None`` disables.
    keepalive_idle: float | None = None
    #: Seconds between unanswered keepalive probes.
    keepalive_interval: float = 75.0
    #: Unanswered probes after which the connection is declared dead.
    keepalive_count: int = 9
    #: Established connections waiting for ``accept()``; past it new SYNs are
    #: dropped (the client retries).  Linux's default somaxconn: a burst of
    #: clients lands within one receive batch, before the accept loop can run.
    backlog: int = 4096
    #: Half-open (SYN_RECEIVED) connections per listener before the listener
    #: switches to stateless SYN cookies.
    syn_backlog: int = 256
    #: Seconds ``aclose()`` waits for the peer to acknowledge our FIN.
    close_timeout: float = 10.0
    #: Initial congestion window in segments (RFC 6928).
    initial_window: int = 10
    #: How the congestion window follows the path: ``"westwood"`` (a loss sets
    #: ssthresh from the measured delivery rate times the minimum RTT, so
    #: random loss on a fast path does not halve the rate), ``"newreno"`` (RFC
    #: 5681/6582: half the flight), or ``"bbr"`` (opt-in: the window is twice
    #: the path's bandwidth-delay product as BBR models it, and a loss is only
    #: repaired, up to a 20 % loss ceiling; for paths with random loss -- it
    #: takes more than a fair share from loss-based flows, and without SACK it
    #: runs westwood; see rtcp/core/model.py).  All use SACK/NewReno recovery.
    congestion_control: str = "westwood"
    #: Offer SACK (RFC 2018), window scaling and timestamps (RFC 7323).
    sack: bool = True
    window_scale: bool = True
    timestamps: bool = True
    #: Challenge ACKs (RFC 5961) a connection may send per second.
    challenge_ack_limit: int = 10
    #: Out-of-order segments held per connection; more are dropped (and
    #: retransmitted by the peer), which bounds reassembly memory.
    max_ooo_segments: int = 1024

    def __post_init__(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ValueError(f"Config: {what}")

        for f in dataclasses.fields(self):
            convert = _CONVERT.get(f.type)
            if convert is None:
                continue  # a subclass's field of some other type
            value = getattr(self, f.name)
            plain = convert(value)
            if plain is None:
                name = f.type if isinstance(f.type, str) else f.type.__name__
                raise TypeError(f"Config: {f.name} must be {name}, not {value!r}")
            if plain is _NONE:
                plain = None
            if plain is not value:
                object.__setattr__(self, f.name, plain)  # frozen: only here

        need(HEADER_SIZE + 64 <= self.max_datagram <= MAX_UDP_PAYLOAD,
             f"max_datagram must be in {HEADER_SIZE + 64}..{MAX_UDP_PAYLOAD}")
        need(HEADER_SIZE + 64 <= self.max_datagram_ipv6 <= MAX_UDP_PAYLOAD,
             f"max_datagram_ipv6 must be in {HEADER_SIZE + 64}..{MAX_UDP_PAYLOAD}")
        # Smaller buffers than a segment or so turn every transfer into a
        # trickle of tiny segments (Linux has minimums too).
        need(self.send_buffer >= MIN_BUFFER, f"send_buffer must be at least {MIN_BUFFER}")
        need(self.receive_buffer >= MIN_BUFFER, f"receive_buffer must be at least {MIN_BUFFER}")
        need(self.receive_buffer <= (0xFFFF << 14), "receive_buffer must be at most 1 GiB")
        for name in ("connect_timeout", "user_timeout", "initial_rto", "min_rto", "max_rto",
                     "msl", "keepalive_interval", "close_timeout"):
            need(getattr(self, name) > 0, f"{name} must be positive")
        # Clocks that must run out: an infinite MSL keeps TIME_WAIT forever, an
        # infinite RTO never retransmits.  (The three timeouts may be infinite:
        # "no limit" is a caller's choice, as with trio's own.)
        # (delayed_ack and autocork are bounded below, which rules out inf and NaN.)
        for name in ("initial_rto", "min_rto", "max_rto", "msl", "keepalive_interval"):
            need(math.isfinite(getattr(self, name)), f"{name} must be finite")
        need(0 <= self.delayed_ack < 0.5, "delayed_ack must be >= 0 and below 0.5 s (RFC 9293 3.8.6.3)")
        need(0 <= self.autocork <= 0.01, "autocork must be in 0..0.01 seconds")
        need(self.min_rto <= self.max_rto, "min_rto must be <= max_rto")
        need(self.keepalive_idle is None or self.keepalive_idle > 0,
             "keepalive_idle must be None or positive")
        need(self.keepalive_count >= 1, "keepalive_count must be >= 1")
        need(self.backlog >= 1 and self.syn_backlog >= 1, "backlogs must be >= 1")
        need(self.initial_window >= 1, "initial_window must be >= 1")
        need(self.congestion_control in ("westwood", "newreno", "bbr"),
             "congestion_control must be 'westwood', 'newreno' or 'bbr', "
             f"not {self.congestion_control!r}")
        need(self.challenge_ack_limit >= 1, "challenge_ack_limit must be >= 1")
        need(self.max_ooo_segments >= 1, "max_ooo_segments must be >= 1")

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


#: The configuration used where none is given.  Config is frozen, so one
#: shared instance is safe, and it spares each connect the ~20 us of
#: validation that building one costs.
DEFAULT_CONFIG = Config()
