"""Named playlists: the store's schema and queries, the real yt-dlp listing a local
playlist page, `ytproxy import` / `m3u --playlist` as subprocesses, the M3U file
written for `mpc load`, and /playlist/{name}.m3u and /playlists over HTTP."""

from __future__ import annotations

import asyncio
import html
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import MpdInstance
from tests.proxy_fixture import ProxyFactory, random_audio
from tests.test_cli import Result, cli_env, run_ytproxy
from ytproxy.config import BreakerConfig, ResolverConfig
from ytproxy.errors import (
    InvalidPlaylistName,
    ResolverFailed,
    ResolverUnavailable,
    StoreError,
)
from ytproxy.http.app import STORE, TRACKS
from ytproxy.library import store as store_module
from ytproxy.library.playlists import check_playlist_name, safe_playlist_name, write_m3u_file
from ytproxy.library.store import SCHEMA_VERSION, Store
from ytproxy.resolve import ytdlp_process
from ytproxy.resolve.resolver import Resolver

# 11-character ids the fake googlevideo can serve; none is a real YouTube video.
IDS = ["PlayList_01", "PlayList_02", "PlayList_03"]
NEW = "PlayList_04"
TITLE = "My Mix: 2024/Best"
DEFAULT_NAME = "My Mix 2024 Best"  # the safe form of TITLE
BASE = "http://127.0.0.1:6602"  # the default [server] host and port
PLAYLISTS_VERSION = 3  # the schema version that added playlists


# --------------------------------------------------------------------------- pages


class PlaylistPages:
    """A loopback web site with playlist pages yt-dlp's generic extractor reads.

    ``/list.html`` embeds each id as ``<iframe src="https://www.youtube.com/embed/ID">``:
    yt-dlp lists them (ie ``Youtube``) without contacting YouTube. ``/feed.xml`` is an
    RSS feed whose items carry a title and an ``itunes:duration``.
    """

    def __init__(self) -> None:
        self.title = TITLE
        self.ids = list(IDS)
        self.feed = [(IDS[0], "Feed Song One", "3:33"), (IDS[1], "Feed Song Two", "252")]
        self.links: list[str] = []  # the items' links of /links.xml
        self.hits: Counter[str] = Counter()
        self.server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/list.html", self._list)
        app.router.add_get("/feed.xml", self._feed)
        app.router.add_get("/links.xml", self._links)
        app.router.add_get("/empty.html", self._empty)
        app.router.add_get("/gone.html", self._gone)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def _list(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        frames = "\n".join(
            f'<iframe src="https://www.youtube.com/embed/{i}"></iframe>' for i in self.ids
        )
        page = (f"<html><head><title>{html.escape(self.title)}</title></head>"
                f"<body>\n{frames}\n</body></html>")
        return web.Response(text=page, content_type="text/html")

    async def _feed(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        items = "".join(
            f"<item><title>{t}</title><link>https://www.youtube.com/watch?v={i}</link>"
            f"<itunes:duration>{d}</itunes:duration></item>"
            for i, t, d in self.feed
        )
        text = ('<?xml version="1.0" encoding="UTF-8"?>'
                '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
                f"<channel><title>Feed Mix</title>{items}</channel></rss>")
        return web.Response(text=text, content_type="application/rss+xml")

    async def _links(self, request: web.Request) -> web.Response:
        """An RSS feed of ``self.links``: entries yt-dlp lists whatever they point at."""
        self.hits[request.path] += 1
        items = "".join(f"<item><title>Entry {n}</title><link>{html.escape(link)}</link></item>"
                        for n, link in enumerate(self.links, 1))
        text = ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0">'
                f"<channel><title>Link Mix</title>{items}</channel></rss>")
        return web.Response(text=text, content_type="application/rss+xml")

    async def _empty(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(text="<html><head><title>Nothing</title></head><body>hi</body>"
                                 "</html>", content_type="text/html")

    async def _gone(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        raise web.HTTPNotFound()


@pytest.fixture
async def pages() -> AsyncIterator[PlaylistPages]:
    site = PlaylistPages()
    await site.start()
    yield site
    assert site.server is not None
    await site.server.close()


# Every address yt-dlp (or anything else in this process) connects to while recording.
_connects: list[Any] | None = None
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _connects is not None and event in ("socket.connect", "socket.getaddrinfo"):
        _connects.append(args[1] if event == "socket.connect" else args[0])


@pytest.fixture
def connects() -> Any:
    """Records the hosts contacted during the test (audit hooks cannot be removed,
    so one hook is installed once and switched on and off)."""
    global _connects, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _connects = []
    yield _connects
    _connects = None


def resolver_config(**changes: Any) -> ResolverConfig:
    values: dict[str, Any] = {"timeout": 20.0, "max_calls_per_minute": 6000}
    values.update(changes)
    return ResolverConfig(**values)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "My Mix", "road-trip_2024", "v1.2", "_x", "9" * 64])
def test_valid_playlist_names(name: str) -> None:
    assert check_playlist_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "..", "a/b", "a\\b", "-x", " x", "x ", "tab\there", "Café", "x" * 65,
     "new\nline"],
)
def test_invalid_playlist_names_are_refused_naming_the_value(name: str) -> None:
    with pytest.raises(InvalidPlaylistName) as info:
        check_playlist_name(name)
    assert repr(name) in str(info.value)
    assert "playlist name" in str(info.value)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (TITLE, DEFAULT_NAME),
        ("Café del Mar", "Cafe del Mar"),
        ("../../etc/passwd", "etc passwd"),
        ("   .hidden ", "hidden"),
        ("日本の歌", "fallback"),
        (None, "fallback"),
        ("x" * 100, "x" * 64),
    ],
)
def test_safe_playlist_name(title: str | None, expected: str) -> None:
    assert safe_playlist_name(title, "fallback") == expected


def test_write_m3u_file_replaces_atomically(tmp_path: Path) -> None:
    target = write_m3u_file(tmp_path, "Mix", "#EXTM3U\none\n")
    assert target == tmp_path / "Mix.m3u"
    assert target.stat().st_mode & 0o777 == 0o644
    target.chmod(0o640)
    write_m3u_file(tmp_path, "Mix", "#EXTM3U\ntwo\n")
    assert target.read_text() == "#EXTM3U\ntwo\n"
    assert target.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Mix.m3u"]  # no temp file left
    with pytest.raises(FileNotFoundError):
        write_m3u_file(tmp_path / "missing", "Mix", "#EXTM3U\n")
    with pytest.raises(InvalidPlaylistName):
        write_m3u_file(tmp_path, "../escape", "#EXTM3U\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Mix.m3u"]


# --------------------------------------------------------------------------- store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "tracks.db")
    try:
        yield opened
    finally:
        await opened.close()


async def add_tracks(store: Store, *ids: str) -> None:
    for track_id in ids:
        await store.upsert_track(track_id, f"https://www.youtube.com/watch?v={track_id}",
                                 title=f"Title {track_id}")


async def test_migration_from_previous_version_keeps_tracks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    try:
        for script in store_module.MIGRATIONS[: PLAYLISTS_VERSION - 1]:
            conn.executescript(script)
        conn.execute("INSERT INTO tracks (id, source_url, title, added_at, play_count) "
                     "VALUES (?, ?, ?, ?, ?)", (IDS[0], "https://x.invalid/1", "Old", 5.0, 2))
        conn.execute(f"PRAGMA user_version = {PLAYLISTS_VERSION - 1}")
        conn.commit()
    finally:
        conn.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION >= PLAYLISTS_VERSION
        track = await store.get(IDS[0])
        assert track is not None
        assert (track.title, track.play_count, track.added_at) == ("Old", 2, 5.0)
        assert await store.list_playlists() == []
        playlist = await store.replace_playlist("Kept", [IDS[0]])
        assert playlist.track_count == 1
    finally:
        await store.close()


async def test_replace_playlist_keeps_order_and_follows_changes(store: Store) -> None:
    await add_tracks(store, *IDS, NEW)
    first = await store.replace_playlist("Mix", IDS, source_url="https://x.invalid/p",
                                         title="The Mix")
    assert (first.name, first.title, first.source_url, first.track_count) == (
        "Mix", "The Mix", "https://x.invalid/p", 3)
    listed = await store.playlist_tracks("Mix")
    assert listed is not None and [t.id for t in listed] == IDS
    # Same again: nothing doubles.
    await store.replace_playlist("Mix", IDS)
    listed = await store.playlist_tracks("Mix")
    assert listed is not None and [t.id for t in listed] == IDS
    # A new order, one gone, one new, one repeated: followed exactly.
    order = [NEW, IDS[2], IDS[0], NEW]
    again = await store.replace_playlist("Mix", order)
    listed = await store.playlist_tracks("Mix")
    assert listed is not None and [t.id for t in listed] == order
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    assert again.title == "The Mix" and again.source_url == "https://x.invalid/p"
    assert await store.count() == 4  # playlists never remove tracks


async def test_list_get_delete_playlists(store: Store) -> None:
    await add_tracks(store, *IDS)
    await store.replace_playlist("b list", IDS[:1])
    await store.replace_playlist("a list", IDS)
    await store.replace_playlist("empty", [])
    assert [(p.name, p.track_count) for p in await store.list_playlists()] == [
        ("a list", 3), ("b list", 1), ("empty", 0)]
    assert await store.playlist_tracks("empty") == []
    assert await store.playlist_tracks("unknown") is None
    assert await store.get_playlist("unknown") is None
    assert await store.delete_playlist("a list") is True
    assert await store.delete_playlist("a list") is False
    assert await store.playlist_tracks("a list") is None
    assert await store.count() == 3
    # The entries went with the playlist: a new one of the same name starts empty.
    await store.replace_playlist("a list", [])
    assert await store.playlist_tracks("a list") == []


async def test_removing_a_track_drops_it_from_playlists(store: Store) -> None:
    await add_tracks(store, *IDS)
    await store.replace_playlist("Mix", IDS)
    assert await store.remove(IDS[1]) is True
    listed = await store.playlist_tracks("Mix")
    assert listed is not None and [t.id for t in listed] == [IDS[0], IDS[2]]


async def test_replace_is_all_or_nothing(store: Store) -> None:
    await add_tracks(store, *IDS)
    await store.replace_playlist("Mix", IDS)
    with pytest.raises(StoreError):
        await store.replace_playlist("Mix", [IDS[2], "NotStored01"])
    listed = await store.playlist_tracks("Mix")
    assert listed is not None and [t.id for t in listed] == IDS


async def test_fill_metadata_fills_gaps_only(store: Store) -> None:
    await store.upsert_track(IDS[0], "https://x.invalid/1", title="Stored", duration=None)
    await store.fill_metadata(IDS[0], title="Listed", artist="Channel", duration=99.0)
    track = await store.get(IDS[0])
    assert track is not None
    assert (track.title, track.artist, track.duration) == ("Stored", "Channel", 99.0)


async def test_store_refuses_invalid_names(store: Store) -> None:
    with pytest.raises(InvalidPlaylistName) as info:
        await store.replace_playlist("../etc", [])
    assert "'../etc'" in str(info.value)
    assert await store.list_playlists() == []


# --------------------------------------------------------------------------- resolver


async def test_list_playlist_reads_youtube_embeds_without_contacting_youtube(
    pages: PlaylistPages, connects: list[Any]
) -> None:
    resolver = Resolver(resolver_config())
    try:
        title, entries = await resolver.list_playlist(pages.url("/list.html"))
    finally:
        await resolver.close()
    assert title == TITLE
    assert [e.url for e in entries] == [f"https://www.youtube.com/embed/{i}" for i in IDS]
    assert pages.hits["/list.html"] == 1
    # yt-dlp runs in a worker process, out of this audit hook's sight: the same
    # call, with the resolver's options, here.
    options = resolver._options(extract_flat="in_playlist")
    answer = await asyncio.to_thread(
        ytdlp_process._answer, {"url": pages.url("/list.html"), "options": options})
    assert answer["info"]["title"] == TITLE
    contacted = {c[0] if isinstance(c, tuple) else c for c in connects}
    assert contacted == {"127.0.0.1"}, connects


async def test_list_playlist_takes_titles_and_durations_from_entries(
    pages: PlaylistPages,
) -> None:
    resolver = Resolver(resolver_config())
    try:
        title, entries = await resolver.list_playlist(pages.url("/feed.xml"))
    finally:
        await resolver.close()
    assert title == "Feed Mix"
    assert [(e.url, e.title, e.duration) for e in entries] == [
        (f"https://www.youtube.com/watch?v={IDS[0]}", "Feed Song One", 213.0),
        (f"https://www.youtube.com/watch?v={IDS[1]}", "Feed Song Two", 252.0),
    ]


async def test_list_playlist_errors_are_classified(
    pages: PlaylistPages, googlevideo: FakeGooglevideo
) -> None:
    googlevideo.add_track(IDS[0], random_audio(1000), title="A Single Track")
    resolver = Resolver(resolver_config())
    try:
        with pytest.raises(ResolverFailed) as gone:
            await resolver.list_playlist(pages.url("/gone.html"))
        assert "playlist" in str(gone.value) and "404" in str(gone.value)
        with pytest.raises(ResolverFailed) as single:
            await resolver.list_playlist(googlevideo.watch_url(IDS[0]))
        assert "single track, not a playlist" in str(single.value)
        with pytest.raises(ResolverFailed):
            await resolver.list_playlist(pages.url("/empty.html"))
    finally:
        await resolver.close()
    assert resolver.breaker.as_dict()["state"] == "closed"  # the source answered each time


async def test_list_playlist_passes_the_breaker(pages: PlaylistPages) -> None:
    resolver = Resolver(resolver_config(), BreakerConfig(failures=1, reset_after=60.0))
    dead = pages.url("/list.html").replace(f":{pages.server.port}", ":1")  # type: ignore[union-attr]
    try:
        with pytest.raises(ResolverUnavailable):
            await resolver.list_playlist(dead)  # connection refused: transient
        with pytest.raises(ResolverUnavailable) as info:
            await resolver.list_playlist(pages.url("/list.html"))
        assert info.value.retry_after is not None
    finally:
        await resolver.close()
    assert pages.hits["/list.html"] == 0  # the open breaker kept yt-dlp from asking


# --------------------------------------------------------------------------- CLI


Cli = Callable[..., Awaitable[Result]]


def write_config(path: Path, db: Path, template: str, playlist_directory: Path | None) -> Path:
    text = (f'[store]\npath = "{db}"\n'
            f'[resolver]\nsource_url_template = "{template}"\ntimeout = 20.0\n'
            # The playlist pages are on 127.0.0.1: let `import` read them.
            "allow_private_sources = true\n")
    if playlist_directory is not None:
        text += f'[mpd]\nplaylist_directory = "{playlist_directory}"\n'
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tracks.db"


@pytest.fixture
def mpd_playlists(tmp_path: Path) -> Path:
    directory = tmp_path / "mpd-playlists"
    directory.mkdir()
    return directory


@pytest.fixture
def cli(tmp_path: Path, db: Path, googlevideo: FakeGooglevideo, mpd_playlists: Path) -> Cli:
    """The CLI with [mpd] playlist_directory set and ids resolving through the fake."""
    config = write_config(tmp_path / "config.toml", db, googlevideo.watch_url_template,
                          mpd_playlists)
    env = cli_env(tmp_path)

    async def run(*args: str) -> Result:
        return await run_ytproxy(env, "--config", str(config), *args)

    return run


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def stored(db: Path, name: str) -> tuple[list[str] | None, int]:
    store = await Store.open(db)
    try:
        listed = await store.playlist_tracks(name)
        return (None if listed is None else [t.id for t in listed]), await store.count()
    finally:
        await store.close()


def expected_m3u(ids: list[str], names: list[str] | None = None) -> str:
    lines = ["#EXTM3U"]
    for i, track_id in enumerate(ids):
        lines += [f"#EXTINF:-1,{names[i] if names else track_id}", f"{BASE}/proxy/{track_id}"]
    return "\n".join(lines) + "\n"


async def test_import_adds_entries_in_order_and_writes_the_m3u(
    cli: Cli, pages: PlaylistPages, db: Path, mpd_playlists: Path, googlevideo: FakeGooglevideo
) -> None:
    result = await cli("import", pages.url("/list.html"))
    assert result.rc == 0, result.err
    # Progress on stderr, one line per entry (stderr is not a terminal here).
    for n, track_id in enumerate(IDS, 1):
        assert f"importing {n}/3: {track_id}\n" in result.err
    assert "reading the playlist at" in result.err
    assert f"imported playlist '{DEFAULT_NAME}': 3 tracks (3 added, 0 already stored)" in (
        result.out)
    assert f"mpc load '{DEFAULT_NAME}'" in result.out
    assert f"{BASE}/playlist/{quote(DEFAULT_NAME)}.m3u" in result.out
    assert await stored(db, DEFAULT_NAME) == (IDS, 3)
    m3u = mpd_playlists / f"{DEFAULT_NAME}.m3u"
    assert m3u.read_text(encoding="utf-8") == expected_m3u(IDS)
    assert listing(mpd_playlists) == [m3u.name]
    # Nothing was resolved: the first play does that, one track at a time.
    assert googlevideo.watch_hits == Counter()

    # The same M3U from the CLI.
    printed = await cli("m3u", "--playlist", DEFAULT_NAME)
    assert printed.rc == 0, printed.err
    assert printed.out == expected_m3u(IDS)

    # Re-import: idempotent.
    again = await cli("import", pages.url("/list.html"))
    assert again.rc == 0, again.err
    assert "3 tracks (0 added, 3 already stored)" in again.out
    assert await stored(db, DEFAULT_NAME) == (IDS, 3)
    assert m3u.read_text(encoding="utf-8") == expected_m3u(IDS)

    # The source changed order, dropped one and gained one: the playlist follows.
    pages.ids = [IDS[2], NEW, IDS[0]]
    changed = await cli("import", pages.url("/list.html"))
    assert changed.rc == 0, changed.err
    assert "3 tracks (1 added, 2 already stored)" in changed.out
    assert await stored(db, DEFAULT_NAME) == (pages.ids, 4)
    assert m3u.read_text(encoding="utf-8") == expected_m3u(pages.ids)
    assert listing(mpd_playlists) == [m3u.name]


async def test_import_with_name_and_metadata(
    cli: Cli, pages: PlaylistPages, db: Path, mpd_playlists: Path
) -> None:
    result = await cli("import", pages.url("/feed.xml"), "--name", "Road Trip")
    assert result.rc == 0, result.err
    assert "importing 1/2: Feed Song One\n" in result.err
    assert "importing 2/2: Feed Song Two\n" in result.err
    assert "mpc load 'Road Trip'" in result.out
    m3u = (mpd_playlists / "Road Trip.m3u").read_text(encoding="utf-8")
    assert m3u == (
        "#EXTM3U\n"
        f"#EXTINF:213,Feed Song One\n{BASE}/proxy/{IDS[0]}\n"
        f"#EXTINF:252,Feed Song Two\n{BASE}/proxy/{IDS[1]}\n"
    )
    store = await Store.open(db)
    try:
        track = await store.get(IDS[0])
        assert track is not None
        assert (track.title, track.duration, track.stream_url) == ("Feed Song One", 213.0, None)
        assert [p.name for p in await store.list_playlists()] == ["Road Trip"]
    finally:
        await store.close()


async def test_m3u_playlist_unknown_and_invalid_names(cli: Cli, pages: PlaylistPages) -> None:
    none_yet = await cli("m3u", "--playlist", "Nope")
    assert none_yet.rc == 1
    assert "no playlist named 'Nope'" in none_yet.err and "ytproxy import" in none_yet.err
    assert none_yet.out == ""
    assert (await cli("import", pages.url("/list.html"), "--name", "Mix")).rc == 0
    unknown = await cli("m3u", "--playlist", "Nope")
    assert unknown.rc == 1 and "no playlist named 'Nope'" in unknown.err
    assert "'Mix'" in unknown.err  # the known ones are listed
    invalid = await cli("m3u", "--playlist", "../Mix")
    assert invalid.rc == 1 and "'../Mix' is not a usable playlist name" in invalid.err
    both = await cli("m3u", "--playlist", "Mix", "--all")
    assert both.rc == 2
    # The old forms still work.
    everything = await cli("m3u", "--all")
    assert everything.rc == 0 and everything.out == expected_m3u(IDS)
    some = await cli("m3u", IDS[1])
    assert some.rc == 0 and some.out == expected_m3u([IDS[1]])


async def test_import_refuses_an_invalid_name_before_reading_the_page(
    cli: Cli, pages: PlaylistPages, db: Path
) -> None:
    result = await cli("import", pages.url("/list.html"), "--name", ".hidden")
    assert result.rc == 1
    assert "'.hidden' is not a usable playlist name" in result.err
    assert pages.hits["/list.html"] == 0


async def test_import_failures_are_reported(
    cli: Cli, pages: PlaylistPages, db: Path, tmp_path: Path, googlevideo: FakeGooglevideo
) -> None:
    gone = await cli("import", pages.url("/gone.html"))
    assert gone.rc == 1
    assert "cannot read the playlist at" in gone.err and "404" in gone.err
    assert "Traceback" not in gone.err

    # A playlist_directory that does not exist: stored anyway, then the error names it.
    missing = tmp_path / "no-such-dir"
    config = write_config(tmp_path / "missing.toml", db, googlevideo.watch_url_template,
                          missing)
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "import",
                               pages.url("/list.html"), "--name", "Mix")
    assert result.rc == 1
    assert str(missing / "Mix.m3u") in result.err and "playlist_directory" in result.err
    assert not missing.exists()
    assert await stored(db, "Mix") == (IDS, 3)


async def test_a_reimport_that_keeps_nothing_leaves_the_playlist_and_its_m3u(
    cli: Cli, pages: PlaylistPages, db: Path, mpd_playlists: Path
) -> None:
    ids = [f"KeepMeNo_{n:02d}" for n in range(20)]
    pages.links = [f"https://www.youtube.com/watch?v={i}" for i in ids]
    first = await cli("import", pages.url("/links.xml"), "--name", "Mix")
    assert first.rc == 0, first.err
    assert "imported playlist 'Mix': 20 tracks (20 added" in first.out
    m3u = mpd_playlists / "Mix.m3u"
    written = m3u.read_bytes()
    assert await stored(db, "Mix") == (ids, 20)

    # The source now lists only entries ytproxy cannot use.
    pages.links = ["ftp://files.example/one.mp3", "mailto:dj@example.com",
                   "ftp://files.example/three.mp3"]
    again = await cli("import", pages.url("/links.xml"), "--name", "Mix")
    assert again.rc == 1, again.out
    assert "Traceback" not in again.err
    refusal = [line for line in again.err.splitlines() if line.startswith("ytproxy: ")]
    assert len(refusal) == 1, again.err
    assert "'Mix'" in refusal[0] and "listed 3 entries" in refusal[0], refusal
    assert "3 skipped" in refusal[0] and "(20 tracks)" in refusal[0], refusal
    assert "imported playlist" not in again.out
    assert await stored(db, "Mix") == (ids, 20)
    assert m3u.read_bytes() == written
    assert listing(mpd_playlists) == ["Mix.m3u"]

    # Nor is a new playlist of nothing made.
    new = await cli("import", pages.url("/links.xml"), "--name", "Nothing")
    assert new.rc == 1 and "'Nothing'" in new.err and "it is not stored" in new.err
    assert await stored(db, "Nothing") == (None, 20)
    assert listing(mpd_playlists) == ["Mix.m3u"]


async def test_import_without_playlist_directory_says_how_to_get_the_m3u(
    tmp_path: Path, db: Path, pages: PlaylistPages, googlevideo: FakeGooglevideo
) -> None:
    config = write_config(tmp_path / "plain.toml", db, googlevideo.watch_url_template, None)
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "import",
                               pages.url("/list.html"), "--name", "Mix")
    assert result.rc == 0, result.err
    assert "ytproxy m3u --playlist Mix" in result.out and "mpc load" in result.out
    assert "wrote" not in result.out


# --------------------------------------------------------------------------- HTTP


async def test_playlists_over_http(
    make_proxy: ProxyFactory, pages: PlaylistPages, googlevideo: FakeGooglevideo
) -> None:
    data = random_audio(300_000)
    googlevideo.add_track(IDS[1], data, title="Second Song")
    proxy = await make_proxy(resolver={"allow_private_sources": True})  # pages on 127.0.0.1
    summary = await proxy.app[TRACKS].import_playlist(pages.url("/list.html"))
    assert (summary.name, summary.track_ids, summary.added) == (DEFAULT_NAME, tuple(IDS), 3)
    await proxy.app[TRACKS].import_playlist(pages.url("/feed.xml"), "feed")

    async with proxy.session.get(proxy.url("/playlists")) as resp:
        assert resp.status == 200
        listed = (await resp.json())["playlists"]
    assert [(p["name"], p["tracks"], p["title"]) for p in listed] == [
        (DEFAULT_NAME, 3, TITLE), ("feed", 2, "Feed Mix")]
    assert listed[0]["source_url"] == pages.url("/list.html")
    assert listed[0]["m3u"] == f"/playlist/{quote(DEFAULT_NAME)}.m3u"

    async with proxy.session.get(proxy.url(listed[0]["m3u"])) as resp:
        assert resp.status == 200
        assert resp.content_type == "audio/x-mpegurl"
        text = await resp.text()
    base = f"http://{proxy.config.server.host}:{proxy.config.server.port}"
    # The feed import filled in the titles of IDS[0] and IDS[1], which every playlist shows.
    assert text.splitlines() == [
        "#EXTM3U",
        "#EXTINF:213,Feed Song One", f"{base}/proxy/{IDS[0]}",
        "#EXTINF:252,Feed Song Two", f"{base}/proxy/{IDS[1]}",
        f"#EXTINF:-1,{IDS[2]}", f"{base}/proxy/{IDS[2]}",
    ]

    async with proxy.session.get(proxy.url("/playlist/Nope.m3u")) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error"] == "playlist_not_found" and "'Nope'" in body["message"]
    async with proxy.session.get(proxy.url("/playlist/.hidden.m3u")) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"] == "bad_playlist_name" and "'.hidden'" in body["message"]

    # An imported track plays: resolved on first play, through the source template.
    assert googlevideo.watch_hits == Counter()
    async with proxy.session.get(proxy.url(f"/proxy/{IDS[1]}")) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    assert googlevideo.watch_hits == Counter({IDS[1]: 1})
    track = await proxy.app[STORE].get(IDS[1])
    assert track is not None and track.title == "Feed Song Two"  # import's title kept


async def test_tracks_api_validation_names_the_field(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy()
    cases: list[tuple[Any, str, str]] = [
        ({"id": "bad id"}, "bad_id", 'field "id"'),
        ({"url": "ftp://x"}, "bad_id", 'field "url"'),
        ({"id": 5}, "bad_request", 'field "id" must be a non-empty string, got 5'),
        ({"url": ""}, "bad_request", 'field "url" must be a non-empty string'),
        ({"colour": "red"}, "bad_request", '{"id"'),
        (["id"], "bad_request", '{"id"'),
    ]
    for body, code, phrase in cases:
        async with proxy.session.post(proxy.url("/tracks"), json=body) as resp:
            assert resp.status == 400, body
            answer = await resp.json()
        assert answer["error"] == code, body
        assert phrase in answer["message"], (body, answer)


# --------------------------------------------------------------------------- MPD


@pytest.mark.mpd
async def test_mpc_load_reads_the_written_playlist(
    mpd: MpdInstance, pages: PlaylistPages, tmp_path: Path, db: Path,
    googlevideo: FakeGooglevideo,
) -> None:
    config = write_config(tmp_path / "mpd.toml", db, googlevideo.watch_url_template,
                          mpd.root / "playlists")
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "import",
                               pages.url("/list.html"), "--name", "Road Trip")
    assert result.rc == 0, result.err
    await mpd.mpc_async("load", "Road Trip")
    lines = await mpd.command_async("playlistinfo")
    files = [line.removeprefix("file: ") for line in lines if line.startswith("file: ")]
    assert files == [f"{BASE}/proxy/{i}" for i in IDS]
