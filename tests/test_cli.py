"""The CLI, run as a real subprocess against a real store and the fake's watch page;
plus the id parsing and M3U rendering it relies on."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from ytproxy import __version__
from ytproxy.config import ResolverConfig
from ytproxy.errors import InvalidTrackId
from ytproxy.library.playlists import proxy_base_url, render_m3u
from ytproxy.library.store import Store
from ytproxy.library.tracks import Tracks, derived_id, youtube_id_from_url
from ytproxy.models import Track, is_video_id
from ytproxy.resolve.resolver import Resolver

REPO = Path(__file__).resolve().parent.parent
VID = "dQw4w9WgXcQ"
OTHER = "9bZkp7q19f0"
THIRD = "kJQP7kiw5Fk"


@dataclass
class Result:
    rc: int
    out: str
    err: str


Cli = Callable[..., Awaitable[Result]]


def write_config(path: Path, db: Path, *, template: str | None = None,
                 server: str = "") -> Path:
    text = f'[store]\npath = "{db}"\n[upstream]\nallowed_hosts = ["127.0.0.1"]\n'
    if template is not None:
        # Page URLs on the fake are on 127.0.0.1: let `add` read them.
        text += (f'[resolver]\nsource_url_template = "{template}"\ntimeout = 20.0\n'
                 "allow_private_sources = true\n")
    if server:
        text += f"[server]\n{server}\n"
    path.write_text(text, encoding="utf-8")
    return path


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTPROXY_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_CACHE_HOME"] = str(home / ".cache")  # a daemon's cache, this test's own
    return env


async def run_ytproxy(env: dict[str, str], *args: str) -> Result:
    # The fake googlevideo runs in this event loop: the child must not block it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ytproxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tracks.db"


@pytest.fixture
def config_file(tmp_path: Path, db: Path) -> Path:
    """A config for commands that never resolve (list, remove, m3u)."""
    return write_config(tmp_path / "config.toml", db)


@pytest.fixture
def cli(tmp_path: Path, config_file: Path) -> Cli:
    env = cli_env(tmp_path)

    async def run(*args: str) -> Result:
        return await run_ytproxy(env, "--config", str(config_file), *args)

    return run


@pytest.fixture
def fake_cli(tmp_path: Path, db: Path, googlevideo: FakeGooglevideo) -> Cli:
    """A CLI whose resolver reads the fake's watch page."""
    config = write_config(tmp_path / "fake.toml", db, template=googlevideo.watch_url_template)
    env = cli_env(tmp_path)

    async def run(*args: str) -> Result:
        return await run_ytproxy(env, "--config", str(config), *args)

    return run


@pytest.fixture
async def open_store(db: Path) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Open the same store file the CLI uses, in this process (closed at teardown)."""
    opened: list[Store] = []

    async def factory() -> Store:
        store = await Store.open(db)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


def plant(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def seed(db: Path) -> None:
    """Three tracks, added in this order: full metadata, title only, nothing."""
    store = await Store.open(db)
    try:
        await store.upsert_track(VID, "https://www.youtube.com/watch?v=" + VID,
                                 title="Never Gonna Give You Up", artist="Rick Astley",
                                 duration=213.4)
        await store.upsert_track(OTHER, "https://www.youtube.com/watch?v=" + OTHER,
                                 title="Gangnam Style", duration=252.6)
        await store.upsert_track(THIRD, "https://www.youtube.com/watch?v=" + THIRD)
    finally:
        await store.close()


# -- add --------------------------------------------------------------------


async def test_add_id_prints_title_and_proxy_url(
    fake_cli: Cli, googlevideo: FakeGooglevideo, open_store: Callable[[], Awaitable[Store]]
) -> None:
    googlevideo.add_track(VID, random_audio(50_000), title="Blue Monday")
    result = await fake_cli("add", VID)
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"added {VID}  ")
    assert "Blue Monday" in lines[0]
    assert lines[1].strip() == f"http://127.0.0.1:6602/proxy/{VID}"
    assert googlevideo.watch_hits[VID] == 1

    store = await open_store()
    track = await store.get(VID)
    assert track is not None
    assert track.source_url == googlevideo.watch_url(VID)
    assert track.title is not None and "Blue Monday" in track.title
    assert track.stream_url is not None
    assert track.stream_url.startswith(f"{googlevideo.base_url}/videoplayback?")
    assert track.stream_size == 50_000
    assert track.last_error is None

    listed = await fake_cli("list")
    assert listed.rc == 0
    assert listed.out.splitlines()[0].startswith(f"{VID}  ")
    assert "Blue Monday" in listed.out


async def test_add_page_url_gets_a_derived_id(
    fake_cli: Cli, googlevideo: FakeGooglevideo, open_store: Callable[[], Awaitable[Store]]
) -> None:
    googlevideo.add_track(VID, random_audio(20_000, seed=2), title="Page Song")
    url = googlevideo.watch_url(VID)  # http://127.0.0.1:PORT/watch?v=<id>: not YouTube
    result = await fake_cli("add", url)
    assert result.rc == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith("added ")
    new_id = first.split()[1]
    assert len(new_id) == 11 and is_video_id(new_id)
    assert new_id == derived_id(url)
    assert new_id != VID
    assert "Page Song" in first
    assert result.out.splitlines()[1].strip() == f"http://127.0.0.1:6602/proxy/{new_id}"

    listed = await fake_cli("list")
    assert listed.rc == 0
    assert [line.split()[0] for line in listed.out.splitlines()] == [new_id]

    store = await open_store()
    track = await store.get(new_id)
    assert track is not None and track.source_url == url


async def test_add_bad_value_fails_naming_it(
    fake_cli: Cli, googlevideo: FakeGooglevideo, open_store: Callable[[], Awaitable[Store]]
) -> None:
    result = await fake_cli("add", "not an id!")
    assert result.rc != 0
    assert "not an id!" in result.err
    assert "added" not in result.out
    assert not googlevideo.watch_hits
    store = await open_store()
    assert await store.count() == 0


async def test_add_gone_track_fails_and_stores_nothing(
    fake_cli: Cli, googlevideo: FakeGooglevideo, open_store: Callable[[], Awaitable[Store]]
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Deleted")
    googlevideo.set_watch_status(VID, 404)
    result = await fake_cli("add", VID)
    assert result.rc != 0
    assert VID in result.err
    assert "gone" in result.err.lower()
    assert "added" not in result.out
    assert googlevideo.watch_hits[VID] >= 1
    store = await open_store()
    assert await store.get(VID) is None
    assert await store.count() == 0


# -- list / remove ------------------------------------------------------------


async def test_list_empty_then_tracks_in_order_added(cli: Cli, db: Path) -> None:
    empty = await cli("list")
    assert empty.rc == 0
    assert "no tracks" in empty.out.lower()
    assert "ytproxy add" in empty.out

    await seed(db)
    result = await cli("list")
    assert result.rc == 0, result.err
    assert result.out.splitlines() == [
        f"{VID}  Rick Astley - Never Gonna Give You Up [3:33]",
        f"{OTHER}  Gangnam Style [4:13]",
        f"{THIRD}  {THIRD}",
    ]


async def test_remove_existing_and_missing(
    cli: Cli, db: Path, open_store: Callable[[], Awaitable[Store]]
) -> None:
    await seed(db)
    removed = await cli("remove", VID)
    assert removed.rc == 0, removed.err
    assert f"removed {VID}" in removed.out

    again = await cli("remove", VID)
    assert again.rc != 0
    assert VID in again.err

    # One present, one missing: the present one goes, the exit code says one failed.
    mixed = await cli("remove", OTHER, "zzzzzzzzzzz")
    assert mixed.rc != 0
    assert f"removed {OTHER}" in mixed.out
    assert "zzzzzzzzzzz" in mixed.err

    store = await open_store()
    assert [t.id for t in await store.list_tracks()] == [THIRD]


# -- m3u --------------------------------------------------------------------


async def test_m3u_lists_every_track(cli: Cli, db: Path) -> None:
    await seed(db)
    plain, every = await asyncio.gather(cli("m3u"), cli("m3u", "--all"))
    expected = (
        "#EXTM3U\n"
        "#EXTINF:213,Rick Astley - Never Gonna Give You Up\n"
        f"http://127.0.0.1:6602/proxy/{VID}\n"
        "#EXTINF:253,Gangnam Style\n"
        f"http://127.0.0.1:6602/proxy/{OTHER}\n"
        f"#EXTINF:-1,{THIRD}\n"
        f"http://127.0.0.1:6602/proxy/{THIRD}\n"
    )
    assert plain.rc == 0, plain.err
    assert plain.out == expected
    assert every.rc == 0
    assert every.out == expected


async def test_m3u_of_chosen_ids_keeps_their_order(cli: Cli, db: Path) -> None:
    await seed(db)
    result = await cli("m3u", THIRD, VID)
    assert result.rc == 0, result.err
    assert result.out.splitlines() == [
        "#EXTM3U",
        f"#EXTINF:-1,{THIRD}",
        f"http://127.0.0.1:6602/proxy/{THIRD}",
        "#EXTINF:213,Rick Astley - Never Gonna Give You Up",
        f"http://127.0.0.1:6602/proxy/{VID}",
    ]


async def test_m3u_of_empty_store_is_just_the_header(cli: Cli) -> None:
    result = await cli("m3u")
    assert result.rc == 0
    assert result.out == "#EXTM3U\n"


async def test_m3u_errors(cli: Cli, db: Path) -> None:
    await seed(db)
    unknown, both = await asyncio.gather(
        cli("m3u", VID, "unknownid00"), cli("m3u", "--all", VID)
    )
    assert unknown.rc != 0
    assert "unknownid00" in unknown.err
    assert "#EXTM3U" not in unknown.out
    assert both.rc == 2
    assert "--all" in both.err
    assert both.out == ""


async def test_m3u_honours_server_port_and_wildcard_host(tmp_path: Path, db: Path) -> None:
    await seed(db)
    config = write_config(tmp_path / "port.toml", db, server='host = "0.0.0.0"\nport = 7010')
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "m3u", VID)
    assert result.rc == 0, result.err
    assert result.out.splitlines()[-1] == f"http://127.0.0.1:7010/proxy/{VID}"
    assert "6602" not in result.out


# -- process-level ------------------------------------------------------------


async def test_version(tmp_path: Path) -> None:
    result = await run_ytproxy(cli_env(tmp_path), "--version")
    assert result.rc == 0
    assert result.out.strip() == f"ytproxy {__version__}"


async def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_ytproxy(cli_env(tmp_path))
    assert result.rc == 2
    assert "usage" in result.err.lower()


async def test_bad_config_stops_every_command(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = \"x\"\n[limits]\nmax_stream = 2\n", encoding="utf-8")
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "list")
    assert result.rc == 1
    assert "server.port" in result.err
    assert "did you mean 'max_streams'" in result.err
    assert not await asyncio.to_thread(db.exists)


async def test_store_that_is_not_sqlite_is_reported_and_kept(
    cli: Cli, db: Path
) -> None:
    await asyncio.to_thread(plant, db, b"\n")
    result = await cli("list")
    assert result.rc != 0
    assert str(db) in result.err
    assert "Traceback" not in result.err
    assert await asyncio.to_thread(db.read_bytes) == b"\n"


# -- ids and playlists (in process) -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"https://www.youtube.com/watch?v={VID}",
        f"http://www.youtube.com/watch?v={VID}",
        f"https://youtube.com/watch?v={VID}&list=PLx&t=42s",
        f"https://m.youtube.com/watch?feature=share&v={VID}",
        f"https://music.youtube.com/watch?v={VID}&si=abc",
        f"https://WWW.YOUTUBE.COM/watch?v={VID}",
        f"https://youtu.be/{VID}",
        f"https://youtu.be/{VID}?si=xyz&t=3",
        f"https://www.youtube.com/shorts/{VID}",
        f"https://youtube.com/shorts/{VID}?feature=share",
        f"https://www.youtube.com/embed/{VID}",
        f"https://www.youtube.com/live/{VID}",
    ],
)
def test_youtube_id_from_url(url: str) -> None:
    assert youtube_id_from_url(url) == VID


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=tooshort",
        f"https://www.youtube.com/watch?v={VID}x",
        "https://www.youtube.com/watch",
        "https://www.youtube.com/playlist?list=PLrAXtmErZgOeiKm4sgNOknGvNjby9efdf",
        "https://www.youtube.com/shorts/",
        "https://youtu.be/",
        f"https://example.com/watch?v={VID}",
        f"https://notyoutube.com/watch?v={VID}",
        f"https://youtube.com.evil.example/watch?v={VID}",
        f"https://www.youtube.com/channel/{VID}",
    ],
)
def test_youtube_id_from_url_rejects(url: str) -> None:
    assert youtube_id_from_url(url) is None


def test_derived_id_is_a_stable_valid_id() -> None:
    url = "https://soundcloud.com/artist/song"
    first = derived_id(url)
    assert len(first) == 11 and is_video_id(first)
    assert derived_id(url) == first
    assert derived_id(url + "2") != first
    assert derived_id("https://soundcloud.com/artist/other") != first
    # Many URLs, all valid ids, none colliding.
    ids = {derived_id(f"https://example.com/track/{n}") for n in range(2000)}
    assert len(ids) == 2000
    assert all(is_video_id(i) for i in ids)


@pytest.fixture
async def tracks(tmp_path: Path) -> AsyncIterator[Tracks]:
    config = ResolverConfig(source_url_template="https://music.youtube.com/watch?v={id}")
    store = await Store.open(tmp_path / "ids.db")
    resolver = Resolver(config)
    try:
        yield Tracks(store, resolver, config)
    finally:
        await resolver.close()
        await store.close()


@pytest.mark.parametrize(
    "given",
    [
        VID,
        f"  {VID}\n",
        f"https://www.youtube.com/watch?v={VID}&list=RD",
        f"https://youtu.be/{VID}",
        f"https://music.youtube.com/watch?v={VID}",
        f"https://www.youtube.com/shorts/{VID}",
    ],
)
async def test_identify_youtube_inputs_use_the_template(tracks: Tracks, given: str) -> None:
    assert tracks.identify(given) == (VID, f"https://music.youtube.com/watch?v={VID}")


async def test_identify_other_url_keeps_it(tracks: Tracks) -> None:
    url = "https://soundcloud.com/artist/song"
    assert tracks.identify(url) == (derived_id(url), url)


@pytest.mark.parametrize(
    "given", ["not an id!", "dQw4w9WgXc", "dQw4w9WgXcQQ", "ftp://example.com/a", "", "watch?v=x"]
)
async def test_identify_rejects(tracks: Tracks, given: str) -> None:
    with pytest.raises(InvalidTrackId) as info:
        tracks.identify(given)
    assert repr(given) in str(info.value)


def test_render_m3u() -> None:
    playlist = [
        Track(id=VID, source_url="s", title="Title", artist="Artist", duration=199.5),
        Track(id=OTHER, source_url="s", title="Line\nbreak\rhere", duration=0.4),
        Track(id=THIRD, source_url="s", artist="Only Artist"),
    ]
    assert render_m3u(playlist, "http://127.0.0.1:6602") == (
        "#EXTM3U\n"
        "#EXTINF:200,Artist - Title\n"
        f"http://127.0.0.1:6602/proxy/{VID}\n"
        "#EXTINF:0,Line break here\n"
        f"http://127.0.0.1:6602/proxy/{OTHER}\n"
        "#EXTINF:-1,Only Artist\n"
        f"http://127.0.0.1:6602/proxy/{THIRD}\n"
    )
    assert render_m3u([], "http://x:1") == "#EXTM3U\n"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 6602, "http://127.0.0.1:6602"),
        ("0.0.0.0", 7000, "http://127.0.0.1:7000"),
        ("", 6602, "http://127.0.0.1:6602"),
        ("::", 6602, "http://127.0.0.1:6602"),
        ("::1", 6602, "http://[::1]:6602"),
        ("localhost", 80, "http://localhost:80"),
    ],
)
def test_proxy_base_url(host: str, port: int, expected: str) -> None:
    assert proxy_base_url(host, port) == expected


@pytest.mark.parametrize("where", ["before", "after"])
async def test_config_and_log_level_are_taken_before_or_after_the_command(
    tmp_path: Path, db: Path, where: str,
) -> None:
    path = write_config(tmp_path / "mine.toml", db, server="port = 6999")
    options = ["--config", str(path), "--log-level", "warning"]
    args = [*options, "check-config"] if where == "before" else ["check-config", *options]
    result = await run_ytproxy(cli_env(tmp_path), *args)
    assert result.rc == 0, result.err
    assert f"from {path}" in result.out and "port = 6999" in result.out


async def test_a_config_after_the_command_wins_over_one_before_it(
    tmp_path: Path, db: Path,
) -> None:
    first = write_config(tmp_path / "first.toml", db, server="port = 6001")
    second = write_config(tmp_path / "second.toml", db, server="port = 6002")
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(first), "check-config",
                               "--config", str(second))
    assert result.rc == 0, result.err
    assert "port = 6002" in result.out
