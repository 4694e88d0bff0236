"""Smoke test of the benchmark suite: ``python -m benchmarks --quick --tiny`` works.

It runs every benchmark once with tiny sizes, in a subprocess with a timeout, and checks the
JSON report has a positive number for every figure and ratio.  No timing assertions: the
figures depend on the machine; this only proves the suite runs end to end.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run_suite(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ)
    env.pop("RTCP_PURE_PYTHON", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--tiny", "--no-plots",
         "--output", str(tmp_path), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"suite failed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads((tmp_path / "latest.json").read_text())
    return proc, report


def _positive(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def test_quick_tiny_suite_reports_every_benchmark(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import suite
    finally:
        sys.path.remove(str(REPO))

    proc, report = _run_suite(tmp_path)

    figures = report["figures"]
    missing = [f.key for f in suite.FIGURES if f.key not in figures]
    assert not missing, f"figures missing from the report: {missing}"
    failed = {k: (e["value"], e["errors"]) for k, e in figures.items()
              if not _positive(e["value"]) or not all(_positive(v) for v in e["runs"])}
    assert not failed, f"benchmarks without a positive figure: {failed}"

    for key, _label, _num, _den, _target in suite.RATIOS:
        assert _positive(report["ratios"][key]["value"]), key
    assert {t["key"] for t in report["targets"]} == {key for _l, key, _t in suite.TARGETS}
    assert all(t["status"] in ("met", "not met") for t in report["targets"])

    assert report["codec"]["results"]
    table = (tmp_path / "latest.md").read_text()
    assert "| Benchmark |" in table and "| Target (issue 7) |" in table
    assert table in proc.stdout


def test_only_and_errors_are_reported_not_fatal(tmp_path: Path) -> None:
    """--only selects benchmarks, and a broken worker is an error row, not a crash."""
    env_flag = "RTCP_BENCH_TINY"
    os.environ[env_flag] = "1"
    try:
        # An impossible per-worker timeout makes the handshake workers fail.
        proc, report = _run_suite(tmp_path, "--only", "handshake,bulk_tcp",
                                  "--timeout", "0.001")
    finally:
        del os.environ[env_flag]
    assert set(report["figures"]) == {"handshakes_rtcp", "handshakes_tcp", "bulk_tcp"}
    for entry in report["figures"].values():
        assert entry["value"] is None and entry["errors"]
    assert "error" in (tmp_path / "latest.md").read_text()


@pytest.mark.parametrize("argv", [["--list"], ["--help"]])
def test_cli_help_and_list(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "goodput" in proc.stdout
