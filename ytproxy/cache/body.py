"""A listener's bytes from a cache file, waiting for a download where it must.

``CachedBody`` has the part of ``RangeStream``'s face the relay uses, so the
relay does not know where bytes come from.  Pieces are read with ``os.pread``
from the page cache, sized to what the listener's socket has room for once it
proves slow, so a paused listener holds nothing here and nothing upstream.  If
the download cannot write its file (a full disk), the body goes on from its
position with a ``RangeStream`` of its own: the listener hears nothing of it.

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
from ytproxy.upstream import RangeStream

__all__ = ["CachedBody"]

# Piece sizes: what the listener's socket does not take at once waits in this
# process, so a listener not yet known to keep up gets pieces of _START_PIECE
# (a thousand players' first gulps in 256 KiB pieces held ~300 MB here), one
# known to be slow what its socket has room for (_SLOW_PIECE to _ROOM_PIECE),
# one that keeps up _FAST_PIECE.  A file, unlike upstream, costs nothing per
# read, so a slow listener's pieces stay small: with room-sized pieces of up to
# 128 KiB a thousand listeners on uvloop grew to 160 MB (the socket's room, told
# in bytes, is not what the kernel takes: the rest waited here); with 16 KiB,
# 80 MB and flat (66 MB either way on asyncio's loop).
_START_PIECE = 32 * 1024
_PACED_PIECE = 8 * 1024
_SLOW_PIECE = 4096
_ROOM_PIECE = 16 * 1024
_FAST_PIECE = 256 * 1024


class CachedBody:
    """Bytes ``start..end`` of a track from its cache file."""

    def __init__(self, cache: AudioCache, entry: CacheFile, start: int, end: int, *,
                 relay: Callable[[int, int], Awaitable[RangeStream]]) -> None:
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
        self._piece = _START_PIECE
        self._paced = True
        self._slow = False
        self._head: bytes | None = None
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

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._relay is not None:
            await self._relay.aclose()
        if not self._closed:
            self._closed = True
            self._cache.release(self._entry)

    async def ready(self) -> None:
        self._head = await self.next_piece()

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
        relay = await self._relay_from(self._pos, self._end)
        await relay.__aenter__()
        self._relay = relay
        return await relay.next_piece()

    # -- the relay's words on its listener (see RangeStream) ----------------

    @property
    def paced(self) -> bool:
        return self._relay.paced if self._relay is not None else self._paced

    @property
    def slow(self) -> bool:
        return self._relay.slow if self._relay is not None else self._slow

    def pace(self, paced: bool = True) -> None:
        if self._relay is not None:
            self._relay.pace(paced)
        self._paced = self._slow = paced
        self._piece = _PACED_PIECE if paced else _FAST_PIECE

    def hold(self) -> None:
        if self._relay is not None:
            self._relay.hold()

    def filled(self) -> None:
        if self._relay is not None:
            self._relay.filled()
        if self._paced and not self._slow:
            self._piece = _PACED_PIECE  # the first gulp is over

    def room(self, nbytes: int) -> None:
        if self._relay is not None:
            self._relay.room(nbytes)
        self._piece = max(_SLOW_PIECE, min(nbytes, _ROOM_PIECE))
