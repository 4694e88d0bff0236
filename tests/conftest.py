"""Shared fixtures: every network test is bounded and stays on loopback."""

from __future__ import annotations

import os

import pytest

# Run the C codec when it is built; RTCP_PURE_PYTHON=1 forces the fallback.
os.environ.setdefault("RTCP_TEST", "1")


@pytest.fixture
def autojump_clock():
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)
