"""Memory per connection: 1,000 concurrent idle connections on one listener.

The listener runs in its own process (tests/rtcp_server_proc.py --hold --tracemalloc),
so its figures are not mixed with the 1,000 client endpoints of this process (each
concurrent connection to the same server has its own client UDP socket).  Two figures
are measured, both as the growth from a warmed-up baseline divided by the number of
connections:

* ``traced``: bytes allocated by Python objects (tracemalloc), i.e. what rtcp itself
  keeps per connection: Slot, Connection, buffers, stats, the stream object, timers;
* ``rss``: growth of the server's resident set, which adds allocator overhead.

Documented bound: under 64 KiB per idle connection for both (the measured figures are
printed; see the test output, ``-s``).
"""

from __future__ import annotations

import resource

import trio

import rtcp
from rtcp import Config
from tests.rtcp_server_proc import server_process

LOOP = "127.0.0.1"
N_CONN = 1000
BOUND_PER_CONNECTION = 64 * 1024


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def test_thousand_idle_connections_memory_per_connection() -> None:
    raise_nofile(N_CONN + 512)  # one client socket per concurrent connection
    cfg = Config()
    streams: list[rtcp.RtcpStream] = []
    with trio.fail_after(180):
        async with server_process("--hold", "--tracemalloc", "--backlog", "2048",
                                  "--syn-backlog", "2048") as server:
            port = server.port

            async def open_some(n: int) -> None:
                async def one() -> None:
                    streams.append(await rtcp.open_rtcp_stream(LOOP, port, config=cfg))

                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(one)

            async def settle(expected: int) -> dict:
                while True:
                    st = await server.stats()
                    if st["held_open"] >= expected:
                        return st
                    await trio.sleep(0.05)

            # Warm up: the first connections pay for imports and caches.
            await open_some(20)
            await settle(20)
            await trio.sleep(0.5)
            base = await server.stats()
            for _ in range(N_CONN // 100):
                await open_some(100)
            await settle(20 + N_CONN)
            await trio.sleep(1.0)  # idle: delayed ACKs and handshake timers are done
            after = await server.stats()
            assert after["held_open"] == 20 + N_CONN
            assert after["connections"] == 20 + N_CONN
            assert all(s.state == "ESTABLISHED" for s in streams)
            for s in streams:
                s.abort()
    traced = (after["traced"] - base["traced"]) / N_CONN
    rss = (after["rss"] - base["rss"]) / N_CONN
    print(f"\n{N_CONN} idle connections on one listener: {traced:.0f} B/connection "
          f"traced by tracemalloc, {rss:.0f} B/connection of RSS growth "
          f"(server RSS {base['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MiB)")
    assert 0 < traced < BOUND_PER_CONNECTION
    assert rss < BOUND_PER_CONNECTION
