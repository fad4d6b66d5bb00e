"""Playlists that stay in sync: when each is due, and the task that syncs them.

A playlist imported with ``ytproxy import URL --name NAME --sync [EVERY]`` is
imported again every EVERY: the same import as the CLI's (same order as the
source, nothing stored twice, ``NAME.m3u`` replaced atomically), so a source
that fails, or lists nothing ytproxy can play, leaves the playlist exactly as
it was.  A failed attempt is retried sooner than the interval, with backoff
(``next_attempt``), and its error is kept for ``ytproxy playlists`` and
/status.

The schedules live in the store, so they survive restarts and the CLI can add
one while the daemon runs: the task reads them again at every wake-up, and
wakes at least every ``poll_every`` seconds.  It never talks to MPD: a stored
playlist is read by MPD only on ``mpc load``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ytproxy.models import PlaylistSync

__all__ = ["BACKOFF_BASE", "PlaylistSyncer", "due_now", "next_attempt", "next_wake",
           "poll_period"]

log = logging.getLogger(__name__)

BACKOFF_BASE = 300.0  # seconds before the first retry of a failed sync (then doubling)
POLL_MAX = 30.0  # the longest the task sleeps before reading the schedules again


def next_attempt(*, now: float, every: float, failures: int) -> float:
    """When to sync next: ``every`` after one that worked; after ``failures`` (> 0)
    failed in a row, 5 min doubling with each, never later than ``every``."""
    if failures <= 0:
        return now + every
    backoff: float = BACKOFF_BASE * 2.0 ** min(failures - 1, 30)
    return now + min(every, backoff)


def due_now(schedules: Iterable[PlaylistSync], *, now: float) -> list[PlaylistSync]:
    """The schedules due at ``now``, the longest overdue first."""
    return sorted((s for s in schedules if s.next_sync <= now),
                  key=lambda s: (s.next_sync, s.name))


def poll_period(schedules: Iterable[PlaylistSync]) -> float:
    """How often to read the schedules again: at most ``POLL_MAX``, and no longer
    than the shortest interval (a schedule added by the CLI is seen in time)."""
    return min([POLL_MAX, *(s.every for s in schedules)])


def next_wake(schedules: Iterable[PlaylistSync], *, now: float, poll: float) -> float:
    """Seconds to sleep: until the next schedule is due, at most ``poll``, never < 0."""
    soonest = min((s.next_sync for s in schedules), default=now + poll)
    return max(0.0, min(soonest - now, poll))


class PlaylistSyncer:
    """Syncs the due playlists, one at a time, until closed.

    ``schedules()`` reads them from the store; ``sync(name, source_url)`` imports
    one (raising on failure, having changed nothing) and returns a short summary;
    ``record(name, at=, next_sync=, error=)`` stores how it went.
    """

    def __init__(
        self,
        *,
        schedules: Callable[[], Awaitable[list[PlaylistSync]]],
        sync: Callable[[str, str], Awaitable[str]],
        record: Callable[..., Awaitable[None]],
        clock: Callable[[], float] = time.time,
        poll_every: float = POLL_MAX,
    ) -> None:
        if poll_every <= 0:
            raise ValueError(f"poll_every must be > 0, got {poll_every}")
        self._schedules = schedules
        self._sync = sync
        self._record = record
        self._clock = clock
        self._poll_every = poll_every
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._running: str | None = None  # the playlist being synced now
        self._wake = asyncio.Event()
        self.attempts = 0
        self.failures = 0

    def report(self) -> dict[str, Any]:
        return {"syncing": self._running, "attempts": self.attempts,
                "failures": self.failures}

    def wake(self) -> None:
        """Read the schedules now (a test, or a change made in this process)."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="playlist sync")

    async def aclose(self) -> None:
        """Stop (a sync under way is cancelled: it changes the store in one
        transaction, and the M3U by one rename, so either happened or not)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._round()
            except Exception:  # a bug, or the store failing to read: logged, retried
                log.exception("sync: reading the playlist schedules failed; retrying")
                wait = self._poll_every
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _round(self) -> float:
        """Sync what is due; the seconds until the next look."""
        schedules = await self._schedules()
        for schedule in due_now(schedules, now=self._clock()):
            await self._one(schedule)
        schedules = await self._schedules()
        poll = min(self._poll_every, poll_period(schedules))
        return next_wake(schedules, now=self._clock(), poll=poll)

    async def _one(self, schedule: PlaylistSync) -> None:
        name = schedule.name
        self._running = name
        self.attempts += 1
        started = self._clock()
        try:
            summary = await self._sync(name, schedule.source_url)
        except Exception as exc:
            self.failures += 1
            failures = schedule.failures + 1
            retry = next_attempt(now=self._clock(), every=schedule.every, failures=failures)
            error = str(exc) or type(exc).__name__
            level = logging.WARNING if failures == 1 else logging.INFO
            log.log(level, "sync: %r from %s failed (%d in a row): %s; the playlist and its "
                    "M3U are as they were; next try in %.0f s", name, schedule.source_url,
                    failures, error, retry - self._clock())
            await self._record(name, at=started, next_sync=retry, error=error[:2000])
        else:
            log.info("sync: %r from %s: %s", name, schedule.source_url, summary)
            await self._record(name, at=started, next_sync=next_attempt(
                now=self._clock(), every=schedule.every, failures=0))
        finally:
            self._running = None
