"""The aiohttp application: routes, typed app keys, one cleanup context per resource."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ytproxy.cache import TrackCache
from ytproxy.config import Config
from ytproxy.errors import (
    AlreadyRunning,
    BadQuery,
    BadRange,
    BadRequest,
    CacheOff,
    CrossSiteRequest,
    InvalidTrackId,
    PlaylistNotFound,
    TrackNotFound,
    UpstreamFailed,
    YtproxyError,
)
from ytproxy.follower.autoplay import AutoplaySong
from ytproxy.follower.queue import MpdFollower, mpd_candidates
from ytproxy.http.auth import token_middleware
from ytproxy.http.inflight import InFlightRequests
from ytproxy.http.listener import (
    CONNECTIONS,
    MAX_BODY,
    ConnectionLimits,
    expect_handler,
    handler_args,
    json_http_error,
)
from ytproxy.http.monitoring import Daemon, Metrics, health, render_page, status_payload
from ytproxy.http.origin import (
    FROM_OTHER_SITE,
    Hosts,
    asked_of,
    from_other_site,
    trust_middleware,
)
from ytproxy.http.registry import StreamRegistry
from ytproxy.http.slots import StreamSlots
from ytproxy.http.streams import StreamHandler
from ytproxy.http.validation import path_guard, read_json_object, string_field, track_id
from ytproxy.library.listings import (
    MAX_LIMIT,
    MAX_QUERY_LENGTH,
    SEARCH_LIMIT,
    Listings,
    search_json,
)
from ytproxy.library.playlists import check_playlist_name, proxied_track, proxy_base_url, render_m3u
from ytproxy.library.sources import TrackSources
from ytproxy.library.store import Store
from ytproxy.library.sync import POLL_MAX, PlaylistSyncer
from ytproxy.library.tracks import Tracks
from ytproxy.models import is_video_id
from ytproxy.playback import Playback
from ytproxy.redact import redact_urls
from ytproxy.resolve.resolver import Resolver
from ytproxy.systemd import Notifier
from ytproxy.upstream import UpstreamFetcher, upstream_connector

__all__ = ["CONFIG", "NOTIFIER", "REGISTRY", "SLOTS", "STORE", "SYNCER", "TRACKS", "create_app"]

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
RESOLVER = web.AppKey("resolver", Resolver)
TRACKS = web.AppKey("tracks", Tracks)
FETCHER = web.AppKey("fetcher", UpstreamFetcher)
SLOTS = web.AppKey("slots", StreamSlots)
REGISTRY = web.AppKey("registry", StreamRegistry)
HANDLER = web.AppKey("handler", StreamHandler)
STARTED = web.AppKey("started", float)
NOTIFIER = web.AppKey("notifier", Notifier)
IN_FLIGHT = web.AppKey("in_flight", InFlightRequests)
DAEMON = web.AppKey("daemon", Daemon)
METRICS = web.AppKey("metrics", Metrics)
LISTINGS = web.AppKey("listings", Listings)
SYNCER = web.AppKey("syncer", PlaylistSyncer)


def error_response(exc: YtproxyError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after))
    if isinstance(exc, BadRange) and exc.size is not None:
        headers["Content-Range"] = f"bytes */{exc.size}"
    # Any URL in a message (a resolver's or upstream's words) loses its query
    # values here: a signed stream URL must not reach a client.
    body = {"error": exc.code, "message": redact_urls(str(exc))}
    if exc.detail:
        body["detail"] = redact_urls(exc.detail)  # yt-dlp's own words, for programs
    return web.json_response(body, status=exc.status, headers=headers)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except YtproxyError as exc:
        if exc.status >= 500 and not isinstance(exc, UpstreamFailed):  # streams logs those
            log.warning("server: %s %s -> %d %s", request.method, request.path,
                        exc.status, redact_urls(str(exc)))
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_http_error(request, exc)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store_config = app[CONFIG].store
    # The daemon's store is its alone (a second daemon refuses to start): the
    # CLI's commands open it beside the daemon, without the lock.
    app[STORE] = await Store.open(
        store_config.resolved_path, busy_timeout_ms=int(store_config.busy_timeout * 1000),
        exclusive=True,
    )
    yield
    await app[STORE].close()


async def _resolver_ctx(app: web.Application) -> AsyncIterator[None]:
    app[RESOLVER] = Resolver(app[CONFIG].resolver, app[CONFIG].breaker,
                             proxy=app[CONFIG].upstream.proxy)
    yield
    await app[RESOLVER].close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # HTTP(S)_PROXY/NO_PROXY apply to upstream (upstream.proxy overrides them): the
    # fetcher reads them once per host rather than the session (trust_env) per request.
    session = aiohttp.ClientSession(connector=upstream_connector(), auto_decompress=False)
    app[FETCHER] = UpstreamFetcher(config.upstream, session, config.breaker)
    app[TRACKS] = Tracks(app[STORE], app[RESOLVER], config.resolver)
    sources = TrackSources(app[FETCHER], app[TRACKS], policy=config.retry,
                           max_available_wait=config.resolver.max_available_wait)
    cache: TrackCache | None = None
    if config.cache.enabled:
        cache = TrackCache(config, app[STORE], app[TRACKS], sources)
        try:
            await cache.open()
        except AlreadyRunning:
            await session.close()
            raise  # another daemon's files: refuse to start, as for its store
        except YtproxyError as exc:
            # Streams need no cache: relay them rather than not start at all.
            log.warning("%s; the cache is off until this is fixed and the daemon restarted",
                        exc)
            cache = None
    else:
        log.info("cache: off ([cache] max_size = 0): every stream is relayed from upstream")
    playback = Playback(tracks=app[TRACKS], sources=sources, cache=cache, policy=config.retry,
                        resolver_pace=config.breaker.reset_after)
    app[HANDLER] = StreamHandler(config, playback, app[SLOTS], app[REGISTRY])
    app[LISTINGS] = listings = Listings(
        store=app[STORE], list_flat=app[RESOLVER].listing,
        source_url_for=app[RESOLVER].source_url_for,
        search_url_template=config.resolver.search_url_template,
        radio_url_template=config.resolver.radio_url_template)
    app[DAEMON] = Daemon(config, app[STARTED], app[REGISTRY], app[SLOTS], app[STORE],
                         app[RESOLVER], app[TRACKS], app[FETCHER], cache)
    follower = _mpd_follower(config, cache, partial(_mix_songs, listings, config))
    if follower is not None:
        await follower.start()
        app[DAEMON].mpd = follower.report
    syncer = app[SYNCER] = _playlist_syncer(app)
    await syncer.start()
    app[DAEMON].sync = syncer.report
    metrics = app[METRICS] = Metrics(app[DAEMON])
    app[RESOLVER].on_duration = metrics.resolver_duration.observe
    app[HANDLER].on_first_byte = metrics.time_to_first_byte.observe
    yield
    await syncer.aclose()
    if follower is not None:
        await follower.aclose()
    await app[HANDLER].drain()
    if cache is not None:
        await cache.aclose()
    await app[TRACKS].drain()
    await app[FETCHER].aclose()
    await session.close()


async def _mix_songs(listings: Listings, config: Config, track_id: str) -> list[AutoplaySong]:
    """Autoplay's ``more_songs``: the mix of a track, stored, as MPD is to queue it."""
    base = proxy_base_url(config.server.host, config.server.port)
    songs = await listings.radio(track_id, limit=MAX_LIMIT)
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


def _playlist_syncer(app: web.Application) -> PlaylistSyncer:
    """The task that re-imports playlists imported with ``--sync`` when due."""
    config, store, tracks = app[CONFIG], app[STORE], app[TRACKS]
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


async def _notify_ctx(app: web.Application) -> AsyncIterator[None]:
    """systemd's STATUS line and watchdog pings (READY=1 comes from the CLI once bound)."""
    await app[NOTIFIER].start(lambda: _summary(app))
    yield
    await app[NOTIFIER].stop()


async def _summary(app: web.Application) -> str:
    """One line for `systemctl status`."""
    config = app[CONFIG].server
    streams = len(app[REGISTRY].active())
    try:
        count = await app[STORE].count()
        tracks = f"{count} track{'' if count == 1 else 's'}"
    except Exception as exc:
        tracks = f"store unavailable: {exc}"
    return (f"serving on {proxy_base_url(config.host, config.port)} — "
            f"{streams} stream{'' if streams == 1 else 's'}, {tracks}")


async def _graceful_shutdown(app: web.Application) -> None:
    """SIGTERM/SIGINT: aiohttp has stopped accepting; let streams finish, then close them."""
    grace = app[CONFIG].server.shutdown_timeout
    in_flight = app[IN_FLIGHT]
    open_streams = len(app[REGISTRY].active())
    app[NOTIFIER].stopping(f"stopping: waiting up to {grace:g} s for {open_streams} "
                           f"stream{'' if open_streams == 1 else 's'}")
    if len(in_flight):
        log.info("shutdown: no longer accepting connections; waiting up to %g s for "
                 "%d stream(s) (%d request(s) in flight)", grace, open_streams, len(in_flight))
    cut = await in_flight.close(grace)
    streams = sum(1 for request in cut if request.path.startswith("/proxy/"))
    if cut:
        log.info("shutdown: closed %d stream(s) and %d other request(s) still open after "
                 "the %g s grace period", streams, len(cut) - streams, grace)
    else:
        log.info("shutdown: no streams left open; closing the store and yt-dlp's workers")


# The routes players fetch (ytproxy.http.origin: any Host, no Origin).
PLAYER_PATHS = ("/proxy/{id}", "/playlist.m3u", "/playlist/{name}.m3u")


def create_app(config: Config) -> web.Application:
    in_flight = InFlightRequests()
    middlewares = [in_flight.middleware(), errors_middleware, path_guard,
                   trust_middleware(config.server, player_paths=PLAYER_PATHS)]
    if config.server.token:
        middlewares.append(token_middleware(config.server.token))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY,
                          handler_args=handler_args(config.limits))
    app[IN_FLIGHT] = in_flight
    app[CONNECTIONS] = ConnectionLimits(config.limits)
    app[NOTIFIER] = Notifier.from_environment()
    app[CONFIG] = config
    app[SLOTS] = StreamSlots(config.limits.max_streams)
    app[REGISTRY] = StreamRegistry()
    app[STARTED] = time.time()
    app.cleanup_ctx.extend([_store_ctx, _resolver_ctx, _services_ctx])
    app.cleanup_ctx.append(_notify_ctx)
    app.on_shutdown.append(_graceful_shutdown)
    # Each route answers only its own method (GET routes no HEAD unless listed),
    # and every one answers Expect alike (listener.expect_handler).
    routes = [
        ("GET", "/proxy/{id}", _proxy),
        ("HEAD", "/proxy/{id}", _proxy),
        ("GET", "/status", _status),
        ("GET", "/health", _health),
        ("GET", "/metrics", _metrics),
        ("GET", "/", _index),
        ("GET", "/playlist.m3u", _playlist),
        ("GET", "/playlist/{name}.m3u", _named_playlist),
        ("GET", "/playlists", _list_playlists),
        ("GET", "/search", _search),
        ("GET", "/tracks", _list_tracks),
        ("POST", "/tracks", _add_track),
        ("GET", "/tracks/{id}", _get_track),
        ("DELETE", "/tracks/{id}", _delete_track),
        ("GET", "/cache", _cache_list),
        ("DELETE", "/cache", _cache_clear),
        ("POST", "/cache/prefetch", _cache_prefetch),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler, expect_handler=expect_handler)
    return app


async def _proxy(request: web.Request) -> web.StreamResponse:
    wanted = track_id(request)  # a 400 that does not echo a 4 KB "id" back
    # Another site's page may play what is stored (an <audio> element cannot
    # read what it plays), not add to the library (ytproxy.http.origin).  A
    # track removed between this look-up and the play would be added back.
    if request.get(FROM_OTHER_SITE) and await request.app[STORE].get(wanted) is None:
        raise CrossSiteRequest(
            f"a web page of another site may play only stored tracks, and {wanted} is not "
            f"stored: add it with `ytproxy add {wanted}`, or play it from a player")
    return await request.app[HANDLER].handle(request)


def track_json(track: Any) -> dict[str, Any]:
    return {
        "id": track.id,
        "title": track.title,
        "artist": track.artist,
        "album": track.album,
        "duration": track.duration,
        "name": track.name,
        "source_url": track.source_url,
        "added_at": track.added_at,
        "last_played_at": track.last_played_at,
        "play_count": track.play_count,
        "last_error": None if track.last_error is None else redact_urls(track.last_error),
        "stream_expires_at": track.stream_expires_at,
    }


async def _status(request: web.Request) -> web.Response:
    return web.json_response(await status_payload(request.app[DAEMON]))


async def _health(request: web.Request) -> web.Response:
    status, body = await health(request.app[DAEMON])
    return web.json_response(body, status=status)


async def _metrics(request: web.Request) -> web.StreamResponse:
    return await request.app[METRICS].handler(request)


async def _index(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    _, body = await health(daemon)
    page = render_page(await status_payload(daemon), body)
    return web.Response(text=page, content_type="text/html", charset="utf-8")


async def _playlist(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    tracks = await request.app[STORE].list_tracks()
    text = render_m3u(tracks, proxy_base_url(config.server.host, config.server.port))
    return web.Response(text=text, content_type="audio/x-mpegurl", charset="utf-8")


async def _named_playlist(request: web.Request) -> web.Response:
    name = check_playlist_name(request.match_info["name"])
    tracks = await request.app[STORE].playlist_tracks(name)
    if tracks is None:
        raise PlaylistNotFound(
            f"no playlist named {name!r}; GET /playlists lists them, "
            "`ytproxy import <playlist-url>` adds one"
        )
    config = request.app[CONFIG]
    text = render_m3u(tracks, proxy_base_url(config.server.host, config.server.port))
    return web.Response(text=text, content_type="audio/x-mpegurl", charset="utf-8")


async def _list_playlists(request: web.Request) -> web.Response:
    store = request.app[STORE]
    playlists = await store.list_playlists()
    syncs = {s.name: s for s in await store.list_syncs()}

    def sync_json(name: str) -> dict[str, Any] | None:
        s = syncs.get(name)
        if s is None:
            return None
        return {"every_seconds": s.every, "last_sync": s.last_sync, "next_sync": s.next_sync,
                "last_attempt": s.last_attempt, "failures": s.failures,
                "last_error": None if s.last_error is None else redact_urls(s.last_error)}

    return web.json_response({"playlists": [
        {
            "name": p.name,
            "title": p.title,
            "source_url": p.source_url,
            "tracks": p.track_count,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "m3u": f"/playlist/{quote(p.name)}.m3u",
            # Imported with --sync: when it follows its source next, and how it went.
            "sync": sync_json(p.name),
        }
        for p in playlists
    ]})


async def _search(request: web.Request) -> web.Response:
    """``GET /search?q=QUERY&limit=N``: what `ytproxy search --json` prints; the
    songs found are stored as tracks (resolved when first played).

    A GET that changes the store and costs a yt-dlp call: another site's page
    (which may send it, not read it) is refused, as it is for writes."""
    config = request.app[CONFIG]
    if from_other_site(Hosts.of(config.server), asked_of(request, PLAYER_PATHS)):
        raise CrossSiteRequest(
            "a web page of another site may not search (each search is a yt-dlp call and "
            "stores tracks); use `ytproxy search` or a program")
    unknown = sorted(k for k in request.query if k not in ("q", "limit"))
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0][:40]!r}; "
                         "use /search?q=QUERY&limit=N")
    queries = request.query.getall("q", [])
    if len(queries) != 1 or not queries[0].strip():
        raise BadQuery("give one non-empty search query as ?q=QUERY")
    if len(queries[0]) > MAX_QUERY_LENGTH:
        raise BadQuery(f"the query (q) is {len(queries[0])} characters long; at most "
                         f"{MAX_QUERY_LENGTH}")
    limits = request.query.getall("limit", [])
    limit = SEARCH_LIMIT
    if limits:
        text = limits[0]
        if len(limits) > 1 or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, "
                             f"got {text[:20]!r}")
        limit = int(text)
    query = queries[0]
    songs = await request.app[LISTINGS].search(query, limit=limit)
    server = config.server
    return web.json_response(search_json(query, songs, proxy_base_url(server.host,
                                                                      server.port)))


async def _list_tracks(request: web.Request) -> web.Response:
    tracks = await request.app[STORE].list_tracks()
    return web.json_response({"tracks": [track_json(t) for t in tracks]})


async def _get_track(request: web.Request) -> web.Response:
    wanted = track_id(request)
    track = await request.app[STORE].get(wanted)
    if track is None:
        raise TrackNotFound(f"unknown track {wanted}")
    return web.json_response(track_json(track))


async def _add_track(request: web.Request) -> web.Response:
    body = await read_json_object(request, within=request.app[CONFIG].limits.idle_timeout)
    given = [k for k in ("id", "url") if k in body]
    shape = 'give the track as {"id": "<11-char id>"} or {"url": "<page URL>"}'
    if not given:
        raise BadRequest(shape)
    if len(given) > 1:
        raise BadRequest(f'give either field "id" or field "url", not both; {shape}')
    unknown = sorted(k for k in body if k not in ("id", "url"))
    if unknown:
        raise BadRequest(f"unknown field {json.dumps(unknown[0])}; {shape}")
    key = given[0]
    value = string_field(body, key)
    try:
        track = await request.app[TRACKS].add(value)
    except InvalidTrackId as exc:
        raise InvalidTrackId(f'field "{key}": {exc}') from exc
    return web.json_response(track_json(track), status=201)


# Ids one prefetch request may name (each may take a yt-dlp call).
MAX_PREFETCH_IDS = 200


def _cache(request: web.Request) -> TrackCache:
    cache = request.app[DAEMON].cache
    if cache is None:
        raise CacheOff("the cache is off ([cache] max_size = 0); set a size to use it")
    return cache


async def _cache_list(request: web.Request) -> web.Response:
    cache = request.app[DAEMON].cache
    if cache is None:
        return web.json_response({"enabled": False, "tracks": []})
    return web.json_response({"enabled": True, **cache.summary(), "tracks": cache.listing()})


async def _cache_clear(request: web.Request) -> web.Response:
    dropped, in_use = _cache(request).files.clear()
    return web.json_response({"dropped": dropped, "kept_in_use": in_use})


async def _cache_prefetch(request: web.Request) -> web.Response:
    """Download tracks whole now; answers when each is on disk or has failed."""
    cache = _cache(request)
    body = await read_json_object(request, within=request.app[CONFIG].limits.idle_timeout)
    shape = 'give the tracks as {"ids": ["<11-char id>", ...]}'
    ids = body.get("ids")
    if set(body) != {"ids"} or not isinstance(ids, list) or not ids:
        raise BadRequest(f'field "ids" must be a non-empty array of track ids; {shape}')
    if len(ids) > MAX_PREFETCH_IDS:
        raise BadRequest(f'field "ids" names {len(ids)} tracks, at most {MAX_PREFETCH_IDS}')
    for value in ids:
        if not isinstance(value, str) or not is_video_id(value):
            raise BadRequest(f'field "ids": {str(value)[:40]!r} is not a track id '
                             "(11 characters of A-Z a-z 0-9 _ -)")

    async def one(track_id: str) -> str:
        try:
            return await cache.prefetch(track_id)
        except YtproxyError as exc:
            return f"failed: {redact_urls(str(exc))}"

    results = await asyncio.gather(*(one(i) for i in dict.fromkeys(ids)))
    return web.json_response({"results": dict(zip(dict.fromkeys(ids), results, strict=True))})


async def _delete_track(request: web.Request) -> web.Response:
    unwanted = track_id(request)
    if not await request.app[STORE].remove(unwanted):
        raise TrackNotFound(f"unknown track {unwanted}")
    cache = request.app[DAEMON].cache
    entry = cache.files.get(unwanted) if cache is not None else None
    if cache is not None and entry is not None and not entry.users:
        cache.files.drop(entry, "track removed")  # its file goes with it
    return web.json_response({"removed": unwanted})
