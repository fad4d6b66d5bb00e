"""The cap on concurrent streams: a full house answers 503 at once, before any work."""

from __future__ import annotations

__all__ = ["StreamSlots"]


class StreamSlots:
    """A counter of streams in progress.  No lock: the event loop runs one
    callback at a time, and nothing here awaits."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.rejected = 0

    def try_acquire(self) -> bool:
        if self.in_use >= self.capacity:
            self.rejected += 1
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)
