"""Which bytes of a cache file are on disk: a sorted list of disjoint ``[start, end)``."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

__all__ = ["Ranges"]


class Ranges:
    """Byte ranges held, merged as they are added (a track has a handful at most:
    one per seek beyond what was fetched)."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # Every range touching or overlapping [start, end) merges into one.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def held_from(self, pos: int) -> int:
        """How many bytes from ``pos`` on are held without a hole (0: none)."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self._ends[i] > pos:
            return self._ends[i] - pos
        return 0

    def next_gap(self, pos: int, size: int) -> tuple[int, int] | None:
        """The first missing ``[start, end)`` at or after ``pos``, else the first one
        before it (wrapping around); None when all of ``[0, size)`` is held."""
        for origin in (pos, 0):
            start = origin + self.held_from(origin)
            if start < size:
                i = bisect.bisect_right(self._starts, start)
                end = self._starts[i] if i < len(self._starts) else size
                return start, min(end, size)
        return None

    def covers(self, size: int) -> bool:
        return self.held_from(0) >= size

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def as_tuple(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"Ranges({list(self.as_tuple())})"
