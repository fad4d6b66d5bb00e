"""Playlists that stay in sync: the schedule (pure), the store's table and its
migration, and the daemon following a loopback source through the real yt-dlp
(its generic extractor reading an RSS page) while the real CLI adds, lists,
unsyncs and removes: the playlist and its M3U follow the source's order and
content, a failing source leaves both byte for byte and shows its error in
`ytproxy playlists`, /status and the page at /, and a restart keeps it all."""

from __future__ import annotations

import asyncio
import html
import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.local_servers import free_port, running_daemon, write_toml
from tests.test_cli import Result, cli_env, run_ytproxy
from ytproxy.cli.status_view import mpd_line, sync_lines
from ytproxy.config import ConfigError, config_from_mapping, parse_interval
from ytproxy.library import store as store_module
from ytproxy.library.store import SCHEMA_VERSION, Store
from ytproxy.library.sync import (
    BACKOFF_BASE,
    PlaylistSyncer,
    due_now,
    next_attempt,
    next_wake,
    poll_period,
)
from ytproxy.models import PlaylistSync

IDS = ["SyncSong_01", "SyncSong_02", "SyncSong_03", "SyncSong_04"]
SYNC_VERSION = 6  # the schema version that added playlist_sync
WAIT = 30.0  # every wait for the daemon is bounded by this


# --------------------------------------------------------------------------- the schedule


def schedule(name: str, *, every: float = 60.0, next_sync: float = 0.0,
             failures: int = 0) -> PlaylistSync:
    return PlaylistSync(name=name, source_url=f"https://example.invalid/{name}", every=every,
                        next_sync=next_sync, failures=failures)


def test_next_attempt_backs_off_and_never_waits_past_the_interval() -> None:
    day = 86400.0
    assert next_attempt(now=100.0, every=day, failures=0) == 100.0 + day
    assert [next_attempt(now=0.0, every=day, failures=n) for n in (1, 2, 3, 4)] == [
        BACKOFF_BASE, 2 * BACKOFF_BASE, 4 * BACKOFF_BASE, 8 * BACKOFF_BASE]
    assert next_attempt(now=0.0, every=day, failures=1000) == day  # capped, no overflow
    assert next_attempt(now=10.0, every=2.0, failures=3) == 12.0  # short intervals stay short


def test_due_now_is_the_longest_overdue_first() -> None:
    late, later, future = (schedule("b", next_sync=5.0), schedule("a", next_sync=1.0),
                           schedule("c", next_sync=50.0))
    assert due_now([late, later, future], now=10.0) == [later, late]
    assert due_now([future], now=10.0) == []
    assert due_now([schedule("x", next_sync=10.0)], now=10.0)[0].name == "x"  # due at once


def test_next_wake_and_poll_period() -> None:
    assert next_wake([], now=0.0, poll=30.0) == 30.0
    assert next_wake([schedule("a", next_sync=7.0)], now=5.0, poll=30.0) == 2.0
    assert next_wake([schedule("a", next_sync=700.0)], now=5.0, poll=30.0) == 30.0
    assert next_wake([schedule("a", next_sync=1.0)], now=5.0, poll=30.0) == 0.0  # overdue
    assert poll_period([]) == 30.0
    assert poll_period([schedule("a", every=6 * 3600), schedule("b", every=2.0)]) == 2.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("6h", 21600.0), ("30m", 1800.0), ("90s", 90.0), ("1h30m", 5400.0), ("2d", 172800.0),
    ("1s", 1.0), (" 6H ", 21600.0)])
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6 h", "-1h", "0s", "1.5h", "400d", "6hours",
                                  "1" * 50 + "s"])
def test_parse_interval_refuses(text: str) -> None:
    assert parse_interval(text) is None


def test_sync_every_config_key() -> None:
    assert config_from_mapping({}).library.sync_every_seconds == 6 * 3600
    assert config_from_mapping({"library": {"sync_every": "90s"}}).library.sync_every_seconds \
        == 90.0
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"library": {"sync_every": "soon"}})
    assert "library.sync_every" in str(info.value) and "'soon'" in str(info.value)


async def test_the_syncer_records_successes_and_failures() -> None:
    now = [1000.0]
    stored = {"ok": schedule("ok", every=60.0, next_sync=990.0),
              "bad": schedule("bad", every=3600.0, next_sync=995.0, failures=2),
              "later": schedule("later", every=60.0, next_sync=2000.0)}
    synced: list[str] = []
    recorded: list[tuple[str, float, float, str | None]] = []
    done = asyncio.Event()

    async def schedules() -> list[PlaylistSync]:
        return list(stored.values())

    async def sync(name: str, url: str) -> str:
        synced.append(name)
        if name == "bad":
            raise RuntimeError("HTTP Error 404: Not Found")
        return "fine"

    async def record(name: str, *, at: float, next_sync: float, error: str | None = None
                     ) -> None:
        recorded.append((name, at, next_sync, error))
        old = stored[name]
        stored[name] = PlaylistSync(old.name, old.source_url, old.every, next_sync,
                                    failures=0 if error is None else old.failures + 1,
                                    last_error=error)
        if len(recorded) == 2:
            done.set()

    syncer = PlaylistSyncer(schedules=schedules, sync=sync, record=record,
                            clock=lambda: now[0], poll_every=0.05)
    await syncer.start()
    try:
        async with asyncio.timeout(WAIT):
            await done.wait()
    finally:
        await syncer.aclose()
    assert synced[:2] == ["ok", "bad"]  # the longest overdue first; "later" not yet
    assert recorded[0] == ("ok", 1000.0, 1060.0, None)
    # The third failure in a row: 5 min * 2**2.
    assert recorded[1] == ("bad", 1000.0, 1000.0 + 4 * BACKOFF_BASE,
                           "HTTP Error 404: Not Found")
    assert syncer.report() == {"syncing": None, "attempts": 2, "failures": 1}


# --------------------------------------------------------------------------- the store


async def test_sync_schedules_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    try:  # a store of the version before: a playlist, no schedules
        for script in store_module.MIGRATIONS[: SYNC_VERSION - 1]:
            conn.executescript(script)
        conn.execute("INSERT INTO tracks (id, source_url, added_at) VALUES (?, ?, ?)",
                     (IDS[0], "https://x.invalid/1", 1.0))
        conn.execute("INSERT INTO playlists (name, created_at, updated_at) VALUES "
                     "('Mix', 1, 1)")
        conn.execute("INSERT INTO playlist_tracks VALUES ('Mix', 0, ?)", (IDS[0],))
        conn.execute(f"PRAGMA user_version = {SYNC_VERSION - 1}")
        conn.commit()
    finally:
        conn.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION >= SYNC_VERSION
        assert await store.list_syncs() == []
        made = await store.set_sync("Mix", "https://x.invalid/list", 7200.0, 50.0)
        assert made == PlaylistSync("Mix", "https://x.invalid/list", 7200.0, 50.0)
        await store.record_sync("Mix", at=60.0, next_sync=360.0, error="HTTP Error 404")
        await store.record_sync("Mix", at=360.0, next_sync=960.0, error="HTTP Error 500")
        failed = await store.get_sync("Mix")
        assert failed is not None
        assert (failed.failures, failed.last_error, failed.last_attempt, failed.last_sync) == (
            2, "HTTP Error 500", 360.0, None)
        await store.record_sync("Mix", at=960.0, next_sync=8160.0)
        assert await store.get_sync("Mix") == PlaylistSync(
            "Mix", "https://x.invalid/list", 7200.0, 8160.0, last_sync=960.0,
            last_attempt=960.0, last_error=None, failures=0)
        # Following again keeps the record of the attempts.
        again = await store.set_sync("Mix", "https://x.invalid/list", 60.0, 9000.0)
        assert (again.every, again.next_sync, again.last_sync) == (60.0, 9000.0, 960.0)
        assert await store.unsync("Mix") and not await store.unsync("Mix")
        assert (await store.get_playlist("Mix")) is not None  # the playlist stays
        await store.set_sync("Mix", "https://x.invalid/list", 60.0, 9000.0)
        assert await store.delete_playlist("Mix")
        assert await store.list_syncs() == []  # the schedule went with it
        assert await store.get(IDS[0]) is not None  # the track stays
    finally:
        await store.close()


# --------------------------------------------------------------------------- the daemon


class Source:
    """A loopback playlist page: an RSS feed of YouTube watch links, which yt-dlp's
    generic extractor lists without contacting YouTube; ``status`` makes it fail."""

    def __init__(self) -> None:
        self.ids = list(IDS[:3])
        self.status = 200
        self.hits: Counter[str] = Counter()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/list.xml"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/list.xml", self._list)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def _list(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.status != 200:
            return web.Response(status=self.status, text="no such playlist")
        items = "".join(
            f"<item><title>Artist {i[-1]} - Song {i[-1]}</title>"
            f"<link>https://www.youtube.com/watch?v={html.escape(i)}</link></item>"
            for i in self.ids)
        return web.Response(
            text=('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0">'
                  f"<channel><title>Sync Mix</title>{items}</channel></rss>"),
            content_type="application/rss+xml")


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    site = Source()
    await site.start()
    yield site
    assert site.server is not None
    await site.server.close()


class Setup:
    def __init__(self, tmp_path: Path, googlevideo: FakeGooglevideo) -> None:
        self.db = tmp_path / "data" / "tracks.db"
        self.playlists = tmp_path / "mpd-playlists"
        self.playlists.mkdir()
        self.port = free_port()
        self.config = write_toml(tmp_path / "config.toml", {
            "server": {"port": self.port},
            "store": {"path": str(self.db)},
            "resolver": {"source_url_template": googlevideo.watch_url_template,
                         "timeout": 20.0, "allow_private_sources": True,
                         "max_calls_per_minute": 6000},
            "upstream": {"allowed_hosts": ["127.0.0.1"]},
            "cache": {"max_size": 0},  # no look-ahead: nothing but the sync talks
            "mpd": {"playlist_directory": str(self.playlists)},
            "library": {"sync_every": "1s"},
        })
        self.env = cli_env(tmp_path)

    async def cli(self, *args: str) -> Result:
        return await run_ytproxy(self.env, "--config", str(self.config), *args)

    def m3u(self, ids: list[str]) -> str:
        lines = ["#EXTM3U"]
        for i in ids:
            lines += [f"#EXTINF:-1,Artist {i[-1]} - Song {i[-1]}",
                      f"http://127.0.0.1:{self.port}/proxy/{i}"]
        return "\n".join(lines) + "\n"

    async def stored(self, name: str) -> tuple[list[str] | None, int]:
        store = await Store.open(self.db)
        try:
            listed = await store.playlist_tracks(name)
            return (None if listed is None else [t.id for t in listed]), await store.count()
        finally:
            await store.close()


async def sync_status(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/status") as resp:
        assert resp.status == 200
        return dict((await resp.json())["sync"])


async def until_synced(session: aiohttp.ClientSession, port: int, what: str,
                       check: Any) -> dict[str, Any]:
    """/status's entry for 'Mix', polled until ``check`` holds for it."""
    entry: dict[str, Any] = {}
    for _ in range(int(WAIT / 0.05)):
        playlists = (await sync_status(session, port))["playlists"]
        entry = next((p for p in playlists if p["name"] == "Mix"), {})
        if entry and check(entry):
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {WAIT} s waiting for {what}; last: {entry}")


async def test_a_synced_playlist_follows_its_source_keeps_it_on_failure_and_survives_restarts(
    tmp_path: Path, googlevideo: FakeGooglevideo, source: Source,
) -> None:
    setup = Setup(tmp_path, googlevideo)
    imported = await setup.cli("import", source.url, "--name", "Mix", "--sync", "2s")
    assert imported.rc == 0, imported.err
    assert "imported playlist 'Mix': 3 tracks (3 added" in imported.out
    assert "synced every 2s" in imported.out
    m3u = setup.playlists / "Mix.m3u"
    assert m3u.read_text(encoding="utf-8") == setup.m3u(IDS[:3])

    listed = await setup.cli("playlists")
    assert listed.rc == 0, listed.err
    header, row = listed.out.splitlines()[:2]
    assert header.split() == ["NAME", "TRACKS", "SYNC", "LAST", "SYNC", "NEXT", "SYNC",
                              "SOURCE"]
    # The import was the first sync.
    assert row.split()[:3] == ["Mix", "3", "2s"] and row.endswith(source.url), row
    # Last sync just now ("now" within the second, else "Ns ago"); the next one
    # due about 2 s after it ("in 1s", "now" or already past on a slow machine).
    assert re.search(r" 2s +(now|\S+ ago) +(in \S+|now|\S+ ago) +http", row), row

    async with aiohttp.ClientSession() as session:
        async with running_daemon(setup.config):
            # The source changed order and content: the daemon follows it.
            changed_at = time.time()
            source.ids = [IDS[2], IDS[3], IDS[0]]
            hits = source.hits["/list.xml"]
            await until_synced(session, setup.port, "a sync of the new content",
                               lambda p: p["last_sync"] >= changed_at)
            assert source.hits["/list.xml"] > hits
            assert await setup.stored("Mix") == ([IDS[2], IDS[3], IDS[0]], 4)  # none twice
            assert m3u.read_text(encoding="utf-8") == setup.m3u([IDS[2], IDS[3], IDS[0]])
            assert sorted(p.name for p in setup.playlists.iterdir()) == ["Mix.m3u"]

            # The source fails: playlist and M3U stay byte for byte, the error shows.
            written = m3u.read_bytes()
            source.status = 404
            failed = await until_synced(session, setup.port, "a failed sync",
                                        lambda p: p["last_error"] is not None)
            assert "404" in failed["last_error"], failed
            assert failed["failures"] >= 1 and failed["tracks"] == 3
            assert m3u.read_bytes() == written
            assert await setup.stored("Mix") == ([IDS[2], IDS[3], IDS[0]], 4)
            shown = await setup.cli("playlists")
            assert shown.rc == 0, shown.err
            error_lines = [line for line in shown.out.splitlines() if "last error" in line]
            assert len(error_lines) == 1 and "404" in error_lines[0], shown.out
            async with session.get(f"http://127.0.0.1:{setup.port}/playlists") as resp:
                over_http = (await resp.json())["playlists"]
            assert [(p["name"], p["sync"]["every_seconds"]) for p in over_http] == [("Mix", 2.0)]
            assert "404" in over_http[0]["sync"]["last_error"]
            status = await setup.cli("status")
            sync_line = [line for line in status.out.splitlines() if line.startswith("sync:")]
            assert len(sync_line) == 1 and "Mix: 3 tracks, failing (" in sync_line[0], status
            assert "404" in sync_line[0]
            async with session.get(f"http://127.0.0.1:{setup.port}/") as resp:
                page = await resp.text()
            assert "Synced playlists" in page and "404" in page
            # Retried with backoff (short here: never past the 2 s interval).
            await until_synced(session, setup.port, "a second failed attempt",
                               lambda p: p["failures"] >= 2)
            assert m3u.read_bytes() == written

        # Stopped: the schedule and its source are in the store.
        stopped = await setup.cli("playlists", "--json")
        assert stopped.rc == 0, stopped.err
        entry = json.loads(stopped.out)["playlists"][0]
        assert entry["name"] == "Mix" and entry["tracks"] == 3
        assert entry["sync"]["source_url"] == source.url
        assert entry["sync"]["every_seconds"] == 2.0 and entry["sync"]["failures"] >= 2

        # Restarted, with the source back: the daemon syncs it again, unasked.
        source.status = 200
        source.ids = [IDS[1], IDS[0]]
        async with running_daemon(setup.config):
            back = await until_synced(session, setup.port, "a sync after the restart",
                                      lambda p: p["last_error"] is None)
            assert back["failures"] == 0 and back["tracks"] == 2
            assert await setup.stored("Mix") == ([IDS[1], IDS[0]], 4)  # left, never deleted
            assert m3u.read_text(encoding="utf-8") == setup.m3u([IDS[1], IDS[0]])

            # Unsynced while the daemon runs: the playlist and its M3U stay.
            unsynced = await setup.cli("playlists", "unsync", "Mix")
            assert unsynced.rc == 0, unsynced.err
            assert "no longer synced" in unsynced.out
            assert (await sync_status(session, setup.port))["playlists"] == []
            assert m3u.exists()
            again = await setup.cli("playlists", "unsync", "Mix")
            assert again.rc == 1 and "'Mix' is not synced" in again.err

            removed = await setup.cli("playlists", "remove", "Mix")
            assert removed.rc == 0, removed.err
            assert "removed playlist 'Mix' (2 tracks stay stored)" in removed.out
            assert not m3u.exists()
            assert await setup.stored("Mix") == (None, 4)


async def test_import_sync_refuses_a_bad_interval_and_takes_the_default(
    tmp_path: Path, googlevideo: FakeGooglevideo, source: Source,
) -> None:
    setup = Setup(tmp_path, googlevideo)
    bad = await setup.cli("import", source.url, "--name", "Mix", "--sync", "soon")
    assert bad.rc == 1 and "--sync 'soon' is not a time" in bad.err
    assert "Traceback" not in bad.err
    assert source.hits["/list.xml"] == 0  # refused before the page was read
    default = await setup.cli("import", source.url, "--name", "Mix", "--sync")
    assert default.rc == 0, default.err
    assert "synced every 1s" in default.out  # [library] sync_every
    other = await setup.cli("import", source.url + "?other", "--name", "Mix")
    assert other.rc == 0 and "'Mix' is still synced every 1s from " + source.url in other.err
    plain = await setup.cli("import", source.url, "--name", "Plain")
    assert plain.rc == 0 and "synced" not in plain.out
    listed = json.loads((await setup.cli("playlists", "--json")).out)["playlists"]
    assert [(p["name"], p["sync"] and p["sync"]["every_seconds"]) for p in listed] == [
        ("Mix", 1.0), ("Plain", None)]
    unknown = await setup.cli("playlists", "remove", "Nope")
    assert unknown.rc == 1 and "no playlist named 'Nope'" in unknown.err
    assert "'Mix'" in unknown.err
    no_name = await setup.cli("playlists", "unsync")
    assert no_name.rc == 2 and "takes the playlist's NAME" in no_name.err
    plain_unsync = await setup.cli("playlists", "unsync", "Plain")
    assert plain_unsync.rc == 1 and "'Plain' is not synced" in plain_unsync.err


def test_status_lines_for_sync_and_an_mpd_not_found() -> None:
    assert sync_lines({"playlists": [
        {"name": "Mix", "tracks": 3, "last_sync": 5.0, "last_error": None},
        {"name": "New", "tracks": 1, "last_sync": None, "last_error": None},
        {"name": "Bad", "tracks": 2, "last_sync": None, "failures": 3,
         "last_error": "HTTP Error 404"}]}) == [
        "Mix: 3 tracks, in sync", "New: 1 track, not synced yet",
        "Bad: 2 tracks, failing (3 in a row): HTTP Error 404"]
    assert sync_lines({}) == []
    assert mpd_line({"following": True, "connected": False, "address": "/r/mpd/socket",
                     "tries": ["/r/mpd/socket", "/run/mpd/socket", "localhost:6600"]}) == (
        "looking for MPD at /r/mpd/socket, /run/mpd/socket or localhost:6600 (none answers; "
        "set [mpd] host or MPD_HOST)")
    assert mpd_line({"following": True, "connected": True, "address": "/r/mpd/socket",
                     "tries": ["/r/mpd/socket", "localhost:6600"], "upcoming": ["x"]}) == (
        "/r/mpd/socket connected; next: x")
