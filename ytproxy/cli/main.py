"""``ytproxy serve | add | import | playlists | search | radio | list | remove | m3u |
check-config``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO
from urllib.parse import quote

from ytproxy import __version__
from ytproxy.cli.cache_view import run_cache
from ytproxy.cli.doctor import run_doctor
from ytproxy.cli.listen import run_radio, run_search
from ytproxy.cli.status_view import run_status
from ytproxy.config import Config, ConfigError, load_config, parse_interval, render_config
from ytproxy.errors import YtproxyError
from ytproxy.http.app import NOTIFIER, create_app
from ytproxy.http.auth import bind_refusal, bind_warning
from ytproxy.http.listener import serve
from ytproxy.library.listings import MAX_LIMIT, RADIO_LIMIT, SEARCH_LIMIT
from ytproxy.library.playlists import (
    check_playlist_name,
    proxy_base_url,
    remove_m3u_file,
    render_m3u,
)
from ytproxy.library.store import Store
from ytproxy.loops import loop_factory as new_loop_factory
from ytproxy.loops import loop_name
from ytproxy.malloc import tune_malloc
from ytproxy.models import PlaylistSync, Track
from ytproxy.redact import RedactingFilter
from ytproxy.services import Library, library

__all__ = ["main"]

log = logging.getLogger("ytproxy")


def _common_options(default: object) -> argparse.ArgumentParser:
    """--config and --log-level, with ``default`` when not given."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=default,
                        help="config file (default: $YTPROXY_CONFIG, then "
                             "$XDG_CONFIG_HOME/ytproxy/config.toml, then built-in defaults)")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default=default, help="override server.log_level")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ytproxy", parents=[_common_options(None)],
        description="A local streaming proxy that lets MPD play YouTube tracks.",
    )
    # After the command too (`ytproxy serve --config my.toml`), where people
    # type them; there, an option not given leaves the one before the command.
    common = _common_options(argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"ytproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help)

    serve = command("serve", help="run the proxy daemon")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")

    add = command("add", help="resolve and store tracks by id or page URL")
    add.add_argument("items", nargs="+", metavar="ID_OR_URL")

    imp = command("import", help="store every track of a playlist as a named playlist")
    imp.add_argument("url", metavar="PLAYLIST_URL")
    imp.add_argument("--name", help="the playlist's name (default: made from its title)")
    imp.add_argument("--sync", nargs="?", const="", default=None, metavar="EVERY",
                     help="keep following the source: the daemon imports it again every "
                          "EVERY (6h, 30m, 90s; default [library] sync_every)")

    playlists = command("playlists", help="list stored playlists and their sync; "
                                          "`unsync NAME`, `remove NAME`")
    playlists.add_argument("action", nargs="?", choices=["unsync", "remove"],
                           help="unsync: stop following the source (the playlist stays); "
                                "remove: the playlist and its M3U (its tracks stay stored)")
    playlists.add_argument("name", nargs="?", metavar="NAME")
    playlists.add_argument("--json", action="store_true", help="print the list as JSON")

    search = command("search", help="find songs (YouTube Music by default), store them, "
                                    "and queue them in MPD with --add")
    search.add_argument("query", nargs="+", metavar="QUERY")
    _listing_options(search, SEARCH_LIMIT)

    radio = command("radio", help="the mix of a track: store its songs, and queue them in "
                                  "MPD with --add")
    radio.add_argument("item", metavar="ID_OR_URL",
                       help="a track id, a YouTube (Music) watch URL or a /proxy/<id> URL")
    _listing_options(radio, RADIO_LIMIT)

    command("list", help="list stored tracks")

    remove = command("remove", help="remove stored tracks")
    remove.add_argument("ids", nargs="+", metavar="ID")

    m3u = command("m3u", help="print an M3U playlist of proxy URLs")
    m3u.add_argument("--all", action="store_true", help="every stored track (the default)")
    m3u.add_argument("--playlist", metavar="NAME", help="the tracks of an imported playlist")
    m3u.add_argument("ids", nargs="*", metavar="ID")

    command("check-config", help="print the effective config, or every error in it")

    status = command("status", help="what the running daemon is doing, and its health")
    status.add_argument("--json", action="store_true", help="print /status as JSON")

    cache = command("cache", help="the download-ahead cache of the running daemon")
    cache.add_argument("action", choices=["list", "clear", "prefetch"],
                       help="list the files, drop those not being played, or download "
                            "tracks now")
    cache.add_argument("ids", nargs="*", metavar="ID", help="tracks to prefetch")
    cache.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")

    doctor = command("doctor", help="check config, store, yt-dlp, network, daemon, MPD")
    doctor.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="per network step (default 3)")
    return parser


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, "
                                         f"got {text!r}")
    return int(text)


def _listing_options(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--limit", type=_limit, default=default, metavar="N",
                        help=f"at most N songs (1-{MAX_LIMIT}, default {default})")
    parser.add_argument("--json", action="store_true", help="print the songs as JSON")
    parser.add_argument("--add", action="store_true",
                        help="append the songs to MPD's queue, in order")
    parser.add_argument("--play", action="store_true",
                        help="append them and play the first (implies --add)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":  # reports a broken config itself, among its checks
        return run_doctor(args.config, args.timeout)
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
    logging.basicConfig(level=level.upper(), handlers=[_log_handler()])
    if args.command == "check-config":
        print(render_config(config), end="")
        return 0
    if args.command == "serve":
        return _serve(config, args.host, args.port)
    if args.command == "status":
        return run_status(config, as_json=args.json)
    if args.command == "cache":
        if (args.action == "prefetch") != bool(args.ids):
            print("ytproxy: `cache prefetch` takes track ids; `cache list` and `cache clear` "
                  "take none", file=sys.stderr)
            return 2
        return run_cache(config, args.action, args.ids, as_json=args.json)
    commands: dict[str, Callable[[Library, argparse.Namespace, Config], Awaitable[int]]] = {
        "add": _add, "import": _import, "list": _list, "remove": _remove, "m3u": _m3u,
        "search": run_search, "radio": run_radio, "playlists": _playlists,
    }
    try:
        return asyncio.run(_with_library(config, args, commands[args.command]))
    except YtproxyError as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# The default 60 s would, by aiohttp 3.14's rules, become up to 120 s.
_AIOHTTP_SHUTDOWN_BACKSTOP = 1.0


def _log_handler() -> logging.Handler:
    """To stderr; journald stamps every line itself, elsewhere a line carries its own time."""
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Whatever a line carries (an exception's text, yt-dlp's chatter), a signed
    # stream URL's query values never reach the log.
    handler.addFilter(RedactingFilter())
    return handler


class _JournalFormatter(logging.Formatter):
    """Starts a line with its syslog priority (``<4>`` = warning), as sd-daemon(3) says.

    journald strips the prefix and files the line at that priority, so
    ``journalctl -p warning`` shows warnings and errors only.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.CRITICAL:
            priority = 2
        elif record.levelno >= logging.ERROR:
            priority = 3
        elif record.levelno >= logging.WARNING:
            priority = 4
        elif record.levelno >= logging.INFO:
            priority = 6
        else:
            priority = 7
        return f"<{priority}>{super().format(record)}"


def _stderr_is_journal() -> bool:
    """``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of the stream systemd connected.

    Children inherit the variable even when their stderr goes elsewhere, so
    (as systemd.exec(5) advises) it counts only when it names our stderr.
    """
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def _serve(config: Config, host: str | None, port: int | None) -> int:
    if host is not None:
        config = config.replace("server", host=host)
    if port is not None:
        if not 1 <= port <= 65535:
            print(f"ytproxy: --port must be between 1 and 65535, got {port}", file=sys.stderr)
            return 2
        config = config.replace("server", port=port)
    refusal = bind_refusal(config.server)
    if refusal is not None:
        print(f"ytproxy: {refusal}", file=sys.stderr)
        return 1
    warning = bind_warning(config.server)
    if warning is not None:
        log.warning("%s", warning)
    try:
        loop_factory = new_loop_factory(config.server.event_loop)
    except LookupError as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 1
    tune_malloc()
    app = create_app(config)
    base = proxy_base_url(config.server.host, config.server.port)

    def announce() -> None:
        # Called once the socket is bound and the store is open.
        log.info("ytproxy %s listening on %s (event loop: %s)", __version__, base, loop_name())
        app[NOTIFIER].ready()

    access_log = logging.getLogger("aiohttp.access") if config.server.access_log else None
    try:
        # server.shutdown_timeout is applied by the app's on_shutdown hook (see
        # ytproxy.http.inflight); aiohttp's own timeout is only a backstop for a
        # request that started after it.  serve() is web.run_app with the
        # connection limits of ytproxy.http.listener.
        serve(app, host=config.server.host, port=config.server.port, on_ready=announce,
              access_log=access_log, shutdown_timeout=_AIOHTTP_SHUTDOWN_BACKSTOP,
              loop_factory=loop_factory)
    except OSError as exc:
        print(f"ytproxy: cannot listen on {config.server.host}:{config.server.port}: "
              f"{exc.strerror}", file=sys.stderr)
        return 1
    except YtproxyError as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 1
    return 0


_READING_COMMANDS = frozenset({"list", "m3u"})


def _is_reading(args: argparse.Namespace) -> bool:
    return args.command in _READING_COMMANDS or (
        args.command == "playlists" and args.action is None)


async def _with_library(
    config: Config,
    args: argparse.Namespace,
    command: Callable[[Library, argparse.Namespace, Config], Awaitable[int]],
) -> int:
    # `list` and `m3u` only read: they can read a store they may not write.
    async with library(config, write=not _is_reading(args)) as lib:
        return await command(lib, args, config)


def _describe(track: Track) -> str:
    minutes = ""
    if track.duration is not None:
        total = round(track.duration)
        minutes = f" [{total // 60}:{total % 60:02d}]"
    return f"{track.id}  {track.name}{minutes}"


async def _add(lib: Library, args: argparse.Namespace, config: Config) -> int:
    failures = 0
    for item in args.items:
        try:
            track = await lib.tracks.add(item)
        except YtproxyError as exc:
            failures += 1
            print(f"ytproxy: cannot add {item!r}: {exc}", file=sys.stderr)
            continue
        base = proxy_base_url(config.server.host, config.server.port)
        print(f"added {_describe(track)}\n  {base}/proxy/{track.id}")
    return 1 if failures else 0


async def _list(lib: Library, args: argparse.Namespace, config: Config) -> int:
    stored = await lib.store.list_tracks()
    if not stored:
        print("no tracks stored yet; add one with: ytproxy add <id-or-url>")
    for track in stored:
        print(_describe(track))
    return 0


async def _remove(lib: Library, args: argparse.Namespace, config: Config) -> int:
    missing = 0
    for track_id in args.ids:
        if await lib.store.remove(track_id):
            print(f"removed {track_id}")
        else:
            missing += 1
            print(f"ytproxy: no stored track with id {track_id!r}", file=sys.stderr)
    return 1 if missing else 0


async def _m3u(lib: Library, args: argparse.Namespace, config: Config) -> int:
    if args.all and args.ids:
        print("ytproxy: give either --all or ids, not both", file=sys.stderr)
        return 2
    if args.playlist is not None and (args.all or args.ids):
        print("ytproxy: give --playlist alone, without --all or ids", file=sys.stderr)
        return 2
    chosen: list[Track]
    if args.playlist is not None:
        listed = await lib.store.playlist_tracks(check_playlist_name(args.playlist))
        if listed is None:
            print(f"ytproxy: no playlist named {args.playlist!r}; "
                  f"{await _known_playlists(lib.store)}", file=sys.stderr)
            return 1
        chosen = listed
    elif args.ids:
        chosen = []
        for track_id in args.ids:
            track = await lib.store.get(track_id)
            if track is None:
                print(f"ytproxy: no stored track with id {track_id!r}", file=sys.stderr)
                return 1
            chosen.append(track)
    else:
        chosen = await lib.store.list_tracks()
    base = proxy_base_url(config.server.host, config.server.port)
    print(render_m3u(chosen, base), end="")
    return 0


async def _known_playlists(store: Store) -> str:
    names = [p.name for p in await store.list_playlists()]
    if not names:
        return "none imported yet: ytproxy import <playlist-url>"
    return "stored playlists: " + ", ".join(repr(n) for n in names)


class _ImportProgress:
    """``importing 3/12: Title`` on stderr: one line redrawn on a terminal, else a line each."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._redraw = stream.isatty()
        self._open_line = False

    def say(self, line: str) -> None:
        if self._redraw:
            width = shutil.get_terminal_size().columns - 1
            self._stream.write("\r\033[K" + line[:width])
            self._open_line = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def __call__(self, number: int, total: int, title: str) -> None:
        self.say(f"importing {number}/{total}: {title}")

    def finish(self) -> None:
        if self._open_line:
            self._stream.write("\n")
            self._stream.flush()
            self._open_line = False


async def _import(lib: Library, args: argparse.Namespace, config: Config) -> int:
    every: float | None = None
    if args.sync is not None:
        every = parse_interval(args.sync or config.library.sync_every)
        if every is None:  # refused before the page is read
            print(f"ytproxy: --sync {args.sync!r} is not a time such as 6h, 30m, 90s or "
                  "1h30m (1 s to 365 days)", file=sys.stderr)
            return 1
    progress = _ImportProgress(sys.stderr)
    progress.say(f"reading the playlist at {args.url}")
    try:
        summary = await lib.tracks.import_playlist(args.url, args.name, progress=progress)
    finally:
        progress.finish()
    name, base = summary.name, proxy_base_url(config.server.host, config.server.port)
    counts = f"{summary.added} added, {summary.already} already stored"
    if summary.skipped:
        counts += f", {summary.skipped} skipped (not playable URLs)"
    print(f"imported playlist {name!r}: {len(summary.track_ids)} tracks ({counts})")
    print(f"  {base}/playlist/{quote(name)}.m3u")
    if every is not None:
        now = time.time()  # this import was a sync: the next is due in EVERY
        await lib.store.set_sync(name, args.url, every, now + every)
        await lib.store.record_sync(name, at=now, next_sync=now + every)
        print(f"  synced every {_every(every)} by the running daemon (`ytproxy serve`); "
              "`ytproxy playlists` shows how it goes")
    else:
        synced = await lib.store.get_sync(name)
        if synced is not None and synced.source_url != args.url:
            print(f"ytproxy: note: {name!r} is still synced every {_every(synced.every)} from "
                  f"{synced.source_url}; import with --sync to follow this URL instead, or "
                  f"`ytproxy playlists unsync {shlex.quote(name)}`", file=sys.stderr)
    directory = config.mpd.resolved_playlist_directory
    if directory is None:
        print(f"  for MPD: ytproxy m3u --playlist {shlex.quote(name)}, or set "
              "[mpd] playlist_directory and import again to use `mpc load`")
        return 0
    try:
        path = await lib.tracks.write_playlist_file(name, directory, base)
    except OSError as exc:
        print(f"ytproxy: the playlist is stored, but {directory / (name + '.m3u')} could not "
              f"be written: {exc.strerror or exc}; check [mpd] playlist_directory",
              file=sys.stderr)
        return 1
    print(f"wrote {path}; load it in MPD with: mpc load {shlex.quote(name)}")
    return 0


def _every(seconds: float) -> str:
    """``21600`` → ``6h``, ``5400`` → ``1h30m``, ``90`` → ``1m30s``."""
    total, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out or "0s"


def _when(now: float, when: float | None) -> str:
    """``in 5h59m``, ``2m6s ago``: to the minute past an hour, to the hour past a day."""
    if when is None:
        return "never"
    seconds = round(when - now)
    if abs(seconds) < 1:
        return "now"
    size = abs(seconds)
    size -= size % (3600 if size >= 86400 else 60 if size >= 3600 else 1)
    return f"in {_every(size)}" if seconds > 0 else f"{_every(size)} ago"


async def _playlists(lib: Library, args: argparse.Namespace, config: Config) -> int:
    store = lib.store
    if args.action is not None:
        if args.name is None:
            print(f"ytproxy: `playlists {args.action}` takes the playlist's NAME",
                  file=sys.stderr)
            return 2
        name = check_playlist_name(args.name)
        existing = await store.get_playlist(name)
        if existing is None:
            print(f"ytproxy: no playlist named {name!r}; {await _known_playlists(lib.store)}",
                  file=sys.stderr)
            return 1
        if args.action == "unsync":
            if not await store.unsync(name):
                print(f"ytproxy: playlist {name!r} is not synced (import it with --sync "
                      "to sync it)", file=sys.stderr)
                return 1
            print(f"playlist {name!r} is no longer synced; it and its M3U stay as they are")
            return 0
        await store.delete_playlist(name)  # its schedule goes with it
        said = f"removed playlist {name!r} ({existing.track_count} tracks stay stored)"
        directory = config.mpd.resolved_playlist_directory
        if directory is not None:
            try:
                removed = await asyncio.to_thread(remove_m3u_file, directory, name)
            except OSError as exc:
                print(f"{said}; ytproxy: {directory / (name + '.m3u')} could not be removed: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                return 1
            if removed is not None:
                said += f" and {removed}"
        print(said)
        return 0
    if args.name is not None:
        print("ytproxy: give a NAME only with `unsync` or `remove`", file=sys.stderr)
        return 2
    listed = await store.list_playlists()
    syncs = {s.name: s for s in await store.list_syncs()}
    if args.json:
        print(json.dumps({"playlists": [_playlist_json(p.name, p.title, p.source_url,
                                                       p.track_count, p.updated_at,
                                                       syncs.get(p.name))
                                        for p in listed]}, indent=2))
        return 0
    if not listed:
        print("no playlists stored yet; add one with: ytproxy import <playlist-url> "
              "--name NAME [--sync]")
        return 0
    now = time.time()
    rows = [("NAME", "TRACKS", "SYNC", "LAST SYNC", "NEXT SYNC", "SOURCE")]
    errors: dict[str, str] = {}
    for p in listed:
        sync = syncs.get(p.name)
        if sync is None:
            rows.append((p.name, str(p.track_count), "-", "-", "-", p.source_url or "-"))
            continue
        rows.append((p.name, str(p.track_count), _every(sync.every),
                     _when(now, sync.last_sync), _when(now, sync.next_sync), sync.source_url))
        if sync.last_error is not None:
            errors[p.name] = (f"  last error ({sync.failures} in a row, "
                              f"{_when(now, sync.last_attempt)}): {sync.last_error}")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]),
                 *(c.ljust(w) for c, w in zip(row[2:5], widths[2:], strict=True)), row[5]]
        print("  ".join(cells).rstrip())
        if row[0] in errors and row is not rows[0]:
            print(errors[row[0]])
    return 0


def _playlist_json(name: str, title: str | None, source_url: str | None, count: int,
                   updated_at: float, sync: PlaylistSync | None) -> dict[str, object]:
    return {
        "name": name, "title": title, "source_url": source_url, "tracks": count,
        "updated_at": updated_at,
        "sync": None if sync is None else {
            "source_url": sync.source_url, "every_seconds": sync.every,
            "last_sync": sync.last_sync, "next_sync": sync.next_sync,
            "last_attempt": sync.last_attempt, "last_error": sync.last_error,
            "failures": sync.failures},
    }
