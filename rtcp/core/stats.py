"""Per-connection counters and estimators (SPEC.md ``rtcp.ConnectionStats``)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class ConnectionStats:
    """What a connection has done so far; kept by the sans-I/O core.

    Times are in seconds, sizes in bytes.  ``srtt`` is 0.0 until the first RTT
    sample.  The trio layer hands out the live object as ``stream.stats``.
    """

    srtt: float = 0.0
    rttvar: float = 0.0
    rto: float = 1.0
    cwnd: int = 0
    ssthresh: int = 0
    #: Peer's advertised window (bytes, scaled) and our advertised window.
    send_window: int = 0
    receive_window: int = 0
    mss: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    bytes_retransmitted: int = 0
    segments_sent: int = 0
    segments_received: int = 0
    segments_retransmitted: int = 0
    duplicate_segments: int = 0
    out_of_order_segments: int = 0
    fast_retransmits: int = 0
    tail_loss_probes: int = 0
    timeouts: int = 0
    sack_recoveries: int = 0
    challenge_acks_sent: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    dropped_segments: int = 0
    window_probes: int = 0
    keepalives_sent: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """The counters as a plain dict (for JSON and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
