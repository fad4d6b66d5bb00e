"""A cache file that vanished, was replaced or truncated, or a cache directory
that went with it: a miss (fetched again, exact bytes), never a 500, and the
listing no longer says complete.  A file deleted while it is served is read to
the end through the descriptor opened when the hit was checked."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from tests.test_cache import CACHE_ON, FAST, MiB, cache_of, fetch, media_requests, sha, until
from ytproxy.cache import AudioCache
from ytproxy.config import CacheConfig
from ytproxy.library.store import CacheRow, Store


def vanish_warnings(caplog: pytest.LogCaptureFixture, track_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("ytproxy.cache")
            and track_id in r.getMessage() and "fetched again" in r.getMessage()]


def warnings_and_worse(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def cached_whole(proxy: RunningProxy, track_id: str, data: bytes) -> Path:
    """Play a track once and wait until its file is complete; its path."""
    status, body = await fetch(proxy, track_id)
    assert status == 200 and sha(body) == sha(data)
    cache = cache_of(proxy)
    await until(lambda: cache.complete(track_id) is not None)
    entry = cache.complete(track_id)
    assert entry is not None and entry.path.exists()
    return entry.path


async def listing(proxy: RunningProxy) -> dict[str, dict[str, object]]:
    async with proxy.session.get(proxy.url("/cache")) as resp:
        assert resp.status == 200
        return {t["id"]: t for t in (await resp.json())["tracks"]}


def stored_rows(db: Path) -> dict[str, bool]:
    """The cache records in the store, as another process reads them."""
    with sqlite3.connect(db) as conn:
        return {row[0]: bool(row[1]) for row in
                conn.execute("SELECT track_id, complete FROM cache_files")}


@pytest.mark.parametrize("how", ["deleted", "truncated", "replaced"])
async def test_a_complete_file_gone_from_under_the_cache_is_a_miss_with_one_warning(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, how: str,
) -> None:
    data = random_audio(1_500_000, seed=90 + len(how))
    googlevideo.add_track("VanishTrk01", data, title="Vanished")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    path = await cached_whole(proxy, "VanishTrk01", data)
    assert (await listing(proxy))["VanishTrk01"]["complete"] is True
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        with path.open("r+b") as f:
            f.truncate(len(data) // 2)
    else:  # another file of the same length put in its place
        other = path.with_suffix(".tmp")
        other.write_bytes(random_audio(len(data), seed=1))
        other.replace(path)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="ytproxy")
    media_before = media_requests(googlevideo)

    status, body = await fetch(proxy, "VanishTrk01")

    assert status == 200, body[:300]
    assert sha(body) == sha(data)
    assert media_requests(googlevideo) > media_before  # fetched again from upstream
    (warning,) = vanish_warnings(caplog, "VanishTrk01")
    assert str(path) in warning
    assert warnings_and_worse(caplog) == [warning], caplog.text
    # Fetched again into a new file of its own: complete for real, and it plays.
    cache = cache_of(proxy)
    await until(lambda: cache.complete("VanishTrk01") is not None)
    assert sha(path.read_bytes()) == sha(data)
    assert (await listing(proxy))["VanishTrk01"]["held_bytes"] == len(data)
    status, body = await fetch(proxy, "VanishTrk01")
    assert status == 200 and sha(body) == sha(data)
    await until(lambda: stored_rows(tmp_path / "tracks.db").get("VanishTrk01") is True)


async def test_the_whole_cache_directory_gone_is_made_again_and_every_track_plays(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracks = {"DirGoneTrk1": random_audio(900_000, seed=95),
              "DirGoneTrk2": random_audio(700_000, seed=96)}
    for track_id, data in tracks.items():
        googlevideo.add_track(track_id, data, title=track_id)
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    for track_id, data in tracks.items():
        await cached_whole(proxy, track_id, data)
    directory = cache_of(proxy).files.directory
    shutil.rmtree(directory)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="ytproxy")

    status, body = await fetch(proxy, "DirGoneTrk1")

    assert status == 200 and sha(body) == sha(tracks["DirGoneTrk1"])
    assert len(vanish_warnings(caplog, "DirGoneTrk1")) == 1, caplog.text
    remade = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "vanished: made it again" in r.getMessage()]
    assert len(remade) == 1 and "1 other files" in remade[0], caplog.text
    assert len(warnings_and_worse(caplog)) == 2, caplog.text
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # The other track's record went with its file: not complete, and it plays.
    shown = await listing(proxy)
    assert "DirGoneTrk2" not in shown
    status, body = await fetch(proxy, "DirGoneTrk2")
    assert status == 200 and sha(body) == sha(tracks["DirGoneTrk2"])
    cache = cache_of(proxy)
    await until(lambda: all(cache.complete(t) is not None for t in tracks))
    for track_id, data in tracks.items():
        assert sha((directory / f"{track_id}.audio").read_bytes()) == sha(data)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_cache_directory_that_cannot_be_made_again_leaves_every_track_relayed(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_audio(600_000, seed=99)
    googlevideo.add_track("DirBlocked1", data, title="Blocked")
    googlevideo.add_track("DirBlocked2", data[::-1], title="Blocked too")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    await cached_whole(proxy, "DirBlocked1", data)
    directory = cache_of(proxy).files.directory
    shutil.rmtree(directory)
    directory.write_text("a file where the directory was")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="ytproxy")
    for track_id, expected in (("DirBlocked1", data), ("DirBlocked2", data[::-1])):
        status, body = await fetch(proxy, track_id)
        assert status == 200 and sha(body) == sha(expected)
    (gave_up,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(directory) in gave_up and "relayed" in gave_up
    assert cache_of(proxy).files.files() == []
    assert directory.read_text() == "a file where the directory was"


async def test_a_file_deleted_while_served_from_the_cache_is_read_to_the_end(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(12 * MiB, seed=97)  # more than the sockets between us hold
    googlevideo.add_track("ServedGone1", data, title="Served")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    path = await cached_whole(proxy, "ServedGone1", data)
    await googlevideo.go_offline()  # what follows can come from the descriptor only
    async with proxy.session.get(proxy.url("/proxy/ServedGone1")) as resp:
        assert resp.status == 200
        head = await resp.content.readexactly(64 * 1024)
        shutil.rmtree(path.parent)
        rest = await resp.read()
    assert sha(head + rest) == sha(data)


async def test_a_hit_holds_its_file_open_so_no_clear_or_eviction_can_come_between(
    tmp_path: Path,
) -> None:
    """The race of a hit checked, then an eviction or ``DELETE /cache`` before
    the file is opened: the check is the open (``AudioCache.hit``), and a file
    held is neither cleared nor evicted; one deleted anyway reads on."""
    store = await Store.open(tmp_path / "tracks.db")
    directory = tmp_path / "audio"
    directory.mkdir(mode=0o700)
    data = random_audio(1000, seed=98)
    (directory / "HeldTrack01.audio").write_bytes(data)
    await store.save_cache_row(CacheRow("HeldTrack01", "HeldTrack01.audio", "251", len(data),
                                        "audio/webm", ((0, len(data)),), True, 1.0))
    files = AudioCache(CacheConfig(directory=str(directory), max_size=1500), store)
    await files.open()
    try:
        entry = files.hit("HeldTrack01")
        assert entry is not None and entry.fd is not None
        assert files.clear() == (0, 1)  # kept: in use
        assert files.claim("OtherTrack1", 1000, "251", None) is None  # no room: not evicted
        os.unlink(entry.path)  # deleted by hand, even so
        assert os.pread(entry.fd, len(data) + 1, 0) == data
        files.release(entry)
        # Released, the entry says complete, but its file is gone: the next hit
        # is a miss, and the entry and its record go.
        assert files.hit("HeldTrack01") is None
        assert files.get("HeldTrack01") is None
        await files.aclose()
        assert [r.track_id for r in await store.cache_rows()] == []
    finally:
        await files.aclose()
        await store.close()
