"""A real MPD as a new user runs it: found where mpc finds it (no [mpd] host), a
playlist just loaded (`mpc clear; mpc load X`) has its first song on disk before
`mpc play`, and what MPD shows as a queued song's name, before and after play.

What MPD 0.23.12 shows (pinned here): a URL added with ``mpc add`` carries no tag
until it plays (``playlistinfo`` has only ``file``).  A song loaded from an M3U
gets its ``#EXTINF:SECONDS,TEXT`` as ``Name`` (TEXT, whole) and ``Time``
(src/playlist/plugins/ExtM3uPlaylistPlugin.cxx): ytproxy writes ``Artist -
Title`` there, so mpc's default format (``[%name%: &[%artist% - ]%title%]|%name%|…``)
shows it.  Once playing, ``icy-name`` (the same ``Artist - Title``) is the
current song's ``Name``.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import (
    MpdInstance,
    make_test_audio,
    require_ffmpeg,
    require_mpd,
    run_mpd,
)
from tests.proxy_fixture import ProxyFactory, RunningProxy
from ytproxy.cache import TrackCache
from ytproxy.http.app import CACHE, STORE
from ytproxy.library.playlists import proxy_base_url, render_m3u, write_m3u_file

pytestmark = pytest.mark.mpd

IDS = ("LoadFirst01", "LoadFirst02", "LoadFirst03")
SECONDS = 6.0
WAIT = 20.0  # every wait is bounded by this


def cache_of(proxy: RunningProxy) -> TrackCache:
    cache = proxy.app[CACHE]
    assert cache is not None
    return cache


async def until(predicate: Any, what: str, within: float = WAIT) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - the daemon's state, nothing to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


def media_requests(googlevideo: FakeGooglevideo, track_id: str) -> int:
    return sum(1 for r in googlevideo.requests if r.kind != "watch" and r.video_id == track_id)


async def write_playlist(proxy: RunningProxy, mpd: MpdInstance, googlevideo: FakeGooglevideo,
                         name: str, names: dict[str, tuple[str, str]]) -> None:
    """Store the tracks with artist and title, and write NAME.m3u as `import` does."""
    store = proxy.app[STORE]
    for track_id, (artist, title) in names.items():
        await store.upsert_track(track_id, googlevideo.watch_url(track_id),
                                 title=title, artist=artist, duration=SECONDS)
    base = proxy_base_url(proxy.config.server.host, proxy.config.server.port)
    tracks = [t for t in [await store.get(i) for i in names] if t is not None]
    write_m3u_file(mpd.root / "playlists", name, render_m3u(tracks, base))


def field_lists(lines: list[str], key: str) -> list[str]:
    return [line.removeprefix(f"{key}: ") for line in lines if line.startswith(f"{key}: ")]


async def test_a_loaded_playlist_starts_from_disk_and_shows_names(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    require_ffmpeg()
    names = {IDS[0]: ("The Band", "First Song"), IDS[1]: ("Solo", "Second Song")}
    for n, track_id in enumerate(names):
        audio = make_test_audio(tmp_path / f"{track_id}.webm", seconds=SECONDS + n)
        googlevideo.add_track(track_id, audio, title=names[track_id][1], mime="audio/webm")
    proxy = await make_proxy(cache={"max_size": 64 * 1_048_576},
                             mpd={"host": "127.0.0.1", "port": mpd.port, "lookahead": 1})
    cache = cache_of(proxy)
    await write_playlist(proxy, mpd, googlevideo, "Evening", names)

    # Something else was queued and played before: the user's usual `clear; load`.
    await mpd.mpc_async("add", proxy.url(f"/proxy/{IDS[2]}"))
    await mpd.mpc_async("clear")
    await mpd.mpc_async("load", "Evening")
    status = await mpd.status_async()
    assert status.state == "stop" and "song" not in status.raw, status

    # Queued, never played: MPD names each song by the M3U's #EXTINF.
    info = await mpd.command_async("playlistinfo")
    assert field_lists(info, "Name") == ["The Band - First Song", "Solo - Second Song"], info
    assert field_lists(info, "Title") == [], info
    shown = await mpd.mpc_async("playlist")
    assert shown.splitlines() == ["The Band - First Song", "Solo - Second Song"], shown

    # `play` starts at the first song: it is fetched ahead, whole, before play.
    await until(lambda: cache.complete(IDS[0]) is not None, "the first song on disk")
    fetched = media_requests(googlevideo, IDS[0])
    watches = googlevideo.watch_hits[IDS[0]]
    assert fetched >= 1 and watches == 1
    await mpd.mpc_async("play")
    playing = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 1.0, WAIT,
                                 "the first song playing")
    assert playing.error is None, mpd.log_tail()
    assert playing.song.get("Pos") == "0", playing
    # Its first byte (and every other) came from disk: no upstream request, no yt-dlp call.
    assert media_requests(googlevideo, IDS[0]) == fetched
    assert googlevideo.watch_hits[IDS[0]] == watches
    assert cache.snapshot().hits >= 1
    # Playing, the current song's Name is icy-name: the same words.
    assert playing.name == "The Band - First Song", playing
    await mpd.mpc_async("stop")


async def test_an_added_url_has_no_name_until_it_plays(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "added.webm", seconds=SECONDS)
    googlevideo.add_track(IDS[2], audio, title="Third Song", mime="audio/webm")
    proxy = await make_proxy()
    await proxy.app[STORE].upsert_track(IDS[2], googlevideo.watch_url(IDS[2]),
                                        title="Third Song", artist="Trio", duration=SECONDS)
    url = proxy.url(f"/proxy/{IDS[2]}")
    await mpd.mpc_async("add", url)
    info = await mpd.command_async("playlistinfo")
    assert field_lists(info, "file") == [url] and field_lists(info, "Name") == [], info
    assert (await mpd.mpc_async("playlist")).splitlines() == [url]
    await mpd.mpc_async("play")
    playing = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 0.5, WAIT,
                                 "the added song playing")
    assert playing.name == "Trio - Third Song", playing
    await mpd.mpc_async("stop")


# --------------------------------------------------------------------------- discovery


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short $XDG_RUNTIME_DIR (a unix socket path has at most 107 bytes), with
    MPD_HOST and MPD_PORT unset: the daemon must find MPD itself."""
    directory = Path(tempfile.mkdtemp(prefix="xdg", dir="/tmp"))
    (directory / "mpd").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    monkeypatch.delenv("MPD_HOST", raising=False)
    monkeypatch.delenv("MPD_PORT", raising=False)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def socket_mpd(tmp_path: Path, runtime_dir: Path) -> AsyncIterator[MpdInstance]:
    """A real MPD on $XDG_RUNTIME_DIR/mpd/socket (and 127.0.0.1 for the test's mpc)."""
    require_mpd()
    async with run_mpd(tmp_path, extra_binds=(str(runtime_dir / "mpd" / "socket"),)) as inst:
        yield inst


async def test_mpd_is_found_on_the_users_socket_with_no_host_configured(
    socket_mpd: MpdInstance, runtime_dir: Path, googlevideo: FakeGooglevideo,
    make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "found.webm", seconds=SECONDS)
    googlevideo.add_track(IDS[0], audio, title="Found", mime="audio/webm")
    sock = str(runtime_dir / "mpd" / "socket")
    assert stat.S_ISSOCK((runtime_dir / "mpd" / "socket").lstat().st_mode)
    proxy = await make_proxy(cache={"max_size": 64 * 1_048_576}, mpd={"host": ""})
    await socket_mpd.mpc_async("add", proxy.url(f"/proxy/{IDS[0]}"))

    report: dict[str, Any] = {}
    for _ in range(int(WAIT / 0.05)):  # /status until the follower has the queue
        async with proxy.session.get(proxy.url("/status")) as resp:
            assert resp.status == 200
            report = dict((await resp.json())["mpd"])
        if report.get("connected") and report.get("upcoming"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the daemon did not follow MPD on {sock}: {report}")
    assert report["address"] == sock, report
    assert report["tries"] == [sock, "/run/mpd/socket", f"localhost:{6600}"], report
    assert report["upcoming"] == [IDS[0]], report
    # Followed: the queued song is fetched ahead.
    cache = cache_of(proxy)
    await until(lambda: cache.complete(IDS[0]) is not None, "the queued song on disk")
