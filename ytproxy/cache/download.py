"""Fetching a whole track into its cache file, as fast as upstream gives it.

One download per track, whoever asked (a listener, MPD look-ahead, ``ytproxy
cache prefetch``).  It fetches the first missing bytes from where listeners
need them (``focus``): a seek beyond what is fetched moves it there, and it
fills the rest afterwards.  Every range goes through ``RangeStream``, so the
retries, URL refreshes and exact resumes of a relay apply unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time

from ytproxy.cache.files import AudioCache, CacheFile
from ytproxy.errors import UpstreamFailed, YtproxyError
from ytproxy.models import StreamInfo, url_param
from ytproxy.upstream import FileChanged, RangeStream, StreamSource

__all__ = ["DiskFull", "Download", "WrongLength"]

log = logging.getLogger(__name__)

# A record of the ranges on disk is written at least this often while bytes
# come in (bytes, seconds): what a kill -9 costs is at most this much refetched.
_SAVE_EVERY_BYTES = 4 * 1_048_576
_SAVE_EVERY_SECONDS = 2.0
# A listener that needs bytes this close ahead of the fetch waits for it rather
# than moving it (moving costs a new request).
_NEAR = 2 * 1_048_576
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFull(YtproxyError):
    """The cache file could not be written: the track is relayed instead."""


class WrongLength(UpstreamFailed):
    """Every byte came, but the file is not the length upstream promised."""


class Download:
    """Fills one ``CacheFile``; listeners wait on it for bytes not yet there."""

    def __init__(self, cache: AudioCache, entry: CacheFile, source: StreamSource,
                 info: StreamInfo) -> None:
        self._cache = cache
        self.entry = entry
        self._source = source
        self.info = info
        fd = cache.use(entry)
        # Made by TrackCache.start, which holds the file open meanwhile.
        assert fd is not None, "a download of a file nobody holds"
        self._fd = fd
        self._focus = 0
        # A move of the fetch waits until this much was fetched since the last
        # one: two listeners far apart take turns, rather than each moving it
        # back before a byte came.
        self._moved_at = 0
        self._move_waiting = False
        self._fetch_pos = -1  # where the running fetch writes next; -1: none runs
        self._refocus = asyncio.Event()
        self._progress = asyncio.Event()
        self.failure: BaseException | None = None
        self.started = time.monotonic()
        self.bytes_fetched = 0
        self.refreshes = 0
        self.retries = 0
        self.resumes = 0
        self._unsaved = 0
        self._saved_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        entry.download = self

    # -- control -----------------------------------------------------------

    def start(self, focus: int = 0) -> None:
        self._focus = focus
        held = self.entry.ranges.total
        if held:
            log.info("cache: %s: resuming the partial file (%d of %d bytes on disk)",
                     self.entry.track_id, held, self.entry.size)
        self._task = asyncio.create_task(self._run(), name=f"download {self.entry.track_id}")

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def percent(self) -> float:
        return self.entry.percent

    def focus(self, pos: int) -> None:
        """A listener needs byte ``pos``: fetch from there next, unless the running
        fetch is about to reach it."""
        if self.entry.ranges.held_from(pos):
            return
        near = self._fetch_pos >= 0 and self._fetch_pos <= pos < self._fetch_pos + _NEAR
        if near or pos == self._focus:
            return
        self._focus = pos
        if self._fetch_pos < 0 or self.bytes_fetched - self._moved_at >= _NEAR:
            self._move()
        else:
            self._move_waiting = True

    def _move(self) -> None:
        self._moved_at = self.bytes_fetched
        self._move_waiting = False
        self._refocus.set()

    async def wait(self, pos: int) -> int:
        """Bytes held from ``pos`` on, once there are some; raises the download's
        failure (``DiskFull``: read the rest from upstream)."""
        while True:
            held = self.entry.ranges.held_from(pos)
            if held:
                return held
            if self.failure is not None:
                raise self.failure
            if self.done:
                raise UpstreamFailed(f"the download of {self.entry.track_id} stopped "
                                     f"before byte {pos}")
            self.focus(pos)
            await self._progress.wait()

    async def finished(self) -> None:
        """Wait for the download to end, however it ends."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the work ----------------------------------------------------------

    async def _run(self) -> None:
        entry = self.entry
        try:
            while (gap := entry.ranges.next_gap(self._focus, entry.size)) is not None:
                self._refocus.clear()
                fetch = asyncio.ensure_future(self._fetch(*gap))
                moved = asyncio.ensure_future(self._refocus.wait())
                try:
                    await asyncio.wait({fetch, moved}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    moved.cancel()
                    if not fetch.done():
                        fetch.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await fetch
                if fetch.done() and not fetch.cancelled():
                    fetch.result()
            self._complete()
        except asyncio.CancelledError:
            self._cache.save(entry)
            raise
        except Exception as exc:  # any failure is the listeners' to hear
            self._fail(exc, exc)
        finally:
            self._fetch_pos = -1
            entry.download = None
            self._cache.release(entry)
            self._wake()

    async def _fetch(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` into the file."""
        entry = self.entry
        pos = start
        self._fetch_pos = pos
        body = RangeStream(self._source, self.info, start, end - 1, expected_total=entry.size)
        try:
            async with body:
                body.pace(False)  # as fast as upstream gives
                while (piece := await body.next_piece()) is not None:
                    _write_all(self._fd, piece, pos, entry)
                    entry.ranges.add(pos, pos + len(piece))
                    pos += len(piece)
                    self._fetch_pos = pos
                    self.bytes_fetched += len(piece)
                    self._unsaved += len(piece)
                    del piece
                    self._wake()
                    self._maybe_save()
                    if self._move_waiting and self.bytes_fetched - self._moved_at >= _NEAR:
                        self._move()
        finally:
            self.info = body.info  # a refreshed URL serves the next gap
            self.refreshes += body.refreshes
            self.retries += body.retry_count
            self.resumes += body.resumes
        if pos < end:
            raise UpstreamFailed(f"upstream ended at byte {pos} of {entry.size}")

    def _maybe_save(self) -> None:
        now = time.monotonic()
        if self._unsaved >= _SAVE_EVERY_BYTES or now - self._saved_at >= _SAVE_EVERY_SECONDS:
            self._unsaved = 0
            self._saved_at = now
            self._cache.save(self.entry)

    def _complete(self) -> None:
        """Every byte is in: count the file complete only if it is what upstream said."""
        entry = self.entry
        length = os.fstat(self._fd).st_size
        clen = url_param(self.info.url, "clen")
        if length != entry.size or (clen is not None and clen.isdigit()
                                    and int(clen) != entry.size):
            raise WrongLength(f"the file is {length} bytes, upstream said {entry.size} "
                                 f"(clen {clen})")
        entry.complete = True
        self._cache.save(entry)
        self._cache.stats.downloads_done += 1
        log.info("cache: %s: downloaded whole (%d bytes in %.1f s)", entry.track_id,
                 entry.size, time.monotonic() - self.started)

    def _fail(self, failure: BaseException, cause: BaseException) -> None:
        self.failure = failure
        entry = self.entry
        if isinstance(failure, DiskFull):
            self._cache.stats.disk_full += 1
            log.warning("cache: %s: %s; the track is relayed from upstream instead",
                        entry.track_id, failure)
            self._cache.drop(entry, "disk full")
        elif isinstance(failure, WrongLength | FileChanged):
            log.error("cache: %s: %s; the file is dropped", entry.track_id, failure)
            self._cache.drop(entry, "another file upstream")
        else:
            log.warning("cache: %s: the download stopped at %.0f %%: %s", entry.track_id,
                        self.percent, cause)
            self._cache.save(entry)

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


def _write_all(fd: int, data: bytes, pos: int, entry: CacheFile) -> None:
    """``pwrite`` until all is written (a regular file may take less at once).
    Page-cache writes take microseconds; a thread per write would cost more."""
    view = memoryview(data)
    try:
        while view:
            written = os.pwrite(fd, view, pos)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
            pos += written
    except OSError as exc:
        full = " (the disk is full)" if exc.errno in _DISK_ERRORS else ""
        raise DiskFull(f"the cache file {entry.path} cannot be written{full}: "
                       f"{exc.strerror or exc}") from exc
