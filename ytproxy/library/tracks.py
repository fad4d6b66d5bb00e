"""The service the handler and the CLI talk to: stored track → fresh ``StreamInfo``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ytproxy.config import ResolverConfig
from ytproxy.errors import (
    InvalidTrackId,
    ResolverFailed,
    ResolverUnavailable,
    SourceNotAllowed,
    StoreError,
    TrackGone,
    TrackNotFound,
    YoutubeRefused,
    YtproxyError,
)
from ytproxy.library.playlists import (
    check_playlist_name,
    render_m3u,
    safe_playlist_name,
    write_m3u_file,
)
from ytproxy.library.store import Store
from ytproxy.models import StreamInfo, Track, TrackId, is_video_id
from ytproxy.resolve.budget import CallKind
from ytproxy.resolve.resolver import Resolver
from ytproxy.resolve.singleflight import SingleFlight
from ytproxy.resolve.sources import check_source_url

__all__ = ["ImportProgress", "ImportSummary", "Tracks", "derived_id", "youtube_id_from_url"]

log = logging.getLogger(__name__)

# A stored URL this close to expiry is still used when a refresh fails.
_LAST_RESORT_MARGIN = 30.0

_YOUTUBE_HOSTS = ("youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com")


def youtube_id_from_url(url: str) -> TrackId | None:
    """The video id in a YouTube / YouTube Music / youtu.be URL, if there is one."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    candidate: str | None = None
    if host == "youtu.be":
        candidate = parts.path.strip("/").split("/")[0]
    elif host in _YOUTUBE_HOSTS:
        if parts.path == "/watch":
            values = parse_qs(parts.query).get("v")
            candidate = values[0] if values else None
        else:
            segments = parts.path.strip("/").split("/")
            if len(segments) >= 2 and segments[0] in ("shorts", "embed", "live", "v"):
                candidate = segments[1]
    return TrackId(candidate) if candidate and is_video_id(candidate) else None


# Told (entry number from 1, number of entries, the entry's title or id) as an import goes.
ImportProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImportSummary:
    """What ``Tracks.import_playlist`` did."""

    name: str
    title: str | None
    source_url: str
    track_ids: tuple[str, ...]  # the playlist, in the source's order
    added: int  # tracks stored for the first time
    already: int  # tracks that were stored before
    skipped: int  # entries that are not tracks ytproxy can play


def derived_id(url: str) -> str:
    """A stable 11-character id for a track added by a non-YouTube URL."""
    digest = hashlib.sha256(url.encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()[:11]


class Tracks:
    """Looks tracks up, resolves them when their URL is missing or expiring, stores results."""

    def __init__(self, store: Store, resolver: Resolver, config: ResolverConfig) -> None:
        self.store = store
        self.resolver = resolver
        self._config = config
        self._refreshes: SingleFlight[tuple[str, str | None, tuple[str, ...]], StreamInfo] = (
            SingleFlight())
        # Writes a listener does not wait for (see ``_in_background``).
        self._background: set[asyncio.Task[None]] = set()
        self.cache_hits = 0  # plays served from a stored, unexpired URL

    async def get(self, track_id: str) -> Track | None:
        """The stored track, as it is (no resolving); None when it is not stored."""
        return await self.store.get(track_id)

    def identify(self, id_or_url: str) -> tuple[str, str]:
        """(track id, source URL) for what a person typed: an id or a page URL."""
        track_id, source_url, _ = self._identify(id_or_url)
        return track_id, source_url

    def _identify(self, id_or_url: str) -> tuple[str, str, bool]:
        """Like ``identify``, plus whether the source URL is the one given (True) or
        built from source_url_template (False: the admin's, trusted)."""
        value = id_or_url.strip()
        if is_video_id(value):
            return value, self.resolver.source_url_for(TrackId(value)), False
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            video_id = youtube_id_from_url(value)
            if video_id is not None:
                return video_id, self.resolver.source_url_for(video_id), False
            return derived_id(value), value, True
        if parts.scheme and ("://" in value or parts.scheme in ("data", "javascript")):
            raise InvalidTrackId(
                f"{id_or_url!r} is not an http(s) URL ({parts.scheme}:); ytproxy only "
                "reads http:// and https:// pages"
            )
        raise InvalidTrackId(
            f"{id_or_url!r} is neither an 11-character YouTube id nor an http(s) URL"
        )

    async def check_source(self, url: str) -> None:
        """Refuse (SourceNotAllowed) a page URL a person gave that ytproxy must not read."""
        await check_source_url(url, allow_private=self._config.allow_private_sources,
                               timeout=self._config.timeout)

    async def add(self, id_or_url: str, *, kind: CallKind = CallKind.LISTENER,
                  try_while_paused: bool = True) -> Track:
        """Resolve and store a track (used by `ytproxy add` and POST /tracks)."""
        track_id, source_url, given = self._identify(id_or_url)
        if given:
            await self.check_source(source_url)
        existing = await self.store.get(track_id)
        if existing is not None:
            source_url = existing.source_url
        info = await self.resolver.resolve(source_url, kind=kind,
                                           try_while_paused=try_while_paused)
        await self.store.upsert_track(
            track_id, source_url, title=info.title, artist=info.artist, album=info.album,
            duration=info.duration,
        )
        await self.store.save_stream(track_id, info)
        track = await self.store.get(track_id)
        assert track is not None
        return track

    async def stream_for(self, track_id: TrackId, *, kind: CallKind = CallKind.LISTENER,
                         try_while_paused: bool = True) -> tuple[Track, StreamInfo]:
        """The track and a stream URL that will not expire for at least the safety margin.

        ``kind``: who waits for it (a listener's call goes first; background
        work waits its turn, see ``Resolver.resolve``, as does
        ``try_while_paused``)."""
        track = await self.store.get(track_id)
        if track is None:
            return await self._lazy_add(track_id, kind, try_while_paused)
        stored = track.stored_stream()
        now = time.time()
        if stored is not None and stored.fresh(now, self._config.expiry_margin):
            self.cache_hits += 1
            return track, stored
        try:
            if kind is CallKind.LISTENER:
                # Joining a background refresh of this track: it goes now.
                with self.resolver.wanting(track.source_url):
                    info = await self.refresh(track_id, try_while_paused=try_while_paused)
            else:
                info = await self.refresh(track_id, kind=kind)
        except (ResolverUnavailable, ResolverFailed) as exc:
            # Degrade gracefully: a URL inside the safety margin still works for
            # a while, and the relay refreshes on 403 if it runs out mid-song.
            if stored is not None and stored.fresh(now, _LAST_RESORT_MARGIN):
                log.warning("tracks: %s: refresh failed (%s); keeping the stored URL, "
                            "which expires in %.0f s", track_id, exc, stored.expires_at - now)
                return track, stored
            raise
        refreshed = await self.store.get(track_id)
        return (refreshed or track), info

    async def _lazy_add(self, track_id: str, kind: CallKind = CallKind.LISTENER,
                        try_while_paused: bool = True) -> tuple[Track, StreamInfo]:
        # MPD users just `mpc add http://…/proxy/<id>`: an unknown id is added on first play.
        log.info("tracks: %s is not stored; adding it on first play", track_id)
        try:
            track = await self.add(track_id, kind=kind, try_while_paused=try_while_paused)
        except TrackGone as exc:
            raise TrackNotFound(f"unknown track {track_id}: {exc}") from exc
        info = track.stored_stream()
        assert info is not None
        return track, info

    async def refresh(self, track_id: str, *, format_id: str | None = None,
                      avoid_clients: tuple[str, ...] = (),
                      kind: CallKind = CallKind.LISTENER,
                      try_while_paused: bool = True) -> StreamInfo:
        """Ask the resolver for a fresh URL and store it; concurrent asks share one call.

        ``format_id``: the format a stream is playing, asked for again so that a
        resume fetches the same file.  ``avoid_clients``: player clients whose
        URLs failed for this track; the URL stored with them is the working
        client's, kept (and so remembered) until it expires.
        """
        key = (track_id, format_id, avoid_clients)
        return await self._refreshes.run(
            key, lambda: self._refresh(track_id, format_id, avoid_clients, kind,
                                       try_while_paused))

    async def _refresh(self, track_id: str, format_id: str | None = None,
                       avoid_clients: tuple[str, ...] = (),
                       kind: CallKind = CallKind.LISTENER,
                       try_while_paused: bool = True) -> StreamInfo:
        track = await self.store.get(track_id)
        if track is None:
            raise TrackNotFound(f"unknown track {track_id}")
        try:
            info = await self.resolver.resolve(track.source_url, format_id=format_id,
                                               avoid_clients=avoid_clients, kind=kind,
                                               try_while_paused=try_while_paused)
        except YoutubeRefused:
            raise  # YouTube refuses the address, not this track: nothing is recorded
        except YtproxyError as exc:
            self._in_background("record the error", self.store.record_error(track_id, str(exc)))
            raise
        # The fresh URL is what the listener needs; failing to store it only
        # costs a resolve next time, so it must not end the stream, nor wait.
        self._in_background("store the fresh URL", self.store.save_stream(track_id, info))
        return info

    def _in_background(self, what: str, write: Coroutine[Any, Any, None]) -> None:
        """A write the listener does not wait for: another process holding the
        store's lock (``ytproxy add``, a backup) must not delay a stream's bytes.
        Writes started here run in the order they were asked for (the store
        takes them one at a time, first come first served)."""
        task = asyncio.create_task(self._best_effort(what, write))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Let the writes started in the background finish (before the store closes)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _best_effort(self, what: str, write: Awaitable[None]) -> None:
        try:
            await write
        except StoreError as exc:
            log.warning("tracks: could not %s: %s", what, exc)

    async def remember_size(self, track_id: str, size: int) -> None:
        await self._best_effort("store the size", self.store.save_size(track_id, size))

    async def mark_played(self, track_id: str, times: int = 1) -> None:
        await self._best_effort("count the play", self.store.mark_played(track_id, times))

    def remember_size_soon(self, track_id: str, size: int) -> None:
        """``remember_size`` in the background: the listener does not wait for it."""
        self._in_background("store the size", self.store.save_size(track_id, size))

    def mark_played_soon(self, track_id: str, times: int = 1) -> None:
        """``mark_played`` in the background: the listener does not wait for it."""
        self._in_background("count the play", self.store.mark_played(track_id, times))

    async def import_playlist(
        self, url: str, name: str | None = None, *, progress: ImportProgress | None = None
    ) -> ImportSummary:
        """Store every entry of a playlist as a track and the playlist under ``name``.

        Entries are not resolved here — one yt-dlp call per entry would get us
        rate-limited by YouTube; each track resolves on its first play. Running
        it again makes the stored playlist follow the source's current order.
        """
        if name is not None:
            check_playlist_name(name)
        await self.check_source(url)
        title, entries = await self.resolver.list_playlist(url)
        if name is None:
            name = safe_playlist_name(title, fallback=f"playlist {derived_id(url)[:6]}")
        order: list[str] = []
        seen: set[str] = set()
        refused: dict[str, SourceNotAllowed | None] = {}  # by host: one look-up each
        added = already = skipped = 0
        for number, entry in enumerate(entries, 1):
            try:
                track_id, source_url, given = self._identify(entry.video_id or entry.url)
                if given:
                    # The listing is the far side's word: its page URLs get the same
                    # check as one a person typed, or a playlist could point inward.
                    host = urlsplit(source_url).hostname or ""
                    if host not in refused:
                        try:
                            await self.check_source(source_url)
                            refused[host] = None
                        except SourceNotAllowed as exc:
                            refused[host] = exc
                    error = refused[host]
                    if error is not None:
                        raise error
            except (InvalidTrackId, SourceNotAllowed) as exc:
                log.warning("tracks: %s: skipping entry %d, %r: %s", url, number,
                            entry.url, exc if isinstance(exc, SourceNotAllowed)
                            else "not a URL ytproxy can play")
                skipped += 1
                continue
            if progress is not None:
                progress(number, len(entries), entry.title or track_id)
            order.append(track_id)
            if track_id in seen:
                continue  # a playlist may hold a track twice; store it once
            seen.add(track_id)
            if await self.store.get(track_id) is not None:
                already += 1
                await self.store.fill_metadata(track_id, title=entry.title,
                                               artist=entry.artist, duration=entry.duration)
                continue
            await self.store.upsert_track(track_id, source_url, title=entry.title,
                                          artist=entry.artist, duration=entry.duration)
            added += 1
        if not order:
            # The source listed entries, and none is usable (not a playable URL, or
            # a place ytproxy will not read): that is not an empty playlist, and
            # must not empty the one stored.
            existing = await self.store.get_playlist(name)
            kept = ("it is not stored" if existing is None else
                    f"the stored one ({existing.track_count} tracks) and its M3U were "
                    "left as they were")
            raise ResolverFailed(
                f"kept nothing of the playlist {name!r} from {url}: it listed "
                f"{len(entries)} entries and none is a track ytproxy can play "
                f"({skipped} skipped, see the warnings above); {kept}"
            )
        await self.store.replace_playlist(name, order, source_url=url, title=title)
        log.info("tracks: imported %s as %r: %d tracks, %d new", url, name, len(order), added)
        return ImportSummary(name=name, title=title, source_url=url, track_ids=tuple(order),
                             added=added, already=already, skipped=skipped)

    async def write_playlist_file(self, name: str, directory: Path, base_url: str) -> Path:
        """Write the stored playlist as ``directory/NAME.m3u`` (atomically), for
        ``mpc load NAME``; raises ``OSError`` when it cannot be written."""
        chosen = await self.store.playlist_tracks(name) or []
        return await asyncio.to_thread(write_m3u_file, directory, name,
                                       render_m3u(chosen, base_url))
