"""Client sockets bound with local_address=: shared like the default client
sockets, free again for the same peer as soon as a connection ends (TIME_WAIT
reused, a reset or refused connection forgotten), happy eyeballs from a bound
port (and see test_streams' happy eyeballs tests), ICMP reports for full-size
segments on real sockets."""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio

import rtcp
from rtcp.endpoint import Endpoint
from rtcp.transport import UdpTransport
from tests.test_streams import connect_and_accept

LOOP = "127.0.0.1"


def free_port(host: str = LOOP, family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def test_refused_connect_from_a_bound_port_may_be_retried_at_once() -> None:
    """Kernel TCP: a refused connect frees its bound port at once.  The pooled
    endpoint closes its socket when its task next runs: the retry waits for it."""
    with trio.fail_after(10):
        ep = Endpoint(UdpTransport(socket.AF_INET, (LOOP, 0)), linger=True)  # RSTs SYNs
        local = (LOOP, free_port())
        with pytest.raises(ConnectionRefusedError):
            await rtcp.open_rtcp_stream(LOOP, ep.local_address[1], local_address=local)
        with pytest.raises(ConnectionRefusedError):  # the same again, not EADDRINUSE
            await rtcp.open_rtcp_stream(LOOP, ep.local_address[1], local_address=local)
        ep.close()


@pytest.mark.parametrize("ending", ["server closes first", "abort"])
async def test_a_bound_port_is_free_again_at_once(ending: str) -> None:
    """The client ends without TIME_WAIT (LAST_ACK -> CLOSED, or an abort): the
    pooled endpoint closes itself, and the port must be free again at once."""
    local = (LOOP, free_port())
    with trio.fail_after(30):
        [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP)
        port = listener.local_address[1]
        for _ in range(3):
            c, s = await connect_and_accept(
                listener, partial(rtcp.open_rtcp_stream, LOOP, port, local_address=local))
            assert c.local_address == local and s.remote_address == local
            if ending == "abort":
                c.abort()
                s.abort()
            else:
                await s.aclose()
                assert await c.receive_some() == b""
                await c.aclose()
        await listener.aclose()


@pytest.mark.parametrize("family,host,wild", [
    (socket.AF_INET, "127.0.0.1", "0.0.0.0"), (socket.AF_INET6, "::1", "::")])
async def test_full_size_writer_to_a_killed_peer_on_loopback(family, host, wild) -> None:
    """1fe4d22 on real sockets: a wildcard (pktinfo) listener's connection."""
    with trio.fail_after(30):
        [listener] = await rtcp.open_rtcp_listeners(0, host=wild)
        port = listener.local_address[1]
        c, s = await connect_and_accept(listener, partial(rtcp.open_rtcp_stream, host, port))
        await c.send_all(b"hi")
        assert await s.receive_some() == b"hi"
        sock = c._endpoint.transport.sock
        trio.lowlevel.notify_closing(sock)
        sock.close()
        t0 = trio.current_time()
        with pytest.raises(trio.BrokenResourceError) as info:
            while True:
                await s.send_all(b"z" * 100_000)
        assert isinstance(info.value.__cause__, ConnectionRefusedError), info.value.__cause__
        assert trio.current_time() - t0 < 5.0
        s.abort()
        await listener.aclose()


async def test_a_cancelled_connect_from_a_bound_port_frees_it_at_once() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOP, 0))  # never reads: no answer, no ICMP
    local = (LOOP, free_port())
    try:
        with trio.fail_after(10):
            [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP)
            with trio.move_on_after(0.2):
                await rtcp.open_rtcp_stream(LOOP, silent.getsockname()[1], local_address=local)
            c, s = await connect_and_accept(listener, partial(
                rtcp.open_rtcp_stream, LOOP, listener.local_address[1], local_address=local))
            assert c.local_address == local and c.state == "ESTABLISHED"
            c.abort()
            s.abort()
            await listener.aclose()
    finally:
        silent.close()


async def test_happy_eyeballs_from_a_bound_port_after_a_refusal(monkeypatch) -> None:
    [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP)
    port = listener.local_address[1]

    async def two(host, port):
        await trio.lowlevel.checkpoint()
        return [(socket.AF_INET, ("127.0.0.2", port)), (socket.AF_INET, (LOOP, port))]

    monkeypatch.setattr(rtcp.stream, "_resolve", two)
    local = (LOOP, free_port())
    with trio.fail_after(10):
        c, s = await connect_and_accept(listener, partial(
            rtcp.open_rtcp_stream, "two.example", port, local_address=local))
        assert c.remote_address == (LOOP, port)
        c.abort()
        s.abort()
    await listener.aclose()


async def test_the_pool_keeps_no_closed_endpoints_of_other_ports() -> None:
    with trio.fail_after(20):
        [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP)
        port = listener.local_address[1]
        for _ in range(20):
            c, s = await connect_and_accept(listener, partial(
                rtcp.open_rtcp_stream, LOOP, port, local_address=(LOOP, free_port())))
            c.abort()
            s.abort()
        await trio.sleep(0.05)
        pool = rtcp.stream._CLIENT_POOL.get()
        closed = sum(1 for eps in pool.values() for e in eps if e._closed)
        await listener.aclose()
    # Swept whenever a socket is made: at most the last one waits (not 20).
    assert closed <= 1 and len(pool) <= 2, f"{closed} closed endpoints, {len(pool)} keys kept"


async def test_ipv6_local_address_as_a_four_tuple() -> None:
    local = ("::1", free_port("::1", socket.AF_INET6), 0, 0)
    with trio.fail_after(10):
        [listener] = await rtcp.open_rtcp_listeners(0, host="::1")
        port = listener.local_address[1]
        for loc in (local, local[:2], local):
            c, s = await connect_and_accept(listener, partial(
                rtcp.open_rtcp_stream, "::1", port, local_address=loc))
            assert c.local_address[:2] == local[:2]
            await c.aclose()  # TIME_WAIT: the socket stays, and is reused
            assert await s.receive_some() == b""
            await s.aclose()
        await listener.aclose()


async def test_a_bound_port_whose_connection_was_reset_may_connect_again() -> None:
    """The peer reset the connection and the old stream object is not closed
    yet (its CLOSED slot stays): a new connect from the same bound port to the
    same peer works, as kernel TCP with SO_REUSEADDR allows (EADDRINUSE before)."""
    local = (LOOP, free_port())
    with trio.fail_after(10):
        [listener] = await rtcp.open_rtcp_listeners(0, host=LOOP)
        port = listener.local_address[1]
        c, s = await connect_and_accept(
            listener, partial(rtcp.open_rtcp_stream, LOOP, port, local_address=local))
        s.abort()  # RST
        with pytest.raises(trio.BrokenResourceError):
            await c.receive_some()
        assert c.state == "CLOSED"
        c2, s2 = await connect_and_accept(
            listener, partial(rtcp.open_rtcp_stream, LOOP, port, local_address=local))
        await c2.send_all(b"again")
        assert await s2.receive_some() == b"again" and s2.remote_address == local
        for x in (c, c2, s2):
            x.abort()
        await listener.aclose()
