"""Profile one benchmark measurement: every worker process under py-spy.

    python -m benchmarks.profile bulk_rtcp_c [--bytes N] [--rate HZ] [--output DIR]
    python -m benchmarks.profile latency_rtcp --format flamegraph

Runs the measurement exactly as the suite does (same workers, same sizes unless
overridden), with each process started by ``py-spy record``.  With the default
``--format raw`` it prints, per process, the functions that hold the CPU: *self*
(the sampled frame itself) and *total* (anywhere on the stack), counted over the
non-idle samples, so a trio task waiting in epoll costs nothing.  Collapsed stacks
are kept in ``DIR/NAME.ROLE.txt`` (feed them to flamegraph.pl or speedscope);
``--format flamegraph`` writes SVGs instead.  Needs py-spy (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

from . import suite


def _frame_name(frame: str) -> str:
    """``func (path:line)`` -> ``path:func`` (line numbers dropped: -F gives def lines)."""
    func, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    return f"{path}:{func}" if func else frame


def summarize(path: Path, top: int = 25, focus: str = "rtcp/") -> str:
    """Self and total sample shares per function of a py-spy ``raw`` file."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    if not samples:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {samples} samples (CPU-busy only)",
           f"  {'self':>6} {'total':>6}  function   [top by self time]"]
    for name, n in self_counts.most_common(top):
        out.append(f"  {n / samples:6.1%} {total_counts[name] / samples:6.1%}  {name}")
    out.append(f"  {'self':>6} {'total':>6}  function   [{focus} functions by total time]")
    focused = [(n, name) for name, n in total_counts.items() if focus in name]
    for n, name in sorted(focused, reverse=True)[:top]:
        out.append(f"  {self_counts[name] / samples:6.1%} {n / samples:6.1%}  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a measurement name (python -m benchmarks --list)")
    parser.add_argument("--quick", action="store_true", help="the suite's --quick sizes")
    parser.add_argument("--bytes", type=int, help="override the bytes of a bulk/goodput run")
    parser.add_argument("--count", type=int, help="override handshakes / round trips")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (250)")
    parser.add_argument("--format", choices=("raw", "flamegraph", "speedscope"), default="raw")
    parser.add_argument("--output", type=Path, default=Path("/tmp/rtcp-profile"))
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--native", action="store_true",
                        help="also sample C frames (py-spy --native): memcpy, sendto, the codec")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    pyspy = shutil.which("py-spy")
    if pyspy is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    mode = "quick" if args.quick else "full"
    ms = {m.name: m for m in suite.build_measurements(mode, args.timeout, "data")}
    if args.name not in ms:
        parser.error(f"unknown measurement {args.name!r}; one of {', '.join(ms)}")
    m = ms[args.name]
    if args.bytes is not None:
        m.params["bytes"] = args.bytes
    if args.count is not None:
        m.params["count"] = args.count
    args.output.mkdir(parents=True, exist_ok=True)
    ext = {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}[args.format]
    files: list[Path] = []

    def wrap(proc_name: str) -> list[str]:
        role = proc_name.rpartition(" ")[2] if " " in proc_name else "worker"
        out = args.output / f"{m.name}.{role}.{ext}"
        files.append(out)
        return [pyspy, "record", "-r", str(args.rate), "-F", *(["--native"] if args.native else []),
                "--format", args.format, "-o", str(out), "--"]

    result = suite.run_measurement(m, wrap=wrap)
    figures = m.extract(result)
    print(f"{m.name}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
          + " (under py-spy, so slower than the suite's figure)")
    for path in files:
        if args.format == "raw" and path.exists():
            print()
            print(summarize(path, args.top))
        else:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
