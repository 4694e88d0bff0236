"""SendBuffer against a plain bytes model: any mix of writes, slices and releases."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.core.sendbuf import CHUNK_MIN, VIEW_MIN, SendBuffer

START = 2**32 - 5000  # unwrapped sequence numbers: no wrap here, but large


def payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


ops = st.lists(
    st.tuples(
        st.sampled_from(["small", "large", "view", "bview", "slice", "release"]),
        st.integers(0, 3 * CHUNK_MIN),
        st.integers(0, 3 * CHUNK_MIN),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**32))
def test_matches_a_bytes_model(ops: list[tuple[str, int, int]], seed: int) -> None:
    rng = random.Random(seed)
    buf = SendBuffer(START)
    model = b""  # everything ever queued
    for op, a, b in ops:
        if op == "small":
            data = payload(rng, a % CHUNK_MIN)
            buf.append(bytearray(data))
            model += data
        elif op in ("large", "view"):
            data = payload(rng, CHUNK_MIN + a)
            buf.append(data if op == "large" else memoryview(bytearray(data)))
            model += data
        elif op == "bview":  # part of a larger bytes object, as send_all slices it
            data = payload(rng, CHUNK_MIN + a + b)
            buf.append(memoryview(data)[b:])
            model += data[b:]
        elif op == "slice" and len(buf):
            lo = buf.start + a % len(buf)
            hi = min(buf.end, lo + 1 + b)
            got = buf.slice(lo, hi)
            assert bytes(got) == model[lo - START:hi - START]
            if len(got) <= VIEW_MIN:
                assert type(got) is bytes
        elif op == "release" and len(buf):
            upto = buf.start + a % (len(buf) + 1)
            buf.release(upto)
            assert buf.start == upto
        assert buf.end == START + len(model)
        assert len(buf) == buf.end - buf.start


def test_large_writes_are_viewed_not_copied() -> None:
    data = bytes(range(256)) * 256  # 64 KiB, bytes: kept as is
    buf = SendBuffer(100)
    buf.append(data)
    view = buf.slice(100 + 1000, 100 + 1000 + 8000)
    assert isinstance(view, memoryview) and view.obj is data
    assert buf.slice(100, 100 + len(data)) is data


def test_views_of_bytes_are_kept_and_mutable_ones_copied() -> None:
    data = bytes(range(256)) * 256
    buf = SendBuffer(0)
    caller_view = memoryview(data)[100:]
    buf.append(caller_view)  # cannot change: no copy
    caller_view.release()  # the caller may: the buffer keeps a view of its own
    view = buf.slice(1000, 9000)
    assert isinstance(view, memoryview) and view.obj is data
    assert bytes(view) == data[1100:9100]
    mutable = bytearray(data)
    buf.append(memoryview(mutable))
    mutable[:10] = bytes(10)  # the caller reuses its buffer after send_all
    start = len(data) - 100
    assert bytes(buf.slice(start, start + 20)) == data[:20]
    assert bytes(buf.slice(start - 10, start + 10)) == data[-10:] + data[:10]


def test_released_chunks_are_freed_at_once() -> None:
    buf = SendBuffer(0)
    for _ in range(3):
        buf.append(bytes(CHUNK_MIN))
    buf.release(2 * CHUNK_MIN)
    assert [len(c) for c in buf._chunks] == [0, 0, CHUNK_MIN]  # no reference kept
    buf.append(b"abc")  # into the tail
    buf.release(3 * CHUNK_MIN + 1)
    assert bytes(buf.slice(3 * CHUNK_MIN + 1, 3 * CHUNK_MIN + 3)) == b"bc"


def test_many_small_writes_form_chunks_and_compact() -> None:
    buf = SendBuffer(0)
    total = 0
    for i in range(5000):
        buf.append(bytes([i % 256]) * 100)
        total += 100
        buf.release(total - 50)
    assert len(buf) == 50 and len(buf._chunks) < 70  # frozen tails, compacted
    assert buf.slice(total - 50, total) == bytes([4999 % 256]) * 50
