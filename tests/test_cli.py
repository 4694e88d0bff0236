"""The ``rtcp`` command line, run as subprocesses on 127.0.0.1.

Every run is bounded by a subprocess timeout (and the in-test peers by trio.fail_after).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from scapy.all import IP, TCP, rdpcap  # type: ignore[attr-defined]

import rtcp
from rtcp.cli import (
    DIGEST_SIZE,
    FILE_HEADER,
    FILE_MAGIC,
    FILE_VERSION,
    _rate,
    _session,
    build_parser,
)
from tests.netns import Background, lines, rtcp_command, rtcp_env, run_rtcp

LOOP = "127.0.0.1"


@pytest.fixture(scope="module")
def echo_server() -> Iterator[Background]:
    with Background("echo-server", "--host", LOOP, "--port", "0") as server:
        yield server
    assert server.returncode == 0, server.stderr  # Ctrl-C is a normal stop
    assert "Traceback" not in server.stderr


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int,
                          *fragments: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rtcp: error: "), result.stderr
    for fragment in fragments:
        assert fragment in err[0]


def assert_in_order(text: list[str], patterns: list[str]) -> None:
    """Each regex matches a line after the previous one's match."""
    pos = 0
    for pattern in patterns:
        for i in range(pos, len(text)):
            if re.search(pattern, text[i]):
                pos = i + 1
                break
        else:
            raise AssertionError(f"{pattern!r} not found after line {pos}:\n" + "\n".join(text))


# ---------------------------------------------------------------- help and usage


@pytest.mark.parametrize("command", [[], ["demo"], ["echo-server"], ["echo-client"], ["send"],
                                     ["recv"], ["relay"]])
def test_help(command: list[str]) -> None:
    result = run_rtcp(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: rtcp {' '.join(command)}".rstrip())
    if not command:
        for name in ("demo", "echo-server", "echo-client", "send", "recv", "relay"):
            assert name in result.stdout
    elif command != ["relay"]:
        for option in ("--trace", "--pcap", "--verbose", "--timeout", "--max-datagram"):
            assert option in result.stdout or command == ["demo"] and option == "--trace"


@pytest.mark.parametrize("args", [
    ["echo-client", LOOP, "70000", "hi"],
    ["echo-client", LOOP, "http", "hi"],
    ["recv", "--port", "-1", "--output", "x"],
    ["echo-server", "--port", "65536"],
    ["echo-client", LOOP, "7007", "--timeout", "0"],
    ["send", LOOP, "7007"],
    ["relay", "--listen", "0", "--to", "127.0.0.1:9", "--loss", "2"],
    [],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert_one_line_error(run_rtcp(*args), 2)


def test_a_missing_port_is_named_alone() -> None:
    # MESSAGE is optional (stdin is read without it); argparse listed it as required.
    result = run_rtcp("echo-client", LOOP)
    assert_one_line_error(result, 2, "required: PORT")
    assert "MESSAGE" not in result.stderr


# ---------------------------------------------------------------- runtime errors


def test_refused_is_one_line() -> None:
    port = closed_udp_port()
    result = run_rtcp("echo-client", LOOP, str(port), "hi")
    assert_one_line_error(result, 1, f"connection refused by {LOOP}:{port}")


def test_connect_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOP, 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_rtcp("echo-client", LOOP, str(port), "hi", "--timeout", "0.5")
    assert_one_line_error(result, 1, "timed out after 0.5 s")
    assert time.monotonic() - started < 10


def test_bad_address() -> None:
    assert_one_line_error(run_rtcp("echo-client", "no-such-host.invalid", "7007", "hi"), 1,
                          "cannot resolve 'no-such-host.invalid'")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    assert_one_line_error(run_rtcp("send", LOOP, "7007", str(missing)), 1,
                          f"cannot read {missing}")


def test_listen_address_in_use(echo_server: Background) -> None:
    result = run_rtcp("echo-server", "--host", LOOP, "--port", str(echo_server.port))
    assert_one_line_error(result, 1, "cannot listen on", "in use")
    # the relay names the address too
    result = run_rtcp("relay", "--listen", f"{LOOP}:{echo_server.port}", "--to", f"{LOOP}:9")
    assert_one_line_error(result, 1, f"cannot listen on {LOOP}:{echo_server.port}", "in use")


def test_send_to_an_echo_server_says_it_is_not_recv(echo_server: Background,
                                                    tmp_path: Path) -> None:
    """The echoed header used to be reported as a SHA-256 mismatch."""
    source = tmp_path / "small.txt"
    source.write_bytes(b"hello\n")
    result = run_rtcp("send", LOOP, str(echo_server.port), str(source))
    assert_one_line_error(result, 1, "sent the transfer back", "not 'rtcp recv'")


def test_recv_output_dir_missing(tmp_path: Path) -> None:
    result = run_rtcp("recv", "--port", "0", "--output", str(tmp_path / "no" / "f"))
    assert_one_line_error(result, 1, "cannot write")


# ---------------------------------------------------------------- echo


def test_echo_messages(echo_server: Background) -> None:
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), "hello", "world")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\nworld\n"
    assert result.stderr == ""


def test_echo_messages_may_follow_options(echo_server: Background) -> None:
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), "hello", "--timeout", "5",
                      "world")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\nworld\n", "")
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), "--timeout", "5", "--bogus",
                      "x")
    assert_one_line_error(result, 2, "unrecognized arguments: --bogus")


def test_echo_stdin(echo_server: Background) -> None:
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), input="one\ntwo two\nlast")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo two\nlast\n"


def test_echo_client_times_out_without_echo(tmp_path: Path) -> None:
    """A server that accepts but never answers (here: recv) cannot hang the client."""
    with Background("recv", "--host", LOOP, "--port", "0", "--output",
                    str(tmp_path / "f")) as receiver:
        started = time.monotonic()
        result = run_rtcp("echo-client", LOOP, str(receiver.port), "hi", "--timeout", "0.5")
    assert_one_line_error(result, 1, "timed out waiting for the echo")
    assert time.monotonic() - started < 10


def test_echo_client_ctrl_c_exits_130(echo_server: Background) -> None:
    proc = subprocess.Popen(rtcp_command("echo-client", LOOP, str(echo_server.port)),
                            env=rtcp_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"abc\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"abc\n"  # connected and echoing: now interrupt
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert b"Traceback" not in err


def test_trace_ladder(echo_server: Background) -> None:
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), "hi", "--trace")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    ladder = lines(result.stderr)
    assert re.match(rf"\[1\] [\d.]+:\d+ <-> {LOOP}:{echo_server.port}", ladder[0])
    assert_in_order(ladder, [
        r"^SYN_SENT +-- SYN seq=0 -->$",
        r"^ +<-- SYN,ACK seq=0 ack=1 -- +\(SYN_RECEIVED\)$",
        # The handshake's last ACK rides on the first data (Connection.connect).
        r"^ESTABLISHED +-- PSH,ACK seq=1 ack=1 len=2 --> +\(ESTABLISHED\)$",
        r"<-- PSH,ACK seq=1 ack=3 len=2 --",
        r"^FIN_WAIT_1 +-- FIN,ACK seq=3 ack=3 --> +\(CLOSE_WAIT\)$",
        r"<-- FIN,ACK seq=3 ack=4 -- +\(LAST_ACK\)$",
        r"^TIME_WAIT +-- ACK ack=4 --> +\(CLOSED\)$",
    ])


def test_pcap_parses_as_tcp(echo_server: Background, tmp_path: Path) -> None:
    pcap = tmp_path / "client.pcap"
    result = run_rtcp("echo-client", LOOP, str(echo_server.port), "hello", "--pcap", str(pcap))
    assert result.returncode == 0, result.stderr
    packets = [p for p in rdpcap(str(pcap))]
    assert all(IP in p and TCP in p for p in packets)
    client_port = packets[0][TCP].sport
    assert {p[TCP].dport for p in packets if p[TCP].sport == client_port} == {echo_server.port}
    assert all(p[IP].src == LOOP and p[IP].dst == LOOP for p in packets)

    def side(p: object) -> str:
        return "c" if p[TCP].sport == client_port else "s"  # type: ignore[index]

    tcp = [p[TCP] for p in packets]
    syn, synack, ack = tcp[:3]
    assert (side(packets[0]), str(syn.flags)) == ("c", "S")
    assert (side(packets[1]), str(synack.flags)) == ("s", "SA")
    isn_c, isn_s = syn.seq, synack.seq
    assert synack.ack == isn_c + 1
    # The handshake's last ACK rides on the first data (Connection.connect).
    assert (side(packets[2]), str(ack.flags), ack.seq, ack.ack) == ("c", "PA", isn_c + 1,
                                                                   isn_s + 1)

    n = len(b"hello")
    data = [(side(p), t) for p, t in zip(packets, tcp, strict=True) if bytes(t.payload)]
    assert [(s, bytes(t.payload)) for s, t in data] == [("c", b"hello"), ("s", b"hello")]
    assert data[0][1].seq == isn_c + 1
    assert (data[1][1].seq, data[1][1].ack) == (isn_s + 1, isn_c + 1 + n)

    fins = [(side(p), t) for p, t in zip(packets, tcp, strict=True) if "F" in str(t.flags)]
    assert [s for s, _ in fins] == ["c", "s"]  # the client closes first
    (_, fin_c), (_, fin_s) = fins
    assert fin_c.seq == isn_c + 1 + n
    assert (fin_s.seq, fin_s.ack) == (isn_s + 1 + n, isn_c + 2 + n)
    last = tcp[-1]
    assert side(packets[-1]) == "c" and str(last.flags) == "A"
    assert (last.seq, last.ack) == (isn_c + 2 + n, isn_s + 2 + n)
    for p, t in zip(packets, tcp, strict=True):  # every number within the connection's space
        isn_out, isn_in = (isn_c, isn_s) if side(p) == "c" else (isn_s, isn_c)
        assert 0 <= t.seq - isn_out <= n + 2
        if "A" in str(t.flags):
            assert 1 <= t.ack - isn_in <= n + 2


def test_demo() -> None:
    result = run_rtcp("demo")
    assert result.returncode == 0, result.stderr
    assert "echo: hello" in result.stdout
    assert_in_order(lines(result.stdout), [r"^SYN_SENT +-- SYN seq=0 -->", r"^ESTABLISHED",
                                           r"^\s+\.\.\. \d+ segments", r"^FIN_WAIT_1",
                                           r"^TIME_WAIT", r"^done: "])


# ---------------------------------------------------------------- file transfer


def sha256_lines(text: str) -> set[str]:
    return set(re.findall(r"^sha256 ([0-9a-f]{64}) ", text, re.MULTILINE))


def test_send_recv_file(tmp_path: Path) -> None:
    payload = os.urandom(1 << 20)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    target = tmp_path / "received.bin"
    with Background("recv", "--host", LOOP, "--port", "0", "--output", str(target)) as recv:
        sent = run_rtcp("send", LOOP, str(recv.port), str(source))
        recv.wait(timeout=30)
    expected = hashlib.sha256(payload).hexdigest()
    assert sent.returncode == 0, sent.stderr
    assert recv.returncode == 0, recv.stderr
    assert target.read_bytes() == payload
    assert sha256_lines(sent.stdout) == {expected}
    assert sha256_lines(recv.stdout) == {expected}
    assert "OK: SHA-256 matches" in sent.stdout and "OK: SHA-256 matches" in recv.stdout
    assert sent.stderr == "" and recv.stderr == ""  # no progress bar without a terminal


def test_recv_into_directory_keeps_name(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("rtcp\n" * 1000)
    out_dir = tmp_path / "inbox"
    out_dir.mkdir()
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(out_dir), "-q") as recv:
        sent = run_rtcp("send", LOOP, str(recv.port), str(source), "--quiet")
        recv.wait(timeout=30)
    assert sent.returncode == 0 and recv.returncode == 0, (sent.stderr, recv.stderr)
    assert (out_dir / "notes.txt").read_bytes() == source.read_bytes()
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]  # nothing else left behind


def test_recv_refuses_a_directory_in_the_files_place(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("rtcp\n" * 100)
    out_dir = tmp_path / "inbox"
    (out_dir / "notes.txt").mkdir(parents=True)  # where the file would go
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(out_dir), "-q") as recv:
        sent = run_rtcp("send", LOOP, str(recv.port), str(source), "--quiet")
        recv.wait(timeout=30)
    assert_one_line_error(recv.result(), 1, "is a directory")
    assert sent.returncode != 0 and "OK" not in sent.stdout  # the sender is not told "saved"
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]


def test_recv_writes_through_a_symlink_and_into_a_fifo(tmp_path: Path) -> None:
    """recv writes with open() as cp does: through a symlink (which stays a
    link) and into a FIFO or device, never replacing either by a file."""
    payload = os.urandom(200_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    real = tmp_path / "store" / "real.bin"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = bytearray()

    def read_fifo() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read_fifo)
    reader.start()
    for out in (link, fifo):
        with Background("recv", "--host", LOOP, "--port", "0", "-o", str(out), "-q") as recv:
            sent = run_rtcp("send", LOOP, str(recv.port), str(source), "--quiet")
            recv.wait(timeout=30)
        assert sent.returncode == 0 and recv.returncode == 0, (sent.stderr, recv.stderr)
    reader.join(timeout=30)
    assert link.is_symlink() and real.read_bytes() == payload
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and bytes(got) == payload
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.bin"]


@pytest.mark.parametrize("name", [b"two\nlines", b"\x1b[31mred", b"tab\there"])
def test_recv_refuses_control_characters_in_the_senders_name(tmp_path: Path,
                                                             name: bytes) -> None:
    """The sender picks the name: no newlines or terminal escapes into our
    file names, stdout lines or one-line errors."""
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(tmp_path)) as recv:
        trio.run(_fake_sender, recv.port, _header(3, name) + b"abc")
        recv.wait(timeout=30)
    assert_one_line_error(recv.result(), 1, "is not usable")
    assert list(tmp_path.iterdir()) == []


def test_recv_refuses_a_name_too_long_for_the_file_system(tmp_path: Path) -> None:
    long_name = "\N{GRINNING FACE}" * 70  # 280 bytes in UTF-8, 70 characters
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(tmp_path)) as recv:
        body = _header(10, long_name.encode()) + b"x" * 10
        trio.run(_fake_sender, recv.port, body)
        recv.wait(timeout=30)
    assert_one_line_error(recv.result(), 1, "file name longer than")
    assert list(tmp_path.iterdir()) == []


def _header(size: int, name: bytes = b"x.bin") -> bytes:
    return FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, len(name), size) + name


async def _fake_sender(port: int, body: bytes) -> bytes:
    """Send ``body`` raw to a recv, half-close, return what it answers before closing.

    A recv that rejects the transfer aborts (RST) as soon as it has read the
    header, which may be before our FIN goes out: that ends the reply too.
    """
    with trio.fail_after(15):
        stream = await rtcp.open_rtcp_stream(LOOP, port)
        reply = b""
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(body)
            await stream.send_eof()
            while data := await stream.receive_some():
                reply += data
        await stream.aclose()
        return reply


async def test_recv_short_file_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(target)) as recv:
        await _fake_sender(recv.port, _header(1000) + b"x" * 10)
        await trio.to_thread.run_sync(recv.wait)
    assert_one_line_error(recv.result(), 1, "short file", "10 of 1,000 bytes")
    assert list(tmp_path.iterdir()) == []  # no truncated file, no leftover part


async def test_recv_failing_into_an_existing_file_leaves_it_as_it_was(tmp_path: Path) -> None:
    """An interrupted transfer must not cost the file that was there: it is only
    replaced once the new content is complete and verified."""
    target = tmp_path / "precious.bin"
    target.write_bytes(b"the only copy")
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(target)) as recv:
        await _fake_sender(recv.port, _header(1000) + b"x" * 10)
        await trio.to_thread.run_sync(recv.wait)
    assert_one_line_error(recv.result(), 1, "short file", f"{target} is unchanged")
    assert target.read_bytes() == b"the only copy"
    assert list(tmp_path.iterdir()) == [target]  # no leftover part


def test_recv_replaces_an_existing_file_keeping_its_mode(tmp_path: Path) -> None:
    payload = os.urandom(100_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    target = tmp_path / "old.bin"
    target.write_bytes(b"old content, longer than nothing")
    target.chmod(0o640)
    with Background("recv", "--host", LOOP, "--port", "0", "--output", str(target)) as recv:
        sent = run_rtcp("send", LOOP, str(recv.port), str(source))
        recv.wait(timeout=30)
    assert sent.returncode == 0 and recv.returncode == 0, (sent.stderr, recv.stderr)
    assert target.read_bytes() == payload
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(tmp_path.iterdir()) == [target, source]


def test_recv_writes_a_hard_linked_file_in_place(tmp_path: Path) -> None:
    """Staging beside and renaming would leave the other link with the old
    content: a file with several links is written in place, as cp does."""
    payload = os.urandom(50_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    target = tmp_path / "linked.bin"
    target.write_bytes(b"old")
    os.link(target, tmp_path / "other-name.bin")
    with Background("recv", "--host", LOOP, "--port", "0", "--output", str(target)) as recv:
        sent = run_rtcp("send", LOOP, str(recv.port), str(source))
        recv.wait(timeout=30)
    assert sent.returncode == 0 and recv.returncode == 0, (sent.stderr, recv.stderr)
    assert (tmp_path / "other-name.bin").read_bytes() == payload == target.read_bytes()
    assert target.stat().st_nlink == 2


async def test_sigterm_mid_transfer_removes_the_partial_file(tmp_path: Path) -> None:
    """kill (SIGTERM) stops recv as Ctrl-C does: the file it created goes, exit 143."""
    target = tmp_path / "out.bin"
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(target)) as recv:
        with trio.fail_after(15):
            stream = await rtcp.open_rtcp_stream(LOOP, recv.port)
            await stream.send_all(_header(10_000_000) + b"x" * 100_000)
            # recv is writing: the file exists, partly (its last few KiB may
            # still be in recv's write buffer, so do not wait for all 100,000)
            while not target.exists() or target.stat().st_size < 50_000:
                await trio.sleep(0.02)
            recv.proc.send_signal(signal.SIGTERM)
            recv.proc.send_signal(signal.SIGTERM)  # impatient: must not cut the cleanup
            assert await trio.to_thread.run_sync(recv.wait) == 128 + signal.SIGTERM
            stream.abort()
    assert recv.stderr == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reader", ["none", "stalled"])
async def test_a_stuck_fifo_does_not_freeze_recv(tmp_path: Path, reader: str) -> None:
    """A FIFO with no reader yet (open waits) or one that stopped reading (write
    waits) must leave recv's event loop running: SIGTERM still stops it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    held = []
    if reader == "stalled":  # opens, then never reads: the pipe fills
        held.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    try:
        with Background("recv", "--host", LOOP, "--port", "0", "-o", str(fifo),
                        "--timeout", "1") as recv:
            with trio.fail_after(20):
                stream = await rtcp.open_rtcp_stream(LOOP, recv.port)
                await stream.send_all(_header(10_000_000, b"pipe") + b"z" * 1_000_000)
                # recv is now stuck on the FIFO: waiting on its own output is
                # no stall of the sender's, so --timeout 1 does not end it.
                await trio.sleep(2.5)
                assert recv.proc.poll() is None, recv.proc.stderr.read()
                recv.proc.send_signal(signal.SIGTERM)
                assert await trio.to_thread.run_sync(recv.wait, 10) == 128 + signal.SIGTERM
                stream.abort()
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # a FIFO is never removed
    finally:
        for fd in held:
            os.close(fd)


def test_sigterm_stops_a_server_cleanly() -> None:
    with Background("echo-server", "--host", LOOP, "--port", "0") as server:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    assert "Traceback" not in server.stderr


#: Runs rtcp.cli._until_sigterm in its own process: the command gets a SIGTERM,
#: and a second one arrives just as the command is over and the signal receiver
#: is about to close (the watcher's nursery is being cancelled).
_SECOND_SIGTERM = """
import os, signal, trio
from rtcp import cli

async def command(session):
    os.kill(os.getpid(), signal.SIGTERM)
    await trio.sleep(5)

cancel, calls = trio.CancelScope.cancel, []
def spy(scope, *args, **kwargs):
    calls.append(scope)
    if len(calls) == 2:  # the watcher's nursery: the receiver closes next
        os.kill(os.getpid(), signal.SIGTERM)
    return cancel(scope, *args, **kwargs)
trio.CancelScope.cancel = spy

async def main():
    try:
        await cli._until_sigterm(command, None)
    except cli.Terminated:
        print("terminated", flush=True)
trio.run(main)
"""


def test_second_sigterm_while_leaving_does_not_kill_the_process() -> None:
    """Leaving trio's signal receiver restores the handler it found and
    re-raises queued signals: with the default action there, the second SIGTERM
    killed recv with -15 instead of letting it exit 143 after its cleanup."""
    proc = subprocess.run([sys.executable, "-c", _SECOND_SIGTERM], capture_output=True,
                          text=True, timeout=30, env=rtcp_env())
    assert (proc.returncode, proc.stdout) == (0, "terminated\n"), proc.stderr


async def test_recv_digest_mismatch_fails(tmp_path: Path) -> None:
    body = b"y" * 5000
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(tmp_path / "o")) as recv:
        reply = await _fake_sender(recv.port, _header(len(body)) + body + bytes(DIGEST_SIZE))
        await trio.to_thread.run_sync(recv.wait)
    assert reply == hashlib.sha256(body).digest()  # it still tells the sender what it got
    assert_one_line_error(recv.result(), 1, "SHA-256 mismatch", "nothing saved")
    assert list(tmp_path.iterdir()) == []
    # into an existing file: it says the file is unchanged, and it is
    (tmp_path / "o").write_bytes(b"keep me")
    with Background("recv", "--host", LOOP, "--port", "0", "-o", str(tmp_path / "o")) as recv:
        await _fake_sender(recv.port, _header(len(body)) + body + bytes(DIGEST_SIZE))
        await trio.to_thread.run_sync(recv.wait)
    assert_one_line_error(recv.result(), 1, "SHA-256 mismatch", "is unchanged")
    assert (tmp_path / "o").read_bytes() == b"keep me"
    assert list(tmp_path.iterdir()) == [tmp_path / "o"]


async def test_send_detects_wrong_reply(tmp_path: Path) -> None:
    """A receiver answering with a different digest makes send exit 1."""
    source = tmp_path / "a.bin"
    source.write_bytes(b"z" * 3000)

    async def bad_receiver(stream: rtcp.RtcpStream) -> None:
        while await stream.receive_some():
            pass
        await stream.send_all(b"\x01" * DIGEST_SIZE)
        await stream.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                lambda task_status: rtcp.serve_rtcp(bad_receiver, 0, host=LOOP,
                                                    task_status=task_status))
            port = listener.local_address[1]
            result = await trio.to_thread.run_sync(
                lambda: run_rtcp("send", LOOP, str(port), str(source)))
            nursery.cancel_scope.cancel()
    assert_one_line_error(result, 1, "SHA-256 mismatch")


@pytest.mark.parametrize(("given", "v4", "v6"), [(None, 1472, 1452), ("65507", 65507, 65487),
                                                  ("90", 90, 84)])
def test_max_datagram_option_covers_ipv6_too(given: str | None, v4: int, v6: int) -> None:
    """--max-datagram 65507 must also lift IPv6 (``::1``): it was IPv4 only, so
    a transfer over ::1 kept 1452-byte datagrams at a third of the speed."""
    argv = ["echo-client", "::1", "7", "hi"] + (["--max-datagram", given] if given else [])
    session = _session(build_parser().parse_args(argv), None)
    try:
        assert (session.config.max_datagram, session.config.max_datagram_ipv6) == (v4, v6)
    finally:
        session.close()


@pytest.mark.parametrize(("nbytes", "seconds", "shown"), [
    (6, 0.003, "(2.00 kB/s)"), (500, 1.0, "(500.00 B/s)"), (20_000_000, 0.2, "(100.00 MB/s)")])
def test_rates_use_a_unit_that_shows_them(nbytes: int, seconds: float, shown: str) -> None:
    """A tiny transfer printed '0.00 MB/s'."""
    assert _rate(nbytes, seconds).endswith(shown)


def test_version_names_the_codec_in_use() -> None:
    result = run_rtcp("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rtcp {rtcp.__version__} (codec: {rtcp.segment.BACKEND})"


def test_unknown_option_points_to_the_subcommand_help() -> None:
    assert_one_line_error(run_rtcp("relay", "--listen", "9", "--to", "127.0.0.1:9", "-v"), 2,
                          "unrecognized arguments: -v", "'rtcp relay --help'")


def test_recv_into_a_missing_directory_with_a_slash_fails(tmp_path: Path) -> None:
    """`--output newdir/` means a directory, as for cp: never a file named newdir."""
    out = tmp_path / "newdir"
    assert_one_line_error(run_rtcp("recv", "--port", "0", "--output", f"{out}/"), 1,
                          "not a directory")
    assert not out.exists()


def test_recv_write_failure_names_the_file() -> None:
    """A full disk (/dev/full) is reported with the path, not a bare errno text."""
    with Background("recv", "--host", LOOP, "--port", "0", "-o", "/dev/full") as recv:
        trio.run(_fake_sender, recv.port, _header(100_000, b"f") + b"q" * 100_000)
        recv.wait(timeout=30)
    assert_one_line_error(recv.result(), 1, "cannot write /dev/full", "No space left")


async def test_bracketed_ipv6_host_is_accepted() -> None:
    """Servers print [::1]:port; the same text must work as a client's HOST."""
    with Background("echo-server", "--host", "::1", "--port", "0") as server:
        port = re.findall(r"\[::1\]:(\d+)", server.first_line)[0]
        result = await trio.to_thread.run_sync(
            lambda: run_rtcp("echo-client", "[::1]", port, "hi"))
    assert result.returncode == 0 and "hi" in result.stdout, result.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_send_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """send announces the size first: a FIFO (whose open would block until a
    writer comes) or a device is refused at once, before any connection."""
    if kind == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    result = run_rtcp("send", LOOP, "9", str(source), timeout=20)
    assert_one_line_error(result, 1, "not a regular file")
