"""The requests being handled right now, so that shutdown can give them one deadline.

aiohttp's own ``shutdown_timeout`` is not that deadline (checked against
aiohttp 3.14): ``on_shutdown`` runs *before* the wait, the wait is applied
twice per connection (once for the handler, then again after "cancelling"
the request body, which a handler that only writes never notices), and the
handler is then cancelled without being awaited, while the cleanup contexts
already close the store under it.  So the server waits here instead, from
``on_shutdown``: up to the grace period for the requests in flight, then it
cancels the rest, closes their connections and awaits them; aiohttp then
finds nothing left to wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["InFlightRequests"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How long cancelled handlers get to unwind (close upstream, free the slot).
_UNWIND = 2.0


class InFlightRequests:
    def __init__(self) -> None:
        self._requests: dict[asyncio.Task[Any], web.Request] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def requests(self) -> list[web.Request]:
        return list(self._requests.values())

    def middleware(self) -> Middleware:
        @web.middleware
        async def track_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - aiohttp always runs handlers in a task
                return await handler(request)
            self._requests[task] = request
            try:
                return await handler(request)
            finally:
                self._requests.pop(task, None)

        return track_in_flight

    async def close(self, grace: float) -> list[web.Request]:
        """Wait up to ``grace`` seconds for the requests in flight, then cut the rest off.

        Returns the requests that were cut off.  Their clients see the
        connection close: a body shorter than announced, never a clean end.
        """
        if self._requests and grace > 0:
            await asyncio.wait(list(self._requests), timeout=grace)
        cut = list(self._requests.items())
        for task, request in cut:
            task.cancel()
            if request.transport is not None:
                request.transport.close()
        if cut:
            _, stuck = await asyncio.wait([task for task, _ in cut], timeout=_UNWIND)
            if stuck:
                log.warning("shutdown: %d request(s) did not stop within %g s of being "
                            "cancelled", len(stuck), _UNWIND)
        return [request for _, request in cut]
