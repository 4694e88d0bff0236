"""Bulk transfers through the impairment relay: nothing is lost, and retransmission did it.

Every test moves several MiB in *both* directions at once through ``rtcp.relay`` on
loopback and compares SHA-256 digests, then checks counters proving that the network
really misbehaved (the relay's stats) and that rtcp repaired it (retransmissions,
duplicate and checksum counters).  All randomness is seeded: the relay's decisions depend
only on its seed and on the order datagrams arrive.

Timing: loopback adds well under 1 ms of round-trip time, and the relay adds the delay
stated in each case (none unless given).  Most cases use ``FAST`` (min_rto 50 ms, initial
RTO 200 ms) so timeouts under heavy loss cost little; ``test_default_config_lossy`` runs
with ``Config()`` unchanged.

The relay listens on its own ephemeral port, as ``open_relay`` is documented to be used:
the client's header destination port is the relay's, not the listener's (SPEC.md: NAT
may change UDP ports but not header ports).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio

import rtcp
from rtcp import Config
from rtcp.relay import Impairment, Relay, open_relay

LOOP = "127.0.0.1"
MiB = 1 << 20

#: Lower timers so that heavy loss costs little wall time (loopback RTT is < 1 ms).
FAST = Config(min_rto=0.05, initial_rto=0.2, close_timeout=5.0)
#: For 20% loss each way: also cap the RTO backoff at 1 s.  Under such loss an ACK of a
#: spurious timer retransmission echoes the original's timestamp, so an RTT sample spans
#: the whole backoff (RFC 7323 RTTM, as in Linux) and the RTO climbs to seconds; with
#: max_rto=60 the same transfer takes about a minute instead of a few seconds.
HEAVY = FAST.replace(max_rto=1.0)


@dataclass
class Path:
    client: rtcp.RtcpStream
    server: rtcp.RtcpStream
    listener: rtcp.RtcpListener
    relay: Relay

    @property
    def client_endpoint_stats(self):
        return self.client._endpoint.stats


@asynccontextmanager
async def relayed(forward: Impairment, backward: Impairment | None = None, *, seed: int,
                  config: Config | None = FAST, client_config: Config | None = None
                  ) -> AsyncIterator[Path]:
    """A connected client/server pair whose every datagram crosses an impairment relay.

    The handshake itself goes through the impaired path too.
    """
    backward = forward if backward is None else backward
    client_config = client_config or config
    [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP, config=config)
    try:
        async with open_relay((LOOP, listener.local_address[1]), forward=forward,
                              backward=backward, seed=seed) as relay:
            async with trio.open_nursery() as n:
                accepted: list[rtcp.RtcpStream] = []

                async def accept() -> None:
                    accepted.append(await listener.accept())

                n.start_soon(accept)
                client = await rtcp.open_rtcp_stream(*relay.listen_address[:2],
                                                     config=client_config)
            path = Path(client, accepted[0], listener, relay)
            try:
                yield path
            finally:
                path.client.abort()
                path.server.abort()
    finally:
        await listener.aclose()


async def _send(stream: rtcp.RtcpStream, data: bytes) -> None:
    view = memoryview(data)
    for i in range(0, len(data), 65536):
        await stream.send_all(view[i:i + 65536])
    await stream.send_eof()


async def _receive(stream: rtcp.RtcpStream, out: dict, key: str) -> None:
    h = hashlib.sha256()
    n = 0
    while chunk := await stream.receive_some():
        h.update(chunk)
        n += len(chunk)
    out[key] = (n, h.hexdigest())


async def exchange(path: Path, size: int, seed: int) -> float:
    """Send ``size`` random bytes each way at once; check both digests; return seconds."""
    up = random.Random(seed).randbytes(size)
    down = random.Random(seed + 1).randbytes(size)
    got: dict = {}
    t0 = time.monotonic()
    async with trio.open_nursery() as n:
        n.start_soon(_send, path.client, up)
        n.start_soon(_send, path.server, down)
        n.start_soon(_receive, path.server, got, "up")
        n.start_soon(_receive, path.client, got, "down")
    elapsed = time.monotonic() - t0
    assert got["up"] == (size, hashlib.sha256(up).hexdigest())
    assert got["down"] == (size, hashlib.sha256(down).hexdigest())
    # Both FINs were exchanged: a graceful close completes.
    with trio.fail_after(10):
        await path.client.aclose()
        await path.server.aclose()
    return elapsed


def report(name: str, path: Path, elapsed: float) -> None:
    c, s = path.client.stats, path.server.stats
    print(f"\n{name}: {elapsed:.2f} s; client rtx {c.segments_retransmitted} "
          f"(fast {c.fast_retransmits}, rto {c.timeouts}), server rtx "
          f"{s.segments_retransmitted} (fast {s.fast_retransmits}, rto {s.timeouts}); "
          f"dup seen c/s {c.duplicate_segments}/{s.duplicate_segments}\n"
          f"{path.relay.stats.summary()}")


# ------------------------------------------------------------------------ random loss
@pytest.mark.parametrize(("loss", "size", "seed", "config"), [
    (0.01, 4 * MiB, 11, FAST),
    (0.05, 4 * MiB, 12, FAST),
    (0.20, 2 * MiB, 13, HEAVY),
], ids=["1%", "5%", "20%"])
async def test_random_loss(loss: float, size: int, seed: int, config: Config) -> None:
    with trio.fail_after(150):
        async with relayed(Impairment(loss=loss), seed=seed, config=config) as path:
            elapsed = await exchange(path, size, seed)
            report(f"loss {loss:.0%}", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.dropped_loss > 0 and bw.dropped_loss > 0
            # Roughly the configured share of datagrams was dropped ...
            for d in (fw, bw):
                assert 0.3 * loss <= d.dropped_loss / d.received <= 2 * loss
            # ... and every one of them was repaired by a retransmission.
            for st in (path.client.stats, path.server.stats):
                assert st.segments_retransmitted > 0
                assert st.bytes_retransmitted > 0
                assert st.fast_retransmits + st.timeouts > 0


async def test_default_config_lossy() -> None:
    # Config() exactly as shipped (min_rto 200 ms, initial RTO 1 s), 1% loss each way.
    with trio.fail_after(150):
        async with relayed(Impairment(loss=0.01), seed=21, config=None) as path:
            assert path.client.stats.rto >= 0.2
            elapsed = await exchange(path, 3 * MiB, 21)
            report("default config, loss 1%", path, elapsed)
            assert path.relay.stats.forward.dropped_loss > 0
            assert path.relay.stats.backward.dropped_loss > 0
            assert path.client.stats.segments_retransmitted > 0
            assert path.server.stats.segments_retransmitted > 0


async def test_bursty_loss() -> None:
    # Gilbert-Elliott: 3% of datagrams lost, in bursts of 4 on average.
    imp = Impairment.bursty(0.03, 4)
    with trio.fail_after(150):
        async with relayed(imp, seed=31) as path:
            elapsed = await exchange(path, 4 * MiB, 31)
            report("bursty loss", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.dropped_burst > 0 and bw.dropped_burst > 0
            assert fw.dropped_loss == bw.dropped_loss == 0
            for st in (path.client.stats, path.server.stats):
                assert st.segments_retransmitted > 0


async def test_duplication() -> None:
    with trio.fail_after(120):
        async with relayed(Impairment(duplicate=0.05), seed=41) as path:
            elapsed = await exchange(path, 4 * MiB, 41)
            report("5% duplication", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.duplicated > 0 and bw.duplicated > 0
            assert fw.dropped == bw.dropped == 0
            # Copies were recognised and discarded, not delivered twice.
            assert path.client.stats.duplicate_segments > 0
            assert path.server.stats.duplicate_segments > 0


async def test_reordering_with_jitter() -> None:
    # 30% of datagrams held back, plus 2 ms +- 2 ms of delay each way.
    imp = Impairment(reorder=0.3, delay=0.002, jitter=0.002)
    with trio.fail_after(120):
        async with relayed(imp, seed=51) as path:
            elapsed = await exchange(path, 4 * MiB, 51)
            report("30% reordering + jitter", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.reordered > 0 and bw.reordered > 0
            assert fw.dropped == bw.dropped == 0
            for st in (path.client.stats, path.server.stats):
                assert st.out_of_order_segments > 0


async def test_corruption() -> None:
    with trio.fail_after(120):
        async with relayed(Impairment(corrupt=0.01), seed=61) as path:
            elapsed = await exchange(path, 4 * MiB, 61)
            report("1% corruption", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.corrupted > 0 and bw.corrupted > 0
            # Every corrupted datagram was caught by the checksum (one flipped bit
            # always changes the Internet checksum) and never delivered ...
            assert path.listener.stats.checksum_failures == fw.corrupted
            assert path.client_endpoint_stats.checksum_failures == bw.corrupted
            # ... and what it carried was retransmitted.
            assert path.client.stats.segments_retransmitted > 0
            assert path.server.stats.segments_retransmitted > 0


async def test_delay_and_rate_limit() -> None:
    # 20 ms each way on a 40 Mbit/s bottleneck with a 64 KiB queue.
    rate = 40e6
    imp = Impairment(delay=0.02, rate=rate, queue_limit=64 * 1024)
    size = 3 * MiB
    with trio.fail_after(120):
        async with relayed(imp, seed=71) as path:
            elapsed = await exchange(path, size, 71)
            report("20 ms + 40 Mbit/s", path, elapsed)
            fw, bw = path.relay.stats.forward, path.relay.stats.backward
            assert fw.delayed > 0 and bw.delayed > 0
            # The link really was the bottleneck, and the delay really was there.
            assert elapsed >= size * 8 / rate
            assert path.client.stats.srtt >= 0.04
            assert path.server.stats.srtt >= 0.04
            # Whatever the queue tail-dropped was retransmitted.
            for d, st in ((fw, path.client.stats), (bw, path.server.stats)):
                if d.dropped_queue:
                    assert st.segments_retransmitted > 0


async def test_all_impairments_combined() -> None:
    imp = Impairment(loss=0.01, burst_enter=0.003, burst_exit=0.3, duplicate=0.05,
                     reorder=0.3, corrupt=0.01, delay=0.005, jitter=0.002, rate=80e6,
                     queue_limit=256 * 1024)
    with trio.fail_after(170):
        async with relayed(imp, seed=81) as path:
            elapsed = await exchange(path, 2 * MiB, 81)
            report("all combined", path, elapsed)
            for d in (path.relay.stats.forward, path.relay.stats.backward):
                assert d.dropped_loss > 0
                assert d.duplicated > 0 and d.reordered > 0 and d.corrupted > 0
                assert d.delayed > 0
            assert path.listener.stats.checksum_failures > 0
            assert path.client_endpoint_stats.checksum_failures > 0
            for st in (path.client.stats, path.server.stats):
                assert st.segments_retransmitted > 0
                assert st.duplicate_segments > 0
                assert st.out_of_order_segments > 0


@pytest.mark.parametrize("max_datagram", [5000, 65507])
async def test_large_datagrams_through_loss_and_reordering(max_datagram: int) -> None:
    """Segments above 4 KiB are views into the sender's buffer chunks (no copy):
    retransmitted, reordered, duplicated and corrupted, every byte still arrives."""
    imp = Impairment(loss=0.05, duplicate=0.02, reorder=0.05, corrupt=0.01, delay=0.001,
                     jitter=0.002)
    cfg = FAST.replace(max_datagram=max_datagram)
    with trio.fail_after(120):
        async with relayed(imp, seed=95, config=cfg) as path:
            elapsed = await exchange(path, 8 * MiB, 95)
            report(f"{max_datagram}-byte datagrams", path, elapsed)
            assert path.client.stats.mss == max_datagram - 32  # header with timestamps
            for st in (path.client.stats, path.server.stats):
                assert st.segments_retransmitted > 0


async def test_concurrent_connections_with_half_closes_through_one_lossy_relay() -> None:
    """Six clients at once through one relay (its demux, and the listener's), each
    sending a different amount, half-closing or not, reading the server's reply."""
    imp = Impairment(loss=0.05, duplicate=0.02, reorder=0.05, delay=0.001, jitter=0.002)
    [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP, config=FAST)
    results: dict[int, bool] = {}

    async def reverse_echo(stream: rtcp.RtcpStream) -> None:
        async with stream:
            head = b""
            while b":" not in head:
                head += await stream.receive_some(1)
            size = int(head[:-1])
            data = bytearray()
            while len(data) < size:
                data += await stream.receive_some()
            await stream.send_all(bytes(reversed(data)))
            await stream.send_eof()
            assert await stream.receive_some() == b""

    async def client(i: int, address: tuple) -> None:
        rng = random.Random(i)
        payload = rng.randbytes((0, 1, 1000, 50_000, 300_000, 70_000)[i])
        async with await rtcp.open_rtcp_stream(*address, config=FAST) as stream:
            await stream.send_all(b"%d:" % len(payload))
            for j in range(0, len(payload), 7000):
                await stream.send_all(payload[j:j + 7000])
            if i % 2:
                await stream.send_eof()  # half-close before reading; the others after
            got = bytearray()
            while chunk := await stream.receive_some():
                got += chunk
            results[i] = bytes(got) == payload[::-1]

    try:
        with trio.fail_after(90):
            async with open_relay((LOOP, listener.local_address[1]), forward=imp,
                                  backward=imp, seed=96) as relay:
                async with trio.open_nursery() as nursery:
                    async def serve() -> None:
                        while True:
                            nursery.start_soon(reverse_echo, await listener.accept())

                    nursery.start_soon(serve)
                    async with trio.open_nursery() as clients:
                        for i in range(6):
                            clients.start_soon(client, i, relay.listen_address[:2])
                    nursery.cancel_scope.cancel()
                assert relay.stats.forward.dropped_loss > 0
    finally:
        await listener.aclose()
    assert results == dict.fromkeys(range(6), True)


# ------------------------------------------------------------------- vanishing peers
async def test_sender_breaks_within_user_timeout_when_peer_vanishes() -> None:
    user_timeout = 2.0
    cfg = FAST.replace(user_timeout=user_timeout)
    with trio.fail_after(60):
        async with relayed(Impairment(), seed=91, config=cfg) as path:
            payload = b"v" * 65536
            for _ in range(16):  # a transfer is under way ...
                await path.client.send_all(payload)
            # ... when the peer vanishes: nothing gets through any more, either way.
            path.relay.forward = path.relay.backward = Impairment(loss=1.0)
            t_cut = trio.current_time()
            with pytest.raises(trio.BrokenResourceError) as info:
                while True:
                    await path.client.send_all(payload)
            elapsed = trio.current_time() - t_cut
            print(f"\nsend_all broke {elapsed:.2f} s after the cut (user_timeout "
                  f"{user_timeout} s), {path.client.stats.timeouts} RTOs")
            assert isinstance(info.value.__cause__, TimeoutError)
            # Progress stopped at the cut: the user timeout ran out user_timeout after
            # the last ACK, which came at most one RTT before the cut.
            assert user_timeout - 0.2 <= elapsed <= user_timeout + 0.5
            assert path.client.stats.timeouts > 0
            assert path.relay.stats.forward.dropped_loss > 0
            # The stream is dead for good, and closing it does not hang.
            with pytest.raises(trio.BrokenResourceError):
                await path.client.receive_some()
            with trio.fail_after(1):
                await path.client.aclose()


async def test_receiver_breaks_within_keepalive_bounds_when_peer_vanishes() -> None:
    idle, interval, count = 0.5, 0.2, 3
    server_cfg = FAST.replace(keepalive_idle=idle, keepalive_interval=interval,
                              keepalive_count=count)
    with trio.fail_after(60):
        async with relayed(Impairment(), seed=92, config=server_cfg,
                           client_config=FAST) as path:
            await path.client.send_all(b"k" * 200_000)
            got = 0
            while got < 200_000:
                got += len(await path.server.receive_some())
            path.relay.forward = path.relay.backward = Impairment(loss=1.0)
            t_cut = trio.current_time()
            with pytest.raises(trio.BrokenResourceError) as info:
                while True:
                    await path.server.receive_some()
            elapsed = trio.current_time() - t_cut
            print(f"\nreceive_some broke {elapsed:.2f} s after the cut "
                  f"(keepalive {idle} + {count} x {interval} s), "
                  f"{path.server.stats.keepalives_sent} probes")
            assert isinstance(info.value.__cause__, TimeoutError)
            bound = idle + count * interval
            assert bound - 0.1 <= elapsed <= bound + 0.5
            assert path.server.stats.keepalives_sent == count
            with trio.fail_after(1):
                await path.server.aclose()


async def test_keepalive_keeps_an_idle_connection_alive() -> None:
    # The control for the test above: with the path intact, probes are answered and
    # an idle connection outlives many keepalive periods.
    cfg = FAST.replace(keepalive_idle=0.2, keepalive_interval=0.1, keepalive_count=2)
    with trio.fail_after(30):
        async with relayed(Impairment(), seed=93, config=cfg) as path:
            await trio.sleep(1.5)
            assert path.server.stats.keepalives_sent >= 3
            assert path.client.stats.keepalives_sent >= 3
            await path.client.send_all(b"still alive")
            assert await path.server.receive_some() == b"still alive"



@pytest.mark.parametrize("scenario", ["close", "multi"])
async def test_stress_scenarios_run(scenario: str) -> None:
    """tests/stress.py runs long seeded sweeps by hand; one seed here keeps it working."""
    from tests import stress

    assert await stress.SCENARIOS[scenario](3)
