"""The classic TCP diagrams, replayed against the sans-I/O core in virtual time."""

from __future__ import annotations

from rtcp.config import Config
from rtcp.core import events as ev
from rtcp.core.connection import ACK, FIN, RST, SYN, Connection
from rtcp.segment import Segment
from tests.simlink import Pair

J, K = 1000, 5000


def flags_of(seg: Segment) -> str:
    names = [n for bit, n in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (ACK, "ACK"))
             if seg.flags & bit]
    return ",".join(names)


def deliver(src: Connection, dst: Connection, now: float) -> list[Segment]:
    segs = src.segments_to_send(now)
    for s in segs:
        dst.handle_segment(s, now)
    return segs


def test_three_way_handshake_transcript() -> None:
    a = Connection(Config(), 1000, 2000, iss=J, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=K, now=0.0)
    b.listen()
    assert (a.state, b.state) == ("CLOSED", "LISTEN")
    a.connect(0.0)
    assert a.state == "SYN_SENT"
    [syn] = deliver(a, b, 0.01)
    assert (flags_of(syn), syn.seq) == ("SYN", J)
    assert b.state == "SYN_RECEIVED"
    [synack] = deliver(b, a, 0.02)
    assert (flags_of(synack), synack.seq, synack.ack) == ("SYN,ACK", K, J + 1)
    assert a.state == "ESTABLISHED"
    [ack] = deliver(a, b, 0.03)
    assert (flags_of(ack), ack.seq, ack.ack) == ("ACK", J + 1, K + 1)
    assert b.state == "ESTABLISHED"
    assert any(isinstance(e, ev.Connected) for e in a.events())
    assert any(isinstance(e, ev.Connected) for e in b.events())
    # Options negotiated in the handshake.
    opts = dict(syn.options)
    assert opts[2] == Config().max_datagram - 20 and 4 in opts and 3 in opts and 8 in opts


def established_pair(config: Config | None = None) -> tuple[Connection, Connection]:
    cfg = config or Config()
    a = Connection(cfg, 1000, 2000, iss=J, now=0.0)
    b = Connection(cfg, 2000, 1000, iss=K, now=0.0)
    b.listen()
    a.connect(0.0)
    deliver(a, b, 0.0)
    deliver(b, a, 0.0)
    deliver(a, b, 0.0)
    assert a.state == b.state == "ESTABLISHED"
    a.events()
    b.events()
    return a, b


def test_four_way_close_transcript() -> None:
    cfg = Config(msl=5.0)
    a, b = established_pair(cfg)
    a.shutdown(1.0)
    assert a.state == "FIN_WAIT_1"
    [fin] = deliver(a, b, 1.0)
    assert flags_of(fin) == "FIN,ACK" and fin.seq == J + 1
    assert b.state == "CLOSE_WAIT"
    assert any(isinstance(e, ev.EofReceived) for e in b.events())
    [ack] = deliver(b, a, 1.0)
    assert flags_of(ack) == "ACK" and ack.ack == fin.seq + 1
    assert a.state == "FIN_WAIT_2"
    b.shutdown(2.0)
    assert b.state == "LAST_ACK"
    [fin_b] = deliver(b, a, 2.0)
    assert flags_of(fin_b) == "FIN,ACK" and fin_b.seq == K + 1
    assert a.state == "TIME_WAIT"
    [last] = deliver(a, b, 2.0)
    assert flags_of(last) == "ACK" and last.ack == fin_b.seq + 1
    assert b.state == "CLOSED"
    # TIME_WAIT lasts exactly 2 * MSL.
    assert a.timer() == 2.0 + 2 * 5.0
    a.handle_timer(11.9)
    assert a.state == "TIME_WAIT"
    a.handle_timer(12.0)
    assert a.state == "CLOSED"


def test_simultaneous_open() -> None:
    a = Connection(Config(), 1000, 2000, iss=J, now=0.0)
    b = Connection(Config(), 2000, 1000, iss=K, now=0.0)
    a.connect(0.0)
    b.connect(0.0)
    [syn_a] = a.segments_to_send(0.0)
    [syn_b] = b.segments_to_send(0.0)
    assert flags_of(syn_a) == flags_of(syn_b) == "SYN"
    a.handle_segment(syn_b, 0.01)
    b.handle_segment(syn_a, 0.01)
    assert a.state == b.state == "SYN_RECEIVED"
    [sa_a] = a.segments_to_send(0.01)
    [sa_b] = b.segments_to_send(0.01)
    assert (flags_of(sa_a), sa_a.seq, sa_a.ack) == ("SYN,ACK", J, K + 1)
    assert (flags_of(sa_b), sa_b.seq, sa_b.ack) == ("SYN,ACK", K, J + 1)
    a.handle_segment(sa_b, 0.02)
    b.handle_segment(sa_a, 0.02)
    assert a.state == b.state == "ESTABLISHED"
    # Data flows both ways afterwards.
    a.send(b"ping", 0.03)
    b.send(b"pong", 0.03)
    deliver(a, b, 0.03)
    deliver(b, a, 0.03)
    assert a.receive(10, 0.04) == b"pong" and b.receive(10, 0.04) == b"ping"


def test_simultaneous_close() -> None:
    a, b = established_pair(Config(msl=1.0))
    a.shutdown(1.0)
    b.shutdown(1.0)
    [fa] = a.segments_to_send(1.0)
    [fb] = b.segments_to_send(1.0)
    assert flags_of(fa) == flags_of(fb) == "FIN,ACK"
    a.handle_segment(fb, 1.1)
    b.handle_segment(fa, 1.1)
    assert a.state == b.state == "CLOSING"
    [aa] = a.segments_to_send(1.1)
    [ab] = b.segments_to_send(1.1)
    assert aa.ack == fb.seq + 1 and ab.ack == fa.seq + 1
    a.handle_segment(ab, 1.2)
    b.handle_segment(aa, 1.2)
    assert a.state == b.state == "TIME_WAIT"
    a.handle_timer(3.2)
    b.handle_timer(3.2)
    assert a.state == b.state == "CLOSED"


def test_half_close_keeps_other_direction() -> None:
    p = Pair()
    p.handshake()
    p.a.shutdown(p.now)
    p.run(lambda: p.b.state == "CLOSE_WAIT" and p.a.state == "FIN_WAIT_2")
    data = bytes(range(256)) * 400
    sent = 0
    got = bytearray()

    def pump() -> bool:
        nonlocal sent
        if sent < len(data):
            sent += p.b.send(data[sent:], p.now)
        while p.a.readable:
            got.extend(p.a.receive(1 << 20, p.now))
        return bytes(got) == data

    p.run(pump)
    assert bytes(got) == data  # the half-closed side still received everything
    assert p.a.eof_received is False and p.b.eof_received is True
    p.b.shutdown(p.now)
    p.run(lambda: p.a.state == "TIME_WAIT" and p.b.state == "CLOSED")
    assert p.a.eof_received is True


def test_lost_syn_retransmitted_after_1s_then_2s() -> None:
    a = Connection(Config(), 1000, 2000, iss=J, now=0.0)
    a.connect(0.0)
    assert len(a.segments_to_send(0.0)) == 1
    assert a.timer() == 1.0
    a.handle_timer(1.0)
    [syn2] = a.segments_to_send(1.0)
    assert syn2.flags == SYN and syn2.seq == J
    assert a.timer() == 3.0
    a.handle_timer(3.0)
    assert len(a.segments_to_send(3.0)) == 1
    assert a.timer() == 7.0
    assert a.stats.timeouts == 2 and a.stats.segments_retransmitted == 2


def test_connect_timeout() -> None:
    a = Connection(Config(connect_timeout=5.0), 1000, 2000, iss=J, now=0.0)
    a.connect(0.0)
    t = 0.0
    while a.state != "CLOSED":
        t = a.timer()
        assert t is not None and t <= 5.0
        a.handle_timer(t)
        a.segments_to_send(t)
    assert t == 5.0
    assert any(isinstance(e, ev.ConnectionTimedOut) for e in a.events())


def established_after_lost_syn(cfg: Config) -> tuple[Connection, Connection]:
    """A's first SYN is lost; the retransmission (t=1) is answered at t=1.05."""
    a = Connection(cfg, 1000, 2000, iss=J, now=0.0)
    b = Connection(cfg, 2000, 1000, iss=K, now=0.0)
    b.listen()
    a.connect(0.0)
    a.segments_to_send(0.0)  # first SYN lost
    a.handle_timer(1.0)
    deliver(a, b, 1.0)
    deliver(b, a, 1.05)
    assert a.state == "ESTABLISHED"
    return a, b


def test_karn_no_sample_from_retransmitted_syn() -> None:
    a, b = established_after_lost_syn(Config(timestamps=False))
    assert a.stats.srtt == 0.0  # ambiguous: no sample (Karn)
    # A clean exchange afterwards does give a sample.
    deliver(a, b, 1.05)
    a.send(b"x" * 100, 2.0)
    deliver(a, b, 2.0)
    b.handle_timer(2.5)  # delayed ACK fires
    deliver(b, a, 2.1)
    assert abs(a.stats.srtt - 0.1) < 1e-9


def test_rto_restarts_at_3s_after_a_syn_timeout_without_sample() -> None:
    """RFC 6298 5.7: a SYN timed out and Karn left no sample, so the first data
    gets a 3 s RTO, not the backed-off handshake value nor the 1 s guess."""
    cfg = Config(timestamps=False)
    a, _ = established_after_lost_syn(cfg)
    assert a.stats.srtt == 0.0
    a.send(b"x" * 100, 2.0)
    [data] = a.segments_to_send(2.0)  # lost
    assert data.payload and a.timer() == 5.0 and a.stats.rto == 3.0
    # With a sample from the handshake the RTO comes from it as usual.
    c, _ = established_pair(cfg)
    assert c.stats.srtt > 0 and c.stats.rto == cfg.min_rto


def test_timestamps_give_sample_despite_retransmission() -> None:
    a = Connection(Config(), 1000, 2000, iss=J, now=0.0, ts_offset=0)
    b = Connection(Config(), 2000, 1000, iss=K, now=0.0, ts_offset=0)
    b.listen()
    a.connect(0.0)
    a.segments_to_send(0.0)  # lost
    a.handle_timer(1.0)
    deliver(a, b, 1.0)
    deliver(b, a, 1.25)
    assert a.state == "ESTABLISHED"
    # The SYN-ACK echoes the retransmitted SYN's timestamp (1000 ms): 250 ms.
    assert abs(a.stats.srtt - 0.25) < 1e-9
    assert abs(a.stats.rto - max(0.2, 0.25 + 4 * 0.125)) < 1e-9
