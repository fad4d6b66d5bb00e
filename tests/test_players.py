"""Real players (VLC, GStreamer, mpv, ffmpeg) play, seek, know the length and name the song.

Each player runs headless and writes what it decoded to a WAV file, which is
compared with the source decoded by ffmpeg: its length, and where in the source
its first samples are (found by correlation, so decoders may differ).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.mpd_harness import make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory, RunningProxy
from tests.samples import RATE, pcm, position_in_source
from ytproxy.http.app import STORE

VID = "PlayersTs01"
SECONDS = 8.0
NAME = "Test Artist - Night Drive"
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


async def _serve(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
                 **sections: dict[str, Any]) -> tuple[RunningProxy, array.array[int]]:
    require_ffmpeg()
    audio = make_test_audio(tmp_path / "song.webm", seconds=SECONDS, kind="webm")
    googlevideo.add_track(VID, audio, title="Night Drive", mime="audio/webm")
    proxy = await make_proxy(**sections)
    await proxy.app[STORE].upsert_track(VID, googlevideo.watch_url(VID), title="Night Drive",
                                        artist="Test Artist")
    return proxy, await pcm(tmp_path / "song.webm")


@pytest.fixture
async def served(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
                 ) -> tuple[RunningProxy, array.array[int]]:
    """The song, served on the defaults."""
    return await _serve(googlevideo, make_proxy, tmp_path)


@pytest.fixture
async def served_inline(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
                        ) -> tuple[RunningProxy, array.array[int]]:
    """The song, served with ``[icy] inline_metadata = true``."""
    return await _serve(googlevideo, make_proxy, tmp_path,
                        icy={"inline_metadata": True, "metaint": 8192})


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


def _start_in_source(source: array.array[int], out: array.array[int], expected: float) -> float:
    """Where in the source (seconds) the output starts, judged 0.5 s in (a
    decoder's first samples may be its warm-up)."""
    skip = RATE // 2
    return position_in_source(source, out[skip:], expected + 0.5) - 0.5


async def _check(source: array.array[int], wav: Path, start: float) -> None:
    out = await pcm(wav)
    # Played once, from ``start`` to the end of the song.
    assert len(out) / RATE == pytest.approx(SECONDS - start, abs=0.1)
    assert _start_in_source(source, out, start) == pytest.approx(start, abs=0.2)


def _vlc(world_dir: Path, wav: Path) -> list[str]:
    """cvlc, headless, writing what it decodes to ``wav`` and leaving at the end."""
    _need("cvlc", "vlc-bin vlc-plugin-base")
    # VLC refuses to run as root.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    user = nobody if os.getuid() == 0 else []
    return [*user, "cvlc", "--no-loop", "--play-and-exit",
            "--sout", f"#transcode{{acodec=s16l}}:std{{access=file,mux=wav,dst={wav}}}"]


def _vlc_env(world_dir: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(world_dir)}


@pytest.mark.parametrize("start", [0.0, 5.0])
async def test_vlc_plays_once_and_seeks(served: tuple[RunningProxy, array.array[int]],
                                        world_dir: Path, start: float) -> None:
    proxy, source = served
    wav = world_dir / "vlc.wav"
    await _run(*_vlc(world_dir, wav), "-q", f"--start-time={start}",
               proxy.url(f"/proxy/{VID}"), env=_vlc_env(world_dir))
    await _check(source, wav, start)


async def test_vlc_names_the_song_from_the_playlist(
    served: tuple[RunningProxy, array.array[int]], world_dir: Path
) -> None:
    proxy, source = served
    wav = world_dir / "vlc.wav"
    # The item VLC plays is named from the playlist's EXTINF, "Artist - Title"
    # split in two (its command line's `info` shows "artist: Test Artist",
    # "title: Night Drive"); its debug log names the item it opens.
    shown = await _run(*_vlc(world_dir, wav), "-vv", proxy.url("/playlist.m3u"),
                       env=_vlc_env(world_dir))
    assert "main input debug: Creating an input for 'Night Drive'" in shown, shown[-3000:]
    await _check(source, wav, 0.0)


async def _gstreamer(proxy: RunningProxy, source: array.array[int], tmp_path: Path,
                     start: float) -> None:
    _need("gst-discoverer-1.0", "gstreamer1.0-plugins-base-apps")
    _need("gst-launch-1.0", "gstreamer1.0-tools")
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
async def test_gstreamer_knows_the_length_plays_and_seeks(
    served: tuple[RunningProxy, array.array[int]], tmp_path: Path, start: float
) -> None:
    await _gstreamer(*served, tmp_path, start)


async def test_gstreamer_knows_the_length_and_seeks_with_inline_titles_on(
    served_inline: tuple[RunningProxy, array.array[int]], tmp_path: Path
) -> None:
    # icy-metaint would bring in icydemux, which can neither seek nor tell the
    # length: GStreamer is not sent inline metadata (ytproxy.http.clients).
    await _gstreamer(*served_inline, tmp_path, 5.0)


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


async def test_ffmpeg_and_mpv_seek_exactly_and_mpv_names_the_song_with_inline_titles_on(
    served_inline: tuple[RunningProxy, array.array[int]], tmp_path: Path
) -> None:
    # Their seek is a Range request: its 206 carries metadata blocks counted
    # from its own first byte, as both count them.
    _need("mpv", "mpv")
    proxy, source = served_inline
    url = proxy.url(f"/proxy/{VID}")
    wav = tmp_path / "ffmpeg.wav"
    await _run("ffmpeg", "-nostdin", "-loglevel", "error", "-ss", "5", "-i", url,
               "-f", "wav", str(wav))
    await _check(source, wav, 5.0)
    wav = tmp_path / "mpv.wav"
    await _run("mpv", "--no-config", "--no-video", "--ao=pcm", f"--ao-pcm-file={wav}",
               "--start=5", url)
    await _check(source, wav, 5.0)
    # From the start, mpv's media-title becomes StreamTitle (its icy-title tag)
    # once the first metadata block has come; before, it is the URL's last part.
    # mpv is kept open at the end until the script has seen the name (or 20 s
    # went by): with --ao=pcm it plays faster than real time, and quitting at
    # the end could leave the script's last notification unprinted.
    script = tmp_path / "title.lua"
    script.write_text(f"""
local named, ended = false, false
local function done() if named and ended then mp.command("quit") end end
mp.observe_property("media-title", "string", function(_, title)
    print("TITLE=" .. tostring(title))
    named = named or title == {json.dumps(NAME)}
    done()
end)
mp.observe_property("eof-reached", "bool", function(_, eof) ended = eof; done() end)
mp.add_timeout(20, function() mp.command("quit") end)
""")
    shown = await _run("mpv", "--no-config", "--no-video", "--ao=pcm", f"--ao-pcm-file={wav}",
                       "--keep-open=yes", f"--script={script}", url)
    assert f"[title] TITLE={NAME}" in [line.strip() for line in shown.splitlines()], shown
    await _check(source, wav, 0.0)
