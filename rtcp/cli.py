"""The ``rtcp`` command line: an echo demo, file transfer and the impairment relay.

Commands (SPEC.md section 3)::

    rtcp demo                                     # echo server + client on loopback, with a ladder
    rtcp echo-server [--host HOST] [--port PORT]  # default port 7007, until Ctrl-C
    rtcp echo-client HOST PORT [MESSAGE ...]      # messages, or stdin lines when none are given
    rtcp send HOST PORT FILE
    rtcp recv [--host HOST] --port PORT --output FILE
    rtcp relay --listen [HOST:]PORT --to HOST:PORT [--loss P] ...

Exit status: 0 on success; 1 for a runtime error (refused, timed out, connection broken,
unreadable file, short transfer, SHA-256 mismatch); 2 for a usage error (bad option, bad port,
bad relay value); 130 when Ctrl-C interrupts a client or a transfer. The servers (echo-server,
relay) stop on Ctrl-C by design and exit 0. Every error is one line on stderr,
``rtcp: error: ...``; ``--verbose`` adds the traceback of an unexpected internal error.

File transfer framing (``send`` -> ``recv``): a header ``!8sBHQ`` (magic ``RTCPFILE``,
version 1, name length, file size), the file's base name in UTF-8, the file's bytes, then the
32-byte SHA-256 of those bytes; the sender then half-closes. The receiver answers with the
SHA-256 of what it received and closes, so both sides print and compare both digests.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import logging
import os
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import trio

from . import __version__
from .config import HEADER_SIZE, MAX_UDP_PAYLOAD, Config
from .relay import add_relay_arguments, run_relay_from_args
from .segment import BACKEND
from .stream import RtcpListener, RtcpStream, open_rtcp_listeners, open_rtcp_stream
from .trace import LadderTracer, LoggingTracer, MultiTracer, PcapTracer, Tracer, format_address

DEFAULT_PORT = 7007
DEFAULT_TIMEOUT = 10.0
CHUNK = 256 * 1024
FILE_MAGIC = b"RTCPFILE"
FILE_VERSION = 1
FILE_HEADER = struct.Struct("!8sBHQ")  # magic, version, name length, size
DIGEST_SIZE = 32
MAX_NAME = 4096
SERVERS = frozenset({"echo-server", "relay"})  # Ctrl-C is their normal stop: exit 0
DEMO_MESSAGES = ("hello", "ladder diagrams")
DEMO_BULK = 16_384


class CliError(Exception):
    """A runtime failure with a one-line message for the user (exit status 1)."""


class Terminated(Exception):
    """SIGTERM arrived: stop as Ctrl-C would, cleaning up on the way out."""


class UsageError(CliError):
    """A bad value found after parsing (exit status 2)."""


# ------------------------------------------------------------------ argument types


def _port(text: str, *, low: int = 1) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: must be in {low}..65535")
    return port


_listen_port = functools.partial(_port, low=0)
_listen_port.__name__ = "port"  # type: ignore[attr-defined]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: must be a positive number")
    return value


def _datagram(text: str) -> int:
    low = HEADER_SIZE + 64  # what Config accepts
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not low <= value <= MAX_UDP_PAYLOAD:
        raise argparse.ArgumentTypeError(
            f"invalid datagram size {text!r}: must be in {low}..{MAX_UDP_PAYLOAD}")
    return value


# ------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rtcp: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        # argparse reports a subcommand's unknown options from the top-level
        # parser; point to the help that lists the subcommand's options.
        ns, extra = self.parse_known_args(args, namespace)
        messages = getattr(ns, "messages", None)
        if extra and isinstance(messages, list) and not any(a.startswith("-") for a in extra):
            # Messages after an option ('echo-client H P --timeout 1 hi'): argparse
            # has already closed the MESSAGE list and leaves them over.
            messages.extend(extra)
            extra = []
        if extra:
            command = getattr(ns, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(2, f"rtcp: error: unrecognized arguments: {' '.join(extra)} "
                         f"(see '{prog} --help')\n")
        return ns


def _add_common(p: argparse.ArgumentParser, *, trace: bool = True) -> None:
    """The options every connection command shares (see ``_session``)."""
    g = p.add_argument_group("connection options")
    if trace:
        g.add_argument("--trace", action="store_true",
                       help="draw a ladder diagram of segments and state changes on stderr")
    g.add_argument("--pcap", metavar="FILE",
                   help="write every segment as TCP/IP to a pcap file (Wireshark, tshark)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="log connection events (-v: state changes, -vv: every segment)")
    g.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="connect timeout, and how long the peer may make no progress before "
                        f"giving up (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--max-datagram", type=_datagram, default=Config().max_datagram,
                   metavar="BYTES",
                   help="largest UDP payload sent over IPv4, 20 less over IPv6 (default "
                        "%(default)s; up to 65507 on loopback)")


def build_parser() -> argparse.ArgumentParser:
    """The ``rtcp`` argument parser with one subparser per command."""
    parser = _Parser(
        prog="rtcp",
        description="rtcp: a reliable, TCP-like transport over UDP. Start with 'rtcp demo'.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error, 130 Ctrl-C (143 "
               "SIGTERM) during a client or transfer (servers exit 0 on either).")
    parser.add_argument("--version", action="version",
                        version=f"rtcp {__version__} (codec: {BACKEND})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="echo server and client on loopback, with a ladder trace",
                       description="Start an echo server on 127.0.0.1 (a free port) in this "
                                   "process, exchange a few messages with it and draw the "
                                   "connection as a ladder diagram on stdout.")
    p.add_argument("messages", nargs="*", default=[], metavar="MESSAGE",
                   help=f"messages to echo (default: {' '.join(map(repr, DEMO_MESSAGES))} "
                        f"and {DEMO_BULK:,} bytes of bulk data)")
    _add_common(p, trace=False)
    p.set_defaults(func=_demo)

    p = sub.add_parser("echo-server", help="echo every connection's bytes back, until Ctrl-C",
                       description="Listen for rtcp connections and echo back everything "
                                   "each one sends until it sends EOF, then close it. Prints "
                                   "one line with the listening addresses, then one per "
                                   "connection. Ctrl-C stops it (exit 0).")
    p.add_argument("--host", help="address to listen on (default: every IPv4 and IPv6 address)")
    p.add_argument("--port", type=_listen_port, default=DEFAULT_PORT,
                   help="UDP port (default %(default)s; 0 picks a free one)")
    _add_common(p)
    p.set_defaults(func=_echo_server)

    p = sub.add_parser("echo-client", help="send messages to an echo server, print the echoes",
                       description="Connect, send each MESSAGE (or, with none, each line of "
                                   "stdin) and print its echo; then send EOF, wait for the "
                                   "server to close, and exit.")
    p.add_argument("host", metavar="HOST", help="the echo server's name or address")
    p.add_argument("port", metavar="PORT", type=_port, help="its UDP port (default server: 7007)")
    p.add_argument("messages", nargs="*", default=[], metavar="MESSAGE",
                   help="messages to send, one at a time (default: read lines from stdin)")
    _add_common(p)
    p.set_defaults(func=_echo_client)

    p = sub.add_parser("send", help="send a file to 'rtcp recv'",
                       description="Send FILE to a receiver started with 'rtcp recv'; both "
                                   "sides print the SHA-256 and the transfer fails (exit 1) "
                                   "unless they match.")
    p.add_argument("host", metavar="HOST", help="the receiver's name or address")
    p.add_argument("port", metavar="PORT", type=_port, help="the receiver's UDP port")
    p.add_argument("file", metavar="FILE", help="the file to send")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_send)

    p = sub.add_parser("recv", help="receive one file from 'rtcp send', then exit",
                       description="Wait for one 'rtcp send', save the file and check its "
                                   "SHA-256; exit 0 only when it matches the sender's.")
    p.add_argument("--host", help="address to listen on (default: every IPv4 and IPv6 address)")
    p.add_argument("-p", "--port", type=_listen_port, required=True,
                   help="UDP port (0 picks a free one, printed at start)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to save the file (a directory: keep the sender's file name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_recv)

    p = sub.add_parser("relay", help="UDP relay that drops, delays, reorders, corrupts",
                       description="Forward datagrams between clients and a server, impairing "
                                   "them on the way (rtcp's own netem). Ctrl-C stops it and "
                                   "prints what it did.")
    add_relay_arguments(p)
    p.set_defaults(func=_relay)
    return parser


# ------------------------------------------------------------------ shared plumbing


@dataclass
class Session:
    """What one command run shares: the Config and the tracer built from its options."""

    args: argparse.Namespace
    config: Config
    tracer: Tracer | None

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.close()


class _OneLineFormatter(logging.Formatter):
    """Log records without their tracebacks: the CLI shows those only with --verbose."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


def _setup_logging(verbose: int) -> None:
    """-v: INFO, -vv: DEBUG, with timestamps; otherwise warnings only, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLineFormatter("rtcp: warning: %(message)s"))
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _session(args: argparse.Namespace, ladder: object | None = None) -> Session:
    """Build the Config and tracers from the common options (``ladder``: a text file)."""
    tracers: list[Tracer] = [LoggingTracer()] if args.verbose else []
    if ladder is None and getattr(args, "trace", False):
        ladder = sys.stderr
    if ladder is not None:
        tracers.append(LadderTracer(ladder))  # type: ignore[arg-type]
    if args.pcap:
        try:
            tracers.append(PcapTracer(args.pcap))
        except OSError as exc:
            raise CliError(f"cannot write pcap file {args.pcap}: {exc.strerror or exc}") from None
    tracer = None if not tracers else tracers[0] if len(tracers) == 1 else MultiTracer(*tracers)
    t = args.timeout
    # The same link MTU for both families: IPv6's header is 20 bytes longer.
    v6 = max(HEADER_SIZE + 64, args.max_datagram - 20)
    config = Config(max_datagram=args.max_datagram, max_datagram_ipv6=v6,
                    connect_timeout=t, close_timeout=t)
    if args.command == "echo-server":
        # Idle clients may stay; vanished ones are found by keepalive within ~2 * timeout.
        config = config.replace(keepalive_idle=t, keepalive_interval=max(t / 4, 0.5),
                                keepalive_count=4)
    return Session(args, config, tracer)


def _where(host: str, port: int) -> str:
    return format_address((host, port))


def _unbracket(host: str | None) -> str | None:
    """``[::1]`` as the servers print it (and URLs write it) -> ``::1``."""
    if host and len(host) > 2 and host[0] == "[" and host[-1] == "]":
        return host[1:-1]
    return host


async def _connect(s: Session, host: str, port: int) -> RtcpStream:
    """open_rtcp_stream with every failure turned into a one-line CliError."""
    host = _unbracket(host) or host
    where = _where(host, port)
    try:
        return await open_rtcp_stream(host, port, config=s.config, tracer=s.tracer)
    except ConnectionRefusedError:
        raise CliError(f"connection refused by {where}") from None
    except TimeoutError:
        raise CliError(f"connection to {where} timed out after "
                       f"{s.config.connect_timeout:g} s") from None
    except socket.gaierror as exc:
        raise CliError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        raise CliError(f"cannot connect to {where}: {exc.strerror or exc}") from None


async def _listen(s: Session, host: str | None, port: int) -> list[RtcpListener]:
    host = _unbracket(host)
    try:
        return await open_rtcp_listeners(port, host=host, config=s.config, tracer=s.tracer)
    except socket.gaierror as exc:
        raise CliError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        raise CliError(f"cannot listen on {_where(host or '*', port)}: "
                       f"{exc.strerror or exc}") from None


def _addresses(listeners: Sequence[RtcpListener]) -> str:
    return ", ".join(format_address(lst.local_address) for lst in listeners)


@contextlib.asynccontextmanager
async def _closing(stream: RtcpStream) -> AsyncIterator[RtcpStream]:
    """Close gracefully on success; on any error or cancellation, abort (RST) at once."""
    try:
        yield stream
    except BaseException:
        stream.abort()
        raise
    await stream.aclose()


@contextlib.asynccontextmanager
async def _stall_guard(stream: RtcpStream, timeout: float, what: str,
                       on_tick: Callable[[], None] | None = None,
                       local: _LocalWait | None = None) -> AsyncIterator[None]:
    """Fail with CliError if no new data moves either way for ``timeout`` seconds.

    Progress is new bytes sent or received (not ACKs or keepalives), so a peer that
    answers but never echoes or never finishes still times out. ``on_tick`` runs
    every 0.1 s (the sender's progress bar). While ``local.active`` we are waiting
    on our own output (a FIFO's reader), which is no stall of the peer's.
    """
    stalled = False
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            nonlocal stalled
            stats = stream.stats
            last, since = -1, trio.current_time()
            while True:
                await trio.sleep(0.1)
                if on_tick is not None:
                    on_tick()
                moved = stats.bytes_sent + stats.bytes_received
                if moved != last or (local is not None and local.active):
                    last, since = moved, trio.current_time()
                elif trio.current_time() - since >= timeout:
                    stalled = True
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
    if stalled:
        peer = format_address(stream.remote_address)
        raise CliError(f"timed out {what}: no progress from {peer} for {timeout:g} s")


@dataclass
class _LocalWait:
    """Whether recv is waiting on its output rather than on the network."""

    active: bool = False


async def _receive_exactly(stream: RtcpStream, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only when the peer sent EOF first."""
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


async def _drain(stream: RtcpStream) -> int:
    """Read until EOF; returns how many unexpected bytes came."""
    extra = 0
    while data := await stream.receive_some():
        extra += len(data)
    return extra


def _out(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------ echo


async def _echo_handler(stream: RtcpStream, *, log: bool = True) -> None:
    """Echo until EOF, then close; a broken connection ends just this one."""
    peer = format_address(stream.remote_address)
    if log:
        _out(f"{peer}: connected")
    total = 0
    try:
        async with _closing(stream):
            while data := await stream.receive_some():
                await stream.send_all(data)
                total += len(data)
    except trio.BrokenResourceError as exc:
        if log:
            _out(f"{peer}: connection lost after {total:,} bytes ({exc.__cause__ or exc})")
        return
    if log:
        _out(f"{peer}: closed, {total:,} bytes echoed")


async def _echo_server(s: Session) -> None:
    args = s.args
    listeners = await _listen(s, args.host, args.port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _echo_handler, listeners)
        _out(f"rtcp echo-server: listening on {_addresses(listeners)}")


async def _echo_session(s: Session, stream: RtcpStream, messages: Sequence[bytes] | None,
                        show: Callable[[bytes], None]) -> None:
    """Send each message (or stdin line when ``messages`` is None) and show its echo."""
    timeout = s.args.timeout

    async def exchange(data: bytes) -> None:
        await stream.send_all(data)
        async with _stall_guard(stream, timeout, "waiting for the echo"):
            echo = await _receive_exactly(stream, len(data))
        if len(echo) < len(data):
            raise CliError(f"the server closed the connection after echoing "
                           f"{len(echo)} of {len(data)} bytes")
        show(echo)

    if messages is not None:
        for message in messages:
            await exchange(message)
    else:
        if sys.stdin is not None and sys.stdin.isatty():
            print("rtcp: type lines to send; Ctrl-D to finish", file=sys.stderr)
        lines = _LineReader(sys.stdin.fileno()) if sys.stdin is not None else None
        while lines is not None:
            line = await lines.readline()
            if not line:
                break
            await exchange(line)
    await stream.send_eof()
    async with _stall_guard(stream, timeout, "waiting for the server to close"):
        extra = await _drain(stream)
    if extra:
        raise CliError(f"the server sent {extra} bytes nobody asked for")


class _LineReader:
    """Lines from a file descriptor, read in a worker thread with os.read.

    Not ``sys.stdin.buffer.readline``: a thread abandoned on Ctrl-C would stay
    blocked holding the buffered reader's lock, and the interpreter aborts
    (SIGABRT) when it cannot take that lock to close stdin at exit.  os.read
    takes no lock.  (stdin is shared with the shell: it stays blocking.)
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""
        self._eof = False

    async def readline(self) -> bytes:
        """The next line with its newline; the unterminated rest at EOF; then b""."""
        while b"\n" not in self._buf and not self._eof:
            chunk = await trio.to_thread.run_sync(os.read, self._fd, 65536,
                                                  abandon_on_cancel=True)
            self._eof = not chunk
            self._buf += chunk
        end = self._buf.find(b"\n") + 1 or len(self._buf)
        line, self._buf = self._buf[:end], self._buf[end:]
        return line


def _show_echo(echo: bytes) -> None:
    out = sys.stdout.buffer
    out.write(echo if echo.endswith(b"\n") else echo + b"\n")
    out.flush()


async def _echo_client(s: Session) -> None:
    args = s.args
    stream = await _connect(s, args.host, args.port)
    async with _closing(stream):
        messages = [m.encode() for m in args.messages] or None
        await _echo_session(s, stream, messages, _show_echo)


async def _demo(s: Session) -> None:
    listeners = await open_rtcp_listeners(0, host="127.0.0.1", config=s.config)
    host, port = listeners[0].local_address[:2]
    handler = functools.partial(_echo_handler, log=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        _out(f"rtcp demo: echo server on {_where(host, port)}; the client's view of the "
             f"connection follows\n(left: client states, arrows: segments with relative "
             f"seq/ack, right: server states as inferred)\n")
        stream = await _connect(s, host, port)
        messages = [m.encode() for m in s.args.messages or DEMO_MESSAGES]
        if not s.args.messages:
            messages.append(bytes(range(256)) * (DEMO_BULK // 256))

        def show(echo: bytes) -> None:
            if len(echo) > 80:
                _out(f"echo: {len(echo):,} bytes")
            else:
                _out(f"echo: {echo.decode(errors='replace')}")

        async with _closing(stream):
            await _echo_session(s, stream, messages, show)
        stats = stream.stats
        if s.tracer is not None:
            s.tracer.close()  # flush the ladder before the summary
        _out(f"\ndone: {stats.segments_sent} segments sent, {stats.segments_received} "
             f"received, srtt {stats.srtt * 1000:.2f} ms; the client stays in TIME_WAIT.\n"
             f"Two hosts: 'rtcp echo-server' on one, 'rtcp echo-client HOST {DEFAULT_PORT} "
             f"hello' on the other (add --trace).")
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ file transfer


@contextlib.contextmanager
def _progress(args: argparse.Namespace, description: str,
              total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``update(bytes_done)``. Off unless a TTY."""
    if args.quiet or args.trace or args.verbose or not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.update(task, completed=done)


def _rate(nbytes: int, seconds: float) -> str:
    rate = nbytes / max(seconds, 1e-9)
    unit, scale = ("MB/s", 1e6) if rate >= 1e6 else ("kB/s", 1e3) if rate >= 1e3 else ("B/s", 1)
    return f"{nbytes:,} bytes in {seconds:.2f} s ({rate / scale:.2f} {unit})"


def _compare(ours: bytes, theirs: bytes, peer: str, our_role: str, their_role: str,
             outcome: str = "") -> None:
    _out(f"sha256 {ours.hex()}  ({our_role})")
    _out(f"sha256 {theirs.hex()}  ({their_role} by {peer})")
    if ours != theirs:
        raise CliError(f"SHA-256 mismatch: {our_role} {ours.hex()[:16]}..., "
                       f"{their_role} {theirs.hex()[:16]}..." + (f"; {outcome}" if outcome else ""))
    _out("OK: SHA-256 matches")


async def _send(s: Session) -> None:
    args = s.args
    path = Path(args.file)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise CliError(f"cannot read {args.file}: is a directory")
        if not stat.S_ISREG(mode):
            # The header carries the size up front, and opening a FIFO would
            # wait for a writer on the event loop.
            raise CliError(f"cannot send {args.file}: not a regular file (send needs its size)")
        file = open(path, "rb")
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        name = path.name.encode()[:MAX_NAME]
        stream = await _connect(s, args.host, args.port)
        peer = _where(args.host, args.port)
        header = FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, len(name), size) + name
        digest = hashlib.sha256()
        start = time.monotonic()
        with _progress(args, f"send {path.name}", size) as update:
            stats = stream.stats
            base = stats.bytes_sent

            def tick() -> None:
                update(max(0, min(size, stats.bytes_sent - base - len(header))))

            async with _closing(stream), _stall_guard(stream, args.timeout, "sending",
                                                      on_tick=tick):
                await stream.send_all(header)
                sent = 0
                while chunk := await trio.to_thread.run_sync(file.read, CHUNK):
                    digest.update(chunk)
                    await stream.send_all(chunk)
                    sent += len(chunk)
                if sent != size:
                    raise CliError(f"{args.file} changed size while being sent")
                await stream.send_all(digest.digest())
                await stream.send_eof()
                reply = await _receive_exactly(stream, DIGEST_SIZE)
                if reply.startswith(FILE_MAGIC):
                    raise CliError(f"{peer} sent the transfer back: it is not 'rtcp recv' "
                                   f"(an echo server?)")
                if len(reply) < DIGEST_SIZE:
                    raise CliError(f"{peer} closed the connection without confirming "
                                   f"the file (short or rejected transfer)")
                await _drain(stream)
            tick()
    _out(f"sent {path.name}: {_rate(size, time.monotonic() - start)}")
    _compare(digest.digest(), reply, peer, "sent", "received")


async def _accept_one(listeners: list[RtcpListener]) -> RtcpStream:
    """The first connection on any listener; the listeners are closed afterwards."""
    accepted: list[RtcpStream] = []
    async with trio.open_nursery() as nursery:
        async def accept(listener: RtcpListener) -> None:
            stream = await listener.accept()
            if accepted:
                stream.abort()
                return
            accepted.append(stream)
            nursery.cancel_scope.cancel()

        for listener in listeners:
            nursery.start_soon(accept, listener)
    for listener in listeners:
        await listener.aclose()
    return accepted[0]


def _target(output: Path, name: str) -> Path:
    if not output.is_dir():
        return output
    base = Path(name).name
    if base in ("", ".", "..") or not base.isprintable():  # NUL, newlines, escape codes
        raise CliError(f"the sender's file name {name!r} is not usable; give --output a file")
    return output / base


async def _recv(s: Session) -> None:
    args = s.args
    output = Path(args.output)
    if args.output.endswith(("/", os.sep)) and not output.is_dir():
        raise CliError(f"cannot write {args.output}: not a directory")
    parent = output if output.is_dir() else output.parent
    writable_file = output.exists() and not output.is_dir() and os.access(output, os.W_OK)
    if not writable_file and (not parent.is_dir() or not os.access(parent, os.W_OK)):
        raise CliError(f"cannot write {args.output}: {parent} is not a writable directory")
    listeners = await _listen(s, args.host, args.port)
    _out(f"rtcp recv: listening on {_addresses(listeners)}, saving to {args.output}")
    stream = await _accept_one(listeners)
    peer = format_address(stream.remote_address)
    local = _LocalWait()
    async with _closing(stream), _stall_guard(stream, args.timeout, "receiving", local=local):
        head = await _receive_exactly(stream, FILE_HEADER.size)
        magic, version, name_len, size = (FILE_HEADER.unpack(head)
                                          if len(head) == FILE_HEADER.size else (b"", 0, 0, 0))
        if magic != FILE_MAGIC or version != FILE_VERSION:
            raise CliError(f"{peer} is not an 'rtcp send' (version {FILE_VERSION})")
        name = (await _receive_exactly(stream, name_len)).decode(errors="replace")
        target = _target(output, name)
        _out(f"receiving {name} ({size:,} bytes) from {peer} into {target}")
        digest = hashlib.sha256()
        got = 0
        start = time.monotonic()
        out = await _Output.open(target, local)
        try:
            with out.file, _progress(args, f"recv {name}", size) as update:
                while got < size:
                    data = await stream.receive_some(min(CHUNK, size - got))
                    if not data:
                        break
                    await out.write(data)
                    digest.update(data)
                    got += len(data)
                    update(got)
                out.sync()
            if got < size:
                raise CliError(f"short file: {peer} closed after {got:,} of {size:,} bytes; "
                               f"{out.lost}")
            theirs = await _receive_exactly(stream, DIGEST_SIZE)
            if len(theirs) < DIGEST_SIZE:
                raise CliError(f"{peer} closed before sending its SHA-256; {out.lost}")
            ours = digest.digest()
            if ours == theirs:
                out.commit()
            await stream.send_all(ours)  # the sender's "OK" now means "saved"
            await stream.send_eof()
            await _drain(stream)
            _out(f"received {name}: {_rate(got, time.monotonic() - start)}")
            _compare(ours, theirs, peer, "received", "sent", out.lost)
        finally:
            out.discard()


class _Output:
    """Where recv writes.  A new name is created and written, and removed again
    unless the transfer completes with matching digests.  An existing plain
    file of ours (see ``_stage_beside``) is not touched until then: the data
    goes to a new file beside it that replaces it only once complete and
    verified, so a failed transfer keeps the old content.  Anything else (a
    symlink, FIFO, device, a shared or hard-linked file) is opened and written
    in place, as cp does, so it behaves as users expect."""

    def __init__(self, target: Path, file: BinaryIO, created: bool, local: _LocalWait,
                 staged: Path | None = None) -> None:
        self.target = target
        self.local = local
        self.created = created
        self.file = file
        self.staged = staged
        self.regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
        if not self.regular:  # our own open file description: no one else's mode changes
            os.set_blocking(file.fileno(), False)
        self.done = False
        self.lost = ("nothing saved" if created and self.regular
                     else f"{target} is unchanged" if staged else f"{target} is incomplete")

    @classmethod
    async def open(cls, target: Path, local: _LocalWait) -> _Output:
        """Open ``target`` for writing.  The open runs in a thread: for a FIFO it
        waits for a reader, and the event loop (signals, the connection's
        timers) must not wait with it."""
        try:
            name_max = os.pathconf(target.parent, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        if len(os.fsencode(target.name)) > name_max:  # checked before any data moves
            raise CliError(f"cannot write {target}: file name longer than {name_max} bytes")
        if target.is_dir():
            raise CliError(f"cannot write {target}: it is a directory")
        created = not os.path.lexists(target)
        if not created:
            staged = _stage_beside(target)
            if staged is not None:
                return cls(target, staged[0], False, local, staged[1])
        local.active = True
        try:
            file = await trio.to_thread.run_sync(open, target, "wb", abandon_on_cancel=True)
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            local.active = False
        return cls(target, file, created, local)

    async def write(self, data: bytes) -> None:
        """Write all of ``data``.  A pipe may stay full while its reader lags:
        its fd is non-blocking and we wait for room in trio, so signals and
        the connection's timers keep running meanwhile."""
        try:
            if self.regular:
                self.file.write(data)
                return
            fd = self.file.fileno()
            view = memoryview(data)
            while view:
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    written = 0
                if written:
                    view = view[written:]
                    continue
                self.local.active = True
                try:
                    await trio.lowlevel.wait_writable(fd)
                finally:
                    self.local.active = False
        except OSError as exc:  # a full disk, a reader that went away, ...
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> CliError:
        return CliError(f"cannot write {self.target}: {exc.strerror or exc}; {self.lost}")

    def sync(self) -> None:
        """Make what was written durable (before the sender is told it was saved)."""
        if self.regular:
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
            except OSError as exc:
                raise self._failed(exc) from None

    def commit(self) -> None:
        """The transfer is complete and verified: keep it (under the target's name)."""
        if self.staged is not None:
            try:
                os.replace(self.staged, self.target)
            except OSError as exc:
                raise self._failed(exc) from None
            # The rename must survive a crash before the sender hears "saved":
            # the directory entry is durable once the directory is synced
            # (best effort: some file systems cannot sync a directory).
            with contextlib.suppress(OSError):
                dirfd = os.open(self.target.parent, os.O_RDONLY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
        self.done = True

    def discard(self) -> None:
        """Unless committed, remove the file if this transfer created it."""
        if self.done:
            return
        doomed = self.staged if self.staged is not None else (
            self.target if self.created and self.regular else None)
        if doomed is not None:
            with contextlib.suppress(FileNotFoundError):
                doomed.unlink()


def _stage_beside(target: Path) -> tuple[BinaryIO, Path] | None:
    """A new file in ``target``'s directory to receive into, or None where
    replacing ``target`` by it would not be what writing into it is: anything
    but a plain regular file of ours that we may write, with one link and no
    set-id bits (a read-only, shared, hard-linked or set-id file, a symlink, a
    FIFO or device is written in place, as cp does, with its own checks), or
    where no new file can be made there."""
    try:
        st = os.lstat(target)
    except OSError:
        return None
    if (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid()
            or st.st_mode & (stat.S_ISUID | stat.S_ISGID) or not os.access(target, os.W_OK)):
        return None
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".rtcp-recv-", suffix=".part")
    except OSError:
        return None
    with contextlib.suppress(OSError):
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.fchown(fd, -1, st.st_gid)  # the group too, where we may
    return os.fdopen(fd, "wb"), Path(name)


# ------------------------------------------------------------------ relay


async def _relay(s: Session) -> None:
    try:
        await run_relay_from_args(s.args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------ main


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _report(exc: BaseException, args: argparse.Namespace) -> int:
    """Turn whatever ended the run into one stderr line and an exit status."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)] or [exc]
    if any(isinstance(e, KeyboardInterrupt) for e in leaves):
        return 0 if args.command in SERVERS else 130
    if any(isinstance(e, Terminated) for e in leaves):
        return 0 if args.command in SERVERS else 128 + signal.SIGTERM
    err = leaves[0]
    status = 1
    if isinstance(err, UsageError):
        message, status = str(err), 2
    elif isinstance(err, CliError):
        message = str(err)
    elif isinstance(err, trio.BrokenResourceError):
        message = f"connection broken: {err.__cause__ or err}"
    elif isinstance(err, BrokenPipeError):
        # stdout went away (e.g. piped into head): say nothing more there.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        message = "broken pipe on output"
    elif isinstance(err, OSError):
        message = err.strerror or str(err)
    else:
        message = f"internal error: {type(err).__name__}: {err}"
        if args.verbose:
            traceback.print_exception(exc)
        else:
            message += " (run with --verbose for the traceback)"
    print(f"rtcp: error: {message}", file=sys.stderr, flush=True)
    return status


async def _until_sigterm(func: Callable[[Session], Awaitable[None]], session: Session) -> None:
    """Run the command; SIGTERM (kill, systemd, docker stop) cancels it as
    Ctrl-C does, so cleanup runs (``recv`` removes a file it created)
    instead of the process dying mid-write."""

    # The handler is in place from before the command prints that it is
    # listening until its cleanup is over: a signal that comes before watch()
    # runs waits for it, and a second one cannot kill the cleanup.
    command = trio.CancelScope()
    terminated = False
    # Leaving trio's receiver puts back the handler it found and re-raises the
    # signals still queued in it.  With SIG_IGN found there, a second SIGTERM
    # during the way out is ignored, not the default action (death by -15
    # instead of the 143 below).  Once terminated, it stays ignored: main()
    # returns 143 for the process to exit with.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:

            async def watch() -> None:
                nonlocal terminated
                async for _ in signals:
                    terminated = True
                    command.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                with command:
                    await func(session)
                nursery.cancel_scope.cancel()
    finally:
        if not terminated:
            signal.signal(signal.SIGTERM, previous)
    if terminated:
        raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rtcp`` command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if not hasattr(args, "verbose"):
            args.verbose = 0
        _setup_logging(args.verbose)
        session: Session | None = None
        func: Callable[[Session], Awaitable[None]] = args.func
        try:
            if args.command == "relay":
                session = Session(args, Config(), None)
            else:
                session = _session(args, sys.stdout if args.command == "demo" else None)
            trio.run(_until_sigterm, func, session)
            return 0
        except BaseException as exc:  # every failure becomes one line
            if isinstance(exc, SystemExit):
                raise
            return _report(exc, args)
        finally:
            if session is not None:
                with contextlib.suppress(Exception):
                    session.close()
    except KeyboardInterrupt:
        return 130
