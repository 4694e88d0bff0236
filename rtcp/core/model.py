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
at 2 x BDP), and clean rounds lift the cap again.  The minimum RTT is the
model's own and expires, as BBR's does: after MIN_RTT_EXPIRY seconds without a
new minimum, or sooner when every sample of BW_WINDOW_ROUNDS rounds ran
RTT_INFLATION times above it while the rate fell (the path's delay grew: a
route change), the window drops to 4 segments for PROBE_RTT_TIME to measure
the path empty again.
Rounds in which the application, not the window, limited sending only raise
the rate estimate, never lower it.  Not modelled: pacing.  It needs SACK (a
connection without it runs the default, Westwood+), and it takes more than a
fair share from loss-based flows.  That is why it is opt-in.
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
#: Seconds a minimum RTT stands without being seen again (BBR: 10), how long
#: PROBE_RTT holds the window at 4 segments to see it again (BBR: 0.2), and
#: how far above it every sample of BW_WINDOW_ROUNDS rounds must be to expire
#: it early (our own window alone queues at most 1 BDP: 2x).
MIN_RTT_EXPIRY = 10.0
PROBE_RTT_TIME = 0.2
RTT_INFLATION = 2.5
#: ... while the rate stays below this share of the best: a queue of our own
#: raises the delay but not at the cost of the rate.
RATE_DROP = 0.8


class PathModel:
    """Delivery-rate max filter, windowed minimum RTT and pipe-full detection."""

    __slots__ = ("_samples", "max_bw", "filled", "_full_bw", "_stalls", "inflight_hi",
                 "min_rtt", "_min_rtt_at", "_round_min", "_inflated", "_probe_until",
                 "_probe_min")

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
        #: The path's round trip with nothing queued (seconds; 0.0: no sample).
        self.min_rtt = 0.0
        self._min_rtt_at = 0.0
        self._round_min = 0.0  # smallest sample of the current round
        self._inflated = 0  # rounds in a row whose samples all exceeded the inflation
        self._probe_until: float | None = None  # PROBE_RTT runs until then
        self._probe_min = 0.0

    def on_rtt(self, rtt: float, now: float) -> None:
        """One precise RTT sample (microsecond clock, Karn's rule applied)."""
        if self._probe_until is not None:
            if not self._probe_min or rtt < self._probe_min:
                self._probe_min = rtt
            if now >= self._probe_until:
                self._probe_until = None
                self.min_rtt, self._min_rtt_at = self._probe_min, now
                self._inflated = 0
            return
        if not self._round_min or rtt < self._round_min:
            self._round_min = rtt
        if not self.min_rtt or rtt <= self.min_rtt:
            self.min_rtt, self._min_rtt_at = rtt, now
        elif self.filled and now - self._min_rtt_at > MIN_RTT_EXPIRY:
            self._start_probe(now)

    def _start_probe(self, now: float) -> None:
        self._probe_until = now + max(PROBE_RTT_TIME, self.min_rtt)
        self._probe_min = 0.0

    @property
    def probing_rtt(self) -> bool:
        """PROBE_RTT: the window is 4 segments until a fresh minimum is seen."""
        return self._probe_until is not None

    def on_round(self, delivered: int, duration: float, lost: int = 0, cwnd: int = 0,
                 mss: int = 1, app_limited: bool = False, now: float = 0.0) -> None:
        """One round trip delivered ``delivered`` bytes in ``duration`` seconds
        and resent ``lost`` bytes; ``cwnd`` is the window it ran with, and
        ``app_limited`` says the application left it unfilled at some point."""
        if lost > LOSS_CEILING * (delivered + lost):
            # Too much for random loss: a queue overflows.  End STARTUP too.
            self.inflight_hi = max(int(CEILING_BETA * cwnd), 4 * mss)
            self.filled = True
        elif self.inflight_hi is not None:
            self.inflight_hi += max(mss, self.inflight_hi // 16)  # probe upwards
            if self.inflight_hi > 2 * cwnd:
                self.inflight_hi = None  # far above the window: no longer a cap
        sample = delivered / duration if duration > 0.0 and delivered > 0 else 0.0
        if self._round_min and self.min_rtt and self._probe_until is None:
            # A longer path, not our own queue: the delay grew and the rate
            # fell with it (our queue raises the delay at the same rate).
            if (self._round_min > RTT_INFLATION * self.min_rtt and not app_limited
                    and sample < RATE_DROP * self.max_bw):
                self._inflated += 1
                if self.filled and self._inflated >= BW_WINDOW_ROUNDS:
                    self._start_probe(now)
            else:
                self._inflated = 0
        self._round_min = 0.0
        if not sample:
            return
        if app_limited and sample < self.max_bw:
            return  # says what the application offered, not what the path carries
        self._samples.append(sample)
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

    def window(self, mss: int) -> int | None:
        """The model's congestion window, or None while STARTUP still grows it."""
        if self._probe_until is not None:
            return 4 * mss
        if not self.filled or self.min_rtt <= 0.0:
            return None
        window = max(int(CWND_GAIN * self.max_bw * self.min_rtt), 4 * mss)
        if self.inflight_hi is not None:
            window = max(min(window, self.inflight_hi), 4 * mss)
        return window
