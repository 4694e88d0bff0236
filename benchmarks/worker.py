"""One side of one benchmark measurement, run in a fresh interpreter.

The suite (``python -m benchmarks``) starts these; you rarely need to::

    python -m benchmarks.worker ROLE --params JSON [--port PORT]

Protocol on stdout, one JSON document per line:

* ``READY {"port": N}``: a server role is bound and accepting (servers only);
* ``RESULT {...}``: the measurement, printed once at the end.

Anything else goes to stderr.  Every role runs under ``trio.fail_after`` with
``params["timeout"]`` seconds, and the suite kills the process a little later
still, so a stuck transport cannot hang the suite.

Roles (``KIND-server`` / ``KIND-client`` with KIND ``rtcp`` or ``tcp``):

``bulk``       client sends ``bytes`` bytes, server answers one byte when it has
               them all; the client times first send -> that byte.  Clients run
               with ``--linger``: they stay up after RESULT until stdin closes.
``handshake``  client does ``count`` sequential connect + close; the server
               accepts, waits for EOF and closes each.
``latency``    client sends ``size``-byte messages and waits for the echo,
               ``count`` times after ``warmup`` untimed ones.

and ``udp-sink`` / ``udp-source`` (the raw UDP drain ceiling), ``relay`` (the
impairment relay between an rtcp client and server; exits on stdin EOF) and
``codec`` (``bench_codec.run``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import trio

HOST = "127.0.0.1"
#: Where the impairment relay listens (with the server's port number, see ``relay``).
RELAY_HOST = "127.0.0.2"
#: Bytes asked of each receive_some call (rtcp and TCP alike).
RECEIVE_SIZE = 256 * 1024
#: Bytes handed to each send_all call.
SEND_CHUNK = 256 * 1024
#: Payload of a raw UDP datagram in the ceiling measurement (IPv6-path sized, as the issue's
#: anchors).
UDP_DATAGRAM = 1452
#: Datagrams a UDP source sends before it yields to trio.
UDP_BATCH = 64


def emit(tag: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ helpers
_CONFIG: Any = None


def _rtcp_config(params: dict[str, Any]) -> Any:
    """The run's ``rtcp.Config`` (built once: handshake clients connect many times)."""
    global _CONFIG
    if _CONFIG is None:
        import rtcp

        _CONFIG = rtcp.Config(**params.get("config", {}))
    return _CONFIG


def _backend() -> str | None:
    try:
        import rtcp.segment
    except Exception:
        return None
    return rtcp.segment.BACKEND


async def _listen(kind: str, params: dict[str, Any]) -> tuple[Any, int]:
    """One listener on loopback, port 0; returns it and its port."""
    if kind == "rtcp":
        import rtcp

        listeners = await rtcp.open_rtcp_listeners(0, host=HOST, config=_rtcp_config(params))
        listener = listeners[0]
        return listener, listener.local_address[1]
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    listener = listeners[0]
    return listener, listener.socket.getsockname()[1]


async def _connect(kind: str, port: int, params: dict[str, Any]) -> Any:
    host = params.get("connect_host", HOST)
    if kind == "rtcp":
        import rtcp

        return await rtcp.open_rtcp_stream(host, port, config=_rtcp_config(params))
    return await trio.open_tcp_stream(host, port)


def _stream_stats(stream: Any) -> dict[str, Any] | None:
    stats = getattr(stream, "stats", None)
    return stats.as_dict() if stats is not None and hasattr(stats, "as_dict") else None


async def _drain_to_eof(stream: Any) -> int:
    n = 0
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return n
        n += len(data)


# --------------------------------------------------------------------- bulk
async def bulk_server(kind: str, params: dict[str, Any], _port: int | None) -> dict[str, Any]:
    listener, port = await _listen(kind, params)
    emit("READY", {"port": port})
    stream = await listener.accept()
    await listener.aclose()
    total = params["bytes"]
    received = 0
    t_first = None
    while received < total:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise RuntimeError(f"EOF after {received} of {total} bytes")
        if t_first is None:
            t_first = time.perf_counter()
        received += len(data)
    t_last = time.perf_counter()
    await stream.send_all(b"k")
    await _drain_to_eof(stream)
    stats = _stream_stats(stream)
    await stream.aclose()
    return {"received": received, "receive_seconds": t_last - (t_first or t_last),
            "stats": stats}


async def bulk_client(kind: str, params: dict[str, Any], port: int | None) -> dict[str, Any]:
    assert port is not None
    total = params["bytes"]
    chunk = memoryview(os.urandom(SEND_CHUNK))
    stream = await _connect(kind, port, params)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        n = min(SEND_CHUNK, total - sent)
        await stream.send_all(chunk[:n])
        sent += n
    answer = await stream.receive_some(1)
    elapsed = time.perf_counter() - t0
    if answer != b"k":
        raise RuntimeError(f"expected the server's b'k', got {answer!r}")
    await stream.send_eof()
    stats = _stream_stats(stream)
    await stream.aclose()
    return {"bytes": total, "seconds": elapsed, "mb_per_s": total / elapsed / 1e6,
            "backend": _backend() if kind == "rtcp" else None, "stats": stats}


# ---------------------------------------------------------------- handshake
async def handshake_server(kind: str, params: dict[str, Any],
                           _port: int | None) -> dict[str, Any]:
    listener, port = await _listen(kind, params)
    emit("READY", {"port": port})
    count = params["count"]
    done = 0

    async def handle(stream: Any) -> None:
        nonlocal done
        try:
            await _drain_to_eof(stream)
        finally:
            await stream.aclose()
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            stream = await listener.accept()
            nursery.start_soon(handle, stream)
        await listener.aclose()
    return {"accepted": done}


async def handshake_client(kind: str, params: dict[str, Any],
                           port: int | None) -> dict[str, Any]:
    assert port is not None
    count = params["count"]
    if kind == "rtcp":
        _rtcp_config(params)  # imports rtcp (~0.2 s) before the clock starts, not in the loop
    t0 = time.perf_counter()
    for _ in range(count):
        stream = await _connect(kind, port, params)
        await stream.aclose()
    elapsed = time.perf_counter() - t0
    return {"count": count, "seconds": elapsed, "per_s": count / elapsed}


# ------------------------------------------------------------------ latency
async def latency_server(kind: str, params: dict[str, Any], _port: int | None) -> dict[str, Any]:
    listener, port = await _listen(kind, params)
    emit("READY", {"port": port})
    stream = await listener.accept()
    await listener.aclose()
    echoed = 0
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            break
        await stream.send_all(data)
        echoed += len(data)
    await stream.aclose()
    return {"echoed": echoed}


async def latency_client(kind: str, params: dict[str, Any], port: int | None) -> dict[str, Any]:
    assert port is not None
    size, count, warmup = params["size"], params["count"], params["warmup"]
    message = bytes(range(256)) * (size // 256 + 1)
    message = message[:size]
    stream = await _connect(kind, port, params)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for i in range(warmup + count):
        t0 = clock()
        await stream.send_all(message)
        got = 0
        while got < size:
            data = await stream.receive_some(size - got)
            if not data:
                raise RuntimeError("EOF in the middle of a round trip")
            got += len(data)
        if i >= warmup:
            samples.append((clock() - t0) / 1000.0)
    await stream.send_eof()
    await _drain_to_eof(stream)
    await stream.aclose()
    return {"size": size, "count": count, "samples_us": samples}


# ---------------------------------------------------------- raw UDP ceiling
def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:  # the same buffers rtcp's UdpTransport asks for
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except OSError:
            pass
    return sock


async def udp_sink(_kind: str, params: dict[str, Any], _port: int | None) -> dict[str, Any]:
    """Drain pattern: one wait_readable, then recvfrom until BlockingIOError."""
    sock = _udp_socket()
    sock.bind((HOST, 0))
    emit("READY", {"port": sock.getsockname()[1]})
    recvfrom = sock.recvfrom
    count = 0
    nbytes = 0
    t_first = t_last = 0.0
    idle = params.get("idle", 1.0)
    done = False
    while not done:
        with trio.move_on_after(idle if count else params["timeout"]) as scope:
            await trio.lowlevel.wait_readable(sock)
        if scope.cancelled_caught:
            break  # the end markers were lost; the sender is long done
        while True:
            try:
                data, _addr = recvfrom(65536)
            except BlockingIOError:
                break
            if len(data) == 1:  # end marker
                done = True
                break
            if not count:
                t_first = time.perf_counter()
            count += 1
            nbytes += len(data)
        if count:
            t_last = time.perf_counter()
    sock.close()
    seconds = t_last - t_first
    if count < 2 or seconds <= 0:
        raise RuntimeError(f"only {count} datagrams arrived")
    # The first datagram starts the clock, so it is not counted in the rate.
    rate = (count - 1) / seconds
    return {"datagrams": count, "bytes": nbytes, "seconds": seconds,
            "datagrams_per_s": rate, "mb_per_s": rate * UDP_DATAGRAM / 1e6}


async def udp_source(_kind: str, params: dict[str, Any], port: int | None) -> dict[str, Any]:
    """Send ``datagrams`` datagrams in batches, waiting only when the socket is full."""
    assert port is not None
    sock = _udp_socket()
    sock.connect((HOST, port))
    send = sock.send
    payload = os.urandom(UDP_DATAGRAM)
    total = params["datagrams"]
    sent = 0
    blocked = 0
    t0 = time.perf_counter()
    while sent < total:
        n = min(UDP_BATCH, total - sent)
        try:
            for _ in range(n):
                send(payload)
                sent += 1
        except BlockingIOError:
            blocked += 1
            await trio.lowlevel.wait_writable(sock)
        except ConnectionRefusedError:
            pass  # an ICMP error for an earlier datagram; go on
        await trio.lowlevel.checkpoint()
    elapsed = time.perf_counter() - t0
    for _ in range(20):  # end markers; some may be dropped by a full receive buffer
        try:
            send(b"!")
        except OSError:
            pass
        await trio.sleep(0.01)
    sock.close()
    return {"sent": sent, "seconds": elapsed, "send_per_s": sent / elapsed,
            "blocked": blocked}


# -------------------------------------------------------------------- relay
async def relay(_kind: str, params: dict[str, Any], port: int | None) -> dict[str, Any]:
    """The impairment relay in front of ``port``; runs until stdin reaches EOF."""
    from rtcp.relay import Impairment, open_relay

    assert port is not None
    forward = Impairment(**params.get("forward", {}))
    backward = Impairment(**params.get("backward", {}))
    # rtcp puts the UDP port it sends to in the header's destination port, and a listener
    # only takes SYNs for its own port; so the relay listens on another loopback address
    # with the server's port number (127.0.0.2 is loopback on Linux).
    listen = (params.get("listen_host", RELAY_HOST), port)
    async with open_relay((HOST, port), listen=listen, forward=forward, backward=backward,
                          seed=params.get("seed", 1)) as r:
        emit("READY", {"port": r.listen_address[1]})
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        fwd, bwd = r.stats.forward, r.stats.backward
        return {
            "forward": {"received": fwd.received, "forwarded": fwd.forwarded,
                        "dropped": fwd.dropped, "send_errors": fwd.send_errors},
            "backward": {"received": bwd.received, "forwarded": bwd.forwarded,
                         "dropped": bwd.dropped, "send_errors": bwd.send_errors},
            "summary": r.stats.summary(),
        }


# -------------------------------------------------------------------- codec
async def codec(_kind: str, params: dict[str, Any], _port: int | None) -> dict[str, Any]:
    from benchmarks import bench_codec

    return bench_codec.run(quick=params.get("quick", False))


ROLES = {
    "bulk-server": bulk_server,
    "bulk-client": bulk_client,
    "handshake-server": handshake_server,
    "handshake-client": handshake_client,
    "latency-server": latency_server,
    "latency-client": latency_client,
    "udp-sink": udp_sink,
    "udp-source": udp_source,
    "relay": relay,
    "codec": codec,
}


async def _main(role: str, kind: str, params: dict[str, Any], port: int | None,
                linger: bool) -> None:
    timeout = params.get("timeout", 120.0)
    with trio.fail_after(timeout):
        result = await ROLES[role](kind, params, port)
    emit("RESULT", result)
    if linger:
        # Stay alive until the suite closes stdin (the server has finished): rtcp lives in
        # this process, so exiting at once would leave the server's FIN unacknowledged and
        # its aclose() waiting out close_timeout, where a kernel would have answered.
        with trio.move_on_after(timeout):
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one side of one rtcp benchmark")
    parser.add_argument("role", help="ROLE or KIND:ROLE, e.g. rtcp:bulk-server, udp-sink, codec")
    parser.add_argument("--params", default="{}", help="JSON parameters")
    parser.add_argument("--port", type=int, default=None, help="the server's port (clients)")
    parser.add_argument("--linger", action="store_true",
                        help="after RESULT, keep running until stdin reaches EOF")
    args = parser.parse_args(argv)
    kind, _, role = args.role.rpartition(":")
    if role not in ROLES:
        parser.error(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if kind not in ("", "rtcp", "tcp"):
        parser.error(f"unknown kind {kind!r}; rtcp or tcp")
    trio.run(_main, role, kind or "rtcp", json.loads(args.params), args.port, args.linger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
