"""Real players (VLC, GStreamer, mpv, ffmpeg) play, seek, know the length and name the song.

Each player runs headless and writes what it decoded to a WAV file, which is
compared with the source decoded by ffmpeg: its length, and where in the source
its first samples are (found by correlation, so decoders may differ).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory, RunningProxy
from ytproxy.http.app import STORE

VID = "PlayersTs01"
SECONDS = 8.0
NAME = "Test Artist - Night Drive"
RATE = 8000  # comparisons run on 8 kHz mono
_RUN_TIMEOUT = 60.0


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (apt-get install {package})")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory VLC, run as nobody, can write in (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="ytproxy-players-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
                 ) -> AsyncIterator[tuple[RunningProxy, array.array[int]]]:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "song.webm", seconds=SECONDS, kind="webm")
    googlevideo.add_track(VID, audio, title="Night Drive", mime="audio/webm")
    proxy = await make_proxy()
    await proxy.app[STORE].upsert_track(VID, googlevideo.watch_url(VID), title="Night Drive",
                                        artist="Test Artist")
    yield proxy, await _pcm(tmp_path / "song.webm")


async def _run(*cmd: str, env: dict[str, str] | None = None) -> str:
    """Run a player to its end (killed, with its children, after a minute); its output."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), _RUN_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"{cmd[0]} did not finish in {_RUN_TIMEOUT:.0f} s") from None
    return out.decode(errors="replace")


async def _pcm(path: Path) -> array.array[int]:
    """``path`` decoded by ffmpeg to 8 kHz mono 16-bit samples."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1",
        "-ar", str(RATE), "-f", "s16le", "-", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"ffmpeg could not read {path}"
    samples = array.array("h")
    samples.frombytes(out)
    return samples


def _dot(a: array.array[int], b: array.array[int], at: int, n: int) -> float:
    return float(sum(x * y for x, y in zip(a[at: at + n], b[:n], strict=True)))


def _start_in_source(source: array.array[int], out: array.array[int], expected: float) -> float:
    """Where in the source (seconds) the output starts: the best correlation of
    0.25 s of output, taken 0.5 s in, within 1 s of ``expected``."""
    skip, n = RATE // 2, RATE // 4
    probe = out[skip: skip + n]
    assert len(probe) == n, "the output is too short to compare"
    energy = _dot(probe, probe, 0, n) ** 0.5
    lo = max(0, int((expected - 1.0) * RATE) + skip)
    hi = min(len(source) - n, int((expected + 1.0) * RATE) + skip)
    best, best_at = -2.0, lo
    for at in range(lo, hi, 2):
        window = source[at: at + n]
        norm = (_dot(window, window, 0, n) ** 0.5) * energy or 1.0
        score = _dot(source, probe, at, n) / norm
        if score > best:
            best, best_at = score, at
    assert best > 0.8, f"the output matches no part of the source (best {best:.2f})"
    return (best_at - skip) / RATE


async def _check(source: array.array[int], wav: Path, start: float) -> None:
    out = await _pcm(wav)
    # Played once, from ``start`` to the end of the song.
    assert len(out) / RATE == pytest.approx(SECONDS - start, abs=0.1)
    assert _start_in_source(source, out, start) == pytest.approx(start, abs=0.2)


@pytest.mark.parametrize("start", [0.0, 5.0])
async def test_vlc_plays_once_and_seeks(served: tuple[RunningProxy, array.array[int]],
                                        world_dir: Path, start: float) -> None:
    _need("cvlc", "vlc-bin vlc-plugin-base")
    proxy, source = served
    wav = world_dir / "vlc.wav"
    # VLC refuses to run as root.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    user = nobody if os.getuid() == 0 else []
    env = {**os.environ, "HOME": str(world_dir)}
    await _run(*user, "cvlc", "-q", "--no-loop", "--play-and-exit", f"--start-time={start}",
               proxy.url(f"/proxy/{VID}"),
               "--sout", f"#transcode{{acodec=s16l}}:std{{access=file,mux=wav,dst={wav}}}",
               env=env)
    await _check(source, wav, start)


@pytest.mark.parametrize("start", [0.0, 5.0])
async def test_gstreamer_knows_the_length_plays_and_seeks(
    served: tuple[RunningProxy, array.array[int]], tmp_path: Path, start: float
) -> None:
    _need("gst-discoverer-1.0", "gstreamer1.0-plugins-base-apps")
    _need("gst-launch-1.0", "gstreamer1.0-tools")
    proxy, source = served
    url = proxy.url(f"/proxy/{VID}")
    found = await _run("gst-discoverer-1.0", url)
    assert "Seekable: yes" in found, found
    duration = next(line for line in found.splitlines() if "Duration:" in line)
    h, m, s = duration.split("Duration:")[1].strip().split(":")
    assert int(h) * 3600 + int(m) * 60 + float(s) == pytest.approx(SECONDS, abs=0.1)
    wav = tmp_path / "gst.wav"
    await _run("gst-play-1.0", "--no-interactive", "-q", "-s", str(start), "--audiosink",
               f"audioconvert ! audio/x-raw,format=S16LE ! wavenc ! filesink location={wav}",
               url)
    await _check(source, wav, start)


@pytest.mark.parametrize("start", [0.0, 5.0])
async def test_mpv_plays_seeks_and_names_the_song_from_the_playlist(
    served: tuple[RunningProxy, array.array[int]], tmp_path: Path, start: float
) -> None:
    _need("mpv", "mpv")
    proxy, source = served
    wav = tmp_path / "mpv.wav"
    shown = await _run("mpv", "--no-config", "--no-video", "--ao=pcm",
                       f"--ao-pcm-file={wav}", f"--start={start}",
                       "--term-playing-msg=TITLE=${media-title}", proxy.url("/playlist.m3u"))
    assert f"TITLE={NAME}" in shown.splitlines(), shown
    await _check(source, wav, start)


@pytest.mark.parametrize("start", [0.0, 5.0])
async def test_ffmpeg_plays_seeks_and_names_the_song(
    served: tuple[RunningProxy, array.array[int]], tmp_path: Path, start: float
) -> None:
    proxy, source = served
    url = proxy.url(f"/proxy/{VID}")
    tags = await _run("ffprobe", "-v", "error", "-show_entries", "format_tags=icy-name",
                      "-of", "default=nw=1", url)
    assert f"TAG:icy-name={NAME}" in tags.splitlines(), tags
    wav = tmp_path / "ffmpeg.wav"
    await _run("ffmpeg", "-nostdin", "-loglevel", "error", "-ss", str(start), "-i", url,
               "-f", "wav", str(wav))
    await _check(source, wav, start)
