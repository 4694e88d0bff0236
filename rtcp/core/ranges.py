"""Sets of half-open integer ranges, for SACK blocks and reassembly."""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    """Disjoint, sorted, coalesced ``[start, end)`` ranges.

    Used by the receiver (which bytes beyond RCV.NXT it holds, for SACK blocks)
    and by the sender (which bytes the peer SACKed).  Sizes stay small: the
    number of ranges is bounded by the number of holes.  ``total`` (bytes
    held) is nonzero exactly when the set is not empty: hot paths test it
    rather than ``bool()``, which is a Python-level call.
    """

    __slots__ = ("_starts", "_ends", "total")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.total = 0

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; return how many bytes were new."""
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start)  # first range that may touch
        j = i
        new_start, new_end = start, end
        covered = 0
        while j < len(starts) and starts[j] <= end:
            s, e = starts[j], ends[j]
            covered += min(e, end) - max(s, start) if min(e, end) > max(s, start) else 0
            new_start = min(new_start, s)
            new_end = max(new_end, e)
            j += 1
        old = sum(ends[k] - starts[k] for k in range(i, j))
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        self.total += (new_end - new_start) - old
        return (end - start) - covered

    def range_at(self, point: int) -> tuple[int, int] | None:
        """The range holding ``point``, if any."""
        i = bisect.bisect_right(self._starts, point) - 1
        if i >= 0 and point < self._ends[i]:
            return self._starts[i], self._ends[i]
        return None

    def remove_below(self, point: int) -> None:
        """Forget everything below ``point`` (e.g. once SND.UNA passes it)."""
        starts, ends = self._starts, self._ends
        while starts and ends[0] <= point:
            self.total -= ends[0] - starts[0]
            del starts[0], ends[0]
        if starts and starts[0] < point:
            self.total -= point - starts[0]
            starts[0] = point

    def remove(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` from the set."""
        if end <= start:
            return
        kept = [(s, e) for s, e in self if e <= start or s >= end]
        for s, e in self:
            if s < start < e:
                kept.append((s, start))
            if s < end < e:
                kept.append((end, e))
        kept.sort()
        self._starts = [s for s, _ in kept]
        self._ends = [e for _, e in kept]
        self.total = sum(e - s for s, e in kept)

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self.total = 0

    def touches(self, start: int, end: int) -> bool:
        """Whether adding ``[start, end)`` would merge with an existing range."""
        i = bisect.bisect_left(self._ends, start)
        return i < len(self._starts) and self._starts[i] <= end

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any byte of ``[start, end)`` is in the set."""
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    def contains(self, start: int, end: int) -> bool:
        """Whether all of ``[start, end)`` is in the set."""
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def covered_above(self, point: int) -> int:
        """Bytes in the set at or above ``point``."""
        n = 0
        for s, e in zip(reversed(self._starts), reversed(self._ends), strict=True):
            if e <= point:
                break
            n += e - max(s, point)
        return n

    @property
    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    @property
    def last_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def holes(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The gaps of the set inside ``[start, end)``, in order."""
        pos = start
        for s, e in self:
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                yield pos, min(s, end)
            pos = max(pos, e)
            if pos >= end:
                return
        if pos < end:
            yield pos, end
