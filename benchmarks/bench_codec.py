"""Segment codec benchmark: the C and pure-Python backends side by side.

Measures the calls the endpoint makes once per datagram: the checksum at
64 B, 1452 B (a full IPv6-path datagram) and 64 KiB (loopback-sized), and
encode / decode of a 1452-byte datagram carrying MSS and timestamp options.
Both backend modules are imported directly, whatever ``rtcp.segment.BACKEND``
says, so one run compares them.  On CPython the C backend's calls are
csrc/fastpath.c; its cffi layer alone (what other interpreters run) is timed
too, as the "cffi" column, so the table shows what each layer buys.  Each figure is the fastest of several timed
repeats (time.perf_counter) of a calibrated number of calls, the two backends'
repeats interleaved: as timeit's documentation argues, slower repeats measure
interference from other processes, not the code, and on this shared machine
the median of sub-microsecond calls swung the C/Python ratio by 15 %.

    python -m benchmarks.bench_codec [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from rtcp import _codec_py
from rtcp.segment import OPT_MSS, OPT_TIMESTAMPS, Flags, Segment

try:
    from rtcp import _codec_cbackend
except ImportError:  # extension not built: report Python alone
    _codec_cbackend = None  # type: ignore[assignment]

#: Ratios SPEC/issue 2 asks for on the project's 2-core machine.
TARGETS = {"checksum 1452 B": 10.0, "checksum 64 KiB": 40.0, "encode+decode 1452 B": 5.0}

DATAGRAM = 1452


def _sample_segment() -> Segment:
    options = ((OPT_MSS, 1412), (OPT_TIMESTAMPS, (0x12345678, 0x9ABCDEF0)))
    header = 20 + 16  # MSS 4 + timestamps 10, padded to 16
    payload = random.Random(2).randbytes(DATAGRAM - header)
    return Segment(
        40000, 7007, 0xFFFF0000, 0x00010000, Flags.ACK | Flags.PSH, 4096, 0, options, payload
    )


def _timed(fn: Callable[[Any], Any], arg: Any, rounds: int) -> float:
    """Seconds for ``rounds`` x 10 calls; unrolled so the loop itself costs little."""
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
        fn(arg)
    return time.perf_counter() - t0


def _calibrate(fn: Callable[[Any], Any], arg: Any, target: float) -> int:
    """Rounds of 10 calls per timed repeat so that one repeat takes about ``target`` seconds."""
    rounds = 1
    while True:
        elapsed = _timed(fn, arg, rounds)
        if elapsed >= target / 4:
            return max(1, int(rounds * target / elapsed))
        rounds *= 4


def _time_side_by_side(
    calls: dict[str, tuple[Callable[[Any], Any], Any]], quick: bool
) -> dict[str, float]:
    """Seconds per call for each backend: the fastest of the repeats.

    Repeats alternate between the backends, so that a change in machine load
    during the run (other processes on a shared 2-core box) hits both alike
    instead of skewing their ratio; the minimum discards the repeats that
    other processes slowed down.
    """
    target = 0.01 if quick else 0.03
    repeats = 3 if quick else 9
    numbers = {name: _calibrate(fn, arg, target) for name, (fn, arg) in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, arg) in calls.items():
            rounds = numbers[name]
            samples[name].append(_timed(fn, arg, rounds) / (10 * rounds))
    return {name: min(values) for name, values in samples.items()}


def _cases(backend: Any) -> dict[str, tuple[Callable[[Any], Any], Any]]:
    rng = random.Random(1)
    seg = _sample_segment()
    datagram = backend.encode(seg)
    assert len(datagram) == DATAGRAM
    return {
        "checksum 64 B": (backend.internet_checksum, rng.randbytes(64)),
        "checksum 1452 B": (backend.internet_checksum, rng.randbytes(1452)),
        "checksum 64 KiB": (backend.internet_checksum, rng.randbytes(65536)),
        "encode 1452 B": (backend.encode, seg),
        "decode 1452 B": (backend.decode, datagram),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Time both backends; returns {"c_available", "results": {case: {...}}, "targets"}.

    Each result holds seconds per call and calls/s per backend ("python", "c",
    and "cffi" when the C backend's fast path is installed), the C/Python speed
    ratio (None without the C backend) and the cffi/Python one.
    """
    backends: dict[str, Any] = {"python": _codec_py}
    if _codec_cbackend is not None:
        backends["c"] = _codec_cbackend
        if _codec_cbackend.FASTPATH:
            backends["cffi"] = types.SimpleNamespace(
                encode=_codec_cbackend.cffi_encode,
                decode=_codec_cbackend.cffi_decode,
                internet_checksum=_codec_cbackend.cffi_internet_checksum,
            )
    cases = {name: _cases(backend) for name, backend in backends.items()}
    per_call: dict[str, dict[str, float]] = {}
    for case in cases["python"]:
        per_call[case] = _time_side_by_side({name: cases[name][case] for name in backends}, quick)
    per_call["encode+decode 1452 B"] = {
        name: per_call["encode 1452 B"][name] + per_call["decode 1452 B"][name] for name in backends
    }
    results: dict[str, dict[str, Any]] = {}
    for case, times in per_call.items():
        entry: dict[str, Any] = {f"{name}_s": t for name, t in times.items()}
        entry.update({f"{name}_calls_per_s": 1.0 / t for name, t in times.items()})
        entry["ratio"] = times["python"] / times["c"] if "c" in times else None
        entry["cffi_ratio"] = times["python"] / times["cffi"] if "cffi" in times else None
        results[case] = entry
    return {"c_available": "c" in backends, "results": results, "targets": dict(TARGETS)}


def format_table(report: dict[str, Any]) -> str:
    """The results as a fixed-width table (calls/s per backend, C/Python ratio)."""
    lines = [
        f"{'case':<22} {'python calls/s':>15} {'c calls/s':>15} {'C/Python':>9}"
        f" {'cffi/Python':>11}  target",
        "-" * 86,
    ]
    for case, entry in report["results"].items():
        c = entry.get("c_calls_per_s")
        ratio = entry["ratio"]
        target = report["targets"].get(case)
        verdict = ""
        if target is not None:
            verdict = f">= {target:g}x " + (
                "n/a" if ratio is None else "ok" if ratio >= target else "MISSED"
            )
        cffi_ratio = entry.get("cffi_ratio")
        lines.append(
            f"{case:<22} {entry['python_calls_per_s']:>15,.0f} "
            f"{'n/a' if c is None else format(c, ',.0f'):>15} "
            f"{'n/a' if ratio is None else format(ratio, '.1f') + 'x':>9} "
            f"{'n/a' if cffi_ratio is None else format(cffi_ratio, '.1f') + 'x':>11}  {verdict}"
        )
    if not report["c_available"]:
        lines.append("(C backend not built: rtcp._codec_c does not import)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
