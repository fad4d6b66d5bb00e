"""``ytproxy doctor``: the first thing to run when something is wrong.

One line per check — ``ok``, ``warn``, ``fail`` or ``skip`` — and for every
warning or failure what to do about it.  Checks that touch the network run
concurrently, each stage under a short timeout, so an offline machine is told
it is offline within seconds instead of hanging.  Nothing here changes data:
the store probe writes inside a transaction and rolls it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import os
import re
import sqlite3
import ssl
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ytproxy.cli.checks import Check
from ytproxy.cli.client import DaemonNotAnswering, daemon_base_url, fetch_report
from ytproxy.cli.po_token import check_player_clients, check_pot_provider, read_ytdlp_view
from ytproxy.cli.reachability import Target, Unreachable, proxy_for, reach
from ytproxy.config import Config, ConfigError, ResolverConfig, load_config
from ytproxy.follower.queue import mpd_candidates
from ytproxy.library.store import SCHEMA_VERSION
from ytproxy.resolve.jsruntime import JsRuntime, find_js_runtime, runtime_label, runtime_version
from ytproxy.resolve.refusals import refusal_reason

__all__ = [
    "Check",
    "check_endpoint",
    "format_checks",
    "run_checks",
    "run_doctor",
    "upstream_targets",
]

DEFAULT_TIMEOUT = 3.0
# YouTube changes every few weeks, and yt-dlp releases follow: one two months
# old has likely missed a fix.
YTDLP_MAX_AGE_DAYS = 60
# A host that stands for a wildcard in upstream.allowed_hosts: stream hosts
# (rr3---sn-….googlevideo.com) are named per video, but they share the
# network path, DNS and certificates of these.
REPRESENTATIVES = {
    "*.googlevideo.com": "redirector.googlevideo.com",
    "*.youtube.com": "www.youtube.com",
}
_SAMPLE_ID = "dQw4w9WgXcQ"
_UPGRADE = ("pip install -U 'yt-dlp[default,deno]', then restart the daemon "
            "(systemctl --user restart ytproxy)")


# --------------------------------------------------------------------- local checks


def _check_config(path: str | None) -> tuple[Config | None, Check]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, Check("config", "fail", f"{len(exc.errors)} error(s):",
                           "fix them (`ytproxy check-config` lists them; config.example.toml "
                           "shows every key)", tuple(exc.errors))
    if config.source in (None, "built-in defaults"):
        return config, Check("config", "ok", "no config file; using the built-in defaults")
    return config, Check("config", "ok", f"{config.source} is valid")


def _probe_store(path: Path, busy_timeout: float) -> Check:
    """Open the store and write inside a transaction that is rolled back."""
    name = "store"
    where = "point [store] path at a writable place"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check(name, "fail", f"cannot create the directory {path.parent}: "
                     f"{exc.strerror}", f"create it, or {where}")
    if not path.exists():
        try:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".ytproxy-doctor-"):
                pass
        except OSError as exc:
            return Check(name, "fail", f"cannot write in {path.parent}: {exc.strerror}",
                         f"fix its permissions, or {where}")
        return Check(name, "ok", f"{path} does not exist yet; {path.parent} is writable "
                     "and the daemon creates it on start")
    if not path.is_file():
        return Check(name, "fail", f"{path} is not a file", where)
    with path.open("rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\x00":
        return Check(name, "fail", f"{path} is not an SQLite database",
                     f"move it aside, or {where}")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True,
                               timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        return Check(name, "fail", f"cannot open {path}: {exc}",
                     f"check its permissions, or {where}")
    try:
        # Before the write probe: a damaged database is not to be written at all.
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        if problems:
            return Check(name, "fail", f"{path} is damaged: {problems[0]}",
                         f"move it aside (first try to save what it holds with: sqlite3 {path} "
                         f".recover | sqlite3 recovered.db), or {where}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        has_tracks = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tracks'"
        ).fetchone() is not None
        count = conn.execute("SELECT count(*) FROM tracks").fetchone()[0] if has_tracks else 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE ytproxy_doctor_probe (x)")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return Check(name, "warn", f"{path} stayed locked by another writer for "
                         f"{busy_timeout:g} s", "run doctor again; if it persists, look for a "
                         "stuck `ytproxy` process")
        return Check(name, "fail", f"{path} is not writable: {text}",
                     "check the permissions of the file and its directory (SQLite writes "
                     f"-wal and -shm files beside it), or {where}")
    except sqlite3.DatabaseError as exc:
        return Check(name, "fail", f"{path} is damaged or not a ytproxy database: {exc}",
                     f"move it aside (first try to save what it holds with: sqlite3 {path} "
                     f".recover | sqlite3 recovered.db), or {where}")
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        return Check(name, "fail", f"{path} has schema {version}, newer than this ytproxy "
                     f"understands ({SCHEMA_VERSION})", "upgrade ytproxy")
    upgrade = (f"; schema {version} is upgraded to {SCHEMA_VERSION} on the next start"
               if version < SCHEMA_VERSION else "")
    return Check(name, "ok", f"{path}: {count} tracks, writable{upgrade}")


def _check_ytdlp(today: dt.date) -> Check:
    try:
        import yt_dlp.version  # heavy; the caller runs this in a thread
    except Exception as exc:
        return Check("yt-dlp", "fail", f"cannot import yt-dlp: {exc}",
                     "pip install 'yt-dlp[default,deno]'")
    version = str(getattr(yt_dlp.version, "__version__", "?"))
    match = re.match(r"(\d{4})\.(\d{1,2})\.(\d{1,2})", version)
    if match is None:
        return Check("yt-dlp", "warn", f"{version}: cannot tell how old it is", _UPGRADE)
    try:
        released = dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        return Check("yt-dlp", "warn", f"{version}: cannot tell how old it is", _UPGRADE)
    age = (today - released).days
    if age > YTDLP_MAX_AGE_DAYS:
        return Check("yt-dlp", "warn", f"{version} is {age} days old; YouTube changes often "
                     "and old releases stop working", _UPGRADE)
    return Check("yt-dlp", "ok", f"{version} ({max(age, 0)} days old)")


def _check_ejs() -> Check:
    try:
        version = importlib.metadata.version("yt-dlp-ejs")
    except importlib.metadata.PackageNotFoundError:
        return Check("yt-dlp-ejs", "warn", "not installed: yt-dlp cannot solve YouTube's "
                     "JavaScript challenges and finds fewer formats, or none", _UPGRADE)
    return Check("yt-dlp-ejs", "ok", version)


def _check_js_runtime(
    setting: str = "auto",
    find: Callable[[str], JsRuntime | None] = find_js_runtime,
    version: Callable[[str], str | None] = runtime_version,
) -> Check:
    """The runtime the daemon gives yt-dlp (blocking: asks it its version)."""
    runtime = find(setting)
    if runtime is None:
        fix = ("reinstall ytproxy so yt-dlp's deno comes along: pip install --force-reinstall "
               "'yt-dlp[default,deno]'; or install deno, node, bun or quickjs on the "
               "daemon's PATH, or point [resolver] js_runtime at one")
        if setting.strip() in ("", "auto"):
            detail = ("none found (deno next to ytproxy's Python, nor deno, node, bun or qjs "
                      "on PATH)")
        else:
            detail = (f"resolver.js_runtime = {setting!r} is not found (not installed, or not "
                      "an executable file)")
            fix += ', or set it to "auto"'
        return Check("js runtime", "fail", f"{detail}: yt-dlp may fall back to one player "
                     "client and find fewer formats, or none", fix)
    said = runtime_label(runtime.name, version(runtime.path))
    return Check("js runtime", "ok", f"{said} at {runtime.path} (given to yt-dlp)")


def _check_cookies(config: ResolverConfig) -> Check:
    """Whether yt-dlp gets cookies, and whether the file is fit to be read
    (never what it holds)."""
    browser = config.cookies_from_browser.strip()
    path = config.resolved_cookies_file
    if path is None:
        if browser:
            return Check("cookies", "ok", f"yt-dlp reads cookies from {browser} on every call")
        return Check("cookies", "ok", "none given; cookies from a signed-in browser are the "
                     "documented way past \"Sign in to confirm you're not a bot\" ([resolver] "
                     "cookies_file or cookies_from_browser)")
    try:
        mode = path.stat().st_mode
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return Check("cookies", "fail", f"cannot read resolver.cookies_file {path}: "
                     f"{exc.strerror or exc}", "export the cookies again (Netscape format) "
                     "or fix the path")
    count = sum(1 for line in lines
                if line.strip() and (not line.startswith("#") or line.startswith("#HttpOnly_")))
    also = f", and from {browser}" if browser else ""
    if mode & 0o077:
        return Check("cookies", "warn", f"{path}: {count} cookies{also}, readable by other "
                     f"users (mode {stat.S_IMODE(mode):o}); they sign in as you",
                     f"chmod 600 {path}")
    return Check("cookies", "ok", f"{path}: {count} cookies{also}")


# --------------------------------------------------------------------- network checks


def source_target(config: Config) -> Target | Check:
    url = config.resolver.source_url_template.replace("{id}", _SAMPLE_ID)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check("source", "skip", f"{url} is not an http(s) URL; nothing to reach")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Check("source", "fail", f"bad port in {url}",
                     "fix resolver.source_url_template")
    return Target("source", parts.hostname, port, parts.scheme == "https",
                  "yt-dlp reads track pages here")


def upstream_targets(config: Config, source: Target | None) -> list[Target | Check]:
    """A host to try for every entry of upstream.allowed_hosts that can be named."""
    out: list[Target | Check] = []
    seen = {(source.host, source.port)} if source else set()
    for pattern in config.upstream.allowed_hosts:
        pattern = pattern.strip().lower()
        note = ""
        if any(c in pattern for c in "*?["):
            host = REPRESENTATIVES.get(pattern)
            if host is None:
                out.append(Check("upstream", "skip",
                                 f"{pattern}: a wildcard with no known host to try"))
                continue
            note = f"stands for {pattern}"
        else:
            host = pattern
        if (host, 443) in seen:
            out.append(Check("upstream", "skip", f"{pattern}: {host} is checked above"))
            continue
        seen.add((host, 443))
        out.append(Target("upstream", host, 443, True, note))
    return out


async def check_endpoint(
    target: Target,
    *,
    seconds: float = DEFAULT_TIMEOUT,
    proxy: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Check:
    """One line for ``target``: how each step went, or the one that failed."""
    label = f"{target.host}:{target.port}" + (f" ({target.note})" if target.note else "")
    via = f" through {proxy}" if proxy else ""
    try:
        steps = await reach(target, seconds=seconds, proxy=proxy, ssl_context=ssl_context)
    except Unreachable as exc:
        return Check(target.role, "fail", f"{label}{via}: {exc.reason}", exc.fix)
    return Check(target.role, "ok", f"{label}{via}: {steps}")


async def _check_daemon(config: Config, seconds: float) -> Check:
    """The daemon's health."""
    return (await _daemon_checks(config, seconds))[0]


async def _daemon_checks(config: Config, seconds: float) -> list[Check]:
    """The daemon's health, and (when it answers) what YouTube thinks of it."""
    base = daemon_base_url(config)
    where = base.removeprefix("http://")
    try:
        report = await fetch_report(base, seconds, token=config.server.token)
    except DaemonNotAnswering as exc:
        return [Check("daemon", "fail", f"nothing answers on {where} ({exc.reason})",
                      "start it: `ytproxy serve` or `systemctl --user start ytproxy`; "
                      "if it runs elsewhere, set [server] host/port")]
    health = report.health
    resolver = report.status.get("resolver")
    client = resolver.get("client") if isinstance(resolver, dict) else None
    using = f"; player client in use: {client}" if isinstance(client, str) else ""
    youtube = youtube_check(resolver if isinstance(resolver, dict) else {})
    others = [youtube] if youtube is not None else []
    # The refusal is said once, by its own line.
    reasons = tuple(r for r in health.reasons if not r.startswith("youtube: "))
    if health.ok:
        return [Check("daemon", "ok", f"answering on {where}: healthy{using}"), *others]
    if youtube is not None and not reasons:
        return [Check("daemon", "ok", f"answering on {where}: {health.status} only by "
                      f"YouTube's refusal (next line){using}"), *others]
    return [Check("daemon", "warn", f"answering on {where}, but {health.status}{using}",
                  "see `ytproxy status` for what is failing", reasons), *others]


def youtube_check(resolver: dict[str, Any]) -> Check | None:
    """One line on YouTube's refusal state as the daemon reports it: a bot
    check fails (it lasts until something changes), a rate limit warns (it
    passes by itself); None when the daemon says nothing of it."""
    youtube = resolver.get("youtube")
    if not isinstance(youtube, dict):
        return None
    reason = refusal_reason(youtube)
    if reason is None:
        return Check("youtube", "ok", "no refusal from YouTube")
    line = reason.removeprefix("youtube: ")
    if youtube.get("state") == "bot_check":
        return Check("youtube", "fail", line)
    return Check("youtube", "warn", line)


async def _check_mpd(config: Config, seconds: float) -> Check:
    """MPD where the daemon looks for it: [mpd] host, MPD_HOST, else where mpc looks."""
    try:
        candidates = mpd_candidates(config.mpd.host, config.mpd.port, os.environ)
    except ValueError as exc:
        return Check("mpd", "fail", str(exc), "fix or unset MPD_PORT")
    if len(candidates) == 1:
        host, port, _ = candidates[0]
        return await _probe_mpd(host, port, seconds)
    tried: list[str] = []
    for host, port, _ in candidates:
        check = await _probe_mpd(host, port, seconds)
        if check.level == "ok":
            return Check("mpd", "ok", f"{check.detail} (found where mpc looks; no [mpd] host)")
        tried.append(check.detail)
    return Check("mpd", "warn", "no MPD found where mpc looks: " + "; ".join(tried) +
                 "; look-ahead is off until one answers",
                 "start MPD, or set [mpd] host/port (or MPD_HOST) to where it listens")


async def _probe_mpd(host: str, port: int, seconds: float) -> Check:
    where = host if host.startswith("/") else f"{host}:{port}"
    fix = "is MPD running (`systemctl --user status mpd`)? check [mpd] host/port"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(seconds):
            if host.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(host)
            else:
                reader, writer = await asyncio.open_connection(host, port)
            greeting = (await reader.readline()).decode("utf-8", "replace").strip()
            writer.write(b"close\n")
    except TimeoutError:
        return Check("mpd", "fail", f"no answer from {where} within {seconds:g} s", fix)
    except (ConnectionRefusedError, FileNotFoundError):
        return Check("mpd", "fail", f"nothing listens on {where}", fix)
    except OSError as exc:
        return Check("mpd", "fail", f"cannot reach MPD at {where}: {exc.strerror or exc}", fix)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    match = re.fullmatch(r"OK MPD (\S+)", greeting)
    if match is None:
        return Check("mpd", "fail", f"{where} answered, but not like MPD: {greeting[:60]!r}",
                     "check [mpd] port")
    return Check("mpd", "ok", f"MPD {match.group(1)} at {where}")


# --------------------------------------------------------------------- running them


async def run_checks(
    config_path: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    today: dt.date | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> list[Check]:
    """Every check, in a fixed order; the slow ones run at the same time."""
    today = today or dt.date.today()
    config, config_check = _check_config(config_path)
    setting = config.resolver.js_runtime if config is not None else "auto"
    local: list[asyncio.Future[Check]] = [
        asyncio.ensure_future(asyncio.to_thread(_check_ytdlp, today)),
        asyncio.ensure_future(asyncio.to_thread(_check_js_runtime, setting)),
    ]
    if config is None:
        results = [config_check, *await asyncio.gather(*local), _check_ejs()]
        return [*results, Check("others", "skip",
                                "store, network, daemon and MPD need a valid config")]
    source = source_target(config)
    targets: list[Target | Check] = [source]
    targets += upstream_targets(config, source if isinstance(source, Target) else None)
    store = asyncio.to_thread(_probe_store, config.store.resolved_path,
                              min(config.store.busy_timeout, timeout))
    network = [
        check_endpoint(t, seconds=timeout, ssl_context=ssl_context,
                       proxy=proxy_for(t, config.upstream.proxy))
        for t in targets if isinstance(t, Target)
    ]
    daemon = asyncio.ensure_future(_daemon_checks(config, timeout))
    po_token = asyncio.ensure_future(_po_token_checks(config, timeout))
    store_check, ytdlp_check, runtime_check, *reached = await asyncio.gather(
        store, *local, *network, _check_mpd(config, timeout),
    )
    daemon_checks = await daemon
    *endpoint_checks, mpd_check = reached
    endpoints = iter(endpoint_checks)
    network_checks = [next(endpoints) if isinstance(t, Target) else t for t in targets]
    return [config_check, store_check, ytdlp_check, _check_ejs(), runtime_check,
            _check_cookies(config.resolver), *await po_token, *network_checks, *daemon_checks,
            mpd_check]


async def _po_token_checks(config: Config, timeout: float) -> list[Check]:  # noqa: ASYNC109
    """The player clients in force, and the PO-token provider that serves them."""
    runtime = await asyncio.to_thread(find_js_runtime, config.resolver.js_runtime)
    view = await asyncio.to_thread(read_ytdlp_view, config, runtime is not None)
    return [check_player_clients(config, view),
            await check_pot_provider(config, view, timeout)]


def format_checks(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines: list[str] = []
    for c in checks:
        lines.append(f"{c.level:<5} {c.name:<{width}}  {c.detail}")
        lines.extend(f"{'':<5} {'':<{width}}    {extra}" for extra in c.more)
        if c.fix and c.level in ("warn", "fail"):
            lines.append(f"{'':<5} {'':<{width}}  → {c.fix}")
    fails = sum(c.level == "fail" for c in checks)
    warns = sum(c.level == "warn" for c in checks)
    if fails:
        lines.append(f"\n{fails} failed, {warns} warning(s): fix the failures above")
    elif warns:
        lines.append(f"\nnothing failed; {warns} warning(s) above")
    else:
        lines.append("\nall checks passed")
    return "\n".join(lines) + "\n"


def run_doctor(config_path: str | None, timeout: float = DEFAULT_TIMEOUT) -> int:
    """The ``ytproxy doctor`` command: print every check; 1 when any failed."""
    checks = asyncio.run(run_checks(config_path, timeout=timeout))
    sys.stdout.write(format_checks(checks))
    return 1 if any(c.level == "fail" for c in checks) else 0
