"""An rtcp listener in a process of its own, for the SYN-flood and memory tests.

Run as ``python tests/rtcp_server_proc.py [options]``.  It listens on 127.0.0.1 (an
ephemeral port), prints one JSON line ``{"port": P, "pid": N}`` and then answers each
line it reads on stdin with one JSON line on stdout:

``stats``  the listener's ``EndpointStats``, its connection count, the streams accepted
           and still open, ``rss``/``hwm`` (VmRSS/VmHWM in bytes, after a full
           garbage collection), ``udp_drops`` (datagrams the kernel dropped at the
           listener's socket because its receive buffer was full) and, with
           ``--tracemalloc``, ``traced`` (bytes currently allocated by Python, as
           tracemalloc counts them);
``quit``   exit.

It also exits when stdin closes, so it never outlives the test that started it.  By
default every accepted stream is echoed; with ``--hold`` accepted streams are kept open
and idle (the memory test).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import rtcp

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent


class ServerProcess:
    """The test's side of a running ``rtcp_server_proc.py``."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""
        self.port = 0
        self.pid = 0

    async def _line(self) -> dict:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some()
            if not data:
                raise RuntimeError(f"server process exited ({self.proc.poll()})")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    async def stats(self) -> dict:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"stats\n")
        return await self._line()


@asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[ServerProcess]:
    """Start the server with ``args``; stop it (and wait for it) on exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = await trio.lowlevel.open_process([sys.executable, str(SCRIPT), *args],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            env=env)
    server = ServerProcess(proc)
    try:
        with trio.fail_after(20):
            hello = await server._line()
        server.port, server.pid = hello["port"], hello["pid"]
        yield server
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                assert proc.stdin is not None
                await proc.stdin.send_all(b"quit\n")
                await proc.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await proc.wait()


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _udp_drops(sock: socket.socket) -> int:
    """The kernel's drop counter for ``sock`` (the last column of /proc/net/udp)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    with open(f"/proc/self/net/{name}") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 9 and fields[9] == inode:
                return int(fields[-1])
    raise RuntimeError(f"socket inode {inode} not in /proc/self/net/{name}")


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    config = rtcp.Config(syn_backlog=args.syn_backlog, backlog=args.backlog,
                         connect_timeout=args.connect_timeout)
    [listener] = await rtcp.open_rtcp_listeners(0, host="127.0.0.1", config=config)
    held: list[rtcp.RtcpStream] = []
    stats = {"accepted": 0, "echo_errors": 0}

    async def echo(stream: rtcp.RtcpStream) -> None:
        try:
            async with stream:
                while chunk := await stream.receive_some():
                    await stream.send_all(chunk)
        except trio.BrokenResourceError:
            stats["echo_errors"] += 1

    async with trio.open_nursery() as nursery:
        async def serve() -> None:
            while True:
                stream = await listener.accept()
                stats["accepted"] += 1
                if args.hold:
                    held.append(stream)
                else:
                    nursery.start_soon(echo, stream)

        nursery.start_soon(serve)
        _emit({"port": listener.local_address[1], "pid": os.getpid()})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        while True:
            data = await stdin.receive_some()
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd = line.decode().strip()
                if cmd == "quit":
                    nursery.cancel_scope.cancel()
                    return
                if cmd == "stats":
                    gc.collect()
                    out = dict(listener.stats.as_dict())
                    out.update(stats)
                    out["connections"] = listener.endpoint.connection_count
                    out["held_open"] = sum(1 for s in held if s.state == "ESTABLISHED")
                    out["rss"] = _proc_status("VmRSS")
                    out["hwm"] = _proc_status("VmHWM")
                    out["udp_drops"] = _udp_drops(listener.endpoint.transport.sock)
                    if tracemalloc.is_tracing():
                        out["traced"] = tracemalloc.get_traced_memory()[0]
                    _emit(out)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--syn-backlog", type=int, default=256)
    parser.add_argument("--backlog", type=int, default=128)
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true")
    ns = parser.parse_args()
    if ns.tracemalloc:
        tracemalloc.start()
    trio.run(main, ns)
