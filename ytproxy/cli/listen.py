"""``ytproxy search`` and ``ytproxy radio``: songs found through yt-dlp, stored,
printed, and (``--add``, ``--play``) queued in MPD.

They open the store themselves, like ``ytproxy add``: no daemon needs to run
to search, only to play what was found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Sequence
from functools import partial

import mpd.base  # type: ignore[import-untyped]

from ytproxy.config import Config
from ytproxy.errors import YtproxyError
from ytproxy.follower.autoplay import AutoplaySong, queue_songs
from ytproxy.follower.queue import mpd_candidates
from ytproxy.library.listings import (
    Song,
    radio_seed,
    search_json,
)
from ytproxy.library.playlists import proxied_track, proxy_base_url
from ytproxy.private.mpd import QuietMPDClient
from ytproxy.services import Library

__all__ = ["run_radio", "run_search", "song_table"]

# Seconds to reach MPD and queue the songs.
MPD_TIMEOUT = 10.0
# Characters of a song's name in the table (longer ones are cut, ending in "…").
_NAME_WIDTH = 48


def _minutes(duration: float | None) -> str:
    if duration is None:
        return "?:??"
    total = round(duration)
    hours, rest = divmod(total, 3600)
    if hours:
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{total // 60}:{total % 60:02d}"


def song_table(songs: Sequence[Song], base_url: str) -> str:
    """The numbered table: number, Artist - Title, duration, id, proxy URL."""
    names = [s.name if len(s.name) <= _NAME_WIDTH else s.name[:_NAME_WIDTH - 1] + "…"
             for s in songs]
    times = [_minutes(s.duration) for s in songs]
    width = max((len(n) for n in names), default=0)
    time_width = max((len(t) for t in times), default=0)
    digits = len(str(len(songs)))
    lines = []
    for number, (song, name, time) in enumerate(zip(songs, names, times, strict=True), 1):
        lines.append(f"{number:>{digits}}. {name:<{width}}  {time:>{time_width}}  "
                     f"{song.id}  {base_url}/proxy/{song.id}")
    return "\n".join(lines) + ("\n" if lines else "")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


async def run_search(lib: Library, args: argparse.Namespace, config: Config) -> int:
    query = " ".join(args.query)
    found = lib.listings(config).search(query, limit=args.limit)
    return await _answer(found, args, config, f"no songs found for {' '.join(query.split())!r}",
                         query=query)


async def run_radio(lib: Library, args: argparse.Namespace, config: Config) -> int:
    return await _answer(_mix(lib, args, config), args, config,
                         f"the mix of {args.item.strip()} lists no songs", query=None)


async def _mix(lib: Library, args: argparse.Namespace, config: Config) -> list[Song]:
    server = config.server
    seed = radio_seed(args.item, proxied=partial(proxied_track, host=server.host,
                                                 port=server.port))
    return await lib.listings(config).radio(seed, limit=args.limit)


async def _answer(finding: Awaitable[list[Song]], args: argparse.Namespace, config: Config,
                  empty: str, *, query: str | None) -> int:
    """Print (and with --add/--play, queue) the songs ``finding`` lists; 1 when it fails."""
    try:
        songs = await finding
    except YtproxyError as exc:
        print(f"ytproxy: {_one_line(exc)}", file=sys.stderr)
        return 1
    base = proxy_base_url(config.server.host, config.server.port)
    if getattr(args, "json", False):
        body = (search_json(query, songs, base) if query is not None
                else {"seed": args.item.strip(), **search_json("", songs, base)})
        if query is None:
            del body["query"]
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print(song_table(songs, base), end="")
    if not songs:
        print(f"ytproxy: {empty}", file=sys.stderr)
        return 1
    if args.add or args.play:
        return await _queue(config, songs, base, play=args.play)
    return 0


async def _queue(config: Config, songs: list[Song], base: str, *, play: bool) -> int:
    """Append the songs to MPD's queue in order; with ``play``, play the first.

    MPD is looked for as the daemon looks for it (``mpd_candidates``: [mpd]
    host, MPD_HOST, else where mpc looks); the first place that answers is used."""
    try:
        candidates = mpd_candidates(config.mpd.host, config.mpd.port, os.environ)
    except ValueError as exc:
        print(f"ytproxy: cannot queue the songs in MPD: {exc}", file=sys.stderr)
        return 1
    named = [AutoplaySong(s.id, f"{base}/proxy/{s.id}", s.artist, s.title) for s in songs]
    failures: list[str] = []
    added: list[str] | None = None
    for host, port, password in candidates:
        where = host if host.startswith(("/", "@")) else f"{host}:{port}"
        try:
            added = await _queue_at(host, port, config.mpd.password or password, named,
                                    play=play)
            break
        except (OSError, mpd.base.MPDError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else (
                os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno
                else _one_line(exc) or type(exc).__name__)
            failures.append(f"{where} ({reason})")
            if not isinstance(exc, OSError):  # MPD answered and refused: look no further
                break
    if added is None:
        print(f"ytproxy: cannot queue the songs in MPD at {', '.join(failures)}; the songs "
              "are stored; set [mpd] host and port, or MPD_HOST", file=sys.stderr)
        return 1
    what = f"{len(added)} song{'' if len(added) == 1 else 's'}"
    print(f"queued {what} in MPD at {where}" + ("; playing the first" if play else ""))
    return 0


async def _queue_at(host: str, port: int, password: str | None, songs: list[AutoplaySong],
                    *, play: bool) -> list[str]:
    """Queue ``songs`` in the MPD at ``host``/``port``; MPD's ids of those added."""
    client = QuietMPDClient()
    try:
        async with asyncio.timeout(MPD_TIMEOUT):
            await client.connect(host, port)
            if password:
                await client.password(password)
            added = await queue_songs(client, songs)
            if play and added:
                await client.playid(added[0])
            return added
    finally:
        with contextlib.suppress(Exception):  # closing what may never have opened
            client.disconnect()
