"""A real MPD plays a track through ytproxy, with googlevideo's rules enforced upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import MpdInstance, MpdStatus, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory
from ytproxy.server import STORE

pytestmark = pytest.mark.mpd

VID = "MpdPlay_01x"
SECONDS = 120.0


def playing_past(seconds: float) -> Callable[[MpdStatus], bool]:
    return lambda s: s.state == "play" and s.elapsed > seconds


async def test_mpd_plays_seeks_and_shows_artist_and_title(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "track.webm", seconds=SECONDS, kind="webm")
    assert len(audio) > 4 * 512 * 1024  # longer than MPD's read-ahead: seeking needs Range
    googlevideo.add_track(VID, audio, title="Night Drive", mime="audio/webm")
    # A chunk size that makes the song span many upstream ranges.
    proxy = await make_proxy(upstream={"chunk_size": 256 * 1024})
    # Stored metadata (as `ytproxy add` on YouTube Music leaves it); no stream URL yet,
    # so the first play resolves through the real yt-dlp.
    await proxy.app[STORE].upsert_track(
        VID, googlevideo.watch_url(VID), title="Night Drive", artist="Test Artist"
    )
    url = proxy.url(f"/proxy/{VID}")

    # Async MPD calls throughout: the proxy and the fake run on this event loop.
    await mpd.mpc_async("add", url)
    await mpd.mpc_async("play")
    status = await mpd.wait_for(playing_past(1.0), 20, "MPD playing past 1 s")
    assert status.error is None
    current = await mpd.mpc_async("current")
    assert current.strip() == "Test Artist - Night Drive"
    assert (await mpd.current_song_async()).get("Name") == "Test Artist - Night Drive"

    duration = status.duration if status.duration is not None else SECONDS
    assert duration == pytest.approx(SECONDS, abs=1.5)
    ranged_before = googlevideo.counts["ok"]
    await mpd.mpc_async("seek", "75%")
    status = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= 0.7 * duration, 15, "elapsed >= 70 %"
    )
    await mpd.wait_for(playing_past(status.elapsed + 1.0), 10, "playback advancing after seek")
    final = await mpd.status_async()
    assert final.error is None, mpd.log_tail()
    assert googlevideo.counts["ok"] > ranged_before
    # The seek landed upstream near 75 % of the file, through bounded ranges only.
    starts = [
        int(r.range_header.removeprefix("bytes=").split("-")[0])
        for r in googlevideo.requests
        if r.kind == "ok" and r.range_header
    ]
    assert any(0.6 * len(audio) < s < 0.9 * len(audio) for s in starts)
    refused = {"no_range", "open_ended", "too_large", "head", "expired", "bad_range"}
    assert not refused & set(googlevideo.counts), googlevideo.counts
    await mpd.mpc_async("stop")
