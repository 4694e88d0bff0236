"""The benchmark suite: runs every measurement in fresh processes, reports medians and ratios.

``python -m benchmarks`` (see ``--help`` and benchmarks/README.md).  Each measurement is one
or more worker processes (``python -m benchmarks.worker``): a server, a client and, for the
loss runs, the impairment relay between them, all on 127.0.0.1.  Rounds run every selected
measurement once, round-robin, so slow drift of the machine hits all of them alike; each
figure is the median over the rounds and every ratio is taken between medians of this run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
#: The relay listens here, on the server's port number (see worker.relay).
RELAY_HOST = "127.0.0.2"

#: Loss rates (percent) of the goodput-through-the-relay runs.
LOSS_RATES = (0, 1, 2, 5, 10)
#: Relay settings of the goodput runs: the relay adds no delay and no rate limit; its own
#: per-datagram work (one Python process, both directions) is the only bottleneck.
RELAY = {"delay_s": 0.0, "jitter_s": 0.0, "rate": None, "seed": 1}

#: Sizes per mode.  Kernel TCP and 64K-datagram rtcp move more bytes so that their (much
#: shorter) runs are not dominated by start-up; UDP datagrams are counted, not bytes.
SIZES: dict[str, dict[str, int]] = {
    "full": {"bulk": 64 * MiB, "bulk_py": 64 * MiB, "bulk_64k": 512 * MiB,
             "tcp": 512 * MiB, "udp": 500_000, "handshakes": 1000, "pings": 5000,
             "warmup": 200, "goodput": 16 * MiB},
    "quick": {"bulk": 8 * MiB, "bulk_py": 4 * MiB, "bulk_64k": 64 * MiB,
              "tcp": 64 * MiB, "udp": 100_000, "handshakes": 200, "pings": 1000,
              "warmup": 50, "goodput": 1 * MiB},
    "tiny": {"bulk": 512 * 1024, "bulk_py": 256 * 1024, "bulk_64k": 4 * MiB,
             "tcp": 4 * MiB, "udp": 5000, "handshakes": 20, "pings": 50,
             "warmup": 5, "goodput": 128 * 1024},
}
#: Seconds a worker may take, per mode (the worker enforces it, the suite kills a bit later).
TIMEOUTS = {"full": 180.0, "quick": 30.0, "tiny": 20.0}
#: Extra seconds the suite waits past a worker's own timeout before killing it.
GRACE = 5.0


# ------------------------------------------------------------------- model
@dataclass
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool = True


@dataclass
class Measurement:
    """One thing to run: a single worker, a client/server pair, or a pair with a relay."""

    name: str
    group: str
    shape: str  # "single", "pair" or "relay"
    role: str  # worker role, e.g. "rtcp:bulk" (pairs add -server/-client) or "codec"
    params: dict[str, Any]
    #: Turns the client's (or single worker's) RESULT, plus the others', into figure values.
    extract: Callable[[dict[str, Any]], dict[str, float]]
    #: The figure keys ``extract`` gives (defaults to just ``name``).
    figures: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    once: bool = False  # run in the first round only (the codec benchmark repeats internally)
    details: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.figures:
            self.figures = (self.name,)


FIGURES: list[Figure] = [
    Figure("bulk_rtcp_c", "Bulk, rtcp, C codec (1472 B datagrams)", "MB/s"),
    Figure("bulk_rtcp_py", "Bulk, rtcp, pure-Python codec (1472 B datagrams)", "MB/s"),
    Figure("bulk_rtcp_64k", "Bulk, rtcp, C codec, 65507 B datagrams", "MB/s"),
    Figure("bulk_tcp", "Bulk, kernel TCP through trio", "MB/s"),
    Figure("udp_ceiling", "Raw UDP drain ceiling (1452 B datagrams)", "MB/s"),
    Figure("udp_ceiling_dgrams", "Raw UDP drain ceiling, datagrams", "datagrams/s"),
    Figure("handshakes_rtcp", "Handshakes (connect + close), rtcp", "per s"),
    Figure("handshakes_tcp", "Handshakes (connect + close), kernel TCP", "per s"),
    Figure("latency_rtcp_p50", "64 B round trip p50, rtcp", "µs", False),
    Figure("latency_rtcp_p99", "64 B round trip p99, rtcp", "µs", False),
    Figure("latency_tcp_p50", "64 B round trip p50, kernel TCP", "µs", False),
    Figure("latency_tcp_p99", "64 B round trip p99, kernel TCP", "µs", False),
    *[Figure(f"goodput_loss_{p}", f"Goodput through relay, {p}% loss", "MB/s")
      for p in LOSS_RATES],
    *[Figure(f"goodput_bbr_loss_{p}", f"Goodput through relay, {p}% loss, bbr", "MB/s")
      for p in LOSS_RATES],
    Figure("codec_checksum_1452", "Codec: checksum 1452 B, C / Python", "x"),
    Figure("codec_checksum_64k", "Codec: checksum 64 KiB, C / Python", "x"),
    Figure("codec_encode_decode", "Codec: encode+decode 1452 B, C / Python", "x"),
]
FIGURE_BY_KEY = {f.key: f for f in FIGURES}

#: (key, label, numerator, denominator, target or None for information only)
RATIOS: list[tuple[str, str, str, str, float | None]] = [
    ("rtcp_c_over_udp_ceiling", "rtcp (C) bulk / raw UDP drain ceiling",
     "bulk_rtcp_c", "udp_ceiling", 0.15),
    ("c_over_python", "rtcp C codec / pure-Python codec, bulk end to end",
     "bulk_rtcp_c", "bulk_rtcp_py", 1.3),
    ("handshakes_rtcp_over_tcp", "Handshakes/s rtcp / kernel TCP",
     "handshakes_rtcp", "handshakes_tcp", 0.5),
    ("bulk_64k_over_tcp", "rtcp 65507 B datagrams / kernel TCP, bulk",
     "bulk_rtcp_64k", "bulk_tcp", 0.25),
    # The target divides by the default's lossless goodput: bbr's own lossless
    # run is slower through this relay (its window stops at 2 x BDP, and the
    # relay moves more the more it is sent), which would flatter its ratio.
    ("goodput_bbr_loss5_over_default_loss0",
     "Goodput at 5% loss with congestion_control='bbr' / lossless with the default",
     "goodput_bbr_loss_5", "goodput_loss_0", 0.4),
    ("goodput_loss5_over_loss0",
     "Goodput at 5% loss / lossless, through the relay, default (westwood)",
     "goodput_loss_5", "goodput_loss_0", None),
    ("goodput_bbr_loss5_over_loss0",
     "Goodput at 5% loss / lossless, through the relay, both congestion_control='bbr'",
     "goodput_bbr_loss_5", "goodput_bbr_loss_0", None),
    ("rtcp_c_over_tcp", "rtcp (C) bulk / kernel TCP bulk", "bulk_rtcp_c", "bulk_tcp", None),
    ("latency_p50_rtcp_over_tcp", "Round trip p50 rtcp / kernel TCP (lower is better)",
     "latency_rtcp_p50", "latency_tcp_p50", None),
]

#: The issue's acceptance targets: (label, figure or ratio key, threshold).
TARGETS: list[tuple[str, str, float]] = [
    ("rtcp bulk, default datagrams, >= 80 MB/s", "bulk_rtcp_c", 80.0),
    ("rtcp bulk >= 0.15 x raw UDP drain ceiling", "rtcp_c_over_udp_ceiling", 0.15),
    ("C codec >= 1.3 x pure Python, end to end", "c_over_python", 1.3),
    ("Handshakes >= 0.5 x kernel TCP", "handshakes_rtcp_over_tcp", 0.5),
    ("65507 B datagrams >= 0.25 x kernel TCP bulk", "bulk_64k_over_tcp", 0.25),
    ("5% loss goodput >= 0.4 x lossless (relay: 0 ms delay, no rate limit; 5% with the "
     "opt-in congestion_control='bbr', lossless with the default)",
     "goodput_bbr_loss5_over_default_loss0", 0.4),
]


def _percentile(samples: list[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in 0..100)."""
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _stats_details(result: dict[str, Any]) -> dict[str, Any]:
    stats = (result.get("client") or {}).get("stats") or {}
    keep = ("segments_sent", "segments_retransmitted", "fast_retransmits", "timeouts",
            "sack_recoveries", "srtt", "cwnd")
    out = {k: stats[k] for k in keep if k in stats}
    backend = (result.get("client") or {}).get("backend")
    if backend:
        out["backend"] = backend
    relay = result.get("relay")
    if relay:
        fwd = relay["forward"]
        if fwd["received"]:
            out["relay_data_loss"] = round(fwd["dropped"] / fwd["received"], 4)
        bwd = relay["backward"]
        if bwd["received"]:
            out["relay_ack_loss"] = round(bwd["dropped"] / bwd["received"], 4)
    return out


def build_measurements(mode: str, timeout: float, loss_direction: str
                       ) -> list[Measurement]:
    sz = SIZES[mode]
    quick = mode != "full"

    def p(**kw: Any) -> dict[str, Any]:
        return {"timeout": timeout, **kw}

    def bulk(key: str) -> Callable[[dict[str, Any]], dict[str, float]]:
        return lambda r: {key: r["client"]["mb_per_s"]}

    ms: list[Measurement] = [
        Measurement("codec", "codec", "single", "codec", p(quick=quick),
                    lambda r: _codec_figures(r["client"]), once=True,
                    figures=("codec_checksum_1452", "codec_checksum_64k",
                             "codec_encode_decode")),
        Measurement("bulk_rtcp_c", "bulk", "pair", "rtcp:bulk", p(bytes=sz["bulk"]),
                    bulk("bulk_rtcp_c"), details=_stats_details),
        Measurement("bulk_rtcp_py", "bulk", "pair", "rtcp:bulk", p(bytes=sz["bulk_py"]),
                    bulk("bulk_rtcp_py"), env={"RTCP_PURE_PYTHON": "1"},
                    details=_stats_details),
        Measurement("bulk_tcp", "bulk", "pair", "tcp:bulk", p(bytes=sz["tcp"]),
                    bulk("bulk_tcp")),
        Measurement("udp_ceiling", "bulk", "udp", "udp", p(datagrams=sz["udp"]),
                    lambda r: {"udp_ceiling": r["server"]["mb_per_s"],
                               "udp_ceiling_dgrams": r["server"]["datagrams_per_s"]},
                    figures=("udp_ceiling", "udp_ceiling_dgrams"),
                    details=lambda r: {
                        "sent": r["client"]["sent"],
                        "received": r["server"]["datagrams"],
                        "source_datagrams_per_s": round(r["client"]["send_per_s"])}),
        Measurement("bulk_rtcp_64k", "bulk", "pair", "rtcp:bulk",
                    p(bytes=sz["bulk_64k"], config={"max_datagram": 65507}),
                    bulk("bulk_rtcp_64k"), details=_stats_details),
        Measurement("handshakes_rtcp", "handshake", "pair", "rtcp:handshake",
                    p(count=sz["handshakes"]),
                    lambda r: {"handshakes_rtcp": r["client"]["per_s"]}),
        Measurement("handshakes_tcp", "handshake", "pair", "tcp:handshake",
                    p(count=sz["handshakes"]),
                    lambda r: {"handshakes_tcp": r["client"]["per_s"]}),
        Measurement("latency_rtcp", "latency", "pair", "rtcp:latency",
                    p(size=64, count=sz["pings"], warmup=sz["warmup"]),
                    lambda r: _latency_figures("rtcp", r["client"]),
                    figures=("latency_rtcp_p50", "latency_rtcp_p99")),
        Measurement("latency_tcp", "latency", "pair", "tcp:latency",
                    p(size=64, count=sz["pings"], warmup=sz["warmup"]),
                    lambda r: _latency_figures("tcp", r["client"]),
                    figures=("latency_tcp_p50", "latency_tcp_p99")),
    ]
    for loss in LOSS_RATES:
        imp = {"loss": loss / 100.0, "delay": RELAY["delay_s"], "jitter": RELAY["jitter_s"],
               "rate": RELAY["rate"]}
        back = imp if loss_direction == "both" else {**imp, "loss": 0.0}
        for prefix, config in (("goodput", {}), ("goodput_bbr", {"congestion_control": "bbr"})):
            name = f"{prefix}_loss_{loss}"
            ms.append(Measurement(
                name, "goodput", "relay", "rtcp:bulk",
                p(bytes=sz["goodput"], config=config,
                  relay={"forward": imp, "backward": back, "seed": RELAY["seed"]}),
                bulk(name), details=_stats_details))
    return ms


def _codec_figures(report: dict[str, Any]) -> dict[str, float]:
    res = report["results"]
    out = {}
    for key, case in (("codec_checksum_1452", "checksum 1452 B"),
                      ("codec_checksum_64k", "checksum 64 KiB"),
                      ("codec_encode_decode", "encode+decode 1452 B")):
        ratio = res.get(case, {}).get("ratio")
        if ratio is not None:
            out[key] = float(ratio)
    return out


def _latency_figures(kind: str, result: dict[str, Any]) -> dict[str, float]:
    samples = result["samples_us"]
    return {f"latency_{kind}_p50": _percentile(samples, 50),
            f"latency_{kind}_p99": _percentile(samples, 99)}


# ------------------------------------------------------------------ running
class WorkerError(Exception):
    pass


#: A traceback's final line, e.g. ``NameError: name 'x' is not defined``.
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")


class _Proc:
    """A worker process with line-oriented stdout read against deadlines."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], stdin: bool = False,
                 wrap: Callable[[str], list[str]] | None = None):
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
        full_env.pop("RTCP_PURE_PYTHON", None)
        full_env.update(env)
        self.proc = subprocess.Popen(
            [*(wrap(name) if wrap else []), sys.executable, "-m", "benchmarks.worker", *args],
            cwd=REPO, env=full_env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.stderr)
        self._buf = b""

    def line(self, tag: str, deadline: float, watch: tuple[_Proc, ...] = ()) -> dict[str, Any]:
        """The JSON of the next stdout line starting with ``tag``.

        Fails early when one of the ``watch`` processes (the other side) exits with an error.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                text = raw.decode(errors="replace")
                if text.startswith(tag + " "):
                    return json.loads(text[len(tag) + 1:])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError(f"{self.name}: timed out waiting for {tag}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.25))
            if not ready:
                for other in watch:
                    if other.proc.poll() not in (None, 0):
                        raise WorkerError(f"{other.name}: exited with status "
                                          f"{other.proc.returncode}: {other.error_tail()}")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                raise WorkerError(f"{self.name}: exited with status {self.proc.returncode} "
                                  f"before {tag}: {self.error_tail()}")
            self._buf += chunk

    def error_tail(self) -> str:
        """The last stderr line, after the first exception line if that differs (e.g. the
        endpoint's own failure that rtcp logged before the user-visible error)."""
        self.stderr.seek(0)
        lines = [ln.strip(" |") for ln in self.stderr.read().decode(errors="replace").splitlines()
                 if ln.strip(" |")]
        if not lines:
            return "(no stderr)"
        first = next((ln for ln in lines if _EXC_LINE.match(ln)), None)
        if first is not None and first != lines[-1]:
            return f"{lines[-1]} (first error: {first})"
        return lines[-1]

    def finish(self, deadline: float, watch: tuple[_Proc, ...] = ()) -> dict[str, Any]:
        result = self.line("RESULT", deadline, watch)
        self.wait(deadline)
        return result

    def wait(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


def _params_arg(params: dict[str, Any]) -> list[str]:
    return ["--params", json.dumps(params)]


def run_measurement(m: Measurement, rnd: int = 0,
                    wrap: Callable[[str], list[str]] | None = None) -> dict[str, Any]:
    """Run ``m`` once (round ``rnd``); returns {"client", "server", "relay"} RESULTs.

    The relay's seed is offset by the round, so the median covers several loss patterns
    while any single run can be replayed.  ``wrap(process_name)`` may return a command
    prefix for each worker (``benchmarks.profile`` puts py-spy there).
    """
    timeout = m.params["timeout"]
    deadline = time.monotonic() + timeout + GRACE
    procs: list[_Proc] = []
    try:
        if m.shape == "single":
            worker = _Proc(m.name, [m.role, *_params_arg(m.params)], m.env, wrap=wrap)
            procs.append(worker)
            return {"client": worker.finish(deadline)}
        if m.shape == "udp":
            server_role, client_role = "udp-sink", "udp-source"
        else:
            server_role, client_role = f"{m.role}-server", f"{m.role}-client"
        server_params = {k: v for k, v in m.params.items() if k != "relay"}
        server = _Proc(f"{m.name} server", [server_role, *_params_arg(server_params)], m.env,
                       wrap=wrap)
        procs.append(server)
        port = server.line("READY", deadline)["port"]
        relay = None
        if m.shape == "relay":
            relay = _Proc(f"{m.name} relay",
                          ["relay", *_params_arg({**m.params["relay"], "timeout": timeout,
                                                  "seed": m.params["relay"]["seed"] + rnd}),
                           "--port", str(port)], m.env, stdin=True, wrap=wrap)
            procs.append(relay)
            port = relay.line("READY", deadline, watch=(server,))["port"]
        client_params = server_params
        if relay is not None:
            client_params = {**server_params, "connect_host": RELAY_HOST}
        client = _Proc(f"{m.name} client",
                       [client_role, *_params_arg(client_params), "--port", str(port),
                        "--linger"], m.env, stdin=True, wrap=wrap)
        procs.append(client)
        # Shut down in order: the server finishes its close through a live client (and
        # relay), then the client may exit, then the relay reports what it did.
        others = (server,) if relay is None else (server, relay)
        out: dict[str, Any] = {"client": client.line("RESULT", deadline, watch=others)}
        out["server"] = server.finish(deadline, watch=(client, *others[1:]))
        client.close_stdin()
        client.wait(deadline)
        if relay is not None:
            relay.close_stdin()
            out["relay"] = relay.finish(deadline)
        return out
    finally:
        for proc in procs:
            proc.kill()


# ---------------------------------------------------------------- the suite
def select_measurements(ms: list[Measurement], only: str | None) -> list[Measurement]:
    if not only:
        return ms
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {m.name for m in ms} | {m.group for m in ms}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(sorted(known))}")
    return [m for m in ms if m.name in wanted or m.group in wanted]


def run_suite(ms: list[Measurement], runs: int, log: Callable[[str], None]
              ) -> dict[str, Any]:
    values: dict[str, list[float]] = {}
    by_round: dict[str, dict[int, float]] = {}
    errors: dict[str, list[str]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    latency_samples: dict[str, list[float]] = {}
    codec_report: dict[str, Any] | None = None
    for rnd in range(runs):
        for m in ms:
            if m.once and rnd > 0:
                continue
            t0 = time.monotonic()
            try:
                result = run_measurement(m, rnd)
                figs = m.extract(result)
                if not figs:
                    raise WorkerError("no figures in the result")
            except Exception as exc:  # one failure is reported, not fatal
                msg = str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
                errors.setdefault(m.name, []).append(msg)
                log(f"  [{rnd + 1}/{runs}] {m.name}: ERROR {msg}")
                continue
            for key, value in figs.items():
                values.setdefault(key, []).append(float(value))
                by_round.setdefault(key, {})[rnd] = float(value)
            if m.details is not None:
                details.setdefault(m.name, []).append(m.details(result))
            if m.group == "latency":
                latency_samples.setdefault(m.name.split("_", 1)[1], []).extend(
                    result["client"]["samples_us"])
            if m.name == "codec":
                codec_report = result["client"]
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in figs.items())
            log(f"  [{rnd + 1}/{runs}] {m.name}: {shown} ({time.monotonic() - t0:.1f} s)")
    return {"values": values, "by_round": by_round, "errors": errors, "details": details,
            "latency_samples": latency_samples, "codec": codec_report}


def summarize(raw: dict[str, Any], ms: list[Measurement], args: argparse.Namespace,
              mode: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    owner = {key: m for m in ms for key in m.figures}
    for f in FIGURES:
        m = owner.get(f.key)
        if m is None:
            continue  # not selected
        runs = raw["values"].get(f.key, [])
        errs = raw["errors"].get(m.name, [])
        entry: dict[str, Any] = {"label": f.label, "unit": f.unit,
                                 "value": statistics.median(runs) if runs else None,
                                 "runs": runs, "errors": errs}
        if m.name in raw["details"]:
            entry["details"] = raw["details"][m.name]
        figures[f.key] = entry
    ratios: dict[str, Any] = {}
    for key, label, num, den, target in RATIOS:
        if num not in figures or den not in figures:
            continue
        a, b = figures[num]["value"], figures[den]["value"]
        value = a / b if a is not None and b else None
        # Also per round, between figures measured minutes apart rather than across rounds.
        na, nb = raw["by_round"].get(num, {}), raw["by_round"].get(den, {})
        per_round = [na[r] / nb[r] for r in sorted(na) if r in nb and nb[r]]
        ratios[key] = {"label": label, "value": value, "numerator": num, "denominator": den,
                       "target": target, "per_round": per_round}
    targets = []
    for label, key, threshold in TARGETS:
        src = figures.get(key) or ratios.get(key)
        if src is None:
            continue
        value = src["value"]
        status = "n/a (error)" if value is None else ("met" if value >= threshold else "not met")
        targets.append({"label": label, "key": key, "value": value, "threshold": threshold,
                        "status": status})
    quantiles = {}
    for kind, samples in raw["latency_samples"].items():
        s = sorted(samples)
        quantiles[kind] = [_percentile(s, q / 10) for q in range(0, 1001)]
    return {
        "schema": 1,
        "meta": _meta(args, mode),
        "sizes": SIZES[mode],
        "relay": {**RELAY, "loss_direction": args.loss_direction,
                  "note": "rtcp.relay.Impairment(loss=p) in its own process; "
                          "no added delay, jitter or rate limit"},
        "figures": figures,
        "ratios": ratios,
        "targets": targets,
        "codec": raw["codec"],
        "latency_quantiles_us": quantiles,
    }


def _meta(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    rev = None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import trio
        trio_version = trio.__version__
    except ImportError:
        trio_version = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode, "runs": args.runs, "only": args.only,
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "trio": trio_version, "git": rev,
        "command": "python -m benchmarks " + " ".join(args.argv),
    }


# ---------------------------------------------------------------- reporting
def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "error"
    if unit == "x" or (unit == "" and value < 100):
        return f"{value:.2f}x" if unit == "x" else f"{value:.3f}"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _note(entry: dict[str, Any]) -> str:
    notes = []
    if entry["errors"]:
        notes.append(f"{len(entry['errors'])} failed: {entry['errors'][0][:240]}")
    det = entry.get("details") or []
    if det:
        d = det[-1]
        if "relay_data_loss" in d:
            notes.append(f"measured data loss {d['relay_data_loss']:.1%}")
        if "segments_retransmitted" in d and d.get("segments_sent"):
            notes.append(f"rtx {d['segments_retransmitted']}/{d['segments_sent']} segs, "
                         f"{d.get('timeouts', 0)} RTOs")
        if "backend" in d:
            notes.append(f"codec {d['backend']}")
        if "received" in d and "sent" in d:
            notes.append(f"{d['received']:,} of {d['sent']:,} datagrams arrived")
    return "; ".join(notes)


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    out = [
        "# rtcp benchmark results",
        "",
        f"{meta['date']} · mode {meta['mode']} · {meta['runs']} run(s), median shown · "
        f"Python {meta['python']} · trio {meta['trio']} · {meta['cpus']} CPUs · "
        f"git {meta['git']} · `{meta['command']}`",
        "",
        "| Benchmark | Median | Unit | Runs | Notes |",
        "|---|---:|---|---|---|",
    ]
    for f in FIGURES:
        entry = report["figures"].get(f.key)
        if entry is None:
            continue
        runs = ", ".join(_fmt(v, f.unit) for v in entry["runs"]) or "-"
        out.append(f"| {f.label} | {_fmt(entry['value'], f.unit)} | {f.unit} | {runs} | "
                   f"{_note(entry)} |")
    if report["ratios"]:
        out += ["", "| Ratio (this run: median / median) | Value | Per round | Target | Status |",
                "|---|---:|---|---:|---|"]
        for r in report["ratios"].values():
            target = "-" if r["target"] is None else f">= {r['target']:g}"
            status = "info" if r["target"] is None else (
                "n/a" if r["value"] is None else "met" if r["value"] >= r["target"] else
                "**not met**")
            per = ", ".join(_fmt(v) for v in r.get("per_round", [])) or "-"
            out.append(f"| {r['label']} | {_fmt(r['value'])} | {per} | {target} | {status} |")
    if report["targets"]:
        out += ["", "| Target (issue 7) | Measured | Status |", "|---|---:|---|"]
        for t in report["targets"]:
            shown = _fmt(t["value"], "MB/s" if t["key"] == "bulk_rtcp_c" else "")
            if t["key"] == "bulk_rtcp_c" and t["value"] is not None:
                shown += " MB/s"
            status = t["status"] if t["status"] != "not met" else "**not met**"
            out.append(f"| {t['label']} | {shown} | {status} |")
        if report["meta"]["mode"] != "full":
            out += ["", f"({report['meta']['mode']} mode: small transfers and one run, so these "
                        "verdicts are indicative only; the targets are judged on a full run.)"]
    relay = report["relay"]
    if any(k.startswith("goodput") for k in report["figures"]):
        out += ["", f"Relay for the goodput rows: delay {relay['delay_s'] * 1000:g} ms, jitter "
                    f"{relay['jitter_s'] * 1000:g} ms, rate "
                    f"{'unlimited' if relay['rate'] is None else relay['rate']}, seed "
                    f"{relay['seed']} + run index, loss applied to "
                    f"{'both directions' if relay['loss_direction'] == 'both' else 'data (client -> server) only'}"
                    "; the relay is a third Python process."]
    codec = report.get("codec")
    if codec:
        out += ["", "| Codec case | Python calls/s | C calls/s | C / Python | cffi layer / Python |",
                "|---|---:|---:|---:|---:|"]
        for case, e in codec["results"].items():
            c = e.get("c_calls_per_s")
            ratio, cffi_ratio = e.get("ratio"), e.get("cffi_ratio")
            out.append(f"| {case} | {e['python_calls_per_s']:,.0f} | "
                       f"{'n/a' if c is None else format(c, ',.0f')} | "
                       f"{'n/a' if ratio is None else format(ratio, '.1f') + 'x'} | "
                       f"{'n/a' if cffi_ratio is None else format(cffi_ratio, '.1f') + 'x'} |")
    sizes = report["sizes"]
    out += ["", "Sizes: rtcp bulk {} MiB (pure Python {} MiB, 64K datagrams {} MiB), kernel TCP "
                "{} MiB, raw UDP {:,} datagrams, {:,} handshakes, {:,} round trips, goodput {} MiB"
                " per loss rate.".format(sizes["bulk"] / MiB, sizes["bulk_py"] / MiB,
                                         sizes["bulk_64k"] / MiB, sizes["tcp"] / MiB,
                                         sizes["udp"], sizes["handshakes"], sizes["pings"],
                                         sizes["goodput"] / MiB)]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], outdir: Path) -> list[Path]:
    """PNG plots; returns the files written, or raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    written: list[Path] = []
    figs = report["figures"]

    bars = [(k, lbl) for k, lbl in (("bulk_rtcp_py", "rtcp\npure Python"),
                                    ("bulk_rtcp_c", "rtcp\nC codec"),
                                    ("bulk_rtcp_64k", "rtcp\n64K datagrams"),
                                    ("udp_ceiling", "raw UDP\nceiling"),
                                    ("bulk_tcp", "kernel TCP\n(trio)"))
            if figs.get(k, {}).get("value")]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 4))
        vals = [figs[k]["value"] for k, _ in bars]
        rects = ax.bar([lbl for _, lbl in bars], vals,
                       color=["#4c72b0" if k.startswith("bulk_rtcp") else "#999999"
                              for k, _ in bars])
        ax.bar_label(rects, labels=[f"{v:,.0f}" for v in vals], padding=2)
        ax.set_yscale("log")
        ax.set_ylabel("MB/s (log scale)")
        ax.set_title("Bulk throughput, loopback, one direction")
        ax.axhline(80, color="#c44e52", linestyle="--", linewidth=1)
        ax.text(-0.4, 85, "80 MB/s target", color="#c44e52", fontsize=8)
        fig.tight_layout()
        path = outdir / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    points = [(p, figs[f"goodput_loss_{p}"]["value"]) for p in LOSS_RATES
              if figs.get(f"goodput_loss_{p}", {}).get("value")]
    if points:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([p for p, _ in points], [v for _, v in points], marker="o",
                label="rtcp goodput (default, westwood)")
        bbr = [(p, figs[f"goodput_bbr_loss_{p}"]["value"]) for p in LOSS_RATES
               if figs.get(f"goodput_bbr_loss_{p}", {}).get("value")]
        if bbr:
            ax.plot([p for p, _ in bbr], [v for _, v in bbr], marker="s",
                    label="rtcp goodput, congestion_control='bbr'")
        base = figs.get("goodput_loss_0", {}).get("value")
        if base:
            ax.axhline(0.4 * base, color="#c44e52", linestyle="--", linewidth=1,
                       label="0.4 x lossless default (target at 5%)")
        ax.set_xlabel("loss (%)")
        ax.set_ylabel("MB/s")
        ax.set_ylim(bottom=0)
        ax.set_title("Goodput through the impairment relay (0 ms delay, no rate limit)")
        ax.legend()
        fig.tight_layout()
        path = outdir / "goodput_loss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    quant = report.get("latency_quantiles_us") or {}
    if quant:
        fig, ax = plt.subplots(figsize=(7, 4))
        for kind, label, color in (("rtcp", "rtcp", "#4c72b0"),
                                   ("tcp", "kernel TCP (trio)", "#999999")):
            q = quant.get(kind)
            if q:
                p50, p99 = _percentile(q, 50), _percentile(q, 99)
                ax.plot(q, [i / 10 for i in range(len(q))], color=color,
                        label=f"{label}: p50 {p50:,.0f} µs, p99 {p99:,.0f} µs")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("round-trip time (µs, log scale)")
        ax.set_ylabel("percentile")
        ax.set_title("64-byte ping-pong latency, cumulative distribution")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = outdir / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


PUBLISH_START = "<!-- results:start (python -m benchmarks --publish rewrites this) -->"
PUBLISH_END = "<!-- results:end -->"


def publish(table: str, outdir: Path, plots: list[str]) -> None:
    """Put ``table`` into benchmarks/README.md between the markers, plots into img/.

    benchmarks/results/ is not under version control; this is the copy that is.
    """
    here = Path(__file__).resolve().parent
    img = here / "img"
    if plots:
        img.mkdir(exist_ok=True)
        for name in plots:
            shutil.copyfile(outdir / name, img / name)
            table = table.replace(f"]({name})", f"](img/{name})")
    table = table.replace("# rtcp benchmark results\n", "", 1).strip()
    readme = here / "README.md"
    text = readme.read_text()
    start, end = text.find(PUBLISH_START), text.find(PUBLISH_END)
    if start < 0 or end < start:
        raise SystemExit(f"--publish: {readme} lacks the results markers")
    text = text[:start + len(PUBLISH_START)] + "\n\n" + table + "\n\n" + text[end:]
    readme.write_text(text)


# --------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="rtcp benchmark suite: codec, bulk throughput, handshakes, latency and "
                    "goodput under loss, each measurement in fresh processes on loopback.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 1 run (finishes in under a minute)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes (smoke tests); implies --quick; also RTCP_BENCH_TINY=1")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="run only these benchmarks or groups (codec, bulk, handshake, "
                             "latency, goodput, or names such as bulk_rtcp_c, goodput_loss_5)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per figure, median reported (default 3; 1 with --quick)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"where latest.json, latest.md and plots go (default {DEFAULT_OUTPUT})")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each worker process may take (default 180; 30 quick)")
    parser.add_argument("--loss-direction", choices=("data", "both"), default="data",
                        help="relay loss on the data direction only (default) or on ACKs too")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--publish", action="store_true",
                        help="also put the table into benchmarks/README.md (between the "
                             "results markers) and the plots into benchmarks/img/")
    parser.add_argument("--list", action="store_true", help="list benchmark names and exit")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("RTCP_BENCH_TINY", "") not in ("", "0"):
        args.tiny = True
    if args.tiny:
        args.quick = True
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    timeout = args.timeout or TIMEOUTS[mode]
    all_ms = build_measurements(mode, timeout, args.loss_direction)
    if args.list:
        for group in dict.fromkeys(m.group for m in all_ms):
            print(f"{group}: {', '.join(m.name for m in all_ms if m.group == group)}")
        return 0
    ms = select_measurements(all_ms, args.only)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"rtcp benchmarks: mode {mode}, {args.runs} run(s), {len(ms)} measurement(s), "
        f"worker timeout {timeout:g} s")
    t0 = time.monotonic()
    raw = run_suite(ms, args.runs, log)
    report = summarize(raw, ms, args, mode)
    report["meta"]["seconds"] = round(time.monotonic() - t0, 1)

    outdir: Path = args.output
    outdir.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    if not args.no_plots:
        try:
            report["plots"] = [p.name for p in plot(report, outdir)]
        except ImportError:
            report["plots"] = []
            log("note: matplotlib is not installed, no plots "
                "(pip install matplotlib, or the 'plot' extra)")
    if report.get("plots"):
        table += "\n" + "\n".join(f"![{p}]({p})" for p in report["plots"]) + "\n"
    if args.publish:
        publish(table, outdir, report.get("plots") or [])
    (outdir / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (outdir / "latest.md").write_text(table)
    print(table)
    log(f"wrote {outdir / 'latest.json'} and {outdir / 'latest.md'} "
        f"in {report['meta']['seconds']} s")
    return 0
