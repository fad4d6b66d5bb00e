"""The cache directory: one sparse file per track, its record in the store,
the size limit and least-recently-played eviction.

A file's record says which byte ranges are on disk; it is written only after
those bytes were (``os.pwrite`` returned), so a process killed at any moment
leaves a record that claims nothing the file does not hold (the page cache
survives the process).  A file counts as complete only when every byte is in
and its length is the size upstream promised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ytproxy.cache.ranges import Ranges
from ytproxy.config import CacheConfig
from ytproxy.errors import StoreError, YtproxyError
from ytproxy.library.store import CacheRow, Store
from ytproxy.lockfile import LockFile

if TYPE_CHECKING:
    from ytproxy.cache.download import Download

__all__ = ["AudioCache", "CacheFile", "CacheStats"]

log = logging.getLogger(__name__)

_SUFFIX = ".audio"
# In the directory: held by the daemon that uses it (ytproxy.lockfile).
_LOCK_NAME = ".lock"


@dataclass(eq=False)
class CacheFile:
    """One track's file: what is in it, and who uses it now."""

    track_id: str
    path: Path
    size: int
    format_id: str | None
    mime: str | None
    ranges: Ranges = field(default_factory=Ranges)
    complete: bool = False
    last_used: float = field(default_factory=time.time)
    users: int = 0  # listeners reading it, its download, and holds (AudioCache.hit)
    fd: int | None = None
    # (st_dev, st_ino) of the file this entry wrote or first opened: another
    # file put at its path is not its file.
    inode: tuple[int, int] | None = None
    dropped: bool = False
    # Set by the download that fills it (ytproxy.cache.download); None when none runs.
    download: Download | None = None

    @property
    def held(self) -> int:
        return self.size if self.complete else self.ranges.total

    @property
    def percent(self) -> float:
        """How much of the track is on disk."""
        return 100.0 * self.held / self.size if self.size else 100.0

    def row(self) -> CacheRow:
        return CacheRow(self.track_id, self.path.name, self.format_id, self.size, self.mime,
                        self.ranges.as_tuple(), self.complete, self.last_used)


@dataclass
class CacheStats:
    hits: int = 0  # streams served whole from a complete file
    misses: int = 0  # streams that had to fetch from upstream
    bytes_served: int = 0  # bytes listeners got from cache files
    bytes_saved: int = 0  # of which upstream did not send for this stream (already on disk)
    evictions: int = 0
    downloads_done: int = 0
    disk_full: int = 0


class AudioCache:
    """The files, the limit, and their records in the store."""

    def __init__(self, config: CacheConfig, store: Store) -> None:
        self.limit = config.max_size
        self.directory = config.resolved_directory
        self._store = store
        self._files: dict[str, CacheFile] = {}
        self._saving: dict[str, asyncio.Task[None]] = {}  # a record's writer, per track
        self._forgetting: set[asyncio.Task[None]] = set()  # records being deleted
        self._dirty: set[str] = set()
        self._lock: LockFile | None = None
        # The directory vanished and could not be made again (or its lock was
        # taken meanwhile): every track is relayed.
        self._lost = False
        self.stats = CacheStats()
        # Told of a file dropped or evicted (monitoring, tests).
        self.on_drop: Callable[[CacheFile, str], None] | None = None

    # -- start and stop --------------------------------------------------

    async def open(self) -> None:
        """Make the directory (0700), and keep of what a previous run left only
        what its records vouch for: complete files of the right length, and
        partial ones to resume; everything else is dropped, and said."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise YtproxyError(f"cannot create the cache directory {self.directory}: "
                               f"{exc.strerror or exc}; set [cache] directory, or "
                               "[cache] max_size = 0 to turn the cache off") from exc
        # Before anything is read or swept: another daemon's files are not ours.
        self._lock = self._take_lock()
        rows = await self._store.cache_rows()
        stale: list[str] = []
        for row in rows:
            path = self.directory / row.file_name
            reason = _check_row(row, path)
            if reason is not None:
                log.info("cache: %s: dropped the %s file left by the last run (%s)",
                         row.track_id, "complete" if row.complete else "partial", reason)
                stale.append(row.track_id)
                _unlink(path)
                continue
            entry = CacheFile(row.track_id, path, row.size, row.format_id, row.mime,
                              Ranges(row.ranges), row.complete, row.last_used)
            self._files[row.track_id] = entry
            if not entry.complete:
                log.info("cache: %s: kept the partial file left by the last run (%d of %d "
                         "bytes); it resumes when the track is played", row.track_id,
                         entry.ranges.total, entry.size)
        if stale:
            await self._store.delete_cache_rows(stale)
        known = {f.path.name for f in self._files.values()}
        for path in self.directory.glob(f"*{_SUFFIX}"):
            if path.name not in known:
                log.info("cache: removed %s, which no record vouches for", path.name)
                _unlink(path)
        self._evict(0)
        log.info("cache: %s, %s of %s in %d tracks", self.directory, _size(self.used),
                 _size(self.limit), len(self._files))

    async def flush(self) -> None:
        """Write every pending record now, and wait for the writes asked for so far."""
        for track_id in list(self._dirty):
            self._save_soon(track_id)
        pending = [*self._saving.values(), *self._forgetting]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Write every pending record and close the files."""
        await self.flush()
        for entry in self._files.values():
            _close(entry)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _take_lock(self) -> LockFile:
        path = self.directory / _LOCK_NAME
        try:
            return LockFile.take(path, f"the cache directory {self.directory}",
                                 "[cache] directory")
        except OSError as exc:
            raise YtproxyError(f"cannot create the cache's lock file {path}: "
                               f"{exc.strerror or exc}; set [cache] directory, or "
                               "[cache] max_size = 0 to turn the cache off") from exc

    # -- looking up ------------------------------------------------------

    def get(self, track_id: str) -> CacheFile | None:
        return self._files.get(track_id)

    def complete(self, track_id: str) -> CacheFile | None:
        entry = self._files.get(track_id)
        return entry if entry is not None and entry.complete else None

    def hit(self, track_id: str) -> CacheFile | None:
        """The track's complete file, open and held (``release`` it): looked up
        and opened in one step, so no eviction or clear comes between (both
        leave files in use alone), and the open descriptor reads the file even
        if it is deleted meanwhile.  None: a miss (none, or its file is gone)."""
        entry = self.complete(track_id)
        if entry is None or self.use(entry) is None:
            return None
        return entry

    def files(self) -> list[CacheFile]:
        return sorted(self._files.values(), key=lambda e: e.last_used, reverse=True)

    @property
    def used(self) -> int:
        """Bytes the files take, or will once complete (a download reserves its size)."""
        return sum(e.size for e in self._files.values())

    # -- files -----------------------------------------------------------

    def claim(self, track_id: str, size: int, format_id: str | None,
              mime: str | None) -> CacheFile | None:
        """The file for this track's stream of ``size`` bytes, made room for and
        created if there is none; None when it cannot be cached (bigger than the
        limit, or everything else is in use, or the disk refuses)."""
        entry = self._files.get(track_id)
        if entry is not None:
            if entry.size == size and (format_id is None or entry.format_id in (None, format_id)):
                return entry
            if entry.users:
                return None  # another file of the track, still being served
            log.info("cache: %s: dropped the %s file (%d bytes, format %s): upstream now "
                     "has %d bytes (format %s)", track_id,
                     "complete" if entry.complete else "partial", entry.size,
                     entry.format_id, size, format_id)
            self.drop(entry, "another file upstream")
        if self._lost or size > self.limit or not self._evict(size):
            return None
        path = self.directory / f"{track_id}{_SUFFIX}"
        fd = self._create(path)
        if fd is None:
            return None
        entry = CacheFile(track_id, path, size, format_id, mime, fd=fd)
        entry.inode = _inode(os.fstat(fd))
        self._files[track_id] = entry
        self.save(entry)
        return entry

    def _create(self, path: Path) -> int | None:
        """A new, empty file at ``path``; None (said) when it cannot be made.

        Never ``O_TRUNC``: whatever is at the path (a dropped file a listener
        still reads, had its unlink failed) is unlinked and a new inode made, so
        no open descriptor ever sees its file shrink.  Nothing else writes here:
        the directory's lock keeps other daemons out.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for attempt in (1, 2):
            _unlink(path)
            try:
                return os.open(path, flags, 0o600)
            except FileNotFoundError:
                if attempt == 1 and self._remake_directory():
                    continue
                return None
            except OSError as exc:
                log.warning("cache: cannot create %s (%s): the track is relayed", path,
                            exc.strerror or exc)
                return None
        return None

    def use(self, entry: CacheFile) -> int | None:
        """Count a user of the file and return its descriptor, opened on first use
        and checked against its record.  None when the file is gone or is not
        the one its record describes (deleted, replaced, truncated): the entry
        is dropped with one warning, and the caller has a miss."""
        if entry.fd is None:
            if entry.dropped:
                return None
            fd = self._open(entry)
            if fd is None:
                return None
            entry.fd = fd
        entry.users += 1
        return entry.fd

    def _open(self, entry: CacheFile) -> int | None:
        try:
            fd = os.open(entry.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            self.vanished(entry, "is gone" if exc.errno == errno.ENOENT
                          else f"cannot be opened ({exc.strerror or exc})")
            return None
        try:
            why = _mismatch(entry, os.fstat(fd))
        except OSError as exc:
            why = f"cannot be read ({exc.strerror or exc})"
        if why is not None:
            os.close(fd)
            self.vanished(entry, why)
            return None
        return fd

    def vanished(self, entry: CacheFile, why: str) -> None:
        """The file is not what its record says (``why``, e.g. "is gone"): drop
        the entry and its record, once, and make the directory again if it went
        too.  The track is fetched again the next time it is wanted."""
        if entry.dropped:
            return
        log.warning("cache: %s: the file %s %s; the track is fetched again", entry.track_id,
                    entry.path, why)
        self.drop(entry, "vanished")
        if not self.directory.is_dir():
            self._remake_directory()

    def _remake_directory(self) -> bool:
        """The directory vanished under us: make it again (0700, and its lock),
        and forget the idle files that went with it; False (said) when it
        cannot be made, and every track is relayed from then on."""
        if self.directory.is_dir():
            return True
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self._lock = self._take_lock()
        except (OSError, YtproxyError) as exc:
            self._lost = True
            log.error("cache: the directory %s vanished and cannot be made again (%s); "
                      "every track is relayed until the daemon is restarted", self.directory,
                      exc.strerror if isinstance(exc, OSError) else exc)
            return False
        gone = [e for e in self._files.values() if e.users == 0 and not e.path.exists()]
        for entry in gone:
            self.drop(entry, "vanished")
        log.warning("cache: the directory %s vanished: made it again; %d other files went "
                    "with it and are fetched again when played", self.directory, len(gone))
        return True

    def release(self, entry: CacheFile) -> None:
        entry.users -= 1
        if entry.users <= 0:
            entry.users = 0
            _close(entry)
            if not entry.dropped:
                self._evict(0)

    def played(self, entry: CacheFile) -> None:
        entry.last_used = time.time()
        self.save(entry)

    def drop(self, entry: CacheFile, reason: str) -> None:
        """Forget a file and delete it (a reader that has it open reads on)."""
        if self._files.get(entry.track_id) is entry:
            del self._files[entry.track_id]
        entry.dropped = True
        _unlink(entry.path)
        if entry.users == 0:
            _close(entry)
        self._dirty.discard(entry.track_id)
        task = asyncio.create_task(self._forget_row(entry.track_id))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)
        if self.on_drop is not None:
            self.on_drop(entry, reason)

    def clear(self) -> tuple[int, int]:
        """Drop every file not in use; returns (dropped, kept because in use)."""
        dropped = kept = 0
        for entry in list(self._files.values()):
            if entry.users:
                kept += 1
            else:
                self.drop(entry, "cleared")
                dropped += 1
        return dropped, kept

    def _evict(self, wanted: int) -> bool:
        """Drop least-recently-played files not in use until ``wanted`` more bytes
        fit under the limit; False when they cannot."""
        while self.used + wanted > self.limit:
            idle = [e for e in self._files.values() if e.users == 0]
            if not idle:
                return False
            victim = min(idle, key=lambda e: e.last_used)
            log.info("cache: evicted %s (%s, last played %s ago) to stay under %s",
                     victim.track_id, _size(victim.size),
                     _ago(time.time() - victim.last_used), _size(self.limit))
            self.stats.evictions += 1
            self.drop(victim, "evicted")
        return True

    # -- records ---------------------------------------------------------

    def save(self, entry: CacheFile) -> None:
        """Write the file's record soon, in the background; writes of one file are
        never reordered, and those asked for meanwhile become one."""
        if entry.dropped:
            return
        self._dirty.add(entry.track_id)
        self._save_soon(entry.track_id)

    def _save_soon(self, track_id: str) -> None:
        if track_id in self._saving:
            return  # the running writer takes it when done
        task = asyncio.create_task(self._write_rows(track_id))
        self._saving[track_id] = task

    async def _write_rows(self, track_id: str) -> None:
        try:
            while track_id in self._dirty:
                self._dirty.discard(track_id)
                entry = self._files.get(track_id)
                if entry is None:
                    return
                try:
                    await self._store.save_cache_row(entry.row())
                except StoreError as exc:
                    log.warning("cache: %s: the record could not be written: %s", track_id, exc)
                    return
        finally:
            del self._saving[track_id]

    async def _forget_row(self, track_id: str) -> None:
        pending = self._saving.get(track_id)
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        if track_id in self._files:
            return  # made again meanwhile: its own record stands
        try:
            await self._store.delete_cache_rows([track_id])
        except StoreError as exc:
            log.warning("cache: %s: the record could not be deleted: %s", track_id, exc)


def _check_row(row: CacheRow, path: Path) -> str | None:
    """Why a record left by the last run cannot be trusted, or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "the file is gone"
    except OSError as exc:
        return f"the file cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    ranges = Ranges(row.ranges)
    held_to = max((end for _, end in row.ranges), default=0)
    if any(start < 0 or end > row.size for start, end in row.ranges):
        return "its record names bytes beyond the track"
    if row.complete and (info.st_size != row.size or not ranges.covers(row.size)):
        return f"{info.st_size} bytes on disk, {row.size} expected"
    if info.st_size < held_to:
        return f"shorter ({info.st_size} bytes) than its record says ({held_to})"
    return None


def _inode(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _mismatch(entry: CacheFile, info: os.stat_result) -> str | None:
    """Why the file opened at an entry's path is not the entry's file, or None."""
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if entry.inode is not None and _inode(info) != entry.inode:
        return "was replaced by another file"
    if entry.complete and info.st_size != entry.size:
        return f"is {info.st_size} bytes, its record says {entry.size}"
    held_to = max((end for _, end in entry.ranges.as_tuple()), default=0)
    if info.st_size < held_to:
        return f"is {info.st_size} bytes, shorter than the {held_to} its record says are in"
    if entry.inode is None:
        entry.inode = _inode(info)
    return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cache: cannot delete %s: %s", path, exc.strerror or exc)


def _close(entry: CacheFile) -> None:
    if entry.fd is not None:
        with contextlib.suppress(OSError):
            os.close(entry.fd)
        entry.fd = None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _ago(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(seconds, 0) / 60:.0f} min"
