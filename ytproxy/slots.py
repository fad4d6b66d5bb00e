"""The cap on concurrent streams: a full house answers 503 at once, before any work."""

from __future__ import annotations

import asyncio

__all__ = ["StreamSlots"]


class StreamSlots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.rejected = 0
        self._lock = asyncio.Lock()

    async def try_acquire(self) -> bool:
        async with self._lock:
            if self.in_use >= self.capacity:
                self.rejected += 1
                return False
            self.in_use += 1
            return True

    async def release(self) -> None:
        async with self._lock:
            self.in_use = max(0, self.in_use - 1)
