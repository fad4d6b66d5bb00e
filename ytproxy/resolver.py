"""yt-dlp, run in helper processes, turned into a ``StreamInfo`` or a typed error.

yt-dlp is blocking and not promised thread-safe: every call gets its own
``YoutubeDL`` inside ``with``, in one of ``resolver.workers`` worker processes
(``ytdlp_process``), which exit when idle and take yt-dlp's memory with them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiolimiter import AsyncLimiter

from ytproxy.config import BreakerConfig, ResolverConfig
from ytproxy.errors import (
    InvalidTrackId,
    ResolverFailed,
    ResolverUnavailable,
    TrackGone,
    YtproxyError,
)
from ytproxy.models import PlaylistEntry, StreamInfo, is_video_id
from ytproxy.resilience import BreakerOpen, CircuitBreaker
from ytproxy.singleflight import SingleFlight
from ytproxy.ytdlp_process import ExtractFailed, WorkerLost, YtdlpProcesses, failure_cause

__all__ = [
    "Resolver",
    "classify_error",
    "expiry_from_url",
    "playlist_entries_from",
    "stream_info_from",
    "strip_query",
]

log = logging.getLogger(__name__)

_MIME_BY_EXT = {
    "webm": "audio/webm",
    "weba": "audio/webm",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "oga": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "aac": "audio/aac",
}

# Phrases yt-dlp uses when the video itself is gone; retrying will never help.
_GONE_PHRASES = (
    "video unavailable",
    "private video",
    "this video has been removed",
    "this video is not available",
    "this video is no longer available",
    "account associated with this video has been terminated",
)
# Phrases that mean "not now": the network, or the far side asking us to slow down.
_TRANSIENT_PHRASES = (
    "too many requests",
    "timed out",
    "connection refused",
    "connection reset",
    "temporary failure in name resolution",
    "name or service not known",
    "network is unreachable",
    "remote end closed connection",
    "urlopen error",
)
_HTTP_STATUS_RE = re.compile(r"HTTP Error (\d{3})")
# A flat listing of a long playlist pages through several requests in one call.
_PLAYLIST_TIMEOUT_FACTOR = 4
# Flat entries that are playlists themselves (a channel's tabs), not tracks.
_NESTED_PLAYLIST_KEYS = ("YoutubeTab", "YoutubePlaylist")


def strip_query(url: str) -> str:
    """A URL safe to log: signed stream URLs carry credentials in their query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def expiry_from_url(url: str) -> float | None:
    values = parse_qs(urlsplit(url).query).get("expire")
    if not values:
        return None
    try:
        return float(values[0])
    except ValueError:
        return None


def _int_param(url: str, name: str) -> int | None:
    values = parse_qs(urlsplit(url).query).get(name)
    if values and values[0].isdigit():
        return int(values[0])
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def stream_info_from(info: dict[str, Any], *, url_ttl: float, now: float) -> StreamInfo:
    """What the relay needs from yt-dlp's info dict (the chosen format is at the top level)."""
    url = info.get("url")
    if not isinstance(url, str) or not url:
        raise ResolverFailed("yt-dlp found no playable audio URL on the source page")
    mime_param = parse_qs(urlsplit(url).query).get("mime")
    ext = info.get("ext")
    mime = mime_param[0] if mime_param else _MIME_BY_EXT.get(ext if isinstance(ext, str) else "")
    size = info.get("filesize")
    if not isinstance(size, int) or size <= 0:
        size = _int_param(url, "clen")
    headers = info.get("http_headers")
    artists = info.get("artists")
    artist = _text(info.get("artist")) or (
        ", ".join(a for a in artists if isinstance(a, str))
        if isinstance(artists, list) and artists else None
    ) or _text(info.get("creator")) or _text(info.get("uploader")) or _text(info.get("channel"))
    duration = info.get("duration")
    return StreamInfo(
        url=url,
        expires_at=expiry_from_url(url) or now + url_ttl,
        mime=mime,
        size=size,
        http_headers={str(k): str(v) for k, v in headers.items()}
        if isinstance(headers, dict) else {},
        title=_text(info.get("track")) or _text(info.get("title")),
        artist=artist,
        album=_text(info.get("album")),
        duration=float(duration) if isinstance(duration, int | float) else None,
    )


def playlist_entries_from(
    info: dict[str, Any], source_url: str
) -> tuple[str | None, list[PlaylistEntry]]:
    """The title and track entries of a flat (``extract_flat``) playlist info dict."""
    if info.get("_type") != "playlist":
        raise ResolverFailed(
            f"{source_url} is a single track, not a playlist; add it with: ytproxy add URL"
        )
    entries: list[PlaylistEntry] = []
    skipped = 0
    for entry in info.get("entries") or []:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        key = entry.get("ie_key") or entry.get("extractor_key")
        if entry.get("_type") == "playlist" or key in _NESTED_PLAYLIST_KEYS:
            skipped += 1
            continue
        entry_id = entry.get("id")
        video_id = entry_id if key == "Youtube" and isinstance(entry_id, str) and is_video_id(
            entry_id) else None
        url = _text(entry.get("url")) or _text(entry.get("webpage_url"))
        if url is None and video_id is not None:
            url = f"https://www.youtube.com/watch?v={video_id}"
        if url is None:
            skipped += 1
            continue
        duration = entry.get("duration")
        entries.append(PlaylistEntry(
            video_id=video_id,
            url=url,
            title=_text(entry.get("track")) or _text(entry.get("title")),
            duration=float(duration) if isinstance(duration, int | float) else None,
            artist=_text(entry.get("artist")) or _text(entry.get("channel"))
            or _text(entry.get("uploader")),
        ))
    if skipped:
        log.info("resolver: %s: skipped %d entries that are not tracks", source_url, skipped)
    if not entries:
        raise ResolverFailed(f"found no tracks in the playlist at {source_url}")
    return _text(info.get("title")), entries


def classify_error(exc: BaseException, source_url: str) -> YtproxyError:
    """Map a yt-dlp failure to what a listener (and the HTTP status) should be told."""
    if isinstance(exc, YtproxyError):
        return exc
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, ExtractFailed):  # as told by a worker process
        expected, network = exc.expected, exc.network
    else:
        expected, network = failure_cause(exc)
    short = text.removeprefix("ERROR: ").strip()
    status_match = _HTTP_STATUS_RE.search(text)
    if status_match is not None:
        status = int(status_match.group(1))
        if status in (404, 410):
            return TrackGone(f"the source says this track is gone: {short}")
        if status == 429 or status >= 500:
            return ResolverUnavailable(f"the source is refusing or failing right now: {short}")
        return ResolverFailed(f"the source refused the request: {short}")
    if any(p in lower for p in _GONE_PHRASES):
        return TrackGone(f"the source says this track is gone: {short}")
    if "sign in" in lower or "confirm you" in lower:
        return ResolverFailed(
            f"the source asks for a sign-in: {short}. Upgrading yt-dlp often helps "
            "(pip install -U 'yt-dlp[default]')"
        )
    if any(p in lower for p in _TRANSIENT_PHRASES) or network:
        return ResolverUnavailable(f"could not reach the source right now: {short}")
    if "unsupported url" in lower:
        return ResolverFailed(f"yt-dlp does not know how to read {source_url}")
    if expected:
        return ResolverFailed(f"yt-dlp could not resolve the track: {short}")
    return ResolverFailed(
        f"yt-dlp failed: {short}. If this keeps happening, upgrade yt-dlp "
        "(pip install -U 'yt-dlp[default]')"
    )


class Resolver:
    """Turns a source page URL into a ``StreamInfo``; concurrent asks share one call."""

    def __init__(
        self, config: ResolverConfig, breaker: BreakerConfig | None = None, *, proxy: str = ""
    ) -> None:
        self._config = config
        # upstream.proxy; empty lets yt-dlp read HTTP(S)_PROXY/NO_PROXY itself.
        self._proxy = proxy
        breaker = breaker or BreakerConfig()
        self.breaker = CircuitBreaker("resolver", breaker.failures, breaker.reset_after)
        # One call per slot, no burst: YouTube answers bursts with 429s and bans.
        self._limiter = AsyncLimiter(1, 60.0 / config.max_calls_per_minute)
        self.rate_limit_waiting = 0
        # Told how long each real yt-dlp call took (the metrics histogram).
        self.on_duration: Callable[[float], None] | None = None
        self._workers = YtdlpProcesses.shared(config.workers)
        self._flights: SingleFlight[str, StreamInfo] = SingleFlight()
        self.failures: Counter[str] = Counter()
        self.last_duration: float | None = None

    @property
    def calls(self) -> int:
        return self._flights.calls

    @property
    def joins(self) -> int:
        return self._flights.joins

    def source_url_for(self, track_id: str) -> str:
        # The template is the admin's and trusted; what goes into it must be an id,
        # never text that could change the URL's host, path or query.
        if not is_video_id(track_id):
            raise InvalidTrackId(
                f"{track_id!r} is not a track id (11 characters of A-Z a-z 0-9 _ -)"
            )
        return self._config.source_url_template.replace("{id}", track_id)

    async def resolve(self, source_url: str) -> StreamInfo:
        return await self._flights.run(source_url, lambda: self._resolve(source_url))

    async def _admit(self) -> None:
        """Pass the breaker and the rate limit, or raise ResolverUnavailable (503)."""
        try:
            self.breaker.check()
        except BreakerOpen as exc:
            self.failures["breaker_open"] += 1
            raise ResolverUnavailable(
                f"yt-dlp failed {self.breaker.failures} times in a row "
                f"(last: {self.breaker.last_error}); not trying again for "
                f"{exc.retry_after:.0f} s. Check the network, or upgrade yt-dlp",
                retry_after=exc.retry_after,
            ) from None
        self.rate_limit_waiting += 1
        try:
            async with asyncio.timeout(self._config.rate_limit_wait):
                await self._limiter.acquire()
        except TimeoutError:
            self.breaker.release_trial()
            self.failures["rate_limited"] += 1
            raise ResolverUnavailable(
                f"too many new tracks at once: yt-dlp calls are limited to "
                f"{self._config.max_calls_per_minute} per minute "
                "(resolver.max_calls_per_minute); try again shortly",
                retry_after=60.0 / self._config.max_calls_per_minute,
            ) from None
        finally:
            self.rate_limit_waiting -= 1

    async def _call_ytdlp(
        self, url: str, options: dict[str, Any], limit: float, what: str
    ) -> dict[str, Any]:
        """One yt-dlp call: breaker, rate limit, worker process, deadline, classified errors."""
        await self._admit()
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                info = await self._workers.extract(url, options)
        except WorkerLost as exc:
            self.failures["worker_lost"] += 1
            self.breaker.record_failure(str(exc))
            raise ResolverUnavailable(f"{exc}; the next call starts a new one") from None
        except TimeoutError:
            # The call is left to end in its worker; yt-dlp's own socket
            # timeout ends it soon after.
            self.failures["timeout"] += 1
            self.breaker.record_failure("timeout")
            raise ResolverUnavailable(f"yt-dlp took longer than {limit:g} s {what}") from None
        except asyncio.CancelledError:
            self.breaker.release_trial()
            raise
        finally:
            self.last_duration = time.monotonic() - started
            if self.on_duration is not None:
                self.on_duration(self.last_duration)
        if info is None:
            raise ResolverFailed(f"yt-dlp returned nothing for {url}")
        return info

    def _settle(self, exc: Exception, url: str) -> YtproxyError:
        """Classify a failure, count it, and tell the breaker (only transient ones count)."""
        error = classify_error(exc, url)
        self.failures[error.code] += 1
        if isinstance(error, ResolverUnavailable):
            self.breaker.record_failure(str(error))
        else:
            self.breaker.record_success()  # the source answered: yt-dlp itself works
        return error

    def _options(self, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "socket_timeout": max(1.0, self._config.timeout / 2),
            "cachedir": False,
            **extra,
        }
        if self._proxy:
            options["proxy"] = self._proxy
        return options

    async def _resolve(self, source_url: str) -> StreamInfo:
        options = self._options(noplaylist=True, format=self._config.format)
        try:
            info = await self._call_ytdlp(source_url, options, self._config.timeout,
                                          f"for {source_url}")
            if info.get("_type") == "playlist":
                entries = [e for e in info.get("entries") or [] if isinstance(e, dict)]
                if not entries:
                    raise ResolverFailed(f"{source_url} is an empty playlist, not a track")
                info = entries[0]
            result = stream_info_from(info, url_ttl=self._config.url_ttl, now=time.time())
        except ResolverUnavailable:
            raise
        except Exception as exc:
            error = self._settle(exc, source_url)
            log.warning("resolver: %s: %s", source_url, error)
            raise error from exc
        self.breaker.record_success()
        log.info("resolver: %s resolved in %.2f s -> %s", source_url, self.last_duration,
                 strip_query(result.url))
        return result

    async def list_playlist(self, url: str) -> tuple[str | None, list[PlaylistEntry]]:
        """A playlist's title and entries, listed flat: no entry is resolved.

        One yt-dlp call through the same breaker, rate limit and pool as
        ``resolve``; entries are resolved later, one by one, when first played.
        """
        # Entries as the page lists them (id, URL, title): no request per entry.
        options = self._options(extract_flat="in_playlist")
        limit = self._config.timeout * _PLAYLIST_TIMEOUT_FACTOR
        try:
            info = await self._call_ytdlp(url, options, limit, f"to list the playlist {url}")
            result = playlist_entries_from(info, url)
        except ResolverUnavailable:
            raise
        except Exception as exc:
            error = self._settle(exc, url)
            if isinstance(error, TrackGone):
                # A playlist page that is gone is not a track that is gone.
                error = ResolverFailed(f"cannot read the playlist at {url}: "
                                       f"{str(exc).removeprefix('ERROR: ').strip()}")
            log.warning("resolver: playlist %s: %s", url, error)
            raise error from exc
        self.breaker.record_success()
        log.info("resolver: listed %d entries of %s in %.2f s", len(result[1]), url,
                 self.last_duration)
        return result

    async def close(self) -> None:
        """Nothing to release: the worker processes are shared, and exit when idle."""
