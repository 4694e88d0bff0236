"""The echo demo and a file transfer between two hosts: two network namespaces and a veth pair.

Skips only where namespaces cannot be made (not root, no ``ip``); with ``CI`` set it
fails instead, because CI runs as root and must run it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Background, HostPair, namespaces_unavailable, run_rtcp

pytestmark = pytest.mark.netns


def _cannot(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the two-host test, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def hosts() -> Iterator[HostPair]:
    reason = namespaces_unavailable()
    if reason is not None:
        _cannot(reason)
    try:
        pair = HostPair()
    except Exception as exc:  # e.g. a container without CAP_SYS_ADMIN
        stderr = getattr(exc, "stderr", "") or ""
        _cannot(f"cannot create network namespaces: {exc} {stderr.strip()}")
    try:
        pair.wait_until_up()
        yield pair
    finally:
        pair.destroy()


def test_echo_between_two_hosts(hosts: HostPair) -> None:
    with Background("echo-server", "--host", hosts.addr_a, "--port", "7007",
                    netns=hosts.a) as server:
        assert f"listening on {hosts.addr_a}:7007" in server.first_line
        result = run_rtcp("echo-client", hosts.addr_a, "7007", "hello", "world", "--trace",
                          netns=hosts.b)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nworld\n"
    assert re.search(rf"^\[1\] [\d.]+:\d+ <-> {re.escape(hosts.addr_a)}:7007", result.stderr)
    assert "TIME_WAIT" in result.stderr
    assert server.returncode == 0, server.stderr
    assert f"{hosts.addr_b}:" in server.stdout  # the server saw the other host's address
    assert "closed, 10 bytes echoed" in server.stdout


def test_file_transfer_between_two_hosts(hosts: HostPair, tmp_path: Path) -> None:
    payload = os.urandom(4 << 20)
    source = tmp_path / "four.bin"
    source.write_bytes(payload)
    target = tmp_path / "received.bin"
    with Background("recv", "--host", hosts.addr_a, "--port", "7008", "--output", str(target),
                    netns=hosts.a) as recv:
        sent = run_rtcp("send", hosts.addr_a, "7008", str(source), netns=hosts.b, timeout=60)
        recv.wait(timeout=60)
    digest = hashlib.sha256(payload).hexdigest()
    assert sent.returncode == 0, sent.stderr
    assert recv.returncode == 0, recv.stderr
    for out in (sent.stdout, recv.stdout):
        assert f"sha256 {digest}" in out and "OK: SHA-256 matches" in out
    assert f"from {hosts.addr_b}:" in recv.stdout
    assert target.read_bytes() == payload
