"""The SQLite store: schema, forward migrations by ``PRAGMA user_version``, queries.

Two long-lived aiosqlite connections per process, one that writes and one that
only reads, so that a read never waits behind a write waiting for a lock
(aiosqlite runs one thread per connection; leaving one open keeps the process
alive, so ``close`` must run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite

from ytproxy.errors import StoreError
from ytproxy.library.playlists import check_playlist_name
from ytproxy.lockfile import LockFile
from ytproxy.models import Playlist, PlaylistSync, StreamInfo, Track

__all__ = ["SCHEMA_VERSION", "CacheRow", "Store"]

log = logging.getLogger(__name__)
# aiosqlite logs every statement with its parameters at DEBUG, and stream URLs
# are signed credentials: keep them out of the log even with --log-level debug.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# Each entry moves the schema from version i to i+1.  Never edit a shipped
# entry: add a new one, so every existing database can walk forward.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema.
    """
    CREATE TABLE tracks (
        id TEXT PRIMARY KEY,
        source_url TEXT NOT NULL,
        title TEXT,
        artist TEXT,
        album TEXT,
        duration REAL,
        stream_url TEXT,
        stream_expires_at REAL,
        added_at REAL NOT NULL,
        play_count INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 1 -> 2: what the relay needs to answer without asking upstream first,
    # and what a person needs to see why a track failed.
    """
    ALTER TABLE tracks ADD COLUMN stream_mime TEXT;
    ALTER TABLE tracks ADD COLUMN stream_size INTEGER;
    ALTER TABLE tracks ADD COLUMN stream_headers TEXT;
    ALTER TABLE tracks ADD COLUMN resolved_at REAL;
    ALTER TABLE tracks ADD COLUMN last_played_at REAL;
    ALTER TABLE tracks ADD COLUMN last_error TEXT;
    CREATE INDEX tracks_added_at ON tracks (added_at);
    """,
    # 2 -> 3: named playlists (`ytproxy import`); entries keep the source's order,
    # may repeat a track, and go with the track when it is removed.
    """
    CREATE TABLE playlists (
        name TEXT PRIMARY KEY,
        source_url TEXT,
        title TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE playlist_tracks (
        playlist TEXT NOT NULL REFERENCES playlists (name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        track_id TEXT NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        PRIMARY KEY (playlist, position)
    );
    CREATE INDEX playlist_tracks_track_id ON playlist_tracks (track_id);
    """,
    # 3 -> 4: what a resume needs to ask yt-dlp for the same file again, when the
    # URL may first be fetched, and which player clients failed for the track.
    """
    ALTER TABLE tracks ADD COLUMN stream_format_id TEXT;
    ALTER TABLE tracks ADD COLUMN stream_available_at REAL;
    ALTER TABLE tracks ADD COLUMN stream_avoid_clients TEXT;
    """,
    # 4 -> 5: the download-ahead cache (ytproxy.cache): which byte ranges of a
    # track's file are on disk, of which format and size, and when last played.
    """
    CREATE TABLE cache_files (
        track_id TEXT PRIMARY KEY,
        file_name TEXT NOT NULL,
        format_id TEXT,
        size INTEGER NOT NULL,
        mime TEXT,
        ranges TEXT NOT NULL,
        complete INTEGER NOT NULL DEFAULT 0,
        last_used REAL NOT NULL
    );
    """,
    # 5 -> 6: playlists that follow their source (`ytproxy import --sync`): where
    # from, how often, when next, and how the last attempts went (the backoff).
    # A playlist removed takes its schedule with it; unsync drops only this row.
    """
    CREATE TABLE playlist_sync (
        playlist TEXT PRIMARY KEY REFERENCES playlists (name) ON DELETE CASCADE,
        source_url TEXT NOT NULL,
        every REAL NOT NULL,
        next_sync REAL NOT NULL,
        last_sync REAL,
        last_attempt REAL,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
_WRITE_ATTEMPTS = 5
_SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite's primary result codes (the low byte of an extended one).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_COLUMNS = (
    "id, source_url, title, artist, album, duration, stream_url, stream_expires_at, "
    "stream_mime, stream_size, stream_headers, resolved_at, added_at, last_played_at, "
    "play_count, last_error, stream_format_id, stream_available_at, stream_avoid_clients"
)
_TRACK_FIELDS = tuple(c.strip() for c in _COLUMNS.split(","))


class Store:
    """Tracks in SQLite.  Create with ``await Store.open(path)``; ``await close()``.

    ``get`` answers from memory for up to ``CACHE_SECONDS`` after it last read
    a track: every play waits on it before its first byte, and a trip to the
    database thread costs more than the rest of the lookup.  Any write through
    this store empties the cache; a write by another process (``ytproxy add``
    or ``remove`` while the daemon runs) is seen within ``CACHE_SECONDS``.

    Reads go through their own read-only connection: WAL lets them read while a
    write (ours waiting on another process's lock, or another process's) is
    under way, so a busy database never delays a play's lookup or /health.

    A database found damaged is never written again by this store: every later
    write raises ``StoreError`` (``damaged`` says why), so SQLite's own rule --
    a damaged database is refused and left alone -- holds after open too.
    """

    CACHE_SECONDS = 2.0

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._reader = conn  # until open() gives reads their own connection
        self.path = path
        # Opened without write access (``Store.open(..., write=False)``): every write
        # is refused, saying why.
        self.read_only: str | None = None
        # Why the database cannot be trusted, once SQLite has said it is damaged.
        self.damaged: str | None = None
        self._lock_file: LockFile | None = None
        self._cache: dict[str, tuple[float, Track]] = {}
        # Bumped by every write: a read that started before one must not cache.
        self._generation = 0
        # One statement sequence at a time on the writing connection: a write
        # transaction's statements interleaved with another coroutine's would
        # let one's commit commit the other's half-done work (a playlist's
        # DELETE without its INSERTs).  Reads take it only when they share the
        # connection (":memory:", or a store opened read-only).
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000,
                   write: bool = True, exclusive: bool = False) -> Store:
        """Open (and create, or migrate) the store at ``path``.

        Nothing is written before the file has been checked (SQLite's own
        ``quick_check``), so a damaged file, or another program's, is refused
        and left byte for byte.  ``write=False`` (``list``, ``m3u``): a store this
        process cannot write is read through a read-only connection.
        ``exclusive`` (the daemon): hold ``<path>.lock`` until ``close``, and raise
        AlreadyRunning while another process holds it (the CLI's commands open the
        store beside a daemon; SQLite serialises them).
        """
        memory = str(path) == ":memory:"
        read_only = None if memory else _prepare_file(path, write=write)
        try:
            if read_only is None:
                conn = await aiosqlite.connect(str(path))
            else:
                conn = await _connect_read_only(_file_uri(path), immutable_fallback=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        store = cls(conn, path)
        store.read_only = read_only
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # Before anything writes (switching to WAL rewrites the header, a
            # migration writes pages): a damaged database, or one of another
            # program, must be left exactly as it was.
            await store._refuse_damaged()
            await store._refuse_foreign_schema()
            if read_only is not None:
                await store._check_read_only_schema()
                return store
            if exclusive and not memory:
                # Only once the file is known good: a refused store gets no lock file.
                store._lock_file = _take_lock(path)
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            # Per connection, off by default: removing a track drops its playlist entries.
            await conn.execute("PRAGMA foreign_keys = ON")
            await store._migrate()
            if not memory:
                store._reader = await _connect_read_only(_file_uri(path))
                await store._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        except sqlite3.DatabaseError as exc:
            await store.close()
            raise StoreError(_open_failure(path, exc)) from exc
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        # The reader first: the writer, closing last, checkpoints the WAL and removes it.
        try:
            if self._reader is not self._conn:
                await self._reader.close()
            await self._conn.close()
        finally:
            if self._lock_file is not None:
                self._lock_file.release()
                self._lock_file = None

    async def _refuse_damaged(self) -> None:
        """Refuse a database SQLite's ``quick_check`` finds damaged (a few ms for
        thousands of tracks: it reads every page once, without the index cross-check)."""
        rows = await self._conn.execute_fetchall("PRAGMA quick_check")
        # A problem may span lines ("*** in database main ***\nPage 10: ..."): the
        # refusal is one line.
        problems = [" ".join(str(row[0]).split()) for row in rows if row and row[0] != "ok"]
        if problems:
            more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise StoreError(_damaged_message(self.path, problems[0] + more))

    async def _refuse_foreign_schema(self) -> None:
        """Refuse an SQLite database that has tables but not ytproxy's."""
        # Version and tables in one statement, so one snapshot: another process
        # migrating meanwhile is seen before or after, never half.
        rows = list(await self._conn.execute_fetchall(
            "SELECT (SELECT user_version FROM pragma_user_version), "
            "(SELECT group_concat(name, char(9)) FROM sqlite_master "
            " WHERE type = 'table' AND name NOT LIKE 'sqlite_%')"))
        version, names = int(rows[0][0]), rows[0][1]
        tables = set(names.split("\t")) if names else set()
        # A newer ytproxy's store is not foreign: _migrate says to upgrade.
        if (version == 0 and tables) or (0 < version <= SCHEMA_VERSION
                                         and "tracks" not in tables):
            listed = ", ".join(sorted(tables)[:5]) or "none"
            raise StoreError(
                f"{self.path} is an SQLite database of another program (schema version "
                f"{version}, tables: {listed}), not a ytproxy store; it was left untouched. "
                "Point [store] path at another file"
            )

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this ytproxy "
                f"understands ({SCHEMA_VERSION}); upgrade ytproxy"
            )

    async def _check_read_only_schema(self) -> None:
        version = await self._version()
        self._refuse_newer(version)
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} is read-only ({self.read_only}) and has schema version "
                f"{version}, older than this ytproxy's {SCHEMA_VERSION}: it must be "
                "upgraded once with write access (run `ytproxy list` as a user who may "
                "write it and its directory)"
            )

    async def _version(self) -> int:
        rows = list(await self._conn.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0])

    async def _migrate(self) -> None:
        version = await self._version()
        self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return  # the usual case: no write lock taken
        # Every process that finds the schema old queues here; the first one
        # migrates, and the others, re-reading the version inside the lock,
        # find nothing left to do (or another program's tables: refused).
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            await self._refuse_foreign_schema()
            version = await self._version()
            self._refuse_newer(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[target - 1]):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {target}")
            await self._conn.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await self._conn.rollback()
            raise
        if version < SCHEMA_VERSION:
            log.info("store: migrated %s from schema version %d to %d", self.path, version,
                     SCHEMA_VERSION)

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        """The ``StoreError`` for an SQLite error; a damaged database is written no more."""
        primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            if self.damaged is None:
                self.damaged = _damaged_message(self.path, str(exc), running=True)
                log.error("store: %s", self.damaged)
            return StoreError(self.damaged)
        if primary == _SQLITE_READONLY:
            why = _why_read_only(self.path) or str(exc)
            return StoreError(_read_only_message(self.path, why))
        return StoreError(f"store {self.path}: {exc}")

    def _refuse_write(self) -> None:
        if self.damaged is not None:
            raise StoreError(self.damaged)
        if self.read_only is not None:
            raise StoreError(_read_only_message(self.path, self.read_only))

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement and commit; retried when another process holds the lock.

        busy_timeout already waits inside SQLite; this covers what slips past
        it (a checkpoint, a writer from `ytproxy add` holding on longer).
        Returns the number of rows changed.
        """
        return await self._write_all([(sql, params)])

    async def _write_all(self, steps: Sequence[tuple[str, Sequence[Any]]], *,
                         tracks: bool = True) -> int:
        """Run statements in one transaction (all or none), retried like ``_write``.
        ``tracks=False``: they touch no track row, so what ``get`` remembers stays."""
        self._refuse_write()
        async with self._lock:
            self._refuse_write()  # found damaged while this one waited
            if not tracks:
                return await self._write_steps(steps)
            self._forget()
            try:
                return await self._write_steps(steps)
            finally:
                self._forget()  # and what was read while it ran

    def _forget(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def _write_steps(self, steps: Sequence[tuple[str, Sequence[Any]]]) -> int:
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                changed = 0
                for sql, params in steps:
                    cur = await self._conn.execute(sql, params)
                    changed += max(0, cur.rowcount)
                await self._conn.commit()
                return changed
            except sqlite3.OperationalError as exc:
                message = str(exc).lower()
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.rollback()
                if ("locked" not in message and "busy" not in message) or (
                    attempt + 1 == _WRITE_ATTEMPTS
                ):
                    raise self._failed(exc) from exc
                delay = 0.05 * 2**attempt
                log.warning("store: %s is busy (%s); retry %d in %.2f s",
                            self.path, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
            except sqlite3.Error as exc:  # a constraint, a damaged page, a full disk
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.rollback()
                raise self._failed(exc) from exc
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a query, in one trip to the reading connection's thread; when
        reads share the writing connection, never in the middle of a write."""
        try:
            if self._reader is not self._conn:
                return list(await self._reader.execute_fetchall(sql, params))
            async with self._lock:
                return list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetch(sql, params)
        return rows[0][0] if rows else None

    async def schema_version(self) -> int:
        return int(await self._scalar("PRAGMA user_version"))

    async def journal_mode(self) -> str:
        return str(await self._scalar("PRAGMA journal_mode"))

    # -- queries ---------------------------------------------------------

    async def get(self, track_id: str) -> Track | None:
        now = time.monotonic()
        cached = self._cache.get(track_id)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        generation = self._generation
        # One trip to the connection's thread, not three (execute, fetch, close).
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM tracks WHERE id = ?", (track_id,))
        if not rows:
            return None
        track = _track(rows[0])
        if generation == self._generation:
            self._cache[track_id] = (now, track)
        return track

    async def list_tracks(self) -> list[Track]:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM tracks ORDER BY added_at, id")
        return [_track(r) for r in rows]

    async def count(self) -> int:
        return int(await self._scalar("SELECT count(*) FROM tracks"))

    async def upsert_track(
        self,
        track_id: str,
        source_url: str,
        *,
        title: str | None = None,
        artist: str | None = None,
        album: str | None = None,
        duration: float | None = None,
    ) -> Track:
        """Add a track or update it; a value left None never erases what is stored."""
        await self._write(
            """
            INSERT INTO tracks (id, source_url, title, artist, album, duration, added_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                source_url = excluded.source_url,
                title = coalesce(excluded.title, title),
                artist = coalesce(excluded.artist, artist),
                album = coalesce(excluded.album, album),
                duration = coalesce(excluded.duration, duration)
            """,
            (track_id, source_url, title, artist, album, duration, time.time()),
        )
        track = await self.get(track_id)
        assert track is not None
        return track

    async def add_listed(
        self, tracks: Sequence[tuple[str, str, str | None, str | None, float | None]]
    ) -> list[Track]:
        """Store the songs of a listing, ``(id, source_url, title, artist,
        duration)`` each, in one transaction: new ones are added, stored ones
        keep what they have (their source too) and get their gaps filled.
        The tracks as stored now, in the order given."""
        now = time.time()
        await self._write_all([(
            """
            INSERT INTO tracks (id, source_url, title, artist, duration, added_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                title = coalesce(title, excluded.title),
                artist = coalesce(artist, excluded.artist),
                duration = coalesce(duration, excluded.duration)
            """,
            (track_id, source_url, title, artist, duration, now),
        ) for track_id, source_url, title, artist, duration in tracks])
        stored = []
        for track_id, *_ in tracks:
            track = await self.get(track_id)
            if track is not None:  # removed since, by another process
                stored.append(track)
        return stored

    async def save_stream(self, track_id: str, info: StreamInfo) -> None:
        """Store a freshly resolved stream URL; metadata gaps are filled, never erased."""
        await self._write(
            """
            UPDATE tracks SET
                stream_url = ?, stream_expires_at = ?, stream_mime = ?,
                stream_size = coalesce(?, stream_size), stream_headers = ?,
                stream_format_id = ?, stream_available_at = ?, stream_avoid_clients = ?,
                resolved_at = ?, last_error = NULL,
                title = coalesce(title, ?), artist = coalesce(artist, ?),
                album = coalesce(album, ?), duration = coalesce(duration, ?)
            WHERE id = ?
            """,
            (
                info.url, info.expires_at, info.mime, info.size,
                json.dumps(info.http_headers), info.format_id, info.available_at,
                json.dumps(list(info.avoid_clients)), time.time(),
                info.title, info.artist, info.album, info.duration, track_id,
            ),
        )

    async def fill_metadata(
        self,
        track_id: str,
        *,
        title: str | None = None,
        artist: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Fill what is not known yet about a track; what is stored is kept."""
        await self._write(
            """
            UPDATE tracks SET title = coalesce(title, ?), artist = coalesce(artist, ?),
                duration = coalesce(duration, ?)
            WHERE id = ?
            """,
            (title, artist, duration, track_id),
        )

    async def save_size(self, track_id: str, size: int) -> None:
        await self._write(
            "UPDATE tracks SET stream_size = ? WHERE id = ?", (size, track_id)
        )

    async def record_error(self, track_id: str, message: str) -> None:
        await self._write(
            "UPDATE tracks SET last_error = ? WHERE id = ?", (message, track_id)
        )

    async def mark_played(self, track_id: str, times: int = 1) -> None:
        await self._write(
            "UPDATE tracks SET play_count = play_count + ?, last_played_at = ? WHERE id = ?",
            (times, time.time(), track_id),
        )

    async def remove(self, track_id: str) -> bool:
        return await self._write("DELETE FROM tracks WHERE id = ?", (track_id,)) > 0

    # -- playlists -------------------------------------------------------

    async def replace_playlist(
        self,
        name: str,
        track_ids: Sequence[str],
        *,
        source_url: str | None = None,
        title: str | None = None,
    ) -> Playlist:
        """Create or update playlist ``name`` to hold exactly ``track_ids``, in order.

        One transaction: a reader sees the old entries or the new ones, never a
        mix. Every id must be a stored track.
        """
        check_playlist_name(name)
        now = time.time()
        steps: list[tuple[str, Sequence[Any]]] = [
            (
                """
                INSERT INTO playlists (name, source_url, title, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET
                    source_url = coalesce(excluded.source_url, source_url),
                    title = coalesce(excluded.title, title),
                    updated_at = excluded.updated_at
                """,
                (name, source_url, title, now, now),
            ),
            ("DELETE FROM playlist_tracks WHERE playlist = ?", (name,)),
        ]
        steps.extend(
            ("INSERT INTO playlist_tracks (playlist, position, track_id) VALUES (?, ?, ?)",
             (name, position, track_id))
            for position, track_id in enumerate(track_ids)
        )
        await self._write_all(steps)
        playlist = await self.get_playlist(name)
        assert playlist is not None
        return playlist

    async def get_playlist(self, name: str) -> Playlist | None:
        return _first(await self._named(_PLAYLISTS, name))

    async def list_playlists(self) -> list[Playlist]:
        return await self._named(_PLAYLISTS, None)

    async def _named(self, query: _Named[_Row], name: str | None) -> list[_Row]:
        """The rows of ``query`` for the playlist named ``name``, or (None) every one."""
        where, params = (f"WHERE {query.column} = ?", (name,)) if name is not None else ("", ())
        return [query.row(r) for r in await self._fetch(query.sql.format(where=where), params)]

    async def playlist_tracks(self, name: str) -> list[Track] | None:
        """The playlist's tracks in order (a track may repeat); None for an unknown name."""
        if await self.get_playlist(name) is None:
            return None
        columns = ", ".join(f"t.{c}" for c in _TRACK_FIELDS)
        rows = await self._fetch(
            f"""
            SELECT {columns} FROM playlist_tracks pt JOIN tracks t ON t.id = pt.track_id
            WHERE pt.playlist = ? ORDER BY pt.position
            """,
            (name,),
        )
        return [_track(r) for r in rows]

    async def delete_playlist(self, name: str) -> bool:
        """Forget a playlist (its tracks stay stored); False when there was none."""
        return await self._write("DELETE FROM playlists WHERE name = ?", (name,)) > 0


    # -- playlists that follow their source ----------------------------------

    async def set_sync(self, name: str, source_url: str, every: float, next_sync: float
                       ) -> PlaylistSync:
        """Follow ``source_url`` every ``every`` seconds, next at ``next_sync``
        (a stored playlist; its past attempts are kept when it was followed before)."""
        await self._write_all([(
            "INSERT INTO playlist_sync (playlist, source_url, every, next_sync) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (playlist) DO UPDATE SET "
            "source_url = excluded.source_url, every = excluded.every, "
            "next_sync = excluded.next_sync",
            (name, source_url, every, next_sync),
        )], tracks=False)
        schedule = await self.get_sync(name)
        assert schedule is not None
        return schedule

    async def record_sync(self, name: str, *, at: float, next_sync: float,
                          error: str | None = None) -> None:
        """How an attempt at ``at`` went: worked (``error`` None) or failed, saying why."""
        if error is None:
            sql = ("UPDATE playlist_sync SET last_sync = ?, last_attempt = ?, "
                   "last_error = NULL, failures = 0, next_sync = ? WHERE playlist = ?")
            params: tuple[Any, ...] = (at, at, next_sync, name)
        else:
            sql = ("UPDATE playlist_sync SET last_attempt = ?, last_error = ?, "
                   "failures = failures + 1, next_sync = ? WHERE playlist = ?")
            params = (at, error, next_sync, name)
        await self._write_all([(sql, params)], tracks=False)

    async def get_sync(self, name: str) -> PlaylistSync | None:
        return _first(await self._named(_SYNCS, name))

    async def list_syncs(self) -> list[PlaylistSync]:
        return await self._named(_SYNCS, None)

    async def unsync(self, name: str) -> bool:
        """Stop following a playlist's source (the playlist stays); False if it was not."""
        return await self._write_all(
            [("DELETE FROM playlist_sync WHERE playlist = ?", (name,))], tracks=False) > 0

    # -- the download-ahead cache's records ----------------------------------

    async def cache_rows(self) -> list[CacheRow]:
        rows = await self._fetch(
            "SELECT track_id, file_name, format_id, size, mime, ranges, complete, last_used "
            "FROM cache_files")
        return [CacheRow(r[0], r[1], r[2], int(r[3]), r[4],
                         tuple((int(a), int(b)) for a, b in json.loads(r[5])),
                         bool(r[6]), float(r[7])) for r in rows]

    async def save_cache_row(self, row: CacheRow) -> None:
        await self._write_all([(
            "INSERT INTO cache_files (track_id, file_name, format_id, size, mime, ranges, "
            "complete, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (track_id) DO UPDATE SET file_name = excluded.file_name, "
            "format_id = excluded.format_id, size = excluded.size, mime = excluded.mime, "
            "ranges = excluded.ranges, complete = excluded.complete, "
            "last_used = excluded.last_used",
            (row.track_id, row.file_name, row.format_id, row.size, row.mime,
             json.dumps([list(r) for r in row.ranges]), int(row.complete), row.last_used),
        )], tracks=False)

    async def delete_cache_rows(self, track_ids: Sequence[str]) -> None:
        await self._write_all([("DELETE FROM cache_files WHERE track_id = ?", (track_id,))
                               for track_id in track_ids], tracks=False)


@dataclass(frozen=True)
class CacheRow:
    """What the store keeps of one cache file (ytproxy.cache)."""

    track_id: str
    file_name: str
    format_id: str | None
    size: int
    mime: str | None
    ranges: tuple[tuple[int, int], ...]  # [start, end) byte ranges on disk
    complete: bool
    last_used: float


_Row = TypeVar("_Row")


@dataclass(frozen=True)
class _Named(Generic[_Row]):
    """A query of playlists' rows: ``sql`` with ``{where}`` for the clause that
    picks one by ``column``; ``row`` makes each result."""

    sql: str
    column: str
    row: Callable[[sqlite3.Row], _Row]


_PLAYLISTS = _Named(
    """
    SELECT p.name, p.source_url, p.title, p.created_at, p.updated_at, count(pt.track_id)
    FROM playlists p LEFT JOIN playlist_tracks pt ON pt.playlist = p.name
    {where} GROUP BY p.name ORDER BY p.name
    """, "p.name", lambda r: Playlist(*r))
_SYNCS = _Named(
    "SELECT playlist, source_url, every, next_sync, last_sync, last_attempt, last_error, "
    "failures FROM playlist_sync {where} ORDER BY playlist", "playlist",
    lambda r: PlaylistSync(r[0], r[1], float(r[2]), float(r[3]), r[4], r[5], r[6], int(r[7])))


def _first(rows: Sequence[_Row]) -> _Row | None:
    return rows[0] if rows else None


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents as 0700 (as XDG asks for its own
    directories); directories that exist already are left as they are."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it meanwhile; it is theirs to keep
        os.chmod(created, 0o700)  # mkdir's mode passes through the umask
    if not directory.is_dir():
        raise NotADirectoryError(20, "not a directory", str(directory))


def _create_private_file(path: Path) -> None:
    """Create a missing database file as 0600 (SQLite would use 0644 minus the
    umask, and its -wal/-shm files copy the database's mode); an existing one is
    left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from exc
    os.close(fd)


def _refuse_foreign_file(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite: SQLite itself would treat a
    one-byte file as an empty database and overwrite it."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not a ytproxy database (not an SQLite file); "
            "move it aside or point [store] path elsewhere"
        )


def _statements(script: str) -> list[str]:
    """A migration script's statements, one by one (``executescript`` would commit
    the transaction the migration runs in)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def _take_lock(path: Path) -> LockFile:
    """``<path>.lock``, held by one daemon at a time (AlreadyRunning otherwise)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        return LockFile.take(lock_path, f"the store {path}", "[store] path")
    except OSError as exc:
        raise StoreError(f"cannot create the store's lock file {lock_path}: "
                         f"{exc.strerror or exc}") from exc


def _prepare_file(path: Path, *, write: bool) -> str | None:
    """Check the store's file before SQLite opens it, and create it (0600) when
    missing; returns why this process cannot write it, or None."""
    try:
        _make_private_dirs(path.parent)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory for the store {path.parent}: {exc.strerror}"
        ) from exc
    _refuse_foreign_file(path)
    read_only = _why_read_only(path)
    if read_only is None:
        _create_private_file(path)
    elif write:
        raise StoreError(_read_only_message(path, read_only))
    elif not path.exists():
        raise StoreError(
            f"there is no store at {path} yet, and it cannot be created: {read_only}; "
            "run `ytproxy add` once with write access there, or point [store] path elsewhere"
        )
    return read_only


def _file_uri(path: Path) -> str:
    return path.resolve().as_uri()


async def _connect_read_only(uri: str, *, immutable_fallback: bool = False
                             ) -> aiosqlite.Connection:
    """A connection that cannot write the database at ``uri``.

    In WAL mode a reader needs the ``-shm`` file.  With ``immutable_fallback``
    (a store opened read-only), where it is missing and cannot be made (a
    read-only mount, a directory this user may not write), the file is read as
    immutable: no writer has it open then (a writer makes the ``-shm`` file),
    and a one-shot read is over before one could start.  Never for the
    daemon's reader: its own writer changes the file."""
    conn = await aiosqlite.connect(f"{uri}?mode=ro", uri=True)
    if not immutable_fallback:
        return conn
    try:
        await conn.execute_fetchall("SELECT count(*) FROM sqlite_master")
        return conn
    except sqlite3.OperationalError as exc:
        await conn.close()
        # CANTOPEN, or READONLY_CANTINIT: no -shm, and none can be made.
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in (_SQLITE_CANTOPEN,
                                                                _SQLITE_READONLY):
            raise
    return await aiosqlite.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def _why_read_only(path: Path) -> str | None:
    """Why this process cannot write the store (its file, or the directory that
    holds its -wal and -shm files), or None when it can."""
    directory = path.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"the file system holding {directory} is mounted read-only"
    except OSError:
        pass  # the checks below say what is wrong
    if path.exists() and not os.access(path, os.W_OK):
        return f"this user (uid {os.getuid()}) has no write permission on the file"
    companions = (Path(f"{path}-wal"), Path(f"{path}-shm"))
    for companion in companions:
        if companion.exists() and not os.access(companion, os.W_OK):
            return f"this user (uid {os.getuid()}) has no write permission on {companion}"
    # With both there and writable, SQLite needs no new file in the directory.
    if not all(c.exists() for c in companions) and not os.access(directory, os.W_OK | os.X_OK):
        return (f"this user (uid {os.getuid()}) has no write permission on its directory "
                f"{directory} (SQLite keeps its -wal and -shm files there)")
    return None


def _read_only_message(path: Path, why: str) -> str:
    return (f"the store {path} is read-only: {why}. ytproxy must write it to add tracks, "
            "record plays and keep its cache; give this user write access to the file and "
            "its directory (or mount it read-write), or point [store] path elsewhere "
            "(`ytproxy list` and `ytproxy m3u` can still read it)")


def _damaged_message(path: Path, detail: str, *, running: bool = False) -> str:
    what = ("ytproxy writes to it no more. Stop ytproxy, then move it aside"
            if running else "ytproxy left it exactly as it was. To go on, move it aside")
    return (f"the store {path} is damaged ({detail}); {what} to start with an empty "
            f"store, or first try to save what it holds with: "
            f"sqlite3 {shlex.quote(str(path))} .recover | sqlite3 recovered.db "
            "(then point [store] path at recovered.db)")


def _open_failure(path: Path, exc: sqlite3.DatabaseError) -> str:
    """What to tell a person whose store could not be opened."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return _damaged_message(path, str(exc))
    if primary == _SQLITE_READONLY:
        return _read_only_message(path, _why_read_only(path) or str(exc))
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return (f"the store {path} stayed locked by another process for longer than "
                f"[store] busy_timeout ({exc}); look for a stuck `ytproxy` or `sqlite3` "
                "holding it, or raise busy_timeout")
    return (f"{path} is not a ytproxy database or is damaged ({exc}); "
            "move it aside or point [store] path elsewhere")


def _track(row: Sequence[Any]) -> Track:
    # The columns are named as Track's fields; two hold JSON.
    values = dict(zip(_TRACK_FIELDS, row, strict=True))
    headers, avoid = values["stream_headers"], values["stream_avoid_clients"]
    values["stream_headers"] = json.loads(headers) if headers else {}
    values["stream_avoid_clients"] = tuple(json.loads(avoid)) if avoid else ()
    return Track(**values)
