"""``ytproxy status``: the daemon's /status and /health as a summary a person reads.

Every key is read with a fallback: the daemon may be older or newer than this
CLI, and a missing key must cost a line, not the whole report.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ytproxy.cli.client import (
    DaemonNotAnswering,
    DaemonReport,
    daemon_base_url,
    fetch_report,
    not_answering_message,
)
from ytproxy.config import Config
from ytproxy.resolve.jsruntime import runtime_label
from ytproxy.spans import largest_units

__all__ = [
    "EXIT_NOT_RUNNING",
    "budget_line",
    "cache_line",
    "format_bytes",
    "format_duration",
    "mpd_line",
    "render_report",
    "run_status",
    "source_label",
]

# Like `systemctl status`: 3 means "not running", 1 "running but unhealthy".
EXIT_NOT_RUNNING = 3

_NAME_WIDTH = 32


def format_bytes(n: object) -> str:
    if not isinstance(n, int | float):
        return "—"
    value, units = float(n), ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.0f} B" if i == 0 else f"{value:.1f} {units[i]}"


def format_duration(seconds: object) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "—"
    big, unit, small, smaller = largest_units(int(seconds))  # "5s", "2m05s", "1h01m"
    return f"{big}{unit}" + (f"{small:02d}{smaller}" if smaller else "")


def _count(value: object) -> str:
    """A counter that may be a number or a mapping of causes to numbers."""
    if isinstance(value, Mapping):
        total = sum(v for v in value.values() if isinstance(v, int | float))
        return str(int(total))
    return "—" if value is None else str(value)


def _label(key: str) -> str:
    return key.replace("_", " ")


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _flat(mapping: Mapping[str, Any], skip: Sequence[str] = ()) -> str:
    """``key value, key value`` for the scalars and small counters of a section."""
    parts: list[str] = []
    for key, value in mapping.items():
        if key in skip or value is None:
            continue
        if isinstance(value, Mapping):
            if value and all(isinstance(v, int | float) for v in value.values()):
                detail = ", ".join(f"{_label(k)} {_scalar(v)}" for k, v in value.items())
                parts.append(f"{_label(key)} {_count(value)} ({detail})")
            elif not value and key in ("failures", "retries"):
                parts.append(f"{_label(key)} 0")
            continue
        if isinstance(value, bool | int | float | str):
            parts.append(f"{_label(key)} {_scalar(value)}")
    return ", ".join(parts)


def _breaker(b: Mapping[str, Any]) -> str:
    """``closed, 98% ok of 50 recent, last error 3m ago: …``."""
    parts = [str(b.get("state", "?")).replace("_", "-")]
    rate = b.get("success_rate")
    good, bad = b.get("recent_successes"), b.get("recent_failures")
    if isinstance(rate, int | float):
        seen = f" of {good + bad} recent" if isinstance(good, int) and isinstance(bad, int) else ""
        parts.append(f"{rate:.0%} ok{seen}")
    if b.get("retry_after"):
        parts.append(f"retry in {_scalar(b['retry_after'])} s")
    if b.get("last_error"):
        when = b.get("last_error_at")
        ago = (f" {format_duration(time.time() - when)} ago"
               if isinstance(when, int | float) else "")
        parts.append(f"last error{ago}: {b['last_error']}")
    return ", ".join(parts)


def _streams_table(streams: Sequence[Mapping[str, Any]]) -> list[str]:
    now = time.time()
    header = ("ID", "NAME", "CLIENT", "SENT", "RATE", "RANGE", "AGE", "RETRIES", "REFRESHES",
              "FROM")
    rows = [header]
    for s in streams:
        name = str(s.get("name") or s.get("title") or "")
        if len(name) > _NAME_WIDTH:
            name = name[: _NAME_WIDTH - 1] + "…"
        started = s.get("started_at")
        rows.append((
            str(s.get("id", "?")),
            name,
            str(s.get("client") or "?"),
            format_bytes(s.get("bytes_sent")),
            f"{format_bytes(s.get('rate_bytes_per_sec'))}/s",
            str(s.get("range") or "—"),
            format_duration(now - started) if isinstance(started, int | float) else "—",
            _count(s.get("retries")),
            _count(s.get("refreshes")),
            source_label(s),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def source_label(stream: Mapping[str, Any]) -> str:
    """Where a stream's bytes come from: the cache, a download (how far), or upstream."""
    source = str(stream.get("source") or "relay")
    percent = stream.get("downloaded_percent")
    if source == "download" and isinstance(percent, int | float):
        return f"download {percent:.0f}%"
    return source


def cache_line(cache: Mapping[str, Any]) -> str:
    if not cache.get("enabled"):
        return "off ([cache] max_size = 0)"
    downloading = cache.get("downloading") or []
    running = ", ".join(f"{d.get('id')} {d.get('percent', 0):.0f}%" for d in downloading
                        if isinstance(d, Mapping))
    return (f"{format_bytes(cache.get('size_bytes'))} of {format_bytes(cache.get('limit_bytes'))}"
            f", {_count(cache.get('tracks'))} tracks, {_count(cache.get('hits'))} hits, "
            f"{format_bytes(cache.get('bytes_saved'))} saved"
            + (f", downloading {running}" if running else "")
            + f" ({cache.get('directory', '?')})")


def mpd_line(mpd: Mapping[str, Any]) -> str:
    if not mpd.get("following"):
        return "look-ahead off (no [mpd] host or MPD_HOST)"
    tries = mpd.get("tries")
    if not mpd.get("connected") and isinstance(tries, list) and len(tries) > 1:
        places = [str(t) for t in tries]
        return (f"looking for MPD at {', '.join(places[:-1])} or {places[-1]} "
                "(none answers; set [mpd] host or MPD_HOST)")
    state = "connected" if mpd.get("connected") else "not connected (retrying)"
    upcoming = ", ".join(str(i) for i in mpd.get("upcoming") or []) or "—"
    line = f"{mpd.get('address', '?')} {state}; next: {upcoming}"
    autoplay = mpd.get("autoplay")
    if isinstance(autoplay, Mapping):
        line += (f"; autoplay: {autoplay.get('appended', 0)} appended, "
                 f"{autoplay.get('failures', 0)} mixes not listed")
    return line


def sync_lines(sync: Mapping[str, Any]) -> list[str]:
    """One line per synced playlist: tracks, and the last error if the last try failed."""
    out: list[str] = []
    for p in sync.get("playlists") or []:
        if not isinstance(p, Mapping):
            continue
        count = p.get("tracks", "?")
        line = f"{p.get('name')!s}: {count} track{'' if count == 1 else 's'}"
        if p.get("last_error"):
            line += f", failing ({p.get('failures', '?')} in a row): {p['last_error']}"
        elif p.get("last_sync") is None:
            line += ", not synced yet"
        else:
            line += ", in sync"
        out.append(line)
    return out


def render_report(report: DaemonReport) -> str:
    st, health = report.status, report.health
    lines = [
        f"ytproxy {st.get('version', '?')} at {report.base_url} — "
        f"up {format_duration(st.get('uptime_seconds'))} — health: {health.status}"
    ]
    lines.extend(f"  ! {reason}" for reason in health.reasons)

    streams = [s for s in st.get("streams") or [] if isinstance(s, Mapping)]
    slots: Mapping[str, Any] = st["slots"] if isinstance(st.get("slots"), Mapping) else {}
    capacity = f" of {slots['capacity']} slots" if "capacity" in slots else ""
    lines.append("")
    if streams:
        lines.append(f"streams: {len(streams)} active{capacity}")
        lines.extend(_streams_table(streams))
    else:
        lines.append(f"streams: nothing playing ({slots.get('in_use', 0)}{capacity} in use)")
    lines.append("")

    def section(title: str, key: str, skip: Sequence[str] = ()) -> Mapping[str, Any]:
        value = st.get(key)
        if not isinstance(value, Mapping):
            return {}
        text = _flat(value, skip)
        if text:
            lines.append(f"{title + ':':<10}{text}")
        return value

    totals = st.get("totals")
    if isinstance(totals, Mapping):
        shown = {k: (format_bytes(v) if k == "bytes" else v) for k, v in totals.items()}
        lines.append(f"{'totals:':<10}{_flat(shown)}")
    store = st.get("store")
    if isinstance(store, Mapping):
        size = f", {format_bytes(store['size_bytes'])}" if "size_bytes" in store else ""
        lines.append(f"{'store:':<10}{store.get('tracks', '?')} tracks{size} "
                     f"({store.get('path', '?')})")
    cache = st.get("cache")
    if isinstance(cache, Mapping):
        lines.append(f"{'cache:':<10}{cache_line(cache)}")
    mpd = st.get("mpd")
    if isinstance(mpd, Mapping):
        lines.append(f"{'mpd:':<10}{mpd_line(mpd)}")
    sync = st.get("sync")
    if isinstance(sync, Mapping):
        for n, line in enumerate(sync_lines(sync)):
            lines.append(f"{'sync:' if n == 0 else '':<10}{line}")
    resolver = section("resolver", "resolver",
                       skip=("breaker", "js_runtime", "client", "cookies", "budget",
                             "youtube"))
    if isinstance(resolver.get("breaker"), Mapping):
        lines.append(f"{'':<10}breaker {_breaker(resolver['breaker'])}")
    if resolver:
        lines.append(f"{'':<10}{_youtube(resolver)}")
    if isinstance(resolver.get("budget"), Mapping):
        lines.append(f"{'':<10}{budget_line(resolver)}")
    upstream = section("upstream", "upstream", skip=("hosts",))
    hosts = upstream.get("hosts")
    if isinstance(hosts, Mapping):
        for host, info in hosts.items():
            if isinstance(info, Mapping):
                lines.append(f"{'':<10}{host}: {_breaker(info)}")
    return "\n".join(lines) + "\n"


def budget_line(resolver: Mapping[str, Any]) -> str:
    """``calls 12 of 200 in the last hour, 3 background waiting; listings 1 of
    30; YouTube ok``."""
    b: Mapping[str, Any] = resolver.get("budget") or {}
    youtube = resolver.get("youtube")
    state = youtube.get("state", "ok") if isinstance(youtube, Mapping) else "ok"
    waiting = b.get("waiting_background", 0)
    line = (f"calls {b.get('calls_last_hour', '?')} of {b.get('max_calls_per_hour', '?')} "
            f"in the last hour, {waiting} background waiting")
    if not b.get("left") and isinstance(b.get("next_free_in"), int | float):
        line += f" (next in {format_duration(b['next_free_in'])})"
    line += (f"; listings {b.get('listings_last_hour', '?')} of "
             f"{b.get('max_listings_per_hour', '?')}; YouTube {state}")
    return line


def _youtube(resolver: Mapping[str, Any]) -> str:
    """The JavaScript runtime yt-dlp is given, the player client in use, and
    where cookies come from (never what they are)."""
    runtime = resolver.get("js_runtime")
    if isinstance(runtime, Mapping):
        shown = (f"js runtime {runtime_label(runtime.get('name'), runtime.get('version'))} "
                 f"at {runtime.get('path', '?')}")
    else:
        shown = "js runtime none (see `ytproxy doctor`)" if "js_runtime" in resolver else ""
    client = resolver.get("client")
    using = f"player client {client}" if isinstance(client, str) else "player client —"
    cookies = resolver.get("cookies")
    given = f"cookies {cookies}" if isinstance(cookies, str) and cookies else ""
    return "; ".join(filter(None, [shown, using, given]))


def run_status(config: Config, *, as_json: bool = False) -> int:
    """The ``ytproxy status`` command: 0 healthy, 1 unhealthy, 3 not answering."""
    try:
        report = asyncio.run(fetch_report(daemon_base_url(config),
                                          token=config.server.token))
    except DaemonNotAnswering as exc:
        print(not_answering_message(exc), file=sys.stderr)
        return EXIT_NOT_RUNNING
    if as_json:
        print(json.dumps(report.status, indent=2, sort_keys=False))
    else:
        sys.stdout.write(render_report(report))
    if not report.health.ok:
        reasons = "; ".join(report.health.reasons) or "no reason given"
        print(f"ytproxy: the daemon is {report.health.status}: {reasons}", file=sys.stderr)
        return 1
    return 0
