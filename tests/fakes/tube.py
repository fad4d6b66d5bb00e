"""FakeTube: a YouTube-shaped fake on loopback for the real yt-dlp and a test-only
extractor plugin (tests/ytdlp_plugins/.../ytproxy_faketube.py).

Built on FakeGooglevideo (its range rules, faults, records and waits), with
what YouTube does in 2026 (../shared/docs/FACTS.md):

* ``GET /faketube/player?v=ID&clients=a,b,-c&seen=JSON`` — what a player
  client's answer gives yt-dlp: formats whose URLs carry ``c=`` (the client's
  InnerTube name), ``ip=``, ``itag=``, ``clen=``, ``expire=``, each format's
  ``http_headers``, and ``available_at`` when the track must be waited for.
  ``clients`` is ``extractor_args['youtube']['player_client']`` ("default" is
  ``DEFAULT_CLIENTS``; "-x" excludes x); the first client left serves.
* ``GET /faketube/videoplayback?...&tok=`` — the media, by googlevideo's rules,
  plus: before ``available_at`` → 403 ``not_yet_available``; a client in
  ``prefix_only`` → 403 ``past_prefix`` for any range reaching byte N or past;
  a track with ``require_cookie`` → 403 ``no_cookie`` without it.

``refuse(REASON, after=N)``: from the N+1-th player request on, every player
request is refused with YouTube's reason as yt-dlp words it (``RATE_LIMITED``,
``BOT_CHECK``), until ``relent()``.

Listings, as YouTube Music gives them to yt-dlp, for the listing extractors
of the plugin (tests/ytdlp_plugins/.../ytproxy_fakemusic.py): a catalogue of
songs (``add_song``: artist, title, duration), searched by words
(``search_url_template``), mixes (``mixes[seed]``, ``radio_url_template``)
and playlists (``playlists[id]``, ``playlist_url``).  The plugin asks
``GET /faketube/listing/{search,mix,playlist}`` once per listing; each is
recorded in ``listing_requests`` (``listing_calls`` counts them), so a test
can tell one yt-dlp call per listing and, from ``player_requests``, none per
entry.  ``listing_faults[key]`` (key ``"mix:ID"``, ``"search:QUERY"``,
``"playlist:ID"``) answers that status instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web

from tests.fakes.googlevideo import (
    KIND_FAULT_STATUS,
    FakeGooglevideo,
    Track,
    _RangeRefused,
    _requested_range,
)

__all__ = ["BOT_CHECK", "DEFAULT_CLIENTS", "PLUGINS", "RATE_LIMITED", "FakeTube", "Format",
           "ListingRecord", "PlayerRecord", "Song", "faketube"]

PLUGINS = Path(__file__).resolve().parent.parent / "ytdlp_plugins"
DEFAULT_CLIENTS = ("tv_samsung", "visionos")
INNERTUBE_NAMES = {"tv": "TVHTML5", "tv_samsung": "TVHTML5", "tv_downgraded": "TVHTML5",
                   "tv_simply": "TVHTML5_SIMPLY", "visionos": "VISIONOS",
                   "android_vr": "ANDROID_VR", "mweb": "MWEB", "ios": "IOS"}
# YouTube's two refusals of an address, in the words yt-dlp 2026.11 raises them
# with (yt_dlp/extractor/youtube/_video.py and _base.py's _youtube_login_hint).
RATE_LIMITED = (
    "This content isn't available, try again later. The current session has been "
    "rate-limited by YouTube for up to an hour. It is recommended to use `-t sleep` to add a "
    "delay between video requests to avoid exceeding the rate limit. For more information, "
    "refer to  https://github.com/yt-dlp/yt-dlp/wiki/Extractors"
    "#this-content-isnt-available-try-again-later")
BOT_CHECK = (
    "Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the "
    "authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ"
    "#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass cookies. Also see  "
    "https://github.com/yt-dlp/yt-dlp/wiki/Extractors#exporting-youtube-cookies  for tips on "
    "effectively exporting YouTube cookies")
HEADERS = {"User-Agent": "Mozilla/5.0 (FakeTube)", "Accept": "*/*",
           "Accept-Language": "en-us,en;q=0.5", "Sec-Fetch-Mode": "navigate"}


@dataclass
class Format:
    """One audio format of a track (another format_id is another file)."""

    format_id: str
    data: bytes
    abr: int = 160


@dataclass
class _Behaviour:
    available_in: float | None = None
    prefix_only: dict[str, int] = field(default_factory=dict)
    require_cookie: str | None = None
    ip: str = "127.0.0.1"
    formats: list[Format] | None = None


@dataclass
class PlayerRecord:
    video_id: str
    clients: list[str]
    served: str | None
    cookie: str | None
    seen: dict[str, object]
    at: float
    refused: bool = False  # answered with the reason given to FakeTube.refuse


@dataclass(frozen=True)
class Song:
    """A song of the catalogue, as YouTube Music lists it."""

    artist: str
    title: str
    duration: float


@dataclass
class ListingRecord:
    """A listing the plugin asked for: ``kind`` search, mix or playlist."""

    kind: str
    key: str
    status: int
    at: float


@dataclass
class _Issued:
    video_id: str
    client: str
    format_id: str
    data: bytes
    available_at: float | None
    generation: int


@dataclass
class MediaRecord:
    """A /faketube/videoplayback request: when, from which client's URL, how answered."""

    video_id: str
    client: str | None
    range_header: str | None
    status: int
    kind: str
    cookie: str | None
    at: float


class FakeTube(FakeGooglevideo):
    """A loopback YouTube look-alike for the FakeTube extractor plugin."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.player_requests: list[PlayerRecord] = []
        self.media: list[MediaRecord] = []
        self._behaviour: dict[str, _Behaviour] = {}
        self._issued: dict[str, _Issued] = {}
        #: Seconds the player endpoint takes for these ids (a yt-dlp call that hangs).
        self.player_delay: dict[str, float] = {}
        #: The catalogue the listings draw from, in the order songs were added.
        self.songs: dict[str, Song] = {}
        #: A track's mix: the seed's id -> the ids listed (the seed first, as YouTube does).
        self.mixes: dict[str, list[str]] = {}
        #: Playlists: list id -> the ids listed.
        self.playlists: dict[str, list[str]] = {}
        #: Listings answered with this status instead ("mix:ID", "search:QUERY", "playlist:ID").
        self.listing_faults: dict[str, int] = {}
        self.listing_requests: list[ListingRecord] = []
        #: The extractor listed entries name: this fake's own (played through
        #: source_url_template), or "Youtube" to look like YouTube's listings to
        #: code that keys on it (`ytproxy import` takes YouTube entries' ids).
        self.entry_ie_key = "FakeTube"
        self._refusal: tuple[str, int] | None = None  # (reason, from this request on)

    def refuse(self, reason: str, *, after: int = 0) -> None:
        """Refuse every player request after the next ``after`` with ``reason``."""
        self._refusal = (reason, len(self.player_requests) + after)

    def relent(self) -> None:
        """Answer player requests again."""
        self._refusal = None

    @property
    def watch_url_template(self) -> str:
        return f"{self.base_url}/faketube/watch?v={{id}}"

    @property
    def search_url_template(self) -> str:
        """``[resolver] search_url_template`` for this fake (YouTube Music's shape)."""
        return f"{self.base_url}/faketube/music/search?q={{query}}#songs"

    @property
    def radio_url_template(self) -> str:
        """``[resolver] radio_url_template`` for this fake (YouTube Music's shape)."""
        return f"{self.base_url}/faketube/music/watch?v={{id}}&list=RDAMVM{{id}}"

    def playlist_url(self, list_id: str) -> str:
        return f"{self.base_url}/faketube/playlist?list={list_id}"

    def add_song(self, video_id: str, data: bytes, *, artist: str, title: str,
                 duration: float, mime: str = "audio/webm") -> None:
        """Serve ``data`` as ``video_id`` and list it in the catalogue."""
        self.add_track(video_id, data, title=title, mime=mime)
        self.songs[video_id] = Song(artist, title, duration)

    def listing_calls(self, kind: str | None = None, key: str | None = None) -> int:
        """Listings asked for (of one kind, and one search query or id)."""
        return sum(1 for r in self.listing_requests
                   if (kind is None or r.kind == kind) and (key is None or r.key == key))

    def configure(self, video_id: str, *, available_in: float | None = None,
                  prefix_only: dict[str, int] | None = None,
                  require_cookie: str | None = None, ip: str = "127.0.0.1",
                  formats: list[Format] | None = None) -> None:
        """How ``video_id`` behaves (see the module's doc); ``formats`` replaces
        the single format 251 made from the track's data."""
        self._behaviour[video_id] = _Behaviour(available_in, dict(prefix_only or {}),
                                               require_cookie, ip, formats)

    def set_formats(self, video_id: str, formats: list[Format]) -> None:
        """Offer these formats from the next player answer on."""
        self._behaviour.setdefault(video_id, _Behaviour()).formats = formats

    def served_clients(self, video_id: str) -> list[str | None]:
        return [p.served for p in self.player_requests if p.video_id == video_id]

    # ------------------------------------------------------------------ routes

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/faketube/player":
            return await self._player(request)
        if request.path == "/faketube/watch":
            return web.Response(text="<html><body>FakeTube</body></html>",
                                content_type="text/html")
        if request.path == "/faketube/videoplayback":
            return await self._media(request)
        if request.path.startswith("/faketube/listing/"):
            return self._listing(request, request.path.removeprefix("/faketube/listing/"))
        return await super()._route(request)

    def _entry(self, video_id: str) -> dict[str, object]:
        song = self.songs.get(video_id)
        entry: dict[str, object] = {"id": video_id, "ie_key": self.entry_ie_key,
                                    "url": self.watch_url_template.replace("{id}", video_id)}
        if song is not None:
            entry.update(title=song.title, artists=[song.artist], channel=song.artist,
                         duration=song.duration)
        return entry

    def _listing(self, request: web.Request, kind: str) -> web.Response:
        if kind == "search":
            key = request.query.get("q", "")
            words = key.lower().split()
            ids = [i for i, song in self.songs.items()
                   if words and all(w in f"{song.artist} {song.title}".lower() for w in words)]
            title = f"Search: {key}"
        elif kind == "mix":
            key = request.query.get("v", "")
            found = self.mixes.get(key)
            ids, title = found or [], f"Mix - {key}"
        elif kind == "playlist":
            key = request.query.get("list", "")
            found = self.playlists.get(key)
            ids, title = found or [], f"Playlist {key}"
        else:
            return web.Response(status=404, text="no such listing")
        status = self.listing_faults.get(f"{kind}:{key}", 200)
        if status == 200 and kind != "search" and found is None:
            status = 404
        self.listing_requests.append(ListingRecord(kind, key, status, time.time()))
        self._notify()
        if status != 200:
            return web.Response(status=status, text=f"{kind} {key}: {status}")
        return web.json_response({"id": key, "title": title,
                                  "entries": [self._entry(i) for i in ids]})

    def _clients(self, asked: list[str]) -> list[str]:
        wanted: list[str] = []
        excluded = {c[1:] for c in asked if c.startswith("-")}
        for client in asked or ["default"]:
            if client == "default":
                wanted.extend(DEFAULT_CLIENTS)
            elif not client.startswith("-"):
                wanted.append(client)
        if not [c for c in wanted if c not in excluded]:
            wanted = list(DEFAULT_CLIENTS)  # yt-dlp: nothing requested means the defaults
        return [c for c in dict.fromkeys(wanted) if c not in excluded]

    async def _player(self, request: web.Request) -> web.Response:
        video_id = request.query.get("v", "")
        asked = [c for c in request.query.get("clients", "").split(",") if c]
        cookie = request.headers.get("Cookie")
        clients = self._clients(asked)
        served = next((c for c in clients if c in INNERTUBE_NAMES), None)
        record = PlayerRecord(video_id, asked, served, cookie,
                              json.loads(request.query.get("seen", "{}")), time.time())
        self.player_requests.append(record)
        if self._refusal is not None and len(self.player_requests) > self._refusal[1]:
            record.refused = True
            self._notify()
            # The plugin raises a 403's body as yt-dlp's ExtractorError(expected=True),
            # as YouTube's extractor raises the player's reason.
            return web.Response(status=403, text=self._refusal[0])
        self._notify()
        if video_id in self.player_delay:
            await asyncio.sleep(self.player_delay[video_id])
        track = self.tracks.get(video_id)
        behaviour = self._behaviour.get(video_id, _Behaviour())
        if track is None:
            return web.Response(status=404, text="Video unavailable")
        if behaviour.require_cookie and behaviour.require_cookie not in (cookie or ""):
            return web.Response(status=403,
                                text="Sign in to confirm you're not a bot (FakeTube)")
        if served is None:
            return web.Response(status=400, text="No player clients have been requested")
        available_at = (math.ceil(time.time() + behaviour.available_in)
                        if behaviour.available_in is not None else None)
        formats = behaviour.formats or [Format("251", track.data)]
        answer = [self._format(video_id, track, f, served, behaviour, available_at)
                  for f in formats]
        # A manifest format yt-dlp offers too; ytproxy must never pick it.
        answer.append({"format_id": "234", "url": f"{self.base_url}/faketube/manifest.m3u8",
                       "ext": "mp4", "acodec": "mp4a.40.2", "vcodec": "none", "abr": 48,
                       "protocol": "m3u8_native"})
        song = self.songs.get(video_id)
        if song is not None:
            return web.json_response({"title": song.title, "uploader": song.artist,
                                      "artist": song.artist, "duration": song.duration,
                                      "formats": answer})
        return web.json_response({"title": track.title, "uploader": "FakeTube Artist",
                                  "duration": 60, "formats": answer})

    def _format(self, video_id: str, track: Track, fmt: Format, client: str,
                behaviour: _Behaviour, available_at: float | None) -> dict[str, object]:
        token = secrets.token_hex(8)
        self._issued[token] = _Issued(video_id, client, fmt.format_id, fmt.data, available_at,
                                      self._generation.get(video_id, 0))
        expire = math.floor(self.clock() + self.url_ttl)
        query = urlencode({"id": video_id, "itag": fmt.format_id, "expire": str(expire),
                           "clen": str(len(fmt.data)), "mime": track.mime,
                           "c": INNERTUBE_NAMES[client], "ip": behaviour.ip, "tok": token})
        entry: dict[str, object] = {
            "format_id": fmt.format_id, "url": f"{self.base_url}/faketube/videoplayback?{query}",
            "ext": "webm", "acodec": "opus", "vcodec": "none", "abr": fmt.abr,
            "filesize": len(fmt.data), "protocol": "http", "http_headers": dict(HEADERS)}
        if available_at is not None:
            entry["available_at"] = available_at
        return entry

    # ------------------------------------------------------------------ media

    def _answer(self, request: web.Request, issued: _Issued | None, status: int,
                kind: str) -> web.Response:
        self._note(request, issued, status, kind)
        return web.Response(status=status, text=f"{status} {kind}\n")

    def _note(self, request: web.Request, issued: _Issued | None, status: int,
              kind: str) -> None:
        self.media.append(MediaRecord(
            issued.video_id if issued else request.query.get("id", "?"),
            issued.client if issued else None, request.headers.get("Range"), status, kind,
            request.headers.get("Cookie"), time.time()))
        self._record(request, status, kind, issued.video_id if issued else None)

    async def _media(self, request: web.Request) -> web.StreamResponse:
        issued = self._issued.get(request.query.get("tok", ""))
        if request.method != "GET":
            return self._answer(request, issued, 403, "head")
        if issued is None:
            return self._answer(request, None, 403, "bad_signature")
        behaviour = self._behaviour.get(issued.video_id, _Behaviour())
        if issued.generation < self._generation.get(issued.video_id, 0):
            return self._answer(request, issued, 403, "revoked")
        if self.clock() >= int(request.query.get("expire", "0")):
            return self._answer(request, issued, 403, "expired")
        if issued.available_at is not None and time.time() < issued.available_at:
            return self._answer(request, issued, 403, "not_yet_available")
        if behaviour.require_cookie and behaviour.require_cookie not in (
                request.headers.get("Cookie") or ""):
            return self._answer(request, issued, 403, "no_cookie")
        try:
            a, b = _requested_range(request)
        except _RangeRefused as refused:
            return self._answer(request, issued, refused.status, refused.kind)
        if b - a + 1 > self.max_range:
            return self._answer(request, issued, 403, "too_large")
        total = len(issued.data)
        if a >= total:
            return self._answer(request, issued, 416, "unsatisfiable")
        b = min(b, total - 1)
        prefix = behaviour.prefix_only.get(issued.client)
        if prefix is not None and b >= prefix:
            return self._answer(request, issued, 403, "past_prefix")
        fault = self._claim_status_fault(issued.video_id)
        if fault is not None:
            return self._answer(request, issued, fault.status, KIND_FAULT_STATUS)
        plan = self._claim_body_faults(issued.video_id, a, b)
        self.media.append(MediaRecord(issued.video_id, issued.client,
                                      request.headers.get("Range"), 206, "ok",
                                      request.headers.get("Cookie"), time.time()))
        media = Track(data=issued.data, title="", mime="audio/webm")
        return await self._send_body(request, media, a, b, plan.cut)


@pytest.fixture
async def faketube() -> AsyncIterator[FakeTube]:
    """A started FakeTube, closed after the test."""
    fake = FakeTube()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
