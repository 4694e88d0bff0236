"""A hand-driven peer for the hostile tests: it forges segments on a MemoryNetwork.

``RawPeer`` owns one address on a :class:`rtcp.transport.MemoryNetwork` and speaks
rtcp's wire format by hand, so a test can complete a handshake and then send whatever
it likes: absurd options, SACK blocks no honest receiver would send, segments with the
right ports but wrong sequence numbers.  ``inject`` puts a datagram on the network with
any source address at all (the in-memory equivalent of IP spoofing).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from rtcp.segment import Segment, SegmentError, decode, encode
from rtcp.transport import MemoryNetwork

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MASK = 0xFFFFFFFF


def inject(net: MemoryNetwork, data: bytes | Segment, src: tuple, dst: tuple) -> None:
    """Deliver one datagram from ``src`` (any address, bound or not) to ``dst``."""
    if isinstance(data, Segment):
        data = encode(data)
    net._deliver(bytes(data), src, dst)


class RawPeer:
    """One bound address on a MemoryNetwork, driven segment by segment."""

    def __init__(self, net: MemoryNetwork, host: str = "10.0.0.66", port: int = 0) -> None:
        self.net = net
        self.transport = net.transport(host, port)
        self.address: tuple = self.transport.local_address
        self.port: int = self.address[1]
        #: Every segment received so far, with its source address, in order.
        self.received: list[tuple[Segment, tuple]] = []
        self.undecodable = 0
        #: Bytes of UDP payload sent and received by this peer.
        self.bytes_out = 0
        self.bytes_in = 0
        self.dst: tuple | None = None
        self.dst_port = 0
        self.snd_nxt = 0
        self.rcv_nxt = 0

    def send(self, seg: Segment, dst: tuple | None = None) -> None:
        self.send_raw(encode(seg), dst)

    def send_raw(self, data: bytes, dst: tuple | None = None) -> None:
        self.bytes_out += len(data)
        self.transport.send(data, dst or self.dst)

    def drain(self) -> list[Segment]:
        """Decode what has arrived since the last call."""
        new: list[Segment] = []
        for data, src in self.transport.receive_batch(1 << 30):
            self.bytes_in += len(data)
            try:
                seg = decode(data)
            except SegmentError:
                self.undecodable += 1
                continue
            self.received.append((seg, src))
            new.append(seg)
        return new

    async def wait_for(self, pred: Callable[[Segment], bool]) -> Segment:
        """The next segment satisfying ``pred`` (callers bound the wait)."""
        while True:
            for seg in self.drain():
                if pred(seg):
                    return seg
            await self.transport.wait_readable()

    def segment(self, flags: int = ACK, *, seq: int | None = None, ack: int | None = None,
                window: int = 0xFFFF, options: tuple = (), payload: bytes = b"") -> Segment:
        """A segment of this peer's connection, by default in sequence."""
        return Segment(self.port, self.dst_port, (self.snd_nxt if seq is None else seq) & MASK,
                       (self.rcv_nxt if ack is None else ack) & MASK, flags, window, 0,
                       options, payload)

    async def connect(self, dst: tuple, *, iss: int = 1000, window: int = 0xFFFF,
                      options: tuple = ((2, 1460), (3, 7), (4, None)),
                      retry: float = 1.0) -> Segment:
        """Three-way handshake with a listener at ``dst``; returns its SYN-ACK.

        The SYN is sent again every ``retry`` seconds until a SYN-ACK comes.
        """
        self.dst, self.dst_port = dst, dst[1]
        self.snd_nxt = iss
        while True:
            self.send(self.segment(SYN, seq=iss, ack=0, window=window, options=options))
            with trio.move_on_after(retry):
                synack = await self.wait_for(lambda s: s.flags & (SYN | ACK) == SYN | ACK)
                break
        self.snd_nxt = iss + 1
        self.rcv_nxt = (synack.seq + 1) & MASK
        self.send(self.segment(ACK, window=window))
        return synack

    async def receive_stream(self, nbytes: int, *, options: tuple = (),
                             window: int = 0xFFFF) -> bytes:
        """Receive ``nbytes`` of in-order data, ACKing every segment (with ``options``).

        Out-of-order segments are dropped (the sender retransmits them); callers bound
        the wait.
        """
        got = bytearray()
        while len(got) < nbytes:
            for seg in self.drain():
                if seg.payload and seg.seq == self.rcv_nxt:
                    got += seg.payload
                    self.rcv_nxt = (self.rcv_nxt + len(seg.payload)) & MASK
                if seg.payload:
                    self.send(self.segment(ACK, window=window, options=options))
            if len(got) < nbytes:
                await self.transport.wait_readable()
        return bytes(got)


# ------------------------------------------------------------------ hostile datagrams
#: Option kinds no stack knows (unassigned, and the RFC 4727 experimental ones).
UNKNOWN_KINDS = (6, 7, 9, 30, 99, 200, 253, 254)


def absurd_options(rng) -> tuple:
    """Well-formed (encodable, checksummed) options with absurd values."""
    out: list = []
    room = 40
    for _ in range(rng.randrange(1, 5)):
        kind = rng.choice((2, 3, 4, 5, 8, -1))
        if kind == 2:
            opt, size = (2, rng.choice((0, 1, 63, 64, 65535, rng.randrange(65536)))), 4
        elif kind == 3:
            opt, size = (3, rng.choice((0, 14, 15, 31, 255))), 3
        elif kind == 4:
            opt, size = (4, None), 2
        elif kind == 5:
            n = rng.randrange(1, 5)
            blocks = []
            for _ in range(n):
                a = rng.getrandbits(32)
                b = rng.choice(((a + rng.randrange(1, 1 << 20)) & MASK, a, (a - 1) & MASK,
                                rng.getrandbits(32)))
                blocks.append((a, b))
            opt, size = (5, tuple(blocks)), 2 + 8 * n
        elif kind == 8:
            opt, size = (8, (rng.choice((0, MASK, rng.getrandbits(32))),
                             rng.choice((0, MASK, rng.getrandbits(32))))), 10
        else:
            n = rng.randrange(0, 9)
            opt, size = (rng.choice(UNKNOWN_KINDS), rng.randbytes(n)), 2 + n
        if size > room:
            break
        room -= size
        out.append(opt)
    return tuple(out)


def absurd_segment(rng, src_port: int, dst_port: int) -> Segment:
    """A valid segment (it encodes and checksums) with nonsense in it."""
    flags = rng.choice((SYN, SYN, ACK, ACK | PSH, RST, RST | ACK, FIN, SYN | FIN,
                        SYN | RST, SYN | ACK, 0, 0xFF, rng.randrange(256)))
    payload = rng.randbytes(rng.choice((0, 0, 1, rng.randrange(1400))))
    return Segment(src_port, dst_port, rng.getrandbits(32), rng.getrandbits(32), flags,
                   rng.randrange(65536), rng.choice((0, rng.randrange(65536))),
                   absurd_options(rng), payload)


def flip_bits(data: bytes, rng, nbits: int) -> bytes:
    buf = bytearray(data)
    for pos in rng.sample(range(len(buf) * 8), min(nbits, len(buf) * 8)):
        buf[pos // 8] ^= 1 << (pos % 8)
    return bytes(buf)


def hostile_datagram(rng, dst_port: int) -> bytes:
    """One datagram of the hostile mix: random, truncated, corrupted or absurd."""
    kind = rng.random()
    if kind < 0.35:
        return rng.randbytes(rng.choice((0, 1, 19, 20, 21, rng.randrange(1473))))
    valid = encode(absurd_segment(rng, rng.randrange(1, 65536), dst_port))
    if kind < 0.5:
        return valid[:rng.randrange(len(valid))]  # truncated
    if kind < 0.7:
        return flip_bits(valid, rng, rng.randrange(1, 9))  # corrupted
    return valid
