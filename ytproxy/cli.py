"""``ytproxy serve | add | list | remove | m3u | check-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from ytproxy import __version__
from ytproxy.config import Config, ConfigError, load_config, render_config
from ytproxy.errors import YtproxyError
from ytproxy.models import Track
from ytproxy.playlists import proxy_base_url, render_m3u
from ytproxy.resolver import Resolver
from ytproxy.server import create_app
from ytproxy.store import Store
from ytproxy.tracks import Tracks

__all__ = ["main"]

log = logging.getLogger("ytproxy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ytproxy",
        description="A local streaming proxy that lets MPD play YouTube tracks.",
    )
    parser.add_argument("--version", action="version", version=f"ytproxy {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $YTPROXY_CONFIG, then "
                             "$XDG_CONFIG_HOME/ytproxy/config.toml, then built-in defaults)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="override server.log_level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the proxy daemon")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")

    add = sub.add_parser("add", help="resolve and store tracks by id or page URL")
    add.add_argument("items", nargs="+", metavar="ID_OR_URL")

    sub.add_parser("list", help="list stored tracks")

    remove = sub.add_parser("remove", help="remove stored tracks")
    remove.add_argument("ids", nargs="+", metavar="ID")

    m3u = sub.add_parser("m3u", help="print an M3U playlist of proxy URLs")
    m3u.add_argument("--all", action="store_true", help="every stored track (the default)")
    m3u.add_argument("ids", nargs="*", metavar="ID")

    sub.add_parser("check-config", help="print the effective config, or every error in it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("ytproxy: the configuration has errors:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    # The daemon logs at its configured level; one-shot commands only say
    # what went wrong unless asked for more.
    level = args.log_level or (config.server.log_level if args.command == "serve" else "warning")
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        print(render_config(config), end="")
        return 0
    if args.command == "serve":
        return _serve(config, args.host, args.port)
    commands: dict[str, Callable[[Tracks, argparse.Namespace, Config], Awaitable[int]]] = {
        "add": _add, "list": _list, "remove": _remove, "m3u": _m3u,
    }
    try:
        return asyncio.run(_with_tracks(config, args, commands[args.command]))
    except YtproxyError as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(config: Config, host: str | None, port: int | None) -> int:
    if host is not None:
        config = config.replace("server", host=host)
    if port is not None:
        if not 1 <= port <= 65535:
            print(f"ytproxy: --port must be between 1 and 65535, got {port}", file=sys.stderr)
            return 2
        config = config.replace("server", port=port)
    app = create_app(config)
    base = proxy_base_url(config.server.host, config.server.port)

    def announce(_banner: str) -> None:
        # aiohttp calls this once the socket is bound and the store is open.
        log.info("ytproxy %s listening on %s", __version__, base)

    try:
        web.run_app(app, host=config.server.host, port=config.server.port,
                    print=announce, access_log=None, handle_signals=True)
    except OSError as exc:
        print(f"ytproxy: cannot listen on {config.server.host}:{config.server.port}: "
              f"{exc.strerror}", file=sys.stderr)
        return 1
    except YtproxyError as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 1
    return 0


async def _with_tracks(
    config: Config,
    args: argparse.Namespace,
    command: Callable[[Tracks, argparse.Namespace, Config], Awaitable[int]],
) -> int:
    store = await Store.open(
        config.store.resolved_path, busy_timeout_ms=int(config.store.busy_timeout * 1000)
    )
    resolver = Resolver(config.resolver, config.breaker)
    try:
        return await command(Tracks(store, resolver, config.resolver), args, config)
    finally:
        await resolver.close()
        await store.close()


def _describe(track: Track) -> str:
    minutes = ""
    if track.duration is not None:
        total = round(track.duration)
        minutes = f" [{total // 60}:{total % 60:02d}]"
    return f"{track.id}  {track.name}{minutes}"


async def _add(tracks: Tracks, args: argparse.Namespace, config: Config) -> int:
    failures = 0
    for item in args.items:
        try:
            track = await tracks.add(item)
        except YtproxyError as exc:
            failures += 1
            print(f"ytproxy: cannot add {item!r}: {exc}", file=sys.stderr)
            continue
        base = proxy_base_url(config.server.host, config.server.port)
        print(f"added {_describe(track)}\n  {base}/proxy/{track.id}")
    return 1 if failures else 0


async def _list(tracks: Tracks, args: argparse.Namespace, config: Config) -> int:
    stored = await tracks.store.list_tracks()
    if not stored:
        print("no tracks stored yet; add one with: ytproxy add <id-or-url>")
    for track in stored:
        print(_describe(track))
    return 0


async def _remove(tracks: Tracks, args: argparse.Namespace, config: Config) -> int:
    missing = 0
    for track_id in args.ids:
        if await tracks.store.remove(track_id):
            print(f"removed {track_id}")
        else:
            missing += 1
            print(f"ytproxy: no stored track with id {track_id!r}", file=sys.stderr)
    return 1 if missing else 0


async def _m3u(tracks: Tracks, args: argparse.Namespace, config: Config) -> int:
    if args.all and args.ids:
        print("ytproxy: give either --all or ids, not both", file=sys.stderr)
        return 2
    if args.ids:
        chosen: list[Track] = []
        for track_id in args.ids:
            track = await tracks.store.get(track_id)
            if track is None:
                print(f"ytproxy: no stored track with id {track_id!r}", file=sys.stderr)
                return 1
            chosen.append(track)
    else:
        chosen = await tracks.store.list_tracks()
    base = proxy_base_url(config.server.host, config.server.port)
    print(render_m3u(chosen, base), end="")
    return 0
