"""yt-dlp, run in helper processes, turned into a ``StreamInfo`` or a typed error.

yt-dlp is blocking and not promised thread-safe: every call gets its own
``YoutubeDL`` inside ``with``, in one of ``resolver.workers`` worker processes
(``ytdlp_process``), which exit when idle and take yt-dlp's memory with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiolimiter import AsyncLimiter

from ytproxy.config import BreakerConfig, ResolverConfig
from ytproxy.errors import (
    ResolverFailed,
    ResolverUnavailable,
    TrackGone,
    YoutubeRefused,
    YtproxyError,
)
from ytproxy.models import PlaylistEntry, StreamInfo, TrackId, is_video_id
from ytproxy.resilience import BreakerOpen, CircuitBreaker
from ytproxy.resolve.budget import CallBudget, CallKind, Ticket
from ytproxy.resolve.jsruntime import JsRuntime, find_js_runtime, runtime_version
from ytproxy.resolve.messages import clock_time, describe, first_line
from ytproxy.resolve.refusals import STATES, RefusalState
from ytproxy.resolve.singleflight import SingleFlight
from ytproxy.resolve.ytdlp_process import (
    CallTimedOut,
    ExtractFailed,
    WorkerLost,
    YtdlpProcesses,
    failure_cause,
)
from ytproxy.ytdlp_options import (
    POT_PROVIDER_ARGS,
    browser_cookie_spec,
    with_extractor_arg,
)

__all__ = [
    "Resolver",
    "ResolverStats",
    "classify_error",
    "expiry_from_url",
    "plain_http_format",
    "playlist_entries_from",
    "stream_info_from",
    "strip_query",
    "ytdlp_cache_dir",
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
# Of those, the ones that say the network itself failed (every track's problem).
_NETWORK_PHRASES = tuple(p for p in _TRANSIENT_PHRASES if p != "too many requests")
_HTTP_STATUS_RE = re.compile(r"HTTP Error (\d{3})")
# A flat listing of a long playlist pages through several requests in one call.
_PLAYLIST_TIMEOUT_FACTOR = 4
# Flat entries that are playlists themselves (a channel's tabs), not tracks.
_NESTED_PLAYLIST_KEYS = ("YoutubeTab", "YoutubePlaylist")


# A format ytproxy can relay: one file over plain http(s), never a manifest
# (HLS, DASH) nor a merge of two.
_PLAIN_HTTP = "[protocol~='^https?$']"
_PLAIN_PROTOCOLS = ("http", "https")


def plain_http_format(spec: str) -> str:
    """``spec`` (a yt-dlp format selection) with every alternative limited to
    plain http(s) formats: ``a/b`` → ``a[protocol...]/b[protocol...]``."""
    alternatives: list[str] = []
    depth, current = 0, ""
    for ch in spec:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "/" and depth == 0:
            alternatives.append(current)
            current = ""
        else:
            current += ch
    alternatives.append(current)
    return "/".join(a.strip() if any(c in a for c in "+(,") else a.strip() + _PLAIN_HTTP
                    for a in alternatives if a.strip())


def ytdlp_cache_dir() -> Path:
    """Where yt-dlp keeps its cache (player code, solved challenges) for ytproxy."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ytproxy" / "yt-dlp"


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
    http_headers = ({str(k): str(v) for k, v in headers.items()}
                    if isinstance(headers, dict) else {})
    protocol = info.get("protocol")
    if isinstance(protocol, str) and protocol not in _PLAIN_PROTOCOLS:
        raise ResolverFailed(
            f"yt-dlp chose a {protocol} format ({info.get('format_id')}), which ytproxy "
            "cannot relay; change resolver.format to pick a plain http(s) one")
    available_at = info.get("available_at")
    format_id = info.get("format_id")
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
        http_headers=http_headers,
        title=_text(info.get("track")) or _text(info.get("title")),
        artist=artist,
        album=_text(info.get("album")),
        duration=float(duration) if isinstance(duration, int | float) else None,
        format_id=format_id if isinstance(format_id, str) and format_id else None,
        available_at=float(available_at)
        if isinstance(available_at, int | float) and available_at > 0 else None,
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


def classify_error(exc: BaseException, source_url: str, *, until: float | None = None,
                   cookies: bool = False) -> YtproxyError:
    """Map a yt-dlp failure to what a listener (and the HTTP status) should be
    told: one sentence (``ytproxy.resolve.messages``), yt-dlp's own words in
    ``detail``.  ``until``: when a rate limit's pause would end."""
    if isinstance(exc, YtproxyError):
        return exc
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, ExtractFailed):  # as told by a worker process
        expected, network = exc.expected, exc.network
    else:
        expected, network = failure_cause(exc)
    detail = text.removeprefix("ERROR: ").strip()
    said = describe(text, until=until, cookies=cookies)
    if said.kind in STATES:
        return YoutubeRefused(said.sentence, state=said.kind, detail=detail)
    status_match = _HTTP_STATUS_RE.search(text)
    if status_match is not None:
        status = int(status_match.group(1))
        if status in (404, 410):
            return TrackGone(f"the source says this track is gone (HTTP {status}); remove it",
                             detail=detail)
        if status == 429 or status >= 500:
            return ResolverUnavailable(f"the source is refusing or failing right now (HTTP "
                                       f"{status}); ytproxy tries again shortly", detail=detail)
        return ResolverFailed(f"the source refused the request (HTTP {status}): "
                              f"{first_line(text)}", detail=detail)
    if said.kind in ("unavailable", "private") or any(p in lower for p in _GONE_PHRASES):
        return TrackGone(said.sentence, detail=detail)
    if said.kind in ("age_restricted", "sign_in", "too_old"):
        return ResolverFailed(said.sentence, detail=detail)
    if said.kind == "network" or any(p in lower for p in _TRANSIENT_PHRASES) or network:
        sentence = said.sentence if said.kind == "network" else (
            "could not reach the source right now; ytproxy tries again shortly")
        return ResolverUnavailable(sentence, detail=detail)
    if "unsupported url" in lower:
        return ResolverFailed(f"yt-dlp does not know how to read {source_url}", detail=detail)
    if expected:
        return ResolverFailed(f"yt-dlp could not resolve the track: {first_line(text)}",
                              detail=detail)
    return ResolverFailed(said.sentence, detail=detail)


def _offline(error: ResolverUnavailable) -> ResolverUnavailable:
    """Mark ``error`` as one of every track's (the network, a resting resolver):
    a new request is held through it rather than answered."""
    error.offline = True
    return error


@dataclass(frozen=True)
class ResolverStats:
    """The resolver's figures at one moment (/status, /metrics)."""

    calls: int  # yt-dlp calls made
    joins: int  # asks that shared another's call (single-flight)
    failures: Mapping[str, int]  # by error code
    rate_limit_waiting: int  # calls waiting for the per-minute limit
    last_call_seconds: float | None
    client: str | None  # the player client of the last URL resolved (googlevideo's c=)
    cookies: str | None  # where yt-dlp's cookies come from, never what they are
    calls_last_hour: int  # video calls, against [resolver] max_calls_per_hour
    listings_last_hour: int
    background_waiting: int  # background calls waiting for the hour's budget
    refusing: str | None  # "rate_limited" or "bot_check" while YouTube refuses
    budget: Mapping[str, object]  # the hour as /status tells it
    youtube: Mapping[str, object]  # YouTube's refusals as a state
    breaker: Mapping[str, object]


class Resolver:
    """Turns a source page URL into a ``StreamInfo``; concurrent asks share one call."""

    def __init__(
        self, config: ResolverConfig, breaker: BreakerConfig | None = None, *, proxy: str = "",
        on_duration: Callable[[float], None] | None = None,
    ) -> None:
        self._config = config
        # upstream.proxy; empty lets yt-dlp read HTTP(S)_PROXY/NO_PROXY itself.
        self._proxy = proxy
        breaker = breaker or BreakerConfig()
        self.breaker = CircuitBreaker("resolver", breaker.failures, breaker.reset_after)
        # One call per slot, no burst: YouTube answers bursts with 429s and bans.
        self._limiter = AsyncLimiter(1, 60.0 / config.max_calls_per_minute)
        self.rate_limit_waiting = 0
        # The hour's calls (listeners first, background in line) and YouTube's
        # refusals (rate_limited, bot_check) as a state, not track failures.
        self.budget = CallBudget(config.max_calls_per_hour, config.max_listings_per_hour)
        self.refusal = RefusalState(config.rate_limit_pause)
        self._pulse = asyncio.Event()  # set (and replaced) when a waiter may go
        self._wanted: Counter[str] = Counter()  # source URLs listeners wait for
        self._listeners_at_limiter = 0
        self._in_line: set[asyncio.Task[Any]] = set()  # background calls waiting
        # Background calls in flight: one at a time, so that a refusal stops
        # the next before it starts.
        self._background_running = 0
        # Told how long each real yt-dlp call took (the metrics histogram).
        self.on_duration = on_duration
        self._workers = YtdlpProcesses.shared(config.workers)
        self._flights: SingleFlight[tuple[str, str | None, tuple[str, ...]], StreamInfo] = (
            SingleFlight())
        self._warned_cookies: set[tuple[str, int]] = set()
        self._browser_cookies = browser_cookie_spec(config.cookies_from_browser)
        self._calls: set[asyncio.Future[dict[str, Any] | None]] = set()
        self.failures: Counter[str] = Counter()
        self.last_duration: float | None = None
        # The JavaScript runtime every call names (None: yt-dlp finds none, and
        # falls back to one player client).
        self.js_runtime: JsRuntime | None = find_js_runtime(config.js_runtime)
        if self.js_runtime is None:
            log.warning("resolver: no JavaScript runtime found (resolver.js_runtime = %r): "
                        "yt-dlp falls back to one player client and may find fewer formats; "
                        "`ytproxy doctor` says how to fix it", config.js_runtime)
        # The player client (googlevideo's ``c=``) of the last URL resolved.
        self.last_client: str | None = None
        self._js_runtime_version: str | None = None

    @property
    def calls(self) -> int:
        return self._flights.calls

    @property
    def joins(self) -> int:
        return self._flights.joins

    def stats(self) -> ResolverStats:
        budget = self.budget
        return ResolverStats(
            calls=self.calls, joins=self.joins,
            failures=MappingProxyType(dict(self.failures)),
            rate_limit_waiting=self.rate_limit_waiting, last_call_seconds=self.last_duration,
            client=self.last_client, cookies=self.cookies_source,
            calls_last_hour=budget.used(), listings_last_hour=budget.listings_used(),
            background_waiting=budget.waiting, refusing=self.refusal.current(),
            budget=budget.as_dict(), youtube=self.refusal.as_dict(),
            breaker=self.breaker.as_dict())

    async def js_runtime_info(self) -> dict[str, str | None] | None:
        """The runtime every call is given, with its version (asked once)."""
        runtime = self.js_runtime
        if runtime is None:
            return None
        if self._js_runtime_version is None:
            self._js_runtime_version = await asyncio.to_thread(runtime_version, runtime.path)
        return {"name": runtime.name, "path": runtime.path, "version": self._js_runtime_version}

    @property
    def cookies_source(self) -> str | None:
        """Where yt-dlp's cookies come from, never what they are."""
        sources = []
        if self._config.cookies_file.strip():
            sources.append("file")
        if self._browser_cookies is not None:
            sources.append(f"browser:{self._browser_cookies[0]}")
        return ", ".join(sources) or None

    def source_url_for(self, track_id: TrackId) -> str:
        # The template is the admin's and trusted; what goes into it is a checked
        # id, never text that could change the URL's host, path or query (TrackId
        # of a TrackId is itself: no second check; an unchecked str from an untyped
        # caller is checked here).
        return self._config.source_url_template.replace("{id}", TrackId(track_id))

    async def resolve(self, source_url: str, *, format_id: str | None = None,
                      avoid_clients: tuple[str, ...] = (),
                      kind: CallKind = CallKind.LISTENER,
                      try_while_paused: bool = True) -> StreamInfo:
        """A fresh stream URL for ``source_url``; with ``format_id``, for that
        format when it is still offered (a resume must fetch the same file),
        and with ``avoid_clients``, from player clients other than those
        (googlevideo ``c=`` names) whose URLs failed.

        ``kind``: a listener's call goes at once; a background one waits its
        turn in the hour's budget, and while YouTube refuses (``refusal``).
        ``try_while_paused``: a listener's one try while YouTube refuses;
        False (the same request, held, asking again): no yt-dlp call until
        the pause ends, a YoutubeRefused at once instead.
        """
        key = (source_url, format_id, avoid_clients)
        if kind is CallKind.BACKGROUND:
            return await self._flights.run(
                key, lambda: self._resolve_in_background(source_url, format_id, avoid_clients))
        with self.wanting(source_url) if kind is CallKind.LISTENER else contextlib.nullcontext():
            return await self._flights.run(
                key, lambda: self._resolve(source_url, format_id, avoid_clients, kind,
                                           try_while_paused))

    async def _resolve_in_background(self, source_url: str, format_id: str | None,
                                     avoid_clients: tuple[str, ...]) -> StreamInfo:
        """A background resolve: refused by YouTube, it waits out the pause in
        line and goes again (at most one call per pause), rather than failing."""
        while True:
            try:
                return await self._resolve(source_url, format_id, avoid_clients,
                                           CallKind.BACKGROUND)
            except YoutubeRefused:
                if self._wanted[source_url]:
                    raise  # a listener joined it: it is told, and holds its request

    @contextlib.contextmanager
    def wanting(self, source_url: str) -> Iterator[None]:
        """A listener waits for ``source_url``: a background call for it that
        is waiting in line goes now, as the listener's."""
        self._wanted[source_url] += 1
        self._wake()
        try:
            yield
        finally:
            self._wanted[source_url] -= 1
            if not self._wanted[source_url]:
                del self._wanted[source_url]

    def _wake(self) -> None:
        """Tell every waiting background call to look again."""
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def _nap(self, seconds: float | None) -> None:
        """Until ``_wake`` or ``seconds`` pass (None: until woken)."""
        pulse = self._pulse
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if seconds is None else max(seconds, 0.05)):
                await pulse.wait()

    def _refused_error(self) -> YoutubeRefused:
        state = self.refusal.state or "rate_limited"
        return YoutubeRefused(
            self.refusal.sentence or f"YouTube refuses this address ({state})", state=state,
            retry_after=max(1.0, self.refusal.left()), detail=self.refusal.detail)

    async def _take_turn(self, kind: CallKind, url: str, try_while_paused: bool) -> CallKind:
        """Wait for this call's turn (see ``resolve``); the kind it goes as (a
        background call a listener now waits for goes as the listener's)."""
        refusal = self.refusal
        if kind is CallKind.LISTING:
            if refusal.state is not None and not refusal.try_now():
                raise self._refused_error()
            delay = self.budget.take_listing()
            if delay > 0:
                refusal.release_trial()
                self.failures["listing_budget"] += 1
                raise ResolverUnavailable(
                    f"ytproxy has asked YouTube for {self.budget.listings_per_hour} listings "
                    f"in the last hour (resolver.max_listings_per_hour); the next may go "
                    f"at {clock_time(time.time() + delay)}", retry_after=delay)
            return kind
        if kind is CallKind.BACKGROUND and not self._wanted[url]:
            ticket = self.budget.join()
            task = asyncio.current_task()
            if task is not None:
                self._in_line.add(task)
            self._wake()
            try:
                kind = await self._wait_in_line(ticket, url)
            finally:
                self.budget.leave(ticket)
                if task is not None:
                    self._in_line.discard(task)
                self._wake()
            if kind is CallKind.BACKGROUND:
                return kind
        # A listener's call (or a background one a listener now waits for):
        # while YouTube refuses, one try per request, not one per retry.
        if refusal.paused():
            if not try_while_paused:
                raise self._refused_error()
        elif refusal.state is not None:
            refusal.try_now()  # the trial after a pause, if none runs: it goes anyway
        self.budget.take_listener()
        return CallKind.LISTENER

    async def _wait_in_line(self, ticket: Ticket, url: str) -> CallKind:
        refusal = self.refusal
        while True:
            if self._wanted[url]:
                return CallKind.LISTENER
            if refusal.paused():
                await self._nap(refusal.left())
                continue
            if self._background_running or (refusal.state is not None
                                             and refusal.trial_running):
                await self._nap(None)
                continue
            delay = self.budget.turn(ticket)
            if delay == 0.0:
                if refusal.state is not None:
                    refusal.try_now()  # the trial after a pause
                return CallKind.BACKGROUND
            await self._nap(delay)

    async def _admit(self, kind: CallKind) -> None:
        """Pass the breaker and the rate limit, or raise ResolverUnavailable (503).
        A background call waits (with no deadline) while listeners wait too."""
        try:
            self.breaker.check()
        except BreakerOpen as exc:
            self.failures["breaker_open"] += 1
            self.refusal.release_trial()
            raise _offline(ResolverUnavailable(
                f"yt-dlp failed {self.breaker.failures} times in a row "
                f"(last: {self.breaker.last_error}); not trying again for "
                f"{exc.retry_after:.0f} s. Check the network, or upgrade yt-dlp",
                retry_after=exc.retry_after,
            )) from None
        if kind is CallKind.BACKGROUND:
            while self._listeners_at_limiter:
                await self._nap(None)
            self.rate_limit_waiting += 1
            try:
                await self._limiter.acquire()
            finally:
                self.rate_limit_waiting -= 1
            return
        self.rate_limit_waiting += 1
        self._listeners_at_limiter += 1
        try:
            async with asyncio.timeout(self._config.rate_limit_wait):
                await self._limiter.acquire()
        except TimeoutError:
            self.breaker.release_trial()
            self.refusal.release_trial()
            self.failures["rate_limited"] += 1
            raise ResolverUnavailable(
                f"too many new tracks at once: yt-dlp calls are limited to "
                f"{self._config.max_calls_per_minute} per minute "
                "(resolver.max_calls_per_minute); try again shortly",
                retry_after=60.0 / self._config.max_calls_per_minute,
            ) from None
        finally:
            self.rate_limit_waiting -= 1
            self._listeners_at_limiter -= 1
            if not self._listeners_at_limiter:
                self._wake()

    async def _call_ytdlp(
        self, url: str, options: dict[str, Any], limit: float, what: str,
        avoid_clients: tuple[str, ...] = (), *, kind: CallKind = CallKind.LISTENER,
        try_while_paused: bool = True,
    ) -> dict[str, Any]:
        """One yt-dlp call: its turn (budget, refusal state), breaker, rate
        limit, worker process, deadline, classified errors."""
        kind = await self._take_turn(kind, url, try_while_paused)
        if kind is CallKind.BACKGROUND:
            self._background_running += 1
        try:
            return await self._run_call(url, options, limit, what, avoid_clients, kind)
        finally:
            if kind is CallKind.BACKGROUND:
                # The caller settles the outcome (a refusal) before it awaits
                # anything, so the next in line sees it when it wakes.
                self._background_running -= 1
                self._wake()

    async def _run_call(self, url: str, options: dict[str, Any], limit: float, what: str,
                        avoid_clients: tuple[str, ...], kind: CallKind) -> dict[str, Any]:
        await self._admit(kind)
        started = time.monotonic()
        try:
            call = asyncio.ensure_future(self._workers.extract(
                url, options, avoid_clients=avoid_clients, limit=limit))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
            info = await call
        except WorkerLost as exc:
            self.refusal.release_trial()
            self.failures["worker_lost"] += 1
            self.breaker.record_failure(str(exc), url)
            raise ResolverUnavailable(f"{exc}; the next call starts a new one") from None
        except CallTimedOut:
            # Its worker was killed: the next call gets a fresh one.
            self.refusal.release_trial()
            self.failures["timeout"] += 1
            self.breaker.record_failure("timeout", url)
            raise ResolverUnavailable(f"yt-dlp took longer than {limit:g} s {what}") from None
        except asyncio.CancelledError:
            self.breaker.release_trial()
            self.refusal.release_trial()
            raise
        finally:
            self.last_duration = time.monotonic() - started
            if self.on_duration is not None:
                self.on_duration(self.last_duration)
        if info is None:
            raise ResolverFailed(f"yt-dlp returned nothing for {url}")
        return info

    def _settle(self, exc: Exception, url: str) -> YtproxyError:
        """Classify a failure, count it, and tell the breaker (only transient
        ones count) and the refusal state (YouTube's refusals are its own)."""
        refusal = self.refusal
        error = classify_error(exc, url, until=time.time() + refusal.pause,
                               cookies=self.cookies_source is not None)
        self.failures[error.code] += 1
        if isinstance(error, YoutubeRefused):
            self.failures[error.state] += 1
            # Not the track's failure, nor yt-dlp's: the breaker hears nothing.
            self.breaker.release_trial()
            was = refusal.current()
            refusal.refused(error.state, str(error), error.detail)
            error.retry_after = refusal.left()
            if was != error.state:
                since = clock_time(refusal.since or time.time())
                until = clock_time(refusal.until or time.time())
                log.warning("resolver: YouTube refuses: %s since %s, %s: %s", error.state,
                            since, f"until {until}" if error.state == "rate_limited"
                            else f"until a call succeeds (next try at {until})", error)
            log.debug("resolver: %s: yt-dlp said: %s", url, error.detail)
            self._wake()
            return error
        if isinstance(error, ResolverUnavailable):
            # A network failure says the source is out of reach for every
            # track; anything else counts only beside other tracks' failures.
            lower = str(exc).lower()
            network = (isinstance(exc, ExtractFailed) and exc.network) or any(
                phrase in lower for phrase in _NETWORK_PHRASES)
            self.breaker.record_failure(str(error), None if network else url)
            self.refusal.release_trial()
            if network:
                _offline(error)
        else:
            self.breaker.record_success()  # the source answered: yt-dlp itself works
            self._answered()
        return error

    def _answered(self) -> None:
        """YouTube answered a call (with a video or a track's own error): a
        refusal state ends, and what waits for it goes on."""
        since = self.refusal.since
        ended = self.refusal.success()
        if ended is not None:
            log.warning("resolver: YouTube answers again after %s since %s; resuming",
                        ended, clock_time(since or time.time()))
        self._wake()

    def _options(self, **extra: Any) -> dict[str, Any]:
        """YoutubeDL parameters for one call: the person's ytdlp_options, then
        what ytproxy owns (config validation refuses those keys there)."""
        options: dict[str, Any] = {
            "socket_timeout": max(1.0, self._config.timeout / 2),
            # Player code and solved challenges, kept between calls and restarts.
            "cachedir": str(ytdlp_cache_dir()),
            **self._config.ytdlp_options,
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            **extra,
        }
        if self._proxy:
            options["proxy"] = self._proxy
        if self.js_runtime is not None:
            options["js_runtimes"] = self.js_runtime.ytdlp_option()
        cookies = self._config.resolved_cookies_file
        if cookies is not None:
            self._check_cookies_file(cookies)
            options["cookiefile"] = str(cookies)
        if self._browser_cookies is not None:
            options["cookiesfrombrowser"] = self._browser_cookies
        pot_url = self._config.pot_provider_url.strip().rstrip("/")
        if pot_url:
            options["extractor_args"] = with_extractor_arg(
                options.get("extractor_args"), POT_PROVIDER_ARGS, "base_url", pot_url)
        return options

    def _check_cookies_file(self, path: Path) -> None:
        """The cookies file is read by yt-dlp on every call: say now, clearly,
        when it cannot be, and (once) when others may read it."""
        try:
            mode = path.stat().st_mode
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ResolverFailed(
                f"cannot read resolver.cookies_file {path}: {exc.strerror or exc}; export "
                "the cookies again (Netscape format) or fix the path") from None
        if not stat.S_ISREG(mode):
            raise ResolverFailed(f"resolver.cookies_file {path} is not a file")
        if mode & 0o077 and (str(path), mode) not in self._warned_cookies:
            self._warned_cookies.add((str(path), mode))
            log.warning("resolver: the cookies file %s can be read by other users (mode %o); "
                        "it signs in as you: chmod 600 %s", path, stat.S_IMODE(mode), path)

    async def _resolve(self, source_url: str, format_id: str | None = None,
                       avoid_clients: tuple[str, ...] = (),
                       kind: CallKind = CallKind.LISTENER,
                       try_while_paused: bool = True) -> StreamInfo:
        wanted = plain_http_format(self._config.format)
        if format_id is not None:
            wanted = f"{plain_http_format(format_id)}/{wanted}"
        options = self._options(noplaylist=True, format=wanted)
        try:
            info = await self._call_ytdlp(source_url, options, self._config.timeout,
                                          f"for {source_url}", avoid_clients, kind=kind,
                                          try_while_paused=try_while_paused)
            if info.get("_type") == "playlist":
                entries = [e for e in info.get("entries") or [] if isinstance(e, dict)]
                if not entries:
                    raise ResolverFailed(f"{source_url} is an empty playlist, not a track")
                info = entries[0]
            result = stream_info_from(info, url_ttl=self._config.url_ttl, now=time.time())
            result = dataclasses.replace(result, avoid_clients=avoid_clients)
        except ResolverUnavailable:
            raise
        except Exception as exc:
            error = self._settle(exc, source_url)
            if not isinstance(error, YoutubeRefused):  # said once, by _settle
                log.warning("resolver: %s: %s", source_url, error)
                if error.detail:
                    log.debug("resolver: %s: yt-dlp said: %s", source_url, error.detail)
            raise error from exc
        self.breaker.record_success()
        self._answered()
        self.last_client = result.client
        log.info("resolver: %s resolved in %.2f s -> %s (format %s, client %s%s)", source_url,
                 self.last_duration, strip_query(result.url), result.format_id or "?",
                 result.client or "?",
                 f", not {', '.join(avoid_clients)}" if avoid_clients else "")
        return result

    async def list_playlist(self, url: str) -> tuple[str | None, list[PlaylistEntry]]:
        """A playlist's title and entries, listed flat: no entry is resolved.

        One yt-dlp call through the same breaker, rate limit and pool as
        ``resolve``; entries are resolved later, one by one, when first played.
        Failures are logged at WARNING (an import or a sync is the daemon's own).
        """
        try:
            info = await self._list_flat(url, what=f"the playlist at {url}", limit=None,
                                         failed="cannot read")
            return playlist_entries_from(info, url)
        except ResolverUnavailable:
            raise
        except YtproxyError as error:
            if not isinstance(error, YoutubeRefused):
                log.warning("resolver: playlist %s: %s", url, error)
                if error.detail:
                    log.debug("resolver: playlist %s: yt-dlp said: %s", url, error.detail)
            raise

    async def listing(self, url: str, *, what: str, limit: int | None = None
                      ) -> dict[str, Any]:
        """yt-dlp's flat info dict for a listing (a search, a mix): one call
        through the same breaker, rate limit and pool as ``resolve``, no entry
        resolved; with ``limit``, yt-dlp stops after that many entries
        (``playlistend``: a search pages on for as long as it is read).

        ``what`` names the listing in errors ("the search for 'x'").  Failures
        are logged at INFO only: the caller says what they mean (a CLI line,
        autoplay's one WARNING)."""
        try:
            return await self._list_flat(url, what=what, limit=limit, failed="cannot list")
        except YtproxyError as error:
            log.info("resolver: %s (%s): %s", what, url, error)
            if error.detail:
                log.debug("resolver: %s: yt-dlp said: %s", what, error.detail)
            raise

    async def _list_flat(self, url: str, *, what: str, limit: int | None, failed: str
                         ) -> dict[str, Any]:
        """One flat yt-dlp listing (counted in the hour's listings budget); a
        failure settled into the error a caller raises (``failed``: its first words
        when the page is gone)."""
        extra: dict[str, Any] = {"extract_flat": "in_playlist"}
        if limit is not None:
            extra["playlistend"] = limit
        options = self._options(**extra)
        call_limit = self._config.timeout * _PLAYLIST_TIMEOUT_FACTOR
        try:
            # Counted apart, in the hour's listings (resolver.max_listings_per_hour).
            info = await self._call_ytdlp(url, options, call_limit, f"to list {what}",
                                          kind=CallKind.LISTING)
        except ResolverUnavailable:
            raise
        except Exception as exc:
            error = self._settle(exc, url)
            if isinstance(error, TrackGone):
                # A listing page that is gone is not a track that is gone.
                status = _HTTP_STATUS_RE.search(str(exc))
                error = ResolverFailed(
                    f"{failed} {what}: the source says it is gone or private"
                    f"{f' (HTTP {status.group(1)})' if status else ''}", detail=error.detail)
            raise error from exc
        self.breaker.record_success()
        self._answered()
        entries = info.get("entries")
        log.info("resolver: listed %s: %d entries in %.2f s", what,
                 len(entries) if isinstance(entries, list) else 0, self.last_duration)
        return info

    async def close(self) -> None:
        """End this resolver's calls in flight (their workers are killed: a stop
        does not wait for yt-dlp); idle workers are shared, and exit when idle."""
        calls: list[asyncio.Future[Any]] = [*self._calls, *self._in_line]
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)
