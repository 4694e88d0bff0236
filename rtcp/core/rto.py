"""Retransmission timeout estimation (RFC 6298)."""

from __future__ import annotations

#: Clock granularity G of RFC 6298; our clock is float seconds.
CLOCK_GRANULARITY = 0.001


class RttEstimator:
    """SRTT/RTTVAR smoothing with exponential backoff and clamping.

    Kept separate from the connection so its arithmetic is tested on its own
    against the RFC's formulas.
    """

    __slots__ = ("srtt", "rttvar", "latest", "_base_rto", "backoff", "min_rto", "max_rto")

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.srtt = 0.0
        self.rttvar = 0.0
        self.latest = 0.0
        self.min_rto = min_rto
        self.max_rto = max_rto
        rto = initial_rto if initial_rto > min_rto else min_rto  # (comparisons: see sample())
        self._base_rto = rto if rto < max_rto else max_rto
        self.backoff = 0

    @property
    def has_sample(self) -> bool:
        return self.srtt > 0.0

    def sample(self, rtt: float) -> None:
        """Feed one RTT measurement (Karn's rule is the caller's job)."""
        # (Comparisons, not min()/max(): those cost ~700 instructions a call on 3.11.)
        if rtt < CLOCK_GRANULARITY / 2:
            rtt = CLOCK_GRANULARITY / 2
        self.latest = rtt
        if self.srtt == 0.0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        var4 = 4 * self.rttvar
        rto = self.srtt + (var4 if var4 > CLOCK_GRANULARITY else CLOCK_GRANULARITY)
        if rto < self.min_rto:
            rto = self.min_rto
        self._base_rto = rto if rto < self.max_rto else self.max_rto
        self.backoff = 0

    @property
    def rto(self) -> float:
        """The current timeout, including backoff (RFC 6298 5.5)."""
        rto = self._base_rto * (1 << self.backoff)
        return rto if rto < self.max_rto else self.max_rto

    def on_timeout(self) -> None:
        if self._base_rto * (1 << self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_backoff(self) -> None:
        self.backoff = 0

    def restart(self, rto: float) -> None:
        """Start over from ``rto`` (clamped), without a sample and without backoff."""
        self._base_rto = min(max(rto, self.min_rto), self.max_rto)
        self.backoff = 0
