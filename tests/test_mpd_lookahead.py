"""A real MPD plays a queue through ytproxy with the cache and MPD look-ahead on:
the next songs are on disk before MPD asks, replays need no network, and an
upstream outage after a download is never heard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import (
    MpdInstance,
    MpdStatus,
    make_test_audio,
    require_ffmpeg,
    require_mpd,
    run_mpd,
)
from tests.proxy_fixture import ProxyFactory, RunningProxy
from ytproxy.cache import TrackCache
from ytproxy.http.app import CACHE

pytestmark = pytest.mark.mpd

IDS = ("LookAhead01", "LookAhead02", "LookAhead03")
SECONDS = 8.0
# MPD decodes this far ahead of playback (audio_buffer_size, 1024 KiB: about
# 5.5 s of 48 kHz stereo; its default, 4096 KiB, is about 22 s): it opens the
# next song that long before the one playing ends, after the look-ahead has put
# it on disk; with the default it would open all three of these short songs
# as the first starts.
BUFFER_KIB = 1024
# At Opus's highest bit rate MPD's input buffer (512 KiB) and the sockets'
# hold the fewest seconds of a song: with no cache, an outage from the first
# seconds on stops MPD short of the end (measured: at about 29 s of a 36 s
# song); from the cache it plays on to the end.
OUTAGE_KBPS = 510


@pytest.fixture
async def mpd(tmp_path: Path) -> AsyncIterator[MpdInstance]:
    """This module's MPD decodes BUFFER_KIB ahead, not 22 s."""
    require_mpd()
    async with run_mpd(tmp_path, audio_buffer_kib=BUFFER_KIB) as inst:
        yield inst


def cache_of(proxy: RunningProxy) -> TrackCache:
    cache = proxy.app[CACHE]
    assert cache is not None
    return cache


def media_requests(googlevideo: FakeGooglevideo) -> int:
    return sum(1 for r in googlevideo.requests if r.kind != "watch")


async def until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the daemon's state, nothing to wait on
            await asyncio.sleep(0.05)


async def queue_proxy(mpd: MpdInstance, googlevideo: FakeGooglevideo,
                      make_proxy: ProxyFactory, tmp_path: Path) -> RunningProxy:
    require_ffmpeg()
    for n, track_id in enumerate(IDS):
        audio = make_test_audio(tmp_path / f"{track_id}.webm", seconds=SECONDS + n,
                                kind="webm")
        googlevideo.add_track(track_id, audio, title=f"Song {n + 1}", mime="audio/webm")
    proxy = await make_proxy(cache={"max_size": 256 * 1_048_576},
                             mpd={"host": "127.0.0.1", "port": mpd.port, "lookahead": 2})
    for track_id in IDS:
        await mpd.mpc_async("add", proxy.url(f"/proxy/{track_id}"))
    return proxy


async def watch_transitions(mpd: MpdInstance, songs: int, within: float,
                            on_start: Any = None) -> list[float]:
    """Poll MPD until it stops; for each change of song, how long after the song
    left ended (as its elapsed and duration, last seen moving, foretold) the new
    one's elapsed time moved."""
    gaps: list[float] = []
    ends: dict[str, float] = {}  # song id -> when it ends, foretold while it played
    current: str | None = None
    left: str | None = None  # the song before the current one, until the current moves
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status: MpdStatus = await mpd.status_async()
        now = time.monotonic()
        assert status.error is None, mpd.log_tail()
        if status.state == "stop":
            return gaps
        songid = status.songid
        if songid != current:
            left, current = current, songid
            if on_start is not None:
                await on_start(status)
                continue
        moving = status.state == "play" and status.elapsed > 0
        if moving and left is not None and left in ends and songid is not None:
            gaps.append(now - ends[left])
            left = None
        if moving and songid is not None and status.duration is not None:
            ends[songid] = now + (status.duration - status.elapsed)
        await asyncio.sleep(0.05)
    raise AssertionError(f"MPD did not play {songs} songs to the end within {within} s")


async def test_the_next_songs_start_from_disk_and_replay_with_upstream_stopped(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    proxy = await queue_proxy(mpd, googlevideo, make_proxy, tmp_path)
    cache = cache_of(proxy)
    # The follower knows the queue before anything plays: songs after the first.
    await mpd.mpc_async("play")
    await until(lambda: all(cache.complete(i) is not None for i in IDS), within=20)
    status = await mpd.status_async()
    assert status.songid is not None and status.song.get("Pos") == "0", status
    watches, media = sum(googlevideo.watch_hits.values()), media_requests(googlevideo)
    assert googlevideo.watch_hits[IDS[1]] == googlevideo.watch_hits[IDS[2]] == 1

    gaps = await watch_transitions(mpd, 3, within=3 * SECONDS + 30)
    # Songs two and three started with no yt-dlp call and no upstream request.
    assert sum(googlevideo.watch_hits.values()) == watches
    assert media_requests(googlevideo) == media
    print(f"seconds from a song's end to the next one's elapsed moving: {gaps}")
    assert len(gaps) == 2, gaps
    # Within 0.5 s either way: MPD's elapsed time moved on as the song before ended.
    assert all(-0.5 <= gap <= 0.5 for gap in gaps), gaps
    assert cache.snapshot().hits >= 2

    # Every byte of the three is on disk, as upstream has it.
    for track_id in IDS:
        entry = cache.complete(track_id)
        assert entry is not None
        assert entry.path.read_bytes() == googlevideo.tracks[track_id].data

    # Again, with upstream gone: all three play to the end from disk (seeking
    # near each end to keep the test short; the seeks are served from disk too).
    await googlevideo.go_offline()

    async def near_the_end(status: MpdStatus) -> None:
        await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 1.0, 10, "playing")
        await mpd.mpc_async("seek", str(int((status.duration or SECONDS) - 4)))

    await mpd.mpc_async("play", "1")
    await watch_transitions(mpd, 3, within=60, on_start=near_the_end)
    final = await mpd.status_async()
    assert final.error is None, mpd.log_tail()
    log_text = mpd.log_text()
    assert "CURL failed" not in log_text and "Failed to decode" not in log_text, log_text[-2000:]


async def test_an_outage_after_the_download_is_never_heard(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    require_ffmpeg()
    seconds = 36.0
    audio = make_test_audio(tmp_path / "long.webm", seconds=seconds, kind="webm",
                            kbps=OUTAGE_KBPS)
    googlevideo.add_track("OutageSong1", audio, title="Long Night", mime="audio/webm")
    proxy = await make_proxy(cache={"max_size": 256 * 1_048_576})
    cache = cache_of(proxy)
    await mpd.mpc_async("add", proxy.url("/proxy/OutageSong1"))
    await mpd.mpc_async("play")
    await until(lambda: cache.complete("OutageSong1") is not None, within=15)
    status = await mpd.status_async()
    assert status.elapsed < 3.0, f"fetched whole only at {status.elapsed} s of playback"
    await googlevideo.go_offline()  # an outage from the first seconds on, to the end
    outage_began = time.monotonic()
    final = await mpd.wait_for(lambda s: s.state == "stop" or s.error is not None,
                               seconds + 20, "MPD at the end of the song")
    # The song played on through 30 s of it, more than MPD and the sockets hold.
    assert time.monotonic() - outage_began >= 30
    assert final.error is None, mpd.log_tail()
    log_text = mpd.log_text()
    assert "CURL failed" not in log_text and "Failed to decode" not in log_text, log_text[-2000:]
    await googlevideo.go_online()
