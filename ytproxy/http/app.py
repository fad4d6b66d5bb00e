"""The aiohttp application: routes, typed app keys, one cleanup context per resource."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ytproxy.cache import TrackCache
from ytproxy.config import Config
from ytproxy.errors import (
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
from ytproxy.library import (
    MAX_LIMIT,
    MAX_QUERY_LENGTH,
    SEARCH_LIMIT,
    check_playlist_name,
    proxy_base_url,
    render_m3u,
    search_json,
)
from ytproxy.models import TrackId
from ytproxy.redact import redact_urls
from ytproxy.services import (
    CACHE,
    CONFIG,
    FETCHER,
    FOLLOWER,
    LISTINGS,
    PLAYBACK,
    RESOLVER,
    STORE,
    SYNCER,
    TRACKS,
    resource_contexts,
    task_contexts,
)
from ytproxy.systemd import Notifier

# The services' keys (ytproxy.services) are named here too, beside the server's own.
__all__ = ["CACHE", "CONFIG", "DAEMON", "FETCHER", "FOLLOWER", "HANDLER", "LISTINGS",
           "METRICS", "NOTIFIER", "REGISTRY", "RESOLVER", "SLOTS", "STORE", "SYNCER", "TRACKS",
           "create_app"]

log = logging.getLogger(__name__)

SLOTS = web.AppKey("slots", StreamSlots)
REGISTRY = web.AppKey("registry", StreamRegistry)
HANDLER = web.AppKey("handler", StreamHandler)
STARTED = web.AppKey("started", float)
NOTIFIER = web.AppKey("notifier", Notifier)
IN_FLIGHT = web.AppKey("in_flight", InFlightRequests)
DAEMON = web.AppKey("daemon", Daemon)
METRICS = web.AppKey("metrics", Metrics)


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


# -- the /proxy handler (its construction, apart: ytproxy.services builds the rest) --

async def _handler_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HANDLER] = handler = StreamHandler(
        app[CONFIG], app[PLAYBACK], app[SLOTS], app[REGISTRY],
        on_first_byte=app[METRICS].time_to_first_byte.observe)
    yield
    await handler.drain()


async def _report_ctx(app: web.Application) -> AsyncIterator[None]:
    """What /status, /health and /metrics read, once every service is up."""
    follower = app[FOLLOWER]
    app[DAEMON] = daemon = Daemon(
        app[CONFIG], app[STARTED], app[REGISTRY], app[SLOTS], app[STORE], app[RESOLVER],
        app[TRACKS], app[FETCHER], app[CACHE],
        mpd=follower.report if follower is not None else None, sync=app[SYNCER].report)
    app[METRICS].report_on(daemon)
    yield


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
    metrics = app[METRICS] = Metrics()
    # One context per resource, opened in this order and closed in reverse.
    app.cleanup_ctx.extend([
        *resource_contexts(on_resolve_duration=metrics.resolver_duration.observe),
        _handler_ctx, *task_contexts(), _report_ctx, _notify_ctx])
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
    cache = request.app[CACHE]
    if cache is None:
        raise CacheOff("the cache is off ([cache] max_size = 0); set a size to use it")
    return cache


async def _cache_list(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    if cache is None:
        return web.json_response({"enabled": False, "tracks": []})
    return web.json_response({**cache.snapshot().as_dict(), "tracks": cache.listing()})


async def _cache_clear(request: web.Request) -> web.Response:
    dropped, in_use = _cache(request).clear()
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
    wanted: list[TrackId] = []
    for value in ids:
        try:
            wanted.append(TrackId(value))
        except InvalidTrackId as exc:
            raise BadRequest(f'field "ids": {exc}') from None

    async def one(track_id: TrackId) -> str:
        try:
            return await cache.prefetch(track_id)
        except YtproxyError as exc:
            return f"failed: {redact_urls(str(exc))}"

    unique = list(dict.fromkeys(wanted))
    results = await asyncio.gather(*(one(i) for i in unique))
    return web.json_response({"results": dict(zip(unique, results, strict=True))})


async def _delete_track(request: web.Request) -> web.Response:
    unwanted = track_id(request)
    if not await request.app[STORE].remove(unwanted):
        raise TrackNotFound(f"unknown track {unwanted}")
    cache = request.app[CACHE]
    if cache is not None:
        cache.forget(unwanted)  # its file goes with it
    return web.json_response({"removed": unwanted})
