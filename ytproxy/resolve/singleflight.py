"""Single-flight: concurrent callers asking for the same key share one in-flight call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The first caller for a key runs the call; the others await its result.

    The call runs in its own task, so a caller that is cancelled (a client that
    hung up) does not cancel the work the other callers are waiting for.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self.calls = 0
        self.joins = 0

    def in_flight(self, key: K) -> bool:
        return key in self._inflight

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        fut = self._inflight.get(key)
        if fut is not None:
            self.joins += 1
            return await asyncio.shield(fut)
        self.calls += 1
        task = asyncio.ensure_future(call())
        self._inflight[key] = task
        task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        # Consume the exception even when every waiter has gone away.
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return await asyncio.shield(task)
