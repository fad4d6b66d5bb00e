"""Search and mix listings through yt-dlp: songs found, stored as tracks, resolved
only when played.

A listing is one yt-dlp call, flat (``extract_flat``): the entries carry what
the listing page says of each song (yt-dlp's ``id``, ``title``, ``duration``,
``artists``/``artist``/``channel``/``uploader``), and no entry is asked about on
its own — one call per entry would get us rate-limited by YouTube.  The URLs
listed are ``[resolver] search_url_template`` (YouTube Music's songs search by
default) and ``radio_url_template`` (a track's mix, which starts with the
track itself); both are the admin's, and their entries are YouTube videos,
whose ids are resolved through ``source_url_template`` when played.

``Listings`` is shaped like the MPD follower: keyword-only arguments, the
yt-dlp call and the store handed in, and the decisions (what is a song, what a
query or a limit may be, what a radio's seed is) pure functions of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from ytproxy.errors import BadQuery, InvalidTrackId
from ytproxy.library.tracks import youtube_id_from_url
from ytproxy.models import Track, TrackId, display_name, is_video_id

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_LENGTH",
    "RADIO_LIMIT",
    "SEARCH_LIMIT",
    "Listings",
    "Song",
    "check_limit",
    "check_query",
    "radio_seed",
    "radio_url",
    "search_json",
    "search_url",
    "song_json",
    "songs_from_listing",
]

log = logging.getLogger(__name__)

SEARCH_LIMIT = 10  # songs a search gives unless asked for more
RADIO_LIMIT = 25  # songs of a mix `ytproxy radio` gives unless asked for more
MAX_LIMIT = 50  # the most any listing gives (one page of YouTube's answer or two)
MAX_QUERY_LENGTH = 200  # characters of a search query

# Flat entries that are playlists, albums or channels themselves, not songs.
_NESTED_KEYS = frozenset({"YoutubeTab", "YoutubePlaylist"})


@dataclass(frozen=True)
class Song:
    """One song of a listing, as the listing page describes it."""

    id: TrackId
    title: str | None = None
    artist: str | None = None
    duration: float | None = None

    @property
    def name(self) -> str:
        """What MPD shows for it: ``Artist - Title``, or what is known."""
        return display_name(self.artist, self.title, self.id)


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _artist(entry: Mapping[str, Any]) -> str | None:
    artists = entry.get("artists")
    if isinstance(artists, list):
        named = [a.strip() for a in artists if isinstance(a, str) and a.strip()]
        if named:
            return ", ".join(named)
    return (_text(entry.get("artist")) or _text(entry.get("creator"))
            or _text(entry.get("channel")) or _text(entry.get("uploader")))


def songs_from_listing(info: Mapping[str, Any], *, limit: int) -> list[Song]:
    """The songs of a flat listing (yt-dlp's playlist info dict), in its order,
    each once, at most ``limit``.  Entries that are not songs (a playlist, an
    album, a channel, anything without a YouTube id) are left out."""
    songs: list[Song] = []
    seen: set[str] = set()
    entries = info.get("entries")
    for entry in entries if isinstance(entries, list) else []:
        if len(songs) >= limit:
            break
        if not isinstance(entry, Mapping):
            continue
        key = entry.get("ie_key") or entry.get("extractor_key")
        if entry.get("_type") == "playlist" or key in _NESTED_KEYS:
            continue
        raw_id = entry.get("id")
        if not isinstance(raw_id, str) or not is_video_id(raw_id) or raw_id in seen:
            continue
        song_id = TrackId(raw_id)
        seen.add(song_id)
        duration = entry.get("duration")
        songs.append(Song(
            id=song_id,
            title=_text(entry.get("track")) or _text(entry.get("title")),
            artist=_artist(entry),
            duration=float(duration) if isinstance(duration, int | float)
            and not isinstance(duration, bool) and duration > 0 else None,
        ))
    return songs


def check_query(query: str) -> str:
    """The query, trimmed, if it can be searched for; else ``BadQuery`` saying why."""
    text = " ".join(query.split())
    if not text:
        raise BadQuery("the search query is empty; say what to look for, such as an "
                       "artist and a title")
    if len(text) > MAX_QUERY_LENGTH:
        raise BadQuery(f"the search query is {len(text)} characters long; at most "
                       f"{MAX_QUERY_LENGTH}")
    if any(ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff" for ch in text):
        raise BadQuery("the search query must not contain control characters")
    return text


def check_limit(limit: int) -> int:
    """``limit`` if it is a number of songs a listing may give (1-MAX_LIMIT)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"the limit must be between 1 and {MAX_LIMIT} songs, got {limit}")
    return limit


def search_url(template: str, query: str) -> str:
    """``search_url_template`` with the query URL-encoded into ``{query}``."""
    return template.replace("{query}", quote(check_query(query), safe=""))


def radio_url(template: str, track_id: TrackId) -> str:
    """``radio_url_template`` for a track: only a checked id goes into the admin's
    URL (see ``Resolver.source_url_for``)."""
    return template.replace("{id}", TrackId(track_id))


def radio_seed(id_or_url: str, *, proxied: Callable[[str], TrackId | None]) -> TrackId:
    """The track id a radio starts from: an id, a YouTube or YouTube Music page
    URL, or a ``/proxy/<id>`` URL of this daemon (``proxied`` knows those)."""
    value = id_or_url.strip()
    if is_video_id(value):
        return TrackId(value)
    found = youtube_id_from_url(value) or proxied(value)
    if found is not None:
        return found
    if urlsplit(value).scheme in ("http", "https"):
        raise InvalidTrackId(
            f"{id_or_url!r} names no YouTube track: give a track id, a YouTube or YouTube "
            "Music watch URL, or a /proxy/<id> URL of this daemon")
    raise InvalidTrackId(f"{id_or_url!r} is neither an 11-character YouTube id nor a URL")


def song_json(song: Song, base_url: str) -> dict[str, Any]:
    """A song as ``ytproxy search --json`` and ``GET /search`` give it."""
    return {"id": song.id, "title": song.title, "artist": song.artist,
            "duration": song.duration, "name": song.name,
            "url": f"{base_url}/proxy/{song.id}"}


def search_json(query: str, songs: Sequence[Song], base_url: str) -> dict[str, Any]:
    """The answer of ``GET /search`` and what ``ytproxy search --json`` prints."""
    return {"query": " ".join(query.split()),
            "results": [song_json(song, base_url) for song in songs]}


class _Store(Protocol):
    async def add_listed(
        self, tracks: Sequence[tuple[str, str, str | None, str | None, float | None]]
    ) -> list[Track]: ...


# (URL, what it is in messages, the most entries) -> yt-dlp's flat info dict.
ListFlat = Callable[..., Awaitable[dict[str, Any]]]


class Listings:
    """Search and mix listings, their songs stored as tracks.

    ``list_flat(url, what=..., limit=...)`` is one flat yt-dlp call
    (``Resolver.listing``); ``source_url_for(id)`` the page a stored track
    resolves from (``Resolver.source_url_for``).
    """

    def __init__(self, *, store: _Store, list_flat: ListFlat,
                 source_url_for: Callable[[TrackId], str], search_url_template: str,
                 radio_url_template: str) -> None:
        self._store = store
        self._list_flat = list_flat
        self._source_url_for = source_url_for
        self._search_template = search_url_template
        self._radio_template = radio_url_template

    async def search(self, query: str, *, limit: int = SEARCH_LIMIT) -> list[Song]:
        """Songs found for ``query``, stored; an empty list when nothing is."""
        check_limit(limit)
        text = check_query(query)
        info = await self._list_flat(search_url(self._search_template, text),
                                     what=f"the search for {text!r}", limit=limit)
        return await self._stored(songs_from_listing(info, limit=limit))

    async def radio(self, track_id: TrackId, *, limit: int = RADIO_LIMIT) -> list[Song]:
        """The songs of a track's mix (the track first, as the mix has it), stored."""
        check_limit(limit)
        url = radio_url(self._radio_template, track_id)
        info = await self._list_flat(url, what=f"the mix of {track_id}", limit=limit)
        return await self._stored(songs_from_listing(info, limit=limit))

    async def _stored(self, songs: Sequence[Song]) -> list[Song]:
        """Store each song as a track, in one write (what is known of a stored
        one is kept, its gaps are filled), and give the songs as the store now
        knows them."""
        if not songs:
            return []
        stored = {t.id: t for t in await self._store.add_listed(
            [(s.id, self._source_url_for(s.id), s.title, s.artist, s.duration)
             for s in songs])}
        out: list[Song] = []
        for song in songs:
            track = stored.get(song.id)
            if track is None:  # removed meanwhile: the listing's word is all there is
                out.append(song)
                continue
            out.append(Song(id=song.id, title=track.title or song.title,
                            artist=track.artist or song.artist,
                            duration=track.duration or song.duration))
        return out
