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
from typing import Any, cast

from ytproxy.loops import EVENT_LOOPS
from ytproxy.redact import SECRET_KEYS, redact_config
from ytproxy.ytdlp_options import ytdlp_problems

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


# googlevideo throttles ranges above ~10 MB; yt-dlp itself asks for 10 MiB.
MAX_CHUNK_SIZE = 10 * 1_048_576


@dataclass(frozen=True)
class _Rule:
    """What one key's value must be, said as its error says it: a number within
    ``low``..``high`` (``above``: strictly more than), ``unit`` and ``note``
    after the numbers; a string that is ``filled`` (not blank), that contains
    ``placeholder``, or that is one of ``choices`` (any case).  ``say``
    replaces the sentence."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    unit: str = ""
    note: str = ""
    filled: bool = False
    placeholder: str = ""
    choices: tuple[str, ...] = ()
    say: str = ""

    def allows(self, value: Any) -> bool:
        if isinstance(value, str):
            return ((not self.filled or bool(value.strip()))
                    and self.placeholder in value
                    and (not self.choices or value.lower() in self.choices))
        return ((self.low is None or value >= self.low)
                and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above))

    def sentence(self) -> str:
        if self.say:
            return self.say
        if self.filled:
            return "must not be empty"
        if self.placeholder:
            return f"must contain the {self.placeholder} placeholder"
        if self.choices:
            return f"must be one of {', '.join(self.choices)}"
        n = _number_text
        if self.low is not None and self.high is not None:
            bounds = f"between {n(self.low)} and {n(self.high)}"
        elif self.above is not None:
            bounds = f"> {n(self.above)}" + (
                f" and at most {n(self.high)}" if self.high is not None else "")
        else:
            bounds = f">= {n(self.low)}"
        return f"must be {bounds}{self.unit}{self.note}"


def _number_text(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


def _ruled(default: Any, **rule: Any) -> Any:
    """A key's default, with the rule (``_Rule``) its value is checked by."""
    return field(default=default, metadata={"rule": _Rule(**rule)})


def _seconds(default: float, **rule: Any) -> Any:
    return _ruled(default, unit=" seconds", **rule)


class _Problems:
    """One section's problems as its checks find them: (``section.key``, a
    sentence naming the key); the loader adds where the key was set."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.found: list[tuple[str, str]] = []

    def need(self, ok: bool, key: str, what: str, value: object) -> None:
        if not ok:
            name = f"{self.section}.{key}"
            self.found.append((name, f"{name} {what}, got {value!r}"))

    def add(self, key: str, message: str) -> None:
        self.found.append((f"{self.section}.{key}", message))


class _Section:
    """What every section does: ``problems(name)`` checks each key by the rule
    declared with it (``_ruled``), then what the section's ``more_problems``
    checks (keys that depend on each other, lists, secrets)."""

    def problems(self, name: str) -> list[tuple[str, str]]:
        found = _Problems(name)
        for f in fields(cast(Any, self)):
            rule = f.metadata.get("rule")
            value = getattr(self, f.name)
            if isinstance(rule, _Rule) and not rule.allows(value):
                found.need(False, f.name, rule.sentence(), value)
        self.more_problems(found)
        return found.found

    def more_problems(self, found: _Problems) -> None:
        """Checks beyond one key's rule (none unless a section has some)."""


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
class ServerConfig(_Section):
    host: str = _ruled("127.0.0.1", filled=True)
    port: int = _ruled(6602, low=1, high=65535)
    log_level: str = _ruled("info", choices=_LOG_LEVELS)
    access_log: bool = False
    shutdown_timeout: float = _seconds(5.0, low=0)
    # "auto" (uvloop where it is installed, else asyncio's loop), "uvloop" or "asyncio".
    event_loop: str = _ruled("auto", choices=EVENT_LOOPS)
    # Bearer token that write requests (POST/DELETE /tracks) must carry; empty: none.
    token: str = ""
    # Serve on a non-loopback host without a token (anyone who can reach it may write).
    allow_unauthenticated: bool = False
    # Host names (or IP literals) accepted in a request's Host and Origin besides
    # the listen address and localhost (ytproxy.http.origin): a reverse proxy's
    # name, or the name LAN players use for a daemon bound to 0.0.0.0.
    allowed_hosts: tuple[str, ...] = ()

    def more_problems(self, found: _Problems) -> None:
        for name in self.allowed_hosts:
            found.need(_is_host_name(name), "allowed_hosts",
                       "must list bare host names or IP literals (no scheme, port, path or "
                       f"wildcard), such as \"music.example\" or \"192.168.1.5\"; {name!r} is "
                       "not one", list(self.allowed_hosts))
        if self.token and not _TOKEN_RE.fullmatch(self.token):
            # Never echo the value: it is a secret, and this message is printed.
            found.add("token", f"server.token must be at least {_TOKEN_MIN_LENGTH} characters "
                      "of A-Z a-z 0-9 - . _ ~ + / (a bearer token), e.g. from: python3 -c "
                      "'import secrets; print(secrets.token_urlsafe(32))'")


@dataclass(frozen=True)
class StoreConfig(_Section):
    path: str = _ruled("~/.local/share/ytproxy/tracks.db", filled=True)
    busy_timeout: float = _seconds(5.0, low=0, high=600)

    @property
    def resolved_path(self) -> Path:
        return Path(os.path.expandvars(self.path)).expanduser()


@dataclass(frozen=True)
class ResolverConfig(_Section):
    source_url_template: str = _ruled("https://www.youtube.com/watch?v={id}", placeholder="{id}")
    # What yt-dlp lists for `ytproxy search` ({query}: the URL-encoded query) and
    # for a track's mix (`ytproxy radio`, [mpd] autoplay; {id}: the track's id).
    search_url_template: str = _ruled("https://music.youtube.com/search?q={query}#songs",
                                      placeholder="{query}")
    radio_url_template: str = _ruled("https://music.youtube.com/watch?v={id}&list=RDAMVM{id}",
                                     placeholder="{id}")
    workers: int = _ruled(2, low=1, high=64)
    format: str = _ruled("bestaudio[acodec=opus]/bestaudio/best", filled=True)
    timeout: float = _seconds(30.0, above=0)
    url_ttl: float = _seconds(3600.0, above=0)
    expiry_margin: float = _seconds(300.0, low=0)
    max_calls_per_minute: int = _ruled(30, low=1, high=6000)
    rate_limit_wait: float = _seconds(30.0, low=0)
    # yt-dlp calls that resolve a video, per sliding hour (see
    # ytproxy.resolve.budget): listeners' always go, background work takes
    # what is left.  Not set: 200, or 1000 with cookies (DEFAULT_CALLS_PER_HOUR).
    max_calls_per_hour: int = _ruled(200, low=1, high=100_000)
    # Listings (a search, a mix, a playlist), counted apart, per sliding hour.
    max_listings_per_hour: int = _ruled(30, low=1, high=10_000)
    # Seconds ytproxy leaves YouTube alone after it says "rate-limited"
    # (YouTube's own figure: up to an hour); a bot check is retried as often.
    rate_limit_pause: float = _seconds(3600.0, above=0, high=86_400)
    # Let add/import read pages on loopback, link-local and private addresses.
    allow_private_sources: bool = False
    # The JavaScript runtime yt-dlp is given: "auto", a name (deno, node, bun,
    # quickjs) or a path to one (see ytproxy.resolve.jsruntime).
    js_runtime: str = _ruled("auto", filled=True, say='must be "auto", a runtime (deno, node, '
                             'bun, quickjs) or a path')
    # A Netscape cookies file, read by yt-dlp on every call; and/or a browser to
    # take cookies from (yt-dlp's cookiesfrombrowser: BROWSER[+KEYRING][:PROFILE][::CONTAINER]).
    cookies_file: str = ""
    cookies_from_browser: str = ""
    # Seconds a first request may wait for a format's available_at.
    max_available_wait: float = _seconds(30.0, low=0, high=600)
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

    def more_problems(self, found: _Problems) -> None:
        # What is handed to yt-dlp is yt-dlp's business (ytproxy.ytdlp_options).
        for key, message in ytdlp_problems(cookies_from_browser=self.cookies_from_browser,
                                           ytdlp_options=self.ytdlp_options,
                                           pot_provider_url=self.pot_provider_url):
            found.add(key, message)


@dataclass(frozen=True)
class UpstreamConfig(_Section):
    chunk_size: int = _ruled(1_048_576, low=4096, high=MAX_CHUNK_SIZE, unit=" bytes",
                             note=" (10 MiB): googlevideo throttles larger ranges to a crawl")
    allowed_hosts: tuple[str, ...] = ("*.googlevideo.com", "*.youtube.com")
    connect_timeout: float = _seconds(10.0, above=0)
    read_timeout: float = _seconds(10.0, above=0)
    range_timeout: float = _seconds(60.0, above=0)
    proxy: str = ""

    def more_problems(self, found: _Problems) -> None:
        hosts = list(self.allowed_hosts)
        found.need(bool(hosts), "allowed_hosts", "must list at least one host", hosts)
        found.need(all(h.strip() for h in hosts), "allowed_hosts",
                   "must not contain empty host names", hosts)
        found.need(not self.proxy or self.proxy.startswith(("http://", "https://")), "proxy",
                   "must be an http:// or https:// URL, or empty to use HTTP(S)_PROXY",
                   self.proxy)


@dataclass(frozen=True)
class LimitsConfig(_Section):
    max_streams: int = _ruled(10, low=1, high=10_000)
    # Open client connections, in all and from one address; more are answered
    # 503 and closed at once (see ytproxy.http.listener).
    max_connections: int = 256
    max_connections_per_client: int = 32
    # Seconds a connection may take to send a complete request head (or a
    # POST body), or stay idle between requests; never cuts a response.
    idle_timeout: float = _seconds(30.0, above=0, high=3600)

    def more_problems(self, found: _Problems) -> None:
        found.need(self.max_streams <= self.max_connections <= 100_000, "max_connections",
                   "must be between limits.max_streams and 100000", self.max_connections)
        found.need(1 <= self.max_connections_per_client <= self.max_connections,
                   "max_connections_per_client", "must be between 1 and limits.max_connections",
                   self.max_connections_per_client)


@dataclass(frozen=True)
class IcyConfig(_Section):
    inline_metadata: bool = False
    metaint: int = _ruled(16000, low=1, high=65536)


@dataclass(frozen=True)
class RetryConfig(_Section):
    """How upstream failures are retried; a *gap* is a stretch with no bytes received."""

    attempts: int = _ruled(8, low=0, high=100)
    base_delay: float = _seconds(0.25, low=0)
    max_delay: float = 8.0
    gap_budget: float = _seconds(30.0, above=0)
    retry_after_cap: float = _seconds(15.0, low=0)
    # Seconds a request (or a playing stream) is held while the network or a
    # dependency is down, before it is given up; one track's own failures
    # keep gap_budget.
    hold_budget: float = 120.0

    def more_problems(self, found: _Problems) -> None:
        found.need(self.max_delay >= self.base_delay, "max_delay",
                   "must be >= retry.base_delay", self.max_delay)
        found.need(self.gap_budget <= self.hold_budget <= 3600, "hold_budget",
                   "must be between retry.gap_budget and 3600 seconds", self.hold_budget)


@dataclass(frozen=True)
class BreakerConfig(_Section):
    """Circuit breakers on the resolver and on each upstream host."""

    failures: int = _ruled(5, low=1, high=1000)
    # Held requests probe at this pace (see Holds): short, since a probe costs
    # one request and a listener waits for it.
    reset_after: float = _seconds(10.0, above=0)


@dataclass(frozen=True)
class MpdConfig(_Section):
    """Where MPD is: followed for look-ahead, checked by `ytproxy doctor`, and
    where playlists are written for `mpc load`.  An empty host: MPD_HOST and
    MPD_PORT as mpc reads them, else no MPD."""

    host: str = ""
    port: int = _ruled(6600, low=1, high=65535)
    password: str = ""
    # How many of the songs MPD plays next are downloaded ahead (0: none).
    lookahead: int = _ruled(2, low=0, high=20, unit=" songs")
    playlist_directory: str = ""
    # When MPD plays the last song of its queue (repeat off), append
    # autoplay_songs songs of that song's mix, none of the last
    # autoplay_history songs played nor any already queued.
    autoplay: bool = False
    autoplay_songs: int = _ruled(5, low=1, high=50, unit=" songs")
    autoplay_history: int = _ruled(100, low=0, high=10_000, unit=" songs")

    @property
    def resolved_playlist_directory(self) -> Path | None:
        if not self.playlist_directory:
            return None
        return Path(os.path.expandvars(self.playlist_directory)).expanduser()


DEFAULT_CACHE_SIZE = 2 * 1024**3


@dataclass(frozen=True)
class CacheConfig(_Section):
    """The download-ahead disk cache (ytproxy.cache)."""

    # Empty: $XDG_CACHE_HOME/ytproxy/audio (~/.cache/ytproxy/audio).
    directory: str = ""
    # Bytes, or a string with a unit ("2 GiB", "500 MB"); 0 turns the cache off.
    max_size: int = _ruled(DEFAULT_CACHE_SIZE, low=0, unit=" bytes", note=" (0: no cache)")

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
class LibraryConfig(_Section):
    """Playlists kept in the store (ytproxy.library)."""

    # How often a playlist imported with `--sync` (and no EVERY) follows its
    # source: "6h", "30m", "90s", "1h30m".
    sync_every: str = "6h"

    @property
    def sync_every_seconds(self) -> float:
        seconds = parse_interval(self.sync_every)
        assert seconds is not None  # load_config refuses another value
        return seconds

    def more_problems(self, found: _Problems) -> None:
        found.need(parse_interval(self.sync_every) is not None, "sync_every",
                   'must be a time such as "6h", "30m", "90s" or "1h30m" (1 s to 365 days)',
                   self.sync_every)


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

_NAMES = {cls: name for name, cls in _SECTIONS.items()}
# A config file longer than this is not one (see _read_config_text).
MAX_CONFIG_BYTES = 1_048_576
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
            for section in sections for key, message in section.problems(_NAMES[type(section)])]


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
