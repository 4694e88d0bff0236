"""The BBR path model (``Config(congestion_control="bbr")``), alone and on a simulated link."""

from __future__ import annotations

import random

import pytest

from rtcp.config import Config
from rtcp.core.model import BW_WINDOW_ROUNDS, CEILING_BETA, PathModel
from tests.simlink import LinkProfile, Pair

MSS = 1000


def test_startup_ends_after_three_rounds_without_a_quarter_more_rate() -> None:
    m = PathModel()
    for bw in (1e6, 2e6, 4e6):
        m.on_round(int(bw * 0.01), 0.01)
        assert m.growing and m.window(0.01, MSS) is None
    m.on_round(int(4.5e6 * 0.01), 0.01)  # +12 %: a stall
    assert not m.growing and not m.filled
    m.on_round(int(4.9e6 * 0.01), 0.01)  # +22 % over the last growth: a stall too
    m.on_round(int(4.0e6 * 0.01), 0.01)
    assert m.filled
    # Twice the bandwidth-delay product of the best round.
    assert m.window(0.01, MSS) == pytest.approx(2 * 4.9e6 * 0.01, rel=1e-6)


def test_max_filter_forgets_after_its_window_and_floors_at_four_segments() -> None:
    m = PathModel()
    m.on_round(100_000, 0.01)  # 10 MB/s
    for _ in range(3):
        m.on_round(1_000, 0.01)
    assert m.filled and m.max_bw == pytest.approx(1e7)
    for _ in range(BW_WINDOW_ROUNDS):
        m.on_round(1_000, 0.01)  # 100 kB/s for a whole window
    assert m.max_bw == pytest.approx(1e5)
    assert m.window(0.001, MSS) == 4 * MSS
    m.on_round(0, 0.01)  # nothing delivered: not a sample
    m.on_round(5_000, 0.0)
    assert m.max_bw == pytest.approx(1e5)


def test_a_lossy_round_caps_the_window_and_clean_rounds_lift_the_cap() -> None:
    m = PathModel()
    for bw in (1e6, 2e6, 4e6, 4e6, 4e6, 4e6):
        m.on_round(int(bw * 0.01), 0.01)
    assert m.window(0.01, MSS) == 80_000
    m.on_round(9_000, 0.01, lost=1_000, cwnd=80_000, mss=MSS)  # 10 %: random loss
    assert m.inflight_hi is None and m.window(0.01, MSS) == 80_000
    m.on_round(7_000, 0.01, lost=3_000, cwnd=80_000, mss=MSS)  # 30 %: an overflow
    assert m.inflight_hi == int(CEILING_BETA * 80_000) == m.window(0.01, MSS)
    m.on_round(40_000, 0.01, cwnd=68_000, mss=MSS)
    assert m.window(0.01, MSS) == 68_000 + 68_000 // 16
    for _ in range(30):
        m.on_round(40_000, 0.01, cwnd=80_000, mss=MSS)
    assert m.inflight_hi is None and m.window(0.01, MSS) == 80_000


def test_loss_ceiling_ends_startup() -> None:
    m = PathModel()
    m.on_round(10_000, 0.01)
    m.on_round(14_000, 0.01, lost=6_000, cwnd=40_000, mss=MSS)
    assert m.filled and m.window(0.1, MSS) == int(CEILING_BETA * 40_000)


def _goodput(cc: str, loss: float, queue: int = 200_000) -> tuple[float, Pair]:
    cfg = Config(congestion_control=cc, send_buffer=1 << 21, receive_buffer=1 << 21)
    link = LinkProfile(loss=loss, delay=0.005, rate=10e6, queue=queue)
    p = Pair(config_a=cfg, config_b=cfg, profile=link, seed=1)
    p.handshake()
    data = random.Random(1).randbytes(3_000_000)
    t0 = p.now
    got, _ = p.transfer(data, b"", close=False)
    assert got == data
    return len(data) / (p.now - t0), p


def test_bbr_keeps_its_rate_under_random_loss_where_westwood_cannot() -> None:
    # A 10 MB/s bottleneck, 10 ms round trip, 200 kB queue (virtual time, so
    # the figures are exact and repeatable).  At 5 % random loss a recovery
    # starts about every other round trip: loss-based control keeps cutting,
    # the model keeps the window at twice the path's BDP.
    bbr_clean, _ = _goodput("bbr", 0.0)
    bbr_lossy, p = _goodput("bbr", 0.05)
    westwood_lossy, _ = _goodput("westwood", 0.05)
    assert bbr_clean > 7e6  # the bottleneck is 10 MB/s; start-up costs the rest
    assert bbr_lossy > 0.8 * bbr_clean
    assert westwood_lossy < 0.3 * bbr_clean
    # Losses are repaired, not resent twice, and the window stays near 2 x BDP.
    assert p.a.stats.timeouts == 0
    assert p.b.stats.duplicate_segments <= 0.1 * p.a.stats.segments_retransmitted
    assert p.a.cwnd <= 2.5 * 10e6 * 0.010


def test_bbr_on_a_shallow_buffer_does_not_resend_everything() -> None:
    # A queue of a fifth of the BDP: 2 x BDP overflows it on every round.  The
    # loss ceiling caps the window near what the path holds (without it: 4.8
    # MB/s, and as many segments resent as sent).
    rate, p = _goodput("bbr", 0.0, queue=20_000)
    assert rate > 7.5e6
    assert p.a.stats.segments_retransmitted < 0.25 * 3_000_000 / p.a._payload_room()


def test_bbr_after_an_rto_grows_back_to_the_model() -> None:
    cfg = Config(congestion_control="bbr", min_rto=0.05, initial_rto=0.2)
    link = LinkProfile(delay=0.005, rate=10e6, queue=200_000)
    p = Pair(config_a=cfg, config_b=cfg, profile=link, seed=2)
    p.handshake()
    p.transfer(random.Random(2).randbytes(2_000_000), b"", close=False)
    window = p.a.cwnd
    assert p.a._model.filled
    p.drop = lambda src, seg: src != "A>B"  # a blackout: every data segment is lost
    p.a.send(b"x" * 50_000, p.now)
    p.run(lambda: p.a.stats.timeouts >= 1, max_time=p.now + 5)
    assert p.a.cwnd <= 2 * p.a._payload_room()
    p.drop = None
    p.run(lambda: p.a.snd_una == p.a.snd_nxt)
    while p.b.readable:
        p.b.receive(1 << 20, p.now)
    data = random.Random(3).randbytes(1_000_000)
    got, _ = p.transfer(data, b"", close=False)
    assert got == data
    assert p.a.cwnd >= 0.5 * window
