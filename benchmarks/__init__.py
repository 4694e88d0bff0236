"""rtcp benchmarks; run with ``python -m benchmarks``."""
