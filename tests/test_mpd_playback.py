"""A real MPD plays a track through ytproxy, with googlevideo's rules enforced upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.mpd_harness import MpdInstance, MpdStatus, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory
from ytproxy.http.app import STORE

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


async def test_mpd_plays_to_the_end_through_upstream_faults(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    require_ffmpeg()
    seconds = 40.0
    audio = make_test_audio(tmp_path / "short.webm", seconds=seconds, kind="webm")
    assert len(audio) > 512 * 1024
    vid = "MpdFaults01"
    googlevideo.add_track(vid, audio, title="Rough Road", mime="audio/webm")
    proxy = await make_proxy(
        upstream={"chunk_size": 64 * 1024, "read_timeout": 2.0},
        retry={"base_delay": 0.05, "max_delay": 0.5},
    )
    url = proxy.url(f"/proxy/{vid}")
    await mpd.mpc_async("add", url)
    # Resolve before injecting, then break things mid-song: two resets, a 503 and a
    # revoked URL, spread over ranges MPD has not read yet.
    async with proxy.session.head(url) as resp:
        assert resp.status == 200
    faults = [
        googlevideo.add_fault(vid, Fault("reset", at_byte=len(audio) // 5)),
        googlevideo.add_fault(vid, Fault("revoke", at_byte=len(audio) // 2)),
        googlevideo.add_fault(vid, Fault("reset", at_byte=3 * len(audio) // 4)),
    ]
    # About 2.5x the audio's bit rate: the download spans much of the song, so the
    # faults land while MPD is playing, not during its first read-ahead.
    googlevideo.write_size = 8192
    googlevideo.throttle_bytes_per_sec = 50_000
    await mpd.mpc_async("play")
    await mpd.wait_for(playing_past(2.0), 20, "MPD playing")
    faults.append(googlevideo.add_fault(vid, Fault("status", status=503, times=1)))
    status = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= seconds - 3, seconds + 20,
        "MPD playing near the end of the song",
    )
    assert status.error is None
    await mpd.wait_for(lambda s: s.state == "stop", 15, "MPD reached the end")
    final = await mpd.status_async()
    assert final.error is None, mpd.log_tail()
    assert all(f.fired == 1 for f in faults), [(f.kind, f.fired) for f in faults]
    log_text = mpd.log_text()
    assert "Failed to decode" not in log_text and "CURL failed" not in log_text, log_text[-2000:]
