"""The aiohttp application: routes, typed app keys, one cleanup context per resource."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ytproxy.config import Config
from ytproxy.errors import (
    BadRange,
    InvalidTrackId,
    PlaylistNotFound,
    TrackNotFound,
    UpstreamFailed,
    YtproxyError,
)
from ytproxy.inflight import InFlightRequests
from ytproxy.monitoring import Daemon, Metrics, health, render_page, status_payload
from ytproxy.playlists import check_playlist_name, proxy_base_url, render_m3u
from ytproxy.resolver import Resolver
from ytproxy.slots import StreamSlots
from ytproxy.status import StreamRegistry
from ytproxy.store import Store
from ytproxy.streams import StreamHandler
from ytproxy.systemd import Notifier
from ytproxy.tracks import Tracks
from ytproxy.upstream import UpstreamFetcher

__all__ = ["CONFIG", "NOTIFIER", "REGISTRY", "SLOTS", "STORE", "TRACKS", "create_app"]

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


def error_response(exc: YtproxyError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after))
    if isinstance(exc, BadRange) and exc.size is not None:
        headers["Content-Range"] = f"bytes */{exc.size}"
    return web.json_response(
        {"error": exc.code, "message": str(exc)}, status=exc.status, headers=headers
    )


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except YtproxyError as exc:
        if exc.status >= 500 and not isinstance(exc, UpstreamFailed):  # streams logs those
            log.warning("server: %s %s -> %d %s", request.method, request.path,
                        exc.status, exc)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return web.json_response(
            {"error": code, "message": f"{exc.reason}: {request.method} {request.path}"},
            status=exc.status, headers={k: v for k, v in exc.headers.items()
                                        if k.lower() == "allow"},
        )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store_config = app[CONFIG].store
    app[STORE] = await Store.open(
        store_config.resolved_path, busy_timeout_ms=int(store_config.busy_timeout * 1000)
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
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    # trust_env: HTTP(S)_PROXY/NO_PROXY apply to upstream (upstream.proxy overrides them).
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                    trust_env=True)
    app[FETCHER] = UpstreamFetcher(config.upstream, session, config.breaker)
    app[TRACKS] = Tracks(app[STORE], app[RESOLVER], config.resolver)
    app[HANDLER] = StreamHandler(config, app[TRACKS], app[FETCHER], app[SLOTS], app[REGISTRY])
    app[DAEMON] = Daemon(config, app[STARTED], app[REGISTRY], app[SLOTS], app[STORE],
                         app[RESOLVER], app[TRACKS], app[FETCHER])
    metrics = app[METRICS] = Metrics(app[DAEMON])
    app[RESOLVER].on_duration = metrics.resolver_duration.observe
    app[HANDLER].on_first_byte = metrics.time_to_first_byte.observe
    yield
    await app[HANDLER].drain()
    await session.close()


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
        log.info("shutdown: no streams left open; closing the store and yt-dlp's threads")


def create_app(config: Config) -> web.Application:
    in_flight = InFlightRequests()
    app = web.Application(middlewares=[in_flight.middleware(), errors_middleware])
    app[IN_FLIGHT] = in_flight
    app[NOTIFIER] = Notifier.from_environment()
    app[CONFIG] = config
    app[SLOTS] = StreamSlots(config.limits.max_streams)
    app[REGISTRY] = StreamRegistry()
    app[STARTED] = time.time()
    app.cleanup_ctx.extend([_store_ctx, _resolver_ctx, _services_ctx])
    app.cleanup_ctx.append(_notify_ctx)
    app.on_shutdown.append(_graceful_shutdown)
    app.router.add_route("GET", "/proxy/{id}", _proxy)
    app.router.add_route("HEAD", "/proxy/{id}", _proxy)
    app.router.add_get("/status", _status, allow_head=False)
    app.router.add_get("/health", _health, allow_head=False)
    app.router.add_get("/metrics", _metrics, allow_head=False)
    app.router.add_get("/", _index, allow_head=False)
    app.router.add_get("/playlist.m3u", _playlist, allow_head=False)
    app.router.add_get("/playlist/{name}.m3u", _named_playlist, allow_head=False)
    app.router.add_get("/playlists", _list_playlists, allow_head=False)
    app.router.add_get("/tracks", _list_tracks, allow_head=False)
    app.router.add_post("/tracks", _add_track)
    app.router.add_get("/tracks/{id}", _get_track, allow_head=False)
    app.router.add_delete("/tracks/{id}", _delete_track)
    return app


async def _proxy(request: web.Request) -> web.StreamResponse:
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
        "last_error": track.last_error,
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
    playlists = await request.app[STORE].list_playlists()
    return web.json_response({"playlists": [
        {
            "name": p.name,
            "title": p.title,
            "source_url": p.source_url,
            "tracks": p.track_count,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "m3u": f"/playlist/{quote(p.name)}.m3u",
        }
        for p in playlists
    ]})


async def _list_tracks(request: web.Request) -> web.Response:
    tracks = await request.app[STORE].list_tracks()
    return web.json_response({"tracks": [track_json(t) for t in tracks]})


async def _get_track(request: web.Request) -> web.Response:
    track = await request.app[STORE].get(request.match_info["id"])
    if track is None:
        raise TrackNotFound(f"unknown track {request.match_info['id']}")
    return web.json_response(track_json(track))


async def _add_track(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(
            {"error": "bad_json", "message": "the body must be JSON like {\"id\": \"…\"}"},
            status=400)
    key = next((k for k in ("id", "url") if isinstance(body, dict) and k in body), None)
    value = body[key] if key is not None else None
    if key is None or not isinstance(value, str) or not value.strip():
        message = ('give the track as {"id": "<11-char id>"} or {"url": "<page URL>"}'
                   if key is None else
                   f'field "{key}" must be a non-empty string, got {json.dumps(value)}')
        return web.json_response({"error": "bad_request", "message": message}, status=400)
    try:
        track = await request.app[TRACKS].add(value)
    except InvalidTrackId as exc:
        raise InvalidTrackId(f'field "{key}": {exc}') from exc
    return web.json_response(track_json(track), status=201)


async def _delete_track(request: web.Request) -> web.Response:
    track_id = request.match_info["id"]
    if not await request.app[STORE].remove(track_id):
        raise TrackNotFound(f"unknown track {track_id}")
    return web.json_response({"removed": track_id})
