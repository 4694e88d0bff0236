"""The path model behind ``Config(congestion_control="bbr")``.

Loss-based congestion control (Westwood+, NewReno) shrinks the window on every
loss, so on a path that drops packets at random -- radio links, overloaded
middleboxes, the impairment relay -- it spends most of its time far below the
path's capacity (at 5 % loss a recovery starts about every other round trip).
BBR (Cardwell et al., 2016) instead sizes the window from a model of the path:
the largest delivery rate seen over the last few round trips times the smallest
round-trip time, and lets losses only be repaired.  This is the part of BBR
that carries over to a sender without pacing: the rate samples, the max
filter, STARTUP's "has the rate stopped growing?" test, and a window of twice
the bandwidth-delay product.  From BBRv2 it takes a loss ceiling, set far above
random loss: a round that loses more than LOSS_CEILING of what it sent caps the
window (a bottleneck whose queue is shorter than a BDP overflows on every round
at 2 x BDP), and clean rounds lift the cap again.  Not modelled: pacing and
PROBE_RTT (the minimum RTT never expires); it takes more than a fair share from
loss-based flows.  That is why it is opt-in.
"""

from __future__ import annotations

from collections import deque

#: Round trips the max filter of delivery-rate samples spans (BBR: 10).
BW_WINDOW_ROUNDS = 10
#: STARTUP ends after this many round trips without 25 % rate growth (BBR: 3).
FULL_PIPE_ROUNDS = 3
#: The window is this multiple of the bandwidth-delay product (BBR's cwnd_gain).
CWND_GAIN = 2.0
#: A round that loses more than this share of its data caps the window at
#: CEILING_BETA of what it was.  BBRv2 uses 2 %; this mode exists to ride out
#: random loss, so the ceiling sits above the 10 % such paths show.
LOSS_CEILING = 0.2
CEILING_BETA = 0.85


class PathModel:
    """Delivery-rate max filter and pipe-full detection, one sample per round trip."""

    __slots__ = ("_samples", "max_bw", "filled", "_full_bw", "_stalls", "inflight_hi")

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=BW_WINDOW_ROUNDS)
        #: Largest delivery rate (bytes/s) of the last BW_WINDOW_ROUNDS rounds.
        self.max_bw = 0.0
        #: STARTUP is over: the rate stopped growing, so the pipe is full.
        self.filled = False
        self._full_bw = 0.0
        self._stalls = 0
        #: The loss ceiling's cap on the window (bytes), None while no round
        #: has lost more than LOSS_CEILING.
        self.inflight_hi: int | None = None

    def on_round(self, delivered: int, duration: float, lost: int = 0, cwnd: int = 0,
                 mss: int = 1) -> None:
        """One round trip delivered ``delivered`` bytes in ``duration`` seconds
        and resent ``lost`` bytes; ``cwnd`` is the window it ran with."""
        if lost > LOSS_CEILING * (delivered + lost):
            # Too much for random loss: a queue overflows.  End STARTUP too.
            self.inflight_hi = max(int(CEILING_BETA * cwnd), 4 * mss)
            self.filled = True
        elif self.inflight_hi is not None:
            self.inflight_hi += max(mss, self.inflight_hi // 16)  # probe upwards
            if self.inflight_hi > 2 * cwnd:
                self.inflight_hi = None  # far above the window: no longer a cap
        if duration <= 0.0 or delivered <= 0:
            return
        self._samples.append(delivered / duration)
        self.max_bw = max(self._samples)
        if not self.filled:
            if self.max_bw >= 1.25 * self._full_bw:
                self._full_bw = self.max_bw
                self._stalls = 0
            else:
                self._stalls += 1
                self.filled = self._stalls >= FULL_PIPE_ROUNDS

    @property
    def growing(self) -> bool:
        """STARTUP, and the last round's rate still grew by a quarter.

        Slow start without pacing doubles the window every round; holding it
        once the rate stalls keeps STARTUP's overshoot to one doubling.
        """
        return not self.filled and self._stalls == 0

    def window(self, min_rtt: float, mss: int) -> int | None:
        """The model's congestion window, or None while STARTUP still grows it."""
        if not self.filled or min_rtt <= 0.0:
            return None
        window = max(int(CWND_GAIN * self.max_bw * min_rtt), 4 * mss)
        if self.inflight_hi is not None:
            window = max(min(window, self.inflight_hi), 4 * mss)
        return window
