"""The public trio API: RtcpStream, RtcpListener, open/serve helpers.

These mirror ``trio.open_tcp_stream``, ``trio.open_tcp_listeners`` and
``trio.serve_tcp`` so that code written for trio streams (``trio.SSLStream``,
``trio.serve_listeners``, protocol libraries) runs over rtcp unchanged.
"""

from __future__ import annotations

import errno
import logging
import operator
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .config import DEFAULT_CONFIG, Config
from .core import events as ev
from .core.connection import RECEIVING, S
from .core.stats import ConnectionStats
from .endpoint import Endpoint, EndpointStats, Slot, wake_all
from .transport import UdpTransport, route_source

log = logging.getLogger("rtcp")

DEFAULT_RECEIVE_SIZE = 65536


class _Conflict:
    """Raise BusyResourceError when two tasks use one direction at once."""

    __slots__ = ("_held", "_msg")

    def __init__(self, msg: str) -> None:
        self._held = False
        self._msg = msg

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._msg)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


def _broken(conn_error: ev.Event | None) -> trio.BrokenResourceError:
    if isinstance(conn_error, ev.EndpointFailed):
        cause: BaseException = conn_error.exc
    elif isinstance(conn_error, ev.ConnectionTimedOut):
        cause = TimeoutError(f"connection timed out ({conn_error.reason})")
    elif isinstance(conn_error, ev.ConnectionReset) and conn_error.refused:
        cause = ConnectionRefusedError(errno.ECONNREFUSED,
                                       "peer unreachable: nothing listens at its port any more")
    else:
        cause = ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
    exc = trio.BrokenResourceError(str(cause))
    exc.__cause__ = cause
    return exc


#: States in which a graceful close of ours is complete (the FIN was acknowledged).
_CLOSE_FINISHED = frozenset({S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED})
#: States in which aclose() waits (bounded) for the ACK of its FIN.
_CLOSE_WAITING = frozenset({S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK, S.SYN_RECEIVED})


class RtcpStream(trio.abc.HalfCloseableStream):
    """A reliable byte stream over UDP: a ``trio.abc.HalfCloseableStream``.

    ``send_all`` returns once the data is in the send buffer (bounded by
    ``Config.send_buffer``), as with kernel TCP; ``aclose`` flushes it.
    """

    def __init__(self, endpoint: Endpoint, slot: Slot) -> None:
        self._endpoint = endpoint
        self._slot = slot
        self._conn = slot.conn
        self._local: tuple | None = None
        self._closed = False
        self._eof_sent = False
        self._send_conflict = _Conflict("another task is using this stream to send")
        self._recv_conflict = _Conflict("another task is receiving from this stream")

    # -------------------------------------------------------------- info
    @property
    def local_address(self) -> tuple:
        """The local UDP socket address, with the IP address this connection uses.

        A client socket (or a listener bound to all addresses) is bound to the
        wildcard address; like ``getsockname()`` on a connected TCP socket,
        this reports the address the peer reached (a listener's connection) or
        the source address the kernel picks towards the peer.
        """
        if self._local is None:
            host = self._slot.local_host
            self._local = (self._endpoint.local_address_for(host) if host is not None
                           else route_source(self._endpoint.local_address, self._slot.addr))
        return self._local

    @property
    def remote_address(self) -> tuple:
        """The peer's UDP socket address."""
        return self._slot.addr

    @property
    def state(self) -> str:
        """The connection's RFC 9293 state name, e.g. ``"ESTABLISHED"``."""
        return self._conn.state.value

    @property
    def stats(self) -> ConnectionStats:
        """Live counters and estimators of this connection."""
        return self._conn.stats

    def __repr__(self) -> str:
        return f"<RtcpStream {self.local_address} -> {self.remote_address} {self.state}>"

    # ----------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")

    def _check_can_send(self) -> None:
        self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was called on this stream")

    async def _wait_change(self) -> None:
        await self._slot.lot.park()

    # ------------------------------------------------------------ sending
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of ``data`` for reliable delivery, waiting for buffer space."""
        with self._send_conflict:
            self._check_can_send()
            conn = self._conn
            view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
            total = len(view)
            pos = 0
            parked = False
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                while True:
                    self._check_open()
                    if conn.error is not None or conn.state is S.CLOSED:
                        raise _broken(conn.error)
                    if not conn.can_send:
                        raise trio.ClosedResourceError("send_eof() was called on this stream")
                    if pos < total:
                        # more: a runt at the end waits for the rest, not a
                        # timer (said again, with nothing, when there is no room)
                        space = conn.send_space
                        n = conn.send(view[pos:pos + space], trio.current_time(),
                                      more=pos + space < total)
                        if n:
                            pos += n
                            self._endpoint.kick(self._slot)
                    if pos >= total:
                        break
                    await self._wait_change()
                    parked = True
            finally:
                if pos < total and conn.can_send:
                    # Cancelled or failed with data unsent: no more is coming,
                    # so a held runt goes on its autocork timer.
                    conn.send(b"", trio.current_time())
                    self._endpoint.kick(self._slot)
                if isinstance(view, memoryview):
                    view.release()
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until there is room in the send buffer."""
        with self._send_conflict:
            self._check_can_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            conn = self._conn
            while True:
                self._check_can_send()
                if conn.error is not None or conn.state is S.CLOSED:
                    raise _broken(conn.error)
                if conn.send_space > 0 or not conn.can_send:
                    break
                await self._wait_change()
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_eof(self) -> None:
        """Half-close: send a FIN after the queued data; receiving goes on."""
        with self._send_conflict:
            self._check_open()
            await trio.lowlevel.checkpoint()
            conn = self._conn
            if conn.state is S.CLOSED:
                if conn.error is not None:
                    raise _broken(conn.error)
                return
            self._eof_sent = True
            conn.shutdown(trio.current_time())
            self._endpoint.kick(self._slot)

    # ---------------------------------------------------------- receiving
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return 1 to ``max_bytes`` bytes, or ``b""`` once the peer sent EOF."""
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._recv_conflict:
            self._check_open()
            await trio.lowlevel.checkpoint_if_cancelled()
            conn = self._conn
            parked = False
            while True:
                self._check_open()
                if conn.readable:
                    data = conn.receive(max_bytes, trio.current_time())
                    if conn.ack_due:  # a window update; nothing else can be new
                        self._endpoint.kick(self._slot)
                    break
                if conn.eof_received:
                    data = b""
                    break
                if conn.error is not None:
                    raise _broken(conn.error)
                if conn.state is S.CLOSED or (conn.state not in RECEIVING
                                              and conn.state is not S.SYN_RECEIVED
                                              and conn.state is not S.SYN_SENT):
                    # Closed without an error and without the peer's FIN.
                    raise _broken(conn.error)
                if conn.ack_held and conn.release_held_ack():
                    self._endpoint.kick(self._slot)  # nothing of ours will carry it
                await self._wait_change()
                parked = True
            if not parked:  # parking was this call's schedule point already
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    # ------------------------------------------------------------ closing
    def abort(self) -> None:
        """Send RST and close at once; buffered data is discarded.

        Also cuts short an ``aclose()`` that is still waiting for its FIN's ACK;
        after a finished graceful close it does nothing (that close stands).
        """
        if self._closed and self._conn.state in _CLOSE_FINISHED:
            return  # our FIN was acknowledged (perhaps after aclose gave up): that stands
        if self._conn.state is not S.CLOSED:
            self._conn.abort(trio.current_time())
            self._endpoint.kick(self._slot)
        self._closed = True
        self._endpoint.release(self._slot)
        wake_all(self._slot.lot)

    def _close_nowait(self) -> None:
        """Graceful close without waiting: FIN after the buffered data, which the
        endpoint keeps retransmitting (bounded by the user timeout)."""
        if self._closed:
            return
        self._closed = True
        wake_all(self._slot.lot)
        self._conn.close(trio.current_time())
        self._endpoint.kick(self._slot)
        self._endpoint.release(self._slot)

    async def aclose(self) -> None:
        """Flush, send FIN and wait (bounded) for its ACK; abort if cancelled."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        conn = self._conn
        slot = self._slot
        wake_all(slot.lot)  # blocked send/receive calls see ClosedResourceError
        conn.close(trio.current_time())
        self._endpoint.kick(slot)
        parked = False
        gave_up = False
        try:
            if conn.state in _CLOSE_WAITING and conn.error is None:
                # Bounded by an endpoint alarm rather than a cancel scope (cheaper).
                deadline = trio.current_time() + conn.config.close_timeout
                self._endpoint.wake_at(slot, deadline)
                try:
                    while conn.state in _CLOSE_WAITING and conn.error is None:
                        if trio.current_time() >= deadline:
                            gave_up = True
                            break
                        await slot.lot.park()
                        parked = True
                finally:
                    self._endpoint.wake_at(slot, None)
            if gave_up:
                # aclose() returns (SPEC: a bounded wait), but say that the
                # peer never confirmed: what it had not acknowledged may be lost.
                log.warning("rtcp %s -> %s: aclose() gave up after %g s without the peer's "
                            "ACK of our FIN (state %s); data it has not acknowledged may be "
                            "lost; retransmission goes on until the user timeout",
                            self.local_address, self.remote_address,
                            conn.config.close_timeout, conn.state.value)
            if not parked:
                await trio.lowlevel.checkpoint()
        except BaseException:
            conn.abort(trio.current_time())
            self._endpoint.kick(slot)
            raise
        finally:
            self._endpoint.release(slot)


class RtcpListener(trio.abc.Listener[RtcpStream]):
    """Accepts rtcp connections on one UDP socket (``trio.abc.Listener``)."""

    def __init__(self, endpoint: Endpoint, config: Config) -> None:
        self._endpoint = endpoint
        self._config = config
        self._closed = False
        endpoint.listen(config)

    @property
    def local_address(self) -> tuple:
        """The bound UDP address (the real port when bound to port 0)."""
        return self._endpoint.local_address

    @property
    def stats(self) -> EndpointStats:
        """Datagram-level counters of the listening socket."""
        return self._endpoint.stats

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint (UDP socket and its connections) behind this listener."""
        return self._endpoint

    def __repr__(self) -> str:
        return f"<RtcpListener {self.local_address}>"

    async def accept(self) -> RtcpStream:
        """Wait for the next fully established connection."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("listener is closed")
        slot = await self._endpoint.accept()
        return RtcpStream(self._endpoint, slot)

    async def aclose(self) -> None:
        """Stop accepting; streams already accepted live on."""
        if not self._closed:
            self._closed = True
            self._endpoint.stop_listening()
        await trio.lowlevel.checkpoint()


# ---------------------------------------------------------------- open/serve
def _run_dict(var: trio.lowlevel.RunVar[Any]) -> Any:
    """This run's dict in ``var``, made on first use."""
    try:
        return var.get()
    except LookupError:
        value: dict = {}
        var.set(value)
        return value


_CLIENT_POOL: trio.lowlevel.RunVar[dict[int, list[Endpoint]]] = trio.lowlevel.RunVar(
    "rtcp_client_pool")


def _client_endpoint(family: int, addr: tuple, tracer: object | None,
                     local: tuple | None = None) -> Endpoint:
    """A client endpoint without a live connection to ``addr``, bound to
    ``local`` ((host, port), port 0 for any) or else to the wildcard address.

    Sockets are shared between connections to different peers, and a socket
    whose only tie to ``addr`` is TIME_WAIT is reused (as tcp_tw_reuse does),
    so thousands of sequential connections need no file descriptor each, with
    or without ``local_address``; and a bound port is free again for the same
    peer as soon as its connection is closed, not 2 MSL later.
    """
    pool = _run_dict(_CLIENT_POOL)
    key = _pool_key(family, local)
    eps = pool.setdefault(key, [])
    for ep in eps:
        if not ep._closed and ep.tracer is tracer and not ep.has_connection(addr, addr[1]) \
                and ep.connection_count < 4096:
            return ep
    # A new socket: drop closed endpoints now (not per connect), every port's.
    for k in list(pool):
        live = [e for e in pool[k] if not e._closed]
        if live or k == key:
            pool[k] = live
        else:
            del pool[k]
    if local is None:
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    ep = Endpoint(UdpTransport(family, local), tracer=tracer)
    pool[key].append(ep)
    return ep


def _pool_key(family: int, local: tuple | None) -> object:
    """Where the client pool keeps endpoints bound to ``local`` (None: wildcard)."""
    return family if local is None else (family, local[0], local[1])


async def _closing_done(family: int, local: tuple) -> None:
    """Wait until pooled endpoints bound to ``local`` that have closed have also
    released their socket (their task closes it), so the port can be bound."""
    try:
        pool = _CLIENT_POOL.get()
    except LookupError:
        return
    for ep in pool.get(_pool_key(family, local), ()):
        if ep._closed:
            await ep.wait_closed()


_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _check_port(port: object, lowest: int) -> int:
    """The port as a plain int (any integer type but bool); ValueError if it is not one."""
    try:
        number = None if isinstance(port, bool) else operator.index(port)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or not lowest <= number <= 65535:
        raise ValueError(f"port must be an int in {lowest}..65535, not {port!r}")
    return number


def _check_config(config: object) -> Config:
    """``config``, or the default for None; anything else fails here, not at
    the first segment deep inside the endpoint's task."""
    if config is None:
        return DEFAULT_CONFIG
    if not isinstance(config, Config):
        raise TypeError(f"config must be an rtcp.Config, not {type(config).__name__}")
    return config


#: Unspecified destinations Linux delivers to the local host, and the
#: loopback address it then uses (replies come from there, so a connection to
#: one is kept under it).
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def _unspecified_to_local(family: int, host: str, local_address: tuple | None) -> str:
    """``host``, or for 0.0.0.0/:: the address Linux sends to instead: an IPv4
    socket's bound source address, else loopback."""
    if host not in _UNSPECIFIED:
        return host
    if family == socket.AF_INET and local_address is not None \
            and local_address[0] not in ("", "0.0.0.0"):
        return str(local_address[0])
    return _UNSPECIFIED[host]


async def _resolve(host: str | bytes, port: int) -> list[tuple[int, tuple]]:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        raise ValueError(f"host must be str or bytes, not {host!r}")
    # Numeric addresses need no resolver (trio's getaddrinfo may use a thread).
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        if family == socket.AF_INET6 and packed[:12] == _V4_MAPPED_PREFIX:
            # ::ffff:a.b.c.d is an IPv4 peer; rtcp's IPv6 sockets are IPv6-only.
            family, packed = socket.AF_INET, packed[12:]
        host = socket.inet_ntop(family, packed)  # canonical
        # Only a cancel point: the connect that follows parks (a schedule point).
        await trio.lowlevel.checkpoint_if_cancelled()
        return [(family, (host, port) if family == socket.AF_INET else (host, port, 0, 0))]
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    out: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in out:
            out.append((family, sockaddr))
    if not out:
        raise OSError(f"no IPv4/IPv6 address for {host!r}")
    return out


async def _connect_slot(endpoint: Endpoint, addr: tuple, config: Config) -> RtcpStream:
    slot = endpoint.connect(addr, config)
    stream = RtcpStream(endpoint, slot)
    conn = slot.conn
    try:
        while conn.state in (S.SYN_SENT, S.SYN_RECEIVED):
            await slot.lot.park()
    except BaseException:
        stream.abort()
        raise
    if conn.state is S.CLOSED or conn.error is not None:
        endpoint.release(slot)
        stream._closed = True
        err = conn.error
        if isinstance(err, ev.EndpointFailed):
            raise OSError(f"rtcp endpoint failed: {err.exc!r}") from err.exc
        if isinstance(err, ev.ConnectionTimedOut):
            raise TimeoutError(f"rtcp connect to {addr[0]} port {addr[1]} timed out "
                               f"after {config.connect_timeout} s")
        raise ConnectionRefusedError(errno.ECONNREFUSED,
                                     f"rtcp connect to {addr[0]} port {addr[1]} refused")
    return stream


async def connect_endpoint(endpoint: Endpoint, address: tuple,
                           config: Config | None = None) -> RtcpStream:
    """Open a connection from an existing endpoint (e.g. one on a MemoryNetwork)."""
    return await _connect_slot(endpoint, address, _check_config(config))


#: Seconds before the next address is tried while an attempt is still pending
#: (RFC 8305's "Connection Attempt Delay"; trio.open_tcp_stream's default).
HAPPY_EYEBALLS_DELAY = 0.25


async def open_rtcp_stream(host: str | bytes, port: int, *,
                           local_address: tuple | str | None = None,
                           config: Config | None = None,
                           tracer: object | None = None,
                           happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY) -> RtcpStream:
    """Connect to an rtcp listener, like ``trio.open_tcp_stream``.

    ``local_address=(host, port)`` binds the local end (a bare host string, as
    trio's ``open_tcp_stream`` takes, binds that address with any port); two
    ends that connect to each other's bound address at once complete a
    simultaneous open.  Connections from one local address share its socket,
    and one in TIME_WAIT gives way to a new connection to the same peer (as
    Linux's tcp_tw_reuse), so neither costs a file descriptor per connection;
    a second live connection from a bound port to the same peer is an OSError,
    and so is one with another ``tracer`` while the port's socket lives (a
    socket has one tracer).
    A name with several addresses is tried as trio does for TCP (RFC 8305):
    families interleaved, the next attempt started when one fails or after
    ``happy_eyeballs_delay`` seconds, the first to connect wins.  So an
    address that silently drops packets costs that delay, not the whole
    connect timeout.  Raises ``ConnectionRefusedError`` (RST or ICMP
    unreachable) or ``TimeoutError`` (no answer within
    ``config.connect_timeout``); with several addresses, when all fail.
    """
    config = _check_config(config)
    port = _check_port(port, 1)
    if not happy_eyeballs_delay >= 0:  # also rejects NaN
        raise ValueError(f"happy_eyeballs_delay must be >= 0, not {happy_eyeballs_delay!r}")
    if isinstance(local_address, str):
        local_address = (local_address, 0)
    elif local_address is not None and not (isinstance(local_address, tuple)
                                            and len(local_address) >= 2):
        raise TypeError("local_address must be a host string or a (host, port) tuple, "
                        f"not {local_address!r}")
    targets = [(f, (_unspecified_to_local(f, a[0], local_address), *a[1:]))
               for f, a in await _resolve(host, port)]
    if local_address is not None:
        lfam = socket.AF_INET6 if ":" in str(local_address[0]) else socket.AF_INET
        targets = [t for t in targets if t[0] == lfam]
        if not targets:
            raise OSError(f"no address of {host!r} matches local_address {local_address!r}")
    if len(targets) == 1:
        return await _connect_to(*targets[0], config, local_address, tracer)
    delay = happy_eyeballs_delay  # attempts from one bound address share its socket
    errors: list[Exception] = []
    winner: list[RtcpStream] = []

    async def attempt(family: int, addr: tuple, failed: trio.Event) -> None:
        try:
            stream = await _connect_to(family, addr, config, local_address, tracer)
        except Exception as exc:  # reported after the race, in the caller's task
            errors.append(exc)
            failed.set()
            return
        if winner:  # another attempt won meanwhile: this connection is surplus
            stream.abort()
            return
        winner.append(stream)
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for family, addr in _interleave(targets):
                failed = trio.Event()
                nursery.start_soon(attempt, family, addr, failed)
                with trio.move_on_after(delay):
                    await failed.wait()
    except BaseException:
        # Cancelled by our caller in the very tick an attempt won: nobody will
        # get that stream, so it must not stay connected.
        for stream in winner:
            stream.abort()
        raise
    if winner:
        return winner[0]
    for exc in errors:
        if not isinstance(exc, ConnectionRefusedError | TimeoutError | OSError):
            raise exc
    msg = (f"all connection attempts to {host!r} port {port} failed: "
           + "; ".join(str(e) for e in errors))
    # Keep the common cause's type, so `except ConnectionRefusedError` works
    # for a name with several addresses just as for one.
    for kind, code in ((ConnectionRefusedError, errno.ECONNREFUSED),
                       (TimeoutError, errno.ETIMEDOUT)):
        if all(isinstance(e, kind) for e in errors):
            raise kind(code, msg) from errors[-1]
    raise OSError(msg) from errors[-1]


async def _connect_to(family: int, addr: tuple, config: Config, local_address: tuple | None,
                      tracer: object | None) -> RtcpStream:
    """One attempt, from a pooled client endpoint (bound to ``local_address``, if given)."""
    if local_address is not None and local_address[1]:
        await _closing_done(family, local_address)
    return await _connect_slot(_client_endpoint(family, addr, tracer, local_address), addr,
                               config)


def _interleave(targets: list[tuple[int, tuple]]) -> list[tuple[int, tuple]]:
    """The resolver's first address, then families alternating (RFC 8305 4)."""
    first = targets[0][0]
    same = [t for t in targets if t[0] == first]
    other = [t for t in targets if t[0] != first]
    out: list[tuple[int, tuple]] = []
    for i in range(max(len(same), len(other))):
        out += same[i:i + 1] + other[i:i + 1]
    return out


#: The endpoints listeners of this run bound, by address: a closed listener's
#: socket lives on while connections it accepted finish (FIN_WAIT_2 and
#: TIME_WAIT can take minutes), and a new listener on that address takes it
#: over, as SO_REUSEADDR lets kernel TCP listen on such a port again at once.
_LISTEN_POOL: trio.lowlevel.RunVar[dict[tuple, Endpoint]] = trio.lowlevel.RunVar(
    "rtcp_listen_pool")


def _listen_key(family: int, addr: tuple) -> tuple:
    """Host, port and, for IPv6, scope (0 when the address gives none)."""
    if family == socket.AF_INET6:
        return (family, addr[0], addr[1], addr[3] if len(addr) > 3 else 0)
    return (family, addr[0], addr[1])


async def _former_listener(family: int, addr: tuple) -> Endpoint | None:
    """The live endpoint of a closed listener bound to ``addr``, to listen on
    again; None to bind a new socket (after a closing one released it)."""
    pool = _run_dict(_LISTEN_POOL)
    key = _listen_key(family, addr)
    ep = pool.get(key)
    if ep is None:
        return None
    if ep._closed:
        del pool[key]
        await ep.wait_closed()  # its task closes the socket: then bind
        return None
    return ep if ep._listen.closed else None  # type: ignore[union-attr]


async def open_rtcp_listeners(port: int, *, host: str | bytes | None = None,
                              config: Config | None = None,
                              tracer: object | None = None) -> list[RtcpListener]:
    """Bind listening endpoints, like ``trio.open_tcp_listeners``.

    ``host=None`` listens on every available address family (IPv4 and IPv6);
    ``port=0`` picks a free port, the same for every family where possible.
    A port whose earlier listener (in this ``trio.run``) was closed while
    connections it accepted still finish their close keeps its socket for
    them, and a new listener on the same address takes that socket over
    (with its ``stats``; its tracer becomes the new one), as SO_REUSEADDR lets
    kernel TCP listen again at once.  Another address on that port (0.0.0.0
    after 127.0.0.1, say) still conflicts with the old socket, and a port with
    a live listener raises EADDRINUSE (OSError).
    """
    config = _check_config(config)
    port = _check_port(port, 0)
    await trio.lowlevel.checkpoint()
    if host is None:
        targets = [(socket.AF_INET, ("0.0.0.0", port))]
        if socket.has_ipv6:
            targets.append((socket.AF_INET6, ("::", port)))
    else:
        infos = await _resolve(host, port) if port else await _resolve(host, 1)
        targets = [(f, (a[0], port) if f == socket.AF_INET else (a[0], port, 0, a[3]))
                   for f, a in infos]
    listeners: list[RtcpListener] = []
    try:
        for family, addr in targets:
            if port == 0 and listeners:
                addr = (addr[0], listeners[0].local_address[1], *addr[2:])
            if port:
                ep = await _former_listener(family, addr)
                if ep is not None:
                    ep.tracer = tracer
                    listeners.append(RtcpListener(ep, config))
                    continue
            try:
                transport = UdpTransport(family, addr)
            except OSError as exc:
                if host is None and family == socket.AF_INET6 and exc.errno in (
                        errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    continue  # no IPv6 here
                raise
            ep = Endpoint(transport, config, tracer=tracer, linger=True)
            pool = _run_dict(_LISTEN_POOL)
            for key in [k for k, e in pool.items() if e._done.is_set()]:
                del pool[key]  # their sockets are closed: nothing to take over
            pool[_listen_key(family, ep.local_address)] = ep
            listeners.append(RtcpListener(ep, config))
    except BaseException:
        for lst in listeners:
            await trio.aclose_forcefully(lst)
        raise
    return listeners


async def serve_rtcp(handler: Callable[[RtcpStream], Awaitable[Any]], port: int, *,
                     host: str | bytes | None = None, config: Config | None = None,
                     handler_nursery: trio.Nursery | None = None,
                     tracer: object | None = None,
                     task_status: trio.TaskStatus[list[RtcpListener]] =
                     trio.TASK_STATUS_IGNORED) -> None:
    """Listen and run ``handler(stream)`` per connection, like ``trio.serve_tcp``."""
    listeners = await open_rtcp_listeners(port, host=host, config=config, tracer=tracer)

    async def run_handler(stream: RtcpStream) -> None:
        # trio.serve_listeners closes each stream with aclose_forcefully (a
        # cancelled aclose, which aborts); a handler that returns without
        # closing would lose its last bytes.  Close gracefully first instead.
        try:
            await handler(stream)
        finally:
            stream._close_nowait()

    await trio.serve_listeners(run_handler, listeners, handler_nursery=handler_nursery,
                               task_status=task_status)
