"""Datagram transports under an :class:`~rtcp.endpoint.Endpoint`.

The endpoint needs four things from the network: wait until datagrams may be
read, read a batch without blocking, send without blocking, and learn which
peer an ICMP error was about.  :class:`UdpTransport` does that over a real
non-blocking UDP socket with the drain pattern (one ``wait_readable``, then
``recvfrom`` until the queue is empty), which costs a fraction of one trio
socket call per datagram.  :class:`MemoryNetwork` does it in memory, so the very
same endpoint runs under ``trio.testing.MockClock`` with autojump.
"""

from __future__ import annotations

import errno
import random
import select
import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import Protocol

import trio

#: Linux socket options that queue ICMP errors with the offending destination.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
#: Errors that mean "nobody listens there" (ICMP port/host unreachable).
UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
RECV_SIZE = 65536
#: Bytes of our datagram an ICMP error quotes on Linux (576 - IP - ICMP - IP - UDP
#: headers); MemoryNetwork truncates its reports the same way.
ICMP_QUOTE = 520
#: Batches shorter than this ask poll() before another recvfrom (UdpTransport._more).
POLL_BATCH = 4
_RECVERR_CMSGS = frozenset({(socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)})
#: Per-datagram local addresses on wildcard sockets (Linux values where the
#: socket module lacks the names): which of our addresses a datagram was sent
#: to, and the source address of a reply.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", None) or (8 if sys.platform == "linux" else None)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", None)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", None)
_PKTINFO_SPACE = socket.CMSG_SPACE(20) if hasattr(socket, "CMSG_SPACE") else 0
#: UDP generic segmentation offload (Linux >= 4.18): one sendmsg, many datagrams.
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000


def route_source(local: tuple, remote: tuple) -> tuple:
    """``local`` with a wildcard host replaced by the source address towards ``remote``.

    A socket bound to ``0.0.0.0`` or ``::`` (every client socket, listeners
    on all addresses) reports that wildcard; what its datagrams really carry,
    like ``getsockname()`` of a connected TCP socket, is the route's source
    address.  Connecting an unbound UDP socket sends nothing: it only asks
    the routing table, for two system calls.  On failure, ``local`` as is.
    """
    if local[0] not in ("0.0.0.0", "::"):
        return local
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(remote)
            host = probe.getsockname()[0]
    except OSError:
        return local
    return (host, *local[1:])


def _pktinfo_addr(anc: list, v4_offset: int) -> str | None:
    """The address in a PKTINFO control message: in_pktinfo's at ``v4_offset``
    (4, ipi_spec_dst: a received datagram's local address, for a broadcast the
    interface's own; 8, ipi_addr) or in6_pktinfo's ipi6_addr.  None for none,
    and for IPv6 link-local (the interface decides) or multicast (no source)."""
    for level, kind, cdata in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 12:
            return socket.inet_ntop(socket.AF_INET, cdata[v4_offset:v4_offset + 4])
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(cdata) >= 16:
            local = socket.inet_ntop(socket.AF_INET6, cdata[:16])
            return None if local.startswith(("fe80:", "ff")) else local
    return None


class DatagramTransport(Protocol):
    """What the endpoint needs from a datagram network."""

    family: int
    local_address: tuple
    #: receive_batch gives (data, address, local host) triples, and send and
    #: send_many take ``source``: a listener bound to a wildcard address must
    #: answer from the address each peer sent to (else a peer that reached a
    #: second address of ours sees replies from a stranger).  The endpoint
    #: turns it on with ``enable_pktinfo()``, if the transport has that method.
    pktinfo: bool

    async def wait_readable(self) -> None: ...

    def receive_batch(self, limit: int) -> list[tuple]:
        """Up to ``limit`` queued datagrams, without blocking: (data, address)
        pairs, or (data, address, local host) triples when ``pktinfo``."""
        ...

    def send(self, data: bytes, address: tuple, source: str | None = None) -> bool:
        """Send one datagram (from local host ``source``, if given); False if it
        would block (the caller retries later)."""
        ...

    def send_many(self, datagrams: list[bytes], address: tuple,
                  source: str | None = None) -> int:
        """Send datagrams in order; return how many went before one would block."""
        ...

    async def wait_writable(self) -> None: ...

    def unreachable(self) -> list[tuple]:
        """Destinations (and our original datagram) that ICMP said are unreachable:
        (address, datagram) pairs, or with ``pktinfo`` (address, datagram, the
        local host it was sent from)."""
        ...

    def close(self) -> None: ...


class UdpTransport:
    """A non-blocking UDP socket, read with the drain pattern."""

    def __init__(self, family: int, local_address: tuple) -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for level, opt in ((socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                if family == socket.AF_INET6 or level == socket.SOL_IP:
                    try:
                        sock.setsockopt(level, opt, 1)
                    except OSError:
                        pass
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                except OSError:
                    pass
            sock.bind(local_address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.family = family
        self.local_address = sock.getsockname()
        self._errors: list[tuple[tuple, bytes]] = []
        self.gso = hasattr(sock, "sendmsg")
        self.pktinfo = False
        #: Whether more datagrams wait, asked while a batch is short: a poll(0)
        #: costs ~1.5k instructions, the recvfrom that would otherwise end the
        #: batch by raising BlockingIOError ~8k; a long batch (a flood, bulk
        #: data) spares the extra system calls and drains to BlockingIOError.
        #: None: no poll() here.
        self._more: Callable[[int], list] | None = None
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            self._more = poller.poll

    def enable_pktinfo(self) -> bool:
        """On a wildcard-bound socket, learn each datagram's local address (a
        listener must answer from the address the client reached); a client
        socket needs none of it: the kernel's source is the one its peer knows.
        Returns whether ``receive_batch`` now gives triples."""
        if self.local_address[0] in ("0.0.0.0", "::") and _PKTINFO_SPACE and not self.pktinfo:
            level, opt = ((socket.IPPROTO_IPV6, IPV6_RECVPKTINFO)
                          if self.family == socket.AF_INET6 else (socket.IPPROTO_IP, IP_PKTINFO))
            if opt is not None:
                try:
                    self.sock.setsockopt(level, opt, 1)
                    self.pktinfo = True
                except OSError:
                    pass  # then replies leave from the route's address, as before
        return self.pktinfo

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.sock)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.sock)

    def receive_batch(self, limit: int) -> list[tuple]:
        out: list[tuple] = []
        recvfrom = self._recv_pktinfo if self.pktinfo else self.sock.recvfrom
        more = self._more
        soft = 0
        while len(out) < limit:
            try:
                out.append(recvfrom(RECV_SIZE))
            except BlockingIOError:
                break
            except OSError as exc:
                # A pending ICMP report (refused, fragmentation needed, ...)
                # concerns one peer and is never fatal to the socket; its
                # details wait in the error queue.
                if exc.errno == errno.EBADF:
                    raise
                self._drain_errors()
                soft += 1
                if soft > limit:
                    break
            else:
                if more is not None and len(out) < POLL_BATCH and not more(0):
                    break
        return out

    def _recv_pktinfo(self, size: int) -> tuple[bytes, tuple, str | None]:
        """One datagram with the local address it reached: in_pktinfo's
        ipi_spec_dst (the header's destination, or for a broadcast the
        interface's own address), or in6_pktinfo's ipi6_addr."""
        data, anc, _flags, addr = self.sock.recvmsg(size, _PKTINFO_SPACE)
        return data, addr, _pktinfo_addr(anc, 4)

    def _source_cmsg(self, source: str) -> tuple[int, int, bytes]:
        """Ancillary data that makes the kernel send from ``source``."""
        if self.family == socket.AF_INET6:
            return (socket.IPPROTO_IPV6, IPV6_PKTINFO,  # type: ignore[return-value]
                    socket.inet_pton(socket.AF_INET6, source) + bytes(4))
        # struct in_pktinfo: ifindex 0, ipi_spec_dst = the source, ipi_addr unused
        return (socket.IPPROTO_IP, IP_PKTINFO,  # type: ignore[return-value]
                bytes(4) + socket.inet_pton(socket.AF_INET, source) + bytes(4))

    def _drain_errors(self) -> None:
        for _ in range(1024):
            try:
                data, _anc, _flags, addr = self.sock.recvmsg(RECV_SIZE, 1024, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # struct sock_extended_err starts with ee_errno: only "port
            # unreachable" means nobody listens; other reports (time exceeded,
            # fragmentation needed) are like loss.
            # Only the IP_RECVERR / IPV6_RECVERR message: a listener's error
            # queue also carries PKTINFO, whose first 4 bytes are an ifindex.
            refused = any(len(cdata) >= 4 and (lvl, typ) in _RECVERR_CMSGS
                          and int.from_bytes(cdata[:4], sys.byteorder) == errno.ECONNREFUSED
                          for lvl, typ, cdata in _anc)
            if addr and refused:
                if self.pktinfo:
                    # Here PKTINFO's address is our datagram's source (checked).
                    self._errors.append((addr, data, _pktinfo_addr(_anc, 8)))
                else:
                    self._errors.append((addr, data))

    def unreachable(self) -> list[tuple]:
        # The error queue is read when recvfrom/sendto report a pending error
        # (the socket's error is set with every queued ICMP report).
        if not self._errors:
            return self._errors
        out, self._errors = self._errors, []
        return out

    def send(self, data: bytes, address: tuple, source: str | None = None) -> bool:
        try:
            if source is None:
                self.sock.sendto(data, address)
            else:
                self.sock.sendmsg([data], [self._source_cmsg(source)], 0, address)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in UNREACHABLE_ERRNOS:
                self._drain_errors()
            # Other send errors (no route, message too long) are like loss:
            # retransmission and the user timeout deal with them.
        return True

    def send_many(self, datagrams: list[bytes], address: tuple,
                  source: str | None = None) -> int:
        """Send in order, coalescing runs of equal-sized datagrams with UDP GSO."""
        n = len(datagrams)
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            if self.gso:
                limit = min(n, i + GSO_MAX_SEGMENTS, i + max(1, GSO_MAX_BYTES // size))
                while j < limit and len(datagrams[j - 1]) == size and \
                        len(datagrams[j]) <= size:
                    j += 1
            if j - i == 1:
                if not self.send(datagrams[i], address, source):
                    return i
                i += 1
                continue
            cmsgs = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little"))]
            if source is not None:
                cmsgs.append(self._source_cmsg(source))
            try:
                self.sock.sendmsg([b"".join(datagrams[i:j])], cmsgs, 0, address)
            except BlockingIOError:
                return i
            except OSError as exc:
                if exc.errno in UNREACHABLE_ERRNOS:
                    self._drain_errors()
                elif exc.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT,
                                   errno.EOPNOTSUPP):
                    self.gso = False  # no GSO on this kernel or path: plain sends
                    continue
            i = j
        return n

    def close(self) -> None:
        self.sock.close()


class MemoryNetwork:
    """A deterministic in-memory datagram network for tests.

    Delivery is instant (or after ``delay`` seconds of trio time) and loss is
    drawn from a seeded RNG, so the same test run makes the same decisions.  A
    datagram to an address nobody bound produces an "unreachable" report, as
    ICMP would.
    """

    def __init__(self, *, loss: float = 0.0, delay: float = 0.0, seed: int = 0,
                 filter: Callable[[bytes, tuple, tuple], bool] | None = None) -> None:
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self.filter = filter
        self._bound: dict[tuple, MemoryTransport] = {}
        self._next_port = 40000

    def transport(self, host: str = "10.0.0.1", port: int = 0) -> MemoryTransport:
        if port == 0:
            self._next_port += 1
            port = self._next_port
        addr = (host, port)
        if addr in self._bound:
            raise OSError(errno.EADDRINUSE, f"address {addr} in use")
        t = MemoryTransport(self, addr)
        self._bound[addr] = t
        return t

    def _deliver(self, data: bytes, src: tuple, dst: tuple) -> None:
        if self.filter is not None and not self.filter(data, src, dst):
            return
        if self.loss and self.rng.random() < self.loss:
            return
        target = self._bound.get(dst)
        if target is None:
            sender = self._bound.get(src)
            if sender is not None:
                # As Linux: ICMP quotes at most 576 bytes in all, so the
                # report holds only the first ICMP_QUOTE bytes of the datagram.
                sender._errors.append((dst, data[:ICMP_QUOTE]))
                sender._wake()
            return
        if self.delay:
            trio.lowlevel.spawn_system_task(self._later, data, src, target)
        else:
            target._inbox.append((data, src))
            target._wake()

    async def _later(self, data: bytes, src: tuple, target: MemoryTransport) -> None:
        await trio.sleep(self.delay)
        target._inbox.append((data, src))
        target._wake()


class MemoryTransport:
    """One bound address on a :class:`MemoryNetwork`."""

    family = socket.AF_INET
    pktinfo = False  # bound to one address: replies leave from it

    def __init__(self, net: MemoryNetwork, address: tuple) -> None:
        self._net = net
        self.local_address = address
        self._inbox: deque[tuple[bytes, tuple]] = deque()
        self._errors: list[tuple[tuple, bytes]] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def _wake(self) -> None:
        self._lot.unpark_all()

    async def wait_readable(self) -> None:
        if self._inbox or self._errors:
            await trio.lowlevel.checkpoint()
            return
        await self._lot.park()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()

    def receive_batch(self, limit: int) -> list[tuple[bytes, tuple]]:
        out = []
        while self._inbox and len(out) < limit:
            out.append(self._inbox.popleft())
        return out

    def send(self, data: bytes, address: tuple, source: str | None = None) -> bool:
        if not self._closed:
            self._net._deliver(bytes(data), self.local_address, address)
        return True

    def send_many(self, datagrams: list[bytes], address: tuple,
                  source: str | None = None) -> int:
        for d in datagrams:
            self.send(d, address)
        return len(datagrams)

    def unreachable(self) -> list[tuple]:
        out, self._errors = self._errors, []
        return out

    def close(self) -> None:
        self._closed = True
        self._net._bound.pop(self.local_address, None)
