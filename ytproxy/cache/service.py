"""The cache as the rest of the daemon sees it: a track's file and its body
for a listener (which listener gets one is ``ytproxy.playback``'s to decide),
prefetching (MPD look-ahead, ``ytproxy cache prefetch``), and its figures."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ytproxy.cache.body import CachedBody, LateRelay
from ytproxy.cache.download import Download
from ytproxy.cache.files import AudioCache, CacheFile
from ytproxy.config import Config
from ytproxy.errors import YtproxyError
from ytproxy.library.sources import TrackSources
from ytproxy.library.store import Store
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo, TrackId
from ytproxy.resolve.budget import CallKind
from ytproxy.upstream import probe_size

__all__ = ["CacheSnapshot", "Downloading", "TrackCache"]

log = logging.getLogger(__name__)

# Downloads started by prefetching (look-ahead, the CLI) that run at once; a
# listener's own track never waits for these.
_PREFETCHES_AT_ONCE = 2


@dataclass(frozen=True)
class Downloading:
    """A download running now, and how much of its track is on disk."""

    id: str
    percent: float


@dataclass(frozen=True)
class CacheSnapshot:
    """The cache's figures at one moment (/status, /cache, /metrics)."""

    directory: str
    size_bytes: int  # on disk in cache files
    reserved_bytes: int  # room claimed for files being filled
    limit_bytes: int  # [cache] max_size
    tracks: int  # complete files
    partial: int
    downloading: tuple[Downloading, ...]
    hits: int  # streams served from a complete file
    misses: int  # streams that needed upstream
    bytes_served: int  # bytes listeners read from cache files
    bytes_saved: int  # of which upstream did not send for that stream
    evictions: int
    downloads_done: int
    disk_full: int  # downloads turned into relays: disk full

    def as_dict(self) -> dict[str, Any]:
        """As /status's ``cache`` and GET /cache show it."""
        return {
            "enabled": True,
            "directory": self.directory,
            "size_bytes": self.size_bytes,
            "reserved_bytes": self.reserved_bytes,
            "limit_bytes": self.limit_bytes,
            "tracks": self.tracks,
            "partial": self.partial,
            "downloading": [{"id": d.id, "percent": d.percent} for d in self.downloading],
            "hits": self.hits,
            "misses": self.misses,
            "bytes_served": self.bytes_served,
            "bytes_saved": self.bytes_saved,
            "evictions": self.evictions,
            "downloads_done": self.downloads_done,
            "disk_full": self.disk_full,
        }


class TrackCache:
    """Download-ahead: every played or prefetched track is fetched whole into
    ``AudioCache`` and its listeners read the file."""

    def __init__(self, config: Config, store: Store, tracks: Tracks,
                 sources: TrackSources) -> None:
        self.files = AudioCache(config.cache, store)
        self._tracks = tracks
        self._sources = sources
        self._prefetching: dict[str, asyncio.Task[str]] = {}
        self._prefetch_slots = asyncio.Semaphore(_PREFETCHES_AT_ONCE)

    async def open(self) -> None:
        await self.files.open()

    async def aclose(self) -> None:
        prefetching = list(self._prefetching.values())
        for task in prefetching:
            task.cancel()
        await asyncio.gather(*prefetching, return_exceptions=True)
        for entry in self.files.files():
            if entry.download is not None:
                await entry.download.aclose()
        await self.files.aclose()

    # -- streams -----------------------------------------------------------

    def complete(self, track_id: str) -> CacheFile | None:
        return self.files.complete(track_id)

    def hit(self, track_id: str) -> CacheFile | None:
        """The track's complete file, open and held until ``release`` (see
        ``AudioCache.hit``); None when it has none, or its file vanished."""
        return self.files.hit(track_id)

    def release(self, entry: CacheFile) -> None:
        self.files.release(entry)

    def start(self, track_id: str, info: StreamInfo, size: int, mime: str | None,
              focus: int = 0) -> CacheFile | None:
        """The track's file, open and held until ``release``, its download started
        if it is not complete and none runs; None when the track cannot be
        cached (relay it).  A file that vanished is made anew."""
        for _ in range(2):
            entry = self.files.claim(track_id, size, info.format_id, mime)
            if entry is None:
                return None
            if self.files.use(entry) is not None:
                break
            # Its file was gone (dropped, with a warning): the next claim makes one.
        else:
            return None
        if not entry.complete and entry.download is None:
            Download(self.files, entry, self._sources.of(track_id), info).start(focus)
        return entry

    def record_hit(self) -> None:
        """A stream is served from a complete file."""
        self.files.stats.hits += 1

    def record_miss(self) -> None:
        """A stream needed upstream (its file is filled as it plays, or it is relayed)."""
        self.files.stats.misses += 1

    def body(self, entry: CacheFile, start: int, end: int,
             relay: LateRelay) -> CachedBody:
        """Bytes ``start..end`` from ``entry``, which the caller holds (``hit``,
        ``start``); the body holds it for itself until it is closed."""
        self.files.played(entry)
        return CachedBody(self.files, entry, start, end, relay=relay)

    # -- prefetching -------------------------------------------------------

    def want(self, track_ids: list[str]) -> None:
        """Have these tracks on disk soon (MPD's next songs): prefetch each one
        not complete, downloading or already asked for."""
        for track_id in track_ids:
            entry = self.files.get(track_id)
            if entry is not None and (entry.complete or entry.download is not None):
                continue
            if track_id not in self._prefetching:
                task = asyncio.create_task(self._prefetch_quietly(track_id))
                self._prefetching[track_id] = task
                task.add_done_callback(self._prefetched)

    def _prefetched(self, task: asyncio.Task[str]) -> None:
        for track_id, running in list(self._prefetching.items()):
            if running is task:
                del self._prefetching[track_id]

    async def prefetch(self, track_id: TrackId) -> str:
        """Download a track whole (resolving it first if needed), and say how it
        went when it is on disk: "cached", or why not."""
        entry = self.files.get(track_id)
        download = entry.download if entry is not None else None
        if entry is None or (not entry.complete and download is None):
            async with self._prefetch_slots:
                # Background work: it waits for what the hour's budget leaves,
                # and while YouTube refuses (ytproxy.resolve.budget).
                _, info = await self._tracks.stream_for(track_id, kind=CallKind.BACKGROUND)
                size, mime = info.size, info.mime
                if size is None:
                    size, info, mime = await probe_size(
                        self._sources.of(track_id, CallKind.BACKGROUND), info)
                    await self._tracks.remember_size(track_id, size)
                entry = self.start(track_id, info, size, mime or info.mime)
                if entry is None:
                    return "not cached: bigger than the room the cache can make"
                download = entry.download
                self.files.release(entry)  # the download holds it while it runs
                if download is not None:
                    # A slot is held until its download ends: two at a time.
                    await download.finished()
        elif download is not None:
            await download.finished()  # someone else's: wait for it all the same
        if entry.complete:
            self.files.played(entry)
            return "cached"
        failure = download.failure if download is not None else None
        return f"failed: {failure}" if failure is not None else "failed: the download stopped"

    async def _prefetch_quietly(self, track_id: str) -> str:
        try:
            # MPD's ids come from proxied_track, TrackIds already (no second check).
            result = await self.prefetch(TrackId(track_id))
            log.debug("cache: %s: look-ahead: %s", track_id, result)
            return result
        except YtproxyError as exc:
            log.warning("cache: %s: look-ahead could not fetch it: %s", track_id, exc)
            return f"failed: {exc}"

    # -- figures -----------------------------------------------------------

    def snapshot(self) -> CacheSnapshot:
        files = self.files.files()
        stats = self.files.stats
        return CacheSnapshot(
            directory=str(self.files.directory),
            size_bytes=sum(e.held for e in files),
            reserved_bytes=self.files.used,
            limit_bytes=self.files.limit,
            tracks=sum(1 for e in files if e.complete),
            partial=sum(1 for e in files if not e.complete),
            downloading=tuple(Downloading(e.track_id, round(e.download.percent, 1))
                              for e in files if e.download is not None),
            hits=stats.hits, misses=stats.misses, bytes_served=stats.bytes_served,
            bytes_saved=stats.bytes_saved, evictions=stats.evictions,
            downloads_done=stats.downloads_done, disk_full=stats.disk_full)

    def clear(self) -> tuple[int, int]:
        """Drop every file not being played: (dropped, kept because in use)."""
        return self.files.clear()

    def forget(self, track_id: str) -> None:
        """A track removed from the store: its file goes with it, unless being played."""
        entry = self.files.get(track_id)
        if entry is not None and not entry.users:
            self.files.drop(entry, "track removed")

    def listing(self) -> list[dict[str, Any]]:
        return [{
            "id": e.track_id,
            "size_bytes": e.size,
            "held_bytes": e.held,
            "complete": e.complete,
            "downloading": e.download is not None,
            "in_use": e.users > 0,
            "format_id": e.format_id,
            "last_used": e.last_used,
        } for e in self.files.files()]

