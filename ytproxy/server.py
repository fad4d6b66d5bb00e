"""The aiohttp application: routes, typed app keys, one cleanup context per resource."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from ytproxy import __version__
from ytproxy.config import Config
from ytproxy.errors import BadRange, TrackNotFound, UpstreamFailed, YtproxyError
from ytproxy.playlists import proxy_base_url, render_m3u
from ytproxy.resolver import Resolver
from ytproxy.slots import StreamSlots
from ytproxy.status import StreamRegistry
from ytproxy.store import Store
from ytproxy.streams import StreamHandler
from ytproxy.tracks import Tracks
from ytproxy.upstream import UpstreamFetcher

__all__ = ["CONFIG", "REGISTRY", "SLOTS", "STORE", "TRACKS", "create_app"]

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
    app[RESOLVER] = Resolver(app[CONFIG].resolver, app[CONFIG].breaker)
    yield
    await app[RESOLVER].close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    app[FETCHER] = UpstreamFetcher(config.upstream, session, config.breaker)
    app[TRACKS] = Tracks(app[STORE], app[RESOLVER], config.resolver)
    app[HANDLER] = StreamHandler(config, app[TRACKS], app[FETCHER], app[SLOTS], app[REGISTRY])
    yield
    await app[HANDLER].drain()
    await session.close()


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    app[CONFIG] = config
    app[SLOTS] = StreamSlots(config.limits.max_streams)
    app[REGISTRY] = StreamRegistry()
    app[STARTED] = time.time()
    app.cleanup_ctx.extend([_store_ctx, _resolver_ctx, _services_ctx])
    app.router.add_route("GET", "/proxy/{id}", _proxy)
    app.router.add_route("HEAD", "/proxy/{id}", _proxy)
    app.router.add_get("/status", _status, allow_head=False)
    app.router.add_get("/health", _health, allow_head=False)
    app.router.add_get("/metrics", _metrics, allow_head=False)
    app.router.add_get("/playlist.m3u", _playlist, allow_head=False)
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
    app = request.app
    resolver, registry, slots = app[RESOLVER], app[REGISTRY], app[SLOTS]
    return web.json_response({
        "version": __version__,
        "uptime_seconds": round(time.time() - app[STARTED], 1),
        "streams": [s.as_dict() for s in registry.active()],
        "totals": {
            "served": registry.served,
            "failed": registry.failed,
            "rejected_at_capacity": slots.rejected,
            "bytes": registry.bytes_total + sum(s.bytes_sent for s in registry.active()),
        },
        "slots": {"in_use": slots.in_use, "capacity": slots.capacity},
        "store": {"tracks": await app[STORE].count(), "path": str(app[STORE].path)},
        "resolver": {"calls": resolver.calls, "joins": resolver.joins,
                     "failures": dict(resolver.failures),
                     "rate_limit_waiting": resolver.rate_limit_waiting,
                     "breaker": resolver.breaker.as_dict()},
        "upstream": {"requests": app[FETCHER].requests, **app[FETCHER].stats,
                     "hosts": {host: b.as_dict() for host, b in app[FETCHER].breakers.items()}},
    })


async def _health(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].count()
    except Exception as exc:
        return web.json_response({"status": "down", "reasons": [f"store: {exc}"]}, status=503)
    return web.json_response({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    app = request.app
    registry, slots, resolver = app[REGISTRY], app[SLOTS], app[RESOLVER]
    lines = [
        "# TYPE ytproxy_active_streams gauge",
        f"ytproxy_active_streams {len(registry.active())}",
        "# TYPE ytproxy_streams_total counter",
        f'ytproxy_streams_total{{outcome="served"}} {registry.served}',
        f'ytproxy_streams_total{{outcome="failed"}} {registry.failed}',
        f'ytproxy_streams_total{{outcome="rejected"}} {slots.rejected}',
        "# TYPE ytproxy_resolver_calls_total counter",
        f"ytproxy_resolver_calls_total {resolver.calls}",
        "# TYPE ytproxy_upstream_requests_total counter",
        f"ytproxy_upstream_requests_total {app[FETCHER].requests}",
    ]
    return web.Response(text="\n".join(lines) + "\n",
                        content_type="text/plain", charset="utf-8")


async def _playlist(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    tracks = await request.app[STORE].list_tracks()
    text = render_m3u(tracks, proxy_base_url(config.server.host, config.server.port))
    return web.Response(text=text, content_type="audio/x-mpegurl", charset="utf-8")


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
    value = body.get("id") or body.get("url") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        return web.json_response(
            {"error": "bad_request",
             "message": 'give the track as {"id": "<11-char id>"} or {"url": "<page URL>"}'},
            status=400)
    track = await request.app[TRACKS].add(value)
    return web.json_response(track_json(track), status=201)


async def _delete_track(request: web.Request) -> web.Response:
    track_id = request.match_info["id"]
    if not await request.app[STORE].remove(track_id):
        raise TrackNotFound(f"unknown track {track_id}")
    return web.json_response({"removed": track_id})
