"""What the daemon tells about itself: /status JSON, /health, Prometheus metrics, the page at /.

Pure functions over the services' state, so the server's handlers stay thin
and nothing here reaches into a request.  Signed stream URLs never appear.
"""

from __future__ import annotations

import contextlib
import html
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ytproxy import __version__
from ytproxy.cache import CacheSnapshot, TrackCache
from ytproxy.config import Config, config_values
from ytproxy.http.registry import StreamRegistry
from ytproxy.http.slots import StreamSlots
from ytproxy.library.store import Store
from ytproxy.library.tracks import Tracks
from ytproxy.loops import loop_name
from ytproxy.redact import redact_config, redact_strings
from ytproxy.resilience import CircuitBreaker
from ytproxy.resolve.jsruntime import runtime_label
from ytproxy.resolve.refusals import refusal_reason
from ytproxy.resolve.resolver import Resolver
from ytproxy.spans import largest_units
from ytproxy.upstream import UpstreamFetcher

__all__ = ["Daemon", "Metrics", "health", "redacted_config", "render_page", "status_payload"]

_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Daemon:
    """The parts of a running daemon that report on themselves."""

    config: Config
    started: float
    registry: StreamRegistry
    slots: StreamSlots
    store: Store
    resolver: Resolver
    tracks: Tracks
    fetcher: UpstreamFetcher
    cache: TrackCache | None = None
    # The MPD follower (look-ahead) reports here: {"connected": ..., ...}; None: off.
    mpd: Callable[[], dict[str, Any]] | None = None
    # The playlist sync task reports here: {"syncing": ..., "attempts": ...}; None: off.
    sync: Callable[[], dict[str, Any]] | None = None


def redacted_config(config: Config) -> dict[str, Any]:
    """The effective configuration, with secrets masked (as check-config masks them)."""
    return redact_config(config_values(config))


def _db_size(store: Store) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):  # no WAL file right now
            total += os.path.getsize(f"{store.path}{suffix}")
    return total


async def status_payload(daemon: Daemon) -> dict[str, Any]:
    registry, resolver, fetcher = daemon.registry, daemon.resolver, daemon.fetcher
    try:
        track_count: int | None = await daemon.store.count()
    except Exception:
        track_count = None
    upstream, resolving = fetcher.stats(), resolver.stats()
    # Breakers' last errors and the like are other code's words: any URL in them
    # loses its query values, so a signed stream URL never shows here.
    payload: dict[str, Any] = redact_strings({
        "version": __version__,
        "uptime_seconds": round(time.time() - daemon.started, 1),
        "event_loop": loop_name(),
        "streams": [s.as_dict() for s in registry.active()],
        "totals": {
            "started": registry.started_total,
            "served": registry.served,
            "failed": registry.failed,
            "rejected_at_capacity": daemon.slots.rejected,
            "bytes": registry.bytes_sent(),
        },
        "slots": {"in_use": daemon.slots.in_use, "capacity": daemon.slots.capacity},
        "store": {"tracks": track_count, "path": str(daemon.store.path),
                  "size_bytes": _db_size(daemon.store), "damaged": daemon.store.damaged},
        "resolver": {
            "calls": resolving.calls,
            "cache_hits": daemon.tracks.cache_hits,
            "single_flight_joins": resolving.joins,
            "failures": dict(resolving.failures),
            "rate_limit_waiting": resolving.rate_limit_waiting,
            "last_call_seconds": resolving.last_call_seconds,
            "breaker": dict(resolving.breaker),
            # The player client of the last URL resolved (googlevideo's c=).
            "client": resolving.client,
            "js_runtime": await resolver.js_runtime_info(),
            "cookies": resolving.cookies,
            # The hour's yt-dlp calls and what waits for them (ytproxy.resolve.budget).
            "budget": dict(resolving.budget),
            # YouTube's refusals as a state: "ok", "rate_limited" or "bot_check".
            "youtube": dict(resolving.youtube),
        },
        "upstream": {
            "requests": upstream.requests,
            "bytes": upstream.bytes,
            "retries": dict(upstream.retries),
            "resumes": upstream.resumes,
            "refreshes": upstream.refreshes,
            "hosts": {host: b.as_dict() for host, b in fetcher.host_breakers().items()},
            "holding": fetcher.holding(),
        },
        "cache": cache_summary(daemon),
        "mpd": daemon.mpd() if daemon.mpd is not None else {"following": False},
        "sync": await sync_summary(daemon),
    })
    # The config has its own masking (redact_config, as check-config prints it):
    # its URLs are the admin's templates, whose {query} and #songs must show.
    payload["config"] = redacted_config(daemon.config)
    return payload


async def sync_summary(daemon: Daemon) -> dict[str, Any]:
    """The playlists imported with ``--sync``: when synced, when next, the last error."""
    summary: dict[str, Any] = daemon.sync() if daemon.sync is not None else {}
    try:
        schedules = await daemon.store.list_syncs()
        counts = {p.name: p.track_count for p in await daemon.store.list_playlists()}
    except Exception as exc:
        return {**summary, "playlists": [], "error": f"store: {exc}"}
    summary["playlists"] = [
        {"name": s.name, "source_url": s.source_url, "every_seconds": s.every,
         "tracks": counts.get(s.name, 0), "last_sync": s.last_sync,
         "last_attempt": s.last_attempt, "next_sync": s.next_sync,
         "last_error": s.last_error, "failures": s.failures}
        for s in schedules
    ]
    return summary


def cache_summary(daemon: Daemon) -> dict[str, Any]:
    if daemon.cache is None:
        return {"enabled": False, "limit_bytes": 0}
    return daemon.cache.snapshot().as_dict()


async def health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    """200 ``ok`` when the store answers and no breaker is open; else 503 and why."""
    reasons: list[str] = []
    if daemon.store.damaged is not None:
        # It may still answer a count; it is not to be trusted, nor written.
        return 503, {"status": "down", "reasons": [f"store: {daemon.store.damaged}"]}
    try:
        await daemon.store.count()
    except Exception as exc:
        return 503, {"status": "down", "reasons": [f"store: {exc}"]}
    breakers: list[CircuitBreaker] = [daemon.resolver.breaker,
                                      *daemon.fetcher.host_breakers().values()]
    for breaker in breakers:
        if breaker.state != "closed":
            reasons.append(f"{breaker.name}: breaker {breaker.state.replace('_', '-')} "
                           f"after {breaker.failures} failures (last: {breaker.last_error})")
    refusal = refusal_reason(dict(daemon.resolver.stats().youtube))
    if refusal is not None:
        reasons.append(refusal)
    reasons += daemon.fetcher.hold_reasons()
    if reasons:
        return 503, {"status": "degraded", "reasons": reasons}
    return 200, {"status": "ok"}


class _StateCollector(Collector):
    """Counters and gauges read from the services at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    def collect(self) -> Iterator[Metric]:
        d = self._d
        active = GaugeMetricFamily("ytproxy_active_streams", "Streams being relayed now")
        active.add_metric([], len(d.registry.active()))
        yield active
        streams = CounterMetricFamily("ytproxy_streams", "Streams by outcome",
                                      labels=["outcome"])
        streams.add_metric(["served"], d.registry.served)
        streams.add_metric(["failed"], d.registry.failed)
        streams.add_metric(["rejected"], d.slots.rejected)
        yield streams
        sent = CounterMetricFamily("ytproxy_bytes_sent", "Bytes relayed to clients")
        sent.add_metric([], d.registry.bytes_sent())
        yield sent
        retries = CounterMetricFamily("ytproxy_upstream_retries", "Upstream retries by cause",
                                      labels=["cause"])
        upstream = d.fetcher.stats()
        for cause, value in sorted(upstream.retries.items()):
            retries.add_metric([cause], value)
        yield retries
        for name, count, text in (
                ("ytproxy_upstream_refreshes", upstream.refreshes,
                 "Stream URLs refreshed after a refusal"),
                ("ytproxy_upstream_resumes", upstream.resumes,
                 "Ranges resumed at the byte after a failure"),
                ("ytproxy_upstream_bytes", upstream.bytes, "Bytes fetched from upstream"),
                ("ytproxy_upstream_requests", upstream.requests, "Upstream range requests")):
            family = CounterMetricFamily(name, text)
            family.add_metric([], count)
            yield family
        calls = CounterMetricFamily("ytproxy_resolver_calls", "yt-dlp calls made")
        resolving = d.resolver.stats()
        calls.add_metric([], resolving.calls)
        yield calls
        hour = GaugeMetricFamily("ytproxy_resolver_calls_last_hour",
                                 "yt-dlp calls in the last hour, by budget",
                                 labels=["budget"])
        hour.add_metric(["videos"], resolving.calls_last_hour)
        hour.add_metric(["listings"], resolving.listings_last_hour)
        yield hour
        waiting = GaugeMetricFamily("ytproxy_resolver_background_waiting",
                                    "Background yt-dlp calls waiting for the hour's budget")
        waiting.add_metric([], resolving.background_waiting)
        yield waiting
        refused = GaugeMetricFamily("ytproxy_youtube_refusing",
                                    "1 while YouTube refuses this address, by state",
                                    labels=["state"])
        for name in ("rate_limited", "bot_check"):
            refused.add_metric([name], 1 if resolving.refusing == name else 0)
        yield refused
        hits = CounterMetricFamily("ytproxy_resolver_cache_hits",
                                   "Plays served from a stored, unexpired URL")
        hits.add_metric([], d.tracks.cache_hits)
        yield hits
        state = GaugeMetricFamily("ytproxy_breaker_state",
                                  "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                  labels=["name"])
        for breaker in [d.resolver.breaker, *d.fetcher.host_breakers().values()]:
            state.add_metric([breaker.name], _BREAKER_VALUES[breaker.state])
        yield state
        if d.cache is not None:
            yield from _cache_metrics(d.cache.snapshot())


def _cache_metrics(cache: CacheSnapshot) -> Iterator[Metric]:
    for name, count, text in (
            ("ytproxy_cache_hits", cache.hits, "Streams served from a complete cache file"),
            ("ytproxy_cache_misses", cache.misses, "Streams that needed upstream"),
            ("ytproxy_cache_served_bytes", cache.bytes_served,
             "Bytes listeners read from cache files"),
            ("ytproxy_cache_saved_bytes", cache.bytes_saved,
             "Bytes served from disk that upstream did not send for that stream"),
            ("ytproxy_cache_evictions", cache.evictions,
             "Cache files evicted to stay under the limit"),
            ("ytproxy_cache_downloads_completed", cache.downloads_done,
             "Tracks downloaded whole"),
            ("ytproxy_cache_disk_full", cache.disk_full,
             "Downloads turned into relays: disk full")):
        counter = CounterMetricFamily(name, text)
        counter.add_metric([], count)
        yield counter
    for name, value, text in (
            ("ytproxy_cache_size_bytes", cache.size_bytes, "Bytes on disk in cache files"),
            ("ytproxy_cache_limit_bytes", cache.limit_bytes, "[cache] max_size"),
            ("ytproxy_cache_tracks", cache.tracks, "Complete tracks in the cache"),
            ("ytproxy_cache_downloading", len(cache.downloading), "Downloads running")):
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], value)
        yield gauge


class Metrics:
    """A registry per daemon (not the process-global one), so apps never collide.

    Made before the services (whose constructors are given the histograms'
    ``observe``); ``report_on`` adds the daemon's counters once it is up."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.resolver_duration = Histogram(
            "ytproxy_resolver_duration_seconds", "Time one yt-dlp call took",
            buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60), registry=self.registry)
        self.time_to_first_byte = Histogram(
            "ytproxy_time_to_first_byte_seconds", "Request to first byte of a /proxy answer",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        # prometheus-client's own aiohttp handler serves this registry at /metrics.
        self.handler = make_aiohttp_handler(self.registry)

    def report_on(self, daemon: Daemon) -> None:
        """Read the daemon's counters and gauges at each scrape from now on."""
        self.registry.register(_StateCollector(daemon))


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _fmt_rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def _youtube_line(resolver: dict[str, Any]) -> str:
    """What yt-dlp is given and what YouTube handed out: runtime, player client, cookies."""
    runtime = resolver.get("js_runtime")
    if isinstance(runtime, dict):
        label = runtime_label(runtime.get("name"), runtime.get("version"))
        shown = (f"JavaScript runtime {html.escape(label)} "
                 f"at <code>{html.escape(str(runtime.get('path')))}</code>")
    else:
        shown = "no JavaScript runtime (run <code>ytproxy doctor</code>)"
    client = resolver.get("client")
    using = html.escape(client) if isinstance(client, str) else "— (nothing resolved yet)"
    cookies = resolver.get("cookies")
    given = html.escape(cookies) if isinstance(cookies, str) else "none"
    return f"yt-dlp: {shown} · player client {using} · cookies {given}"


def _budget_line(resolver: dict[str, Any]) -> str:
    """The hour's yt-dlp calls, what waits for them, and YouTube's state."""
    budget = resolver.get("budget")
    if not isinstance(budget, dict):
        return ""
    youtube = resolver.get("youtube")
    state = youtube.get("state") if isinstance(youtube, dict) else None
    return " · ".join([
        f"yt-dlp calls in the last hour: {budget.get('calls_last_hour')} of "
        f"{budget.get('max_calls_per_hour')}",
        f"background waiting: {budget.get('waiting_background')}",
        f"listings: {budget.get('listings_last_hour')} of {budget.get('max_listings_per_hour')}",
        f"YouTube: {html.escape(str(state or 'ok'))}"])


def _source_label(stream: dict[str, Any]) -> str:
    source = stream.get("source", "relay")
    if source == "download":
        return f"download ({stream.get('downloaded_percent') or 0:.0f} %)"
    return str(source)


def _cache_line(cache: dict[str, Any]) -> str:
    if not cache.get("enabled"):
        return "off (<code>[cache] max_size = 0</code>): every stream is relayed"
    downloading = ", ".join(f"{d['id']} {d['percent']:.0f} %" for d in cache["downloading"])
    return " · ".join([f"{_fmt_bytes(cache['size_bytes'])} of {_fmt_bytes(cache['limit_bytes'])}",
                       f"{cache['tracks']} tracks", f"{cache['hits']} hits",
                       f"{_fmt_bytes(cache['bytes_saved'])} saved",
                       f"downloading: {html.escape(downloading or 'nothing')}",
                       f"<code>{html.escape(cache['directory'])}</code>"])


def _mpd_line(mpd: dict[str, Any]) -> str:
    if not mpd.get("following"):
        return "MPD look-ahead: off (no [mpd] host, MPD_HOST, or MPD not reached yet)"
    tries = mpd.get("tries")
    if not mpd.get("connected") and isinstance(tries, list) and len(tries) > 1:
        return (f"MPD look-ahead: looking for MPD at {html.escape(', '.join(tries))} "
                "(none answers; set <code>[mpd] host</code> or MPD_HOST)")
    state = "connected" if mpd.get("connected") else "not connected, retrying"
    upcoming = ", ".join(mpd.get("upcoming") or []) or "nothing queued after this song"
    line = (f"MPD look-ahead: {html.escape(str(mpd.get('address')))} {state} · next: "
            f"{html.escape(upcoming)}")
    autoplay = mpd.get("autoplay")
    if isinstance(autoplay, dict):
        line += (f" · autoplay: {int(autoplay.get('appended', 0))} songs appended, "
                 f"{int(autoplay.get('failures', 0))} mixes not listed")
    return line


def _ago(now: float, when: object) -> str:
    if not isinstance(when, int | float):
        return "never"
    seconds = now - when
    return f"{_span(seconds)} ago" if seconds >= 0 else f"in {_span(-seconds)}"


def _span(seconds: float) -> str:
    big, unit, small, smaller = largest_units(round(seconds))  # "5 s", "2 min", "1 h 1 min"
    if unit in ("s", "m"):
        return f"{big} {_UNIT_NAMES[unit]}"
    return f"{big} {_UNIT_NAMES[unit]} {small} {_UNIT_NAMES[smaller]}"


_UNIT_NAMES = {"s": "s", "m": "min", "h": "h", "d": "d"}


def _sync_rows(sync: dict[str, Any]) -> str:
    e, now = html.escape, time.time()
    rows = "".join(
        f"<tr><td>{e(str(p['name']))}</td><td>{p['tracks']}</td>"
        f"<td>{e(_ago(now, p['last_sync']))}</td><td>{e(_ago(now, p['next_sync']))}</td>"
        f"<td>{e(str(p['last_error'] or '—'))}</td>"
        f"<td><code>{e(str(p['source_url']))}</code></td></tr>"
        for p in sync.get("playlists", [])
    )
    return rows or ('<tr><td colspan="6">none: <code>ytproxy import URL --name NAME '
                    '--sync</code> adds one</td></tr>')


def render_page(status: dict[str, Any], health_body: dict[str, Any]) -> str:
    """A small self-refreshing status page: no scripts, no external assets."""
    e = html.escape
    rows = "".join(
        f"<tr><td><code>{e(s['id'])}</code></td><td>{e(s['name'])}</td>"
        f"<td>{e(s['client'])}</td><td>{_fmt_bytes(s['bytes_sent'])}</td>"
        f"<td>{_fmt_bytes(s['rate_bytes_per_sec'])}/s</td><td>{e(str(s['range'] or '—'))}</td>"
        f"<td>{s['retries']}/{s['refreshes']}</td><td>{e(_source_label(s))}</td></tr>"
        for s in status["streams"]
    ) or '<tr><td colspan="8">nothing playing</td></tr>'
    reasons = "".join(f"<li>{e(r)}</li>" for r in health_body.get("reasons", []))
    totals, resolver, upstream = status["totals"], status["resolver"], status["upstream"]
    hosts = "".join(
        f"<tr><td>{e(host)}</td><td>{e(h['state'])}</td>"
        f"<td>{_fmt_rate(h['success_rate'])}</td>"
        f"<td>{e(str(h['last_error'] or '—'))}</td></tr>"
        for host, h in upstream["hosts"].items()
    ) or '<tr><td colspan="4">no upstream requests yet</td></tr>'
    state = health_body["status"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>ytproxy — {e(state)}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
.ok {{ color: #176f2c; }} .degraded {{ color: #a15c00; }} .down {{ color: #b00020; }}
</style></head><body>
<h1>ytproxy {e(status['version'])} — <span class="{e(state)}">{e(state)}</span></h1>
<ul>{reasons}</ul>
<p>up {status['uptime_seconds']:.0f} s on {e(status.get('event_loop', '?'))} ·
{status['slots']['in_use']} of {status['slots']['capacity']} stream slots in use ·
{status['store']['tracks']} tracks stored</p>
<p>{_youtube_line(resolver)}</p>
<p>{_budget_line(resolver)}</p>
<h2>Playing</h2>
<table><tr><th>id</th><th>name</th><th>client</th><th>sent</th><th>rate</th>
<th>range</th><th>retries/refreshes</th><th>from</th></tr>{rows}</table>
<h2>Cache</h2>
<p>{_cache_line(status.get("cache", {}))}</p>
<p>{_mpd_line(status.get("mpd", {}))}</p>
<h2>Synced playlists</h2>
<table><tr><th>name</th><th>tracks</th><th>last sync</th><th>next sync</th>
<th>last error</th><th>source</th></tr>{_sync_rows(status.get("sync", {}))}</table>
<h2>Counters</h2>
<table>
<tr><td>streams served / failed / rejected</td>
<td>{totals['served']} / {totals['failed']} / {totals['rejected_at_capacity']}</td></tr>
<tr><td>bytes relayed</td><td>{_fmt_bytes(totals['bytes'])}</td></tr>
<tr><td>yt-dlp calls / cache hits / joins</td>
<td>{resolver['calls']} / {resolver['cache_hits']} / {resolver['single_flight_joins']}</td></tr>
<tr><td>resolver breaker</td><td>{e(resolver['breaker']['state'])}</td></tr>
<tr><td>upstream requests / resumes / refreshes</td>
<td>{upstream['requests']} / {upstream['resumes']} / {upstream['refreshes']}</td></tr>
</table>
<h2>Upstream hosts</h2>
<table><tr><th>host</th><th>breaker</th><th>success (5 min)</th><th>last error</th></tr>
{hosts}</table>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a> ·
<a href="/playlist.m3u">/playlist.m3u</a></p>
</body></html>
"""
