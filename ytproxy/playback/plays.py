"""A listener's plays, counted in the store without making the listener wait."""

from __future__ import annotations

import asyncio
from collections import Counter

from ytproxy.library.tracks import Tracks

__all__ = ["PlayCounts"]

# Seconds a play waits to be counted, with the others that come meanwhile.
PLAYS_FLUSH_DELAY = 1.0


class PlayCounts:
    """Plays, written through the tracks service's background writes (a busy
    store must not delay bytes)."""

    def __init__(self, tracks: Tracks, *, flush_delay: float = PLAYS_FLUSH_DELAY) -> None:
        self._tracks = tracks
        self._flush_delay = flush_delay
        self._plays: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

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
            self._tracks.mark_played_soon(track_id, times)

    async def drain(self) -> None:
        """Write the plays still waiting, and let every background write finish
        (called before the store closes)."""
        if self._flush is not None:
            self._flush.cancel()
            self._write()
        await self._tracks.drain()
