"""A listener's bytes from a cache file, waiting for a download where it must.

``CachedBody`` has the face of every body (``ytproxy.upstream.Body``), as
``RangeStream`` does, so the relay does not know where bytes come from.
Pieces are read with ``os.pread`` from the page cache, sized to what the
listener's socket has room for once it proves slow, so a paused listener
holds nothing here and nothing upstream.  If the download cannot write its
file (a full disk), the body goes on from its position with a
``RangeStream`` of its own, paced as this body is: the listener hears
nothing of it.

Not ``sendfile``: MPD's whole-track request is answered chunked (see
``ytproxy.http.streams``: the ICY name must reach it), which ``sendfile``
cannot write, and uvloop, the default loop, does not offer ``loop.sendfile``
for its transports; a ``pread`` of a page-cached file costs microseconds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Literal

from ytproxy.cache.download import DiskFull
from ytproxy.cache.files import AudioCache, CacheFile
from ytproxy.pacing import FAST_PIECE, PACED_PIECE, ROOM_PIECE, SLOW_PIECE, START_PIECE, Pacing
from ytproxy.upstream import Change, PacedBody, RangeStream

__all__ = ["CachedBody"]

# A relay for bytes ``start..end`` that goes on with this body's pacing: the
# rest of a stream whose file cannot be filled.
LateRelay = Callable[[int, int, Pacing], Awaitable[RangeStream]]


class CachedBody(PacedBody):
    """Bytes ``start..end`` of a track from its cache file.  Pieces are sized by
    pacing (ytproxy.pacing: START_PIECE to FAST_PIECE)."""

    def __init__(self, cache: AudioCache, entry: CacheFile, start: int, end: int, *,
                 relay: LateRelay) -> None:
        self._cache = cache
        self._entry = entry
        fd = cache.use(entry)
        # The caller holds the entry (TrackCache.hit or start): its file is open.
        assert fd is not None, "a body of a file nobody holds"
        self._fd = fd
        self._pos = start
        self._end = end
        self._relay_from = relay
        self._relay: RangeStream | None = None
        self.pacing = Pacing()
        self._piece = START_PIECE
        self._closed = False
        # Bytes on disk before this stream began: what upstream did not send for it.
        self._saved_below = entry.size if entry.complete else entry.ranges.held_from(start)

    @property
    def source(self) -> Literal["cache", "download", "relay"]:
        if self._relay is not None:
            return "relay"
        return "cache" if self._entry.complete else "download"

    @property
    def percent(self) -> float:
        return self._entry.percent

    # What a relay after a full disk has been through (the registry shows them).
    @property
    def refreshes(self) -> int:
        return self._relay.refreshes if self._relay is not None else 0

    @property
    def resumes(self) -> int:
        return self._relay.resumes if self._relay is not None else 0

    @property
    def retry_count(self) -> int:
        return self._relay.retry_count if self._relay is not None else 0

    async def __aenter__(self) -> CachedBody:
        return self

    async def aclose(self) -> None:
        if self._relay is not None:
            await self._relay.aclose()
        if not self._closed:
            self._closed = True
            self._cache.release(self._entry)

    async def next_piece(self) -> bytes | None:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        if self._relay is not None:
            return await self._relay.next_piece()
        pos = self._pos
        if pos > self._end:
            return None
        held = self._entry.ranges.held_from(pos)
        if not held:
            download = self._entry.download
            if download is None:
                return await self._switch_to_relay()
            try:
                held = await download.wait(pos)
            except DiskFull:
                return await self._switch_to_relay()
        size = min(held, self._end + 1 - pos, self._piece)
        piece = os.pread(self._fd, size, pos)
        if not piece:
            # Its record says the bytes are in, the file ends before them: it
            # was truncated under us.  Dropped; the rest comes from upstream.
            self._cache.vanished(self._entry, f"ends at byte {pos}, before what its "
                                 "record says is in")
            return await self._switch_to_relay()
        self._pos = pos + len(piece)
        stats = self._cache.stats
        stats.bytes_served += len(piece)
        if pos < self._saved_below:
            stats.bytes_saved += min(len(piece), self._saved_below - pos)
        return piece

    async def _switch_to_relay(self) -> bytes | None:
        """Go on from upstream (the file cannot be filled): today's relay."""
        relay = await self._relay_from(self._pos, self._end, self.pacing)
        await relay.__aenter__()
        self._relay = relay
        return await relay.next_piece()

    def _repaced(self, change: Change) -> None:
        """A listener not yet known to keep up gets pieces of START_PIECE, then
        PACED_PIECE once its socket was full; one known slow, what its socket
        has room for; one that keeps up, FAST_PIECE.  A relay after a full disk
        shares this body's pacing, and is told the change too."""
        if self._relay is not None:
            self._relay._repaced(change)
        pacing = self.pacing
        if change == "pace":
            self._piece = PACED_PIECE if pacing.paced else FAST_PIECE
        elif change == "filled":
            if pacing.paced and not pacing.slow:
                self._piece = PACED_PIECE  # the first gulp is over
        elif change == "room":
            assert pacing.room is not None
            self._piece = max(SLOW_PIECE, min(pacing.room, ROOM_PIECE))
