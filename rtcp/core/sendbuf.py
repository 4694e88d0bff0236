"""The send buffer: bytes queued for sending and not yet acknowledged.

Addressed by unwrapped sequence number.  Large writes are kept as immutable
chunks (``bytes``, or a byte view of ``bytes``, which cannot change either;
copying such views cost 13% of the instructions per 64 KiB segment), so a
segment's payload can be a view into one (no copy), acknowledged data is
dropped chunk by chunk (no memmove), and growing the buffer never
reallocates what is already queued.  A bytearray buffer did all
three: with 64 KiB datagrams those copies were a fifth of the sender's CPU.
Small writes go to a mutable tail, frozen into a chunk once it is large, so a
stream of tiny writes neither makes tiny chunks nor copies a big one each time.
"""

from __future__ import annotations

import bisect

from ..segment import VIEW_MIN

#: Writes of at least this many bytes become chunks of their own; the tail is
#: frozen into a chunk when it reaches this size.
CHUNK_MIN = 16384


class SendBuffer:
    """Bytes ``[start, end)`` of the sequence space, oldest first."""

    __slots__ = ("_chunks", "_head", "_seqs", "_tail", "_tail_seq", "end", "start")

    def __init__(self, start: int) -> None:
        #: First byte not yet acknowledged, and one past the last byte queued.
        self.start = start
        self.end = start
        self._chunks: list[bytes | memoryview] = []
        self._seqs: list[int] = []  # sequence number of each chunk's first byte
        self._head = 0  # chunks before this one are acknowledged (and emptied)
        self._tail = bytearray()
        self._tail_seq = start  # of _tail[0]; the chunks end here

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``: copied, unless it cannot change (``bytes``, or a
        byte view of ``bytes``, the usual way to send part of a large object)."""
        n = len(data)
        if n >= CHUNK_MIN:
            if self._tail:
                self._freeze_tail()
            if data.__class__ is memoryview and data.obj.__class__ is bytes \
                    and data.format == "B" and data.ndim == 1 \
                    and data.c_contiguous:  # type: ignore[union-attr]
                data = data[:]  # our own view: the caller may release theirs
            elif data.__class__ is not bytes:
                data = bytes(data)
            self._chunks.append(data)  # type: ignore[arg-type]
            self._seqs.append(self.end)
            self._tail_seq = self.end + n
        elif n:
            self._tail += data
            if len(self._tail) >= CHUNK_MIN:
                self._freeze_tail()
        self.end += n

    def _freeze_tail(self) -> None:
        self._chunks.append(bytes(self._tail))
        self._seqs.append(self._tail_seq)
        self._tail_seq += len(self._tail)
        self._tail = bytearray()

    def slice(self, lo: int, hi: int) -> bytes | memoryview:
        """Bytes ``[lo, hi)``, which must be queued: a view into a chunk when
        large and within one, else a copy."""
        tail_seq = self._tail_seq
        if lo >= tail_seq:
            return bytes(self._tail[lo - tail_seq:hi - tail_seq])
        seqs = self._seqs
        i = bisect.bisect_right(seqs, lo, self._head) - 1
        chunk = self._chunks[i]
        first = seqs[i]
        if hi <= first + len(chunk):
            a, b = lo - first, hi - first
            if b - a > VIEW_MIN:
                return chunk if b - a == len(chunk) else memoryview(chunk)[a:b]
            return bytes(chunk[a:b])
        parts = []  # across chunks (and maybe into the tail): one copy
        pos = lo
        while pos < hi:
            if pos >= tail_seq:
                parts.append(self._tail[pos - tail_seq:hi - tail_seq])
                break
            chunk, first = self._chunks[i], seqs[i]
            stop = min(hi, first + len(chunk))
            parts.append(chunk[pos - first:stop - first])
            pos = stop
            i += 1
        return b"".join(parts)

    def release(self, upto: int) -> None:
        """Forget everything before ``upto`` (acknowledged)."""
        upto = min(upto, self.end)
        if upto <= self.start:
            return
        self.start = upto
        seqs, chunks = self._seqs, self._chunks
        head, n = self._head, len(seqs)
        while head < n and (seqs[head + 1] if head + 1 < n else self._tail_seq) <= upto:
            chunks[head] = b""  # free it now, not at the next compaction
            head += 1
        if head >= 64 and 2 * head >= n:
            del chunks[:head], seqs[:head]
            head = 0
        self._head = head
        if upto > self._tail_seq:
            del self._tail[:upto - self._tail_seq]
            self._tail_seq = upto
