"""Per-connection counters and estimators (SPEC.md ``rtcp.ConnectionStats``)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class ConnectionStats:
    """What a connection has done so far; kept by the sans-I/O core.

    Times are in seconds, sizes in bytes.  ``srtt`` is 0.0 until the first RTT
    sample.  The trio layer hands out the live object as ``stream.stats``.
    """

    #: Smoothed round-trip time and its variation (RFC 6298).
    srtt: float = 0.0
    rttvar: float = 0.0
    #: Current retransmission timeout, backoff included.
    rto: float = 1.0
    #: Congestion window and slow-start threshold.
    cwnd: int = 0
    ssthresh: int = 0
    #: Peer's advertised window (bytes, scaled) and our advertised window.
    send_window: int = 0
    receive_window: int = 0
    #: Payload bytes per full segment, after options (set by the handshake).
    mss: int = 0
    #: Application bytes sent (first transmissions) and delivered to the reader.
    bytes_sent: int = 0
    bytes_received: int = 0
    #: Payload bytes sent again, for any reason.
    bytes_retransmitted: int = 0
    #: Segments put on / taken off the wire, every kind counted.
    segments_sent: int = 0
    segments_received: int = 0
    segments_retransmitted: int = 0
    #: Segments that carried only data we already had.
    duplicate_segments: int = 0
    #: Segments that arrived ahead of a hole (held for reassembly).
    out_of_order_segments: int = 0
    #: Loss repairs: by duplicate ACKs/SACK, by tail loss probe, by RTO expiry.
    fast_retransmits: int = 0
    tail_loss_probes: int = 0
    timeouts: int = 0
    #: Recovery episodes entered on SACK information.
    sack_recoveries: int = 0
    #: RFC 5961 challenge ACKs sent to doubtful RST/SYN/ACK segments.
    challenge_acks_sent: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    #: Segments discarded (out of window, PAWS, reassembly full, ...).
    dropped_segments: int = 0
    #: Zero-window probes and keepalive (or liveness) probes sent.
    window_probes: int = 0
    keepalives_sent: int = 0
    #: The congestion control in effect: Config.congestion_control, except
    #: "westwood" for a "bbr" connection whose peer did not agree to SACK.
    congestion_control: str = ""
    #: Reordering was seen (an original segment arrived after later data):
    #: loss is now declared by time only (RFC 8985), not by DupThresh.
    reordering_seen: bool = False

    def as_dict(self) -> dict[str, float | int | str | bool]:
        """The counters as a plain dict (for JSON and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
