"""Helpers for running the ``rtcp`` command line in subprocesses and network namespaces.

Subprocesses use this interpreter and find the package through PYTHONPATH (the repo root),
so the tests need no installation. :class:`HostPair` builds two namespaces joined by a
veth pair: two hosts on one machine, each with its own address.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rtcp_env() -> dict[str, str]:
    """The environment for a subprocess that must import rtcp from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    env.pop("COLUMNS", None)
    return env


def rtcp_command(*args: str, netns: str | None = None) -> list[str]:
    """``python -m rtcp ARGS``, run inside network namespace ``netns`` when given."""
    cmd = [sys.executable, "-m", "rtcp", *args]
    return ["ip", "netns", "exec", netns, *cmd] if netns else cmd


def run_rtcp(*args: str, netns: str | None = None, timeout: float = 30.0,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (bounded by ``timeout``) and capture its output."""
    return subprocess.run(rtcp_command(*args, netns=netns), env=rtcp_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          input=input if input is not None else "")


class Background:
    """A long-running CLI process (a server) whose first stdout line names its port.

    Leaving the ``with`` block sends SIGINT (Ctrl-C) and collects the exit status in
    ``returncode``; a process that ignores it is killed.
    """

    def __init__(self, *args: str, netns: str | None = None, startup: float = 15.0) -> None:
        self.proc = subprocess.Popen(rtcp_command(*args, netns=netns), env=rtcp_env(),
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stdout = self.stderr = self.first_line = ""
        self.returncode: int | None = None
        self.first_line = self._read_line(startup)
        ports = re.findall(r":(\d+)\b", self.first_line)
        if not ports:
            self.stop()
            raise AssertionError(f"no port in {self.first_line!r}; stderr: {self.stderr}")
        self.port = int(ports[0])

    def _read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise AssertionError(f"no output within {timeout} s")
        return self.proc.stdout.readline()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own."""
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout, self.stderr = self.first_line + out, err
        self.returncode = self.proc.returncode
        return self.returncode

    def result(self) -> subprocess.CompletedProcess[str]:
        """The finished process as ``subprocess.run`` would report it."""
        assert self.returncode is not None, "the process has not been waited for"
        return subprocess.CompletedProcess(self.proc.args, self.returncode, self.stdout,
                                           self.stderr)

    def stop(self, timeout: float = 10.0) -> int:
        """Ctrl-C, then wait; kill if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait(timeout)
            raise

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=check)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot create network namespaces, or None if it can."""
    if shutil.which("ip") is None:
        return "no 'ip' binary (install iproute2)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    return None


class HostPair:
    """Two network namespaces joined by a veth pair: ``a`` at ``addr_a``, ``b`` at ``addr_b``.

    Names include the pid so parallel runs do not collide. :meth:`destroy` kills what
    still runs inside and deletes both namespaces (which removes the veth pair).
    """

    def __init__(self, addr_a: str = "10.77.0.1", addr_b: str = "10.77.0.2",
                 prefix_len: int = 24) -> None:
        tag = f"rtcp{os.getpid()}"
        self.a, self.b = f"{tag}a", f"{tag}b"
        self.addr_a, self.addr_b = addr_a, addr_b
        veth_a, veth_b = f"rv{os.getpid()}a", f"rv{os.getpid()}b"
        self._created: list[str] = []
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                self._created.append(ns)
            _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
            for ns, dev, addr in ((self.a, veth_a, addr_a), (self.b, veth_b, addr_b)):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{addr}/{prefix_len}", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            _ip("link", "del", veth_a, check=False)  # if it never moved into a namespace
            self.destroy()
            raise

    def destroy(self) -> None:
        for ns in self._created:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            for _ in range(50):
                if _ip("netns", "del", ns, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        self._created.clear()

    def wait_until_up(self, timeout: float = 5.0) -> None:
        """Wait for both veth ends to report carrier (LOWER_UP)."""
        deadline = time.monotonic() + timeout
        for ns in (self.a, self.b):
            while "LOWER_UP" not in _ip("-n", ns, "link", "show", "type", "veth").stdout:
                if time.monotonic() > deadline:
                    raise AssertionError(f"veth in {ns} never came up")
                time.sleep(0.05)


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]
