"""Typed configuration: defaults, TOML loading, env look-up and validation.

Every key is optional; with no file at all the defaults run.  Errors are
collected and reported together, each naming the key and the file, so a
person fixes their config in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ytproxy.loops import EVENT_LOOPS
from ytproxy.redact import SECRET_KEYS, redact_config
from ytproxy.resolve.ytdlp_options import ytdlp_problems

__all__ = [
    "DEFAULT_CALLS_PER_HOUR",
    "MAX_CHUNK_SIZE",
    "MAX_CONFIG_BYTES",
    "BreakerConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "IcyConfig",
    "LibraryConfig",
    "LimitsConfig",
    "MpdConfig",
    "ResolverConfig",
    "RetryConfig",
    "ServerConfig",
    "StoreConfig",
    "UpstreamConfig",
    "config_values",
    "find_config_file",
    "load_config",
    "parse_interval",
    "parse_size",
    "render_config",
]


class _Problems:
    """One section's problems as its ``problems()`` finds them: (``section.key``,
    a sentence naming the key); the loader adds where the key was set."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.found: list[tuple[str, str]] = []

    def need(self, ok: bool, key: str, what: str, value: object) -> None:
        if not ok:
            name = f"{self.section}.{key}"
            self.found.append((name, f"{name} {what}, got {value!r}"))

    def add(self, key: str, message: str) -> None:
        self.found.append((f"{self.section}.{key}", message))


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TOKEN_MIN_LENGTH = 16
# RFC 6750's b64token: what may follow "Authorization: Bearer ".
_TOKEN_RE = re.compile(rf"[A-Za-z0-9\-._~+/]{{{_TOKEN_MIN_LENGTH},}}=*")
# A DNS name (a trailing dot allowed): what server.allowed_hosts lists, besides IP literals.
_DNS_NAME_RE = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


def _is_host_name(value: str) -> bool:
    """A bare host name or IP literal ("[::1]" too), as a Host header names it without port."""
    if _DNS_NAME_RE.fullmatch(value) is not None and len(value) <= 253:
        return True
    try:
        ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 6602
    log_level: str = "info"
    access_log: bool = False
    shutdown_timeout: float = 5.0
    # "auto" (uvloop where it is installed, else asyncio's loop), "uvloop" or "asyncio".
    event_loop: str = "auto"
    # Bearer token that write requests (POST/DELETE /tracks) must carry; empty: none.
    token: str = ""
    # Serve on a non-loopback host without a token (anyone who can reach it may write).
    allow_unauthenticated: bool = False
    # Host names (or IP literals) accepted in a request's Host and Origin besides
    # the listen address and localhost (ytproxy.http.origin): a reverse proxy's
    # name, or the name LAN players use for a daemon bound to 0.0.0.0.
    allowed_hosts: tuple[str, ...] = ()

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("server")
        p.need(1 <= self.port <= 65535, "port", "must be between 1 and 65535", self.port)
        p.need(bool(self.host.strip()), "host", "must not be empty", self.host)
        p.need(self.log_level.lower() in _LOG_LEVELS, "log_level",
               f"must be one of {', '.join(_LOG_LEVELS)}", self.log_level)
        p.need(self.event_loop.lower() in EVENT_LOOPS, "event_loop",
               f"must be one of {', '.join(EVENT_LOOPS)}", self.event_loop)
        p.need(self.shutdown_timeout >= 0, "shutdown_timeout", "must be >= 0 seconds",
               self.shutdown_timeout)
        for name in self.allowed_hosts:
            p.need(_is_host_name(name), "allowed_hosts",
                   "must list bare host names or IP literals (no scheme, port, path or "
                   f"wildcard), such as \"music.example\" or \"192.168.1.5\"; {name!r} is not "
                   "one", list(self.allowed_hosts))
        if self.token and not _TOKEN_RE.fullmatch(self.token):
            # Never echo the value: it is a secret, and this message is printed.
            p.add("token", f"server.token must be at least {_TOKEN_MIN_LENGTH} characters of "
                  "A-Z a-z 0-9 - . _ ~ + / (a bearer token), e.g. from: python3 -c "
                  "'import secrets; print(secrets.token_urlsafe(32))'")
        return p.found


@dataclass(frozen=True)
class StoreConfig:
    path: str = "~/.local/share/ytproxy/tracks.db"
    busy_timeout: float = 5.0

    @property
    def resolved_path(self) -> Path:
        return Path(os.path.expandvars(self.path)).expanduser()

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("store")
        p.need(bool(self.path.strip()), "path", "must not be empty", self.path)
        p.need(0 <= self.busy_timeout <= 600, "busy_timeout",
               "must be between 0 and 600 seconds", self.busy_timeout)
        return p.found


@dataclass(frozen=True)
class ResolverConfig:
    source_url_template: str = "https://www.youtube.com/watch?v={id}"
    # What yt-dlp lists for `ytproxy search` ({query}: the URL-encoded query) and
    # for a track's mix (`ytproxy radio`, [mpd] autoplay; {id}: the track's id).
    search_url_template: str = "https://music.youtube.com/search?q={query}#songs"
    radio_url_template: str = "https://music.youtube.com/watch?v={id}&list=RDAMVM{id}"
    workers: int = 2
    format: str = "bestaudio[acodec=opus]/bestaudio/best"
    timeout: float = 30.0
    url_ttl: float = 3600.0
    expiry_margin: float = 300.0
    max_calls_per_minute: int = 30
    rate_limit_wait: float = 30.0
    # yt-dlp calls that resolve a video, per sliding hour (see
    # ytproxy.resolve.budget): listeners' always go, background work takes
    # what is left.  Not set: 200, or 1000 with cookies (DEFAULT_CALLS_PER_HOUR).
    max_calls_per_hour: int = 200
    # Listings (a search, a mix, a playlist), counted apart, per sliding hour.
    max_listings_per_hour: int = 30
    # Seconds ytproxy leaves YouTube alone after it says "rate-limited"
    # (YouTube's own figure: up to an hour); a bot check is retried as often.
    rate_limit_pause: float = 3600.0
    # Let add/import read pages on loopback, link-local and private addresses.
    allow_private_sources: bool = False
    # The JavaScript runtime yt-dlp is given: "auto", a name (deno, node, bun,
    # quickjs) or a path to one (see ytproxy.resolve.jsruntime).
    js_runtime: str = "auto"
    # A Netscape cookies file, read by yt-dlp on every call; and/or a browser to
    # take cookies from (yt-dlp's cookiesfrombrowser: BROWSER[+KEYRING][:PROFILE][::CONTAINER]).
    cookies_file: str = ""
    cookies_from_browser: str = ""
    # Seconds a first request may wait for a format's available_at.
    max_available_wait: float = 30.0
    # A PO-token provider server (bgutil-ytdlp-pot-provider's, `pip install
    # 'ytproxy[pot]'`), handed to its yt-dlp plugin as base_url; empty: none.
    pot_provider_url: str = ""
    # Merged into yt-dlp's YoutubeDL parameters (extractor_args, ...).
    ytdlp_options: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_cookies_file(self) -> Path | None:
        if not self.cookies_file.strip():
            return None
        return Path(os.path.expandvars(self.cookies_file)).expanduser()

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("resolver")
        p.need("{id}" in self.source_url_template, "source_url_template",
               "must contain the {id} placeholder", self.source_url_template)
        p.need("{query}" in self.search_url_template, "search_url_template",
               "must contain the {query} placeholder", self.search_url_template)
        p.need("{id}" in self.radio_url_template, "radio_url_template",
               "must contain the {id} placeholder", self.radio_url_template)
        p.need(1 <= self.workers <= 64, "workers", "must be between 1 and 64", self.workers)
        p.need(bool(self.format.strip()), "format", "must not be empty", self.format)
        p.need(self.timeout > 0, "timeout", "must be > 0 seconds", self.timeout)
        p.need(self.url_ttl > 0, "url_ttl", "must be > 0 seconds", self.url_ttl)
        p.need(self.expiry_margin >= 0, "expiry_margin", "must be >= 0 seconds",
               self.expiry_margin)
        p.need(1 <= self.max_calls_per_minute <= 6000, "max_calls_per_minute",
               "must be between 1 and 6000", self.max_calls_per_minute)
        p.need(self.js_runtime.strip() != "", "js_runtime",
               'must be "auto", a runtime (deno, node, bun, quickjs) or a path', self.js_runtime)
        p.need(0 <= self.max_available_wait <= 600, "max_available_wait",
               "must be between 0 and 600 seconds", self.max_available_wait)
        # What is handed to yt-dlp is yt-dlp's business (ytproxy.resolve.ytdlp_options).
        for key, message in ytdlp_problems(cookies_from_browser=self.cookies_from_browser,
                                           ytdlp_options=self.ytdlp_options,
                                           pot_provider_url=self.pot_provider_url):
            p.add(key, message)
        p.need(self.rate_limit_wait >= 0, "rate_limit_wait", "must be >= 0 seconds",
               self.rate_limit_wait)
        p.need(1 <= self.max_calls_per_hour <= 100_000, "max_calls_per_hour",
               "must be between 1 and 100000", self.max_calls_per_hour)
        p.need(1 <= self.max_listings_per_hour <= 10_000, "max_listings_per_hour",
               "must be between 1 and 10000", self.max_listings_per_hour)
        p.need(0 < self.rate_limit_pause <= 86_400, "rate_limit_pause",
               "must be > 0 and at most 86400 seconds", self.rate_limit_pause)
        return p.found


@dataclass(frozen=True)
class UpstreamConfig:
    chunk_size: int = 1_048_576
    allowed_hosts: tuple[str, ...] = ("*.googlevideo.com", "*.youtube.com")
    connect_timeout: float = 10.0
    read_timeout: float = 10.0
    range_timeout: float = 60.0
    proxy: str = ""

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("upstream")
        p.need(4096 <= self.chunk_size <= MAX_CHUNK_SIZE, "chunk_size",
               f"must be between 4096 and {MAX_CHUNK_SIZE} bytes (10 MiB): googlevideo "
               "throttles larger ranges to a crawl", self.chunk_size)
        p.need(bool(self.allowed_hosts), "allowed_hosts", "must list at least one host",
               list(self.allowed_hosts))
        p.need(all(h.strip() for h in self.allowed_hosts), "allowed_hosts",
               "must not contain empty host names", list(self.allowed_hosts))
        p.need(self.connect_timeout > 0, "connect_timeout", "must be > 0 seconds",
               self.connect_timeout)
        p.need(self.read_timeout > 0, "read_timeout", "must be > 0 seconds", self.read_timeout)
        p.need(self.range_timeout > 0, "range_timeout", "must be > 0 seconds",
               self.range_timeout)
        p.need(not self.proxy or self.proxy.startswith(("http://", "https://")), "proxy",
               "must be an http:// or https:// URL, or empty to use HTTP(S)_PROXY", self.proxy)
        return p.found


@dataclass(frozen=True)
class LimitsConfig:
    max_streams: int = 10
    # Open client connections, in all and from one address; more are answered
    # 503 and closed at once (see ytproxy.http.listener).
    max_connections: int = 256
    max_connections_per_client: int = 32
    # Seconds a connection may take to send a complete request head (or a
    # POST body), or stay idle between requests; never cuts a response.
    idle_timeout: float = 30.0

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("limits")
        p.need(1 <= self.max_streams <= 10_000, "max_streams", "must be between 1 and 10000",
               self.max_streams)
        p.need(self.max_streams <= self.max_connections <= 100_000, "max_connections",
               "must be between limits.max_streams and 100000", self.max_connections)
        p.need(1 <= self.max_connections_per_client <= self.max_connections,
               "max_connections_per_client", "must be between 1 and limits.max_connections",
               self.max_connections_per_client)
        p.need(0 < self.idle_timeout <= 3600, "idle_timeout",
               "must be > 0 and at most 3600 seconds", self.idle_timeout)
        return p.found


@dataclass(frozen=True)
class IcyConfig:
    inline_metadata: bool = False
    metaint: int = 16000

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("icy")
        p.need(1 <= self.metaint <= 65536, "metaint", "must be between 1 and 65536",
               self.metaint)
        return p.found


@dataclass(frozen=True)
class RetryConfig:
    """How upstream failures are retried; a *gap* is a stretch with no bytes received."""

    attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 8.0
    gap_budget: float = 30.0
    retry_after_cap: float = 15.0
    # Seconds a request (or a playing stream) is held while the network or a
    # dependency is down, before it is given up; one track's own failures
    # keep gap_budget.
    hold_budget: float = 120.0

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("retry")
        p.need(0 <= self.attempts <= 100, "attempts", "must be between 0 and 100",
               self.attempts)
        p.need(self.base_delay >= 0, "base_delay", "must be >= 0 seconds", self.base_delay)
        p.need(self.max_delay >= self.base_delay, "max_delay", "must be >= retry.base_delay",
               self.max_delay)
        p.need(self.gap_budget > 0, "gap_budget", "must be > 0 seconds", self.gap_budget)
        p.need(self.gap_budget <= self.hold_budget <= 3600, "hold_budget",
               "must be between retry.gap_budget and 3600 seconds", self.hold_budget)
        p.need(self.retry_after_cap >= 0, "retry_after_cap", "must be >= 0 seconds",
               self.retry_after_cap)
        return p.found


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit breakers on the resolver and on each upstream host."""

    failures: int = 5
    # Held requests probe at this pace (see Holds): short, since a probe costs
    # one request and a listener waits for it.
    reset_after: float = 10.0

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("breaker")
        p.need(1 <= self.failures <= 1000, "failures", "must be between 1 and 1000",
               self.failures)
        p.need(self.reset_after > 0, "reset_after", "must be > 0 seconds", self.reset_after)
        return p.found


@dataclass(frozen=True)
class MpdConfig:
    """Where MPD is: followed for look-ahead, checked by `ytproxy doctor`, and
    where playlists are written for `mpc load`.  An empty host: MPD_HOST and
    MPD_PORT as mpc reads them, else no MPD."""

    host: str = ""
    port: int = 6600
    password: str = ""
    # How many of the songs MPD plays next are downloaded ahead (0: none).
    lookahead: int = 2
    playlist_directory: str = ""
    # When MPD plays the last song of its queue (repeat off), append
    # autoplay_songs songs of that song's mix, none of the last
    # autoplay_history songs played nor any already queued.
    autoplay: bool = False
    autoplay_songs: int = 5
    autoplay_history: int = 100

    @property
    def resolved_playlist_directory(self) -> Path | None:
        if not self.playlist_directory:
            return None
        return Path(os.path.expandvars(self.playlist_directory)).expanduser()

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("mpd")
        p.need(1 <= self.port <= 65535, "port", "must be between 1 and 65535", self.port)
        p.need(0 <= self.lookahead <= 20, "lookahead", "must be between 0 and 20 songs",
               self.lookahead)
        p.need(1 <= self.autoplay_songs <= 50, "autoplay_songs",
               "must be between 1 and 50 songs", self.autoplay_songs)
        p.need(0 <= self.autoplay_history <= 10_000, "autoplay_history",
               "must be between 0 and 10000 songs", self.autoplay_history)
        return p.found


DEFAULT_CACHE_SIZE = 2 * 1024**3


@dataclass(frozen=True)
class CacheConfig:
    """The download-ahead disk cache (ytproxy.cache)."""

    # Empty: $XDG_CACHE_HOME/ytproxy/audio (~/.cache/ytproxy/audio).
    directory: str = ""
    # Bytes, or a string with a unit ("2 GiB", "500 MB"); 0 turns the cache off.
    max_size: int = DEFAULT_CACHE_SIZE

    @property
    def enabled(self) -> bool:
        return self.max_size > 0

    @property
    def resolved_directory(self) -> Path:
        if self.directory.strip():
            return Path(os.path.expandvars(self.directory)).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or ""
        root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
        return root / "ytproxy" / "audio"

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("cache")
        p.need(self.max_size >= 0, "max_size", "must be >= 0 bytes (0: no cache)",
               self.max_size)
        return p.found


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
# Keys whose value is a number of bytes: an integer, or a string with a unit.
SIZE_KEYS = frozenset({"max_size"})


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string such as ``"2 GiB"``; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    match = _SIZE_RE.fullmatch(value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class LibraryConfig:
    """Playlists kept in the store (ytproxy.library)."""

    # How often a playlist imported with `--sync` (and no EVERY) follows its
    # source: "6h", "30m", "90s", "1h30m".
    sync_every: str = "6h"

    @property
    def sync_every_seconds(self) -> float:
        seconds = parse_interval(self.sync_every)
        assert seconds is not None  # load_config refuses another value
        return seconds

    def problems(self) -> list[tuple[str, str]]:
        p = _Problems("library")
        p.need(parse_interval(self.sync_every) is not None, "sync_every",
               'must be a time such as "6h", "30m", "90s" or "1h30m" (1 s to 365 days)',
               self.sync_every)
        return p.found


_INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL_RE = re.compile(r"(?:\d+[smhd])+")
_INTERVAL_PART = re.compile(r"(\d+)([smhd])")
MIN_INTERVAL = 1.0
MAX_INTERVAL = 365 * 86400.0


def parse_interval(value: str) -> float | None:
    """Seconds from ``"6h"``, ``"30m"``, ``"90s"``, ``"2d"`` or ``"1h30m"``; None if it
    is none of those or outside 1 s .. 365 days."""
    text = value.strip().lower()
    if len(text) > 40 or _INTERVAL_RE.fullmatch(text) is None:
        return None
    seconds = float(sum(int(n) * _INTERVAL_UNITS[u] for n, u in _INTERVAL_PART.findall(text)))
    return seconds if MIN_INTERVAL <= seconds <= MAX_INTERVAL else None


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    icy: IcyConfig = field(default_factory=IcyConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    mpd: MpdConfig = field(default_factory=MpdConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    source: str | None = None  # the file it came from; None = defaults only

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (used by tests and the CLI)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


class ConfigError(Exception):
    """One or more problems in a configuration file; ``errors`` lists them all."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "resolver": ResolverConfig,
    "upstream": UpstreamConfig,
    "limits": LimitsConfig,
    "icy": IcyConfig,
    "retry": RetryConfig,
    "breaker": BreakerConfig,
    "mpd": MpdConfig,
    "cache": CacheConfig,
    "library": LibraryConfig,
}

# A config file longer than this is not one (see _read_config_text).
MAX_CONFIG_BYTES = 1_048_576
# googlevideo throttles ranges above ~10 MB; yt-dlp itself asks for 10 MiB.
MAX_CHUNK_SIZE = 10 * 1_048_576
# resolver.max_calls_per_hour when it is not set: (without cookies, with them).
# YouTube allows a guest roughly 300 videos an hour and an account about
# 2,000 (FACTS.md); both defaults stay far below, since the refusal lasts an
# hour and an account used with yt-dlp can be banned.
DEFAULT_CALLS_PER_HOUR = (200, 1000)


def find_config_file(explicit: str | None = None) -> Path | None:
    """``--config PATH``, then ``$YTPROXY_CONFIG``, then the XDG file, else None."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("YTPROXY_CONFIG")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidate = Path(xdg) / "ytproxy" / "config.toml"
    return candidate if candidate.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    """Find, read and validate the configuration; raises ConfigError with every problem."""
    path = find_config_file(explicit)
    origins: dict[str, str] = {}
    if path is None:
        return config_from_mapping(_env_overrides({}, origins), source="built-in defaults",
                                   origins=origins)
    try:
        raw = tomllib.loads(_read_config_text(path))
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return config_from_mapping(_env_overrides(raw, origins), source=str(path), origins=origins)


def _read_config_text(path: Path) -> str:
    """The file's text: at most MAX_CONFIG_BYTES (a config is a few KiB; a path
    such as /dev/zero would otherwise be read until memory runs out), UTF-8 as
    TOML requires; ConfigError naming the first byte that is not."""
    with path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // 1_048_576} MiB; not a "
                           "config file (is --config or $YTPROXY_CONFIG the right path?)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        # What comes before the bad byte is UTF-8: its column in characters.
        column = len(data[line_start:exc.start].decode("utf-8")) + 1
        raise ConfigError([
            f"{path}: not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}, column {column}) cannot be decoded; a TOML file must be UTF-8, "
            "so save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"]) from None


def _env_overrides(raw: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """``YTPROXY_<SECTION>_<KEY>=value`` overrides the file; values are read as TOML.

    ``origins`` gets ``section.key`` (and ``section``) → ``$NAME`` so that an error
    names the variable it came from, not a file that does not contain it.
    """
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for name, text in os.environ.items():
        if not name.startswith("YTPROXY_") or name == "YTPROXY_CONFIG":
            continue
        section, _, key = name[len("YTPROXY_"):].lower().partition("_")
        if not key:
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: take it as a string
        if section not in merged:
            origins.setdefault(section, f"${name}")
        table = merged.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value
            origins[f"{section}.{key}"] = f"${name}"
    return merged


def config_from_mapping(
    raw: Mapping[str, Any], *, source: str = "<config>", origins: Mapping[str, str] = {}
) -> Config:
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            errors.append(f"{origins.get(name, source)}: unknown section "
                          f"[{name}]{_did_you_mean(name, _SECTIONS)}")
            continue
        if not isinstance(value, dict):
            errors.append(f"{source}: [{name}] must be a table, got {_type_name(value)}")
            continue
        sections[name] = _build_section(name, _SECTIONS[name], value, source, errors, origins)
    limits = sections.get("limits")
    given = raw.get("limits")
    if isinstance(limits, LimitsConfig) and isinstance(given, Mapping):
        sections["limits"] = _derived_limits(limits, given)
    resolver = sections.get("resolver")
    given = raw.get("resolver")
    if isinstance(resolver, ResolverConfig) and (
            not isinstance(given, Mapping) or "max_calls_per_hour" not in given):
        sections["resolver"] = _derived_budget(resolver)
    config = Config(**{k: v for k, v in sections.items() if v is not None}, source=source)
    errors.extend(_check_values(config, source, origins))
    if errors:
        raise ConfigError(errors)
    return config


def _build_section(
    name: str, cls: type[Any], table: Mapping[str, Any], source: str, errors: list[str],
    origins: Mapping[str, str],
) -> Any:
    known = {f.name: f for f in fields(cls)}
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = origins.get(f"{name}.{key}", source)
        if key not in known:
            errors.append(f"{where}: unknown key {name}.{key}{_did_you_mean(key, known)}")
            continue
        expected = type(getattr(defaults, key))
        converted = parse_size(value) if key in SIZE_KEYS else _convert(value, expected)
        if converted is None:
            shown = "" if key in SECRET_KEYS else f" {value!r}"  # never print a secret
            wanted = ('a number of bytes or a size such as "2 GiB"' if key in SIZE_KEYS
                      else _expected_name(expected))
            errors.append(
                f"{where}: {name}.{key} must be {wanted}, "
                f"got {_type_name(value)}{shown}"
            )
            continue
        values[key] = converted
    return cls(**values)


def _convert(value: Any, expected: type[Any]) -> Any:
    if expected is bool:
        return value if isinstance(value, bool) else None
    if expected is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if expected is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if expected is str:
        return value if isinstance(value, str) else None
    if expected is dict:
        return value if isinstance(value, dict) else None
    if expected is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return None
    return None


def _derived_limits(limits: LimitsConfig, given: Mapping[str, Any]) -> LimitsConfig:
    """Connection limits not set follow ``max_streams``: raising it alone
    must not make the config invalid.  Set, they are the person's to get right
    (a contradiction is an error naming both keys)."""
    if "max_connections" not in given:
        # Room for every stream and as many other connections.
        limits = dataclasses.replace(limits, max_connections=min(
            100_000, max(LimitsConfig.max_connections, 2 * limits.max_streams)))
    if "max_connections_per_client" not in given:
        # One address may hold every stream (many players behind one NAT, or
        # one machine), plus a connection for a moment on each seek.
        limits = dataclasses.replace(limits, max_connections_per_client=min(
            limits.max_connections,
            max(LimitsConfig.max_connections_per_client, limits.max_streams + 16)))
    return limits


def _derived_budget(resolver: ResolverConfig) -> ResolverConfig:
    """max_calls_per_hour not set: the higher default when yt-dlp signs in."""
    signed_in = bool(resolver.cookies_file.strip() or resolver.cookies_from_browser.strip())
    return dataclasses.replace(resolver,
                               max_calls_per_hour=DEFAULT_CALLS_PER_HOUR[signed_in])


def _check_values(config: Config, source: str, origins: Mapping[str, str]) -> list[str]:
    """Every section's problems, each with the file (or variable) its key came from."""
    sections = (config.server, config.store, config.resolver, config.upstream, config.limits,
                config.icy, config.retry, config.mpd, config.cache, config.library,
                config.breaker)
    return [f"{origins.get(key, source)}: {message}"
            for section in sections for key, message in section.problems()]


def _did_you_mean(word: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _expected_name(expected: type[Any]) -> str:
    return {bool: "true or false", int: "an integer", float: "a number of seconds",
            str: "a string", tuple: "an array of strings", dict: "a table"}[expected]


def config_values(config: Config) -> dict[str, dict[str, Any]]:
    """Every section's keys and values, as loaded (secrets included: show it only
    through ``ytproxy.redact.redact_config``)."""
    return {name: {f.name: getattr(getattr(config, name), f.name)
                   for f in fields(getattr(config, name))} for name in _SECTIONS}


def render_config(config: Config) -> str:
    """The effective configuration as TOML, every key shown, secrets masked
    (``redact_config``: the same masking as /status's)."""
    lines = [f"# effective configuration (from {config.source or 'built-in defaults'})"]
    for name, values in redact_config(config_values(config)).items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
