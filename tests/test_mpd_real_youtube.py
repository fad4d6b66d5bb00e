"""A real MPD plays FakeTube tracks through ytproxy: one whose format must be
waited for (available_at), one whose first player client's URLs stop after a
prefix.  MPD never retries: any error ytproxy answered would be a skipped song."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest

from tests.fakes.tube import FakeTube
from tests.mpd_harness import MpdInstance, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory

pytestmark = pytest.mark.mpd

SECONDS = 12.0
FAST = {"retry": {"base_delay": 0.05, "max_delay": 0.5}}


async def play_to_the_end(mpd: MpdInstance, url: str, seconds: float) -> None:
    await mpd.mpc_async("add", url)
    await mpd.mpc_async("play")
    await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 1.0, 30, "MPD playing")
    status = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= seconds - 2, seconds + 20,
        "MPD playing near the end of the song")
    assert status.error is None
    await mpd.wait_for(lambda s: s.state == "stop", 15, "MPD reached the end")
    final = await mpd.status_async()
    assert final.error is None, mpd.log_tail()
    log_text = mpd.log_text()
    for failure in ("Failed to decode", "CURL failed", "got HTTP status", "error"):
        assert failure not in log_text, log_text[-3000:]


async def test_mpd_plays_a_track_whose_format_is_available_in_4_s(
    mpd: MpdInstance, faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "ad.webm", seconds=SECONDS, kind="webm")
    vid = "MpdAvailab1"
    faketube.add_track(vid, audio, title="After The Ad")
    faketube.configure(vid, available_in=4)
    caplog.set_level(logging.INFO)
    proxy = await make_tube_proxy(**FAST)
    asked = time.time()
    await play_to_the_end(mpd, proxy.url(f"/proxy/{vid}"), SECONDS)
    (available_at,) = {i.available_at for i in faketube._issued.values()}
    assert available_at is not None and available_at >= asked + 3
    assert faketube.media, "MPD's bytes came from upstream"
    assert all(m.at >= available_at for m in faketube.media), "a request before available_at"
    assert {m.kind for m in faketube.media} == {"ok"}
    assert "the format is available in" in caplog.text


async def test_mpd_plays_a_track_whose_first_clients_urls_stop_after_200_kb(
    mpd: MpdInstance, faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_ffmpeg()
    seconds = 20.0
    audio = make_test_audio(tmp_path / "prefix.webm", seconds=seconds, kind="webm")
    prefix = 200_000
    assert len(audio) > 2 * prefix
    vid = "MpdPrefix01"
    faketube.add_track(vid, audio, title="Prefix Only")
    faketube.configure(vid, prefix_only={"tv_samsung": prefix})
    caplog.set_level(logging.INFO)
    proxy = await make_tube_proxy(upstream={"chunk_size": 128 * 1024}, **FAST)
    await play_to_the_end(mpd, proxy.url(f"/proxy/{vid}"), seconds)
    assert faketube.served_clients(vid) == ["tv_samsung", "tv_samsung", "visionos"]
    assert [m.kind for m in faketube.media].count("past_prefix") == 2
    assert "asking yt-dlp for another client" in caplog.text
    # What MPD was sent is the file, byte for byte: the same bytes again, now
    # from the stored working client's URL, hash to the file's.
    async with proxy.session.get(proxy.url(f"/proxy/{vid}")) as resp:
        body = await resp.read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(audio).hexdigest()
