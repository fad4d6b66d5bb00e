"""Plain data passed between the rooms: tracks as stored, stream URLs as resolved."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from ytproxy.errors import InvalidTrackId

__all__ = [
    "MAX_NAME_LENGTH",
    "VIDEO_ID_RE",
    "Playlist",
    "PlaylistEntry",
    "PlaylistSync",
    "StreamInfo",
    "Track",
    "TrackId",
    "display_name",
    "is_video_id",
    "safe_display_name",
    "url_param",
]

# YouTube ids are 11 characters of base64url; ids the store gives to tracks added
# by URL use the same alphabet (see store.derived_id) so one pattern covers both.
VIDEO_ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")


def is_video_id(value: str) -> bool:
    return VIDEO_ID_RE.fullmatch(value) is not None


# Characters of a refused id a message shows: a 4 KB path must not come back whole.
_SHOWN_ID_LENGTH = 60


class TrackId(str):
    """A track id checked once, where it enters (a route, a JSON body, a CLI
    argument, a listing): 11 characters of A-Z a-z 0-9 _ -.

    Made only through the constructor, which raises ``InvalidTrackId`` (HTTP
    400 ``bad_id``) for anything else, so code that takes a ``TrackId`` (the
    tracks service, the resolver's URL templates) need not check again: an id
    put into the admin's URL template can never change its host, path or query.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> TrackId:
        if type(value) is cls:
            return value
        if not isinstance(value, str) or VIDEO_ID_RE.fullmatch(value) is None:
            shown = repr(value)
            if len(shown) > _SHOWN_ID_LENGTH:
                shown = shown[:_SHOWN_ID_LENGTH] + "…"
            raise InvalidTrackId(f"{shown} is not a track id (11 characters of A-Z a-z 0-9 _ -)")
        return super().__new__(cls, value)


def url_param(url: str, name: str) -> str | None:
    """The first value of query parameter ``name`` in ``url``."""
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def display_name(artist: str | None, title: str | None, fallback: str) -> str:
    """What MPD shows for a track: ``Artist - Title``, or what is known of it."""
    if artist and title:
        return f"{artist} - {title}"
    return title or artist or fallback


# Characters of a name as players are shown it (icy-name, EXTINF, StreamTitle).
# A YouTube title is at most 100 characters and a channel name far less, so
# "Artist - Title" fits whole; at most 4 bytes a character it stays under
# 1 KiB, well inside curl's 100 KiB header limit (past it MPD's curl input
# fails with "Out of memory" and skips the song) and the 4080-byte ICY block.
MAX_NAME_LENGTH = 256


def safe_display_name(name: str) -> str:
    """``name`` as a header value, an M3U line or an ICY title may carry it.

    Control characters (C0, DEL, C1: newlines would start a new header or
    M3U line), Unicode line and paragraph separators and unpaired surrogates
    (not encodable as UTF-8) become spaces; runs of white space become one;
    past ``MAX_NAME_LENGTH`` characters the name is cut and ends with "…".
    """
    cleaned = "".join(
        " " if ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029"
        or "\ud800" <= ch <= "\udfff" else ch
        for ch in name[: MAX_NAME_LENGTH * 4]  # a bounded amount of work for any input
    )
    text = " ".join(cleaned.split())
    if len(text) > MAX_NAME_LENGTH:
        text = text[: MAX_NAME_LENGTH - 1].rstrip() + "…"
    return text


@dataclass(frozen=True)
class StreamInfo:
    """A playable upstream URL and what came with it from the resolver."""

    url: str
    expires_at: float
    mime: str | None = None
    size: int | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration: float | None = None
    # yt-dlp's id of the chosen format (YouTube's itag, e.g. "251"): a resume
    # asks for the same one, or it would splice two files.
    format_id: str | None = None
    # Unix time before which upstream refuses the URL (yt-dlp's available_at).
    available_at: float | None = None
    # Player clients (googlevideo's c= values) this URL was resolved without,
    # because their URLs failed for this track (see Tracks.refresh).
    avoid_clients: tuple[str, ...] = ()

    def fresh(self, now: float, margin: float) -> bool:
        return self.expires_at - margin > now

    @property
    def client(self) -> str | None:
        """The player client that produced the URL (its ``c=``, e.g. TVHTML5)."""
        return url_param(self.url, "c")


@dataclass(frozen=True)
class Track:
    """One row of the store."""

    id: str
    source_url: str
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration: float | None = None
    stream_url: str | None = None
    stream_expires_at: float | None = None
    stream_mime: str | None = None
    stream_size: int | None = None
    stream_headers: dict[str, str] = field(default_factory=dict)
    stream_format_id: str | None = None
    stream_available_at: float | None = None
    stream_avoid_clients: tuple[str, ...] = ()
    resolved_at: float | None = None
    added_at: float = 0.0
    last_played_at: float | None = None
    play_count: int = 0
    last_error: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.artist, self.title, self.id)

    def stored_stream(self) -> StreamInfo | None:
        if not self.stream_url or self.stream_expires_at is None:
            return None
        return StreamInfo(
            url=self.stream_url,
            expires_at=self.stream_expires_at,
            mime=self.stream_mime,
            size=self.stream_size,
            http_headers=dict(self.stream_headers),
            title=self.title,
            artist=self.artist,
            album=self.album,
            duration=self.duration,
            format_id=self.stream_format_id,
            available_at=self.stream_available_at,
            avoid_clients=self.stream_avoid_clients,
        )


class PlaylistEntry(NamedTuple):
    """One entry of a playlist as listed by the resolver, before it is a stored track."""

    video_id: str | None  # a YouTube id, when the entry is a YouTube video
    url: str  # the entry's page URL
    title: str | None = None
    duration: float | None = None
    artist: str | None = None


@dataclass(frozen=True)
class Playlist:
    """A named playlist in the store; its tracks are kept in the source's order."""

    name: str
    source_url: str | None
    title: str | None
    created_at: float
    updated_at: float
    track_count: int = 0


@dataclass(frozen=True)
class PlaylistSync:
    """A stored playlist the daemon keeps following its source (``import --sync``)."""

    name: str
    source_url: str
    every: float  # seconds between syncs
    next_sync: float  # when the daemon syncs it next (time.time())
    last_sync: float | None = None  # the last sync that worked
    last_attempt: float | None = None
    last_error: str | None = None  # why the last attempt failed; None once one works
    failures: int = 0  # attempts failed in a row (the backoff)
