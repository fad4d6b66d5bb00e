"""Prove the MPD harness and pin the real MPD 0.23 behaviour that ytproxy relies on.

A small aiohttp origin serves generated Opus/WebM audio (Range, icy-name,
Accept-Ranges, optionally Content-Length, optionally throttled) and records every
request MPD makes.

Pinned findings (MPD 0.23.12, Debian 12):

* First request: no ``Range``, ``Icy-MetaData: 1``, ``User-Agent: Music Player
  Daemon 0.23.12``.  Seeks re-request with an open-ended ``Range: bytes=N-``
  (still with ``Icy-MetaData: 1``).
* A stream that is seekable (``Accept-Ranges``) *and* has a known size
  (``Content-Length``, <= 128 MiB) is wrapped in MPD's BufferedInputStream: MPD
  downloads the whole file as fast as the origin allows, seeks inside what it has
  without any new request, and -- because BufferedInputStream does not forward
  stream tags -- **drops ``icy-name``** (no Name in currentsong).
* Without ``Content-Length`` (chunked) the same seekable stream keeps
  ``icy-name`` as the song's Name, and seeks still use ``Range``.
* A 403 is "Failed to decode ...; CURL failed: ... error: 403": one request, no
  retry; MPD moves to the next song (and then clears ``error``), or stops with
  ``error`` set when there is none.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.mpd_harness import MpdError, MpdInstance, MpdStatus, make_test_audio

pytestmark = pytest.mark.mpd

ICY_NAME = "Test Artist - Test Title"
SECONDS = 120.0
CHUNK = 16 * 1024
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)$")

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Recorded:
    path: str
    headers: CIMultiDict[str]
    sent: int = 0  # body bytes handed to the transport

    @property
    def range_start(self) -> int | None:
        value = self.headers.get("Range")
        if value is None:
            return None
        m = _RANGE_RE.match(value)
        assert m, f"unexpected Range header {value!r}"
        return int(m.group(1))


@dataclass
class AudioOrigin:
    """Serves ``data`` at any path with Range support, recording every request.

    ``status`` != 200: answer every request with that status.
    ``chunked``: omit Content-Length (chunked transfer encoding).
    ``rate``: throttle the body to about this many bytes per second.
    """

    data: bytes
    content_type: str = "audio/webm"
    status: int = 200
    chunked: bool = False
    rate: float | None = None
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rec = Recorded(request.path, CIMultiDict(request.headers))
        self.requests.append(rec)
        if self.status != 200:
            return web.Response(status=self.status, text="Forbidden\n")
        total = len(self.data)
        headers = {
            "icy-name": ICY_NAME,
            "Accept-Ranges": "bytes",
            "Content-Type": self.content_type,
        }
        start, end, status = 0, total - 1, 200
        value = request.headers.get("Range")
        if value is not None:
            m = _RANGE_RE.match(value)
            if m is None:
                return web.Response(status=400, text=f"bad Range {value!r}\n")
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total or end < start:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        resp = web.StreamResponse(status=status, headers=headers)
        if self.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = end + 1 - start
        await resp.prepare(request)
        try:
            for pos in range(start, end + 1, CHUNK):
                piece = self.data[pos : min(pos + CHUNK, end + 1)]
                await resp.write(piece)
                rec.sent += len(piece)
                if self.rate:
                    await asyncio.sleep(len(piece) / self.rate)
            await resp.write_eof()
        except ConnectionError:
            pass  # MPD closed the connection (seek, stop): normal
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app


@pytest.fixture(scope="session")
def webm_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("audio") / "track.webm"
    return make_test_audio(path, seconds=SECONDS, kind="webm")


def _playing_past(seconds: float) -> Callable[[MpdStatus], bool]:
    return lambda s: s.state == "play" and s.elapsed > seconds


async def _start_track(mpd: MpdInstance, url: str) -> MpdStatus:
    # Async variants throughout: the origin runs on this event loop, and a
    # blocking mpc call that makes MPD fetch something would deadlock.
    await mpd.mpc_async("add", url)
    await mpd.mpc_async("play")
    st = await mpd.wait_for(_playing_past(1.0), 15, "playback past 1 s")
    assert st.error is None
    assert st.file == url
    return st


def _assert_first_request(origin: AudioOrigin) -> None:
    first = origin.requests[0]
    assert "Range" not in first.headers
    assert first.headers.get("Icy-MetaData") == "1"
    assert first.headers.get("User-Agent", "").startswith("Music Player Daemon 0.23")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_plays_and_seeks_with_range(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory, chunked: bool
) -> None:
    assert len(webm_audio) > 4 * 512 * 1024  # far beyond MPD's 512 KiB curl buffer
    # ~320 KiB/s: 7.5 s for the whole file, so the 75 % point is not yet
    # downloaded when we seek and MPD must ask the origin for it.
    origin = AudioOrigin(webm_audio, chunked=chunked, rate=320 * 1024)
    server = await aiohttp_server(origin.app())
    url = f"http://127.0.0.1:{server.port}/track"

    st = await _start_track(mpd, url)
    _assert_first_request(origin)

    song = await mpd.current_song_async()
    current = await mpd.mpc_async("current")
    if chunked:
        assert song.get("Name") == ICY_NAME
        assert ICY_NAME in current
    else:
        # Seekable + known size -> BufferedInputStream, which drops stream tags.
        assert "Name" not in song, song
        assert current.strip() == url

    duration = st.duration if st.duration is not None else SECONDS
    assert duration == pytest.approx(SECONDS, abs=1.0)

    n_before = len(origin.requests)
    await mpd.mpc_async("seek", "75%")
    st = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= 0.7 * duration,
        10,
        "elapsed >= 70% after seek",
    )
    await mpd.wait_for(_playing_past(st.elapsed + 0.5), 5, "playback advancing after seek")

    ranged = [r for r in origin.requests[n_before:] if r.range_start]
    assert ranged, [dict(r.headers) for r in origin.requests]
    for r in ranged:
        assert re.fullmatch(r"bytes=\d+-", r.headers["Range"])  # always open-ended
        assert r.headers.get("Icy-MetaData") == "1"
    size = len(webm_audio)
    assert any(0.6 * size < (r.range_start or 0) < 0.9 * size for r in ranged), [
        r.headers["Range"] for r in ranged
    ]
    if chunked:
        assert (await mpd.current_song_async()).get("Name") == ICY_NAME
    await mpd.mpc_async("stop")  # closes MPD's connection: the throttled handler ends now


async def test_sized_stream_is_downloaded_whole_and_seeks_without_requests(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    """Unthrottled, MPD pulls the whole (sized, seekable) file at once."""
    origin = AudioOrigin(webm_audio)
    server = await aiohttp_server(origin.app())
    url = f"http://127.0.0.1:{server.port}/track"

    await _start_track(mpd, url)
    assert len(origin.requests) == 1
    assert origin.requests[0].sent == len(webm_audio)

    await mpd.mpc_async("seek", "90%")
    st = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= 0.85 * SECONDS, 10, "elapsed >= 85%"
    )
    await mpd.wait_for(_playing_past(st.elapsed + 0.5), 5, "playback advancing after seek")
    assert len(origin.requests) == 1, [dict(r.headers) for r in origin.requests]


async def test_origin_403_is_one_try_then_next_song(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    """Why ytproxy exists: MPD gives up on a failing URL at once and never retries."""
    bad = AudioOrigin(webm_audio, status=403)
    good = AudioOrigin(webm_audio)
    bad_url = f"http://127.0.0.1:{(await aiohttp_server(bad.app())).port}/track"
    good_url = f"http://127.0.0.1:{(await aiohttp_server(good.app())).port}/track"

    await mpd.mpc_async("add", bad_url)
    await mpd.mpc_async("add", good_url)
    await mpd.mpc_async("play", check=False)
    st = await mpd.wait_for(
        lambda s: s.file == good_url and s.state == "play" and s.elapsed > 0.2,
        15,
        "MPD to skip the 403 track and play the next one",
    )
    assert len(bad.requests) == 1  # one try, no retry
    assert st.error is None  # cleared once the next song plays; only the log keeps it
    assert f"Failed to decode {bad_url}" in mpd.log_text()
    assert "error: 403" in mpd.log_text()


async def test_origin_403_alone_stops_with_error(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    bad = AudioOrigin(webm_audio, status=403)
    url = f"http://127.0.0.1:{(await aiohttp_server(bad.app())).port}/track"
    await mpd.mpc_async("add", url)
    await mpd.mpc_async("play", check=False)
    st = await mpd.wait_for(
        lambda s: bool(bad.requests) and s.state == "stop" and s.error is not None,
        10,
        "MPD to stop with an error after the 403",
    )
    assert st.error is not None
    assert st.error.startswith(f"Failed to decode {url}")
    assert len(bad.requests) == 1


async def test_harness_api(mpd: MpdInstance) -> None:
    """The blocking helpers, protocol errors, and the wait_for failure message."""
    assert "volume:" in mpd.mpc("status")
    st = mpd.status()
    assert (st.state, st.elapsed, st.duration, st.error, st.song) == ("stop", 0.0, None, None, {})
    assert mpd.current_song() == {}
    assert (await mpd.status_async()).state == "stop"
    with pytest.raises(MpdError, match="unknown command"):
        mpd.command("nosuchcommand")
    with pytest.raises(AssertionError, match="exited"):
        mpd.mpc("seek", "50%")  # nothing playing
    assert mpd.mpc("seek", "50%", check=False) == ""

    with pytest.raises(AssertionError) as info:
        await mpd.wait_for(lambda s: s.state == "play", 0.3, "the impossible")
    message = str(info.value)
    assert "the impossible" in message and "state=stop" in message
    assert "--- MPD log tail ---" in message
    assert mpd.log_text()


async def test_m4a_plays(mpd: MpdInstance, tmp_path: Path, aiohttp_server: ServerFactory) -> None:
    """make_test_audio(kind="m4a"): DASH-style fragmented MP4 like itag 140."""
    data = make_test_audio(tmp_path / "track.m4a", seconds=20, kind="m4a")
    assert data[4:8] == b"ftyp"
    origin = AudioOrigin(data, content_type="audio/mp4", chunked=True)
    url = f"http://127.0.0.1:{(await aiohttp_server(origin.app())).port}/track"
    st = await _start_track(mpd, url)
    assert st.duration == pytest.approx(20, abs=0.5)
    await mpd.mpc_async("stop")
