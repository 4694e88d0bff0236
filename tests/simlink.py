"""A seeded, virtual-time link between two sans-I/O connections.

Segments cross the link through the real codec (encode, then decode), so the
core is exercised with exactly what would go on the wire.  Loss, duplication,
reordering and delay are drawn from one ``random.Random(seed)``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from rtcp.config import Config
from rtcp.core.connection import Connection
from rtcp.segment import Segment, decode, encode


@dataclass
class LinkProfile:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.01
    jitter: float = 0.0
    #: A bottleneck: bytes per second each way (None: unlimited), with a
    #: drop-tail queue of ``queue`` bytes in front of it.
    rate: float | None = None
    queue: int = 1 << 20


@dataclass
class Pair:
    """Two connections, A (port 1000) and B (port 2000), on a simulated link."""

    config_a: Config = field(default_factory=Config)
    config_b: Config = field(default_factory=Config)
    profile: LinkProfile = field(default_factory=LinkProfile)
    seed: int = 0
    iss_a: int = 1000
    iss_b: int = 5000
    now: float = 0.0
    #: Every segment put on the wire: (time, "A>B" or "B>A", Segment).
    log: list = field(default_factory=list)
    #: Optional filter: return False to drop a segment (deterministic loss).
    drop: object = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.a = Connection(self.config_a, 1000, 2000, iss=self.iss_a, now=self.now, ts_offset=0)
        self.b = Connection(self.config_b, 2000, 1000, iss=self.iss_b, now=self.now, ts_offset=0)
        self._heap: list = []
        self._n = 0
        self._link_free = {"A>B": 0.0, "B>A": 0.0}
        #: Segments the bottleneck queue dropped (full), per direction.
        self.queue_drops = {"A>B": 0, "B>A": 0}
        self.events_a: list = []
        self.events_b: list = []

    # --- moving segments -------------------------------------------------
    def _transmit(self, src: str, segs: list[Segment]) -> None:
        p = self.profile
        for seg in segs:
            self.log.append((self.now, src, seg))
            if self.drop is not None and not self.drop(src, seg):  # type: ignore[operator]
                continue
            if self.rng.random() < p.loss:
                continue
            wire = encode(seg)
            start = self.now
            if p.rate is not None:
                free = max(self._link_free[src], self.now)
                if (free - self.now) * p.rate > p.queue:
                    self.queue_drops[src] += 1
                    continue
                start = self._link_free[src] = free + len(wire) / p.rate
            copies = 2 if self.rng.random() < p.duplicate else 1
            for _ in range(copies):
                delay = p.delay + self.rng.random() * p.jitter
                if self.rng.random() < p.reorder:
                    delay += p.delay * 2 + self.rng.random() * p.delay
                self._n += 1
                heapq.heappush(self._heap, (start + delay, self._n, src, wire))

    def flush(self) -> None:
        """Collect what both connections want to send and their events."""
        for _ in range(100):
            sa = self.a.segments_to_send(self.now)
            sb = self.b.segments_to_send(self.now)
            self.events_a += self.a.events()
            self.events_b += self.b.events()
            if not sa and not sb:
                return
            self._transmit("A>B", sa)
            self._transmit("B>A", sb)

    def step(self) -> bool:
        """Advance to the next delivery or timer; False when nothing is left."""
        self.flush()
        candidates = []
        if self._heap:
            candidates.append(self._heap[0][0])
        for c in (self.a, self.b):
            t = c.timer()
            if t is not None:
                candidates.append(t)
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        while self._heap and self._heap[0][0] <= self.now:
            _, _, src, data = heapq.heappop(self._heap)
            dst = self.b if src == "A>B" else self.a
            dst.handle_segment(decode(data), self.now)
        for c in (self.a, self.b):
            t = c.timer()
            if t is not None and t <= self.now:
                c.handle_timer(self.now)
        self.flush()
        return True

    def run(self, until, max_time: float = 600.0, max_steps: int = 2_000_000) -> None:
        """Step until ``until()`` is true; fail loudly rather than hang."""
        for _ in range(max_steps):
            if until():
                return
            if self.now > max_time:
                raise AssertionError(f"condition not reached by t={self.now}")
            if not self.step():
                if until():
                    return
                raise AssertionError(f"link went idle at t={self.now} without the condition")
        raise AssertionError("too many steps")

    def handshake(self) -> None:
        self.a.connect(self.now)
        self.b.listen()
        self.run(lambda: self.a.state == "ESTABLISHED" and self.b.state == "ESTABLISHED")

    def transfer(self, data_ab: bytes, data_ba: bytes = b"", close: bool = True,
                 max_time: float = 600.0) -> tuple[bytes, bytes]:
        """Send both ways, reading as data arrives; optionally close both ends."""
        got_b, got_a = bytearray(), bytearray()
        pos = {"a": 0, "b": 0}
        shut = {"a": False, "b": False}

        def pump() -> bool:
            for name, conn, data, got, peer_got in (
                    ("a", self.a, data_ab, got_a, None), ("b", self.b, data_ba, got_b, None)):
                del peer_got
                if conn.can_send and pos[name] < len(data):
                    pos[name] += conn.send(data[pos[name]:pos[name] + 65536], self.now)
                if close and not shut[name] and pos[name] == len(data) and conn.can_send:
                    conn.shutdown(self.now)
                    shut[name] = True
                while conn.readable:
                    got.extend(conn.receive(1 << 20, self.now))
            done = len(got_b) == len(data_ab) and len(got_a) == len(data_ba)
            if close:
                return done and self.a.state in ("CLOSED", "TIME_WAIT") and \
                    self.b.state in ("CLOSED", "TIME_WAIT")
            return done

        self.run(pump, max_time=max_time)
        return bytes(got_b), bytes(got_a)
