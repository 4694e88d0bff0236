"""The BBR path model (``Config(congestion_control="bbr")``), alone and on a simulated link."""

from __future__ import annotations

import random

import pytest

from rtcp.config import Config
from rtcp.core.model import (
    BW_WINDOW_ROUNDS,
    CEILING_BETA,
    MIN_RTT_EXPIRY,
    PROBE_RTT_TIME,
    PathModel,
)
from tests.simlink import LinkProfile, Pair

MSS = 1000


def _model(min_rtt: float) -> PathModel:
    m = PathModel()
    m.on_rtt(min_rtt, 0.0)
    return m


def test_startup_ends_after_three_rounds_without_a_quarter_more_rate() -> None:
    m = _model(0.01)
    for bw in (1e6, 2e6, 4e6):
        m.on_round(int(bw * 0.01), 0.01)
        assert m.growing and m.window(MSS) is None
    m.on_round(int(4.5e6 * 0.01), 0.01)  # +12 %: a stall
    assert not m.growing and not m.filled
    m.on_round(int(4.9e6 * 0.01), 0.01)  # +22 % over the last growth: a stall too
    m.on_round(int(4.0e6 * 0.01), 0.01)
    assert m.filled
    # Twice the bandwidth-delay product of the best round.
    assert m.window(MSS) == pytest.approx(2 * 4.9e6 * 0.01, rel=1e-6)


def test_max_filter_forgets_after_its_window_and_floors_at_four_segments() -> None:
    m = _model(0.001)
    m.on_round(100_000, 0.01)  # 10 MB/s
    for _ in range(3):
        m.on_round(1_000, 0.01)
    assert m.filled and m.max_bw == pytest.approx(1e7)
    for _ in range(BW_WINDOW_ROUNDS):
        m.on_round(1_000, 0.01)  # 100 kB/s for a whole window
    assert m.max_bw == pytest.approx(1e5)
    assert m.window(MSS) == 4 * MSS
    m.on_round(0, 0.01)  # nothing delivered: not a sample
    m.on_round(5_000, 0.0)
    assert m.max_bw == pytest.approx(1e5)


def test_a_lossy_round_caps_the_window_and_clean_rounds_lift_the_cap() -> None:
    m = _model(0.01)
    for bw in (1e6, 2e6, 4e6, 4e6, 4e6, 4e6):
        m.on_round(int(bw * 0.01), 0.01)
    assert m.window(MSS) == 80_000
    m.on_round(9_000, 0.01, lost=1_000, cwnd=80_000, mss=MSS)  # 10 %: random loss
    assert m.inflight_hi is None and m.window(MSS) == 80_000
    m.on_round(7_000, 0.01, lost=3_000, cwnd=80_000, mss=MSS)  # 30 %: an overflow
    assert m.inflight_hi == int(CEILING_BETA * 80_000) == m.window(MSS)
    m.on_round(40_000, 0.01, cwnd=68_000, mss=MSS)
    assert m.window(MSS) == 68_000 + 68_000 // 16
    for _ in range(30):
        m.on_round(40_000, 0.01, cwnd=80_000, mss=MSS)
    assert m.inflight_hi is None and m.window(MSS) == 80_000


def test_loss_ceiling_ends_startup() -> None:
    m = _model(0.1)
    m.on_round(10_000, 0.01)
    m.on_round(14_000, 0.01, lost=6_000, cwnd=40_000, mss=MSS)
    assert m.filled and m.window(MSS) == int(CEILING_BETA * 40_000)


def test_app_limited_rounds_only_raise_the_rate() -> None:
    m = _model(0.01)
    for bw in (4e6, 4e6, 4e6, 4e6):
        m.on_round(int(bw * 0.01), 0.01)
    for _ in range(2 * BW_WINDOW_ROUNDS):
        m.on_round(500, 0.01, app_limited=True)  # a trickle of small messages
    assert m.max_bw == pytest.approx(4e6)
    m.on_round(80_000, 0.01, app_limited=True)  # a burst faster than ever seen
    assert m.max_bw == pytest.approx(8e6)


def test_min_rtt_expires_through_a_probe_at_four_segments() -> None:
    m = _model(0.01)
    for _ in range(4):
        m.on_round(40_000, 0.01)
    assert m.filled and m.window(MSS) == 80_000
    m.on_rtt(0.015, 1.0)  # queued samples do not move the minimum...
    assert m.min_rtt == 0.01 and not m.probing_rtt
    m.on_rtt(0.015, MIN_RTT_EXPIRY + 1.0)  # ...until it is MIN_RTT_EXPIRY old
    assert m.probing_rtt and m.window(MSS) == 4 * MSS
    m.on_rtt(0.012, MIN_RTT_EXPIRY + 1.1)
    m.on_rtt(0.013, MIN_RTT_EXPIRY + 1.0 + PROBE_RTT_TIME)
    assert not m.probing_rtt and m.min_rtt == 0.012
    assert m.window(MSS) == int(2 * 4e6 * 0.012)


def test_a_longer_path_expires_the_min_rtt_early() -> None:
    # Every sample of BW_WINDOW_ROUNDS rounds far above the minimum: the path
    # changed; waiting MIN_RTT_EXPIRY would starve the window meanwhile.
    m = _model(0.01)
    for _ in range(4):
        m.on_round(40_000, 0.01)
    now = 0.05
    for _ in range(BW_WINDOW_ROUNDS):
        now += 0.03
        m.on_rtt(0.03, now)
        m.on_round(40_000, 0.03, now=now)
    assert m.probing_rtt
    m.on_rtt(0.03, now + 0.1)
    m.on_rtt(0.03, now + 0.3)
    assert m.min_rtt == 0.03


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
    assert bbr_lossy > 2 * westwood_lossy  # 8.3 against 1.3 MB/s
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


def test_bbr_follows_a_path_whose_round_trip_triples() -> None:
    # A route change from 10 to 30 ms: 2 x BDP at the old minimum RTT is less
    # than the new path holds, the rate falls, the max filter forgets the old
    # rate... and without expiring the minimum the window starves to 4
    # segments (0.14 MB/s).  The model notices the inflated RTT and re-probes.
    cfg = Config(congestion_control="bbr")
    p = Pair(config_a=cfg, config_b=cfg, seed=3,
             profile=LinkProfile(delay=0.005, rate=10e6, queue=400_000))
    p.handshake()
    p.transfer(random.Random(4).randbytes(2_000_000), b"", close=False)
    p.profile.delay = 0.015
    rates = []
    for k in range(4):
        data = random.Random(5 + k).randbytes(2_000_000)
        t0 = p.now
        got, _ = p.transfer(data, b"", close=False)
        assert got == data
        rates.append(len(data) / (p.now - t0))
    assert p.a._model.min_rtt == pytest.approx(0.03, rel=0.1)
    assert rates[-1] > 8e6 and rates[-2] > 8e6


def test_bbr_without_sack_runs_westwood() -> None:
    # Without SACK one hole holds up every round and each RTO resends the
    # whole 2 x BDP flight; the connection keeps the default instead.
    results = []
    for cc in ("bbr", "westwood"):
        cfg = Config(congestion_control=cc, sack=False)
        p = Pair(config_a=cfg, config_b=cfg, seed=6,
                 profile=LinkProfile(loss=0.05, delay=0.005, rate=10e6, queue=200_000))
        p.handshake()
        assert p.a._model is None
        data = random.Random(6).randbytes(500_000)
        got, _ = p.transfer(data, b"", close=False)
        assert got == data
        results.append((p.now, p.a.stats.segments_retransmitted, p.a.stats.timeouts))
    assert results[0] == results[1]


def test_stats_name_the_congestion_control_in_effect() -> None:
    # A bbr connection whose peer does not do SACK runs westwood: say so.
    for sack_b, expect in ((True, "bbr"), (False, "westwood")):
        p = Pair(config_a=Config(congestion_control="bbr"), config_b=Config(sack=sack_b))
        p.handshake()
        assert p.a.stats.congestion_control == expect
        assert p.a.stats.as_dict()["congestion_control"] == expect
