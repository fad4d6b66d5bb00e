"""A listener's plays, counted in the store without making the listener wait."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from ytproxy.library.tracks import Tracks

__all__ = ["PlayCounts"]

# Seconds a play waits to be counted, with the others that come meanwhile.
PLAYS_FLUSH_DELAY = 1.0


class PlayCounts:
    """Plays, and other store writes the listener does not wait for (a busy
    store must not delay bytes)."""

    def __init__(self, tracks: Tracks, *, flush_delay: float = PLAYS_FLUSH_DELAY) -> None:
        self._tracks = tracks
        self._flush_delay = flush_delay
        self._background: set[asyncio.Task[None]] = set()
        self._plays: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def in_background(self, bookkeeping: Coroutine[Any, Any, None]) -> None:
        """Run a store write the listener does not wait for."""
        task = asyncio.create_task(bookkeeping)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def count(self, track_id: str) -> None:
        """Count a play, written with the others of the next second in one go: a
        store write per play would sit in the way of the next play's lookup
        (MPD reconnects on every seek, and the store has one thread)."""
        self._plays[track_id] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                self._flush_delay, self._write)

    def _write(self) -> None:
        self._flush = None
        plays, self._plays = self._plays, Counter()
        for track_id, times in plays.items():
            self.in_background(self._tracks.mark_played(track_id, times))

    async def drain(self) -> None:
        """Let pending bookkeeping writes finish (called before the store closes)."""
        if self._flush is not None:
            self._flush.cancel()
            self._write()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
