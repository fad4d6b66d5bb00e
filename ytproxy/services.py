"""The daemon's services, each built in one place: the store, the resolver, the
upstream fetcher, the tracks service, stream sources, the cache, playback (what
a listener gets), listings, the MPD follower and the playlist syncer.

The daemon (``ytproxy.http.app``) runs them as one aiohttp cleanup context per
resource (open, store under its typed ``web.AppKey``, ``yield``, close), in the
order below, closed in reverse; the CLI's one-shot commands open the store,
resolver and tracks service with ``library()``, through the same builders.
Below ``http`` and ``cli``: this module imports neither.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import aiohttp
from aiohttp import web

from ytproxy.cache import TrackCache
from ytproxy.config import Config
from ytproxy.errors import AlreadyRunning, YtproxyError
from ytproxy.follower import AutoplaySong, MpdFollower, mpd_candidates
from ytproxy.library import (
    MAX_LIMIT,
    POLL_MAX,
    Listings,
    PlaylistSyncer,
    Store,
    Tracks,
    TrackSources,
    proxied_track,
    proxy_base_url,
)
from ytproxy.models import TrackId
from ytproxy.playback import Playback
from ytproxy.resolve import Resolver
from ytproxy.upstream import UpstreamFetcher, upstream_connector

__all__ = [
    "CACHE",
    "CONFIG",
    "FETCHER",
    "FOLLOWER",
    "LISTINGS",
    "PLAYBACK",
    "RESOLVER",
    "SOURCES",
    "STORE",
    "SYNCER",
    "TRACKS",
    "CleanupContext",
    "Library",
    "library",
    "new_listings",
    "new_resolver",
    "new_tracks",
    "open_store",
    "resource_contexts",
    "task_contexts",
]

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
RESOLVER = web.AppKey("resolver", Resolver)
FETCHER = web.AppKey("fetcher", UpstreamFetcher)
TRACKS = web.AppKey("tracks", Tracks)
SOURCES = web.AppKey("sources", TrackSources)
# None: [cache] max_size = 0, or its directory could not be used (streams are relayed).
CACHE: web.AppKey[TrackCache | None] = web.AppKey("cache")
PLAYBACK = web.AppKey("playback", Playback)
LISTINGS = web.AppKey("listings", Listings)
# None: no MPD to follow, or neither look-ahead nor autoplay to do.
FOLLOWER: web.AppKey[MpdFollower | None] = web.AppKey("follower")
SYNCER = web.AppKey("syncer", PlaylistSyncer)


# -- builders (the daemon's and the CLI's) ------------------------------------

async def open_store(config: Config, *, exclusive: bool = False, write: bool = True) -> Store:
    """The store at [store] path.  ``exclusive``: the daemon's, locked against a
    second daemon; the CLI's commands open it beside a running one."""
    return await Store.open(
        config.store.resolved_path, busy_timeout_ms=int(config.store.busy_timeout * 1000),
        write=write, exclusive=exclusive)


def new_resolver(config: Config,
                 on_duration: Callable[[float], None] | None = None) -> Resolver:
    """yt-dlp behind its breaker, told ``on_duration`` of each call's seconds."""
    return Resolver(config.resolver, config.breaker, proxy=config.upstream.proxy,
                    on_duration=on_duration)


def new_tracks(config: Config, store: Store, resolver: Resolver) -> Tracks:
    return Tracks(store, resolver, config.resolver)


def new_listings(config: Config, store: Store, resolver: Resolver) -> Listings:
    """Search, mixes and playlists listed through yt-dlp, their songs stored."""
    return Listings(store=store, list_flat=resolver.listing,
                    source_url_for=resolver.source_url_for,
                    search_url_template=config.resolver.search_url_template,
                    radio_url_template=config.resolver.radio_url_template)


@dataclass(frozen=True)
class Library:
    """What a one-shot CLI command works with."""

    store: Store
    resolver: Resolver
    tracks: Tracks

    def listings(self, config: Config) -> Listings:
        return new_listings(config, self.store, self.resolver)


@asynccontextmanager
async def library(config: Config, *, write: bool = True) -> AsyncIterator[Library]:
    """The store (read-only unless ``write``), resolver and tracks service of a
    CLI command, closed again (background writes first) when it is done."""
    store = await open_store(config, write=write)
    try:
        resolver = new_resolver(config)
        try:
            tracks = new_tracks(config, store, resolver)
            try:
                yield Library(store, resolver, tracks)
            finally:
                await tracks.drain()
        finally:
            await resolver.close()
    finally:
        await store.close()


# -- the daemon's cleanup contexts --------------------------------------------

async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    # The daemon's store is its alone (a second daemon refuses to start).
    store = app[STORE] = await open_store(app[CONFIG], exclusive=True)
    yield
    await store.close()


def _resolver_ctx(on_duration: Callable[[float], None] | None) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        resolver = app[RESOLVER] = new_resolver(app[CONFIG], on_duration)
        yield
        await resolver.close()
    return ctx


async def _fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # HTTP(S)_PROXY/NO_PROXY apply to upstream (upstream.proxy overrides them): the
    # fetcher reads them once per host rather than the session (trust_env) per request.
    session = aiohttp.ClientSession(connector=upstream_connector(), auto_decompress=False)
    fetcher = app[FETCHER] = UpstreamFetcher(config.upstream, session, config.breaker)
    yield
    await fetcher.aclose()
    await session.close()


async def _tracks_ctx(app: web.Application) -> AsyncIterator[None]:
    tracks = app[TRACKS] = new_tracks(app[CONFIG], app[STORE], app[RESOLVER])
    yield
    await tracks.drain()  # its background writes reach the store before it closes


async def _sources_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # What every relay, size probe and download reads upstream through.
    app[SOURCES] = TrackSources(app[FETCHER], app[TRACKS], policy=config.retry,
                                max_available_wait=config.resolver.max_available_wait)
    yield  # nothing of its own to close


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[CACHE] = cache = await _open_cache(config, app[STORE], app[TRACKS], app[SOURCES])
    yield
    if cache is not None:
        await cache.aclose()


async def _playback_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    playback = app[PLAYBACK] = Playback(
        tracks=app[TRACKS], sources=app[SOURCES], cache=app[CACHE], policy=config.retry,
        resolver_pace=config.breaker.reset_after)
    yield
    await playback.drain()  # its play counts reach the store before it closes


async def _open_cache(config: Config, store: Store, tracks: Tracks,
                      sources: TrackSources) -> TrackCache | None:
    if not config.cache.enabled:
        log.info("cache: off ([cache] max_size = 0): every stream is relayed from upstream")
        return None
    cache = TrackCache(config, store, tracks, sources)
    try:
        await cache.open()
    except AlreadyRunning:
        raise  # another daemon's files: refuse to start, as for its store
    except YtproxyError as exc:
        # Streams need no cache: relay them rather than not start at all.
        log.warning("%s; the cache is off until this is fixed and the daemon restarted", exc)
        return None
    return cache


async def _listings_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LISTINGS] = new_listings(app[CONFIG], app[STORE], app[RESOLVER])
    yield  # nothing of its own to close: it lists through the resolver


async def _follower_ctx(app: web.Application) -> AsyncIterator[None]:
    config, listings = app[CONFIG], app[LISTINGS]
    follower = app[FOLLOWER] = _mpd_follower(config, app[CACHE],
                                             partial(_mix_songs, listings, config))
    if follower is not None:
        await follower.start()
    yield
    if follower is not None:
        await follower.aclose()


async def _syncer_ctx(app: web.Application) -> AsyncIterator[None]:
    syncer = app[SYNCER] = _playlist_syncer(app[CONFIG], app[STORE], app[TRACKS])
    await syncer.start()
    yield
    await syncer.aclose()


def resource_contexts(*, on_resolve_duration: Callable[[float], None] | None = None
                      ) -> list[CleanupContext]:
    """Store, resolver, fetcher, tracks, stream sources, cache, playback, listings:
    what a stream is served from.  ``app[CONFIG]`` must be set."""
    return [_store_ctx, _resolver_ctx(on_resolve_duration), _fetcher_ctx, _tracks_ctx,
            _sources_ctx, _cache_ctx, _playback_ctx, _listings_ctx]


def task_contexts() -> list[CleanupContext]:
    """The background work on those: MPD look-ahead and autoplay, playlist sync."""
    return [_follower_ctx, _syncer_ctx]


async def _mix_songs(listings: Listings, config: Config, track_id: str) -> list[AutoplaySong]:
    """Autoplay's ``more_songs``: the mix of a track, stored, as MPD is to queue it."""
    base = proxy_base_url(config.server.host, config.server.port)
    # The follower's ids come from proxied_track, TrackIds already (no second check).
    songs = await listings.radio(TrackId(track_id), limit=MAX_LIMIT)
    return [AutoplaySong(s.id, f"{base}/proxy/{s.id}", s.artist, s.title) for s in songs]


def _no_lookahead(track_ids: list[str]) -> None:
    """``want`` when there is no cache to fill (autoplay alone)."""


def _mpd_follower(config: Config, cache: TrackCache | None,
                  more_songs: Callable[[str], Awaitable[list[AutoplaySong]]]
                  ) -> MpdFollower | None:
    """MPD look-ahead, when there is a cache to fill and an MPD to follow, and
    autoplay when it is on.

    With no [mpd] host and no MPD_HOST, MPD is looked for where mpc looks
    (``mpd_candidates``): the follower takes the first that answers."""
    autoplay = config.mpd.autoplay
    try:
        candidates = mpd_candidates(config.mpd.host, config.mpd.port, os.environ)
    except ValueError as exc:
        log.warning("mpd: look-ahead%s is off: %s", " and autoplay" if autoplay else "", exc)
        return None
    lookahead = config.mpd.lookahead if cache is not None else 0
    if lookahead == 0 and not autoplay:
        why = "the cache is off" if cache is None else "[mpd] lookahead = 0"
        log.info("mpd: look-ahead is off (%s)", why)
        return None
    host, port, password = candidates[0]
    server = config.server
    return MpdFollower(host=host, port=port, password=config.mpd.password or password,
                       lookahead=lookahead,
                       track_of=partial(proxied_track, host=server.host, port=server.port),
                       want=cache.want if cache is not None else _no_lookahead,
                       more_songs=more_songs if autoplay else None,
                       autoplay_songs=config.mpd.autoplay_songs,
                       autoplay_history=config.mpd.autoplay_history,
                       alternatives=[(h, p) for h, p, _ in candidates[1:]])


def _playlist_syncer(config: Config, store: Store, tracks: Tracks) -> PlaylistSyncer:
    """The task that re-imports playlists imported with ``--sync`` when due."""
    base = proxy_base_url(config.server.host, config.server.port)

    async def sync(name: str, source_url: str) -> str:
        if await store.get_sync(name) is None:  # unsynced or removed meanwhile
            return "no longer synced; left alone"
        summary = await tracks.import_playlist(source_url, name)
        done = f"{len(summary.track_ids)} tracks ({summary.added} new)"
        directory = config.mpd.resolved_playlist_directory
        if directory is None:
            return done
        try:
            await tracks.write_playlist_file(name, directory, base)
        except OSError as exc:
            raise OSError(f"the playlist is stored ({done}), but {directory / (name + '.m3u')} "
                          f"could not be written: {exc.strerror or exc}; check "
                          "[mpd] playlist_directory") from exc
        return f"{done}, {name}.m3u replaced"

    # A schedule the CLI adds while the daemon runs is seen within this.
    poll = min(POLL_MAX, config.library.sync_every_seconds)
    return PlaylistSyncer(schedules=store.list_syncs, sync=sync, record=store.record_sync,
                          poll_every=poll)
