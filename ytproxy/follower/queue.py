"""Follow MPD's queue, so the tracks it plays next are downloaded ahead.

MPD opens a song's URL only when the song starts, so a track that is not in the
cache starts with resolving and downloading while the listener waits.  The
follower keeps one connection to MPD (python-mpd2's asyncio client), wakes on
MPD's ``idle`` events for the player, the queue and the play options, asks MPD
which songs come next and hands this daemon's tracks among them to ``want``.

MPD says what comes next (``nextsong``: in random mode it has already chosen);
positions are read on from there only where queue order is what MPD will play.
Without an MPD, look-ahead is simply off: one line in the log, then quiet
retries until it answers.

With autoplay (``more_songs`` given), the follower also keeps the music going:
when MPD starts the last song of its queue with repeat off, it asks
``more_songs`` for that song's mix and appends some of it (``autoplay``), at
once, so look-ahead has the first of them on disk before the song ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import mpd.base  # type: ignore[import-untyped]

from ytproxy.follower.autoplay import (
    AutoplaySong,
    History,
    autoplay_due,
    pick_songs,
    queue_songs,
)
from ytproxy.private.mpd import QuietMPDClient

__all__ = ["MpdFollower", "mpd_address", "mpd_candidates", "upcoming_positions"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # connect, password and the first look at the queue
COMMAND_TIMEOUT = 10.0  # one look at the queue after a wake-up
SUBSYSTEMS = ["player", "playlist", "options"]
# What losing MPD looks like; anything else is a bug, logged with its traceback.
# (TimeoutError and the builtin ConnectionError are OSErrors; mpd.base.MPDError
# covers python-mpd2's ConnectionError, ProtocolError and MPD's ACKs.)
_FAILURES = (OSError, mpd.base.MPDError)
# MPD's ACK codes for a wrong password and a command not permitted (src/protocol/Ack.hxx).
_ACK_AUTH = re.compile(r"\[(3|4)@")
_PORT = re.compile(r"[0-9]{1,5}")


def mpd_address(
    host: str, port: int, environ: Mapping[str, str]
) -> tuple[str, int, str | None] | None:
    """Where MPD is: ``(host, port, password from MPD_HOST)``, or None (no look-ahead).

    The config's [mpd] host and port when host is set; else MPD_HOST and
    MPD_PORT as mpc reads them: MPD_HOST may be ``password@host``; a host that
    starts with "/" is a unix socket path and one that starts with "@" an
    abstract socket (the port is then unused).  MPD_PORT defaults to ``port``;
    one that is not a port number is a ValueError naming it.
    """
    if host:
        return host, port, None
    spec = environ.get("MPD_HOST", "")
    password: str | None = None
    if not spec.startswith("@") and "@" in spec:  # "@name" is an abstract socket
        password, spec = spec.split("@", 1)
    if not spec:
        return None
    port_s = environ.get("MPD_PORT", "")
    if port_s:
        if not _PORT.fullmatch(port_s) or not 1 <= int(port_s) <= 65535:
            raise ValueError(f"MPD_PORT={port_s!r} is not a port number (1-65535)")
        port = int(port_s)
    return spec, port, password or None


# MPD's own list for clients that find it themselves (doc/client.rst, "Connecting
# to MPD"): $MPD_HOST, then $XDG_RUNTIME_DIR/mpd/socket (where an MPD run by the
# user listens when no bind_to_address is set, src/Listen.cxx), then
# /run/mpd/socket (libmpdclient's compiled-in default socket, a system MPD's),
# then localhost:$MPD_PORT.
SYSTEM_SOCKET = "/run/mpd/socket"


def mpd_candidates(
    host: str, port: int, environ: Mapping[str, str]
) -> list[tuple[str, int, str | None]]:
    """Where to look for MPD, in order: ``[(host, port, password from MPD_HOST)]``.

    One address when [mpd] host or MPD_HOST says where (``mpd_address``); else
    what mpc's library tries: the user's socket under ``$XDG_RUNTIME_DIR``, the
    system socket, then ``localhost`` at MPD_PORT (default ``port``).  Raises
    ValueError for an MPD_PORT that is not a port number.
    """
    address = mpd_address(host, port, environ)
    if address is not None:
        return [address]
    port_s = environ.get("MPD_PORT", "")
    if port_s:
        if not _PORT.fullmatch(port_s) or not 1 <= int(port_s) <= 65535:
            raise ValueError(f"MPD_PORT={port_s!r} is not a port number (1-65535)")
        port = int(port_s)
    found: list[tuple[str, int, str | None]] = []
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):  # relative: invalid, to be ignored (XDG spec)
        found.append((os.path.join(runtime, "mpd", "socket"), port, None))
    found.append((SYSTEM_SOCKET, port, None))
    found.append(("localhost", port, None))
    return found


def _where(host: str, port: int) -> str:
    return host if host.startswith(("/", "@")) else f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, mpd.base.ConnectionError) and not str(exc):
        return "connection closed"
    return str(exc) or type(exc).__name__


def _position(value: str | None, length: int) -> int | None:
    if value is None or not value.isdigit():
        return None
    pos = int(value)
    return pos if pos < length else None


def _in_order(start: int, n: int, length: int, repeat: bool, skip: int | None) -> list[int]:
    """Up to ``n`` positions in queue order from ``start``; past the end only with repeat."""
    out: list[int] = []
    pos = start
    for _ in range(length):
        if pos != skip:
            out.append(pos)
            if len(out) == n:
                break
        pos += 1
        if pos == length:
            if not repeat:
                break
            pos = 0
    return out


def upcoming_positions(status: Mapping[str, str], n: int) -> list[int]:
    """The queue positions of the (up to ``n``) songs MPD plays next, from its ``status``."""
    length = int(status.get("playlistlength", "0") or 0)
    if n <= 0 or length <= 0:
        return []
    repeat = status.get("repeat") == "1"
    random = status.get("random") == "1"
    single = status.get("single", "0") != "0"  # "1" or "oneshot"
    consume = status.get("consume", "0") != "0"
    song = _position(status.get("song"), length)
    nextsong = _position(status.get("nextsong"), length)
    if status.get("state") not in ("play", "pause"):
        # Stopped: `play` starts at `song` (MPD's current position), or with none
        # (a queue just loaded: `mpc clear; mpc load X`) at the first song in play
        # order, which is position 0 unless random shuffled that order.
        if song is None:
            if random:
                return []
            return [0] if single else _in_order(0, n, length, repeat, None)
        if single:
            return [song]
        if random:  # MPD has chosen the one after it; no further
            after = [nextsong] if nextsong is not None and nextsong != song else []
            return [song, *after][:n]
        return _in_order(song, n, length, repeat, None)
    if single:
        # MPD stops after the current song, or plays it again with repeat.
        return [song] if repeat and song is not None else []
    if nextsong is None:  # the end of the queue without repeat
        return []
    if random:
        return [nextsong]
    # With consume the current song leaves the queue once played: not again.
    return _in_order(nextsong, n, length, repeat, song if consume else None)


def _ranges(positions: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of ``positions`` as [start, end) ranges."""
    out: list[tuple[int, int]] = []
    for pos in sorted(set(positions)):
        if out and out[-1][1] == pos:
            out[-1] = (out[-1][0], pos + 1)
        else:
            out.append((pos, pos + 1))
    return out


def _disconnect(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.disconnect()


class MpdFollower:
    """Hands ``want`` this daemon's tracks among the next ``lookahead`` songs of MPD.

    ``track_of(uri)`` is the track id of a queued song's URI, or None when the
    song is not this daemon's.  ``want(ids)`` (synchronous) gets the ids in play
    order, each once, after every look at the queue: at start and whenever MPD
    reports a change to the player, the queue or the play options.

    Autoplay (``more_songs`` given, ``autoplay_songs`` > 0): ``more_songs(id)``
    is the mix of track ``id`` (the songs MPD may be given, in the mix's
    order); when MPD plays the last song of its queue and that song is one of
    this daemon's, up to ``autoplay_songs`` of its mix are appended, none
    queued already nor among the last ``autoplay_history`` songs played (kept
    in memory).  One try per song MPD starts: a mix that cannot be listed is
    one WARNING, and the next song tries again.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        password: str | None,
        lookahead: int,
        track_of: Callable[[str], str | None],
        want: Callable[[list[str]], None],
        retry_max: float = 30.0,
        more_songs: Callable[[str], Awaitable[list[AutoplaySong]]] | None = None,
        autoplay_songs: int = 5,
        autoplay_history: int = 100,
        alternatives: Sequence[tuple[str, int]] = (),
    ) -> None:
        if retry_max <= 0:
            raise ValueError(f"retry_max must be > 0, got {retry_max}")
        # Tried in order at every (re)connect; the first that answers is followed.
        self._addresses = [(host, port), *alternatives]
        self._password = password or None
        self._lookahead = max(0, lookahead)
        self._track_of = track_of
        self._want = want
        self._retry_max = retry_max
        self._where = _where(host, port)
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = False
        self._upcoming: list[str] = []
        self._mpd_version: str | None = None
        self._told_unreachable = False  # the one INFO line is out: retries are quiet
        self._told_password = False
        self._more_songs = more_songs if autoplay_songs > 0 else None
        self._autoplay_songs = autoplay_songs
        self._history = History(autoplay_history)
        self._playing: str | None = None  # MPD's songid of the song last seen playing
        self._playing_track: str | None = None  # and its track id, if it is ours
        self._autoplay_tried: str | None = None  # the songid autoplay last tried for
        self._autoplay_task: asyncio.Task[None] | None = None
        self.autoplay_appended = 0  # songs autoplay has appended
        self.autoplay_failures = 0  # mixes that could not be listed

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def upcoming(self) -> list[str]:
        """The track ids last handed to ``want``."""
        return list(self._upcoming)

    @property
    def mpd_version(self) -> str | None:
        """The protocol version MPD last greeted with."""
        return self._mpd_version

    def report(self) -> dict[str, Any]:
        """For /status: where MPD is, whether it answers, the tracks handed last."""
        report: dict[str, Any] = {
            "following": True, "address": self._where, "connected": self._connected,
            "mpd_version": self._mpd_version, "lookahead": self._lookahead,
            "upcoming": list(self._upcoming)}
        if len(self._addresses) > 1:
            report["tries"] = [_where(h, p) for h, p in self._addresses]
        if self._more_songs is not None:
            report["autoplay"] = {"songs": self._autoplay_songs, "history": len(self._history),
                                  "appended": self.autoplay_appended,
                                  "failures": self.autoplay_failures}
        return report

    @property
    def history(self) -> list[str]:
        """The track ids of the songs played lately that autoplay will not append."""
        return list(self._history)

    async def start(self) -> None:
        """Start following in a background task; returns at once."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"mpd follower {self._where}")

    async def aclose(self) -> None:
        """Stop following and disconnect (idempotent)."""
        self._closed = True
        for task in (self._task, self._autoplay_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._task = self._autoplay_task = None

    # -- the task

    async def _run(self) -> None:
        first = min(1.0, self._retry_max)
        delay = first
        while True:
            try:
                worked = await self._session()
            except Exception:  # a bug (here or in python-mpd2): logged, then retried
                log.exception("mpd: following MPD at %s failed; reconnecting", self._where)
                worked = False
            finally:
                self._connected = False
                if self._client is not None:
                    _disconnect(self._client)
                    self._client = None
            if worked:
                delay = first
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _connect(self) -> tuple[Any, list[str]] | None:
        """A client connected to the first address that answers, and what comes next."""
        failures: list[tuple[str, BaseException]] = []
        for host, port in self._addresses:
            client = self._client = QuietMPDClient()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await client.connect(host, port)
                    if self._password is not None:
                        await client.password(self._password)
                    ids = await self._next_tracks(client)
            except _FAILURES as exc:
                _disconnect(client)
                self._client = None
                if isinstance(exc, mpd.base.CommandError):  # an MPD, refusing us
                    self._where = _where(host, port)
                    self._connect_failed([(self._where, exc)])
                    return None
                failures.append((_where(host, port), exc))
                continue
            self._where = _where(host, port)
            return client, ids
        self._connect_failed(failures)
        return None

    async def _session(self) -> bool:
        """One connection, followed until it fails; False when it never worked."""
        connected = await self._connect()
        if connected is None:
            return False
        client, ids = connected
        self._connected = True
        self._mpd_version = str(client.mpd_version)
        log.info("mpd: following the queue of MPD %s at %s (look-ahead %d songs)",
                 self._mpd_version, self._where, self._lookahead)
        self._hand(ids)
        reason = "the connection ended"
        try:
            async with contextlib.aclosing(client.idle(SUBSYSTEMS)) as changes:
                async for _changed in changes:
                    async with asyncio.timeout(COMMAND_TIMEOUT):
                        ids = await self._next_tracks(client)
                    self._hand(ids)
        except _FAILURES as exc:
            reason = _reason(exc)
        self._connected = False
        self._told_unreachable = True  # the retries that follow are quiet
        log.info("mpd: lost MPD at %s (%s); reconnecting", self._where, reason)
        return True

    def _connect_failed(self, failures: list[tuple[str, BaseException]]) -> None:
        where, exc = failures[-1]
        reason = _reason(exc)
        if isinstance(exc, mpd.base.CommandError) and _ACK_AUTH.search(str(exc)):
            if not self._told_password:
                self._told_password = True
                given = "the password" if self._password else "us without a password"
                log.warning(
                    'mpd: MPD at %s refused %s (%s); set [mpd] password, or MPD_HOST '
                    'as "password@host"; look-ahead is off until it accepts',
                    where, given, reason)
                return
        elif not self._told_unreachable:
            self._told_unreachable = True
            if len(failures) == 1:
                log.info("mpd: no MPD at %s (%s); look-ahead is off until it answers",
                         where, reason)
            else:  # none of the places mpc looks at answered
                tried = [f"{w} ({_reason(e)})" for w, e in failures]
                log.info("mpd: no MPD at %s or %s; look-ahead is off until one answers "
                         "(or set [mpd] host)", ", ".join(tried[:-1]), tried[-1])
            return
        log.debug("mpd: MPD at %s: %s; retrying", where, reason)

    def _hand(self, ids: list[str]) -> None:
        self._upcoming = ids
        try:
            self._want(list(ids))
        except Exception:
            log.exception("mpd: handing the next tracks %s over failed", ids)

    # -- what comes next

    async def _next_tracks(self, client: Any) -> list[str]:
        status = {str(k): str(v) for k, v in (await client.status()).items()}
        if self._more_songs is not None:
            await self._watch_for_autoplay(client, status)
        if self._lookahead == 0:
            return []
        positions = upcoming_positions(status, self._lookahead)
        files: dict[int, str] = {}
        for start, end in _ranges(positions):
            for song in await client.playlistinfo(f"{start}:{end}"):
                pos, uri = song.get("pos"), song.get("file")
                if isinstance(pos, str) and pos.isdigit() and isinstance(uri, str):
                    files[int(pos)] = uri
        ids: list[str] = []
        for pos in positions:
            uri = files.get(pos)  # None: the queue changed since status; a wake-up follows
            track = None if uri is None else self._track(uri)
            if track is not None and track not in ids:
                ids.append(track)
        return ids

    def _track(self, uri: str) -> str | None:
        try:
            return self._track_of(uri)
        except Exception:
            log.exception("mpd: track_of(%r) failed; taken as not ours", uri)
            return None

    # -- autoplay

    async def _watch_for_autoplay(self, client: Any, status: Mapping[str, str]) -> None:
        """Note the song playing in the history; start autoplay when it is the last."""
        songid = status.get("songid")
        if status.get("state") not in ("play", "pause") or songid is None:
            return
        if songid != self._playing:
            current = await client.currentsong()
            uri = current.get("file") if isinstance(current, dict) else None
            self._playing = songid
            self._playing_track = self._track(uri) if isinstance(uri, str) else None
            if self._playing_track is not None:
                self._history.note(self._playing_track)
        track = self._playing_track
        if track is None or songid == self._autoplay_tried or not autoplay_due(status):
            return
        running = self._autoplay_task
        if running is not None and not running.done():
            return  # one at a time; this song gets its try once that one ends
        self._autoplay_tried = songid
        self._autoplay_task = asyncio.create_task(self._autoplay(client, track, songid),
                                                  name=f"mpd autoplay {track}")

    async def _autoplay(self, client: Any, track: str, songid: str) -> None:
        try:
            await self._append_mix(client, track, songid)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: logged with its traceback; the next song tries again
            log.exception("mpd: autoplay for %s failed", track)

    async def _append_mix(self, client: Any, track: str, songid: str) -> None:
        assert self._more_songs is not None
        try:
            mix = await self._more_songs(track)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.autoplay_failures += 1
            log.warning("mpd: autoplay: could not list the mix of %s (%s); the queue is "
                        "left as it was, and the next song tries again", track, exc)
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                status = {str(k): str(v) for k, v in (await client.status()).items()}
                if status.get("songid") != songid or not autoplay_due(status):
                    log.info("mpd: autoplay: the queue moved on while the mix of %s was "
                             "listed; nothing appended", track)
                    return
                queued = {t for song in await client.playlistinfo()
                          if isinstance(song.get("file"), str)
                          and (t := self._track(song["file"])) is not None}
                picks = pick_songs(mix, queued=queued, history=self._history,
                                   n=self._autoplay_songs)
                if not picks:
                    log.warning("mpd: autoplay: the mix of %s has %d songs, all queued or "
                                "played lately; nothing appended, the next song tries again",
                                track, len(mix))
                    return
                await queue_songs(client, picks)
        except _FAILURES as exc:
            log.info("mpd: autoplay: MPD at %s: %s; nothing more appended for %s",
                     self._where, _reason(exc), track)
            return
        self.autoplay_appended += len(picks)
        log.info("mpd: autoplay: appended %d songs of the mix of %s: %s", len(picks), track,
                 ", ".join(p.track_id for p in picks))
