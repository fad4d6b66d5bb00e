"""A real MPD with ``[icy] inline_metadata = true`` seeks to the middle of a long
track, plays the source from there, and shows the title.

MPD plays in real time (its null output keeps the clock) while a second output
writes the same samples to a file; the samples after the seek are found in the
source decoded by ffmpeg.

What MPD 0.23.12 does with such a stream (its source, v0.23.12): an answer
carrying ``icy-metaint`` makes its HTTP input unseekable
(src/input/plugins/CurlInputPlugin.cxx, OnHeaders: "a stream with icy-metadata
is not seekable"), so it never sends ``Range`` for it; its ffmpeg decoder still
calls the song seekable when the container is
(src/decoder/plugins/FfmpegDecoderPlugin.cxx: ``input->IsSeekable() ||
IsSeekable(format_context)``), and ffmpeg, given no seek callback
(src/decoder/plugins/FfmpegIo.cxx), seeks forward by reading on through the one
connection.  In WebM (Opus, the format ytproxy prefers) a forward seek lands
where asked; this test holds ytproxy to that.  A seek backwards does not happen
(playback goes on), and in fragmented MP4 seeks land elsewhere or end the song:
nothing in an answer can change either, so they are not tested here.
"""

from __future__ import annotations

import array
import itertools
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import make_test_audio, require_ffmpeg, require_mpd, run_mpd
from tests.proxy_fixture import ProxyFactory
from tests.samples import RATE, pcm, position_in_source
from ytproxy.http.app import REGISTRY, STORE

pytestmark = pytest.mark.mpd

VID = "MpdIcySeek1"
SECONDS = 120.0
TARGET = 60.0
NAME = "Test Artist - Night Drive"
SWEEP = (220.0, 880.0)  # make_test_audio's sweep, Hz over the whole track


def _rough_time(samples: array.array[int], at: int, n: int = RATE // 8) -> float:
    """Where in the source (seconds, give or take 2) ``n`` samples from ``at`` are,
    from their pitch: the source is a sweep, so frequency tells the time."""
    window = samples[at: at + n]
    crossings = sum(1 for a, b in itertools.pairwise(window) if (a < 0) != (b < 0))
    low, high = SWEEP
    return (crossings / 2 / (n / RATE) - low) * SECONDS / (high - low)


async def test_mpd_with_inline_titles_seeks_to_the_middle_and_shows_the_title(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    require_mpd()
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "track.webm", seconds=SECONDS, kind="webm")
    googlevideo.add_track(VID, audio, title="Night Drive", mime="audio/webm")
    proxy = await make_proxy(icy={"inline_metadata": True})
    await proxy.app[STORE].upsert_track(VID, googlevideo.watch_url(VID), title="Night Drive",
                                        artist="Test Artist")
    source = await pcm(tmp_path / "track.webm", RATE)
    async with run_mpd(tmp_path, capture=f"{RATE}:16:1") as mpd:
        await mpd.mpc_async("add", proxy.url(f"/proxy/{VID}"))
        await mpd.mpc_async("play")
        playing = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 1.0, 20,
                                     "MPD playing past 1 s")
        assert playing.title == NAME, playing  # StreamTitle, from the inline metadata
        assert playing.name == NAME, playing  # icy-name
        before = mpd.capture_path.stat().st_size // 2
        await mpd.command_async("seekcur", str(TARGET))
        # 2.5 s of real-time playback after the seek.
        status = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed >= TARGET + 2.5,
                                    15, "MPD playing on after the seek")
        assert status.error is None, mpd.log_tail()
        assert status.title == NAME, status
        # MPD read on through its one answer: it asks for no range of such a
        # stream (should a later MPD ask, its 206 is framed from its own start).
        assert proxy.app[REGISTRY].started_total == 1
        captured = array.array("h")
        captured.frombytes(mpd.capture_path.read_bytes())
    # The first piece captured after the seek that sounds far from the start
    # is where the seek's audio begins (what was captured before it is the
    # song's first seconds).
    step = RATE // 8
    boundary = next((at for at in range(before, len(captured) - step, step)
                     if _rough_time(captured, at) > TARGET / 2), None)
    assert boundary is not None, "nothing after the seek sounds like the middle of the song"
    # 0.25 s and 1.5 s into the seek's audio: the source from TARGET on.
    for offset in (0.25, 1.5):
        at = boundary + int(offset * RATE)
        found = position_in_source(source, captured[at:], TARGET + offset, within=0.5)
        assert found == pytest.approx(TARGET + offset, abs=0.3), (offset, found)
